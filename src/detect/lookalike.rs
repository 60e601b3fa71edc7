//! **Look-alike and unlisted hosts**, and **spellings that hide a host from the reference
//! query**.
//!
//! Why: a firewall or a hunter that trusts "anything that looks like Defender" can be fooled by a
//! name that only looks like it. Two kinds are reported as `LookalikeHost`:
//! - a host of an MDE naming pattern that is on no list (`winatp-gw-xyz.microsoft.com`,
//!   `automatedirstrprdweu4.blob.core.windows.net`: storage-account names are free for anyone to
//!   register);
//! - a host within `max_edit_distance` edits of a listed one (`winatp-gw-weu.rnicrosoft.com`).
//!
//! The check runs on the normalized host, so case, ports, trailing dots and URL forms hide no
//! look-alike. A typo of another registrable domain, or any name under a shared storage domain,
//! is High; an unlisted name under the listed host's own domain (which only its owner can
//! create, so possibly a new Microsoft host: add it to `extra_hosts`) is Medium.
//!
//! `ReferenceQueryEvasion`: devices that start reaching a reference host in a spelling the
//! reference query misses (`WINATP-GW-NEU.MICROSOFT.COM:443`, `host.`, ` host `), which it
//! never counts. What a device has spelled that way before (a proxy that always logs `host:443`,
//! say) is its baseline and not reported again; devices without history are not judged.
//!
//! Example: two servers connect to `winatp-gw-weu.rnicrosoft.com` through
//! `c:\programdata\intel\rundll32.exe`: a High `LookalikeHost` finding, "2 edits from
//! winatp-gw-weu.microsoft.com".

use std::collections::BTreeMap;

use serde_json::json;

use super::{device_series, distinct_devices, Context, DeviceCounts, Finding, FindingType, Group, Severity};
use crate::baseline::history::{DayData, ProcessClass};
use crate::hunt::lookalike::LookalikeReason;

/// The last two labels: who can create names under a host (a good enough rule for the hosts on
/// the lists, which are all under two-label registrable domains).
fn owner(host: &str) -> &str {
    let mut dots = host.rmatch_indices('.');
    match (dots.next(), dots.next()) {
        (Some(_), Some((at, _))) => &host[at + 1..],
        _ => host,
    }
}

/// Suffixes under which anyone can name a host.
const SHARED_SUFFIXES: [&str; 2] = [".blob.core.windows.net", ".azurewebsites.net"];

pub fn detect(ctx: &Context<'_>) -> Vec<Finding> {
    let mut findings = lookalike_hosts(ctx);
    if ctx.settings.detect.lookalike.new_spellings {
        findings.extend(new_spellings(ctx));
    }
    findings
}

/// Per look-alike host: the devices a day had rows to (worked out once per day).
pub fn devices_per_host(data: &DayData) -> &DeviceCounts<u32> {
    data.counts.lookalike.get_or_init(|| distinct_devices(data, |a| (!a.listed).then_some(a.host)))
}

fn lookalike_hosts(ctx: &Context<'_>) -> Vec<Finding> {
    let Some(lookalikes) = ctx.settings.hosts.lookalikes() else { return Vec::new() };
    let mut groups: BTreeMap<u32, Group<'_>> = BTreeMap::new();
    for a in ctx.today.activity.iter().filter(|a| !a.listed) {
        groups.entry(a.host).or_default().add(a, ctx.today.process(a));
    }
    let devices_on = |data: &DayData, host: u32| devices_per_host(data).devices(&host);
    let mut findings = Vec::new();
    for (host_id, group) in groups {
        let host = ctx.host(host_id).to_string();
        // A host stored as a look-alike under other settings may be none under these.
        let Some(reason) = lookalikes.reason(&host) else { continue };
        let shared = SHARED_SUFFIXES.iter().any(|s| host.ends_with(s));
        let (why, severity, params) = match &reason {
            LookalikeReason::Pattern(pattern) => {
                let severity = if shared { Severity::High } else { Severity::Medium };
                (
                    format!("matches the MDE naming pattern `{pattern}` but is on no list"),
                    severity,
                    json!({"pattern": pattern}),
                )
            }
            LookalikeReason::Near { listed, distance } => {
                let severity = if shared || owner(&host) != owner(listed) { Severity::High } else { Severity::Medium };
                (
                    format!("is {distance} edit(s) from the listed host {listed}"),
                    severity,
                    json!({"nearestListedHost": listed, "editDistance": distance}),
                )
            }
        };
        let (series, baseline) = device_series(ctx, |data| devices_on(data, host_id));
        let process = group.process();
        let devices = group.device_list(ctx);
        let description = format!(
            "{host} {why}; {n} device(s) connected to it ({events} events){through}.",
            n = devices.len(),
            events = group.events,
            through = process
                .as_ref()
                .map_or(String::new(), |p| format!(", mostly through {} (`{}`)", p.file_name, p.folder_path)),
        );
        let mut params = params;
        params["events"] = json!(group.events);
        params["ports"] = json!(group.ports());
        params["processes"] = group.processes_json();
        let method = match reason {
            LookalikeReason::Pattern(_) => "mde-name-pattern",
            LookalikeReason::Near { .. } => "edit-distance",
        };
        let key = host.clone();
        findings.push(Finding {
            remote_host: Some(host),
            remote_port: group.port(),
            observed: Some(devices.len() as f64),
            baseline: Some(baseline),
            score: Some(devices.len() as f64),
            params: params.into(),
            series: Some(series),
            description,
            tactics: vec!["CommandAndControl", "Exfiltration"],
            techniques: vec!["T1071.001", "T1583.001"],
            process,
            devices,
            ..Finding::new(ctx, FindingType::LookalikeHost, key, severity, method)
        });
    }
    findings
}

fn new_spellings(ctx: &Context<'_>) -> Vec<Finding> {
    // what each device spelled how in the window
    let seen = &ctx.history.index.spellings;
    let mut groups: BTreeMap<u32, (Group<'_>, BTreeMap<u32, u64>, bool)> = BTreeMap::new();
    for a in &ctx.today.activity {
        let Some(spelling) = a.spelling else { continue };
        if !ctx.has_history(a.device) || seen.contains_key(&(a.device, a.host, spelling)) {
            continue;
        }
        let (group, spellings, unexpected) = groups.entry(a.host).or_default();
        group.add(a, ctx.today.process(a));
        *spellings.entry(spelling).or_default() += a.events;
        *unexpected |= a.class == ProcessClass::Unexpected;
    }
    let mut findings = Vec::new();
    for (host_id, (group, spellings, unexpected)) in groups {
        let host = ctx.host(host_id).to_string();
        let forms: BTreeMap<&str, u64> =
            spellings.iter().map(|(s, n)| (ctx.history.names.spellings.name(*s), *n)).collect();
        let devices = group.device_list(ctx);
        let process = group.process();
        let description = format!(
            "{n} device(s) reached the reference host {host} spelled so the reference query misses it ({forms}); \
             {events} events that the Defender for Endpoint Telemetry query does not count{through}.",
            n = devices.len(),
            forms = forms.keys().copied().collect::<Vec<_>>().join(", "),
            events = group.events,
            through =
                process.as_ref().map_or(String::new(), |p| format!(", through {} (`{}`)", p.file_name, p.folder_path)),
        );
        let key = host.clone();
        let severity = if unexpected { Severity::Medium } else { Severity::Low };
        findings.push(Finding {
            remote_host: Some(host),
            remote_port: group.port(),
            observed: Some(group.events as f64),
            baseline: Some(0.0),
            score: Some(devices.len() as f64),
            params:
                json!({"spellings": forms, "processes": group.processes_json(), "historyDays": ctx.history.days.len()})
                    .into(),
            description,
            tactics: vec!["DefenseEvasion"],
            techniques: vec!["T1027"],
            process,
            devices,
            ..Finding::new(ctx, FindingType::ReferenceQueryEvasion, key, severity, "first-seen-spelling")
        });
    }
    findings
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detect::testing::{ids, row, run, sensor, settings, GW};

    const RUNDLL: &str = r"c:\programdata\intel\rundll32.exe";

    #[test]
    fn lookalike_hosts_by_pattern_and_by_edit_distance() {
        let settings = settings();
        let today = [
            sensor("dev-a"),
            row("dev-a", "winatp-gw-weu.rnicrosoft.com", "rundll32.exe", RUNDLL),
            row("dev-b", "winatp-gw-weu.rnicrosoft.com", "rundll32.exe", RUNDLL),
            row("dev-b", "winatp-gw-xyz.microsoft.com", "rundll32.exe", RUNDLL),
            row("dev-c", "automatedirstrprdweu4.blob.core.windows.net", "rundll32.exe", RUNDLL),
        ];
        let findings = run(&settings, &[], &today, detect);
        let summary: Vec<(&str, Severity, &str)> =
            findings.iter().map(|f| (f.key.as_str(), f.severity, f.method)).collect();
        assert_eq!(
            summary,
            [
                ("automatedirstrprdweu4.blob.core.windows.net", Severity::High, "mde-name-pattern"),
                ("winatp-gw-weu.rnicrosoft.com", Severity::High, "edit-distance"),
                ("winatp-gw-xyz.microsoft.com", Severity::Medium, "mde-name-pattern"),
            ]
        );
        assert_eq!(ids(&findings[1]), ["dev-a", "dev-b"]);
        assert_eq!(findings[1].params.value()["nearestListedHost"], GW);
        assert_eq!(findings[1].params.value()["editDistance"], 2);
        assert_eq!(findings[1].process.as_ref().unwrap().folder_path, RUNDLL);
    }

    #[test]
    fn hosts_that_only_contain_a_listed_name_are_not_lookalikes() {
        let settings = settings();
        // what the hunt would never store as a look-alike, and a listed host
        let today = [row("dev-a", "winatp-gw-weu.microsoft.com.evil.net", "x.exe", r"c:\x.exe"), sensor("dev-a")];
        assert!(run(&settings, &[], &today, detect).is_empty());
    }

    #[test]
    fn a_new_spelling_is_reported_once_and_a_habitual_one_never() {
        let settings = settings();
        let mut proxied = sensor("dev-p");
        proxied.spelling = "port";
        let history = vec![vec![sensor("dev-a"), sensor("dev-b"), proxied.clone()]; 7];
        let mut hidden = row("dev-a", GW, "mssense.exe", r"c:\users\public\libraries\mssense.exe");
        hidden.spelling = "case+port";
        let mut hidden_new_device = hidden.clone();
        hidden_new_device.device = "dev-new";
        let today = [sensor("dev-a"), hidden.clone(), proxied.clone(), hidden_new_device];
        let findings = run(&settings, &history, &today, detect);
        assert_eq!(findings.len(), 1, "{findings:#?}");
        let f = &findings[0];
        assert_eq!(f.finding_type, FindingType::ReferenceQueryEvasion);
        assert_eq!(ids(f), ["dev-a"]);
        assert_eq!(f.severity, Severity::Medium);
        assert_eq!(f.params.value()["spellings"]["case+port"], 3);
        // the day after, the spelling is in dev-a's history
        let mut later = history.clone();
        later.push(vec![sensor("dev-a"), hidden.clone()]);
        assert!(run(&settings, &later, &[sensor("dev-a"), hidden], detect).is_empty());
    }
}

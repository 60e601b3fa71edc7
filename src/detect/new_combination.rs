//! **New combination**: a device reaches a Defender for Endpoint host through a process it has
//! not used for that host in the whole history window, although the device itself has history.
//!
//! Why: the allow list says which processes may talk to these hosts in general; the learned
//! baseline says what *this* device does (the pattern of the Azure-Sentinel "first-time
//! connection by unusual process" hunt). A first contact is the moment an implant, a hijacked
//! binary or a new tool starts using the channel. Processes the allow list expects are known by
//! their allow-list folder, so a Defender platform update (a new version folder) is not new.
//! Exclusion-rule traffic is benign by the rule's word and not reported; devices with fewer
//! than `min_device_history_days` days of telemetry have no baseline and are not judged.
//!
//! Example: three servers that talked to `winatp-gw-neu.microsoft.com` only through the sensor
//! for 30 days start doing so through `c:\users\public\libraries\mssense.exe`: a Medium finding
//! (Low when the process is an expected one, new to these devices).

use std::collections::BTreeMap;

use super::{Context, Document, Finding, FindingType, Group, ProcessParams, Severity};
use crate::baseline::history::{Activity, ProcessClass};

/// The rows this detector judges; the history keeps them per (host, identity) for it (see
/// [`crate::baseline::history::WindowIndex`]).
pub fn judged(a: &Activity) -> bool {
    a.listed && a.class != ProcessClass::Excluded
}

/// `Params` (fields in the order of their names, see [`Document::of`]).
#[derive(serde::Serialize)]
#[serde(rename_all = "camelCase")]
struct Params<'a> {
    events: u64,
    expected: bool,
    history_days: usize,
    min_device_history_days: usize,
    processes: Vec<ProcessParams<'a>>,
}

pub fn detect(ctx: &Context<'_>) -> Vec<Finding> {
    // per (host, identity): the devices that used it in the window
    let window = &ctx.history.index.combinations;
    let seen = |a: &Activity| window.get(&(a.host, a.identity)).is_some_and(|devices| devices.contains_key(&a.device));
    let mut groups: BTreeMap<(u32, u32), (Group<'_>, bool)> = BTreeMap::new();
    for a in ctx.today.activity.iter().filter(|a| judged(a)) {
        if ctx.has_history(a.device) && !seen(a) {
            let (group, unexpected) = groups.entry((a.host, a.identity)).or_default();
            group.add(a, ctx.today.process(a));
            *unexpected |= a.class == ProcessClass::Unexpected;
        }
    }
    let names = &ctx.history.names;
    let mut findings = Vec::new();
    for ((host_id, identity), (group, unexpected)) in groups {
        let host = ctx.host(host_id).to_string();
        let process = group.process().unwrap_or_default();
        let identity_text = names.identities.name(identity);
        // `<len>:<file><folder>`: the folder part is how the process is known (see identity_folder)
        let folder = identity_text
            .split_once(':')
            .and_then(|(n, rest)| rest.get(n.parse::<usize>().ok()?..))
            .unwrap_or("")
            .to_string();
        let devices = group.device_list(ctx);
        // how many devices used the combination in the window, for the baseline
        let fleet_devices = window.get(&(host_id, identity)).map_or(0, |devices| devices.len());
        let description = format!(
            "{n} device(s) reached {host} through {file} (`{folder}`) for the first time in {days} days of history{kind}; \
             {fleet}.",
            n = devices.len(),
            file = process.file_name,
            days = ctx.history.days.len(),
            kind = if unexpected { ", and it is not an expected process" } else { " (an expected process, new to them)" },
            fleet = if fleet_devices == 0 {
                "no device used this combination in the window".to_string()
            } else {
                format!("{fleet_devices} other device(s) did")
            },
        );
        let key = format!("{host}|{}|{folder}", process.file_name);
        let severity = if unexpected { Severity::Medium } else { Severity::Low };
        findings.push(Finding {
            remote_host: Some(host),
            remote_port: group.port(),
            observed: Some(devices.len() as f64),
            baseline: Some(fleet_devices as f64),
            score: Some(devices.len() as f64),
            direction: 1,
            params: Document::of(&Params {
                events: group.events,
                expected: !unexpected,
                history_days: ctx.history.days.len(),
                min_device_history_days: ctx.settings.detect.min_device_history_days,
                processes: group.process_params(),
            }),
            description,
            tactics: vec!["CommandAndControl"],
            techniques: vec!["T1071.001"],
            process: Some(process),
            devices,
            ..Finding::new(ctx, FindingType::NewCombination, key, severity, "first-seen-in-window")
        });
    }
    findings
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detect::testing::{ids, row, run, sensor, settings, GW, MDE};

    const ODD: &str = r"c:\users\public\libraries\mssense.exe";

    fn week(devices: &[&'static str]) -> Vec<Vec<crate::detect::testing::Row>> {
        vec![devices.iter().map(|d| sensor(d)).collect(); 7]
    }

    #[test]
    fn a_process_new_to_devices_with_history_is_flagged() {
        let settings = settings();
        let mut history = week(&["dev-a", "dev-b", "dev-c"]);
        // dev-c used the odd binary once, a week ago: not new for it
        history[0].push(row("dev-c", GW, "mssense.exe", ODD));
        let today = [
            sensor("dev-a"),
            row("dev-a", GW, "mssense.exe", ODD),
            row("dev-b", GW, "mssense.exe", ODD),
            row("dev-c", GW, "mssense.exe", ODD),
        ];
        let findings = run(&settings, &history, &today, detect);
        assert_eq!(findings.len(), 1, "{findings:#?}");
        let f = &findings[0];
        assert_eq!(ids(f), ["dev-a", "dev-b"]);
        assert_eq!(f.severity, Severity::Medium);
        assert_eq!(f.key, format!("{GW}|mssense.exe|{ODD}"));
        assert_eq!((f.observed, f.baseline), (Some(2.0), Some(1.0)));
    }

    #[test]
    fn new_devices_platform_updates_and_exclusions_are_not() {
        let settings = settings();
        let history = week(&["dev-a"]);
        let mut engine_old =
            row("dev-a", GW, "msmpeng.exe", r"c:\programdata\microsoft\windows defender\platform\4.18.1-0\msmpeng.exe");
        engine_old.events = 1;
        let mut history = history;
        for day in &mut history {
            day.push(engine_old.clone());
        }
        let mut mecm = row("dev-a", GW, "ccmexec.exe", r"c:\windows\ccm\ccmexec.exe");
        mecm.expected_by = Some("exclusion:mecm-client");
        let today = [
            sensor("dev-a"),
            // a platform update: same allow-list folder, new version folder
            row("dev-a", GW, "msmpeng.exe", r"c:\programdata\microsoft\windows defender\platform\4.18.2-0\msmpeng.exe"),
            mecm,
            // a device without history
            row("dev-new", GW, "mssense.exe", ODD),
        ];
        assert!(run(&settings, &history, &today, detect).is_empty());
        // an expected process that is new to the device: Low
        let today = [sensor("dev-a"), row("dev-a", GW, "senseir.exe", &format!("{MDE}senseir.exe"))];
        let findings = run(&settings, &history, &today, detect);
        assert_eq!(findings.iter().map(|f| f.severity).collect::<Vec<_>>(), [Severity::Low]);
        assert_eq!(findings[0].key, format!("{GW}|senseir.exe|{MDE}"));
    }
}

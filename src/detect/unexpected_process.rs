//! **Unexpected process**: a process that is neither on the expected-process list for the host
//! it reached (file name **and** folder) nor tagged by a named exclusion rule, talking to a
//! Defender for Endpoint host.
//!
//! Why: these hosts are allowed through every firewall and trusted by every proxy, so they are
//! where command-and-control and spoofed-sensor traffic hide (the InfoGuard research showed
//! that anything holding a device's ids can talk to the sensor's command channel). Only the
//! sensor and a few Windows services have business there; anything else on the gateway is
//! worth a look, every day it happens.
//!
//! Example: `mssense.exe` running from `c:\users\public\libraries\` (the sensor's name in the
//! wrong folder, no company) reaches `winatp-gw-neu.microsoft.com` from 3 devices: one High
//! finding naming the host, the binary (SHA1) and the devices; tactics CommandAndControl and
//! DefenseEvasion (a masquerading name).

use std::collections::BTreeMap;

use super::{
    device_series, distinct_devices, Context, DeviceCounts, Document, Finding, FindingType, Group, ProcessParams,
    Severity,
};
use crate::baseline::history::{Activity, DayData, ProcessClass};
use crate::hunt::rules::matched_folder_prefix;

fn unexpected(a: &Activity) -> bool {
    a.listed && a.class == ProcessClass::Unexpected
}

/// Per (host, identity): the devices a day had unexpected rows of (worked out once per day).
pub fn devices_per_key(data: &DayData) -> &DeviceCounts<(u32, u32)> {
    data.counts
        .unexpected_process
        .get_or_init(|| distinct_devices(data, |a| unexpected(a).then_some((a.host, a.identity))))
}

/// `Params` (fields in the order of their names, see [`Document::of`]).
#[derive(serde::Serialize)]
#[serde(rename_all = "camelCase")]
struct Params<'a> {
    events: u64,
    failed_events: u64,
    masquerading: bool,
    ports: Vec<i32>,
    processes: Vec<ProcessParams<'a>>,
}

pub fn detect(ctx: &Context<'_>) -> Vec<Finding> {
    // per (host, identity): the rows, and the folder as the identity knows it
    let mut groups: BTreeMap<(u32, u32), (Group<'_>, &str)> = BTreeMap::new();
    for a in ctx.today.activity.iter().filter(|a| unexpected(a)) {
        let process = ctx.today.process(a);
        let (group, folder) = groups.entry((a.host, a.identity)).or_default();
        group.add(a, process);
        if let Some((_, process_folder, _, _)) = process {
            *folder = process_folder;
        }
    }
    let devices_on = |data: &DayData, key: (u32, u32)| devices_per_key(data).devices(&key);
    let mut findings = Vec::new();
    for ((host_id, identity), (group, folder)) in groups {
        let host = ctx.host(host_id).to_string();
        let process = group.process().unwrap_or_default();
        let folder = folder.to_string();
        // An expected process's name, outside every folder it is expected in.
        let masquerading = ctx.settings.expected.iter().any(|e| {
            e.file_name.eq_ignore_ascii_case(&process.file_name)
                && !e.folder_prefixes.is_empty()
                && matched_folder_prefix(e, &folder).is_none()
        });
        let (series, baseline) = device_series(ctx, |data| devices_on(data, (host_id, identity)));
        let devices = group.device_list(ctx);
        let seen_before = baseline > 0.0;
        let mut tactics = vec!["CommandAndControl"];
        let mut techniques = vec!["T1071.001"];
        if masquerading {
            tactics.push("DefenseEvasion");
            techniques.push("T1036.005");
        }
        let description = format!(
            "{file} from `{folder}` reached {host} from {n} device(s) ({events} events); it is not an expected process \
             for that host{masq} and no exclusion rule covers it.{before}",
            file = process.file_name,
            n = devices.len(),
            events = group.events,
            masq = if masquerading { " (the name of an expected process, in the wrong place)" } else { "" },
            before = if seen_before {
                format!(" It was seen on {baseline:.1} devices a day in the last {} days.", ctx.history.days.len())
            } else {
                String::new()
            },
        );
        let key = format!("{host}|{}|{folder}", process.file_name);
        findings.push(Finding {
            remote_host: Some(host),
            remote_port: group.port(),
            observed: Some(devices.len() as f64),
            baseline: Some(baseline),
            score: Some(devices.len() as f64),
            params: Document::of(&Params {
                events: group.events,
                failed_events: group.failed,
                masquerading,
                ports: group.ports(),
                processes: group.process_params(),
            }),
            series: Some(series),
            description,
            tactics,
            techniques,
            process: Some(process),
            devices,
            ..Finding::new(ctx, FindingType::UnexpectedProcess, key, Severity::High, "allow-list")
        });
    }
    findings
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detect::testing::{ids, row, run, sensor, settings, GW};

    const ODD: &str = r"c:\users\public\libraries\mssense.exe";

    #[test]
    fn the_sensor_name_in_the_wrong_folder_is_flagged() {
        let settings = settings();
        let history = vec![vec![sensor("dev-a"), sensor("dev-b")]; 3];
        let today = [sensor("dev-a"), row("dev-a", GW, "mssense.exe", ODD), row("dev-b", GW, "mssense.exe", ODD)];
        let findings = run(&settings, &history, &today, detect);
        assert_eq!(findings.len(), 1, "{findings:#?}");
        let f = &findings[0];
        assert_eq!(f.finding_type, FindingType::UnexpectedProcess);
        assert_eq!(f.key, format!("{GW}|mssense.exe|{ODD}"));
        assert_eq!(ids(f), ["dev-a", "dev-b"]);
        assert_eq!(f.devices[0].1, "dev-a.contoso.local");
        assert_eq!(f.process.as_ref().unwrap().folder_path, ODD);
        assert_eq!(f.techniques, ["T1071.001", "T1036.005"]);
        assert_eq!((f.observed, f.baseline), (Some(2.0), Some(0.0)));
        assert_eq!(f.remote_port, Some(443));
    }

    #[test]
    fn expected_and_excluded_processes_are_not() {
        let settings = settings();
        let mut crypt_svc = row("dev-a", "ctldl.windowsupdate.com", "svchost.exe", r"c:\windows\system32\svchost.exe");
        crypt_svc.port = Some(80);
        let mut mecm = row("dev-a", GW, "ccmexec.exe", r"c:\windows\ccm\ccmexec.exe");
        mecm.expected_by = Some("exclusion:mecm-client");
        let today = [
            sensor("dev-a"),
            crypt_svc,
            mecm,
            // expected on the Windows telemetry hosts, not on the gateway: that one is flagged
            row("dev-b", "eu-v20.events.data.microsoft.com", "svchost.exe", r"c:\windows\system32\svchost.exe"),
            row("dev-b", GW, "svchost.exe", r"c:\windows\system32\svchost.exe"),
        ];
        let findings = run(&settings, &[], &today, detect);
        assert_eq!(
            findings.iter().map(|f| f.key.as_str()).collect::<Vec<_>>(),
            [format!("{GW}|svchost.exe|c:\\windows\\system32\\svchost.exe")]
        );
        assert_eq!(findings[0].techniques, ["T1071.001"]);
    }
}

//! **Unusual port**: a Defender for Endpoint host reached on a port it does not serve: anything
//! but 443, and 80 for the certificate revocation and trust-list hosts only.
//!
//! Why: the sensor speaks HTTPS on 443 and fetches CRLs and trust lists over plain HTTP; any
//! other port towards these names is a tunnel, a tool that resolves the trusted name and speaks
//! its own protocol, or a proxy on an odd port that rewrites where the traffic goes. Reported
//! per host and port, every day it happens, with the devices and the processes behind it.
//!
//! Example: six devices reach `winatp-gw-cus.microsoft.com` on port 8080 (60 events): a Medium
//! finding "port 8080, not one of 443"; High when the process is not an expected one.

use std::collections::BTreeMap;

use super::{
    device_series, distinct_devices, Context, DeviceCounts, Document, Finding, FindingType, Group, ProcessParams,
    Severity,
};
use crate::baseline::history::{Activity, DayData, ProcessClass};
use crate::config::UnusualPortConfig;
use crate::hunt::aggregate::Interner;

/// The (host, port) of a row to a listed host on a port the host does not serve.
fn unusual(settings: &UnusualPortConfig, hosts: &Interner, a: &Activity) -> Option<(u32, i32)> {
    let port = a.port?;
    // `allowed` without building the list: this runs on every activity row of the window
    let serves = settings.allowed_ports.contains(&port)
        || (settings.plain_http_ports.contains(&port)
            && settings.plain_http_hosts.iter().any(|h| h == hosts.name(a.host)));
    (a.listed && !serves).then_some((a.host, port))
}

/// Per (host, port): the devices a day had unusual-port rows of (worked out once per day).
pub fn devices_per_port<'d>(
    settings: &UnusualPortConfig,
    hosts: &Interner,
    data: &'d DayData,
) -> &'d DeviceCounts<(u32, i32)> {
    data.counts.unusual_port.get_or_init(|| distinct_devices(data, |a| unusual(settings, hosts, a)))
}

/// `Params` (fields in the order of their names, see [`Document::of`]).
#[derive(serde::Serialize)]
#[serde(rename_all = "camelCase")]
struct Params<'a> {
    allowed_ports: &'a [i32],
    events: u64,
    failed_events: u64,
    processes: Vec<ProcessParams<'a>>,
}

pub fn detect(ctx: &Context<'_>) -> Vec<Finding> {
    let settings = &ctx.settings.detect.unusual_port;
    // The ports a host serves, as a list and as the description says them.
    let allowed = |host: &str| -> (Vec<i32>, String) {
        let mut ports = settings.allowed_ports.clone();
        if settings.plain_http_hosts.iter().any(|h| h == host) {
            ports.extend(&settings.plain_http_ports);
        }
        let text = ports.iter().map(i32::to_string).collect::<Vec<_>>().join(", ");
        (ports, text)
    };
    let hosts = &ctx.history.names.hosts;
    let mut groups: BTreeMap<(u32, i32), (Group<'_>, bool)> = BTreeMap::new();
    for a in &ctx.today.activity {
        if let Some(key) = unusual(settings, hosts, a) {
            let (group, unexpected) = groups.entry(key).or_default();
            group.add(a, ctx.today.process(a));
            *unexpected |= a.class == ProcessClass::Unexpected;
        }
    }
    let devices_on = |data: &DayData, key: (u32, i32)| devices_per_port(settings, hosts, data).devices(&key);
    let mut findings = Vec::new();
    // Groups come by host: its ports are worked out once, not for each of its ports.
    let mut served: Option<(u32, (Vec<i32>, String))> = None;
    for ((host_id, port), (group, unexpected)) in groups {
        let host = ctx.host(host_id).to_string();
        if served.as_ref().is_none_or(|(id, _)| *id != host_id) {
            served = Some((host_id, allowed(&host)));
        }
        let Some((_, (allowed_ports, allowed_text))) = &served else { continue };
        let (series, baseline) = device_series(ctx, |data| devices_on(data, (host_id, port)));
        let devices = group.device_list(ctx);
        let process = group.process();
        let description = format!(
            "{host} was reached on port {port} (it serves {allowed}) from {n} device(s), {events} events{through}.",
            allowed = allowed_text,
            n = devices.len(),
            events = group.events,
            through = process
                .as_ref()
                .map_or(String::new(), |p| format!(", mostly by {} (`{}`)", p.file_name, p.folder_path)),
        );
        let key = format!("{host}|{port}");
        let severity = if unexpected { Severity::High } else { Severity::Medium };
        findings.push(Finding {
            remote_host: Some(host),
            remote_port: Some(i64::from(port)),
            observed: Some(devices.len() as f64),
            baseline: Some(baseline),
            score: Some(devices.len() as f64),
            params: Document::of(&Params {
                allowed_ports,
                events: group.events,
                failed_events: group.failed,
                processes: group.process_params(),
            }),
            series: Some(series),
            description,
            tactics: vec!["CommandAndControl"],
            techniques: vec!["T1571"],
            process,
            devices,
            ..Finding::new(ctx, FindingType::UnusualPort, key, severity, "port-allow-list")
        });
    }
    findings
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detect::testing::{ids, row, run, sensor, settings, GW};
    use serde_json::json;

    #[test]
    fn a_gateway_on_8080_is_flagged_with_its_devices() {
        let settings = settings();
        let mut odd = sensor("dev-a");
        odd.port = Some(8080);
        let mut odd_b = sensor("dev-b");
        odd_b.port = Some(8080);
        let findings = run(&settings, &[vec![sensor("dev-a")]], &[odd, odd_b, sensor("dev-c")], detect);
        assert_eq!(findings.len(), 1, "{findings:#?}");
        let f = &findings[0];
        assert_eq!((f.key.as_str(), f.remote_port), (format!("{GW}|8080").as_str(), Some(8080)));
        assert_eq!(ids(f), ["dev-a", "dev-b"]);
        assert_eq!(f.severity, Severity::Medium);
        assert_eq!(f.series.as_ref().unwrap().value()["devices"], json!([0, 2]));
    }

    #[test]
    fn port_80_is_fine_for_revocation_lists_only() {
        let settings = settings();
        let mut crl = row("dev-a", "crl.microsoft.com", "svchost.exe", r"c:\windows\system32\svchost.exe");
        crl.port = Some(80);
        let mut no_port = sensor("dev-a");
        no_port.port = None;
        assert!(run(&settings, &[], &[crl, no_port, sensor("dev-b")], detect).is_empty());
        let mut gw80 = sensor("dev-a");
        gw80.port = Some(80);
        let findings = run(&settings, &[], &[gw80], detect);
        assert_eq!(findings.iter().map(|f| f.key.as_str()).collect::<Vec<_>>(), [format!("{GW}|80")]);
    }
}

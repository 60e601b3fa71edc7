//! **Silent and failing devices**: a device with telemetry history whose sensor stops talking
//! to its cloud, or whose connections to the Defender hosts start failing.
//!
//! Why: EDR-silencing tools (EDRSilencer, FireBlock) add firewall filters for exactly the
//! sensor's processes, and a broken proxy does the same by accident; either way the device
//! drops out of Defender's view. Three signs, each reported once, on the day it first holds,
//! one finding per sign for all the devices showing it that day:
//! - `SilentDevice`, method `sensor-silent` (High): the device still reaches the Defender and
//!   Windows telemetry hosts through other processes, but none of its sensor processes did
//!   today, while they did on at least `min_sensor_share` of its history days. The device is
//!   alive; its sensor is cut off.
//! - `SilentDevice`, method `connections-stopped` (Medium): the device sends nothing at all for
//!   `s` days in a row, and with `p` the share of its earlier days it reported on, the chance of
//!   such a silence by chance, `(1 - p)^s`, has just fallen to `max_chance` or below (`p` with a
//!   +1/+2 correction, so a perfect record still leaves a little room: a server that reported 30
//!   of 30 days has `(1/32)^s`). Workstations that are off at weekends need a longer silence.
//! - `FailingDevice` (Medium): at least `min_failed_share` of the day's events to these hosts
//!   failed, and at least `min_failed_events` of them, which under the device's own failure rate
//!   had a chance of at most `max_chance` (binomial tail).
//!
//! Days without any input are not judged (every device would look silent). Devices with fewer
//! than `min_device_history_days` days of telemetry have no baseline and are not judged.
//!
//! Example: on 2026-11-25 forty devices have all their sensor connections fail
//! (`FailingDevice`); from 2026-11-26 their sensor processes are gone while svchost still
//! reports (`SilentDevice`, sensor-silent, once).

use std::collections::BTreeMap;

use serde_json::{json, Value};

use super::{device_list, Context, Finding, FindingType, Severity};
use crate::baseline::history::{DayData, DeviceDay};
use crate::time::Day;

/// `P(X >= k)` for `X ~ Binomial(n, p)`, summed from the `k` term up (in logs until then, so
/// large `n` neither overflows nor underflows).
pub fn binomial_tail(n: u64, k: u64, p: f64) -> f64 {
    if k == 0 {
        return 1.0;
    }
    if k > n || p <= 0.0 {
        return 0.0;
    }
    if p >= 1.0 {
        return 1.0;
    }
    let q = 1.0 - p;
    let log_choose: f64 = (0..k).map(|i| ((n - i) as f64).ln() - ((i + 1) as f64).ln()).sum();
    let mut term = (log_choose + k as f64 * p.ln() + (n - k) as f64 * q.ln()).exp();
    let mut sum = 0.0;
    let mut x = k;
    loop {
        sum += term;
        if x == n || (term < sum * 1e-17 && (x as f64) > n as f64 * p) {
            break;
        }
        term *= (n - x) as f64 / (x + 1) as f64 * p / q;
        x += 1;
    }
    sum.min(1.0)
}

/// One device's days, oldest first: the history days, then today.
struct Record<'d> {
    days: &'d [DeviceDay],
}

impl Record<'_> {
    fn history(&self) -> &[DeviceDay] {
        &self.days[..self.days.len() - 1]
    }

    fn today(&self) -> DeviceDay {
        self.days[self.days.len() - 1]
    }

    fn active(&self) -> usize {
        self.history().iter().filter(|d| d.events > 0).count()
    }
}

/// What the finding says about one device.
struct Hit {
    device: u32,
    /// Its days, oldest first, for the finding's series.
    days: Vec<DeviceDay>,
    chance: Option<f64>,
    detail: Value,
}

pub fn detect(ctx: &Context<'_>) -> Vec<Finding> {
    let settings = &ctx.settings.detect.silent_device;
    let min_days = ctx.settings.detect.min_device_history_days;
    if ctx.today.devices.iter().all(|(_, d)| d.events == 0) {
        return Vec::new();
    }
    let history_days: Vec<Day> = ctx.history.days.iter().map(|d| d.day).collect();
    let window: Vec<&DayData> = ctx.history.days.iter().chain([ctx.today]).collect();
    // Each day lists its devices sorted by id: one cursor per day, walked side by side, gives
    // every device its days without a map or an allocation per device.
    let mut cursors = vec![0_usize; window.len()];
    let mut days = vec![DeviceDay::default(); window.len()];

    let (mut silent, mut stopped, mut failing) = (Vec::new(), Vec::new(), Vec::new());
    loop {
        let under =
            window.iter().zip(&cursors).filter_map(|(data, &at)| data.devices.get(at).map(|(device, _)| *device));
        let Some(device) = under.min() else { break };
        for ((data, at), slot) in window.iter().zip(&mut cursors).zip(&mut days) {
            *slot = match data.devices.get(*at) {
                Some(&(id, day)) if id == device => {
                    *at += 1;
                    day
                }
                _ => DeviceDay::default(),
            };
        }
        let record = Record { days: &days };
        let active = record.active();
        if active < min_days {
            continue;
        }
        let history = record.history();
        let today = record.today();
        let last_active = history.iter().rev().find(|d| d.events > 0);
        let hit = |chance: Option<f64>, detail: Value| Hit { device, days: days.clone(), chance, detail };

        // The sensor is gone, the device is not.
        let sensor_days = history.iter().filter(|d| d.sensor_events > 0).count();
        let share = sensor_days as f64 / active as f64;
        if today.other_events > 0
            && today.sensor_events == 0
            && share >= settings.min_sensor_share
            && last_active.is_some_and(|d| d.sensor_events > 0)
        {
            silent.push(hit(
                None,
                json!({"historyDaysActive": active, "historyDaysWithSensor": sensor_days, "otherEventsToday": today.other_events}),
            ));
        }

        // Nothing at all, for long enough to be unlikely.
        if today.events == 0 {
            let streak = 1 + history.iter().rev().take_while(|d| d.events == 0).count();
            let before = &history[..history.len() + 1 - streak];
            let first = before.iter().position(|d| d.events > 0).unwrap_or(before.len());
            let observed = before.len() - first;
            let p = (active as f64 + 1.0) / (observed as f64 + 2.0);
            let chance = |s: usize| (1.0 - p).powi(s as i32);
            if chance(streak) <= settings.max_chance && chance(streak - 1) > settings.max_chance {
                stopped.push(hit(
                    Some(chance(streak)),
                    json!({"silentDays": streak, "historyDaysActive": active, "historyDaysObserved": observed, "chance": chance(streak)}),
                ));
            }
        }

        // Failures well beyond the device's own rate.
        let failing_day = |d: &DeviceDay| {
            d.failed >= settings.min_failed_events && d.failed as f64 >= settings.min_failed_share * d.events as f64
        };
        if failing_day(&today) && last_active.is_none_or(|d| !failing_day(d)) {
            let (events, failed) = history.iter().fold((0, 0), |(e, f), d| (e + d.events, f + d.failed));
            let rate = (failed as f64 + 1.0) / (events as f64 + 2.0);
            let chance = binomial_tail(today.events, today.failed, rate);
            if chance <= settings.max_chance {
                failing.push(hit(
                    Some(chance),
                    json!({"events": today.events, "failedEvents": today.failed, "historyFailedRate": rate, "chance": chance}),
                ));
            }
        }
    }
    // in DeviceId order, so a finding's details come out the same whatever the interning order
    for hits in [&mut silent, &mut stopped, &mut failing] {
        hits.sort_by(|a, b| ctx.device_id(a.device).cmp(ctx.device_id(b.device)));
    }

    let mut findings = Vec::new();
    if !silent.is_empty() {
        findings.push(finding(ctx, &history_days, FindingType::SilentDevice, "sensor-silent", silent));
    }
    if !stopped.is_empty() {
        findings.push(finding(ctx, &history_days, FindingType::SilentDevice, "connections-stopped", stopped));
    }
    if !failing.is_empty() {
        findings.push(finding(ctx, &history_days, FindingType::FailingDevice, "failed-share-jump", failing));
    }
    findings
}

fn finding(
    ctx: &Context<'_>,
    history_days: &[Day],
    finding_type: FindingType,
    method: &'static str,
    hits: Vec<Hit>,
) -> Finding {
    let settings = &ctx.settings.detect.silent_device;
    let group: Vec<&[DeviceDay]> = hits.iter().map(|h| h.days.as_slice()).collect();
    let days: Vec<String> = history_days.iter().chain([&ctx.day]).map(Day::to_string).collect();
    let sum = |pick: fn(&DeviceDay) -> u64| -> Vec<u64> {
        (0..days.len()).map(|i| group.iter().map(|r| pick(&r[i])).sum()).collect()
    };
    let (events, sensor, failed) = (sum(|d| d.events), sum(|d| d.sensor_events), sum(|d| d.failed));
    let history_mean = |v: &[u64]| {
        let h = &v[..v.len() - 1];
        if h.is_empty() {
            0.0
        } else {
            h.iter().sum::<u64>() as f64 / h.len() as f64
        }
    };
    let worst = hits.iter().filter_map(|h| h.chance).fold(0.0_f64, f64::max);
    let threshold = -settings.max_chance.log10();
    let devices = device_list(ctx, hits.iter().map(|h| h.device));
    let details: Value = Value::Array(
        hits.iter()
            .take(ctx.settings.detect.max_listed_devices)
            .map(|h| {
                let mut d = h.detail.clone();
                d["deviceId"] = json!(ctx.device_id(h.device));
                d
            })
            .collect(),
    );
    let n = devices.len();
    let last = days.len() - 1;
    let (severity, observed, baseline, score, threshold_cell, direction, remote_host, description) = match method {
        "sensor-silent" => (
            Severity::High,
            sensor[last] as f64,
            history_mean(&sensor),
            n as f64,
            None,
            -1,
            None,
            format!(
                "{n} device(s) still reached the Defender and Windows telemetry hosts through other processes on {day}, but \
                 none of their sensor processes ({sensors}) did, after doing so on at least {share:.0}% of their history \
                 days: the sensor looks cut off from its cloud (an EDR-silencing tool, or a firewall or proxy rule).",
                day = ctx.day,
                sensors = settings.sensor_processes.join(", "),
                share = settings.min_sensor_share * 100.0,
            ),
        ),
        "connections-stopped" => (
            Severity::Medium,
            events[last] as f64,
            history_mean(&events),
            -worst.log10(),
            Some(threshold),
            -1,
            None,
            format!(
                "{n} device(s) with regular telemetry have sent nothing to the Defender hosts for long enough that a silence \
                 like it had a chance of at most {worst:.1e} under their own history (threshold {max:.0e}): offline, \
                 re-imaged, or the sensor silenced.",
                max = settings.max_chance,
            ),
        ),
        _ => {
            let share = |i: usize| if events[i] == 0 { 0.0 } else { failed[i] as f64 / events[i] as f64 };
            let (hist_events, hist_failed): (u64, u64) = (events[..last].iter().sum(), failed[..last].iter().sum());
            let by_host = failed_by_host(ctx, &hits);
            let host = by_host.first().map(|(h, _)| h.clone());
            (
                Severity::Medium,
                share(last),
                if hist_events == 0 { 0.0 } else { hist_failed as f64 / hist_events as f64 },
                -worst.log10(),
                Some(threshold),
                1,
                None,
                format!(
                    "{n} device(s) had {pct:.0}% of their connections to the Defender hosts fail on {day} \
                     ({f} of {e}; most to {host}), against {base:.1}% before: a chance of at most {worst:.1e} under their own \
                     failure rate. A firewall, a proxy or an EDR-silencing tool is blocking them.",
                    pct = share(last) * 100.0,
                    day = ctx.day,
                    host = host.unwrap_or_default(),
                    f = failed[last],
                    e = events[last],
                    base = if hist_events == 0 { 0.0 } else { 100.0 * hist_failed as f64 / hist_events as f64 },
                ),
            )
        }
    };
    Finding {
        remote_host,
        action_type: (finding_type == FindingType::FailingDevice).then(|| "ConnectionFailed".to_string()),
        devices,
        observed: Some(observed),
        baseline: Some(baseline),
        score: Some(score),
        threshold: threshold_cell,
        direction,
        params: json!({
            "failedByHost": if finding_type == FindingType::FailingDevice { json!(failed_by_host(ctx, &hits)) } else { Value::Null },
            "minDeviceHistoryDays": ctx.settings.detect.min_device_history_days,
            "minSensorShare": settings.min_sensor_share,
            "maxChance": settings.max_chance,
            "minFailedShare": settings.min_failed_share,
            "minFailedEvents": settings.min_failed_events,
            "devices": details,
        }).into(),
        series: Some(json!({"days": days, "events": events, "sensorEvents": sensor, "failedEvents": failed}).into()),
        description,
        tactics: vec!["DefenseEvasion"],
        techniques: if finding_type == FindingType::FailingDevice {
            vec!["T1562.001", "T1562.004"]
        } else {
            vec!["T1562.001"]
        },
        ..Finding::new(ctx, finding_type, method.to_string(), severity, method)
    }
}

/// Failed events of the devices per listed host, most first.
fn failed_by_host(ctx: &Context<'_>, hits: &[Hit]) -> Vec<(String, u64)> {
    let devices: std::collections::BTreeSet<u32> = hits.iter().map(|h| h.device).collect();
    let mut by_host: BTreeMap<String, u64> = BTreeMap::new();
    for a in &ctx.today.activity {
        if a.listed && a.failed > 0 && devices.contains(&a.device) {
            *by_host.entry(ctx.host(a.host).to_string()).or_default() += a.failed;
        }
    }
    let mut hosts: Vec<(String, u64)> = by_host.into_iter().collect();
    hosts.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    hosts
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detect::testing::{ids, row, run, sensor, settings, Row};

    fn diagtrack(device: &'static str) -> Row {
        row(device, "eu-v20.events.data.microsoft.com", "svchost.exe", r"c:\windows\system32\svchost.exe")
    }

    fn normal(device: &'static str) -> Vec<Row> {
        vec![sensor(device), diagtrack(device)]
    }

    fn days(n: usize, devices: &[&'static str]) -> Vec<Vec<Row>> {
        (0..n).map(|_| devices.iter().flat_map(|d| normal(d)).collect()).collect()
    }

    #[test]
    fn binomial_tail_against_hand_values() {
        // P(X >= 2 | n = 3, p = 0.5) = 4/8
        assert!((binomial_tail(3, 2, 0.5) - 0.5).abs() < 1e-15);
        // P(X >= 5 | n = 5, p = 0.1) = 1e-5
        assert!((binomial_tail(5, 5, 0.1) - 1e-5).abs() < 1e-18);
        assert_eq!(binomial_tail(5, 0, 0.1), 1.0);
        assert_eq!(binomial_tail(5, 6, 0.1), 0.0);
        // large n: P(X >= 600 | 1000, 0.5) is tiny but not zero
        let tail = binomial_tail(1000, 600, 0.5);
        assert!(tail > 0.0 && tail < 1e-9, "{tail}");
    }

    #[test]
    fn a_sensor_cut_off_on_a_live_device_is_reported_once() {
        let settings = settings();
        let history = days(10, &["dev-a", "dev-b"]);
        let today = [sensor("dev-a"), diagtrack("dev-a"), diagtrack("dev-b")];
        let findings = run(&settings, &history, &today, detect);
        assert_eq!(findings.len(), 1, "{findings:#?}");
        let f = &findings[0];
        assert_eq!(
            (f.finding_type, f.method, f.severity),
            (FindingType::SilentDevice, "sensor-silent", Severity::High)
        );
        assert_eq!(ids(f), ["dev-b"]);
        // the next day the episode goes on: not reported again
        let mut later = history.clone();
        later.push(today.to_vec());
        assert!(run(&settings, &later, &today, detect).is_empty());
        // near miss: a device whose sensor was rarely there
        let mut sparse = days(10, &["dev-a"]);
        for (i, day) in sparse.iter_mut().enumerate() {
            day.push(diagtrack("dev-c"));
            if i % 2 == 0 {
                day.push(sensor("dev-c"));
            }
        }
        assert!(run(&settings, &sparse, &[sensor("dev-a"), diagtrack("dev-c")], detect).is_empty());
    }

    #[test]
    fn a_device_that_stops_entirely_is_reported_when_the_silence_becomes_unlikely() {
        let settings = settings();
        // 30 days of perfect record: (1/32)^s <= 1e-6 first at s = 4
        let mut history = days(30, &["dev-a", "dev-s"]);
        let mut outcome = Vec::new();
        for _ in 0..5 {
            let today: Vec<Row> = normal("dev-a");
            let findings = run(&settings, &history, &today, detect);
            outcome.push(findings.iter().map(|f| (f.method, ids(f).join(","))).collect::<Vec<_>>());
            history.push(today);
        }
        let hit = vec![("connections-stopped", "dev-s".to_string())];
        assert_eq!(outcome, [vec![], vec![], vec![], hit.clone(), vec![]]);
    }

    #[test]
    fn weekend_workstations_and_days_without_input_are_not_silent() {
        let settings = settings();
        // a workstation that reports five days a week
        let mut history: Vec<Vec<Row>> = Vec::new();
        for i in 0..28 {
            let mut day = normal("dev-a");
            if i % 7 < 5 {
                day.extend(normal("dev-w"));
            }
            history.push(day);
        }
        // after its two days off, three more without it: at most (1 - 21/28)^5, about 1e-3
        for _ in 0..3 {
            assert!(run(&settings, &history, &normal("dev-a"), detect).is_empty());
            history.push(normal("dev-a"));
        }
        assert!(run(&settings, &history, &[], detect).is_empty());
    }

    #[test]
    fn failures_far_above_the_device_rate_are_reported() {
        let settings = settings();
        let history = days(10, &["dev-a", "dev-b"]);
        let mut failing = sensor("dev-b");
        (failing.events, failing.failed) = (12, 12);
        let mut some = sensor("dev-a");
        (some.events, some.failed) = (12, 2);
        let findings = run(&settings, &history, &[some, diagtrack("dev-a"), failing, diagtrack("dev-b")], detect);
        assert_eq!(findings.len(), 1, "{findings:#?}");
        let f = &findings[0];
        assert_eq!((f.finding_type, f.method), (FindingType::FailingDevice, "failed-share-jump"));
        assert_eq!(ids(f), ["dev-b"]);
        assert_eq!(f.remote_host, None);
        assert_eq!(f.params.value()["failedByHost"], json!([[crate::detect::testing::GW, 12]]));
        assert!(f.score.unwrap() > 6.0);
    }
}

//! The Log Analytics query API as a source, against a local server that evaluates the KQL the
//! job sends: the pushed-down filter, both pushdown modes, window splitting at the API's
//! limits, and every scripted failure with its outcome.

use std::path::Path;
use std::time::Duration;

use serde_json::Value;
use telemetry_hunt::time::{parse_timestamp_micros, Day};

use crate::azure_fakes::log_analytics::{column, events_from_dir, Event, KValue, LogAnalyticsFake};
use crate::azure_fakes::{la_section, run_in_process, sample_jsonl, Fault, WORKSPACE};
use crate::support::{daily, read_table, run_record, table_files};

const MDE: &str = r"c:\program files\windows defender advanced threat protection\mssense.exe";

fn event(time: &str, device: &str, action: &str, url: &str, process: &str, folder: &str) -> Event {
    let mut e = Event::new();
    let t = parse_timestamp_micros(time).unwrap();
    e.insert(column("Timestamp"), KValue::Time(Some(t)));
    e.insert(column("TimeGenerated"), KValue::Time(Some(t + 300_000_000)));
    for (c, v) in [
        ("DeviceId", device),
        ("DeviceName", device),
        ("ActionType", action),
        ("RemoteUrl", url),
        ("InitiatingProcessFileName", process),
        ("InitiatingProcessFolderPath", folder),
        ("InitiatingProcessVersionInfoCompanyName", "Microsoft Corporation"),
    ] {
        e.insert(column(c), KValue::Str(v.into()));
    }
    e.insert(column("RemotePort"), KValue::Int(Some(443)));
    e
}

/// Eight events of 2026-11-02 and its neighbours: reference hosts, an evasion spelling, an
/// ordinary host the server must not send, a look-alike it sends and the job drops, and two
/// events just outside the day.
fn small_events() -> Vec<Event> {
    let gw = "winatp-gw-weu.microsoft.com";
    vec![
        event("2026-11-02T01:00:00Z", "d1", "ConnectionSuccess", gw, "MsSense.exe", MDE),
        event("2026-11-02T02:00:00Z", "d2", "ConnectionSuccess", gw, "MsSense.exe", MDE),
        event(
            "2026-11-02T13:00:00Z",
            "d2",
            "ConnectionFailed",
            "WINATP-GW-WEU.MICROSOFT.COM:443",
            "powershell.exe",
            r"c:\windows\system32\windowspowershell\v1.0\powershell.exe",
        ),
        event(
            "2026-11-02T14:00:00Z",
            "d3",
            "ConnectionSuccess",
            "https://eu-v20.events.data.microsoft.com/ping",
            "svchost.exe",
            r"c:\windows\system32\svchost.exe",
        ),
        event("2026-11-02T15:00:00Z", "d3", "ConnectionSuccess", "www.bing.com", "msedge.exe", ""),
        event(
            "2026-11-02T16:00:00Z",
            "d4",
            "ConnectionSuccess",
            "winatp-gw-weu.microsoft.com.evil.net",
            "evil.exe",
            "",
        ),
        event("2026-11-03T00:00:00Z", "d1", "ConnectionSuccess", gw, "MsSense.exe", MDE),
        event("2026-11-01T23:59:59.9999999Z", "d5", "ConnectionSuccess", gw, "MsSense.exe", MDE),
    ]
}

const DAY: &str = "2026-11-02";

fn run_small(fake: &LogAnalyticsFake, extra: &str, out: &Path) -> Result<telemetry_hunt::job::RunOutcome, String> {
    let config = la_section(&fake.server.url(), &format!("window_hours = 24\nmax_in_flight = 1\n{extra}"));
    run_in_process(&config, &[], out, Some((DAY, DAY))).map_err(|(e, _)| e.to_string())
}

/// The reference table of the small workspace: three devices reach reference hosts with a
/// spelling the reference query accepts; d2's `HOST:443` is an evasion only `normalized` sees.
fn assert_small_tables(out: &Path) {
    let got = daily(out);
    let want: std::collections::BTreeMap<(String, String), (u64, u64)> =
        [((DAY.to_string(), "ConnectionSuccess".to_string()), (3, 3))].into_iter().collect();
    assert_eq!(got, want);
    let record = run_record(out);
    assert_eq!(record["RowsMatchedKql"], 3);
    assert_eq!(record["RowsMatchedNormalized"], 4);
    assert_eq!(record["RowsEvadingReferenceQuery"], 1);
    assert_eq!(record["Status"], "succeeded");
    let hosts = read_table(out, "MdeTelemetryHosts");
    let failed: Vec<&serde_json::Map<String, Value>> =
        hosts.iter().filter(|r| r["ActionType"] == "ConnectionFailed").collect();
    assert_eq!(failed.len(), 1);
    assert_eq!(
        (&failed[0]["RemoteHost"], &failed[0]["EvasionEvents"]),
        (&Value::from("winatp-gw-weu.microsoft.com"), &Value::from(1))
    );
}

#[test]
fn a_small_workspace_gives_the_reference_numbers_and_only_telemetry_rows_travel() {
    for pushdown in ["rows", "aggregate"] {
        let fake = LogAnalyticsFake::start(WORKSPACE, small_events());
        let out = tempfile::tempdir().unwrap();
        let outcome = run_small(&fake, &format!("pushdown = \"{pushdown}\""), out.path()).unwrap();
        assert_small_tables(out.path());
        let requests = fake.requests();
        assert_eq!(requests.len(), 1, "{pushdown}: one window, one query");
        // Five rows of the day contain a listed host; the job keeps four of them. bing never left the workspace.
        assert_eq!(requests[0].rows, 5, "{pushdown}");
        assert!(
            requests[0].query.contains("| where RemoteUrl has_any (\"microsoft\", \"windows\", \"windowsupdate\")"),
            "{}",
            requests[0].query
        );
        assert_eq!(outcome.record.query.as_ref().map(|q| (q.windows, q.splits, q.retries)), Some((1, 0, 0)));
        assert_eq!(fake.violations(), Vec::<String>::new());
    }
}

/// The same sample, three days: the query API with either pushdown gives the very tables the
/// local files give, and the pre-aggregation sends fewer rows.
#[test]
fn both_pushdowns_give_the_tables_of_the_files_they_came_from() {
    let dir = sample_jsonl(60_000, 3, 300, "2026-11-01");
    let events = events_from_dir(&dir, 300_000_000);
    let total = events.len();
    let local = tempfile::tempdir().unwrap();
    let config_local = "";
    run_in_process(config_local, &[&dir], local.path(), Some(("2026-11-01", "2026-11-03")))
        .map_err(|(e, _)| e.to_string())
        .unwrap();
    let truth = table_files(local.path());
    assert!(truth.len() == 9 && truth.values().all(|t| !t.is_empty()), "{:?}", truth.keys());

    let mut returned = Vec::new();
    for pushdown in ["rows", "aggregate"] {
        let fake = LogAnalyticsFake::start(WORKSPACE, events.clone());
        let out = tempfile::tempdir().unwrap();
        let config = la_section(&fake.server.url(), &format!("pushdown = \"{pushdown}\"\nwindow_hours = 6"));
        let outcome = run_in_process(&config, &[], out.path(), Some(("2026-11-01", "2026-11-03")))
            .map_err(|(e, _)| e.to_string())
            .unwrap();
        assert_eq!(table_files(out.path()), truth, "{pushdown}");
        let (a, b) = (run_record(local.path()), run_record(out.path()));
        for key in [
            "RowsMatchedKql",
            "RowsMatchedNormalized",
            "RowsEvadingReferenceQuery",
            "RowsTelemetry",
            "RowsExcluded",
            "ExcludedByRule",
            "RowsWithoutDeviceId",
        ] {
            assert_eq!(a[key], b[key], "{pushdown}: {key}");
        }
        let query = outcome.record.query.unwrap();
        assert_eq!(query.windows, 12, "3 days of 6-hour windows");
        assert_eq!(b["QueryWindows"], 12);
        assert!(fake.server.peak_in_flight() <= 4, "at most max_in_flight windows at once");
        assert_eq!(fake.violations(), Vec::<String>::new());
        returned.push(query.rows_returned);
    }
    // telemetry rows, and the look-alike candidates the detectors need
    assert!(returned[0] < total as u64 / 8, "only telemetry rows travel: {} of {total}", returned[0]);
    assert!(returned[1] < returned[0], "the pre-aggregation sends fewer rows: {returned:?}");
    eprintln!(
        "pushdown: {total} events in the workspace; rows pushdown returned {}, aggregate returned {}",
        returned[0], returned[1]
    );
}

/// 520,000 matching rows in one window: the API returns 500,000 and a PartialError; the job
/// halves the window and the totals are those of the files the rows came from.
#[test]
fn a_window_with_more_than_500000_rows_is_split_and_totals_equal_the_unsplit_truth() {
    const ROWS: usize = 520_000;
    let hosts = ["winatp-gw-weu.microsoft.com", "eu-v20.events.data.microsoft.com", "WINATP-GW-NEU.MICROSOFT.COM:443"];
    let actions = ["ConnectionSuccess", "ConnectionFailed", "ConnectionAttempt"];
    let day = Day::parse(DAY).unwrap().start_micros();
    let dir = tempfile::tempdir().unwrap();
    let mut lines = String::with_capacity(ROWS * 160);
    let mut events = Vec::with_capacity(ROWS);
    let mut kql_events = 0u64;
    for i in 0..ROWS {
        let t = day + (i as i64 * 86_400_000_000 / ROWS as i64);
        let (device, action, host) = (format!("d{}", (i * 7919) % 20_011), actions[i % 3], hosts[(i / 3) % 3]);
        kql_events += u64::from(!host.contains(':'));
        let time = telemetry_hunt::time::format_micros(t);
        lines.push_str(&format!(
            "{{\"Timestamp\":\"{time}\",\"DeviceId\":\"{device}\",\"ActionType\":\"{action}\",\"RemoteUrl\":\"{host}\",\"RemotePort\":443,\"InitiatingProcessFileName\":\"MsSense.exe\"}}\n"
        ));
        let mut e = Event::new();
        e.insert(column("Timestamp"), KValue::Time(Some(t)));
        e.insert(column("TimeGenerated"), KValue::Time(Some(t + 60_000_000)));
        e.insert(column("DeviceId"), KValue::Str(device));
        e.insert(column("ActionType"), KValue::Str(action.into()));
        e.insert(column("RemoteUrl"), KValue::Str(host.into()));
        e.insert(column("RemotePort"), KValue::Int(Some(443)));
        e.insert(column("InitiatingProcessFileName"), KValue::Str("MsSense.exe".into()));
        events.push(e);
    }
    std::fs::write(dir.path().join("events.jsonl"), lines).unwrap();
    let local = tempfile::tempdir().unwrap();
    run_in_process("", &[dir.path()], local.path(), Some((DAY, DAY))).map_err(|(e, _)| e.to_string()).unwrap();

    let fake = LogAnalyticsFake::start(WORKSPACE, events);
    let out = tempfile::tempdir().unwrap();
    let outcome = run_small(&fake, "", out.path()).unwrap();
    assert_eq!(table_files(out.path()), table_files(local.path()));
    let requests = fake.requests();
    assert!(requests[0].partial && requests[0].rows == 500_000, "the whole day is cut at the cap");
    assert_eq!(requests.len(), 3, "one cut answer, then two halves");
    let halves: Vec<(i64, i64)> = requests[1..].iter().map(|r| r.window.unwrap()).collect();
    assert_eq!(halves, [(day, day + 43_200_000_000), (day + 43_200_000_000, day + 86_400_000_000)]);
    assert!(requests[1..].iter().all(|r| !r.partial && r.rows == ROWS / 2));
    let query = outcome.record.query.unwrap();
    assert_eq!(
        (query.windows, query.splits, query.rows_returned),
        (2, 1, ROWS as u64),
        "the cut answer is not counted"
    );
    let events: u64 = daily(out.path()).values().map(|(_, events)| events).sum();
    assert_eq!(events, kql_events, "the two kql-spelled hosts of the three");
    assert_eq!(kql_events, 346_668);
    assert_eq!(fake.violations(), Vec::<String>::new());
    let duration = outcome.record.durations_ms.get("scan").copied().unwrap_or(0);
    eprintln!("split: {ROWS} matching rows; 1 cut answer of 500000 rows, 2 halves of {} rows; {} answer bytes counted; scan {duration} ms", ROWS / 2, query.answer_bytes);
}

/// Each scripted failure of the query API, and what the job does about it: the tables come out
/// the same; the record says how many retries and splits it took.
#[test]
fn transient_failures_are_retried_and_cut_answers_split() {
    let cases: &[(&str, Vec<Fault>, u64, u64, usize)] = &[
        // name, faults, retries, splits, requests
        ("500", vec![Fault::status(500)], 1, 0, 2),
        ("503 twice", vec![Fault::status(503), Fault::status(503)], 2, 0, 3),
        ("dropped mid-body", vec![Fault::Cut], 1, 0, 2),
        ("200 with PartialError", vec![Fault::PartialError], 0, 1, 3),
        ("504", vec![Fault::status(504)], 0, 1, 3),
    ];
    for (name, faults, retries, splits, requests) in cases {
        let fake = LogAnalyticsFake::start(WORKSPACE, small_events());
        for fault in faults {
            fake.push_fault(fault.clone());
        }
        let out = tempfile::tempdir().unwrap();
        let outcome = run_small(&fake, "", out.path()).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_small_tables(out.path());
        let query = outcome.record.query.unwrap();
        assert_eq!((query.retries, query.splits), (*retries, *splits), "{name}");
        assert_eq!(fake.requests().len(), *requests, "{name}");
        assert_eq!(run_record(out.path())["QueryRetries"], *retries, "{name}");
    }
}

#[test]
fn a_429_waits_for_its_retry_after() {
    let fake = LogAnalyticsFake::start(WORKSPACE, small_events());
    fake.push_fault(Fault::throttled("1"));
    let out = tempfile::tempdir().unwrap();
    run_small(&fake, "", out.path()).unwrap();
    assert_small_tables(out.path());
    let requests = fake.requests();
    assert_eq!(requests.len(), 2);
    let waited = requests[1].at - requests[0].at;
    assert!(waited >= Duration::from_secs(1), "retried after {waited:?}, before the Retry-After of 1 s");
}

#[test]
fn a_slow_answer_past_the_timeout_is_abandoned_and_asked_again() {
    let fake = LogAnalyticsFake::start(WORKSPACE, small_events());
    fake.push_fault(Fault::Slow(Duration::from_secs(4)));
    let out = tempfile::tempdir().unwrap();
    let started = std::time::Instant::now();
    let outcome = run_small(&fake, "timeout_secs = 1", out.path()).unwrap();
    assert!(started.elapsed() < Duration::from_secs(4), "the job did not wait for the slow answer");
    assert_small_tables(out.path());
    assert_eq!(outcome.record.query.unwrap().retries, 1);
    assert_eq!(fake.requests().len(), 2);
}

/// Failures that retrying cannot fix fail the run with the endpoint, the window and the fix in
/// words, never the token, and leave no day tables behind.
#[test]
fn lasting_failures_fail_the_run_with_the_fix_and_no_tables() {
    let cases: &[(&str, &str, &[&str])] = &[
        ("500 every time", "", &["Log Analytics workspace", WORKSPACE, "HTTP 500", "gave up after 3 attempt(s)"]),
        ("403", "forbidden", &["HTTP 403", "Log Analytics Reader", WORKSPACE]),
        ("no Timestamp column", "no-timestamp", &["HTTP 400", "time_column = \"TimeGenerated\""]),
        ("cut at the minimum width", "min-width", &["cannot be split further", "pushdown = \"aggregate\""]),
        ("wrong workspace", "wrong-workspace", &["HTTP 404", "Workspace ID"]),
    ];
    for (name, setup, wants) in cases {
        let fake = LogAnalyticsFake::start(WORKSPACE, small_events());
        let mut extra = String::new();
        match *setup {
            "" => (0..3).for_each(|_| fake.push_fault(Fault::status(500))),
            "forbidden" => fake.state.lock().unwrap().forbidden = true,
            "no-timestamp" => fake.state.lock().unwrap().has_timestamp = false,
            "min-width" => {
                (0..3).for_each(|_| fake.push_fault(Fault::PartialError));
                extra = "min_window_minutes = 720".into();
            }
            "wrong-workspace" => fake.state.lock().unwrap().workspace = "00000000-0000-0000-0000-000000000000".into(),
            _ => unreachable!(),
        }
        let out = tempfile::tempdir().unwrap();
        let err = run_small(&fake, &extra, out.path()).err().unwrap_or_else(|| panic!("{name}: the run succeeded"));
        for want in *wants {
            assert!(err.contains(want), "{name}: `{want}` not in: {err}");
        }
        assert!(!err.contains("secret"), "{name}: a token leaked: {err}");
        assert!(!out.path().join("MdeTelemetryDaily").exists(), "{name}: no day tables");
        let record = run_record(out.path());
        assert_eq!(
            (record["Status"].as_str(), record["FailedStage"].as_str()),
            (Some("failed"), Some("read")),
            "{name}"
        );
    }
    // the Sentinel time column works where Timestamp does not exist
    let fake = LogAnalyticsFake::start(WORKSPACE, small_events());
    fake.state.lock().unwrap().has_timestamp = false;
    let out = tempfile::tempdir().unwrap();
    let config = format!("time_column = \"TimeGenerated\"\n{}", la_section(&fake.server.url(), "window_hours = 24"));
    run_in_process(&config, &[], out.path(), Some((DAY, DAY))).map_err(|(e, _)| e.to_string()).unwrap();
    assert_eq!(fake.requests()[0].query.lines().nth(1).unwrap(), "| where TimeGenerated >= datetime(2026-11-02T00:00:00.000000Z) and TimeGenerated < datetime(2026-11-03T00:00:00.000000Z)");
    // d5's event at 23:59:59.9999999 the day before was ingested five minutes later: by
    // TimeGenerated it belongs to this day
    assert_eq!(run_record(out.path())["RowsMatchedKql"], 4);
}

#[test]
fn check_runs_print_1_and_names_the_role_to_grant() {
    let fake = LogAnalyticsFake::start(WORKSPACE, Vec::new());
    let settings =
        telemetry_hunt::config::Config::from_toml(&la_section(&fake.server.url(), "")).unwrap().validate().unwrap();
    let credential: std::sync::Arc<dyn azure_core::credentials::TokenCredential> =
        std::sync::Arc::new(crate::azure_fakes::StaticToken::default());
    let lines = telemetry_hunt::job::probe_endpoints(&settings, Some(&credential));
    assert_eq!(lines.len(), 1);
    assert!(lines[0].as_ref().is_ok_and(|l| l.contains("`print 1` answered 1")), "{lines:?}");
    assert_eq!(fake.requests()[0].query, "print 1");
    fake.state.lock().unwrap().forbidden = true;
    let lines = telemetry_hunt::job::probe_endpoints(&settings, Some(&credential));
    let err = lines[0].as_ref().unwrap_err();
    assert!(err.contains("grant the job's identity the Log Analytics Reader role"), "{err}");
}

#[test]
fn the_rows_a_workspace_returns_count_against_max_rows_per_run() {
    for pushdown in ["rows", "aggregate"] {
        let fake = LogAnalyticsFake::start(WORKSPACE, small_events());
        let config = |limit: u64| {
            let section = la_section(&fake.server.url(), &format!("window_hours = 6\npushdown = \"{pushdown}\""));
            format!("{section}\n[limits]\nmax_rows_per_run = {limit}\n")
        };
        let out = tempfile::tempdir().unwrap();
        let (error, record) = run_in_process(&config(3), &[], out.path(), Some((DAY, DAY))).err().unwrap();
        let message = error.to_string();
        for want in
            ["Log Analytics workspace", "the rows the workspace returned to this run", "`limits.max_rows_per_run` = 3"]
        {
            assert!(message.contains(want), "{pushdown}: `{want}` not in {message}");
        }
        assert_eq!((record.status.as_str(), record.failed_stage.as_deref()), ("failed", Some("read")), "{pushdown}");
        assert!(!out.path().join("MdeTelemetryDaily").exists(), "{pushdown}: nothing written");
        assert_eq!(run_record(out.path())["FailedStage"], "read");

        // the same workspace within the limit: five telemetry rows (events) on the day
        let out = tempfile::tempdir().unwrap();
        let outcome = run_in_process(&config(5), &[], out.path(), Some((DAY, DAY))).map_err(|(e, _)| e.to_string());
        assert_eq!(outcome.unwrap().record.stats.rows_scanned, 5, "{pushdown}");
        assert_small_tables(out.path());
    }
}

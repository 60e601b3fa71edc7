//! Properties of host matching and aggregation, over generated inputs (proptest).

use proptest::prelude::*;
use proptest::strategy::ValueTree;
use telemetry_hunt::config::{Config, Settings};
use telemetry_hunt::hunt::host::{normalized_host, MatchMode};
use telemetry_hunt::hunt::Partial;
use telemetry_hunt::schema::col;
use telemetry_hunt::sink::tables;
use telemetry_hunt::source::canonical::{RowBuilder, RowValues};
use telemetry_hunt::time::{Day, MICROS_PER_DAY};

fn settings() -> &'static Settings {
    static SETTINGS: std::sync::OnceLock<Settings> = std::sync::OnceLock::new();
    SETTINGS.get_or_init(|| Config::default().validate().unwrap())
}

/// RemoteUrl values built the way real and hostile ones are: a listed host or a look-alike,
/// wrapped in any of the spellings the rules handle (scheme, userinfo, port, case, dots,
/// whitespace, brackets, paths).
fn remote_url() -> impl Strategy<Value = String> {
    let host = prop_oneof![
        3 => Just("winatp-gw-weu.microsoft.com".to_string()),
        2 => Just("eu-v20.events.data.microsoft.com".to_string()),
        1 => Just("ctldl.windowsupdate.com".to_string()),
        2 => Just("edr-weu.eu.endpoint.security.microsoft.com".to_string()),
        1 => Just("2001:db8::7".to_string()),
        1 => "[a-z0-9.-]{1,20}",
        1 => "[ -~]{0,12}",
    ];
    // Mostly clean spellings, so that a good share of the rows match the reference query too.
    let scheme = prop_oneof![
        4 => Just(""),
        3 => Just("https://"),
        1 => Just("tcp://"),
        1 => Just("//"),
        1 => Just("HTTP://"),
        1 => Just("1x://")
    ];
    let userinfo = prop_oneof![6 => Just(""), 1 => Just("u@"), 1 => Just("u:p@"), 1 => Just("a@b:c@")];
    let port = prop_oneof![6 => Just(""), 2 => Just(":443"), 1 => Just(":"), 1 => Just(":x:1")];
    let tail = prop_oneof![
        4 => Just(""),
        1 => Just("/"),
        1 => Just("/p?q=https://x"),
        1 => Just("#f"),
        1 => Just("?"),
        1 => Just("//api")
    ];
    let pad = || prop_oneof![8 => Just(""), 1 => Just(" "), 1 => Just("\t"), 1 => Just("\u{3000}")];
    let flag = |p: f64| proptest::bool::weighted(p);
    (
        pad(),
        scheme,
        userinfo,
        host,
        flag(0.2),
        flag(0.1),
        prop_oneof![8 => Just(0usize), 1 => Just(1), 1 => Just(2)],
        port,
        tail,
        pad(),
    )
        .prop_map(|(lead, scheme, userinfo, host, upper, bracket, dots, port, tail, trail)| {
            let host = if upper { host.to_ascii_uppercase() } else { host };
            let host = if bracket { format!("[{host}]") } else { host };
            let dots = ".".repeat(dots);
            format!("{lead}{scheme}{userinfo}{host}{dots}{port}{tail}{trail}")
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn normalized_host_is_idempotent(url in prop_oneof![remote_url(), any::<String>()]) {
        if let Some(host) = normalized_host(&url) {
            let again = normalized_host(&host);
            prop_assert_eq!(again.as_deref(), Some(host.as_ref()), "from {:?}", url);
        }
    }

    #[test]
    fn every_kql_match_is_a_normalized_match(url in prop_oneof![remote_url(), any::<String>()]) {
        let class = settings().hosts.classify(Some(&url));
        if class.reference(MatchMode::Kql) {
            prop_assert!(class.reference(MatchMode::Normalized), "{:?}", url);
        }
        prop_assert_eq!(settings().hosts.is_relevant(&url), class.kql_reference || class.host.is_some());
    }
}

/// One generated event.
#[derive(Debug, Clone)]
struct Event {
    day: i32,
    micros: i64,
    device: Option<u8>,
    action: u8,
    url: Option<String>,
    port: Option<i32>,
    process: u8,
}

fn event() -> impl Strategy<Value = Event> {
    (
        0..4i32,
        0..MICROS_PER_DAY,
        proptest::option::weighted(0.95, 0..12u8),
        0..3u8,
        proptest::option::weighted(0.95, remote_url()),
        proptest::option::weighted(0.9, prop_oneof![Just(443), Just(80), Just(-1), any::<i32>()]),
        0..4u8,
    )
        .prop_map(|(day, micros, device, action, url, port, process)| Event {
            day,
            micros,
            device,
            action,
            url,
            port,
            process,
        })
}

const ACTIONS: [&str; 3] = ["ConnectionSuccess", "ConnectionFailed", "ConnectionAttempt"];
const PROCESSES: [(&str, &str); 4] = [
    ("MsSense.exe", r"c:\program files\windows defender advanced threat protection\mssense.exe"),
    ("svchost.exe", r"c:\windows\system32\svchost.exe"),
    ("CcmExec.exe", r"c:\windows\ccm\ccmexec.exe"),
    ("evil.exe", r"c:\users\public\evil.exe"),
];

fn batch(events: &[Event]) -> arrow_array::RecordBatch {
    let mut builder = RowBuilder::default();
    for e in events {
        let mut row = RowValues {
            time_micros: i64::from(20_400 + e.day) * MICROS_PER_DAY + e.micros,
            remote_port: e.port,
            ..Default::default()
        };
        let (file, folder) = PROCESSES[usize::from(e.process)];
        row.text[col::DEVICE_ID] = e.device.map(|d| format!("device-{d}").into());
        row.text[col::ACTION_TYPE] = Some(ACTIONS[usize::from(e.action)].into());
        row.text[col::REMOTE_URL] = e.url.as_deref().map(Into::into);
        row.text[col::PROCESS_FILE_NAME] = Some(file.into());
        row.text[col::PROCESS_FOLDER_PATH] = Some(folder.into());
        builder.push(&row);
    }
    builder.finish()
}

/// Every table of every day, as the job writes them (JSON lines), and the run's counts.
fn tables_of(partial: &Partial) -> (String, String) {
    let s = settings();
    let mut out = String::new();
    for day in (20_400..20_404).map(Day) {
        for mode in [MatchMode::Kql, MatchMode::Normalized] {
            out += &tables::daily(partial, mode, day).to_jsonl();
        }
        out += &tables::hosts(partial, s, day).to_jsonl();
        out += &tables::processes(partial, s, day).to_jsonl();
    }
    (out, format!("{:?}", partial.counts))
}

fn aggregate(batches: &[&[Event]], right_to_left: bool) -> Partial {
    let partials = batches.iter().map(|events| {
        let mut p = Partial::default();
        p.add_batch(settings(), &batch(events));
        p
    });
    if right_to_left {
        partials.rev().fold(Partial::default(), |acc, p| p.merge(acc))
    } else {
        partials.fold(Partial::default(), Partial::merge)
    }
}

/// Splits `events` at the given (sorted, deduplicated) cut points.
fn split<'a>(events: &'a [Event], cuts: &[usize]) -> Vec<&'a [Event]> {
    let mut cuts: Vec<usize> = cuts.iter().map(|c| c % (events.len() + 1)).collect();
    cuts.sort_unstable();
    cuts.dedup();
    let mut pieces = Vec::new();
    let mut start = 0;
    for cut in cuts.into_iter().chain([events.len()]) {
        pieces.push(&events[start..cut]);
        start = cut;
    }
    pieces
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    #[test]
    fn any_split_into_batches_gives_the_same_tables(
        events in proptest::collection::vec(event(), 0..120),
        cuts in proptest::collection::vec(any::<usize>(), 0..8),
        right_to_left in any::<bool>(),
    ) {
        let whole = tables_of(&aggregate(&[&events], false));
        let pieces = split(&events, &cuts);
        prop_assert_eq!(tables_of(&aggregate(&pieces, right_to_left)), whole);
    }

    #[test]
    fn any_order_of_rows_gives_the_same_tables(
        (events, shuffled) in proptest::collection::vec(event(), 0..120)
            .prop_flat_map(|events| (Just(events.clone()), Just(events).prop_shuffle())),
    ) {
        prop_assert_eq!(tables_of(&aggregate(&[&shuffled], false)), tables_of(&aggregate(&[&events], false)));
    }
}

/// Some generated inputs must be telemetry at all, or the two table properties prove nothing.
#[test]
fn generated_events_reach_the_tables() {
    let mut runner = proptest::test_runner::TestRunner::deterministic();
    let events: Vec<Event> = (0..400).map(|_| event().new_tree(&mut runner).unwrap().current()).collect();
    let partial = aggregate(&[&events], false);
    assert!(partial.counts.rows_reference_kql > 10, "{:?}", partial.counts);
    assert!(partial.counts.rows_evading > 10, "{:?}", partial.counts);
    assert!(partial.hosts.len() > 5);
}

/// An event as a flat JSON line (a Log Analytics export line); absent values are left out.
fn json_line(e: &Event) -> String {
    let (file, folder) = PROCESSES[usize::from(e.process)];
    let time = telemetry_hunt::time::format_micros(i64::from(20_400 + e.day) * MICROS_PER_DAY + e.micros);
    let mut line = serde_json::json!({
        "Timestamp": time,
        "ActionType": ACTIONS[usize::from(e.action)],
        "InitiatingProcessFileName": file,
        "InitiatingProcessFolderPath": folder,
    });
    if let Some(device) = e.device {
        line["DeviceId"] = format!("device-{device}").into();
    }
    if let Some(url) = &e.url {
        line["RemoteUrl"] = url.as_str().into();
    }
    if let Some(port) = e.port {
        line["RemotePort"] = port.into();
    }
    line.to_string()
}

/// The whole job (hunt, detectors, writers) over `events` as one JSON-lines file, in `dir`:
/// every table and finding it writes, as a reader of the results sees them (the findings
/// without the RunId, which differs between runs; no run record, no report).
fn job_output(dir: &std::path::Path, events: &[Event]) -> std::collections::BTreeMap<String, Vec<u8>> {
    let (input, out) = (dir.join("events.jsonl"), dir.join("out"));
    let _ = std::fs::remove_dir_all(&out);
    std::fs::write(&input, events.iter().map(json_line).collect::<Vec<_>>().join("\n")).unwrap();
    crate::support::run(&[&input], &out, MatchMode::Kql);
    let mut files = std::collections::BTreeMap::new();
    for path in crate::support::files_under(&out) {
        let name = path.strip_prefix(&out).unwrap().to_string_lossy().into_owned();
        let findings = name.starts_with(tables::FINDINGS);
        if name.starts_with(tables::RUNS) || name == "report.html" || (findings && name.ends_with(".parquet")) {
            continue;
        }
        let mut bytes = std::fs::read(&path).unwrap();
        if findings {
            let rows: Vec<String> = String::from_utf8(bytes)
                .unwrap()
                .lines()
                .map(|line| {
                    let mut row: serde_json::Map<String, serde_json::Value> = serde_json::from_str(line).unwrap();
                    row.remove("RunId");
                    serde_json::to_string(&row).unwrap()
                })
                .collect();
            bytes = rows.join("\n").into_bytes();
        }
        files.insert(name, bytes);
    }
    files
}

proptest! {
    // Each case runs the job twice, so fewer cases than the aggregate-level properties.
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn any_order_of_input_rows_gives_the_same_tables_and_findings(
        (events, shuffled) in proptest::collection::vec(event(), 1..150)
            .prop_flat_map(|events| (Just(events.clone()), Just(events).prop_shuffle())),
    ) {
        // A run whose every row is rejected (a port such as -1 on each) fails by design.
        prop_assume!(events.iter().any(|e| e.port.is_none_or(|port| (0..=65535).contains(&port))));
        let dir = tempfile::tempdir().unwrap();
        let original = job_output(dir.path(), &events);
        prop_assert!(original.keys().any(|name| name.starts_with(tables::DAILY)));
        let reordered = job_output(dir.path(), &shuffled);
        prop_assert_eq!(reordered.keys().collect::<Vec<_>>(), original.keys().collect::<Vec<_>>());
        for (name, bytes) in &original {
            prop_assert!(&reordered[name] == bytes, "{} differs", name);
        }
    }
}

/// The generated inputs give findings, or the property above proves nothing about them.
#[test]
fn generated_events_give_findings() {
    let mut runner = proptest::test_runner::TestRunner::deterministic();
    let events: Vec<Event> = (0..150).map(|_| event().new_tree(&mut runner).unwrap().current()).collect();
    let dir = tempfile::tempdir().unwrap();
    let files = job_output(dir.path(), &events);
    let findings: usize = files
        .iter()
        .filter(|(name, _)| name.starts_with(tables::FINDINGS))
        .map(|(_, bytes)| bytes.split(|b| *b == b'\n').filter(|l| !l.is_empty()).count())
        .sum();
    assert!(findings > 3, "{findings} findings");
}

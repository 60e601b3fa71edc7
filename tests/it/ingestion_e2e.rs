//! The binary end to end, as the Container Apps job runs it: its real managed identity
//! (`IDENTITY_ENDPOINT` / `IDENTITY_HEADER`) against a local identity endpoint, a workspace
//! served by the query API fake, and a DCR served by the ingestion fake.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;
use std::process::{Command, Output};

use serde_json::{Map, Value};
use telemetry_hunt::sink::sentinel::default_stream;
use telemetry_hunt::sink::tables::table_def;

use crate::azure_fakes::log_analytics::{events_from_dir, RESOURCE as LA};
use crate::azure_fakes::{ingestion::RESOURCE as MONITOR, run_in_process, sample_jsonl, AzureWorld, DCR};
use crate::support::{files_under, read_table, table_files};

const FROM: &str = "2026-11-01";
const TO: &str = "2026-11-03";
const DAY_TABLES: [&str; 3] = ["MdeTelemetryDaily", "MdeTelemetryHosts", "MdeTelemetryProcesses"];

struct World {
    fakes: AzureWorld,
}

impl std::ops::Deref for World {
    type Target = AzureWorld;

    fn deref(&self) -> &AzureWorld {
        &self.fakes
    }
}

impl World {
    fn new(sentinel_extra: &str) -> World {
        let dir = sample_jsonl(60_000, 3, 300, FROM);
        let world = World { fakes: AzureWorld::start(events_from_dir(&dir, 300_000_000)) };
        std::fs::write(world.cwd.path().join("hunt.toml"), world.config("window_hours = 12", sentinel_extra)).unwrap();
        world
    }

    fn hunt(&self, args: &[&str]) -> Output {
        let mut command = Command::new(env!("CARGO_BIN_EXE_telemetry-hunt"));
        command.args(args).current_dir(self.cwd.path()).env_remove("RUST_LOG").env_remove("AZURE_CLIENT_ID");
        for (name, _) in std::env::vars().filter(|(n, _)| n.starts_with("TELEMETRY_HUNT_")) {
            command.env_remove(name);
        }
        command.envs(self.identity.env()).output().expect("the binary runs")
    }

    fn run(&self) -> Output {
        self.hunt(&[
            "--log-format",
            "json",
            "run",
            "--config",
            "hunt.toml",
            "--out",
            "results",
            "--from",
            FROM,
            "--to",
            TO,
        ])
    }

    fn results(&self) -> std::path::PathBuf {
        self.cwd.path().join("results")
    }

    fn outbox(&self) -> Vec<std::path::PathBuf> {
        files_under(&self.results().join("_outbox"))
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// (table, key values) of a row, stored or sent (a sent `Day` is a datetime).
fn key(table: &str, row: &Map<String, Value>) -> String {
    let values: Vec<String> = table_def(table)
        .unwrap()
        .key
        .iter()
        .map(|k| match row.get(*k) {
            Some(Value::String(v)) if *k == "Day" => v.trim_end_matches("T00:00:00Z").to_string(),
            other => other.unwrap_or(&Value::Null).to_string(),
        })
        .collect();
    format!("{table}|{}", values.join("|"))
}

/// A store row as Sentinel must get it from `run_id`: days as datetimes, `RunId`, and the
/// `EventTime` of the send, which must lie within the run (`started..=finished`).
fn as_sent(
    mut row: Map<String, Value>,
    run_id: &str,
    sent: &Map<String, Value>,
    started: &str,
    finished: &str,
) -> Map<String, Value> {
    for column in ["Day", "WindowFrom", "WindowTo"] {
        if let Some(Value::String(day)) = row.get_mut(column) {
            day.push_str("T00:00:00Z");
        }
    }
    let event_time = sent["EventTime"].as_str().expect("EventTime is a string");
    assert!(
        started <= event_time && event_time <= finished,
        "EventTime {event_time} is the time of the send, within the run {started}..{finished}"
    );
    row.insert("EventTime".into(), Value::from(event_time));
    row.entry("RunId".to_string()).or_insert(Value::from(run_id));
    row
}

fn gunzip(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(bytes).read_to_end(&mut out).unwrap();
    out
}

/// Every file under `dir`, for looking for secrets.
fn all_text(dir: &Path) -> String {
    let mut out = String::new();
    for path in files_under(dir) {
        let bytes = std::fs::read(&path).unwrap();
        out.push_str(&text(&if path.to_string_lossy().ends_with(".gz") { gunzip(&bytes) } else { bytes }));
    }
    out
}

fn runs(results: &Path) -> Vec<Map<String, Value>> {
    let mut runs = read_table(results, "MdeTelemetryRuns");
    runs.sort_by_key(|r| r["StartedAt"].as_str().unwrap().to_string());
    runs
}

#[test]
fn a_workspace_reaches_sentinel_end_to_end_and_every_row_arrives_once() {
    let world = World::new("max_batch_bytes = 20000");
    let out = world.run();
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert!(out.status.success(), "{stderr}");

    // the tables are those of the files the workspace holds
    let local = tempfile::tempdir().unwrap();
    let dir = sample_jsonl(60_000, 3, 300, FROM);
    run_in_process("", &[&dir], local.path(), Some((FROM, TO))).map_err(|(e, _)| e.to_string()).unwrap();
    assert_eq!(table_files(&world.results()), table_files(local.path()));

    let record = runs(&world.results()).remove(0);
    let run_id = record["RunId"].as_str().unwrap().to_string();
    let received = world.ingestion.rows();
    let mut total = 0;
    for table in DAY_TABLES {
        let stored = read_table(&world.results(), table);
        assert!(!stored.is_empty(), "{table}");
        let mut by_key: BTreeMap<String, Vec<&Map<String, Value>>> = BTreeMap::new();
        for row in &received[&default_stream(table)] {
            by_key.entry(key(table, row)).or_default().push(row);
        }
        assert_eq!(by_key.len(), stored.len(), "{table}: one received row per stored row");
        for row in stored {
            let copies = &by_key[&key(table, &row)];
            assert_eq!(copies.len(), 1, "{table}: {} arrived {} times", key(table, &row), copies.len());
            let (started, finished) = (record["StartedAt"].as_str().unwrap(), record["FinishedAt"].as_str().unwrap());
            assert_eq!(*copies[0], as_sent(row, &run_id, copies[0], started, finished), "{table}: value by value");
        }
        total += by_key.len() as u64;
    }
    // the run row arrives last, saying what the tables' delivery did
    let sent_runs = &received[&default_stream("MdeTelemetryRuns")];
    assert_eq!(sent_runs.len(), 1);
    let started = record["StartedAt"].as_str().unwrap();
    assert_eq!(sent_runs[0], as_sent(record.clone(), &run_id, &sent_runs[0], started, "9999"));
    let calls = world.ingestion.calls();
    assert_eq!(record["SentinelBatches"], calls.len() as u64 - 1);
    assert_eq!(record["SentinelRows"], total);
    assert_eq!((record["SentinelBatchesFailed"].as_u64(), record["SentinelOutboxLeft"].as_u64()), (Some(0), Some(0)));
    assert!(calls.len() > 10, "20 kB batches: {} calls", calls.len());
    assert_eq!(record["QueryWindows"], 6);
    assert!(world.outbox().is_empty(), "{:?}", world.outbox());

    // the real managed identity got one token per audience, and none leaked
    let issued = world.identity.state.lock().unwrap().issued.clone();
    assert_eq!(issued.keys().cloned().collect::<Vec<_>>(), [LA.to_string(), MONITOR.to_string()]);
    for (name, haystack) in [("stdout", &stdout), ("stderr", &stderr), ("results", &all_text(&world.results()))] {
        assert!(!haystack.contains("secret"), "a secret in {name}");
    }
    assert!(stdout.contains("ConnectionSuccess"), "{stdout}");
    world.no_violations();
    let events = world.la.state.lock().unwrap().events.len();
    let largest = calls.iter().map(|c| c.bytes).max().unwrap_or(0);
    eprintln!(
        "e2e: {events} events in the workspace, {} query windows, {} rows returned; {} ingestion calls (largest {largest} B uncompressed), {total} table rows + 1 run row delivered",
        record["QueryWindows"], record["QueryRowsReturned"], calls.len()
    );
}

#[test]
fn an_outage_half_way_exits_1_with_the_outbox_and_the_next_run_delivers_the_rest() {
    let world = World::new("max_batch_bytes = 20000\nmax_in_flight = 1\nmax_attempts = 2");
    world.ingestion.state.lock().unwrap().fail_after = Some((8, 503));
    let first = world.run();
    let stderr = text(&first.stderr);
    assert_eq!(first.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("wait in the outbox"), "{stderr}");
    let left = world.outbox();
    let record = runs(&world.results()).remove(0);
    let run_id = record["RunId"].as_str().unwrap().to_string();
    assert_eq!((record["Status"].as_str(), record["FailedStage"].as_str()), (Some("failed"), Some("deliver")));
    assert_eq!(record["SentinelBatches"], 8);
    assert_eq!(
        record["SentinelOutboxLeft"],
        left.len() as u64,
        "the run record counts what it leaves, itself included"
    );
    assert!(left.len() >= 8, "the outage came half-way: {} left", left.len());
    assert!(left.iter().all(|p| p.to_string_lossy().contains(&run_id)));
    // what the outbox names, row by row
    let mut named: Vec<String> = Vec::new();
    for file in &left {
        let table = file.file_name().unwrap().to_string_lossy().split('-').next().unwrap().to_string();
        let rows: Vec<Map<String, Value>> = serde_json::from_slice(&gunzip(&std::fs::read(file).unwrap())).unwrap();
        named.extend(rows.iter().map(|r| key(&table, r)));
    }
    let bodies: Vec<Vec<u8>> = left.iter().map(|p| std::fs::read(p).unwrap()).collect();
    let before = world.ingestion.calls().iter().filter(|c| c.status == 204).count();
    let delivered_first: BTreeMap<String, Vec<Map<String, Value>>> = world.ingestion.rows();

    // Sentinel is back; the next run sends the outbox first, then its own rows
    world.ingestion.state.lock().unwrap().fail_after = None;
    let second = world.run();
    assert!(second.status.success(), "{}", text(&second.stderr));
    assert!(world.outbox().is_empty(), "{:?}", world.outbox());
    let accepted: Vec<_> = world.ingestion.calls().into_iter().filter(|c| c.status == 204).collect();
    assert_eq!(
        accepted[before..before + left.len()].iter().map(|c| c.body.clone()).collect::<Vec<_>>(),
        bodies,
        "the outbox first, byte for byte"
    );

    // nothing is missing: every row of the first run arrived exactly once, and the rows sent
    // again by the second run are exactly those the outbox named
    let received = world.ingestion.rows();
    let first_run = |rows: &[Map<String, Value>], table: &str| -> Vec<String> {
        rows.iter().filter(|r| r["RunId"] == run_id.as_str()).map(|r| key(table, r)).collect()
    };
    let mut resent: Vec<String> = Vec::new();
    for table in DAY_TABLES.iter().chain(&["MdeTelemetryRuns"]) {
        let stream = default_stream(table);
        let all = first_run(&received[&stream], table);
        let mut unique = all.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), all.len(), "{table}: a row of the first run arrived twice");
        let earlier = delivered_first.get(&stream).map_or(0, |rows| first_run(rows, table).len());
        resent.extend(all[earlier..].iter().cloned());
        if *table != "MdeTelemetryRuns" {
            let stored: Vec<String> = read_table(&world.results(), table).iter().map(|r| key(table, r)).collect();
            let mut stored_sorted = stored.clone();
            stored_sorted.sort();
            assert_eq!(unique, stored_sorted, "{table}: every row of the first run arrived");
        }
    }
    resent.sort();
    named.sort();
    assert_eq!(resent, named);
    // the first run's row, sent late, says what happened to it, as the store does
    let first_row =
        received[&default_stream("MdeTelemetryRuns")].iter().find(|r| r["RunId"] == run_id.as_str()).unwrap();
    let started = record["StartedAt"].as_str().unwrap().to_string();
    assert_eq!(*first_row, as_sent(record, &run_id, first_row, &started, "9999"));
    let second_record = runs(&world.results()).remove(1);
    assert_eq!(second_record["SentinelOutboxResent"], left.len() as u64);
    assert_eq!(second_record["Status"], "succeeded");
    world.no_violations();
    eprintln!(
        "outage: run 1 delivered {before} batches, left {} in the outbox ({} rows); run 2 re-sent exactly those first, then {} batches of its own",
        left.len(),
        named.len(),
        second_record["SentinelBatches"].as_u64().unwrap() - left.len() as u64
    );
}

#[test]
fn check_probes_the_workspace_and_every_stream_and_says_what_to_fix() {
    let world = World::new("");
    let out = world.hunt(&["check", "--config", "hunt.toml"]);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", text(&out.stderr));
    // the local results folder (list, probe object, lock), the workspace, the five streams; no
    // local input, since the workspace is the source
    assert_eq!(stdout.lines().filter(|l| l.starts_with("ok")).count(), 9, "{stdout}");
    assert!(!stdout.contains("fixtures/sample"), "{stdout}");
    assert!(stdout.contains("`print 1` answered 1") && stdout.contains("Custom-MdeTelemetryRuns_CL"), "{stdout}");

    world.ingestion.state.lock().unwrap().forbidden = true;
    world.la.state.lock().unwrap().forbidden = true;
    let out = world.hunt(&["check", "--config", "hunt.toml"]);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert_eq!(stdout.lines().filter(|l| l.starts_with("FAIL")).count(), 6, "{stdout}");
    assert!(stdout.contains(&format!("grant Monitoring Metrics Publisher on the DCR {DCR}")), "{stdout}");
    assert!(stdout.contains("Log Analytics Reader"), "{stdout}");
    assert!(text(&out.stderr).contains("6 of the checks failed"), "{}", text(&out.stderr));

    std::fs::write(world.cwd.path().join("bad.toml"), "[sentinel]\ndcr_immutable_id = \"dcr-1\"\n").unwrap();
    let out = world.hunt(&["check", "--config", "bad.toml"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("sentinel.dcr_immutable_id"), "{}", text(&out.stderr));
}

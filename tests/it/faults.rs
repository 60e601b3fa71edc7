//! A failure injected at each external call of a run, one case per call: the blob source read
//! and the results write (on Azurite, through a proxy that drops the matching requests), the
//! managed-identity token (endpoint down, HTTP 500, garbage), the Log Analytics query and the Logs
//! Ingestion call (their wire-format servers failing). Every case asserts the same four things:
//!
//! 1. the binary exits 1;
//! 2. the run record of the failed run names the stage that failed (and the error says what);
//! 3. no reader sees half a day: every visible day has its whole table set and its completion
//!    marker, nothing of the commit protocol is left behind;
//! 4. with the fault removed, the next run succeeds, and the tables are those of a run that
//!    never failed.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Output;

use bytes::Bytes;
use serde_json::{Map, Value};

use crate::azure_fakes::identity::TokenFault;
use crate::azure_fakes::log_analytics::events_from_dir;
use crate::azure_fakes::{sample_jsonl, AzureWorld, Fault};
use crate::azurite_nightly::{blob_config, blob_table, day_tables_any_run, days, setup, streaming_tree};
use crate::azurite_support::{
    azurite_url, container_client, create_container, free_port, hunt, objects, text, unique, upload, Proxy,
};
use crate::support::files_under;

/// The tables a committed day has: written by the hunt, by the detectors, and its marker.
const DAY_SET: [&str; 5] = [
    "MdeTelemetryDaily",
    "MdeTelemetryHosts",
    "MdeTelemetryProcesses",
    "MdeTelemetryDeviceHosts",
    "MdeTelemetryFindings",
];

/// Every file of a local results folder, by its path in the store.
pub fn local_objects(dir: &Path) -> BTreeMap<String, Bytes> {
    files_under(dir)
        .into_iter()
        .map(|path| {
            let name = path.strip_prefix(dir).unwrap().to_string_lossy().replace('\\', "/");
            (name, Bytes::from(std::fs::read(&path).unwrap()))
        })
        .collect()
}

/// The days a results store shows, each checked whole: all of [`DAY_SET`] and its marker, and
/// no staged or half-committed object anywhere. Panics with what is half-written.
pub fn whole_days(objects: &BTreeMap<String, Bytes>) -> Vec<String> {
    let mut tables_by_day: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut marked = Vec::new();
    for name in objects.keys() {
        assert!(!name.starts_with("_staging/") && !name.starts_with("_commits/"), "left behind: {name}");
        if let Some(day) = name.strip_prefix("_complete/day=").and_then(|n| n.strip_suffix(".json")) {
            marked.push(day.to_string());
        }
        let Some((table, rest)) = name.split_once("/day=") else { continue };
        if table == "MdeTelemetryRuns" || table.starts_with('_') {
            continue;
        }
        let day = rest.split('/').next().unwrap().to_string();
        let tables = tables_by_day.entry(day).or_default();
        if !tables.contains(&table.to_string()) {
            tables.push(table.to_string());
        }
    }
    let days: Vec<String> = tables_by_day.keys().cloned().collect();
    for (day, tables) in &mut tables_by_day {
        tables.sort();
        let mut want: Vec<String> = DAY_SET.iter().map(|t| t.to_string()).collect();
        want.sort();
        assert_eq!(*tables, want, "day {day} is half-written");
    }
    assert_eq!(marked, days, "every day with tables is marked complete, and only those");
    days
}

/// The run records of a store, oldest first.
fn records(objects: &BTreeMap<String, Bytes>) -> Vec<Map<String, Value>> {
    let mut runs = blob_table(objects, "", "MdeTelemetryRuns");
    runs.sort_by_key(|r| r["StartedAt"].as_str().unwrap().to_string());
    runs
}

/// One injected failure and what it must give.
struct Case {
    name: &'static str,
    /// `FailedStage` of the run record.
    stage: &'static str,
    /// What the error (stderr and the run record) says.
    says: &'static [&'static str],
    /// Whether the failed run's days are committed (only a delivery failure comes after the commit).
    committed: bool,
}

/// Asserts 1–3 on a failed run; returns the days it left visible.
fn assert_failed(case: &Case, out: &Output, store: &BTreeMap<String, Bytes>) -> Vec<String> {
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{}: exit code; stderr: {stderr}", case.name);
    let failed: Vec<Value> = stderr
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|l| l["message"] == "Run failed.")
        .collect();
    assert_eq!(failed.len(), 1, "{}: one `Run failed.` line: {stderr}", case.name);
    assert_eq!(failed[0]["stage"], case.stage, "{}: the log names the stage", case.name);
    let runs = records(store);
    assert_eq!(runs.len(), 1, "{}: one run record: {runs:?}", case.name);
    let record = &runs[0];
    assert_eq!(record["Status"], "failed", "{}", case.name);
    assert_eq!(record["FailedStage"], case.stage, "{}: {record:?}", case.name);
    let error = record["Error"].as_str().unwrap_or_default();
    // the binary's last word: `error: …` after the log lines
    let last_line = stderr.rsplit_once("\nerror: ").map_or(stderr.as_str(), |(_, e)| e);
    for want in case.says {
        assert!(error.contains(want), "{}: the run record's error lacks `{want}`: {error}", case.name);
        assert!(last_line.contains(want), "{}: the final error lacks `{want}`: {last_line}", case.name);
    }
    let days = whole_days(store);
    assert_eq!(days.is_empty(), !case.committed, "{}: visible days {days:?}", case.name);
    days
}

/// Asserts 4 on the run after the fault was removed.
fn assert_recovered(case: &Case, out: &Output, store: &BTreeMap<String, Bytes>, reference: &BTreeMap<String, Bytes>) {
    assert!(out.status.success(), "{}: the re-run failed: {}", case.name, text(&out.stderr));
    let runs = records(store);
    assert_eq!(runs.len(), 2, "{}: the failed run's record and the re-run's", case.name);
    assert_eq!(
        (runs[1]["Status"].as_str(), runs[1]["FailedStage"].as_str()),
        (Some("succeeded"), None),
        "{}",
        case.name
    );
    assert!(!whole_days(store).is_empty(), "{}", case.name);
    let tables = day_tables_any_run(store);
    assert_eq!(
        tables.keys().collect::<Vec<_>>(),
        reference.keys().collect::<Vec<_>>(),
        "{}: the same objects",
        case.name
    );
    for (name, bytes) in reference {
        assert_eq!(&tables[name], bytes, "{}: {name} differs from a run that never failed", case.name);
    }
}

/// The blob side: the Defender streaming export in a source container and results in another,
/// both on Azurite, reached through a proxy that drops the requests a case names.
struct BlobWorld {
    proxy: Proxy,
    dir: tempfile::TempDir,
    results: std::sync::Arc<dyn object_store::ObjectStore>,
    source: String,
}

impl BlobWorld {
    fn new() -> BlobWorld {
        let direct = azurite_url();
        let port: u16 = direct.split(':').nth(2).unwrap().split('/').next().unwrap().parse().unwrap();
        let (source, results) = (unique("fault-events"), unique("fault-results"));
        create_container(&direct, &source, None);
        create_container(&direct, &results, None);
        upload(&container_client(&direct, &source, None), &streaming_tree(&days()));
        let proxy = Proxy::start(port);
        let dir = tempfile::tempdir().unwrap();
        let config = blob_config(&proxy.url("http"), &source, "defender-streaming", &results, "");
        std::fs::write(dir.path().join("run.toml"), config).unwrap();
        BlobWorld { proxy, dir, results: container_client(&direct, &results, None), source }
    }

    fn run(&self) -> Output {
        hunt(&["--log-format", "json", "run", "--config", "run.toml"], self.dir.path(), &[])
    }
}

#[test]
fn a_failed_blob_read_or_write_names_its_stage_leaves_no_half_day_and_the_rerun_completes() {
    // a run that never failed, on containers of its own
    let clean = setup(&streaming_tree(&days()), "fault-clean", "defender-streaming");
    let out = hunt(&["run", "--config", "run.toml"], clean.dir.path(), &[]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let reference = day_tables_any_run(&objects(&clean.results));
    assert_eq!(whole_days(&objects(&clean.results)).len(), 2);

    let cases: [(Case, &str, &dyn Fn(&BlobWorld) -> String); 2] = [
        (
            Case {
                name: "blob read (the source's export blobs)",
                stage: "read",
                says: &["cannot reach the storage endpoint", "/PT1H.json"],
                committed: false,
            },
            "GET",
            &|w: &BlobWorld| format!("/{}/tenantId=", w.source),
        ),
        (
            Case {
                name: "blob write (a staged results table)",
                stage: "write",
                says: &["cannot reach the storage endpoint", "MdeTelemetryHosts"],
                committed: false,
            },
            "PUT",
            &|_: &BlobWorld| "/MdeTelemetryHosts/day=".to_string(),
        ),
    ];
    for (case, method, needle) in cases {
        let world = BlobWorld::new();
        let needle = needle(&world);
        world.proxy.fail_requests(Some((method, &needle)));
        let failed = world.run();
        assert!(world.proxy.failed_requests() > 0, "{}: the fault was hit", case.name);
        let endpoint = format!("127.0.0.1:{}", world.proxy.port);
        assert!(text(&failed.stderr).contains(&endpoint), "{}: names the endpoint", case.name);
        assert_failed(&case, &failed, &objects(&world.results));

        world.proxy.fail_requests(None);
        let again = world.run();
        assert_recovered(&case, &again, &objects(&world.results), &reference);
    }
}

const FROM: &str = "2026-11-01";
/// A token endpoint that fails is given up on quickly.
pub const FAST_TOKENS: &str = "\n[azure]\nmax_retries = 1\nretry_timeout_seconds = 2\n";
const TO: &str = "2026-11-02";

/// The Azure Monitor side: the job's managed identity from a local token endpoint, a workspace
/// served by the query API's wire format, a DCR by the ingestion API's, results in a folder.
fn workspace() -> AzureWorld {
    let world = AzureWorld::start(events_from_dir(&sample_jsonl(4_000, 2, 80, FROM), 300_000_000));
    let config = world.config("window_hours = 24", "") + FAST_TOKENS;
    std::fs::write(world.cwd.path().join("hunt.toml"), config).unwrap();
    world
}

/// The binary over the workspace, results in the folder `out`.
fn run_into(world: &AzureWorld, out: &str, identity_env: &[(String, String)]) -> Output {
    let env: Vec<(&str, &str)> = identity_env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let args = ["--log-format", "json", "run", "--config", "hunt.toml", "--out", out, "--from", FROM, "--to", TO];
    hunt(&args, world.cwd.path(), &env)
}

fn outbox(store: &BTreeMap<String, Bytes>) -> usize {
    store.keys().filter(|name| name.starts_with("_outbox/")).count()
}

#[test]
fn a_failed_token_query_or_ingestion_names_its_stage_leaves_no_half_day_and_the_rerun_completes() {
    type Inject = fn(&AzureWorld, &mut Vec<(String, String)>);
    // The last field: whether the failed run leaves its record (at least) in the outbox, which
    // it does when Sentinel cannot be reached either.
    let cases: [(Case, Inject, bool); 5] = [
        (
            Case {
                name: "token endpoint down",
                stage: "identity",
                says: &["cannot get an access token for `https://api.loganalytics.io/.default`"],
                committed: false,
            },
            |_, env| env[0].1 = format!("http://127.0.0.1:{}/msi/token", free_port()),
            true,
        ),
        (
            Case {
                name: "token endpoint answers 500",
                stage: "identity",
                says: &["cannot get an access token", "token service unavailable"],
                committed: false,
            },
            |w, _| w.identity.state.lock().unwrap().fault = Some(TokenFault::Status(500)),
            true,
        ),
        (
            Case {
                name: "token endpoint answers garbage",
                stage: "identity",
                says: &["cannot get an access token"],
                committed: false,
            },
            |w, _| w.identity.state.lock().unwrap().fault = Some(TokenFault::Garbage),
            true,
        ),
        (
            Case {
                name: "query API answers 503 to every attempt",
                stage: "read",
                says: &["Log Analytics workspace", "HTTP 503", "gave up after 3 attempt(s)"],
                committed: false,
            },
            |w, _| (0..100).for_each(|_| w.la.push_fault(Fault::status(503))),
            false,
        ),
        (
            Case {
                name: "ingestion API answers 503 to every attempt",
                stage: "deliver",
                says: &["wait in the outbox"],
                committed: true,
            },
            |w, _| w.ingestion.state.lock().unwrap().fail_after = Some((0, 503)),
            true,
        ),
    ];
    let world = workspace();
    let store = |out: &str| local_objects(&world.cwd.path().join(out));
    let healthy = world.identity.env();
    let clean = run_into(&world, "clean", &healthy);
    assert!(clean.status.success(), "{}", text(&clean.stderr));
    let reference = day_tables_any_run(&store("clean"));
    assert_eq!(whole_days(&store("clean")), [FROM, TO]);

    for (i, (case, inject, leaves_outbox)) in cases.iter().enumerate() {
        let out = format!("results-{i}");
        let mut env = healthy.clone();
        inject(&world, &mut env);
        let failed = run_into(&world, &out, &env);
        world.heal();
        assert_failed(case, &failed, &store(&out));
        // the failed run's record (and, after the commit, its tables) wait for Sentinel
        assert_eq!(
            outbox(&store(&out)) > 0,
            *leaves_outbox,
            "{}: the outbox keeps what Sentinel did not get",
            case.name
        );

        let again = run_into(&world, &out, &healthy);
        assert_recovered(case, &again, &store(&out), &reference);
        assert_eq!(outbox(&store(&out)), 0, "{}: the re-run delivered the outbox", case.name);
    }
    world.no_violations();
}

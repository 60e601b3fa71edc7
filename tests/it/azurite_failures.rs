//! Azurite killed in the middle of a run: the run fails with an error that names the endpoint
//! (and no secret), no reader sees part of a day, and the next run completes the work, whether
//! the kill came before the commit (the staged objects are discarded) or during it (the commit
//! is rolled forward).

use std::collections::BTreeMap;
use std::process::{Command, Stdio};
use std::time::Duration;

use bytes::Bytes;
use telemetry_hunt::azure::identity::EMULATOR_KEY;
use telemetry_hunt::sink::results::Results;
use telemetry_hunt::sink::tables;

use crate::azurite_nightly::{blob_config, day_tables, day_tables_any_run, days, streaming_tree, BlobSide, Days};
use crate::azurite_support::{
    container_client, create_container, hunt, objects, text, upload, DedicatedAzurite, Proxy,
};

/// Loki, Azurite's metadata store, saves every five seconds: waiting longer before the kill
/// makes what Azurite acknowledged durable, as Blob Storage makes every acknowledged write.
const AUTOSAVE: Duration = Duration::from_millis(6500);
const LOCK_TTL_SECONDS: u64 = 3;

struct Scene {
    _folder: tempfile::TempDir,
    azurite: DedicatedAzurite,
    proxy: Proxy,
    dir: tempfile::TempDir,
    d: Days,
}

fn scene() -> Scene {
    let folder = tempfile::tempdir().unwrap();
    let azurite = DedicatedAzurite::start(folder.path(), None);
    let direct = azurite.url();
    create_container(&direct, "events", None);
    create_container(&direct, "results", None);
    let d = days();
    upload(&container_client(&direct, "events", None), &streaming_tree(&d));
    let proxy = Proxy::start(azurite.port);
    let dir = tempfile::tempdir().unwrap();
    let extra = format!("\n[output]\nlock_ttl_seconds = {LOCK_TTL_SECONDS}\n");
    std::fs::write(
        dir.path().join("run.toml"),
        blob_config(&proxy.url("http"), "events", "defender-streaming", "results", &extra),
    )
    .unwrap();
    Scene { _folder: folder, azurite, proxy, dir, d }
}

impl Scene {
    /// Starts a run, holds the first request that contains `text`, kills Azurite, lets the
    /// request go; returns the failed run's stderr.
    fn kill_during(&mut self, text_in_request: &str) -> String {
        self.proxy.hold_on(text_in_request);
        let child = Command::new(env!("CARGO_BIN_EXE_telemetry-hunt"))
            .args(["--log-format", "json", "run", "--config", "run.toml"])
            .current_dir(self.dir.path())
            .env_remove("RUST_LOG")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        assert!(self.proxy.wait_held(Duration::from_secs(60)), "the run never sent `{text_in_request}`");
        std::thread::sleep(AUTOSAVE);
        self.azurite.kill();
        self.proxy.release();
        let out = child.wait_with_output().unwrap();
        assert_eq!(out.status.code(), Some(1), "the run must fail: {}", text(&out.stderr));
        let stderr = text(&out.stderr);
        let endpoint = format!("127.0.0.1:{}", self.proxy.port);
        assert!(stderr.contains(&endpoint), "the error names the endpoint: {stderr}");
        assert!(stderr.contains("cannot reach the storage endpoint"), "{stderr}");
        assert!(!stderr.contains(EMULATOR_KEY) && !stderr.contains("SharedKey"), "no secret in the error: {stderr}");
        stderr
    }

    fn results(&self) -> BlobSide {
        BlobSide::open(&self.azurite.url(), "results")
    }

    fn results_objects(&self) -> BTreeMap<String, Bytes> {
        objects(&container_client(&self.azurite.url(), "results", None))
    }

    fn run(&self) -> String {
        // The killed run's lock lapses on its own: it cannot be released without Azurite.
        std::thread::sleep(Duration::from_secs(LOCK_TTL_SECONDS + 1));
        let out = hunt(&["--log-format", "json", "run", "--config", "run.toml"], self.dir.path(), &[]);
        assert!(out.status.success(), "{}", text(&out.stderr));
        text(&out.stderr)
    }
}

/// The day tables a clean run produces for the same source.
fn reference(d: &Days) -> BTreeMap<String, Bytes> {
    let setup = crate::azurite_nightly::setup(&streaming_tree(d), "events", "defender-streaming");
    let out = hunt(&["run", "--config", "run.toml"], setup.dir.path(), &[]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    day_tables_any_run(&objects(&setup.results))
}

/// Every table-day, as a reader of the results store (the job's own `Results`) sees it.
fn visible(side: &BlobSide, d: &Days) -> BTreeMap<(String, String), usize> {
    let results = Results::new(std::sync::Arc::new(side.store.clone()));
    let mut seen = BTreeMap::new();
    for (table, columns) in [
        (tables::DAILY, tables::DAILY_COLUMNS),
        (tables::HOSTS, tables::HOSTS_COLUMNS),
        (tables::PROCESSES, tables::PROCESSES_COLUMNS),
    ] {
        for day in results.days(table).unwrap() {
            assert!(day == d.first || day == d.last, "{table} {day}");
            let rows = results.read_day(table, columns, day).unwrap().unwrap().rows.len();
            seen.insert((table.to_string(), day.to_string()), rows);
        }
    }
    seen
}

/// What a finished store holds: tables, completion markers, the report; nothing of the commit
/// protocol or the lock.
fn published(name: &str) -> bool {
    name.starts_with("Mde") || name.starts_with("_complete/day=") || name == "report.html"
}

#[test]
fn azurite_killed_before_the_commit_leaves_nothing_visible_and_the_next_run_redoes_it() {
    let mut scene = scene();
    let expected = reference(&scene.d);
    // A day's tables are staged one after another, the processes table after the daily and the
    // hosts ones: held there, the kill comes with the staging under way.
    scene.kill_during("/MdeTelemetryProcesses/day=");
    scene.azurite.restart();

    let after_kill = scene.results_objects();
    assert!(
        after_kill.keys().all(|name| name.starts_with("_staging/") || name == "_lock.json"),
        "only staged objects and the lapsed lock remain: {:?}",
        after_kill.keys().collect::<Vec<_>>()
    );
    assert!(after_kill.keys().any(|name| name.starts_with("_staging/")), "the kill came while staging");
    assert!(visible(&scene.results(), &scene.d).is_empty(), "no day is visible");

    let stderr = scene.run();
    assert!(stderr.contains("Discarded the uncommitted output of an earlier run"), "{stderr}");
    assert!(stderr.contains("Took over the lock"), "{stderr}");
    let done = scene.results_objects();
    assert_eq!(day_tables_any_run(&done), expected);
    assert!(done.keys().all(|name| published(name)), "{:?}", done.keys().collect::<Vec<_>>());
}

#[test]
fn azurite_killed_while_moving_the_committed_run_into_place_is_rolled_forward() {
    let mut scene = scene();
    let expected = reference(&scene.d);
    // The first object moved out of staging: the commit record is already written.
    scene.kill_during("PUT /devstoreaccount1/results/MdeTelemetry");
    scene.azurite.restart();

    let after_kill = scene.results_objects();
    assert!(after_kill.keys().any(|name| name.starts_with("_commits/")), "the run was committed");
    let moved = day_tables(&after_kill).keys().filter(|name| !name.starts_with('_')).count();
    assert!(moved < expected.len(), "the kill came before every object was moved ({moved} of {})", expected.len());
    // readers already see every day whole, through the commit record
    let seen = visible(&scene.results(), &scene.d);
    assert_eq!(seen.len(), 6, "{seen:?}");
    assert_eq!(seen[&(tables::DAILY.to_string(), scene.d.last.to_string())], 1);

    let stderr = scene.run();
    assert!(stderr.contains("Finished the commit of an earlier run"), "{stderr}");
    let done = scene.results_objects();
    assert_eq!(day_tables_any_run(&done), expected);
    assert!(done.keys().all(|name| published(name)), "{:?}", done.keys().collect::<Vec<_>>());
    assert_eq!(crate::azurite_nightly::run_records(&done).len(), 2, "the killed run's record is committed too");
}

//! Helpers shared by the integration tests: running the job, reading its tables back.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::{Map, Value};
use telemetry_hunt::config::Config;
use telemetry_hunt::hunt::host::MatchMode;
use telemetry_hunt::job::{self, RunOutcome, RunRequest};
use telemetry_hunt::time::Day;

/// Every file under `dir`, recursively, sorted; none when `dir` does not exist.
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else { continue };
        for entry in entries {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else {
                files.push(path);
            }
        }
    }
    files.sort();
    files
}

pub fn shared_fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/fixtures-public")
}

pub fn request(inputs: &[&Path], out: &Path, mode: MatchMode) -> RunRequest {
    let mut config = Config::default();
    config.match_mode = mode;
    RunRequest {
        inputs: inputs.iter().map(|p| p.to_path_buf()).collect(),
        out: out.to_path_buf(),
        window: None,
        settings: config.validate().expect("default config is valid"),
        progress: false,
        credential: None,
    }
}

pub fn run(inputs: &[&Path], out: &Path, mode: MatchMode) -> RunOutcome {
    job::run(&request(inputs, out, mode)).unwrap_or_else(|(e, _)| panic!("run failed: {e}"))
}

pub fn run_window(inputs: &[&Path], out: &Path, from: &str, to: &str) -> RunOutcome {
    let mut req = request(inputs, out, MatchMode::Kql);
    req.window = Some((Day::parse(from).unwrap(), Day::parse(to).unwrap()));
    job::run(&req).unwrap_or_else(|(e, _)| panic!("run failed: {e}"))
}

/// Every JSON-lines row of a table, all days, in file order (days sorted).
pub fn read_table(out: &Path, table: &str) -> Vec<Map<String, Value>> {
    let mut rows = Vec::new();
    let dir = out.join(table);
    let Ok(entries) = std::fs::read_dir(&dir) else { return rows };
    let mut days: Vec<PathBuf> = entries.map(|e| e.unwrap().path()).collect();
    days.sort();
    for day in days {
        let mut files: Vec<PathBuf> = std::fs::read_dir(&day)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "jsonl"))
            .collect();
        files.sort();
        for file in files {
            for line in std::fs::read_to_string(&file).unwrap().lines() {
                match serde_json::from_str(line).unwrap() {
                    Value::Object(map) => rows.push(map),
                    other => panic!("{}: not an object: {other}", file.display()),
                }
            }
        }
    }
    rows
}

/// `MdeTelemetryDaily` as (Day, ActionType) → (Connections, Events).
pub fn daily(out: &Path) -> BTreeMap<(String, String), (u64, u64)> {
    read_table(out, "MdeTelemetryDaily")
        .into_iter()
        .map(|r| {
            (
                (r["Day"].as_str().unwrap().to_string(), r["ActionType"].as_str().unwrap().to_string()),
                (r["Connections"].as_u64().unwrap(), r["Events"].as_u64().unwrap()),
            )
        })
        .collect()
}

/// The single run record of a fresh output folder.
pub fn run_record(out: &Path) -> Map<String, Value> {
    let mut rows = read_table(out, "MdeTelemetryRuns");
    assert_eq!(rows.len(), 1, "one run record");
    rows.remove(0)
}

/// The bytes of every table except the run records, keyed by relative path, for comparing
/// two runs' outputs.
pub fn table_files(out: &Path) -> BTreeMap<String, String> {
    let mut files = BTreeMap::new();
    for table in ["MdeTelemetryDaily", "MdeTelemetryHosts", "MdeTelemetryProcesses"] {
        let dir = out.join(table);
        let Ok(days) = std::fs::read_dir(&dir) else { continue };
        for day in days {
            let day = day.unwrap().path();
            for file in std::fs::read_dir(&day).unwrap() {
                let file = file.unwrap().path();
                if file.extension().is_some_and(|e| e == "jsonl") {
                    let key = file.strip_prefix(out).unwrap().display().to_string();
                    files.insert(key, std::fs::read_to_string(&file).unwrap());
                }
            }
        }
    }
    files
}

/// A small generated sample, made once per test process and shared.
pub fn generated_sample(rows: u64, days: u32, devices: u32) -> PathBuf {
    use telemetry_hunt::sample::{generate, SampleFormat, SampleOptions};
    let dir =
        Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("sample-{rows}-{days}-{devices}-{}", std::process::id()));
    let marker = dir.join(".complete");
    if !marker.exists() {
        let tmp = tempfile::Builder::new().prefix("th-gen").tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
        let options = SampleOptions { rows, days, devices, format: SampleFormat::Parquet, ..SampleOptions::default() };
        generate(&options, tmp.path()).expect("sample generation");
        std::fs::write(tmp.path().join(".complete"), b"").unwrap();
        // Another test may have raced us; either copy is identical (the generator is deterministic).
        let _ = std::fs::rename(tmp.keep(), &dir);
    }
    dir
}

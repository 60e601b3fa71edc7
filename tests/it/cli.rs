//! The binary as a user runs it: help, exit codes, messages, re-runs.

use std::path::Path;
use std::process::{Command, Output};

use crate::support::{files_under, generated_sample, read_table, shared_fixtures, table_files};

fn hunt(args: &[&str], cwd: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_telemetry-hunt"))
        .args(args)
        .current_dir(cwd)
        .env_remove("RUST_LOG")
        .output()
        .expect("the binary runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn help_explains_every_command_with_examples() {
    let cwd = tempfile::tempdir().unwrap();
    for args in [
        &["--help"][..],
        &["run", "--help"],
        &["sample", "--help"],
        &["backfill", "--help"],
        &["report", "--help"],
        &["schema", "--help"],
        &["check", "--help"],
    ] {
        let out = hunt(args, cwd.path());
        assert!(out.status.success(), "{args:?}");
        let help = text(&out.stdout);
        assert!(help.contains("Examples:"), "{args:?}: {help}");
    }
    let run_help = text(&hunt(&["run", "--help"], cwd.path()).stdout);
    for flag in ["--input", "--out", "--from", "--to", "--match-mode", "--config"] {
        assert!(run_help.contains(flag), "{flag}");
    }
}

#[test]
fn usage_and_configuration_errors_exit_2_with_the_fix() {
    let cwd = tempfile::tempdir().unwrap();
    let csv = shared_fixtures().join("advanced_hunting_test.csv");
    let csv = csv.to_str().unwrap();

    let out = hunt(&["run", "--input", csv, "--from", "2026-13-01", "--to", "2026-12-01"], cwd.path());
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("YYYY-MM-DD"), "{}", text(&out.stderr));

    let out = hunt(&["run", "--input", csv, "--from", "2026-12-02", "--to", "2026-12-01"], cwd.path());
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("swap"), "{}", text(&out.stderr));

    std::fs::write(cwd.path().join("bad.toml"), "match_mode = \"kql\"\nrefrence_hosts = []\n").unwrap();
    let out = hunt(&["run", "--input", csv, "--config", "bad.toml"], cwd.path());
    assert_eq!(out.status.code(), Some(2));
    let err = text(&out.stderr);
    assert!(err.contains("refrence_hosts") && err.contains("bad.toml"), "{err}");

    let out = hunt(&["run", "--input", "no/such/folder"], cwd.path());
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("no/such/folder"));
    assert!(!cwd.path().join("out").exists(), "nothing written on a usage error");
}

#[test]
fn an_unreadable_input_exits_1_naming_the_file() {
    let cwd = tempfile::tempdir().unwrap();
    std::fs::write(cwd.path().join("events.parquet"), b"").unwrap();
    let out = hunt(&["run", "--input", "events.parquet", "--out", "results"], cwd.path());
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(err.contains("events.parquet") && err.contains("empty"), "{err}");
    // the failed run released its lock and committed only its run record
    let mut left: Vec<String> = std::fs::read_dir(cwd.path().join("results"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    left.sort();
    assert_eq!(left, ["MdeTelemetryRuns"]);
    let record = crate::support::run_record(&cwd.path().join("results"));
    assert_eq!((record["Status"].as_str(), record["FailedStage"].as_str()), (Some("failed"), Some("read")));
}

#[test]
fn a_rerun_replaces_the_days_and_leaves_no_temporary_files() {
    let cwd = tempfile::tempdir().unwrap();
    let fixtures = shared_fixtures();
    let args = ["--log-format", "json", "run", "--input", fixtures.to_str().unwrap(), "--out", "results"];
    let first = hunt(&args, cwd.path());
    assert!(first.status.success(), "{}", text(&first.stderr));
    let stdout = text(&first.stdout);
    assert!(stdout.contains("Connections: distinct devices per ActionType and day"), "{stdout}");
    assert!(stdout.contains("2023-10-18"), "{stdout}");
    // JSON logs on stderr, one object per line
    for line in text(&first.stderr).lines() {
        let value: serde_json::Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        assert!(value["level"].is_string());
    }
    let before = table_files(&cwd.path().join("results"));
    let second = hunt(&args, cwd.path());
    assert!(second.status.success());
    assert_eq!(table_files(&cwd.path().join("results")), before);
    let runs = std::fs::read_dir(cwd.path().join("results/MdeTelemetryRuns")).unwrap().count();
    assert!(runs >= 1);
    // the lock and the commit protocol leave nothing in the folder
    for gone in ["_lock.json", "_staging", "_commits"] {
        assert!(!cwd.path().join("results").join(gone).exists(), "{gone}");
    }
    let leftovers: Vec<_> = files_under(&cwd.path().join("results"))
        .into_iter()
        .filter(|p| p.to_string_lossy().ends_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[test]
fn the_default_run_uses_the_bundled_sample() {
    let cwd = tempfile::tempdir().unwrap();
    let out = hunt(&["run", "--out", "results"], cwd.path());
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(stdout.contains("ConnectionSuccess"), "{stdout}");
    let record = crate::support::run_record(&cwd.path().join("results"));
    assert!(record["RowsScanned"].as_u64().unwrap() >= 100_000, "{record:?}");
    assert!(record["RowsMatchedKql"].as_u64().unwrap() > 1_000);
    assert!(record["RowsEvadingReferenceQuery"].as_u64().unwrap() > 0);
}

/// A deployment that declares every variable sets the unused ones to "": they mean unset.
#[test]
fn empty_variables_are_unset() {
    let cwd = tempfile::tempdir().unwrap();
    let mut command = Command::new(env!("CARGO_BIN_EXE_telemetry-hunt"));
    command.args(["-q", "run"]).current_dir(cwd.path()).env_remove("RUST_LOG");
    for name in ["CONFIG", "INPUT", "OUT", "MATCH_MODE", "LOG_FORMAT"] {
        command.env(format!("TELEMETRY_HUNT_{name}"), if name == "OUT" { " " } else { "" });
    }
    let out = command.output().unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("Findings: 10 (6 High, 4 Medium"), "{}", text(&out.stdout));
    assert!(cwd.path().join("out/MdeTelemetryDaily").is_dir());
}

#[test]
fn backfill_goes_day_by_day_resumes_and_matches_one_run() {
    let cwd = tempfile::tempdir().unwrap();
    let sample = generated_sample(30_000, 6, 150);
    let input = sample.to_str().unwrap();
    let (from, to) = ("2026-10-27", "2026-11-01");
    let backfill = |extra: &[&str]| {
        let mut args =
            vec!["--log-format", "json", "backfill", "--input", input, "--from", from, "--to", to, "--out", "results"];
        args.extend_from_slice(extra);
        let out = hunt(&args, cwd.path());
        assert!(out.status.success(), "{}", text(&out.stderr));
        text(&out.stdout)
    };
    let stdout = backfill(&[]);
    assert!(stdout.contains("Backfilled 6 day(s)") && stdout.contains("0 already complete"), "{stdout}");
    let results = cwd.path().join("results");
    let markers = std::fs::read_dir(results.join("_complete")).unwrap().count();
    assert_eq!(markers, 6);
    assert_eq!(read_table(&results, "MdeTelemetryRuns").len(), 6, "one run record per day");

    // the same tables as one run over the whole range (late arrivals sit in the next day's file)
    let one = hunt(&["run", "--input", input, "--from", from, "--to", to, "--out", "single"], cwd.path());
    assert!(one.status.success(), "{}", text(&one.stderr));
    assert_eq!(table_files(&results), table_files(&cwd.path().join("single")));
    let ids = |dir: &str| {
        read_table(&cwd.path().join(dir), "MdeTelemetryFindings")
            .iter()
            .map(|r| r["FindingId"].as_str().unwrap().to_string())
            .collect::<Vec<_>>()
    };
    assert_eq!(ids("results"), ids("single"));

    // resumed: nothing to do; one marker gone: that day only; --force: all again
    assert!(backfill(&[]).contains("Backfilled 0 day(s) from 2026-10-27 to 2026-11-01, 6 already complete"));
    std::fs::remove_file(results.join("_complete/day=2026-10-29.json")).unwrap();
    assert!(backfill(&[]).contains("Backfilled 1 day(s) from 2026-10-27 to 2026-11-01, 5 already complete"));
    assert!(backfill(&["--force"]).contains("Backfilled 6 day(s)"));

    let out = hunt(&["backfill", "--input", input, "--from", from, "--out", "results"], cwd.path());
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("--from DAY --to DAY"), "{}", text(&out.stderr));
}

#[test]
fn backfill_passes_over_a_day_without_input_and_goes_on() {
    let cwd = tempfile::tempdir().unwrap();
    let sample = generated_sample(30_000, 6, 150);
    let gap = cwd.path().join("gap");
    std::fs::create_dir(&gap).unwrap();
    // A day's late rows sit in the next day's file: without both files, 2026-10-29 has no row.
    let missing = ["DeviceNetworkEvents_2026-10-29.parquet", "DeviceNetworkEvents_2026-10-30.parquet"];
    for entry in std::fs::read_dir(&sample).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_str().unwrap().to_string();
        if name.ends_with(".parquet") && !missing.contains(&name.as_str()) {
            std::fs::copy(&path, gap.join(&name)).unwrap();
        }
    }
    // the export ends on 2026-11-01: the last two days of the range have no row either
    let args = ["backfill", "--input", "gap", "--from", "2026-10-27", "--to", "2026-11-03", "--out", "results"];
    let marked = |results: &std::path::Path| -> Vec<String> {
        let mut days: Vec<String> = std::fs::read_dir(results.join("_complete"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        days.sort();
        days
    };
    let out = hunt(&args, cwd.path());
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(stdout.contains("0 already complete and skipped, "), "{stdout}");
    assert!(stdout.contains("without any input row and not written (2026-10-29, "), "{stdout}");
    assert!(stdout.contains("2026-11-02, 2026-11-03)"), "{stdout}");
    assert!(text(&out.stderr).contains("No input row falls on this day"), "{}", text(&out.stderr));
    let results = cwd.path().join("results");
    let first = marked(&results);
    assert!(first.contains(&"day=2026-10-31.json".to_string()) && first.contains(&"day=2026-11-01.json".to_string()));
    assert!(!first.iter().any(|m| m.contains("2026-10-29")), "{first:?}");
    assert!(!results.join("MdeTelemetryDaily/day=2026-10-29").exists());

    // the export arrives: the next backfill hunts what was missing, and only that
    for name in missing {
        std::fs::copy(sample.join(name), gap.join(name)).unwrap();
    }
    let again = hunt(&args, cwd.path());
    assert!(again.status.success(), "{}", text(&again.stderr));
    let stdout = text(&again.stdout);
    let done = 6 - first.len();
    assert!(
        stdout.contains(&format!(
            "Backfilled {done} day(s) from 2026-10-27 to 2026-11-03, {} already complete and skipped, 2 without any input row and not written (2026-11-02, 2026-11-03);",
            first.len()
        )),
        "{stdout}"
    );
    assert_eq!(marked(&results).len(), 6);
}

/// The cause chain is printed on one line, and a cause the message already quotes is not
/// repeated.
#[cfg(unix)]
#[test]
fn an_error_says_its_cause_once() {
    let cwd = tempfile::tempdir().unwrap();
    std::fs::create_dir(cwd.path().join("input")).unwrap();
    std::os::unix::fs::symlink("/nonexistent/events.parquet", cwd.path().join("input/events.parquet")).unwrap();
    let out = hunt(&["-q", "run", "--input", "input", "--out", "results"], cwd.path());
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert!(stderr.contains("error: cannot read `input/events.parquet`: "), "{stderr}");
    assert_eq!(stderr.matches("(os error 2)").count(), 1, "{stderr}");
}

/// An empty export, or one whose every row is unusable, is a failed run, not a quiet night.
#[test]
fn an_input_without_a_usable_row_fails_the_run() {
    let cwd = tempfile::tempdir().unwrap();
    std::fs::write(cwd.path().join("empty.json"), b"").unwrap();
    std::fs::write(
        cwd.path().join("bad-times.json"),
        concat!(
            r#"{"Timestamp":"yesterday","DeviceId":"d1","ActionType":"ConnectionSuccess","RemoteUrl":"winatp-gw-weu.microsoft.com"}"#,
            "\n",
            r#"{"DeviceId":"d2","ActionType":"ConnectionSuccess","RemoteUrl":"winatp-gw-weu.microsoft.com"}"#,
            "\n"
        ),
    )
    .unwrap();
    for (input, said) in
        [("empty.json", "(0 row(s) read, 0 rejected)"), ("bad-times.json", "(2 row(s) read, 2 rejected)")]
    {
        let out_dir = format!("results-{input}");
        let out = hunt(&["-q", "run", "--input", input, "--out", &out_dir], cwd.path());
        assert_eq!(out.status.code(), Some(1), "{input}");
        let stderr = text(&out.stderr);
        assert!(stderr.contains(&format!("error: the input holds no row with a valid time {said}")), "{stderr}");
        let record = crate::support::run_record(&cwd.path().join(&out_dir));
        assert_eq!(record["Status"], "failed", "{record:?}");
        assert_eq!(record["FailedStage"], "read", "{record:?}");
        assert!(!cwd.path().join(&out_dir).join("MdeTelemetryDaily").exists());
    }
}

#[test]
fn report_redraws_the_page_from_the_store() {
    let cwd = tempfile::tempdir().unwrap();
    let sample = generated_sample(30_000, 6, 150);
    let out = hunt(&["run", "--input", sample.to_str().unwrap(), "--out", "results"], cwd.path());
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("Findings: "), "{}", text(&out.stdout));
    let page = cwd.path().join("results/report.html");
    let drawn = std::fs::read_to_string(&page).unwrap();
    std::fs::remove_file(&page).unwrap();
    let again = hunt(&["report", "--out", "results"], cwd.path());
    assert!(again.status.success(), "{}", text(&again.stderr));
    assert_eq!(std::fs::read_to_string(&page).unwrap(), drawn);
    assert!(drawn.contains("Connections: distinct devices per ActionType and day"));

    let empty = hunt(&["report", "--out", "nothing-here"], cwd.path());
    assert_eq!(empty.status.code(), Some(2));
    assert!(text(&empty.stderr).contains("telemetry-hunt run --out nothing-here"), "{}", text(&empty.stderr));
}

#[test]
fn impossible_sample_options_are_usage_errors() {
    let cwd = tempfile::tempdir().unwrap();
    for flag in [["--days", "0"], ["--devices", "0"]] {
        let out = hunt(&["sample", "--out", "s", flag[0], flag[1]], cwd.path());
        assert_eq!(out.status.code(), Some(2), "{flag:?}: {}", text(&out.stderr));
        assert!(text(&out.stderr).contains("invalid sample options"), "{}", text(&out.stderr));
    }
}

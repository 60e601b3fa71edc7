//! The detectors end to end on the bundled sample: exactly the injected findings and nothing
//! else, the same bytes on every re-run, and a report that shows them all.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde_json::Value;
use telemetry_hunt::detect::Severity;
use telemetry_hunt::hunt::host::MatchMode;
use telemetry_hunt::sample::{self, scenario, SampleOptions};
use telemetry_hunt::time::Day;

use crate::support::{files_under, read_table, request, run, run_window};

fn bundled() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/sample")
}

fn day(index: u32) -> String {
    Day(SampleOptions::default().start.0 + index as i32).to_string()
}

const MDE: &str = r"c:\program files\windows defender advanced threat protection\";

/// (Day, FindingType, RemoteHost or ActionType, process file, process folder, port, DeviceIds)
type Summary = (String, String, String, String, String, Option<i64>, Vec<String>);

fn summary(row: &serde_json::Map<String, Value>) -> Summary {
    let text = |k: &str| row[k].as_str().unwrap_or("").to_string();
    let ids = match &row["DeviceIds"] {
        Value::Array(ids) => ids.iter().map(|v| v.as_str().unwrap().to_string()).collect(),
        _ => Vec::new(),
    };
    let subject = if row["RemoteHost"].is_string() { text("RemoteHost") } else { text("ActionType") };
    (
        text("Day"),
        text("FindingType"),
        subject,
        text("InitiatingProcessFileName"),
        text("InitiatingProcessFolderPath"),
        row["RemotePort"].as_i64(),
        ids,
    )
}

/// The findings the scenarios of `sample::scenario` must produce, one by one.
fn injected() -> Vec<Summary> {
    let devices: BTreeMap<&str, Vec<String>> = sample::scenarios(&SampleOptions::default()).into_iter().collect();
    let c2_folder = r"c:\users\public\libraries\mssense.exe".to_string();
    let c2 = |d: u32, kind: &str| {
        (
            day(d),
            kind.to_string(),
            scenario::C2_HOST.to_string(),
            "mssense.exe".to_string(),
            c2_folder.clone(),
            Some(443),
            devices["c2"].clone(),
        )
    };
    let fleet = |kind: &str, action: &str| {
        (
            day(scenario::FAILING_DAY),
            kind.to_string(),
            action.to_string(),
            String::new(),
            String::new(),
            None,
            Vec::new(),
        )
    };
    let mut want = vec![
        c2(scenario::C2_DAYS[0], "UnexpectedProcess"),
        c2(scenario::C2_DAYS[0], "NewCombination"),
        c2(scenario::C2_DAYS[0], "ReferenceQueryEvasion"),
        c2(scenario::C2_DAYS[1], "UnexpectedProcess"),
        (
            day(scenario::LOOKALIKE_DAY),
            "LookalikeHost".into(),
            scenario::LOOKALIKE_HOST.into(),
            "rundll32.exe".into(),
            r"c:\programdata\intel\rundll32.exe".into(),
            Some(443),
            devices["lookalike"].clone(),
        ),
        (
            day(scenario::PORT_DAY),
            "UnusualPort".into(),
            scenario::PORT_HOST.into(),
            "sensecncproxy.exe".into(),
            format!("{MDE}sensecncproxy.exe"),
            Some(i64::from(scenario::PORT)),
            devices["port"].clone(),
        ),
        fleet("SeriesSpike", "ConnectionFailed"),
        fleet("SeriesDrop", "ConnectionSuccess"),
        (
            day(scenario::FAILING_DAY),
            "FailingDevice".into(),
            "ConnectionFailed".into(),
            String::new(),
            String::new(),
            None,
            devices["group"].clone(),
        ),
        (
            day(scenario::SILENT_FROM),
            "SilentDevice".into(),
            String::new(),
            String::new(),
            String::new(),
            None,
            devices["group"].clone(),
        ),
    ];
    want.sort();
    want
}

#[test]
fn the_bundled_sample_is_what_the_generator_writes() {
    let fresh = tempfile::tempdir().unwrap();
    let summary = sample::generate(&SampleOptions::default(), fresh.path()).unwrap();
    for file in &summary.files {
        let name = file.file_name().unwrap();
        let bundled = std::fs::read(bundled().join(name)).unwrap_or_else(|e| panic!("{name:?}: {e}"));
        assert!(
            std::fs::read(file).unwrap() == bundled,
            "fixtures/sample/{name:?} is stale: regenerate it with `telemetry-hunt sample --out fixtures/sample`"
        );
    }
    assert_eq!(std::fs::read_dir(bundled()).unwrap().count(), summary.files.len());
}

#[test]
fn the_bundled_sample_gives_exactly_the_injected_findings() {
    let out = tempfile::tempdir().unwrap();
    let outcome = run(&[&bundled()], out.path(), MatchMode::Kql);
    let rows = read_table(out.path(), "MdeTelemetryFindings");
    let mut got: Vec<Summary> = rows.iter().map(summary).collect();
    got.sort();
    assert_eq!(got, injected());
    assert_eq!(outcome.findings.total, rows.len());

    // the run keeps their counts and, for the terminal, the first by severity, |score| and day
    let counted = |column: &str| {
        rows.iter().fold(BTreeMap::<String, usize>::new(), |mut counts, row| {
            *counts.entry(row[column].as_str().unwrap().to_string()).or_default() += 1;
            counts
        })
    };
    let by_severity: BTreeMap<String, usize> =
        outcome.findings.by_severity.iter().map(|(s, &n)| (s.as_str().to_string(), n)).collect();
    assert_eq!(by_severity, counted("Severity"));
    let by_type: BTreeMap<String, usize> =
        outcome.findings.by_type.iter().map(|(t, &n)| (t.as_str().to_string(), n)).collect();
    assert_eq!(by_type, counted("FindingType"));
    let severity = |row: &serde_json::Map<String, Value>| Severity::parse(row["Severity"].as_str().unwrap()).unwrap();
    let score = |row: &serde_json::Map<String, Value>| row["Score"].as_f64().unwrap_or(0.0).abs();
    let mut listed: Vec<&serde_json::Map<String, Value>> = rows.iter().collect();
    listed.sort_by(|a, b| {
        severity(b)
            .cmp(&severity(a))
            .then(score(b).total_cmp(&score(a)))
            .then(a["Day"].as_str().cmp(&b["Day"].as_str()))
    });
    let listed: Vec<&str> = listed.iter().take(12).map(|row| row["FindingId"].as_str().unwrap()).collect();
    let top: Vec<String> = outcome.findings.top.iter().map(|f| f.id()).collect();
    assert_eq!(top, listed);
    assert_eq!(outcome.findings.top[0].severity, Severity::High);

    // every column filled as the table promises
    let by_type: BTreeMap<&str, &serde_json::Map<String, Value>> =
        rows.iter().map(|r| (r["FindingType"].as_str().unwrap(), r)).collect();
    for row in &rows {
        assert_eq!(row["FindingId"].as_str().unwrap().len(), 32);
        assert_eq!(row["RunId"], outcome.record.run_id.as_str());
        assert!(["High", "Medium", "Low", "Informational"].contains(&row["Severity"].as_str().unwrap()));
        assert!(!row["Description"].as_str().unwrap().is_empty());
        assert!(!row["Tactics"].as_str().unwrap().is_empty(), "{row:?}");
        assert!(row["Techniques"].as_str().unwrap().starts_with('T'), "{row:?}");
        let evidence = row["EvidenceUri"].as_str().unwrap();
        assert!(out.path().join(evidence).is_file(), "{evidence}");
        assert!(row["Params"].is_object());
        if let Value::Array(ids) = &row["DeviceIds"] {
            assert_eq!(row["DeviceCount"].as_u64().unwrap() as usize, ids.len());
            assert_eq!(row["DeviceNames"].as_array().unwrap().len(), ids.len());
            assert!(row["DeviceNames"][0].as_str().unwrap().ends_with(".contoso.local"));
        }
    }
    let spike = by_type["SeriesSpike"];
    assert_eq!(spike["Direction"], 1);
    assert!(spike["Score"].as_f64().unwrap() > spike["Threshold"].as_f64().unwrap());
    let series = &spike["Series"];
    assert_eq!(series["days"].as_array().unwrap().len(), series["observed"].as_array().unwrap().len());
    assert_eq!(series["days"].as_array().unwrap().last().unwrap(), day(scenario::FAILING_DAY).as_str());
    assert_eq!(by_type["SeriesDrop"]["Direction"], -1);
    assert_eq!(by_type["UnexpectedProcess"]["Severity"], "High");
    assert_eq!(by_type["UnexpectedProcess"]["InitiatingProcessVersionInfoCompanyName"], "");
    assert_eq!(
        by_type["ReferenceQueryEvasion"]["Params"]["spellings"]["case+port"],
        (scenario::C2_DEVICES * scenario::C2_ROWS) as u64
    );
    assert_eq!(by_type["LookalikeHost"]["Params"]["nearestListedHost"], "winatp-gw-weu.microsoft.com");

    // the run record counts them
    let record = crate::support::run_record(out.path());
    assert_eq!(record["Findings"], rows.len() as u64);
    assert_eq!(record["FindingsByType"]["UnexpectedProcess"], 2);
    assert!(record["DurationsMs"]["detect"].is_u64());

    // the benign look-alikes of the exclusion scenarios are there, tagged, and silent
    let processes = read_table(out.path(), "MdeTelemetryProcesses");
    let rules: BTreeSet<&str> =
        processes.iter().filter_map(|r| r["ExpectedBy"].as_str()?.strip_prefix("exclusion:")).collect();
    assert_eq!(
        rules,
        BTreeSet::from([
            "intune-management-extension",
            "mde-self-health",
            "mecm-client",
            "task-scheduler-microsoft-tasks",
            "windows-update-client",
            "windows-update-service",
        ])
    );
}

/// The findings files of every day, by path.
fn findings_files(out: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut files = BTreeMap::new();
    for entry in files_under(&out.join("MdeTelemetryFindings")) {
        files.insert(entry.strip_prefix(out).unwrap().display().to_string(), std::fs::read(&entry).unwrap());
    }
    files
}

#[test]
fn rerunning_a_day_gives_byte_identical_findings() {
    let out = tempfile::tempdir().unwrap();
    let first = run(&[&bundled()], out.path(), MatchMode::Kql);
    let before = findings_files(out.path());
    assert_eq!(before.len(), 2 * 35, "Parquet and JSON lines for each of the 35 days");
    let first_rows = read_table(out.path(), "MdeTelemetryFindings");

    // one day alone, then the whole window again: the same bytes, the first run's RunId kept
    for (from, to) in [(scenario::FAILING_DAY, scenario::FAILING_DAY), (0, 34)] {
        let mut again = request(&[&bundled()], out.path(), MatchMode::Kql);
        again.window = Some((Day::parse(&day(from)).unwrap(), Day::parse(&day(to)).unwrap()));
        let rerun = telemetry_hunt::job::run(&again).unwrap_or_else(|(e, _)| panic!("{e}"));
        assert_ne!(rerun.record.run_id, first.record.run_id);
        let after = findings_files(out.path());
        let changed: Vec<&String> = before.keys().filter(|k| before.get(*k) != after.get(*k)).collect();
        assert!(changed.is_empty() && after.len() == before.len(), "days {from}..={to} changed {changed:?}");
        let window = Day::parse(&day(from)).unwrap()..=Day::parse(&day(to)).unwrap();
        let expected = first_rows.iter().filter(|r| window.contains(&Day::parse(r["Day"].as_str().unwrap()).unwrap()));
        assert_eq!(rerun.findings.total, expected.count());
    }
    let rows = read_table(out.path(), "MdeTelemetryFindings");
    assert!(rows.iter().all(|r| r["RunId"] == first.record.run_id.as_str()));
}

#[test]
fn the_report_holds_the_chart_data_and_every_finding() {
    let out = tempfile::tempdir().unwrap();
    run(&[&bundled()], out.path(), MatchMode::Kql);
    let html = std::fs::read_to_string(out.path().join("report.html")).unwrap();
    let start = html.find(r#"<script type="application/json" id="chart-data">"#).expect("chart data block");
    let block = &html[start..];
    let json = &block[block.find('>').unwrap() + 1..block.find("</script>").unwrap()];
    let chart: Value = serde_json::from_str(json).unwrap();
    let days: Vec<&str> = chart["days"].as_array().unwrap().iter().map(|d| d.as_str().unwrap()).collect();
    assert_eq!(days.len(), 30);
    assert_eq!(*days.last().unwrap(), day(34));
    // every point is the Connections of MdeTelemetryDaily
    let daily = crate::support::daily(out.path());
    let mut points = 0;
    for (action, values) in chart["series"].as_object().unwrap() {
        for (d, v) in days.iter().zip(values.as_array().unwrap()) {
            let want = daily.get(&(d.to_string(), action.clone())).map_or(0, |c| c.0);
            assert_eq!(v.as_f64().unwrap(), want as f64, "{action} on {d}");
            points += 1;
        }
    }
    assert!(points >= 30 * 4, "{points}");
    assert!(html.contains("<svg") && html.contains("<path d=\"M"));
    for row in read_table(out.path(), "MdeTelemetryFindings") {
        let id = row["FindingId"].as_str().unwrap();
        assert!(html.contains(&format!("id=\"finding-{id}\"")), "finding {id} is not in the report");
    }
    // nothing is fetched from anywhere
    for needle in ["<script src", "<link", "http://", "https://", "@import", "url("] {
        assert!(!html.contains(needle), "the report refers to something outside itself: {needle}");
    }
    // highest severity first
    let high = html.find("badge high").unwrap();
    let medium = html.find("badge medium").unwrap();
    assert!(high < medium);
}

#[test]
fn data_in_the_report_is_escaped() {
    // a look-alike host and a process folder carrying markup
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("events.jsonl");
    let line = |day: &str, url: &str, folder: &str| {
        serde_json::json!({
            "Timestamp": format!("{day}T10:00:00Z"), "DeviceId": "dev-1", "DeviceName": "<b>host</b>", "ActionType": "ConnectionSuccess",
            "RemoteUrl": url, "RemotePort": 443, "InitiatingProcessFileName": "x.exe", "InitiatingProcessFolderPath": folder,
        })
        .to_string()
    };
    let text = [
        line(
            "2026-11-01",
            "winatp-gw-weu.microsoft.com",
            r"c:\program files\windows defender advanced threat protection\mssense.exe",
        ),
        line(
            "2026-11-02",
            "winatp-gw-<img src=x onerror=alert(1)>.microsoft.com",
            r"c:\<script>alert(2)</script>\x.exe",
        ),
    ]
    .join("\n");
    std::fs::write(&input, text).unwrap();
    let out = dir.path().join("out");
    let outcome = run(&[&input], &out, MatchMode::Kql);
    assert!(
        outcome.findings.by_type.contains_key(&telemetry_hunt::detect::FindingType::LookalikeHost),
        "{:#?}",
        outcome.findings
    );
    let html = std::fs::read_to_string(out.join("report.html")).unwrap();
    assert!(
        !html.contains("<img") && !html.contains("<script>alert") && !html.contains("<b>host"),
        "unescaped data in the report"
    );
    assert!(html.contains("winatp-gw-&lt;img src=x onerror=alert(1)&gt;.microsoft.com"));
}

/// The DeviceName a day's device table (the evidence of its findings) gives is the one the
/// device had that day, whether the run holds that day alone or others beside it.
#[test]
fn a_days_device_names_are_that_days() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("events.jsonl");
    let line = |day: &str, name: &str| {
        serde_json::json!({
            "Timestamp": format!("{day}T10:00:00Z"), "DeviceId": "dev-1", "DeviceName": name,
            "ActionType": "ConnectionSuccess", "RemoteUrl": "winatp-gw-weu.microsoft.com", "RemotePort": 443,
            "InitiatingProcessFileName": "MsSense.exe",
            "InitiatingProcessFolderPath": r"c:\program files\windows defender advanced threat protection\mssense.exe",
        })
        .to_string()
    };
    // the later day's name sorts first: a run-wide smallest name would leak into the first day
    let text = [line("2026-11-01", "zeta-host"), line("2026-11-02", "alpha-host")].join("\n");
    std::fs::write(&input, text).unwrap();
    let names = |out: &Path, day: &str| -> Vec<String> {
        let path = out.join(format!("MdeTelemetryDeviceHosts/day={day}/part-0.parquet"));
        let reader =
            parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(std::fs::File::open(&path).unwrap())
                .unwrap()
                .build()
                .unwrap();
        let mut names = Vec::new();
        for batch in reader {
            let batch = batch.unwrap();
            let column = arrow_cast::cast(batch.column_by_name("DeviceName").unwrap(), &arrow_schema::DataType::Utf8);
            let column = column.unwrap();
            let column = column.as_any().downcast_ref::<arrow_array::StringArray>().unwrap();
            names.extend(column.iter().map(|n| n.unwrap_or("").to_string()));
        }
        names
    };
    let together = dir.path().join("together");
    run(&[&input], &together, MatchMode::Kql);
    let apart = dir.path().join("apart");
    run_window(&[&input], &apart, "2026-11-01", "2026-11-01");
    run_window(&[&input], &apart, "2026-11-02", "2026-11-02");
    for out in [&together, &apart] {
        assert_eq!(names(out, "2026-11-01"), ["zeta-host"], "{}", out.display());
        assert_eq!(names(out, "2026-11-02"), ["alpha-host"], "{}", out.display());
    }
}

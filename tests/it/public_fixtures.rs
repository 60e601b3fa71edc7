//! Every public sample in `../shared/fixtures-public/` is read, and what the job gets from it
//! is asserted.

use telemetry_hunt::hunt::host::MatchMode;

use crate::support::{daily, read_table, run, run_record, shared_fixtures};

#[test]
fn portal_csv_export_counts_the_one_mssense_connection() {
    let out = tempfile::tempdir().unwrap();
    let csv = shared_fixtures().join("advanced_hunting_test.csv");
    let outcome = run(&[&csv], out.path(), MatchMode::Kql);
    // 26 rows of a union export; the days present are 2023-10-10, 2023-10-12 and 2023-10-18.
    assert_eq!(outcome.record.stats.rows_scanned, 26);
    assert_eq!(outcome.record.stats.rejects.total(), 0);
    let days: Vec<String> = outcome.days.iter().map(|d| d.to_string()).collect();
    assert_eq!(days, ["2023-10-10", "2023-10-12", "2023-10-18"]);
    let table = daily(out.path());
    assert_eq!(table.len(), 1);
    assert_eq!(table[&("2023-10-18".into(), "ConnectionSuccess".into())], (1, 1));

    let hosts = read_table(out.path(), "MdeTelemetryHosts");
    assert_eq!(hosts.len(), 1);
    assert_eq!(hosts[0]["RemoteHost"], "eu-v20.events.data.microsoft.com");
    assert_eq!(hosts[0]["Ports"], "443");
    assert_eq!(hosts[0]["OnReferenceList"], true);
    assert_eq!(hosts[0]["FailedDevices"], 0);

    let processes = read_table(out.path(), "MdeTelemetryProcesses");
    assert_eq!(processes.len(), 1);
    assert_eq!(processes[0]["InitiatingProcessFileName"], "mssense.exe");
    // the portal writes the folder without the file name; the agent is still recognised
    assert_eq!(processes[0]["Expected"], true);
    assert_eq!(processes[0]["ExpectedBy"], "allow-list:mssense.exe");

    let record = run_record(out.path());
    assert_eq!(record["RowsMatchedKql"], 1);
    assert_eq!(record["RowsExcluded"], 0);
    assert_eq!(record["Status"], "succeeded");
}

#[test]
fn elastic_streaming_records_parse_with_string_and_object_additional_fields() {
    let out = tempfile::tempdir().unwrap();
    let jsonl = shared_fixtures().join("test-device.log.DeviceNetworkEvents-excerpt.jsonl");
    let outcome = run(&[&jsonl], out.path(), MatchMode::Normalized);
    assert_eq!(outcome.record.stats.rows_scanned, 17);
    assert_eq!(outcome.record.stats.rejects.total(), 0, "{:?}", outcome.record.stats.rejects);
    // event time is properties.Timestamp: 1 row on 2022-11-09, 16 on 2023-07-19
    let per_day: Vec<(String, u64)> =
        outcome.record.stats.rows_per_day.iter().map(|(d, n)| (d.to_string(), *n)).collect();
    assert_eq!(per_day, [("2022-11-09".to_string(), 1), ("2023-07-19".to_string(), 16)]);
    // `subdomain.domain.tld` and `url.com` are not telemetry hosts
    assert!(daily(out.path()).is_empty());
    assert_eq!(outcome.record.counts.rows_telemetry, 0);
}

#[test]
fn graph2otel_live_record_pretty_printed_and_as_a_pt1h_blob_line() {
    for name in ["graph2otel-devicenetwork-liveRecord.json", "graph2otel-devicenetwork-liveRecord.PT1H.jsonl"] {
        let out = tempfile::tempdir().unwrap();
        let path = shared_fixtures().join(name);
        let outcome = run(&[&path], out.path(), MatchMode::Kql);
        assert_eq!(outcome.record.stats.rows_scanned, 1, "{name}");
        assert_eq!(outcome.record.stats.rejects.total(), 0, "{name}");
        // properties.Timestamp 2026-07-18T13:58:42Z, not the envelope's time
        let days: Vec<String> = outcome.days.iter().map(|d| d.to_string()).collect();
        assert_eq!(days, ["2026-07-18"], "{name}");
        assert!(daily(out.path()).is_empty(), "{name}: RemoteUrl is null");
    }
}

#[test]
fn the_whole_folder_at_once_skips_the_sources_note() {
    let out = tempfile::tempdir().unwrap();
    let outcome = run(&[&shared_fixtures()], out.path(), MatchMode::Kql);
    assert_eq!(outcome.record.files, 4);
    assert_eq!(outcome.record.files_skipped, 1, "SOURCES.md");
    assert_eq!(outcome.record.stats.rows_scanned, 26 + 17 + 1 + 1);
    assert_eq!(daily(out.path()).len(), 1);
}

//! JSON lines and CSV as the exports write them, and the malformed rows they sometimes carry.

use std::io::Write;

use telemetry_hunt::hunt::host::MatchMode;

use crate::support::{daily, read_table, run, run_record};

const GW: &str = "winatp-gw-weu.microsoft.com";

fn envelope(time: &str, timestamp: &str, device: &str, url: &str) -> String {
    format!(
        r#"{{"time":"{time}","tenantId":"t","operationName":"Publish","category":"AdvancedHunting-DeviceNetworkEvents","properties":{{"Timestamp":"{timestamp}","DeviceId":"{device}","ActionType":"ConnectionSuccess","RemoteUrl":"{url}","RemotePort":443,"InitiatingProcessFileName":"MsSense.exe","InitiatingProcessFolderPath":"c:\\program files\\windows defender advanced threat protection\\mssense.exe","AdditionalFields":{{"a":1}}}},"Tenant":"DefaultTenant"}}"#
    )
}

#[test]
fn streaming_export_uses_properties_timestamp_and_crlf_and_gzip() {
    let dir = tempfile::tempdir().unwrap();
    // the envelope time is the next day: the event belongs to properties.Timestamp's day
    let lines = [
        envelope("2026-11-02T00:00:10.1234567Z", "2026-11-01T23:59:59.9999999Z", "dev-a", GW),
        envelope("2026-11-02T00:00:11Z", "2026-11-02T00:00:00.0000001Z", "dev-b", "WINATP-GW-WEU.MICROSOFT.COM:443"),
        envelope("2026-11-02T00:00:12Z", "2026-11-02T08:00:00Z", "dev-c", &format!("https://{GW}/path")),
    ];
    let body = lines.join("\r\n") + "\r\n";
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(body.as_bytes()).unwrap();
    let path = dir.path().join("PT1H.json.gz");
    std::fs::write(&path, gz.finish().unwrap()).unwrap();

    let out = tempfile::tempdir().unwrap();
    let outcome = run(&[&path], out.path(), MatchMode::Kql);
    assert_eq!(outcome.record.stats.rows_scanned, 3);
    let table = daily(out.path());
    assert_eq!(table[&("2026-11-01".into(), "ConnectionSuccess".into())], (1, 1));
    // dev-b's uppercase-with-port spelling hides from the reference query
    assert_eq!(table[&("2026-11-02".into(), "ConnectionSuccess".into())], (1, 1));
    assert_eq!(outcome.record.counts.rows_evading, 1);

    let out = tempfile::tempdir().unwrap();
    run(&[&path], out.path(), MatchMode::Normalized);
    assert_eq!(daily(out.path())[&("2026-11-02".into(), "ConnectionSuccess".into())], (2, 2));
}

#[test]
fn log_analytics_lines_records_batches_and_bad_rows() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("PT05M.json");
    let text = [
        // flat Log Analytics export line, TimeGenerated only, AdditionalFields as a string
        format!(r#"{{"TimeGenerated":"2026-11-03T10:00:00.1234567Z","DeviceId":"d1","ActionType":"ConnectionFailed","RemoteUrl":"{GW}","RemotePort":"443","AdditionalFields":"{{\"x\":1}}","Type":"DeviceNetworkEvents"}}"#),
        // a {"records":[...]} batch of two
        format!(r#"{{"records":[{{"Timestamp":"2026-11-03T11:00:00Z","DeviceId":"d2","ActionType":"ConnectionFailed","RemoteUrl":"{GW}"}},{{"Timestamp":"2026-11-03T12:00:00Z","DeviceId":"d2","ActionType":"ConnectionFailed","RemoteUrl":"{GW}"}}]}}"#),
        // malformed: not JSON, a bad timestamp, a missing time, a wrong type
        "{not json".to_string(),
        format!(r#"{{"Timestamp":"yesterday","DeviceId":"d3","ActionType":"ConnectionFailed","RemoteUrl":"{GW}"}}"#),
        format!(r#"{{"DeviceId":"d3","ActionType":"ConnectionFailed","RemoteUrl":"{GW}"}}"#),
        format!(r#"{{"Timestamp":"2026-11-03T13:00:00Z","DeviceId":"d4","ActionType":"ConnectionFailed","RemoteUrl":"{GW}","RemotePort":"https"}}"#),
        format!(r#"{{"Timestamp":"2026-11-03T13:00:00Z","DeviceId":{{"id":1}},"ActionType":"ConnectionFailed","RemoteUrl":"{GW}"}}"#),
        String::new(),
        // a row after the bad ones still counts
        format!(r#"{{"Timestamp":"2026-11-03T14:00:00Z","DeviceId":"d5","ActionType":"ConnectionFailed","RemoteUrl":"{GW}"}}"#),
    ]
    .join("\n");
    std::fs::write(&path, text).unwrap();
    let out = tempfile::tempdir().unwrap();
    let outcome = run(&[&path], out.path(), MatchMode::Kql);
    assert_eq!(daily(out.path())[&("2026-11-03".into(), "ConnectionFailed".into())], (3, 4));
    let rejects = &outcome.record.stats.rejects;
    let reasons: Vec<(&str, u64)> = rejects.by_reason.iter().map(|(r, n)| (r.as_str(), *n)).collect();
    assert_eq!(
        reasons,
        [
            ("json: not valid JSON", 1),
            ("time: missing", 1),
            ("time: not a valid timestamp", 1),
            ("type: DeviceId", 1),
            ("type: RemotePort", 1)
        ]
    );
    assert_eq!(outcome.record.stats.rows_scanned, 4 + 5);
    assert!(rejects.samples.iter().any(|s| s.contains("PT05M.json:line 3")), "{:?}", rejects.samples);
    let record = run_record(out.path());
    assert_eq!(record["RowsRejected"], 5);
    assert_eq!(record["RejectReasons"]["time: missing"], 1);
    let hosts = read_table(out.path(), "MdeTelemetryHosts");
    assert_eq!(hosts[0]["FailedDevices"], 3);
    assert_eq!(hosts[0]["Ports"], "443");
}

#[test]
fn csv_with_bad_rows_and_quoted_json() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("export.csv");
    let text = format!(
        "Timestamp,DeviceId,ActionType,RemoteUrl,RemotePort,AdditionalFields\n\
         2026-11-04T01:00:00.1234567Z,d1,ConnectionSuccess,{GW},443,\"{{\"\"a\"\":1}}\"\n\
         2026-11-04T02:00:00Z,d2,ConnectionSuccess,{GW}.,443,\n\
         not-a-time,d3,ConnectionSuccess,{GW},443,\n\
         2026-11-04T03:00:00Z,d4,ConnectionSuccess,{GW},port,\n\
         2026-11-04T04:00:00Z,d5,ConnectionSuccess,,443,\n"
    );
    std::fs::write(&path, text).unwrap();
    let out = tempfile::tempdir().unwrap();
    let outcome = run(&[&path], out.path(), MatchMode::Kql);
    assert_eq!(outcome.record.stats.rows_scanned, 5);
    assert_eq!(outcome.record.stats.rejects.total(), 2);
    assert_eq!(daily(out.path())[&("2026-11-04".into(), "ConnectionSuccess".into())], (1, 1));
    assert_eq!(outcome.record.counts.rows_evading, 1, "the trailing dot");
}

#[test]
fn an_unreadable_file_fails_the_run_with_its_path() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("broken.parquet");
    std::fs::write(&path, b"PAR1 this is not really parquet").unwrap();
    let out = tempfile::tempdir().unwrap();
    let request = crate::support::request(&[&path], out.path(), MatchMode::Kql);
    let (error, record) = telemetry_hunt::job::run(&request).err().expect("the run fails");
    assert!(error.to_string().contains("broken.parquet"), "{error}");
    assert_eq!(record.status, "failed");
    assert_eq!(record.failed_stage.as_deref(), Some("read"));
    // no day was written, the failed run is on record
    assert!(!out.path().join("MdeTelemetryDaily").exists());
    assert_eq!(run_record(out.path())["Status"], "failed");
}

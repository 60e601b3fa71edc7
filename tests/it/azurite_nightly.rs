//! The nightly job against Azurite: the Defender streaming export, a Parquet tree and the Log
//! Analytics data export as blob sources, results and history in a blob container, the lock,
//! re-runs, and `check`.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use arrow_array::{ArrayRef, Int32Array, RecordBatch, StringArray, TimestampMicrosecondArray};
use bytes::Bytes;
use object_store::ObjectStore;
use parquet::arrow::ArrowWriter;
use serde_json::{Map, Value};
use telemetry_hunt::azure::identity::EMULATOR_KEY;
use telemetry_hunt::azure::{Azure, BlobLocation, IdentityKind, IdentitySettings, Transport};
use telemetry_hunt::sink::blob::BlobStore;
use telemetry_hunt::sink::lock::LOCK_PATH;
use telemetry_hunt::sink::store::Store;
use telemetry_hunt::time::{parse_timestamp_micros, Day};

use crate::azurite_support::{azurite_url, container_client, create_container, hunt, objects, text, unique, upload};

/// One DeviceNetworkEvents row of the test trees.
#[derive(Clone)]
pub struct Event {
    pub day: Day,
    pub time: &'static str,
    pub device: &'static str,
    pub action: &'static str,
    pub url: &'static str,
    pub port: i32,
    pub process: &'static str,
    pub folder: &'static str,
}

pub const MDE: &str = r"c:\program files\windows defender advanced threat protection\";
pub const SYSTEM32: &str = r"c:\windows\system32\";

impl Event {
    pub fn timestamp(&self) -> String {
        format!("{}T{}.1234567Z", self.day, self.time)
    }

    fn properties(&self) -> Value {
        serde_json::json!({
            "Timestamp": self.timestamp(),
            "DeviceId": format!("{}-0000000000000000000000000000000000", self.device),
            "DeviceName": format!("{}.contoso.local", self.device),
            "ActionType": self.action,
            "RemoteUrl": self.url,
            "RemoteIP": "20.42.65.85",
            "RemotePort": self.port,
            "Protocol": "Tcp",
            "InitiatingProcessFileName": self.process,
            "InitiatingProcessFolderPath": format!("{}{}", self.folder, self.process.to_lowercase()),
            "MachineGroup": "main",
            "__UDI_RequiredFields_TenantId": "ignored",
        })
    }

    /// A line of the Defender streaming export: the envelope, `properties` inside, CRLF.
    pub fn streaming_line(&self, tenant: &str) -> String {
        let line = serde_json::json!({
            "time": self.timestamp(),
            "tenantId": tenant,
            "operationName": "Publish",
            "category": "AdvancedHunting-DeviceNetworkEvents",
            "properties": self.properties(),
            "Tenant": "DefaultTenant",
        });
        format!("{line}\r\n")
    }

    /// A line of a Log Analytics export: flat, with `TimeGenerated`.
    fn export_line(&self) -> String {
        let mut flat = self.properties();
        flat["TimeGenerated"] = Value::String(self.timestamp());
        flat["Type"] = Value::String("DeviceNetworkEvents".into());
        format!("{flat}\n")
    }
}

pub fn day_folder(day: Day) -> String {
    let (y, m, d) = day.ymd();
    format!("y={y:04}/m={m:02}/d={d:02}")
}

/// A Parquet file of events, as an export writes it.
pub fn parquet_file(events: &[Event]) -> Vec<u8> {
    let micros: Vec<i64> = events.iter().map(|e| parse_timestamp_micros(&e.timestamp()).unwrap()).collect();
    let text =
        |f: &dyn Fn(&Event) -> String| -> ArrayRef { Arc::new(StringArray::from_iter_values(events.iter().map(f))) };
    let columns: Vec<(&str, ArrayRef)> = vec![
        ("Timestamp", Arc::new(TimestampMicrosecondArray::from(micros).with_timezone("UTC"))),
        ("DeviceId", text(&|e| format!("{}-0000000000000000000000000000000000", e.device))),
        ("DeviceName", text(&|e| format!("{}.contoso.local", e.device))),
        ("ActionType", text(&|e| e.action.to_string())),
        ("RemoteUrl", text(&|e| e.url.to_string())),
        ("RemotePort", Arc::new(Int32Array::from_iter_values(events.iter().map(|e| e.port)))),
        ("InitiatingProcessFileName", text(&|e| e.process.to_string())),
        ("InitiatingProcessFolderPath", text(&|e| format!("{}{}", e.folder, e.process.to_lowercase()))),
        ("ReportId", text(&|_| "not-needed".to_string())),
    ];
    let batch = RecordBatch::try_from_iter(columns).unwrap();
    let mut bytes = Vec::new();
    let mut writer = ArrowWriter::try_new(&mut bytes, batch.schema(), None).unwrap();
    writer.write(&batch).unwrap();
    writer.close().unwrap();
    bytes
}

/// The run's days, relative to the real clock: a nightly run hunts yesterday and the day before.
pub struct Days {
    pub before: Day,
    pub first: Day,
    pub last: Day,
    pub today: Day,
}

pub fn days() -> Days {
    let today = Day::of_micros(telemetry_hunt::job::now_micros());
    Days { before: today.prev().prev().prev(), first: today.prev().prev(), last: today.prev(), today }
}

/// The Defender streaming-export tree, as `tenantId=…/y=…/m=…/d=…/h=…/m=00/PT1H.json`, one blob
/// per hour an event was received in.
pub fn streaming_tree(d: &Days) -> Vec<(String, Vec<u8>)> {
    let tenant = "4b8c18bd-2f9f-4227-af55-9f1061cf9c32";
    let e = |day, time, device, action, url, port, process, folder| Event {
        day,
        time,
        device,
        action,
        url,
        port,
        process,
        folder,
    };
    // (received day, received hour, events)
    let e6 = e(
        d.last,
        "09:00:00",
        "dev-a",
        "ConnectionSuccess",
        "us-v20.events.data.microsoft.com",
        443,
        "svchost.exe",
        SYSTEM32,
    );
    let hours: Vec<(Day, u32, Vec<Event>, &str)> = vec![
        // outside the window: this folder is never listed
        (d.before, 10, vec![e(d.before, "10:00:00", "dev-y", "ConnectionSuccess", "winatp-gw-weu.microsoft.com", 443, "MsSense.exe", MDE)], ""),
        // received after midnight: an event of the day before, outside the window
        (d.first, 0, vec![e(d.before, "23:58:00", "dev-z", "ConnectionSuccess", "winatp-gw-weu.microsoft.com", 443, "MsSense.exe", MDE)], ""),
        (d.first, 10, vec![e(d.first, "10:15:00", "dev-a", "ConnectionSuccess", "winatp-gw-weu.microsoft.com", 443, "MsSense.exe", MDE)], ""),
        (d.first, 11, vec![e(d.first, "11:30:00", "dev-b", "ConnectionSuccess", "https://winatp-gw-weu.microsoft.com/v1/report", 443, "MsSense.exe", MDE)], ""),
        (d.first, 12, vec![e(d.first, "12:00:00", "dev-a", "ConnectionFailed", "winatp-gw-weu.microsoft.com", 443, "MsSense.exe", MDE)], ""),
        (
            d.first,
            13,
            vec![
                // the reference query misses this spelling; the host tables count it as evasion
                e(d.first, "13:00:00", "dev-c", "ConnectionSuccess", "WINATP-GW-WEU.MICROSOFT.COM:443", 443, "rundll32.exe", r"c:\users\public\"),
                e(d.first, "13:20:00", "dev-a", "ConnectionSuccess", "www.example.com", 443, "chrome.exe", r"c:\program files\google\chrome\application\"),
            ],
            "",
        ),
        // delivered twice (at least once), and one malformed line
        (
            d.last,
            9,
            vec![
                e6.clone(),
                e(d.last, "09:05:00", "dev-b", "ConnectionSuccess", "us-v20.events.data.microsoft.com", 443, "svchost.exe", SYSTEM32),
                e6,
            ],
            "{\"time\":\"x\",\"properties\":{\"Timestamp\":\"not a time\",\"RemoteUrl\":\"us-v20.events.data.microsoft.com\"}}\r\n",
        ),
        // late: received after midnight, counted for the last day
        (
            d.today,
            0,
            vec![
                e(d.last, "23:59:30", "dev-c", "ConnectionSuccess", "us-v20.events.data.microsoft.com", 8080, "powershell.exe", r"c:\windows\system32\windowspowershell\v1.0\"),
                e(d.today, "00:10:00", "dev-a", "ConnectionSuccess", "winatp-gw-weu.microsoft.com", 443, "MsSense.exe", MDE),
            ],
            "",
        ),
    ];
    hours
        .into_iter()
        .map(|(day, hour, events, extra)| {
            let mut body: String = events.iter().map(|e| e.streaming_line(tenant)).collect();
            body.push_str(extra);
            (format!("tenantId={tenant}/{}/h={hour:02}/m=00/PT1H.json", day_folder(day)), body.into_bytes())
        })
        .collect()
}

/// A Parquet tree under `export/`: `day=` folders, `y=/m=/d=` folders, a flat file, markers.
pub fn parquet_tree(d: &Days) -> Vec<(String, Vec<u8>)> {
    let e = |day, time, device, action, url, port, process, folder| Event {
        day,
        time,
        device,
        action,
        url,
        port,
        process,
        folder,
    };
    let defender = r"c:\programdata\microsoft\windows defender\platform\4.18.25010.11-0\";
    let (y, m, dd) = d.last.ymd();
    vec![
        (
            format!("export/day={}/part-00000.parquet", d.first),
            parquet_file(&[
                e(
                    d.first,
                    "08:00:00",
                    "dev-p",
                    "ConnectionSuccess",
                    "eu-v20.events.data.microsoft.com",
                    443,
                    "MsMpEng.exe",
                    defender,
                ),
                e(
                    d.first,
                    "09:00:00",
                    "dev-q",
                    "ConnectionSuccess",
                    "eu-v20.events.data.microsoft.com",
                    443,
                    "MsMpEng.exe",
                    defender,
                ),
                e(
                    d.first,
                    "10:00:00",
                    "dev-p",
                    "ConnectionFailed",
                    "eu-v20.events.data.microsoft.com",
                    443,
                    "MsMpEng.exe",
                    defender,
                ),
                e(
                    d.first,
                    "11:00:00",
                    "dev-q",
                    "ConnectionSuccess",
                    "contoso.sharepoint.com",
                    443,
                    "msedge.exe",
                    r"c:\program files\edge\",
                ),
            ]),
        ),
        (
            format!("export/year={y:04}/month={m:02}/day={dd:02}/part-00000.parquet"),
            parquet_file(&[
                e(
                    d.last,
                    "07:00:00",
                    "dev-p",
                    "ConnectionSuccess",
                    "settings-win.data.microsoft.com",
                    443,
                    "svchost.exe",
                    SYSTEM32,
                ),
                e(
                    d.last,
                    "07:30:00",
                    "dev-r",
                    "ConnectionSuccess",
                    "settings-win.data.microsoft.com",
                    80,
                    "curl.exe",
                    r"c:\temp\",
                ),
            ]),
        ),
        // never listed: a day outside the window
        (
            format!("export/day={}/part-00000.parquet", d.before),
            parquet_file(&[e(
                d.before,
                "08:00:00",
                "dev-x",
                "ConnectionSuccess",
                "eu-v20.events.data.microsoft.com",
                443,
                "MsMpEng.exe",
                defender,
            )]),
        ),
        // flat: no date in the path, read and filtered by row
        (
            "export/backfill.parquet".to_string(),
            parquet_file(&[
                e(
                    d.before,
                    "12:00:00",
                    "dev-x",
                    "ConnectionSuccess",
                    "eu-v20.events.data.microsoft.com",
                    443,
                    "MsMpEng.exe",
                    defender,
                ),
                e(
                    d.last,
                    "12:00:00",
                    "dev-q",
                    "ConnectionSuccess",
                    "settings-win.data.microsoft.com",
                    443,
                    "svchost.exe",
                    SYSTEM32,
                ),
            ]),
        ),
        ("export/_SUCCESS".to_string(), Vec::new()),
        (format!("export/day={}/.part-00000.parquet.crc", d.first), b"crc".to_vec()),
    ]
}

/// The Log Analytics data-export tree: `WorkspaceResourceId=/subscriptions/…/y=…/…/PT05M.json`.
fn export_tree(d: &Days) -> Vec<(String, Vec<u8>)> {
    let e = |day, time, device, action, url, port, process, folder| Event {
        day,
        time,
        device,
        action,
        url,
        port,
        process,
        folder,
    };
    let workspace = "WorkspaceResourceId=/subscriptions/00000000-0000-0000-0000-000000000001/resourcegroups/rg-sec/providers/microsoft.operationalinsights/workspaces/law-sec";
    let a = e(
        d.first,
        "06:01:00",
        "dev-k",
        "ConnectionSuccess",
        "uk.vortex-win.data.microsoft.com",
        443,
        "svchost.exe",
        SYSTEM32,
    );
    let b = e(
        d.first,
        "06:02:00",
        "dev-l",
        "ConnectionSuccess",
        "uk.vortex-win.data.microsoft.com",
        443,
        "svchost.exe",
        SYSTEM32,
    );
    let c = e(
        d.last,
        "22:10:00",
        "dev-k",
        "ConnectionFailed",
        "uk.vortex-win.data.microsoft.com",
        443,
        "svchost.exe",
        SYSTEM32,
    );
    let old = e(
        d.before,
        "22:10:00",
        "dev-old",
        "ConnectionFailed",
        "uk.vortex-win.data.microsoft.com",
        443,
        "svchost.exe",
        SYSTEM32,
    );
    let blob = |day: Day, hour: u32, minute: u32, name: &str, events: &[&Event]| {
        (
            format!("{workspace}/{}/h={hour:02}/m={minute:02}/{name}", day_folder(day)),
            events.iter().map(|e| e.export_line()).collect::<String>().into_bytes(),
        )
    };
    vec![
        blob(d.first, 6, 0, "PT05M.json", &[&a]),
        // more than 50,000 appends spill into a second blob
        blob(d.first, 6, 0, "PT05M_1.json", &[&b]),
        blob(d.last, 22, 10, "PT5M.json", &[&c]),
        blob(d.before, 22, 10, "PT05M.json", &[&old]),
    ]
}

/// Every JSON-lines row of a table in a results container, days in order.
pub fn blob_table(files: &BTreeMap<String, Bytes>, prefix: &str, table: &str) -> Vec<Map<String, Value>> {
    let start = format!("{prefix}{table}/day=");
    files
        .iter()
        .filter(|(name, _)| name.starts_with(&start) && name.ends_with(".jsonl"))
        .flat_map(|(_, bytes)| text(bytes).lines().map(|l| serde_json::from_str(l).unwrap()).collect::<Vec<_>>())
        .collect()
}

/// The day tables of a results container (no run records), for comparing runs.
/// The table-days, with the completion markers (no run records, no report: those say which run).
pub fn day_tables(files: &BTreeMap<String, Bytes>) -> BTreeMap<String, Bytes> {
    files
        .iter()
        .filter(|(name, _)| {
            (name.starts_with("Mde") && !name.starts_with("MdeTelemetryRuns/")) || name.starts_with("_complete/")
        })
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// [`day_tables`] as another results store would hold them: a finding names the run that first
/// reported it, so findings compare without their RunId (as JSON lines only).
pub fn day_tables_any_run(files: &BTreeMap<String, Bytes>) -> BTreeMap<String, Bytes> {
    day_tables(files)
        .into_iter()
        .filter(|(name, _)| !(name.starts_with("MdeTelemetryFindings/") && name.ends_with(".parquet")))
        .map(|(name, bytes)| {
            if !name.starts_with("MdeTelemetryFindings/") {
                return (name, bytes);
            }
            let lines: Vec<String> = std::str::from_utf8(&bytes)
                .unwrap()
                .lines()
                .map(|line| {
                    let mut row: serde_json::Map<String, serde_json::Value> = serde_json::from_str(line).unwrap();
                    assert!(row.remove("RunId").is_some_and(|id| id.is_string()), "{line}");
                    serde_json::to_string(&row).unwrap()
                })
                .collect();
            (name, Bytes::from(lines.join("\n")))
        })
        .collect()
}

pub fn daily_rows(files: &BTreeMap<String, Bytes>) -> Vec<(String, String, u64, u64)> {
    blob_table(files, "", "MdeTelemetryDaily")
        .iter()
        .map(|r| {
            (
                r["Day"].as_str().unwrap().to_string(),
                r["ActionType"].as_str().unwrap().to_string(),
                r["Connections"].as_u64().unwrap(),
                r["Events"].as_u64().unwrap(),
            )
        })
        .collect()
}

pub fn host_rows(files: &BTreeMap<String, Bytes>) -> Vec<String> {
    blob_table(files, "", "MdeTelemetryHosts")
        .iter()
        .map(|r| {
            format!(
                "{} {} {} devices={} events={} failed={} ports={} reference={} evasion={}",
                r["Day"].as_str().unwrap(),
                r["RemoteHost"].as_str().unwrap(),
                r["ActionType"].as_str().unwrap(),
                r["Devices"],
                r["Events"],
                r["FailedDevices"],
                r["Ports"].as_str().unwrap(),
                r["OnReferenceList"],
                r["EvasionEvents"]
            )
        })
        .collect()
}

pub fn process_rows(files: &BTreeMap<String, Bytes>) -> Vec<String> {
    blob_table(files, "", "MdeTelemetryProcesses")
        .iter()
        .map(|r| {
            format!(
                "{} {} {} {} company={} devices={} events={} expected={} by={}",
                r["Day"].as_str().unwrap(),
                r["RemoteHost"].as_str().unwrap(),
                r["InitiatingProcessFileName"].as_str().unwrap(),
                r["InitiatingProcessFolderPath"].as_str().unwrap(),
                r["InitiatingProcessVersionInfoCompanyName"],
                r["Devices"],
                r["Events"],
                r["Expected"],
                r["ExpectedBy"].as_str().unwrap()
            )
        })
        .collect()
}

/// The single run record of a container with one run (or the newest of several).
pub fn run_records(files: &BTreeMap<String, Bytes>) -> Vec<Map<String, Value>> {
    blob_table(files, "", "MdeTelemetryRuns")
}

/// A config for a blob source and blob results on one Azurite, with the emulator identity.
pub fn blob_config(endpoint: &str, source: &str, layout: &str, results: &str, extra: &str) -> String {
    format!(
        "[source.blob]\nendpoint = \"{endpoint}\"\ncontainer = \"{source}\"\nlayout = \"{layout}\"\n\n\
         [output.blob]\nendpoint = \"{endpoint}\"\ncontainer = \"{results}\"\n\n\
         [azure]\nidentity = \"emulator\"\nmax_retries = 1\nretry_timeout_seconds = 5\n{extra}"
    )
}

pub struct Setup {
    pub dir: tempfile::TempDir,
    pub results: Arc<dyn ObjectStore>,
    pub results_name: String,
    pub endpoint: String,
}

/// Uploads a tree into a new source container, makes an empty results container and writes the
/// configuration `run.toml`.
pub fn setup(tree: &[(String, Vec<u8>)], source_prefix: &str, layout: &str) -> Setup {
    let endpoint = azurite_url();
    let source = unique(source_prefix);
    let results_name = unique("results");
    create_container(&endpoint, &source, None);
    create_container(&endpoint, &results_name, None);
    upload(&container_client(&endpoint, &source, None), tree);
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("run.toml"), blob_config(&endpoint, &source, layout, &results_name, "")).unwrap();
    Setup { results: container_client(&endpoint, &results_name, None), dir, results_name, endpoint }
}

fn run_ok(dir: &Path) -> std::process::Output {
    let out = hunt(&["--log-format", "json", "run", "--config", "run.toml"], dir, &[]);
    assert!(out.status.success(), "the run failed: {}", text(&out.stderr));
    out
}

#[test]
fn a_nightly_run_of_the_streaming_export_writes_every_table_to_the_results_container() {
    let d = days();
    let setup = setup(&streaming_tree(&d), "insights-logs-adv", "defender-streaming");
    let first = run_ok(setup.dir.path());
    let stdout = text(&first.stdout);
    assert!(stdout.contains(&format!("container `{}/{}`", setup.endpoint, setup.results_name)), "{stdout}");

    let files = objects(&setup.results);
    let (d1, d2) = (d.first.to_string(), d.last.to_string());
    assert_eq!(
        daily_rows(&files),
        vec![
            (d1.clone(), "ConnectionFailed".into(), 1, 1),
            (d1.clone(), "ConnectionSuccess".into(), 2, 2),
            // the duplicate counts as an event, not a device; the late event (received after
            // midnight, filed under today) is counted for its own day
            (d2.clone(), "ConnectionSuccess".into(), 3, 4),
        ]
    );
    assert_eq!(
        host_rows(&files),
        vec![
            format!("{d1} winatp-gw-weu.microsoft.com ConnectionFailed devices=1 events=1 failed=1 ports=443 reference=true evasion=0"),
            format!("{d1} winatp-gw-weu.microsoft.com ConnectionSuccess devices=3 events=3 failed=1 ports=443 reference=true evasion=1"),
            format!("{d2} us-v20.events.data.microsoft.com ConnectionSuccess devices=3 events=4 failed=0 ports=443,8080 reference=true evasion=0"),
        ]
    );
    assert_eq!(
        process_rows(&files),
        vec![
            // process names are compared (and kept) in lower case; a missing company is ""
            format!(
                r#"{d1} winatp-gw-weu.microsoft.com mssense.exe {MDE}mssense.exe company="" devices=2 events=3 expected=true by=allow-list:mssense.exe"#
            ),
            format!(
                r#"{d1} winatp-gw-weu.microsoft.com rundll32.exe c:\users\public\rundll32.exe company="" devices=1 events=1 expected=false by="#
            ),
            format!(
                r#"{d2} us-v20.events.data.microsoft.com powershell.exe c:\windows\system32\windowspowershell\v1.0\powershell.exe company="" devices=1 events=1 expected=false by="#
            ),
            format!(
                r#"{d2} us-v20.events.data.microsoft.com svchost.exe {SYSTEM32}svchost.exe company="" devices=2 events=3 expected=true by=allow-list:svchost.exe"#
            ),
        ]
    );
    let records = run_records(&files);
    assert_eq!(records.len(), 1);
    let record = &records[0];
    assert_eq!(record["Status"], "succeeded");
    assert_eq!((record["WindowFrom"].as_str(), record["WindowTo"].as_str()), (Some(d1.as_str()), Some(d2.as_str())));
    // the day before the window is never listed; its hour blob is not among the files
    assert_eq!(record["Files"], 7, "{record:?}");
    assert_eq!(record["RowsScanned"], 12, "{record:?}");
    assert_eq!(record["RowsOutsideWindow"], 2, "{record:?}");
    assert_eq!(record["RowsRejected"], 1, "{record:?}");
    assert_eq!(record["RejectReasons"], serde_json::json!({"time: not a valid timestamp": 1}));
    assert_eq!(record["Source"], serde_json::json!([format!("{}/{}", setup.endpoint, record_source(&setup))]));
    // nothing of the commit protocol or the lock is left behind: the tables, the completion
    // markers of the two days, the report
    assert!(
        files.keys().all(|name| name.starts_with("Mde") || name.starts_with("_complete/day=") || name == "report.html"),
        "{:?}",
        files.keys().collect::<Vec<_>>()
    );
    assert_eq!(
        files.keys().filter(|name| name.starts_with("_complete/")).collect::<Vec<_>>(),
        [&format!("_complete/day={d1}.json"), &format!("_complete/day={d2}.json")]
    );

    // the same night again: every day table byte for byte the same, one more run record
    run_ok(setup.dir.path());
    let again = objects(&setup.results);
    assert_eq!(day_tables(&again), day_tables(&files));
    assert_eq!(run_records(&again).len(), 2);
    assert_eq!(again.len(), files.len() + 2);

    // a blob that arrives late (an event of the first day, received in the last day's first
    // hour) is picked up by the next run, which hunts the earlier day again
    let late = Event {
        day: d.first,
        time: "23:50:00",
        device: "dev-d",
        action: "ConnectionSuccess",
        url: "winatp-gw-weu.microsoft.com",
        port: 443,
        process: "MsSense.exe",
        folder: MDE,
    };
    let name = format!("tenantId=4b8c18bd-2f9f-4227-af55-9f1061cf9c32/{}/h=00/m=00/PT1H.json", day_folder(d.last));
    upload(
        &container_client(&setup.endpoint, &record_source(&setup), None),
        &[(name, late.streaming_line("t").into_bytes())],
    );
    run_ok(setup.dir.path());
    let late_files = objects(&setup.results);
    assert_eq!(daily_rows(&late_files)[1], (d1.clone(), "ConnectionSuccess".into(), 3, 3));
    assert_eq!(daily_rows(&late_files)[2], daily_rows(&files)[2], "the last day is unchanged");
}

fn record_source(setup: &Setup) -> String {
    let config = std::fs::read_to_string(setup.dir.path().join("run.toml")).unwrap();
    config.lines().find_map(|l| l.strip_prefix("container = \"")).unwrap().trim_end_matches('"').to_string()
}

#[test]
fn a_concurrent_run_is_refused_and_a_stale_lock_is_taken_over() {
    let d = days();
    let setup = setup(&streaming_tree(&d), "insights-logs-adv", "defender-streaming");
    let store = BlobSide::open(&setup.endpoint, &setup.results_name);
    let now = telemetry_hunt::job::now_micros();
    let lock = |run: &str, expires_at: i64| {
        Bytes::from(
            serde_json::json!({"run_id": run, "host": "replica-7", "pid": 4242, "acquired_at": now, "expires_at": expires_at})
                .to_string(),
        )
    };
    store.store.put(LOCK_PATH, lock("20261203T020000Z-abc123", now + 600_000_000)).unwrap();
    let refused = hunt(&["run", "--config", "run.toml"], setup.dir.path(), &[]);
    assert_eq!(refused.status.code(), Some(1), "{}", text(&refused.stderr));
    let err = text(&refused.stderr);
    assert!(
        err.contains("another run holds the results store")
            && err.contains("20261203T020000Z-abc123")
            && err.contains("replica-7"),
        "{err}"
    );
    let files = objects(&setup.results);
    assert_eq!(files.keys().collect::<Vec<_>>(), [LOCK_PATH], "a refused run writes nothing");

    // the holder died an hour ago: its lock expired, and the next run takes it over
    store.store.put(LOCK_PATH, lock("20261203T010000Z-dead00", now - 3_600_000_000)).unwrap();
    let out = hunt(&["run", "--config", "run.toml"], setup.dir.path(), &[]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("Took over the lock"), "{}", text(&out.stderr));
    let files = objects(&setup.results);
    assert!(!files.contains_key(LOCK_PATH), "released at the end");
    assert_eq!(daily_rows(&files).len(), 3);
}

/// The results container through the job's own blob store.
pub struct BlobSide {
    _azure: Azure,
    pub store: BlobStore,
}

impl BlobSide {
    pub fn open(endpoint: &str, container: &str) -> BlobSide {
        let identity = IdentitySettings {
            kind: IdentityKind::Emulator,
            client_id: None,
            tenant_id: None,
            max_retries: 1,
            retry_timeout: std::time::Duration::from_secs(5),
        };
        let transport = Transport {
            max_retries: 1,
            retry_timeout: std::time::Duration::from_secs(5),
            connect_timeout: std::time::Duration::from_secs(5),
            request_timeout: std::time::Duration::from_secs(30),
        };
        let azure = Azure::start(&identity, &transport).unwrap();
        let location = BlobLocation {
            account: "devstoreaccount1".into(),
            endpoint: endpoint.into(),
            container: container.into(),
            prefix: String::new(),
        };
        let store = BlobStore::new(azure.container(&location).unwrap(), azure.identity.clone());
        BlobSide { _azure: azure, store }
    }
}

#[test]
fn two_runs_finding_the_same_stale_lock_cannot_both_take_it() {
    let endpoint = azurite_url();
    let container = unique("lockrace");
    create_container(&endpoint, &container, None);
    let a = BlobSide::open(&endpoint, &container);
    let b = BlobSide::open(&endpoint, &container);
    a.store.put("_lock.json", Bytes::from_static(b"{\"stale\":true}")).unwrap();
    let (_, tag_a) = a.store.get_tagged("_lock.json").unwrap().unwrap();
    let (_, tag_b) = b.store.get_tagged("_lock.json").unwrap().unwrap();
    assert_eq!(tag_a, tag_b);
    let won_a = a.store.replace_if("_lock.json", Bytes::from_static(b"a"), &tag_a).unwrap();
    let won_b = b.store.replace_if("_lock.json", Bytes::from_static(b"b"), &tag_b).unwrap();
    assert!(won_a.is_some() && won_b.is_none(), "exactly one replace succeeds");
    assert_eq!(a.store.get("_lock.json").unwrap().unwrap(), Bytes::from_static(b"a"));
    assert!(!a.store.put_if_absent("_lock.json", Bytes::from_static(b"c")).unwrap());
    a.store.delete("_lock.json").unwrap();
    assert_eq!(b.store.replace_if("_lock.json", Bytes::from_static(b"d"), &won_a.unwrap()).unwrap(), None);
    assert!(b.store.put_if_absent("_lock.json", Bytes::from_static(b"e")).unwrap());
}

#[test]
fn the_blob_store_keeps_the_store_contract() {
    let endpoint = azurite_url();
    let container = unique("contract");
    create_container(&endpoint, &container, None);
    let side = BlobSide::open(&endpoint, &container);
    let store = &side.store;
    store.put("T/day=2026-11-01/part-0.jsonl", Bytes::from_static(b"a")).unwrap();
    store.put("T/day=2026-11-02/part-0.jsonl", Bytes::from_static(b"b")).unwrap();
    store.put("T/day=2026-11-02/part-0.jsonl", Bytes::from_static(b"c")).unwrap();
    store.put("U/x", Bytes::from_static(b"u")).unwrap();
    assert_eq!(store.get("T/day=2026-11-02/part-0.jsonl").unwrap().unwrap(), Bytes::from_static(b"c"));
    assert_eq!(store.get("T/missing").unwrap(), None);
    assert_eq!(store.list("T/").unwrap(), ["T/day=2026-11-01/part-0.jsonl", "T/day=2026-11-02/part-0.jsonl"]);
    assert_eq!(store.list("T/day=2026-11-01").unwrap(), ["T/day=2026-11-01/part-0.jsonl"]);
    assert_eq!(store.list("").unwrap().len(), 3);
    assert_eq!(store.list("V/").unwrap(), Vec::<String>::new());
    assert!(store.rename("T/day=2026-11-01/part-0.jsonl", "V/moved").unwrap());
    assert!(!store.rename("T/day=2026-11-01/part-0.jsonl", "V/moved").unwrap());
    assert_eq!(store.get("V/moved").unwrap().unwrap(), Bytes::from_static(b"a"));
    store.delete("V/moved").unwrap();
    store.delete("V/moved").unwrap();
    assert!(store.location().contains(&container));
}

#[test]
fn a_nightly_run_reads_parquet_in_day_folders_and_flat_with_only_its_days_listed() {
    let d = days();
    let setup = setup(&parquet_tree(&d), "mde-parquet", "auto");
    run_ok(setup.dir.path());
    let files = objects(&setup.results);
    let (d1, d2) = (d.first.to_string(), d.last.to_string());
    assert_eq!(
        daily_rows(&files),
        vec![
            (d1.clone(), "ConnectionFailed".into(), 1, 1),
            (d1.clone(), "ConnectionSuccess".into(), 2, 2),
            (d2.clone(), "ConnectionSuccess".into(), 3, 3),
        ]
    );
    assert_eq!(
        host_rows(&files),
        vec![
            format!("{d1} eu-v20.events.data.microsoft.com ConnectionFailed devices=1 events=1 failed=1 ports=443 reference=true evasion=0"),
            format!("{d1} eu-v20.events.data.microsoft.com ConnectionSuccess devices=2 events=2 failed=1 ports=443 reference=true evasion=0"),
            format!("{d2} settings-win.data.microsoft.com ConnectionSuccess devices=3 events=3 failed=0 ports=80,443 reference=true evasion=0"),
        ]
    );
    let record = &run_records(&files)[0];
    // the two day folders and the flat file; not the day before, not the markers
    assert_eq!(record["Files"], 3, "{record:?}");
    assert_eq!(record["FilesSkipped"], 0, "{record:?}");
    assert_eq!(record["RowsScanned"], 8, "{record:?}");
    assert_eq!(record["RowsOutsideWindow"], 1, "{record:?}");

    // the same files hunted locally give the same tables, byte for byte
    let local = tempfile::tempdir().unwrap();
    for (name, bytes) in
        parquet_tree(&d).iter().filter(|(n, _)| n.ends_with(".parquet") && !n.contains(&d.before.to_string()))
    {
        let path = local.path().join("in").join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, bytes).unwrap();
    }
    let out = hunt(&["run", "--input", "in", "--out", "out", "--from", &d1, "--to", &d2], local.path(), &[]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    for table in ["MdeTelemetryDaily", "MdeTelemetryHosts", "MdeTelemetryProcesses"] {
        for day in [&d1, &d2] {
            for ext in ["jsonl", "parquet"] {
                let name = format!("{table}/day={day}/part-0.{ext}");
                let local_bytes = std::fs::read(local.path().join("out").join(&name)).unwrap();
                assert_eq!(files[&name].as_ref(), local_bytes.as_slice(), "{name}");
            }
        }
    }
}

#[test]
fn the_log_analytics_export_layout_is_found_by_listing() {
    let d = days();
    let setup = setup(&export_tree(&d), "am-devicenetworkevents", "log-analytics-export");
    run_ok(setup.dir.path());
    let files = objects(&setup.results);
    assert_eq!(
        daily_rows(&files),
        vec![
            (d.first.to_string(), "ConnectionSuccess".into(), 2, 2),
            (d.last.to_string(), "ConnectionFailed".into(), 1, 1)
        ]
    );
    let record = &run_records(&files)[0];
    assert_eq!(record["Files"], 3, "{record:?}");
}

#[test]
fn check_probes_the_source_the_results_and_says_what_to_fix() {
    let d = days();
    let setup = setup(&streaming_tree(&d), "insights-logs-adv", "defender-streaming");
    let out = hunt(&["check", "--config", "run.toml"], setup.dir.path(), &[]);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", text(&out.stderr));
    for expected in [
        "ok    identity Azurite development account",
        "ok    source   list ",
        "tenantId=4b8c18bd-2f9f-4227-af55-9f1061cf9c32",
        "ok    results  write, read and delete _probe/",
        "no run holds the lock",
    ] {
        assert!(stdout.contains(expected), "{expected}: {stdout}");
    }
    assert!(objects(&setup.results).is_empty(), "the probe object is deleted");

    // an empty source is not an error yet (an export can take a day to start), but it is said
    let empty = blob_config(&setup.endpoint, &setup.results_name, "auto", &setup.results_name, "");
    std::fs::write(setup.dir.path().join("empty.toml"), empty).unwrap();
    let out = hunt(&["check", "--config", "empty.toml"], setup.dir.path(), &[]);
    let stdout = text(&out.stdout);
    assert!(out.status.success() && stdout.contains("yet; an export can take up to 24 hours"), "{stdout}");

    // a results container that does not exist, a source endpoint with nothing listening
    let dead = format!("http://127.0.0.1:{}/devstoreaccount1", crate::azurite_support::free_port());
    let config = blob_config(&dead, "events", "auto", "no-such-results", "").replacen(
        &format!("endpoint = \"{dead}\"\ncontainer = \"no-such-results\""),
        &format!("endpoint = \"{}\"\ncontainer = \"no-such-results\"", setup.endpoint),
        1,
    );
    std::fs::write(setup.dir.path().join("bad.toml"), config).unwrap();
    let out = hunt(&["check", "--config", "bad.toml"], setup.dir.path(), &[]);
    assert_eq!(out.status.code(), Some(1));
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains("FAIL  source")
            && stdout.contains("cannot reach the storage endpoint")
            && stdout.contains(&dead),
        "{stdout}"
    );
    assert!(
        stdout.contains("FAIL  results") && stdout.contains("container `no-such-results` does not exist"),
        "{stdout}"
    );
    assert!(text(&out.stderr).contains("2 of the checks failed"), "{}", text(&out.stderr));
    assert!(!stdout.contains(EMULATOR_KEY) && !stdout.contains("SharedKey"), "{stdout}");
}

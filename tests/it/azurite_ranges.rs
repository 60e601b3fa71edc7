//! Parquet on blob is read with ranged GETs: the footer with one read of the tail, then only the
//! column chunks the scan needs, of only the row groups the window keeps. Bytes are counted
//! twice: by the reader, and on the wire by a proxy in front of Azurite.

use std::sync::Arc;
use std::time::Duration;

use arrow_array::{ArrayRef, Int32Array, RecordBatch, StringArray, TimestampMicrosecondArray};
use parquet::arrow::ArrowWriter;
use parquet::file::properties::WriterProperties;
use parquet::file::reader::{FileReader, SerializedFileReader};
use rayon::iter::{ParallelBridge, ParallelIterator};
use telemetry_hunt::azure::{Azure, BlobLocation, IdentityKind, IdentitySettings, Transport};
use telemetry_hunt::config::Config;
use telemetry_hunt::source::blob::{BlobLayout, BlobReader};
use telemetry_hunt::source::{plan_local, ScanOptions, ScanStats};
use telemetry_hunt::time::Day;

use crate::azurite_support::{azurite_url, container_client, create_container, unique, upload, Proxy};

const ROWS: usize = 40_000;
const ROWS_PER_GROUP: usize = 5_000;
/// The read of the tail that holds the footer (the reader's guess; this footer is smaller).
const FOOTER_READ: u64 = 64 * 1024;

/// splitmix64: incompressible filler, so the columns the scan skips really are most of the file.
fn noise(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e3779b97f4a7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58476d1ce4e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d049bb133111eb);
    x ^ (x >> 31)
}

/// Two days of events, sorted by time, in row groups of 5,000, with wide columns nobody reads.
fn wide_file(first: Day) -> Vec<u8> {
    let start = first.start_micros();
    let step = 2 * 86_400_000_000 / ROWS as i64;
    let micros: Vec<i64> = (0..ROWS).map(|i| start + i as i64 * step).collect();
    let text = |f: &dyn Fn(usize) -> String| -> ArrayRef { Arc::new(StringArray::from_iter_values((0..ROWS).map(f))) };
    let hosts =
        ["winatp-gw-weu.microsoft.com", "www.contoso.com", "us-v20.events.data.microsoft.com", "login.live.com"];
    let columns: Vec<(&str, ArrayRef)> = vec![
        ("Timestamp", Arc::new(TimestampMicrosecondArray::from(micros).with_timezone("UTC"))),
        ("DeviceId", text(&|i| format!("device-{:04}", i % 700))),
        ("DeviceName", text(&|i| format!("ws-{:04}.contoso.local", i % 700))),
        ("ActionType", text(&|i| if i % 9 == 0 { "ConnectionFailed" } else { "ConnectionSuccess" }.to_string())),
        ("RemoteUrl", text(&|i| hosts[i % hosts.len()].to_string())),
        ("RemoteIP", text(&|i| format!("20.{}.{}.{}", i % 250, (i / 250) % 250, i % 7))),
        ("RemotePort", Arc::new(Int32Array::from_iter_values((0..ROWS).map(|i| if i % 13 == 0 { 80 } else { 443 })))),
        ("InitiatingProcessFileName", text(&|i| ["MsSense.exe", "svchost.exe", "chrome.exe"][i % 3].to_string())),
        ("AdditionalFields", text(&|i| (0..12).map(|k| format!("{:016x}", noise((i * 12 + k) as u64))).collect())),
        (
            "InitiatingProcessCommandLine",
            text(&|i| format!("\"svchost.exe\" -k netsvcs -p -s {:016x}", noise(i as u64))),
        ),
        ("LocalIP", text(&|i| format!("10.{}.{}.{}", i % 200, (i / 200) % 200, noise(i as u64) % 250))),
    ];
    let batch = RecordBatch::try_from_iter(columns).unwrap();
    let properties = WriterProperties::builder().set_max_row_group_row_count(Some(ROWS_PER_GROUP)).build();
    let mut bytes = Vec::new();
    let mut writer = ArrowWriter::try_new(&mut bytes, batch.schema(), Some(properties)).unwrap();
    writer.write(&batch).unwrap();
    writer.close().unwrap();
    bytes
}

/// The bytes of the column chunks of `columns`, in the row groups `keep` selects, from the
/// file's own metadata: what a reader that fetches nothing else must fetch.
fn needed_bytes(file: &[u8], columns: &[&str], keep: impl Fn(usize) -> bool) -> (u64, usize) {
    let reader = SerializedFileReader::new(bytes::Bytes::copy_from_slice(file)).unwrap();
    let metadata = reader.metadata();
    let mut total = 0;
    let mut chunks = 0;
    for (i, group) in metadata.row_groups().iter().enumerate().filter(|(i, _)| keep(*i)) {
        let _ = i;
        for column in group.columns() {
            if columns.contains(&column.column_path().string().as_str()) {
                total += column.byte_range().1;
                chunks += 1;
            }
        }
    }
    (total, chunks)
}

fn scan(reader: &BlobReader, window: (Day, Day), options: &ScanOptions) -> (ScanStats, usize) {
    let plan = reader.plan(Some(window), options).unwrap();
    let units = plan.units.len();
    let stats = reader
        .fetch(plan.units, options)
        .par_bridge()
        .map(|fetched| {
            let (unit, bytes) = fetched.unwrap();
            unit.scan_fetched(bytes, options, &mut |_| {}).unwrap()
        })
        .reduce(ScanStats::default, |a, b| a.merge(b, 0));
    (stats.merge(ScanStats { row_groups_pruned: plan.row_groups_pruned, ..Default::default() }, 0), units)
}

#[test]
fn the_parquet_reader_fetches_only_the_needed_column_chunks() {
    let endpoint = azurite_url();
    let container = unique("ranges");
    create_container(&endpoint, &container, None);
    let first = Day::parse("2026-11-20").unwrap();
    let file = wide_file(first);
    upload(&container_client(&endpoint, &container, None), &[("export/events.parquet".to_string(), file.clone())]);

    let port: u16 = endpoint.rsplit(':').next().unwrap().split('/').next().unwrap().parse().unwrap();
    let proxy = Proxy::start(port);
    let identity = IdentitySettings {
        kind: IdentityKind::Emulator,
        client_id: None,
        tenant_id: None,
        max_retries: 1,
        retry_timeout: Duration::from_secs(5),
    };
    let transport = Transport {
        max_retries: 1,
        retry_timeout: Duration::from_secs(5),
        connect_timeout: Duration::from_secs(5),
        request_timeout: Duration::from_secs(60),
    };
    let azure = Azure::start(&identity, &transport).unwrap();
    let location = BlobLocation {
        account: "devstoreaccount1".into(),
        endpoint: proxy.url("http"),
        container,
        prefix: String::new(),
    };
    let settings = Config::default().validate().unwrap();
    let options = ScanOptions {
        window: None,
        time_column: settings.time_column,
        matcher: Arc::new(settings.hosts.clone()),
        reject_samples: 5,
        columns: telemetry_hunt::hunt::aggregate::needed_columns(&settings),
        limits: settings.limits,
    };
    let mut columns: Vec<&str> = options.columns.clone();
    columns.push("Timestamp");
    // DeviceName is read (the findings name their devices); the wide columns are not
    assert!(!columns.contains(&"AdditionalFields") && !columns.contains(&"LocalIP") && !columns.contains(&"LocalPort"));

    // both days: every row group, needed columns only
    let reader = BlobReader::new(azure.container(&location).unwrap(), BlobLayout::Auto, azure.identity.clone());
    let wire_before = proxy.bytes_down();
    let window = (first, first.next());
    let (stats, units) = scan(&reader, window, &ScanOptions { window: Some(window), ..options.clone() });
    let wire = proxy.bytes_down() - wire_before;
    let fetched = reader.bytes_fetched();
    let (needed, chunks) = needed_bytes(&file, &columns, |_| true);
    let size = file.len() as u64;
    println!(
        "both days: fetched {fetched} of {size} bytes ({:.1}%): footer read {FOOTER_READ} + {chunks} column chunks {needed}; {wire} bytes on the wire",
        100.0 * fetched as f64 / size as f64
    );
    assert_eq!(units, ROWS / ROWS_PER_GROUP);
    assert_eq!(stats.rows_scanned, ROWS as u64);
    assert_eq!(fetched, FOOTER_READ + needed, "the footer and the needed chunks, nothing else");
    assert!(wire >= fetched && wire < fetched + 64 * 1024, "HTTP adds only headers: {wire} on the wire for {fetched}");
    assert!(fetched * 3 < size, "the unread columns are most of the file");

    // the same rows as a local scan of the file
    let local = tempfile::tempdir().unwrap();
    std::fs::write(local.path().join("events.parquet"), &file).unwrap();
    let local_options = ScanOptions { window: Some(window), ..options.clone() };
    let local_plan = plan_local(&[local.path().to_path_buf()], &local_options).unwrap();
    let local_stats = local_plan
        .units
        .iter()
        .map(|u| u.scan(&local_options, &mut |_| {}).unwrap())
        .fold(ScanStats::default(), |a, b| a.merge(b, 0));
    assert_eq!(stats.rows_per_day, local_stats.rows_per_day);

    // the second day only: the first day's row groups are pruned by their statistics and not read
    let reader = BlobReader::new(azure.container(&location).unwrap(), BlobLayout::Auto, azure.identity.clone());
    let window = (first.next(), first.next());
    let (stats, units) = scan(&reader, window, &ScanOptions { window: Some(window), ..options });
    let groups = ROWS / ROWS_PER_GROUP;
    let (needed, chunks) = needed_bytes(&file, &columns, |group| group >= groups / 2);
    let fetched = reader.bytes_fetched();
    println!(
        "second day: fetched {fetched} of {size} bytes: footer read {FOOTER_READ} + {chunks} column chunks {needed}"
    );
    assert_eq!(units, groups / 2);
    assert_eq!(stats.row_groups_pruned, (groups / 2) as u64);
    assert_eq!(fetched, FOOTER_READ + needed);
}

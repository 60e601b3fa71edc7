//! Sentinel delivery through the Logs Ingestion API, against a local server that checks every
//! call (path, api-version, bearer token, gzip, a JSON array of declared columns, ≤ 1 MB) and
//! scripts the failures: 413, 429 with Retry-After, 5xx, a dropped connection, a slow answer,
//! refusals. The outbox in the results store is what carries undelivered batches over.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Map, Value};
use telemetry_hunt::azure::http::AzureClient;
use telemetry_hunt::sink::local::LocalDir;
use telemetry_hunt::sink::sentinel::{default_stream, Delivery, Ingestion, Outbox, Sentinel};
use telemetry_hunt::sink::tables::*;
use telemetry_hunt::sink::{Cell, Table};
use telemetry_hunt::time::Day;

use crate::azure_fakes::ingestion::{declared_streams, IngestionFake, LIMIT};
use crate::azure_fakes::{sentinel_section, Fault, StaticToken, DCR};

const RUN: &str = "20261103T020000Z-abcdef";
const NOW: i64 = 1_793_700_000_000_000;

struct Harness {
    fake: IngestionFake,
    runtime: tokio::runtime::Runtime,
    store: tempfile::TempDir,
}

impl Harness {
    fn new() -> Harness {
        Harness {
            fake: IngestionFake::start(DCR, declared_streams()),
            runtime: tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap(),
            store: tempfile::tempdir().unwrap(),
        }
    }

    fn sentinel(&self, extra: &str) -> Arc<Sentinel> {
        let config = sentinel_section(&self.fake.server.url(), extra);
        let settings =
            telemetry_hunt::config::Config::from_toml(&config).unwrap().validate().unwrap().sentinel.unwrap();
        let client = AzureClient::new(Arc::new(StaticToken::default())).unwrap();
        let outbox = Outbox::new(Arc::new(LocalDir::new(self.store.path())));
        Arc::new(Sentinel::new(Ingestion::new(settings, client), outbox))
    }

    fn deliver(&self, sentinel: &Arc<Sentinel>, tables: Vec<Table>, earlier_first: bool) -> Delivery {
        self.runtime.block_on(sentinel.deliver(RUN, tables, earlier_first, NOW))
    }

    fn outbox(&self) -> Vec<String> {
        Outbox::new(Arc::new(LocalDir::new(self.store.path()))).pending().unwrap().into_iter().map(|i| i.path).collect()
    }
}

fn day() -> Day {
    Day::parse("2026-11-02").unwrap()
}

/// A processes table of `n` rows of about 330 bytes of JSON each.
fn processes(n: usize) -> Table {
    let mut table = Table::new(PROCESSES, PROCESSES_COLUMNS);
    for i in 0..n {
        table.push(vec![
            Cell::Day(day()),
            Cell::from(format!("host-{}.events.data.microsoft.com", i % 50)),
            Cell::from(format!("process-{i}.exe")),
            Cell::from(format!(r"c:\program files\vendor {}\bin\process-{i}.exe", i % 7)),
            Cell::from("Contoso Ltd"),
            Cell::Int(1 + (i % 9) as i64),
            Cell::Int(10 + i as i64),
            Cell::Bool(i % 3 == 0),
            Cell::from(if i % 3 == 0 { "allow-list:x.exe" } else { "" }),
        ]);
    }
    table
}

fn daily_table() -> Table {
    let mut table = Table::new(DAILY, DAILY_COLUMNS);
    for (action, n) in [("ConnectionSuccess", 120), ("ConnectionFailed", 7), ("ConnectionAttempt", 33)] {
        table.push(vec![Cell::Day(day()), action.into(), Cell::Int(n), Cell::Int(n * 4), "kql".into()]);
    }
    table
}

/// The rows Sentinel must get for `table`: its JSON lines with EventTime (the send time, `NOW`),
/// RunId, and Day as a datetime.
fn expected(table: &Table) -> Vec<Map<String, Value>> {
    table
        .to_json_rows()
        .into_iter()
        .map(|mut row| {
            row.insert("EventTime".into(), Value::from("2026-11-03T10:00:00.000000Z"));
            if let Some(Value::String(day)) = row.get_mut("Day") {
                day.push_str("T00:00:00Z");
            }
            row.entry("RunId".to_string()).or_insert(Value::from(RUN));
            row
        })
        .collect()
}

fn sorted(mut rows: Vec<Map<String, Value>>) -> Vec<Map<String, Value>> {
    rows.sort_by_key(|r| serde_json::to_string(r).unwrap());
    rows
}

fn received(h: &Harness, table: &str) -> Vec<Map<String, Value>> {
    h.fake.rows().remove(&default_stream(table)).unwrap_or_default()
}

#[test]
fn batches_are_gzip_json_arrays_of_at_most_1mb_and_every_row_arrives_once() {
    let h = Harness::new();
    let sentinel = h.sentinel("");
    let (big, small) = (processes(12_000), daily_table());
    let delivery = h.deliver(&sentinel, vec![big.clone(), small.clone()], true);
    assert!(delivery.complete(), "{delivery:?}");
    assert_eq!((delivery.rows, delivery.failed_batches, delivery.outbox_left), (12_003, 0, 0));
    assert_eq!(sorted(received(&h, PROCESSES)), sorted(expected(&big)));
    assert_eq!(sorted(received(&h, DAILY)), sorted(expected(&small)));
    let calls = h.fake.calls();
    let processes_calls: Vec<_> = calls.iter().filter(|c| c.stream == default_stream(PROCESSES)).collect();
    assert_eq!(delivery.batches as usize, calls.len());
    assert!(processes_calls.len() >= 4, "about 4 MB of JSON: {} calls", processes_calls.len());
    // full batches: all but the last carry more than 99% of the limit
    let mut sizes: Vec<usize> = processes_calls.iter().map(|c| c.bytes).collect();
    sizes.sort_unstable();
    assert!(sizes[1..].iter().all(|&s| s > LIMIT * 99 / 100 && s <= LIMIT), "{sizes:?}");
    assert!(processes_calls.iter().all(|c| c.body.len() < c.bytes / 3), "gzip pays off");
    assert_eq!(h.fake.violations(), Vec::<String>::new());
    assert_eq!(h.outbox(), Vec::<String>::new());
}

/// Batches travel `max_in_flight` at a time, never more.
#[test]
fn several_batches_travel_at_once_within_the_bound() {
    let h = Harness::new();
    h.fake.state.lock().unwrap().latency = Duration::from_millis(150);
    let sentinel = h.sentinel("max_in_flight = 3\nmax_batch_bytes = 20000");
    let table = processes(600);
    let delivery = h.deliver(&sentinel, vec![table.clone()], true);
    assert!(delivery.complete() && delivery.batches >= 9, "{delivery:?}");
    assert_eq!(h.fake.server.peak_in_flight(), 3);
    assert_eq!(sorted(received(&h, PROCESSES)), sorted(expected(&table)));
}

#[test]
fn a_413_splits_the_batch_until_it_fits() {
    let h = Harness::new();
    h.fake.state.lock().unwrap().max_accepted = 300_000;
    let sentinel = h.sentinel("");
    let table = processes(3_000);
    let delivery = h.deliver(&sentinel, vec![table.clone()], true);
    assert!(delivery.complete(), "{delivery:?}");
    assert_eq!(sorted(received(&h, PROCESSES)), sorted(expected(&table)));
    let calls = h.fake.calls();
    assert!(calls.iter().any(|c| c.status == 413));
    assert!(calls.iter().filter(|c| c.status == 204).all(|c| c.bytes <= 300_000));
    assert_eq!(delivery.rows, 3_000);
    assert_eq!(h.outbox(), Vec::<String>::new(), "the halves replaced the batch in the outbox, then went");
    assert_eq!(h.fake.violations(), Vec::<String>::new());
}

#[test]
fn throttling_server_errors_and_dropped_connections_are_retried() {
    let h = Harness::new();
    for fault in [Fault::throttled("1"), Fault::status(500), Fault::Cut] {
        h.fake.push_fault(fault);
    }
    let sentinel = h.sentinel("max_attempts = 4\nmax_in_flight = 1");
    let table = daily_table();
    let delivery = h.deliver(&sentinel, vec![table.clone()], true);
    assert!(delivery.complete(), "{delivery:?}");
    assert_eq!(sorted(received(&h, DAILY)), sorted(expected(&table)), "once, despite three failed attempts");
    let calls = h.fake.calls();
    let statuses: Vec<u16> = calls.iter().map(|c| c.status).collect();
    assert_eq!(statuses, [429, 500, 503, 204]);
    assert!(calls[1].at - calls[0].at >= Duration::from_secs(1), "Retry-After: 1 was honoured");
}

/// A call that outlives the timeout may still have landed: the batch is sent again, and the
/// copies are identical, so the workbook's dedupe by grain (or RunId) removes them.
#[test]
fn a_slow_answer_past_the_timeout_is_sent_again_and_the_copies_are_identical() {
    let h = Harness::new();
    h.fake.push_fault(Fault::Slow(Duration::from_secs(3)));
    let sentinel = h.sentinel("timeout_secs = 1");
    let table = daily_table();
    let delivery = h.deliver(&sentinel, vec![table.clone()], true);
    assert!(delivery.complete(), "{delivery:?}");
    let got = received(&h, DAILY);
    assert_eq!(got.len(), 6);
    assert_eq!(sorted(got[..3].to_vec()), sorted(got[3..].to_vec()));
    assert_eq!(sorted(got[..3].to_vec()), sorted(expected(&table)));
}

#[test]
fn a_row_too_big_for_one_call_fails_with_its_key_and_the_rest_is_sent() {
    let h = Harness::new();
    let sentinel = h.sentinel("");
    let mut findings = Table::new(FINDINGS, FINDINGS_COLUMNS);
    for (id, description) in
        [("f-small", "ok".to_string()), ("f-big", "x".repeat(LIMIT + 10)), ("f-other", "ok".into())]
    {
        let mut row = vec![Cell::Null; FINDINGS_COLUMNS.len()];
        row[0] = Cell::Day(day());
        row[1] = id.into();
        row[23] = Cell::from(description);
        findings.push(row);
    }
    let delivery = h.deliver(&sentinel, vec![findings], true);
    assert!(!delivery.complete());
    assert_eq!((delivery.unsendable_rows, delivery.rows, delivery.failed_batches), (1, 2, 0));
    assert!(
        delivery.errors[0].contains("MdeTelemetryFindings (FindingId=\"f-big\")")
            && delivery.errors[0].contains("1000000"),
        "{:?}",
        delivery.errors
    );
    let ids: Vec<Value> = received(&h, FINDINGS).iter().map(|r| r["FindingId"].clone()).collect();
    assert_eq!(ids, [Value::from("f-small"), Value::from("f-other")]);
    let error = telemetry_hunt::sink::sentinel::DeliveryError::from(&delivery).to_string();
    assert!(error.contains("1 row(s) are too large to send at all"), "{error}");
}

/// A refusal fails the batches, which stay in the outbox; the next delivery sends them first.
#[test]
fn refused_batches_stay_in_the_outbox_and_go_first_next_time() {
    let h = Harness::new();
    h.fake.state.lock().unwrap().forbidden = true;
    let sentinel = h.sentinel("max_batch_bytes = 20000");
    let table = processes(400);
    let delivery = h.deliver(&sentinel, vec![table.clone()], true);
    assert!(!delivery.complete());
    assert_eq!(delivery.batches, 0);
    assert_eq!(delivery.failed_batches, delivery.outbox_left);
    assert!(delivery.outbox_left >= 6, "{delivery:?}");
    assert_eq!(delivery.failed_rows, 400);
    assert!(
        delivery.errors[0]
            .contains(&format!("grant Monitoring Metrics Publisher on the DCR {DCR} to the job's identity")),
        "{:?}",
        delivery.errors
    );
    let left = h.outbox();
    assert_eq!(left.len() as u64, delivery.outbox_left);
    let bodies: Vec<Vec<u8>> = left.iter().map(|p| std::fs::read(h.store.path().join(p)).unwrap()).collect();

    // the role is granted; a later run (another id) sends the leftovers before its own rows
    h.fake.state.lock().unwrap().forbidden = false;
    let before = h.fake.calls().len();
    let later = h.sentinel("max_batch_bytes = 20000\nmax_in_flight = 1");
    let own = daily_table();
    let delivery = h.runtime.block_on(later.deliver("20261104T020000Z-123456", vec![own.clone()], true, NOW));
    assert!(delivery.complete(), "{delivery:?}");
    assert_eq!(delivery.resent_batches as usize, left.len());
    assert_eq!(delivery.resent_rows, 400);
    let calls = h.fake.calls();
    let sent: Vec<&Vec<u8>> = calls[before..].iter().filter(|c| c.status == 204).map(|c| &c.body).collect();
    assert_eq!(sent[..left.len()], bodies.iter().collect::<Vec<_>>()[..], "the outbox goes first, byte for byte");
    assert_eq!(sorted(received(&h, PROCESSES)), sorted(expected(&table)));
    assert_eq!(received(&h, DAILY).len(), 3);
    assert_eq!(h.outbox(), Vec::<String>::new());
}

#[test]
fn check_posts_an_empty_array_to_every_stream_and_says_what_to_fix() {
    let h = Harness::new();
    let run = |h: &Harness| {
        let config = sentinel_section(&h.fake.server.url(), "");
        let settings = telemetry_hunt::config::Config::from_toml(&config).unwrap().validate().unwrap();
        let credential: Arc<dyn azure_core::credentials::TokenCredential> = Arc::new(StaticToken::default());
        telemetry_hunt::job::probe_endpoints(&settings, Some(&credential))
    };
    let lines = run(&h);
    assert_eq!(lines.len(), 5);
    assert!(lines.iter().all(|l| l.as_ref().is_ok_and(|l| l.contains("accepts rows"))), "{lines:?}");
    assert!(h.fake.calls().iter().all(|c| c.rows == 0 && c.status == 204));

    let missing = default_stream(FINDINGS);
    h.fake.state.lock().unwrap().streams.remove(&missing);
    let lines = run(&h);
    let err = lines[3].as_ref().unwrap_err();
    assert!(
        err.contains("HTTP 404") && err.contains(&missing) && err.contains("redeploy the DCR from infra/"),
        "{err}"
    );
    assert!(lines[0].is_ok());

    h.fake.state.lock().unwrap().forbidden = true;
    let err = run(&h)[0].clone().unwrap_err();
    assert!(err.contains("HTTP 403") && err.contains("grant Monitoring Metrics Publisher on the DCR"), "{err}");

    h.fake.state.lock().unwrap().audience = "https://monitor.azure.us".into();
    let err = run(&h)[0].clone().unwrap_err();
    assert!(err.contains("HTTP 401") && err.contains("https://monitor.azure.com"), "{err}");
    assert!(!err.contains("secret"), "no token in messages: {err}");
}

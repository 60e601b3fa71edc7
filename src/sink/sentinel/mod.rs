//! Sentinel custom tables through the Logs Ingestion API
//! (`POST {endpoint}/dataCollectionRules/{immutableId}/streams/Custom-<Table>_CL?api-version=2023-01-01`).
//!
//! The results store is written first; Sentinel second, through the [`outbox`]: each batch (a
//! JSON array of at most 1,000,000 bytes, gzipped) is recorded before it is sent and removed
//! after Sentinel's 204. What earlier runs left is sent first. A 413 splits the batch; 429 and
//! 5xx are retried (honouring `Retry-After`) by [`crate::azure::http`]; any other answer fails
//! the batch, which stays in the outbox for the next run. Several batches travel at once.

pub mod outbox;
pub mod rows;

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use reqwest::header::{HeaderValue, CONTENT_ENCODING, CONTENT_TYPE};
use reqwest::{StatusCode, Url};
use serde_json::value::RawValue;
use tokio::task::JoinSet;

pub use outbox::{Item, Outbox};

use crate::azure::http::{self, AzureClient, Call, RetryPolicy, MONITOR_SCOPE};
use crate::sink::tables::TABLES;
use crate::sink::Table;

pub const API_VERSION: &str = "2023-01-01";
/// The most uncompressed JSON one call may carry (the limit the official SDKs keep to).
pub const MAX_BATCH_BYTES: usize = 1_000_000;
/// How many delivery errors the run record keeps.
const KEEP_ERRORS: usize = 20;

/// The validated `[sentinel]` settings.
#[derive(Debug, Clone, PartialEq)]
pub struct SentinelSettings {
    /// The DCR's logs ingestion endpoint, or a data collection endpoint (DCE).
    pub endpoint: Url,
    pub dcr_immutable_id: String,
    /// Table → stream, for every table of [`TABLES`].
    pub streams: BTreeMap<String, String>,
    pub max_in_flight: usize,
    pub max_batch_bytes: usize,
    pub retry: RetryPolicy,
}

impl SentinelSettings {
    /// The stream a table goes to: `Custom-<Table>_CL` unless configured otherwise.
    pub fn stream(&self, table: &str) -> String {
        self.streams.get(table).cloned().unwrap_or_else(|| default_stream(table))
    }

    pub fn stream_url(&self, stream: &str) -> Url {
        let mut url = self.endpoint.clone();
        url.path_segments_mut().expect("validated as an http(s) URL").pop_if_empty().extend([
            "dataCollectionRules",
            &self.dcr_immutable_id,
            "streams",
            stream,
        ]);
        url.set_query(Some(&format!("api-version={API_VERSION}")));
        url
    }

    pub fn describe(&self, stream: &str) -> String {
        format!("Logs Ingestion stream {stream} of DCR {} ({})", self.dcr_immutable_id, self.endpoint)
    }
}

pub fn default_stream(table: &str) -> String {
    format!("Custom-{table}_CL")
}

/// What a delivery did, for the run record.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Delivery {
    /// Batches and rows Sentinel acknowledged (204) in this run, earlier runs' included.
    pub batches: u64,
    pub rows: u64,
    /// Of those, the batches and rows earlier runs had left in the outbox.
    pub resent_batches: u64,
    pub resent_rows: u64,
    /// Batches (and their rows) not acknowledged; they stay in the outbox.
    pub failed_batches: u64,
    pub failed_rows: u64,
    /// Rows that can never be sent (larger than one call), named in `errors`.
    pub unsendable_rows: u64,
    /// Batches that could not be recorded in the outbox, so were not sent.
    pub unrecorded_batches: u64,
    /// Batches waiting in the outbox after this delivery.
    pub outbox_left: u64,
    pub errors: Vec<String>,
    /// This delivery's own batches left in the outbox.
    pub left: Vec<Item>,
}

impl Delivery {
    pub fn complete(&self) -> bool {
        self.failed_batches == 0 && self.unsendable_rows == 0 && self.unrecorded_batches == 0
    }

    fn error(&mut self, message: String) {
        // Kept in the run record and the outbox: an endpoint may echo a token in its answer.
        let message = crate::redact::redacted(&message);
        tracing::error!(error = %message, "Sentinel delivery problem.");
        if self.errors.len() < KEEP_ERRORS {
            self.errors.push(message);
        }
    }

    /// Adds a later delivery of the same run.
    pub fn absorb(&mut self, other: Delivery) {
        self.batches += other.batches;
        self.rows += other.rows;
        self.resent_batches += other.resent_batches;
        self.resent_rows += other.resent_rows;
        self.failed_batches += other.failed_batches;
        self.failed_rows += other.failed_rows;
        self.unsendable_rows += other.unsendable_rows;
        self.unrecorded_batches += other.unrecorded_batches;
        self.outbox_left = other.outbox_left;
        for e in other.errors {
            if self.errors.len() < KEEP_ERRORS {
                self.errors.push(e);
            }
        }
        self.left.extend(other.left);
    }
}

/// A delivery that left something behind; the run fails with it (exit code 1).
#[derive(Debug, thiserror::Error)]
#[error("Sentinel did not acknowledge {failed_batches} batch(es) ({failed_rows} rows); {outbox_left} batch(es) wait in the outbox of the results store for the next run{unsendable}; first error: {first_error}")]
pub struct DeliveryError {
    pub failed_batches: u64,
    pub failed_rows: u64,
    pub outbox_left: u64,
    pub unsendable: String,
    pub first_error: String,
}

impl From<&Delivery> for DeliveryError {
    fn from(d: &Delivery) -> DeliveryError {
        DeliveryError {
            failed_batches: d.failed_batches + d.unrecorded_batches,
            failed_rows: d.failed_rows,
            outbox_left: d.outbox_left,
            unsendable: if d.unsendable_rows > 0 {
                format!("; {} row(s) are too large to send at all", d.unsendable_rows)
            } else {
                String::new()
            },
            first_error: d.errors.first().cloned().unwrap_or_default(),
        }
    }
}

/// A batch on its way.
struct Job {
    item: Item,
    /// The gzip body, when already in memory.
    body: Option<Bytes>,
    /// From an earlier run's outbox.
    earlier: bool,
}

enum JobResult {
    Delivered {
        rows: u64,
        earlier: bool,
    },
    Split(Vec<Job>),
    Failed {
        rows: u64,
        error: String,
        item: Item,
    },
    /// The object was gone (another delivery took it): nothing to do.
    Gone,
}

/// The Logs Ingestion API of one DCR: what `check` probes and what a delivery sends through.
pub struct Ingestion {
    pub settings: SentinelSettings,
    client: AzureClient,
}

/// The Sentinel destination of one run: the API and the outbox in the results store.
pub struct Sentinel {
    ingestion: Ingestion,
    outbox: Outbox,
    /// Numbers this run's outbox objects, across every delivery of the run.
    sequence: AtomicUsize,
}

/// Runs store calls (which may block) off the tokio workers.
async fn blocking<R: Send + 'static>(work: impl FnOnce() -> R + Send + 'static) -> R {
    tokio::task::spawn_blocking(work).await.expect("store calls do not panic")
}

impl Ingestion {
    pub fn new(settings: SentinelSettings, client: AzureClient) -> Ingestion {
        Ingestion { settings, client }
    }

    async fn post(&self, stream: &str, gzip: Bytes) -> Result<http::Answer, http::HttpError> {
        let url = self.settings.stream_url(stream);
        let endpoint = self.settings.describe(stream);
        let headers = [
            (CONTENT_TYPE, HeaderValue::from_static("application/json")),
            (CONTENT_ENCODING, HeaderValue::from_static("gzip")),
        ];
        self.client
            .post(Call {
                endpoint: &endpoint,
                url: &url,
                scope: MONITOR_SCOPE,
                headers: &headers,
                body: gzip,
                retry_on: http::transient,
                max_answer_bytes: 1 << 20,
                policy: &self.settings.retry,
            })
            .await
    }

    /// The fix in words for a refused call.
    pub fn hint(&self, status: StatusCode, message: &str, stream: &str) -> String {
        let dcr = &self.settings.dcr_immutable_id;
        let lower = message.to_ascii_lowercase();
        let hint = match status.as_u16() {
            401 => "the token was refused: tokens for the Logs Ingestion API must be issued for https://monitor.azure.com to the job's identity".to_string(),
            403 => format!("grant Monitoring Metrics Publisher on the DCR {dcr} to the job's identity (new role assignments can take up to 30 minutes)"),
            404 => format!("the stream {stream} or the DCR {dcr} is not known at {}: check `dcr_immutable_id` (the DCR's immutableId, dcr-…) and `endpoint` (the DCR's logs ingestion endpoint or its DCE), and redeploy the DCR from infra/ so that it declares {stream}", self.settings.endpoint),
            400 if lower.contains("stream") => format!("the stream {stream} is not declared in DCR {dcr} as the job sends it: redeploy the DCR from infra/"),
            400 => format!("the rows do not match the stream declaration of {stream} in DCR {dcr}: redeploy the DCR from infra/ for this version of the job"),
            _ => String::new(),
        };
        if hint.is_empty() {
            hint
        } else {
            format!(" — {hint}")
        }
    }

    /// `check`: posts an empty array to every stream. One line per stream.
    pub async fn probe(&self) -> Vec<Result<String, String>> {
        let mut out = Vec::new();
        let streams: Vec<String> = TABLES.iter().map(|t| self.settings.stream(t.name)).collect();
        for stream in streams {
            let endpoint = self.settings.describe(&stream);
            out.push(match self.post(&stream, Bytes::from(rows::gzip(b"[]"))).await {
                Ok(answer) if answer.status == StatusCode::NO_CONTENT => Ok(format!("{endpoint}: accepts rows")),
                Ok(answer) => {
                    let message = http::api_message(&answer.body);
                    let hint = self.hint(answer.status, &message, &stream);
                    Err(format!("{endpoint}: HTTP {}: {message}{hint}", answer.status.as_u16()))
                }
                Err(e) => Err(e.to_string()),
            });
        }
        out
    }
}

impl Sentinel {
    pub fn new(ingestion: Ingestion, outbox: Outbox) -> Sentinel {
        Sentinel { ingestion, outbox, sequence: AtomicUsize::new(0) }
    }

    pub fn settings(&self) -> &SentinelSettings {
        &self.ingestion.settings
    }

    /// Sends `tables` (and, with `earlier_first`, whatever earlier runs left in the outbox,
    /// before them). Never fails as a whole: what it could not do is in the [`Delivery`].
    pub async fn deliver(
        self: &Arc<Self>,
        run_id: &str,
        tables: Vec<Table>,
        earlier_first: bool,
        now: i64,
    ) -> Delivery {
        let mut delivery = Delivery::default();
        let mut queue: VecDeque<Job> = VecDeque::new();
        if earlier_first {
            let outbox = self.outbox.clone();
            match blocking(move || outbox.pending()).await {
                Ok(items) => queue.extend(items.into_iter().filter(|i| i.run_id != run_id).map(|item| Job {
                    item,
                    body: None,
                    earlier: true,
                })),
                Err(e) => delivery.error(format!("cannot list the outbox: {e}")),
            }
            if !queue.is_empty() {
                tracing::info!(batches = queue.len(), "Sending what earlier runs left in the outbox first.");
            }
        }
        let max = self.ingestion.settings.max_batch_bytes;
        for table in &tables {
            let (batches, too_big) = rows::batches(rows::rows(table, run_id, now), max);
            for (key, size) in too_big {
                delivery.unsendable_rows += 1;
                delivery.error(format!(
                    "row {key} is {size} bytes of JSON, more than the {max} one Logs Ingestion call takes; it was not sent"
                ));
            }
            for batch in batches {
                let item = Outbox::item(run_id, table.name, self.sequence.fetch_add(1, Ordering::Relaxed));
                let body = Bytes::from(rows::gzip(&rows::json_array(batch.iter().map(|r| r.json.as_slice()))));
                let (outbox, recorded, copy) = (self.outbox.clone(), item.clone(), body.clone());
                match blocking(move || outbox.put(&recorded, copy)).await {
                    Ok(()) => queue.push_back(Job { item, body: Some(body), earlier: false }),
                    Err(e) => {
                        delivery.unrecorded_batches += 1;
                        delivery.failed_rows += batch.len() as u64;
                        delivery.error(format!(
                            "cannot record a batch of {} in the outbox, so it was not sent: {e}",
                            table.name
                        ));
                    }
                }
            }
        }

        let mut running: JoinSet<JobResult> = JoinSet::new();
        loop {
            while running.len() < self.ingestion.settings.max_in_flight.max(1) {
                let Some(job) = queue.pop_front() else { break };
                running.spawn(self.clone().send(job));
            }
            let Some(joined) = running.join_next().await else { break };
            match joined.expect("delivery tasks do not panic") {
                JobResult::Delivered { rows, earlier } => {
                    delivery.batches += 1;
                    delivery.rows += rows;
                    if earlier {
                        delivery.resent_batches += 1;
                        delivery.resent_rows += rows;
                    }
                }
                JobResult::Split(jobs) => {
                    for job in jobs.into_iter().rev() {
                        queue.push_front(job);
                    }
                }
                JobResult::Failed { rows, error, item } => {
                    delivery.failed_batches += 1;
                    delivery.failed_rows += rows;
                    delivery.error(error);
                    if item.run_id == run_id {
                        delivery.left.push(item);
                    }
                }
                JobResult::Gone => {}
            }
        }
        let outbox = self.outbox.clone();
        match blocking(move || outbox.pending()).await {
            Ok(items) => delivery.outbox_left = items.len() as u64,
            Err(e) => delivery.error(format!("cannot list the outbox: {e}")),
        }
        delivery
    }

    async fn send(self: Arc<Self>, job: Job) -> JobResult {
        let Job { item, body, earlier } = job;
        let failed = |rows: u64, error: String, item: &Item| JobResult::Failed { rows, error, item: item.clone() };
        let body = match body {
            Some(body) => body,
            None => {
                let (outbox, wanted) = (self.outbox.clone(), item.clone());
                match blocking(move || outbox.get(&wanted)).await {
                    Ok(Some(body)) => body,
                    Ok(None) => return JobResult::Gone,
                    Err(e) => return failed(0, format!("cannot read {} from the outbox: {e}", item.path), &item),
                }
            }
        };
        let json = match rows::gunzip(&body) {
            Ok(json) => json,
            Err(e) => return failed(0, format!("{} is not gzip ({e}); it was left in the outbox", item.path), &item),
        };
        let rows: Vec<&RawValue> = match serde_json::from_slice(&json) {
            Ok(rows) => rows,
            Err(e) => {
                return failed(0, format!("{} is not a JSON array ({e}); it was left in the outbox", item.path), &item)
            }
        };
        let count = rows.len() as u64;
        let stream = self.ingestion.settings.stream(&item.table);
        // A batch recorded under a larger limit is split before it is sent, like a 413.
        if json.len() > self.ingestion.settings.max_batch_bytes && rows.len() > 1 {
            return self.split(&item, &rows, earlier).await;
        }
        match self.ingestion.post(&stream, body).await {
            Ok(answer) if answer.status == StatusCode::NO_CONTENT => {
                let (outbox, done) = (self.outbox.clone(), item.clone());
                if let Err(e) = blocking(move || outbox.remove(&done)).await {
                    // Delivered, but it will be sent again: the workbook dedupes by grain.
                    tracing::warn!(path = %item.path, error = %e, "A delivered batch could not be removed from the outbox; the next run sends it again.");
                }
                JobResult::Delivered { rows: count, earlier }
            }
            Ok(answer) if answer.status == StatusCode::PAYLOAD_TOO_LARGE && rows.len() > 1 => {
                self.split(&item, &rows, earlier).await
            }
            Ok(answer) if answer.status == StatusCode::PAYLOAD_TOO_LARGE => {
                let key = row_key(&item.table, rows[0]);
                failed(
                    count,
                    format!(
                        "{}: HTTP 413 for the single row {key}; it stays in the outbox",
                        self.ingestion.settings.describe(&stream)
                    ),
                    &item,
                )
            }
            Ok(answer) => {
                let message = http::api_message(&answer.body);
                let hint = self.ingestion.hint(answer.status, &message, &stream);
                failed(
                    count,
                    format!(
                        "{}: HTTP {}: {message}{hint}",
                        self.ingestion.settings.describe(&stream),
                        answer.status.as_u16()
                    ),
                    &item,
                )
            }
            Err(e) => failed(count, e.to_string(), &item),
        }
    }

    /// Replaces a batch in the outbox by its two halves (written before the original goes).
    async fn split(&self, item: &Item, rows: &[&RawValue], earlier: bool) -> JobResult {
        let middle = rows.len() / 2;
        let (first, second) = item.halves();
        let body =
            |part: &[&RawValue]| Bytes::from(rows::gzip(&rows::json_array(part.iter().map(|r| r.get().as_bytes()))));
        let halves = [(first, body(&rows[..middle])), (second, body(&rows[middle..]))];
        let (outbox, whole, written) = (self.outbox.clone(), item.clone(), halves.clone());
        let stored = blocking(move || -> Result<(), crate::sink::store::StoreError> {
            for (half, bytes) in &written {
                outbox.put(half, bytes.clone())?;
            }
            outbox.remove(&whole)
        })
        .await;
        if let Err(e) = stored {
            return JobResult::Failed {
                rows: rows.len() as u64,
                error: format!("cannot split {} in the outbox: {e}", item.path),
                item: item.clone(),
            };
        }
        tracing::info!(path = %item.path, rows = rows.len(), "Split a batch Sentinel found too large.");
        halves.into_iter().map(|(item, body)| Job { item, body: Some(body), earlier }).collect::<Vec<_>>().into()
    }

    /// Replaces this run's outbox copy of `table` (its only batch) with its current rows: the
    /// run record, after its own delivery failed, so the next run sends what really happened.
    pub fn record_again(
        &self,
        item: &Item,
        table: &Table,
        run_id: &str,
        now: i64,
    ) -> Result<(), crate::sink::store::StoreError> {
        let rows = rows::rows(table, run_id, now);
        let body = rows::gzip(&rows::json_array(rows.iter().map(|r| r.json.as_slice())));
        self.outbox.put(item, Bytes::from(body))
    }
}

impl From<Vec<Job>> for JobResult {
    fn from(jobs: Vec<Job>) -> JobResult {
        JobResult::Split(jobs)
    }
}

/// The key of a row, for messages.
fn row_key(table: &str, row: &RawValue) -> String {
    let value: serde_json::Map<String, serde_json::Value> = serde_json::from_str(row.get()).unwrap_or_default();
    rows::key_of(table, &value)
}

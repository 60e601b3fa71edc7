//! One run of the job: take the results store's lock, finish or discard what an earlier run
//! left, plan the sources, scan and hunt in parallel, stage every table per day, run the
//! detectors day by day, then commit tables and findings together with the run record. The run record is written on failure too, saying which
//! stage failed; a failed run commits nothing else. Results store first, Sentinel second: only
//! committed tables are sent, and what Sentinel does not acknowledge waits in the store's outbox.
//!
//! A day is complete when its tables and its findings are committed: its marker
//! `_complete/day=<day>.json` is staged with them. `backfill` skips the days that have it.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use azure_core::credentials::TokenCredential;
use indicatif::{ProgressBar, ProgressStyle};
use rayon::iter::ParallelBridge;
use rayon::prelude::*;

use crate::azure::http::{AzureClient, HttpError};
use crate::azure::storage::ConnectError;
use crate::azure::{Azure, IdentityKind};
use crate::baseline::history::{DayData, History};
use crate::config::Settings;
use crate::detect::{self, Context, Finding};
use crate::hunt::{HuntCounts, Partial};
use crate::sink::blob::BlobStore;
use crate::sink::local::LocalDir;
use crate::sink::lock::{LockError, RunLock};
use crate::sink::results::{day_prefix, ParquetEncoder, Results};
use crate::sink::sentinel::{DeliveryError, Ingestion, Outbox, Sentinel};
use crate::sink::store::{Store, StoreError};
use crate::sink::summary::FindingsSummary;
use crate::sink::tables::{self, RunRecord, FINDINGS, FINDINGS_COLUMNS};
use crate::sink::{commit, Cell, SinkError, Table};
use crate::source::blob::{BlobReader, Fetched};
use crate::source::log_analytics::{
    EventBatch, HostFilter, LogAnalytics, LogAnalyticsSettings, QueryError, QueryText, ScanRequest,
};
use crate::source::{plan_local, LimitExceeded, ScanOptions, ScanStats, SourceError, Unit};
use crate::time::Day;

/// What to run. Blob sources and results come from `settings`; `inputs` and `out` are the local
/// ones, used when `settings` names no blob.
#[derive(Debug, Clone)]
pub struct RunRequest {
    pub inputs: Vec<PathBuf>,
    pub out: PathBuf,
    /// Inclusive UTC days; `None` means every day present in the input.
    pub window: Option<(Day, Day)>,
    pub settings: Settings,
    pub progress: bool,
    /// Signs the Log Analytics and Logs Ingestion calls instead of the configured identity
    /// (tests and embedders); `None` uses `[azure] identity`.
    pub credential: Option<Arc<dyn TokenCredential>>,
}

/// A finished run: the days written, what the terminal shows of them, the run record.
pub struct RunOutcome {
    /// Per day written: ActionType → Connections (distinct devices) under the run's match mode.
    pub connections: BTreeMap<Day, BTreeMap<String, usize>>,
    pub days: Vec<Day>,
    /// What the run found: the counts and the first findings by severity and score (the
    /// findings table holds them all).
    pub findings: FindingsSummary,
    pub record: RunRecord,
    /// Where the results are: a folder or a container URL.
    pub results: String,
    /// Where `report.html` is: a file path or a blob URL.
    pub report: String,
}

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Connect(#[from] ConnectError),
    #[error(transparent)]
    Lock(#[from] LockError),
    #[error(transparent)]
    Source(#[from] SourceError),
    #[error(transparent)]
    Query(#[from] QueryError),
    #[error(transparent)]
    Sink(#[from] SinkError),
    #[error("the detectors could not read their history or write their findings: {0}")]
    Detect(SinkError),
    #[error(
        "no input row falls on any day from {from} to {to}; check the source (or `--from`/`--to`): nothing was written"
    )]
    NoInput { from: Day, to: Day },
    #[error(
        "the input holds no row with a valid time ({rows} row(s) read, {rejected} rejected); check the files given to `--input`: nothing was written"
    )]
    EmptyInput { rows: u64, rejected: u64 },
    #[error("the run could not be committed, so none of its days is visible: {0}")]
    Commit(StoreError),
    #[error("the run is committed, but moving its objects into place stopped; readers already see the whole run and the next run finishes the move: {0}")]
    CommitUnfinished(StoreError),
    #[error("cannot set up the client for the Azure Monitor APIs: {0}")]
    Monitor(String),
    #[error(transparent)]
    Deliver(#[from] DeliveryError),
}

impl RunError {
    /// The stage the run record names: `identity` when no token could be had (the fix is the
    /// identity, not the endpoint that needed the token), else where the run stopped.
    pub fn stage(&self) -> &'static str {
        match self {
            RunError::Connect(ConnectError::Identity(_))
            | RunError::Query(QueryError::Call { source: HttpError::Token { .. }, .. }) => "identity",
            RunError::Connect(_) | RunError::Monitor(_) => "connect",
            RunError::Lock(_) => "lock",
            RunError::Source(_) | RunError::Query(_) | RunError::NoInput { .. } | RunError::EmptyInput { .. } => "read",
            RunError::Sink(_) => "write",
            RunError::Detect(_) => "detect",
            RunError::Commit(_) | RunError::CommitUnfinished(_) => "commit",
            RunError::Deliver(_) => "deliver",
        }
    }
}

/// The Azure side of a run: the I/O runtime and identity (blob), and the HTTP client of the
/// Log Analytics and Logs Ingestion APIs signed by that identity. Exists only when the
/// configuration names something in Azure; it lives as long as the run.
struct AzureSide {
    azure: Azure,
    monitor: Option<AzureClient>,
}

impl AzureSide {
    fn for_settings(
        settings: &Settings,
        credential: Option<&Arc<dyn TokenCredential>>,
    ) -> Result<Option<AzureSide>, RunError> {
        let needs_monitor = settings.log_analytics.is_some() || settings.sentinel.is_some();
        if !needs_monitor && settings.source_blob.is_none() && settings.results_blob.is_none() {
            return Ok(None);
        }
        let azure = Azure::start(&settings.identity, &settings.transport)?;
        let monitor = match needs_monitor {
            false => None,
            true => {
                let credential = match credential {
                    Some(credential) => credential.clone(),
                    None => azure.identity.token_credential().ok_or_else(|| {
                        RunError::Monitor(format!(
                            "the `{}` identity signs only Azurite requests; the Log Analytics and Logs Ingestion APIs need a token: set `azure.identity` to `managed-identity` (or another Entra ID credential)",
                            IdentityKind::Emulator.as_str()
                        ))
                    })?,
                };
                Some(AzureClient::new(credential).map_err(|e| RunError::Monitor(e.to_string()))?)
            }
        };
        Ok(Some(AzureSide { azure, monitor }))
    }

    fn block_on<F: std::future::Future>(&self, future: F) -> F::Output {
        self.azure.handle().block_on(future)
    }

    fn monitor(&self) -> Result<&AzureClient, RunError> {
        self.monitor.as_ref().ok_or_else(|| RunError::Monitor("no Azure Monitor client was set up".into()))
    }
}

/// `check`: probes every Azure Monitor endpoint the settings name (`print 1` on the workspace, an
/// empty array to every Sentinel stream). One line per probe, `Err` with the fix in words.
pub fn probe_endpoints(
    settings: &Settings,
    credential: Option<&Arc<dyn TokenCredential>>,
) -> Vec<Result<String, String>> {
    if settings.log_analytics.is_none() && settings.sentinel.is_none() {
        return Vec::new();
    }
    let side = match AzureSide::for_settings(settings, credential) {
        Ok(Some(side)) => side,
        Ok(None) => return Vec::new(),
        Err(e) => return vec![Err(e.to_string())],
    };
    let client = match side.monitor() {
        Ok(client) => client.clone(),
        Err(e) => return vec![Err(e.to_string())],
    };
    let mut lines = Vec::new();
    if let Some(la) = &settings.log_analytics {
        let source = LogAnalytics::new(la.clone(), client.clone());
        lines.push(side.block_on(source.probe()));
    }
    if let Some(sentinel) = &settings.sentinel {
        let ingestion = Ingestion::new(sentinel.clone(), client);
        lines.extend(side.block_on(ingestion.probe()));
    }
    lines
}

pub fn now_micros() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_micros() as i64)
}

/// `20261203T195110Z-3f9a1c`: sortable by start time, unique across concurrent runs.
pub fn new_run_id(started_at: i64) -> String {
    let day = Day::of_micros(started_at);
    let secs = (started_at - day.start_micros()) / 1_000_000;
    let (y, m, d) = day.ymd();
    let mut noise = (started_at as u64) ^ (u64::from(std::process::id()) << 32);
    // splitmix64 finalizer: spreads the bits of time and pid
    noise = (noise ^ (noise >> 30)).wrapping_mul(0xbf58476d1ce4e5b9);
    noise = (noise ^ (noise >> 27)).wrapping_mul(0x94d049bb133111eb);
    noise ^= noise >> 31;
    format!("{y:04}{m:02}{d:02}T{:02}{:02}{:02}Z-{:06x}", secs / 3600, (secs / 60) % 60, secs % 60, noise & 0xff_ffff)
}

fn progress_bar(total: u64, enabled: bool) -> ProgressBar {
    if !enabled {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(total);
    bar.set_style(
        ProgressStyle::with_template("{spinner} scanning [{bar:30}] {percent:>3}% {elapsed_precise} eta {eta}")
            .expect("static template")
            .progress_chars("=> "),
    );
    bar
}

/// Runs the job. On failure the run record is still written (best effort) and returned.
pub fn run(request: &RunRequest) -> Result<RunOutcome, (RunError, RunRecord)> {
    let started_at = now_micros();
    let run_id = new_run_id(started_at);
    let settings = &request.settings;
    let mut record = RunRecord {
        run_id: run_id.clone(),
        started_at,
        status: "running".into(),
        window: request.window,
        match_mode: settings.match_mode.as_str().into(),
        sources: match (&settings.source_blob, &settings.log_analytics) {
            (Some(source), _) => vec![source.location.url()],
            (None, Some(la)) => {
                vec![format!("{} table {} (pushdown {})", la.describe(), la.table, la.pushdown.as_str())]
            }
            (None, None) => request.inputs.iter().map(|p| p.display().to_string()).collect(),
        },
        scope: scope_json(settings),
        ..Default::default()
    };
    let fail = |error: RunError, record: &mut RunRecord| {
        record.status = "failed".into();
        record.failed_stage = Some(error.stage().into());
        record.error = Some(error.to_string());
        (error, record.clone())
    };
    let side = AzureSide::for_settings(settings, request.credential.as_ref()).map_err(|e| fail(e, &mut record))?;
    let store =
        open_results(settings, &request.out, side.as_ref().map(|s| &s.azure)).map_err(|e| fail(e, &mut record))?;
    let lock = RunLock::acquire(store.clone(), &run_id, settings.lock_ttl).map_err(|e| fail(e.into(), &mut record))?;
    let results = Results::for_run(store.clone(), &run_id);
    let outcome = recover(store.as_ref(), &run_id)
        .and_then(|()| execute(request, side.as_ref(), &results, &mut record))
        .and_then(|(connections, days, tables, findings)| {
            record.status = "succeeded".into();
            publish(&results, &lock, &mut record, started_at)?;
            Ok((connections, days, tables, findings))
        });
    let release = |lock: RunLock| {
        if let Err(e) = lock.release() {
            tracing::warn!(error = %e, "The lock on the results store could not be released; it lapses at its expiry.");
        }
    };
    let (mut error, outcome, tables) = match outcome {
        Ok((connections, days, tables, findings)) => (None, Some((connections, days, findings)), tables),
        Err(error) => {
            // A committed run keeps its staged objects: the next run moves them into place.
            let committed = matches!(error, RunError::CommitUnfinished(_));
            let (error, _) = fail(error, &mut record);
            if !committed {
                // Nothing the run staged becomes visible; only its record is committed.
                let kept = commit::discard(store.as_ref(), &run_id)
                    .map_err(|e| RunError::Sink(e.into()))
                    .and_then(|_| publish(&results, &lock, &mut record, started_at));
                if let Err(write_error) = kept {
                    tracing::error!(error = %write_error, "The run record of the failed run could not be written.");
                }
            }
            (Some(error), None, Vec::new())
        }
    };
    if outcome.is_some() {
        // The report is a view of what is committed; a failure to draw it loses nothing.
        if let Err(error) = crate::sink::report::write(&Results::new(store.clone()), settings) {
            tracing::error!(%error, "The report could not be written; `telemetry-hunt report` draws it again.");
        }
    }
    // Sentinel second, still under the lock so no other run sends the same outbox. A failed run
    // sends no tables of its own, but still what earlier runs left, and its run record.
    if let Some((side, sentinel)) = side.as_ref().zip(settings.sentinel.as_ref()) {
        match side.monitor() {
            Ok(client) => {
                let ingestion = Ingestion::new(sentinel.clone(), client.clone());
                let sentinel = Arc::new(Sentinel::new(ingestion, Outbox::new(store.clone())));
                // Committed objects are replaced directly from here on: no staging.
                let committed = Results::new(store.clone());
                deliver(&sentinel, side, &committed, tables, &mut record, &mut error);
            }
            Err(e) => error = error.or(Some(e)),
        }
    }
    release(lock);
    match (error, outcome) {
        (None, Some((connections, days, findings))) => {
            let report = store.locate(crate::sink::report::REPORT);
            Ok(RunOutcome { connections, days, findings, record, results: store.location(), report })
        }
        (Some(error), _) => Err((error, record)),
        (None, None) => unreachable!("a run without an outcome has an error"),
    }
}

/// Sends the run's tables (after what earlier runs left in the outbox), then its run row, which
/// says what the delivery of the tables did. The store's run record is rewritten to say the same.
fn deliver(
    sentinel: &Arc<Sentinel>,
    side: &AzureSide,
    store: &Results,
    tables: Vec<Table>,
    record: &mut RunRecord,
    error: &mut Option<RunError>,
) {
    let run_id = record.run_id.clone();
    let clock = Instant::now();
    let delivery = side.block_on(sentinel.deliver(&run_id, tables, true, now_micros()));
    record.durations_ms.insert("deliver", clock.elapsed().as_millis() as u64);
    if error.is_none() && !delivery.complete() {
        let delivery_error = DeliveryError::from(&delivery);
        record.status = "failed".into();
        record.failed_stage = Some("deliver".into());
        record.error = Some(delivery_error.to_string());
        *error = Some(RunError::Deliver(delivery_error));
    }
    record.delivery = Some(delivery);
    if let Err(e) = finish_record(store, record, record.started_at) {
        tracing::error!(error = %e, "The run record could not be updated with what was delivered.");
    }
    let own = side.block_on(sentinel.deliver(&run_id, vec![record.to_table()], false, now_micros()));
    if own.complete() {
        return;
    }
    // The run row itself did not arrive: the run fails, and both the store's run record and the
    // outbox copy of the row say so, so the next run sends what really happened.
    let delivery = record.delivery.get_or_insert_with(Default::default);
    delivery.absorb(own);
    let delivery_error = DeliveryError::from(&*delivery);
    let left: Vec<_> = delivery.left.iter().filter(|i| i.table == tables::RUNS).cloned().collect();
    record.status = "failed".into();
    if error.is_none() {
        record.failed_stage = Some("deliver".into());
        record.error = Some(delivery_error.to_string());
        *error = Some(RunError::Deliver(delivery_error));
    }
    if let Err(e) = finish_record(store, record, record.started_at) {
        tracing::error!(error = %e, "The run record could not be updated after its delivery failed.");
    }
    for item in left {
        if let Err(e) = sentinel.record_again(&item, &record.to_table(), &run_id, now_micros()) {
            tracing::error!(error = %e, "The outbox copy of the run record could not be updated.");
        }
    }
}

/// The results store the settings name: a container, else the folder `out`.
fn open_results(settings: &Settings, out: &std::path::Path, azure: Option<&Azure>) -> Result<Arc<dyn Store>, RunError> {
    Ok(match (&settings.results_blob, azure) {
        (Some(location), Some(azure)) => Arc::new(BlobStore::new(azure.container(location)?, azure.identity.clone())),
        _ => Arc::new(LocalDir::new(out)),
    })
}

/// Finishes the commits of earlier runs and discards what uncommitted runs staged.
fn recover(store: &dyn Store, run_id: &str) -> Result<(), RunError> {
    let recovery = commit::recover(store, run_id).map_err(|e| RunError::Sink(e.into()))?;
    for run in &recovery.rolled_forward {
        tracing::warn!(run_id = %run, "Finished the commit of an earlier run that stopped while moving its results into place.");
    }
    for run in &recovery.discarded {
        tracing::warn!(run_id = %run, "Discarded the uncommitted output of an earlier run that stopped before committing.");
    }
    Ok(())
}

/// Stages the run record and commits the run, if this run still holds the lock.
fn publish(results: &Results, lock: &RunLock, record: &mut RunRecord, started_at: i64) -> Result<(), RunError> {
    finish_record(results, record, started_at)?;
    lock.confirm()?;
    let store = results.store.as_ref();
    commit::commit(store, &record.run_id, now_micros()).map_err(|e| {
        match commit::pending(store).map(|records| records.iter().any(|r| r.run_id == record.run_id)) {
            Ok(true) => RunError::CommitUnfinished(e),
            _ => RunError::Commit(e),
        }
    })?;
    Ok(())
}

fn scope_json(settings: &Settings) -> serde_json::Value {
    let s = &settings.scope;
    serde_json::json!({
        "machine_groups_include": s.machine_groups_include,
        "machine_groups_exclude": s.machine_groups_exclude,
        "device_names_include": s.device_names_include,
        "device_names_exclude": s.device_names_exclude,
    })
}

fn finish_record(store: &Results, record: &mut RunRecord, started_at: i64) -> Result<(), SinkError> {
    record.finished_at = now_micros();
    record.durations_ms.insert("total", ((record.finished_at - started_at) / 1000).max(0) as u64);
    let prefix = day_prefix(tables::RUNS, Day::of_micros(started_at));
    store.write_at(&prefix, &format!("run-{}", record.run_id), &record.to_table())
}

/// What the terminal shows of each day, the days of the run, the tables written (for Sentinel,
/// when it is configured) and what the detectors found.
type Executed = (BTreeMap<Day, BTreeMap<String, usize>>, Vec<Day>, Vec<Table>, FindingsSummary);

fn execute(
    request: &RunRequest,
    side: Option<&AzureSide>,
    store: &Results,
    record: &mut RunRecord,
) -> Result<Executed, RunError> {
    let settings = &request.settings;
    let options = ScanOptions {
        window: request.window,
        time_column: settings.time_column,
        matcher: Arc::new(settings.hosts.clone()),
        reject_samples: settings.reject_samples,
        columns: crate::hunt::aggregate::needed_columns(settings),
        limits: settings.limits,
    };
    let clock = Instant::now();
    let mut writer = DayWriter::new(store, settings);
    let stats = match (&settings.log_analytics, side) {
        (Some(la), Some(side)) => {
            let (partial, stats) = scan_log_analytics(request, la, side, options, record)?;
            writer.add_all(partial)?;
            stats
        }
        _ => scan_files(request, side.map(|s| &s.azure), &options, record, &mut writer)?,
    };
    record.durations_ms.insert("scan", clock.elapsed().as_millis() as u64);
    let days = finish_days(record, stats, &mut writer)?;
    record.durations_ms.insert("write", writer.writing.as_millis() as u64);
    let DayWriter { connections, tables: written, .. } = writer;
    // The tables are kept in memory only for Sentinel, which sends them after the commit; on a
    // large night the findings' alone are gigabytes.
    let mut written = settings.sentinel.is_some().then_some(written);
    let clock = Instant::now();
    let findings = if settings.detect.enabled {
        detect_days(store, settings, &days, &record.run_id, written.as_mut()).map_err(RunError::Detect)?
    } else {
        FindingsSummary::default()
    };
    record.findings_by_severity =
        findings.by_severity.iter().map(|(severity, &n)| (severity.as_str().to_string(), n as u64)).collect();
    record.findings_by_type = findings.by_type.iter().map(|(kind, &n)| (kind.as_str().to_string(), n as u64)).collect();
    for &day in &days {
        // No run id: re-running a complete day leaves its marker byte for byte as it was.
        let marker = serde_json::json!({"day": day.to_string(), "version": env!("CARGO_PKG_VERSION")});
        store.put(&complete_marker(day), bytes::Bytes::from(marker.to_string())).map_err(RunError::Detect)?;
    }
    record.durations_ms.insert("detect", clock.elapsed().as_millis() as u64);
    Ok((connections, days, written.unwrap_or_default(), findings))
}

/// The query API: windows over the run's days, each answer folded into a partial on rayon.
fn scan_log_analytics(
    request: &RunRequest,
    la: &LogAnalyticsSettings,
    side: &AzureSide,
    options: ScanOptions,
    record: &mut RunRecord,
) -> Result<(Partial, ScanStats), RunError> {
    let settings = Arc::new(request.settings.clone());
    let (from, to) = request.window.ok_or_else(|| {
        RunError::Monitor("a workspace source needs a window; `run` sets the nightly one unless --from/--to".into())
    })?;
    let options = ScanOptions { window: Some((from, to)), ..options };
    let filter = HostFilter::new(&settings.reference_hosts, &settings.extra_hosts);
    let text = QueryText::new(&la.table, settings.time_column.column(), la.pushdown, &settings, &filter);
    // An answer is held whole (decompressed) while it is decoded: `max_decompressed_bytes`
    // bounds it as it bounds a gzip file; a larger answer splits its window.
    let la = LogAnalyticsSettings {
        max_answer_bytes: la
            .max_answer_bytes
            .min(usize::try_from(options.limits.max_decompressed_bytes).unwrap_or(usize::MAX)),
        ..la.clone()
    };
    let source = Arc::new(LogAnalytics::new(la.clone(), side.monitor()?.clone()));
    tracing::info!(source = %la.describe(), from = %from, to = %to, pushdown = la.pushdown.as_str(), "Querying the workspace.");
    let fold_settings = settings.clone();
    let fold = Arc::new(move |batches: Vec<EventBatch>| {
        let mut partial = Partial::default();
        for b in &batches {
            partial.add_weighted_batch(&fold_settings, &b.batch, b.events.as_deref());
        }
        partial
    });
    let scan = ScanRequest { start: from.start_micros(), end: to.next().start_micros(), text, options };
    let (partial, stats, query) = side.block_on(source.scan(scan, fold, Partial::merge))?;
    record.bytes = query.answer_bytes;
    tracing::info!(
        windows = query.windows,
        splits = query.splits,
        retries = query.retries,
        rows = query.rows_returned,
        "The workspace answered."
    );
    record.query = Some(query);
    Ok((partial, stats))
}

/// Files, local or in a blob container: planned into units, scanned on rayon (blobs fetched
/// ahead by tokio).
fn scan_files(
    request: &RunRequest,
    azure: Option<&Azure>,
    options: &ScanOptions,
    record: &mut RunRecord,
    writer: &mut DayWriter<'_>,
) -> Result<ScanStats, RunError> {
    let settings = &request.settings;
    let (mut plan, reader) = match (&settings.source_blob, azure) {
        (Some(source), Some(azure)) => {
            let reader = BlobReader::new(azure.container(&source.location)?, source.layout, azure.identity.clone());
            (reader.plan(request.window, options)?, Some(reader))
        }
        _ => (plan_local(&request.inputs, options)?, None),
    };
    record.files = plan.files.len();
    record.files_skipped = plan.skipped_files.len();
    record.bytes = plan.bytes;
    if plan.files.is_empty() {
        tracing::warn!(source = %record.sources.join(", "), "The source has no input files for this run; the days of its window get empty tables.");
    }
    for path in &plan.skipped_files {
        tracing::warn!(path = %path.display(), "Skipped a file that is not Parquet, JSON lines or CSV by its extension.");
    }
    for (path, columns) in &plan.missing_columns {
        tracing::warn!(path = %path.display(), columns = ?columns, "A Parquet file lacks columns the reference query needs; its rows cannot match.");
    }
    tracing::info!(
        files = plan.files.len(),
        units = plan.units.len(),
        bytes = plan.bytes,
        row_groups_pruned = plan.row_groups_pruned,
        "Planned the scan."
    );

    let keep = settings.reject_samples;
    let limits = settings.limits;
    let bar = progress_bar(plan.units.iter().map(|u| u.weight()).sum(), request.progress);
    let rows_read = AtomicU64::new(0);
    let within_device_budget = |partial: &Partial, path: Option<&std::path::Path>| {
        if partial.device_set_bytes() <= limits.max_device_set_bytes {
            return Ok(());
        }
        let what = "the memory of the distinct-device sets (DeviceIds per day and group)";
        let exceeded = LimitExceeded { what, setting: "max_device_set_bytes", limit: limits.max_device_set_bytes };
        Err(SourceError::Limit { path: path.map(std::path::Path::to_path_buf), exceeded })
    };
    let scan = |unit: &Unit, fetched: Option<Fetched>| {
        let mut partial = Partial::default();
        let mut sink = |batch| partial.add_batch(settings, &batch);
        // A reader library that panics on a corrupt file fails the run with the file's name, as
        // any unreadable input does, rather than taking the process down.
        let scanned = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| match fetched {
            None => unit.scan(options, &mut sink),
            Some(fetched) => unit.scan_fetched(fetched, options, &mut sink),
        }));
        let stats = scanned.unwrap_or_else(|panic| {
            let message = crate::source::panic_message(panic.as_ref());
            Err(SourceError::Format {
                path: unit.path().to_path_buf(),
                message: format!("the reader failed on this file: {message}"),
            })
        })?;
        let total = rows_read.fetch_add(stats.rows_scanned, Ordering::Relaxed) + stats.rows_scanned;
        if total > limits.max_rows_per_run {
            let what = "the rows read by this run";
            let exceeded = LimitExceeded { what, setting: "max_rows_per_run", limit: limits.max_rows_per_run };
            return Err(SourceError::Limit { path: Some(unit.path().to_path_buf()), exceeded });
        }
        within_device_budget(&partial, Some(unit.path()))?;
        bar.inc(unit.weight());
        Ok::<_, SourceError>((partial, stats))
    };
    let mut units = std::mem::take(&mut plan.units);
    // Days in order, so that each is whole (and written, and let go of) early; units that can
    // hold any day first, as no day is whole before they are read.
    units.sort_by_key(|unit| unit.days());
    let mut pending = PendingDays::new(&units, options.window);
    let threads = rayon::current_num_threads();
    let (sender, receiver) = std::sync::mpsc::sync_channel::<Result<Scanned, SourceError>>(threads);
    let scanned = std::thread::scope(|scope| -> Result<ScanStats, RunError> {
        let reader = reader.as_ref();
        let producer = scope.spawn(move || {
            // Units are taken in order as workers free up (`par_bridge`); a send blocks while the
            // writer is behind, so at most a few units' aggregates wait.
            let deliver = |item: Result<(Unit, Option<Fetched>), SourceError>| -> Result<(), ()> {
                let result = item.and_then(|(unit, fetched)| {
                    let (partial, stats) = scan(&unit, fetched)?;
                    Ok(Scanned { path: unit.path().to_path_buf(), days: unit.days(), partial, stats })
                });
                let failed = result.is_err();
                // A closed channel means the writer stopped (an error); so do the workers.
                if sender.send(result).is_err() || failed {
                    return Err(());
                }
                Ok(())
            };
            let _ = match reader {
                None => units.into_iter().par_bridge().try_for_each(|unit| deliver(Ok((unit, None)))),
                // tokio fetches ahead; rayon decodes what arrives, never more than a few units at once.
                Some(reader) => reader
                    .fetch(units, options)
                    .par_bridge()
                    .try_for_each(|fetched| deliver(fetched.map(|(unit, bytes)| (unit, Some(bytes))))),
            };
        });
        let mut stats = ScanStats::default();
        let mut open: BTreeMap<Day, Partial> = BTreeMap::new();
        for scanned in receiver {
            let Scanned { path, days, partial, stats: unit_stats } = scanned?;
            stats = stats.merge(unit_stats, keep);
            let (counts, by_day) = partial.into_days();
            writer.counts.add(counts);
            for (day, partial) in by_day {
                if writer.has_written(day) {
                    return Err(SourceError::Format {
                        path,
                        message: format!(
                            "its rows of {day} lie outside the days its time statistics give, and that day was already written; rewrite the file with correct statistics"
                        ),
                    }
                    .into());
                }
                let merged = match open.remove(&day) {
                    Some(into) => into.merge(partial),
                    None => partial,
                };
                // Merged sets are checked, not the sum of the units': a device seen in every
                // file counts once.
                within_device_budget(&merged, None)?;
                open.insert(day, merged);
            }
            pending.read(days);
            let whole: Vec<Day> = open.keys().copied().filter(|&day| pending.is_whole(day)).collect();
            for day in whole {
                if let Some(partial) = open.remove(&day) {
                    writer.write(day, &partial)?;
                }
            }
        }
        for (day, partial) in std::mem::take(&mut open) {
            writer.write(day, &partial)?;
        }
        let _ = producer.join();
        Ok(stats)
    });
    bar.finish_and_clear();
    let mut stats = scanned?;
    if let Some(reader) = &reader {
        tracing::info!(source = %reader.url(), bytes_listed = plan.bytes, bytes_fetched = reader.bytes_fetched(), "Read the blob source.");
    }
    stats.row_groups_pruned += plan.row_groups_pruned;
    stats.rows_pruned += plan.rows_pruned;
    Ok(stats)
}

/// One unit's aggregate, on its way from a worker to the writer.
struct Scanned {
    path: PathBuf,
    days: Option<(Day, Day)>,
    partial: Partial,
    stats: ScanStats,
}

/// The units still to read per day they can hold rows of: a day is whole once none is left, nor
/// any unit that can hold any day (JSON lines, CSV, Parquet without time statistics).
struct PendingDays {
    known: BTreeMap<Day, usize>,
    anywhere: usize,
}

impl PendingDays {
    /// A unit spanning more days than this is taken to span any (a stray time in the statistics
    /// must not cost a map entry per day since 1970).
    const MAX_SPAN: i32 = 400;

    fn span(days: Option<(Day, Day)>, window: Option<(Day, Day)>) -> Option<(Day, Day)> {
        let (mut first, mut last) = days?;
        if let Some((from, to)) = window {
            first = first.max(from);
            last = last.min(to);
        }
        (last.0 - first.0 <= Self::MAX_SPAN).then_some((first, last))
    }

    fn new(units: &[Unit], window: Option<(Day, Day)>) -> PendingDays {
        let mut pending = PendingDays { known: BTreeMap::new(), anywhere: 0 };
        for unit in units {
            match Self::span(unit.days(), window) {
                Some((first, last)) => {
                    for day in first.through(last) {
                        *pending.known.entry(day).or_default() += 1;
                    }
                }
                None => pending.anywhere += 1,
            }
        }
        pending
    }

    fn read(&mut self, days: Option<(Day, Day)>) {
        // `days` is the unit's own statistics, so the window is the one `new` was given.
        match Self::span(days, None) {
            Some((first, last)) => {
                for day in first.through(last) {
                    if let Some(n) = self.known.get_mut(&day) {
                        *n = n.saturating_sub(1);
                    }
                }
            }
            None => self.anywhere = self.anywhere.saturating_sub(1),
        }
    }

    fn is_whole(&self, day: Day) -> bool {
        self.anywhere == 0 && self.known.get(&day).is_none_or(|&n| n == 0)
    }
}

/// Stages each day's tables as soon as the day is whole, and keeps what the run reports of it.
struct DayWriter<'a> {
    store: &'a Results,
    settings: &'a Settings,
    /// The row counts of the whole run.
    counts: HuntCounts,
    connections: BTreeMap<Day, BTreeMap<String, usize>>,
    /// Every table written, for Sentinel (empty when it is not configured).
    tables: Vec<Table>,
    /// Time spent staging tables (mostly while the scan goes on).
    writing: std::time::Duration,
}

impl<'a> DayWriter<'a> {
    fn new(store: &'a Results, settings: &'a Settings) -> DayWriter<'a> {
        DayWriter {
            store,
            settings,
            counts: HuntCounts::default(),
            connections: BTreeMap::new(),
            tables: Vec::new(),
            writing: std::time::Duration::ZERO,
        }
    }

    fn has_written(&self, day: Day) -> bool {
        self.connections.contains_key(&day)
    }

    /// Writes the days of a whole-run aggregate (the workspace source's).
    fn add_all(&mut self, partial: Partial) -> Result<(), SinkError> {
        let (counts, by_day) = partial.into_days();
        self.counts.add(counts);
        for (day, partial) in by_day {
            self.write(day, &partial)?;
        }
        Ok(())
    }

    fn write(&mut self, day: Day, partial: &Partial) -> Result<(), SinkError> {
        let clock = Instant::now();
        let settings = self.settings;
        let day_tables = [
            tables::daily(partial, settings.match_mode, day),
            tables::hosts(partial, settings, day),
            tables::processes(partial, settings, day),
        ];
        for table in &day_tables {
            self.store.write_day(table, day)?;
        }
        // Only the detectors read it back: Parquet only, not sent to Sentinel, not kept when
        // they are off (those days then give them no history).
        if settings.detect.enabled {
            let mut parquet = ParquetEncoder::new(tables::DEVICE_HOSTS, tables::DEVICE_HOSTS_COLUMNS)?;
            tables::device_hosts_chunks(partial, settings, day, |chunk| parquet.write_batch(&chunk))?;
            self.store.put_day_parquet(tables::DEVICE_HOSTS, day, parquet.finish()?)?;
        }
        let shown = partial.daily(settings.match_mode).iter().filter(|((d, _), _)| *d == day);
        self.connections.insert(day, shown.map(|((_, action), agg)| (action.to_string(), agg.devices.len())).collect());
        if settings.sentinel.is_some() {
            self.tables.extend(day_tables);
        }
        self.writing += clock.elapsed();
        Ok(())
    }
}

/// The days of the run: those of the window (or of the input) that have rows. Days the scan did
/// not write (rows, but none to a telemetry host) get their empty tables here.
fn finish_days(record: &mut RunRecord, stats: ScanStats, writer: &mut DayWriter<'_>) -> Result<Vec<Day>, RunError> {
    let settings = writer.settings;
    // A day without a single input row is missing input, not a day of silence: writing zeros
    // would replace what the store holds for it, mark it complete and raise false drops.
    let (days, missing): (Vec<Day>, Vec<Day>) = match record.window {
        Some((from, to)) => from.through(to).partition(|day| stats.rows_per_day.contains_key(day)),
        None => (stats.rows_per_day.keys().copied().collect(), Vec::new()),
    };
    for day in &missing {
        tracing::warn!(%day, "No input rows for this day: it is not written and stays as the results store holds it; pass the exports of that day to hunt it.");
    }
    if days.is_empty() && !missing.is_empty() {
        return Err(RunError::NoInput { from: missing[0], to: missing[missing.len() - 1] });
    }
    // Without a window the days are those of the input: none means an empty or unusable export,
    // which must not pass for a quiet night.
    if days.is_empty() {
        return Err(RunError::EmptyInput { rows: stats.rows_scanned, rejected: stats.rejects.total() });
    }
    for &day in &days {
        if !writer.has_written(day) {
            writer.write(day, &Partial::default())?;
        }
    }
    record.days = days.len();
    if record.window.is_none() {
        record.window = days.first().copied().zip(days.last().copied());
    }
    record.counts = writer.counts.clone();
    record.excluded_by_rule = writer
        .counts
        .excluded_by_rule
        .iter()
        .map(|(rule, n)| (settings.exclusions[*rule].name.clone(), *n))
        .collect::<BTreeMap<_, _>>();
    if stats.rejects.total() > 0 {
        tracing::warn!(rejected = stats.rejects.total(), reasons = ?stats.rejects.by_reason, "Some rows were malformed; they are counted and sampled in the run record.");
    }
    record.stats = stats;
    Ok(days)
}

/// The object that says a day is complete (its tables and findings committed).
pub fn complete_marker(day: Day) -> String {
    format!("_complete/day={day}.json")
}

/// The days `results` holds a completion marker for.
pub fn complete_days(results: &Results) -> Result<BTreeSet<Day>, SinkError> {
    let prefix = "_complete/day=";
    Ok(results
        .store
        .list(prefix)?
        .iter()
        .filter_map(|path| path.strip_prefix(prefix)?.strip_suffix(".json").and_then(Day::parse))
        .collect())
}

/// Runs the detectors on `days` in order, each against the stored days before it (the earlier
/// days of this run included), and writes each day's findings (also added to `written`, when
/// given) as soon as the day is scored: a run holds the findings of two days at most, and
/// returns what the terminal shows of them.
pub fn detect_days(
    results: &Results,
    settings: &Settings,
    days: &[Day],
    run_id: &str,
    mut written: Option<&mut Vec<Table>>,
) -> Result<FindingsSummary, SinkError> {
    // Nothing commits while the run holds the lock: the pending commits are listed once, not on
    // each of the three reads per day.
    let results = &results.pinned()?;
    let stored: BTreeSet<Day> = results.days(tables::DAILY)?.into_iter().collect();
    let mut history = History::new(settings.detect.history_days);
    let mut ordered = days.to_vec();
    ordered.sort();
    // A day scored twice would find its own keys in the window index the second time.
    ordered.dedup();
    // A day is read, decoded and built with names of its own, on any thread.
    let read = |i: usize| -> Result<_, SinkError> {
        let Some(&day) = ordered.get(i) else { return Ok(None) };
        DayData::load_alone(results, day, settings)
    };
    let for_sentinel = written.is_some();
    // A day's findings are summed up (and dropped) beside the detectors, not between days.
    let write_scored = |(day, findings): (Day, Vec<Finding>)| -> Result<_, SinkError> {
        let table = write_findings(results, day, &findings, run_id, settings.detect.max_listed_devices, for_sentinel)?;
        if !findings.is_empty() {
            tracing::info!(%day, findings = findings.len(), "Findings.");
        }
        let mut day_summary = FindingsSummary::default();
        day_summary.add(findings);
        Ok((day_summary, table))
    };
    let mut summary = FindingsSummary::default();
    let mut account = |(day_summary, table): (FindingsSummary, Option<Table>)| {
        if let (Some(written), Some(table)) = (written.as_deref_mut(), table) {
            written.push(table);
        }
        summary.merge(day_summary);
    };
    let mut next = read(0)?;
    let mut spent = None;
    let mut scored = None;
    for (i, &day) in ordered.iter().enumerate() {
        history.prepare(results, &stored, day, settings)?;
        // Renumbered after the days `prepare` loaded: the ids a day-by-day load gives.
        let today = next.take().map(|(data, own)| data.adopt(&own, &mut history.names));
        // While the detectors score this day, the next one is read and the findings of the day
        // before are written (the days depend on each other only through the history, which
        // neither touches), and the evidence of the day before is freed.
        let stale = spent.take();
        let previous = scored.take();
        // The write, the longest of the three, is started first; the read is left for the
        // thread that finishes scoring to take.
        let (findings, (previous_written, following)) = rayon::join(
            || today.as_ref().map(|today| detect::run_day(&Context::new(day, settings, today, &history))),
            move || {
                drop(stale);
                rayon::join(|| previous.map(write_scored).transpose(), || read(i + 1))
            },
        );
        next = following?;
        if let Some(previous_written) = previous_written? {
            account(previous_written);
        }
        if let (Some(mut today), Some(findings)) = (today, findings) {
            spent = Some(today.take_evidence());
            history.push(today, settings);
            scored = Some((day, findings));
        }
    }
    if let Some(last) = scored {
        account(write_scored(last)?);
    }
    Ok(summary)
}

/// Writes a day's findings, and returns them as a table when `keep` (for Sentinel). A finding
/// that an earlier run already wrote exactly so keeps that run's RunId: re-running a day with
/// the same input leaves its findings byte for byte as they were, and RunId says which run
/// first reported each one.
fn write_findings(
    results: &Results,
    day: Day,
    findings: &[Finding],
    run_id: &str,
    max_listed: usize,
    keep: bool,
) -> Result<Option<Table>, SinkError> {
    const RUN_ID: usize = 2;
    let mut earlier: BTreeMap<String, (Vec<Cell>, String)> = BTreeMap::new();
    if let Some(table) = results.read_day(FINDINGS, FINDINGS_COLUMNS, day)? {
        for mut row in table.rows {
            let id = match &row[1] {
                Cell::Text(id) => id.clone(),
                _ => continue,
            };
            let previous_run = match std::mem::replace(&mut row[RUN_ID], Cell::Null) {
                Cell::Text(run) => run,
                _ => continue,
            };
            earlier.insert(id, (row, previous_run));
        }
    }
    let ids: Vec<String> = findings.iter().map(Finding::id).collect();
    let run_ids: Vec<&str> = findings
        .iter()
        .zip(&ids)
        .map(|(finding, id)| {
            // A day hunted for the first time has nothing to compare with: no row to build.
            let Some((previous, previous_run)) = earlier.get(id) else { return run_id };
            let mut row = finding.to_row(id, "", max_listed);
            row[RUN_ID] = Cell::Null;
            if *previous == row {
                previous_run.as_str()
            } else {
                run_id
            }
        })
        .collect();
    if keep || findings.is_empty() {
        let table = tables::findings(findings, &ids, &run_ids, max_listed);
        results.write_day(&table, day)?;
        return Ok(keep.then_some(table));
    }
    // A night's findings carry their parameters and series as JSON: built as one table they
    // were the largest thing the detect stage held.
    const CHUNK_ROWS: usize = 1024;
    let mut parquet = ParquetEncoder::new(FINDINGS, FINDINGS_COLUMNS)?;
    let mut jsonl = Vec::new();
    let mut lines = crate::sink::findings::JsonLines::default();
    let encode = |e: String| SinkError::Encode { table: FINDINGS.to_string(), message: e };
    for (i, ((chunk, ids), run_ids)) in
        findings.chunks(CHUNK_ROWS).zip(ids.chunks(CHUNK_ROWS)).zip(run_ids.chunks(CHUNK_ROWS)).enumerate()
    {
        let rows = crate::sink::findings::rows(chunk, ids, run_ids, max_listed);
        // Two encodings of the same rows, apart: a thread the detectors leave idle takes one.
        let (encoded, ()) = rayon::join(
            || crate::sink::findings::batch(&rows).map_err(encode).and_then(|batch| parquet.write_batch(&batch)),
            || lines.write(&rows, &mut jsonl),
        );
        encoded?;
        if i == 0 {
            // The first chunk tells the size of the rest: one allocation of the day's file
            // instead of doubling through it (each a copy of what was written so far).
            jsonl.reserve(jsonl.len() / chunk.len() * (findings.len() - chunk.len()) * 9 / 8);
        }
    }
    results.put_day(FINDINGS, day, parquet.finish()?, bytes::Bytes::from(jsonl))?;
    Ok(None)
}

/// Opens the results store the settings name (a container, else the folder `out`) and hands it
/// to `read`, with the Azure runtime alive meanwhile. Used by `report` and `backfill`.
pub fn with_results<T>(
    settings: &Settings,
    out: &std::path::Path,
    read: impl FnOnce(&Results) -> Result<T, SinkError>,
) -> Result<T, RunError> {
    let azure = match &settings.results_blob {
        Some(_) => Some(Azure::start(&settings.identity, &settings.transport)?),
        None => None,
    };
    let store = open_results(settings, out, azure.as_ref())?;
    Ok(read(&Results::new(store))?)
}

/// What a backfill did.
#[derive(Debug, Default)]
pub struct BackfillOutcome {
    /// Days hunted by this backfill, with their findings.
    pub done: Vec<(Day, usize)>,
    /// Days skipped because an earlier run completed them.
    pub skipped: Vec<Day>,
    /// Days passed over because no input row falls on them (nothing written, not complete: a
    /// later backfill hunts them once their export is there).
    pub without_input: Vec<Day>,
    /// Where `report.html` is: a file path or a blob URL.
    pub report: String,
}

/// Builds history for `from..=to` one day at a time (memory stays at one day's aggregates),
/// each day a run of its own with its own run record. A day already complete (see
/// [`complete_marker`]) is skipped unless `force`, so an interrupted backfill resumes where it
/// stopped. A day without a single input row is passed over with a warning (a gap in the
/// export must not stop the days after it); any other failed day stops the backfill with the
/// run error.
pub fn backfill(
    template: &RunRequest,
    from: Day,
    to: Day,
    force: bool,
    progress: bool,
) -> Result<BackfillOutcome, (RunError, RunRecord)> {
    let (complete, report) = with_results(&template.settings, &template.out, |store| {
        Ok((complete_days(store)?, store.store.locate(crate::sink::report::REPORT)))
    })
    .map_err(|e| (e, RunRecord::default()))?;
    let days: Vec<Day> = from.through(to).collect();
    let bar = if progress {
        let bar = ProgressBar::new(days.len() as u64);
        bar.set_style(
            ProgressStyle::with_template(
                "{spinner} backfill [{bar:30}] {pos}/{len} days {elapsed_precise} eta {eta} {msg}",
            )
            .expect("static template")
            .progress_chars("=> "),
        );
        bar
    } else {
        ProgressBar::hidden()
    };
    let mut outcome = BackfillOutcome { report, ..Default::default() };
    for (i, &day) in days.iter().enumerate() {
        bar.set_message(day.to_string());
        if complete.contains(&day) && !force {
            tracing::info!(%day, "Day already complete; skipped (use --force to hunt it again).");
            outcome.skipped.push(day);
            bar.inc(1);
            continue;
        }
        let clock = Instant::now();
        let request = RunRequest { window: Some((day, day)), progress: false, ..template.clone() };
        let run = match run(&request) {
            Ok(run) => run,
            Err((RunError::NoInput { .. }, _)) => {
                tracing::warn!(%day, "No input row falls on this day; passed over (nothing written). Backfill it again once its export is there.");
                outcome.without_input.push(day);
                bar.inc(1);
                continue;
            }
            Err(failed) => return Err(failed),
        };
        let record = &run.record;
        let line = format!(
            "{day} ({} of {}): {} rows scanned, {} matched, {} finding(s), {:.1} s",
            i + 1,
            days.len(),
            record.stats.rows_scanned,
            record.rows_matched(),
            run.findings.total,
            clock.elapsed().as_secs_f64()
        );
        if progress {
            bar.println(line);
        } else {
            tracing::info!(%day, rows_scanned = record.stats.rows_scanned, findings = run.findings.total, "Backfilled {line}.");
        }
        outcome.done.push((day, run.findings.total));
        bar.inc(1);
    }
    bar.finish_and_clear();
    Ok(outcome)
}

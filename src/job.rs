//! One run of the job: plan the sources, scan and hunt in parallel, write every table per day,
//! then the run record. The run record is written on failure too, saying which stage failed.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use azure_core::credentials::TokenCredential;
use indicatif::{ProgressBar, ProgressStyle};
use rayon::prelude::*;

use crate::azure::http::{managed_identity_from_env, AzureClient};
use crate::config::Settings;
use crate::hunt::Partial;
use crate::sink::local::LocalDir;
use crate::sink::results::{day_prefix, Results};
use crate::sink::sentinel::{DeliveryError, Ingestion, Outbox, Sentinel};
use crate::sink::tables::{self, RunRecord};
use crate::sink::{SinkError, Table};
use crate::source::log_analytics::{
    EventBatch, HostFilter, LogAnalytics, LogAnalyticsSettings, QueryError, QueryText, ScanRequest,
};
use crate::source::{plan_local, ScanOptions, ScanStats, SourceError};
use crate::time::Day;

/// What to run.
#[derive(Debug, Clone)]
pub struct RunRequest {
    pub inputs: Vec<PathBuf>,
    pub out: PathBuf,
    /// Inclusive UTC days; `None` means every day present in the input.
    pub window: Option<(Day, Day)>,
    pub settings: Settings,
    pub progress: bool,
    /// The identity for the Azure APIs; `None` builds the managed identity from the
    /// environment when the configuration needs one.
    pub credential: Option<Arc<dyn TokenCredential>>,
}

/// A finished run: the merged aggregate, the days written, the run record.
pub struct RunOutcome {
    pub partial: Partial,
    pub days: Vec<Day>,
    pub record: RunRecord,
}

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Source(#[from] SourceError),
    #[error(transparent)]
    Sink(#[from] SinkError),
    #[error(transparent)]
    Query(#[from] QueryError),
    #[error("cannot set up the Azure identity or HTTP client: {0}")]
    Azure(String),
    #[error(transparent)]
    Deliver(#[from] DeliveryError),
}

impl RunError {
    pub fn stage(&self) -> &'static str {
        match self {
            RunError::Source(_) | RunError::Query(_) => "read",
            RunError::Sink(_) => "write",
            RunError::Azure(_) => "identity",
            RunError::Deliver(_) => "deliver",
        }
    }
}

/// What the Azure side of a run needs: a tokio runtime for the HTTP calls and the client.
struct Azure {
    runtime: tokio::runtime::Runtime,
    client: AzureClient,
}

impl Azure {
    /// Built only when the configuration talks to Azure.
    fn for_settings(
        settings: &Settings,
        credential: Option<&Arc<dyn TokenCredential>>,
    ) -> Result<Option<Azure>, RunError> {
        if settings.log_analytics.is_none() && settings.sentinel.is_none() {
            return Ok(None);
        }
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("telemetry-hunt-io")
            .enable_all()
            .build()
            .map_err(|e| RunError::Azure(format!("cannot start the I/O runtime: {e}")))?;
        let credential = match credential {
            Some(c) => c.clone(),
            None => managed_identity_from_env().map_err(RunError::Azure)?,
        };
        let client = AzureClient::new(credential).map_err(|e| RunError::Azure(e.to_string()))?;
        Ok(Some(Azure { runtime, client }))
    }
}

/// `check`: probes every Azure endpoint the settings name (`print 1` on the workspace, an
/// empty array to every Sentinel stream). One line per probe, `Err` with the fix in words.
pub fn probe_endpoints(
    settings: &Settings,
    credential: Option<&Arc<dyn TokenCredential>>,
) -> Vec<Result<String, String>> {
    let azure = match Azure::for_settings(settings, credential) {
        Ok(Some(azure)) => azure,
        Ok(None) => return Vec::new(),
        Err(e) => return vec![Err(e.to_string())],
    };
    let mut lines = Vec::new();
    if let Some(la) = &settings.log_analytics {
        let source = LogAnalytics::new(la.clone(), azure.client.clone());
        lines.push(azure.runtime.block_on(source.probe()));
    }
    if let Some(sentinel) = &settings.sentinel {
        let ingestion = Ingestion::new(sentinel.clone(), azure.client.clone());
        lines.extend(azure.runtime.block_on(ingestion.probe()));
    }
    lines
}

/// Yesterday, UTC: the nightly run's day.
pub fn yesterday(now_micros: i64) -> (Day, Day) {
    let day = Day::of_micros(now_micros).prev();
    (day, day)
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
///
/// Results store first, Sentinel second: the day tables and the run record are in the store
/// before anything is sent; what Sentinel does not acknowledge stays in the store's outbox.
pub fn run(request: &RunRequest) -> Result<RunOutcome, (RunError, RunRecord)> {
    let started_at = now_micros();
    let run_id = new_run_id(started_at);
    let store = Results::new(Arc::new(LocalDir::new(&request.out)));
    let settings = &request.settings;
    let mut record = RunRecord {
        run_id: run_id.clone(),
        started_at,
        status: "running".into(),
        window: request.window,
        match_mode: settings.match_mode.as_str().into(),
        sources: match &settings.log_analytics {
            Some(la) => vec![format!("{} table {} (pushdown {})", la.describe(), la.table, la.pushdown.as_str())],
            None => request.inputs.iter().map(|p| p.display().to_string()).collect(),
        },
        scope: scope_json(settings),
        ..Default::default()
    };
    let azure = match Azure::for_settings(settings, request.credential.as_ref()) {
        Ok(azure) => azure,
        Err(error) => return Err(fail(&store, record, error, started_at)),
    };
    let sentinel = azure.as_ref().zip(settings.sentinel.as_ref()).map(|(azure, sentinel)| {
        let ingestion = Ingestion::new(sentinel.clone(), azure.client.clone());
        Arc::new(Sentinel::new(ingestion, Outbox::new(store.store.clone())))
    });

    let (outcome, mut error, tables) = match execute(request, &store, &mut record, azure.as_ref()) {
        Ok((partial, days, tables)) => (Some((partial, days)), None, tables),
        Err(error) => (None, Some(error), Vec::new()),
    };
    if let (Some(sentinel), Some(azure)) = (&sentinel, &azure) {
        let clock = Instant::now();
        let delivery = azure.runtime.block_on(sentinel.deliver(&run_id, tables, true, now_micros()));
        record.durations_ms.insert("deliver", clock.elapsed().as_millis() as u64);
        record.delivery = Some(delivery);
    }
    if error.is_none() {
        error = record.delivery.as_ref().filter(|d| !d.complete()).map(|d| RunError::Deliver(d.into()));
    }
    record.status = if error.is_some() { "failed" } else { "succeeded" }.into();
    if let Some(error) = &error {
        record.failed_stage = Some(error.stage().into());
        record.error = Some(error.to_string());
    }
    if let Err(write_error) = finish_record(&store, &mut record, started_at) {
        return Err(match error {
            Some(error) => {
                tracing::error!(error = %write_error, "The run record of the failed run could not be written.");
                (error, record)
            }
            None => (RunError::Sink(write_error), record),
        });
    }
    // The run record goes to Sentinel last, saying what the delivery of the tables did.
    if let (Some(sentinel), Some(azure)) = (&sentinel, &azure) {
        deliver_record(sentinel, azure, &store, &mut record, &mut error);
    }
    match (error, outcome) {
        (None, Some((partial, days))) => Ok(RunOutcome { partial, days, record }),
        (Some(error), _) => Err((error, record)),
        (None, None) => unreachable!("a run without an outcome has an error"),
    }
}

/// Sends the run row. When that fails, the run fails, and both the store's run record and the
/// outbox copy of the row are rewritten to say so, so the next run sends what really happened.
fn deliver_record(
    sentinel: &Arc<Sentinel>,
    azure: &Azure,
    store: &Results,
    record: &mut RunRecord,
    error: &mut Option<RunError>,
) {
    let run_id = record.run_id.clone();
    let own = azure.runtime.block_on(sentinel.deliver(&run_id, vec![record.to_table()], false, now_micros()));
    if own.complete() {
        return;
    }
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

fn fail(store: &Results, mut record: RunRecord, error: RunError, started_at: i64) -> (RunError, RunRecord) {
    record.status = "failed".into();
    record.failed_stage = Some(error.stage().into());
    record.error = Some(error.to_string());
    if let Err(write_error) = finish_record(store, &mut record, started_at) {
        tracing::error!(error = %write_error, "The run record of the failed run could not be written.");
    }
    (error, record)
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

type Executed = (Partial, Vec<Day>, Vec<Table>);

fn execute(
    request: &RunRequest,
    store: &Results,
    record: &mut RunRecord,
    azure: Option<&Azure>,
) -> Result<Executed, RunError> {
    let settings = &request.settings;
    let options = ScanOptions {
        window: request.window,
        time_column: settings.time_column,
        matcher: Arc::new(settings.hosts.clone()),
        reject_samples: settings.reject_samples,
        columns: crate::hunt::aggregate::needed_columns(settings),
    };
    let clock = Instant::now();
    let (partial, stats) = match (&settings.log_analytics, azure) {
        (Some(la), Some(azure)) => scan_log_analytics(request, la, azure, options, record)?,
        _ => scan_local(request, &options, record)?,
    };
    record.durations_ms.insert("scan", clock.elapsed().as_millis() as u64);
    write(request, store, record, partial, stats)
}

/// The query API: windows over the run's days, each answer folded into a partial on rayon.
fn scan_log_analytics(
    request: &RunRequest,
    la: &LogAnalyticsSettings,
    azure: &Azure,
    options: ScanOptions,
    record: &mut RunRecord,
) -> Result<(Partial, ScanStats), RunError> {
    let settings = Arc::new(request.settings.clone());
    let (from, to) = request.window.unwrap_or_else(|| yesterday(now_micros()));
    record.window = Some((from, to));
    let options = ScanOptions { window: Some((from, to)), ..options };
    let filter = HostFilter::new(&settings.reference_hosts, &settings.extra_hosts);
    let text = QueryText::new(&la.table, settings.time_column.column(), la.pushdown, &settings, &filter);
    let source = Arc::new(LogAnalytics::new(la.clone(), azure.client.clone()));
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
    let (partial, stats, query) = azure.runtime.block_on(source.scan(scan, fold, Partial::merge))?;
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

/// Local files: planned into units, scanned on rayon.
fn scan_local(
    request: &RunRequest,
    options: &ScanOptions,
    record: &mut RunRecord,
) -> Result<(Partial, ScanStats), RunError> {
    let settings = &request.settings;
    let plan = plan_local(&request.inputs, options)?;
    record.files = plan.files.len();
    record.files_skipped = plan.skipped_files.len();
    record.bytes = plan.bytes;
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
    let bar = progress_bar(plan.units.iter().map(|u| u.weight()).sum(), request.progress);
    let (partial, mut stats) = plan
        .units
        .par_iter()
        .map(|unit| {
            let mut partial = Partial::default();
            let stats = unit.scan(options, &mut |batch| partial.add_batch(settings, &batch))?;
            bar.inc(unit.weight());
            Ok::<_, SourceError>((partial, stats))
        })
        .try_reduce(|| (Partial::default(), ScanStats::default()), |a, b| Ok((a.0.merge(b.0), a.1.merge(b.1, keep))))?;
    bar.finish_and_clear();
    stats.row_groups_pruned += plan.row_groups_pruned;
    stats.rows_pruned += plan.rows_pruned;
    Ok((partial, stats))
}

/// Every table of every day, into the results store; the tables are returned for Sentinel.
fn write(
    request: &RunRequest,
    store: &Results,
    record: &mut RunRecord,
    partial: Partial,
    stats: ScanStats,
) -> Result<Executed, RunError> {
    let settings = &request.settings;
    // The query API always has a window (yesterday by default); files may have none.
    let days: Vec<Day> = match record.window {
        Some((from, to)) => from.through(to).collect(),
        None => stats.rows_per_day.keys().copied().collect(),
    };
    for day in &days {
        if !stats.rows_per_day.contains_key(day) {
            tracing::warn!(%day, "No input rows for this day; its tables are written empty.");
        }
    }
    record.days = days.len();
    if record.window.is_none() {
        record.window = days.first().copied().zip(days.last().copied());
    }
    record.counts = partial.counts.clone();
    record.excluded_by_rule = partial
        .counts
        .excluded_by_rule
        .iter()
        .map(|(rule, n)| (settings.exclusions[*rule].name.clone(), *n))
        .collect::<BTreeMap<_, _>>();
    if stats.rejects.total() > 0 {
        tracing::warn!(rejected = stats.rejects.total(), reasons = ?stats.rejects.by_reason, "Some rows were malformed; they are counted and sampled in the run record.");
    }
    record.stats = stats;

    let clock = Instant::now();
    let written = days
        .par_iter()
        .map(|&day| -> Result<Vec<Table>, SinkError> {
            let day_tables = vec![
                tables::daily(&partial, settings.match_mode, day),
                tables::hosts(&partial, settings, day),
                tables::processes(&partial, settings, day),
            ];
            for table in &day_tables {
                store.write_day(table, day)?;
            }
            Ok(day_tables)
        })
        .collect::<Result<Vec<_>, _>>()?;
    record.durations_ms.insert("write", clock.elapsed().as_millis() as u64);
    Ok((partial, days, written.into_iter().flatten().collect()))
}

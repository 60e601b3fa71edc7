//! One run of the job: take the results store's lock, finish or discard what an earlier run
//! left, plan the sources, scan and hunt in parallel, stage every table per day, then commit
//! them together with the run record. The run record is written on failure too, saying which
//! stage failed; a failed run commits nothing else.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use indicatif::{ProgressBar, ProgressStyle};
use rayon::iter::ParallelBridge;
use rayon::prelude::*;

use crate::azure::storage::ConnectError;
use crate::azure::Azure;
use crate::config::Settings;
use crate::hunt::Partial;
use crate::sink::blob::BlobStore;
use crate::sink::local::LocalDir;
use crate::sink::lock::{LockError, RunLock};
use crate::sink::results::{day_prefix, Results};
use crate::sink::store::{Store, StoreError};
use crate::sink::tables::{self, RunRecord};
use crate::sink::{commit, SinkError};
use crate::source::blob::{BlobReader, Fetched};
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
}

/// A finished run: the merged aggregate, the days written, the run record.
pub struct RunOutcome {
    pub partial: Partial,
    pub days: Vec<Day>,
    pub record: RunRecord,
    /// Where the results are: a folder or a container URL.
    pub results: String,
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
    Sink(#[from] SinkError),
    #[error("the run could not be committed, so none of its days is visible: {0}")]
    Commit(StoreError),
    #[error("the run is committed, but moving its objects into place stopped; readers already see the whole run and the next run finishes the move: {0}")]
    CommitUnfinished(StoreError),
}

impl RunError {
    pub fn stage(&self) -> &'static str {
        match self {
            RunError::Connect(_) => "connect",
            RunError::Lock(_) => "lock",
            RunError::Source(_) => "read",
            RunError::Sink(_) => "write",
            RunError::Commit(_) | RunError::CommitUnfinished(_) => "commit",
        }
    }
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
        sources: match &settings.source_blob {
            Some(source) => vec![source.location.url()],
            None => request.inputs.iter().map(|p| p.display().to_string()).collect(),
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
    // The I/O side exists only when something is in Azure; it lives as long as this run.
    let azure = match needs_azure(settings) {
        true => Some(Azure::start(&settings.identity, &settings.transport).map_err(|e| fail(e.into(), &mut record))?),
        false => None,
    };
    let store = open_results(request, azure.as_ref()).map_err(|e| fail(e, &mut record))?;
    let lock = RunLock::acquire(store.clone(), &run_id, settings.lock_ttl).map_err(|e| fail(e.into(), &mut record))?;
    let results = Results::for_run(store.clone(), &run_id);
    let outcome = recover(store.as_ref(), &run_id)
        .and_then(|()| execute(request, azure.as_ref(), &results, &mut record))
        .and_then(|(partial, days)| {
            record.status = "succeeded".into();
            publish(&results, &lock, &mut record, started_at)?;
            Ok((partial, days))
        });
    let release = |lock: RunLock| {
        if let Err(e) = lock.release() {
            tracing::warn!(error = %e, "The lock on the results store could not be released; it lapses at its expiry.");
        }
    };
    match outcome {
        Ok((partial, days)) => {
            release(lock);
            Ok(RunOutcome { partial, days, record, results: store.location() })
        }
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
            release(lock);
            Err((error, record))
        }
    }
}

fn needs_azure(settings: &Settings) -> bool {
    settings.source_blob.is_some() || settings.results_blob.is_some()
}

fn open_results(request: &RunRequest, azure: Option<&Azure>) -> Result<Arc<dyn Store>, RunError> {
    Ok(match (&request.settings.results_blob, azure) {
        (Some(location), Some(azure)) => Arc::new(BlobStore::new(azure.container(location)?, azure.identity.clone())),
        _ => Arc::new(LocalDir::new(&request.out)),
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

fn execute(
    request: &RunRequest,
    azure: Option<&Azure>,
    store: &Results,
    record: &mut RunRecord,
) -> Result<(Partial, Vec<Day>), RunError> {
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
    let (mut plan, reader) = match (&settings.source_blob, azure) {
        (Some(source), Some(azure)) => {
            let reader = BlobReader::new(azure.container(&source.location)?, source.layout, azure.identity.clone());
            (reader.plan(request.window, &options)?, Some(reader))
        }
        _ => (plan_local(&request.inputs, &options)?, None),
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
            None => unit.scan(&options, &mut sink),
            Some(fetched) => unit.scan_fetched(fetched, &options, &mut sink),
        }));
        let stats = scanned.unwrap_or_else(|panic| {
            let message = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_default();
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
    let empty = || (Partial::default(), ScanStats::default());
    // Merged sets are checked, not the sum of the units': a device seen in every file counts once.
    let merge = |a: (Partial, ScanStats), b: (Partial, ScanStats)| {
        let partial = a.0.merge(b.0);
        within_device_budget(&partial, None)?;
        Ok((partial, a.1.merge(b.1, keep)))
    };
    let units = std::mem::take(&mut plan.units);
    let (partial, mut stats) = match &reader {
        None => units.par_iter().map(|unit| scan(unit, None)).try_reduce(empty, merge)?,
        // tokio fetches ahead; rayon decodes what arrives, never more than a few units at once.
        Some(reader) => reader
            .fetch(units, &options)
            .par_bridge()
            .map(|fetched| fetched.and_then(|(unit, bytes)| scan(&unit, Some(bytes))))
            .try_reduce(empty, merge)?,
    };
    bar.finish_and_clear();
    if let Some(reader) = &reader {
        tracing::info!(source = %reader.url(), bytes_listed = plan.bytes, bytes_fetched = reader.bytes_fetched(), "Read the blob source.");
    }
    stats.row_groups_pruned += plan.row_groups_pruned;
    stats.rows_pruned += plan.rows_pruned;
    record.durations_ms.insert("scan", clock.elapsed().as_millis() as u64);

    let days: Vec<Day> = match request.window {
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
    days.par_iter().try_for_each(|&day| -> Result<(), SinkError> {
        store.write_day(&tables::daily(&partial, settings.match_mode, day), day)?;
        store.write_day(&tables::hosts(&partial, settings, day), day)?;
        store.write_day(&tables::processes(&partial, settings, day), day)
    })?;
    record.durations_ms.insert("write", clock.elapsed().as_millis() as u64);
    Ok((partial, days))
}

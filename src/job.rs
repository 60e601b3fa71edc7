//! One run of the job: plan the sources, scan and hunt in parallel, write every table per day,
//! run the detectors day by day, then the run record and the report. The run record is written
//! on failure too, saying which stage failed.
//!
//! A day is complete when its tables and its findings are written: then `_complete/day=<day>.json`
//! is written, last. `backfill` skips the days that have it.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use indicatif::{ProgressBar, ProgressStyle};
use rayon::prelude::*;

use crate::baseline::history::{DayData, History};
use crate::config::Settings;
use crate::detect::{self, Context, Finding};
use crate::hunt::Partial;
use crate::sink::local::LocalDir;
use crate::sink::results::{day_prefix, Results};
use crate::sink::tables::{self, RunRecord, FINDINGS, FINDINGS_COLUMNS};
use crate::sink::{Cell, SinkError};
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
}

/// A finished run: the merged aggregate, the days written, their findings, the run record.
pub struct RunOutcome {
    pub partial: Partial,
    pub days: Vec<Day>,
    pub findings: Vec<Finding>,
    pub record: RunRecord,
}

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Source(#[from] SourceError),
    #[error(transparent)]
    Sink(#[from] SinkError),
    #[error("the detectors could not read their history or write their findings: {0}")]
    Detect(SinkError),
}

impl RunError {
    pub fn stage(&self) -> &'static str {
        match self {
            RunError::Source(_) => "read",
            RunError::Sink(_) => "write",
            RunError::Detect(_) => "detect",
        }
    }
}

/// The object that says a day is complete (its tables and findings written).
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
    let store = Results::new(Arc::new(LocalDir::new(&request.out)));
    let mut record = RunRecord {
        run_id: run_id.clone(),
        started_at,
        status: "running".into(),
        window: request.window,
        match_mode: request.settings.match_mode.as_str().into(),
        sources: request.inputs.iter().map(|p| p.display().to_string()).collect(),
        scope: scope_json(&request.settings),
        ..Default::default()
    };
    match execute(request, &store, &mut record) {
        Ok((partial, days, findings)) => {
            record.status = "succeeded".into();
            finish_record(&store, &mut record, started_at).map_err(|e| (RunError::Sink(e), record.clone()))?;
            // The report is a view of what is committed; a failure to draw it loses nothing.
            if let Err(error) = crate::sink::report::write(&store, &request.settings) {
                tracing::error!(%error, "The report could not be written; `telemetry-hunt report` draws it again.");
            }
            Ok(RunOutcome { partial, days, findings, record })
        }
        Err(error) => {
            record.status = "failed".into();
            record.failed_stage = Some(error.stage().into());
            record.error = Some(error.to_string());
            if let Err(write_error) = finish_record(&store, &mut record, started_at) {
                tracing::error!(error = %write_error, "The run record of the failed run could not be written.");
            }
            Err((error, record))
        }
    }
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

type Executed = (Partial, Vec<Day>, Vec<Finding>);

fn execute(request: &RunRequest, store: &Results, record: &mut RunRecord) -> Result<Executed, RunError> {
    let settings = &request.settings;
    let options = ScanOptions {
        window: request.window,
        time_column: settings.time_column,
        matcher: Arc::new(settings.hosts.clone()),
        reject_samples: settings.reject_samples,
        columns: crate::hunt::aggregate::needed_columns(settings),
    };

    let clock = Instant::now();
    let plan = plan_local(&request.inputs, &options)?;
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
            let stats = unit.scan(&options, &mut |batch| partial.add_batch(settings, &batch))?;
            bar.inc(unit.weight());
            Ok::<_, SourceError>((partial, stats))
        })
        .try_reduce(|| (Partial::default(), ScanStats::default()), |a, b| Ok((a.0.merge(b.0), a.1.merge(b.1, keep))))?;
    bar.finish_and_clear();
    tracing::debug!(
        devices = partial.devices.len(),
        activity = partial.activity.len(),
        identities = partial.identities.len(),
        processes = partial.processes.len(),
        hosts = partial.hosts.len(),
        "Aggregated."
    );
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
        store.write_day(&tables::processes(&partial, settings, day), day)?;
        store.write_day_parquet(&tables::device_hosts(&partial, settings, day), day)
    })?;
    record.durations_ms.insert("write", clock.elapsed().as_millis() as u64);

    let clock = Instant::now();
    let findings = if settings.detect.enabled {
        detect_days(store, settings, &days, &record.run_id).map_err(RunError::Detect)?
    } else {
        Vec::new()
    };
    for finding in &findings {
        *record.findings_by_severity.entry(finding.severity.as_str().to_string()).or_default() += 1;
        *record.findings_by_type.entry(finding.finding_type.as_str().to_string()).or_default() += 1;
    }
    for &day in &days {
        let marker =
            serde_json::json!({"day": day.to_string(), "runId": record.run_id, "version": env!("CARGO_PKG_VERSION")});
        store.store.put(&complete_marker(day), bytes::Bytes::from(marker.to_string())).map_err(SinkError::from)?;
    }
    record.durations_ms.insert("detect", clock.elapsed().as_millis() as u64);
    Ok((partial, days, findings))
}

/// Runs the detectors on `days` in order, each against the stored days before it (the earlier
/// days of this run included), and writes each day's findings.
pub fn detect_days(
    results: &Results,
    settings: &Settings,
    days: &[Day],
    run_id: &str,
) -> Result<Vec<Finding>, SinkError> {
    let stored: BTreeSet<Day> = results.days(tables::DAILY)?.into_iter().collect();
    let mut history = History::new(settings.detect.history_days);
    let mut ordered = days.to_vec();
    ordered.sort();
    let mut all = Vec::new();
    for day in ordered {
        history.prepare(results, &stored, day, settings)?;
        let Some(today) = DayData::load(results, day, settings, &mut history.names)? else { continue };
        let findings = detect::run_day(&Context::new(day, settings, &today, &history));
        write_findings(results, day, &findings, run_id, settings.detect.max_listed_devices)?;
        if !findings.is_empty() {
            tracing::info!(%day, findings = findings.len(), "Findings.");
        }
        history.push(today);
        all.extend(findings);
    }
    Ok(all)
}

/// Writes a day's findings. A finding that an earlier run already wrote exactly so keeps that
/// run's RunId: re-running a day with the same input leaves its findings byte for byte as they
/// were, and RunId says which run first reported each one.
fn write_findings(
    results: &Results,
    day: Day,
    findings: &[Finding],
    run_id: &str,
    max_listed: usize,
) -> Result<(), SinkError> {
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
    let run_ids: Vec<String> = findings
        .iter()
        .map(|finding| {
            let mut row = finding.to_row("", max_listed);
            row[RUN_ID] = Cell::Null;
            match earlier.get(&finding.id()) {
                Some((previous, previous_run)) if *previous == row => previous_run.clone(),
                _ => run_id.to_string(),
            }
        })
        .collect();
    results.write_day(&tables::findings(findings, &run_ids, max_listed), day)
}

/// What a backfill did.
#[derive(Debug, Default)]
pub struct BackfillOutcome {
    /// Days hunted by this backfill, with their findings.
    pub done: Vec<(Day, usize)>,
    /// Days skipped because an earlier run completed them.
    pub skipped: Vec<Day>,
}

/// Builds history for `from..=to` one day at a time (memory stays at one day's aggregates),
/// each day a run of its own with its own run record. A day already complete (see
/// [`complete_marker`]) is skipped unless `force`, so an interrupted backfill resumes where it
/// stopped; a failed day stops the backfill with the run error.
pub fn backfill(
    template: &RunRequest,
    from: Day,
    to: Day,
    force: bool,
    progress: bool,
) -> Result<BackfillOutcome, (RunError, RunRecord)> {
    let store = Results::new(Arc::new(LocalDir::new(&template.out)));
    let complete = complete_days(&store).map_err(|e| (RunError::Sink(e), RunRecord::default()))?;
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
    let mut outcome = BackfillOutcome::default();
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
        let run = run(&request)?;
        let record = &run.record;
        let line = format!(
            "{day} ({} of {}): {} rows scanned, {} matched, {} finding(s), {:.1} s",
            i + 1,
            days.len(),
            record.stats.rows_scanned,
            record.rows_matched(),
            run.findings.len(),
            clock.elapsed().as_secs_f64()
        );
        if progress {
            bar.println(line);
        } else {
            tracing::info!(%day, rows_scanned = record.stats.rows_scanned, findings = run.findings.len(), "Backfilled {line}.");
        }
        outcome.done.push((day, run.findings.len()));
        bar.inc(1);
    }
    bar.finish_and_clear();
    Ok(outcome)
}

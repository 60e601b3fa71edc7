//! Where events come from. Every source yields canonical Arrow batches
//! ([`crate::schema::canonical`]) and the same [`ScanStats`]; the hunt never knows the origin.
//!
//! A source is planned into [`Unit`]s (a Parquet row-group range, a JSON-lines or CSV file) that
//! the pipeline scans in parallel. Sources push the host test down ([`ScanOptions::matcher`]),
//! so columns other than the time and RemoteUrl are decoded only for rows that can matter.

pub mod blob;
pub mod canonical;
pub mod csv;
pub mod json;
pub mod local;
pub mod log_analytics;
pub mod pages;
pub mod parquet;
pub mod url_pages;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use arrow_array::RecordBatch;

use crate::config::{Limits, TimeColumn};
use crate::hunt::host::HostMatcher;
use crate::time::Day;

pub use local::{plan_local, Plan};

/// A blob a unit reads: its path in the container and its size.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectRef {
    pub location: object_store::path::Path,
    pub size: u64,
}

/// What every scan needs to know.
#[derive(Debug, Clone)]
pub struct ScanOptions {
    /// Inclusive UTC days; `None` keeps every day.
    pub window: Option<(Day, Day)>,
    pub time_column: TimeColumn,
    pub matcher: Arc<HostMatcher>,
    /// How many malformed-row samples to keep.
    pub reject_samples: usize,
    /// Input columns to decode besides the time (columnar sources only).
    pub columns: Vec<&'static str>,
    pub limits: Limits,
}

impl ScanOptions {
    pub fn in_window(&self, day: Day) -> bool {
        self.window.is_none_or(|(from, to)| from <= day && day <= to)
    }
}

/// Malformed rows: counted per reason, a few kept as samples (`file:row: reason`).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Rejects {
    pub by_reason: BTreeMap<String, u64>,
    pub samples: Vec<String>,
}

impl Rejects {
    pub fn add(&mut self, reason: &str, sample: impl FnOnce() -> String, keep: usize) {
        *self.by_reason.entry(reason.to_string()).or_default() += 1;
        if self.samples.len() < keep {
            self.samples.push(sample());
        }
    }

    pub fn total(&self) -> u64 {
        self.by_reason.values().sum()
    }

    pub fn merge(&mut self, other: Rejects, keep: usize) {
        for (reason, n) in other.by_reason {
            *self.by_reason.entry(reason).or_default() += n;
        }
        for s in other.samples {
            if self.samples.len() < keep {
                self.samples.push(s);
            }
        }
    }
}

/// What a scan saw, whether or not rows matched.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ScanStats {
    /// Rows read from the input (pruned row groups are not read and not counted here).
    pub rows_scanned: u64,
    /// Valid rows per UTC day, inside the window.
    pub rows_per_day: BTreeMap<Day, u64>,
    pub rows_outside_window: u64,
    pub rejects: Rejects,
    pub row_groups_read: u64,
    pub row_groups_pruned: u64,
    /// Rows in row groups skipped by their time statistics.
    pub rows_pruned: u64,
}

impl ScanStats {
    pub fn merge(mut self, other: ScanStats, keep: usize) -> ScanStats {
        self.rows_scanned += other.rows_scanned;
        for (day, n) in other.rows_per_day {
            *self.rows_per_day.entry(day).or_default() += n;
        }
        self.rows_outside_window += other.rows_outside_window;
        self.rejects.merge(other.rejects, keep);
        self.row_groups_read += other.row_groups_read;
        self.row_groups_pruned += other.row_groups_pruned;
        self.rows_pruned += other.rows_pruned;
        self
    }

    /// Counts one row's time: in the window, outside it, or rejected.
    pub fn count_time(&mut self, day: Day, options: &ScanOptions) -> bool {
        self.rows_scanned += 1;
        if options.in_window(day) {
            *self.rows_per_day.entry(day).or_default() += 1;
            true
        } else {
            self.rows_outside_window += 1;
            false
        }
    }

    /// Takes back a row counted in its day (by its time, in the window) that turned out to be
    /// a reject.
    pub fn uncount_day(&mut self, day: Day) {
        if let Some(rows) = self.rows_per_day.get_mut(&day) {
            *rows -= 1;
            if *rows == 0 {
                self.rows_per_day.remove(&day);
            }
        }
    }
}

/// Row counts per day for one batch: a batch spans a day or two, so the run's per-day map is
/// touched once per day rather than once per row.
#[derive(Debug, Default)]
pub struct DayCounts {
    days: Vec<(Day, u64)>,
    outside: u64,
}

impl DayCounts {
    /// Counts a valid row time; `true` when the day is inside the window.
    #[inline]
    pub fn count(&mut self, day: Day, options: &ScanOptions) -> bool {
        if !options.in_window(day) {
            self.outside += 1;
            return false;
        }
        match self.days.iter_mut().find(|(d, _)| *d == day) {
            Some((_, n)) => *n += 1,
            None => self.days.push((day, 1)),
        }
        true
    }

    /// Counts `rows` valid row times on one day.
    pub fn count_many(&mut self, day: Day, rows: u64, options: &ScanOptions) {
        if rows == 0 {
            return;
        }
        if !options.in_window(day) {
            self.outside += rows;
            return;
        }
        match self.days.iter_mut().find(|(d, _)| *d == day) {
            Some((_, n)) => *n += rows,
            None => self.days.push((day, rows)),
        }
    }

    pub fn add_to(self, stats: &mut ScanStats) {
        stats.rows_outside_window += self.outside;
        stats.rows_scanned += self.outside;
        for (day, n) in self.days {
            stats.rows_scanned += n;
            *stats.rows_per_day.entry(day).or_default() += n;
        }
    }
}

/// What a caught panic said (a reader library's, on a corrupt file).
pub fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_default()
}

/// A RemotePort text: blank is missing; otherwise an integer from 0 to 65535, so that `-1`,
/// `NaN`, `443.5` or `70000` are rejected rather than reported as ports.
pub fn parse_port(text: &str) -> Result<Option<i32>, ()> {
    let text = text.trim();
    if text.is_empty() {
        return Ok(None);
    }
    text.parse::<u16>().map(|p| Some(i32::from(p))).map_err(|_| ())
}

/// An input that cannot be read at all. The run fails with its path.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("cannot read `{path}`: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("`{path}` is not a readable Parquet file: {message}")]
    Parquet { path: PathBuf, message: String },
    #[error("`{path}`: {message}")]
    Format { path: PathBuf, message: String },
    #[error("`{path}` has no `{wanted}` column{fallback}; set `time_column` in the configuration to the column that holds the event time")]
    NoTimeColumn { path: PathBuf, wanted: &'static str, fallback: &'static str },
    #[error("input `{path}` does not exist; pass an existing file or folder to `--input`")]
    Missing { path: PathBuf },
    #[error("no Parquet, JSON lines or CSV file under {inputs}{skipped}; pass the folder that holds the exports")]
    NoFiles { inputs: String, skipped: String },
    #[error("cannot read `{url}`: {message}")]
    Blob { url: String, message: String },
    #[error("{}{exceeded}", path_prefix(path.as_deref()))]
    Limit { path: Option<PathBuf>, exceeded: LimitExceeded },
}

fn path_prefix(path: Option<&std::path::Path>) -> String {
    path.map(|p| format!("`{}`: ", p.display())).unwrap_or_default()
}

impl SourceError {
    /// An I/O error reading `path`, or the limit a guarded reader stopped at.
    pub fn io(path: &std::path::Path, source: std::io::Error) -> SourceError {
        let limit = source.get_ref().and_then(|inner| inner.downcast_ref::<LimitExceeded>()).cloned();
        match limit {
            Some(exceeded) => SourceError::Limit { path: Some(path.to_path_buf()), exceeded },
            None => SourceError::Io { path: path.to_path_buf(), source },
        }
    }
}

/// A resource bound of `[limits]` that the input went past.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{what} exceeds `limits.{setting}` = {limit}; if the input is genuine, raise `{setting}` in the `[limits]` section of the configuration")]
pub struct LimitExceeded {
    pub what: &'static str,
    /// The key in `[limits]`.
    pub setting: &'static str,
    pub limit: u64,
}

/// One piece of scanning work.
#[derive(Debug, Clone)]
pub enum Unit {
    Parquet(parquet::ParquetUnit),
    Json(json::JsonUnit),
    Csv(csv::CsvUnit),
}

impl Unit {
    /// Scans the unit, handing each canonical batch of relevant rows to `sink`.
    pub fn scan(&self, options: &ScanOptions, sink: &mut dyn FnMut(RecordBatch)) -> Result<ScanStats, SourceError> {
        match self {
            Unit::Parquet(u) => u.scan(options, sink),
            Unit::Json(u) => u.scan(options, sink),
            Unit::Csv(u) => u.scan(options, sink),
        }
    }

    /// The file or blob URL the unit reads.
    pub fn path(&self) -> &std::path::Path {
        match self {
            Unit::Parquet(u) => &u.path,
            Unit::Json(u) => &u.path,
            Unit::Csv(u) => &u.path,
        }
    }

    /// The first and last UTC day its rows can fall on, when known before reading (Parquet time
    /// statistics); JSON lines and CSV can hold any day.
    pub fn days(&self) -> Option<(Day, Day)> {
        match self {
            Unit::Parquet(u) => u.days,
            Unit::Json(_) | Unit::Csv(_) => None,
        }
    }

    /// Rows this unit will read, for the progress bar (0 when unknown before reading).
    pub fn weight(&self) -> u64 {
        match self {
            Unit::Parquet(u) => u.rows,
            Unit::Json(u) => u.bytes,
            Unit::Csv(u) => u.bytes,
        }
    }
}

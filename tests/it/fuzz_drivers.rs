//! What each fuzz target runs on one input, with the properties it asserts. Shared by the fuzz
//! crate (`fuzz/`, which includes this file) and the replay of `tests/fuzz-regressions/`, so a
//! regression input runs exactly the code that once failed on it.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use parquet::arrow::arrow_reader::{ArrowReaderMetadata, ArrowReaderOptions};
use telemetry_hunt::config::{Config, Limits, Settings};
use telemetry_hunt::hunt::host::{kql_domain, normalized_host, MatchMode};
use telemetry_hunt::hunt::Partial;
use telemetry_hunt::sink::tables;
use telemetry_hunt::source::csv::CsvUnit;
use telemetry_hunt::source::json::JsonUnit;
use telemetry_hunt::source::local::maybe_gunzip;
use telemetry_hunt::source::parquet::{plan_metadata, ColumnChunks};
use telemetry_hunt::source::{ScanOptions, ScanStats, SourceError};
use telemetry_hunt::time::Day;

pub fn settings() -> &'static Settings {
    static SETTINGS: std::sync::OnceLock<Settings> = std::sync::OnceLock::new();
    SETTINGS.get_or_init(|| Config::default().validate().unwrap())
}

/// Scan options with small limits (a gzip bomb or an endless line stops long before the fuzzer's
/// memory cap); `windowed` also exercises row-group pruning and the outside-the-window count.
pub fn options(windowed: bool) -> ScanOptions {
    let s = settings();
    ScanOptions {
        window: windowed.then(|| (Day::parse("2026-11-01").unwrap(), Day::parse("2026-11-30").unwrap())),
        time_column: s.time_column,
        matcher: Arc::new(s.hosts.clone()),
        reject_samples: 5,
        columns: telemetry_hunt::hunt::aggregate::needed_columns(s),
        limits: Limits { max_line_bytes: 1 << 20, max_decompressed_bytes: 16 << 20, ..Limits::default() },
    }
}

#[derive(Default)]
pub struct Hunt {
    pub partial: Partial,
    pub rows: u64,
}

impl Hunt {
    pub fn add(&mut self, batch: arrow_array::RecordBatch) {
        self.rows += batch.num_rows() as u64;
        self.partial.add_batch(settings(), &batch);
    }

    pub fn finish(self, scanned: Result<ScanStats, SourceError>) {
        let Ok(stats) = scanned else { return };
        let accounted = stats.rows_per_day.values().sum::<u64>() + stats.rows_outside_window + stats.rejects.total();
        assert_eq!(stats.rows_scanned, accounted, "every row is in a day, outside the window or rejected");
        assert_eq!(self.partial.counts.rows_hunted, self.rows);
        for &day in stats.rows_per_day.keys().take(3) {
            tables::daily(&self.partial, settings().match_mode, day).to_record_batch().unwrap();
            tables::hosts(&self.partial, settings(), day).to_record_batch().unwrap();
            tables::processes(&self.partial, settings(), day).to_record_batch().unwrap();
        }
    }
}

pub fn host(data: &[u8]) {
    let Ok(url) = std::str::from_utf8(data) else { return };
    assert_eq!(kql_domain(url).is_none(), url.is_empty());
    if let Some(host) = normalized_host(url) {
        assert_eq!(normalized_host(&host).as_deref(), Some(host.as_ref()), "idempotent");
    }
    let hosts = &settings().hosts;
    let class = hosts.classify(Some(url));
    assert!(!class.reference(MatchMode::Kql) || class.reference(MatchMode::Normalized));
    // relevant: a telemetry row, or a look-alike's for the detectors
    let relevant = hosts.is_relevant(url);
    assert_eq!(relevant, class.kql_reference || class.host.is_some() || class.lookalike.is_some());
    // the page search may send more values to that test, never fewer
    assert!(!relevant || hosts.prefilter().may_match(url.as_bytes()), "the prefilter drops {url:?}");
}

pub fn json_lines(data: &[u8]) {
    let unit = JsonUnit { path: PathBuf::from("fuzz.jsonl"), bytes: data.len() as u64, object: None };
    scan_text(data, |reader, options, sink| unit.scan_reader(reader, options, sink));
}

pub fn csv(data: &[u8]) {
    let unit = CsvUnit { path: PathBuf::from("fuzz.csv"), bytes: data.len() as u64 };
    scan_text(data, |reader, options, sink| unit.scan_reader(reader, options, sink));
}

type TextScan<'a> = &'a mut dyn FnMut(arrow_array::RecordBatch);

/// A text source on `data`, plain or gzip, as a file's bytes.
fn scan_text(
    data: &[u8],
    scan: impl FnOnce(Box<dyn std::io::BufRead + Send>, &ScanOptions, TextScan<'_>) -> Result<ScanStats, SourceError>,
) {
    let options = options(data.len() % 2 == 1);
    let Ok(reader) = maybe_gunzip(std::io::Cursor::new(data.to_vec()), &options.limits) else { return };
    let mut hunt = Hunt::default();
    let scanned = scan(reader, &options, &mut |b| hunt.add(b));
    hunt.finish(scanned);
}

pub fn parquet(data: &[u8]) {
    let options = options(data.len() % 2 == 1);
    let bytes = Bytes::copy_from_slice(data);
    let Ok(metadata) = ArrowReaderMetadata::load(&bytes, ArrowReaderOptions::new()) else { return };
    let Ok(planned) = plan_metadata(Path::new("fuzz.parquet"), None, metadata, &options) else { return };
    for unit in planned.units {
        let chunks = ColumnChunks::from_fetched(bytes.len() as u64, vec![(0, bytes.clone())]);
        let mut hunt = Hunt::default();
        let scanned = unit.scan_chunks(chunks, &options, &mut |b| hunt.add(b));
        hunt.finish(scanned);
    }
}

/// What validates must also print and parse back to the same configuration.
pub fn config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let Ok(config) = Config::from_toml(text) else { return };
    if config.validate().is_ok() {
        let printed = toml::to_string(&config).unwrap();
        assert_eq!(Config::from_toml(&printed).as_ref(), Ok(&config), "{printed}");
    }
}

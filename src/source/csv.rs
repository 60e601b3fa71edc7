//! The Defender portal's advanced-hunting CSV export: a header row of column names (any
//! projection, e.g. a `union` of several tables), empty cell = missing, timestamps with a
//! 7-digit fraction. Columns the job does not read are never converted.

use std::borrow::Cow;
use std::io::BufRead;
use std::path::PathBuf;

use arrow_array::RecordBatch;

use super::canonical::{RowBuilder, RowValues, BATCH_ROWS};
use super::local::open_maybe_gzip;
use super::{ScanOptions, ScanStats, SourceError};
use crate::config::TimeColumn;
use crate::schema::{self, col, CANONICAL_COLUMNS};
use crate::time::{parse_timestamp_micros, Day};

#[derive(Debug, Clone)]
pub struct CsvUnit {
    pub path: PathBuf,
    pub bytes: u64,
}

/// A header without the byte-order mark that Excel and PowerShell's Export-Csv write first.
fn unmarked(index: usize, header: &[u8]) -> &[u8] {
    match index {
        0 => header.strip_prefix("\u{feff}".as_bytes()).unwrap_or(header),
        _ => header,
    }
}

/// A read failure (or a `[limits]` bound, see [`SourceError::io`]) fails the file.
fn csv_error(path: &std::path::Path, e: csv::Error, context: &str) -> SourceError {
    let message = format!("{context}: {e}");
    match e.into_kind() {
        csv::ErrorKind::Io(source) => SourceError::io(path, source),
        _ => SourceError::Format { path: path.to_path_buf(), message },
    }
}

impl CsvUnit {
    pub fn scan(&self, options: &ScanOptions, sink: &mut dyn FnMut(RecordBatch)) -> Result<ScanStats, SourceError> {
        self.scan_reader(open_maybe_gzip(&self.path, &options.limits)?, options, sink)
    }

    /// Scans CSV text from `input` (gzip already undone); `path` only names it in messages.
    pub fn scan_reader(
        &self,
        input: Box<dyn BufRead + Send>,
        options: &ScanOptions,
        sink: &mut dyn FnMut(RecordBatch),
    ) -> Result<ScanStats, SourceError> {
        let path = &self.path;
        let mut reader = csv::ReaderBuilder::new().flexible(true).from_reader(input);
        let headers = match reader.byte_headers() {
            Ok(headers) => headers.clone(),
            Err(e) => return Err(csv_error(path, e, "cannot read the CSV header")),
        };
        let position = |name: &str| headers.iter().enumerate().position(|(i, h)| unmarked(i, h) == name.as_bytes());
        let time_index = match options.time_column {
            TimeColumn::Timestamp => position(schema::TIMESTAMP).or_else(|| position(schema::TIME_GENERATED)),
            TimeColumn::TimeGenerated => position(schema::TIME_GENERATED),
        }
        .ok_or_else(|| SourceError::NoTimeColumn {
            path: path.clone(),
            wanted: match options.time_column {
                TimeColumn::Timestamp => "Timestamp",
                TimeColumn::TimeGenerated => "TimeGenerated",
            },
            fallback: "",
        })?;
        let columns: Vec<Option<usize>> = CANONICAL_COLUMNS.iter().map(|c| position(c)).collect();
        let url_index = columns[col::REMOTE_URL];

        let mut stats = ScanStats::default();
        let mut builder = RowBuilder::default();
        let mut record = csv::ByteRecord::new();
        let mut line = 1u64;
        loop {
            match reader.read_byte_record(&mut record) {
                Ok(false) => break,
                Ok(true) => {}
                Err(e) => {
                    stats.rows_scanned += 1;
                    let sample = || format!("{}: {e}", path.display());
                    stats.rejects.add("csv: malformed record", sample, options.reject_samples);
                    if matches!(e.kind(), csv::ErrorKind::Io(_)) {
                        return Err(csv_error(path, e, "cannot read the CSV file"));
                    }
                    continue;
                }
            }
            line = record.position().map_or(line + 1, |p| p.line());
            let field = |index: Option<usize>| -> Result<Option<Cow<'_, str>>, ()> {
                match index.and_then(|i| record.get(i)) {
                    None | Some(b"") => Ok(None),
                    Some(bytes) => std::str::from_utf8(bytes).map(|s| Some(Cow::Borrowed(s))).map_err(|_| ()),
                }
            };
            let reject = |stats: &mut ScanStats, reason: &str| {
                stats.rows_scanned += 1;
                let sample = || format!("{}:{line}: {reason}", path.display());
                stats.rejects.add(reason, sample, options.reject_samples);
            };
            let time = match field(Some(time_index)) {
                Ok(None) => {
                    reject(&mut stats, "time: missing");
                    continue;
                }
                Ok(Some(t)) => match parse_timestamp_micros(&t) {
                    Some(t) => t,
                    None => {
                        reject(&mut stats, "time: not a valid timestamp");
                        continue;
                    }
                },
                Err(()) => {
                    reject(&mut stats, "csv: not UTF-8");
                    continue;
                }
            };
            let Ok(url) = field(url_index) else {
                reject(&mut stats, "csv: not UTF-8");
                continue;
            };
            if !url.as_deref().is_some_and(|u| options.matcher.is_relevant(u)) {
                stats.count_time(Day::of_micros(time), options);
                continue;
            }
            let mut row = RowValues { time_micros: time, ..Default::default() };
            let mut bad = None;
            for (i, index) in columns.iter().enumerate() {
                if i == col::TIME {
                    continue;
                }
                match field(*index) {
                    Ok(value) => row.text[i] = value,
                    Err(()) => bad = Some("csv: not UTF-8".to_string()),
                }
            }
            if let Some(port) = row.text[col::REMOTE_PORT].take() {
                match super::parse_port(&port) {
                    Ok(p) => row.remote_port = p,
                    Err(()) => bad = Some("type: RemotePort".to_string()),
                }
            }
            if let Some(reason) = bad {
                reject(&mut stats, &reason);
                continue;
            }
            if stats.count_time(Day::of_micros(time), options) {
                builder.push(&row);
                if builder.len() >= BATCH_ROWS {
                    sink(builder.finish());
                }
            }
        }
        if !builder.is_empty() {
            sink(builder.finish());
        }
        Ok(stats)
    }
}

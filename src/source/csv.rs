//! The Defender portal's advanced-hunting CSV export: a header row of column names (any
//! projection, e.g. a `union` of several tables), empty cell = missing, timestamps with a
//! 7-digit fraction. Columns the job does not read are never converted.

use std::borrow::Cow;
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

impl CsvUnit {
    pub fn scan(&self, options: &ScanOptions, sink: &mut dyn FnMut(RecordBatch)) -> Result<ScanStats, SourceError> {
        let path = &self.path;
        let format_error = |message: String| SourceError::Format { path: path.clone(), message };
        let mut reader = csv::ReaderBuilder::new().flexible(true).from_reader(open_maybe_gzip(path)?);
        let headers =
            reader.byte_headers().map_err(|e| format_error(format!("cannot read the CSV header: {e}")))?.clone();
        let position = |name: &str| headers.iter().position(|h| h == name.as_bytes());
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
                        return Err(format_error(e.to_string()));
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
                match port.trim().parse::<i32>() {
                    Ok(p) => row.remote_port = Some(p),
                    Err(_) => bad = Some("type: RemotePort".to_string()),
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

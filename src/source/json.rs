//! JSON lines as Defender and Log Analytics write them: the streaming-export envelope
//! (`{"time":…,"properties":{…}}`, CRLF line ends, event time from `properties.Timestamp`, not
//! the envelope's `time`), flat Log Analytics export lines, `{"records":[…]}` batches, and a
//! single (pretty-printed) JSON document. Plain or gzip. A malformed line is counted and
//! sampled; the rest of the file is still read.

use std::borrow::Cow;
use std::io::{BufRead, Read};
use std::path::{Path, PathBuf};

use arrow_array::RecordBatch;
use serde::Deserialize;
use serde_json::value::RawValue;

use super::canonical::{RowBuilder, RowValues, BATCH_ROWS};
use super::local::open_maybe_gzip;
use super::{LimitExceeded, ScanOptions, ScanStats, SourceError};
use crate::config::TimeColumn;
use crate::schema::col;
use crate::time::{parse_timestamp_micros, Day};

#[derive(Debug, Clone)]
pub struct JsonUnit {
    /// The file, or the blob's URL.
    pub path: PathBuf,
    pub bytes: u64,
    /// The blob the unit reads; `None` for the local file at `path`.
    pub object: Option<super::ObjectRef>,
}

/// The keys the job reads; everything else on the line is skipped unparsed.
#[derive(Deserialize, Default)]
struct RawRecord<'a> {
    #[serde(borrow, rename = "Timestamp")]
    timestamp: Option<&'a RawValue>,
    #[serde(borrow, rename = "TimeGenerated")]
    time_generated: Option<&'a RawValue>,
    #[serde(borrow, rename = "DeviceId")]
    device_id: Option<&'a RawValue>,
    #[serde(borrow, rename = "DeviceName")]
    device_name: Option<&'a RawValue>,
    #[serde(borrow, rename = "ActionType")]
    action_type: Option<&'a RawValue>,
    #[serde(borrow, rename = "RemoteUrl")]
    remote_url: Option<&'a RawValue>,
    #[serde(borrow, rename = "RemoteIP")]
    remote_ip: Option<&'a RawValue>,
    #[serde(borrow, rename = "RemotePort")]
    remote_port: Option<&'a RawValue>,
    #[serde(borrow, rename = "Protocol")]
    protocol: Option<&'a RawValue>,
    #[serde(borrow, rename = "InitiatingProcessFileName")]
    process_file_name: Option<&'a RawValue>,
    #[serde(borrow, rename = "InitiatingProcessFolderPath")]
    process_folder_path: Option<&'a RawValue>,
    #[serde(borrow, rename = "InitiatingProcessSHA1")]
    process_sha1: Option<&'a RawValue>,
    #[serde(borrow, rename = "InitiatingProcessVersionInfoCompanyName")]
    process_company: Option<&'a RawValue>,
    #[serde(borrow, rename = "InitiatingProcessAccountName")]
    process_account: Option<&'a RawValue>,
    #[serde(borrow, rename = "InitiatingProcessParentFileName")]
    process_parent: Option<&'a RawValue>,
    #[serde(borrow, rename = "InitiatingProcessCommandLine")]
    process_command_line: Option<&'a RawValue>,
    #[serde(borrow, rename = "MachineGroup")]
    machine_group: Option<&'a RawValue>,
    /// The streaming-export envelope.
    #[serde(borrow)]
    properties: Option<&'a RawValue>,
    /// Event Hub / diagnostic-settings batches.
    #[serde(borrow)]
    records: Option<&'a RawValue>,
}

/// A string column's value: strings as they are, numbers and booleans as their text (Kusto's
/// `tostring`), objects and arrays are a wrong type.
fn text<'a>(raw: Option<&'a RawValue>, field: &str) -> Result<Option<Cow<'a, str>>, String> {
    let Some(raw) = raw else { return Ok(None) };
    let s = raw.get();
    match s.as_bytes().first() {
        Some(b'"') if !s.contains('\\') => Ok(Some(Cow::Borrowed(&s[1..s.len() - 1]))),
        Some(b'"') => {
            serde_json::from_str::<String>(s).map(|v| Some(Cow::Owned(v))).map_err(|e| format!("{field}: {e}"))
        }
        Some(b'n') => Ok(None),
        Some(b'{') => Err(format!("{field}: expected a string, found an object")),
        Some(b'[') => Err(format!("{field}: expected a string, found an array")),
        _ => Ok(Some(Cow::Borrowed(s))),
    }
}

fn port(raw: Option<&RawValue>) -> Result<Option<i32>, String> {
    match text(raw, "RemotePort")? {
        None => Ok(None),
        Some(t) => super::parse_port(&t).map_err(|()| "RemotePort: not a port number (0 to 65535)".to_string()),
    }
}

/// Why a record was rejected.
enum Rejected {
    Time(&'static str),
    Field(String),
}

/// Reads one record into `builder` if it is valid, in the window and relevant.
fn add_record(
    rec: &RawRecord<'_>,
    options: &ScanOptions,
    stats: &mut ScanStats,
    builder: &mut RowBuilder,
) -> Result<(), Rejected> {
    if let Some(props) = rec.properties {
        let inner: RawRecord<'_> = serde_json::from_str(props.get())
            .map_err(|e| Rejected::Field(format!("properties: not a JSON object ({e})")))?;
        return add_record(&inner, options, stats, builder);
    }
    let time_raw = match options.time_column {
        TimeColumn::Timestamp => rec.timestamp.or(rec.time_generated),
        TimeColumn::TimeGenerated => rec.time_generated,
    };
    let time = match text(time_raw, "Timestamp").map_err(|_| Rejected::Time("time: not a valid timestamp"))? {
        None => return Err(Rejected::Time("time: missing")),
        Some(t) if t.is_empty() => return Err(Rejected::Time("time: missing")),
        Some(t) => parse_timestamp_micros(&t).ok_or(Rejected::Time("time: not a valid timestamp"))?,
    };
    let url = text(rec.remote_url, "RemoteUrl").map_err(Rejected::Field)?;
    let relevant = url.as_deref().is_some_and(|u| !u.is_empty() && options.matcher.is_relevant(u));
    if !relevant {
        stats.count_time(Day::of_micros(time), options);
        return Ok(());
    }
    // Fields are checked before the row is counted, so a rejected row is counted once.
    let mut row = RowValues {
        time_micros: time,
        remote_port: port(rec.remote_port).map_err(Rejected::Field)?,
        ..Default::default()
    };
    let fields: [(usize, Option<&RawValue>, &str); 12] = [
        (col::DEVICE_ID, rec.device_id, "DeviceId"),
        (col::DEVICE_NAME, rec.device_name, "DeviceName"),
        (col::ACTION_TYPE, rec.action_type, "ActionType"),
        (col::REMOTE_IP, rec.remote_ip, "RemoteIP"),
        (col::PROTOCOL, rec.protocol, "Protocol"),
        (col::PROCESS_FILE_NAME, rec.process_file_name, "InitiatingProcessFileName"),
        (col::PROCESS_FOLDER_PATH, rec.process_folder_path, "InitiatingProcessFolderPath"),
        (col::PROCESS_SHA1, rec.process_sha1, "InitiatingProcessSHA1"),
        (col::PROCESS_COMPANY, rec.process_company, "InitiatingProcessVersionInfoCompanyName"),
        (col::PROCESS_ACCOUNT, rec.process_account, "InitiatingProcessAccountName"),
        (col::PROCESS_PARENT, rec.process_parent, "InitiatingProcessParentFileName"),
        (col::PROCESS_COMMAND_LINE, rec.process_command_line, "InitiatingProcessCommandLine"),
    ];
    for (index, raw, name) in fields {
        row.text[index] = text(raw, name).map_err(Rejected::Field)?;
    }
    row.text[col::MACHINE_GROUP] = text(rec.machine_group, "MachineGroup").map_err(Rejected::Field)?;
    if !stats.count_time(Day::of_micros(time), options) {
        return Ok(());
    }
    row.text[col::REMOTE_URL] = url;
    builder.push(&row);
    Ok(())
}

struct Scan<'o, 's> {
    options: &'o ScanOptions,
    stats: ScanStats,
    builder: RowBuilder,
    sink: &'s mut dyn FnMut(RecordBatch),
    path: &'o Path,
}

impl Scan<'_, '_> {
    fn reject(&mut self, reason: &str, location: &str, detail: &str) {
        self.stats.rows_scanned += 1;
        let path = self.path.display();
        self.stats.rejects.add(reason, || format!("{path}:{location}: {detail}"), self.options.reject_samples);
    }

    /// One JSON value: a record, an envelope, `{"records":[…]}` or an array of those.
    fn value(&mut self, json: &str, location: &str) {
        let trimmed = json.trim_start();
        if trimmed.starts_with('[') {
            match serde_json::from_str::<Vec<&RawValue>>(trimmed) {
                Ok(items) => {
                    for (i, item) in items.iter().enumerate() {
                        self.value(item.get(), &format!("{location} item {i}"));
                    }
                }
                Err(e) => self.reject("json: not valid JSON", location, &e.to_string()),
            }
            return;
        }
        if !trimmed.starts_with('{') {
            self.reject("json: not an object", location, &snippet(trimmed));
            return;
        }
        let rec: RawRecord<'_> = match serde_json::from_str(trimmed) {
            Ok(rec) => rec,
            Err(e) => return self.reject("json: not valid JSON", location, &e.to_string()),
        };
        if let Some(records) = rec.records {
            self.value(records.get(), &format!("{location} records"));
            return;
        }
        match add_record(&rec, self.options, &mut self.stats, &mut self.builder) {
            Ok(()) => {}
            Err(Rejected::Time(reason)) => self.reject(reason, location, reason),
            Err(Rejected::Field(message)) => {
                let reason = format!("type: {}", message.split(':').next().unwrap_or("field"));
                self.reject(&reason, location, &message)
            }
        }
        if self.builder.len() >= BATCH_ROWS {
            (self.sink)(self.builder.finish());
        }
    }
}

fn snippet(text: &str) -> String {
    text.chars().take(80).collect()
}

impl JsonUnit {
    /// Scans the unit's local file.
    pub fn scan(&self, options: &ScanOptions, sink: &mut dyn FnMut(RecordBatch)) -> Result<ScanStats, SourceError> {
        self.scan_reader(open_maybe_gzip(&self.path, &options.limits)?, options, sink)
    }

    /// Scans the unit's lines from `reader` (a local file or a blob's stream, gzip already
    /// undone).
    pub fn scan_reader(
        &self,
        mut reader: Box<dyn BufRead + Send>,
        options: &ScanOptions,
        sink: &mut dyn FnMut(RecordBatch),
    ) -> Result<ScanStats, SourceError> {
        let io = |source| SourceError::io(&self.path, source);
        let mut scan =
            Scan { options, stats: ScanStats::default(), builder: RowBuilder::default(), sink, path: &self.path };
        let mut line = Vec::new();
        let mut number = 0u64;
        let mut first = true;
        loop {
            line.clear();
            if reader.read_until(b'\n', &mut line).map_err(io)? == 0 {
                break;
            }
            number += 1;
            let Ok(text) = std::str::from_utf8(&line) else {
                scan.reject("json: not UTF-8", &format!("line {number}"), "the line is not valid UTF-8");
                continue;
            };
            let text = text.trim();
            // A byte-order mark (Windows tools write one) is not part of the first value.
            let text = if number == 1 { text.trim_start_matches('\u{feff}').trim_start() } else { text };
            if text.is_empty() {
                continue;
            }
            // A first line that is an unfinished value means one pretty-printed document.
            if first && serde_json::from_str::<&RawValue>(text).is_err_and(|e| e.is_eof()) {
                // The whole document is held in memory: it is bounded like a line.
                let max = options.limits.max_line_bytes;
                let mut rest = String::new();
                (&mut reader).take(max.saturating_add(1)).read_to_string(&mut rest).map_err(io)?;
                if (line.len() + rest.len()) as u64 > max {
                    let what = "a JSON document that is not one value per line";
                    let exceeded = LimitExceeded { what, setting: "max_line_bytes", limit: max };
                    return Err(SourceError::Limit { path: Some(self.path.clone()), exceeded });
                }
                let document = format!("{text}{rest}");
                let stream = serde_json::Deserializer::from_str(&document).into_iter::<&RawValue>();
                for (i, value) in stream.enumerate() {
                    match value {
                        Ok(value) => scan.value(value.get(), &format!("document {}", i + 1)),
                        Err(e) => {
                            scan.reject("json: not valid JSON", &format!("document {}", i + 1), &e.to_string());
                            break;
                        }
                    }
                }
                break;
            }
            first = false;
            scan.value(text, &format!("line {number}"));
        }
        if !scan.builder.is_empty() {
            (scan.sink)(scan.builder.finish());
        }
        Ok(scan.stats)
    }
}

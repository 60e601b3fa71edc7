//! A query answer (`{"tables":[{"columns":[…],"rows":[[…],…]}], "error":{…}}`) decoded into
//! canonical batches, each cell read by the type the answer's metadata declares.
//!
//! Rows are streamed from the answer text straight into the batch builder, so a 100 MB answer
//! is never held twice. A cell that contradicts its declared type rejects its row (counted per
//! reason, sampled with the window, row and column); a shape the job cannot read at all (no
//! table, a missing time column) fails the window with a message naming both.

use std::borrow::Cow;
use std::fmt;

use arrow_array::RecordBatch;
use serde::de::{DeserializeSeed, SeqAccess, Visitor};
use serde::Deserialize;
use serde_json::value::RawValue;

use super::kql::{Pushdown, Window, DAY, EVENTS};
use crate::schema::{col, CANONICAL_COLUMNS, REMOTE_URL};
use crate::source::canonical::{RowBuilder, RowValues, BATCH_ROWS};
use crate::source::{ScanOptions, ScanStats};
use crate::time::{parse_timestamp_micros, Day};

/// Canonical rows, with how many events each stands for when the answer was pre-aggregated.
#[derive(Debug, Clone)]
pub struct EventBatch {
    pub batch: RecordBatch,
    /// `None`: one event per row.
    pub events: Option<Vec<u64>>,
}

/// What one answer holds.
#[derive(Debug)]
pub enum Decoded {
    /// The window's data, whole.
    Complete { batches: Vec<EventBatch>, stats: ScanStats, rows_returned: u64 },
    /// Not the whole window (a `PartialError`, or as many rows as the API returns at most):
    /// nothing of it may be counted; the window is split instead.
    Incomplete(String),
}

/// How to read the answers of this run's queries.
#[derive(Debug, Clone, Copy)]
pub struct AnswerShape {
    pub time_column: &'static str,
    pub pushdown: Pushdown,
    /// The API's row cap: an answer this long may have been cut.
    pub max_rows: u64,
}

#[derive(Deserialize)]
struct Answer<'a> {
    #[serde(borrow, default)]
    tables: Vec<AnswerTable<'a>>,
    #[serde(default)]
    error: Option<serde_json::Value>,
}

#[derive(Deserialize)]
struct AnswerTable<'a> {
    #[serde(default)]
    name: String,
    #[serde(default)]
    columns: Vec<AnswerColumn>,
    #[serde(borrow, default)]
    rows: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct AnswerColumn {
    name: String,
    #[serde(rename = "type", default)]
    kind: String,
}

/// The declared column types of the query API.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Bool,
    Datetime,
    Dynamic,
    Int,
    Long,
    Real,
    String,
    Guid,
    Timespan,
    Decimal,
    Unknown,
}

impl Kind {
    fn parse(text: &str) -> Kind {
        match text.to_ascii_lowercase().as_str() {
            "bool" | "boolean" => Kind::Bool,
            "datetime" | "date" => Kind::Datetime,
            "dynamic" => Kind::Dynamic,
            "int" => Kind::Int,
            "long" => Kind::Long,
            "real" | "double" => Kind::Real,
            "string" => Kind::String,
            "guid" | "uuid" => Kind::Guid,
            "timespan" | "time" => Kind::Timespan,
            "decimal" => Kind::Decimal,
            _ => Kind::Unknown,
        }
    }

    fn numeric(self) -> bool {
        matches!(self, Kind::Int | Kind::Long | Kind::Real | Kind::Decimal)
    }
}

/// Where a column of the answer goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Slot {
    Time,
    Events,
    Port,
    Text(usize),
    Ignored,
}

struct Column {
    name: String,
    declared: String,
    kind: Kind,
    slot: Slot,
}

/// Decodes one answer of `window`.
pub fn decode(body: &[u8], window: Window, shape: AnswerShape, options: &ScanOptions) -> Result<Decoded, String> {
    let answer: Answer<'_> =
        serde_json::from_slice(body).map_err(|e| format!("the answer is not the query API's JSON: {e}"))?;
    if let Some(error) = &answer.error {
        return Ok(Decoded::Incomplete(format!("HTTP 200 with an error: {}", crate::azure::http::error_text(error))));
    }
    let Some(table) = answer.tables.first() else {
        return Err("the answer has no table".into());
    };
    let time_name = match shape.pushdown {
        Pushdown::Rows => shape.time_column,
        Pushdown::Aggregate => DAY,
    };
    let columns = plan(&table.columns, time_name, shape.pushdown)
        .map_err(|message| format!("table `{}`: {message}", table.name))?;
    let mut decoder = Decoder {
        columns: &columns,
        window,
        pushdown: shape.pushdown,
        options,
        builder: RowBuilder::default(),
        events: Vec::new(),
        batches: Vec::new(),
        stats: ScanStats::default(),
        rows: 0,
    };
    if let Some(rows) = table.rows {
        let mut de = serde_json::Deserializer::from_str(rows.get());
        RowsSeed(&mut decoder).deserialize(&mut de).map_err(|e| format!("the rows are not JSON arrays: {e}"))?;
    }
    decoder.flush();
    if decoder.rows >= shape.max_rows {
        return Ok(Decoded::Incomplete(format!(
            "{} rows, as many as the API returns at most, so the answer may be cut",
            decoder.rows
        )));
    }
    Ok(Decoded::Complete { batches: decoder.batches, stats: decoder.stats, rows_returned: decoder.rows })
}

fn plan(columns: &[AnswerColumn], time_name: &str, pushdown: Pushdown) -> Result<Vec<Column>, String> {
    let mut planned: Vec<Column> = Vec::with_capacity(columns.len());
    for column in columns {
        let kind = Kind::parse(&column.kind);
        let slot = if column.name == time_name {
            Slot::Time
        } else if pushdown == Pushdown::Aggregate && column.name == EVENTS {
            Slot::Events
        } else {
            match CANONICAL_COLUMNS.iter().position(|c| *c == column.name) {
                Some(col::REMOTE_PORT) => Slot::Port,
                Some(i) if i != col::TIME => Slot::Text(i),
                _ => Slot::Ignored,
            }
        };
        if slot != Slot::Ignored && planned.iter().any(|c| c.slot == slot) {
            return Err(format!("column `{}` appears twice", column.name));
        }
        planned.push(Column { name: column.name.clone(), declared: column.kind.clone(), kind, slot });
    }
    let find = |slot: Slot, name: &str| -> Result<&Column, String> {
        planned.iter().find(|c| c.slot == slot).ok_or_else(|| format!("the answer has no `{name}` column"))
    };
    let time = find(Slot::Time, time_name)?;
    if !matches!(time.kind, Kind::Datetime | Kind::String) {
        return Err(format!("column `{}` has type `{}`; the time column must be a datetime", time.name, time.declared));
    }
    find(Slot::Text(col::REMOTE_URL), REMOTE_URL)?;
    if pushdown == Pushdown::Aggregate {
        let events = find(Slot::Events, EVENTS)?;
        if !events.kind.numeric() {
            return Err(format!("column `{EVENTS}` has type `{}`; it must be a count", events.declared));
        }
    }
    Ok(planned)
}

struct Decoder<'a> {
    columns: &'a [Column],
    window: Window,
    pushdown: Pushdown,
    options: &'a ScanOptions,
    builder: RowBuilder,
    events: Vec<u64>,
    batches: Vec<EventBatch>,
    stats: ScanStats,
    rows: u64,
}

/// One cell as the answer spells it.
enum Cell<'a> {
    Null,
    Text(Cow<'a, str>),
    /// A number, `true`/`false`, or a JSON object or array: kept as its JSON text.
    Json(&'a str),
}

fn cell(raw: &RawValue) -> Result<Cell<'_>, String> {
    let text = raw.get();
    match text.as_bytes().first() {
        Some(b'n') => Ok(Cell::Null),
        Some(b'"') => {
            // Without a backslash the JSON string is its own content between the quotes.
            if !text.contains('\\') {
                Ok(Cell::Text(Cow::Borrowed(&text[1..text.len() - 1])))
            } else {
                serde_json::from_str::<String>(text).map(|s| Cell::Text(Cow::Owned(s))).map_err(|e| e.to_string())
            }
        }
        _ => Ok(Cell::Json(text)),
    }
}

fn integer(text: &str) -> Option<i64> {
    text.parse::<i64>().ok().or_else(|| {
        let f: f64 = text.parse().ok()?;
        (f.fract() == 0.0 && f.abs() < 9.0e15).then_some(f as i64)
    })
}

impl<'a> Decoder<'a> {
    fn reject(&mut self, reason: &'static str, detail: impl FnOnce() -> String) {
        self.stats.rows_scanned += 1;
        let (window, row) = (self.window, self.rows);
        self.stats.rejects.add(
            reason,
            || format!("window {window} row {row}: {}", detail()),
            self.options.reject_samples,
        );
    }

    fn row(&mut self, cells: Vec<&'a RawValue>) {
        self.rows += 1;
        if cells.len() != self.columns.len() {
            let (got, want) = (cells.len(), self.columns.len());
            return self
                .reject("log-analytics: row width", || format!("{got} cells, the answer declares {want} columns"));
        }
        let mut values = RowValues::default();
        let mut time = None;
        let mut weight = 1u64;
        for (column, raw) in self.columns.iter().zip(&cells) {
            let value = match cell(raw) {
                Ok(value) => value,
                Err(e) => {
                    return self.reject("log-analytics: malformed cell", || format!("column `{}`: {e}", column.name))
                }
            };
            let wrong = || format!("column `{}` ({}) holds {}", column.name, column.declared, excerpt(raw.get()));
            match (column.slot, value) {
                (Slot::Ignored, _) => {}
                (Slot::Time, Cell::Null) => return self.reject("log-analytics: missing time", wrong),
                (Slot::Time, Cell::Text(t)) => match parse_timestamp_micros(&t) {
                    Some(micros) => time = Some(micros),
                    None if t.is_empty() => return self.reject("log-analytics: missing time", wrong),
                    None => return self.reject("log-analytics: invalid time", wrong),
                },
                (Slot::Time, Cell::Json(_)) => return self.reject("log-analytics: invalid time", wrong),
                (Slot::Events, Cell::Json(j)) if column.kind.numeric() => match integer(j) {
                    Some(n) if n > 0 => weight = n as u64,
                    _ => return self.reject("log-analytics: invalid event count", wrong),
                },
                (Slot::Events, _) => return self.reject("log-analytics: invalid event count", wrong),
                (Slot::Port, Cell::Null) => {}
                (Slot::Port, Cell::Json(j)) if column.kind.numeric() || column.kind == Kind::Dynamic => {
                    match integer(j).and_then(|n| i32::try_from(n).ok()) {
                        Some(port) => values.remote_port = Some(port),
                        None => return self.reject("log-analytics: invalid RemotePort", wrong),
                    }
                }
                (Slot::Port, Cell::Text(t)) if !column.kind.numeric() => match t.trim() {
                    "" => {}
                    digits => match digits.parse::<i32>() {
                        Ok(port) => values.remote_port = Some(port),
                        Err(_) => return self.reject("log-analytics: invalid RemotePort", wrong),
                    },
                },
                (Slot::Port, _) => return self.reject("log-analytics: invalid RemotePort", wrong),
                (Slot::Text(_), Cell::Null) => {}
                (Slot::Text(i), Cell::Text(t)) => values.text[i] = Some(t),
                // Numbers, booleans and dynamic objects in a text column keep their JSON text.
                (Slot::Text(i), Cell::Json(j)) => values.text[i] = Some(Cow::Borrowed(j)),
            }
        }
        let Some(time) = time else { return };
        self.stats.rows_scanned += weight;
        let inside = match self.pushdown {
            Pushdown::Rows => self.window.start <= time && time < self.window.end,
            // A day bin of this window: the day of its start up to the day of its last instant.
            Pushdown::Aggregate => {
                let day = Day::of_micros(time);
                day.start_micros() == time
                    && Day::of_micros(self.window.start) <= day
                    && day <= Day::of_micros(self.window.end - 1)
            }
        };
        let day = Day::of_micros(time);
        if !inside || !self.options.in_window(day) {
            self.stats.rows_outside_window += weight;
            return;
        }
        *self.stats.rows_per_day.entry(day).or_default() += weight;
        let relevant = values.text[col::REMOTE_URL].as_deref().is_some_and(|url| self.options.matcher.is_relevant(url));
        if !relevant {
            return;
        }
        values.time_micros = time;
        self.builder.push(&values);
        if self.pushdown == Pushdown::Aggregate {
            self.events.push(weight);
        }
        if self.builder.len() >= BATCH_ROWS {
            self.flush();
        }
    }

    fn flush(&mut self) {
        if self.builder.is_empty() {
            return;
        }
        let batch = self.builder.finish();
        let events = (self.pushdown == Pushdown::Aggregate).then(|| std::mem::take(&mut self.events));
        self.batches.push(EventBatch { batch, events });
    }
}

fn excerpt(text: &str) -> String {
    match text.char_indices().nth(80) {
        Some((at, _)) => format!("{}…", &text[..at]),
        None => text.to_string(),
    }
}

struct RowsSeed<'d, 'a>(&'d mut Decoder<'a>);

impl<'de: 'a, 'a> DeserializeSeed<'de> for RowsSeed<'_, 'a> {
    type Value = ();

    fn deserialize<D: serde::Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_seq(self)
    }
}

impl<'de: 'a, 'a> Visitor<'de> for RowsSeed<'_, 'a> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an array of rows")
    }

    fn visit_seq<S: SeqAccess<'de>>(self, mut seq: S) -> Result<(), S::Error> {
        while let Some(cells) = seq.next_element::<Vec<&'de RawValue>>()? {
            self.0.row(cells);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow_array::cast::AsArray;
    use arrow_array::types::{Int32Type, TimestampMicrosecondType};
    use arrow_array::Array;

    use super::*;
    use crate::config::{Config, TimeColumn};

    const DAY_START: i64 = 1_793_577_600_000_000; // 2026-11-02T00:00:00Z

    fn options() -> ScanOptions {
        let settings = Config::default().validate().unwrap();
        ScanOptions {
            window: None,
            time_column: TimeColumn::Timestamp,
            matcher: Arc::new(settings.hosts),
            reject_samples: 10,
            columns: Vec::new(),
            limits: settings.limits,
        }
    }

    fn window() -> Window {
        Window { start: DAY_START, end: DAY_START + 6 * 3_600_000_000 }
    }

    fn shape(pushdown: Pushdown) -> AnswerShape {
        AnswerShape { time_column: "Timestamp", pushdown, max_rows: 500_000 }
    }

    fn answer(columns: &str, rows: &str) -> Vec<u8> {
        format!(r#"{{"tables":[{{"name":"PrimaryResult","columns":{columns},"rows":{rows}}}]}}"#).into_bytes()
    }

    const COLUMNS: &str = r#"[{"name":"Timestamp","type":"datetime"},{"name":"DeviceId","type":"string"},
        {"name":"RemoteUrl","type":"string"},{"name":"RemotePort","type":"int"},
        {"name":"InitiatingProcessFolderPath","type":"dynamic"},{"name":"InitiatingProcessVersionInfoCompanyName","type":"guid"},
        {"name":"DeviceName","type":"long"},{"name":"MachineGroup","type":"bool"},{"name":"Protocol","type":"timespan"},
        {"name":"RemoteIP","type":"decimal"},{"name":"Other","type":"real"}]"#;

    fn complete(decoded: Decoded) -> (Vec<EventBatch>, ScanStats, u64) {
        match decoded {
            Decoded::Complete { batches, stats, rows_returned } => (batches, stats, rows_returned),
            Decoded::Incomplete(reason) => panic!("incomplete: {reason}"),
        }
    }

    /// Every declared type, nulls, and each kind of bad cell: what lands in the batch, what is
    /// rejected (by reason, with window/row/column in the sample), what is counted outside.
    #[test]
    fn cells_are_read_by_their_declared_type() {
        let gw = "winatp-gw-weu.microsoft.com";
        let rows = format!(
            r#"[
            ["2026-11-02T01:00:00.1234567Z","d1","{gw}",443,"{{\"p\":\"c:\\\\x\"}}","0f8fad5b-d9cb-469f-a165-70867728950e",12,true,"00:00:01.5000000","1.50",2.5],
            ["2026-11-02T02:00:00Z","d\u00e9v","HTTPS://{gw}:443/",null,{{"p":[1,2]}},null,null,false,null,null,null],
            [null,"d3","{gw}",443,null,null,null,null,null,null,null],
            ["yesterday","d4","{gw}",443,null,null,null,null,null,null,null],
            ["2026-11-02T03:00:00Z","d5","{gw}","443",null,null,null,null,null,null,null],
            ["2026-11-02T03:00:00Z","d6","{gw}"],
            ["2026-11-02T04:00:00Z","d7","www.bing.com",443,null,null,null,null,null,null,null],
            ["2026-11-02T07:00:00Z","d8","{gw}",443,null,null,null,null,null,null,null],
            ["2026-11-02T05:00:00Z","d9","{gw}",1e0,null,null,null,null,null,null,null]
        ]"#
        );
        let body = answer(COLUMNS, &rows);
        let (batches, stats, returned) = complete(decode(&body, window(), shape(Pushdown::Rows), &options()).unwrap());
        assert_eq!(returned, 9);
        assert_eq!(batches.len(), 1);
        assert!(batches[0].events.is_none());
        let b = &batches[0].batch;
        assert_eq!(b.num_rows(), 3, "d1, d2 and d9 are telemetry rows inside the window");
        let text = |c: usize| b.column(c).as_string::<i32>();
        let time = b.column(col::TIME).as_primitive::<TimestampMicrosecondType>();
        assert_eq!(time.value(0), DAY_START + 3_600_000_000 + 123_456);
        assert_eq!(text(col::DEVICE_ID).value(1), "dév");
        assert_eq!(text(col::REMOTE_URL).value(1), "HTTPS://winatp-gw-weu.microsoft.com:443/");
        let port = b.column(col::REMOTE_PORT).as_primitive::<Int32Type>();
        assert_eq!((port.value(0), port.is_null(1), port.value(2)), (443, true, 1));
        // dynamic as a JSON string keeps the string; as a JSON value keeps its JSON text
        assert_eq!(text(col::PROCESS_FOLDER_PATH).value(0), r#"{"p":"c:\\x"}"#);
        assert_eq!(text(col::PROCESS_FOLDER_PATH).value(1), r#"{"p":[1,2]}"#);
        assert_eq!(text(col::PROCESS_COMPANY).value(0), "0f8fad5b-d9cb-469f-a165-70867728950e");
        assert!(text(col::PROCESS_COMPANY).is_null(1));
        assert_eq!(text(col::DEVICE_NAME).value(0), "12");
        assert_eq!((text(col::MACHINE_GROUP).value(0), text(col::MACHINE_GROUP).value(1)), ("true", "false"));
        assert_eq!(text(col::PROTOCOL).value(0), "00:00:01.5000000");
        assert_eq!(text(col::REMOTE_IP).value(0), "1.50");

        let reasons: Vec<(&str, u64)> = stats.rejects.by_reason.iter().map(|(k, v)| (k.as_str(), *v)).collect();
        assert_eq!(
            reasons,
            [
                ("log-analytics: invalid RemotePort", 1),
                ("log-analytics: invalid time", 1),
                ("log-analytics: missing time", 1),
                ("log-analytics: row width", 1)
            ]
        );
        let samples = stats.rejects.samples.join("\n");
        assert!(samples.contains("window 2026-11-02T00:00:00.000000Z/2026-11-02T06:00:00.000000Z row 3: column `Timestamp` (datetime) holds null"), "{samples}");
        assert!(samples.contains("row 5: column `RemotePort` (int) holds \"443\""), "{samples}");
        assert!(samples.contains("row 6: 3 cells, the answer declares 11 columns"), "{samples}");
        assert_eq!(stats.rows_scanned, 9);
        assert_eq!(stats.rows_outside_window, 1);
        assert_eq!(stats.rows_per_day.values().sum::<u64>(), 4, "d1, d2, d7 and d9");
    }

    #[test]
    fn pre_aggregated_answers_carry_event_counts() {
        let columns = r#"[{"name":"Day","type":"datetime"},{"name":"DeviceId","type":"string"},{"name":"RemoteUrl","type":"string"},{"name":"Events","type":"long"}]"#;
        let rows = r#"[["2026-11-02T00:00:00Z","d1","winatp-gw-weu.microsoft.com",7],
                       ["2026-11-02T00:00:00Z","d2","winatp-gw-weu.microsoft.com",0],
                       ["2026-11-02T01:00:00Z","d3","winatp-gw-weu.microsoft.com",2],
                       ["2026-11-01T00:00:00Z","d4","winatp-gw-weu.microsoft.com",2],
                       ["2026-11-02T00:00:00Z","d5","winatp-gw-weu.microsoft.com",3]]"#;
        let body = answer(columns, rows);
        let (batches, stats, _) = complete(decode(&body, window(), shape(Pushdown::Aggregate), &options()).unwrap());
        assert_eq!(batches[0].events.as_deref(), Some(&[7, 3][..]));
        assert_eq!(stats.rows_per_day.values().sum::<u64>(), 10);
        // not a day bin, or a day bin of another window: outside, with its weight
        assert_eq!(stats.rows_outside_window, 4);
        assert_eq!(stats.rejects.by_reason.get("log-analytics: invalid event count"), Some(&1));
    }

    #[test]
    fn cut_answers_are_incomplete_and_unreadable_shapes_fail() {
        let partial = br#"{"tables":[{"name":"PrimaryResult","columns":[],"rows":[]}],
            "error":{"code":"PartialError","message":"There were some errors when processing your query.",
            "details":[{"code":"EngineError","message":"Something went wrong","innererror":{"code":"E_QUERY_RESULT_SET_TOO_LARGE","message":"Query result set has exceeded the internal record count limit"}}]}}"#;
        match decode(partial, window(), shape(Pushdown::Rows), &options()).unwrap() {
            Decoded::Incomplete(reason) => {
                assert!(reason.contains("PartialError") && reason.contains("E_QUERY_RESULT_SET_TOO_LARGE"), "{reason}")
            }
            other => panic!("{other:?}"),
        }
        let two = answer(
            COLUMNS,
            r#"[["2026-11-02T01:00:00Z","d1","x",1,null,null,null,null,null,null,null],["2026-11-02T01:00:00Z","d1","x",1,null,null,null,null,null,null,null]]"#,
        );
        let capped = AnswerShape { max_rows: 2, ..shape(Pushdown::Rows) };
        assert!(
            matches!(decode(&two, window(), capped, &options()).unwrap(), Decoded::Incomplete(r) if r.contains("2 rows"))
        );

        let cases: &[(&[u8], &str)] = &[
            (b"<html>gateway</html>", "not the query API's JSON"),
            (br#"{"tables":[]}"#, "no table"),
            (br#"{"tables":[{"name":"T","columns":[{"name":"RemoteUrl","type":"string"}],"rows":[]}]}"#, "no `Timestamp` column"),
            (br#"{"tables":[{"name":"T","columns":[{"name":"Timestamp","type":"long"},{"name":"RemoteUrl","type":"string"}],"rows":[]}]}"#, "`Timestamp` has type `long`"),
            (br#"{"tables":[{"name":"T","columns":[{"name":"Timestamp","type":"datetime"}],"rows":[]}]}"#, "no `RemoteUrl` column"),
            (br#"{"tables":[{"name":"T","columns":[{"name":"Timestamp","type":"datetime"},{"name":"RemoteUrl","type":"string"}],"rows":{"a":1}}]}"#, "rows are not JSON arrays"),
        ];
        for (body, want) in cases {
            let err = decode(body, window(), shape(Pushdown::Rows), &options()).unwrap_err();
            assert!(err.contains(want), "{want}: {err}");
        }
        let err = decode(
            &answer(r#"[{"name":"Day","type":"datetime"},{"name":"RemoteUrl","type":"string"}]"#, "[]"),
            window(),
            shape(Pushdown::Aggregate),
            &options(),
        )
        .unwrap_err();
        assert!(err.contains("no `Events` column"), "{err}");
    }
}

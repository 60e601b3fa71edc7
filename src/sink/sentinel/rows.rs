//! What a result table looks like on its way to Sentinel: one JSON object per row, the
//! table's columns as the results store's JSON lines have them, plus `EventTime` (the DCR
//! transform maps it to `TimeGenerated`) and `RunId` (so re-sent rows can be told apart), cut
//! into JSON arrays no larger than one Logs Ingestion call takes.

use serde_json::{Map, Value};

use crate::sink::table::{ColumnType, Table};
use crate::sink::tables::{DAILY, FINDINGS, HOSTS, PROCESSES, RUNS};
use crate::time::format_micros;

/// The column the DCR transform maps to `TimeGenerated`.
pub const EVENT_TIME: &str = "EventTime";
pub const RUN_ID: &str = "RunId";

/// The five tables sent to Sentinel, in sending order.
pub const TABLES: [&str; 5] = [DAILY, HOSTS, PROCESSES, FINDINGS, RUNS];

/// The grain of each table: the columns the workbook dedupes on (with
/// `arg_max(TimeGenerated, *)`), and what an error names when a row cannot be sent.
pub fn key_columns(table: &str) -> &'static [&'static str] {
    match table {
        DAILY => &["Day", "ActionType"],
        HOSTS => &["Day", "RemoteHost", "ActionType"],
        PROCESSES => &[
            "Day",
            "RemoteHost",
            "InitiatingProcessFileName",
            "InitiatingProcessFolderPath",
            "InitiatingProcessVersionInfoCompanyName",
            "ExpectedBy",
        ],
        FINDINGS => &["FindingId"],
        RUNS => &["RunId"],
        _ => &[],
    }
}

/// The stream declaration of a table: `EventTime`, its columns, then `RunId` when the table
/// has none. Types are the DCR's (`string, long, real, boolean, datetime, dynamic`).
// TODO(lead): unify with the schema list that `telemetry-hunt schema` prints (issue 6).
pub fn stream_columns(columns: &[(&'static str, ColumnType)]) -> Vec<(&'static str, &'static str)> {
    let mut out = vec![(EVENT_TIME, "datetime")];
    for (name, ty) in columns {
        out.push((
            name,
            match ty {
                ColumnType::Text => "string",
                ColumnType::Int => "long",
                ColumnType::Float => "real",
                ColumnType::Bool => "boolean",
                ColumnType::Day | ColumnType::Time => "datetime",
                ColumnType::Json => "dynamic",
            },
        ));
    }
    if !columns.iter().any(|(name, _)| *name == RUN_ID) {
        out.push((RUN_ID, "string"));
    }
    out
}

/// One row ready to send, with the key an error would name.
#[derive(Debug, Clone)]
pub struct Row {
    pub key: String,
    pub json: Vec<u8>,
}

/// The rows of `table` as Sentinel gets them. `EventTime` is the start of the row's `Day`,
/// else the run's finish time (`FinishedAt`), else `now`.
pub fn rows(table: &Table, run_id: &str, now: i64) -> Vec<Row> {
    table
        .to_json_rows()
        .into_iter()
        .map(|mut row: Map<String, Value>| {
            let event_time = match (row.get("Day").and_then(Value::as_str), row.get("FinishedAt")) {
                (Some(day), _) => format!("{day}T00:00:00.000000Z"),
                (None, Some(Value::String(finished))) => finished.clone(),
                _ => format_micros(now),
            };
            row.insert(EVENT_TIME.into(), Value::String(event_time));
            row.entry(RUN_ID.to_string()).or_insert_with(|| Value::String(run_id.to_string()));
            let key = key_of(table.name, &row);
            Row { key, json: serde_json::to_vec(&row).expect("JSON values serialize") }
        })
        .collect()
}

/// `Table (Key=value, …)`, for messages about one row.
pub fn key_of(table: &str, row: &Map<String, Value>) -> String {
    let parts: Vec<String> =
        key_columns(table).iter().map(|k| format!("{k}={}", row.get(*k).unwrap_or(&Value::Null))).collect();
    format!("{table} ({})", parts.join(", "))
}

/// Rows cut into JSON arrays of at most `max_bytes` (uncompressed, brackets and commas
/// included), in order. A row that alone exceeds the limit is returned apart, by key.
pub fn batches(rows: Vec<Row>, max_bytes: usize) -> (Vec<Vec<Row>>, Vec<(String, usize)>) {
    let mut out: Vec<Vec<Row>> = Vec::new();
    let mut too_big = Vec::new();
    let mut current: Vec<Row> = Vec::new();
    let mut size = 2;
    for row in rows {
        if row.json.len() + 2 > max_bytes {
            too_big.push((row.key, row.json.len()));
            continue;
        }
        let added = row.json.len() + usize::from(!current.is_empty());
        if size + added > max_bytes {
            out.push(std::mem::take(&mut current));
            size = 2;
        }
        size += row.json.len() + usize::from(!current.is_empty());
        current.push(row);
    }
    if !current.is_empty() {
        out.push(current);
    }
    (out, too_big)
}

/// `[row,row,…]`
pub fn json_array<'a>(rows: impl IntoIterator<Item = &'a [u8]>) -> Vec<u8> {
    let mut out = vec![b'['];
    for (i, row) in rows.into_iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(row);
    }
    out.push(b']');
    out
}

pub fn gzip(bytes: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    encoder.write_all(bytes).expect("writing to memory");
    encoder.finish().expect("writing to memory")
}

pub fn gunzip(bytes: &[u8]) -> Result<Vec<u8>, String> {
    use std::io::Read;
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(bytes).read_to_end(&mut out).map_err(|e| e.to_string())?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sink::table::Cell;
    use crate::sink::tables::{DAILY_COLUMNS, RUNS_COLUMNS};
    use crate::time::Day;

    fn row(n: usize) -> Row {
        Row { key: format!("k{n}"), json: vec![b'x'; n] }
    }

    #[test]
    fn batches_fill_up_to_the_limit_and_never_past_it() {
        // 10-byte limit: `[` + 4 + `,` + 3 + `]` = 10 fits; one more byte does not.
        let (out, too_big) = batches(vec![row(4), row(3), row(1), row(8), row(9)], 10);
        let sizes: Vec<Vec<usize>> = out.iter().map(|b| b.iter().map(|r| r.json.len()).collect()).collect();
        assert_eq!(sizes, [vec![4, 3], vec![1], vec![8]]);
        assert_eq!(too_big, [("k9".to_string(), 9)]);
        for batch in &out {
            assert!(json_array(batch.iter().map(|r| r.json.as_slice())).len() <= 10);
        }
        assert_eq!(batches(Vec::new(), 10).0.len(), 0);
        assert_eq!(json_array([&b"1"[..], b"2"]), b"[1,2]");
        assert_eq!(gunzip(&gzip(b"[1,2]")).unwrap(), b"[1,2]");
    }

    #[test]
    fn rows_carry_event_time_run_id_and_their_key() {
        let day = Day::parse("2026-11-02").unwrap();
        let mut daily = Table::new(DAILY, DAILY_COLUMNS);
        daily.push(vec![Cell::Day(day), "ConnectionSuccess".into(), Cell::Int(3), Cell::Int(7), "kql".into()]);
        let out = rows(&daily, "R1", 0);
        let value: Value = serde_json::from_slice(&out[0].json).unwrap();
        assert_eq!(value["EventTime"], "2026-11-02T00:00:00.000000Z");
        assert_eq!(value["RunId"], "R1");
        assert_eq!(value["Day"], "2026-11-02");
        assert_eq!(value["Connections"], 3);
        assert_eq!(out[0].key, "MdeTelemetryDaily (Day=\"2026-11-02\", ActionType=\"ConnectionSuccess\")");

        let mut runs = Table::new(RUNS, RUNS_COLUMNS);
        let mut cells = vec![Cell::Null; RUNS_COLUMNS.len()];
        cells[0] = "R0".into();
        cells[2] = Cell::Time(1_700_000_000_000_000);
        runs.push(cells);
        let value: Value = serde_json::from_slice(&rows(&runs, "R1", 0)[0].json).unwrap();
        assert_eq!(value["EventTime"], "2023-11-14T22:13:20.000000Z");
        assert_eq!(value["RunId"], "R0", "a table's own RunId is kept");

        let declared = stream_columns(DAILY_COLUMNS);
        assert_eq!(declared.first(), Some(&("EventTime", "datetime")));
        assert_eq!(declared.last(), Some(&("RunId", "string")));
        assert!(declared.contains(&("Connections", "long")));
        assert_eq!(stream_columns(RUNS_COLUMNS).iter().filter(|(n, _)| *n == "RunId").count(), 1);
    }
}

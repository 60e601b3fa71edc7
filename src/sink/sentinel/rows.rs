//! What a result table looks like on its way to Sentinel: one JSON object per row, the
//! table's columns as the results store's JSON lines have them (days as datetimes), plus
//! `EventTime` (the DCR transform maps it to `TimeGenerated`) and `RunId` (so re-sent rows can
//! be told apart), cut into JSON arrays no larger than one Logs Ingestion call takes. The
//! columns are those of [`crate::sink::schema::stream_columns`], the one schema the infra
//! deploys.

use serde_json::{Map, Value};

use crate::sink::schema::{EVENT_TIME, RUN_ID};
use crate::sink::table::{ColumnType, Table};
use crate::sink::tables::table_def;
use crate::time::format_micros;

/// One row ready to send, with the key an error would name.
#[derive(Debug, Clone)]
pub struct Row {
    pub key: String,
    pub json: Vec<u8>,
}

/// The rows of `table` as Sentinel gets them. `EventTime` is `now`, when the run produced them:
/// re-runs re-send rows of the same key, and readers keep the one with the newest
/// `TimeGenerated` (`arg_max(TimeGenerated, *) by <key>`). A `Day` becomes midnight UTC, since
/// its column is a datetime in Sentinel.
pub fn rows(table: &Table, run_id: &str, now: i64) -> Vec<Row> {
    let event_time = Value::String(format_micros(now));
    let days: Vec<&str> = table.columns.iter().filter(|(_, ty)| *ty == ColumnType::Day).map(|(n, _)| *n).collect();
    table
        .to_json_rows()
        .into_iter()
        .map(|mut row: Map<String, Value>| {
            for name in &days {
                if let Some(Value::String(day)) = row.get_mut(*name) {
                    day.push_str("T00:00:00Z");
                }
            }
            row.insert(EVENT_TIME.into(), event_time.clone());
            row.entry(RUN_ID.to_string()).or_insert_with(|| Value::String(run_id.to_string()));
            let key = key_of(table.name, &row);
            Row { key, json: serde_json::to_vec(&row).expect("JSON values serialize") }
        })
        .collect()
}

/// `Table (Key=value, …)`, for messages about one row.
pub fn key_of(table: &str, row: &Map<String, Value>) -> String {
    let key = table_def(table).map_or(&[][..], |t| t.key);
    let parts: Vec<String> = key.iter().map(|k| format!("{k}={}", row.get(*k).unwrap_or(&Value::Null))).collect();
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
    use crate::sink::tables::{DAILY, DAILY_COLUMNS, RUNS, RUNS_COLUMNS};
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
        let produced = 1_700_000_000_000_000;
        let out = rows(&daily, "R1", produced);
        let value: Value = serde_json::from_slice(&out[0].json).unwrap();
        assert_eq!(value["EventTime"], "2023-11-14T22:13:20.000000Z", "the time the run produced the row");
        assert_eq!(value["RunId"], "R1");
        assert_eq!(value["Day"], "2026-11-02T00:00:00Z", "a datetime column in Sentinel");
        assert_eq!(value["Connections"], 3);
        assert_eq!(out[0].key, "MdeTelemetryDaily (Day=\"2026-11-02T00:00:00Z\", ActionType=\"ConnectionSuccess\")");

        let mut runs = Table::new(RUNS, RUNS_COLUMNS);
        let mut cells = vec![Cell::Null; RUNS_COLUMNS.len()];
        cells[0] = "R0".into();
        runs.push(cells);
        let value: Value = serde_json::from_slice(&rows(&runs, "R1", produced)[0].json).unwrap();
        assert_eq!(value["RunId"], "R0", "a table's own RunId is kept");
        let sent: Vec<&str> = value.as_object().unwrap().keys().map(String::as_str).collect();
        let declared: Vec<&str> =
            crate::sink::schema::stream_columns(table_def(RUNS).unwrap()).iter().map(|(n, _)| *n).collect();
        let (mut sent, mut declared) = (sent, declared);
        sent.sort_unstable();
        declared.sort_unstable();
        assert_eq!(sent, declared, "a row carries exactly the declared stream columns");
    }
}

//! The findings table encoded straight from the findings' borrowed cells ([`Finding::cells`]):
//! the same Parquet columns and JSON lines as [`Table::to_record_batch`] and
//! [`Table::write_jsonl`] give of [`Finding::to_row`], without a `String` or a JSON value per
//! cell. A night has hundreds of thousands of findings, and building their rows as cells cost
//! more than encoding them.
//!
//! [`Table::to_record_batch`]: super::Table::to_record_batch
//! [`Table::write_jsonl`]: super::Table::write_jsonl

use std::sync::Arc;

use arrow_array::types::{Date32Type, Float64Type, Int64Type};
use arrow_array::{ArrayRef, RecordBatch, StringArray};
use arrow_buffer::{NullBufferBuilder, OffsetBuffer};

use super::table::primitive_column;
use super::tables::{FINDINGS, FINDINGS_COLUMNS};
use super::{ColumnType, Table};
use crate::detect::{Finding, FindingCell, FINDING_CELLS};
use crate::time::Day;

/// A finding's row as [`Finding::cells`] borrows it.
pub type Row<'a> = [FindingCell<'a>; FINDING_CELLS];

/// The text a text or JSON column holds of a cell (a JSON document as its text), appended to
/// `out`; false for a null.
fn write_text(cell: &FindingCell<'_>, out: &mut Vec<u8>) -> Result<bool, String> {
    match cell {
        FindingCell::Text(text) => out.extend_from_slice(text.as_bytes()),
        FindingCell::Joined(parts) => {
            for (i, part) in parts.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                out.extend_from_slice(part.as_bytes());
            }
        }
        // As `serde_json` writes an array of strings.
        FindingCell::Devices(listed, field) => {
            out.push(b'[');
            for (i, device) in listed.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                json_string(out, field.of(device));
            }
            out.push(b']');
        }
        FindingCell::Json(raw) => out.extend_from_slice(raw.get().as_bytes()),
        FindingCell::Null => return Ok(false),
        other => return Err(format!("a text column holds {other:?}")),
    }
    Ok(true)
}

fn json_string(out: &mut Vec<u8>, text: &str) {
    // Writing to memory cannot fail.
    let _ = serde_json::to_writer(&mut *out, text);
}

/// A Utf8 column built as one buffer of values and their offsets, so a cell's text (a JSON
/// array of device ids) is written where it ends up; the buffer's UTF-8 is checked once.
struct TextColumn {
    values: Vec<u8>,
    offsets: Vec<i32>,
    nulls: NullBufferBuilder,
}

impl TextColumn {
    fn new(rows: usize) -> TextColumn {
        let mut offsets = Vec::with_capacity(rows + 1);
        offsets.push(0);
        TextColumn { values: Vec::new(), offsets, nulls: NullBufferBuilder::new(rows) }
    }

    fn push(&mut self, cell: &FindingCell<'_>) -> Result<(), String> {
        let valid = write_text(cell, &mut self.values)?;
        self.nulls.append(valid);
        let end = i32::try_from(self.values.len()).map_err(|_| "a chunk's text exceeds 2 GiB".to_string())?;
        self.offsets.push(end);
        Ok(())
    }

    fn finish(mut self) -> Result<ArrayRef, String> {
        let values = String::from_utf8(self.values).map_err(|e| e.to_string())?;
        let offsets = OffsetBuffer::new(self.offsets.into());
        let array = StringArray::try_new(offsets, values.into_bytes().into(), self.nulls.finish())
            .map_err(|e| e.to_string())?;
        Ok(Arc::new(array))
    }
}

/// Rows as a batch of the findings table's schema: the batch [`Table::to_record_batch`] gives
/// of the same rows as cells.
pub fn batch(rows: &[Row<'_>]) -> Result<RecordBatch, String> {
    let mut arrays: Vec<ArrayRef> = Vec::with_capacity(FINDING_CELLS);
    for (i, (name, ty)) in FINDINGS_COLUMNS.iter().enumerate() {
        let cells = rows.iter().map(|row| &row[i]);
        let wrong = |cell: &FindingCell<'_>| format!("column `{name}` ({ty:?}) holds {cell:?}");
        let array: ArrayRef = match ty {
            ColumnType::Text | ColumnType::Json => {
                let mut column = TextColumn::new(rows.len());
                for cell in cells {
                    column.push(cell).map_err(|e| format!("column `{name}`: {e}"))?;
                }
                column.finish()?
            }
            ColumnType::Int => Arc::new(
                primitive_column::<Int64Type, _>(cells, |cell| match cell {
                    FindingCell::Int(v) => Ok(Some(*v)),
                    FindingCell::Null => Ok(None),
                    other => Err(other),
                })
                .map_err(wrong)?,
            ),
            ColumnType::Float => Arc::new(
                primitive_column::<Float64Type, _>(cells, |cell| match cell {
                    FindingCell::Float(v) => Ok(*v),
                    FindingCell::Int(v) => Ok(Some(*v as f64)),
                    FindingCell::Null => Ok(None),
                    other => Err(other),
                })
                .map_err(wrong)?,
            ),
            ColumnType::Day => Arc::new(
                primitive_column::<Date32Type, _>(cells, |cell| match cell {
                    FindingCell::Day(d) => Ok(Some(d.0)),
                    FindingCell::Null => Ok(None),
                    other => Err(other),
                })
                .map_err(wrong)?,
            ),
            ColumnType::Bool | ColumnType::Time => return Err(format!("column `{name}`: no finding cell is a {ty:?}")),
        };
        arrays.push(array);
    }
    let schema = Table::new(FINDINGS, FINDINGS_COLUMNS).schema();
    RecordBatch::try_new(schema, arrays).map_err(|e| e.to_string())
}

/// Writes rows as [`Table::write_jsonl`] writes the same rows as cells. The day of a finding
/// is formatted once per day, not once per finding.
#[derive(Default)]
pub struct JsonLines {
    day: Option<(Day, String)>,
    /// Room for a joined list before it is quoted.
    joined: Vec<u8>,
}

impl JsonLines {
    pub fn write(&mut self, rows: &[Row<'_>], out: &mut Vec<u8>) {
        for row in rows {
            out.push(b'{');
            for (i, ((name, _), cell)) in FINDINGS_COLUMNS.iter().zip(row).enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                out.push(b'"');
                out.extend_from_slice(name.as_bytes());
                out.extend_from_slice(b"\":");
                self.write_cell(cell, out);
            }
            out.extend_from_slice(b"}\n");
        }
    }

    /// As [`super::Cell::write_json`] writes the cell [`FindingCell::to_cell`] makes.
    fn write_cell(&mut self, cell: &FindingCell<'_>, out: &mut Vec<u8>) {
        // Writing to memory cannot fail, and these values always serialize.
        match cell {
            FindingCell::Day(day) => {
                if self.day.as_ref().is_none_or(|(formatted, _)| formatted != day) {
                    self.day = Some((*day, format!("\"{day}\"")));
                }
                if let Some((_, text)) = &self.day {
                    out.extend_from_slice(text.as_bytes());
                }
            }
            FindingCell::Text(text) => json_string(out, text),
            FindingCell::Int(v) => {
                let _ = serde_json::to_writer(&mut *out, v);
            }
            FindingCell::Float(Some(v)) => match serde_json::Number::from_f64(*v) {
                Some(n) => {
                    let _ = serde_json::to_writer(&mut *out, &n);
                }
                None => out.extend_from_slice(b"null"),
            },
            FindingCell::Joined(_) => {
                self.joined.clear();
                let _ = write_text(cell, &mut self.joined);
                // joined `&str`s: always UTF-8
                json_string(out, std::str::from_utf8(&self.joined).unwrap_or_default());
            }
            FindingCell::Devices(..) | FindingCell::Json(_) => {
                let _ = write_text(cell, out);
            }
            FindingCell::Float(None) | FindingCell::Null => out.extend_from_slice(b"null"),
        }
    }
}

/// Each finding's row as [`Finding::cells`] borrows it; `ids` and `run_ids` are the findings'.
pub fn rows<'a>(findings: &'a [Finding], ids: &'a [String], run_ids: &[&'a str], max_listed: usize) -> Vec<Row<'a>> {
    findings.iter().zip(ids).zip(run_ids).map(|((finding, id), run_id)| finding.cells(id, run_id, max_listed)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detect::{Document, FindingType, ProcessInfo, Severity};
    use crate::sink::results::ParquetEncoder;
    use serde_json::json;

    fn finding(n: usize) -> Finding {
        let day = Day::parse("2026-11-20").unwrap();
        let devices: Vec<(String, String)> =
            (0..n).map(|i| (format!("dev-{i}"), format!("name \"{i}\" \\ é\u{1}</script>"))).collect();
        Finding {
            day: Day(day.0 + (n % 2) as i32),
            finding_type: FindingType::UnusualPort,
            key: format!("k{n}"),
            severity: Severity::Medium,
            remote_host: (n % 3 != 0).then(|| "winatp-gw-weu.microsoft.com".to_string()),
            action_type: (n % 3 == 0).then(|| "ConnectionSuccess".to_string()),
            process: (n % 2 == 0).then(|| ProcessInfo {
                file_name: "mssense.exe".into(),
                folder_path: r"c:\program files\x\mssense.exe".into(),
                sha1: String::new(),
                company: "Microsoft \"Corp\"".into(),
            }),
            remote_port: (n > 1).then_some(8080),
            devices,
            observed: Some(n as f64),
            baseline: Some(0.1 + n as f64 / 3.0),
            score: [Some(f64::NAN), Some(f64::INFINITY), None, Some(-2.5e-320)][n % 4],
            threshold: None,
            direction: n as i64 - 2,
            method: "port-allow-list",
            params: Document::from(json!({"b": [1, 2.5, null, "x\"y"], "a": {"n": n}})),
            series: (n % 2 == 1).then(|| Document::from(json!({"days": ["2026-11-20"], "devices": [n]}))),
            description: format!("line\nbreak\t{n}"),
            tactics: ["CommandAndControl", "DefenseEvasion"][..n % 3].to_vec(),
            techniques: vec!["T1571"],
            evidence: "MdeTelemetryDeviceHosts/day=2026-11-20/part-0.parquet".into(),
        }
    }

    /// Encoded in place, findings give the Parquet file and JSON lines their rows as cells give.
    #[test]
    fn findings_encode_as_their_rows_do() {
        let findings: Vec<Finding> = (0..7).map(finding).collect();
        let ids: Vec<String> = findings.iter().map(Finding::id).collect();
        let run_ids: Vec<&str> = (0..findings.len()).map(|i| ["run-a", "run-b"][i % 2]).collect();
        for max_listed in [0, 2, 10] {
            let table = crate::sink::tables::findings(&findings, &ids, &run_ids, max_listed);
            let rows = rows(&findings, &ids, &run_ids, max_listed);
            let direct = batch(&rows).unwrap();
            assert_eq!(direct, table.to_record_batch().unwrap(), "max_listed {max_listed}");
            let parquet = |batch: &RecordBatch| {
                let mut encoder = ParquetEncoder::new(FINDINGS, FINDINGS_COLUMNS).unwrap();
                encoder.write_batch(batch).unwrap();
                encoder.finish().unwrap()
            };
            assert_eq!(parquet(&direct), parquet(&table.to_record_batch().unwrap()));
            let mut lines = Vec::new();
            let mut writer = JsonLines::default();
            writer.write(&rows[..3], &mut lines);
            writer.write(&rows[3..], &mut lines);
            assert_eq!(String::from_utf8(lines).unwrap(), table.to_jsonl(), "max_listed {max_listed}");
        }
    }
}

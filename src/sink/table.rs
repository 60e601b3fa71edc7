//! A result table: named, typed columns and rows of cells, encoded once into Arrow (for
//! Parquet) or JSON lines (for people, Sentinel and diffing). One definition per table, so the
//! two encodings cannot drift apart.

use std::sync::Arc;

use arrow_array::builder::{BooleanBuilder, PrimitiveBuilder, StringBuilder};
use arrow_array::cast::AsArray;
use arrow_array::types::{Date32Type, Float64Type, Int32Type, Int64Type, TimestampMicrosecondType};
use arrow_array::{Array, ArrayRef, ArrowPrimitiveType, PrimitiveArray, RecordBatch};
use arrow_schema::{DataType, Field, Schema, SchemaRef, TimeUnit};
use serde_json::{Map, Value};

use crate::time::{format_micros, Day};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ColumnType {
    Text,
    Int,
    Float,
    Bool,
    Day,
    Time,
    /// A JSON document kept as text (Sentinel `dynamic`).
    Json,
}

impl ColumnType {
    fn arrow(self) -> DataType {
        match self {
            ColumnType::Text | ColumnType::Json => DataType::Utf8,
            ColumnType::Int => DataType::Int64,
            ColumnType::Float => DataType::Float64,
            ColumnType::Bool => DataType::Boolean,
            ColumnType::Day => DataType::Date32,
            ColumnType::Time => DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
        }
    }
}

#[derive(Debug, Clone)]
pub enum Cell {
    Text(String),
    Int(i64),
    Float(f64),
    Bool(bool),
    Day(Day),
    Time(i64),
    Json(Value),
    /// A JSON document kept as its text (a finding's Params and Series): written as it is.
    RawJson(Box<serde_json::value::RawValue>),
    Null,
}

/// A document equals its text parsed: a row read back from a table (documents as values) is
/// compared with the row a run builds (documents as text).
impl PartialEq for Cell {
    fn eq(&self, other: &Cell) -> bool {
        match (self, other) {
            (Cell::Text(a), Cell::Text(b)) => a == b,
            (Cell::Int(a), Cell::Int(b)) => a == b,
            (Cell::Float(a), Cell::Float(b)) => a == b,
            (Cell::Bool(a), Cell::Bool(b)) => a == b,
            (Cell::Day(a), Cell::Day(b)) => a == b,
            (Cell::Time(a), Cell::Time(b)) => a == b,
            (Cell::Json(a), Cell::Json(b)) => a == b,
            (Cell::RawJson(a), Cell::RawJson(b)) => a.get() == b.get(),
            (Cell::Json(value), Cell::RawJson(text)) | (Cell::RawJson(text), Cell::Json(value)) => {
                serde_json::from_str::<Value>(text.get()).is_ok_and(|parsed| parsed == *value)
            }
            (Cell::Null, Cell::Null) => true,
            _ => false,
        }
    }
}

impl From<&str> for Cell {
    fn from(v: &str) -> Cell {
        Cell::Text(v.to_string())
    }
}
impl From<String> for Cell {
    fn from(v: String) -> Cell {
        Cell::Text(v)
    }
}
impl From<u64> for Cell {
    fn from(v: u64) -> Cell {
        Cell::Int(i64::try_from(v).unwrap_or(i64::MAX))
    }
}
impl From<usize> for Cell {
    fn from(v: usize) -> Cell {
        Cell::from(v as u64)
    }
}
impl From<bool> for Cell {
    fn from(v: bool) -> Cell {
        Cell::Bool(v)
    }
}
impl From<Day> for Cell {
    fn from(v: Day) -> Cell {
        Cell::Day(v)
    }
}

impl Cell {
    pub fn to_json(&self) -> Value {
        match self {
            Cell::Text(s) => Value::String(s.clone()),
            Cell::Int(v) => Value::from(*v),
            Cell::Float(v) => serde_json::Number::from_f64(*v).map_or(Value::Null, Value::Number),
            Cell::Bool(v) => Value::Bool(*v),
            Cell::Day(d) => Value::String(d.to_string()),
            Cell::Time(t) => Value::String(format_micros(*t)),
            Cell::Json(v) => v.clone(),
            Cell::RawJson(text) => serde_json::from_str(text.get()).unwrap_or(Value::Null),
            Cell::Null => Value::Null,
        }
    }

    /// Appends the text of [`Cell::to_json`] without building the value: a findings table's
    /// JSON documents are written where they are, not cloned first.
    pub fn write_json(&self, out: &mut Vec<u8>) {
        // Writing to memory cannot fail, and these values always serialize.
        let written = match self {
            Cell::Text(s) => serde_json::to_writer(&mut *out, s.as_str()),
            Cell::Int(v) => serde_json::to_writer(&mut *out, v),
            Cell::Float(v) => match serde_json::Number::from_f64(*v) {
                Some(n) => serde_json::to_writer(&mut *out, &n),
                None => serde_json::to_writer(&mut *out, &Value::Null),
            },
            Cell::Bool(v) => serde_json::to_writer(&mut *out, v),
            Cell::Day(d) => serde_json::to_writer(&mut *out, &d.to_string()),
            Cell::Time(t) => serde_json::to_writer(&mut *out, &format_micros(*t)),
            Cell::Json(v) => serde_json::to_writer(&mut *out, v),
            Cell::RawJson(text) => {
                out.extend_from_slice(text.get().as_bytes());
                Ok(())
            }
            Cell::Null => serde_json::to_writer(&mut *out, &Value::Null),
        };
        debug_assert!(written.is_ok());
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Table {
    pub name: &'static str,
    pub columns: &'static [(&'static str, ColumnType)],
    pub rows: Vec<Vec<Cell>>,
}

impl Table {
    pub fn new(name: &'static str, columns: &'static [(&'static str, ColumnType)]) -> Table {
        Table { name, columns, rows: Vec::new() }
    }

    pub fn push(&mut self, row: Vec<Cell>) {
        debug_assert_eq!(row.len(), self.columns.len(), "row width of {}", self.name);
        self.rows.push(row);
    }

    pub fn schema(&self) -> SchemaRef {
        Arc::new(Schema::new(
            self.columns.iter().map(|(name, ty)| Field::new(*name, ty.arrow(), true)).collect::<Vec<_>>(),
        ))
    }

    pub fn column_index(&self, name: &str) -> Option<usize> {
        self.columns.iter().position(|(n, _)| *n == name)
    }

    pub fn to_record_batch(&self) -> Result<RecordBatch, String> {
        let mut arrays: Vec<ArrayRef> = Vec::with_capacity(self.columns.len());
        for (i, (name, ty)) in self.columns.iter().enumerate() {
            let cells = self.rows.iter().map(|r| &r[i]);
            let wrong = |cell: &Cell| format!("column `{name}` ({ty:?}) holds {cell:?}");
            let array: ArrayRef = match ty {
                ColumnType::Text | ColumnType::Json => {
                    let mut b = StringBuilder::new();
                    for c in cells {
                        match c {
                            Cell::Text(s) => b.append_value(s),
                            // not `Display`: it writes through the formatter token by token
                            Cell::Json(v) => b.append_value(serde_json::to_string(v).map_err(|e| e.to_string())?),
                            Cell::RawJson(text) => b.append_value(text.get()),
                            Cell::Null => b.append_null(),
                            other => return Err(wrong(other)),
                        }
                    }
                    Arc::new(b.finish())
                }
                ColumnType::Int => Arc::new(
                    primitive_column::<Int64Type, _>(cells, |c| match c {
                        Cell::Int(v) => Ok(Some(*v)),
                        Cell::Null => Ok(None),
                        other => Err(other),
                    })
                    .map_err(wrong)?,
                ),
                ColumnType::Float => Arc::new(
                    primitive_column::<Float64Type, _>(cells, |c| match c {
                        Cell::Float(v) => Ok(Some(*v)),
                        Cell::Int(v) => Ok(Some(*v as f64)),
                        Cell::Null => Ok(None),
                        other => Err(other),
                    })
                    .map_err(wrong)?,
                ),
                ColumnType::Bool => {
                    let mut b = BooleanBuilder::new();
                    for c in cells {
                        match c {
                            Cell::Bool(v) => b.append_value(*v),
                            Cell::Null => b.append_null(),
                            other => return Err(wrong(other)),
                        }
                    }
                    Arc::new(b.finish())
                }
                ColumnType::Day => Arc::new(
                    primitive_column::<Date32Type, _>(cells, |c| match c {
                        Cell::Day(d) => Ok(Some(d.0)),
                        Cell::Null => Ok(None),
                        other => Err(other),
                    })
                    .map_err(wrong)?,
                ),
                ColumnType::Time => Arc::new(
                    primitive_column::<TimestampMicrosecondType, _>(cells, |c| match c {
                        Cell::Time(t) => Ok(Some(*t)),
                        Cell::Null => Ok(None),
                        other => Err(other),
                    })
                    .map_err(wrong)?
                    .with_timezone("UTC"),
                ),
            };
            arrays.push(array);
        }
        RecordBatch::try_new(self.schema(), arrays).map_err(|e| e.to_string())
    }

    /// Appends the rows of a batch written by [`Table::to_record_batch`], matching columns by
    /// name; a column the batch lacks is null in every row.
    pub fn extend_from_record_batch(&mut self, batch: &RecordBatch) -> Result<(), String> {
        self.extend_from_record_batch_at(batch, 0)
    }

    /// [`Table::extend_from_record_batch`] for a batch whose first row is row `first_row` of its
    /// file, so that an error names the file's row.
    pub fn extend_from_record_batch_at(&mut self, batch: &RecordBatch, first_row: usize) -> Result<(), String> {
        let mut cells: Vec<Vec<Cell>> = Vec::with_capacity(self.columns.len());
        for (name, ty) in self.columns {
            let Some(array) = batch.column_by_name(name) else {
                cells.push(vec![Cell::Null; batch.num_rows()]);
                continue;
            };
            let want = ty.arrow();
            let array = if array.data_type() == &want {
                array.clone()
            } else {
                arrow_cast::cast(array, &want).map_err(|e| format!("column `{name}`: {e}"))?
            };
            let cell = |row: usize| -> Result<Cell, String> {
                if array.is_null(row) {
                    return Ok(Cell::Null);
                }
                Ok(match ty {
                    ColumnType::Text => Cell::Text(array.as_string::<i32>().value(row).to_string()),
                    ColumnType::Json => Cell::Json(
                        serde_json::from_str(array.as_string::<i32>().value(row))
                            .map_err(|e| format!("column `{name}` row {}: not JSON: {e}", first_row + row))?,
                    ),
                    ColumnType::Int => Cell::Int(array.as_primitive::<Int64Type>().value(row)),
                    ColumnType::Float => Cell::Float(array.as_primitive::<Float64Type>().value(row)),
                    ColumnType::Bool => Cell::Bool(array.as_boolean().value(row)),
                    ColumnType::Day => Cell::Day(Day(array.as_primitive::<Date32Type>().value(row))),
                    ColumnType::Time => Cell::Time(array.as_primitive::<TimestampMicrosecondType>().value(row)),
                })
            };
            cells.push((0..batch.num_rows()).map(cell).collect::<Result<_, _>>()?);
        }
        for row in 0..batch.num_rows() {
            self.rows.push(cells.iter_mut().map(|column| std::mem::replace(&mut column[row], Cell::Null)).collect());
        }
        Ok(())
    }

    /// One JSON object per row, keys in column order. Days as `YYYY-MM-DD`, times as ISO 8601
    /// UTC, JSON columns as JSON values (Sentinel `dynamic`).
    pub fn to_json_rows(&self) -> Vec<Map<String, Value>> {
        self.rows
            .iter()
            .map(|row| {
                self.columns.iter().zip(row).map(|((name, _), cell)| (name.to_string(), cell.to_json())).collect()
            })
            .collect()
    }

    /// JSON lines, keys in column order (so a person reading the file sees the table's order).
    pub fn to_jsonl(&self) -> String {
        let mut out = Vec::with_capacity(self.rows.len() * 128);
        self.write_jsonl(&mut out);
        String::from_utf8(out).expect("serde_json writes UTF-8")
    }

    /// [`Table::to_jsonl`] appended to `out`, for a file written a chunk of rows at a time.
    pub fn write_jsonl(&self, out: &mut Vec<u8>) {
        for row in &self.rows {
            out.push(b'{');
            for (i, ((name, _), cell)) in self.columns.iter().zip(row).enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                out.push(b'"');
                out.extend_from_slice(name.as_bytes());
                out.extend_from_slice(b"\":");
                cell.write_json(out);
            }
            out.extend_from_slice(b"}\n");
        }
    }
}

/// A primitive column of `cells`: `value` gives a cell's value (`None` for a null), or hands
/// the cell back when the column cannot hold it.
pub fn primitive_column<T: ArrowPrimitiveType, C>(
    cells: impl ExactSizeIterator<Item = C>,
    value: impl Fn(C) -> Result<Option<T::Native>, C>,
) -> Result<PrimitiveArray<T>, C> {
    let mut builder = PrimitiveBuilder::<T>::with_capacity(cells.len());
    for cell in cells {
        builder.append_option(value(cell)?);
    }
    Ok(builder.finish())
}

/// A record batch read back as a table's columns: in the table's order and types (a column the
/// batch lacks reads as nulls), values read in place rather than copied into cells. Text
/// columns can be held as dictionaries, as the results store's files encode them: a reader can
/// work out what a distinct value means once, by its key, rather than again at every row.
pub struct Columns {
    arrays: Vec<Option<ArrayRef>>,
    rows: usize,
}

/// The type a column is read back as into [`Columns`]: with `dictionaries`, text as a dictionary.
pub fn read_type(ty: ColumnType, dictionaries: bool) -> DataType {
    match ty {
        ColumnType::Text if dictionaries => DataType::Dictionary(Box::new(DataType::Int32), Box::new(DataType::Utf8)),
        other => other.arrow(),
    }
}

impl Columns {
    /// `dictionaries`: text columns as dictionaries (see [`Columns::key`]).
    pub fn of(columns: &[(&str, ColumnType)], batch: &RecordBatch, dictionaries: bool) -> Result<Columns, String> {
        let arrays = columns
            .iter()
            .map(|(name, ty)| {
                let Some(array) = batch.column_by_name(name) else { return Ok(None) };
                let want = read_type(*ty, dictionaries);
                if array.data_type() == &want {
                    Ok(Some(array.clone()))
                } else {
                    arrow_cast::cast(array, &want).map(Some).map_err(|e| format!("column `{name}`: {e}"))
                }
            })
            .collect::<Result<_, String>>()?;
        Ok(Columns { arrays, rows: batch.num_rows() })
    }

    pub fn rows(&self) -> usize {
        self.rows
    }

    fn valid(&self, column: usize, row: usize) -> Option<&ArrayRef> {
        self.arrays[column].as_ref().filter(|array| array.is_valid(row))
    }

    /// Whether a value is null (or its column absent).
    pub fn is_null(&self, column: usize, row: usize) -> bool {
        self.valid(column, row).is_none()
    }

    /// A text or JSON column's value; "" for a null.
    pub fn text(&self, column: usize, row: usize) -> &str {
        match self.valid(column, row).and_then(|array| array.as_string_opt::<i32>()) {
            Some(strings) => strings.value(row),
            None => self.key(column, row).map_or("", |key| self.value(column, key)),
        }
    }

    /// The dictionary key of a text column's value read as a dictionary; `None` for a null.
    pub fn key(&self, column: usize, row: usize) -> Option<usize> {
        let keys = self.valid(column, row)?.as_dictionary_opt::<Int32Type>()?.keys();
        usize::try_from(keys.value(row)).ok()
    }

    /// The values a text column's keys stand for: the same array (`Arc::ptr_eq`) in each batch
    /// of a file whose column has one dictionary.
    pub fn dictionary(&self, column: usize) -> Option<&ArrayRef> {
        Some(self.arrays[column].as_ref()?.as_dictionary_opt::<Int32Type>()?.values())
    }

    /// The text of a dictionary key of a text column.
    pub fn value(&self, column: usize, key: usize) -> &str {
        let values = self.dictionary(column).and_then(|values| values.as_string_opt::<i32>());
        values.filter(|values| key < values.len()).map_or("", |values| values.value(key))
    }

    pub fn int(&self, column: usize, row: usize) -> Option<i64> {
        Some(self.valid(column, row)?.as_primitive_opt::<Int64Type>()?.value(row))
    }

    pub fn float(&self, column: usize, row: usize) -> Option<f64> {
        Some(self.valid(column, row)?.as_primitive_opt::<Float64Type>()?.value(row))
    }

    pub fn bool(&self, column: usize, row: usize) -> Option<bool> {
        Some(self.valid(column, row)?.as_boolean_opt()?.value(row))
    }

    pub fn day(&self, column: usize, row: usize) -> Option<Day> {
        Some(Day(self.valid(column, row)?.as_primitive_opt::<Date32Type>()?.value(row)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The JSON lines writer's text is exactly the serialization of each cell's JSON value.
    #[test]
    fn cells_write_the_json_their_values_serialize_to() {
        let cells = [
            Cell::Text(String::new()),
            Cell::Text("quote \" backslash \\ tab \t nul \u{0} é 😀 </script>".into()),
            Cell::Int(i64::MIN),
            Cell::Int(0),
            Cell::Float(0.1),
            Cell::Float(-0.0),
            Cell::Float(1e300),
            Cell::Float(2.5e-320),
            Cell::Float(f64::NAN),
            Cell::Float(f64::INFINITY),
            Cell::Bool(true),
            Cell::Day(Day::from_ymd(2026, 12, 4).unwrap()),
            Cell::Time(1_764_806_400_123_456),
            Cell::Json(serde_json::json!({"b": [1, 2.5, null, "x\"y"], "a": {"nested": true}})),
            Cell::Json(Value::Null),
            raw(serde_json::json!({"b": [1, 2.5, null, "x\"y"], "a": {"nested": true}})),
            Cell::Null,
        ];
        for cell in &cells {
            let mut written = Vec::new();
            cell.write_json(&mut written);
            assert_eq!(String::from_utf8(written).unwrap(), cell.to_json().to_string(), "{cell:?}");
        }
    }

    fn raw(value: Value) -> Cell {
        Cell::RawJson(serde_json::value::to_raw_value(&value).unwrap())
    }

    /// Columns read in place give what cells would: nulls and absent columns as "" or none,
    /// other integer widths cast to the table's.
    #[test]
    fn columns_read_in_place_as_the_table_types_them() {
        use arrow_array::{BooleanArray, Int32Array, StringArray};
        const COLUMNS: &[(&str, ColumnType)] = &[
            ("Name", ColumnType::Text),
            ("Port", ColumnType::Int),
            ("Listed", ColumnType::Bool),
            ("Gone", ColumnType::Text),
        ];
        let batch = RecordBatch::try_from_iter([
            ("Port", Arc::new(Int32Array::from(vec![Some(443), None])) as ArrayRef),
            ("Name", Arc::new(StringArray::from(vec![Some("a"), None])) as ArrayRef),
            ("Listed", Arc::new(BooleanArray::from(vec![Some(false), None])) as ArrayRef),
        ])
        .unwrap();
        let columns = Columns::of(COLUMNS, &batch, true).unwrap();
        assert_eq!(columns.rows(), 2);
        assert_eq!((columns.text(0, 0), columns.int(1, 0), columns.bool(2, 0)), ("a", Some(443), Some(false)));
        assert_eq!((columns.text(0, 1), columns.int(1, 1), columns.bool(2, 1)), ("", None, None));
        assert_eq!((columns.text(3, 0), columns.int(3, 0)), ("", None));
        // text by dictionary key, a null without one
        let key = columns.key(0, 0).unwrap();
        assert_eq!((columns.value(0, key), columns.key(0, 1), columns.key(3, 0)), ("a", None, None));
        assert!(columns.dictionary(0).is_some() && columns.dictionary(1).is_none());
        let plain = Columns::of(COLUMNS, &batch, false).unwrap();
        assert_eq!((plain.text(0, 0), plain.text(0, 1), plain.key(0, 0)), ("a", "", None));
        let mut cells = Table::new("t", COLUMNS);
        cells.extend_from_record_batch(&batch).unwrap();
        assert_eq!(cells.rows[0], [Cell::from("a"), Cell::Int(443), Cell::Bool(false), Cell::Null]);
    }

    /// A document read back (a value) equals the text a run wrote of it, and only that.
    #[test]
    fn a_document_as_text_equals_its_value() {
        let doc = serde_json::json!({"days": ["2026-12-01"], "devices": [0, 2.5]});
        assert_eq!(raw(doc.clone()), Cell::Json(doc.clone()));
        assert_eq!(Cell::Json(doc.clone()), raw(doc.clone()));
        assert_eq!(raw(doc.clone()), raw(doc.clone()));
        assert_ne!(raw(doc.clone()), Cell::Json(serde_json::json!({"days": []})));
        assert_ne!(raw(doc.clone()), Cell::Text(doc.to_string()));
        let table = Table { name: "t", columns: &[("d", ColumnType::Json)], rows: vec![vec![raw(doc.clone())]] };
        let batch = table.to_record_batch().unwrap();
        let text = batch.column(0).as_any().downcast_ref::<arrow_array::StringArray>().unwrap().value(0);
        assert_eq!(serde_json::from_str::<Value>(text).unwrap(), doc);
    }
}

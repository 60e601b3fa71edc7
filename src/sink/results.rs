//! The result tables in a [`Store`]: `<Table>/day=YYYY-MM-DD/part-0.{parquet,jsonl}`, each
//! object written whole. Also reads the tables of earlier days back, which is what baselines are
//! built from.
//!
//! A run's [`Results`] ([`Results::for_run`]) stages what it writes until the run commits
//! ([`super::commit`]); reading always sees committed tables only.

use std::sync::Arc;

use arrow_schema::{DataType, Field, Schema};
use bytes::Bytes;
use parquet::arrow::arrow_reader::{ArrowReaderMetadata, ArrowReaderOptions, ParquetRecordBatchReaderBuilder};
use parquet::arrow::{ArrowWriter, ProjectionMask};
use parquet::basic::Compression;
use parquet::file::properties::WriterProperties;

use super::store::Store;
use super::table::read_type;
use super::{ColumnType, Columns, SinkError, Table};
use crate::time::Day;
use arrow_array::RecordBatch;

/// The one part file of a table-day.
pub const PART: &str = "part-0";

#[derive(Debug, Clone)]
pub struct Results {
    pub store: Arc<dyn Store>,
    /// `_staging/<RunId>/` when writes are staged for a commit; `None` writes in place.
    staging: Option<String>,
    /// The commit records of runs still moving their objects into place, listed once by
    /// [`Results::pinned`]; `None` lists them on every read (a LIST per call, an HTTP request on
    /// a container).
    pending: Option<Arc<Vec<super::commit::CommitRecord>>>,
}

/// `<table>/day=YYYY-MM-DD/`
pub fn day_prefix(table: &str, day: Day) -> String {
    format!("{table}/day={day}/")
}

impl Results {
    /// Reads committed tables; writes in place (each object whole, days not grouped).
    pub fn new(store: Arc<dyn Store>) -> Results {
        Results { store, staging: None, pending: None }
    }

    /// The results of one run: every write is staged under the run's id and becomes visible
    /// only when [`super::commit::commit`] publishes the run.
    pub fn for_run(store: Arc<dyn Store>, run_id: &str) -> Results {
        Results { store, staging: Some(super::commit::staging_prefix(run_id)), pending: None }
    }

    /// The same results with the pending commits listed now, once, for a reader of many days.
    /// Only while nothing commits meanwhile: under the run's lock, after its recovery and before
    /// its own commit.
    pub fn pinned(&self) -> Result<Results, SinkError> {
        let pending = super::commit::pending(self.store.as_ref())?;
        Ok(Results { pending: Some(Arc::new(pending)), ..self.clone() })
    }

    fn pending(&self) -> Result<std::borrow::Cow<'_, [super::commit::CommitRecord]>, SinkError> {
        Ok(match &self.pending {
            Some(pending) => std::borrow::Cow::Borrowed(pending.as_slice()),
            None => std::borrow::Cow::Owned(super::commit::pending(self.store.as_ref())?),
        })
    }

    /// Writes one table for one day, as Parquet and JSON lines.
    pub fn write_day(&self, table: &Table, day: Day) -> Result<(), SinkError> {
        self.write_at(&day_prefix(table.name, day), PART, table)
    }

    /// Writes one table for one day as Parquet only: for tables that only this job reads back,
    /// whose JSON lines would be many times larger.
    pub fn write_day_parquet(&self, table: &Table, day: Day) -> Result<(), SinkError> {
        self.put_day_parquet(table.name, day, encode_parquet(table)?)
    }

    /// Writes an encoded Parquet file as [`Results::write_day_parquet`] writes a table.
    pub fn put_day_parquet(&self, name: &str, day: Day, parquet: Bytes) -> Result<(), SinkError> {
        self.put(&format!("{}{PART}.parquet", day_prefix(name, day)), parquet)
    }

    /// Writes one object, staged like the tables.
    pub fn put(&self, path: &str, bytes: Bytes) -> Result<(), SinkError> {
        Ok(self.store.put(&format!("{}{path}", self.staging.as_deref().unwrap_or("")), bytes)?)
    }

    /// Writes a table as `<prefix><stem>.parquet` and `<prefix><stem>.jsonl`.
    pub fn write_at(&self, prefix: &str, stem: &str, table: &Table) -> Result<(), SinkError> {
        self.put_at(prefix, stem, encode_parquet(table)?, Bytes::from(table.to_jsonl()))
    }

    /// Writes a table encoded elsewhere (a chunk at a time) as [`Results::write_day`] writes it;
    /// `jsonl` is its JSON lines, written by a JSON writer (so UTF-8, not checked again).
    pub fn put_day(&self, name: &str, day: Day, parquet: Bytes, jsonl: Bytes) -> Result<(), SinkError> {
        self.put_at(&day_prefix(name, day), PART, parquet, jsonl)
    }

    fn put_at(&self, prefix: &str, stem: &str, parquet: Bytes, jsonl: Bytes) -> Result<(), SinkError> {
        let staging = self.staging.as_deref().unwrap_or("");
        self.store.put(&format!("{staging}{prefix}{stem}.parquet"), parquet)?;
        self.store.put(&format!("{staging}{prefix}{stem}.jsonl"), jsonl)?;
        Ok(())
    }

    /// A table of one day as written by [`Results::write_day`], or `None` if that day was never
    /// written. `columns` is the table's current definition: columns the file lacks come back as
    /// nulls, so history written by an older version still reads.
    pub fn read_day(
        &self,
        name: &'static str,
        columns: &'static [(&'static str, ColumnType)],
        day: Day,
    ) -> Result<Option<Table>, SinkError> {
        let mut table = Table::new(name, columns);
        let found = self.read_day_batches(name, columns, day, |batch| table.rows.extend(batch.rows))?;
        Ok(found.then_some(table))
    }

    /// [`Results::read_day`] a batch of rows at a time, in order, for a reader that keeps less
    /// than the rows; false if that day was never written.
    pub fn read_day_batches(
        &self,
        name: &'static str,
        columns: &'static [(&'static str, ColumnType)],
        day: Day,
        mut each: impl FnMut(Table),
    ) -> Result<bool, SinkError> {
        let mut first_row = 0;
        self.read_day_raw(name, columns, day, false, |batch| {
            let mut rows = Table::new(name, columns);
            rows.extend_from_record_batch_at(&batch, first_row)?;
            first_row += batch.num_rows();
            each(rows);
            Ok(())
        })
    }

    /// [`Results::read_day_batches`] without building cells: each batch as the table's columns,
    /// read in place; with `dictionaries`, text as the file's dictionaries (a day of the device
    /// table is tens of thousands of rows of ten strings, few of them distinct). What `each`
    /// finds wrong with a batch fails the read as an undecodable file.
    pub fn read_day_columns(
        &self,
        name: &'static str,
        columns: &'static [(&'static str, ColumnType)],
        day: Day,
        dictionaries: bool,
        mut each: impl FnMut(Columns) -> Result<(), String>,
    ) -> Result<bool, SinkError> {
        self.read_day_raw(name, columns, day, dictionaries, |batch| each(Columns::of(columns, &batch, dictionaries)?))
    }

    fn read_day_raw(
        &self,
        name: &'static str,
        columns: &'static [(&'static str, ColumnType)],
        day: Day,
        dictionaries: bool,
        each: impl FnMut(RecordBatch) -> Result<(), String>,
    ) -> Result<bool, SinkError> {
        let path = format!("{}{PART}.parquet", day_prefix(name, day));
        // This run's own writes first: the detectors read the earlier days of the same run.
        let staged = match &self.staging {
            Some(staging) => self.store.get(&format!("{staging}{path}"))?,
            None => None,
        };
        let bytes = match staged {
            Some(bytes) => bytes,
            None => {
                let pending = self.pending()?;
                let Some(bytes) = super::commit::resolve(self.store.as_ref(), &pending, &path)? else {
                    return Ok(false);
                };
                bytes
            }
        };
        decode_parquet(columns, bytes, dictionaries, each).map_err(|message| SinkError::Decode { path, message })?;
        Ok(true)
    }

    /// The days a table holds (committed, and staged by this run), sorted.
    pub fn days(&self, table: &str) -> Result<Vec<Day>, SinkError> {
        let prefix = format!("{table}/day=");
        let pending = self.pending()?;
        let staged: Vec<String> = match &self.staging {
            Some(staging) => self
                .store
                .list(&format!("{staging}{prefix}"))?
                .into_iter()
                .filter_map(|path| path.strip_prefix(staging.as_str()).map(str::to_string))
                .collect(),
            None => Vec::new(),
        };
        let mut days: Vec<Day> = self
            .store
            .list(&prefix)?
            .iter()
            .chain(pending.iter().flat_map(|record| record.objects.iter()))
            .chain(staged.iter())
            .filter(|path| path.starts_with(&prefix))
            .filter_map(|path| path[prefix.len()..].split('/').next().and_then(Day::parse))
            .collect();
        days.sort();
        days.dedup();
        Ok(days)
    }
}

pub fn encode_parquet(table: &Table) -> Result<Bytes, SinkError> {
    let mut encoder = ParquetEncoder::new(table.name, table.columns)?;
    encoder.write(table)?;
    encoder.finish()
}

/// A Parquet file written a chunk of rows at a time (one row group, as [`encode_parquet`] writes).
pub struct ParquetEncoder {
    table: &'static str,
    writer: ArrowWriter<Vec<u8>>,
}

impl ParquetEncoder {
    pub fn new(
        table: &'static str,
        columns: &'static [(&'static str, ColumnType)],
    ) -> Result<ParquetEncoder, SinkError> {
        let schema = Table::new(table, columns).schema();
        let mut properties = WriterProperties::builder().set_compression(Compression::SNAPPY);
        // A JSON value (a finding's parameters and series, its device lists) rarely repeats: a
        // dictionary of them would only be built to be thrown away.
        for (name, _) in columns.iter().filter(|(_, ty)| *ty == ColumnType::Json) {
            properties =
                properties.set_column_dictionary_enabled(parquet::schema::types::ColumnPath::from(*name), false);
        }
        let writer =
            ArrowWriter::try_new(Vec::new(), schema, Some(properties.build())).map_err(|e| encode(table, e))?;
        Ok(ParquetEncoder { table, writer })
    }

    pub fn write(&mut self, chunk: &Table) -> Result<(), SinkError> {
        let batch = chunk.to_record_batch().map_err(|e| encode(self.table, e))?;
        self.write_batch(&batch)
    }

    /// A chunk built as a batch of the table's schema.
    pub fn write_batch(&mut self, batch: &RecordBatch) -> Result<(), SinkError> {
        self.writer.write(batch).map_err(|e| encode(self.table, e))
    }

    pub fn finish(self) -> Result<Bytes, SinkError> {
        let table = self.table;
        Ok(Bytes::from(self.writer.into_inner().map_err(|e| encode(table, e))?))
    }
}

fn encode(table: &str, message: impl std::fmt::Display) -> SinkError {
    SinkError::Encode { table: table.to_string(), message: message.to_string() }
}

/// Decodes the asked `columns` of a Parquet file; with `dictionaries`, text columns as the
/// file's dictionaries (see [`super::table::read_type`]) rather than a string per row.
fn decode_parquet(
    columns: &'static [(&'static str, ColumnType)],
    bytes: Bytes,
    dictionaries: bool,
    mut each: impl FnMut(RecordBatch) -> Result<(), String>,
) -> Result<(), String> {
    let mut builder = ParquetRecordBatchReaderBuilder::try_new(bytes.clone()).map_err(|e| e.to_string())?;
    if dictionaries {
        let schema = builder.schema();
        let fields: Vec<Field> = schema
            .fields()
            .iter()
            .map(|field| {
                let text = columns.iter().any(|(name, ty)| *ty == ColumnType::Text && name == field.name());
                match field.data_type() {
                    DataType::Utf8 if text => field.as_ref().clone().with_data_type(read_type(ColumnType::Text, true)),
                    _ => field.as_ref().clone(),
                }
            })
            .collect();
        let hint = Arc::new(Schema::new_with_metadata(fields, schema.metadata().clone()));
        let metadata =
            ArrowReaderMetadata::try_new(builder.metadata().clone(), ArrowReaderOptions::new().with_schema(hint))
                .map_err(|e| e.to_string())?;
        builder = ParquetRecordBatchReaderBuilder::new_with_metadata(bytes, metadata);
    }
    // Only the columns asked for are decoded: a reader of a few columns (the report's findings)
    // leaves the large ones (Params, Series) compressed.
    let fields = builder.schema().fields();
    let wanted: Vec<usize> =
        (0..fields.len()).filter(|&i| columns.iter().any(|(name, _)| *name == fields[i].name())).collect();
    let builder = if wanted.is_empty() || wanted.len() == fields.len() {
        builder
    } else {
        let mask = ProjectionMask::roots(builder.parquet_schema(), wanted);
        builder.with_projection(mask)
    };
    let reader = builder.build().map_err(|e| e.to_string())?;
    for batch in reader {
        each(batch.map_err(|e| e.to_string())?)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sink::local::LocalDir;
    use crate::sink::Cell;

    const COLUMNS: &[(&str, ColumnType)] = &[
        ("Day", ColumnType::Day),
        ("Name", ColumnType::Text),
        ("Count", ColumnType::Int),
        ("Score", ColumnType::Float),
        ("Flag", ColumnType::Bool),
        ("At", ColumnType::Time),
        ("Extra", ColumnType::Json),
    ];

    #[test]
    fn tables_round_trip_through_the_store_and_list_their_days() {
        let dir = tempfile::tempdir().unwrap();
        let results = Results::new(Arc::new(LocalDir::new(dir.path())));
        let day = Day::parse("2026-11-02").unwrap();
        let mut table = Table::new("T", COLUMNS);
        table.push(vec![
            Cell::Day(day),
            Cell::from("a"),
            Cell::Int(3),
            Cell::Float(-1.5),
            Cell::Bool(true),
            Cell::Time(1_700_000_000_123_456),
            Cell::Json(serde_json::json!({"k": [1, 2]})),
        ]);
        table.push(vec![Cell::Null; COLUMNS.len()]);
        results.write_day(&table, day).unwrap();
        results.write_day(&Table::new("T", COLUMNS), day.prev()).unwrap();

        assert_eq!(results.read_day("T", COLUMNS, day).unwrap().unwrap(), table);
        assert_eq!(results.read_day("T", COLUMNS, day.next()).unwrap(), None);
        assert_eq!(results.days("T").unwrap(), vec![day.prev(), day]);
        assert_eq!(results.days("Other").unwrap(), vec![]);

        // a run's writes are invisible until it commits, then replace the day whole
        let run = Results::for_run(results.store.clone(), "run-2");
        let mut replaced = Table::new("T", COLUMNS);
        replaced.push(vec![Cell::Null; COLUMNS.len()]);
        run.write_day(&replaced, day).unwrap();
        run.write_day(&replaced, day.next()).unwrap();
        assert_eq!(results.read_day("T", COLUMNS, day).unwrap().unwrap(), table);
        assert_eq!(results.days("T").unwrap(), vec![day.prev(), day]);
        assert_eq!(crate::sink::commit::commit(results.store.as_ref(), "run-2", 0).unwrap(), 4);
        assert_eq!(results.read_day("T", COLUMNS, day).unwrap().unwrap(), replaced);
        assert_eq!(results.days("T").unwrap(), vec![day.prev(), day, day.next()]);
        results.write_day(&table, day).unwrap();

        // a newer definition with one more column reads old files, the new column as nulls
        const WIDER: &[(&str, ColumnType)] = &[("Name", ColumnType::Text), ("New", ColumnType::Int)];
        let wider = results.read_day("T", WIDER, day).unwrap().unwrap();
        assert_eq!(wider.rows, vec![vec![Cell::from("a"), Cell::Null], vec![Cell::Null, Cell::Null]]);
    }

    #[test]
    fn a_stored_json_cell_that_does_not_read_is_named_by_its_row_in_the_file() {
        const JSON: &[(&str, ColumnType)] = &[("Extra", ColumnType::Json)];
        let dir = tempfile::tempdir().unwrap();
        let results = Results::new(Arc::new(LocalDir::new(dir.path())));
        let day = Day::parse("2026-11-02").unwrap();
        // more rows than one read batch holds, the broken one past the first batch
        let texts: Vec<String> =
            (0..3000).map(|i| if i == 2500 { "[\"dev".into() } else { format!("[{i}]") }).collect();
        let schema = Table::new("T", JSON).schema();
        let batch =
            RecordBatch::try_new(schema.clone(), vec![Arc::new(arrow_array::StringArray::from(texts))]).unwrap();
        let mut bytes = Vec::new();
        let mut writer = ArrowWriter::try_new(&mut bytes, schema, None).unwrap();
        writer.write(&batch).unwrap();
        writer.close().unwrap();
        results.put_day_parquet("T", day, Bytes::from(bytes)).unwrap();
        let error = results.read_day("T", JSON, day).unwrap_err().to_string();
        assert!(error.contains("column `Extra` row 2500: not JSON"), "{error}");
    }
}

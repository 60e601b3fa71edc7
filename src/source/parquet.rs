//! Parquet from any common writer: INT64 timestamps in any unit with or without a zone, INT96,
//! text timestamps; Utf8, LargeUtf8, Utf8View or dictionary strings; missing optional columns;
//! extra columns (never decoded); empty files; many row groups.
//!
//! Three things keep the scan cheap: row groups whose time statistics fall outside the window
//! are never read; only canonical columns are read; and RemoteUrl is judged first, so the other
//! columns are decoded only for telemetry rows. Where every needed column is flat and plainly
//! or dictionary encoded (what common writers write), a row group is read page by page
//! ([`super::url_pages`], [`super::pages`]): RemoteUrl pages searched whole, the other columns'
//! values taken for the kept rows only. Anything else goes through the arrow reader with a row
//! filter, which gives the same batches.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use arrow_array::cast::AsArray;
use arrow_array::{Array, BooleanArray, RecordBatch};
use arrow_schema::{DataType, TimeUnit};
use bytes::Bytes;
use parquet::arrow::arrow_reader::{
    ArrowPredicateFn, ArrowReaderMetadata, ArrowReaderOptions, ParquetRecordBatchReaderBuilder, RowFilter,
    RowSelectionPolicy,
};
use parquet::arrow::ProjectionMask;
use parquet::basic::Encoding;
use parquet::file::statistics::Statistics;

use super::canonical::{from_columns, TimeCell, TimeReader};
use super::pages::{self, ColumnCursor, Kind};
use super::url_pages::UrlPages;
use super::{DayCounts, ScanOptions, ScanStats, SourceError};
use crate::config::TimeColumn;
use crate::hunt::host::HostMatcher;
use crate::schema;
use crate::time::{in_datetime_range, Day};

/// Rows per decoded batch.
const BATCH_SIZE: usize = 8192;

/// A range of row groups of one file, with the file's metadata parsed once at planning.
#[derive(Debug, Clone)]
pub struct ParquetUnit {
    /// The file, or the blob's URL.
    pub path: PathBuf,
    /// The blob the unit reads; `None` for the local file at `path`.
    pub object: Option<super::ObjectRef>,
    pub row_groups: Vec<usize>,
    pub rows: u64,
    /// The first and last UTC day of its rows, by the time column's statistics.
    pub days: Option<(Day, Day)>,
    metadata: ArrowReaderMetadata,
    time_name: String,
}

/// What planning a file found: units to read and what was pruned.
pub struct PlannedFile {
    pub units: Vec<ParquetUnit>,
    pub row_groups_pruned: u64,
    pub rows_pruned: u64,
    pub missing_columns: Vec<&'static str>,
}

fn parquet_error(path: &Path, e: impl std::fmt::Display) -> SourceError {
    SourceError::Parquet { path: path.to_path_buf(), message: e.to_string() }
}

/// Reads the footer, picks the time column and prunes row groups by their statistics.
pub fn plan_file(path: &Path, options: &ScanOptions) -> Result<PlannedFile, SourceError> {
    let file = File::open(path).map_err(|source| SourceError::Io { path: path.to_path_buf(), source })?;
    let metadata = ArrowReaderMetadata::load(&file, ArrowReaderOptions::new()).map_err(|e| parquet_error(path, e))?;
    plan_metadata(path, None, metadata, options)
}

/// Plans a file from its footer (read locally or fetched from a blob).
pub fn plan_metadata(
    path: &Path,
    object: Option<super::ObjectRef>,
    metadata: ArrowReaderMetadata,
    options: &ScanOptions,
) -> Result<PlannedFile, SourceError> {
    let metadata = with_string_views(metadata).map_err(|e| parquet_error(path, e))?;
    let arrow_schema = metadata.schema().clone();
    let has = |name: &str| arrow_schema.fields().iter().any(|f| f.name() == name);
    let time_name = match options.time_column {
        TimeColumn::Timestamp if has(schema::TIMESTAMP) => schema::TIMESTAMP,
        TimeColumn::Timestamp if has(schema::TIME_GENERATED) => schema::TIME_GENERATED,
        TimeColumn::TimeGenerated if has(schema::TIME_GENERATED) => schema::TIME_GENERATED,
        TimeColumn::Timestamp => {
            return Err(SourceError::NoTimeColumn {
                path: path.to_path_buf(),
                wanted: "Timestamp",
                fallback: " (nor `TimeGenerated`)",
            })
        }
        TimeColumn::TimeGenerated => {
            return Err(SourceError::NoTimeColumn { path: path.to_path_buf(), wanted: "TimeGenerated", fallback: "" })
        }
    };
    let missing_columns =
        [schema::DEVICE_ID, schema::ACTION_TYPE, schema::REMOTE_URL].into_iter().filter(|c| !has(c)).collect();
    // A RemoteUrl of another type (a list, a struct, a number) would be cast to some text or to
    // nothing and quietly match nothing, or look like an evasion: the file is refused instead.
    if let Ok(url) = arrow_schema.field_with_name(schema::REMOTE_URL) {
        if !is_text(url.data_type()) {
            let message = format!(
                "column `RemoteUrl` is of type {}; it must hold text (a URL or host name): export it as a string column",
                url.data_type()
            );
            return Err(parquet_error(path, message));
        }
    }

    let time_field = arrow_schema.field_with_name(time_name).map_err(|e| parquet_error(path, e))?;
    let unit = match time_field.data_type() {
        DataType::Timestamp(unit, _) => Some(*unit),
        _ => None,
    };
    let parquet_meta = metadata.metadata().clone();
    check_chunks(path, &parquet_meta)?;
    let leaf =
        parquet_meta.file_metadata().schema_descr().columns().iter().position(|c| c.path().string() == time_name);

    let mut units = Vec::new();
    let (mut row_groups_pruned, mut rows_pruned) = (0, 0);
    for (i, rg) in parquet_meta.row_groups().iter().enumerate() {
        let rows = rg.num_rows().max(0) as u64;
        if rows == 0 {
            continue;
        }
        let bounds = match (unit, leaf.and_then(|l| rg.column(l).statistics())) {
            (Some(unit), Some(Statistics::Int64(s))) => s
                .min_opt()
                .zip(s.max_opt())
                .map(|(min, max)| (Day::of_micros(to_micros(*min, unit)), Day::of_micros(to_micros(*max, unit)))),
            _ => None,
        };
        if let (Some((from, to)), Some((first, last))) = (options.window, bounds) {
            if last < from || first > to {
                row_groups_pruned += 1;
                rows_pruned += rows;
                continue;
            }
        }
        units.push(ParquetUnit {
            path: path.to_path_buf(),
            object: object.clone(),
            row_groups: vec![i],
            rows,
            days: bounds,
            metadata: metadata.clone(),
            time_name: time_name.to_string(),
        });
    }
    Ok(PlannedFile { units, row_groups_pruned, rows_pruned, missing_columns })
}

/// Strings, bytes, or a dictionary of either.
fn is_text(data_type: &DataType) -> bool {
    match data_type {
        DataType::Utf8
        | DataType::LargeUtf8
        | DataType::Utf8View
        | DataType::Binary
        | DataType::LargeBinary
        | DataType::BinaryView => true,
        DataType::Dictionary(_, values) => is_text(values),
        _ => false,
    }
}

/// Rejects a footer whose column chunks lie at negative offsets or sizes: the reader asserts
/// they do not (it panics on them, found by fuzzing).
fn check_chunks(path: &Path, metadata: &parquet::file::metadata::ParquetMetaData) -> Result<(), SourceError> {
    for (group, row_group) in metadata.row_groups().iter().enumerate() {
        for column in row_group.columns() {
            let start = column.dictionary_page_offset().unwrap_or(column.data_page_offset());
            let length = column.compressed_size();
            if start < 0 || length < 0 || start.checked_add(length).is_none() {
                let message = format!(
                    "row group {group} has a column chunk at offset {start} of {length} bytes; the footer is corrupt"
                );
                return Err(parquet_error(path, message));
            }
        }
    }
    Ok(())
}

/// Asks the reader for string views instead of contiguous strings: a view points into the
/// decoded page, so RemoteUrl values (mostly plain-encoded: too many distinct values for a
/// dictionary) are not copied before the host test looks at them. A RemoteUrl whose every
/// chunk is dictionary-encoded is read as a dictionary instead: each distinct value is tested
/// once per chunk and a row costs a key. INT96 times are read as microseconds: as nanoseconds
/// (the reader's default) a time after 2262-04-11 wraps around to a wrong day without any error.
fn with_string_views(metadata: ArrowReaderMetadata) -> Result<ArrowReaderMetadata, parquet::errors::ParquetError> {
    let schema = metadata.schema();
    let parquet_meta = metadata.metadata();
    let descr = parquet_meta.file_metadata().schema_descr();
    let leaf = |name: &str| descr.columns().iter().position(|c| c.path().parts() == [name.to_string()]);
    let int96 = |name: &str| leaf(name).is_some_and(|l| descr.column(l).physical_type() == parquet::basic::Type::INT96);
    let all_dictionary = |name: &str| {
        leaf(name).is_some_and(|l| {
            descr.column(l).physical_type() == parquet::basic::Type::BYTE_ARRAY
                && parquet_meta.row_groups().iter().all(|rg| {
                    let chunk = rg.column(l);
                    chunk.dictionary_page_offset().is_some()
                        && chunk.page_encoding_stats_mask().is_some_and(|mask| {
                            mask.is_only(Encoding::RLE_DICTIONARY) || mask.is_only(Encoding::PLAIN_DICTIONARY)
                        })
                })
        })
    };
    let fields: Vec<arrow_schema::FieldRef> = schema
        .fields()
        .iter()
        .map(|f| match f.data_type() {
            DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View | DataType::Dictionary(_, _)
                if f.name() == schema::REMOTE_URL && all_dictionary(f.name()) =>
            {
                let dictionary = DataType::Dictionary(Box::new(DataType::Int32), Box::new(DataType::Utf8));
                Arc::new(f.as_ref().clone().with_data_type(dictionary))
            }
            DataType::Utf8 | DataType::LargeUtf8 => Arc::new(f.as_ref().clone().with_data_type(DataType::Utf8View)),
            DataType::Timestamp(TimeUnit::Nanosecond, None) if int96(f.name()) => {
                Arc::new(f.as_ref().clone().with_data_type(DataType::Timestamp(TimeUnit::Microsecond, None)))
            }
            _ => f.clone(),
        })
        .collect();
    let hinted = Arc::new(arrow_schema::Schema::new_with_metadata(fields, schema.metadata().clone()));
    ArrowReaderMetadata::try_new(metadata.metadata().clone(), ArrowReaderOptions::new().with_schema(hinted))
}

fn to_micros(value: i64, unit: TimeUnit) -> i64 {
    match unit {
        TimeUnit::Second => value.saturating_mul(1_000_000),
        TimeUnit::Millisecond => value.saturating_mul(1_000),
        TimeUnit::Microsecond => value,
        TimeUnit::Nanosecond => value.div_euclid(1_000),
    }
}

/// Row-by-row relevance of a RemoteUrl column, in whatever string encoding the reader produced.
/// Dictionary values are tested once each (on first use), however many rows share them.
enum UrlReader<'v> {
    Utf8(arrow_array::StringArray),
    Large(arrow_array::LargeStringArray),
    View(arrow_array::StringViewArray),
    Dictionary {
        keys: Vec<usize>,
        valid: Option<arrow_buffer::NullBuffer>,
        values: &'v arrow_array::StringArray,
        verdicts: &'v mut Vec<u8>,
    },
    Absent,
}

/// The relevance of a column chunk's dictionary entries, kept from batch to batch: the reader
/// hands every batch of a chunk the same dictionary, so each entry is tested once per chunk.
#[derive(Default)]
struct DictionaryVerdicts {
    /// The chunk's dictionary as the reader hands it, and its entries as text (cast once).
    dictionary: Option<(arrow_array::ArrayRef, arrow_array::StringArray)>,
    /// Per entry: 0 not yet tested, 1 irrelevant, 2 relevant.
    verdicts: Vec<u8>,
}

impl<'v> UrlReader<'v> {
    fn new(array: Option<&dyn Array>, known: &'v mut DictionaryVerdicts) -> UrlReader<'v> {
        let Some(array) = array else { return UrlReader::Absent };
        match array.data_type() {
            DataType::Utf8 => UrlReader::Utf8(array.as_string::<i32>().clone()),
            DataType::LargeUtf8 => UrlReader::Large(array.as_string::<i64>().clone()),
            DataType::Utf8View => UrlReader::View(array.as_string_view().clone()),
            DataType::Dictionary(_, _) => {
                let dict = array.as_any_dictionary();
                if !known.dictionary.as_ref().is_some_and(|(d, _)| Arc::ptr_eq(d, dict.values())) {
                    let Ok(text) = arrow_cast::cast(dict.values().as_ref(), &DataType::Utf8) else {
                        return UrlReader::Absent;
                    };
                    known.dictionary = Some((dict.values().clone(), text.as_string::<i32>().clone()));
                    known.verdicts.clear();
                    known.verdicts.resize(dict.values().len(), 0);
                }
                let (_, values) = known.dictionary.as_ref().expect("set just above");
                UrlReader::Dictionary {
                    keys: dict.normalized_keys(),
                    valid: dict.keys().logical_nulls(),
                    values,
                    verdicts: &mut known.verdicts,
                }
            }
            _ => match arrow_cast::cast(array, &DataType::Utf8) {
                Ok(text) => UrlReader::Utf8(text.as_string::<i32>().clone()),
                Err(_) => UrlReader::Absent,
            },
        }
    }

    #[inline]
    fn relevant(&mut self, row: usize, matcher: &HostMatcher) -> bool {
        let test = |v: &str| !v.is_empty() && matcher.is_relevant(v);
        match self {
            UrlReader::Utf8(a) => a.is_valid(row) && test(a.value(row)),
            UrlReader::Large(a) => a.is_valid(row) && test(a.value(row)),
            UrlReader::View(a) => a.is_valid(row) && test(a.value(row)),
            UrlReader::Dictionary { keys, valid, values, verdicts } => {
                if valid.as_ref().is_some_and(|n| n.is_null(row)) {
                    return false;
                }
                let key = keys[row];
                let Some(state) = verdicts.get_mut(key) else { return false };
                if *state == 0 {
                    *state = if values.is_valid(key) && test(values.value(key)) { 2 } else { 1 };
                }
                *state == 2
            }
            UrlReader::Absent => false,
        }
    }
}

/// The column chunks one unit reads: fetched whole (a blob: one ranged GET per run of adjacent
/// chunks), or read from a local file a page at a time as the decoder asks for it, so a reader
/// holds the pages it is decoding rather than every needed column chunk of its row groups (the
/// parquet crate's own `File` reader would also reopen the file for every page).
#[derive(Clone)]
pub struct ColumnChunks {
    file_length: u64,
    source: ChunkSource,
}

#[derive(Clone)]
enum ChunkSource {
    /// (file offset, bytes), sorted by offset.
    Fetched(Vec<(u64, Bytes)>),
    Local(Arc<File>),
}

impl ColumnChunks {
    /// Chunks fetched elsewhere (a blob): (file offset, bytes) each; one may hold several
    /// adjacent column chunks.
    pub fn from_fetched(file_length: u64, mut chunks: Vec<(u64, Bytes)>) -> ColumnChunks {
        chunks.sort_by_key(|(start, _)| *start);
        ColumnChunks { file_length, source: ChunkSource::Fetched(chunks) }
    }

    /// A local file whose column chunks `ranges` are read on demand; checks they lie inside it.
    fn local(path: &Path, file: File, ranges: &[(u64, u64)]) -> Result<ColumnChunks, SourceError> {
        let file_length = file.metadata().map_err(|source| SourceError::Io { path: path.to_path_buf(), source })?.len();
        for &(start, length) in ranges {
            if start.checked_add(length).is_none_or(|end| end > file_length) {
                return Err(parquet_error(
                    path,
                    format!("a column chunk ({start}+{length}) lies beyond the end of the file ({file_length} bytes)"),
                ));
            }
        }
        Ok(ColumnChunks { file_length, source: ChunkSource::Local(Arc::new(file)) })
    }

    fn slice(&self, start: u64, length: Option<usize>) -> parquet::errors::Result<Bytes> {
        let missing =
            || parquet::errors::ParquetError::General(format!("offset {start} is outside the column chunks read"));
        match &self.source {
            ChunkSource::Fetched(chunks) => {
                let index = chunks.partition_point(|(s, _)| *s <= start);
                let (chunk_start, bytes) = index.checked_sub(1).map(|i| &chunks[i]).ok_or_else(missing)?;
                // a page header or page placed past the chunk that holds its start is not in memory
                let from = usize::try_from(start - chunk_start).map_err(|_| missing())?;
                let to = match length {
                    Some(length) => from.checked_add(length).ok_or_else(missing)?,
                    None => bytes.len(),
                };
                if from > to || to > bytes.len() {
                    return Err(missing());
                }
                Ok(bytes.slice(from..to))
            }
            ChunkSource::Local(file) => {
                use std::io::{Read, Seek, SeekFrom};
                let length = length.ok_or_else(missing)?;
                let failed = |e: std::io::Error| {
                    parquet::errors::ParquetError::General(format!("reading {length} bytes at offset {start}: {e}"))
                };
                // One reader per unit and one page at a time, so the file's own position is free
                // to use; read_to_end fills the spare capacity without zeroing it first.
                let mut reader = &**file;
                reader.seek(SeekFrom::Start(start)).map_err(failed)?;
                let mut buffer = Vec::with_capacity(length);
                reader.take(length as u64).read_to_end(&mut buffer).map_err(failed)?;
                if buffer.len() != length {
                    return Err(failed(ended_early(start + buffer.len() as u64)));
                }
                Ok(Bytes::from(buffer))
            }
        }
    }
}

/// A local file read from a position on (a page header), a buffer at a time.
pub struct PositionedRead {
    file: Arc<File>,
    position: u64,
}

impl std::io::Read for PositionedRead {
    fn read(&mut self, buffer: &mut [u8]) -> std::io::Result<usize> {
        let read = read_at(&self.file, buffer, self.position)?;
        // A page header is always followed by its page: the end of the file here means the file
        // is shorter than its footer says.
        if read == 0 && !buffer.is_empty() {
            return Err(ended_early(self.position));
        }
        self.position += read as u64;
        Ok(read)
    }
}

/// The error of a local file that ends before the page its footer places at `offset`.
fn ended_early(offset: u64) -> std::io::Error {
    std::io::Error::new(
        std::io::ErrorKind::UnexpectedEof,
        format!("the file ends before offset {offset}, where its footer places a page (was it changed while the job read it?)"),
    )
}

#[cfg(unix)]
fn read_at(file: &File, buffer: &mut [u8], offset: u64) -> std::io::Result<usize> {
    std::os::unix::fs::FileExt::read_at(file, buffer, offset)
}

#[cfg(windows)]
fn read_at(file: &File, buffer: &mut [u8], offset: u64) -> std::io::Result<usize> {
    std::os::windows::fs::FileExt::seek_read(file, buffer, offset)
}

/// What [`ColumnChunks`] hands the page reader for a page header.
pub struct ChunkRead {
    source: ChunkReadSource,
    /// Whether a read already found the end.
    ended: bool,
}

enum ChunkReadSource {
    Fetched(bytes::buf::Reader<Bytes>),
    Local(std::io::BufReader<PositionedRead>),
}

impl std::io::Read for ChunkRead {
    /// The end is told once; asked again, it is an error. The parquet crate skips an unknown
    /// field of a page header by copying its claimed length to nowhere and does not check that
    /// it got there, so a header claiming a list of two billion 8-byte values at the end of its
    /// chunk was "skipped" one empty copy at a time, for seconds (found by fuzzing: 7 KB files).
    fn read(&mut self, buffer: &mut [u8]) -> std::io::Result<usize> {
        let read = match &mut self.source {
            ChunkReadSource::Fetched(reader) => reader.read(buffer)?,
            ChunkReadSource::Local(reader) => reader.read(buffer)?,
        };
        if read == 0 && !buffer.is_empty() {
            if self.ended {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "a page header runs past the end of its column chunk",
                ));
            }
            self.ended = true;
        }
        Ok(read)
    }
}

impl parquet::file::reader::Length for ColumnChunks {
    fn len(&self) -> u64 {
        self.file_length
    }
}

impl parquet::file::reader::ChunkReader for ColumnChunks {
    type T = ChunkRead;

    fn get_read(&self, start: u64) -> parquet::errors::Result<Self::T> {
        use bytes::Buf;
        let source = match &self.source {
            ChunkSource::Fetched(_) => ChunkReadSource::Fetched(self.slice(start, None)?.reader()),
            // Only page headers are read this way (the pages themselves through `get_bytes`):
            // a small buffer holds one whole, usually.
            ChunkSource::Local(file) => ChunkReadSource::Local(std::io::BufReader::with_capacity(
                1024,
                PositionedRead { file: file.clone(), position: start },
            )),
        };
        Ok(ChunkRead { source, ended: false })
    }

    fn get_bytes(&self, start: u64, length: usize) -> parquet::errors::Result<Bytes> {
        self.slice(start, Some(length))
    }
}

/// Time and RemoteUrl of the rows the filter kept, handed from the filter to the output side so
/// those two columns are decompressed and decoded once, not twice.
#[derive(Default)]
struct Carried {
    micros: std::collections::VecDeque<i64>,
    urls: std::collections::VecDeque<arrow_array::ArrayRef>,
}

/// A filtered string-view array still points into every decoded page of its batch, and the
/// filter carries its kept rows for the whole row group before the first is handed on: copied
/// out, a reader holds the kept strings instead of the row group's whole decoded RemoteUrl.
fn compact(urls: arrow_array::ArrayRef) -> arrow_array::ArrayRef {
    match urls.data_type() {
        DataType::Utf8View => Arc::new(urls.as_string_view().gc()),
        DataType::BinaryView => Arc::new(urls.as_binary_view().gc()),
        _ => urls,
    }
}

impl Carried {
    /// The next `rows` kept rows, in order.
    fn take(&mut self, rows: usize) -> Result<(Vec<i64>, Option<arrow_array::ArrayRef>), String> {
        if self.micros.len() < rows {
            return Err(format!("the reader returned {rows} rows but the filter kept {}", self.micros.len()));
        }
        let micros: Vec<i64> = self.micros.drain(..rows).collect();
        let mut pieces = Vec::new();
        let mut missing = rows;
        while missing > 0 {
            let Some(front) = self.urls.pop_front() else { break };
            if front.len() <= missing {
                missing -= front.len();
                pieces.push(front);
            } else {
                pieces.push(front.slice(0, missing));
                self.urls.push_front(front.slice(missing, front.len() - missing));
                missing = 0;
            }
        }
        let url = match pieces.len() {
            0 => None,
            1 => pieces.pop(),
            _ => {
                let refs: Vec<&dyn Array> = pieces.iter().map(|a| a.as_ref()).collect();
                Some(arrow_select::concat::concat(&refs).map_err(|e| e.to_string())?)
            }
        };
        Ok((micros, url))
    }
}

/// The root columns a scan reads: the filter's (time, RemoteUrl) and the output's.
struct Projection {
    filter_columns: Vec<usize>,
    output_columns: Vec<usize>,
}

/// The RemoteUrl leaf of a unit's single row group when [`UrlPages`] can read it, and whether
/// the arrow reader would read it as text (then its values are checked to be UTF-8).
fn url_leaf(metadata: &ArrowReaderMetadata, row_groups: &[usize]) -> Option<(usize, bool)> {
    let &[group] = row_groups else { return None };
    let parquet_meta = metadata.metadata();
    let descr = parquet_meta.file_metadata().schema_descr();
    let leaf = descr.columns().iter().position(|c| c.path().parts() == [schema::REMOTE_URL.to_string()])?;
    let field = metadata.schema().field_with_name(schema::REMOTE_URL).ok()?;
    let kind = Kind::of(&descr.column(leaf), field.data_type())?;
    UrlPages::supports(&descr.column(leaf), parquet_meta.row_group(group).column(leaf))
        .then_some((leaf, kind == Kind::Text))
}

impl ParquetUnit {
    fn projection(&self, options: &ScanOptions) -> Projection {
        let arrow_schema = self.metadata.schema();
        let index = |name: &str| arrow_schema.fields().iter().position(|f| f.name() == name);
        let time_index = index(&self.time_name).expect("planning found the time column");
        let url_index = index(schema::REMOTE_URL);
        let filter_columns: Vec<usize> = std::iter::once(time_index).chain(url_index).collect();
        // The output side reads the other columns; time and RemoteUrl come from the filter. A
        // file with nothing else still needs one column to carry the row count.
        let mut output_columns: Vec<usize> =
            options.columns.iter().filter_map(|c| index(c)).filter(|i| !filter_columns.contains(i)).collect();
        if output_columns.is_empty() {
            output_columns.push(time_index);
        }
        output_columns.sort_unstable();
        Projection { filter_columns, output_columns }
    }

    /// The (offset, length) of every column chunk a scan of this unit reads, and nothing else:
    /// what a fetch of the unit must bring into memory.
    pub fn chunk_ranges(&self, options: &ScanOptions) -> Vec<(u64, u64)> {
        let reads = self.reads_root(options);
        let parquet_meta = self.metadata.metadata();
        let schema_descr = parquet_meta.file_metadata().schema_descr();
        let mut ranges = Vec::new();
        for &group in &self.row_groups {
            let row_group = parquet_meta.row_group(group);
            for leaf in 0..schema_descr.num_columns() {
                if reads(schema_descr.get_column_root_idx(leaf)) {
                    ranges.push(row_group.column(leaf).byte_range());
                }
            }
        }
        ranges
    }

    /// Whether the scan reads the column of this root (a filter or an output column).
    fn reads_root(&self, options: &ScanOptions) -> impl Fn(usize) -> bool {
        let Projection { filter_columns, output_columns } = self.projection(options);
        move |root| filter_columns.contains(&root) || output_columns.contains(&root)
    }

    /// Scans the unit's local file.
    pub fn scan(&self, options: &ScanOptions, sink: &mut dyn FnMut(RecordBatch)) -> Result<ScanStats, SourceError> {
        let path = &self.path;
        let file = File::open(path).map_err(|source| SourceError::Io { path: path.clone(), source })?;
        let chunks = ColumnChunks::local(path, file, &self.chunk_ranges(options))?;
        self.scan_chunks(chunks, options, sink)
    }

    /// Scans the unit from its column chunks in memory (read from a local file or fetched from
    /// a blob; see [`ParquetUnit::chunk_ranges`]).
    pub fn scan_chunks(
        &self,
        chunks: ColumnChunks,
        options: &ScanOptions,
        sink: &mut dyn FnMut(RecordBatch),
    ) -> Result<ScanStats, SourceError> {
        // The parquet crate panics on some corrupt pages (definition levels that overrun their
        // buffer, found by fuzzing): the file fails with its name, like any unreadable input.
        let scanned = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| match self.paged_plan(options) {
            Some(plan) => {
                // the arrow reader reads only the time column here
                self.check_dictionary_pages(&chunks, |root| root == plan.time_root)?;
                self.scan_paged(chunks, options, sink, plan)
            }
            None => {
                self.check_dictionary_pages(&chunks, self.reads_root(options))?;
                self.scan_filtered(chunks, options, sink, true)
            }
        }));
        scanned.unwrap_or_else(|panic| {
            let message = super::panic_message(panic.as_ref());
            Err(parquet_error(&self.path, format!("the reader failed on this file: {message}")))
        })
    }

    /// The column chunks the arrow reader is to read (those under the roots `read` picks),
    /// checked for a dictionary page that claims more values than it holds (see
    /// [`pages::check_dictionary_page`]) before the reader sees them; the page reader checks its
    /// own as it reads them.
    fn check_dictionary_pages(&self, chunks: &ColumnChunks, read: impl Fn(usize) -> bool) -> Result<(), SourceError> {
        let parquet_meta = self.metadata.metadata();
        let schema_descr = parquet_meta.file_metadata().schema_descr();
        let reader = Arc::new(chunks.clone());
        for &group in &self.row_groups {
            let row_group = parquet_meta.row_group(group);
            let rows = row_group.num_rows().max(0) as usize;
            for leaf in 0..schema_descr.num_columns() {
                if read(schema_descr.get_column_root_idx(leaf)) {
                    pages::check_dictionary_page(
                        reader.clone(),
                        &schema_descr.column(leaf),
                        row_group.column(leaf),
                        rows,
                    )
                    .map_err(|m| parquet_error(&self.path, format!("row group {group}: {m}")))?;
                }
            }
        }
        Ok(())
    }

    /// The columns of a unit that [`UrlPages`] and [`ColumnCursor`] can read, when all of
    /// them can: one row group, every needed column flat, in encodings they read.
    fn paged_plan(&self, options: &ScanOptions) -> Option<PagedPlan> {
        let &[group] = self.row_groups.as_slice() else { return None };
        let parquet_meta = self.metadata.metadata();
        let descr = parquet_meta.file_metadata().schema_descr();
        let arrow_schema = self.metadata.schema();
        let row_group = parquet_meta.row_group(group);
        let column = |root: usize| -> Option<PagedColumn> {
            let field = arrow_schema.field(root);
            let leaf = descr.columns().iter().position(|c| c.path().parts() == [field.name().to_string()])?;
            let kind = Kind::of(&descr.column(leaf), field.data_type())?;
            pages::readable(&descr.column(leaf), row_group.column(leaf)).then(|| PagedColumn {
                name: field.name().clone(),
                leaf,
                kind,
            })
        };
        let url_root = arrow_schema.fields().iter().position(|f| f.name() == schema::REMOTE_URL)?;
        let url = column(url_root).filter(|c| matches!(c.kind, Kind::Text | Kind::Bytes))?;
        let Projection { filter_columns, output_columns } = self.projection(options);
        let outputs = output_columns.into_iter().map(column).collect::<Option<Vec<_>>>()?;
        Some(PagedPlan { time_root: filter_columns[0], url, outputs })
    }

    /// The unit page by page: the time column through the arrow reader (any time type),
    /// RemoteUrl judged from its pages ([`UrlPages`]), and of the other columns only the
    /// values of the rows kept ([`ColumnCursor`]).
    fn scan_paged(
        &self,
        chunks: ColumnChunks,
        options: &ScanOptions,
        sink: &mut dyn FnMut(RecordBatch),
        plan: PagedPlan,
    ) -> Result<ScanStats, SourceError> {
        let path = &self.path;
        let failed = |m: String| parquet_error(path, format!("row group {}: {m}", self.row_groups[0]));
        let parquet_meta = self.metadata.metadata();
        let schema_descr = parquet_meta.file_metadata().schema_descr_ptr();
        let group = parquet_meta.row_group(self.row_groups[0]);
        let rows = group.num_rows().max(0) as usize;
        let reader = Arc::new(chunks.clone());
        let mut urls = UrlPages::new(
            reader.clone(),
            &schema_descr.column(plan.url.leaf),
            group.column(plan.url.leaf),
            rows,
            options.matcher.clone(),
            plan.url.kind == Kind::Text,
        )
        .map_err(failed)?;
        let mut cursors = plan
            .outputs
            .iter()
            .map(|c| {
                let cursor = ColumnCursor::new(
                    reader.clone(),
                    &schema_descr.column(c.leaf),
                    group.column(c.leaf),
                    rows,
                    c.kind,
                )?;
                Ok((c.name.as_str(), cursor))
            })
            .collect::<Result<Vec<_>, String>>()
            .map_err(failed)?;
        let times = ParquetRecordBatchReaderBuilder::new_with_metadata(chunks, self.metadata.clone())
            .with_row_groups(self.row_groups.clone())
            .with_projection(ProjectionMask::roots(&schema_descr, [plan.time_root]))
            .with_batch_size(BATCH_SIZE)
            .build()
            .map_err(|e| parquet_error(path, e))?;
        let mut stats = ScanStats { row_groups_read: 1, ..Default::default() };
        let judge = RowJudge::new(&self.path, self.row_groups[0], options);
        let mut offset = 0usize;
        let mut relevant = RelevantRows::default();
        for batch in times {
            let batch = batch.map_err(|e| parquet_error(path, e))?;
            let time = TimeReader::new(batch.column(0).as_ref()).map_err(|m| parquet_error(path, m))?;
            relevant.take(&mut urls, batch.num_rows()).map_err(failed)?;
            let mut kept_rows: Vec<u32> = Vec::new();
            let mut micros = Vec::new();
            let mut kept_urls = arrow_array::builder::StringBuilder::new();
            judge.batch_listed(&time, batch.num_rows(), offset, &mut stats, &relevant.rows, |row, t, index| {
                kept_urls.append_value(relevant.value(index));
                kept_rows.push((offset + row) as u32);
                micros.push(t);
            });
            offset += batch.num_rows();
            if kept_rows.is_empty() {
                continue;
            }
            let mut named: Vec<(&str, arrow_array::ArrayRef)> = Vec::with_capacity(cursors.len() + 1);
            for (name, cursor) in cursors.iter_mut() {
                named.push((*name, cursor.gather(&kept_rows).map_err(failed)?));
            }
            named.push((schema::REMOTE_URL, Arc::new(kept_urls.finish())));
            self.emit(named, micros, options, &mut stats, sink)?;
        }
        if offset != rows {
            return Err(failed(format!("the time column holds {offset} rows where the row group has {rows}")));
        }
        Ok(stats)
    }

    /// Hands a canonical batch of kept rows to `sink`, dropping (and counting) the rows whose
    /// RemotePort is not a port.
    fn emit(
        &self,
        mut named: Vec<(&str, arrow_array::ArrayRef)>,
        mut micros: Vec<i64>,
        options: &ScanOptions,
        stats: &mut ScanStats,
        sink: &mut dyn FnMut(RecordBatch),
    ) -> Result<(), SourceError> {
        let path = &self.path;
        let ports = super::canonical::drop_bad_ports(&mut named, &mut micros).map_err(|m| parquet_error(path, m))?;
        for (port, at) in ports {
            // counted in its day when its time was read; a reject instead
            stats.uncount_day(crate::time::Day::of_micros(at));
            let sample =
                || format!("{} row group {}: RemotePort {port} is not a port", path.display(), self.row_groups[0]);
            stats.rejects.add(super::canonical::PORT_REJECTED, sample, options.reject_samples);
        }
        sink(from_columns(&named, micros).map_err(|m| parquet_error(path, m))?);
        Ok(())
    }

    /// The unit through the arrow reader: a row filter over the time column (and RemoteUrl,
    /// unless [`UrlPages`] reads its pages, where it can and `url_pages`) decides the rows, then
    /// the other columns are decoded for those rows only.
    fn scan_filtered(
        &self,
        chunks: ColumnChunks,
        options: &ScanOptions,
        sink: &mut dyn FnMut(RecordBatch),
        url_pages: bool,
    ) -> Result<ScanStats, SourceError> {
        let path = &self.path;
        let schema_descr = self.metadata.metadata().file_metadata().schema_descr_ptr();
        let Projection { filter_columns, output_columns } = self.projection(options);

        let stats =
            Arc::new(Mutex::new(ScanStats { row_groups_read: self.row_groups.len() as u64, ..Default::default() }));
        let carried = Arc::new(Mutex::new(Carried::default()));
        // RemoteUrl straight from its pages where it can be (the arrow reader then decodes only
        // the time column for the filter), else as one of the filter's columns.
        let url_pages = match url_leaf(&self.metadata, &self.row_groups).filter(|_| url_pages) {
            Some((leaf, text)) => {
                let parquet_meta = self.metadata.metadata();
                let group = parquet_meta.row_group(self.row_groups[0]);
                let pages = UrlPages::new(
                    Arc::new(chunks.clone()),
                    &schema_descr.column(leaf),
                    group.column(leaf),
                    group.num_rows().max(0) as usize,
                    options.matcher.clone(),
                    text,
                )
                .map_err(|m| parquet_error(path, m))?;
                Some(pages)
            }
            None => None,
        };
        let filter_columns = match url_pages {
            Some(_) => filter_columns[..1].to_vec(),
            None => filter_columns,
        };
        let predicate = {
            let (stats, carried) = (stats.clone(), carried.clone());
            let options = options.clone();
            let time_name = self.time_name.clone();
            let path = self.path.clone();
            let group = self.row_groups[0];
            let mut offset = 0usize;
            let mut dictionary = DictionaryVerdicts::default();
            let mut url_pages = url_pages;
            let mut relevant = RelevantRows::default();
            ArrowPredicateFn::new(ProjectionMask::roots(&schema_descr, filter_columns), move |batch: RecordBatch| {
                let time_column = batch.column_by_name(&time_name).expect("projected");
                let time = TimeReader::new(time_column.as_ref()).map_err(arrow_schema::ArrowError::ComputeError)?;
                let url_column = batch.column_by_name(schema::REMOTE_URL);
                let mut url = UrlReader::new(url_column.map(|a| a.as_ref()), &mut dictionary);
                if let Some(pages) = url_pages.as_mut() {
                    relevant.take(pages, batch.num_rows()).map_err(|m| {
                        arrow_schema::ArrowError::ComputeError(format!("{} row group {group}: {m}", path.display()))
                    })?;
                }
                let mut stats = stats.lock().expect("one scan per unit, never poisoned");
                let mut carried = carried.lock().expect("one scan per unit, never poisoned");
                let mut keep = arrow_buffer::BooleanBufferBuilder::new(batch.num_rows());
                let mut kept_urls = arrow_array::builder::StringBuilder::new();
                let paged = url_pages.is_some();
                let judge = RowJudge::new(&path, group, &options);
                let mut last_kept = 0;
                let mut keep_row = |row: usize, t: i64| {
                    keep.append_n(row - last_kept, false);
                    keep.append(true);
                    last_kept = row + 1;
                    carried.micros.push_back(t);
                };
                match paged {
                    true => judge.batch_listed(
                        &time,
                        batch.num_rows(),
                        offset,
                        &mut stats,
                        &relevant.rows,
                        |row, t, index| {
                            keep_row(row, t);
                            kept_urls.append_value(relevant.value(index));
                        },
                    ),
                    false => judge.batch(
                        &time,
                        batch.num_rows(),
                        offset,
                        &mut stats,
                        |row| url.relevant(row, &options.matcher),
                        &mut keep_row,
                    ),
                }
                keep.append_n(batch.num_rows() - last_kept, false);
                let keep = BooleanArray::new(keep.finish(), None);
                if paged {
                    if arrow_array::builder::ArrayBuilder::len(&kept_urls) > 0 {
                        carried.urls.push_back(Arc::new(kept_urls.finish()));
                    }
                } else if let Some(url_column) = url_column.filter(|_| keep.true_count() > 0) {
                    carried.urls.push_back(compact(arrow_select::filter::filter(url_column.as_ref(), &keep)?));
                }
                offset += batch.num_rows();
                Ok(keep)
            })
        };

        let reader = ParquetRecordBatchReaderBuilder::new_with_metadata(chunks, self.metadata.clone())
            .with_row_groups(self.row_groups.clone())
            .with_projection(ProjectionMask::roots(&schema_descr, output_columns))
            .with_row_filter(RowFilter::new(vec![Box::new(predicate)]))
            .with_batch_size(BATCH_SIZE)
            // Telemetry rows are a few percent, scattered: the reader decides per selection whether
            // to skip the others run by run or to decode whole batches and drop them by a mask.
            // Measured on the peer set (callgrind, 217k rows): the mask where runs are short
            // takes 11 % fewer instructions than skipping every run.
            .with_row_selection_policy(RowSelectionPolicy::Auto { threshold: 32 })
            .build()
            .map_err(|e| parquet_error(path, e))?;
        for batch in reader {
            let batch = batch.map_err(|e| parquet_error(path, e))?;
            if batch.num_rows() == 0 {
                continue;
            }
            let (micros, url) =
                carried.lock().expect("filter done").take(batch.num_rows()).map_err(|m| parquet_error(path, m))?;
            let schema = batch.schema();
            let mut named: Vec<(&str, arrow_array::ArrayRef)> = schema
                .fields()
                .iter()
                .zip(batch.columns())
                .filter(|(f, _)| f.name() != &self.time_name)
                .map(|(f, c)| (f.name().as_str(), c.clone()))
                .collect();
            if let Some(url) = url {
                named.push((schema::REMOTE_URL, url));
            }
            self.emit(named, micros, options, &mut stats.lock().expect("filter done"), sink)?;
        }
        let stats = std::mem::take(&mut *stats.lock().expect("scan finished"));
        Ok(stats)
    }
}

/// Judges the rows of one batch of the time column: counts each valid time's day (and the rows
/// outside the window), samples and counts the rows without a valid time, and calls `kept` for
/// each row in the window whose RemoteUrl `relevant` says can matter, in row order.
struct RowJudge<'a> {
    path: &'a Path,
    group: usize,
    options: &'a ScanOptions,
}

impl<'a> RowJudge<'a> {
    fn new(path: &'a Path, group: usize, options: &'a ScanOptions) -> RowJudge<'a> {
        RowJudge { path, group, options }
    }

    fn batch(
        &self,
        time: &TimeReader,
        rows: usize,
        offset: usize,
        stats: &mut ScanStats,
        mut relevant: impl FnMut(usize) -> bool,
        mut kept: impl FnMut(usize, i64),
    ) {
        let mut days = DayCounts::default();
        for row in 0..rows {
            let reason = match time.get(row) {
                TimeCell::Micros(t) => {
                    if days.count(Day::of_micros(t), self.options) && relevant(row) {
                        kept(row, t);
                    }
                    continue;
                }
                TimeCell::Missing => "time: missing",
                TimeCell::Invalid => "time: not a valid timestamp",
                TimeCell::OutOfRange => "time: outside 0001-01-01..9999-12-31",
            };
            stats.rows_scanned += 1;
            let sample = || format!("{} row group {} row {}: {reason}", self.path.display(), self.group, offset + row);
            stats.rejects.add(reason, sample, self.options.reject_samples);
        }
        days.add_to(stats);
    }

    /// [`RowJudge::batch`] where the rows whose RemoteUrl can matter are listed (increasing);
    /// `kept` also gets the row's place in the list. A batch of microsecond times without a
    /// null or an out-of-range time (what exports are) is counted by day in one pass over the
    /// times, and only the listed rows are looked at.
    fn batch_listed(
        &self,
        time: &TimeReader,
        rows: usize,
        offset: usize,
        stats: &mut ScanStats,
        relevant: &[usize],
        mut kept: impl FnMut(usize, i64, usize),
    ) {
        let bounds = time.all_micros().and_then(|values| {
            let (min, max) = values.iter().fold((i64::MAX, i64::MIN), |(lo, hi), &t| (lo.min(t), hi.max(t)));
            (!values.is_empty() && in_datetime_range(min) && in_datetime_range(max)).then_some((values, min, max))
        });
        let Some((values, min, max)) = bounds else {
            let mut at = 0;
            return self.batch(
                time,
                rows,
                offset,
                stats,
                |row| {
                    while relevant.get(at).is_some_and(|&r| r < row) {
                        at += 1;
                    }
                    relevant.get(at) == Some(&row)
                },
                |row, t| kept(row, t, relevant.partition_point(|&r| r < row)),
            );
        };
        let mut days = DayCounts::default();
        let (first, last) = (Day::of_micros(min), Day::of_micros(max));
        if first == last {
            days.count_many(first, values.len() as u64, self.options);
        } else if last == first.next() {
            let before = values.iter().filter(|&&t| t < last.start_micros()).count();
            days.count_many(first, before as u64, self.options);
            days.count_many(last, (values.len() - before) as u64, self.options);
        } else {
            for &t in values {
                days.count(Day::of_micros(t), self.options);
            }
        }
        for (index, &row) in relevant.iter().enumerate() {
            let t = values[row];
            if self.options.in_window(Day::of_micros(t)) {
                kept(row, t, index);
            }
        }
        days.add_to(stats);
    }
}

/// The rows of a batch whose RemoteUrl can matter, as [`UrlPages`] handed them out, with their
/// values.
#[derive(Default)]
struct RelevantRows {
    rows: Vec<usize>,
    text: String,
    /// Where each value ends in `text`.
    ends: Vec<usize>,
}

impl RelevantRows {
    /// The relevant rows among the next `rows` rows of `pages`.
    fn take(&mut self, pages: &mut UrlPages, rows: usize) -> Result<(), String> {
        self.rows.clear();
        self.text.clear();
        self.ends.clear();
        pages.take(rows, |row, value| {
            self.rows.push(row);
            self.text.push_str(value);
            self.ends.push(self.text.len());
        })
    }

    /// The value of the `index`th relevant row.
    fn value(&self, index: usize) -> &str {
        let from = if index == 0 { 0 } else { self.ends[index - 1] };
        &self.text[from..self.ends[index]]
    }
}

/// A column [`ParquetUnit::scan_paged`] reads from its pages.
struct PagedColumn {
    name: String,
    leaf: usize,
    kind: Kind,
}

/// What [`ParquetUnit::scan_paged`] reads: the time column (by root), RemoteUrl and the rest.
struct PagedPlan {
    time_root: usize,
    url: PagedColumn,
    outputs: Vec<PagedColumn>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_array::{ArrayRef, StringArray, TimestampMicrosecondArray};
    use arrow_schema::{Field, Schema};
    use parquet::arrow::ArrowWriter;
    use parquet::file::properties::WriterProperties;

    /// Writes `rows` RemoteUrl values (a few repeating hosts and a unique URL every other row)
    /// and returns the type the planner asks the reader for.
    fn planned_url_type(props: WriterProperties, unique: bool) -> DataType {
        let rows = 4_000;
        let urls: Vec<String> = (0..rows)
            .map(|i| match i % 2 {
                1 if unique => format!("https://cdn{i}.example.com/x?id={i}"),
                _ => ["winatp-gw-weu.microsoft.com", "www.bing.com", ""][i % 3].to_string(),
            })
            .collect();
        let schema = Arc::new(Schema::new(vec![
            Field::new("Timestamp", DataType::Timestamp(TimeUnit::Microsecond, None), false),
            Field::new("RemoteUrl", DataType::Utf8, true),
        ]));
        let batch = RecordBatch::try_new(
            schema.clone(),
            vec![
                Arc::new(TimestampMicrosecondArray::from(vec![1_700_000_000_000_000; rows])),
                Arc::new(StringArray::from(urls)),
            ],
        )
        .unwrap();
        let file = tempfile::NamedTempFile::new().unwrap();
        let mut writer = ArrowWriter::try_new(file.reopen().unwrap(), schema, Some(props)).unwrap();
        writer.write(&batch).unwrap();
        writer.close().unwrap();
        let metadata = ArrowReaderMetadata::load(&file.reopen().unwrap(), ArrowReaderOptions::new()).unwrap();
        let hinted = with_string_views(metadata).unwrap();
        hinted.schema().field_with_name("RemoteUrl").unwrap().data_type().clone()
    }

    /// A file cut short after planning (rewritten while the job reads it) fails the read with
    /// the offset, whether the page or its header is past the new end.
    #[test]
    fn a_local_file_shorter_than_its_footer_says_fails_with_the_offset() {
        use parquet::file::reader::ChunkReader;
        use std::io::Read;
        let file = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(file.path(), vec![7u8; 4096]).unwrap();
        let chunks = ColumnChunks::local(file.path(), file.reopen().unwrap(), &[(1000, 3000)]).unwrap();
        assert_eq!(&chunks.get_bytes(1000, 8).unwrap()[..], &[7u8; 8]);
        let beyond = ColumnChunks::local(file.path(), file.reopen().unwrap(), &[(4000, 100)]).err().unwrap();
        assert!(beyond.to_string().contains("a column chunk (4000+100) lies beyond the end of the file (4096 bytes)"));

        file.as_file().set_len(2048).unwrap();
        let page = chunks.get_bytes(2000, 100).unwrap_err().to_string();
        assert!(
            page.contains("reading 100 bytes at offset 2000") && page.contains("the file ends before offset 2048"),
            "{page}"
        );
        let mut header = [0u8; 16];
        let cut = chunks.get_read(3000).unwrap().read_exact(&mut header).unwrap_err().to_string();
        assert!(cut.contains("the file ends before offset 3000, where its footer places a page"), "{cut}");
        let mut near_end = chunks.get_read(2040).unwrap();
        let ended = near_end.read_exact(&mut header).unwrap_err().to_string();
        assert!(ended.contains("before offset 2048"), "{ended}");
    }

    #[test]
    fn remote_url_is_read_as_a_dictionary_only_where_every_page_is_one() {
        let dictionary = DataType::Dictionary(Box::new(DataType::Int32), Box::new(DataType::Utf8));
        let defaults = || WriterProperties::builder().set_data_page_row_count_limit(500);
        assert_eq!(planned_url_type(defaults().build(), false), dictionary);
        // a dictionary that fills up falls back to plain pages: those would be re-hashed into
        // a dictionary per batch, so the values are read as views
        let small = defaults().set_dictionary_page_size_limit(1024).build();
        assert_eq!(planned_url_type(small, true), DataType::Utf8View);
        assert_eq!(planned_url_type(defaults().set_dictionary_enabled(false).build(), false), DataType::Utf8View);
    }
    /// Rows of every kind a paged scan must treat as the arrow path does: telemetry hosts in
    /// every spelling among unrelated ones, nulls in every column, times on two days and
    /// missing, ports that are not ports.
    fn events(rows: usize, missing_times: bool, days: i64) -> RecordBatch {
        let url = |i: usize| match i % 9 {
            0 => Some("winatp-gw-weu.microsoft.com".to_string()),
            1 => Some(format!("https://eu-v20.events.data.microsoft.com/ping?id={i}")),
            2 => Some("WINATP-GW-CUS.MICROSOFT.COM:443".to_string()),
            3 => None,
            4 => Some(String::new()),
            5 => Some("winatp-gw-weu.rnicrosoft.com".to_string()),
            _ => Some(format!("host{}.example.com", i % 50)),
        };
        let text = |prefix: &str, modulo: usize, nulls: usize| -> ArrayRef {
            Arc::new(StringArray::from(
                (0..rows).map(|i| (i % nulls != 1).then(|| format!("{prefix}{}", i % modulo))).collect::<Vec<_>>(),
            ))
        };
        let day = 1_735_689_600_000_000i64; // 2025-01-01
        let times: Vec<Option<i64>> = (0..rows)
            .map(|i| (!missing_times || i % 97 != 5).then_some(day + (i as i64 % days) * 86_400_000_000 + i as i64))
            .collect();
        let ports: Vec<Option<i32>> = (0..rows)
            .map(|i| match i % 13 {
                0 => None,
                1 => Some(-1),
                2 => Some(70_000),
                3 => Some(8080),
                _ => Some(443),
            })
            .collect();
        let columns: Vec<(&str, ArrayRef)> = vec![
            ("Timestamp", Arc::new(TimestampMicrosecondArray::from(times))),
            ("DeviceId", text("device-", 300, 41)),
            ("DeviceName", text("host-", 300, 7)),
            ("ActionType", text("Connection", 4, 1_000_000)),
            ("RemoteUrl", Arc::new(StringArray::from((0..rows).map(url).collect::<Vec<_>>()))),
            ("RemotePort", Arc::new(arrow_array::Int32Array::from(ports))),
            ("InitiatingProcessFileName", text("proc", 20, 11)),
            ("InitiatingProcessFolderPath", text("c:\\windows\\", 20, 13)),
            ("InitiatingProcessSHA1", text("sha", 20, 17)),
            ("LocalIP", text("10.0.0.", 250, 3)),
        ];
        RecordBatch::try_from_iter(columns).unwrap()
    }

    /// Every canonical batch and the stats of both paths, unit by unit.
    type Scanned = (Vec<RecordBatch>, ScanStats);

    /// Each unit of the file read page by page (`None` where its layout cannot be) and by the
    /// arrow reader judging every row, as before any page was read by hand.
    fn both_paths_where_paged(path: &Path, options: &ScanOptions) -> Vec<(Option<Scanned>, Scanned)> {
        let planned = plan_file(path, options).unwrap();
        planned
            .units
            .iter()
            .map(|unit| {
                let chunks =
                    || ColumnChunks::local(path, File::open(path).unwrap(), &unit.chunk_ranges(options)).unwrap();
                let paged = unit.paged_plan(options).map(|plan| {
                    let mut paged = Vec::new();
                    let stats = unit.scan_paged(chunks(), options, &mut |b| paged.push(b), plan).unwrap();
                    (paged, stats)
                });
                let mut filtered = Vec::new();
                let filtered_stats = unit.scan_filtered(chunks(), options, &mut |b| filtered.push(b), false).unwrap();
                (paged, (filtered, filtered_stats))
            })
            .collect()
    }

    fn both_paths(path: &Path, options: &ScanOptions) -> Vec<(Scanned, Scanned)> {
        both_paths_where_paged(path, options)
            .into_iter()
            .map(|(paged, filtered)| (paged.expect("every column is readable page by page"), filtered))
            .collect()
    }

    /// Batches as one, keyed text read as the strings it stands for.
    fn concat_canonical(batches: &[RecordBatch]) -> RecordBatch {
        let canonical = crate::schema::canonical();
        let plain: Vec<RecordBatch> = batches
            .iter()
            .map(|batch| {
                let columns = batch
                    .columns()
                    .iter()
                    .zip(canonical.fields())
                    .map(|(c, f)| arrow_cast::cast(c, f.data_type()).unwrap())
                    .collect();
                RecordBatch::try_new(canonical.clone(), columns).unwrap()
            })
            .collect();
        arrow_select::concat::concat_batches(&canonical, &plain).unwrap()
    }

    fn default_scan_options() -> ScanOptions {
        let settings = crate::config::Config::default().validate().unwrap();
        ScanOptions {
            window: None,
            time_column: crate::config::TimeColumn::Timestamp,
            matcher: Arc::new(settings.hosts.clone()),
            reject_samples: 5,
            columns: crate::hunt::aggregate::needed_columns(&settings),
            limits: settings.limits,
        }
    }

    /// Files of other writers (`tests/parquet-writers/make.py`: pyarrow, DuckDB, Polars; their
    /// pages, encodings, codecs, timestamp types and nulls): the page reader keeps what the arrow
    /// reader keeps, wherever it can read the layout, and it can read the common ones.
    #[test]
    fn other_writers_files_read_alike_page_by_page_and_through_the_arrow_reader() {
        let folder = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/parquet-writers");
        let mut files: Vec<_> = std::fs::read_dir(&folder)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "parquet"))
            .collect();
        files.sort();
        assert!(files.len() >= 7, "{files:?}");
        let options = default_scan_options();
        let mut not_paged = Vec::new();
        for file in &files {
            let name = file.file_name().unwrap().to_string_lossy().into_owned();
            let units = both_paths_where_paged(file, &options);
            assert!(!units.is_empty(), "{name}");
            let (mut kept, mut rejected, mut paged_units) = (0, 0, 0);
            for (paged, (filtered, filtered_stats)) in units {
                kept += concat_canonical(&filtered).num_rows();
                rejected += filtered_stats.rejects.total();
                if let Some((paged, paged_stats)) = paged {
                    paged_units += 1;
                    assert_eq!(concat_canonical(&paged), concat_canonical(&filtered), "{name}");
                    assert_eq!(paged_stats, filtered_stats, "{name}");
                }
            }
            // 600 rows to Microsoft hosts among 1,200, 3 % of each column null: telemetry rows
            // kept, missing times rejected
            assert!(kept > 100 && rejected > 10, "{name}: {kept} kept, {rejected} rejected");
            if paged_units == 0 {
                not_paged.push(name);
            }
        }
        // DuckDB's format v2 writes DELTA_BINARY_PACKED and DELTA_LENGTH_BYTE_ARRAY pages, which
        // only the arrow reader decodes; every other layout here is read page by page
        assert_eq!(not_paged, ["duckdb-v2-zstd.parquet"]);
    }

    #[test]
    fn the_paged_scan_gives_what_the_arrow_reader_gives() {
        use parquet::file::properties::WriterVersion;
        let options = default_scan_options();
        let base = || WriterProperties::builder().set_data_page_row_count_limit(700).set_write_batch_size(128);
        #[rustfmt::skip]
        let variants = [
            ("dictionaries", base().build()),
            ("plain", base().set_dictionary_enabled(false).build()),
            ("dictionaries falling back", base().set_dictionary_page_size_limit(512).build()),
            ("v2 pages", base().set_writer_version(WriterVersion::PARQUET_2_0).set_encoding(Encoding::PLAIN).build()),
            ("row groups of 3000", base().set_max_row_group_row_count(Some(3000)).build()),
        ];
        let times = [(true, 2, None), (false, 2, None), (false, 3, None), (false, 3, Some(2))];
        for ((name, props), (missing_times, days, window_days)) in
            variants.into_iter().flat_map(|v| times.map(|t| (v.clone(), t)))
        {
            let batch = events(20_000, missing_times, days);
            let first = Day::of_micros(1_735_689_600_000_000);
            let options =
                ScanOptions { window: window_days.map(|n: i32| (first, Day(first.0 + n - 1))), ..options.clone() };
            let file = tempfile::NamedTempFile::new().unwrap();
            let mut writer = ArrowWriter::try_new(file.reopen().unwrap(), batch.schema(), Some(props)).unwrap();
            writer.write(&batch).unwrap();
            writer.close().unwrap();
            let units = both_paths(file.path(), &options);
            let outside: u64 = units.iter().map(|(paged, _)| paged.1.rows_outside_window).sum();
            assert_eq!(outside > 0, window_days.is_some(), "{name}");
            assert!(!units.is_empty(), "{name}");
            let (mut kept, mut rejected, mut missing, mut keyed) = (0, 0, 0, false);
            for ((paged, paged_stats), (filtered, filtered_stats)) in units {
                assert_eq!(concat_canonical(&paged), concat_canonical(&filtered), "{name}");
                assert_eq!(paged_stats, filtered_stats, "{name}");
                let s = &paged_stats;
                let accounted = s.rows_per_day.values().sum::<u64>() + s.rows_outside_window + s.rejects.total();
                assert_eq!(s.rows_scanned, accounted, "{name}: each row in a day, outside the window or rejected");
                kept += concat_canonical(&paged).num_rows();
                keyed |= paged
                    .iter()
                    .any(|b| matches!(b.column(crate::schema::col::DEVICE_ID).data_type(), DataType::Dictionary(_, _)));
                rejected += paged_stats.rejects.total();
                missing += paged_stats.rejects.by_reason.get("time: missing").copied().unwrap_or(0);
            }
            // both paths kept telemetry rows and rejected missing times and bad ports alike
            assert!(kept > 2_000 && rejected > 500, "{name}: {kept} kept, {rejected} rejected");
            assert_eq!(missing > 0, missing_times, "{name}: {missing} rows without a time");
            // dictionary-encoded text comes out as keys
            assert_eq!(keyed, !matches!(name, "plain" | "dictionaries falling back"), "{name}");
        }
    }
}

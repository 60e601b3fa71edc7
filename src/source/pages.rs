//! Parquet pages decoded by hand, for the two places where the arrow reader's generality costs
//! most: judging every RemoteUrl ([`super::url_pages`]) and taking the few rows that matter
//! out of the other columns ([`ColumnCursor`]).
//!
//! Telemetry rows are a few percent of the input, scattered over every page. The arrow reader
//! decodes a selection by decoding runs and dropping the rest, building an array per batch for
//! each column; here a page is decompressed once and only the selected values are located —
//! by index for fixed-width and dictionary-encoded values (a bit-packed run is random access),
//! by walking the lengths for plain strings — and copied out. A page without a selected row is
//! skipped undecompressed.
//!
//! Only flat columns are read, with plain or dictionary values and RLE definition levels, as
//! text, bytes, INT32 or INT64 ([`ColumnCursor::kind`]); anything else stays with the arrow
//! reader.

use std::sync::Arc;

use arrow_array::builder::{BinaryBuilder, Int32Builder, Int64Builder, StringBuilder};
use arrow_array::types::UInt32Type;
use arrow_array::{Array, ArrayRef, DictionaryArray, StringArray, UInt32Array};
use arrow_schema::DataType;
use bytes::Bytes;
use parquet::basic::{Encoding, Type as PhysicalType};
use parquet::column::page::{Page, PageReader};
use parquet::file::metadata::ColumnChunkMetaData;
use parquet::file::reader::ChunkReader;
use parquet::file::serialized_reader::SerializedPageReader;
use parquet::schema::types::ColumnDescriptor;

/// Whether a column chunk is flat, with levels and values in encodings this module reads (the
/// chunk lists every encoding its pages use).
#[allow(deprecated)] // BIT_PACKED: named only to accept the chunks that merely list it
pub fn readable(descr: &ColumnDescriptor, chunk: &ColumnChunkMetaData) -> bool {
    let flat = descr.max_rep_level() == 0 && descr.max_def_level() <= 1;
    let encodings_known = chunk.encodings().all(|e| {
        matches!(e, Encoding::PLAIN | Encoding::PLAIN_DICTIONARY | Encoding::RLE_DICTIONARY | Encoding::RLE)
            // old writers list BIT_PACKED for levels they never wrote (a required column)
            || (e == Encoding::BIT_PACKED && descr.max_def_level() == 0)
    });
    flat && encodings_known
}

/// A page taken apart: a dictionary page's plain values, or a data page's rows, levels and
/// where its values start.
pub enum Parts {
    Dictionary {
        buf: Bytes,
        values: usize,
    },
    Data {
        buf: Bytes,
        rows: usize,
        /// Definition levels when some row is null (1: the row holds a value).
        levels: Option<Vec<u32>>,
        values_at: usize,
        encoding: Encoding,
    },
}

/// Takes a page of a flat column apart (`nullable`: it has definition levels); `rows_left`, the
/// rows its row group has not yet given, bounds the rows a page may claim.
pub fn split_page(page: Page, nullable: bool, rows_left: &mut usize) -> Result<Parts, String> {
    let levels_cut = || "a page ends inside its definition levels".to_string();
    let mut claim = |rows: usize| {
        if rows > *rows_left {
            return Err(format!("a page holds {rows} rows where its row group has {rows_left} left"));
        }
        *rows_left -= rows;
        Ok(rows)
    };
    Ok(match page {
        Page::DictionaryPage { buf, num_values, encoding, .. } => {
            if !matches!(encoding, Encoding::PLAIN | Encoding::PLAIN_DICTIONARY) {
                return Err(format!("a dictionary page in {encoding} is not supported"));
            }
            // Every value read here (text, bytes, INT32, INT64) takes at least a byte; the
            // readers size their tables by the claim.
            let values = num_values as usize;
            if values > buf.len() {
                return Err(dictionary_claim(values, buf.len()));
            }
            Parts::Dictionary { buf, values }
        }
        Page::DataPage { buf, num_values, encoding, def_level_encoding, .. } => {
            let rows = claim(num_values as usize)?;
            let (levels, values_at) = if nullable {
                if def_level_encoding != Encoding::RLE {
                    return Err(format!("definition levels in {def_level_encoding} are not supported"));
                }
                let length = buf.get(..4).ok_or_else(levels_cut)?;
                let length = u32::from_le_bytes(length.try_into().expect("4 bytes")) as usize;
                let levels = buf.get(4..4 + length).ok_or_else(levels_cut)?;
                (definition_levels(levels, rows)?, 4 + length)
            } else {
                (None, 0)
            };
            Parts::Data { buf, rows, levels, values_at, encoding }
        }
        Page::DataPageV2 {
            buf,
            num_values,
            encoding,
            num_nulls,
            num_rows,
            def_levels_byte_len,
            rep_levels_byte_len,
            ..
        } => {
            if rep_levels_byte_len != 0 || num_rows != num_values {
                return Err("it is not a flat column".into());
            }
            let rows = claim(num_rows as usize)?;
            let values_at = def_levels_byte_len as usize;
            let levels = match nullable && num_nulls > 0 {
                true => definition_levels(buf.get(..values_at).ok_or_else(levels_cut)?, rows)?,
                false => None,
            };
            Parts::Data { buf, rows, levels, values_at, encoding }
        }
    })
}

fn dictionary_claim(values: usize, bytes: usize) -> String {
    format!("a dictionary page claims {values} values in {bytes} bytes")
}

/// Fails when the dictionary page of a column chunk claims more values than its bytes can hold.
/// The parquet crate sizes a dictionary by its page's claim before decoding it: a 12 KB file
/// whose page claimed 1.2 billion INT64 values made it ask for 9.5 GB. Every chunk the arrow
/// reader is to read is checked first: its first page is decompressed once more for it (a
/// megabyte or so as writers cut them). Not through `peek_next_page`, which steps over a page
/// of an unknown type by its header alone and so reads the page's bytes as headers, one after
/// another (a 7 KB file kept it busy for seconds).
pub fn check_dictionary_page<R: ChunkReader + 'static>(
    reader: Arc<R>,
    descr: &ColumnDescriptor,
    chunk: &ColumnChunkMetaData,
    rows: usize,
) -> Result<(), String> {
    let mut pages = SerializedPageReader::new(reader, chunk, rows, None).map_err(|e| e.to_string())?;
    let Some(Page::DictionaryPage { buf, num_values, .. }) = pages.get_next_page().map_err(|e| e.to_string())? else {
        return Ok(());
    };
    // the least a plain value of the type takes
    let least = match descr.physical_type() {
        PhysicalType::BOOLEAN => 0,
        PhysicalType::INT32 | PhysicalType::FLOAT | PhysicalType::BYTE_ARRAY => 4,
        PhysicalType::INT64 | PhysicalType::DOUBLE => 8,
        PhysicalType::INT96 => 12,
        PhysicalType::FIXED_LEN_BYTE_ARRAY => descr.type_length().max(1) as usize,
    };
    let values = num_values as usize;
    if values.saturating_mul(least) > buf.len() {
        return Err(format!("column `{}`: {}", descr.name(), dictionary_claim(values, buf.len())));
    }
    Ok(())
}

/// What a column's values are read as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Byte arrays checked to be UTF-8 (the arrow type is a string type).
    Text,
    /// Byte arrays as they are.
    Bytes,
    Int32,
    Int64,
}

impl Kind {
    /// How to read a column the arrow reader would hand out as `arrow_type`; `None` for what
    /// is left to it (other physical types, annotated integers, nested columns).
    pub fn of(descr: &ColumnDescriptor, arrow_type: &DataType) -> Option<Kind> {
        let text = |t: &DataType| matches!(t, DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View);
        let bytes = |t: &DataType| matches!(t, DataType::Binary | DataType::LargeBinary | DataType::BinaryView);
        match (descr.physical_type(), arrow_type) {
            (PhysicalType::BYTE_ARRAY, t) if text(t) => Some(Kind::Text),
            (PhysicalType::BYTE_ARRAY, t) if bytes(t) => Some(Kind::Bytes),
            (PhysicalType::BYTE_ARRAY, DataType::Dictionary(_, v)) if text(v) => Some(Kind::Text),
            (PhysicalType::BYTE_ARRAY, DataType::Dictionary(_, v)) if bytes(v) => Some(Kind::Bytes),
            (PhysicalType::INT32, DataType::Int32) => Some(Kind::Int32),
            (PhysicalType::INT64, DataType::Int64) => Some(Kind::Int64),
            _ => None,
        }
    }

    fn width(self) -> usize {
        match self {
            Kind::Int32 => 4,
            Kind::Int64 => 8,
            Kind::Text | Kind::Bytes => 0,
        }
    }
}

/// A dictionary page's entries: (start, end) of each in `bytes`; for text, the entries as
/// strings, checked to be UTF-8 once and handed out as the values of keyed batches.
struct Dictionary {
    bytes: Bytes,
    text: Option<Arc<StringArray>>,
    entries: Vec<(u32, u32)>,
}

/// The values of one data page, located as the cursor moves forward through its rows.
enum Values {
    /// Plain byte arrays: the next value's index and where it starts.
    PlainBytes { next: usize, at: usize },
    /// Plain fixed-width values from `at`.
    PlainFixed { at: usize },
    /// Dictionary indices in the RLE / bit-packed hybrid encoding.
    Indices(Hybrid),
}

/// One column chunk of a row group, read forward: [`ColumnCursor::gather`] takes the values of
/// increasing rows.
pub struct ColumnCursor {
    pages: Box<dyn PageReader>,
    kind: Kind,
    nullable: bool,
    name: Arc<str>,
    /// The dictionary page: its buffer and where each entry starts and ends in it. For text,
    /// the buffer is the entries one after the other, checked to be UTF-8 once.
    dictionary: Option<Dictionary>,
    /// The page being read: its buffer, first row, rows; where its values start.
    page: Bytes,
    first_row: usize,
    rows: usize,
    values: Values,
    /// Definition levels of the page when some row is null: 1 for a value.
    levels: Option<Vec<u32>>,
    /// Level cursor: the next row whose level is not yet counted, and the values before it.
    level_row: usize,
    level_values: usize,
    /// Rows of the row group not yet in a page: a page claiming more is corrupt.
    rows_left: usize,
    /// The row after the last one asked for: rows are read forward only.
    next_row: Option<usize>,
}

impl ColumnCursor {
    /// Opens a column chunk (`rows`: the row group's rows) to be read as `kind`.
    pub fn new<R: ChunkReader + 'static>(
        reader: Arc<R>,
        descr: &ColumnDescriptor,
        chunk: &ColumnChunkMetaData,
        rows: usize,
        kind: Kind,
    ) -> Result<ColumnCursor, String> {
        let pages = SerializedPageReader::new(reader, chunk, rows, None).map_err(|e| e.to_string())?;
        Ok(ColumnCursor {
            pages: Box::new(pages),
            kind,
            nullable: descr.max_def_level() == 1,
            name: descr.name().into(),
            dictionary: None,
            page: Bytes::new(),
            first_row: 0,
            rows: 0,
            values: Values::PlainFixed { at: 0 },
            levels: None,
            level_row: 0,
            level_values: 0,
            rows_left: rows,
            next_row: None,
        })
    }

    /// The values of `rows` (row-group row numbers, increasing, past every row asked before).
    pub fn gather(&mut self, rows: &[u32]) -> Result<ArrayRef, String> {
        let mut out = Gathered::new(self.kind, rows.len());
        for &row in rows {
            let row = row as usize;
            if self.next_row.is_some_and(|next| row < next) {
                return Err(self.error(format!("row {row} asked after a later one")));
            }
            self.next_row = Some(row + 1);
            while row >= self.first_row + self.rows {
                self.next_page(row)?;
            }
            match self.value_index(row - self.first_row) {
                None => out.null(),
                Some(index) => self.push_value(index, &mut out)?,
            }
        }
        Ok(out.finish())
    }

    fn error(&self, message: impl std::fmt::Display) -> String {
        column_error(&self.name, message)
    }

    /// Moves to the page holding `wanted`, skipping undecompressed the pages before it.
    fn next_page(&mut self, wanted: usize) -> Result<(), String> {
        self.first_row += self.rows;
        self.rows = 0;
        let name = self.name.clone();
        let error = |m: &dyn std::fmt::Display| column_error(&name, m);
        loop {
            let next = self.pages.peek_next_page().map_err(|e| error(&e))?;
            let next = next.ok_or_else(|| error(&"its column chunk ends before its row group's last row"))?;
            match next.num_rows.or(next.num_levels) {
                Some(rows) if !next.is_dict && self.first_row + rows <= wanted => {
                    if rows > self.rows_left {
                        return Err(error(&format!(
                            "a page holds {rows} rows where its row group has {} left",
                            self.rows_left
                        )));
                    }
                    self.rows_left -= rows;
                    self.pages.skip_next_page().map_err(|e| error(&e))?;
                    self.first_row += rows;
                }
                _ => break,
            }
        }
        let page = self
            .pages
            .get_next_page()
            .map_err(|e| self.error(e))?
            .ok_or_else(|| self.error("its column chunk ends early"))?;
        self.level_row = 0;
        self.level_values = 0;
        let (buf, rows, values_at, encoding) = match split_page(page, self.nullable, &mut self.rows_left)
            .map_err(|m| self.error(m))?
        {
            Parts::Dictionary { buf, values } => {
                let entries = self.plain_entries(&buf, values)?;
                self.dictionary = Some(match self.kind {
                    Kind::Text => {
                        // the entries are checked once, not each time a row takes one
                        let mut text = Vec::with_capacity(buf.len());
                        let mut ends = Vec::with_capacity(entries.len() + 1);
                        ends.push(0i32);
                        for &(start, end) in &entries {
                            text.extend_from_slice(&buf[start as usize..end as usize]);
                            ends.push(
                                i32::try_from(text.len()).map_err(|_| self.error("a dictionary page over 2 GiB"))?,
                            );
                        }
                        let text = String::from_utf8(text)
                            .map_err(|_| self.error("a dictionary value is not valid UTF-8 text"))?;
                        let offsets = arrow_buffer::OffsetBuffer::new(ends.into());
                        let values =
                            StringArray::try_new(offsets, text.into_bytes().into(), None).map_err(|e| self.error(e))?;
                        Dictionary { bytes: Bytes::new(), text: Some(Arc::new(values)), entries }
                    }
                    _ => Dictionary { bytes: buf, text: None, entries },
                });
                self.levels = None;
                return Ok(());
            }
            Parts::Data { buf, rows, levels, values_at, encoding } => {
                self.levels = levels;
                (buf, rows, values_at, encoding)
            }
        };
        let data = buf.get(values_at..).ok_or_else(|| self.error("a page ends before its values"))?;
        self.values = match encoding {
            Encoding::PLAIN if self.kind.width() == 0 => Values::PlainBytes { next: 0, at: values_at },
            Encoding::PLAIN => Values::PlainFixed { at: values_at },
            Encoding::RLE_DICTIONARY | Encoding::PLAIN_DICTIONARY => {
                if self.dictionary.is_none() {
                    return Err(self.error("a dictionary-encoded page comes without its dictionary"));
                }
                let (&width, stream) = data.split_first().unwrap_or((&0, &[]));
                Values::Indices(Hybrid::new(values_at + 1, stream.len(), width)?)
            }
            other => return Err(self.error(format!("values in {other} are not supported"))),
        };
        self.page = buf;
        self.rows = rows;
        Ok(())
    }

    /// Where each of `count` plain values of a dictionary page lies, as (start, end); fixed
    /// widths need no walk but are checked to fit.
    fn plain_entries(&self, buf: &[u8], count: usize) -> Result<Vec<(u32, u32)>, String> {
        let width = self.kind.width();
        if width > 0 {
            if count.checked_mul(width).is_none_or(|n| n > buf.len()) {
                return Err(self.error("a dictionary page is shorter than its values"));
            }
            return Ok((0..count).map(|i| ((i * width) as u32, ((i + 1) * width) as u32)).collect());
        }
        let mut entries = Vec::with_capacity(count.min(buf.len() / 4));
        let mut at = 0;
        for _ in 0..count {
            let (start, end) =
                byte_array_at(buf, at).ok_or_else(|| self.error("a dictionary page ends inside a value"))?;
            entries.push((start as u32, end as u32));
            at = end;
        }
        Ok(entries)
    }

    /// The index among the page's values of `row` (counted in the page), `None` when null.
    fn value_index(&mut self, row: usize) -> Option<usize> {
        let Some(levels) = &self.levels else { return Some(row) };
        // rows only move forward: count the values between the last row asked and this one
        self.level_values += levels[self.level_row..row].iter().filter(|&&l| l == 1).count();
        self.level_row = row + 1;
        let valid = levels[row] == 1;
        let index = self.level_values;
        if valid {
            self.level_values += 1;
        }
        valid.then_some(index)
    }

    fn push_value(&mut self, index: usize, out: &mut Gathered) -> Result<(), String> {
        let name = self.name.clone();
        let truncated = || column_error(&name, "a page ends inside its values");
        match &mut self.values {
            Values::PlainBytes { next, at } => {
                if index < *next {
                    return Err(column_error(&name, "values asked out of order"));
                }
                let mut position = *at;
                for _ in *next..index {
                    position = byte_array_at(&self.page, position).ok_or_else(truncated)?.1;
                }
                let (start, end) = byte_array_at(&self.page, position).ok_or_else(truncated)?;
                *next = index + 1;
                *at = end;
                out.bytes(&self.page[start..end]).map_err(|m| column_error(&name, m))
            }
            Values::PlainFixed { at } => {
                let width = self.kind.width();
                let start = *at + index * width;
                let bytes = self.page.get(start..start + width).ok_or_else(truncated)?;
                out.fixed(bytes);
                Ok(())
            }
            Values::Indices(hybrid) => {
                let key = hybrid.get(&self.page, index).map_err(|m| column_error(&name, m))? as usize;
                let dictionary = self.dictionary.as_ref().expect("checked when the page was read");
                let &(start, end) = dictionary.entries.get(key).ok_or_else(|| {
                    let entries = dictionary.entries.len();
                    column_error(&name, format!("a dictionary index ({key}) is past its dictionary ({entries} values)"))
                })?;
                let (start, end) = (start as usize, end as usize);
                match (self.kind, &dictionary.text) {
                    (Kind::Text, Some(text)) => out.key(key as u32, text),
                    (Kind::Text, None) => unreachable!("a text dictionary keeps its strings"),
                    (Kind::Bytes, _) => out.bytes(&dictionary.bytes[start..end]).map_err(|m| column_error(&name, m))?,
                    (Kind::Int32 | Kind::Int64, _) => out.fixed(&dictionary.bytes[start..end]),
                }
                Ok(())
            }
        }
    }
}

fn column_error(name: &str, message: impl std::fmt::Display) -> String {
    format!("column `{name}`: {message}")
}

/// The (start, end) of the plain byte array whose length prefix is at `at`.
#[inline]
pub fn byte_array_at(buf: &[u8], at: usize) -> Option<(usize, usize)> {
    let header = buf.get(at..at.checked_add(4)?)?;
    let length = u32::from_le_bytes(header.try_into().expect("4 bytes")) as usize;
    let start = at + 4;
    let end = start.checked_add(length).filter(|&end| end <= buf.len())?;
    Some((start, end))
}

/// A gathered text value: a dictionary key, a value copied from a plain page, or null.
enum TextSlot {
    Key(u32),
    Plain,
    Null,
}

/// The builder of one gathered column. Text taken wholly from the dictionary comes out as its
/// keys (the dictionary's strings shared with every batch of the row group); text with any value
/// from a plain page (a dictionary that fell back) comes out as strings.
enum Gathered {
    Text { slots: Vec<TextSlot>, plain: StringBuilder, dictionary: Option<Arc<StringArray>> },
    Bytes(BinaryBuilder),
    Int32(Int32Builder),
    Int64(Int64Builder),
}

impl Gathered {
    fn new(kind: Kind, rows: usize) -> Gathered {
        match kind {
            Kind::Text => {
                Gathered::Text { slots: Vec::with_capacity(rows), plain: StringBuilder::new(), dictionary: None }
            }
            // room for the usual names, ids and paths without growing
            Kind::Bytes => Gathered::Bytes(BinaryBuilder::with_capacity(rows, rows * 48)),
            Kind::Int32 => Gathered::Int32(Int32Builder::with_capacity(rows)),
            Kind::Int64 => Gathered::Int64(Int64Builder::with_capacity(rows)),
        }
    }

    fn null(&mut self) {
        match self {
            Gathered::Text { slots, .. } => slots.push(TextSlot::Null),
            Gathered::Bytes(b) => b.append_null(),
            Gathered::Int32(b) => b.append_null(),
            Gathered::Int64(b) => b.append_null(),
        }
    }

    fn bytes(&mut self, value: &[u8]) -> Result<(), String> {
        match self {
            Gathered::Text { slots, plain, .. } => {
                plain.append_value(std::str::from_utf8(value).map_err(|_| "a value is not valid UTF-8 text")?);
                slots.push(TextSlot::Plain);
            }
            Gathered::Bytes(b) => b.append_value(value),
            _ => unreachable!("byte arrays are gathered as text or bytes"),
        }
        Ok(())
    }

    fn key(&mut self, key: u32, text: &Arc<StringArray>) {
        match self {
            Gathered::Text { slots, dictionary, .. } => {
                dictionary.get_or_insert_with(|| text.clone());
                slots.push(TextSlot::Key(key));
            }
            _ => unreachable!("keys are gathered for text"),
        }
    }

    fn fixed(&mut self, value: &[u8]) {
        match self {
            Gathered::Int32(b) => b.append_value(i32::from_le_bytes(value.try_into().expect("4 bytes"))),
            Gathered::Int64(b) => b.append_value(i64::from_le_bytes(value.try_into().expect("8 bytes"))),
            _ => unreachable!("fixed widths are gathered as integers"),
        }
    }

    fn finish(self) -> ArrayRef {
        match self {
            Gathered::Text { slots, mut plain, dictionary } => {
                let plain = plain.finish();
                match dictionary {
                    Some(values) if plain.is_empty() => {
                        let keys: UInt32Array = slots
                            .iter()
                            .map(|slot| match slot {
                                TextSlot::Key(key) => Some(*key),
                                _ => None,
                            })
                            .collect();
                        let values: ArrayRef = values;
                        Arc::new(
                            DictionaryArray::<UInt32Type>::try_new(keys, values).expect("keys index their dictionary"),
                        )
                    }
                    _ => {
                        let mut text = StringBuilder::with_capacity(slots.len(), plain.value_data().len());
                        let mut next_plain = 0;
                        for slot in &slots {
                            match slot {
                                TextSlot::Key(key) => text.append_value(
                                    dictionary.as_ref().expect("a key has a dictionary").value(*key as usize),
                                ),
                                TextSlot::Plain => {
                                    text.append_value(plain.value(next_plain));
                                    next_plain += 1;
                                }
                                TextSlot::Null => text.append_null(),
                            }
                        }
                        Arc::new(text.finish())
                    }
                }
            }
            Gathered::Bytes(mut b) => Arc::new(b.finish()),
            Gathered::Int32(mut b) => Arc::new(b.finish()),
            Gathered::Int64(mut b) => Arc::new(b.finish()),
        }
    }
}

/// Definition levels (bit width 1) of `rows` rows; `None` when every row holds a value.
pub fn definition_levels(levels: &[u8], rows: usize) -> Result<Option<Vec<u32>>, String> {
    if all_ones(levels, rows) {
        return Ok(None);
    }
    let mut decoded = Vec::new();
    decode_hybrid(levels, 1, rows, &mut decoded)?;
    Ok((!decoded.iter().all(|&level| level == 1)).then_some(decoded))
}

/// Whether a bit-width-1 hybrid stream starts with RLE runs of 1 covering `rows` values (what
/// a writer gives a page without nulls), seen from the run headers alone.
fn all_ones(mut levels: &[u8], rows: usize) -> bool {
    let mut covered = 0u64;
    while covered < rows as u64 {
        let Some((header, used)) = uleb128(levels) else { return false };
        if header & 1 == 1 || levels.get(used) != Some(&1) {
            return false;
        }
        covered += header >> 1;
        levels = &levels[used + 1..];
    }
    true
}

/// A dictionary-index stream in the RLE / bit-packed hybrid encoding, read at increasing
/// indices without decoding the values between them.
struct Hybrid {
    /// Where the stream is in the page, and its end.
    at: usize,
    end: usize,
    width: usize,
    /// The run holding the last index asked: its first index, its length, and either its
    /// repeated value or where its bit-packed values start.
    run_first: usize,
    run_len: usize,
    run: Run,
}

enum Run {
    Repeated(u32),
    Packed(usize),
}

impl Hybrid {
    fn new(at: usize, length: usize, width: u8) -> Result<Hybrid, String> {
        if width > 32 {
            return Err(format!("dictionary indices of {width} bits"));
        }
        Ok(Hybrid { at, end: at + length, width: usize::from(width), run_first: 0, run_len: 0, run: Run::Repeated(0) })
    }

    fn get(&mut self, page: &[u8], index: usize) -> Result<u32, String> {
        let truncated = || "dictionary indices end early".to_string();
        while index >= self.run_first + self.run_len {
            self.run_first += self.run_len;
            let stream = page.get(self.at..self.end).ok_or_else(truncated)?;
            let (header, used) = uleb128(stream).ok_or_else(truncated)?;
            self.at += used;
            if header & 1 == 0 {
                let bytes = self.width.div_ceil(8);
                let raw =
                    page.get(self.at..self.at + bytes).filter(|_| self.at + bytes <= self.end).ok_or_else(truncated)?;
                let mut value = [0u8; 4];
                value[..bytes].copy_from_slice(raw);
                self.at += bytes;
                self.run_len = usize::try_from(header >> 1).unwrap_or(usize::MAX);
                self.run = Run::Repeated(u32::from_le_bytes(value));
            } else {
                let groups = usize::try_from(header >> 1).unwrap_or(usize::MAX);
                let bytes = groups.checked_mul(self.width).ok_or_else(truncated)?;
                if self.at.checked_add(bytes).is_none_or(|end| end > self.end) {
                    return Err(truncated());
                }
                self.run_len = groups * 8;
                self.run = Run::Packed(self.at);
                self.at += bytes;
            }
            if self.run_len == 0 && self.at >= self.end {
                return Err(truncated());
            }
        }
        Ok(match self.run {
            Run::Repeated(value) => value,
            Run::Packed(start) => {
                let bit = (index - self.run_first) * self.width;
                let from = start + bit / 8;
                let mut window = [0u8; 8];
                let available = self.at.saturating_sub(from).min(8);
                window[..available].copy_from_slice(&page[from..from + available]);
                let mask = if self.width == 32 { u64::from(u32::MAX) } else { (1u64 << self.width) - 1 };
                ((u64::from_le_bytes(window) >> (bit % 8)) & mask) as u32
            }
        })
    }
}

/// Decodes `count` values of `width` bits from Parquet's RLE / bit-packed hybrid encoding.
pub fn decode_hybrid(mut data: &[u8], width: u8, count: usize, out: &mut Vec<u32>) -> Result<(), String> {
    let truncated = || "RLE data ends early".to_string();
    if width > 32 {
        return Err(format!("RLE data with a bit width of {width}"));
    }
    out.clear();
    out.reserve(count.min(data.len().saturating_mul(8)));
    let width = usize::from(width);
    let value_bytes = width.div_ceil(8);
    while out.len() < count {
        let (header, used) = uleb128(data).ok_or_else(truncated)?;
        data = &data[used..];
        if header & 1 == 0 {
            let run = usize::try_from(header >> 1).unwrap_or(usize::MAX).min(count - out.len());
            let bytes = data.get(..value_bytes).ok_or_else(truncated)?;
            let mut value = [0u8; 4];
            value[..value_bytes].copy_from_slice(bytes);
            data = &data[value_bytes..];
            if run == 0 && data.is_empty() {
                return Err(truncated());
            }
            out.extend(std::iter::repeat_n(u32::from_le_bytes(value), run));
        } else {
            let groups = usize::try_from(header >> 1).unwrap_or(usize::MAX);
            let bytes = groups.checked_mul(width).ok_or_else(truncated)?;
            let packed = data.get(..bytes).ok_or_else(truncated)?;
            data = &data[bytes..];
            let values = groups.saturating_mul(8).min(count - out.len());
            if values == 0 && data.is_empty() {
                return Err(truncated());
            }
            let mask = if width == 32 { u64::from(u32::MAX) } else { (1u64 << width) - 1 };
            for i in 0..values {
                let bit = i * width;
                let mut window = [0u8; 8];
                let available = packed.len().saturating_sub(bit / 8).min(8);
                window[..available].copy_from_slice(&packed[bit / 8..bit / 8 + available]);
                out.push(((u64::from_le_bytes(window) >> (bit % 8)) & mask) as u32);
            }
        }
    }
    Ok(())
}

/// An unsigned LEB128 integer and the bytes it took.
fn uleb128(data: &[u8]) -> Option<(u64, usize)> {
    let mut value = 0u64;
    for (i, &byte) in data.iter().enumerate().take(10) {
        value |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            return Some((value, i + 1));
        }
    }
    None
}

/// Checks that `count` plain-encoded byte arrays are UTF-8. A length below 128 is four bytes
/// that are themselves ASCII, so runs of such values are checked as one buffer (as the arrow
/// reader does); a longer length ends the run before it.
pub fn validate_plain_utf8(values: &[u8], count: usize) -> Result<(), String> {
    let invalid = || "a value is not valid UTF-8 text".to_string();
    let truncated = || "a page ends inside its values".to_string();
    let mut run_start = 0;
    let mut position = 0;
    for _ in 0..count {
        let (start, end) = byte_array_at(values, position).ok_or_else(truncated)?;
        if end - start >= 128 {
            simdutf8::basic::from_utf8(&values[run_start..position]).map_err(|_| invalid())?;
            run_start = start;
        }
        position = end;
    }
    simdutf8::basic::from_utf8(&values[run_start..position]).map_err(|_| invalid())?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dictionary_page_claiming_more_values_than_its_bytes_is_refused() {
        let page = |values: u32| Page::DictionaryPage {
            buf: Bytes::from(vec![0u8; 8]),
            num_values: values,
            encoding: Encoding::PLAIN,
            is_sorted: false,
        };
        let error = split_page(page(1_191_182_335), false, &mut 10).err().unwrap();
        assert_eq!(error, "a dictionary page claims 1191182335 values in 8 bytes");
        assert!(matches!(split_page(page(2), false, &mut 10), Ok(Parts::Dictionary { values: 2, .. })));
    }

    #[test]
    fn hybrid_runs_decode_at_every_width() {
        // RLE run of 5 × 3 (width 2), then one bit-packed group of 8 values at width 3
        let mut data = vec![5 << 1, 3];
        data.push((1 << 1) | 1);
        let values = [1u32, 2, 3, 4, 5, 6, 7, 0];
        let mut packed = 0u32;
        for (i, v) in values.iter().enumerate() {
            packed |= v << (3 * i);
        }
        data.extend_from_slice(&packed.to_le_bytes()[..3]);
        let mut out = Vec::new();
        decode_hybrid(&data[..2], 2, 5, &mut out).unwrap();
        assert_eq!(out, [3; 5]);
        decode_hybrid(&data[2..], 3, 8, &mut out).unwrap();
        assert_eq!(out, values);
        // truncated data is an error, not a panic
        assert!(decode_hybrid(&data[2..4], 3, 8, &mut out).is_err());
        assert!(decode_hybrid(&[0x80], 3, 1, &mut out).is_err());
        assert!(decode_hybrid(&data[..1], 2, 5, &mut out).is_err());
    }

    #[test]
    fn long_values_are_checked_as_utf8_around_their_lengths() {
        let mut page = Vec::new();
        for value in ["short", &"é".repeat(100), "tail"] {
            page.extend_from_slice(&(value.len() as u32).to_le_bytes());
            page.extend_from_slice(value.as_bytes());
        }
        validate_plain_utf8(&page, 3).unwrap();
        let broken = page.len() - 2;
        page[broken] = 0xff;
        assert!(validate_plain_utf8(&page, 3).is_err());
        assert!(validate_plain_utf8(&page[..10], 3).is_err(), "a page cut short is an error");
    }

    #[test]
    fn indices_are_read_at_increasing_positions_as_a_full_decode_reads_them() {
        // runs: RLE 3 × 5, bit-packed 16 values at width 4, RLE 2 × 9
        let mut stream = vec![3 << 1, 5, (2 << 1) | 1];
        let packed: Vec<u32> = (0..16).map(|i| (i * 7) % 16).collect();
        for pair in packed.chunks(2) {
            stream.push((pair[0] | pair[1] << 4) as u8);
        }
        stream.extend_from_slice(&[2 << 1, 9]);
        let mut all = Vec::new();
        decode_hybrid(&stream, 4, 21, &mut all).unwrap();
        let mut page = vec![0u8; 3];
        page.extend_from_slice(&stream);
        for step in [1, 2, 5] {
            let mut hybrid = Hybrid::new(3, stream.len(), 4).unwrap();
            for index in (0..21).step_by(step) {
                assert_eq!(hybrid.get(&page, index).unwrap(), all[index], "index {index}, step {step}");
            }
        }
        let mut short = Hybrid::new(3, stream.len(), 4).unwrap();
        assert!(short.get(&page, 21).is_err(), "past the stream");
    }

    #[test]
    fn pages_without_nulls_are_seen_from_their_run_headers() {
        assert!(all_ones(&[0xc8, 0x01, 1], 100), "one run of 100 ones (header 200 in LEB128)");
        assert!(all_ones(&[60 << 1, 1, 40 << 1, 1], 100));
        assert!(!all_ones(&[60 << 1, 1, 40 << 1, 0], 100));
        assert!(!all_ones(&[(1 << 1) | 1, 0xff], 8), "bit-packed runs are decoded");
        assert!(!all_ones(&[60 << 1, 1], 100), "too few");
        assert_eq!(definition_levels(&[0xc8, 0x01, 1], 100).unwrap(), None);
        let levels = definition_levels(&[(1 << 1) | 1, 0b1011_0111], 8).unwrap().unwrap();
        assert_eq!(levels, [1, 1, 1, 0, 1, 1, 0, 1]);
    }
}

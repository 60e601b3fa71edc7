//! The RemoteUrl column of one row group, read straight from its Parquet pages: which rows can
//! matter, and their values, without building an Arrow array of every value.
//!
//! A decompressed page of plain-encoded strings is one buffer (`[length][bytes]…`). It is folded
//! to one case and searched whole for the pieces every relevant value holds
//! ([`UrlPrefilter`]), so the ~95 % of values that hold none cost no more than the search
//! passing over them; only the rest meet [`HostMatcher::is_relevant`]. A dictionary page is
//! judged the same way, once, and a dictionary-encoded page then costs an index per row.
//!
//! Only what the arrow reader would accept is read here: flat columns, plain or dictionary
//! values, RLE definition levels; [`UrlPages::supports`] says whether a column chunk is such
//! (the caller falls back to the arrow reader otherwise). Values are checked to be UTF-8 where
//! the column says it holds text, as the arrow reader checks them.

use std::sync::Arc;

use bytes::Bytes;
use parquet::basic::{ConvertedType, Encoding, LogicalType, Type as PhysicalType};
use parquet::column::page::{Page, PageReader};
use parquet::file::metadata::ColumnChunkMetaData;
use parquet::file::reader::ChunkReader;
use parquet::file::serialized_reader::SerializedPageReader;
use parquet::schema::types::ColumnDescriptor;

use crate::hunt::host::HostMatcher;
use crate::hunt::prefilter::{fold_into, UrlPrefilter};

/// A relevant value: its row in the page and where its bytes are.
#[derive(Debug, Clone, Copy)]
struct Relevant {
    row: u32,
    start: u32,
    len: u32,
    /// In the dictionary page rather than the data page.
    in_dictionary: bool,
}

/// Where a value's bytes are in its page: start and length.
type ValueAt = (u32, u32);

/// A row group's RemoteUrl pages, handed out a run of rows at a time.
pub struct UrlPages {
    pages: Box<dyn PageReader>,
    nullable: bool,
    validate_utf8: bool,
    matcher: Arc<HostMatcher>,
    /// The dictionary page and, per entry, where its value is when relevant.
    dictionary: Option<(Bytes, Vec<Option<ValueAt>>)>,
    /// The data page being handed out: its buffer, rows, rows handed out, relevant rows.
    page: Bytes,
    page_rows: usize,
    handed: usize,
    relevant: Vec<Relevant>,
    next_relevant: usize,
    /// Rows of the row group not yet in a page: a page claiming more is corrupt.
    rows_left: usize,
    // scratch, reused from page to page
    folded: Vec<u8>,
    /// The rows of the page that hold a value, when some do not (see `all_valid`).
    valid_rows: Vec<u32>,
    all_valid: bool,
    indices: Vec<u32>,
}

impl UrlPages {
    /// Whether this reader can read the column chunk: flat byte arrays, values plain or in a
    /// dictionary, levels RLE-encoded (the chunk's encodings list what its pages use).
    #[allow(deprecated)] // BIT_PACKED: named only to accept the chunks that merely list it
    pub fn supports(descr: &ColumnDescriptor, chunk: &ColumnChunkMetaData) -> bool {
        let flat = descr.max_rep_level() == 0 && descr.max_def_level() <= 1;
        let encodings_known = chunk.encodings().all(|e| {
            matches!(e, Encoding::PLAIN | Encoding::PLAIN_DICTIONARY | Encoding::RLE_DICTIONARY | Encoding::RLE)
                // old writers list BIT_PACKED for levels they never wrote (a required column)
                || (e == Encoding::BIT_PACKED && descr.max_def_level() == 0)
        });
        flat && descr.physical_type() == PhysicalType::BYTE_ARRAY && encodings_known
    }

    /// Opens the chunk's pages; `rows` is the row group's row count.
    pub fn new<R: ChunkReader + 'static>(
        reader: Arc<R>,
        descr: &ColumnDescriptor,
        chunk: &ColumnChunkMetaData,
        rows: usize,
        matcher: Arc<HostMatcher>,
    ) -> Result<UrlPages, String> {
        let pages = SerializedPageReader::new(reader, chunk, rows, None).map_err(|e| e.to_string())?;
        let validate_utf8 = descr.converted_type() == ConvertedType::UTF8
            || matches!(descr.logical_type_ref(), Some(LogicalType::String));
        Ok(UrlPages {
            pages: Box::new(pages),
            nullable: descr.max_def_level() == 1,
            validate_utf8,
            matcher,
            dictionary: None,
            page: Bytes::new(),
            page_rows: 0,
            handed: 0,
            relevant: Vec::new(),
            next_relevant: 0,
            rows_left: rows,
            folded: Vec::new(),
            valid_rows: Vec::new(),
            all_valid: true,
            indices: Vec::new(),
        })
    }

    /// Hands out the next `rows` rows: `each(offset, value)` for every relevant one, `offset`
    /// counted from the first of these rows.
    pub fn take(&mut self, rows: usize, mut each: impl FnMut(usize, &str)) -> Result<(), String> {
        let mut done = 0;
        while done < rows {
            if self.handed == self.page_rows {
                self.next_page()?;
                continue;
            }
            let run = (rows - done).min(self.page_rows - self.handed);
            let end = (self.handed + run) as u32;
            while let Some(r) = self.relevant.get(self.next_relevant).filter(|r| r.row < end) {
                let buffer = match r.in_dictionary {
                    true => &self.dictionary.as_ref().expect("an index refers to a dictionary").0,
                    false => &self.page,
                };
                let bytes = &buffer[r.start as usize..(r.start + r.len) as usize];
                let value = std::str::from_utf8(bytes).expect("only UTF-8 values are kept");
                each(done + (r.row as usize - self.handed), value);
                self.next_relevant += 1;
            }
            self.handed += run;
            done += run;
        }
        Ok(())
    }

    fn next_page(&mut self) -> Result<(), String> {
        let page = self
            .pages
            .get_next_page()
            .map_err(|e| e.to_string())?
            .ok_or("the RemoteUrl column chunk ends before its row group's last row")?;
        self.relevant.clear();
        self.next_relevant = 0;
        self.handed = 0;
        match page {
            Page::DictionaryPage { buf, num_values, encoding, .. } => {
                if !matches!(encoding, Encoding::PLAIN | Encoding::PLAIN_DICTIONARY) {
                    return Err(format!("RemoteUrl dictionary page in {encoding} encoding is not supported"));
                }
                let mut verdicts = vec![None; num_values as usize];
                let found = self.judge_plain(&buf, 0, num_values as usize, |i| i as u32)?;
                for r in found {
                    verdicts[r.row as usize] = Some((r.start, r.len));
                }
                self.dictionary = Some((buf, verdicts));
                self.page_rows = 0;
            }
            Page::DataPage { buf, num_values, encoding, def_level_encoding, .. } => {
                let rows = self.claim(num_values)?;
                let values_at = if self.nullable {
                    if def_level_encoding != Encoding::RLE {
                        return Err(format!("RemoteUrl definition levels in {def_level_encoding} are not supported"));
                    }
                    let length = buf.get(..4).ok_or("a RemoteUrl page ends inside its definition levels")?;
                    let length = u32::from_le_bytes(length.try_into().expect("4 bytes")) as usize;
                    let levels = buf.get(4..4 + length).ok_or("a RemoteUrl page ends inside its definition levels")?;
                    self.all_valid = decode_levels(levels, rows, &mut self.valid_rows)?;
                    4 + length
                } else {
                    self.all_valid = true;
                    0
                };
                self.data_page(buf, values_at, rows, encoding)?;
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
                    return Err("RemoteUrl is not a flat column".into());
                }
                let rows = self.claim(num_rows)?;
                let levels_end = def_levels_byte_len as usize;
                if self.nullable && num_nulls > 0 {
                    let levels = buf.get(..levels_end).ok_or("a RemoteUrl page ends inside its definition levels")?;
                    self.all_valid = decode_levels(levels, rows, &mut self.valid_rows)?;
                } else {
                    self.all_valid = true;
                }
                self.data_page(buf, levels_end, rows, encoding)?;
            }
        }
        Ok(())
    }

    /// The rows of a data page, checked against what the row group has left.
    fn claim(&mut self, rows: u32) -> Result<usize, String> {
        let rows = rows as usize;
        if rows > self.rows_left {
            return Err(format!("a RemoteUrl page holds {rows} rows where its row group has {} left", self.rows_left));
        }
        self.rows_left -= rows;
        Ok(rows)
    }

    /// Judges a data page's values: one per row, or per row of `valid_rows` unless `all_valid`.
    fn data_page(&mut self, buf: Bytes, values_at: usize, rows: usize, encoding: Encoding) -> Result<(), String> {
        let all_valid = self.all_valid;
        let values = if all_valid { rows } else { self.valid_rows.len() };
        let valid_rows = std::mem::take(&mut self.valid_rows);
        let row_of = |v: usize| if all_valid { v as u32 } else { valid_rows[v] };
        match encoding {
            Encoding::PLAIN => {
                self.relevant = self.judge_plain(&buf, values_at, values, row_of)?;
            }
            Encoding::RLE_DICTIONARY | Encoding::PLAIN_DICTIONARY => {
                let (_, verdicts) = self
                    .dictionary
                    .as_ref()
                    .ok_or("a dictionary-encoded RemoteUrl page comes without its dictionary")?;
                let data = buf.get(values_at..).ok_or("a RemoteUrl page ends before its values")?;
                let (&width, stream) = data.split_first().unwrap_or((&0, &[]));
                decode_hybrid(stream, width, values, &mut self.indices)?;
                let mut relevant = std::mem::take(&mut self.relevant);
                for (v, &index) in self.indices.iter().enumerate() {
                    let verdict = verdicts.get(index as usize).ok_or_else(|| {
                        format!(
                            "a RemoteUrl dictionary index ({index}) is past its dictionary ({} values)",
                            verdicts.len()
                        )
                    })?;
                    if let Some((start, len)) = *verdict {
                        relevant.push(Relevant { row: row_of(v), start, len, in_dictionary: true });
                    }
                }
                self.relevant = relevant;
            }
            other => return Err(format!("RemoteUrl values in {other} encoding are not supported")),
        }
        self.valid_rows = valid_rows;
        self.page = buf;
        self.page_rows = rows;
        Ok(())
    }

    /// The relevant values among `count` plain-encoded values from `buf[at..]`; value `v` is
    /// on row `row_of(v)`. Positions are offsets into `buf`.
    fn judge_plain(
        &mut self,
        buf: &[u8],
        at: usize,
        count: usize,
        row_of: impl Fn(usize) -> u32,
    ) -> Result<Vec<Relevant>, String> {
        let values = buf.get(at..).ok_or("a RemoteUrl page ends before its values")?;
        if self.validate_utf8 {
            validate_plain_utf8(values, count)?;
        }
        let prefilter: &UrlPrefilter = self.matcher.prefilter();
        fold_into(&mut self.folded, values);
        let mut relevant = Vec::new();
        let mut hit = prefilter.find(&self.folded, 0);
        let mut position = 0usize;
        for v in 0..count {
            let header = values.get(position..position + 4).ok_or("a RemoteUrl page ends inside a value's length")?;
            let length = u32::from_le_bytes(header.try_into().expect("4 bytes")) as usize;
            let start = position + 4;
            let end = start
                .checked_add(length)
                .filter(|&e| e <= values.len())
                .ok_or("a RemoteUrl value runs past the end of its page")?;
            if hit.is_some_and(|h| h < end) {
                let bytes = &values[start..end];
                let relevant_value =
                    !bytes.is_empty() && std::str::from_utf8(bytes).is_ok_and(|text| self.matcher.is_relevant(text));
                if relevant_value {
                    relevant.push(Relevant {
                        row: row_of(v),
                        start: (at + start) as u32,
                        len: length as u32,
                        in_dictionary: false,
                    });
                }
                hit = prefilter.find(&self.folded, end);
            }
            position = end;
        }
        Ok(relevant)
    }
}

/// Checks that `count` plain-encoded byte arrays are UTF-8. A length below 128 is four bytes
/// that are themselves ASCII, so runs of such values are checked as one buffer (as the arrow
/// reader does); a longer length ends the run before it.
fn validate_plain_utf8(values: &[u8], count: usize) -> Result<(), String> {
    let invalid = || "RemoteUrl holds a value that is not valid UTF-8 text".to_string();
    let mut run_start = 0;
    let mut position = 0;
    for _ in 0..count {
        let header = values.get(position..position + 4).ok_or("a RemoteUrl page ends inside a value's length")?;
        let length = u32::from_le_bytes(header.try_into().expect("4 bytes")) as usize;
        if length >= 128 {
            simdutf8::basic::from_utf8(&values[run_start..position]).map_err(|_| invalid())?;
            run_start = position + 4;
        }
        position = (position + 4)
            .checked_add(length)
            .filter(|&e| e <= values.len())
            .ok_or("a RemoteUrl value runs past the end of its page")?;
    }
    simdutf8::basic::from_utf8(&values[run_start..position]).map_err(|_| invalid())?;
    Ok(())
}

/// Decodes `rows` definition levels (bit width 1) into the rows that hold a value; `true`
/// when every row does.
fn decode_levels(levels: &[u8], rows: usize, valid_rows: &mut Vec<u32>) -> Result<bool, String> {
    let mut decoded = Vec::new();
    decode_hybrid(levels, 1, rows, &mut decoded)?;
    if decoded.iter().all(|&level| level == 1) {
        return Ok(true);
    }
    valid_rows.clear();
    valid_rows.extend(decoded.iter().enumerate().filter(|(_, &level)| level == 1).map(|(row, _)| row as u32));
    Ok(false)
}

/// Decodes `count` values of `width` bits from Parquet's RLE / bit-packed hybrid encoding.
fn decode_hybrid(mut data: &[u8], width: u8, count: usize, out: &mut Vec<u32>) -> Result<(), String> {
    let truncated = || "a RemoteUrl page's RLE data ends early".to_string();
    if width > 32 {
        return Err(format!("a RemoteUrl page's RLE data has a bit width of {width}"));
    }
    out.clear();
    out.reserve(count);
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
            out.extend(std::iter::repeat_n(u32::from_le_bytes(value), run));
        } else {
            let groups = usize::try_from(header >> 1).unwrap_or(usize::MAX);
            let bytes = groups.checked_mul(width).ok_or_else(truncated)?;
            let packed = data.get(..bytes).ok_or_else(truncated)?;
            data = &data[bytes..];
            let values = (groups * 8).min(count - out.len());
            let mask = if width == 32 { u64::from(u32::MAX) } else { (1u64 << width) - 1 };
            for i in 0..values {
                let bit = i * width;
                let mut window = [0u8; 8];
                let available = packed.len() - bit / 8;
                window[..available.min(8)].copy_from_slice(&packed[bit / 8..bit / 8 + available.min(8)]);
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

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_array::{Array, ArrayRef, BinaryArray, RecordBatch, StringArray};
    use arrow_schema::{DataType, Field, Schema};
    use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
    use parquet::arrow::ArrowWriter;
    use parquet::file::properties::{WriterProperties, WriterVersion};
    use parquet::file::reader::{FileReader, SerializedFileReader};

    fn matcher() -> Arc<HostMatcher> {
        let reference = crate::config::default_reference_hosts();
        Arc::new(
            HostMatcher::new(&reference, ["*.endpoint.security.microsoft.com", "crl.microsoft.com"])
                .with_lookalikes(["winatp-gw-*.microsoft.com"], 2),
        )
    }

    /// RemoteUrl values of every kind the job meets: listed hosts in every spelling, look-alikes,
    /// unrelated hosts and URLs, long and non-ASCII values, empty values and nulls.
    fn urls(rows: usize) -> Vec<Option<String>> {
        let shapes = [
            "winatp-gw-weu.microsoft.com",
            "HTTPS://WINATP-GW-WEU.MICROSOFT.COM:443/x",
            "winatp-gw-weu.rnicrosoft.com",
            "eu-v20.events.data.microsoft.com:443",
            " x.endpoint.security.microsoft.com. ",
            "https://crl.microsoft.com/pki/crl/products/x.crl",
            "www.bing.com",
            "",
            "https://example.org/search?q=winatp",
            "graph.microsoft.com",
            "tcp://us.vortex-win.data.microsoft.com:443",
            "münchen.example/ä",
        ];
        (0..rows)
            .map(|i| match i % 17 {
                16 => None,
                13 => Some(format!("https://cdn{i}.example.com/{}", "p".repeat(i % 300))),
                _ => Some(shapes[i % shapes.len()].to_string()),
            })
            .collect()
    }

    fn write(
        values: &[Option<String>],
        props: WriterProperties,
        binary: bool,
        nullable: bool,
    ) -> tempfile::NamedTempFile {
        let (data_type, array): (DataType, ArrayRef) = if binary {
            let bytes: Vec<Option<&[u8]>> = values.iter().map(|v| v.as_deref().map(str::as_bytes)).collect();
            (DataType::Binary, Arc::new(BinaryArray::from(bytes)))
        } else {
            (DataType::Utf8, Arc::new(StringArray::from(values.to_vec())))
        };
        let schema = Arc::new(Schema::new(vec![Field::new("RemoteUrl", data_type, nullable)]));
        let batch = RecordBatch::try_new(schema.clone(), vec![array]).unwrap();
        let file = tempfile::NamedTempFile::new().unwrap();
        let mut writer = ArrowWriter::try_new(file.reopen().unwrap(), schema, Some(props)).unwrap();
        writer.write(&batch).unwrap();
        writer.close().unwrap();
        file
    }

    /// What the arrow reader and the full rules say: (row, value) of every relevant row.
    fn expected(file: &tempfile::NamedTempFile, matcher: &HostMatcher) -> Vec<(usize, String)> {
        let reader = ParquetRecordBatchReaderBuilder::try_new(file.reopen().unwrap()).unwrap().build().unwrap();
        let mut out = Vec::new();
        let mut row = 0;
        for batch in reader {
            let batch = batch.unwrap();
            let column = arrow_cast::cast(batch.column(0), &DataType::Utf8).unwrap();
            let column = column.as_any().downcast_ref::<StringArray>().unwrap();
            for i in 0..column.len() {
                if column.is_valid(i) && !column.value(i).is_empty() && matcher.is_relevant(column.value(i)) {
                    out.push((row + i, column.value(i).to_string()));
                }
            }
            row += column.len();
        }
        out
    }

    /// The encodings of the file's data pages, and whether any is a v2 page.
    fn data_pages(file: &tempfile::NamedTempFile) -> (std::collections::BTreeSet<String>, bool) {
        let reader = SerializedFileReader::new(file.reopen().unwrap()).unwrap();
        let (mut encodings, mut v2) = (std::collections::BTreeSet::new(), false);
        for group in 0..reader.num_row_groups() {
            let mut pages = reader.get_row_group(group).unwrap().get_column_page_reader(0).unwrap();
            while let Some(page) = pages.get_next_page().unwrap() {
                match page {
                    Page::DataPage { encoding, .. } => encodings.insert(encoding.to_string()),
                    Page::DataPageV2 { encoding, .. } => {
                        v2 = true;
                        encodings.insert(encoding.to_string())
                    }
                    Page::DictionaryPage { .. } => false,
                };
            }
        }
        (encodings, v2)
    }

    /// Whether [`UrlPages`] reads every row group of the file.
    fn supported(file: &tempfile::NamedTempFile) -> bool {
        let reader = SerializedFileReader::new(file.reopen().unwrap()).unwrap();
        let descr = reader.metadata().file_metadata().schema_descr().column(0);
        reader.metadata().row_groups().iter().all(|group| UrlPages::supports(&descr, group.column(0)))
    }

    /// What [`UrlPages`] says, taking the rows of each row group in runs of `step`.
    fn paged(file: &tempfile::NamedTempFile, matcher: &Arc<HostMatcher>, step: usize) -> Vec<(usize, String)> {
        let reader = SerializedFileReader::new(file.reopen().unwrap()).unwrap();
        let metadata = reader.metadata();
        let descr = metadata.file_metadata().schema_descr().column(0);
        let bytes = Arc::new(bytes::Bytes::from(std::fs::read(file.path()).unwrap()));
        let mut out = Vec::new();
        let mut first_row = 0;
        for group in metadata.row_groups() {
            let rows = group.num_rows() as usize;
            let mut pages = UrlPages::new(bytes.clone(), &descr, group.column(0), rows, matcher.clone()).unwrap();
            let mut at = 0;
            while at < rows {
                let run = step.min(rows - at);
                pages.take(run, |offset, value| out.push((first_row + at + offset, value.to_string()))).unwrap();
                at += run;
            }
            first_row += rows;
        }
        out
    }

    #[test]
    fn pages_give_the_rows_and_values_the_arrow_reader_and_the_rules_give() {
        let values = urls(5_000);
        let base = || WriterProperties::builder().set_data_page_row_count_limit(300).set_write_batch_size(100);
        #[rustfmt::skip]
        let v2 = || base().set_writer_version(WriterVersion::PARQUET_2_0);
        let variants: Vec<(&str, WriterProperties, bool)> = vec![
            ("plain v1", base().set_dictionary_enabled(false).build(), false),
            ("dictionary v1", base().build(), false),
            ("dictionary falls back", base().set_dictionary_page_size_limit(256).build(), false),
            ("plain v2", v2().set_dictionary_enabled(false).set_encoding(Encoding::PLAIN).build(), false),
            ("dictionary v2", v2().set_encoding(Encoding::PLAIN).build(), false),
            ("dictionary v1, groups of 777", base().set_max_row_group_row_count(Some(777)).build(), false),
            ("binary, not annotated", base().set_dictionary_enabled(false).build(), true),
        ];
        let m = matcher();
        for (name, props, binary) in variants {
            let file = write(&values, props, binary, true);
            assert!(supported(&file), "{name}");
            let (encodings, v2) = data_pages(&file);
            assert_eq!(encodings.contains("RLE_DICTIONARY"), name.contains("dictionary"), "{name}: {encodings:?}");
            assert_eq!(encodings.contains("PLAIN"), !name.starts_with("dictionary v"), "{name}: {encodings:?}");
            assert_eq!(v2, name.contains("v2"), "{name}");
            let want = expected(&file, &m);
            assert!(want.len() > 1_000, "{name}: {} relevant rows", want.len());
            for step in [1, 7, 8192] {
                assert_eq!(paged(&file, &m, step), want, "{name}, runs of {step}");
            }
        }
        // a required column has no definition levels at all
        let required: Vec<Option<String>> = values.iter().map(|v| Some(v.clone().unwrap_or_default())).collect();
        for props in [base().build(), base().set_dictionary_enabled(false).build()] {
            let file = write(&required, props, false, false);
            assert_eq!(paged(&file, &m, 100), expected(&file, &m));
        }
        // delta encodings are left to the arrow reader
        let delta = write(&values, v2().set_dictionary_enabled(false).build(), false, true);
        assert!(!supported(&delta));
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
}

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
use parquet::basic::{Encoding, Type as PhysicalType};
use parquet::column::page::PageReader;
use parquet::file::metadata::ColumnChunkMetaData;
use parquet::file::reader::ChunkReader;
use parquet::file::serialized_reader::SerializedPageReader;
use parquet::schema::types::ColumnDescriptor;

use super::pages::{self, decode_hybrid, validate_plain_utf8, Parts};
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
    /// dictionary, levels RLE-encoded (see [`pages::readable`]).
    pub fn supports(descr: &ColumnDescriptor, chunk: &ColumnChunkMetaData) -> bool {
        descr.physical_type() == PhysicalType::BYTE_ARRAY && pages::readable(descr, chunk)
    }

    /// Opens the chunk's pages; `rows` is the row group's row count. `text`: the values are
    /// checked to be UTF-8 (the arrow reader checks them when it reads the column as text).
    pub fn new<R: ChunkReader + 'static>(
        reader: Arc<R>,
        descr: &ColumnDescriptor,
        chunk: &ColumnChunkMetaData,
        rows: usize,
        matcher: Arc<HostMatcher>,
        text: bool,
    ) -> Result<UrlPages, String> {
        let pages = SerializedPageReader::new(reader, chunk, rows, None).map_err(|e| e.to_string())?;
        Ok(UrlPages {
            pages: Box::new(pages),
            nullable: descr.max_def_level() == 1,
            validate_utf8: text,
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
        match pages::split_page(page, self.nullable, &mut self.rows_left).map_err(|m| format!("RemoteUrl: {m}"))? {
            Parts::Dictionary { buf, values } => {
                let mut verdicts = vec![None; values];
                let found = self.judge_plain(&buf, 0, values, |i| i as u32)?;
                for r in found {
                    verdicts[r.row as usize] = Some((r.start, r.len));
                }
                self.dictionary = Some((buf, verdicts));
                self.page_rows = 0;
            }
            Parts::Data { buf, rows, levels, values_at, encoding } => {
                self.valid_rows.clear();
                self.all_valid = levels.is_none();
                if let Some(levels) = levels {
                    self.valid_rows
                        .extend(levels.iter().enumerate().filter(|(_, &l)| l == 1).map(|(row, _)| row as u32));
                }
                self.data_page(buf, values_at, rows, encoding)?;
            }
        }
        Ok(())
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

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_array::{Array, ArrayRef, BinaryArray, RecordBatch, StringArray};
    use arrow_schema::{DataType, Field, Schema};
    use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
    use parquet::arrow::ArrowWriter;
    use parquet::column::page::Page;
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
    fn paged(
        file: &tempfile::NamedTempFile,
        matcher: &Arc<HostMatcher>,
        step: usize,
        text: bool,
    ) -> Vec<(usize, String)> {
        let reader = SerializedFileReader::new(file.reopen().unwrap()).unwrap();
        let metadata = reader.metadata();
        let descr = metadata.file_metadata().schema_descr().column(0);
        let bytes = Arc::new(bytes::Bytes::from(std::fs::read(file.path()).unwrap()));
        let mut out = Vec::new();
        let mut first_row = 0;
        for group in metadata.row_groups() {
            let rows = group.num_rows() as usize;
            let mut pages = UrlPages::new(bytes.clone(), &descr, group.column(0), rows, matcher.clone(), text).unwrap();
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
                assert_eq!(paged(&file, &m, step, !binary), want, "{name}, runs of {step}");
            }
        }
        // a required column has no definition levels at all
        let required: Vec<Option<String>> = values.iter().map(|v| Some(v.clone().unwrap_or_default())).collect();
        for props in [base().build(), base().set_dictionary_enabled(false).build()] {
            let file = write(&required, props, false, false);
            assert_eq!(paged(&file, &m, 100, true), expected(&file, &m));
        }
        // delta encodings are left to the arrow reader
        let delta = write(&values, v2().set_dictionary_enabled(false).build(), false, true);
        assert!(!supported(&delta));
    }
}

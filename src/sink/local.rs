//! The results store on a local disk: `<root>/<Table>/day=YYYY-MM-DD/part-0.{parquet,jsonl}`.
//! Each file is written under a temporary name and renamed into place, so a reader sees the
//! old file or the new one, never half of one, and a re-run of a day replaces it.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use parquet::arrow::ArrowWriter;
use parquet::basic::Compression;
use parquet::file::properties::WriterProperties;

use super::{SinkError, Table};
use crate::time::Day;

pub struct LocalStore {
    pub root: PathBuf,
    /// Makes temporary names unique to this run.
    pub run_id: String,
}

impl LocalStore {
    pub fn day_dir(&self, table: &str, day: Day) -> PathBuf {
        self.root.join(table).join(format!("day={day}"))
    }

    /// Writes one table for one day, as Parquet and JSON lines.
    pub fn write_day(&self, table: &Table, day: Day) -> Result<(), SinkError> {
        self.write_in(&self.day_dir(table.name, day), "part-0", table)
    }

    /// Writes a table under `dir/stem.{parquet,jsonl}`.
    pub fn write_in(&self, dir: &Path, stem: &str, table: &Table) -> Result<(), SinkError> {
        fs::create_dir_all(dir).map_err(|source| SinkError::Io { path: dir.to_path_buf(), source })?;
        let batch =
            table.to_record_batch().map_err(|message| SinkError::Encode { table: table.name.to_string(), message })?;
        let mut parquet = Vec::new();
        let properties = WriterProperties::builder().set_compression(Compression::SNAPPY).build();
        let encode = |e: parquet::errors::ParquetError| SinkError::Encode {
            table: table.name.to_string(),
            message: e.to_string(),
        };
        let mut writer = ArrowWriter::try_new(&mut parquet, batch.schema(), Some(properties)).map_err(encode)?;
        writer.write(&batch).map_err(encode)?;
        writer.close().map_err(encode)?;
        self.replace(&dir.join(format!("{stem}.parquet")), &parquet)?;
        self.replace(&dir.join(format!("{stem}.jsonl")), table.to_jsonl().as_bytes())
    }

    fn replace(&self, path: &Path, bytes: &[u8]) -> Result<(), SinkError> {
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("part");
        let temporary = path.with_file_name(format!(".{name}.{}.tmp", self.run_id));
        let io = |source| SinkError::Io { path: path.to_path_buf(), source };
        let mut file = fs::File::create(&temporary).map_err(io)?;
        // No fsync: the rename makes the file visible whole or not at all, which is what readers
        // need; a crash before the OS flushes only means the day is hunted again.
        file.write_all(bytes).map_err(io)?;
        drop(file);
        fs::rename(&temporary, path).map_err(|source| {
            let _ = fs::remove_file(&temporary);
            SinkError::Io { path: path.to_path_buf(), source }
        })
    }
}

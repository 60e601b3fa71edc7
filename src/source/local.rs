//! Local files and folders: walk, recognise each file's format by content (and extension),
//! and plan the units to scan.

use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};

use flate2::read::MultiGzDecoder;

use super::csv::CsvUnit;
use super::json::JsonUnit;
use super::{parquet, LimitExceeded, ScanOptions, SourceError, Unit};
use crate::config::Limits;

/// Extensions a folder walk picks up; anything else in a folder is skipped (and listed).
const KNOWN_EXTENSIONS: [&str; 7] = ["parquet", "json", "jsonl", "ndjson", "gz", "csv", "pq"];

/// What planning found.
#[derive(Debug, Default)]
pub struct Plan {
    pub units: Vec<Unit>,
    pub files: Vec<PathBuf>,
    pub bytes: u64,
    pub skipped_files: Vec<PathBuf>,
    pub row_groups_pruned: u64,
    pub rows_pruned: u64,
    /// Files that lack a column the reference query needs, with the columns.
    pub missing_columns: Vec<(PathBuf, Vec<&'static str>)>,
}

/// A file's format, from its first bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Parquet,
    Json,
    Csv,
}

/// Opens a file, decompressing it when it starts with the gzip magic bytes, within `limits`.
pub fn open_maybe_gzip(path: &Path, limits: &Limits) -> Result<Box<dyn BufRead + Send>, SourceError> {
    let file = File::open(path).map_err(|e| SourceError::io(path, e))?;
    maybe_gunzip(file, limits).map_err(|e| SourceError::io(path, e))
}

/// Buffers a byte stream, decompressing it when it starts with the gzip magic bytes. Reads stop
/// with a [`LimitExceeded`] error (see [`SourceError::io`]) at a line longer than
/// `max_line_bytes` or, for gzip, past `max_decompressed_bytes`, so that neither a gzip bomb nor a
/// line without an end makes memory grow without bound.
pub fn maybe_gunzip(input: impl Read + Send + 'static, limits: &Limits) -> std::io::Result<Box<dyn BufRead + Send>> {
    let mut input = BufReader::with_capacity(1 << 20, input);
    let gz = input.fill_buf()?.starts_with(&[0x1f, 0x8b]);
    Ok(if gz {
        let decompressed = Guarded::new(MultiGzDecoder::new(input), limits, Some(limits.max_decompressed_bytes));
        Box::new(BufReader::with_capacity(1 << 20, decompressed))
    } else {
        Box::new(BufReader::with_capacity(1 << 20, Guarded::new(input, limits, None)))
    })
}

/// Counts what passes through: the bytes since the last line end, and the total.
pub struct Guarded<R> {
    inner: R,
    line: u64,
    total: u64,
    max_line: u64,
    max_total: Option<u64>,
}

impl<R: Read> Guarded<R> {
    pub fn new(inner: R, limits: &Limits, max_total: Option<u64>) -> Guarded<R> {
        Guarded { inner, line: 0, total: 0, max_line: limits.max_line_bytes, max_total }
    }
}

impl<R: Read> Read for Guarded<R> {
    fn read(&mut self, buffer: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buffer)?;
        let read = &buffer[..n];
        self.total += n as u64;
        if let Some(max) = self.max_total.filter(|&max| self.total > max) {
            let what = "the decompressed data";
            return Err(std::io::Error::other(LimitExceeded { what, setting: "max_decompressed_bytes", limit: max }));
        }
        // Every line that ends in this read, then the one left open, which carries on.
        let mut longest = 0;
        let mut segments = read.split(|&b| b == b'\n');
        let mut open = self.line + segments.next().map_or(0, <[u8]>::len) as u64;
        for segment in segments {
            longest = longest.max(open);
            open = segment.len() as u64;
        }
        self.line = open;
        if longest.max(open) > self.max_line {
            let what = "a line";
            return Err(std::io::Error::other(LimitExceeded { what, setting: "max_line_bytes", limit: self.max_line }));
        }
        Ok(n)
    }
}

/// Recognises a file by content: `PAR1` is Parquet; after optional gzip, a first non-blank byte
/// `{` or `[` is JSON; a first line naming `Timestamp`/`TimeGenerated` among commas is CSV.
pub fn detect(path: &Path) -> Result<Format, SourceError> {
    let io = |source| SourceError::Io { path: path.to_path_buf(), source };
    let mut head = [0u8; 4];
    let n = File::open(path).map_err(io)?.read(&mut head).map_err(io)?;
    if n == 4 && &head == b"PAR1" {
        return Ok(Format::Parquet);
    }
    let extension = path.extension().and_then(|e| e.to_str()).unwrap_or("").to_ascii_lowercase();
    let parquet_name = matches!(extension.as_str(), "parquet" | "pq");
    // A file named Parquet is never guessed to be text: binary bytes could pass for a CSV header.
    if parquet_name && n > 0 {
        return Err(SourceError::Parquet {
            path: path.to_path_buf(),
            message: "the file does not start with the Parquet magic bytes `PAR1`".into(),
        });
    }
    if n == 0 {
        return match extension.as_str() {
            "parquet" | "pq" => {
                Err(SourceError::Parquet { path: path.to_path_buf(), message: "the file is empty (0 bytes)".into() })
            }
            "csv" => Ok(Format::Csv),
            _ => Ok(Format::Json),
        };
    }
    let mut reader = open_maybe_gzip(path, &Limits::default())?;
    let mut first_line = Vec::new();
    // Enough to see the start of a JSON value or a CSV header without reading a whole file.
    let mut limited = (&mut reader).take(64 * 1024);
    limited.read_until(b'\n', &mut first_line).map_err(io)?;
    let text = String::from_utf8_lossy(&first_line);
    let trimmed = text.trim_start_matches('\u{feff}').trim_start();
    if trimmed.starts_with('{') || trimmed.starts_with('[') {
        return Ok(Format::Json);
    }
    if extension == "csv" || (text.contains(',') && (text.contains("Timestamp") || text.contains("TimeGenerated"))) {
        return Ok(Format::Csv);
    }
    if trimmed.is_empty() {
        return Ok(Format::Json);
    }
    Err(SourceError::Format {
        path: path.to_path_buf(),
        message: "not Parquet, JSON lines or a CSV export with a Timestamp column; check that this is a DeviceNetworkEvents export".into(),
    })
}

fn walk(
    dir: &Path,
    files: &mut Vec<PathBuf>,
    skipped: &mut Vec<PathBuf>,
    visited: &mut std::collections::HashSet<PathBuf>,
) -> Result<(), SourceError> {
    let io = |source| SourceError::Io { path: dir.to_path_buf(), source };
    // A folder reached twice (a symlink back up the tree, or two inputs that overlap) is read once.
    if !visited.insert(std::fs::canonicalize(dir).map_err(io)?) {
        return Ok(());
    }
    let mut entries: Vec<_> = std::fs::read_dir(dir).map_err(io)?.collect::<Result<_, _>>().map_err(io)?;
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().to_string();
        // Hidden files and writer markers (`_SUCCESS`, `.crc`, `_delta_log`) are not data.
        if name.starts_with('.') || name.starts_with('_') {
            continue;
        }
        let kind = entry.file_type().map_err(io)?;
        let is_dir = kind.is_dir() || (kind.is_symlink() && path.is_dir());
        // The job's own result tables, when `--out` sits under an input: output, never input.
        if is_dir && name.starts_with("MdeTelemetry") {
            continue;
        }
        if is_dir {
            walk(&path, files, skipped, visited)?;
        } else {
            let extension = path.extension().and_then(|e| e.to_str()).unwrap_or("").to_ascii_lowercase();
            if KNOWN_EXTENSIONS.contains(&extension.as_str()) {
                files.push(path);
            } else {
                skipped.push(path);
            }
        }
    }
    Ok(())
}

/// Plans the scan of local inputs: every file of every folder (recursively, sorted), format by
/// content, Parquet footers read and row groups pruned by the window.
pub fn plan_local(inputs: &[PathBuf], options: &ScanOptions) -> Result<Plan, SourceError> {
    let mut plan = Plan::default();
    let mut files = Vec::new();
    let mut visited = std::collections::HashSet::new();
    for input in inputs {
        if input.is_dir() {
            walk(input, &mut files, &mut plan.skipped_files, &mut visited)?;
        } else if input.is_file() {
            files.push(input.clone());
        } else {
            return Err(SourceError::Missing { path: input.clone() });
        }
    }
    // The same file named twice (`--input dir --input dir/file`) is read once: events count once.
    let mut seen = std::collections::HashSet::new();
    files.retain(|path| seen.insert(std::fs::canonicalize(path).unwrap_or_else(|_| path.clone())));
    if files.is_empty() && !inputs.is_empty() {
        let names: Vec<String> = inputs.iter().map(|p| format!("`{}`", p.display())).collect();
        let skipped = match plan.skipped_files.len() {
            0 => String::new(),
            n => format!(" ({n} other file(s) skipped by their extension, e.g. `{}`)", plan.skipped_files[0].display()),
        };
        return Err(SourceError::NoFiles { inputs: names.join(", "), skipped });
    }
    for path in files {
        let bytes = std::fs::metadata(&path).map_err(|source| SourceError::Io { path: path.clone(), source })?.len();
        plan.bytes += bytes;
        match detect(&path)? {
            Format::Parquet => {
                let planned = parquet::plan_file(&path, options)?;
                plan.row_groups_pruned += planned.row_groups_pruned;
                plan.rows_pruned += planned.rows_pruned;
                if !planned.missing_columns.is_empty() {
                    plan.missing_columns.push((path.clone(), planned.missing_columns));
                }
                plan.units.extend(planned.units.into_iter().map(Unit::Parquet));
            }
            Format::Json => plan.units.push(Unit::Json(JsonUnit { path: path.clone(), bytes, object: None })),
            Format::Csv => plan.units.push(Unit::Csv(CsvUnit { path: path.clone(), bytes })),
        }
        plan.files.push(path);
    }
    Ok(plan)
}

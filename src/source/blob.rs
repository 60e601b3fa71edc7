//! Events in a blob container, in the layouts users have:
//!
//! - Parquet under a prefix, in `day=YYYY-MM-DD/` or `y=YYYY/m=MM/d=DD/` folders, or flat;
//! - the Defender streaming export, `insights-logs-advancedhunting-devicenetworkevents/
//!   tenantId=…/y=…/m=…/d=…/h=…/m=00/PT1H.json`;
//! - the Log Analytics data export, `am-devicenetworkevents/WorkspaceResourceId=/subscriptions/…/
//!   y=…/m=…/d=…/h=…/m=…/PT05M.json` (also `PT5M.json`, `PT05M_1.json`).
//!
//! Names are found by listing, never built: the walk descends every folder it cannot date
//! (`tenantId=…`, `WorkspaceResourceId=`, …) and skips the dated folders outside the run's days,
//! so only the days a run needs are listed and read.
//!
//! Reading is split between tokio and rayon: the I/O runtime fetches units ahead (the needed
//! column chunks of a Parquet row group with one ranged GET each; a JSON blob as a stream) and
//! hands them through a bounded channel to the rayon workers, which decode exactly as for local
//! files. Memory stays bounded by the channel and the number of fetches in flight.

use std::io::Read;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use arrow_array::RecordBatch;
use bytes::Bytes;
use futures_util::stream::{FuturesUnordered, StreamExt, TryStreamExt};
use object_store::path::Path;
use object_store::{ObjectMeta, ObjectStore, ObjectStoreExt};
use parquet::arrow::arrow_reader::{ArrowReaderMetadata, ArrowReaderOptions};
use serde::{Deserialize, Serialize};

use super::json::JsonUnit;
use super::local::maybe_gunzip;
use super::parquet::{plan_metadata, ColumnChunks};
use super::{ObjectRef, Plan, ScanOptions, ScanStats, SourceError, Unit};
use crate::azure::storage::explain;
use crate::azure::{BlobLocation, Container, Identity};
use crate::time::Day;

/// How the container's blobs are laid out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum BlobLayout {
    /// By extension: `.parquet`/`.pq` are Parquet; `.json`, `.jsonl`, `.ndjson`, `.gz` are JSON
    /// lines; anything else is skipped (and counted).
    #[default]
    Auto,
    /// Every blob is Parquet, whatever its name (Spark, ADX and Fabric exports).
    Parquet,
    /// The Defender streaming export: `.json` blobs of JSON lines with the `properties` envelope.
    DefenderStreaming,
    /// A Log Analytics data-export rule: `.json` blobs of flat JSON lines.
    LogAnalyticsExport,
}

impl BlobLayout {
    pub fn as_str(self) -> &'static str {
        match self {
            BlobLayout::Auto => "auto",
            BlobLayout::Parquet => "parquet",
            BlobLayout::DefenderStreaming => "defender-streaming",
            BlobLayout::LogAnalyticsExport => "log-analytics-export",
        }
    }

    pub fn parse(text: &str) -> Option<BlobLayout> {
        [BlobLayout::Auto, BlobLayout::Parquet, BlobLayout::DefenderStreaming, BlobLayout::LogAnalyticsExport]
            .into_iter()
            .find(|l| l.as_str() == text)
    }

    /// The format of a blob by its name; `None` when the layout says it is not data.
    fn format(self, name: &str) -> Option<BlobFormat> {
        let extension = name.rsplit_once('.').map(|(_, e)| e.to_ascii_lowercase()).unwrap_or_default();
        match self {
            BlobLayout::Parquet => Some(BlobFormat::Parquet),
            BlobLayout::DefenderStreaming | BlobLayout::LogAnalyticsExport => {
                matches!(extension.as_str(), "json" | "gz").then_some(BlobFormat::Json)
            }
            BlobLayout::Auto => match extension.as_str() {
                "parquet" | "pq" => Some(BlobFormat::Parquet),
                "json" | "jsonl" | "ndjson" | "gz" => Some(BlobFormat::Json),
                _ => None,
            },
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BlobFormat {
    Parquet,
    Json,
}

/// A validated blob source: where, and how it is laid out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlobSource {
    pub location: BlobLocation,
    pub layout: BlobLayout,
}

/// Events of a blob container, read by listing and ranged GETs.
pub struct BlobReader {
    container: Container,
    layout: BlobLayout,
    identity: Identity,
    bytes_fetched: Arc<AtomicU64>,
}

/// Listings in flight while walking the folders.
const LISTINGS_IN_FLIGHT: usize = 8;
/// Footers in flight while planning.
const FOOTERS_IN_FLIGHT: usize = 8;
/// Units fetched ahead of the rayon workers, and units waiting for a worker.
const FETCHES_IN_FLIGHT: usize = 4;
const UNITS_WAITING: usize = 2;
/// Chunks of one JSON stream buffered ahead of its reader.
const STREAM_CHUNKS: usize = 8;
/// The footer is fetched with one read of the blob's last bytes; a larger footer costs a second.
const FOOTER_GUESS: u64 = 64 * 1024;
/// Streaming and data exports file an event under the hour it was received (or ingested), which
/// is at or after its own time: a run reads this many days of folders past its last day.
const FOLDER_DAYS_AFTER_WINDOW: i32 = 1;

const READ_ROLE: &str = "Storage Blob Data Reader";

/// A unit with its bytes in hand (or streaming in), ready for a rayon worker.
pub enum Fetched {
    Chunks(ColumnChunks),
    /// The raw stream; reading it blocks, so it is first read (gzip sniffed) on rayon.
    Stream(Box<dyn Read + Send>),
}

impl BlobReader {
    pub fn new(container: Container, layout: BlobLayout, identity: Identity) -> BlobReader {
        BlobReader { container, layout, identity, bytes_fetched: Arc::new(AtomicU64::new(0)) }
    }

    pub fn url(&self) -> String {
        self.container.location.url()
    }

    /// Bytes this reader has fetched so far: footers, column chunks, streams.
    pub fn bytes_fetched(&self) -> u64 {
        self.bytes_fetched.load(Ordering::Relaxed)
    }

    fn failure(&self, name: &str, error: &object_store::Error) -> SourceError {
        SourceError::Blob {
            url: self.container.location.object_url(name),
            message: explain(error, &self.container.location, &self.identity, READ_ROLE),
        }
    }

    /// Lists the blobs of the window's days (all blobs without a window), reads the Parquet
    /// footers, and plans the units to scan.
    pub fn plan(&self, window: Option<(Day, Day)>, options: &ScanOptions) -> Result<Plan, SourceError> {
        let folders = window.map(|(from, to)| (from, Day(to.0 + FOLDER_DAYS_AFTER_WINDOW)));
        let blobs = self.container.block_on(self.list(folders))?;
        let mut plan = Plan::default();
        let mut parquet = Vec::new();
        for meta in blobs {
            let name = meta.location.as_ref().to_string();
            let path = PathBuf::from(self.container.location.object_url(&name));
            let object = ObjectRef { location: meta.location.clone(), size: meta.size };
            match self.layout.format(&name) {
                None => {
                    plan.skipped_files.push(path);
                    continue;
                }
                Some(BlobFormat::Json) => {
                    plan.units.push(Unit::Json(JsonUnit { path: path.clone(), bytes: meta.size, object: Some(object) }))
                }
                Some(BlobFormat::Parquet) => parquet.push((path.clone(), object)),
            }
            plan.bytes += meta.size;
            plan.files.push(path);
        }
        let footers = self.container.block_on(self.footers(&parquet))?;
        for ((path, object), metadata) in parquet.into_iter().zip(footers) {
            let planned = plan_metadata(&path, Some(object), metadata, options)?;
            plan.row_groups_pruned += planned.row_groups_pruned;
            plan.rows_pruned += planned.rows_pruned;
            if !planned.missing_columns.is_empty() {
                plan.missing_columns.push((path.clone(), planned.missing_columns));
            }
            plan.units.extend(planned.units.into_iter().map(Unit::Parquet));
        }
        Ok(plan)
    }

    /// Every data blob under the prefix whose folders can hold events of `folders` (inclusive
    /// days), sorted by name.
    async fn list(&self, folders: Option<(Day, Day)>) -> Result<Vec<ObjectMeta>, SourceError> {
        let root = self.container.path("");
        let root = (!root.as_ref().is_empty()).then_some(root);
        let store = &self.container.store;
        let listing_failed = |prefix: &Option<Path>, e: object_store::Error| {
            self.failure(prefix.as_ref().map_or("", |p| p.as_ref()), &e)
        };
        let mut found = Vec::new();
        let Some(window) = folders else {
            // No window: every blob, in one recursive listing.
            found = store.list(root.as_ref()).try_collect().await.map_err(|e| listing_failed(&root, e))?;
            found.retain(|meta| is_data_below(meta, &root));
            found.sort_by(|a, b| a.location.cmp(&b.location));
            return Ok(found);
        };
        let mut waiting = vec![(root, Dated::default())];
        let mut listings = FuturesUnordered::new();
        loop {
            while listings.len() < LISTINGS_IN_FLIGHT {
                let Some((prefix, dated)) = waiting.pop() else { break };
                listings.push(async move {
                    let level = list_level(store.as_ref(), &prefix, dated, window).await;
                    level.map_err(|e| (prefix, e))
                });
            }
            match listings.next().await {
                None => break,
                Some(Ok((files, folders))) => {
                    found.extend(files);
                    waiting.extend(folders);
                }
                Some(Err((prefix, e))) => return Err(listing_failed(&prefix, e)),
            }
        }
        found.sort_by(|a, b| a.location.cmp(&b.location));
        Ok(found)
    }

    /// The footers of Parquet blobs, in order.
    async fn footers(&self, blobs: &[(PathBuf, ObjectRef)]) -> Result<Vec<ArrowReaderMetadata>, SourceError> {
        let fetches = blobs.iter().map(|(path, object)| async move { self.footer(path, object).await });
        futures_util::stream::iter(fetches).buffered(FOOTERS_IN_FLIGHT).try_collect().await
    }

    /// Reads a footer with one ranged GET of the blob's tail, a second only when the metadata
    /// is larger than the guess.
    async fn footer(&self, path: &std::path::Path, object: &ObjectRef) -> Result<ArrowReaderMetadata, SourceError> {
        let not_parquet = |message: String| SourceError::Parquet { path: path.to_path_buf(), message };
        let name = object.location.as_ref();
        if object.size == 0 {
            return Err(not_parquet("the blob is empty (0 bytes)".into()));
        }
        if object.size < 12 {
            return Err(not_parquet(format!("{} bytes is too short for a Parquet file", object.size)));
        }
        let store = &self.container.store;
        // Blob Storage has no suffix ranges (`bytes=-N`); the listing gave the size.
        let tail = store.get_range(&object.location, object.size.saturating_sub(FOOTER_GUESS)..object.size);
        let tail = tail.await.map_err(|e| self.failure(name, &e))?;
        self.bytes_fetched.fetch_add(tail.len() as u64, Ordering::Relaxed);
        let footer = &tail[tail.len().saturating_sub(8)..];
        if footer.len() != 8 || &footer[4..] != b"PAR1" {
            return Err(not_parquet("the blob does not end with the Parquet magic bytes `PAR1`".into()));
        }
        let metadata_length = u64::from(u32::from_le_bytes([footer[0], footer[1], footer[2], footer[3]]));
        let needed = metadata_length + 8;
        if needed > object.size {
            return Err(not_parquet(format!(
                "the footer claims {metadata_length} bytes of metadata in a {}-byte blob",
                object.size
            )));
        }
        let tail = if needed <= tail.len() as u64 {
            tail
        } else {
            let range = object.size - needed..object.size;
            let whole = store.get_range(&object.location, range).await.map_err(|e| self.failure(name, &e))?;
            self.bytes_fetched.fetch_add(whole.len() as u64, Ordering::Relaxed);
            whole
        };
        let chunks = ColumnChunks::from_fetched(object.size, vec![(object.size - tail.len() as u64, tail)]);
        ArrowReaderMetadata::load(&chunks, ArrowReaderOptions::new()).map_err(|e| not_parquet(e.to_string()))
    }

    /// Fetches the units on the I/O runtime, a few ahead, and yields them as they arrive. The
    /// iterator blocks while the next unit is in flight; call it from rayon (via `par_bridge`),
    /// never from the runtime. Dropping it stops the fetching.
    pub fn fetch(
        &self,
        units: Vec<Unit>,
        options: &ScanOptions,
    ) -> impl Iterator<Item = Result<(Unit, Fetched), SourceError>> + Send + use<> {
        let (sender, mut receiver) = tokio::sync::mpsc::channel(UNITS_WAITING);
        let context = FetchContext {
            store: self.container.store.clone(),
            location: self.container.location.clone(),
            identity: self.identity.clone(),
            bytes_fetched: self.bytes_fetched.clone(),
            runtime: self.container.runtime.clone(),
        };
        let options = options.clone();
        let expected = units.len();
        let url = self.url();
        self.container.runtime.spawn(async move {
            let fetches = units.into_iter().map(|unit| {
                let context = &context;
                let options = &options;
                async move { context.fetch(&unit, options).await.map(|fetched| (unit, fetched)) }
            });
            let mut fetched = futures_util::stream::iter(fetches).buffer_unordered(FETCHES_IN_FLIGHT);
            while let Some(item) = fetched.next().await {
                let failed = item.is_err();
                // A closed channel means the scan stopped (an error elsewhere); so does ours.
                if sender.send(item).await.is_err() || failed {
                    break;
                }
            }
        });
        let (mut delivered, mut failed) = (0, false);
        std::iter::from_fn(move || match receiver.blocking_recv() {
            Some(item) => {
                delivered += 1;
                failed |= item.is_err();
                Some(item)
            }
            // A fetch task that ended without sending every unit (it panicked) must not look
            // like a source with fewer blobs. One that sent its error stopped there: that error
            // is the one to report, not this (the workers race to report theirs).
            None if delivered < expected && !failed => {
                let message = format!("the fetching stopped after {delivered} of {expected} units");
                delivered = expected;
                Some(Err(SourceError::Blob { url: url.clone(), message }))
            }
            None => None,
        })
    }
}

/// Whether a listed name is data: hidden files and writer markers (`_SUCCESS`) are not.
fn is_data_name(name: &str) -> bool {
    !name.is_empty() && !name.starts_with('.') && !name.starts_with('_')
}

/// Whether a blob found by a recursive listing under `prefix` is data: no part of its name
/// below the prefix is hidden or a marker (`_delta_log/…`, `.spark-staging/…`).
fn is_data_below(meta: &ObjectMeta, prefix: &Option<Path>) -> bool {
    match prefix {
        None => meta.location.parts().all(|part| is_data_name(part.as_ref())),
        Some(prefix) => {
            meta.location.prefix_match(prefix).is_some_and(|mut below| below.all(|part| is_data_name(part.as_ref())))
        }
    }
}

/// What the folders walked so far say about the date of everything below them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Dated {
    year: Option<i32>,
    month: Option<u32>,
    day: Option<Day>,
}

/// Reads a folder name in the context of the folders above it. `None`: it says nothing about
/// the date (`tenantId=…`, `h=13`, `subscriptions`).
fn date_folder(name: &str, above: Dated) -> Option<Dated> {
    let (key, value) = name.split_once('=')?;
    let key = key.to_ascii_lowercase();
    // `day=2026-12-01`, `date=…`, `timestamp=2026-12-01T13`: a whole date in the value.
    if value.len() >= 10 {
        if let Some(day) = Day::parse(&value[..10]) {
            return Some(Dated { year: Some(day.ymd().0), month: Some(day.ymd().1), day: Some(day) });
        }
    }
    if value.is_empty() || value.len() > 4 || !value.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let number: u32 = value.parse().ok()?;
    match (key.as_str(), above) {
        ("y" | "year", Dated { year: None, .. }) if value.len() == 4 => {
            Some(Dated { year: Some(number as i32), ..above })
        }
        // `m=` twice in the Defender layout: after `y=` it is the month, after `d=` the minute.
        ("m" | "month", Dated { year: Some(_), month: None, .. }) => Some(Dated { month: Some(number), ..above }),
        ("d" | "day", Dated { year: Some(year), month: Some(month), day: None }) => {
            Some(Dated { day: Some(Day::from_ymd(year, month, number)?), ..above })
        }
        _ => None,
    }
}

/// Whether anything under a folder dated `dated` can fall in `window`.
fn overlaps(dated: Dated, (from, to): (Day, Day)) -> bool {
    let (first, last) = match dated {
        Dated { day: Some(day), .. } => (day, day),
        Dated { year: Some(year), month: Some(month), .. } => {
            let Some(first) = Day::from_ymd(year, month, 1) else { return false };
            let next = if month == 12 { Day::from_ymd(year + 1, 1, 1) } else { Day::from_ymd(year, month + 1, 1) };
            (first, next.map_or(first, |n| n.prev()))
        }
        Dated { year: Some(year), .. } => match (Day::from_ymd(year, 1, 1), Day::from_ymd(year, 12, 31)) {
            (Some(first), Some(last)) => (first, last),
            _ => return false,
        },
        _ => return true,
    };
    first <= to && last >= from
}

/// Lists one folder: its data blobs, and the subfolders to walk next (with what they say about
/// the date). Below a dated day everything is listed at once.
async fn list_level(
    store: &dyn ObjectStore,
    prefix: &Option<Path>,
    dated: Dated,
    window: (Day, Day),
) -> Result<(Vec<ObjectMeta>, Vec<(Option<Path>, Dated)>), object_store::Error> {
    if dated.day.is_some() {
        let mut files: Vec<ObjectMeta> = store.list(prefix.as_ref()).try_collect().await?;
        files.retain(|meta| is_data_below(meta, prefix));
        return Ok((files, Vec::new()));
    }
    let listing = store.list_with_delimiter(prefix.as_ref()).await?;
    let files =
        listing.objects.into_iter().filter(|meta| is_data_name(meta.location.filename().unwrap_or(""))).collect();
    let mut folders = Vec::new();
    for folder in listing.common_prefixes {
        let name = folder.filename().unwrap_or("").to_string();
        if name.starts_with('.') || name.starts_with('_') {
            continue;
        }
        let below = date_folder(&name, dated).unwrap_or(dated);
        if below == dated || overlaps(below, window) {
            folders.push((Some(folder), below));
        }
    }
    Ok((files, folders))
}

/// What the fetching task needs, owned so it can outlive the call that started it.
struct FetchContext {
    store: Arc<dyn ObjectStore>,
    location: BlobLocation,
    identity: Identity,
    bytes_fetched: Arc<AtomicU64>,
    runtime: tokio::runtime::Handle,
}

impl FetchContext {
    fn failure(&self, path: &std::path::Path, error: &object_store::Error) -> SourceError {
        SourceError::Blob {
            url: path.display().to_string(),
            message: explain(error, &self.location, &self.identity, READ_ROLE),
        }
    }

    async fn fetch(&self, unit: &Unit, options: &ScanOptions) -> Result<Fetched, SourceError> {
        match unit {
            Unit::Parquet(parquet) => {
                let object = parquet.object.as_ref().expect("blob units name their blob");
                let mut fetches = Vec::new();
                for (start, length) in merge_adjacent(parquet.chunk_ranges(options)) {
                    let end = start.checked_add(length).filter(|&end| end <= object.size).ok_or_else(|| {
                        SourceError::Parquet {
                            path: parquet.path.clone(),
                            message: format!(
                                "a column chunk ({start}+{length}) lies beyond the end of the blob ({} bytes)",
                                object.size
                            ),
                        }
                    })?;
                    fetches.push(async move {
                        let bytes = self.store.get_range(&object.location, start..end).await;
                        bytes.map(|bytes| (start, bytes)).map_err(|e| self.failure(&parquet.path, &e))
                    });
                }
                let chunks: Vec<(u64, Bytes)> = futures_util::future::try_join_all(fetches).await?;
                let fetched: u64 = chunks.iter().map(|(_, b)| b.len() as u64).sum();
                self.bytes_fetched.fetch_add(fetched, Ordering::Relaxed);
                Ok(Fetched::Chunks(ColumnChunks::from_fetched(object.size, chunks)))
            }
            Unit::Json(json) => {
                let object = json.object.as_ref().expect("blob units name their blob");
                let result = self.store.get(&object.location).await.map_err(|e| self.failure(&json.path, &e))?;
                let (sender, receiver) = tokio::sync::mpsc::channel(STREAM_CHUNKS);
                let mut stream = result.into_stream();
                let (location, identity, counter) =
                    (self.location.clone(), self.identity.clone(), self.bytes_fetched.clone());
                self.runtime.spawn(async move {
                    while let Some(chunk) = stream.next().await {
                        let chunk =
                            chunk.map_err(|e| std::io::Error::other(explain(&e, &location, &identity, READ_ROLE)));
                        if let Ok(bytes) = &chunk {
                            counter.fetch_add(bytes.len() as u64, Ordering::Relaxed);
                        }
                        let failed = chunk.is_err();
                        if sender.send(chunk).await.is_err() || failed {
                            break;
                        }
                    }
                });
                Ok(Fetched::Stream(Box::new(ChannelReader { receiver, current: Bytes::new() })))
            }
            Unit::Csv(csv) => Err(SourceError::Format {
                path: csv.path.clone(),
                message: "CSV exports are read from local files only".into(),
            }),
        }
    }
}

/// Joins ranges that touch (one ends where the next starts) so adjacent column chunks come in
/// one GET. Ranges with a gap stay apart: a gap is a column the scan does not read.
fn merge_adjacent(mut ranges: Vec<(u64, u64)>) -> Vec<(u64, u64)> {
    ranges.sort_unstable();
    let mut merged: Vec<(u64, u64)> = Vec::with_capacity(ranges.len());
    for (start, length) in ranges {
        match merged.last_mut() {
            Some((s, l)) if *s + *l == start => *l += length,
            _ => merged.push((start, length)),
        }
    }
    merged
}

/// A blocking reader over a stream's chunks, fed by the I/O runtime.
struct ChannelReader {
    receiver: tokio::sync::mpsc::Receiver<std::io::Result<Bytes>>,
    current: Bytes,
}

impl Read for ChannelReader {
    fn read(&mut self, buffer: &mut [u8]) -> std::io::Result<usize> {
        while self.current.is_empty() {
            match self.receiver.blocking_recv() {
                Some(Ok(bytes)) => self.current = bytes,
                Some(Err(e)) => return Err(e),
                None => return Ok(0),
            }
        }
        let n = buffer.len().min(self.current.len());
        buffer[..n].copy_from_slice(&self.current.split_to(n));
        Ok(n)
    }
}

impl Unit {
    /// Scans a unit whose bytes a [`BlobReader`] fetched.
    pub fn scan_fetched(
        &self,
        fetched: Fetched,
        options: &ScanOptions,
        sink: &mut dyn FnMut(RecordBatch),
    ) -> Result<ScanStats, SourceError> {
        match (self, fetched) {
            (Unit::Parquet(unit), Fetched::Chunks(chunks)) => unit.scan_chunks(chunks, options, sink),
            (Unit::Json(unit), Fetched::Stream(stream)) => {
                let lines =
                    maybe_gunzip(stream, &options.limits).map_err(|source| SourceError::io(&unit.path, source))?;
                unit.scan_reader(lines, options, sink)
            }
            (unit, _) => Err(SourceError::Format {
                path: match unit {
                    Unit::Parquet(u) => u.path.clone(),
                    Unit::Json(u) => u.path.clone(),
                    Unit::Csv(u) => u.path.clone(),
                },
                message: "fetched bytes do not match the unit's format".into(),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::BufRead;

    use super::*;

    fn day(text: &str) -> Day {
        Day::parse(text).unwrap()
    }

    #[test]
    fn folder_names_date_what_is_below_them() {
        let none = Dated::default();
        let y = date_folder("y=2026", none).unwrap();
        assert_eq!(y, Dated { year: Some(2026), month: None, day: None });
        let m = date_folder("m=12", y).unwrap();
        let d = date_folder("d=01", m).unwrap();
        assert_eq!(d.day, Some(day("2026-12-01")));
        // the second `m=` (minutes, after the day) and `h=` say nothing more
        assert_eq!(date_folder("h=13", d), None);
        assert_eq!(date_folder("m=00", d), None);
        assert_eq!(date_folder("day=2026-11-30", none).unwrap().day, Some(day("2026-11-30")));
        assert_eq!(date_folder("timestamp=2026-11-30T13", none).unwrap().day, Some(day("2026-11-30")));
        assert_eq!(date_folder("year=2025", none).unwrap().year, Some(2025));
        for other in ["tenantId=4b8c18bd-0000", "WorkspaceResourceId=", "subscriptions", "d=01", "m=13x", "y=26"] {
            assert_eq!(date_folder(other, none), None, "{other}");
        }
        // an impossible date is not a date folder at all
        assert_eq!(date_folder("d=31", Dated { year: Some(2026), month: Some(2), day: None }), None);
    }

    #[test]
    fn only_folders_that_can_hold_the_window_are_walked() {
        let window = (day("2026-11-30"), day("2026-12-02"));
        let dated = |y, m, d: Option<&str>| Dated { year: Some(y), month: m, day: d.map(day) };
        assert!(overlaps(dated(2026, None, None), window));
        assert!(!overlaps(dated(2025, None, None), window));
        assert!(overlaps(dated(2026, Some(11), None), window));
        assert!(overlaps(dated(2026, Some(12), None), window));
        assert!(!overlaps(dated(2026, Some(10), None), window));
        assert!(overlaps(dated(2026, Some(12), Some("2026-12-02")), window));
        assert!(!overlaps(dated(2026, Some(12), Some("2026-12-03")), window));
        assert!(!overlaps(dated(2026, Some(11), Some("2026-11-29")), window));
        assert!(overlaps(Dated::default(), window));
    }

    #[test]
    fn layouts_decide_what_is_data() {
        assert_eq!(BlobLayout::Auto.format("a/b/part-0.parquet"), Some(BlobFormat::Parquet));
        assert_eq!(BlobLayout::Auto.format("x/PT1H.json"), Some(BlobFormat::Json));
        assert_eq!(BlobLayout::Auto.format("x/events.jsonl.gz"), Some(BlobFormat::Json));
        assert_eq!(BlobLayout::Auto.format("x/readme.txt"), None);
        assert_eq!(BlobLayout::Parquet.format("x/part-00000-c000"), Some(BlobFormat::Parquet));
        assert_eq!(BlobLayout::DefenderStreaming.format("h=13/m=00/PT1H.json"), Some(BlobFormat::Json));
        assert_eq!(BlobLayout::LogAnalyticsExport.format("m=05/PT05M_1.json"), Some(BlobFormat::Json));
        assert_eq!(BlobLayout::LogAnalyticsExport.format("m=05/x.parquet"), None);
        for layout in
            [BlobLayout::Auto, BlobLayout::Parquet, BlobLayout::DefenderStreaming, BlobLayout::LogAnalyticsExport]
        {
            assert_eq!(BlobLayout::parse(layout.as_str()), Some(layout));
        }
        assert!(is_data_name("PT1H.json") && !is_data_name("_SUCCESS") && !is_data_name(".part-0.crc"));
        let meta = |name: &str| ObjectMeta {
            location: Path::from(name),
            last_modified: Default::default(),
            size: 1,
            e_tag: None,
            version: None,
        };
        let day = Some(Path::from("_exports/day=2026-12-01"));
        assert!(
            is_data_below(&meta("_exports/day=2026-12-01/part-0.parquet"), &day),
            "the prefix itself may be hidden"
        );
        assert!(!is_data_below(&meta("_exports/day=2026-12-01/_delta_log/0.json"), &day));
        assert!(!is_data_below(&meta("t/.spark-staging/part-0.parquet"), &None));
        assert!(is_data_below(&meta("t/day=1/part-0.parquet"), &None));
    }

    #[test]
    fn only_touching_ranges_are_merged() {
        assert_eq!(merge_adjacent(vec![(100, 50), (0, 100), (200, 10), (150, 5)]), vec![(0, 155), (200, 10)]);
        assert_eq!(merge_adjacent(Vec::new()), Vec::<(u64, u64)>::new());
    }

    #[test]
    fn a_channel_reader_yields_the_stream_then_its_error() {
        let (sender, receiver) = tokio::sync::mpsc::channel(4);
        sender.try_send(Ok(Bytes::from_static(b"line 1\nli"))).unwrap();
        sender.try_send(Ok(Bytes::from_static(b"ne 2\n"))).unwrap();
        sender.try_send(Err(std::io::Error::other("connection reset by http://127.0.0.1:1"))).unwrap();
        drop(sender);
        let mut reader = std::io::BufReader::new(ChannelReader { receiver, current: Bytes::new() });
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        assert_eq!(line, "line 1\n");
        line.clear();
        reader.read_line(&mut line).unwrap();
        assert_eq!(line, "line 2\n");
        let err = reader.read_line(&mut line).unwrap_err();
        assert!(err.to_string().contains("127.0.0.1:1"), "{err}");
    }
}

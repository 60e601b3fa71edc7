//! The outbox: every batch meant for Sentinel, kept in the results store until Sentinel has
//! acknowledged it (HTTP 204). A batch is written here *before* it is sent and deleted only
//! after the 204, so a run that dies, or a Sentinel that refuses, loses nothing: whatever is
//! left is sent first by the next run.
//!
//! One object per batch, `_outbox/<RunId>/<Table>-<n>.json.gz`, holding the exact gzip body to
//! send. Objects are written whole (the store's `put`), so there is no manifest to keep in step.
//! A batch split after a 413 becomes `<Table>-<n>-0` and `<Table>-<n>-1`, written before the
//! original is deleted.

use std::sync::Arc;

use bytes::Bytes;

use crate::sink::store::{Store, StoreError};

pub const ROOT: &str = "_outbox/";
const SUFFIX: &str = ".json.gz";

/// One batch waiting for Sentinel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Item {
    pub path: String,
    /// The result table the batch belongs to (its stream comes from the settings).
    pub table: String,
    /// The run that produced it.
    pub run_id: String,
}

impl Item {
    fn parse(path: &str) -> Option<Item> {
        let rest = path.strip_prefix(ROOT)?;
        let (run_id, file) = rest.split_once('/')?;
        let stem = file.strip_suffix(SUFFIX)?;
        let table = stem.split('-').next().filter(|t| !t.is_empty())?;
        Some(Item { path: path.to_string(), table: table.to_string(), run_id: run_id.to_string() })
    }

    /// The two halves of this batch after a 413.
    pub fn halves(&self) -> (Item, Item) {
        let stem = self.path.strip_suffix(SUFFIX).unwrap_or(&self.path);
        let half = |n: u8| Item { path: format!("{stem}-{n}{SUFFIX}"), ..self.clone() };
        (half(0), half(1))
    }
}

#[derive(Debug, Clone)]
pub struct Outbox {
    store: Arc<dyn Store>,
}

impl Outbox {
    pub fn new(store: Arc<dyn Store>) -> Outbox {
        Outbox { store }
    }

    pub fn item(run_id: &str, table: &str, n: usize) -> Item {
        Item { path: format!("{ROOT}{run_id}/{table}-{n:05}{SUFFIX}"), table: table.into(), run_id: run_id.into() }
    }

    /// Every batch waiting, oldest run first (run ids sort by start time).
    pub fn pending(&self) -> Result<Vec<Item>, StoreError> {
        let mut items: Vec<Item> = self.store.list(ROOT)?.iter().filter_map(|p| Item::parse(p)).collect();
        items.sort_by(|a, b| a.path.cmp(&b.path));
        Ok(items)
    }

    pub fn put(&self, item: &Item, gzip: Bytes) -> Result<(), StoreError> {
        self.store.put(&item.path, gzip)
    }

    pub fn get(&self, item: &Item) -> Result<Option<Bytes>, StoreError> {
        self.store.get(&item.path)
    }

    pub fn remove(&self, item: &Item) -> Result<(), StoreError> {
        self.store.delete(&item.path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sink::local::LocalDir;

    #[test]
    fn items_round_trip_through_their_paths_in_run_order() {
        let dir = tempfile::tempdir().unwrap();
        let outbox = Outbox::new(Arc::new(LocalDir::new(dir.path())));
        let late = Outbox::item("20261203T010000Z-bbbbbb", "MdeTelemetryHosts", 0);
        let early = Outbox::item("20261202T010000Z-aaaaaa", "MdeTelemetryDaily", 12);
        assert_eq!(early.path, "_outbox/20261202T010000Z-aaaaaa/MdeTelemetryDaily-00012.json.gz");
        outbox.put(&late, Bytes::from_static(b"2")).unwrap();
        outbox.put(&early, Bytes::from_static(b"1")).unwrap();
        let (a, b) = early.halves();
        assert_eq!(a.path, "_outbox/20261202T010000Z-aaaaaa/MdeTelemetryDaily-00012-0.json.gz");
        assert_eq!(b.table, "MdeTelemetryDaily");
        outbox.put(&b, Bytes::from_static(b"1b")).unwrap();
        // oldest run first; within a run, by path
        assert_eq!(outbox.pending().unwrap(), vec![b.clone(), early.clone(), late.clone()]);
        assert_eq!(outbox.get(&late).unwrap().unwrap(), Bytes::from_static(b"2"));
        outbox.remove(&early).unwrap();
        outbox.remove(&b).unwrap();
        assert_eq!(outbox.pending().unwrap(), vec![late]);
        assert_eq!(Item::parse("_outbox/x.json.gz"), None);
        assert_eq!(Item::parse("_outbox/r/notes.txt"), None);
    }
}

//! How a run's objects become visible together, on any [`Store`]:
//!
//! 1. every object of the run is written under `_staging/<RunId>/<path>`, where no reader looks;
//! 2. the commit record `_commits/<RunId>.json` (the list of paths) is written: the commit
//!    point, one all-or-nothing put;
//! 3. each staged object is moved to `<path>`; then the record is deleted.
//!
//! A run killed before 2 leaves only staged objects, which the next run discards; killed during
//! 3, it leaves a record, and the next run finishes the moves (roll forward). While a record
//! exists, readers ([`resolve`]) take its objects from staging, so a reader sees each table-day
//! whole: the old committed version or the new one.

use bytes::Bytes;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use super::store::{Store, StoreError};

pub const STAGING: &str = "_staging/";
pub const COMMITS: &str = "_commits/";

/// `_staging/<RunId>/`
pub fn staging_prefix(run_id: &str) -> String {
    format!("{STAGING}{run_id}/")
}

fn record_path(run_id: &str) -> String {
    format!("{COMMITS}{run_id}.json")
}

/// The commit point of a run: which objects it publishes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommitRecord {
    pub run_id: String,
    /// Microseconds since the epoch.
    pub committed_at: i64,
    /// Final paths; each is staged at `_staging/<RunId>/<path>` until moved.
    pub objects: Vec<String>,
}

impl CommitRecord {
    pub fn staged(&self, object: &str) -> String {
        format!("{}{object}", staging_prefix(&self.run_id))
    }
}

/// What the start of a run found left over by earlier runs.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Recovery {
    /// Committed runs whose moves this run finished.
    pub rolled_forward: Vec<String>,
    /// Uncommitted runs whose staged objects were deleted.
    pub discarded: Vec<String>,
}

/// Publishes the objects staged by `run_id`; returns how many.
pub fn commit(store: &dyn Store, run_id: &str, committed_at: i64) -> Result<usize, StoreError> {
    let prefix = staging_prefix(run_id);
    let objects: Vec<String> = store.list(&prefix)?.into_iter().map(|p| p[prefix.len()..].to_string()).collect();
    let record = CommitRecord { run_id: run_id.to_string(), committed_at, objects };
    let json = serde_json::to_vec_pretty(&record).expect("a commit record serialises");
    store.put(&record_path(run_id), Bytes::from(json))?;
    finish(store, &record)?;
    Ok(record.objects.len())
}

/// Moves a committed run's objects into place, then deletes its record. Idempotent: an object
/// already moved is skipped, so an interrupted finish is simply run again.
fn finish(store: &dyn Store, record: &CommitRecord) -> Result<(), StoreError> {
    record.objects.par_iter().try_for_each(|object| store.rename(&record.staged(object), object).map(|_| ()))?;
    store.delete(&record_path(&record.run_id))
}

/// Deletes what `run_id` staged; the run never becomes visible.
pub fn discard(store: &dyn Store, run_id: &str) -> Result<usize, StoreError> {
    let staged = store.list(&staging_prefix(run_id))?;
    staged.par_iter().try_for_each(|path| store.delete(path))?;
    Ok(staged.len())
}

/// The commit records present, oldest run first (run ids sort by start time).
pub fn pending(store: &dyn Store) -> Result<Vec<CommitRecord>, StoreError> {
    let mut records = Vec::new();
    for path in store.list(COMMITS)? {
        let Some(bytes) = store.get(&path)? else { continue };
        let record: CommitRecord = serde_json::from_slice(&bytes).map_err(|e| StoreError {
            operation: "read",
            location: store.location(),
            path: path.clone(),
            message: format!(
                "not a commit record ({e}); if no run is active, move it away and re-run the days it names"
            ),
        })?;
        records.push(record);
    }
    records.sort_by(|a, b| a.run_id.cmp(&b.run_id));
    Ok(records)
}

/// Run at the start of a run, holding the store's lock: finishes every committed run and
/// discards every uncommitted one except `current_run`.
pub fn recover(store: &dyn Store, current_run: &str) -> Result<Recovery, StoreError> {
    let mut recovery = Recovery::default();
    let records = pending(store)?;
    for record in &records {
        finish(store, record)?;
        recovery.rolled_forward.push(record.run_id.clone());
    }
    let mut runs: Vec<String> = store
        .list(STAGING)?
        .iter()
        .filter_map(|path| path[STAGING.len()..].split('/').next().map(str::to_string))
        .collect();
    runs.dedup();
    for run in runs.into_iter().filter(|run| run != current_run) {
        discard(store, &run)?;
        recovery.discarded.push(run);
    }
    Ok(recovery)
}

/// Where a reader finds the current committed version of `path`: staged by a pending commit
/// (newest first), or `path` itself.
pub fn resolve(store: &dyn Store, records: &[CommitRecord], path: &str) -> Result<Option<Bytes>, StoreError> {
    for record in records.iter().rev().filter(|r| r.objects.iter().any(|o| o == path)) {
        if let Some(bytes) = store.get(&record.staged(path))? {
            return Ok(Some(bytes));
        }
    }
    store.get(path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sink::local::LocalDir;

    fn put(store: &dyn Store, path: &str, text: &str) {
        store.put(path, Bytes::from(text.to_string())).unwrap();
    }

    fn text(store: &dyn Store, records: &[CommitRecord], path: &str) -> Option<String> {
        resolve(store, records, path).unwrap().map(|b| String::from_utf8(b.to_vec()).unwrap())
    }

    #[test]
    fn a_commit_publishes_every_staged_object_and_leaves_nothing_behind() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalDir::new(dir.path());
        put(&store, "T/day=2026-12-01/part-0.jsonl", "old");
        put(&store, "_staging/r1/T/day=2026-12-01/part-0.jsonl", "new");
        put(&store, "_staging/r1/U/day=2026-12-01/part-0.jsonl", "u");
        assert_eq!(text(&store, &[], "T/day=2026-12-01/part-0.jsonl").as_deref(), Some("old"), "staged is invisible");
        assert_eq!(commit(&store, "r1", 1).unwrap(), 2);
        assert_eq!(store.list("").unwrap(), ["T/day=2026-12-01/part-0.jsonl", "U/day=2026-12-01/part-0.jsonl"]);
        assert_eq!(text(&store, &[], "T/day=2026-12-01/part-0.jsonl").as_deref(), Some("new"));
        let mut left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        left.sort();
        assert_eq!(left, ["T", "U"], "no staging or commit folders remain");
    }

    #[test]
    fn recovery_rolls_committed_runs_forward_and_discards_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalDir::new(dir.path());
        // r1 committed and was killed after moving one of its two objects
        put(&store, "T/day=2026-12-01/part-0.jsonl", "r0");
        put(&store, "T/day=2026-12-02/part-0.jsonl", "r1");
        put(&store, "_staging/r1/T/day=2026-12-01/part-0.jsonl", "r1");
        let record = CommitRecord {
            run_id: "r1".into(),
            committed_at: 5,
            objects: vec!["T/day=2026-12-01/part-0.jsonl".into(), "T/day=2026-12-02/part-0.jsonl".into()],
        };
        put(&store, "_commits/r1.json", &serde_json::to_string(&record).unwrap());
        // r2 was killed while staging; r3 is the run now starting
        put(&store, "_staging/r2/T/day=2026-12-01/part-0.jsonl", "r2");
        put(&store, "_staging/r3/T/day=2026-12-03/part-0.jsonl", "r3");

        // readers already see r1 whole
        let records = pending(&store).unwrap();
        assert_eq!(records, vec![record]);
        assert_eq!(text(&store, &records, "T/day=2026-12-01/part-0.jsonl").as_deref(), Some("r1"));
        assert_eq!(text(&store, &records, "T/day=2026-12-02/part-0.jsonl").as_deref(), Some("r1"));

        let recovery = recover(&store, "r3").unwrap();
        assert_eq!(recovery, Recovery { rolled_forward: vec!["r1".into()], discarded: vec!["r2".into()] });
        assert_eq!(
            store.list("").unwrap(),
            [
                "T/day=2026-12-01/part-0.jsonl",
                "T/day=2026-12-02/part-0.jsonl",
                "_staging/r3/T/day=2026-12-03/part-0.jsonl"
            ]
        );
        assert_eq!(text(&store, &[], "T/day=2026-12-01/part-0.jsonl").as_deref(), Some("r1"));
        // a second recovery finds nothing to do
        assert_eq!(recover(&store, "r3").unwrap(), Recovery::default());
        assert_eq!(discard(&store, "r3").unwrap(), 1);
        assert_eq!(store.list("").unwrap().len(), 2);
    }
}

//! The results store on a local disk. Each object is written under a temporary name and renamed
//! into place, so a reader sees the old file or the new one, never half of one.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use bytes::Bytes;

use super::store::{Store, StoreError};

#[derive(Debug, Clone)]
pub struct LocalDir {
    pub root: PathBuf,
}

impl LocalDir {
    pub fn new(root: impl Into<PathBuf>) -> LocalDir {
        LocalDir { root: root.into() }
    }

    /// The file of an object path. Paths come from this crate, never from input, but a `..` or
    /// an absolute component is refused anyway so no path can leave the root.
    fn file(&self, operation: &'static str, path: &str) -> Result<PathBuf, StoreError> {
        let safe = !path.is_empty()
            && path.split('/').all(|part| !part.is_empty() && part != "." && part != ".." && !part.contains('\\'));
        if !safe {
            return Err(self.error(operation, path, "not a relative object path".into()));
        }
        Ok(self.root.join(path))
    }

    fn error(&self, operation: &'static str, path: &str, message: String) -> StoreError {
        StoreError { operation, location: self.location(), path: path.to_string(), message }
    }

    fn walk(&self, dir: &Path, out: &mut Vec<String>) -> std::io::Result<()> {
        let entries = match fs::read_dir(dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e),
        };
        for entry in entries {
            let entry = entry?;
            let path = entry.path();
            if entry.file_type()?.is_dir() {
                self.walk(&path, out)?;
            } else if let Ok(relative) = path.strip_prefix(&self.root) {
                let name = entry.file_name();
                // Temporary files of writes in progress are not objects yet.
                if name.to_string_lossy().ends_with(".tmp") {
                    continue;
                }
                let parts: Vec<String> =
                    relative.components().map(|c| c.as_os_str().to_string_lossy().into_owned()).collect();
                out.push(parts.join("/"));
            }
        }
        Ok(())
    }
}

/// A name unique to this process and moment, so concurrent writers never share a temporary file.
fn temporary_suffix() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    format!("{}-{}", std::process::id(), COUNTER.fetch_add(1, Ordering::Relaxed))
}

impl Store for LocalDir {
    fn location(&self) -> String {
        format!("folder `{}`", self.root.display())
    }

    fn put(&self, path: &str, bytes: Bytes) -> Result<(), StoreError> {
        let file = self.file("write", path)?;
        let fail = |e: std::io::Error| self.error("write", path, e.to_string());
        if let Some(parent) = file.parent() {
            fs::create_dir_all(parent).map_err(fail)?;
        }
        let name = file.file_name().and_then(|n| n.to_str()).unwrap_or("object");
        let temporary = file.with_file_name(format!(".{name}.{}.tmp", temporary_suffix()));
        let written = fs::File::create(&temporary).and_then(|mut f| f.write_all(&bytes));
        // No fsync: the rename makes the file visible whole or not at all, which is what readers
        // need; a crash before the OS flushes only means the day is hunted again.
        if let Err(e) = written.and_then(|()| fs::rename(&temporary, &file)) {
            let _ = fs::remove_file(&temporary);
            return Err(fail(e));
        }
        Ok(())
    }

    fn put_if_absent(&self, path: &str, bytes: Bytes) -> Result<bool, StoreError> {
        let file = self.file("create", path)?;
        let fail = |e: std::io::Error| self.error("create", path, e.to_string());
        if let Some(parent) = file.parent() {
            fs::create_dir_all(parent).map_err(fail)?;
        }
        // Write the content aside, then hard-link it to the final name: the link fails if the
        // name exists, and a reader never sees the object half-written.
        let name = file.file_name().and_then(|n| n.to_str()).unwrap_or("object");
        let temporary = file.with_file_name(format!(".{name}.{}.tmp", temporary_suffix()));
        fs::File::create(&temporary).and_then(|mut f| f.write_all(&bytes)).map_err(fail)?;
        let linked = fs::hard_link(&temporary, &file);
        let _ = fs::remove_file(&temporary);
        match linked {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(false),
            Err(e) => Err(fail(e)),
        }
    }

    fn get(&self, path: &str) -> Result<Option<Bytes>, StoreError> {
        let file = self.file("read", path)?;
        match fs::read(&file) {
            Ok(bytes) => Ok(Some(Bytes::from(bytes))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(self.error("read", path, e.to_string())),
        }
    }

    fn list(&self, prefix: &str) -> Result<Vec<String>, StoreError> {
        // Walk only the deepest folder the prefix names, then filter by the whole prefix.
        let folder = prefix.rsplit_once('/').map_or("", |(folder, _)| folder);
        let start = if folder.is_empty() { self.root.clone() } else { self.file("list", folder)? };
        let mut out = Vec::new();
        self.walk(&start, &mut out).map_err(|e| self.error("list", prefix, e.to_string()))?;
        out.retain(|p| p.starts_with(prefix));
        out.sort();
        Ok(out)
    }

    fn delete(&self, path: &str) -> Result<(), StoreError> {
        let file = self.file("delete", path)?;
        match fs::remove_file(&file) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(self.error("delete", path, e.to_string())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn put_get_list_delete_and_create_once() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalDir::new(dir.path());
        store.put("T/day=2026-11-01/part-0.jsonl", Bytes::from_static(b"a")).unwrap();
        store.put("T/day=2026-11-02/part-0.jsonl", Bytes::from_static(b"b")).unwrap();
        store.put("T/day=2026-11-02/part-0.jsonl", Bytes::from_static(b"c")).unwrap();
        store.put("U/x", Bytes::from_static(b"u")).unwrap();
        assert_eq!(store.get("T/day=2026-11-02/part-0.jsonl").unwrap().unwrap(), Bytes::from_static(b"c"));
        assert_eq!(store.get("T/missing").unwrap(), None);
        assert_eq!(store.list("T/").unwrap(), ["T/day=2026-11-01/part-0.jsonl", "T/day=2026-11-02/part-0.jsonl"]);
        assert_eq!(store.list("T/day=2026-11-01").unwrap(), ["T/day=2026-11-01/part-0.jsonl"]);
        assert_eq!(store.list("").unwrap().len(), 3);
        assert_eq!(store.list("V/").unwrap(), Vec::<String>::new());

        assert!(store.put_if_absent("locks/run", Bytes::from_static(b"1")).unwrap());
        assert!(!store.put_if_absent("locks/run", Bytes::from_static(b"2")).unwrap());
        assert_eq!(store.get("locks/run").unwrap().unwrap(), Bytes::from_static(b"1"));
        store.delete("locks/run").unwrap();
        store.delete("locks/run").unwrap();
        assert!(store.put_if_absent("locks/run", Bytes::from_static(b"3")).unwrap());

        // no temporary file is left behind or listed
        let leftovers: Vec<_> = std::fs::read_dir(dir.path().join("T/day=2026-11-02"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(leftovers, ["part-0.jsonl"]);
    }

    #[test]
    fn paths_cannot_leave_the_root() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalDir::new(dir.path());
        for bad in ["../x", "a/../../x", "/etc/passwd", "", "a//b", "a\\..\\b"] {
            let err = store.put(bad, Bytes::new()).unwrap_err();
            assert!(err.to_string().contains("not a relative object path"), "{bad}: {err}");
        }
    }
}

//! The results store on a local disk. Each object is written under a temporary name and renamed
//! into place, so a reader sees the old file or the new one, never half of one.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use bytes::Bytes;

use super::store::{Store, StoreError, Tag};

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
                // Hidden names are this store's own: temporary files of writes in progress.
                if entry.file_name().to_string_lossy().starts_with('.') {
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

/// A digest of an object's content: its version for [`Store::replace_if`]. Content is versioned
/// rather than the file, because every writer here replaces whole files under new inodes.
fn content_tag(bytes: &[u8]) -> Tag {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    bytes.hash(&mut hasher);
    Tag(format!("{:016x}-{}", hasher.finish(), bytes.len()))
}

/// Removes the empty folders an object lived in, up to (not including) the root, so a folder of
/// staged objects disappears with its last object.
fn remove_empty_parents(root: &Path, file: &Path) {
    let mut dir = file.parent();
    while let Some(current) = dir {
        if current == root || !current.starts_with(root) || fs::remove_dir(current).is_err() {
            break;
        }
        dir = current.parent();
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

    fn locate(&self, path: &str) -> String {
        self.root.join(path).display().to_string()
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
            Ok(()) => {
                remove_empty_parents(&self.root, &file);
                Ok(())
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(self.error("delete", path, e.to_string())),
        }
    }

    fn get_tagged(&self, path: &str) -> Result<Option<(Bytes, Tag)>, StoreError> {
        Ok(self.get(path)?.map(|bytes| {
            let tag = content_tag(&bytes);
            (bytes, tag)
        }))
    }

    fn replace_if(&self, path: &str, bytes: Bytes, tag: &Tag) -> Result<Option<Tag>, StoreError> {
        let file = self.file("replace", path)?;
        let fail = |e: std::io::Error| self.error("replace", path, e.to_string());
        // Compare and swap under an exclusive OS lock on the object's folder, so two replacers
        // never both see the old version; the OS drops the lock if the process dies. (A guard
        // file would be an object of its own, and deleting one races with its next user.)
        let folder = file.parent().unwrap_or(&self.root);
        let guard = match fs::File::open(folder) {
            Ok(guard) => guard,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(fail(e)),
        };
        guard.lock().map_err(fail)?;
        let current = match fs::read(&file) {
            Ok(current) => current,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(fail(e)),
        };
        if content_tag(&current) != *tag {
            return Ok(None);
        }
        let new_tag = content_tag(&bytes);
        self.put(path, bytes)?;
        Ok(Some(new_tag))
    }

    fn rename(&self, from: &str, to: &str) -> Result<bool, StoreError> {
        let source = self.file("move", from)?;
        let target = self.file("move", to)?;
        let fail = |e: std::io::Error| self.error("move", from, format!("to `{to}`: {e}"));
        if let Some(parent) = target.parent() {
            fs::create_dir_all(parent).map_err(fail)?;
        }
        match fs::rename(&source, &target) {
            Ok(()) => {
                remove_empty_parents(&self.root, &source);
                Ok(true)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(fail(e)),
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
    fn conditional_replace_and_rename() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalDir::new(dir.path());
        store.put("lock", Bytes::from_static(b"first")).unwrap();
        let (bytes, tag) = store.get_tagged("lock").unwrap().unwrap();
        assert_eq!(bytes, Bytes::from_static(b"first"));
        // two replacers holding the same tag: the first wins, the second sees the change
        let second = store.replace_if("lock", Bytes::from_static(b"second"), &tag).unwrap().unwrap();
        assert_eq!(store.replace_if("lock", Bytes::from_static(b"third"), &tag).unwrap(), None);
        assert_eq!(store.get_tagged("lock").unwrap().unwrap(), (Bytes::from_static(b"second"), second));
        store.delete("lock").unwrap();
        assert_eq!(store.replace_if("lock", Bytes::from_static(b"x"), &tag).unwrap(), None);
        assert_eq!(store.get("lock").unwrap(), None);
        assert_eq!(store.list("").unwrap(), Vec::<String>::new());
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0, "no guard or temporary file is left");

        store.put("_staging/run/T/day=2026-11-01/part-0.jsonl", Bytes::from_static(b"a")).unwrap();
        assert!(store.rename("_staging/run/T/day=2026-11-01/part-0.jsonl", "T/day=2026-11-01/part-0.jsonl").unwrap());
        assert!(!store.rename("_staging/run/T/day=2026-11-01/part-0.jsonl", "T/x").unwrap());
        assert_eq!(store.list("").unwrap(), ["T/day=2026-11-01/part-0.jsonl"]);
        assert!(!dir.path().join("_staging").exists(), "emptied folders are removed");
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

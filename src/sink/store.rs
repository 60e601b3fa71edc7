//! The results store as a flat namespace of objects named by `/`-separated paths, the shape both
//! a local folder and a blob container have. Everything above this trait (tables per day, the
//! run record, history, locks) is written once and works on either.

use std::fmt;

use bytes::Bytes;

/// A store operation that failed, naming the object and the store (never a credential).
#[derive(Debug, thiserror::Error)]
#[error("{operation} `{path}` in {location}: {message}")]
pub struct StoreError {
    pub operation: &'static str,
    pub location: String,
    pub path: String,
    pub message: String,
}

/// A version of an object, for a conditional replace: the ETag on Blob Storage, a digest of the
/// content on a local disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tag(pub String);

/// Objects by path. Implementations must make `put` all-or-nothing: a reader sees the old
/// bytes or the new ones, never a part.
pub trait Store: Send + Sync + fmt::Debug {
    /// Where the store is, for messages and the run record: a folder or a container URL.
    fn location(&self) -> String;

    /// Where one object is, for people: a file path or a blob URL.
    fn locate(&self, path: &str) -> String;

    /// Writes an object whole, replacing any object of that path.
    fn put(&self, path: &str, bytes: Bytes) -> Result<(), StoreError>;

    /// Creates an object only if none of that path exists; `false` when one already does.
    fn put_if_absent(&self, path: &str, bytes: Bytes) -> Result<bool, StoreError>;

    /// The object's bytes, or `None` when there is no such object.
    fn get(&self, path: &str) -> Result<Option<Bytes>, StoreError>;

    /// Every object path under `prefix` (which ends in `/` for a folder), sorted.
    fn list(&self, prefix: &str) -> Result<Vec<String>, StoreError>;

    /// Deletes an object; deleting a missing object is not an error.
    fn delete(&self, path: &str) -> Result<(), StoreError>;

    /// The object's bytes and its version, or `None` when there is no such object.
    fn get_tagged(&self, path: &str) -> Result<Option<(Bytes, Tag)>, StoreError>;

    /// Replaces an object only if it is still at version `tag`, returning the new version;
    /// `None` when it changed or disappeared since it was read. Of two callers holding the
    /// same tag, exactly one succeeds.
    fn replace_if(&self, path: &str, bytes: Bytes, tag: &Tag) -> Result<Option<Tag>, StoreError>;

    /// Moves an object to a new path (replacing what is there); `false` when `from` does not
    /// exist. A reader of `to` sees the old object or the moved one, never a part.
    fn rename(&self, from: &str, to: &str) -> Result<bool, StoreError> {
        let Some(bytes) = self.get(from)? else { return Ok(false) };
        self.put(to, bytes)?;
        self.delete(from)?;
        Ok(true)
    }
}

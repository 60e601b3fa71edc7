//! The results store in a blob container (and an optional folder in it). Every object is one
//! Put Blob, which Blob Storage makes visible whole or not at all; conditional requests
//! (`If-None-Match: *`, `If-Match: <etag>`) give `put_if_absent` and `replace_if`.

use bytes::Bytes;
use futures_util::TryStreamExt;
use object_store::path::Path;
use object_store::{ObjectStoreExt, PutMode, PutOptions, PutPayload, UpdateVersion};

use super::store::{Store, StoreError, Tag};
use crate::azure::storage::explain;
use crate::azure::{Container, Identity};

/// A results store in a blob container.
#[derive(Debug, Clone)]
pub struct BlobStore {
    container: Container,
    /// For messages: which identity needs which role.
    identity: Identity,
}

const WRITE_ROLE: &str = "Storage Blob Data Contributor";

impl BlobStore {
    pub fn new(container: Container, identity: Identity) -> BlobStore {
        BlobStore { container, identity }
    }

    fn error(&self, operation: &'static str, path: &str, error: object_store::Error) -> StoreError {
        StoreError {
            operation,
            location: self.location(),
            path: path.to_string(),
            message: explain(&error, &self.container.location, &self.identity, WRITE_ROLE),
        }
    }

    /// `Some(new ETag)` when written, `None` when the condition did not hold.
    fn conditional_put(
        &self,
        operation: &'static str,
        path: &str,
        bytes: Bytes,
        mode: PutMode,
    ) -> Result<Option<Tag>, StoreError> {
        let options = PutOptions { mode, ..Default::default() };
        let location = self.container.path(path);
        let put = self.container.store.put_opts(&location, PutPayload::from(bytes), options);
        match self.container.block_on(put) {
            Ok(result) => Ok(Some(Tag(result.e_tag.unwrap_or_default()))),
            Err(object_store::Error::AlreadyExists { .. } | object_store::Error::Precondition { .. }) => Ok(None),
            // If-Match on a blob that is gone: it changed, like any other version mismatch.
            Err(object_store::Error::NotFound { .. }) if operation == "replace" => Ok(None),
            Err(e) => Err(self.error(operation, path, e)),
        }
    }

    /// The object names (relative to the prefix) under the folder `folder` (empty: all).
    fn list_folder(&self, folder: &str) -> Result<Vec<String>, StoreError> {
        let root = self.container.path("");
        let skip = if root.as_ref().is_empty() { 0 } else { root.as_ref().len() + 1 };
        let prefix = if folder.is_empty() { root.clone() } else { self.container.path(folder) };
        let listing =
            self.container.store.list(Some(&prefix)).map_ok(|meta| meta.location.as_ref()[skip..].to_string());
        self.container.block_on(listing.try_collect()).map_err(|e| self.error("list", folder, e))
    }
}

impl Store for BlobStore {
    fn location(&self) -> String {
        format!("container `{}`", self.container.location.url())
    }

    fn locate(&self, path: &str) -> String {
        format!("{}/{path}", self.container.location.url().trim_end_matches('/'))
    }

    fn put(&self, path: &str, bytes: Bytes) -> Result<(), StoreError> {
        self.conditional_put("write", path, bytes, PutMode::Overwrite).map(|_| ())
    }

    fn put_if_absent(&self, path: &str, bytes: Bytes) -> Result<bool, StoreError> {
        self.conditional_put("create", path, bytes, PutMode::Create).map(|tag| tag.is_some())
    }

    fn get(&self, path: &str) -> Result<Option<Bytes>, StoreError> {
        Ok(self.get_tagged(path)?.map(|(bytes, _)| bytes))
    }

    fn list(&self, prefix: &str) -> Result<Vec<String>, StoreError> {
        // Blob listing is by folder; a prefix that ends inside a name (`T/day=`) lists its
        // folder and keeps the names that start with it, as the local store does.
        let folder = prefix.rsplit_once('/').map_or("", |(folder, _)| folder);
        let mut names = self.list_folder(folder)?;
        names.retain(|name| name.starts_with(prefix));
        names.sort();
        Ok(names)
    }

    fn delete(&self, path: &str) -> Result<(), StoreError> {
        match self.container.block_on(self.container.store.delete(&self.container.path(path))) {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(self.error("delete", path, e)),
        }
    }

    fn get_tagged(&self, path: &str) -> Result<Option<(Bytes, Tag)>, StoreError> {
        let location: Path = self.container.path(path);
        let read = async {
            let result = self.container.store.get(&location).await?;
            let tag = result.meta.e_tag.clone();
            Ok::<_, object_store::Error>((result.bytes().await?, tag))
        };
        match self.container.block_on(read) {
            Ok((bytes, Some(etag))) => Ok(Some((bytes, Tag(etag)))),
            Ok((_, None)) => Err(StoreError {
                operation: "read",
                location: self.location(),
                path: path.to_string(),
                message: "the storage service sent no ETag, so the object cannot be replaced conditionally".into(),
            }),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(self.error("read", path, e)),
        }
    }

    fn replace_if(&self, path: &str, bytes: Bytes, tag: &Tag) -> Result<Option<Tag>, StoreError> {
        let version = UpdateVersion { e_tag: Some(tag.0.clone()), version: None };
        self.conditional_put("replace", path, bytes, PutMode::Update(version))
    }
}

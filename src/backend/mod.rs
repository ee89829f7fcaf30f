//! Snapshot storage: one object-safe trait, a local-filesystem implementation and one
//! over `object_store`'s cloud stores (S3, Azure Blob, GCS).

pub(crate) mod azure;
pub(crate) mod cloud;
mod cloud_http;
mod cloud_sink;
pub(crate) mod diagnosis;
pub(crate) mod encryption;
pub(crate) mod gcs;
pub(crate) mod key;
pub(crate) mod local;
pub(crate) mod metered;
pub(crate) mod s3;
pub(crate) mod s3_uploads;

use std::fmt;
use std::ops::Range;

use async_trait::async_trait;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures::stream::BoxStream;
use tokio::io::{AsyncWrite, AsyncWriteExt};

pub use key::{InvalidKey, ObjectKey};

pub use crate::io::file_stream::ByteStream;

/// Backends as held by the service.
pub type DynBackend = std::sync::Arc<dyn Backend>;

/// What is known about a stored object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObjectMeta {
    /// Its key.
    pub key: ObjectKey,
    /// Size in bytes.
    pub size: u64,
    /// Last modification time (UTC), never missing.
    pub last_modified: DateTime<Utc>,
}

/// Options of [`Backend::create`].
#[derive(Clone, Copy, Debug, Default)]
pub struct CreateOptions {
    /// Expected size, if known: lets S3 pick a part size that stays under 10,000 parts.
    pub size_hint: Option<u64>,
}

impl CreateOptions {
    /// Sets the expected size.
    pub fn with_size_hint(mut self, size: u64) -> Self {
        self.size_hint = Some(size);
        self
    }
}

/// Errors of a backend.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BackendError {
    /// No such object.
    #[error("object `{0}` does not exist")]
    NotFound(String),
    /// A create-if-absent found the key taken.
    #[error("object `{0}` already exists")]
    AlreadyExists(String),
    /// The key is invalid.
    #[error(transparent)]
    InvalidKey(#[from] InvalidKey),
    /// A local filesystem operation failed.
    #[error("{action} `{path}`")]
    Io {
        /// What was being done.
        action: &'static str,
        /// The path.
        path: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A stored object failed authentication: altered in storage, cut short, or not
    /// written under this storage's encryption key.
    #[error("`{0}` fails authentication: it was altered in storage, cut short, or written with another key")]
    Unauthentic(String),
    /// The encryption key is missing, wrong, or cannot be used.
    #[error(transparent)]
    Encryption(#[from] encryption::KeyError),
    /// The backend cannot do this here (a hard link across filesystems, into a remote
    /// store, or through encryption); the caller has another way.
    #[error("cannot {0}")]
    Unsupported(String),
    /// The remote store failed.
    #[error("{action} `{key}` in {backend}")]
    Remote {
        /// What was being done.
        action: &'static str,
        /// The key.
        key: String,
        /// Which backend.
        backend: String,
        /// The cause.
        #[source]
        source: crate::error::BoxError,
    },
}

impl BackendError {
    /// An I/O failure while `action` on `key`; a backend error carried inside the I/O
    /// error (a stream's or sink's own failure) comes out as itself.
    pub(crate) fn io(action: &'static str, key: &ObjectKey, e: std::io::Error) -> Self {
        let e = if e.get_ref().is_some_and(|inner| inner.is::<BackendError>()) {
            match e.into_inner().map(|inner| inner.downcast::<BackendError>()) {
                Some(Ok(inner)) => return *inner,
                Some(Err(other)) => std::io::Error::other(other),
                None => std::io::Error::other("I/O error"),
            }
        } else {
            e
        };
        BackendError::Io {
            action,
            path: key.to_string(),
            source: e,
        }
    }
}

impl From<BackendError> for crate::error::Error {
    fn from(e: BackendError) -> Self {
        match e {
            // Backend keys and local paths are not echoed: callers name the snapshot themselves.
            BackendError::NotFound(_) | BackendError::InvalidKey(_) => {
                crate::error::Error::NotFound("Snapshot not found".to_string())
            }
            BackendError::AlreadyExists(_) => {
                crate::error::Error::AlreadyExists("Snapshot already exists".to_string())
            }
            // The cause chain holds keys, local paths and the server's answer: callers get
            // one line naming the storage and what to check; the chain goes to the log.
            other => diagnosis::storage_error("snapshot storage failed", other),
        }
    }
}

/// Storage of snapshot objects.
///
/// # Contract
/// * Objects appear atomically: nothing is visible under a key before
///   [`ObjectSink::commit`] returns; a sink that is aborted, fails, or whose process dies
///   leaves nothing visible (leftovers are hidden and removed by [`Backend::cleanup`]).
/// * `list` is non-recursive: it returns the objects directly under a directory key;
///   `list_recursive` streams every object under a prefix, at any depth.
/// * `put_if_absent` is atomic: of two racing writers of one key, exactly one succeeds.
/// * Every method is safe to call concurrently.
#[async_trait]
pub trait Backend: fmt::Debug + fmt::Display + Send + Sync + 'static {
    /// Starts writing `key`. The object becomes visible only on commit.
    async fn create(
        &self,
        key: &ObjectKey,
        opts: CreateOptions,
    ) -> Result<Box<dyn ObjectSink>, BackendError>;

    /// Reads `key`, whole or a byte range.
    async fn open(
        &self,
        key: &ObjectKey,
        range: Option<Range<u64>>,
    ) -> Result<ByteStream, BackendError>;

    /// Metadata of `key`.
    async fn stat(&self, key: &ObjectKey) -> Result<ObjectMeta, BackendError>;

    /// Objects directly under `dir` (the root when `None`), in no particular order.
    async fn list(&self, dir: Option<&ObjectKey>) -> Result<Vec<ObjectMeta>, BackendError>;

    /// Every object under `prefix` (the whole store when `None`), at any depth, streamed
    /// page by page so a large store never sits in memory; in no particular order.
    /// Interrupted writes (hidden temp files, multipart uploads) are not objects.
    fn list_recursive(
        &self,
        prefix: Option<&ObjectKey>,
    ) -> BoxStream<'static, Result<ObjectMeta, BackendError>>;

    /// Writes a small object only if `key` does not exist: `AlreadyExists` otherwise,
    /// decided atomically by the storage (a hard link; S3's `If-None-Match: *`).
    async fn put_if_absent(
        &self,
        key: &ObjectKey,
        bytes: Bytes,
    ) -> Result<ObjectMeta, BackendError>;

    /// Deletes `key`; `NotFound` if it does not exist.
    async fn delete(&self, key: &ObjectKey) -> Result<(), BackendError>;

    /// Removes what interrupted writes left behind (temp files, multipart uploads).
    async fn cleanup(&self) -> Result<usize, BackendError>;

    /// Makes `file`, an open file whose bytes never change, the object `key` without
    /// copying a byte: a hard link on a local filesystem. Over an existing `key` only when
    /// `replace` (a damaged copy); else `AlreadyExists`. The link is durable only after
    /// [`Backend::sync_links`]. `Unsupported` when this backend cannot link that file (a
    /// remote store, encryption, another filesystem, a file already unlinked): the caller
    /// copies the bytes instead.
    async fn link_file(
        &self,
        file: std::sync::Arc<std::fs::File>,
        key: &ObjectKey,
        replace: bool,
    ) -> Result<(), BackendError> {
        let _ = (file, replace);
        Err(BackendError::Unsupported(format!(
            "link a file as `{key}`: the storage holds copies only"
        )))
    }

    /// Makes the links made under `dir` by [`Backend::link_file`] durable.
    async fn sync_links(&self, dir: &ObjectKey) -> Result<(), BackendError> {
        let _ = dir;
        Ok(())
    }
}

/// A write in progress.
///
/// # Contract
/// Bytes become visible only after `commit`; `abort` (or a crash) leaves nothing visible.
/// Dropping a sink without either is a bug that loses the write; implementations clean up
/// what they can.
#[async_trait]
pub trait ObjectSink: AsyncWrite + Send + Unpin {
    /// Makes the written bytes visible under the key.
    async fn commit(self: Box<Self>) -> Result<ObjectMeta, BackendError>;
    /// Discards the write.
    async fn abort(self: Box<Self>) -> Result<(), BackendError>;
}

/// Conveniences built on [`Backend`], identical for every implementation.
#[async_trait]
pub trait BackendExt: Backend {
    /// Writes a small object in one go.
    async fn put(&self, key: &ObjectKey, bytes: Bytes) -> Result<ObjectMeta, BackendError> {
        let mut sink = self
            .create(
                key,
                CreateOptions::default().with_size_hint(bytes.len() as u64),
            )
            .await?;
        if let Err(e) = sink.write_all(&bytes).await {
            let _ = sink.abort().await;
            return Err(BackendError::Io {
                action: "failed to write",
                path: key.to_string(),
                source: e,
            });
        }
        sink.commit().await
    }

    /// Reads a small object whole.
    async fn get_bytes(&self, key: &ObjectKey) -> Result<Bytes, BackendError> {
        use futures::TryStreamExt;
        let chunks: Vec<Bytes> = self
            .open(key, None)
            .await?
            .try_collect()
            .await
            .map_err(|e| BackendError::io("failed to read", key, e))?;
        Ok(chunks.concat().into())
    }
}

impl<T: Backend + ?Sized> BackendExt for T {}

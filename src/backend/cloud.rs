//! The one backend over `object_store`'s cloud stores (S3, Azure Blob, GCS): snapshots
//! stream straight into multipart uploads (no local temp file), with bounded memory and an
//! explicit commit (`cloud_sink.rs`).
//!
//! * Every request (each part included) is retried on 5xx, timeouts and connection errors
//!   with exponential backoff, by `object_store`'s retry layer; one attempt is abandoned
//!   after `request_timeout_secs`, so a stalled part is retried within `retry_timeout_secs`.
//! * What differs between clouds is how the store is built (`s3.rs`, `azure.rs`, `gcs.rs`)
//!   and what a crash can leave behind ([`Orphans`]).

use std::fmt;
use std::io;
use std::ops::Range;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::BoxStream;
use futures::{StreamExt, TryStreamExt};
use object_store::path::Path;
use object_store::{
    BackoffConfig, ClientOptions, GetOptions, GetRange, ObjectStore, ObjectStoreExt, PutMode,
    PutOptions, PutPayload, RetryConfig,
};

use super::cloud_sink::CloudSink;
use super::{Backend, BackendError, ByteStream, CreateOptions, ObjectKey, ObjectMeta, ObjectSink};

/// Multipart stores allow at most 10,000 parts (S3, GCS; Azure 50,000 blocks); part sizes
/// keep a margin below it.
const MAX_PARTS: u64 = 9_000;

/// How objects move: part sizes, parallelism and retries, the same keys for every cloud.
#[derive(Clone, Debug, PartialEq)]
pub struct Transfer {
    /// Multipart part size in bytes (at least 5 MiB).
    pub part_size: u64,
    /// Parts uploaded at once.
    pub upload_concurrency: usize,
    /// Retries of a failed request (per part for uploads).
    pub max_retries: usize,
    /// Give up retrying a request after this many seconds.
    pub retry_timeout_secs: u64,
    /// Abandon (and retry) one attempt of a request after this many seconds.
    pub request_timeout_secs: u64,
}

impl Transfer {
    /// The retry policy of every request.
    pub(super) fn retry(&self) -> RetryConfig {
        RetryConfig {
            backoff: BackoffConfig {
                init_backoff: Duration::from_millis(100),
                max_backoff: Duration::from_secs(10),
                base: 2.0,
            },
            max_retries: self.max_retries,
            retry_timeout: Duration::from_secs(self.retry_timeout_secs),
        }
    }

    /// HTTP options of the store used for writes, listing and deletes (bounded request
    /// time, shorter than the retry window so a stalled attempt is retried) and of the one
    /// used for downloads (no total limit: a large object may take long).
    pub(super) fn client_options(&self) -> (ClientOptions, ClientOptions) {
        let base = |o: ClientOptions| {
            o.with_allow_http(true)
                .with_connect_timeout(Duration::from_secs(10))
        };
        let timeout = Duration::from_secs(self.request_timeout_secs);
        (
            base(ClientOptions::new().with_timeout(timeout)),
            base(ClientOptions::new().with_timeout_disabled()),
        )
    }
}

/// What interrupted writes leave behind in one cloud, found and removed at start-up.
#[async_trait]
pub trait Orphans: fmt::Debug + Send + Sync + 'static {
    /// Removes what interrupted writes under the store's prefix left behind; returns how
    /// many. `backend` names the store in errors.
    async fn cleanup(&self, backend: &str) -> Result<usize, BackendError>;
}

/// A cloud store under one prefix, written through multipart uploads.
pub struct CloudBackend<O> {
    /// Writes, listing, deletes: bounded request time.
    store: Arc<dyn ObjectStore>,
    /// Downloads: no total time limit, only connect timeouts.
    read_store: Arc<dyn ObjectStore>,
    /// What a crash leaves behind, and how it is removed.
    orphans: O,
    /// `s3://bucket/prefix`, `az://container/prefix`, `gs://bucket/prefix`.
    name: String,
    prefix: String,
    transfer: Transfer,
}

impl<O> fmt::Debug for CloudBackend<O> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The stores hold the credentials: only the location is printed.
        f.debug_struct("CloudBackend")
            .field("name", &self.name)
            .finish()
    }
}

impl<O> fmt::Display for CloudBackend<O> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name)
    }
}

impl<O> CloudBackend<O> {
    /// A backend over the stores `build` makes (one for writes, one for reads) under
    /// `prefix`, shown as `scheme://bucket/prefix`.
    pub(super) fn assemble<S: ObjectStore>(
        transfer: &Transfer,
        build: impl Fn(ClientOptions) -> crate::error::Result<S>,
        (scheme, bucket, prefix): (&str, &str, &str),
        orphans: O,
    ) -> crate::error::Result<Self> {
        let (options, read_options) = transfer.client_options();
        Ok(CloudBackend {
            store: Arc::new(build(options)?),
            read_store: Arc::new(build(read_options)?),
            orphans,
            name: format!("{scheme}://{bucket}/{prefix}"),
            prefix: prefix.to_string(),
            transfer: transfer.clone(),
        })
    }

    /// What a crash leaves behind in this cloud.
    pub(super) fn orphans(&self) -> &O {
        &self.orphans
    }

    fn path(&self, key: &ObjectKey) -> Path {
        self.prefix_parts().chain(key.segments()).collect()
    }

    fn prefix_parts(&self) -> impl Iterator<Item = &str> {
        self.prefix.split('/').filter(|s| !s.is_empty())
    }

    fn dir_path(&self, dir: Option<&ObjectKey>) -> Path {
        match dir {
            Some(d) => self.path(d),
            None => self.prefix_parts().collect(),
        }
    }

    /// Part size for an upload of `hint` bytes.
    pub fn part_size(&self, hint: Option<u64>) -> usize {
        let grown = hint.map_or(0, |h| h.div_ceil(MAX_PARTS));
        usize::try_from(self.transfer.part_size.max(grown)).unwrap_or(usize::MAX)
    }

    fn remote(&self, action: &'static str, key: &str, e: object_store::Error) -> BackendError {
        match e {
            object_store::Error::NotFound { .. } => BackendError::NotFound(key.to_string()),
            other => BackendError::Remote {
                action,
                key: key.to_string(),
                backend: self.name.clone(),
                source: Box::new(other),
            },
        }
    }

    /// `m` as an object of this backend, its key relative to the prefix (`root`).
    fn relative(root: &[String], m: object_store::ObjectMeta) -> Option<ObjectMeta> {
        let parts: Vec<String> = m.location.parts().map(|p| p.as_ref().to_string()).collect();
        let key = parts
            .strip_prefix(root)
            .map(|r| r.join("/"))
            .and_then(|r| ObjectKey::new(r).ok())?;
        Some(ObjectMeta {
            key,
            size: m.size,
            last_modified: m.last_modified,
        })
    }
}

#[async_trait]
impl<O: Orphans> Backend for CloudBackend<O> {
    async fn create(
        &self,
        key: &ObjectKey,
        opts: CreateOptions,
    ) -> Result<Box<dyn ObjectSink>, BackendError> {
        Ok(Box::new(CloudSink::new(
            Arc::clone(&self.store),
            (self.path(key), key.clone()),
            self.name.clone(),
            self.part_size(opts.size_hint),
            self.transfer.upload_concurrency,
        )))
    }

    async fn open(
        &self,
        key: &ObjectKey,
        range: Option<Range<u64>>,
    ) -> Result<ByteStream, BackendError> {
        if range.as_ref().is_some_and(|r| r.start >= r.end) {
            return Ok(futures::stream::empty().boxed());
        }
        let opts = GetOptions {
            range: range.map(GetRange::Bounded),
            ..Default::default()
        };
        let result = self
            .read_store
            .get_opts(&self.path(key), opts)
            .await
            .map_err(|e| self.remote("failed to read", key.as_str(), e))?;
        // A failed read surfaces as an error, never as a short "successful" stream.
        Ok(result.into_stream().map_err(io::Error::other).boxed())
    }

    async fn stat(&self, key: &ObjectKey) -> Result<ObjectMeta, BackendError> {
        let m = self
            .store
            .head(&self.path(key))
            .await
            .map_err(|e| self.remote("failed to stat", key.as_str(), e))?;
        Ok(ObjectMeta {
            key: key.clone(),
            size: m.size,
            last_modified: m.last_modified,
        })
    }

    async fn list(&self, dir: Option<&ObjectKey>) -> Result<Vec<ObjectMeta>, BackendError> {
        let prefix = self.dir_path(dir);
        let listed = self
            .store
            .list_with_delimiter(Some(&prefix))
            .await
            .map_err(|e| self.remote("failed to list", prefix.as_ref(), e))?;
        Ok(listed
            .objects
            .into_iter()
            .filter_map(|m| {
                let name = m.location.filename()?.to_string();
                let key = match dir {
                    Some(d) => d.join(&name),
                    None => ObjectKey::new(name),
                }
                .ok()?;
                Some(ObjectMeta {
                    key,
                    size: m.size,
                    last_modified: m.last_modified,
                })
            })
            .collect())
    }

    fn list_recursive(
        &self,
        prefix: Option<&ObjectKey>,
    ) -> BoxStream<'static, Result<ObjectMeta, BackendError>> {
        let listed = self.dir_path(prefix);
        // Keys are made relative to the configured prefix again.
        let root: Vec<String> = self.prefix_parts().map(str::to_string).collect();
        let (backend, shown) = (self.name.clone(), listed.to_string());
        self.store
            .list(Some(&listed))
            .filter_map(move |item| {
                let out = match item {
                    Ok(m) => Self::relative(&root, m).map(Ok),
                    Err(object_store::Error::NotFound { .. }) => None,
                    Err(e) => Some(Err(BackendError::Remote {
                        action: "failed to list",
                        key: shown.clone(),
                        backend: backend.clone(),
                        source: Box::new(e),
                    })),
                };
                futures::future::ready(out)
            })
            .boxed()
    }

    async fn put_if_absent(
        &self,
        key: &ObjectKey,
        bytes: Bytes,
    ) -> Result<ObjectMeta, BackendError> {
        // Conditional creates decide races on stores that honour them (AWS, MinIO, R2,
        // Azure, GCS); some S3-compatible servers (Garage 2.x) ignore If-None-Match, so a
        // HEAD first still refuses a key that already exists when writers do not race.
        match self.stat(key).await {
            Ok(_) => return Err(BackendError::AlreadyExists(key.to_string())),
            Err(BackendError::NotFound(_)) => {}
            Err(e) => return Err(e),
        }
        let size = bytes.len() as u64;
        let opts = PutOptions {
            mode: PutMode::Create,
            ..Default::default()
        };
        match self
            .store
            .put_opts(&self.path(key), PutPayload::from(bytes), opts)
            .await
        {
            Ok(_) => Ok(ObjectMeta {
                key: key.clone(),
                size,
                last_modified: chrono::Utc::now(),
            }),
            Err(object_store::Error::AlreadyExists { .. })
            | Err(object_store::Error::Precondition { .. }) => {
                Err(BackendError::AlreadyExists(key.to_string()))
            }
            Err(e) => Err(self.remote("failed to write", key.as_str(), e)),
        }
    }

    async fn delete(&self, key: &ObjectKey) -> Result<(), BackendError> {
        // Deletes of missing keys succeed on S3; HEAD first so a missing snapshot is a 404.
        self.stat(key).await?;
        self.store
            .delete(&self.path(key))
            .await
            .map_err(|e| self.remote("failed to delete", key.as_str(), e))
    }

    async fn cleanup(&self) -> Result<usize, BackendError> {
        self.orphans.cleanup(&self.name).await
    }
}

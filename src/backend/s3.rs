//! S3-compatible backend on `object_store`: snapshots stream straight into multipart
//! uploads (no local temp file), with bounded memory and an explicit commit.
//!
//! * Bytes fill parts of `part_size` (grown from the size hint so 10,000 parts are never
//!   exceeded), at most `upload_concurrency` in flight; a full window makes `poll_write`
//!   wait, so memory is `part_size × (upload_concurrency + 1)`. The sink is written on
//!   `MultipartUpload` directly rather than `object_store::buffered::BufWriter`, whose
//!   `abort` panics after a failed completion and whose finish drops a failed upload
//!   without aborting it.
//! * Every request (each part included) is retried on 5xx, timeouts and connection errors
//!   with exponential backoff, by `object_store`'s retry layer; one attempt is abandoned
//!   after `request_timeout_secs`, so a stalled part is retried within `retry_timeout_secs`.
//! * Parts run as tasks on the runtime that created the sink, independent of the writer.
//! * `commit` completes the upload; `abort` (and every error path of the producer) sends
//!   AbortMultipartUpload. Uploads orphaned by a crash are aborted by `cleanup` at start-up
//!   (`s3_uploads.rs`).

use std::fmt;
use std::future::Future;
use std::io;
use std::ops::Range;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures::future::BoxFuture;
use futures::stream::BoxStream;
use futures::stream::FuturesUnordered;
use futures::{StreamExt, TryStreamExt};
use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::path::Path;
use object_store::{
    BackoffConfig, ClientOptions, GetOptions, GetRange, MultipartUpload, ObjectStore,
    ObjectStoreExt, PutMode, PutOptions, PutPayload, RetryConfig, UploadPart,
};
use tokio::io::AsyncWrite;

use super::s3_uploads::{Upload, Uploads};
use super::{Backend, BackendError, ByteStream, CreateOptions, ObjectKey, ObjectMeta, ObjectSink};
use crate::error::{Error, Result};
use crate::secret::Secret;

/// The region used when neither the options nor `AWS_REGION` / `AWS_DEFAULT_REGION` name one.
pub(crate) const DEFAULT_REGION: &str = "us-east-1";

/// Options of the S3 backend (configured as `storage.snapshots_config.s3_config`).
#[derive(Clone, Debug, PartialEq)]
pub struct S3Options {
    /// Bucket name.
    pub bucket: String,
    /// Region (default [`DEFAULT_REGION`]).
    pub region: String,
    /// Access key id.
    pub access_key: Option<Secret>,
    /// Secret access key.
    pub secret_key: Option<Secret>,
    /// Custom endpoint (MinIO, Garage, Ceph...).
    pub endpoint_url: Option<String>,
    /// Key prefix inside the bucket (default `snapshots`).
    pub prefix: String,
    /// Multipart part size in bytes (at least 5 MiB).
    pub part_size: u64,
    /// Parts uploaded at once.
    pub upload_concurrency: usize,
    /// Path-style addressing (default on when `endpoint_url` is set).
    pub path_style: bool,
    /// Retries of a failed request (per part for uploads).
    pub max_retries: usize,
    /// Give up retrying a request after this many seconds.
    pub retry_timeout_secs: u64,
    /// Abandon (and retry) one attempt of a request after this many seconds.
    pub request_timeout_secs: u64,
}

/// S3 allows at most this many parts; part sizes keep a margin below it.
const MAX_PARTS: u64 = 9_000;

/// Snapshots as objects in one bucket under one prefix.
pub struct S3Backend {
    /// Writes, listing, deletes: bounded request time.
    store: Arc<dyn ObjectStore>,
    /// Downloads: no total time limit (a large object may take long), only connect timeouts.
    read_store: Arc<dyn ObjectStore>,
    /// Listing and aborting multipart uploads a crash left behind.
    uploads: Uploads,
    cfg: S3Options,
}

impl fmt::Debug for S3Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print the credentials.
        f.debug_struct("S3Backend")
            .field("bucket", &self.cfg.bucket)
            .field("prefix", &self.cfg.prefix)
            .field("endpoint", &self.cfg.endpoint_url)
            .finish()
    }
}

impl fmt::Display for S3Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "s3://{}/{}", self.cfg.bucket, self.cfg.prefix)
    }
}

fn remote(
    action: &'static str,
    key: &str,
    backend: &S3Backend,
    e: object_store::Error,
) -> BackendError {
    match e {
        object_store::Error::NotFound { .. } => BackendError::NotFound(key.to_string()),
        other => BackendError::Remote {
            action,
            key: key.to_string(),
            backend: backend.to_string(),
            source: Box::new(other),
        },
    }
}

/// The HTTP options of one of the backend's stores: plain HTTP allowed (local servers),
/// connections given 10 s.
fn client_options(options: ClientOptions) -> ClientOptions {
    options
        .with_allow_http(true)
        .with_connect_timeout(Duration::from_secs(10))
}

fn build_store(cfg: &S3Options, options: ClientOptions) -> Result<AmazonS3> {
    let retry = RetryConfig {
        backoff: BackoffConfig {
            init_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(10),
            base: 2.0,
        },
        max_retries: cfg.max_retries,
        retry_timeout: Duration::from_secs(cfg.retry_timeout_secs),
    };
    let mut b = AmazonS3Builder::new()
        .with_bucket_name(&cfg.bucket)
        .with_region(&cfg.region)
        .with_virtual_hosted_style_request(!cfg.path_style)
        .with_retry(retry)
        .with_http_connector(super::s3_http::WatchedConnector::default())
        // Signed payloads hash every part with SHA-256 a second time, on the hot path. The
        // archive's own SHA-256 (the sidecar, verified on recovery) already covers every
        // byte end to end, and TLS protects https endpoints in transit.
        .with_unsigned_payload(true)
        .with_client_options(options);
    if let Some(ep) = &cfg.endpoint_url {
        b = b.with_endpoint(ep);
    }
    if let Some(k) = &cfg.access_key {
        b = b.with_access_key_id(k.expose());
    }
    if let Some(k) = &cfg.secret_key {
        b = b.with_secret_access_key(k.expose());
    }
    b.build()
        .map_err(|e| Error::bad_input(format!("invalid S3 configuration: {e}")))
}

impl S3Backend {
    /// Builds the clients; nothing is sent until the first call.
    pub fn new(cfg: &S3Options) -> Result<Self> {
        // Shorter than the retry window, so a stalled attempt is retried, not fatal.
        let timeout = Duration::from_secs(cfg.request_timeout_secs);
        let options = client_options(ClientOptions::new().with_timeout(timeout));
        let store = build_store(cfg, options.clone())?;
        let uploads = Uploads::new(store.clone(), cfg, &options)
            .map_err(|e| Error::bad_input(format!("invalid S3 configuration: {e}")))?;
        let read_options = client_options(ClientOptions::new().with_timeout_disabled());
        Ok(S3Backend {
            store: Arc::new(store),
            read_store: Arc::new(build_store(cfg, read_options)?),
            uploads,
            cfg: cfg.clone(),
        })
    }

    fn path(&self, key: &ObjectKey) -> Path {
        self.prefix_parts().chain(key.segments()).collect()
    }

    fn prefix_parts(&self) -> impl Iterator<Item = &str> {
        self.cfg.prefix.split('/').filter(|s| !s.is_empty())
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
        usize::try_from(self.cfg.part_size.max(grown)).unwrap_or(usize::MAX)
    }

    /// The multipart uploads under the prefix that were neither completed nor aborted.
    ///
    /// # Errors
    /// The listing failed (unreachable, refused, unreadable answer).
    pub async fn unfinished_uploads(&self) -> Result<Vec<Upload>, BackendError> {
        self.uploads.list(&self.to_string()).await
    }
}

/// A snapshot being streamed into the bucket.
///
/// Bytes fill a part buffer; a full buffer becomes one UploadPart request, with at most
/// `max_in_flight` requests at once (a full window makes `poll_write` wait). Objects
/// smaller than one part are a single PUT on commit. The multipart upload stays owned here
/// until `commit` completes it or `abort`/an error/`Drop` aborts it.
struct S3Sink {
    store: Arc<dyn ObjectStore>,
    path: Path,
    key: ObjectKey,
    backend: String,
    part_size: usize,
    max_in_flight: usize,
    buf: Vec<u8>,
    upload: Option<Box<dyn MultipartUpload>>,
    creating: Option<BoxFuture<'static, object_store::Result<Box<dyn MultipartUpload>>>>,
    in_flight: FuturesUnordered<PartTask>,
    /// Part buffers back from finished uploads, reused for the next parts.
    pool: Arc<parking_lot::Mutex<Vec<Vec<u8>>>>,
    /// The runtime the sink was created on: parts run there as their own tasks, so they
    /// progress whatever the writer is doing.
    runtime: tokio::runtime::Handle,
}

/// A part's bytes, handed to `object_store` without a copy; when the upload (and any retry)
/// is done with them the buffer returns to its sink's pool. Reusing the buffers keeps
/// memory at (parts in flight + 1) × part size: freshly allocated 8 MiB buffers freed on
/// other threads were otherwise retained by the allocator, adding up to 80 MiB of RSS.
struct PooledPart {
    buf: Vec<u8>,
    pool: Arc<parking_lot::Mutex<Vec<Vec<u8>>>>,
}

impl AsRef<[u8]> for PooledPart {
    fn as_ref(&self) -> &[u8] {
        &self.buf
    }
}

impl Drop for PooledPart {
    fn drop(&mut self) {
        let mut buf = std::mem::take(&mut self.buf);
        buf.clear();
        self.pool.lock().push(buf);
    }
}

/// One part upload running as a task; dropping it cancels the upload of that part, as
/// dropping the request future did.
struct PartTask(tokio::task::JoinHandle<object_store::Result<()>>);

impl Future for PartTask {
    type Output = object_store::Result<()>;
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.0).poll(cx).map(|joined| {
            joined.unwrap_or_else(|e| {
                Err(object_store::Error::Generic {
                    store: "S3",
                    source: Box::new(e),
                })
            })
        })
    }
}

impl Drop for PartTask {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl S3Sink {
    fn remote(&self, action: &'static str, e: object_store::Error) -> BackendError {
        BackendError::Remote {
            action,
            key: self.key.to_string(),
            backend: self.backend.clone(),
            source: Box::new(e),
        }
    }

    /// Collects finished parts; the first failure fails the write.
    fn poll_finished_parts(&mut self, cx: &mut Context<'_>) -> io::Result<()> {
        while let Poll::Ready(Some(done)) = self.in_flight.poll_next_unpin(cx) {
            done.map_err(|e| io::Error::other(self.remote("failed to upload a part of", e)))?;
        }
        Ok(())
    }

    fn poll_upload_started(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.upload.is_some() {
            return Poll::Ready(Ok(()));
        }
        let store = Arc::clone(&self.store);
        let path = self.path.clone();
        let fut = self
            .creating
            .get_or_insert_with(|| Box::pin(async move { store.put_multipart(&path).await }));
        let upload = ready!(fut.as_mut().poll(cx))
            .map_err(|e| io::Error::other(self.remote("failed to start upload of", e)))?;
        self.creating = None;
        self.upload = Some(upload);
        Poll::Ready(Ok(()))
    }

    /// Sends the buffer as the next part.
    fn dispatch(&mut self) {
        let next = self.pool.lock().pop();
        let next = next.unwrap_or_else(|| Vec::with_capacity(self.part_size));
        let data = std::mem::replace(&mut self.buf, next);
        if let Some(upload) = self.upload.as_mut() {
            let data = Bytes::from_owner(PooledPart {
                buf: data,
                pool: Arc::clone(&self.pool),
            });
            let part: UploadPart = upload.put_part(PutPayload::from(data));
            self.in_flight.push(PartTask(self.runtime.spawn(part)));
        }
    }

    async fn finish(&mut self) -> Result<(), BackendError> {
        if self.upload.is_none() && self.creating.is_none() {
            // Smaller than one part: a single PUT.
            let data = Bytes::from(std::mem::take(&mut self.buf));
            return self
                .store
                .put(&self.path, data.into())
                .await
                .map(|_| ())
                .map_err(|e| self.remote("failed to upload", e));
        }
        futures::future::poll_fn(|cx| self.poll_upload_started(cx))
            .await
            .map_err(|e| BackendError::Remote {
                action: "failed to start upload of",
                key: self.key.to_string(),
                backend: self.backend.clone(),
                source: Box::new(e),
            })?;
        if !self.buf.is_empty() {
            self.dispatch();
        }
        while let Some(done) = self.in_flight.next().await {
            done.map_err(|e| self.remote("failed to upload a part of", e))?;
        }
        let Some(upload) = self.upload.as_mut() else {
            return Err(BackendError::Io {
                action: "failed to complete upload of",
                path: self.key.to_string(),
                source: io::Error::other("the multipart upload was never started"),
            });
        };
        let completed = upload.complete().await;
        completed
            .map(|_| ())
            .map_err(|e| self.remote("failed to complete upload of", e))
    }

    async fn abort_upload(&mut self) -> Result<(), BackendError> {
        self.in_flight.clear();
        self.creating = None;
        self.buf = Vec::new();
        match self.upload.take() {
            Some(mut upload) => upload
                .abort()
                .await
                .map_err(|e| self.remote("failed to abort upload of", e)),
            None => Ok(()),
        }
    }
}

impl AsyncWrite for S3Sink {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        loop {
            this.poll_finished_parts(cx)?;
            let room = this.part_size - this.buf.len();
            if room > 0 {
                let n = room.min(data.len());
                this.buf.extend_from_slice(&data[..n]);
                return Poll::Ready(Ok(n));
            }
            ready!(this.poll_upload_started(cx))?;
            if this.in_flight.len() >= this.max_in_flight {
                match ready!(this.in_flight.poll_next_unpin(cx)) {
                    Some(done) => done.map_err(io::Error::other)?,
                    None => continue,
                }
                continue;
            }
            this.dispatch();
        }
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // Parts are sent as they fill; nothing can be made visible before `commit`.
        self.poll_finished_parts(cx)?;
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.poll_flush(cx)
    }
}

#[async_trait]
impl ObjectSink for S3Sink {
    async fn commit(mut self: Box<Self>) -> Result<ObjectMeta, BackendError> {
        if let Err(e) = self.finish().await {
            if let Err(abort) = self.abort_upload().await {
                tracing::warn!(key = %self.key, error = %abort, "abort after a failed upload also failed; start-up will retry");
            }
            return Err(e);
        }
        self.upload = None;
        let meta = self
            .store
            .head(&self.path)
            .await
            .map_err(|e| self.remote("failed to stat", e))?;
        Ok(ObjectMeta {
            key: self.key.clone(),
            size: meta.size,
            last_modified: meta.last_modified,
        })
    }

    async fn abort(mut self: Box<Self>) -> Result<(), BackendError> {
        self.abort_upload().await
    }
}

impl Drop for S3Sink {
    fn drop(&mut self) {
        if let Some(mut upload) = self.upload.take() {
            // Neither committed nor aborted: abort in the background; start-up cleanup
            // catches it if the process dies first.
            if let Ok(handle) = tokio::runtime::Handle::try_current() {
                handle.spawn(async move {
                    let _ = upload.abort().await;
                });
            }
        }
    }
}

#[async_trait]
impl Backend for S3Backend {
    async fn create(
        &self,
        key: &ObjectKey,
        opts: CreateOptions,
    ) -> Result<Box<dyn ObjectSink>, BackendError> {
        let part_size = self.part_size(opts.size_hint);
        Ok(Box::new(S3Sink {
            store: Arc::clone(&self.store),
            path: self.path(key),
            key: key.clone(),
            backend: self.to_string(),
            part_size,
            max_in_flight: self.cfg.upload_concurrency,
            buf: Vec::with_capacity(part_size.min(1 << 20)),
            upload: None,
            creating: None,
            in_flight: FuturesUnordered::new(),
            pool: Arc::default(),
            runtime: tokio::runtime::Handle::current(),
        }))
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
            .map_err(|e| remote("failed to read", key.as_str(), self, e))?;
        // A failed read surfaces as an error, never as a short "successful" stream.
        Ok(result.into_stream().map_err(io::Error::other).boxed())
    }

    async fn stat(&self, key: &ObjectKey) -> Result<ObjectMeta, BackendError> {
        let m = self
            .store
            .head(&self.path(key))
            .await
            .map_err(|e| remote("failed to stat", key.as_str(), self, e))?;
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
            .map_err(|e| remote("failed to list", prefix.as_ref(), self, e))?;
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
        let (backend, shown) = (self.to_string(), listed.to_string());
        self.store
            .list(Some(&listed))
            .filter_map(move |item| {
                let out = match item {
                    Ok(m) => {
                        let parts: Vec<String> =
                            m.location.parts().map(|p| p.as_ref().to_string()).collect();
                        let rel = parts
                            .strip_prefix(root.as_slice())
                            .map(|r| r.join("/"))
                            .and_then(|r| ObjectKey::new(r).ok());
                        rel.map(|key| {
                            Ok(ObjectMeta {
                                key,
                                size: m.size,
                                last_modified: m.last_modified,
                            })
                        })
                    }
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
        // If-None-Match decides races on servers that honour it (AWS, MinIO, R2); some
        // S3-compatible servers (Garage 2.x) ignore the header, so a HEAD first still
        // refuses a key that already exists when writers do not race.
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
            Err(e) => Err(remote("failed to write", key.as_str(), self, e)),
        }
    }

    async fn delete(&self, key: &ObjectKey) -> Result<(), BackendError> {
        // S3 deletes of missing keys succeed; HEAD first so a missing snapshot is a 404.
        self.stat(key).await?;
        self.store
            .delete(&self.path(key))
            .await
            .map_err(|e| remote("failed to delete", key.as_str(), self, e))
    }

    async fn cleanup(&self) -> Result<usize, BackendError> {
        let backend = self.to_string();
        let orphans = self.uploads.list(&backend).await?;
        for upload in &orphans {
            self.uploads.abort(upload, &backend).await?;
            tracing::info!(key = %upload.key, "aborted an orphaned multipart upload");
        }
        Ok(orphans.len())
    }
}

//! S3-compatible backend on `object_store`: snapshots stream straight into multipart
//! uploads (no local temp file), with bounded memory and an explicit commit.
//!
//! * Bytes go into `object_store`'s `BufWriter`: parts of `part_size` (grown from the size
//!   hint so 10,000 parts are never exceeded), at most `upload_concurrency` in flight; a
//!   full window makes `poll_write` wait, so memory is `part_size × (upload_concurrency + 1)`.
//! * Every request (each part included) is retried on 5xx, timeouts and connection errors
//!   with exponential backoff, by `object_store`'s retry layer.
//! * `commit` completes the upload; `abort` (and every error path of the producer) sends
//!   AbortMultipartUpload. Uploads orphaned by a crash are aborted by `cleanup` at start-up,
//!   via ListMultipartUploads from `aws-sdk-s3`, which `object_store` does not expose.

use std::fmt;
use std::io;
use std::ops::Range;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use async_trait::async_trait;
use futures::{StreamExt, TryStreamExt};
use object_store::aws::AmazonS3Builder;
use object_store::buffered::BufWriter;
use object_store::path::Path;
use object_store::{BackoffConfig, ClientOptions, GetOptions, GetRange, ObjectStore, ObjectStoreExt, RetryConfig};
use tokio::io::AsyncWrite;

use super::{Backend, BackendError, ByteStream, CreateOptions, ObjectKey, ObjectMeta, ObjectSink};
use crate::config::S3Config;
use crate::error::{Error, Result};

/// S3 allows at most this many parts; part sizes keep a margin below it.
const MAX_PARTS: u64 = 9_000;

/// Snapshots as objects in one bucket under one prefix.
pub struct S3Backend {
    /// Writes, listing, deletes: bounded request time.
    store: Arc<dyn ObjectStore>,
    /// Downloads: no total time limit (a large object may take long), only connect timeouts.
    read_store: Arc<dyn ObjectStore>,
    cfg: S3Config,
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

fn remote(action: &'static str, key: &str, backend: &S3Backend, e: object_store::Error) -> BackendError {
    match e {
        object_store::Error::NotFound { .. } => BackendError::NotFound(key.to_string()),
        other => BackendError::Remote { action, key: key.to_string(), backend: backend.to_string(), source: Box::new(other) },
    }
}

fn build_store(cfg: &S3Config, options: ClientOptions) -> Result<Arc<dyn ObjectStore>> {
    let retry = RetryConfig {
        backoff: BackoffConfig { init_backoff: Duration::from_millis(100), max_backoff: Duration::from_secs(10), base: 2.0 },
        max_retries: cfg.max_retries,
        retry_timeout: Duration::from_secs(cfg.retry_timeout_secs),
    };
    let mut b = AmazonS3Builder::new()
        .with_bucket_name(&cfg.bucket)
        .with_region(&cfg.region)
        .with_virtual_hosted_style_request(!cfg.path_style)
        .with_retry(retry)
        .with_client_options(options.with_allow_http(true).with_connect_timeout(Duration::from_secs(10)));
    if let Some(ep) = &cfg.endpoint_url {
        b = b.with_endpoint(ep);
    }
    if let Some(k) = &cfg.access_key {
        b = b.with_access_key_id(k.expose());
    }
    if let Some(k) = &cfg.secret_key {
        b = b.with_secret_access_key(k.expose());
    }
    let store = b.build().map_err(|e| Error::bad_input(format!("invalid S3 configuration: {e}")))?;
    Ok(Arc::new(store))
}

impl S3Backend {
    /// Builds the clients; nothing is sent until the first call.
    pub fn new(cfg: &S3Config) -> Result<Self> {
        let timeout = Duration::from_secs(cfg.retry_timeout_secs.max(30));
        Ok(S3Backend {
            store: build_store(cfg, ClientOptions::new().with_timeout(timeout))?,
            read_store: build_store(cfg, ClientOptions::new().with_timeout_disabled())?,
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

    /// An `aws-sdk-s3` client for what `object_store` lacks (listing multipart uploads).
    pub async fn sdk_client(&self) -> aws_sdk_s3::Client {
        let mut conf = aws_sdk_s3::config::Builder::new()
            .behavior_version(aws_sdk_s3::config::BehaviorVersion::latest())
            .region(aws_sdk_s3::config::Region::new(self.cfg.region.clone()))
            .force_path_style(self.cfg.path_style);
        if let Some(ep) = &self.cfg.endpoint_url {
            conf = conf.endpoint_url(ep);
        }
        match (&self.cfg.access_key, &self.cfg.secret_key) {
            (Some(ak), Some(sk)) => {
                conf = conf.credentials_provider(aws_sdk_s3::config::Credentials::new(
                    ak.expose(),
                    sk.expose(),
                    None,
                    None,
                    "snapstream-config",
                ));
            }
            _ => {
                let shared = aws_config::defaults(aws_config::BehaviorVersion::latest()).load().await;
                if let Some(p) = shared.credentials_provider() {
                    conf = conf.credentials_provider(p);
                }
            }
        }
        aws_sdk_s3::Client::from_conf(conf.build())
    }

    fn sdk_err(&self, action: &'static str, e: impl std::error::Error + Send + Sync + 'static) -> BackendError {
        BackendError::Remote { action, key: self.cfg.prefix.clone(), backend: self.to_string(), source: Box::new(e) }
    }
}

/// A multipart upload in progress.
struct S3Sink {
    writer: Option<BufWriter>,
    key: ObjectKey,
    path: Path,
    store: Arc<dyn ObjectStore>,
    backend: String,
}

impl AsyncWrite for S3Sink {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        match self.writer.as_mut() {
            Some(w) => Pin::new(w).poll_write(cx, buf),
            None => Poll::Ready(Err(io::Error::other("sink already finished"))),
        }
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.writer.as_mut() {
            Some(w) => Pin::new(w).poll_flush(cx),
            None => Poll::Ready(Ok(())),
        }
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // `BufWriter::poll_shutdown` completes the upload; only `commit` may do that.
        self.poll_flush(cx)
    }
}

#[async_trait]
impl ObjectSink for S3Sink {
    async fn commit(mut self: Box<Self>) -> Result<ObjectMeta, BackendError> {
        let Some(mut w) = self.writer.take() else {
            return Err(BackendError::Io {
                action: "failed to commit",
                path: self.key.to_string(),
                source: io::Error::other("sink already finished"),
            });
        };
        if let Err(e) = tokio::io::AsyncWriteExt::shutdown(&mut w).await {
            // The upload may still be open; abort it so no parts linger.
            let _ = w.abort().await;
            return Err(BackendError::Remote {
                action: "failed to complete upload of",
                key: self.key.to_string(),
                backend: self.backend.clone(),
                source: Box::new(e),
            });
        }
        let meta = self.store.head(&self.path).await.map_err(|e| BackendError::Remote {
            action: "failed to stat",
            key: self.key.to_string(),
            backend: self.backend.clone(),
            source: Box::new(e),
        })?;
        Ok(ObjectMeta { key: self.key.clone(), size: meta.size, last_modified: meta.last_modified })
    }

    async fn abort(mut self: Box<Self>) -> Result<(), BackendError> {
        let Some(mut w) = self.writer.take() else { return Ok(()) };
        w.abort().await.map_err(|e| BackendError::Remote {
            action: "failed to abort upload of",
            key: self.key.to_string(),
            backend: self.backend.clone(),
            source: Box::new(e),
        })
    }
}

impl Drop for S3Sink {
    fn drop(&mut self) {
        if let Some(mut w) = self.writer.take() {
            // Neither committed nor aborted: abort in the background; start-up cleanup
            // catches it if the process dies first.
            if let Ok(handle) = tokio::runtime::Handle::try_current() {
                handle.spawn(async move {
                    let _ = w.abort().await;
                });
            }
        }
    }
}

#[async_trait]
impl Backend for S3Backend {
    async fn create(&self, key: &ObjectKey, opts: CreateOptions) -> Result<Box<dyn ObjectSink>, BackendError> {
        let path = self.path(key);
        let writer = BufWriter::with_capacity(Arc::clone(&self.store), path.clone(), self.part_size(opts.size_hint))
            .with_max_concurrency(self.cfg.upload_concurrency);
        Ok(Box::new(S3Sink {
            writer: Some(writer),
            key: key.clone(),
            path,
            store: Arc::clone(&self.store),
            backend: self.to_string(),
        }))
    }

    async fn open(&self, key: &ObjectKey, range: Option<Range<u64>>) -> Result<ByteStream, BackendError> {
        if range.as_ref().is_some_and(|r| r.start >= r.end) {
            return Ok(futures::stream::empty().boxed());
        }
        let opts = GetOptions { range: range.map(GetRange::Bounded), ..Default::default() };
        let result =
            self.read_store.get_opts(&self.path(key), opts).await.map_err(|e| remote("failed to read", key.as_str(), self, e))?;
        // A failed read surfaces as an error, never as a short "successful" stream.
        Ok(result.into_stream().map_err(io::Error::other).boxed())
    }

    async fn stat(&self, key: &ObjectKey) -> Result<ObjectMeta, BackendError> {
        let m = self.store.head(&self.path(key)).await.map_err(|e| remote("failed to stat", key.as_str(), self, e))?;
        Ok(ObjectMeta { key: key.clone(), size: m.size, last_modified: m.last_modified })
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
                Some(ObjectMeta { key, size: m.size, last_modified: m.last_modified })
            })
            .collect())
    }

    async fn delete(&self, key: &ObjectKey) -> Result<(), BackendError> {
        // S3 deletes of missing keys succeed; HEAD first so a missing snapshot is a 404.
        self.stat(key).await?;
        self.store.delete(&self.path(key)).await.map_err(|e| remote("failed to delete", key.as_str(), self, e))
    }

    async fn cleanup(&self) -> Result<usize, BackendError> {
        let client = self.sdk_client().await;
        let prefix = if self.cfg.prefix.is_empty() { String::new() } else { format!("{}/", self.cfg.prefix) };
        let mut aborted = 0;
        let (mut key_marker, mut id_marker): (Option<String>, Option<String>) = (None, None);
        loop {
            let page = client
                .list_multipart_uploads()
                .bucket(&self.cfg.bucket)
                .prefix(&prefix)
                .set_key_marker(key_marker.clone())
                .set_upload_id_marker(id_marker.clone())
                .send()
                .await
                .map_err(|e| self.sdk_err("failed to list multipart uploads under", io::Error::other(aws_sdk_s3::error::DisplayErrorContext(e).to_string())))?;
            for upload in page.uploads() {
                let (Some(key), Some(id)) = (upload.key(), upload.upload_id()) else { continue };
                client
                    .abort_multipart_upload()
                    .bucket(&self.cfg.bucket)
                    .key(key)
                    .upload_id(id)
                    .send()
                    .await
                    .map_err(|e| self.sdk_err("failed to abort multipart upload under", io::Error::other(aws_sdk_s3::error::DisplayErrorContext(e).to_string())))?;
                tracing::info!(key, "aborted an orphaned multipart upload");
                aborted += 1;
            }
            if page.is_truncated() != Some(true) {
                break;
            }
            key_marker = page.next_key_marker().map(str::to_string);
            id_marker = page.next_upload_id_marker().map(str::to_string);
            if key_marker.is_none() && id_marker.is_none() {
                break;
            }
        }
        Ok(aborted)
    }
}

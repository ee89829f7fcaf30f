//! An object being written to a cloud store: bytes fill parts of `part_size`, at most
//! `max_in_flight` part uploads run at once (a full window makes `poll_write` wait), so
//! memory is `part_size × (max_in_flight + 1)`. Written on `MultipartUpload` directly rather
//! than `object_store::buffered::BufWriter`, whose `abort` panics after a failed completion
//! and whose finish drops a failed upload without aborting it. The same for S3 (multipart
//! upload), Azure (blocks, then a block list) and GCS (XML multipart upload).

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use async_trait::async_trait;
use bytes::Bytes;
use futures::future::BoxFuture;
use futures::stream::FuturesUnordered;
use futures::StreamExt;
use object_store::path::Path;
use object_store::{MultipartUpload, ObjectStore, ObjectStoreExt, PutPayload, UploadPart};
use tokio::io::AsyncWrite;

use super::{BackendError, ObjectKey, ObjectMeta, ObjectSink};

/// A snapshot being streamed into the bucket (or container).
///
/// Bytes fill a part buffer; a full buffer becomes one UploadPart request, with at most
/// `max_in_flight` requests at once (a full window makes `poll_write` wait). Objects
/// smaller than one part are a single PUT on commit. The multipart upload stays owned here
/// until `commit` completes it or `abort`/an error/`Drop` aborts it.
pub(super) struct CloudSink {
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
                    store: "snapstream",
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

impl CloudSink {
    /// A write of `key` (stored at `path`) with parts of `part_size` bytes.
    pub(super) fn new(
        store: Arc<dyn ObjectStore>,
        (path, key): (Path, ObjectKey),
        backend: String,
        part_size: usize,
        max_in_flight: usize,
    ) -> Self {
        CloudSink {
            store,
            path,
            key,
            backend,
            part_size,
            max_in_flight,
            buf: Vec::with_capacity(part_size.min(1 << 20)),
            upload: None,
            creating: None,
            in_flight: FuturesUnordered::new(),
            pool: Arc::default(),
            runtime: tokio::runtime::Handle::current(),
        }
    }

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

impl AsyncWrite for CloudSink {
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
impl ObjectSink for CloudSink {
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

impl Drop for CloudSink {
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

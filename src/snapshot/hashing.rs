//! SHA-256 computed inline, in the same pass as the bytes move.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use sha2::{Digest, Sha256};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_util::sync::PollSender;

/// Shared progress counter (bytes moved), readable while an operation runs.
pub type Progress = Arc<AtomicU64>;

/// Lowercase hex of a finished digest.
pub fn hex_digest(h: Sha256) -> String {
    hex::encode(h.finalize())
}

/// Bytes handed to the hashing thread at a time.
const BLOCK: usize = 1 << 20;
/// Blocks queued for the hashing thread; bounds the extra memory to a few MiB.
const QUEUE: usize = 4;

/// SHA-256 computed on a helper thread, so on a 2-core machine hashing overlaps the
/// reading, tar framing and writing done by the caller. Bytes are still hashed once, in
/// the order they pass, as they pass.
struct BackgroundSha {
    block: Vec<u8>,
    tx: PollSender<Vec<u8>>,
    done: Option<tokio::sync::oneshot::Receiver<Sha256>>,
    bytes: u64,
    progress: Option<Progress>,
}

impl BackgroundSha {
    fn new(progress: Option<Progress>) -> Self {
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Vec<u8>>(QUEUE);
        let (done_tx, done) = tokio::sync::oneshot::channel();
        std::thread::Builder::new()
            .name("sha256".into())
            .spawn(move || {
                let mut h = Sha256::new();
                while let Some(b) = rx.blocking_recv() {
                    h.update(&b);
                }
                let _ = done_tx.send(h);
            })
            .map_err(|e| tracing::error!(error = %e, "cannot start the hashing thread"))
            .ok();
        BackgroundSha {
            block: Vec::with_capacity(BLOCK),
            tx: PollSender::new(tx),
            done: Some(done),
            bytes: 0,
            progress,
        }
    }

    /// Hands a full block to the thread; call before consuming new bytes, since it may wait.
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.block.len() < BLOCK {
            return Poll::Ready(Ok(()));
        }
        std::task::ready!(self.tx.poll_reserve(cx))
            .map_err(|_| io::Error::other("hashing thread stopped"))?;
        let full = std::mem::replace(&mut self.block, Vec::with_capacity(BLOCK));
        self.tx
            .send_item(full)
            .map_err(|_| io::Error::other("hashing thread stopped"))?;
        Poll::Ready(Ok(()))
    }

    fn consume(&mut self, data: &[u8]) {
        self.block.extend_from_slice(data);
        self.bytes += data.len() as u64;
        if let Some(p) = &self.progress {
            p.fetch_add(data.len() as u64, Ordering::Relaxed);
        }
    }

    async fn finish(mut self) -> io::Result<(String, u64)> {
        if !self.block.is_empty() {
            let last = std::mem::take(&mut self.block);
            let sender = self
                .tx
                .get_ref()
                .cloned()
                .ok_or_else(|| io::Error::other("hashing thread stopped"))?;
            sender
                .send(last)
                .await
                .map_err(|_| io::Error::other("hashing thread stopped"))?;
        }
        self.tx.close();
        let done = self
            .done
            .take()
            .ok_or_else(|| io::Error::other("hash already finished"))?;
        let h = done
            .await
            .map_err(|_| io::Error::other("hashing thread stopped"))?;
        Ok((hex_digest(h), self.bytes))
    }
}

/// A writer that hashes and counts everything written through it.
pub struct HashingWriter<W> {
    inner: W,
    sha: BackgroundSha,
}

impl<W> HashingWriter<W> {
    /// Wraps `inner`; `progress` (if any) is advanced as bytes pass.
    pub fn new(inner: W, progress: Option<Progress>) -> Self {
        HashingWriter {
            inner,
            sha: BackgroundSha::new(progress),
        }
    }

    /// The inner writer, the hex SHA-256 and the byte count.
    pub async fn finish(self) -> io::Result<(W, String, u64)> {
        let (hash, n) = self.sha.finish().await?;
        Ok((self.inner, hash, n))
    }
}

impl<W: AsyncWrite + Unpin> AsyncWrite for HashingWriter<W> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        std::task::ready!(this.sha.poll_ready(cx))?;
        let n = std::task::ready!(Pin::new(&mut this.inner).poll_write(cx, buf))?;
        this.sha.consume(&buf[..n]);
        Poll::Ready(Ok(n))
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // Flush only: the inner sink is committed explicitly by its owner, never by a
        // shutdown that an encoder propagates when it finishes its frame.
        Pin::new(&mut self.inner).poll_flush(cx)
    }
}

/// A reader that hashes and counts everything read through it.
pub struct HashingReader<R> {
    inner: R,
    sha: BackgroundSha,
}

impl<R> HashingReader<R> {
    /// Wraps `inner`.
    pub fn new(inner: R, progress: Option<Progress>) -> Self {
        HashingReader {
            inner,
            sha: BackgroundSha::new(progress),
        }
    }

    /// The hex SHA-256 and byte count of what was read.
    pub async fn finish(self) -> io::Result<(String, u64)> {
        self.sha.finish().await
    }
}

impl<R: AsyncRead + Unpin> AsyncRead for HashingReader<R> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        std::task::ready!(this.sha.poll_ready(cx))?;
        let before = buf.filled().len();
        std::task::ready!(Pin::new(&mut this.inner).poll_read(cx, buf))?;
        this.sha.consume(&buf.filled()[before..]);
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn hashes_match_a_one_shot_digest() {
        // Several blocks plus a tail, so the thread and the final partial block both count.
        let len = 5 * BLOCK + 12_345;
        let data: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
        let expected = hex::encode(Sha256::digest(&data));
        let mut w = HashingWriter::new(Vec::new(), None);
        w.write_all(&data).await.unwrap();
        let (out, hash, n) = w.finish().await.unwrap();
        assert_eq!((hash.as_str(), n), (expected.as_str(), len as u64));
        assert_eq!(out, data);
        let progress = Progress::default();
        let mut r = HashingReader::new(&data[..], Some(Arc::clone(&progress)));
        let mut sink = Vec::new();
        r.read_to_end(&mut sink).await.unwrap();
        assert_eq!(r.finish().await.unwrap(), (expected, len as u64));
        assert_eq!(progress.load(Ordering::Relaxed), len as u64);
    }
}

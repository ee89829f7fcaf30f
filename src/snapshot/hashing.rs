//! SHA-256 computed inline, in the same pass as the bytes move.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use sha2::{Digest, Sha256};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Shared progress counter (bytes moved), readable while an operation runs.
pub type Progress = Arc<AtomicU64>;

/// Lowercase hex of a finished digest.
pub fn hex_digest(h: Sha256) -> String {
    hex::encode(h.finalize())
}

/// A writer that hashes and counts everything written through it.
pub struct HashingWriter<W> {
    inner: W,
    hasher: Sha256,
    written: u64,
    progress: Option<Progress>,
}

impl<W> HashingWriter<W> {
    /// Wraps `inner`; `progress` (if any) is advanced as bytes pass.
    pub fn new(inner: W, progress: Option<Progress>) -> Self {
        HashingWriter {
            inner,
            hasher: Sha256::new(),
            written: 0,
            progress,
        }
    }

    /// The inner writer, the hex SHA-256 and the byte count.
    pub fn finish(self) -> (W, String, u64) {
        (self.inner, hex_digest(self.hasher), self.written)
    }
}

impl<W: AsyncWrite + Unpin> AsyncWrite for HashingWriter<W> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        let n = std::task::ready!(Pin::new(&mut this.inner).poll_write(cx, buf))?;
        this.hasher.update(&buf[..n]);
        this.written += n as u64;
        if let Some(p) = &this.progress {
            p.fetch_add(n as u64, Ordering::Relaxed);
        }
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
    hasher: Sha256,
    read: u64,
    progress: Option<Progress>,
}

impl<R> HashingReader<R> {
    /// Wraps `inner`.
    pub fn new(inner: R, progress: Option<Progress>) -> Self {
        HashingReader {
            inner,
            hasher: Sha256::new(),
            read: 0,
            progress,
        }
    }

    /// The hex SHA-256 and byte count of what was read.
    pub fn finish(self) -> (String, u64) {
        (hex_digest(self.hasher), self.read)
    }
}

impl<R: AsyncRead + Unpin> AsyncRead for HashingReader<R> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        let before = buf.filled().len();
        std::task::ready!(Pin::new(&mut this.inner).poll_read(cx, buf))?;
        let new = &buf.filled()[before..];
        this.hasher.update(new);
        this.read += new.len() as u64;
        if let Some(p) = &this.progress {
            p.fetch_add(new.len() as u64, Ordering::Relaxed);
        }
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn hashes_match_a_one_shot_digest() {
        let data = vec![7u8; 100_000];
        let expected = hex::encode(Sha256::digest(&data));
        let mut w = HashingWriter::new(Vec::new(), None);
        w.write_all(&data).await.unwrap();
        let (out, hash, n) = w.finish();
        assert_eq!(
            (hash.as_str(), n, out.len()),
            (expected.as_str(), 100_000, 100_000)
        );
        let progress = Progress::default();
        let mut r = HashingReader::new(&data[..], Some(Arc::clone(&progress)));
        let mut sink = Vec::new();
        r.read_to_end(&mut sink).await.unwrap();
        assert_eq!(r.finish(), (expected, 100_000));
        assert_eq!(progress.load(Ordering::Relaxed), 100_000);
    }
}

//! A sink that seals what it is given segment by segment on its way into the storage:
//! memory stays at two segments whatever the object's size.

use std::pin::Pin;
use std::task::{ready, Context, Poll};

use async_trait::async_trait;
use tokio::io::AsyncWrite;

use super::format::{plain_size, ObjectCipher, SEALED, SEGMENT};
use crate::backend::{BackendError, ObjectMeta, ObjectSink};

/// Seals into `inner`; the last segment is sealed by `commit`.
pub(super) struct SealingSink {
    inner: Box<dyn ObjectSink>,
    cipher: ObjectCipher,
    /// Content of the segment being filled.
    plain: Vec<u8>,
    /// Sealed bytes not yet accepted by `inner` (the header first).
    out: Vec<u8>,
    sent: usize,
    /// The index of the segment being filled.
    index: u32,
}

impl SealingSink {
    pub(super) fn new(inner: Box<dyn ObjectSink>, cipher: ObjectCipher, header: Vec<u8>) -> Self {
        let mut out = Vec::with_capacity(SEALED as usize);
        out.extend_from_slice(&header);
        SealingSink {
            inner,
            cipher,
            plain: Vec::with_capacity(SEALED as usize),
            out,
            sent: 0,
            index: 0,
        }
    }

    /// Writes the sealed bytes waiting in `out` into `inner`.
    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        while self.sent < self.out.len() {
            let n = ready!(Pin::new(&mut self.inner).poll_write(cx, &self.out[self.sent..]))?;
            if n == 0 {
                return Poll::Ready(Err(std::io::ErrorKind::WriteZero.into()));
            }
            self.sent += n;
        }
        self.out.clear();
        self.sent = 0;
        Poll::Ready(Ok(()))
    }

    /// Seals the segment being filled into `out` (which is empty: drained first).
    fn seal(&mut self, last: bool) -> std::io::Result<()> {
        std::mem::swap(&mut self.plain, &mut self.out);
        self.plain.clear();
        self.cipher.seal(self.index, last, &mut self.out)?;
        self.index = self
            .index
            .checked_add(1)
            .ok_or_else(|| std::io::Error::other("object too large to encrypt (2^32 segments)"))?;
        Ok(())
    }
}

impl AsyncWrite for SealingSink {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        let this = &mut *self;
        loop {
            ready!(this.poll_drain(cx))?;
            // A full segment is sealed only once more content follows: the last segment
            // is sealed as last by `commit`, full or not.
            if this.plain.len() as u64 == SEGMENT {
                this.seal(false)?;
                continue;
            }
            let n = (SEGMENT as usize - this.plain.len()).min(buf.len());
            this.plain.extend_from_slice(&buf[..n]);
            return Poll::Ready(Ok(n));
        }
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        ready!(self.poll_drain(cx))?;
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        ready!(self.poll_drain(cx))?;
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[async_trait]
impl ObjectSink for SealingSink {
    async fn commit(mut self: Box<Self>) -> Result<ObjectMeta, BackendError> {
        let key = |e: std::io::Error| BackendError::Io {
            action: "failed to write",
            path: "an encrypted object".to_string(),
            source: e,
        };
        let sealed = async {
            std::future::poll_fn(|cx| self.poll_drain(cx)).await?;
            self.seal(true)?;
            std::future::poll_fn(|cx| self.poll_drain(cx)).await
        }
        .await;
        if let Err(e) = sealed {
            let _ = self.inner.abort().await;
            return Err(key(e));
        }
        let mut meta = self.inner.commit().await?;
        meta.size = plain_size(meta.size).unwrap_or(meta.size);
        Ok(meta)
    }

    async fn abort(self: Box<Self>) -> Result<(), BackendError> {
        self.inner.abort().await
    }
}

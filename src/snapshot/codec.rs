//! Compression of archives: an encoder over any writer, and detection from magic bytes.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use async_compression::tokio::bufread::{GzipDecoder, ZstdDecoder};
use async_compression::tokio::write::{GzipEncoder, ZstdEncoder};
use tokio::io::{AsyncBufRead, AsyncRead, AsyncWrite};

/// Optional compression of snapshot archives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Compression {
    /// A plain tar, as Qdrant writes.
    None,
    /// gzip.
    Gzip,
    /// zstd.
    Zstd,
}

/// Bytes [`detect`] needs to tell every format apart.
pub const MAGIC_LEN: usize = 4;

/// Detects the compression of an archive from its first bytes.
pub fn detect(head: &[u8]) -> Compression {
    match head {
        [0x1f, 0x8b, ..] => Compression::Gzip,
        [0x28, 0xb5, 0x2f, 0xfd, ..] => Compression::Zstd,
        _ => Compression::None,
    }
}

/// A writer that compresses (or not) into `W`.
pub enum Encoder<W: AsyncWrite + Unpin> {
    /// Pass-through.
    Plain(W),
    /// gzip.
    Gzip(GzipEncoder<W>),
    /// zstd.
    Zstd(ZstdEncoder<W>),
}

impl<W: AsyncWrite + Unpin> Encoder<W> {
    /// Wraps `w`.
    pub fn new(w: W, c: Compression) -> Self {
        match c {
            Compression::None => Encoder::Plain(w),
            Compression::Gzip => Encoder::Gzip(GzipEncoder::new(w)),
            Compression::Zstd => Encoder::Zstd(ZstdEncoder::new(w)),
        }
    }

    /// The inner writer; call after `shutdown` so the compressed frame is complete.
    pub fn into_inner(self) -> W {
        match self {
            Encoder::Plain(w) => w,
            Encoder::Gzip(e) => e.into_inner(),
            Encoder::Zstd(e) => e.into_inner(),
        }
    }
}

impl<W: AsyncWrite + Unpin> AsyncWrite for Encoder<W> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Encoder::Plain(w) => Pin::new(w).poll_write(cx, buf),
            Encoder::Gzip(e) => Pin::new(e).poll_write(cx, buf),
            Encoder::Zstd(e) => Pin::new(e).poll_write(cx, buf),
        }
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Encoder::Plain(w) => Pin::new(w).poll_flush(cx),
            Encoder::Gzip(e) => Pin::new(e).poll_flush(cx),
            Encoder::Zstd(e) => Pin::new(e).poll_flush(cx),
        }
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Encoder::Plain(w) => Pin::new(w).poll_shutdown(cx),
            Encoder::Gzip(e) => Pin::new(e).poll_shutdown(cx),
            Encoder::Zstd(e) => Pin::new(e).poll_shutdown(cx),
        }
    }
}

/// A decoding reader over a buffered source, chosen by [`detect`].
pub fn decoder<'a, R: AsyncBufRead + Unpin + Send + 'a>(
    r: R,
    c: Compression,
) -> Box<dyn AsyncRead + Unpin + Send + 'a> {
    match c {
        Compression::None => Box::new(r),
        Compression::Gzip => Box::new(GzipDecoder::new(r)),
        Compression::Zstd => Box::new(ZstdDecoder::new(r)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn every_codec_round_trips_and_is_detected() {
        for c in [Compression::None, Compression::Gzip, Compression::Zstd] {
            let mut enc = Encoder::new(Vec::new(), c);
            enc.write_all(b"hello snapshot").await.unwrap();
            enc.shutdown().await.unwrap();
            let bytes = enc.into_inner();
            assert_eq!(detect(&bytes), c);
            let mut out = Vec::new();
            decoder(&bytes[..], c).read_to_end(&mut out).await.unwrap();
            assert_eq!(out, b"hello snapshot");
        }
    }
}

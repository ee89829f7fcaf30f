//! SHA-256 computed inline, in the same pass as the bytes move.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use futures::Stream;
use sha2::digest::common::hazmat::{SerializableState, SerializedState};
use sha2::{Digest, Sha256};
use tokio::io::AsyncWrite;
use tokio_util::sync::PollSender;

use crate::io::progress::Progress;

/// Whether `s` is a 256-bit digest in hex (64 digits, either case): a SHA-256 of an archive
/// or a BLAKE3 piece address.
pub(crate) fn is_hex_digest(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Lowercase hex of a finished digest.
pub(crate) fn hex_digest(h: Sha256) -> String {
    hex::encode(h.finalize())
}

/// Bytes handed to the hashing thread at a time (at least).
const BLOCK: usize = 1 << 20;
/// Batches queued for the hashing thread; bounds the extra memory to a few MiB.
const QUEUE: usize = 4;

/// SHA-256 computed on a helper thread, so on a 2-core machine hashing overlaps the
/// reading, tar framing and writing done by the caller. Bytes are still hashed once, in
/// the order they pass, as they pass.
///
/// The thread receives batches of [`Bytes`] of at least [`BLOCK`] bytes: chunks that
/// arrive as `Bytes` (downloads, uploads, file reads) are shared with it without a copy,
/// and one wake-up covers many small network chunks. Borrowed slices (the producer's
/// writes) are copied into a block first.
struct BackgroundSha {
    block: Vec<u8>,
    batch: Vec<Item>,
    batch_len: usize,
    tx: PollSender<Vec<Item>>,
    done: Option<tokio::sync::oneshot::Receiver<(Sha256, Vec<Mark>)>>,
    bytes: u64,
    progress: Option<Progress>,
}

/// What the hashing thread is handed, in order.
enum Item {
    /// Bytes to hash.
    Data(Bytes),
    /// Record the digest's state here.
    Mark,
}

/// The digest's state at a point of the stream and the bytes hashed before it: hashing can
/// resume there ([`HashFeed::resume`]) without the bytes before it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Mark {
    /// Bytes hashed before this point.
    pub offset: u64,
    /// The SHA-256 state (RustCrypto's serialized form), hex.
    pub state: String,
}

impl Mark {
    /// `offset:state`, as stored.
    pub(crate) fn to_text(&self) -> String {
        format!("{}:{}", self.offset, self.state)
    }

    /// Parses [`Mark::to_text`]'s form; `None` if it is not one.
    pub(crate) fn parse(text: &str) -> Option<Mark> {
        let (offset, state) = text.split_once(':')?;
        let m = Mark {
            offset: offset.parse().ok()?,
            state: state.to_string(),
        };
        m.hasher().map(|_| m)
    }

    /// The digest in this state.
    fn hasher(&self) -> Option<Sha256> {
        let bytes = hex::decode(&self.state).ok()?;
        let state = SerializedState::<Sha256>::try_from(bytes.as_slice()).ok()?;
        Sha256::deserialize(&state).ok()
    }

    /// The hex SHA-256 of the stream if it ended here after `tail`.
    pub(crate) fn finish_with(&self, tail: &[u8]) -> Option<String> {
        let mut h = self.hasher()?;
        h.update(tail);
        Some(hex_digest(h))
    }
}

fn stopped() -> io::Error {
    io::Error::other("hashing thread stopped")
}

impl BackgroundSha {
    fn new(progress: Option<Progress>) -> Self {
        Self::from_state(Sha256::new(), 0, progress)
    }

    /// A digest that continues from `h`, which has hashed `bytes` bytes.
    fn from_state(h: Sha256, bytes: u64, progress: Option<Progress>) -> Self {
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Vec<Item>>(QUEUE);
        let (done_tx, done) = tokio::sync::oneshot::channel();
        std::thread::Builder::new()
            .name("sha256".into())
            .spawn(move || {
                let mut h = h;
                let mut marks = Vec::new();
                let mut offset = bytes;
                while let Some(batch) = rx.blocking_recv() {
                    for item in &batch {
                        match item {
                            Item::Data(b) => {
                                h.update(b);
                                offset += b.len() as u64;
                            }
                            Item::Mark => marks.push(Mark {
                                offset,
                                state: hex::encode(h.serialize().as_slice()),
                            }),
                        }
                    }
                }
                let _ = done_tx.send((h, marks));
            })
            .map_err(|e| tracing::error!(error = %e, "cannot start the hashing thread"))
            .ok();
        BackgroundSha {
            block: Vec::new(),
            batch: Vec::new(),
            batch_len: 0,
            tx: PollSender::new(tx),
            done: Some(done),
            bytes,
            progress,
        }
    }

    /// Records the digest's state after everything consumed so far.
    fn mark(&mut self) {
        if !self.block.is_empty() {
            let part = std::mem::take(&mut self.block);
            self.push(Bytes::from(part));
        }
        self.batch.push(Item::Mark);
    }

    fn push(&mut self, b: Bytes) {
        if !b.is_empty() {
            self.batch_len += b.len();
            self.batch.push(Item::Data(b));
        }
    }

    /// Hands a full batch to the thread; call before consuming new bytes, since it may wait.
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.block.len() >= BLOCK {
            let full = std::mem::replace(&mut self.block, Vec::with_capacity(BLOCK));
            self.push(Bytes::from(full));
        }
        if self.batch_len < BLOCK {
            return Poll::Ready(Ok(()));
        }
        std::task::ready!(self.tx.poll_reserve(cx)).map_err(|_| stopped())?;
        let batch = std::mem::take(&mut self.batch);
        self.batch_len = 0;
        self.tx.send_item(batch).map_err(|_| stopped())?;
        Poll::Ready(Ok(()))
    }

    fn count(&mut self, n: usize) {
        self.bytes += n as u64;
        if let Some(p) = &self.progress {
            p.add(n as u64);
        }
    }

    /// Takes borrowed bytes (copied).
    fn consume(&mut self, data: &[u8]) {
        if self.block.capacity() == 0 {
            self.block.reserve(BLOCK);
        }
        self.block.extend_from_slice(data);
        self.count(data.len());
    }

    /// Takes shared bytes (not copied).
    fn consume_bytes(&mut self, data: Bytes) {
        if !self.block.is_empty() {
            let part = std::mem::take(&mut self.block);
            self.push(Bytes::from(part));
        }
        self.count(data.len());
        self.push(data);
    }

    async fn finish(self) -> io::Result<(String, u64)> {
        let (hash, bytes, _) = self.finish_marked().await?;
        Ok((hash, bytes))
    }

    /// The hex digest, the byte count and the marks recorded, in order.
    async fn finish_marked(mut self) -> io::Result<(String, u64, Vec<Mark>)> {
        let part = std::mem::take(&mut self.block);
        self.push(Bytes::from(part));
        if !self.batch.is_empty() {
            let last = std::mem::take(&mut self.batch);
            let sender = self.tx.get_ref().cloned().ok_or_else(stopped)?;
            sender.send(last).await.map_err(|_| stopped())?;
        }
        self.tx.close();
        let done = self
            .done
            .take()
            .ok_or_else(|| io::Error::other("hash already finished"))?;
        let (h, marks) = done.await.map_err(|_| stopped())?;
        Ok((hex_digest(h), self.bytes, marks))
    }
}

/// SHA-256 of bytes handed over as [`Bytes`], shared with the hashing thread without a
/// copy: for a stream that is hashed but written nowhere as one piece (an incremental
/// snapshot hashes the tar it would be while storing only new pieces).
pub(crate) struct HashFeed {
    sha: BackgroundSha,
}

impl HashFeed {
    /// A new digest; `progress` (if any) is advanced as bytes are fed.
    pub(crate) fn new(progress: Option<Progress>) -> Self {
        HashFeed {
            sha: BackgroundSha::new(progress),
        }
    }

    /// A digest that continues where `mark` was taken (of a stream whose first
    /// `mark.offset` bytes are the same); `None` if the mark is not a valid state.
    pub(crate) fn resume(mark: &Mark, progress: Option<Progress>) -> Option<Self> {
        Some(HashFeed {
            sha: BackgroundSha::from_state(mark.hasher()?, mark.offset, progress),
        })
    }

    /// Hashes `data` next (waits while the thread's queue is full).
    pub(crate) async fn feed(&mut self, data: Bytes) -> io::Result<()> {
        std::future::poll_fn(|cx| self.sha.poll_ready(cx)).await?;
        self.sha.consume_bytes(data);
        Ok(())
    }

    /// Records the state after everything fed so far (returned by [`HashFeed::finish`]).
    pub(crate) fn mark(&mut self) {
        self.sha.mark();
    }

    /// The hex SHA-256 and byte count of everything fed, and the marks in order.
    pub(crate) async fn finish(self) -> io::Result<(String, u64, Vec<Mark>)> {
        self.sha.finish_marked().await
    }
}

/// A writer that hashes and counts everything written through it.
pub(crate) struct HashingWriter<W> {
    inner: W,
    sha: BackgroundSha,
}

impl<W> HashingWriter<W> {
    /// Wraps `inner`; `progress` (if any) is advanced as bytes pass.
    pub(crate) fn new(inner: W, progress: Option<Progress>) -> Self {
        HashingWriter {
            inner,
            sha: BackgroundSha::new(progress),
        }
    }

    /// The inner writer, the hex SHA-256 and the byte count.
    pub(crate) async fn finish(self) -> io::Result<(W, String, u64)> {
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

/// A byte stream that hashes and counts every chunk passing through it.
pub(crate) struct HashingStream<S> {
    inner: S,
    sha: BackgroundSha,
}

impl<S> HashingStream<S> {
    /// Wraps `inner`; `progress` (if any) is advanced as bytes pass.
    pub(crate) fn new(inner: S, progress: Option<Progress>) -> Self {
        HashingStream {
            inner,
            sha: BackgroundSha::new(progress),
        }
    }

    /// The hex SHA-256 and byte count of what passed.
    pub(crate) async fn finish(self) -> io::Result<(String, u64)> {
        self.sha.finish().await
    }
}

impl<S: Stream<Item = io::Result<Bytes>> + Unpin> Stream for HashingStream<S> {
    type Item = io::Result<Bytes>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        if let Err(e) = std::task::ready!(this.sha.poll_ready(cx)) {
            return Poll::Ready(Some(Err(e)));
        }
        let item = std::task::ready!(Pin::new(&mut this.inner).poll_next(cx));
        if let Some(Ok(b)) = &item {
            this.sha.consume_bytes(b.clone());
        }
        Poll::Ready(item)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use tokio::io::AsyncWriteExt;

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
        // Chunks of uneven sizes, some smaller than a block, some larger, one empty.
        let chunks: Vec<io::Result<Bytes>> = [0, 1, 70_000, 0, 3 * BLOCK, 2 * BLOCK - 57_656]
            .iter()
            .scan(0, |at, &n| {
                let c = Bytes::copy_from_slice(&data[*at..*at + n]);
                *at += n;
                Some(Ok(c))
            })
            .collect();
        let mut s = HashingStream::new(futures::stream::iter(chunks), Some(Arc::clone(&progress)));
        let mut passed = Vec::new();
        while let Some(c) = futures::StreamExt::next(&mut s).await {
            passed.extend_from_slice(&c.unwrap());
        }
        assert_eq!(passed, data);
        assert_eq!(s.finish().await.unwrap(), (expected, len as u64));
        assert_eq!(progress.done(), len as u64);
    }

    #[tokio::test]
    async fn hashing_resumes_from_a_mark_as_if_it_had_read_everything_before() {
        let data: Vec<u8> = (0..3 * BLOCK + 4096).map(|i| (i % 253) as u8).collect();
        let expected = hex::encode(Sha256::digest(&data));
        let cut = 2 * BLOCK + 512;
        let mut feed = HashFeed::new(None);
        feed.feed(Bytes::copy_from_slice(&data[..100]))
            .await
            .unwrap();
        feed.mark();
        feed.feed(Bytes::copy_from_slice(&data[100..cut]))
            .await
            .unwrap();
        feed.mark();
        feed.feed(Bytes::copy_from_slice(&data[cut..]))
            .await
            .unwrap();
        let (hash, n, marks) = feed.finish().await.unwrap();
        assert_eq!((hash.as_str(), n), (expected.as_str(), data.len() as u64));
        assert_eq!(
            marks.iter().map(|m| m.offset).collect::<Vec<_>>(),
            [100, cut as u64]
        );
        let mark = Mark::parse(&marks[1].to_text()).unwrap();
        assert_eq!(mark, marks[1]);
        let mut resumed = HashFeed::resume(&mark, None).unwrap();
        resumed
            .feed(Bytes::copy_from_slice(&data[cut..]))
            .await
            .unwrap();
        let (hash, n, _) = resumed.finish().await.unwrap();
        assert_eq!((hash.as_str(), n), (expected.as_str(), data.len() as u64));
        assert_eq!(mark.finish_with(&data[cut..]).unwrap(), expected);
        assert!(Mark::parse("12:zz").is_none() && Mark::parse("nonsense").is_none());
    }
}

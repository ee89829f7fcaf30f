//! Writing a large new file front to back on a blocking thread, without crowding out the
//! WAL's flushes.
//!
//! Snapshots and recovery staging write GiBs that nothing reads back soon. How the bytes go
//! out depends on what the [`crate::io::pacer::Pacer`] sees:
//!
//! - with no durable writes around, through the page cache, made durable and dropped from
//!   it a window (16 MiB) at a time by a second thread while the next window is filled: the
//!   cache never holds more than two windows of ours, and on this project's virtual disks
//!   long cached runs were written back faster than direct writes of any size or queue
//!   depth (512 MiB: 0.8–1.1 s against 1.2–2.0 s for direct writes of 512 KiB–8 MiB, one to
//!   four in flight);
//! - while WAL flushes keep coming, with direct I/O (`O_DIRECT`) in pieces, one after each
//!   flush, sized by the flushes' measured latency and made durable as they are written
//!   (`RWF_DSYNC`), so a flush never finds our bytes queued in the device ahead of it.
//!
//! Filesystems that refuse `O_DIRECT` (tmpfs) get the same code with ordinary writes.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::Path;
use std::pin::Pin;
use std::sync::mpsc;
use std::task::{Context, Poll};

use rustix::io::ReadWriteFlags;
use tokio::io::AsyncWrite;
use tokio::sync::{mpsc as async_mpsc, oneshot};

use crate::io::pacer::Write;

/// Alignment of buffers, offsets and lengths that direct I/O needs (the page size covers
/// every logical block size in use).
const ALIGN: usize = 4096;
/// Bytes per write: large enough to keep the device streaming, small enough that a WAL
/// flush queued behind one waits only a fraction of a millisecond.
const BLOCK: usize = 512 << 10;
/// Buffers per file: one being filled, one being written, one spare.
const BUFFERS: usize = 3;

/// One aligned write buffer.
struct Block {
    mem: Vec<u8>,
    start: usize,
    len: usize,
}

impl Block {
    fn new() -> Self {
        let mem = vec![0u8; BLOCK + ALIGN];
        // `align_offset` may decline (it never does for u8 pointers in practice); writes then
        // fall back to whatever the filesystem accepts, and an EINVAL is reported as an error.
        let start = mem.as_ptr().align_offset(ALIGN).min(ALIGN);
        Block { mem, start, len: 0 }
    }

    fn fill(&mut self, data: &[u8]) -> usize {
        let n = data.len().min(BLOCK - self.len);
        let at = self.start + self.len;
        self.mem[at..at + n].copy_from_slice(&data[..n]);
        self.len += n;
        n
    }

    fn is_full(&self) -> bool {
        self.len == BLOCK
    }

    /// The bytes to write: the filled part, rounded up to the alignment (the padding is cut
    /// off by the final truncate).
    fn aligned(&self) -> &[u8] {
        let len = self.len.div_ceil(ALIGN) * ALIGN;
        &self.mem[self.start..self.start + len]
    }
}

enum Job {
    Write(Block),
    /// Truncate to the exact length, fsync, and report.
    Finish(u64, oneshot::Sender<io::Result<()>>),
}

/// A new file written sequentially through [`AsyncWrite`], then made durable by
/// [`BulkFile::finish`]. Until then its contents are unspecified; dropping it stops the
/// writes (the caller removes the file).
pub(crate) struct BulkFile {
    cur: Option<Block>,
    created: usize,
    jobs: mpsc::Sender<Job>,
    returned: async_mpsc::UnboundedReceiver<io::Result<Block>>,
    len: u64,
}

/// Creates `path` (which must not exist) for writing, with `O_DIRECT` where the filesystem
/// takes it.
fn open_new(path: &Path) -> io::Result<File> {
    let open = |direct: bool| {
        let mut o = OpenOptions::new();
        o.write(true).create_new(true);
        if direct {
            o.custom_flags(rustix::fs::OFlags::DIRECT.bits() as i32);
        }
        o.open(path)
    };
    match open(true) {
        Err(e) if e.raw_os_error() == Some(rustix::io::Errno::INVAL.raw_os_error()) => open(false),
        other => other,
    }
}

impl BulkFile {
    /// Creates `path` (which must not exist), reserving blocks as `reserve` says.
    pub(crate) async fn create(path: &Path, reserve: Reservation) -> io::Result<Self> {
        let path = path.to_path_buf();
        let file = tokio::task::spawn_blocking(move || open_new(&path))
            .await
            .map_err(io::Error::other)??;
        let (jobs, rx) = mpsc::channel();
        let (back, returned) = async_mpsc::unbounded_channel();
        let (hint, step) = match reserve {
            Reservation::None => (0, 0),
            Reservation::All(len) => (len, len),
            Reservation::Ahead(len) => (len, Reserve::STEP),
        };
        let reserve = Reserve {
            hint,
            step,
            done: 0,
        };
        tokio::task::spawn_blocking(move || writer(file, reserve, rx, back));
        Ok(BulkFile {
            cur: None,
            created: 0,
            jobs,
            returned,
            len: 0,
        })
    }

    fn stopped() -> io::Error {
        io::Error::other("the file writer stopped")
    }

    /// A buffer with room: a free one, a new one while under the limit, or the next one
    /// the writer hands back (an error it hit surfaces here).
    fn poll_block(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.cur.is_some() {
            return Poll::Ready(Ok(()));
        }
        let block = match self.returned.try_recv() {
            Ok(r) => r?,
            Err(async_mpsc::error::TryRecvError::Disconnected) => {
                return Poll::Ready(Err(Self::stopped()))
            }
            Err(async_mpsc::error::TryRecvError::Empty) if self.created < BUFFERS => {
                self.created += 1;
                Block::new()
            }
            Err(async_mpsc::error::TryRecvError::Empty) => {
                match std::task::ready!(self.returned.poll_recv(cx)) {
                    Some(r) => r?,
                    None => return Poll::Ready(Err(Self::stopped())),
                }
            }
        };
        self.cur = Some(block);
        Poll::Ready(Ok(()))
    }

    /// Writes what is buffered, truncates the file to the bytes written, fsyncs it, and
    /// returns its length.
    pub(crate) async fn finish(mut self) -> io::Result<u64> {
        let (tx, rx) = oneshot::channel();
        if let Some(block) = self.cur.take().filter(|b| b.len > 0) {
            let _ = self.jobs.send(Job::Write(block));
        }
        // A failed send drops `tx`, so a stopped writer shows up as a closed `rx`.
        let _ = self.jobs.send(Job::Finish(self.len, tx));
        if let Ok(result) = rx.await {
            return result.map(|()| self.len);
        }
        // The writer stopped early; it sent the reason back with the buffers.
        while let Some(r) = self.returned.recv().await {
            r?;
        }
        Err(Self::stopped())
    }
}

impl AsyncWrite for BulkFile {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        std::task::ready!(this.poll_block(cx))?;
        let Some(block) = this.cur.as_mut() else {
            return Poll::Ready(Err(Self::stopped()));
        };
        let n = block.fill(buf);
        this.len += n as u64;
        if block.is_full() {
            if let Some(full) = this.cur.take() {
                this.jobs
                    .send(Job::Write(full))
                    .map_err(|_| Self::stopped())?;
            }
        }
        Poll::Ready(Ok(n))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // Direct writes go out in whole aligned blocks; the partial last one waits for
        // `finish`, which is the only point where the contents count.
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.poll_flush(cx)
    }
}

/// How a [`BulkFile`] reserves disk blocks. Writes into reserved blocks inside the file's
/// size are plain overwrites for the filesystem, which keeps its journal out of the way of
/// concurrent WAL flushes; reserving is best effort.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Reservation {
    /// Nothing: the writes allocate as they go.
    None,
    /// This many bytes, all at the first write: for sizes we computed ourselves.
    All(u64),
    /// Up to this many bytes, one step ahead of the writes: for sizes claimed by untrusted
    /// input (an archive), which then never reserve more than one step beyond what was sent.
    Ahead(u64),
}

/// Reservation state of the writer.
struct Reserve {
    hint: u64,
    done: u64,
    step: u64,
}

impl Reserve {
    const STEP: u64 = 64 << 20;

    fn ahead_of(&mut self, file: &File, end: u64) {
        if end > self.done && self.done < self.hint {
            let len = self.step.min(self.hint - self.done);
            // Best effort: without it the writes allocate as they go.
            let _ =
                rustix::fs::fallocate(file, rustix::fs::FallocateFlags::empty(), self.done, len);
            self.done += len;
        }
    }
}

/// Bytes written through the page cache before they are made durable and dropped from it:
/// large enough that the device sees long sequential writeback, small enough that a WAL
/// flush arriving meanwhile waits behind at most this much. One window is written back
/// while the next one is filled; no more than two are ever cached.
const WINDOW: u64 = 16 << 20;

/// The file as the writer holds it: unpaced pieces through the page cache, written back a
/// [`WINDOW`] at a time by a [`Syncer`]; durable pieces with `O_DIRECT` + `RWF_DSYNC` (see
/// the module documentation). The one descriptor switches between the two with `F_SETFL`.
struct Sink {
    file: File,
    /// Whether the filesystem takes `O_DIRECT` (tmpfs does not).
    can_direct: bool,
    /// Whether the descriptor has `O_DIRECT` set now.
    direct: bool,
    /// Bytes before this offset are durable and out of the page cache.
    clean: u64,
    /// Bytes before this offset are written.
    end: u64,
    /// The thread writing back cached windows, once a file has needed one, and whether it
    /// is at work (its answer not yet taken).
    syncer: Option<Syncer>,
    syncing: bool,
}

/// A thread that makes a file durable up to each offset it is sent, drops those pages from
/// the cache, and answers with the offset (or the error).
struct Syncer {
    ask: mpsc::Sender<(u64, u64)>,
    done: mpsc::Receiver<io::Result<u64>>,
}

impl Syncer {
    fn start(file: &File) -> io::Result<Self> {
        let file = file.try_clone()?;
        let (ask, asked) = mpsc::channel::<(u64, u64)>();
        let (tell, done) = mpsc::channel();
        std::thread::Builder::new()
            .name("writeback".into())
            .spawn(move || {
                // Ends when the sink is dropped (its sender with it).
                while let Ok((from, to)) = asked.recv() {
                    let result = file.sync_data().map(|()| {
                        drop_cached(&file, from, to - from);
                        to
                    });
                    if tell.send(result).is_err() {
                        return;
                    }
                }
            })?;
        Ok(Syncer { ask, done })
    }
}

/// Advises the kernel to drop `len` bytes at `from` from the page cache: nothing reads a
/// snapshot or a staged file back soon, and the cache is the collections'. Advice only:
/// pages it cannot drop stay cached.
fn drop_cached(file: &File, from: u64, len: u64) {
    let _ = rustix::fs::fadvise(
        file,
        from,
        std::num::NonZeroU64::new(len),
        rustix::fs::Advice::DontNeed,
    );
}

impl Sink {
    fn new(file: File) -> Self {
        let can_direct =
            rustix::fs::fcntl_getfl(&file).is_ok_and(|f| f.contains(rustix::fs::OFlags::DIRECT));
        Sink {
            file,
            can_direct,
            direct: can_direct,
            clean: 0,
            end: 0,
            syncer: None,
            syncing: false,
        }
    }

    /// Writes `piece` at `offset` (pieces come in order, back to back).
    fn write(&mut self, piece: &[u8], offset: u64, how: Write) -> io::Result<()> {
        match how {
            Write::Plain => {
                self.set_direct(false)?;
                write_all_at(&self.file, piece, offset, Write::Plain)?;
                self.end = offset + piece.len() as u64;
                self.write_back()?;
            }
            Write::Durable => {
                // What is still cached would be written back in front of the next WAL
                // flush: settle it once now; from here nothing goes through the cache.
                self.settle()?;
                self.set_direct(true)?;
                write_all_at(&self.file, piece, offset, Write::Durable)?;
                self.end = offset + piece.len() as u64;
                self.clean = self.end;
            }
        }
        Ok(())
    }

    /// Hands a full window to the syncer when it is free, and waits for it while two
    /// windows are cached.
    fn write_back(&mut self) -> io::Result<()> {
        loop {
            if self.syncing {
                let blocking = self.end - self.clean >= 2 * WINDOW;
                if !self.collect(blocking)? {
                    return Ok(());
                }
            }
            let cached = self.end - self.clean;
            if cached < WINDOW {
                return Ok(());
            }
            let syncer = match &self.syncer {
                Some(s) => s,
                None => self.syncer.insert(Syncer::start(&self.file)?),
            };
            syncer
                .ask
                .send((self.clean, self.end))
                .map_err(|_| io::Error::other("the writeback thread stopped"))?;
            self.syncing = true;
            if cached < 2 * WINDOW {
                return Ok(());
            }
        }
    }

    /// Takes the syncer's answer, waiting for it if `wait`; returns whether it had one.
    fn collect(&mut self, wait: bool) -> io::Result<bool> {
        let (true, Some(syncer)) = (self.syncing, &self.syncer) else {
            return Ok(false);
        };
        let answer = if wait {
            syncer.done.recv().ok()
        } else {
            match syncer.done.try_recv() {
                Err(mpsc::TryRecvError::Empty) => return Ok(false),
                other => other.ok(),
            }
        };
        let to = answer.ok_or_else(|| io::Error::other("the writeback thread stopped"))??;
        self.clean = to;
        self.syncing = false;
        Ok(true)
    }

    /// Makes everything written so far durable and drops it from the page cache.
    fn settle(&mut self) -> io::Result<()> {
        self.collect(true)?;
        if self.end > self.clean {
            self.file.sync_data()?;
            drop_cached(&self.file, self.clean, self.end - self.clean);
            self.clean = self.end;
        }
        Ok(())
    }

    fn set_direct(&mut self, on: bool) -> io::Result<()> {
        if !self.can_direct || self.direct == on {
            return Ok(());
        }
        let flags = rustix::fs::fcntl_getfl(&self.file)?;
        let flags = if on {
            flags | rustix::fs::OFlags::DIRECT
        } else {
            flags - rustix::fs::OFlags::DIRECT
        };
        rustix::fs::fcntl_setfl(&self.file, flags)?;
        self.direct = on;
        Ok(())
    }

    /// Truncates to `len` and makes the file durable, its pages dropped from the cache.
    fn finish(&mut self, len: u64) -> io::Result<()> {
        self.collect(true)?;
        self.file.set_len(len)?;
        self.file.sync_all()?;
        drop_cached(&self.file, self.clean, len.saturating_sub(self.clean));
        Ok(())
    }
}

/// The blocking side: writes blocks in order at increasing offsets and hands each buffer
/// back; on the first error it reports and stops.
fn writer(
    file: File,
    mut reserve: Reserve,
    jobs: mpsc::Receiver<Job>,
    back: async_mpsc::UnboundedSender<io::Result<Block>>,
) {
    let mut offset = 0u64;
    let mut pacer = crate::io::pacer::Pacer::new();
    let mut sink = Sink::new(file);
    while let Ok(job) = jobs.recv() {
        match job {
            Job::Write(mut block) => {
                let data = block.aligned();
                reserve.ahead_of(&sink.file, offset + data.len() as u64);
                let mut done = 0;
                while done < data.len() {
                    let (n, how) = pacer.grant(data.len() - done, ALIGN);
                    let piece = &data[done..done + n];
                    if let Err(e) = sink.write(piece, offset + done as u64, how) {
                        let _ = back.send(Err(e));
                        return;
                    }
                    done += n;
                }
                offset += block.len as u64;
                block.len = 0;
                if back.send(Ok(block)).is_err() {
                    return;
                }
            }
            Job::Finish(len, reply) => {
                let _ = reply.send(sink.finish(len));
                return;
            }
        }
    }
}

/// Writes all of `buf` at `offset`; [`Write::Durable`] blocks are durable when this returns.
fn write_all_at(file: &File, mut buf: &[u8], mut offset: u64, how: Write) -> io::Result<()> {
    let flags = match how {
        Write::Plain => ReadWriteFlags::empty(),
        Write::Durable => ReadWriteFlags::DSYNC,
    };
    while !buf.is_empty() {
        match rustix::io::pwritev2(file, &[io::IoSlice::new(buf)], offset, flags) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => {
                buf = &buf[n..];
                offset += n as u64;
            }
            Err(rustix::io::Errno::INTR) => {}
            // Kernels or filesystems without the per-write flag: a plain write, then a sync.
            Err(rustix::io::Errno::OPNOTSUPP | rustix::io::Errno::NOSYS)
                if how == Write::Durable =>
            {
                file.write_all_at(buf, offset)?;
                return file.sync_data();
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    #[tokio::test]
    async fn writes_exactly_the_bytes_given_in_any_pieces() {
        let dir = tempfile::tempdir().unwrap();
        // Around the block and alignment boundaries, and more blocks than buffers.
        for len in [
            0,
            1,
            ALIGN - 1,
            ALIGN + 1,
            BLOCK,
            BLOCK + 7,
            5 * BLOCK + 12_345,
        ] {
            let data: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
            let path = dir.path().join(format!("f{len}"));
            let reserve = match len % 3 {
                0 => Reservation::None,
                1 => Reservation::All(len as u64 / 2),
                _ => Reservation::Ahead(len as u64 * 2),
            };
            let mut f = BulkFile::create(&path, reserve).await.unwrap();
            for piece in data.chunks(300_001) {
                f.write_all(piece).await.unwrap();
            }
            assert_eq!(f.finish().await.unwrap(), len as u64);
            assert_eq!(std::fs::read(&path).unwrap(), data, "length {len}");
        }
    }

    #[tokio::test]
    async fn a_size_hint_reserves_disk_only_a_step_ahead_of_the_writes() {
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        // A hint of 1 GiB, as a lying archive might claim, and 4 blocks really written: the
        // fourth buffer is only available once the first write is done.
        let mut f = BulkFile::create(&path, Reservation::Ahead(1 << 30))
            .await
            .unwrap();
        f.write_all(&vec![7u8; 4 * BLOCK]).await.unwrap();
        let m = std::fs::metadata(&path).unwrap();
        assert!(m.blocks() * 512 > 0, "the first step is reserved");
        assert!(
            m.blocks() * 512 <= Reserve::STEP + 4 * BLOCK as u64,
            "{} bytes",
            m.blocks() * 512
        );
        assert!(m.len() <= Reserve::STEP);
        assert_eq!(f.finish().await.unwrap(), 4 * BLOCK as u64);
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 4 * BLOCK as u64);
    }

    #[test]
    fn durable_block_writes_land_whole() {
        let dir = tempfile::tempdir().unwrap();
        let file = open_new(&dir.path().join("f")).unwrap();
        let _ = rustix::fs::fcntl_setfl(&file, rustix::fs::OFlags::empty());
        let data: Vec<u8> = (0..3 * ALIGN).map(|i| (i % 253) as u8).collect();
        write_all_at(&file, &data[ALIGN..], ALIGN as u64, Write::Durable).unwrap();
        write_all_at(&file, &data[..ALIGN], 0, Write::Plain).unwrap();
        assert_eq!(std::fs::read(dir.path().join("f")).unwrap(), data);
    }

    #[test]
    fn cached_and_durable_pieces_land_in_order_with_at_most_two_windows_cached() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let mut sink = Sink::new(open_new(&path).unwrap());
        // Runs of pieces through the cache (35 MiB: the writer waits for the syncer once two
        // windows are cached) and durable ones between.
        let runs = [(Write::Plain, 140), (Write::Durable, 4), (Write::Plain, 9)];
        let piece = 256 << 10;
        let mut block = Block::new();
        let (mut expected, mut offset, mut seed) = (Vec::new(), 0u64, 0u8);
        for round in 0..2u8 {
            for &(how, count) in &runs {
                for _ in 0..count {
                    seed = seed.wrapping_add(1);
                    block.len = 0;
                    block.fill(&vec![seed ^ round; piece]);
                    sink.write(block.aligned(), offset, how).unwrap();
                    expected.extend_from_slice(block.aligned());
                    offset += piece as u64;
                    assert!(
                        sink.end - sink.clean < 2 * WINDOW,
                        "at most two windows cached"
                    );
                    if how == Write::Durable {
                        assert_eq!(sink.clean, sink.end, "nothing cached after a durable piece");
                    }
                }
            }
        }
        sink.finish(offset - 1000).unwrap();
        expected.truncate(expected.len() - 1000);
        assert_eq!(std::fs::read(&path).unwrap(), expected);
    }

    #[tokio::test]
    async fn an_existing_file_is_never_overwritten() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, b"keep").unwrap();
        let err = BulkFile::create(&path, Reservation::None)
            .await
            .err()
            .unwrap();
        assert_eq!(err.kind(), io::ErrorKind::AlreadyExists);
        assert_eq!(std::fs::read(&path).unwrap(), b"keep");
    }
}

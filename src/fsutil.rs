//! Small filesystem helpers shared by the storage layers.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::Path;

/// Writes `bytes` to `path` atomically: a temp file in the same directory, fsync, rename,
/// then fsync of the directory so the rename itself is durable.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.{}.tmp", uuid::Uuid::new_v4().simple()));
    let result = (|| {
        let mut f = File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        fs::rename(&tmp, path)?;
        sync_dir(dir)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// Fsyncs a directory so entries created, renamed or removed in it are durable.
pub(crate) fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Moves a directory tree: a rename when possible, else (across filesystems) a copy with
/// every file fsynced, then removal of the source.
pub(crate) fn move_dir(src: &Path, dst: &Path) -> io::Result<()> {
    match fs::rename(src, dst) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::CrossesDevices => {
            copy_tree(src, dst)?;
            fs::remove_dir_all(src)
        }
        Err(e) => Err(e),
    }
}

fn copy_tree(src: &Path, dst: &Path) -> io::Result<()> {
    fs::create_dir_all(dst)?;
    for entry in fs::read_dir(src)? {
        let entry = entry?;
        let target = dst.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_tree(&entry.path(), &target)?;
        } else {
            fs::copy(entry.path(), &target)?;
            File::open(&target)?.sync_all()?;
        }
    }
    sync_dir(dst)
}

/// Starts writeback of a file being written, every [`EarlyWriteback::EVERY`] bytes: without
/// it a multi-GiB snapshot sits in dirty page cache until the final `fsync` (background
/// writeback starts only at 10% of RAM), which then waits for all of it. With it, the final
/// `fsync` waits only for the tail.
///
/// It uses `posix_fadvise(DONTNEED)`, which on Linux submits the range for writeback without
/// waiting and without an ext4 journal commit (an `fdatasync` here would force commits that
/// make every concurrent WAL `fdatasync` wait), then drops the range from the cache once it
/// is clean. Durability still comes from the final `fsync`.
pub(crate) struct EarlyWriteback {
    file: std::sync::Arc<File>,
    done_until: u64,
    written: u64,
    pending: Option<tokio::task::JoinHandle<io::Result<()>>>,
}

impl EarlyWriteback {
    // Small requests keep the device queue short, so WAL fsyncs running meanwhile wait less.
    const EVERY: u64 = 8 << 20;

    /// Tracks `file` (a clone of the descriptor being written).
    pub(crate) fn new(file: File) -> Self {
        EarlyWriteback {
            file: std::sync::Arc::new(file),
            done_until: 0,
            written: 0,
            pending: None,
        }
    }

    /// Records `n` more bytes written; may start writeback of what was written so far.
    pub(crate) fn wrote(&mut self, n: u64) -> io::Result<()> {
        self.written += n;
        if self.pending.as_ref().is_some_and(|p| !p.is_finished()) {
            return Ok(());
        }
        if let Some(p) = self.pending.take() {
            // A finished handle resolves at once; `now_or_never` never waits here.
            if let Some(res) = futures::FutureExt::now_or_never(p) {
                res.map_err(io::Error::other)??;
            }
        }
        if self.written - self.done_until >= Self::EVERY {
            let (file, start, len) = (
                std::sync::Arc::clone(&self.file),
                self.done_until,
                self.written - self.done_until,
            );
            self.done_until = self.written;
            self.pending = Some(tokio::task::spawn_blocking(move || {
                rustix::fs::fadvise(
                    &*file,
                    start,
                    std::num::NonZeroU64::new(len),
                    rustix::fs::Advice::DontNeed,
                )
                .map_err(io::Error::from)
            }));
        }
        Ok(())
    }

    /// Waits for a writeback request still being submitted.
    pub(crate) async fn finish(mut self) -> io::Result<()> {
        match self.pending.take() {
            Some(p) => p.await.map_err(io::Error::other)?,
            None => Ok(()),
        }
    }
}

/// Allocates `len` bytes of blocks for a file about to be written, best effort.
///
/// On ext4 (data=ordered) blocks allocated lazily at writeback join the running journal
/// transaction, so every concurrent WAL `fdatasync` would wait for this file's data to
/// reach the disk; blocks allocated up front carry no such ordering.
pub(crate) fn preallocate(file: &File, len: u64) {
    if len > 0 {
        // Unsupported filesystems simply allocate lazily as before.
        let _ = rustix::fs::fallocate(file, rustix::fs::FallocateFlags::KEEP_SIZE, 0, len);
    }
}

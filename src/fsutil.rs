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

/// Starts writeback of a file being written, every [`EarlyWriteback::EVERY`] bytes, on a
/// blocking thread: without it a multi-GiB snapshot sits in dirty page cache until the final
/// `fsync` (background writeback starts only at 10% of RAM), which then waits for all of it.
/// With it, the final `fsync` waits only for the tail.
pub(crate) struct EarlyWriteback {
    file: std::sync::Arc<File>,
    since: u64,
    pending: Option<tokio::task::JoinHandle<io::Result<()>>>,
}

impl EarlyWriteback {
    const EVERY: u64 = 64 << 20;

    /// Tracks `file` (a clone of the descriptor being written).
    pub(crate) fn new(file: File) -> Self {
        EarlyWriteback {
            file: std::sync::Arc::new(file),
            since: 0,
            pending: None,
        }
    }

    /// Records `n` more bytes written; may start a background `fdatasync`.
    pub(crate) fn wrote(&mut self, n: u64) -> io::Result<()> {
        self.since += n;
        if let Some(p) = &self.pending {
            if !p.is_finished() {
                return Ok(());
            }
            self.reap_finished()?;
        }
        if self.since >= Self::EVERY {
            self.since = 0;
            let file = std::sync::Arc::clone(&self.file);
            self.pending = Some(tokio::task::spawn_blocking(move || file.sync_data()));
        }
        Ok(())
    }

    fn reap_finished(&mut self) -> io::Result<()> {
        if let Some(p) = self.pending.take() {
            // Finished handles resolve at once; `now_or_never` never waits here.
            if let Some(res) = futures::FutureExt::now_or_never(p) {
                res.map_err(io::Error::other)??;
            }
        }
        Ok(())
    }

    /// Waits for a background sync still running; its error is the file's error.
    pub(crate) async fn finish(mut self) -> io::Result<()> {
        match self.pending.take() {
            Some(p) => p.await.map_err(io::Error::other)?,
            None => Ok(()),
        }
    }
}

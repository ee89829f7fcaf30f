//! Local-filesystem backend: a temp file in the target directory (a [`crate::io::bulk_file`]),
//! fsync, rename on commit. Pieces (`put_if_absent`) go through the same paced writer when
//! large: written plainly, four at once, their `fsync`s queued many megabytes ahead of the
//! WAL's flushes and made the upserts during a linked snapshot wait (BENCHMARKS.md).

use std::fmt;
use std::io;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::task::{Context, Poll};

use async_trait::async_trait;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures::stream::BoxStream;
use futures::StreamExt;
use tokio::io::AsyncWrite;

use crate::io::bulk_file::{BulkFile, Reservation};
use crate::io::file_stream::file_stream;
#[cfg(test)]
use crate::io::file_stream::READ_CHUNK;

use super::{Backend, BackendError, ByteStream, CreateOptions, ObjectKey, ObjectMeta, ObjectSink};

/// Hidden temp files end with this; start-up removes them.
const TMP_SUFFIX: &str = ".tmp";

/// Snapshots as files under one root directory.
#[derive(Debug, Clone)]
pub struct LocalBackend {
    root: PathBuf,
}

impl fmt::Display for LocalBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "local directory `{}`", self.root.display())
    }
}

/// A blocking task that died (panicked or was cancelled) before it could report.
fn lost_task(action: &'static str) -> impl Fn(tokio::task::JoinError) -> BackendError {
    move |e| BackendError::Io {
        action,
        path: String::new(),
        source: io::Error::other(e),
    }
}

fn io_err<'a>(action: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> BackendError + 'a {
    move |source| {
        if source.kind() == io::ErrorKind::NotFound {
            BackendError::NotFound(path.display().to_string())
        } else {
            BackendError::Io {
                action,
                path: path.display().to_string(),
                source,
            }
        }
    }
}

fn meta_of(key: ObjectKey, m: &std::fs::Metadata) -> ObjectMeta {
    // mtime exists on every filesystem, unlike the birth time Qdrant reports (#3427).
    let last_modified: DateTime<Utc> = m
        .modified()
        .map(DateTime::from)
        .unwrap_or_else(|_| Utc::now());
    ObjectMeta {
        key,
        size: m.len(),
        last_modified,
    }
}

impl LocalBackend {
    /// A backend rooted at `root` (created if missing).
    pub fn new(root: impl Into<PathBuf>) -> io::Result<Self> {
        let root = root.into();
        std::fs::create_dir_all(&root)?;
        Ok(LocalBackend { root })
    }

    /// The path of a key; keys are validated, so this never leaves the root.
    pub fn path_of(&self, key: &ObjectKey) -> PathBuf {
        let mut p = self.root.clone();
        p.extend(key.segments());
        p
    }
}

/// A temp file that becomes the object on commit.
struct LocalSink {
    file: Option<BulkFile>,
    tmp: PathBuf,
    target: PathBuf,
    key: ObjectKey,
}

impl AsyncWrite for LocalSink {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.file.as_mut() {
            Some(f) => Pin::new(f).poll_write(cx, buf),
            None => Poll::Ready(Err(io::Error::other("sink already finished"))),
        }
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.file.as_mut() {
            Some(f) => Pin::new(f).poll_flush(cx),
            None => Poll::Ready(Ok(())),
        }
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // Shutdown only flushes: the object is made visible by `commit`, never implicitly.
        self.as_mut().poll_flush(cx)
    }
}

#[async_trait]
impl ObjectSink for LocalSink {
    async fn commit(mut self: Box<Self>) -> Result<ObjectMeta, BackendError> {
        let Some(file) = self.file.take() else {
            return Err(BackendError::Io {
                action: "failed to commit",
                path: self.target.display().to_string(),
                source: io::Error::other("sink already finished"),
            });
        };
        let tmp = self.tmp.clone();
        let result = async {
            // Writes the tail, cuts the file to its exact length and fsyncs it.
            file.finish()
                .await
                .map_err(io_err("failed to write", &tmp))?;
            tokio::fs::rename(&tmp, &self.target)
                .await
                .map_err(io_err("failed to commit", &self.target))?;
            let dir = self.target.parent().unwrap_or(Path::new(".")).to_path_buf();
            tokio::task::spawn_blocking(move || crate::io::fs::sync_dir(&dir))
                .await
                .map_err(lost_task("failed to sync"))?
                .map_err(io_err("failed to sync directory of", &self.target))?;
            let m = tokio::fs::metadata(&self.target)
                .await
                .map_err(io_err("failed to stat", &self.target))?;
            Ok(meta_of(self.key.clone(), &m))
        }
        .await;
        if result.is_err() {
            let _ = tokio::fs::remove_file(&self.tmp).await;
        }
        result
    }

    async fn abort(mut self: Box<Self>) -> Result<(), BackendError> {
        self.file.take();
        match tokio::fs::remove_file(&self.tmp).await {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io_err("failed to remove", &self.tmp)(e)),
        }
    }
}

impl Drop for LocalSink {
    fn drop(&mut self) {
        // Neither committed nor aborted: remove the hidden temp file (start-up would too).
        if self.file.take().is_some() {
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}

/// Links the open `file` as `target` (see [`Backend::link_file`]): `linkat` of the
/// descriptor itself, so the inode linked is the one pinned even if its name has moved
/// since. A replacement is linked under a hidden name, then renamed over the target.
fn link_open_file(
    file: &std::fs::File,
    target: &Path,
    key: &ObjectKey,
    replace: bool,
) -> Result<(), BackendError> {
    let dir = target.parent().map(Path::to_path_buf).unwrap_or_default();
    std::fs::create_dir_all(&dir).map_err(io_err("failed to create directory", &dir))?;
    let tmp = dir.join(format!(
        ".{}.{}{TMP_SUFFIX}",
        key.file_name(),
        uuid::Uuid::new_v4().simple()
    ));
    let first = if replace { &tmp } else { target };
    match crate::io::fs::link_fd(file, first) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            return Err(BackendError::AlreadyExists(key.to_string()))
        }
        Err(e) => {
            return Err(BackendError::Unsupported(format!(
                "link a file as `{key}`: {}",
                crate::io::fs::link_refusal(&e)
            )))
        }
    }
    if replace {
        if let Err(e) = std::fs::rename(&tmp, target) {
            let _ = std::fs::remove_file(&tmp);
            return Err(io_err("failed to replace", target)(e));
        }
    }
    Ok(())
}

/// Objects this large or larger (the pieces of an incremental snapshot) are written as
/// snapshots are, through a [`BulkFile`] paced next to the WAL's flushes; smaller ones in
/// one write.
const BULK_OBJECT: usize = 256 << 10;

/// A temp file removed when this is dropped still holding it.
struct TempFile(Option<PathBuf>);

impl Drop for TempFile {
    fn drop(&mut self) {
        if let Some(path) = self.0.take() {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// Writes `bytes` as the new file `tmp`, durably.
async fn write_new(tmp: &Path, bytes: Bytes) -> io::Result<()> {
    if bytes.len() < BULK_OBJECT {
        let tmp = tmp.to_path_buf();
        return tokio::task::spawn_blocking(move || {
            let mut f = std::fs::File::create_new(&tmp)?;
            std::io::Write::write_all(&mut f, &bytes)?;
            f.sync_all()
        })
        .await
        .map_err(io::Error::other)?;
    }
    let mut f = BulkFile::create(tmp, Reservation::All(bytes.len() as u64)).await?;
    tokio::io::AsyncWriteExt::write_all(&mut f, &bytes).await?;
    f.finish().await.map(|_| ())
}

#[async_trait]
impl Backend for LocalBackend {
    async fn create(
        &self,
        key: &ObjectKey,
        opts: CreateOptions,
    ) -> Result<Box<dyn ObjectSink>, BackendError> {
        let target = self.path_of(key);
        let dir = target.parent().unwrap_or(&self.root).to_path_buf();
        tokio::fs::create_dir_all(&dir)
            .await
            .map_err(io_err("failed to create directory", &dir))?;
        let tmp = dir.join(format!(
            ".{}.{}{TMP_SUFFIX}",
            key.file_name(),
            uuid::Uuid::new_v4().simple()
        ));
        // The hint is the producer's own estimate of the archive: reserved up front.
        let reserve = opts.size_hint.map_or(Reservation::None, Reservation::All);
        let file = BulkFile::create(&tmp, reserve)
            .await
            .map_err(io_err("failed to create", &tmp))?;
        Ok(Box::new(LocalSink {
            file: Some(file),
            tmp,
            target,
            key: key.clone(),
        }))
    }

    async fn open(
        &self,
        key: &ObjectKey,
        range: Option<Range<u64>>,
    ) -> Result<ByteStream, BackendError> {
        let path = self.path_of(key);
        let file = tokio::fs::File::open(&path)
            .await
            .map_err(io_err("failed to open", &path))?
            .into_std()
            .await;
        Ok(file_stream(file, range.unwrap_or(0..u64::MAX)))
    }

    async fn stat(&self, key: &ObjectKey) -> Result<ObjectMeta, BackendError> {
        let path = self.path_of(key);
        let m = tokio::fs::metadata(&path)
            .await
            .map_err(io_err("failed to stat", &path))?;
        if !m.is_file() {
            return Err(BackendError::NotFound(key.to_string()));
        }
        Ok(meta_of(key.clone(), &m))
    }

    async fn list(&self, dir: Option<&ObjectKey>) -> Result<Vec<ObjectMeta>, BackendError> {
        let path = dir.map_or_else(|| self.root.clone(), |d| self.path_of(d));
        let mut rd = match tokio::fs::read_dir(&path).await {
            Ok(rd) => rd,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io_err("failed to list", &path)(e)),
        };
        let mut out = Vec::new();
        while let Some(entry) = rd
            .next_entry()
            .await
            .map_err(io_err("failed to list", &path))?
        {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') {
                continue;
            }
            let Ok(m) = entry.metadata().await else {
                continue;
            };
            if !m.is_file() {
                continue;
            }
            let key = match dir {
                Some(d) => d.join(&name),
                None => ObjectKey::new(name),
            };
            if let Ok(key) = key {
                out.push(meta_of(key, &m));
            }
        }
        Ok(out)
    }

    fn list_recursive(
        &self,
        prefix: Option<&ObjectKey>,
    ) -> BoxStream<'static, Result<ObjectMeta, BackendError>> {
        let start = prefix.map_or_else(|| self.root.clone(), |p| self.path_of(p));
        let start_key = prefix.cloned();
        // Depth-first over directories; one directory's entries are read at a time.
        let stack = vec![(start, start_key)];
        futures::stream::try_unfold(
            (stack, Vec::<ObjectMeta>::new()),
            |(mut stack, mut ready)| async move {
                loop {
                    if let Some(m) = ready.pop() {
                        return Ok(Some((m, (stack, ready))));
                    }
                    let Some((dir, key)) = stack.pop() else {
                        return Ok(None);
                    };
                    let (dirs, files) =
                        tokio::task::spawn_blocking(move || read_level(&dir, key.as_ref()))
                            .await
                            .map_err(lost_task("failed to list"))??;
                    stack.extend(dirs);
                    ready = files;
                }
            },
        )
        .boxed()
    }

    async fn put_if_absent(
        &self,
        key: &ObjectKey,
        bytes: Bytes,
    ) -> Result<ObjectMeta, BackendError> {
        let target = self.path_of(key);
        let dir = target.parent().map(Path::to_path_buf).unwrap_or_default();
        let tmp = dir.join(format!(
            ".{}.{}{TMP_SUFFIX}",
            key.file_name(),
            uuid::Uuid::new_v4().simple()
        ));
        let (d, t, k) = (dir.clone(), target.clone(), key.clone());
        tokio::task::spawn_blocking(move || {
            std::fs::create_dir_all(&d).map_err(io_err("failed to create directory", &d))?;
            if t.exists() {
                return Err(BackendError::AlreadyExists(k.to_string()));
            }
            Ok(())
        })
        .await
        .map_err(lost_task("failed to write"))??;
        // Removed on every way out, a write dropped midway (its create cancelled) included.
        let mut guard = TempFile(Some(tmp.clone()));
        write_new(&tmp, bytes)
            .await
            .map_err(io_err("failed to write", &tmp))?;
        guard.0 = None;
        let key = key.clone();
        tokio::task::spawn_blocking(move || {
            // link(2) fails when the name exists: the atomic create-if-absent.
            let linked = std::fs::hard_link(&tmp, &target);
            let _ = std::fs::remove_file(&tmp);
            match linked {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                    return Err(BackendError::AlreadyExists(key.to_string()))
                }
                Err(e) => return Err(io_err("failed to commit", &target)(e)),
            }
            crate::io::fs::sync_dir(&dir)
                .map_err(io_err("failed to sync directory of", &target))?;
            let m = std::fs::metadata(&target).map_err(io_err("failed to stat", &target))?;
            Ok(meta_of(key, &m))
        })
        .await
        .map_err(lost_task("failed to write"))?
    }

    async fn delete(&self, key: &ObjectKey) -> Result<(), BackendError> {
        let path = self.path_of(key);
        tokio::fs::remove_file(&path)
            .await
            .map_err(io_err("failed to delete", &path))
    }

    async fn link_file(
        &self,
        file: std::sync::Arc<std::fs::File>,
        key: &ObjectKey,
        replace: bool,
    ) -> Result<(), BackendError> {
        let target = self.path_of(key);
        let key = key.clone();
        tokio::task::spawn_blocking(move || link_open_file(&file, &target, &key, replace))
            .await
            .map_err(lost_task("failed to link"))?
    }

    async fn sync_links(&self, dir: &ObjectKey) -> Result<(), BackendError> {
        let path = self.path_of(dir);
        tokio::task::spawn_blocking(move || match crate::io::fs::sync_dir(&path) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            other => other.map_err(io_err("failed to sync directory", &path)),
        })
        .await
        .map_err(lost_task("failed to sync"))?
    }

    async fn cleanup(&self) -> Result<usize, BackendError> {
        let root = self.root.clone();
        tokio::task::spawn_blocking(move || remove_temp_files(&root, 0))
            .await
            .map_err(lost_task("failed to clean"))?
            .map_err(|e| BackendError::Io {
                action: "failed to clean",
                path: String::new(),
                source: e,
            })
    }
}

/// One directory of a recursive listing: its subdirectories (to visit) and its objects.
/// Hidden temp files of interrupted writes are skipped; a missing directory is empty.
#[allow(clippy::type_complexity)]
fn read_level(
    dir: &Path,
    key: Option<&ObjectKey>,
) -> Result<(Vec<(PathBuf, Option<ObjectKey>)>, Vec<ObjectMeta>), BackendError> {
    let rd = match std::fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok((Vec::new(), Vec::new())),
        Err(e) => return Err(io_err("failed to list", dir)(e)),
    };
    let (mut dirs, mut files) = (Vec::new(), Vec::new());
    for entry in rd {
        let entry = entry.map_err(io_err("failed to list", dir))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') && name.ends_with(TMP_SUFFIX) {
            continue;
        }
        let Ok(child) = (match key {
            Some(k) => k.join(&name),
            None => ObjectKey::new(name),
        }) else {
            continue;
        };
        let Ok(m) = entry.metadata() else { continue };
        if m.is_dir() {
            dirs.push((entry.path(), Some(child)));
        } else if m.is_file() {
            files.push(meta_of(child, &m));
        }
    }
    Ok((dirs, files))
}

/// Removes hidden temp files left by interrupted writes (snapshot layouts are at most
/// four directories deep: `{collection}/shards/{id}/`).
fn remove_temp_files(dir: &Path, depth: usize) -> io::Result<usize> {
    let mut removed = 0;
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let ft = entry.file_type()?;
        if ft.is_dir() && depth < 4 {
            removed += remove_temp_files(&entry.path(), depth + 1)?;
        } else if ft.is_file() && name.starts_with('.') && name.ends_with(TMP_SUFFIX) {
            std::fs::remove_file(entry.path())?;
            removed += 1;
        }
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    #[tokio::test]
    async fn file_streams_return_exactly_the_range_across_chunks() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("f");
        let data: Vec<u8> = (0..(5 * READ_CHUNK / 2)).map(|i| (i % 253) as u8).collect();
        std::fs::write(&path, &data).unwrap();
        let len = data.len() as u64;
        for range in [
            0..len,
            7..READ_CHUNK + 9,
            READ_CHUNK..len,
            3..3,
            0..u64::MAX,
        ] {
            let mut got = Vec::new();
            let mut s = file_stream(std::fs::File::open(&path).unwrap(), range.clone());
            while let Some(chunk) = s.next().await {
                got.extend_from_slice(&chunk.unwrap());
            }
            let end = range.end.min(len) as usize;
            assert_eq!(got, data[range.start as usize..end], "{range:?}");
        }
    }

    #[tokio::test]
    async fn dropped_sinks_leave_no_temp_file() {
        let tmp = tempfile::tempdir().unwrap();
        let backend = LocalBackend::new(tmp.path()).unwrap();
        let key = ObjectKey::new("c/x.snapshot").unwrap();
        let mut sink = backend
            .create(&key, CreateOptions::default())
            .await
            .unwrap();
        sink.write_all(b"partial").await.unwrap();
        drop(sink);
        assert_eq!(std::fs::read_dir(tmp.path().join("c")).unwrap().count(), 0);
    }
}

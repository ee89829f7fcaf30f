//! A collection's data directory: one append-only WAL plus immutable sealed segment files.
//!
//! * `{seq:020}.wal` is the active log; every acknowledged write is appended and fsynced.
//! * `{start:020}-{end:020}.seg` is a sealed file covering WAL sequence numbers
//!   `start..=end`. Sealed files are never modified, only replaced by compaction.
//!
//! Sealing (rotation) renames the active WAL to a segment and starts a new WAL. A snapshot
//! opens every sealed file and the active WAL (at its current length) while holding the
//! writer lock: the open descriptors pin a consistent point-in-time image that later
//! appends and compaction (which unlinks files) cannot disturb, so writers are blocked only
//! for the opens.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use super::record::{self, Record, RecordError, FILE_MAGIC};

/// Errors of the data directory.
#[derive(Debug, thiserror::Error)]
pub(crate) enum FilesError {
    /// A filesystem call failed.
    #[error("{action} `{path}`")]
    Io {
        /// What was being done.
        action: &'static str,
        /// The path involved.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// A sealed segment is damaged: this is real corruption, not a torn write.
    #[error("sealed segment `{path}` is corrupted: {reason}")]
    CorruptSegment {
        /// The segment file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
}

pub(super) fn io_err<'a>(
    action: &'static str,
    path: &'a Path,
) -> impl FnOnce(io::Error) -> FilesError + 'a {
    move |source| FilesError::Io {
        action,
        path: path.to_path_buf(),
        source,
    }
}

/// A sealed, immutable file of records.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct SealedFile {
    /// First WAL sequence number covered.
    pub start: u64,
    /// Last WAL sequence number covered.
    pub end: u64,
    /// Where it is.
    pub path: PathBuf,
}

impl SealedFile {
    /// The file name, as stored in snapshots.
    pub(crate) fn file_name(&self) -> String {
        segment_name(self.start, self.end)
    }
}

/// A sealed file held open so its bytes stay readable even after compaction unlinks it.
#[derive(Debug)]
pub struct PinnedFile {
    /// File name relative to the data directory.
    pub name: String,
    /// Size at pin time; the file is immutable, so this is its size for good.
    pub len: u64,
    /// The open file.
    pub file: File,
    /// A sealed segment, never written again, which snapshots may link rather than copy;
    /// false for the active WAL's prefix.
    pub sealed: bool,
}

pub(super) fn segment_name(start: u64, end: u64) -> String {
    format!("{start:020}-{end:020}.seg")
}

fn wal_name(seq: u64) -> String {
    format!("{seq:020}.wal")
}

fn parse_segment_name(name: &str) -> Option<(u64, u64)> {
    let stem = name.strip_suffix(".seg")?;
    let (a, b) = stem.split_once('-')?;
    Some((a.parse().ok()?, b.parse().ok()?))
}

fn parse_wal_name(name: &str) -> Option<u64> {
    name.strip_suffix(".wal")?.parse().ok()
}

/// Fsyncs a directory so renames and unlinks in it are durable.
pub(crate) fn sync_dir(dir: &Path) -> Result<(), FilesError> {
    crate::io::fs::sync_dir(dir).map_err(io_err("failed to sync directory", dir))
}

/// The open data directory of one collection.
#[derive(Debug)]
pub(crate) struct DataDir {
    dir: PathBuf,
    active: File,
    active_seq: u64,
    active_len: u64,
    sealed: Vec<SealedFile>,
}

/// A WAL file: its sequence number and path.
type Wal = (u64, PathBuf);

/// The sealed segments of `dir` and its newest WAL (sequence number and path), after
/// removing leftover temp files and sealing every older WAL: only the newest can be active,
/// an older one was sealed by a rotation that crashed before its rename.
fn list_files(dir: &Path) -> Result<(Vec<SealedFile>, Option<Wal>), FilesError> {
    let mut segments = Vec::new();
    let mut wals = Vec::new();
    for entry in fs::read_dir(dir).map_err(io_err("failed to list", dir))? {
        let entry = entry.map_err(io_err("failed to list", dir))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let path = entry.path();
        if name.ends_with(".tmp") {
            fs::remove_file(&path).map_err(io_err("failed to remove leftover", &path))?;
        } else if let Some((start, end)) = parse_segment_name(&name) {
            segments.push(SealedFile { start, end, path });
        } else if let Some(seq) = parse_wal_name(&name) {
            wals.push((seq, path));
        }
    }
    wals.sort();
    let active = wals.pop();
    for (seq, path) in wals {
        let target = dir.join(segment_name(seq, seq));
        fs::rename(&path, &target).map_err(io_err("failed to seal", &path))?;
        segments.push(SealedFile {
            start: seq,
            end: seq,
            path: target,
        });
    }
    Ok((segments, active))
}

impl DataDir {
    /// Opens (creating if needed) the directory and replays every record into `apply`, oldest first.
    ///
    /// A torn record at the tail of the active WAL is cut off (it was never acknowledged);
    /// damage inside a sealed segment is an error.
    ///
    /// With `replay_sealed` false, sealed segments are only listed: their records were
    /// already loaded (and CRC-checked) while a snapshot streamed in.
    pub(crate) fn open(
        dir: &Path,
        replay_sealed: bool,
        mut apply: impl FnMut(Record),
    ) -> Result<Self, FilesError> {
        fs::create_dir_all(dir).map_err(io_err("failed to create data directory", dir))?;
        let (mut segments, active) = list_files(dir)?;
        segments.sort_by_key(|s| (s.end, std::cmp::Reverse(s.start)));
        let segments = drop_covered(segments)?;
        if replay_sealed {
            for seg in &segments {
                replay_segment(seg, &mut apply)?;
            }
        }
        let next_seq = segments.last().map_or(0, |s| s.end + 1);
        let (active_seq, active_path) = match active {
            Some((seq, path)) if seq >= next_seq => (seq, path),
            Some((_, path)) => {
                // A WAL older than a segment was already compacted into it.
                fs::remove_file(&path).map_err(io_err("failed to remove stale WAL", &path))?;
                (next_seq, dir.join(wal_name(next_seq)))
            }
            None => (next_seq, dir.join(wal_name(next_seq))),
        };
        let (active, active_len) = open_active(&active_path, &mut apply)?;
        sync_dir(dir)?;
        Ok(DataDir {
            dir: dir.to_path_buf(),
            active,
            active_seq,
            active_len,
            sealed: segments,
        })
    }

    /// Appends encoded records and, when `sync`, makes them durable before returning.
    pub(crate) fn append(&mut self, bytes: &[u8], sync: bool) -> Result<(), FilesError> {
        let path = self.dir.join(wal_name(self.active_seq));
        // Snapshot writers pause while this is in flight (see `crate::io::pacer`).
        let _in_flight = sync.then(crate::io::pacer::durable_write);
        self.active
            .write_all(bytes)
            .map_err(io_err("failed to append to", &path))?;
        if sync {
            self.active
                .sync_data()
                .map_err(io_err("failed to sync", &path))?;
        }
        self.active_len += bytes.len() as u64;
        Ok(())
    }

    /// Bytes in the active WAL, header included.
    pub(crate) fn active_len(&self) -> u64 {
        self.active_len
    }

    /// The sealed files, oldest first.
    pub(crate) fn sealed(&self) -> &[SealedFile] {
        &self.sealed
    }

    /// Seals the active WAL into a segment and starts a new one. A no-op when it is empty.
    pub(crate) fn rotate(&mut self) -> Result<(), FilesError> {
        if self.active_len <= FILE_MAGIC.len() as u64 {
            return Ok(());
        }
        let wal = self.dir.join(wal_name(self.active_seq));
        // Every record was fdatasynced when appended (and the next append syncs the new
        // WAL's header with it): only the rename and the new directory entry need making
        // durable, by the one directory fsync below. Writers wait for just that.
        let seg = SealedFile {
            start: self.active_seq,
            end: self.active_seq,
            path: self
                .dir
                .join(segment_name(self.active_seq, self.active_seq)),
        };
        fs::rename(&wal, &seg.path).map_err(io_err("failed to seal", &wal))?;
        let next = self.active_seq + 1;
        let next_path = self.dir.join(wal_name(next));
        let file = create_log_file(&next_path)?;
        sync_dir(&self.dir)?;
        self.sealed.push(seg);
        self.active = file;
        self.active_seq = next;
        self.active_len = FILE_MAGIC.len() as u64;
        Ok(())
    }

    /// Opens every sealed file and the active WAL, pinning the WAL at its current length;
    /// call under the writer lock. Records are only ever appended after that length (a torn
    /// tail is cut only at start-up), so the pinned prefix is as immutable as a segment; it
    /// is named as the segment a rotation would make of it (`{n}-{n}.seg`, same format), so
    /// a snapshot of it restores as a sealed segment. Nothing is written.
    pub(crate) fn pin_with_active(&self) -> Result<Vec<PinnedFile>, FilesError> {
        let mut files = self.pin()?;
        if self.active_len > FILE_MAGIC.len() as u64 {
            let path = self.dir.join(wal_name(self.active_seq));
            let file = File::open(&path).map_err(io_err("failed to open", &path))?;
            files.push(PinnedFile {
                name: segment_name(self.active_seq, self.active_seq),
                len: self.active_len,
                file,
                sealed: false,
            });
        }
        Ok(files)
    }

    /// Opens every sealed file; call under the writer lock.
    pub(crate) fn pin(&self) -> Result<Vec<PinnedFile>, FilesError> {
        self.sealed
            .iter()
            .map(|s| {
                let file = File::open(&s.path).map_err(io_err("failed to open", &s.path))?;
                let len = file
                    .metadata()
                    .map_err(io_err("failed to stat", &s.path))?
                    .len();
                Ok(PinnedFile {
                    name: s.file_name(),
                    len,
                    file,
                    sealed: true,
                })
            })
            .collect()
    }

    /// Puts a rewritten file (`None`: nothing survived) in place of `replaced`, a run of
    /// adjacent sealed files, then removes those of them it does not overwrite by name.
    pub(crate) fn replace_run(
        &mut self,
        out: Option<SealedFile>,
        replaced: &[SealedFile],
    ) -> Result<(), FilesError> {
        let at = self
            .sealed
            .windows(replaced.len().max(1))
            .position(|w| w == replaced);
        let Some(at) = at else {
            // The set changed underneath; drop the work rather than guess (unless the
            // output already took an input's name, in which case it is that input now).
            if let Some(out) = out.filter(|o| replaced.iter().all(|r| r.path != o.path)) {
                let _ = fs::remove_file(&out.path);
            }
            return Ok(());
        };
        self.sealed.splice(at..at + replaced.len(), out.clone());
        sync_dir(&self.dir)?;
        for old in replaced {
            if out.as_ref().is_some_and(|o| o.path == old.path) {
                continue;
            }
            fs::remove_file(&old.path).map_err(io_err("failed to remove compacted", &old.path))?;
        }
        sync_dir(&self.dir)
    }
}

fn create_log_file(path: &Path) -> Result<File, FilesError> {
    let mut f = OpenOptions::new()
        .create_new(true)
        .append(true)
        .open(path)
        .map_err(io_err("failed to create", path))?;
    f.write_all(FILE_MAGIC)
        .map_err(io_err("failed to write", path))?;
    Ok(f)
}

/// Drops segments whose range lies inside another's: leftovers of a compaction that
/// crashed between installing its output and deleting its inputs.
fn drop_covered(segments: Vec<SealedFile>) -> Result<Vec<SealedFile>, FilesError> {
    let mut keep: Vec<SealedFile> = Vec::new();
    for seg in segments {
        while let Some(last) = keep.last() {
            if seg.start <= last.start && last.end <= seg.end {
                let last = keep.pop().expect("checked non-empty");
                fs::remove_file(&last.path)
                    .map_err(io_err("failed to remove covered", &last.path))?;
            } else {
                break;
            }
        }
        keep.push(seg);
    }
    Ok(keep)
}

fn check_magic(r: &mut impl Read) -> io::Result<bool> {
    let mut magic = [0u8; 8];
    match r.read_exact(&mut magic) {
        Ok(()) => Ok(&magic == FILE_MAGIC),
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Ok(false),
        Err(e) => Err(e),
    }
}

/// Calls `f` for each record of a sealed file; any damage is an error.
pub(crate) fn for_each_record(
    path: &Path,
    mut f: impl FnMut(Record) -> Result<(), FilesError>,
) -> Result<(), FilesError> {
    let file = File::open(path).map_err(io_err("failed to open", path))?;
    let mut r = BufReader::with_capacity(1 << 20, file);
    let corrupt = |reason: String| FilesError::CorruptSegment {
        path: path.to_path_buf(),
        reason,
    };
    if !check_magic(&mut r).map_err(io_err("failed to read", path))? {
        return Err(corrupt("bad magic bytes".into()));
    }
    loop {
        match record::read_next(&mut r) {
            Ok(Some((rec, _))) => f(rec)?,
            Ok(None) => return Ok(()),
            Err(RecordError::Io(e)) => return Err(io_err("failed to read", path)(e)),
            Err(e) => return Err(corrupt(e.to_string())),
        }
    }
}

fn replay_segment(seg: &SealedFile, apply: &mut impl FnMut(Record)) -> Result<(), FilesError> {
    for_each_record(&seg.path, |r| {
        apply(r);
        Ok(())
    })
}

fn open_active(path: &Path, apply: &mut impl FnMut(Record)) -> Result<(File, u64), FilesError> {
    if !path.exists() {
        let f = create_log_file(path)?;
        f.sync_all().map_err(io_err("failed to sync", path))?;
        return Ok((f, FILE_MAGIC.len() as u64));
    }
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .map_err(io_err("failed to open", path))?;
    let mut good = FILE_MAGIC.len() as u64;
    {
        let mut r = BufReader::with_capacity(1 << 20, &mut file);
        if check_magic(&mut r).map_err(io_err("failed to read", path))? {
            loop {
                match record::read_next(&mut r) {
                    Ok(Some((rec, n))) => {
                        apply(rec);
                        good += n;
                    }
                    Ok(None) => break,
                    Err(RecordError::Io(e)) => return Err(io_err("failed to read", path)(e)),
                    Err(e) => {
                        tracing::warn!(path = %path.display(), offset = good, error = %e,
                            "cutting a torn record off the write-ahead log");
                        break;
                    }
                }
            }
        } else {
            // A crash right after creating the file: rewrite the header.
            good = 0;
        }
    }
    let on_disk = file
        .metadata()
        .map_err(io_err("failed to stat", path))?
        .len();
    if good < on_disk || good == 0 {
        file = rewrite_prefix(path, file, good)?;
        good = good.max(FILE_MAGIC.len() as u64);
    }
    file.seek(SeekFrom::End(0))
        .map_err(io_err("failed to seek", path))?;
    file.sync_all().map_err(io_err("failed to sync", path))?;
    Ok((file, good))
}

/// Replaces the WAL at `path` by a new file holding its first `good` bytes (a fresh header
/// when `good` is 0), for writing. A new file, not a truncation: no file under the storage
/// is changed in place but by appending, so a file a snapshot links keeps its bytes.
fn rewrite_prefix(path: &Path, mut old: File, good: u64) -> Result<File, FilesError> {
    let tmp = path.with_extension("wal.tmp");
    let mut out = OpenOptions::new()
        .create(true)
        .truncate(true)
        .read(true)
        .write(true)
        .open(&tmp)
        .map_err(io_err("failed to create", &tmp))?;
    let copied = if good == 0 {
        out.write_all(FILE_MAGIC)
    } else {
        old.seek(SeekFrom::Start(0))
            .and_then(|_| std::io::copy(&mut (&mut old).take(good), &mut out))
            .map(|_| ())
    };
    copied
        .and_then(|()| out.sync_all())
        .and_then(|()| fs::rename(&tmp, path))
        .map_err(io_err("failed to rewrite", path))?;
    sync_dir(path.parent().unwrap_or(Path::new(".")))?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::collection::record::Operation;
    use crate::collection::types::PointId;
    use crate::collection::types::PointWrite;

    fn upsert(op_id: u64, id: u64) -> Vec<u8> {
        let mut b = Vec::new();
        record::encode(
            &Record {
                op_id,
                op: Operation::Upsert(vec![PointWrite {
                    id: PointId::Num(id),
                    vectors: vec![(String::new(), vec![id as f32])],
                    payload: None,
                }]),
            },
            &mut b,
        );
        b
    }

    fn replay(dir: &Path) -> (DataDir, Vec<u64>) {
        let mut ops = Vec::new();
        let d = DataDir::open(dir, true, |r| ops.push(r.op_id)).unwrap();
        (d, ops)
    }

    #[test]
    fn rotation_pin_and_reload_keep_every_write() {
        let tmp = tempfile::tempdir().unwrap();
        let (mut d, ops) = replay(tmp.path());
        assert!(ops.is_empty());
        d.append(&upsert(1, 1), true).unwrap();
        d.rotate().unwrap();
        d.append(&upsert(2, 2), true).unwrap();
        let pinned = d.pin().unwrap();
        assert_eq!(pinned.len(), 1);
        drop(d);
        let (_, ops) = replay(tmp.path());
        assert_eq!(ops, vec![1, 2]);
    }

    #[test]
    fn pinning_takes_the_active_wal_as_it_is_and_writes_nothing() {
        let tmp = tempfile::tempdir().unwrap();
        let (mut d, _) = replay(tmp.path());
        d.append(&upsert(1, 1), true).unwrap();
        d.rotate().unwrap();
        d.append(&upsert(2, 2), true).unwrap();
        let listing = |dir: &Path| {
            let mut names: Vec<String> = fs::read_dir(dir)
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect();
            names.sort();
            names
        };
        let before = listing(tmp.path());
        let pinned = d.pin_with_active().unwrap();
        assert_eq!(
            listing(tmp.path()),
            before,
            "pinning renames or creates nothing"
        );
        // Writes after the pin land past the pinned length.
        d.append(&upsert(3, 3), true).unwrap();
        let names: Vec<&str> = pinned.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(
            names,
            vec![
                "00000000000000000000-00000000000000000000.seg",
                "00000000000000000001-00000000000000000001.seg"
            ]
        );
        let wal = &pinned[1];
        let mut bytes = vec![0u8; wal.len as usize];
        std::os::unix::fs::FileExt::read_exact_at(&wal.file, &mut bytes, 0).unwrap();
        assert_eq!(&bytes[..FILE_MAGIC.len()], FILE_MAGIC);
        let (rec, n) = record::decode_framed_ref(&bytes[FILE_MAGIC.len()..])
            .unwrap()
            .unwrap();
        assert_eq!((rec.op_id, FILE_MAGIC.len() + n), (2, bytes.len()));
    }

    #[test]
    fn torn_tail_is_cut_and_later_appends_survive() {
        let tmp = tempfile::tempdir().unwrap();
        let (mut d, _) = replay(tmp.path());
        d.append(&upsert(1, 1), true).unwrap();
        let rec = upsert(2, 2);
        d.append(&rec[..rec.len() - 5], true).unwrap();
        drop(d);
        let (mut d, ops) = replay(tmp.path());
        assert_eq!(ops, vec![1]);
        d.append(&upsert(3, 3), true).unwrap();
        drop(d);
        assert_eq!(replay(tmp.path()).1, vec![1, 3]);
    }
}

//! Resuming a snapshot's tar hash where the last snapshot of the same collections left off.
//!
//! An incremental snapshot's archive (format version 2) opens with entries that stay the
//! same between two snapshots of the same collections: the opening, each config, then the
//! sealed segments in WAL order; only the active WAL's prefix and the manifest after the
//! files change every time. The SHA-256 of a tar is a running state, and a create records
//! it before every entry ([`Mark`]). So a create keeps, per snapshot directory, the leading
//! entries of the tar it wrote whose bytes cannot differ next time, with the marks between
//! them; the next create whose archive starts with the same entries resumes the hash after
//! the last one instead of reading and hashing those files again.
//!
//! What "the same bytes" rests on: a text entry is compared whole; a sealed segment is
//! never written again once sealed (compaction and sealing make new files, see
//! `docs/snapshot-format.md`), so the same file, known by its device, inode, size,
//! modification time and birth time, holds the same bytes. A recycled inode number comes
//! with a new birth time; anything that differs is hashed again. The listed SHA-256
//! still covers every byte of the tar: it is the state of the very bytes hashed before.
//!
//! Kept in memory only: the first create after a start-up hashes everything.

use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;
use std::sync::Mutex;

use super::hashing::Mark;
use super::manifest::Entry;
use super::writer::{ArchiveEntry, Source};

/// What tells that an archive entry's bytes are those of an earlier one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Identity {
    /// A text: the text itself.
    Text(String),
    /// A sealed file: its device, inode, size, modification time, and birth time (its
    /// change time where the filesystem keeps no birth time), in ns.
    Sealed {
        dev: u64,
        ino: u64,
        len: u64,
        mtime: (i64, i64),
        born: (i64, i64),
    },
}

impl Identity {
    /// The identity of `entry`, or `None` when its bytes may change (the active WAL).
    pub(crate) fn of(entry: &ArchiveEntry) -> Option<Identity> {
        match &entry.source {
            Source::Text(t) => Some(Identity::Text(t.clone())),
            Source::File { file, len, sealed } => Self::sealed(file, *len, *sealed),
        }
    }

    /// The identity of the first `len` bytes of `file` when it is `sealed`.
    pub(crate) fn sealed(file: &std::fs::File, len: u64, sealed: bool) -> Option<Identity> {
        let m = file.metadata().ok().filter(|_| sealed)?;
        // An inode number is reused only by a file born later. The change time would tell
        // too, but every link made or removed (by snapshots and the collector) changes it.
        let born = m
            .created()
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map_or((m.ctime(), m.ctime_nsec()), |d| {
                (d.as_secs() as i64, i64::from(d.subsec_nanos()))
            });
        Some(Identity::Sealed {
            dev: m.dev(),
            ino: m.ino(),
            len,
            mtime: (m.mtime(), m.mtime_nsec()),
            born,
        })
    }
}

/// One entry taken over: as the manifest lists it, its CRC-32, and what it was made of.
#[derive(Clone, Debug)]
pub(crate) struct Kept {
    pub entry: Entry,
    pub crc: u32,
    identity: Identity,
    path: String,
}

/// The opening of one directory's last tar.
#[derive(Debug)]
struct Opening {
    kept: Vec<Kept>,
    /// The tar's state before each kept entry and after the last (one more).
    marks: Vec<Mark>,
    /// Header mtime and piece size the entries were cut with.
    cut: (u64, u64),
}

/// The openings of the last tar written under each snapshot directory.
#[derive(Debug, Default)]
pub(crate) struct Resumes {
    by_dir: Mutex<HashMap<String, Opening>>,
}

/// What a create may take over: the leading entries that match and the marks up to the
/// one after them.
pub(crate) type Takeover = (Vec<Kept>, Vec<Mark>);

impl Resumes {
    /// The leading entries of the last tar under `dir` that the new archive repeats
    /// (`identities` in its order), cut the same way (`cut`: header mtime, piece size);
    /// `None` when not even one does.
    pub(crate) fn matching(
        &self,
        dir: &str,
        entries: &[ArchiveEntry],
        identities: &[Option<Identity>],
        cut: (u64, u64),
    ) -> Option<Takeover> {
        let by_dir = self.by_dir.lock().ok()?;
        let last = by_dir.get(dir).filter(|o| o.cut == cut)?;
        let n = last
            .kept
            .iter()
            .zip(entries.iter().zip(identities))
            .take_while(|(k, (e, id))| k.path == e.path && id.as_ref() == Some(&k.identity))
            .count();
        (n > 0).then(|| (last.kept[..n].to_vec(), last.marks[..=n].to_vec()))
    }

    /// Keeps the opening of the tar just written under `dir`: its entries as listed, with
    /// their CRC-32s and marks, up to the first whose bytes may change.
    pub(crate) fn keep(
        &self,
        dir: &str,
        identities: Vec<Option<Identity>>,
        written: (&[Entry], &[(String, u32)], &[Mark]),
        cut: (u64, u64),
    ) {
        let (entries, crcs, marks) = written;
        let kept: Vec<Kept> = identities
            .into_iter()
            .map_while(|id| id)
            .zip(entries.iter().zip(crcs))
            .map(|(identity, (entry, (_, crc)))| Kept {
                path: entry.path.clone(),
                entry: entry.clone(),
                crc: *crc,
                identity,
            })
            .collect();
        let Ok(mut by_dir) = self.by_dir.lock() else {
            return;
        };
        if kept.is_empty() || marks.len() <= kept.len() {
            by_dir.remove(dir);
            return;
        }
        let marks = marks[..=kept.len()].to_vec();
        by_dir.insert(dir.to_string(), Opening { kept, marks, cut });
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use bytes::Bytes;
    use futures::TryStreamExt;
    use sha2::{Digest, Sha256};

    use super::super::damage::{Damage, Inventory};
    use super::super::layout::{self, PieceReader};
    use super::super::pieces::PieceNames;
    use super::super::writer::{self, Archive, Written};
    use super::*;
    use crate::backend::local::LocalBackend;
    use crate::backend::DynBackend;

    struct Setup {
        files: tempfile::TempDir,
        store: tempfile::TempDir,
        backend: DynBackend,
        /// Sealed files are linked into the storage rather than stored as pieces.
        link: bool,
    }

    impl Setup {
        fn new(link: bool) -> Self {
            let store = tempfile::tempdir().unwrap();
            let backend: DynBackend = Arc::new(LocalBackend::new(store.path()).unwrap());
            Setup {
                files: tempfile::tempdir_in(store.path().parent().unwrap()).unwrap(),
                store,
                backend,
                link,
            }
        }

        /// Writes (a new inode each time) file `name` of `len` bytes made from `seed`.
        fn put(&self, name: &str, len: usize, seed: u8) {
            let bytes: Vec<u8> = (0..len).map(|i| (i as u8).wrapping_mul(seed)).collect();
            let path = self.files.path().join(name);
            let tmp = path.with_extension("tmp");
            std::fs::write(&tmp, bytes).unwrap();
            std::fs::rename(tmp, path).unwrap();
        }

        /// The archive: a text, the sealed `seg0` and `seg1`, the growing `wal`, a text.
        fn archive(&self, last: &str) -> Archive {
            let text = |path: &str, t: &str| ArchiveEntry {
                path: path.into(),
                source: Source::Text(t.into()),
            };
            let file = |name: &str, sealed: bool| {
                let f = std::fs::File::open(self.files.path().join(name)).unwrap();
                let len = f.metadata().unwrap().len();
                ArchiveEntry {
                    path: format!("data/{name}"),
                    source: Source::File {
                        file: f,
                        len,
                        sealed,
                    },
                }
            };
            Archive {
                entries: vec![
                    text("opening", "the same"),
                    file("seg0", true),
                    file("seg1", true),
                    file("wal", false),
                    text("contents", last),
                ],
                trailer: Box::new(|crcs| ("crcs".into(), format!("{crcs:?}"))),
                created_at: chrono::Utc::now(),
                mtime: 0,
            }
        }

        async fn write(&self, resumes: &Resumes, last: &str) -> Written {
            let damage = Damage::new(Arc::clone(&self.backend));
            let known =
                Inventory::take(&self.backend, &damage, false, PieceNames::Plain, self.link)
                    .await
                    .unwrap();
            let archive = self.archive(last);
            writer::write(&self.backend, archive, known, None, (resumes, "c"))
                .await
                .unwrap()
        }

        /// The tar read back from storage, each piece checked.
        async fn tar(&self, w: &Written) -> Vec<u8> {
            let reader = PieceReader {
                backend: Arc::clone(&self.backend),
                damage: Damage::new(Arc::clone(&self.backend)),
                names: PieceNames::Plain,
                label: "test".into(),
            };
            let s = layout::read(reader, Arc::new(w.manifest.clone()), None)
                .await
                .unwrap();
            let chunks: Vec<Bytes> = s.try_collect().await.unwrap();
            chunks.concat()
        }
    }

    /// Asserts that `w`'s listed SHA-256 is that of the tar it reads back as.
    async fn whole(s: &Setup, w: &Written) -> Vec<u8> {
        let tar = s.tar(w).await;
        assert_eq!(hex::encode(Sha256::digest(&tar)), w.manifest.sha256);
        assert_eq!(tar.len() as u64, w.manifest.size);
        tar
    }

    #[tokio::test]
    async fn a_create_resumes_after_the_files_that_are_the_same_and_hashes_like_a_whole_one() {
        resumes_after_what_is_the_same(false).await;
    }

    #[tokio::test]
    async fn a_create_resumes_after_linked_files_and_links_them_again_when_gone() {
        resumes_after_what_is_the_same(true).await;
    }

    async fn resumes_after_what_is_the_same(link: bool) {
        let s = Setup::new(link);
        s.put("seg0", 5000, 3);
        s.put("seg1", 3000, 5);
        s.put("wal", 1000, 7);
        let resumes = Resumes::default();
        let first = s.write(&resumes, "one").await;
        assert_eq!(first.resumed, 0, "nothing to resume from yet");
        assert_eq!(first.linked, if link { 2 } else { 0 });
        whole(&s, &first).await;
        let before_wal = first.marks[3].offset;

        // The WAL grew: everything before it is taken over, and the tar is the one a
        // create with nothing to resume from makes.
        s.put("wal", 1500, 7);
        let second = s.write(&resumes, "two").await;
        assert_eq!(second.resumed, before_wal);
        let tar = whole(&s, &second).await;
        let fresh = s.write(&Resumes::default(), "two").await;
        assert_eq!(fresh.resumed, 0);
        assert_eq!(fresh.manifest.sha256, second.manifest.sha256);
        assert_eq!(s.tar(&fresh).await, tar);
        assert_eq!(fresh.crcs, second.crcs, "the trailer's CRCs are the same");

        // seg1 rewritten (a new file under the same name, same size): taken over up to it.
        s.put("seg1", 3000, 9);
        let third = s.write(&resumes, "three").await;
        assert_eq!(third.resumed, third.marks[2].offset);
        whole(&s, &third).await;
        assert_ne!(
            third.manifest.entries[2].pieces,
            second.manifest.entries[2].pieces
        );

        // seg0's stored bytes gone, and stored again. A missing piece stops the takeover
        // before seg0; a missing link is made again and all is taken over, unless the
        // filesystem keeps no birth time (the removed link changed seg0's change time).
        let seg0 = &third.manifest.entries[1];
        let gone = match &seg0.linked {
            Some(root) => s.store.path().join(".repository/linked").join(root),
            None => s
                .store
                .path()
                .join(".repository/pieces")
                .join(&seg0.pieces[0]),
        };
        std::fs::remove_file(&gone).unwrap();
        let fourth = s.write(&resumes, "four").await;
        let born = std::fs::metadata(s.files.path().join("seg0"))
            .unwrap()
            .created();
        let taken = if link && born.is_ok() { 3 } else { 1 };
        assert_eq!(fourth.resumed, fourth.marks[taken].offset);
        assert!(gone.exists(), "stored again");
        whole(&s, &fourth).await;
    }

    #[tokio::test]
    async fn an_archive_that_opens_otherwise_takes_nothing_over() {
        let s = Setup::new(false);
        for (name, seed) in [("seg0", 3), ("seg1", 5), ("wal", 7)] {
            s.put(name, 2000, seed);
        }
        let first = s.write(&Resumes::default(), "one").await;
        let other = Resumes::default();
        let kept = (
            &first.manifest.entries[..],
            &first.crcs[..],
            &first.marks[..],
        );
        let cut = (0, super::super::manifest::PIECE_SIZE);
        other.keep("c", vec![Some(Identity::Text("else".into()))], kept, cut);
        let second = s.write(&other, "two").await;
        assert_eq!(second.resumed, 0);
        whole(&s, &second).await;
        // The second write kept its own opening; one cut another way (another header
        // mtime) is not taken either.
        let third = s.write(&other, "three").await;
        assert!(third.resumed > 0, "kept by the second write");
        other.keep(
            "c",
            vec![Some(Identity::Text("the same".into()))],
            kept,
            (1, cut.1),
        );
        assert_eq!(s.write(&other, "four").await.resumed, 0);
    }
}

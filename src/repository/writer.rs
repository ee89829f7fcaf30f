//! Creating an incremental snapshot: one pass over the would-be tar. Every byte is hashed
//! into the tar's SHA-256; files are cut into pieces, each named by its BLAKE3, and only
//! pieces the storage does not hold yet are uploaded. The manifest is the commit point.

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io;
use std::sync::Arc;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures::stream::FuturesUnordered;
use futures::{future::BoxFuture, StreamExt, TryStreamExt};
use tokio::io::{AsyncRead, AsyncReadExt};

use super::chunks::{self, Chunk, Location, Table};
use super::damage::{Damage, Inventory};
use super::layout::{entry_header, padding, read_entries, Kind, PieceReader, END};
use super::manifest::{Entry, Manifest, TableRef, FORMAT, PIECE_SIZE, VERSION};
use super::pieces;
use super::pieces::PieceNames;
use super::resume::{Identity, Resumes};
use crate::backend::{BackendError, DynBackend};
use crate::io::progress::Progress;
use crate::repository::hashing::{HashFeed, Mark};

/// Piece uploads in flight: bounds memory to this many pieces plus one read ahead.
const UPLOADS_IN_FLIGHT: usize = 4;

/// Where an entry's bytes come from.
#[derive(Debug)]
pub enum Source {
    /// Small text, stored inline in the manifest.
    Text(String),
    /// The first `len` bytes of an open file (a pinned, immutable image).
    File {
        /// The file.
        file: std::fs::File,
        /// Bytes to take.
        len: u64,
        /// The file is sealed for good (a sealed segment): linked rather than copied when the
        /// repository links files and the storage can. The active WAL's prefix is not: it is
        /// copied as pieces.
        sealed: bool,
    },
}

/// One entry of the archive.
#[derive(Debug)]
pub struct ArchiveEntry {
    /// Path inside the archive.
    pub path: String,
    /// Its bytes.
    pub source: Source,
}

/// Builds the last entry from the CRC-32 of every entry before it.
pub(crate) type Trailer = Box<dyn FnOnce(&[(String, u32)]) -> (String, String) + Send>;

/// Everything an incremental snapshot is made of.
pub struct Archive {
    /// The entries in order.
    pub entries: Vec<ArchiveEntry>,
    /// The final entry `(path, text)`, made from `(path, crc32)` of each entry.
    pub trailer: Trailer,
    /// The snapshot's time: its listed creation time.
    pub created_at: DateTime<Utc>,
    /// Every header's mtime.
    pub mtime: u64,
}

impl std::fmt::Debug for Archive {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Archive")
            .field("entries", &self.entries)
            .field("created_at", &self.created_at)
            .field("mtime", &self.mtime)
            .finish()
    }
}

/// What creating stored.
#[derive(Debug)]
pub(crate) struct Written {
    /// The manifest to commit.
    pub manifest: Manifest,
    /// Pieces uploaded (the rest were already stored).
    pub uploaded: usize,
    /// Bytes uploaded in pieces.
    pub uploaded_bytes: u64,
    /// Files linked rather than copied (already-linked ones included).
    pub linked: usize,
    /// The tar's digest state before each entry and before its end (one more than the
    /// entries): a later tar that starts with the same entries resumes from there.
    pub marks: Vec<Mark>,
    /// Each entry's path and CRC-32, in order.
    pub crcs: Vec<(String, u32)>,
    /// Bytes of the tar taken over from the last one, not read or hashed again.
    pub resumed: u64,
}

fn io_err(e: io::Error) -> BackendError {
    BackendError::Io {
        action: "failed to build incremental snapshot",
        path: String::new(),
        source: e,
    }
}

/// A piece read from a file, hashed for its name and its file's CRC-32.
struct ReadPiece {
    bytes: Bytes,
    hash: String,
    crc: crc32fast::Hasher,
}

async fn read_piece(
    file: Arc<std::fs::File>,
    offset: u64,
    len: u64,
    names: PieceNames,
) -> io::Result<ReadPiece> {
    tokio::task::spawn_blocking(move || {
        let mut buf = vec![0u8; len as usize];
        // Positional: a file that shrank is an error, never a short entry.
        std::os::unix::fs::FileExt::read_exact_at(&*file, &mut buf, offset)?;
        let hash = names.hash(&buf);
        let mut crc = crc32fast::Hasher::new();
        crc.update(&buf);
        Ok(ReadPiece {
            bytes: Bytes::from(buf),
            hash,
            crc,
        })
    })
    .await
    .map_err(io::Error::other)?
}

/// Uploads of new pieces, at most [`UPLOADS_IN_FLIGHT`] at once.
struct Uploads {
    backend: DynBackend,
    /// Pieces stored and sound, or uploaded by this builder: never uploaded (again).
    known: HashSet<String>,
    /// Pieces known damaged: written over the damaged copy when this builder holds them.
    damaged: HashSet<String>,
    /// Damaged pieces this builder has written again.
    repairing: HashSet<String>,
    damage: Arc<Damage>,
    /// Whether pieces are stored compressed.
    compress: bool,
    /// How pieces are named.
    names: PieceNames,
    running: FuturesUnordered<BoxFuture<'static, Result<u64, BackendError>>>,
    count: usize,
    bytes: u64,
    /// Link sealed files when they can be linked (see [`super::linked`]).
    link: bool,
    /// Linked files stored and sound, or linked by this builder.
    linked: HashSet<String>,
    /// Whether this builder made a link (synced before the manifest is written).
    linked_new: bool,
    /// Files this builder linked or found linked.
    linked_count: usize,
}

impl Uploads {
    async fn add(&mut self, hash: &str, bytes: Bytes) -> Result<(), BackendError> {
        if !self.known.insert(hash.to_string()) {
            // Known sound when this create began; found damaged since (by a read of this
            // very create, say), it is written afresh once.
            if !self.damage.contains(hash) || self.repairing.contains(hash) {
                return Ok(());
            }
            self.damaged.insert(hash.to_string());
        }
        while self.running.len() >= UPLOADS_IN_FLIGHT {
            self.wait_one().await?;
        }
        let (backend, hash) = (Arc::clone(&self.backend), hash.to_string());
        let repair = self.damaged.remove(&hash).then(|| {
            self.repairing.insert(hash.clone());
            Arc::clone(&self.damage)
        });
        let compress = self.compress;
        self.running.push(Box::pin(async move {
            let stored = if compress {
                tokio::task::spawn_blocking(move || pieces::encode(bytes, true))
                    .await
                    .map_err(|e| io_err(io::Error::other(e)))?
            } else {
                bytes
            };
            let len = stored.len() as u64;
            match repair {
                Some(damage) => {
                    pieces::replace(&backend, &hash, stored).await?;
                    damage.repaired(&hash).await;
                }
                None => {
                    pieces::store(&backend, &hash, stored).await?;
                }
            }
            Ok(len)
        }));
        Ok(())
    }

    async fn wait_one(&mut self) -> Result<(), BackendError> {
        if let Some(done) = self.running.next().await {
            self.bytes += done?;
            self.count += 1;
        }
        Ok(())
    }

    async fn finish(&mut self) -> Result<(), BackendError> {
        while !self.running.is_empty() {
            self.wait_one().await?;
        }
        Ok(())
    }

    /// Makes `file` (immutable, its pieces hashing to `hashes`) the linked file of its root
    /// unless one is stored and sound; the root, or `None` when the storage cannot link it
    /// (the caller stores its pieces instead).
    async fn link(
        &mut self,
        file: &Arc<File>,
        len: u64,
        piece_size: u64,
        hashes: &[String],
    ) -> Result<Option<String>, BackendError> {
        let root = super::linked::root(len, piece_size, hashes);
        let damaged = self.damaged.contains(&root) || self.damage.contains(&root);
        if self.linked.contains(&root) && !damaged {
            self.linked_count += 1;
            return Ok(Some(root));
        }
        let key = super::linked::key(&root)?;
        match self
            .backend
            .link_file(Arc::clone(file), &key, damaged)
            .await
        {
            Ok(()) | Err(BackendError::AlreadyExists(_)) => {}
            Err(BackendError::Unsupported(why)) => {
                tracing::info!(reason = %why, "a sealed file is copied, not linked");
                return Ok(None);
            }
            Err(e) => return Err(e),
        }
        if damaged {
            self.damaged.remove(&root);
            self.damage.repaired(&root).await;
        }
        self.linked.insert(root.clone());
        self.linked_new = true;
        self.linked_count += 1;
        Ok(Some(root))
    }
}

/// The tar being hashed while its files' pieces are uploaded.
struct TarFeed {
    feed: HashFeed,
    /// Off while an entry whose hashing is deferred streams in (its pieces are stored).
    hashing: bool,
    /// While set, the data bytes read are also kept here (a deferred entry held in memory).
    held: Option<Vec<Bytes>>,
    uploads: Uploads,
    mtime: u64,
    piece_size: u64,
    zeros: Bytes,
    /// When set, streamed files are cut in content-defined chunks, packed, and those of
    /// this index (stored, sound) are not stored again (see [`super::chunks`]).
    chunking: Option<chunks::Index>,
}

impl TarFeed {
    /// One entry's header, then its bytes (`text` inline, or the file's pieces), then the
    /// padding; returns the manifest's entry and the file's CRC-32.
    async fn entry(&mut self, path: String, source: Source) -> Result<(Entry, u32), BackendError> {
        let size = match &source {
            Source::Text(t) => t.len() as u64,
            Source::File { len, .. } => *len,
        };
        self.header(&path, size, Kind::File).await?;
        let (crc, text, pieces, linked) = match source {
            Source::Text(t) => {
                let crc = crc32fast::hash(t.as_bytes());
                self.bytes(Bytes::from(t.clone().into_bytes())).await?;
                (crc, Some(t), Vec::new(), None)
            }
            Source::File { file, len, sealed } => {
                let link = sealed && self.uploads.link;
                let (crc, pieces, linked) = self.file(Arc::new(file), len, link).await?;
                (crc, None, pieces, linked)
            }
        };
        self.pad(size).await?;
        let entry = Entry {
            path,
            size,
            text,
            pieces,
            dir: false,
            sparse: Vec::new(),
            linked,
            tables: Vec::new(),
        };
        Ok((entry, crc))
    }

    async fn header(&mut self, path: &str, size: u64, kind: Kind<'_>) -> Result<(), BackendError> {
        let header = entry_header(path, size, self.mtime, kind)
            .await
            .map_err(io_err)?;
        self.bytes(Bytes::from(header)).await
    }

    async fn bytes(&mut self, bytes: Bytes) -> Result<(), BackendError> {
        if !self.hashing {
            return Ok(());
        }
        self.feed.feed(bytes).await.map_err(io_err)
    }

    /// The zeros that end an entry of `size` bytes on a block boundary.
    async fn pad(&mut self, size: u64) -> Result<(), BackendError> {
        let pad = padding(size);
        if pad > 0 {
            self.bytes(self.zeros.slice(..pad)).await?;
        }
        Ok(())
    }

    /// A file's bytes, piece by piece, each uploaded unless known, or when `link`, the
    /// whole file linked once hashed (its pieces uploaded if it cannot be); returns the
    /// file's CRC-32, its pieces' hashes and the linked file's root.
    async fn file(
        &mut self,
        file: Arc<File>,
        len: u64,
        link: bool,
    ) -> Result<(u32, Vec<String>, Option<String>), BackendError> {
        let mut crc = crc32fast::Hasher::new();
        let mut hashes = Vec::new();
        let mut offset = 0;
        let piece_size = self.piece_size;
        let names = self.uploads.names.clone();
        let next_read = |offset: u64| {
            tokio::spawn(read_piece(
                Arc::clone(&file),
                offset,
                piece_size.min(len - offset),
                names.clone(),
            ))
        };
        // One piece is read and hashed ahead while the current one is hashed into the tar
        // and uploaded.
        let mut next = (len > 0).then(|| next_read(0));
        while let Some(pending) = next.take() {
            let piece = pending
                .await
                .map_err(io::Error::other)
                .map_err(io_err)?
                .map_err(io_err)?;
            offset += piece.bytes.len() as u64;
            if offset < len {
                next = Some(next_read(offset));
            }
            crc.combine(&piece.crc);
            self.bytes(piece.bytes.clone()).await?;
            if !link {
                self.uploads.add(&piece.hash, piece.bytes).await?;
            }
            hashes.push(piece.hash);
        }
        if !link {
            return Ok((crc.finalize(), hashes, None));
        }
        let root = self.uploads.link(&file, len, piece_size, &hashes).await?;
        if root.is_none() {
            self.copy_pieces(&file, len, &hashes).await?;
        }
        Ok((crc.finalize(), hashes, root))
    }

    /// Stores the pieces of a file that could not be linked: read again, each checked
    /// against the hash the tar was built from.
    async fn copy_pieces(
        &mut self,
        file: &Arc<File>,
        len: u64,
        hashes: &[String],
    ) -> Result<(), BackendError> {
        let mut offset = 0;
        for hash in hashes {
            let n = self.piece_size.min(len - offset);
            let names = self.uploads.names.clone();
            let piece = read_piece(Arc::clone(file), offset, n, names)
                .await
                .map_err(io_err)?;
            if &piece.hash != hash {
                return Err(io_err(io::Error::other(
                    "a sealed file changed while a snapshot read it",
                )));
            }
            self.uploads.add(hash, piece.bytes).await?;
            offset += n;
        }
        Ok(())
    }

    /// A file's `len` bytes read from `reader`, cut into pieces as [`TarFeed::file`] does;
    /// returns the entry (text inline when `inline` and the bytes are UTF-8). For a sparse
    /// file, `reader` gives the whole file (holes as zeros) and only the bytes of `sparse`
    /// regions are kept.
    async fn read<R: AsyncRead + Unpin>(
        &mut self,
        file: StreamedFile,
        reader: &mut R,
    ) -> Result<Entry, BackendError> {
        let StreamedFile {
            path,
            len,
            inline,
            sparse,
        } = file;
        let (kind, regions) = match sparse.as_slice() {
            [] => (Kind::File, vec![[0, len]]),
            map => (Kind::Sparse(map), map.to_vec()),
        };
        self.header(&path, len, kind).await?;
        let mut at = 0;
        let mut stored = 0;
        let mut pieces = Vec::new();
        let mut chunked = self.chunking.is_some().then(ChunkedFile::default);
        let mut text = None;
        // Inline only a regular file that fits one piece.
        let inline = inline && sparse.is_empty() && len <= self.piece_size;
        for [offset, region] in regions {
            // A hole: zeros from the reader, not kept.
            tokio::io::copy(
                &mut (&mut *reader).take(offset - at),
                &mut tokio::io::sink(),
            )
            .await
            .map_err(io_err)?;
            at = offset + region;
            stored += region;
            text = match &mut chunked {
                Some(file) => self.chunked_region(reader, region, inline, file).await?,
                None => self.region(reader, region, inline, &mut pieces).await?,
            };
        }
        let mut tables = Vec::new();
        if let Some(mut file) = chunked {
            self.seal_table(&mut file).await?;
            (pieces, tables) = (file.packs, file.tables);
        }
        self.pad(stored).await?;
        Ok(Entry {
            path,
            size: len,
            text,
            pieces,
            dir: false,
            sparse,
            linked: None,
            tables,
        })
    }
}

/// The text of `bytes`, if they are UTF-8.
fn utf8(bytes: &[u8]) -> Option<String> {
    std::str::from_utf8(bytes).ok().map(str::to_string)
}

impl TarFeed {
    /// The next `n` bytes of a file from `reader`, hashed into the tar (and held, while
    /// a deferred entry is held in memory).
    async fn window<R: AsyncRead + Unpin>(
        &mut self,
        reader: &mut R,
        n: u64,
    ) -> Result<Bytes, BackendError> {
        let mut buf = vec![0u8; n as usize];
        reader.read_exact(&mut buf).await.map_err(io_err)?;
        let bytes = Bytes::from(buf);
        self.bytes(bytes.clone()).await?;
        if let Some(held) = &mut self.held {
            held.push(bytes.clone());
        }
        Ok(bytes)
    }

    /// `len` bytes of a file from `reader`, cut in pieces (their hashes pushed on
    /// `pieces`, new ones uploaded); when `inline` and they are UTF-8, their text instead.
    async fn region<R: AsyncRead + Unpin>(
        &mut self,
        reader: &mut R,
        len: u64,
        inline: bool,
        pieces: &mut Vec<String>,
    ) -> Result<Option<String>, BackendError> {
        let mut left = len;
        while left > 0 {
            let n = self.piece_size.min(left);
            left -= n;
            let bytes = self.window(reader, n).await?;
            if let Some(text) = inline.then(|| utf8(&bytes)).flatten() {
                return Ok(Some(text));
            }
            let hash = self.uploads.names.hash(&bytes);
            self.uploads.add(&hash, bytes).await?;
            pieces.push(hash);
        }
        Ok(None)
    }
}

/// Bytes read from a stream at a time while chunking.
const CHUNK_WINDOW: usize = 256 << 10;

/// A cutter handed back with the chunks it cut and their hashes.
type Cut = (chunks::Cutter, Vec<(Bytes, String)>);

/// A streamed file being cut in chunks: its table being filled, the pack being filled, and
/// what it has stored.
#[derive(Debug, Default)]
struct ChunkedFile {
    /// The table being filled and the bytes it covers.
    table: Table,
    table_len: u64,
    /// The open pack's bytes, its chunks by hash (`(offset, len)`), and which chunks of
    /// `table` lie in it (their pack index is set when it is stored).
    pack: Vec<u8>,
    in_pack: HashMap<String, (u32, u32)>,
    waiting: Vec<usize>,
    /// The open table's packs, by name.
    table_packs: HashMap<String, u32>,
    /// The tables stored.
    tables: Vec<TableRef>,
    /// Every pack the file's tables name, once each, and the same as a set.
    packs: Vec<String>,
    named: HashSet<String>,
}

impl ChunkedFile {
    /// The index of `pack` in the open table, added if new (to the file's list too).
    fn pack_index(&mut self, pack: &str) -> u32 {
        if self.named.insert(pack.to_string()) {
            self.packs.push(pack.to_string());
        }
        if let Some(&i) = self.table_packs.get(pack) {
            return i;
        }
        self.table.packs.push(pack.to_string());
        let i = (self.table.packs.len() - 1) as u32;
        self.table_packs.insert(pack.to_string(), i);
        i
    }
}

impl TarFeed {
    /// `len` bytes of a file from `reader`, cut in content-defined chunks (new ones
    /// packed and stored); when `inline` and they are UTF-8, their text instead. Each
    /// window is cut and its chunks hashed on a blocking thread while the next one is read.
    async fn chunked_region<R: AsyncRead + Unpin>(
        &mut self,
        reader: &mut R,
        len: u64,
        inline: bool,
        file: &mut ChunkedFile,
    ) -> Result<Option<String>, BackendError> {
        let mut cutter = chunks::Cutter::default();
        let mut cutting: Option<tokio::task::JoinHandle<Cut>> = None;
        let mut left = len;
        while left > 0 {
            let n = if inline {
                left
            } else {
                left.min(CHUNK_WINDOW as u64)
            };
            left -= n;
            let bytes = self.window(reader, n).await?;
            if let Some(text) = inline.then(|| utf8(&bytes)).flatten() {
                return Ok(Some(text));
            }
            if let Some(task) = cutting.take() {
                let (back, cut) = task.await.map_err(|e| io_err(io::Error::other(e)))?;
                cutter = back;
                self.chunks(cut, file).await?;
            }
            let (names, end) = (self.uploads.names.clone(), left == 0);
            let mut c = std::mem::take(&mut cutter);
            cutting = Some(tokio::task::spawn_blocking(move || {
                c.push(&bytes);
                let cut = c.cut(end).into_iter().map(|b| {
                    let hash = names.hash(&b);
                    (b, hash)
                });
                let cut = cut.collect();
                (c, cut)
            }));
        }
        if let Some(task) = cutting {
            let (_, cut) = task.await.map_err(|e| io_err(io::Error::other(e)))?;
            self.chunks(cut, file).await?;
        }
        Ok(None)
    }

    /// Chunks cut and hashed, in order.
    async fn chunks(
        &mut self,
        cut: Vec<(Bytes, String)>,
        file: &mut ChunkedFile,
    ) -> Result<(), BackendError> {
        for (bytes, hash) in cut {
            self.chunk(bytes, hash, file).await?;
        }
        Ok(())
    }

    /// One chunk: found stored (in the index or the open pack), or added to the open pack.
    async fn chunk(
        &mut self,
        bytes: Bytes,
        hash: String,
        file: &mut ChunkedFile,
    ) -> Result<(), BackendError> {
        let len = bytes.len() as u32;
        let k = chunks::key(&hash);
        if let (Some(index), Some(k)) = (self.chunking.as_mut(), k) {
            if !index.repairs.is_empty() {
                for (pack, whole) in index.repairs.offer(&k, &bytes) {
                    self.rewrite_pack(pack, whole).await?;
                }
            }
        }
        let stored = self
            .chunking
            .as_ref()
            .zip(k)
            .and_then(|(index, k)| index.stored.get(&k))
            .filter(|l| {
                l.len == len
                    && self.uploads.known.contains(&*l.pack)
                    && !self.uploads.damage.contains(&l.pack)
            });
        if let Some(Location { pack, offset, .. }) = stored.cloned() {
            let p = file.pack_index(&pack);
            file.table.chunks.push(Chunk(p, offset, len, hash));
        } else {
            let offset = match file.in_pack.get(&hash) {
                Some(&(offset, _)) => offset,
                None => {
                    if file.pack.len() + bytes.len() > self.piece_size as usize {
                        self.seal_pack(file).await?;
                    }
                    let offset = file.pack.len() as u32;
                    file.pack.extend_from_slice(&bytes);
                    file.in_pack.insert(hash.clone(), (offset, len));
                    offset
                }
            };
            file.waiting.push(file.table.chunks.len());
            file.table.chunks.push(Chunk(0, offset, len, hash));
        }
        file.table_len += u64::from(len);
        if file.table.chunks.len() >= chunks::TABLE_CHUNKS {
            self.seal_table(file).await?;
        }
        Ok(())
    }

    /// Writes damaged or missing pack `name` again from `bytes`, the chunks its tables
    /// placed in it, if they hash to its name (see [`super::pack_repair`]).
    async fn rewrite_pack(&mut self, name: String, bytes: Bytes) -> Result<(), BackendError> {
        if self.uploads.names.hash(&bytes) != name {
            tracing::warn!(
                pack = %name,
                "the chunks a damaged pack's tables list do not make the pack; it stays as it is"
            );
            return Ok(());
        }
        self.uploads.add(&name, bytes).await
    }

    /// Stores the open pack; its chunks join the index.
    async fn seal_pack(&mut self, file: &mut ChunkedFile) -> Result<(), BackendError> {
        if file.pack.is_empty() {
            return Ok(());
        }
        let bytes = Bytes::from(std::mem::take(&mut file.pack));
        let hash = self.uploads.names.hash(&bytes);
        self.uploads.add(&hash, bytes).await?;
        let p = file.pack_index(&hash);
        let pack: Arc<str> = Arc::from(hash.as_str());
        for i in std::mem::take(&mut file.waiting) {
            let Chunk(index, offset, len, chunk) = &mut file.table.chunks[i];
            *index = p;
            if let (Some(known), Some(k)) = (&mut self.chunking, chunks::key(chunk)) {
                let at = Location {
                    pack: Arc::clone(&pack),
                    offset: *offset,
                    len: *len,
                };
                known.stored.entry(k).or_insert(at);
            }
        }
        file.in_pack.clear();
        Ok(())
    }

    /// Stores the open pack, then the open table.
    async fn seal_table(&mut self, file: &mut ChunkedFile) -> Result<(), BackendError> {
        self.seal_pack(file).await?;
        if file.table.chunks.is_empty() {
            return Ok(());
        }
        let table = std::mem::take(&mut file.table);
        file.table_packs.clear();
        let json = serde_json::to_vec(&table).map_err(|e| io_err(io::Error::other(e)))?;
        let hash = self.uploads.names.hash(&json);
        self.uploads.add(&hash, Bytes::from(json)).await?;
        file.tables
            .push(TableRef(hash, std::mem::take(&mut file.table_len)));
        Ok(())
    }
}

/// A file whose bytes come from a reader (an archive being streamed).
#[derive(Debug)]
pub(crate) struct StreamedFile {
    /// Path inside the archive.
    pub path: String,
    /// Its size (a sparse file's real size).
    pub len: u64,
    /// Keep it in the manifest when it is UTF-8 and fits one piece.
    pub inline: bool,
    /// A sparse file's data regions (`[offset, length]`); empty for a regular file.
    pub sparse: Vec<[u64; 2]>,
}

/// Where an entry added from a reader goes in the tar.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Place {
    /// Here, hashed as it streams.
    Now,
    /// After every entry placed `Now` or added stored: its pieces are stored as it streams,
    /// and read back to be hashed in [`ManifestBuilder::finish`].
    Early,
    /// After those, the same way.
    Late,
}

/// Bytes of deferred entries a builder keeps in memory to hash them at the end without
/// reading them back; beyond it they are read back from storage.
const HELD_MAX: u64 = 16 << 20;

/// An entry whose hashing waits, where it goes, and its data bytes when held in memory.
type Deferred = (Place, Entry, Option<Vec<Bytes>>);

/// A manifest built one entry at a time, as its tar is hashed and its pieces uploaded.
pub(crate) struct ManifestBuilder {
    tar: TarFeed,
    entries: Vec<Entry>,
    crcs: Vec<(String, u32)>,
    created_at: DateTime<Utc>,
    /// Marks of entries taken over from an earlier tar ([`ManifestBuilder::continue_from`]).
    marks: Vec<Mark>,
    /// Entries whose hashing waits.
    deferred: Vec<Deferred>,
    /// Bytes of deferred entries that may still be held in memory.
    held_left: u64,
    /// Bytes of the tar taken over ([`ManifestBuilder::take_over`]).
    resumed: u64,
}

impl ManifestBuilder {
    /// A builder whose files are cut into `piece_size` pieces; the sound pieces of `known`
    /// are not uploaded again, its damaged ones are written afresh.
    pub(crate) fn new(
        backend: &DynBackend,
        known: Inventory,
        progress: Option<Progress>,
        created_at: DateTime<Utc>,
        piece_size: u64,
    ) -> Self {
        ManifestBuilder {
            tar: TarFeed {
                feed: HashFeed::new(progress),
                hashing: true,
                held: None,
                uploads: Uploads {
                    backend: Arc::clone(backend),
                    known: known.sound,
                    damaged: known.damaged,
                    repairing: HashSet::new(),
                    damage: known.damage,
                    compress: known.compress,
                    names: known.names,
                    running: FuturesUnordered::new(),
                    count: 0,
                    bytes: 0,
                    link: known.link,
                    linked: known.linked,
                    linked_new: false,
                    linked_count: 0,
                },
                mtime: created_at.timestamp().max(0) as u64,
                piece_size,
                zeros: Bytes::from(vec![0u8; END]),
                chunking: None,
            },
            entries: Vec::new(),
            crcs: Vec::new(),
            created_at,
            marks: Vec::new(),
            deferred: Vec::new(),
            held_left: HELD_MAX,
            resumed: 0,
        }
    }

    /// Makes the tar start with `prefix`, the first entries of an earlier tar whose headers
    /// carry `mtime`, resumed from `marks` (the earlier tar's, one per prefix entry and the
    /// one after them) instead of hashed again. Only before anything was hashed (entries
    /// added with a deferred [`Place`] may have streamed); false, changing nothing, if the
    /// marks do not fit.
    pub(crate) fn continue_from(
        &mut self,
        (prefix, mtime): (Vec<Entry>, u64),
        mut marks: Vec<Mark>,
        progress: Option<Progress>,
    ) -> bool {
        if !self.entries.is_empty() || marks.len() != prefix.len() + 1 {
            return false;
        }
        let Some(feed) = marks
            .last()
            .and_then(|m| HashFeed::resume(m, progress.clone()))
        else {
            return false;
        };
        if let (Some(p), Some(m)) = (&progress, marks.last()) {
            p.add(m.offset);
        }
        marks.pop();
        self.tar.feed = feed;
        self.tar.mtime = mtime;
        self.entries = prefix;
        self.marks = marks;
        true
    }

    /// Starts the tar with entries an earlier tar of this storage began with (see
    /// [`super::resume`]), resumed from its `marks` instead of hashed again; `files`
    /// are the new archive's open files for those entries (`None` for texts). A linked file
    /// is linked again unless its link is stored and sound (copied into pieces where it
    /// cannot be); an entry of pieces is taken only while every piece is stored and sound.
    /// Returns how many entries it took (0: none, nothing changed).
    pub(crate) async fn take_over(
        &mut self,
        (kept, marks): super::resume::Takeover,
        files: Vec<Option<File>>,
        progress: Option<Progress>,
    ) -> Result<usize, BackendError> {
        let n = {
            let uploads = &self.tar.uploads;
            let sound = |h: &String| uploads.known.contains(h) && !uploads.damage.contains(h);
            kept.iter()
                .zip(&files)
                .take_while(|(k, file)| match k.entry.linked {
                    Some(_) => file.is_some(),
                    None => k.entry.pieces.iter().all(sound),
                })
                .count()
        };
        let mut taken = Vec::with_capacity(n);
        let mut crcs = Vec::with_capacity(n);
        for (k, file) in kept.into_iter().take(n).zip(files) {
            let mut entry = k.entry;
            if let (Some(_), Some(file)) = (&entry.linked, file) {
                let file = Arc::new(file);
                let (len, size) = (entry.size, self.tar.piece_size);
                entry.linked = self
                    .tar
                    .uploads
                    .link(&file, len, size, &entry.pieces)
                    .await?;
                if entry.linked.is_none() {
                    self.tar.copy_pieces(&file, len, &entry.pieces).await?;
                }
            }
            crcs.push((entry.path.clone(), k.crc));
            taken.push(entry);
        }
        let mtime = self.tar.mtime;
        let resumed = marks.get(n).map_or(0, |m| m.offset);
        if n == 0 || !self.continue_from((taken, mtime), marks[..=n].to_vec(), progress) {
            return Ok(0);
        }
        self.crcs = crcs;
        self.resumed = resumed;
        Ok(n)
    }

    /// Adds an entry from a text or an open file.
    pub(crate) async fn add(&mut self, path: String, source: Source) -> Result<(), BackendError> {
        self.tar.feed.mark();
        let (entry, crc) = self.tar.entry(path, source).await?;
        self.crcs.push((entry.path.clone(), crc));
        self.entries.push(entry);
        Ok(())
    }

    /// Adds a file of `len` bytes read from `reader`; small UTF-8 files (`inline`) are kept
    /// in the manifest rather than as pieces; a sparse file keeps only its `sparse` regions.
    pub(crate) async fn add_reader<R: AsyncRead + Unpin>(
        &mut self,
        file: StreamedFile,
        reader: &mut R,
        place: Place,
    ) -> Result<(), BackendError> {
        if place == Place::Now {
            self.tar.feed.mark();
        }
        let stored = if file.sparse.is_empty() {
            file.len
        } else {
            file.sparse.iter().map(|[_, n]| n).sum()
        };
        let hold = place != Place::Now && stored <= self.held_left;
        if hold {
            self.held_left -= stored;
            self.tar.held = Some(Vec::new());
        }
        self.tar.hashing = place == Place::Now;
        let entry = self.tar.read(file, reader).await;
        self.tar.hashing = true;
        let held = self.tar.held.take();
        self.placed(place, entry?, held);
        Ok(())
    }

    fn placed(&mut self, place: Place, entry: Entry, held: Option<Vec<Bytes>>) {
        match place {
            Place::Now => self.entries.push(entry),
            later => self.deferred.push((later, entry, held)),
        }
    }

    /// Hashes a deferred entry from the bytes held in memory.
    async fn add_held(&mut self, entry: Entry, held: Vec<Bytes>) -> Result<(), BackendError> {
        self.tar.feed.mark();
        self.tar
            .header(&entry.path, entry.size, Kind::of(&entry))
            .await?;
        for b in held {
            self.tar.bytes(b).await?;
        }
        self.tar.pad(entry.stored_len()).await?;
        self.entries.push(entry);
        Ok(())
    }

    /// Adds entries whose pieces are already stored (from an earlier manifest cut in the
    /// same piece size): nothing is uploaded, but their bytes are read back, each piece
    /// checked, to be hashed into this tar.
    pub(crate) async fn add_stored(&mut self, entries: Vec<Entry>) -> Result<(), BackendError> {
        let reader = PieceReader {
            backend: Arc::clone(&self.tar.uploads.backend),
            damage: Arc::clone(&self.tar.uploads.damage),
            names: self.tar.uploads.names.clone(),
            label: "the last backup's archive of this shard".to_string(),
        };
        let (mut bytes, lens) = read_entries(reader, &entries, self.tar.mtime, self.tar.piece_size)
            .await
            .map_err(io_err)?;
        // One stream for all (fetches run ahead across entries); a mark where each begins.
        let mut lens = lens.into_iter();
        let mut left = 0u64;
        while let Some(mut b) = bytes.try_next().await.map_err(io_err)? {
            while !b.is_empty() {
                if left == 0 {
                    self.tar.feed.mark();
                    left = lens
                        .next()
                        .ok_or_else(|| io_err(io::Error::other("tar longer than its entries")))?;
                }
                let n = b.len().min(left as usize);
                self.tar.bytes(b.split_to(n)).await?;
                left -= n as u64;
            }
        }
        if left > 0 || lens.next().is_some() {
            return Err(io_err(io::Error::other("tar shorter than its entries")));
        }
        self.entries.extend(entries);
        Ok(())
    }

    /// Cuts the files added from readers in content-defined chunks from now on; chunks of
    /// `index` whose packs are stored and sound are not stored again.
    pub(crate) fn chunk_with(&mut self, index: chunks::Index) {
        self.tar.chunking = Some(index);
    }

    /// Bytes per piece of the files it cuts.
    pub(crate) fn piece_size(&self) -> u64 {
        self.tar.piece_size
    }

    /// Adds a directory entry.
    pub(crate) async fn add_dir(&mut self, path: String, place: Place) -> Result<(), BackendError> {
        let entry = Entry {
            path,
            size: 0,
            text: None,
            pieces: Vec::new(),
            dir: true,
            sparse: Vec::new(),
            linked: None,
            tables: Vec::new(),
        };
        if place == Place::Now {
            self.tar.feed.mark();
            self.tar.header(&entry.path, 0, Kind::Dir).await?;
        }
        self.placed(place, entry, Some(Vec::new()));
        Ok(())
    }

    /// Ends the tar (after the `trailer`, made from every entry's CRC-32, when given), waits
    /// for the uploads, and returns the manifest (not yet committed).
    pub(crate) async fn finish(
        mut self,
        trailer: Option<Trailer>,
    ) -> Result<Written, BackendError> {
        // Deferred entries are read back once their pieces are all stored.
        self.tar.uploads.finish().await?;
        let (early, late): (Vec<_>, Vec<_>) = std::mem::take(&mut self.deferred)
            .into_iter()
            .partition(|(p, _, _)| *p == Place::Early);
        for (_, entry, held) in early.into_iter().chain(late) {
            match held {
                Some(held) => self.add_held(entry, held).await?,
                None => self.add_stored(vec![entry]).await?,
            }
        }
        if let Some(trailer) = trailer {
            let (path, text) = trailer(&self.crcs);
            self.add(path, Source::Text(text)).await?;
        }
        self.tar.feed.mark();
        let end = self.tar.zeros.clone();
        self.tar.bytes(end).await?;
        self.tar.uploads.finish().await?;
        if self.tar.uploads.linked_new {
            // Links durable before the manifest that names them.
            let backend = Arc::clone(&self.tar.uploads.backend);
            backend.sync_links(&super::linked::dir()).await?;
        }
        let (sha256, total, marks) = self.tar.feed.finish().await.map_err(io_err)?;
        let mut all = std::mem::take(&mut self.marks);
        all.extend(marks);
        let crcs = std::mem::take(&mut self.crcs);
        Ok(Written {
            manifest: Manifest {
                format: FORMAT.into(),
                version: VERSION,
                created_at: self
                    .created_at
                    .to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                mtime: self.tar.mtime,
                piece_size: self.tar.piece_size,
                size: total,
                sha256,
                entries: self.entries,
            },
            uploaded: self.tar.uploads.count,
            uploaded_bytes: self.tar.uploads.bytes,
            linked: self.tar.uploads.linked_count,
            marks: all,
            crcs,
            resumed: self.resumed,
        })
    }
}

/// Hashes the tar of `archive` and uploads the pieces that `known` lacks; returns the
/// manifest (not yet committed).
///
/// The tar resumes after the entries that the last one written under `dir` began with
/// (`resumes`), and leaves its own opening there for the next.
pub(crate) async fn write(
    backend: &DynBackend,
    archive: Archive,
    known: Inventory,
    progress: Option<Progress>,
    (resumes, dir): (&Resumes, &str),
) -> Result<Written, BackendError> {
    let mut builder = ManifestBuilder::new(
        backend,
        known,
        progress.clone(),
        archive.created_at,
        PIECE_SIZE,
    );
    builder.tar.mtime = archive.mtime;
    let cut = (archive.mtime, PIECE_SIZE);
    let identities: Vec<_> = archive.entries.iter().map(Identity::of).collect();
    // The files stay open until their identity is kept: it is read again after the write
    // (a link made changes the change time, which stands in for a birth time where the
    // filesystem keeps none), and an open inode's number is not reused meanwhile.
    let held: Vec<Option<(File, u64)>> = archive
        .entries
        .iter()
        .map(|e| match &e.source {
            Source::File { file, len, .. } => file.try_clone().ok().map(|f| (f, *len)),
            Source::Text(_) => None,
        })
        .collect();
    let mut skip = 0;
    if let Some(takeover) = resumes.matching(dir, &archive.entries, &identities, cut) {
        let files = held[..takeover.0.len()]
            .iter()
            .map(|f| f.as_ref().and_then(|(f, _)| f.try_clone().ok()))
            .collect();
        skip = builder.take_over(takeover, files, progress).await?;
    }
    for e in archive.entries.into_iter().skip(skip) {
        builder.add(e.path, e.source).await?;
    }
    let written = builder.finish(Some(archive.trailer)).await?;
    let identities = identities
        .into_iter()
        .zip(held)
        .map(|(id, file)| match (id, file) {
            (Some(Identity::Sealed { .. }), Some((f, len))) => Identity::sealed(&f, len, true),
            (id, _) => id,
        })
        .collect();
    let listed = (
        &written.manifest.entries[..],
        &written.crcs[..],
        &written.marks[..],
    );
    resumes.keep(dir, identities, listed, cut);
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::local::LocalBackend;
    use crate::repository::chunks::tests::noise;
    use crate::repository::layout;
    use sha2::{Digest, Sha256};

    fn file(path: &str, len: usize, seed: u8) -> (StreamedFile, Vec<u8>) {
        let bytes = (0..len).map(|i| (i as u8).wrapping_mul(seed)).collect();
        let f = StreamedFile {
            path: path.into(),
            len: len as u64,
            inline: false,
            sparse: Vec::new(),
        };
        (f, bytes)
    }

    async fn add(b: &mut ManifestBuilder, path: &str, len: usize, seed: u8, place: Place) {
        let (f, bytes) = file(path, len, seed);
        b.add_reader(f, &mut bytes.as_slice(), place).await.unwrap();
    }

    fn reader_of(backend: &DynBackend) -> PieceReader {
        PieceReader {
            backend: Arc::clone(backend),
            damage: Damage::new(Arc::clone(backend)),
            names: PieceNames::Plain,
            label: "test".into(),
        }
    }

    /// The tar a manifest stands for, read back from storage.
    async fn tar(backend: &DynBackend, m: &Manifest) -> Vec<u8> {
        let s = layout::read(reader_of(backend), Arc::new(m.clone()), None)
            .await
            .unwrap();
        let chunks: Vec<Bytes> = s.try_collect().await.unwrap();
        chunks.concat()
    }

    fn paths(m: &Manifest) -> Vec<&str> {
        m.entries.iter().map(|e| e.path.as_str()).collect()
    }

    #[tokio::test]
    async fn deferred_entries_go_last_and_a_resumed_tar_hashes_like_a_whole_one() {
        let dir = tempfile::tempdir().unwrap();
        let backend: DynBackend = Arc::new(LocalBackend::new(dir.path()).unwrap());
        let t = Utc::now();
        let mut a = ManifestBuilder::new(&backend, Inventory::nothing(&backend), None, t, 1024);
        add(&mut a, "a", 3000, 3, Place::Now).await;
        add(&mut a, "b", 2000, 5, Place::Late).await;
        a.add_dir("d".into(), Place::Late).await.unwrap();
        add(&mut a, "c", 5000, 7, Place::Now).await;
        let a = a.finish(None).await.unwrap();
        let m = &a.manifest;
        assert_eq!(paths(m), ["a", "c", "b", "d"]);
        let bytes = tar(&backend, m).await;
        assert_eq!(hex::encode(Sha256::digest(&bytes)), m.sha256);
        assert_eq!(bytes.len() as u64, m.size);
        // Each mark is the state before its entry: finishing it with the rest of the tar
        // gives the tar's digest.
        assert_eq!(a.marks.len(), m.entries.len() + 1);
        for mark in &a.marks {
            let rest = &bytes[mark.offset as usize..];
            assert_eq!(mark.finish_with(rest).as_deref(), Some(m.sha256.as_str()));
        }

        // A rebuild that keeps a and c (its first two), b (read back), and adds e and f.
        let mut b = ManifestBuilder::new(
            &backend,
            Inventory::nothing(&backend),
            None,
            Utc::now(),
            1024,
        );
        add(&mut b, "f", 700, 11, Place::Late).await;
        add(&mut b, "e", 4100, 13, Place::Early).await;
        let prefix = (m.entries[..2].to_vec(), m.mtime);
        assert!(
            !b.continue_from(prefix.clone(), a.marks[..2].to_vec(), None),
            "marks must fit"
        );
        assert!(b.continue_from(prefix, a.marks[..3].to_vec(), None));
        b.add_stored(vec![m.entries[2].clone()]).await.unwrap();
        let b = b.finish(None).await.unwrap();
        let n = &b.manifest;
        assert_eq!(paths(n), ["a", "c", "b", "e", "f"]);
        let bytes = tar(&backend, n).await;
        assert_eq!(hex::encode(Sha256::digest(&bytes)), n.sha256);
        assert_eq!(bytes.len() as u64, n.size);
        assert_eq!(b.marks.len(), n.entries.len() + 1);
        assert_eq!(
            b.marks[..3],
            a.marks[..3],
            "the kept opening keeps its marks"
        );
    }

    async fn add_bytes(b: &mut ManifestBuilder, path: &str, bytes: &[u8], place: Place) {
        let f = StreamedFile {
            path: path.into(),
            len: bytes.len() as u64,
            inline: false,
            sparse: Vec::new(),
        };
        b.add_reader(f, &mut &bytes[..], place).await.unwrap();
    }

    /// A builder of 1 MiB packs that chunks files, skipping the chunks of `index`.
    async fn chunking(backend: &DynBackend, index: Option<chunks::Index>) -> ManifestBuilder {
        let known = match index {
            Some(_) => {
                let damage = Damage::new(Arc::clone(backend));
                Inventory::take(backend, &damage, false, PieceNames::Plain, false)
                    .await
                    .unwrap()
            }
            None => Inventory::nothing(backend),
        };
        let mut b = ManifestBuilder::new(backend, known, None, Utc::now(), 1 << 20);
        b.chunk_with(index.unwrap_or_default());
        b
    }

    /// Checks that `m`'s tar reads back whole, hashing to its `sha256`, with `file` first.
    async fn reads_back(backend: &DynBackend, m: &Manifest, file: &[u8]) -> Vec<u8> {
        let bytes = tar(backend, m).await;
        assert_eq!(hex::encode(Sha256::digest(&bytes)), m.sha256);
        assert_eq!(&bytes[512..512 + file.len()], file);
        bytes
    }

    #[tokio::test]
    async fn chunked_files_read_back_whole_and_in_ranges() {
        let dir = tempfile::tempdir().unwrap();
        let backend: DynBackend = Arc::new(LocalBackend::new(dir.path()).unwrap());
        let old = noise(3 << 20, 5);
        let mut a = chunking(&backend, None).await;
        add_bytes(&mut a, "matrix.dat", &old, Place::Now).await;
        add_bytes(&mut a, "late.dat", &old[..100_000], Place::Late).await;
        let m = a.finish(None).await.unwrap().manifest;
        Manifest::parse(&serde_json::to_vec(&m).unwrap()).unwrap();
        assert!(!m.entries[0].tables.is_empty() && !m.entries[0].pieces.is_empty());
        let bytes = reads_back(&backend, &m, &old).await;
        let range = 1_000_000..1_300_000;
        let s = layout::read(reader_of(&backend), Arc::new(m), Some(range.clone()))
            .await
            .unwrap();
        let part: Vec<Bytes> = s.try_collect().await.unwrap();
        assert_eq!(
            part.concat(),
            &bytes[range.start as usize..range.end as usize]
        );
    }

    /// A local repository holding one chunked archive of a 3 MiB file of `seed`'s noise.
    async fn one_archive(seed: u64) -> (tempfile::TempDir, DynBackend, Vec<u8>, Manifest) {
        let dir = tempfile::tempdir().unwrap();
        let backend: DynBackend = Arc::new(LocalBackend::new(dir.path()).unwrap());
        let file = noise(3 << 20, seed);
        let mut a = chunking(&backend, None).await;
        add_bytes(&mut a, "matrix.dat", &file, Place::Now).await;
        let m = a.finish(None).await.unwrap().manifest;
        (dir, backend, file, m)
    }

    /// Flips byte `at` of stored piece `piece`, then reads `m` back: the read fails, naming
    /// the piece (and recording the damage).
    async fn flip(
        dir: &tempfile::TempDir,
        backend: &DynBackend,
        m: &Manifest,
        piece: &str,
        at: usize,
    ) {
        let path = dir.path().join(pieces::PIECES_DIR).join(piece);
        let mut stored = std::fs::read(&path).unwrap();
        stored[at] ^= 1;
        std::fs::write(&path, stored).unwrap();
        let s = layout::read(reader_of(backend), Arc::new(m.clone()), None)
            .await
            .unwrap();
        let e = s.try_collect::<Vec<Bytes>>().await.unwrap_err();
        let damage = super::super::damage::find(&e).expect("the damage is named");
        assert_eq!(damage.piece, piece);
    }

    #[tokio::test]
    async fn chunked_files_store_only_the_chunks_that_moved_bytes_made_new() {
        let (dir, backend, old, m) = one_archive(5).await;

        // Points removed here and added there: most chunks are found where they were.
        let mut new = old.clone();
        new.drain(1_500_000..1_503_072);
        new.splice(2_500_000..2_500_000, noise(3072, 9));
        let index = super::super::backups::index_of(reader_of(&backend), &m, &|_| false).await;
        assert!(
            index.stored.len() > 100,
            "{} chunks indexed",
            index.stored.len()
        );
        let mut b = chunking(&backend, Some(index)).await;
        add_bytes(&mut b, "matrix.dat", &new, Place::Now).await;
        let b = b.finish(None).await.unwrap();
        assert!(
            b.uploaded_bytes < 300_000,
            "{} bytes stored for a 3 MiB file with two small changes",
            b.uploaded_bytes
        );
        let n = b.manifest;
        reads_back(&backend, &n, &new).await;

        // A flipped byte in a pack ends the read with the damage named.
        flip(&dir, &backend, &n, &n.entries[0].pieces[0], 100).await;
    }

    #[tokio::test]
    async fn a_damaged_pack_is_written_again_by_the_next_backup_of_its_file() {
        let (dir, backend, file, a) = one_archive(7).await;
        // A byte flipped in the second pack, found by a read (which records the damage).
        let pack = a.entries[0].pieces[1].clone();
        flip(&dir, &backend, &a, &pack, 1000).await;

        // The next backup of the file, with bytes added in front (so its new packs differ
        // from the old ones): the damaged pack's chunks are stored anew, and the pack is
        // rebuilt from them, so the first backup reads back whole again.
        let damaged = |p: &str| p == pack;
        let index = super::super::backups::index_of(reader_of(&backend), &a, &damaged).await;
        assert!(
            !index.repairs.is_empty(),
            "the damaged pack is to be rebuilt"
        );
        let mut b = chunking(&backend, Some(index)).await;
        let new = [noise(5000, 9), file.clone()].concat();
        add_bytes(&mut b, "matrix.dat", &new, Place::Now).await;
        let b = b.finish(None).await.unwrap().manifest;
        reads_back(&backend, &b, &new).await;
        reads_back(&backend, &a, &file).await;
        let marker = dir
            .path()
            .join(super::super::damage::DAMAGED_DIR)
            .join(&pack);
        assert!(!marker.exists(), "the damage marker is gone once repaired");
    }

    #[tokio::test]
    async fn deferred_entries_beyond_what_is_held_are_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let backend: DynBackend = Arc::new(LocalBackend::new(dir.path()).unwrap());
        let mut c = ManifestBuilder::new(
            &backend,
            Inventory::nothing(&backend),
            None,
            Utc::now(),
            1024,
        );
        c.held_left = 2500;
        add(&mut c, "g", 2000, 17, Place::Late).await;
        add(&mut c, "h", 3000, 19, Place::Late).await;
        add(&mut c, "i", 100, 23, Place::Now).await;
        let c = c.finish(None).await.unwrap();
        let o = &c.manifest;
        assert_eq!(paths(o), ["i", "g", "h"]);
        let bytes = tar(&backend, o).await;
        assert_eq!(hex::encode(Sha256::digest(&bytes)), o.sha256);
        for mark in &c.marks {
            let rest = &bytes[mark.offset as usize..];
            assert_eq!(mark.finish_with(rest).as_deref(), Some(o.sha256.as_str()));
        }
    }
}

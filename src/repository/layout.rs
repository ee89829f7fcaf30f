//! The tar an incremental manifest stands for, as a list of parts: header and padding
//! bytes made from the manifest alone, text entries inline, file bytes as pieces (or, for
//! chunked files, as chunk tables that become runs of packs once read). Reading any byte
//! range fetches only the pieces it overlaps, a few at a time.

use std::collections::VecDeque;
use std::ops::Range;
use std::sync::Arc;

use bytes::Bytes;
use futures::future::{BoxFuture, Shared};
use futures::{FutureExt, StreamExt, TryStreamExt};
use tokio_tar::{Builder, EntryType, Header};
use tokio_util::task::AbortOnDropHandle;

use super::chunks::Table;
use super::damage::{Damage, PieceDamage, Reason};
use super::manifest::{Entry, Manifest};
use super::{linked, pieces};
use crate::backend::{BackendError, ByteStream, DynBackend};

/// Where the pieces of one snapshot (or backup shard) are read from: the storage, the
/// repository's record of damage, and the name a damaged read reports.
#[derive(Clone, Debug)]
pub(crate) struct PieceReader {
    /// The storage.
    pub(crate) backend: DynBackend,
    /// Where damage found by the read is recorded.
    pub(crate) damage: Arc<Damage>,
    /// How its pieces are named.
    pub(crate) names: pieces::PieceNames,
    /// The snapshot's key, or a backup shard's description.
    pub(crate) label: String,
}

impl PieceReader {
    /// Piece `hash` of `len` bytes (a stored piece, or the bytes at `offset` of linked
    /// file `root`; a pack or chunk table has no length given), whole and checked; a
    /// missing or damaged piece is an error carrying [`PieceDamage`] (naming the linked
    /// file for its bytes), and is recorded.
    async fn piece(
        &self,
        hash: &str,
        len: Option<u64>,
        at: Option<&Linked>,
    ) -> std::io::Result<Bytes> {
        let fetched = match (at, len) {
            (Some(l), Some(len)) => self.linked_range(&l.root, l.offset..l.offset + len).await,
            _ => pieces::fetch(&self.backend, &self.names, hash).await,
        };
        let reason = match &fetched {
            Ok(b) if len.is_none_or(|n| b.len() as u64 == n) && self.names.hash(b) == hash => None,
            Ok(_) | Err(BackendError::Unauthentic(_)) => Some(Reason::HashMismatch),
            Err(BackendError::NotFound(_)) => Some(Reason::Missing),
            Err(_) => None,
        };
        let Some(reason) = reason else {
            return fetched.map_err(std::io::Error::other);
        };
        let damaged = at.map_or(hash, |l| l.root.as_ref());
        self.damage.record(damaged, reason).await;
        Err(std::io::Error::other(PieceDamage {
            snapshot: self.label.clone(),
            piece: damaged.to_string(),
            reason,
        }))
    }

    /// Stored piece `hash` (a chunk table), whole and checked.
    pub(crate) async fn table(&self, hash: &str) -> Result<Bytes, BackendError> {
        self.piece(hash, None, None)
            .await
            .map_err(|e| BackendError::Io {
                action: "failed to read a chunk table",
                path: hash.to_string(),
                source: e,
            })
    }

    /// Bytes `range` of linked file `root`, as stored (a file cut short gives fewer).
    pub(crate) async fn linked_range(
        &self,
        root: &str,
        range: Range<u64>,
    ) -> Result<Bytes, BackendError> {
        pieces::read_range(&self.backend, &linked::key(root)?, Some(range)).await
    }
}

/// Where a piece of a linked entry lies.
#[derive(Clone, Debug)]
struct Linked {
    /// The linked file.
    root: Arc<str>,
    /// The piece's first byte in it.
    offset: u64,
}

/// Bytes fetched ahead of the reader, about: enough requests in flight to hide the store's
/// latency, memory bounded. With 4 MiB pieces that is 8 at once (recovery of a 307 MiB
/// snapshot from S3 measured 1.17x a plain download with 4, 1.10x with 8); a backup's runs
/// of 1 MiB packs get 32 (a restore of three shards: 2.09 s with 8, 2.00 s with 24, 1.93 s
/// with 48; `BENCHMARKS.md`).
const AHEAD_BYTES: u64 = 32 << 20;

/// Most parts fetched ahead, however small.
const AHEAD_MOST: u64 = 32;

/// What a tar entry is.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Kind<'a> {
    /// A regular file.
    File,
    /// A directory.
    Dir,
    /// A GNU sparse file with these data regions (`[offset, length]`).
    Sparse(&'a [[u64; 2]]),
}

impl<'a> Kind<'a> {
    /// The kind of a manifest's entry.
    pub(crate) fn of(e: &'a super::manifest::Entry) -> Self {
        if e.dir {
            Kind::Dir
        } else if e.sparse.is_empty() {
            Kind::File
        } else {
            Kind::Sparse(&e.sparse)
        }
    }
}

/// A tar numeric field: octal when it fits, GNU's base-256 otherwise.
fn put_number(field: &mut [u8; 12], v: u64) {
    if v < 8u64.pow(11) {
        let text = format!("{v:011o}\0");
        field.copy_from_slice(text.as_bytes());
    } else {
        field.fill(0);
        field[0] = 0x80;
        field[4..].copy_from_slice(&v.to_be_bytes());
    }
}

/// The header block(s) of one tar entry of `size` bytes (a sparse file's real size): a GNU
/// header, preceded by a long-name entry when the path does not fit. Deterministic: the same
/// path, size, kind and mtime give the same bytes.
pub(crate) async fn entry_header(
    path: &str,
    size: u64,
    mtime: u64,
    kind: Kind<'_>,
) -> std::io::Result<Vec<u8>> {
    let mut h = file_header(size, mtime);
    match kind {
        Kind::File => {}
        Kind::Dir => {
            h.set_entry_type(EntryType::Directory);
            h.set_mode(0o755);
        }
        Kind::Sparse(regions) => {
            if regions.len() > super::manifest::MAX_SPARSE_REGIONS {
                return Err(std::io::Error::other(
                    "too many sparse regions for one header",
                ));
            }
            h.set_entry_type(EntryType::GNUSparse);
            h.set_size(regions.iter().map(|[_, len]| len).sum());
            if let Some(gnu) = h.as_gnu_mut() {
                put_number(&mut gnu.realsize, size);
                for (slot, [off, len]) in gnu.sparse.iter_mut().zip(regions) {
                    put_number(&mut slot.offset, *off);
                    put_number(&mut slot.numbytes, *len);
                }
            }
        }
    }
    let mut b = Builder::new_non_terminated(Vec::new());
    b.append_data(&mut h, path, tokio::io::empty()).await?;
    // Taken out rather than `into_inner`, which would append the end-of-archive blocks.
    Ok(std::mem::take(b.get_mut()))
}

/// The header of a regular file as every snapshot writes it: mode 0644, owner 0.
pub(crate) fn file_header(size: u64, mtime: u64) -> Header {
    let mut h = Header::new_gnu();
    h.set_entry_type(EntryType::Regular);
    h.set_size(size);
    h.set_mode(0o644);
    h.set_mtime(mtime);
    h.set_uid(0);
    h.set_gid(0);
    h
}

/// Zero bytes that pad an entry of `size` bytes to the 512-byte block.
pub(crate) fn padding(size: u64) -> usize {
    ((512 - size % 512) % 512) as usize
}

/// The two zero blocks that end a tar.
pub(crate) const END: usize = 1024;

/// One run of the tar's bytes.
#[derive(Clone, Debug)]
enum Part {
    Inline(Bytes),
    Piece {
        hash: String,
        len: u64,
        at: Option<Linked>,
    },
    /// The bytes a chunk table lists (read when the stream reaches it): the table, the
    /// bytes it covers and the packs its entry names.
    Chunks {
        table: String,
        len: u64,
        packs: Arc<[String]>,
    },
    /// Ranges of packs, in order: up to [`RUN_BYTES`] of a table's bytes, so that the
    /// parts fetched ahead hold as many bytes as pieces would, however finely a rewritten
    /// file's chunks alternate between packs.
    Run(Vec<(String, Range<u64>)>),
}

impl Part {
    fn len(&self) -> u64 {
        match self {
            Part::Inline(b) => b.len() as u64,
            Part::Piece { len, .. } | Part::Chunks { len, .. } => *len,
            Part::Run(ranges) => ranges.iter().map(|(_, r)| r.end - r.start).sum(),
        }
    }
}

/// The parts of the tar of `m`, in order.
async fn parts(m: &Manifest) -> std::io::Result<Vec<Part>> {
    let mut out = entry_parts(&m.entries, m.mtime, m.piece_size).await?;
    out.push(Part::Inline(Bytes::from(vec![0u8; END])));
    Ok(out)
}

/// The parts of `entries` (headers with `mtime`, files cut in `piece_size` pieces), without
/// the end of the tar.
async fn entry_parts(entries: &[Entry], mtime: u64, piece_size: u64) -> std::io::Result<Vec<Part>> {
    let zeros = Bytes::from(vec![0u8; END]);
    let mut out = Vec::new();
    for e in entries {
        out.push(Part::Inline(Bytes::from(
            entry_header(&e.path, e.size, mtime, Kind::of(e)).await?,
        )));
        match &e.text {
            Some(t) => out.push(Part::Inline(Bytes::from(t.clone().into_bytes()))),
            None if !e.tables.is_empty() => {
                let packs: Arc<[String]> = Arc::from(e.pieces.as_slice());
                out.extend(e.tables.iter().map(|t| Part::Chunks {
                    table: t.0.clone(),
                    len: t.1,
                    packs: Arc::clone(&packs),
                }));
            }
            None => {
                let mut left = e.stored_len();
                let root: Option<Arc<str>> = e.linked.as_deref().map(Arc::from);
                for hash in &e.pieces {
                    let len = left.min(piece_size);
                    let at = root.as_ref().map(|root| Linked {
                        root: Arc::clone(root),
                        offset: e.stored_len() - left,
                    });
                    out.push(Part::Piece {
                        hash: hash.clone(),
                        len,
                        at,
                    });
                    left -= len;
                }
            }
        }
        let pad = padding(e.stored_len());
        if pad > 0 {
            out.push(Part::Inline(zeros.slice(..pad)));
        }
    }
    Ok(out)
}

/// The bytes `range` (clamped to the size) of the tar of `m`.
///
/// Whole pieces are checked against their BLAKE3 as they arrive: a piece damaged in
/// storage ends the stream with an error rather than serving wrong bytes.
pub(crate) async fn read(
    reader: PieceReader,
    m: Arc<Manifest>,
    range: Option<Range<u64>>,
) -> Result<ByteStream, BackendError> {
    let all = parts(&m).await.map_err(|e| BackendError::Io {
        action: "failed to frame",
        path: String::new(),
        source: e,
    })?;
    let total: u64 = all.iter().map(Part::len).sum();
    let want = range.map_or(0..total, |r| r.start.min(total)..r.end.min(total));
    // Each overlapping part with the sub-range of it that is wanted.
    let mut offset = 0;
    let mut plan = Vec::new();
    for p in all {
        let len = p.len();
        let (start, end) = (want.start.max(offset), want.end.min(offset + len));
        if start < end {
            plan.push((p, start - offset..end - offset));
        }
        offset += len;
    }
    Ok(fetch(reader, plan))
}

/// The tar bytes of `entries` (headers with `mtime`, pieces of `piece_size`), without the
/// end of the tar: entries already stored, read back to be part of another tar. Also the
/// length in the tar of each entry, in order.
pub(crate) async fn read_entries(
    reader: PieceReader,
    entries: &[Entry],
    mtime: u64,
    piece_size: u64,
) -> std::io::Result<(ByteStream, Vec<u64>)> {
    let mut plan = Vec::new();
    let mut lens = Vec::with_capacity(entries.len());
    for e in entries {
        let parts = entry_parts(std::slice::from_ref(e), mtime, piece_size).await?;
        lens.push(parts.iter().map(Part::len).sum());
        plan.extend(parts.into_iter().map(|p| {
            let len = p.len();
            (p, 0..len)
        }));
    }
    Ok((fetch(reader, plan), lens))
}

/// Packs this many recently fetched by one stream are kept: a rewritten file's chunk
/// tables alternate between a few packs (its surviving chunks in the old ones, its new
/// chunks in new ones), so each pack is fetched once and cut many times (32 MiB at most; as
/// many as runs fetched ahead, so none is dropped while a run ahead still needs it).
const PACKS_KEPT: usize = AHEAD_MOST as usize;

/// A pack being fetched, or fetched, shared by the parts that cut it.
type SharedPack = Shared<BoxFuture<'static, Result<Bytes, Arc<std::io::Error>>>>;

/// The packs one stream fetched last, newest at the back.
#[derive(Clone, Default)]
struct Packs(Arc<std::sync::Mutex<VecDeque<(String, SharedPack)>>>);

impl Packs {
    /// Pack `pack`, whole and checked: fetched once (on a task of its own) while kept.
    async fn get(&self, reader: &PieceReader, pack: &str) -> std::io::Result<Bytes> {
        let shared = {
            let mut kept = self.0.lock().unwrap_or_else(|e| e.into_inner());
            match kept.iter().find(|(p, _)| p == pack) {
                Some((_, f)) => f.clone(),
                None => {
                    let (reader, hash) = (reader.clone(), pack.to_string());
                    let f = async move {
                        let task =
                            tokio::spawn(async move { reader.piece(&hash, None, None).await });
                        AbortOnDropHandle::new(task)
                            .await
                            .map_err(std::io::Error::other)
                            .and_then(|r| r)
                            .map_err(Arc::new)
                    }
                    .boxed()
                    .shared();
                    kept.push_back((pack.to_string(), f.clone()));
                    if kept.len() > PACKS_KEPT {
                        kept.pop_front();
                    }
                    f
                }
            }
        };
        shared.await.map_err(|e| match super::damage::find(&*e) {
            Some(d) => std::io::Error::other(d.clone()),
            None => std::io::Error::other(e.to_string()),
        })
    }
}

/// The bytes `sub` of each part, pieces fetched a few at a time and checked whole (so that
/// a range inside a piece is checked too); a chunk table is read when the stream reaches
/// it and stands for the runs of packs it lists.
fn fetch(reader: PieceReader, plan: Vec<(Part, Range<u64>)>) -> ByteStream {
    let ahead = fetch_ahead(&plan);
    let tables = reader.clone();
    let packs = Packs::default();
    futures::stream::iter(plan)
        .then(move |(part, sub)| {
            let reader = tables.clone();
            async move { expand(&reader, part, sub).await }
        })
        .map_ok(|parts| futures::stream::iter(parts.into_iter().map(Ok)))
        .try_flatten()
        .map(move |planned: std::io::Result<(Part, Range<u64>)>| {
            let (reader, packs) = (reader.clone(), packs.clone());
            async move {
                let (part, sub) = planned?;
                let bytes = match part {
                    Part::Inline(b) => b,
                    // A task per piece: the pieces fetched ahead are received, opened
                    // (decrypted, decompressed) and hashed on every core at once, not in
                    // turn on the one task that consumes the stream. A stream dropped
                    // midway aborts them, as it would drop the reads themselves.
                    Part::Piece { hash, len, at } => {
                        AbortOnDropHandle::new(tokio::spawn(async move {
                            reader.piece(&hash, Some(len), at.as_ref()).await
                        }))
                        .await
                        .map_err(std::io::Error::other)??
                    }
                    Part::Run(ranges) => run(&reader, &packs, &ranges).await?,
                    Part::Chunks { .. } => {
                        return Err(std::io::Error::other("a chunk table was not expanded"))
                    }
                };
                Ok(bytes.slice(sub.start as usize..sub.end as usize))
            }
        })
        .buffered(ahead)
        .boxed()
}

/// How many parts of `plan` to fetch at once: [`AHEAD_BYTES`] over its largest fetch (a
/// chunk table stands for runs of about [`RUN_BYTES`]).
fn fetch_ahead(plan: &[(Part, Range<u64>)]) -> usize {
    let largest = plan
        .iter()
        .map(|(p, _)| match p {
            Part::Inline(_) => 0,
            Part::Piece { len, .. } => *len,
            Part::Chunks { .. } | Part::Run(_) => RUN_BYTES,
        })
        .max()
        .unwrap_or(0)
        .max(RUN_BYTES);
    (AHEAD_BYTES / largest).clamp(1, AHEAD_MOST) as usize
}

/// A part as the parts to fetch: itself, or for a chunk table, the ranges of packs it lists
/// that overlap `sub`, each with the sub-range of it that is wanted.
async fn expand(
    reader: &PieceReader,
    part: Part,
    sub: Range<u64>,
) -> std::io::Result<Vec<(Part, Range<u64>)>> {
    let Part::Chunks { table, len, packs } = part else {
        return Ok(vec![(part, sub)]);
    };
    let bytes = reader.piece(&table, None, None).await?;
    let t = Table::parse(&bytes, len, &packs).map_err(|e| {
        std::io::Error::other(format!("{}: chunk table {table}: {e}", reader.label))
    })?;
    let mut out = Vec::new();
    let mut offset = 0;
    for run in group_spans(t.spans()) {
        let n = run.len();
        let (start, end) = (sub.start.max(offset), sub.end.min(offset + n));
        if start < end {
            out.push((run, start - offset..end - offset));
        }
        offset += n;
    }
    Ok(out)
}

/// Bytes of a table in one part (see [`Part::Run`]).
const RUN_BYTES: u64 = 1 << 20;

/// A table's ranges of packs as parts of about [`RUN_BYTES`] each.
fn group_spans(spans: Vec<(&str, Range<u64>)>) -> Vec<Part> {
    let mut out = Vec::new();
    let (mut part, mut bytes) = (Vec::new(), 0);
    for (pack, r) in spans {
        bytes += r.end - r.start;
        part.push((pack.to_string(), r));
        if bytes >= RUN_BYTES {
            out.push(Part::Run(std::mem::take(&mut part)));
            bytes = 0;
        }
    }
    if !part.is_empty() {
        out.push(Part::Run(part));
    }
    out
}

/// The bytes of `ranges`, their packs fetched at once (through the stream's `packs`) and
/// each checked whole before it is cut.
async fn run(
    reader: &PieceReader,
    packs: &Packs,
    ranges: &[(String, Range<u64>)],
) -> std::io::Result<Bytes> {
    let mut names: Vec<&str> = ranges.iter().map(|(p, _)| p.as_str()).collect();
    names.sort_unstable();
    names.dedup();
    let wholes = futures::future::try_join_all(names.iter().map(|p| packs.get(reader, p))).await?;
    let whole = |pack: &str| {
        let i = names.iter().position(|p| *p == pack).unwrap_or(0);
        &wholes[i]
    };
    if let [(pack, r)] = ranges {
        return cut(pack, whole(pack), r);
    }
    let mut out = Vec::with_capacity(ranges.iter().map(|(_, r)| (r.end - r.start) as usize).sum());
    for (pack, r) in ranges {
        out.extend_from_slice(&cut(pack, whole(pack), r)?);
    }
    Ok(Bytes::from(out))
}

/// Bytes `r` of pack `pack` (checked whole).
fn cut(pack: &str, whole: &Bytes, r: &Range<u64>) -> std::io::Result<Bytes> {
    if r.end > whole.len() as u64 {
        return Err(std::io::Error::other(format!(
            "a chunk table points past the end of pack {pack}"
        )));
    }
    Ok(whole.slice(r.start as usize..r.end as usize))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bytes_fetched_ahead_stay_about_the_same_whatever_the_part_size() {
        let piece = |len| {
            let p = Part::Piece {
                hash: String::new(),
                len,
                at: None,
            };
            (p, 0..len)
        };
        let table = || {
            let p = Part::Chunks {
                table: String::new(),
                len: 64 << 20,
                packs: Arc::from(Vec::new()),
            };
            (p, 0..64 << 20)
        };
        let inline = || (Part::Inline(Bytes::from_static(b"x")), 0..1);
        assert_eq!(fetch_ahead(&[inline(), piece(4 << 20), piece(1000)]), 8);
        assert_eq!(fetch_ahead(&[inline(), table(), table()]), 32);
        assert_eq!(fetch_ahead(&[piece(64 << 10)]), AHEAD_MOST as usize);
        assert_eq!(fetch_ahead(&[piece(64 << 20)]), 1);
        assert_eq!(fetch_ahead(&[inline()]), 32);
    }

    #[tokio::test]
    async fn headers_are_deterministic_and_long_names_fit() {
        let a = entry_header("data/1-1.seg", 10, 1_700_000_000, Kind::File)
            .await
            .unwrap();
        assert_eq!(
            a,
            entry_header("data/1-1.seg", 10, 1_700_000_000, Kind::File)
                .await
                .unwrap()
        );
        assert_eq!(a.len(), 512);
        let long = format!("collections/{}/data/1-1.seg", "x".repeat(200));
        assert_eq!(
            entry_header(&long, 10, 0, Kind::File).await.unwrap().len() % 512,
            0
        );
        assert!(entry_header(&long, 10, 0, Kind::File).await.unwrap().len() > 512);
        assert_eq!(padding(512), 0);
        assert_eq!(padding(1), 511);
    }
}

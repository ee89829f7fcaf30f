//! The manifest of an incremental snapshot (`{name}.snapshot.manifest`, version 1): every
//! entry of the tar it stands for, in order, with its bytes given inline (small text
//! entries) or as a list of content-addressed pieces. The tar is rebuilt from it alone, so
//! every download is byte-identical and matches `sha256`. Documented in
//! `docs/snapshot-format.md`.

use serde::{Deserialize, Serialize};

use super::hashing::is_hex_digest;

/// Value of `format`.
pub(crate) const FORMAT: &str = "snapstream-incremental";
/// The only manifest version this build reads and writes.
pub(crate) const VERSION: u32 = 1;
/// Bytes of a file per piece (the last piece of a file may be shorter).
pub(crate) const PIECE_SIZE: u64 = 4 << 20;
/// Largest manifest read (a 16 TiB snapshot in 4 MiB pieces lists ~4 million pieces).
pub(crate) const MAX_MANIFEST_SIZE: u64 = 512 << 20;

/// One entry of the tar.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// Path inside the archive.
    pub path: String,
    /// Exact size in bytes.
    pub size: u64,
    /// The bytes themselves, for small text entries (`snapshot.json`, `config.json`, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    /// Otherwise the BLAKE3 (hex) of each `piece_size` piece, in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pieces: Vec<String>,
    /// A directory (size 0, no bytes): shard archives of Qdrant hold some.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub dir: bool,
    /// For a sparse file (Qdrant's shard archives hold some): its data regions as
    /// `[offset, length]`, the rest being holes; `pieces` then hold the regions' bytes only.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sparse: Vec<[u64; 2]>,
    /// For a sealed segment of a local collection: the root of the linked file
    /// (`.repository/linked/{root}`) that holds its bytes; `pieces` then are the hashes its
    /// reads are checked against, not stored pieces.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub linked: Option<String>,
    /// For a file cut in content-defined chunks (shard backups): its chunk tables, each
    /// `[piece, bytes it covers]`, in order; `pieces` then are the packs they name.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tables: Vec<TableRef>,
}

/// A chunk table of an entry: the piece holding it and how many of the entry's bytes it
/// covers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TableRef(pub String, pub u64);

/// Most data regions a sparse entry may have: what fits in one GNU header.
pub(crate) const MAX_SPARSE_REGIONS: usize = 4;

/// Whether `regions` can describe a sparse file of `size` bytes in one GNU tar header: at
/// most four, in order, inside the file, each but the last a whole number of 512-byte blocks.
pub(crate) fn valid_sparse(regions: &[[u64; 2]], size: u64) -> bool {
    let mut end = 0u64;
    regions.len() <= MAX_SPARSE_REGIONS
        && regions.iter().enumerate().all(|(i, [off, len])| {
            let ok = *off >= end
                && off.checked_add(*len).is_some_and(|e| e <= size)
                && (i + 1 == regions.len() || len % 512 == 0);
            end = off.saturating_add(*len);
            ok
        })
}

impl Entry {
    /// The bytes the entry's pieces hold: the whole file, or a sparse file's regions.
    pub fn stored_len(&self) -> u64 {
        if self.sparse.is_empty() {
            self.size
        } else {
            self.sparse.iter().map(|[_, len]| len).sum()
        }
    }
}

/// `{name}.snapshot.manifest`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// Always [`FORMAT`].
    pub format: String,
    /// Always [`VERSION`] for this build.
    pub version: u32,
    /// When the snapshot was taken (RFC 3339, UTC); listed as its creation time.
    pub created_at: String,
    /// The modification time written in every tar header (seconds since the epoch).
    pub mtime: u64,
    /// Bytes per piece: [`PIECE_SIZE`] for snapshots, smaller for shard backups.
    pub piece_size: u64,
    /// The length of the tar.
    pub size: u64,
    /// Hex SHA-256 of the tar.
    pub sha256: String,
    /// The entries in archive order.
    pub entries: Vec<Entry>,
}

/// Why a manifest cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("invalid snapshot manifest: {0}")]
pub struct InvalidManifest(pub String);

impl Manifest {
    /// Parses and checks a manifest: version, piece hashes, and that every entry's size
    /// agrees with its text or its number of pieces, so a tar built from it is well formed.
    pub fn parse(bytes: &[u8]) -> Result<Self, InvalidManifest> {
        let m: Manifest =
            serde_json::from_slice(bytes).map_err(|e| InvalidManifest(e.to_string()))?;
        if m.format != FORMAT || m.version != VERSION {
            return Err(InvalidManifest(format!(
                "format `{}` version {} (this build reads `{FORMAT}` version {VERSION})",
                m.format, m.version
            )));
        }
        if m.piece_size == 0 || m.piece_size > 1 << 30 || !is_hex_digest(&m.sha256) {
            return Err(InvalidManifest("bad piece size or checksum".into()));
        }
        for e in &m.entries {
            let ok = match &e.text {
                _ if e.dir => {
                    e.size == 0
                        && e.text.is_none()
                        && e.pieces.is_empty()
                        && e.linked.is_none()
                        && e.tables.is_empty()
                }
                Some(t) => {
                    t.len() as u64 == e.size
                        && e.pieces.is_empty()
                        && e.tables.is_empty()
                        && e.sparse.is_empty()
                        && e.linked.is_none()
                }
                None if !e.tables.is_empty() => {
                    e.linked.is_none()
                        && e.tables.iter().try_fold(0u64, |n, t| n.checked_add(t.1))
                            == Some(e.stored_len())
                        && e.tables.iter().all(|t| t.1 > 0 && is_hex_digest(&t.0))
                        && e.pieces.iter().all(|p| is_hex_digest(p))
                }
                None if e.linked.is_some() => {
                    e.sparse.is_empty()
                        && e.linked.as_deref().is_some_and(is_hex_digest)
                        && e.pieces.len() as u64 == e.size.div_ceil(m.piece_size)
                        && e.pieces.iter().all(|p| is_hex_digest(p))
                }
                None => {
                    (e.sparse.is_empty() || valid_sparse(&e.sparse, e.size))
                        && e.pieces.len() as u64 == e.stored_len().div_ceil(m.piece_size)
                        && e.pieces.iter().all(|p| is_hex_digest(p))
                }
            };
            if !ok {
                return Err(InvalidManifest(format!(
                    "entry `{}` is inconsistent",
                    e.path
                )));
            }
        }
        Ok(m)
    }

    /// Every stored piece the manifest refers to (with repeats): pieces, packs and chunk
    /// tables; linked entries' piece hashes are not stored pieces.
    pub fn pieces(&self) -> impl Iterator<Item = &str> {
        self.entries
            .iter()
            .filter(|e| e.linked.is_none())
            .flat_map(|e| {
                let tables = e.tables.iter().map(|t| t.0.as_str());
                e.pieces.iter().map(String::as_str).chain(tables)
            })
    }

    /// The entries held by linked files.
    pub fn linked(&self) -> impl Iterator<Item = &Entry> {
        self.entries.iter().filter(|e| e.linked.is_some())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunked(tables: Vec<TableRef>, size: u64) -> Vec<u8> {
        let h = "b".repeat(64);
        let m = Manifest {
            format: FORMAT.into(),
            version: VERSION,
            created_at: "2026-12-05T00:00:00Z".into(),
            mtime: 0,
            piece_size: 1 << 20,
            size: 2048,
            sha256: h.clone(),
            entries: vec![Entry {
                path: "segments/a/files/matrix.dat".into(),
                size,
                text: None,
                pieces: vec![h],
                dir: false,
                sparse: Vec::new(),
                linked: None,
                tables,
            }],
        };
        serde_json::to_vec(&m).unwrap()
    }

    #[test]
    fn chunk_tables_must_cover_their_entry_exactly() {
        let t = |n| TableRef("c".repeat(64), n);
        let m = Manifest::parse(&chunked(vec![t(600), t(400)], 1000)).unwrap();
        assert_eq!(m.pieces().count(), 3, "the pack and both tables are kept");
        assert!(Manifest::parse(&chunked(vec![t(600)], 1000)).is_err());
        assert!(Manifest::parse(&chunked(vec![t(u64::MAX), t(1001)], 1000)).is_err());
        assert!(Manifest::parse(&chunked(vec![t(0), t(1000)], 1000)).is_err());
        let bad_hash = vec![TableRef("not a hash".into(), 1000)];
        assert!(Manifest::parse(&chunked(bad_hash, 1000)).is_err());
    }
}

//! Content-addressed pieces: `.repository/pieces/{blake3 hex, keyed when encrypted}`, written once, shared by
//! every snapshot that holds the same bytes, removed only by the collector.

use std::collections::HashSet;
use std::sync::Arc;

use bytes::Bytes;
use futures::TryStreamExt;

use zeroize::Zeroizing;

use crate::backend::encryption::Keyring;
use crate::backend::{BackendError, BackendExt, DynBackend, ObjectKey};

/// Pieces, one object each, named by their hash, under the repository's own directory:
/// collection names cannot start with `.`, so no snapshot directory can collide with it.
pub(crate) const PIECES_DIR: &str = ".repository/pieces";

/// How pieces are named: the BLAKE3 (hex) of their content, keyed when the storage is
/// encrypted, so that names reveal neither the content nor which pieces two collections
/// share to whoever reads the bucket, while equal content still gets one name (one copy).
#[derive(Clone, Default)]
pub(crate) enum PieceNames {
    /// Plain BLAKE3.
    #[default]
    Plain,
    /// BLAKE3 in keyed mode, with a key derived from the storage's data key.
    Keyed(Arc<Zeroizing<[u8; 32]>>),
}

impl std::fmt::Debug for PieceNames {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            PieceNames::Plain => "PieceNames::Plain",
            PieceNames::Keyed(_) => "PieceNames::Keyed([redacted])",
        })
    }
}

impl PieceNames {
    /// The names of `keyring`'s storage (loads its key on first use).
    pub(crate) async fn of(keyring: Option<&Keyring>) -> Result<PieceNames, BackendError> {
        Ok(match keyring {
            None => PieceNames::Plain,
            Some(k) => match k.names_key().await? {
                None => PieceNames::Plain,
                Some(key) => PieceNames::Keyed(Arc::new(Zeroizing::new(key))),
            },
        })
    }

    /// The name of a piece holding `bytes`.
    pub(crate) fn hash(&self, bytes: &[u8]) -> String {
        match self {
            PieceNames::Plain => blake3::hash(bytes).to_hex().to_string(),
            PieceNames::Keyed(key) => blake3::keyed_hash(key, bytes).to_hex().to_string(),
        }
    }
}

/// The first bytes of a piece stored zstd-compressed (its content follows as one zstd frame).
/// Pieces stored before compression existed, or that did not shrink, are raw.
const COMPRESSED: &[u8; 4] = b"SSZ1";
/// A compressed piece never expands past this (pieces are at most 4 MiB; a frame claiming
/// more is not ours).
const MAX_PIECE: usize = 64 << 20;

/// Samples of a large piece compressed to judge whether compressing it all is worth it.
const SAMPLES: usize = 4;
/// Bytes of each sample.
const SAMPLE_LEN: usize = 16 << 10;

/// Whether `bytes` may shrink by an eighth: a piece of more than four times the samples is
/// judged by [`SAMPLES`] slices spread over it, which must save a tenth. On random vectors
/// zstd saves on a 16 KiB slice within a few tenths of a percent of what it saves on the
/// whole (about 8%: stored raw); on text a slice saves somewhat less than the whole, far
/// above a tenth. So the piece is compressed in full only when the result is likely kept,
/// and random vectors cost 64 KiB of compression per piece instead of all of it.
fn may_shrink(bytes: &[u8]) -> bool {
    if bytes.len() <= 4 * SAMPLES * SAMPLE_LEN {
        return true;
    }
    let step = bytes.len() / SAMPLES;
    let packed: usize = (0..SAMPLES)
        .map(|i| &bytes[i * step..i * step + SAMPLE_LEN])
        .map(|s| zstd::bulk::compress(s, 3).map_or(s.len(), |z| z.len()))
        .sum();
    let sampled = SAMPLES * SAMPLE_LEN;
    packed < sampled - sampled / 10
}

/// How a piece's bytes are stored: compressed (zstd, level 3) when that saves at least an
/// eighth, else as they are. The piece's name stays the hash of its content, so
/// deduplication does not depend on compression.
pub(crate) fn encode(bytes: Bytes, compress: bool) -> Bytes {
    if !compress || !may_shrink(&bytes) {
        return bytes;
    }
    match zstd::bulk::compress(&bytes, 3) {
        Ok(z) if z.len() + COMPRESSED.len() < bytes.len() - bytes.len() / 8 => {
            let mut out = Vec::with_capacity(COMPRESSED.len() + z.len());
            out.extend_from_slice(COMPRESSED);
            out.extend_from_slice(&z);
            out.into()
        }
        _ => bytes,
    }
}

/// A piece's content from its stored bytes: decompressed when framed as compressed and the
/// result hashes to `hash`, else the stored bytes themselves (a raw piece that happens to
/// start like a frame stays raw). The caller checks the hash of what is returned.
pub(crate) fn decode(names: &PieceNames, hash: &str, stored: Bytes) -> Bytes {
    if let Some(frame) = stored.strip_prefix(COMPRESSED.as_slice()) {
        if let Ok(plain) = zstd::bulk::decompress(frame, MAX_PIECE) {
            if names.hash(&plain) == hash {
                return plain.into();
            }
        }
    }
    stored
}

/// The key of piece `hash`.
pub(crate) fn key(hash: &str) -> Result<ObjectKey, BackendError> {
    Ok(ObjectKey::new(format!("{PIECES_DIR}/{hash}"))?)
}

/// The directory of pieces.
pub(crate) fn dir() -> ObjectKey {
    ObjectKey::new(PIECES_DIR).expect("a constant, valid key")
}

/// Reads piece `hash` whole, decompressed (the caller checks it against its hash).
pub(crate) async fn fetch(
    backend: &DynBackend,
    names: &PieceNames,
    hash: &str,
) -> Result<Bytes, BackendError> {
    let stored = fetch_stored(backend, hash).await?;
    let (h, names) = (hash.to_string(), names.clone());
    tokio::task::spawn_blocking(move || decode(&names, &h, stored))
        .await
        .map_err(|e| BackendError::Io {
            action: "failed to decompress",
            path: hash.to_string(),
            source: std::io::Error::other(e),
        })
}

/// Reads piece `hash` as stored.
async fn fetch_stored(backend: &DynBackend, hash: &str) -> Result<Bytes, BackendError> {
    read_range(backend, &key(hash)?, None).await
}

/// Bytes `range` (or all) of object `k`, in one buffer (a piece, or a piece's worth).
pub(crate) async fn read_range(
    backend: &DynBackend,
    k: &ObjectKey,
    range: Option<std::ops::Range<u64>>,
) -> Result<Bytes, BackendError> {
    let chunks: Vec<Bytes> = backend
        .open(k, range)
        .await?
        .try_collect()
        .await
        .map_err(|e| BackendError::io("failed to read", k, e))?;
    Ok(match chunks.len() {
        1 => chunks.into_iter().next().unwrap_or_default(),
        _ => chunks.concat().into(),
    })
}

/// Stores a piece unless it is there already (a piece's bytes never differ).
pub(crate) async fn store(
    backend: &DynBackend,
    hash: &str,
    bytes: Bytes,
) -> Result<bool, BackendError> {
    match backend.put_if_absent(&key(hash)?, bytes).await {
        Ok(_) => Ok(true),
        Err(BackendError::AlreadyExists(_)) => Ok(false),
        Err(e) => Err(e),
    }
}

/// Writes piece `hash` whether or not it is stored: a fresh copy over a damaged one
/// (atomically: readers see the old object or the new one).
pub(crate) async fn replace(
    backend: &DynBackend,
    hash: &str,
    bytes: Bytes,
) -> Result<(), BackendError> {
    backend.put(&key(hash)?, bytes).await.map(|_| ())
}

/// The hashes of every stored piece.
pub(crate) async fn list(backend: &DynBackend) -> Result<HashSet<String>, BackendError> {
    names_under(backend, &dir()).await
}

/// The names of the objects under `dir` (pieces and linked files are named by hashes).
pub(crate) async fn names_under(
    backend: &DynBackend,
    dir: &ObjectKey,
) -> Result<HashSet<String>, BackendError> {
    backend
        .list_recursive(Some(dir))
        .map_ok(|m| m.key.file_name().to_string())
        .try_collect()
        .await
}

/// Reads a small object whole (manifests), refusing one larger than `limit`.
pub(crate) async fn get_small(
    backend: &DynBackend,
    k: &ObjectKey,
    limit: u64,
) -> Result<Bytes, BackendError> {
    let size = backend.stat(k).await?.size;
    if size > limit {
        return Err(BackendError::Io {
            action: "refused to read an oversized",
            path: k.to_string(),
            source: std::io::Error::other(format!("{size} bytes")),
        });
    }
    backend.get_bytes(k).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pieces_shrink_when_they_can_and_always_read_back() {
        let text = Bytes::from("payload text, again and again; ".repeat(4000));
        let stored = encode(text.clone(), true);
        assert!(stored.len() < text.len() / 4 && stored.starts_with(COMPRESSED));
        let names = PieceNames::Plain;
        assert_eq!(decode(&names, &names.hash(&text), stored), text);
        // Incompressible bytes stay raw.
        let mut noise = vec![0u8; 100_000];
        blake3::Hasher::new()
            .update(b"noise")
            .finalize_xof()
            .fill(&mut noise);
        let noise = Bytes::from(noise);
        assert!(
            encode(noise.clone(), true) == noise,
            "random bytes are stored raw"
        );
        assert_eq!(encode(text.clone(), false), text);
        // A raw piece that starts like a frame is read as it is.
        let lookalike = Bytes::from([COMPRESSED.as_slice(), b"not zstd at all"].concat());
        assert_eq!(
            decode(&names, &names.hash(&lookalike), lookalike.clone()),
            lookalike
        );
    }

    #[test]
    fn a_large_piece_is_compressed_whole_only_when_its_samples_shrink() {
        let text = "payload text, again and again; ".repeat(40_000);
        assert!(text.len() > 4 * SAMPLES * SAMPLE_LEN && may_shrink(text.as_bytes()));
        let text = Bytes::from(text);
        assert!(encode(text.clone(), true).len() < text.len() / 4);
        // Vectors of uniform floats, normalized: zstd saves about 8% of them, less than the
        // eighth a stored piece must save, and the samples tell so without compressing all.
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut floats = Vec::new();
        for _ in 0..1000 {
            let v: Vec<f32> = (0..768)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    (x >> 40) as f32 / (1u64 << 24) as f32 - 0.5
                })
                .collect();
            let norm = v.iter().map(|f| f * f).sum::<f32>().sqrt();
            floats.extend(v.iter().flat_map(|f| (f / norm).to_le_bytes()));
        }
        assert!(!may_shrink(&floats));
        let floats = Bytes::from(floats);
        assert!(encode(floats.clone(), true) == floats);
        // Text in every sample's place, noise between: judged by what was sampled.
        let mut mixed = vec![0u8; 1 << 20];
        blake3::Hasher::new()
            .update(b"mixed")
            .finalize_xof()
            .fill(&mut mixed);
        let step = mixed.len() / SAMPLES;
        for i in 0..SAMPLES {
            mixed[i * step..i * step + SAMPLE_LEN].fill(b'a');
        }
        assert!(may_shrink(&mixed));
        let mixed = Bytes::from(mixed);
        assert!(
            encode(mixed.clone(), true) == mixed,
            "a piece kept only if it saves an eighth"
        );
    }
}

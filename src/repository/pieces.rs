//! Content-addressed pieces: `.repository/pieces/{blake3 hex}`, written once, shared by
//! every snapshot that holds the same bytes, removed only by the collector.

use std::collections::HashSet;

use bytes::Bytes;
use futures::TryStreamExt;

use crate::backend::{BackendError, BackendExt, DynBackend, ObjectKey};

/// Pieces, one object each, named by their hash, under the repository's own directory:
/// collection names cannot start with `.`, so no snapshot directory can collide with it.
pub(crate) const PIECES_DIR: &str = ".repository/pieces";

/// The BLAKE3 (hex) of a piece: its name.
pub(crate) fn hash(bytes: &[u8]) -> String {
    blake3::hash(bytes).to_hex().to_string()
}

/// The key of piece `hash`.
pub(crate) fn key(hash: &str) -> Result<ObjectKey, BackendError> {
    Ok(ObjectKey::new(format!("{PIECES_DIR}/{hash}"))?)
}

/// The directory of pieces.
pub(crate) fn dir() -> ObjectKey {
    ObjectKey::new(PIECES_DIR).expect("a constant, valid key")
}

/// Reads piece `hash` whole (the caller checks it against its hash).
pub(crate) async fn fetch(backend: &DynBackend, hash: &str) -> Result<Bytes, BackendError> {
    let k = key(hash)?;
    let chunks: Vec<Bytes> = backend
        .open(&k, None)
        .await?
        .try_collect()
        .await
        .map_err(|e| BackendError::Io {
            action: "failed to read",
            path: k.to_string(),
            source: e,
        })?;
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
    backend
        .list_recursive(Some(&dir()))
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

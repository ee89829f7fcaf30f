//! Linked files: `.repository/linked/{root}`, a hard link to a sealed segment of a local
//! collection, standing in a manifest for the segment's bytes instead of pieces. Linking
//! costs metadata only; the collection never writes a sealed file again (compaction and
//! sealing make new files and rename or delete names), so the linked inode keeps the bytes
//! the manifest describes for as long as any manifest names it. The collector sweeps it like
//! a piece. Named by `root`, a hash of the file's piece hashes: the same bytes linked twice
//! (a segment unchanged between snapshots) are one object.

use std::collections::HashSet;

use crate::backend::{BackendError, DynBackend, ObjectKey};

/// Linked files, beside the pieces.
pub(crate) const LINKED_DIR: &str = ".repository/linked";

/// The key of linked file `root`.
pub(crate) fn key(root: &str) -> Result<ObjectKey, BackendError> {
    Ok(ObjectKey::new(format!("{LINKED_DIR}/{root}"))?)
}

/// The directory of linked files.
pub(crate) fn dir() -> ObjectKey {
    ObjectKey::new(LINKED_DIR).expect("a constant, valid key")
}

/// The name of a file of `size` bytes cut in `piece_size` pieces hashing to `pieces`.
pub(crate) fn root(size: u64, piece_size: u64, pieces: &[String]) -> String {
    let mut h = blake3::Hasher::new_derive_key("snapstream 2026 linked file");
    h.update(&size.to_le_bytes());
    h.update(&piece_size.to_le_bytes());
    for p in pieces {
        h.update(p.as_bytes());
    }
    h.finalize().to_hex().to_string()
}

/// The roots of every linked file stored.
pub(crate) async fn list(backend: &DynBackend) -> Result<HashSet<String>, BackendError> {
    super::pieces::names_under(backend, &dir()).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roots_name_the_content_and_its_cut() {
        let p = vec!["a".repeat(64), "b".repeat(64)];
        assert_eq!(root(10, 4, &p), root(10, 4, &p));
        assert_ne!(root(10, 4, &p), root(11, 4, &p));
        assert_ne!(root(10, 4, &p), root(10, 8, &p));
        assert_ne!(root(10, 4, &p), root(10, 4, &p[..1]));
        assert!(super::super::hashing::is_hex_digest(&root(0, 4, &[])));
    }
}

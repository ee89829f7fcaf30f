//! Pieces known damaged or missing: found by a read (any download, range, recovery,
//! restore or backup that reads stored bytes) or by a verification, remembered in memory
//! and as a marker object `.repository/damaged/{hash}` (so another process, or this one
//! after a restart, knows too), and repaired by the next create that holds the same bytes:
//! it writes a fresh copy over the damaged one, which makes every snapshot sharing the piece
//! whole again. A damaged piece is never deleted for being damaged: it stays for inspection
//! until repaired or collected.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::sync::Arc;

use bytes::Bytes;
use futures::TryStreamExt;
use parking_lot::Mutex;

use super::pieces::PieceNames;
use crate::backend::{BackendError, BackendExt, DynBackend, ObjectKey};

/// Where damage markers live, beside the pieces.
pub(crate) const DAMAGED_DIR: &str = ".repository/damaged";

/// What is wrong with a piece.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Reason {
    /// The piece is not in storage.
    Missing,
    /// Its bytes do not hash to its name (or have the wrong length).
    HashMismatch,
}

impl Reason {
    fn as_str(self) -> &'static str {
        match self {
            Reason::Missing => "missing",
            Reason::HashMismatch => "hash mismatch",
        }
    }

    fn parse(text: &str) -> Reason {
        if text.trim() == "missing" {
            Reason::Missing
        } else {
            Reason::HashMismatch
        }
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A read that met a damaged piece: which snapshot (or backup), which piece, what is wrong.
/// Carried inside the `io::Error` that ends the read, so every path can name it.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("`{snapshot}` is damaged in storage: piece {piece} is {}", match .reason {
    Reason::Missing => "missing",
    Reason::HashMismatch => "corrupt (its bytes do not match its hash)",
})]
pub(crate) struct PieceDamage {
    /// The snapshot's (or backup's) key in storage.
    pub snapshot: String,
    /// The piece's hash.
    pub piece: String,
    /// What is wrong.
    pub reason: Reason,
}

/// The first [`PieceDamage`] in `err`'s source chain, through `io::Error` payloads.
pub(crate) fn find<'a>(err: &'a (dyn std::error::Error + 'static)) -> Option<&'a PieceDamage> {
    let mut cur: Option<&'a (dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = cur {
        if let Some(d) = e.downcast_ref::<PieceDamage>() {
            return Some(d);
        }
        if let Some(inner) = e
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
        {
            if let Some(d) = find(inner) {
                return Some(d);
            }
        }
        cur = e.source();
    }
    None
}

impl PieceDamage {
    /// The service error for a read that met this damage: a storage fault, not the caller's.
    pub(crate) fn to_error(&self) -> crate::error::Error {
        crate::error::Error::Storage {
            summary: self.to_string(),
            source: Box::new(self.clone()),
        }
    }
}

/// `stream`, remembering the first [`PieceDamage`] that ends it: for readers (an upload to
/// Qdrant) whose own error loses the cause.
pub(crate) fn watch(
    stream: crate::backend::ByteStream,
) -> (crate::backend::ByteStream, Arc<Mutex<Option<PieceDamage>>>) {
    use futures::StreamExt;
    let seen: Arc<Mutex<Option<PieceDamage>>> = Arc::default();
    let slot = Arc::clone(&seen);
    let watched = stream
        .inspect_err(move |e| {
            if let Some(d) = find(e) {
                slot.lock().get_or_insert_with(|| d.clone());
            }
        })
        .boxed();
    (watched, seen)
}

fn marker(hash: &str) -> Result<ObjectKey, BackendError> {
    Ok(ObjectKey::new(format!("{DAMAGED_DIR}/{hash}"))?)
}

/// The damage known to one repository.
#[derive(Debug)]
pub(crate) struct Damage {
    backend: DynBackend,
    known: Mutex<HashMap<String, Reason>>,
}

impl Damage {
    pub(crate) fn new(backend: DynBackend) -> Arc<Self> {
        Arc::new(Damage {
            backend,
            known: Mutex::new(HashMap::new()),
        })
    }

    /// Records that `piece` is damaged, in memory and (once) as a marker object. Returns
    /// whether it was news.
    pub(crate) async fn record(&self, piece: &str, reason: Reason) -> bool {
        if self
            .known
            .lock()
            .insert(piece.to_string(), reason)
            .is_some()
        {
            return false;
        }
        tracing::error!(piece, %reason, "a snapshot piece is damaged in storage; the next create that holds these bytes will write a fresh copy");
        crate::telemetry::get().damaged_pieces_found.inc();
        let put = async {
            self.backend
                .put(&marker(piece)?, Bytes::from(reason.as_str()))
                .await
        };
        if let Err(e) = put.await {
            tracing::warn!(piece, error = %e, "could not store the damage marker");
        }
        true
    }

    /// Whether `piece` is known damaged in this process.
    pub(crate) fn contains(&self, piece: &str) -> bool {
        self.known.lock().contains_key(piece)
    }

    /// Every piece known damaged: in memory, and the markers in storage (one listing).
    pub(crate) async fn all(&self) -> Result<HashMap<String, Reason>, BackendError> {
        let dir = ObjectKey::new(DAMAGED_DIR)?;
        let names: Vec<String> = self
            .backend
            .list_recursive(Some(&dir))
            .map_ok(|m| m.key.file_name().to_string())
            .try_collect()
            .await?;
        let mut out = self.known.lock().clone();
        for name in names {
            if let std::collections::hash_map::Entry::Vacant(slot) = out.entry(name) {
                let reason = match self.backend.get_bytes(&marker(slot.key())?).await {
                    Ok(b) => Reason::parse(&String::from_utf8_lossy(&b)),
                    Err(_) => Reason::HashMismatch,
                };
                slot.insert(reason);
            }
        }
        Ok(out)
    }

    /// A fresh copy of `piece` was written: it is sound again.
    pub(crate) async fn repaired(&self, piece: &str) {
        self.known.lock().remove(piece);
        let removed = match marker(piece) {
            Ok(k) => self.backend.delete(&k).await,
            Err(e) => Err(e),
        };
        match removed {
            Ok(()) | Err(BackendError::NotFound(_)) => {}
            Err(e) => tracing::warn!(piece, error = %e, "could not remove the damage marker"),
        }
        tracing::info!(
            piece,
            "repaired a damaged snapshot piece: every snapshot sharing it is whole again"
        );
        crate::telemetry::get().damaged_pieces_repaired.inc();
    }
}

/// What a create may build on: the pieces stored and sound (not uploaded again), and the
/// pieces known damaged (written again, over the damaged copy, when the create holds them).
#[derive(Clone, Debug)]
pub(crate) struct Inventory {
    /// Stored, and not known damaged.
    pub(crate) sound: HashSet<String>,
    /// Known damaged or missing.
    pub(crate) damaged: HashSet<String>,
    /// Where repairs are reported.
    pub(crate) damage: Arc<Damage>,
    /// Whether new pieces are stored compressed (the repository's setting).
    pub(crate) compress: bool,
    /// How pieces are named.
    pub(crate) names: PieceNames,
    /// Whether sealed files are linked rather than copied (local storage on the
    /// collections' filesystem).
    pub(crate) link: bool,
    /// Linked files stored, and not known damaged.
    pub(crate) linked: HashSet<String>,
}

impl Inventory {
    /// No piece stored, no damage known (a fresh storage).
    #[cfg(test)]
    pub(crate) fn nothing(backend: &DynBackend) -> Inventory {
        Inventory {
            sound: HashSet::new(),
            damaged: HashSet::new(),
            damage: Damage::new(Arc::clone(backend)),
            compress: false,
            names: PieceNames::Plain,
            link: false,
            linked: HashSet::new(),
        }
    }

    /// The stored pieces (and linked files, when `link`) and the known damage of a
    /// repository.
    pub(crate) async fn take(
        backend: &DynBackend,
        damage: &Arc<Damage>,
        compress: bool,
        names: PieceNames,
        link: bool,
    ) -> Result<Inventory, BackendError> {
        let mut sound = super::pieces::list(backend).await?;
        let mut linked = if link {
            super::linked::list(backend).await?
        } else {
            HashSet::new()
        };
        let damaged: HashSet<String> = damage.all().await?.into_keys().collect();
        sound.retain(|h| !damaged.contains(h));
        linked.retain(|h| !damaged.contains(h));
        Ok(Inventory {
            sound,
            damaged,
            damage: Arc::clone(damage),
            compress,
            names,
            link,
            linked,
        })
    }
}

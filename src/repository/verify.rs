//! Verification of the whole storage: every snapshot manifest, backup object and plain
//! snapshot can be read; every piece one refers to exists; a fraction of the pieces (and of
//! the plain snapshots) is read back and hashed again. Deletes nothing: damage is reported,
//! logged and recorded (so that the next create that holds the bytes repairs it).
//!
//! Which part is read rotates with `round`: with a fraction `f`, the pieces fall into
//! `n = ceil(1 / f)` groups by their name, and round `r` reads group `r mod n`, so `n`
//! consecutive rounds read everything.

use std::collections::{BTreeMap, HashMap, HashSet};

use futures::{StreamExt, TryStreamExt};
use serde::Serialize;
use sha2::{Digest, Sha256};

use super::backups::{self, StoredBackup};
use super::damage::Reason;
use super::linked::LINKED_DIR;
use super::manifest::{Manifest, MAX_MANIFEST_SIZE};
use super::pieces::{self, PIECES_DIR};
use super::{plain, Repository, EXTENSION, MANIFEST_SUFFIX};
use crate::backend::{BackendError, ObjectKey};
use crate::error::chain;

/// Pieces read back at once.
const READS_IN_FLIGHT: usize = 8;

/// What a verification found.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct VerifyReport {
    /// Snapshots (plain and incremental) and backups of Qdrant deployments checked.
    pub snapshots_checked: usize,
    /// Distinct pieces referred to, each checked to exist.
    pub pieces_checked: usize,
    /// Pieces read back and hashed again.
    pub pieces_read: usize,
    /// What is damaged, one row per snapshot and piece.
    pub damaged: Vec<Damaged>,
}

/// One damaged snapshot (or backup) and why.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct Damaged {
    /// The collection (of a backup: the collection backed up).
    pub collection: String,
    /// The snapshot's name, or `backup {source}/{id}`.
    pub snapshot: String,
    /// The damaged piece, when a piece is what is wrong.
    pub piece: Option<String>,
    /// What is wrong: `missing`, `hash mismatch`, or why the object cannot be read.
    pub reason: String,
}

/// A snapshot or backup shard, as named in a report.
type Owner = (String, String);

/// Whether the object named `name` is read in `round` when a `fraction` is read per round.
fn chosen(name: &str, fraction: f64, round: u64) -> bool {
    if fraction <= 0.0 {
        return false;
    }
    let groups = (1.0 / fraction.min(1.0)).ceil().max(1.0) as u64;
    let h = blake3::hash(name.as_bytes());
    let mut first = [0u8; 8];
    first.copy_from_slice(&h.as_bytes()[..8]);
    u64::from_le_bytes(first) % groups == round % groups
}

/// `collection` and `snapshot` of a snapshot key (`{collection}/{name}`, `{name}` for a full
/// snapshot, `{collection}/shards/{n}/{name}`).
fn owner_of(key: &str) -> Owner {
    match key.split_once('/') {
        Some((c, rest)) => (c.to_string(), rest.to_string()),
        None => (String::new(), key.to_string()),
    }
}

/// What the listing holds, sorted by kind.
#[derive(Default)]
struct Listing {
    pieces: HashSet<String>,
    manifests: Vec<ObjectKey>,
    backups: Vec<ObjectKey>,
    plain: Vec<ObjectKey>,
    names: HashSet<String>,
}

impl Repository {
    /// Verifies the whole storage, reading back `fraction` of the pieces (and of the plain
    /// snapshots) chosen by `round` (see the module's note). Deletes nothing.
    pub async fn verify(&self, fraction: f64, round: u64) -> Result<VerifyReport, BackendError> {
        let inv = self.listing().await?;
        let mut report = VerifyReport::default();
        let mut refs: HashMap<String, Vec<Owner>> = HashMap::new();
        let mut linked = LinkedFiles::new();
        for key in &inv.manifests {
            let shown = key.as_str().trim_end_matches(".manifest");
            let owner = owner_of(shown);
            report.snapshots_checked += 1;
            match self.read_manifest(key).await {
                Ok(m) => {
                    add_refs(&mut refs, &m, &owner);
                    for e in m.linked() {
                        if let Some(root) = &e.linked {
                            linked.insert(root.clone(), (m.piece_size, e.size, e.pieces.clone()));
                        }
                    }
                }
                Err(e) => report.damaged.push(unreadable(
                    owner,
                    format!("manifest unreadable: {}", chain(&e)),
                )),
            }
        }
        for key in &inv.backups {
            report.snapshots_checked += 1;
            self.backup_refs(key, &mut refs, &mut report).await;
        }
        report.pieces_checked = refs.len();
        let (bad, read) = self
            .bad_pieces(&inv.pieces, (&refs, &linked), fraction, round)
            .await?;
        report.pieces_read = read;
        for (hash, reason) in &bad {
            self.damage.record(hash, *reason).await;
            for (collection, snapshot) in &refs[hash] {
                report.damaged.push(Damaged {
                    collection: collection.clone(),
                    snapshot: snapshot.clone(),
                    piece: Some(hash.clone()),
                    reason: reason.to_string(),
                });
            }
        }
        let names: HashSet<&str> = inv.names.iter().map(String::as_str).collect();
        for key in &inv.plain {
            report.snapshots_checked += 1;
            if let Some(d) = self.check_plain(key, &names, fraction, round).await? {
                report.damaged.push(d);
            }
        }
        report.damaged.sort();
        report.damaged.dedup();
        Ok(report)
    }

    /// The referred pieces that are missing, known damaged, or (of those re-read this round)
    /// do not hash to their name; and how many were re-read. A known-damaged piece that
    /// reads back sound is cleared.
    async fn bad_pieces(
        &self,
        stored: &HashSet<String>,
        (refs, linked): (&HashMap<String, Vec<Owner>>, &LinkedFiles),
        fraction: f64,
        round: u64,
    ) -> Result<(BTreeMap<String, Reason>, usize), BackendError> {
        let known = self.damage.all().await?;
        let mut bad: BTreeMap<String, Reason> = BTreeMap::new();
        for hash in refs.keys() {
            if !stored.contains(hash) {
                bad.insert(hash.clone(), Reason::Missing);
            } else if let Some(r) = known.get(hash) {
                bad.insert(hash.clone(), *r);
            }
        }
        let sample: Vec<String> = refs
            .keys()
            .filter(|h| stored.contains(*h) && chosen(h, fraction, round))
            .cloned()
            .collect();
        let read = sample.len();
        for (hash, sound) in self.reread(sample, linked).await? {
            match sound {
                true if bad.remove(&hash).is_some() => self.damage.repaired(&hash).await,
                true => {}
                false => {
                    bad.insert(hash, Reason::HashMismatch);
                }
            }
        }
        Ok((bad, read))
    }

    /// One listing of the whole storage, sorted by kind.
    async fn listing(&self) -> Result<Listing, BackendError> {
        let mut inv = Listing::default();
        let pieces_prefix = format!("{PIECES_DIR}/");
        let linked_prefix = format!("{LINKED_DIR}/");
        let mut listing = self.backend.list_recursive(None);
        while let Some(m) = listing.try_next().await? {
            let k = m.key.as_str();
            // Pieces and linked files are both named by hashes (of different things).
            if let Some(hash) = k
                .strip_prefix(&pieces_prefix)
                .or_else(|| k.strip_prefix(&linked_prefix))
            {
                inv.pieces.insert(hash.to_string());
            } else if backups::is_backup(&m.key) {
                inv.backups.push(m.key.clone());
            } else if k.starts_with('.') {
                // Damage markers, leases, restore journals: not snapshots.
            } else if k.ends_with(MANIFEST_SUFFIX) {
                inv.manifests.push(m.key.clone());
            } else if k.ends_with(EXTENSION) {
                inv.plain.push(m.key.clone());
            }
            inv.names.insert(k.to_string());
        }
        Ok(inv)
    }

    /// Adds the pieces of backup `key`'s shards to `refs`, or reports it unreadable.
    async fn backup_refs(
        &self,
        key: &ObjectKey,
        refs: &mut HashMap<String, Vec<Owner>>,
        report: &mut VerifyReport,
    ) {
        let name = key.as_str().trim_start_matches(".backups/");
        let name = format!("backup {}", name.trim_end_matches(".backup"));
        let parsed = match pieces::get_small(&self.backend, key, MAX_MANIFEST_SIZE).await {
            Ok(bytes) => {
                StoredBackup::parse(&bytes).map_err(|e| format!("backup invalid: {}", e.0))
            }
            Err(e) => Err(format!("backup unreadable: {}", chain(&e))),
        };
        match parsed {
            Ok(b) => {
                for (shard, m) in &b.shards {
                    let collection = shard.rsplit_once('/').map_or(shard.as_str(), |(c, _)| c);
                    add_refs(refs, m, &(collection.to_string(), name.clone()));
                }
            }
            Err(reason) => report
                .damaged
                .push(unreadable((String::new(), name), reason)),
        }
    }

    /// Reads each piece (or linked file) back: `(name, sound)`.
    async fn reread(
        &self,
        sample: Vec<String>,
        linked: &LinkedFiles,
    ) -> Result<Vec<(String, bool)>, BackendError> {
        let names = &self.piece_names().await?;
        let reader = &self.pieces("verification".into()).await?;
        futures::stream::iter(sample)
            .map(|hash| async move {
                let sound = match linked.get(&hash) {
                    Some(file) => linked_sound(reader, &hash, file).await,
                    None => pieces::fetch(&self.backend, names, &hash)
                        .await
                        .map(|bytes| names.hash(&bytes) == hash),
                };
                match sound {
                    Ok(sound) => Ok((sound, hash)),
                    Err(BackendError::NotFound(_) | BackendError::Unauthentic(_)) => {
                        Ok((false, hash))
                    }
                    Err(e) => Err(e),
                }
            })
            .buffer_unordered(READS_IN_FLIGHT)
            .map_ok(|(sound, hash)| (hash, sound))
            .try_collect()
            .await
    }

    /// A plain snapshot: its sidecar exists and reads; when chosen, its bytes hash to it.
    async fn check_plain(
        &self,
        key: &ObjectKey,
        names: &HashSet<&str>,
        fraction: f64,
        round: u64,
    ) -> Result<Option<Damaged>, BackendError> {
        let owner = owner_of(key.as_str());
        let damaged = |reason: &str| Some(unreadable(owner.clone(), reason.to_string()));
        if !plain::has_sidecar(key, names) {
            return Ok(damaged("its checksum sidecar is missing"));
        }
        let Some(expected) = plain::read_sidecar(&self.backend, key).await else {
            return Ok(damaged("its checksum sidecar is unreadable"));
        };
        if !chosen(key.as_str(), fraction, round) {
            return Ok(None);
        }
        let mut hasher = Sha256::new();
        let read = async {
            let mut stream = self.backend.open(key, None).await?;
            while let Some(chunk) = stream
                .try_next()
                .await
                .map_err(|e| BackendError::io("failed to read", key, e))?
            {
                hasher.update(&chunk);
            }
            Ok::<_, BackendError>(())
        };
        match read.await {
            Ok(()) => {}
            // An encrypted object that fails authentication is damage, not an outage.
            Err(BackendError::Unauthentic(_)) => {
                return Ok(damaged("it fails authentication (altered in storage)"))
            }
            Err(e) => return Err(e),
        }
        if hex::encode(hasher.finalize()) != expected {
            return Ok(damaged("its bytes do not match its checksum"));
        }
        Ok(None)
    }
}

/// Linked files referred to: root → (piece size, size, piece hashes).
type LinkedFiles = HashMap<String, (u64, u64, Vec<String>)>;

/// Whether linked file `root` holds exactly the bytes its pieces' hashes describe.
async fn linked_sound(
    reader: &super::layout::PieceReader,
    root: &str,
    (piece_size, size, hashes): &(u64, u64, Vec<String>),
) -> Result<bool, BackendError> {
    let mut offset = 0;
    for hash in hashes {
        let end = (offset + piece_size).min(*size);
        let bytes = reader.linked_range(root, offset..end).await?;
        if bytes.len() as u64 != end - offset || reader.names.hash(&bytes) != *hash {
            return Ok(false);
        }
        offset = end;
    }
    Ok(true)
}

fn add_refs(refs: &mut HashMap<String, Vec<Owner>>, m: &Manifest, owner: &Owner) {
    let linked = m.linked().filter_map(|e| e.linked.as_deref());
    for hash in m.pieces().chain(linked) {
        let owners = refs.entry(hash.to_string()).or_default();
        if !owners.contains(owner) {
            owners.push(owner.clone());
        }
    }
}

fn unreadable((collection, snapshot): Owner, reason: String) -> Damaged {
    Damaged {
        collection,
        snapshot,
        piece: None,
        reason,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rounds_rotate_through_every_name() {
        let names: Vec<String> = (0..200).map(|i| format!("piece-{i}")).collect();
        let mut seen = HashSet::new();
        for round in 0..10 {
            let read: Vec<&String> = names.iter().filter(|n| chosen(n, 0.1, round)).collect();
            assert!(
                read.len() < names.len() / 3,
                "round {round} reads about a tenth"
            );
            seen.extend(read);
        }
        assert_eq!(seen.len(), names.len(), "ten rounds of 0.1 read everything");
        assert!(names.iter().all(|n| chosen(n, 1.0, 7)));
        assert!(!names.iter().any(|n| chosen(n, 0.0, 0)));
    }
}

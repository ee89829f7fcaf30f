//! Restoring a backup into any Qdrant deployment (a single node or a cluster, not
//! necessarily shaped like the source): each collection is created with its recorded
//! configuration, its payload indexes made, every shard recovered on each peer the target
//! placed a replica of it on (streamed from storage, no local copy), aliases moved, and
//! the result verified: per-shard point counts, sampled points, a query.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use futures::{StreamExt, TryStreamExt};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::cluster::{upstream, Deployment};
use super::record::{BackupRecord, CollectionRecord};
use super::Backups;
use crate::error::{Error, Result};
use crate::io::progress::Progress;
use crate::qdrant_api::handoff::{Archive, Handoff};
use crate::qdrant_api::rest::Replica;
use crate::qdrant_api::Server;
use crate::repository::backups::StoredBackup;
use crate::repository::damage;
use crate::repository::Repository;

/// What to restore, and where. `Debug` leaves the key out.
#[derive(Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RestoreRequest {
    /// Any peer of the target deployment.
    pub to: String,
    /// The target's full-access key.
    #[serde(default)]
    pub api_key: Option<String>,
    /// Collections to restore (default: all in the backup).
    #[serde(default)]
    pub collections: Vec<String>,
    /// New names, old → new.
    #[serde(default)]
    pub rename: BTreeMap<String, String>,
    /// Replace collections that exist in the target.
    #[serde(default)]
    pub overwrite: bool,
}

impl std::fmt::Debug for RestoreRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RestoreRequest")
            .field("to", &self.to)
            .field("api_key", &self.api_key.as_ref().map(|_| "[redacted]"))
            .field("collections", &self.collections)
            .field("rename", &self.rename)
            .field("overwrite", &self.overwrite)
            .finish()
    }
}

/// Refuses a target older than the Qdrant the backup was taken from: it cannot read the
/// shard archives.
fn check_version(recorded: Option<&str>, target: &str) -> Result<()> {
    let (Some(src), Some(dst)) = (recorded.and_then(minor_version), minor_version(target)) else {
        return Ok(());
    };
    if dst < src {
        return Err(Error::bad_input(format!(
            "the target runs Qdrant {target}, older than the {} the backup was taken from: \
             it cannot read these shard archives",
            recorded.unwrap_or_default()
        )));
    }
    Ok(())
}

impl RestoreRequest {
    /// The name collection `name` is restored as.
    fn new_name(&self, name: &str) -> String {
        self.rename
            .get(name)
            .cloned()
            .unwrap_or_else(|| name.to_string())
    }

    /// The collections of `record` (backup `id`) this restore takes: the requested ones, each
    /// held by the backup, else all; a 404 or 400 for a name it does not hold or rename.
    fn names_in(&self, record: &BackupRecord, id: &str) -> Result<Vec<String>> {
        let names: Vec<String> = if self.collections.is_empty() {
            record.collections.keys().cloned().collect()
        } else {
            self.collections.clone()
        };
        if let Some(n) = names.iter().find(|n| !record.collections.contains_key(*n)) {
            return Err(Error::NotFound(format!(
                "backup `{id}` holds no collection `{n}`"
            )));
        }
        if let Some(from) = self.rename.keys().find(|from| !names.contains(from)) {
            return Err(Error::bad_input(format!(
                "`rename` names `{from}`, which this restore does not include"
            )));
        }
        Ok(names)
    }

    /// Checks what can be checked before anything is read: the target URL and the new
    /// names, by Qdrant's rules for collection names.
    pub(crate) fn check(&self) -> Result<()> {
        super::source::validate_url(&self.to)
            .map_err(|e| Error::bad_input(format!("`to`: {e}")))?;
        for (from, to) in &self.rename {
            collection_name(to)
                .map_err(|e| Error::bad_input(format!("`rename` of `{from}`: {e}")))?;
        }
        Ok(())
    }
}

/// Qdrant's rules for a collection name: 1 to 255 bytes, none of the characters its
/// storage cannot hold. (Not `collection::registry::validate_name`: that adds this
/// service's own rules, such as no leading `.`, which a Qdrant target does not have.)
fn collection_name(name: &str) -> std::result::Result<(), String> {
    if name.is_empty() {
        return Err("a collection name must not be empty".into());
    }
    if name.len() > 255 {
        return Err(format!("`{name}` is longer than 255 bytes"));
    }
    match name.chars().find(|c| "<>:\"/\\|?*\0\u{1F}".contains(*c)) {
        Some(c) => Err(format!(
            "`{name}` contains {c:?}, which Qdrant forbids in a collection name"
        )),
        None => Ok(()),
    }
}

/// How one restored collection checked out.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Verified {
    /// Its name in the target.
    pub name: String,
    /// Points counted in the target.
    pub points_count: u64,
    /// Shards whose every replica holds the recorded number of points.
    pub shards_matching: usize,
    /// Sampled points compared (ids, payloads, vectors) and how many were equal.
    pub sampled: usize,
    /// Of those, equal.
    pub sampled_equal: usize,
    /// Whether a query was answered.
    pub query_answered: bool,
}

/// The result of a restore: each collection's verification.
#[derive(Clone, Debug, Serialize)]
pub struct Restored {
    /// The backup restored.
    pub backup: String,
    /// The target.
    pub to: String,
    /// Per collection.
    pub collections: Vec<Verified>,
    /// Whether everything checked out.
    pub verified: bool,
}

/// The parts of a collection's reported configuration that its creation takes, with
/// `null`s left out (Qdrant reports unset options as `null`).
fn create_body(config: &Value) -> Value {
    fn strip(v: &Value) -> Value {
        match v {
            Value::Object(m) => Value::Object(
                m.iter()
                    .filter(|(_, v)| !v.is_null())
                    .map(|(k, v)| (k.clone(), strip(v)))
                    .collect(),
            ),
            other => other.clone(),
        }
    }
    let mut body = strip(&config["params"]);
    for (from, to) in [
        ("hnsw_config", "hnsw_config"),
        ("optimizer_config", "optimizers_config"),
        ("wal_config", "wal_config"),
        ("quantization_config", "quantization_config"),
    ] {
        if !config[from].is_null() {
            body[to] = strip(&config[from]);
        }
    }
    body
}

/// The field schema to create a payload index from as `payload_schema` reports it.
fn index_schema(reported: &Value) -> Value {
    match reported.get("params") {
        Some(p) if p.is_object() => p.clone(),
        _ => reported["data_type"].clone(),
    }
}

/// "1.19.0" → (1, 19).
fn minor_version(v: &str) -> Option<(u64, u64)> {
    let mut it = v.split('.');
    Some((it.next()?.parse().ok()?, it.next()?.parse().ok()?))
}

impl Backups {
    /// Restores backup `id` of `source` as `req` says; `progress` counts bytes sent.
    pub(crate) async fn restore(
        &self,
        source: &str,
        id: &str,
        req: RestoreRequest,
        progress: Option<Progress>,
    ) -> Result<Restored> {
        req.check()?;
        let stored = self.stored(source, id).await?;
        let record: BackupRecord = serde_json::from_value(stored.record.clone())
            .map_err(|e| Error::internal(format!("backup `{id}` has an unreadable record"), e))?;
        let names = req.names_in(&record, id)?;
        let _claimed = self.restoring.claim(&req, &names)?;
        let target = Deployment::discover(&req.to, &[], req.api_key.as_deref())
            .await
            .map_err(|e| super::cluster::refused_key(e, "the target's `api_key`", true))?;
        let version = target.entry.version().await.map_err(upstream)?;
        check_version(record.qdrant_version.as_deref(), &version)?;
        self.refuse_existing((source, id), &req, &names, &target)
            .await?;
        // One for the whole restore: a peer that cannot pull makes the rest upload at once.
        let handoff = Handoff::default();
        let mut verified = Vec::new();
        let mut ok = true;
        for n in &names {
            let to = req.new_name(n);
            let v = self
                .restore_collection(
                    (source, id),
                    &stored,
                    &record,
                    (&target, &handoff),
                    (n, &to),
                    &req,
                    progress.clone(),
                )
                .await?;
            ok &= v.sampled == v.sampled_equal
                && v.query_answered
                && v.shards_matching == record.collections[n].shards.len();
            verified.push(v);
        }
        let result = Restored {
            backup: id.to_string(),
            to: req.to.clone(),
            collections: verified,
            verified: ok,
        };
        tracing::info!(source, backup = id, to = %req.to, verified = ok, "backup restored");
        Ok(result)
    }

    /// A 409 for a collection that exists in the target, unless `overwrite` or a stopped
    /// restore of it is being finished.
    async fn refuse_existing(
        &self,
        (source, id): (&str, &str),
        req: &RestoreRequest,
        names: &[String],
        target: &Deployment,
    ) -> Result<()> {
        let existing = target.entry.collections().await.map_err(upstream)?;
        for n in names {
            let to = req.new_name(n);
            let resuming = self
                .repository()
                .restore_journal(source, id, &journal_name(&req.to, &to))
                .await?
                .is_some();
            if existing.contains(&to) && !req.overwrite && !resuming {
                return Err(Error::AlreadyExists(format!(
                    "collection `{to}` exists in the target; restore with \"overwrite\": true to replace it"
                )));
            }
        }
        Ok(())
    }

    /// Restores collection `name` as `to`, resuming where a stopped restore of it left off
    /// (its journal in the repository says which shard recoveries are done).
    #[allow(clippy::too_many_arguments)]
    async fn restore_collection(
        &self,
        (source, id): (&str, &str),
        stored: &StoredBackup,
        record: &BackupRecord,
        (target, handoff): (&Deployment, &Handoff),
        (name, to): (&str, &str),
        req: &RestoreRequest,
        progress: Option<Progress>,
    ) -> Result<Verified> {
        let c = &record.collections[name];
        let entry = &target.entry;
        let repo = self.repository();
        let journal = journal_name(&req.to, to);
        let done = self
            .start_or_resume((source, id), &target.entry, c, to, req, &journal)
            .await?;
        let (_, replicas) = target.replicas(to).await?;
        let pending = pending_recoveries(c, &replicas, &done);
        let done = tokio::sync::Mutex::new(done);
        let parallel = target.peers.len().max(1);
        let recovered = futures::stream::iter(pending)
            .map(|(shard, peer)| {
                let progress = progress.clone();
                let done = &done;
                let journal = &journal;
                async move {
                    let shard_of = Shard {
                        name,
                        to,
                        shard,
                        backup: (source, id),
                    };
                    recover_shard(repo, stored, target, handoff, shard_of, peer, progress).await?;
                    let mut done = done.lock().await;
                    done.insert((shard, peer));
                    let j = json!({"to": req.to, "collection": to, "done": *done});
                    repo.write_restore_journal(source, id, journal, &j).await?;
                    Ok::<_, Error>(())
                }
            })
            .buffer_unordered(parallel)
            .try_collect::<Vec<()>>()
            .await;
        if let Err(e) = recovered {
            let done: Vec<u32> = done.lock().await.iter().map(|(s, _)| *s).collect();
            return Err(Error::Upstream(format!(
                "the restore of `{to}` stopped with shards {done:?} recovered: {}; run it again to finish",
                e.public_message()
            )));
        }
        let pairs: Vec<(String, String)> =
            c.aliases.iter().map(|a| (a.clone(), to.into())).collect();
        entry.create_aliases(&pairs).await.map_err(upstream)?;
        let verified = self.verify(stored, record, target, name, to).await?;
        repo.end_restore_journal(source, id, &journal).await?;
        Ok(verified)
    }

    /// The shard recoveries already done by a stopped restore of `to` that this one resumes;
    /// otherwise (re)creates the collection and starts a journal with none.
    async fn start_or_resume(
        &self,
        (source, id): (&str, &str),
        entry: &Server,
        c: &CollectionRecord,
        to: &str,
        req: &RestoreRequest,
        journal: &str,
    ) -> Result<BTreeSet<(u32, u64)>> {
        let resumed = self
            .repository()
            .restore_journal(source, id, journal)
            .await?;
        let mut done: BTreeSet<(u32, u64)> = resumed
            .as_ref()
            .and_then(|j| serde_json::from_value(j["done"].clone()).ok())
            .unwrap_or_default();
        let exists = entry.collection(to).await.map_err(upstream)?.is_some();
        if resumed.is_none() || !exists {
            // A new start: whatever a journal said was done went with the collection.
            done.clear();
            if req.overwrite && exists {
                entry.delete_collection(to).await.map_err(upstream)?;
            }
            create(entry, to, c).await?;
            self.repository()
                .write_restore_journal(
                    source,
                    id,
                    journal,
                    &json!({"to": req.to, "collection": to, "done": []}),
                )
                .await?;
        } else {
            tracing::info!(
                collection = to,
                done = done.len(),
                "resuming a stopped restore"
            );
        }
        Ok(done)
    }

    /// Compares the restored collection `to` with what backup recorded of `name`.
    async fn verify(
        &self,
        stored: &StoredBackup,
        record: &BackupRecord,
        target: &Deployment,
        name: &str,
        to: &str,
    ) -> Result<Verified> {
        let c = &record.collections[name];
        let (_, replicas) = target.replicas(to).await?;
        let shards_matching = c
            .shards
            .iter()
            .filter(|s| {
                let held: Vec<_> = replicas
                    .iter()
                    .filter(|r| r.shard_id == s.shard_id)
                    .collect();
                !held.is_empty()
                    && held
                        .iter()
                        .all(|r| r.points_count.is_none_or(|n| n == s.points_count))
            })
            .count();
        let points_count = replicas
            .iter()
            .filter(|r| r.points_count.is_some())
            .fold(BTreeMap::new(), |mut m, r| {
                m.entry(r.shard_id).or_insert(r.points_count.unwrap_or(0));
                m
            })
            .values()
            .sum();
        let samples = stored.details["samples"][name]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let sampled_equal = equal_points(&target.entry, to, &samples).await?;
        let query = samples.first().and_then(|p| nearest_query(&p["vector"]));
        let query_answered = match query {
            Some(q) => !target
                .entry
                .query(to, &q)
                .await
                .map_err(upstream)?
                .is_empty(),
            // An empty collection has nothing to find.
            None => c.points_count == 0,
        };
        Ok(Verified {
            name: to.to_string(),
            points_count,
            shards_matching,
            sampled: samples.len(),
            sampled_equal,
            query_answered,
        })
    }
}

/// Every `(shard, peer)` recovery of collection `c` onto the target's `replicas` that is not
/// `done` yet (peers then work in parallel).
fn pending_recoveries(
    c: &CollectionRecord,
    replicas: &[Replica],
    done: &BTreeSet<(u32, u64)>,
) -> Vec<(u32, u64)> {
    c.shards
        .iter()
        .flat_map(|s| {
            replicas
                .iter()
                .filter(move |r| r.shard_id == s.shard_id)
                .map(move |r| (s.shard_id, r.peer_id))
        })
        .filter(|u| !done.contains(u))
        .collect()
}

/// How many of the `samples` collection `to` holds with equal payloads and vectors.
async fn equal_points(entry: &Server, to: &str, samples: &[Value]) -> Result<usize> {
    if samples.is_empty() {
        return Ok(0);
    }
    let ids: Vec<Value> = samples.iter().map(|p| p["id"].clone()).collect();
    let found = entry.points(to, &ids).await.map_err(upstream)?;
    let by_id: BTreeMap<String, &Value> = found.iter().map(|p| (p["id"].to_string(), p)).collect();
    Ok(samples
        .iter()
        .filter(|p| {
            by_id
                .get(&p["id"].to_string())
                .is_some_and(|q| q["payload"] == p["payload"] && q["vector"] == p["vector"])
        })
        .count())
}

/// A one-hit query by a sampled point's vector: the plain one, or its first dense named one.
fn nearest_query(vector: &Value) -> Option<Value> {
    match vector {
        Value::Array(v) => Some(json!({"query": v, "limit": 1})),
        Value::Object(named) => named
            .iter()
            .find(|(_, v)| v.is_array())
            .map(|(using, v)| json!({"query": v, "using": using, "limit": 1})),
        _ => None,
    }
}

/// Creates collection `to` in the target with the recorded configuration and payload indexes.
async fn create(entry: &Server, to: &str, c: &CollectionRecord) -> Result<()> {
    entry
        .create_collection(to, &create_body(&c.config))
        .await
        .map_err(upstream)?;
    if let Some(indexes) = c.payload_indexes.as_object() {
        for (field, schema) in indexes {
            entry
                .create_index(to, field, &index_schema(schema))
                .await
                .map_err(upstream)?;
        }
    }
    Ok(())
}

/// A shard of collection `name` in the backup, restored into collection `to`.
#[derive(Clone, Copy)]
struct Shard<'a> {
    name: &'a str,
    to: &'a str,
    shard: u32,
    /// The backup's source and id, to name it in errors.
    backup: (&'a str, &'a str),
}

/// Recovers one shard archive, streamed from storage, on `peer` of the target: pulled by
/// the peer from `handoff`, or uploaded when it cannot be (see [`Handoff`]).
async fn recover_shard(
    repo: &Repository,
    stored: &StoredBackup,
    target: &Deployment,
    handoff: &Handoff,
    s: Shard<'_>,
    peer: u64,
    progress: Option<Progress>,
) -> Result<()> {
    let Shard {
        name,
        to,
        shard,
        backup: (source, id),
    } = s;
    let m = stored
        .shards
        .get(&format!("{name}/{shard}"))
        .ok_or_else(|| Error::NotFound(format!("the backup holds no shard {shard} of `{name}`")))?;
    let m = Arc::new(m.clone());
    let label = super::shard_label(source, id, name, shard);
    let (stream, damage) = damage::watch(repo.open_manifest(label, Arc::clone(&m), None).await?);
    let stream: Archive = Box::pin(stream.inspect_ok(move |b| {
        if let Some(p) = &progress {
            p.add(b.len() as u64);
        }
    }));
    let server = &target.peer(peer)?.server;
    let upload =
        |archive| server.upload_shard_snapshot(to, shard, archive, m.size, "no_sync", &m.sha256);
    let sent = match handoff.offer(server.base(), stream, m.size).await {
        Ok(ticket) => {
            let pulled = server
                .recover_shard_snapshot(to, shard, ticket.url(), "no_sync", &m.sha256)
                .await;
            match (pulled, ticket.withdraw()) {
                (Err(e), Some(untaken)) => {
                    tracing::warn!(peer, shard, error = %e, "the peer did not pull the shard archive from us; uploading it and the restore's other shards");
                    handoff.give_up();
                    upload(untaken).await
                }
                (Ok(()), Some(_)) => {
                    Err("it answered the recovery without pulling the archive".into())
                }
                (pulled, _) => pulled,
            }
        }
        Err(untaken) => upload(untaken).await,
    };
    sent.map_err(|e| match damage.lock().take() {
        Some(d) => d.to_error(),
        None => Error::Upstream(format!("shard {shard} of `{to}` on peer {peer}: {e}")),
    })
}

/// The target collections being restored by this process, by [`journal_name`]: a second
/// restore into one of them is refused while the first runs, as the two would delete,
/// create and upload over each other (with `overwrite`, or as a resumed restore).
#[derive(Debug, Default)]
pub(crate) struct Claims(Arc<parking_lot::Mutex<BTreeSet<String>>>);

/// Target collections claimed by one restore, released when it ends or is dropped.
pub(crate) struct Claimed {
    claims: Arc<parking_lot::Mutex<BTreeSet<String>>>,
    keys: Vec<String>,
}

impl Claims {
    /// Claims every collection `req` restores `names` as, or none: a 409 naming the first
    /// that another restore holds.
    fn claim(&self, req: &RestoreRequest, names: &[String]) -> Result<Claimed> {
        let mut held = self.0.lock();
        let mut keys = Vec::with_capacity(names.len());
        for n in names {
            let to = req.new_name(n);
            let key = journal_name(&req.to, &to);
            if keys.contains(&key) {
                return Err(Error::bad_input(format!(
                    "two collections would be restored as `{to}`"
                )));
            }
            if held.contains(&key) {
                return Err(Error::AlreadyExists(format!(
                    "a restore into collection `{to}` of {} is already running; wait for it \
                     to end",
                    req.to
                )));
            }
            keys.push(key);
        }
        held.extend(keys.iter().cloned());
        Ok(Claimed {
            claims: Arc::clone(&self.0),
            keys,
        })
    }
}

impl Drop for Claimed {
    fn drop(&mut self) {
        let mut held = self.claims.lock();
        for k in &self.keys {
            held.remove(k);
        }
    }
}

/// The journal of restoring collection `to` into the deployment at `url`.
fn journal_name(url: &str, to: &str) -> String {
    let h = blake3::hash(format!("{}\n{to}", url.trim_end_matches('/')).as_bytes());
    h.to_hex()[..32].to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn into(to: &str, rename: &[(&str, &str)]) -> RestoreRequest {
        RestoreRequest {
            to: to.into(),
            rename: rename
                .iter()
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .collect(),
            ..Default::default()
        }
    }

    #[test]
    fn a_second_restore_into_the_same_collection_waits_for_the_first_to_end() {
        let claims = Claims::default();
        let names = vec!["a".to_string(), "b".to_string()];
        let first = claims.claim(&into("http://q:6333", &[]), &names).unwrap();
        // The same target collection, however the URL ends or the name is reached.
        let e = claims
            .claim(
                &into("http://q:6333/", &[("c", "b")]),
                &["d".into(), "c".into()],
            )
            .err()
            .expect("refused while the first runs");
        assert!(
            matches!(&e, Error::AlreadyExists(m) if m.contains("`b`")),
            "{e:?}"
        );
        // Refused whole: the free collection it also named was not kept claimed.
        let d = claims
            .claim(&into("http://q:6333", &[]), &["d".into()])
            .expect("`d` is free");
        drop(d);
        // Another target, or another name in the same target, is free.
        let other = claims.claim(&into("http://r:6333", &[]), &names).unwrap();
        let renamed = claims
            .claim(&into("http://q:6333", &[("a", "a2")]), &["a".into()])
            .unwrap();
        drop((other, renamed));
        drop(first);
        claims
            .claim(&into("http://q:6333", &[]), &names)
            .expect("free again once the first ended");
    }

    #[test]
    fn new_names_follow_qdrants_rules_before_anything_is_read() {
        assert!(into("http://q:6333", &[("a", "b-c_d.e 1")]).check().is_ok());
        for bad in ["", "a/b", "a\\b", "a:b", "a\0b", "a?b", &"x".repeat(256)] {
            let e = into("http://q:6333", &[("a", bad)]).check().err();
            assert!(
                matches!(&e, Some(Error::BadInput(m)) if m.contains("`rename` of `a`")),
                "{bad:?}: {e:?}"
            );
        }
    }

    #[test]
    fn two_collections_restored_under_one_name_are_bad_input() {
        let req = into("http://q:6333", &[("a", "x"), ("b", "x")]);
        let e = Claims::default()
            .claim(&req, &["a".into(), "b".into()])
            .err()
            .expect("refused");
        assert!(
            matches!(&e, Error::BadInput(m) if m.contains("`x`")),
            "{e:?}"
        );
    }

    #[test]
    fn the_target_key_is_never_printed() {
        let r = RestoreRequest {
            to: "http://q:6333".into(),
            api_key: Some("very-secret".into()),
            ..Default::default()
        };
        let shown = format!("{r:?}");
        assert!(
            !shown.contains("very-secret") && shown.contains("redacted"),
            "{shown}"
        );
    }

    #[test]
    fn creation_takes_the_reported_config_without_nulls() {
        let reported = json!({
            "params": {"vectors": {"size": 8, "distance": "Cosine"}, "shard_number": 3,
                       "replication_factor": 2, "sparse_vectors": null},
            "hnsw_config": {"m": 16, "on_disk": false},
            "optimizer_config": {"indexing_threshold": 10000, "max_segment_size": null},
            "wal_config": {"wal_capacity_mb": 32},
            "quantization_config": null
        });
        let body = create_body(&reported);
        assert_eq!(body["shard_number"], 3);
        assert!(body.get("sparse_vectors").is_none());
        assert_eq!(
            body["optimizers_config"],
            json!({"indexing_threshold": 10000})
        );
        assert!(body.get("quantization_config").is_none());
        assert_eq!(
            index_schema(&json!({"data_type": "integer", "points": 3})),
            json!("integer")
        );
        assert_eq!(minor_version("1.19.0"), Some((1, 19)));
        assert!(check_version(Some("1.19.0"), "1.18.2").is_err());
        assert!(check_version(Some("1.19.0"), "1.19.1").is_ok());
        assert!(check_version(None, "1.18.2").is_ok());
    }
}

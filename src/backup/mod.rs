//! Backups of live Qdrant deployments (`backup.sources`): each shard of each collection is
//! pulled from one Active replica, peers in parallel, into the repository's shared pieces;
//! the backup's record, written last, makes it exist. Built on the crate's one Qdrant client
//! (`qdrant_api`) and the snapshot repository. Documented in `docs/backups.md`.

pub(crate) mod cluster;
pub(crate) mod partial;
pub(crate) mod pull;
pub(crate) mod record;
pub(crate) mod restore;
pub(crate) mod retention;
pub(crate) mod source;

use std::collections::BTreeMap;
use std::ops::Range;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use futures::StreamExt;
use serde::Serialize;
use serde_json::Value;

use crate::backend::{BackendError, ByteStream};
use crate::error::{Error, Result};
use crate::io::progress::Progress;
use crate::qdrant_api::rest::Replica;
use crate::repository::backups::{BackupSession, StoredBackup};
use crate::repository::hashing::Mark;
use crate::repository::manifest::Manifest;
use crate::repository::Repository;
use cluster::{upstream, Deployment};
use partial::Previous;
use record::{BackupRecord, CollectionRecord, ShardRecord};
use source::SourceOptions;

/// Points of each collection read at backup time and compared after a restore.
const SAMPLE_POINTS: usize = 100;

/// A source as `GET /backup/sources` lists it.
#[derive(Clone, Debug, Serialize)]
pub struct SourceStatus {
    /// Its name.
    pub name: String,
    /// The configured URL.
    pub url: String,
    /// Its peers, or empty when the deployment cannot be reached (see `error`).
    pub peers: Vec<PeerStatus>,
    /// The configured collections (empty: all).
    pub collections: Vec<String>,
    /// The newest backup.
    pub last_backup: Option<LastBackup>,
    /// When the schedule runs next.
    pub next_backup_at: Option<DateTime<Utc>>,
    /// Why the deployment could not be asked for its peers.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// One peer of a source.
#[derive(Clone, Debug, Serialize)]
pub struct PeerStatus {
    /// Qdrant's peer id (0 for a single node).
    pub peer_id: u64,
    /// Its REST URL.
    pub url: String,
    /// Whether it answered.
    pub reachable: bool,
}

/// The newest backup of a source.
#[derive(Clone, Debug, Serialize)]
pub struct LastBackup {
    /// Its id.
    pub id: String,
    /// When it finished.
    pub finished_at: DateTime<Utc>,
}

/// How pulling one shard of a collection ended, and from which replica.
type PulledShard = (String, u32, Result<(Replica, pull::Pulled)>);

/// One shard to pull and where it may come from, best first.
struct ShardJob {
    collection: String,
    shard: u32,
    candidates: Vec<Replica>,
    /// What the last backup holds of it, for pulling only what changed.
    previous: Option<Previous>,
}

/// The shards' manifests and what a later backup needs to pull only their changes, by
/// `{collection}/{shard}`.
struct Gathered {
    manifests: BTreeMap<String, Manifest>,
    partial: serde_json::Map<String, Value>,
}

/// Backups of the configured sources into one repository.
#[derive(Debug)]
pub(crate) struct Backups {
    repo: Arc<Repository>,
    sources: BTreeMap<String, SourceOptions>,
    /// One backup at a time per source.
    running: BTreeMap<String, tokio::sync::Mutex<()>>,
    /// When each scheduled source runs next.
    next_runs: parking_lot::Mutex<BTreeMap<String, DateTime<Utc>>>,
    /// The target collections that a restore in this process is writing.
    restoring: restore::Claims,
}

impl Backups {
    /// Backups of `sources` into `repo`.
    pub(crate) fn new(repo: Arc<Repository>, sources: Vec<SourceOptions>) -> Self {
        Backups {
            running: sources
                .iter()
                .map(|s| (s.name.clone(), tokio::sync::Mutex::new(())))
                .collect(),
            sources: sources.into_iter().map(|s| (s.name.clone(), s)).collect(),
            repo,
            next_runs: parking_lot::Mutex::new(BTreeMap::new()),
            restoring: restore::Claims::default(),
        }
    }

    /// The configured sources.
    pub(crate) fn sources(&self) -> impl Iterator<Item = &SourceOptions> {
        self.sources.values()
    }

    /// Source `name`, or a 404 naming it.
    pub(crate) fn source(&self, name: &str) -> Result<&SourceOptions> {
        self.sources
            .get(name)
            .ok_or_else(|| Error::NotFound(format!("backup source `{name}` is not configured")))
    }

    /// Records when the schedule runs `source` next.
    pub(crate) fn set_next_run(&self, source: &str, at: DateTime<Utc>) {
        self.next_runs.lock().insert(source.to_string(), at);
    }

    /// Every source with its peers and newest backup.
    pub(crate) async fn list_sources(&self) -> Result<Vec<SourceStatus>> {
        let mut out = Vec::new();
        for s in self.sources.values() {
            let (peers, error) = match cluster::peers_of(s).await {
                Ok(p) => (p, None),
                Err(e) => (Vec::new(), Some(e.public_message())),
            };
            let last_backup = self.newest(&s.name).await?.map(|(r, _)| LastBackup {
                id: r.id,
                finished_at: r.finished_at,
            });
            out.push(SourceStatus {
                name: s.name.clone(),
                url: s.url.clone(),
                peers: peers
                    .into_iter()
                    .map(|(peer_id, url, reachable)| PeerStatus {
                        peer_id,
                        url,
                        reachable,
                    })
                    .collect(),
                collections: s.collections.clone(),
                last_backup,
                next_backup_at: self.next_runs.lock().get(&s.name).copied(),
                error,
            });
        }
        Ok(out)
    }

    /// The backups of `source`, newest first.
    pub(crate) async fn list(&self, source: &str) -> Result<Vec<BackupRecord>> {
        self.source(source)?;
        let mut records: Vec<BackupRecord> = self
            .repo
            .list_backups(source)
            .await?
            .into_iter()
            .filter_map(|(id, b)| match serde_json::from_value(b.record) {
                Ok(r) => Some(r),
                Err(e) => {
                    tracing::warn!(backup = %id, error = %e, "backup record unreadable; not listed");
                    None
                }
            })
            .collect();
        records.sort_by(|a, b| (b.started_at, &b.id).cmp(&(a.started_at, &a.id)));
        Ok(records)
    }

    pub(crate) async fn stored(&self, source: &str, id: &str) -> Result<StoredBackup> {
        self.source(source)?;
        let missing = || Error::NotFound(format!("backup `{id}` of source `{source}` not found"));
        if !record::is_id(id) {
            return Err(missing());
        }
        self.repo
            .read_backup(source, id)
            .await
            .map_err(|e| match e {
                BackendError::NotFound(_) => missing(),
                other => other.into(),
            })
    }

    /// Backup `id` of `source`.
    pub(crate) async fn get(&self, source: &str, id: &str) -> Result<BackupRecord> {
        let b = self.stored(source, id).await?;
        serde_json::from_value(b.record)
            .map_err(|e| Error::internal(format!("backup `{id}` has an unreadable record"), e))
    }

    /// Deletes backup `id` of `source`; its pieces are collected unless another backup or
    /// snapshot holds them.
    pub(crate) async fn delete(&self, source: &str, id: &str) -> Result<()> {
        self.stored(source, id).await?;
        self.repo.delete_backup(source, id).await?;
        tracing::info!(source, backup = id, "backup deleted");
        Ok(())
    }

    /// The manifest of shard `shard` of `collection` in backup `id` of `source`.
    pub(crate) async fn shard(
        &self,
        source: &str,
        id: &str,
        collection: &str,
        shard: u32,
    ) -> Result<Arc<Manifest>> {
        let mut b = self.stored(source, id).await?;
        b.shards
            .remove(&format!("{collection}/{shard}"))
            .map(Arc::new)
            .ok_or_else(|| {
                Error::NotFound(format!(
                    "backup `{id}` holds no shard {shard} of collection `{collection}`"
                ))
            })
    }

    /// The repository the backups are in.
    pub(crate) fn repository(&self) -> &Arc<Repository> {
        &self.repo
    }

    /// The bytes `range` of a shard archive (checked against its pieces' hashes).
    pub(crate) async fn open(
        &self,
        label: String,
        m: Arc<Manifest>,
        range: Option<Range<u64>>,
    ) -> Result<ByteStream> {
        Ok(self.repo.open_manifest(label, m, range).await?)
    }

    /// Backs up `source` now: the given collections, or the configured ones, or every
    /// collection. `progress` counts the bytes pulled.
    pub(crate) async fn run(
        &self,
        source: &str,
        collections: Option<Vec<String>>,
        progress: Option<Progress>,
    ) -> Result<BackupRecord> {
        let opts = self.source(source)?.clone();
        let _one_at_a_time = match self.running.get(source) {
            Some(m) => m.lock().await,
            None => return Err(Error::NotFound(format!("backup source `{source}`"))),
        };
        let started_at = Utc::now();
        let id = record::new_id(started_at);
        let deployment = discover(&opts).await?;
        let names = chosen(collections, &opts, &deployment).await?;
        let previous = self.newest(source).await?;
        let last = previous.as_ref().map(|(r, _)| r);
        let (mut described, mut failed, mut jobs) = plan(&deployment, &names, last).await;
        if let Some((_, stored)) = previous {
            attach_previous(stored, &mut jobs);
        }
        let session = self.repo.begin_backup().await?;
        let pulled = pull_all(&deployment, &session, jobs, started_at, progress).await;
        let gathered = gather(&mut described, &mut failed, pulled);
        if described.is_empty() && !failed.is_empty() {
            session.abandon().await;
            return Err(nothing_backed_up(source, &failed));
        }
        let details = serde_json::json!({
            "samples": samples(&deployment, described.keys()).await,
            "partial": gathered.partial,
        });
        let mut record = BackupRecord {
            id: id.clone(),
            qdrant_version: deployment.entry.version().await.ok(),
            source: source.to_string(),
            started_at,
            finished_at: Utc::now(),
            size: 0,
            stored_bytes: 0,
            collections: described,
            failed,
        };
        record.total();
        commit(session, &record, details, gathered.manifests).await?;
        tracing::info!(
            source,
            backup = %id,
            collections = record.collections.len(),
            failed = record.failed.len(),
            bytes = record.size,
            stored_bytes = record.stored_bytes,
            "backup stored"
        );
        self.apply_retention(source, &opts).await;
        Ok(record)
    }

    /// The newest backup of `source` (ids sort by start time), reading only it; `None`
    /// when there is none or it cannot be read (logged: the next backup pulls whole).
    async fn newest(&self, source: &str) -> Result<Option<(BackupRecord, StoredBackup)>> {
        self.source(source)?;
        let ids = self.repo.backup_ids(source).await?;
        let Some(id) = ids.into_iter().filter(|id| record::is_id(id)).max() else {
            return Ok(None);
        };
        let stored = match self.stored(source, &id).await {
            Ok(b) => b,
            Err(e) => {
                tracing::warn!(source, backup = %id, error = %e, "newest backup unreadable");
                return Ok(None);
            }
        };
        match serde_json::from_value(stored.record.clone()) {
            Ok(r) => Ok(Some((r, stored))),
            Err(e) => {
                tracing::warn!(source, backup = %id, error = %e, "newest backup record unreadable");
                Ok(None)
            }
        }
    }

    /// Deletes what the source's retention rules no longer keep; failures are logged.
    async fn apply_retention(&self, source: &str, opts: &SourceOptions) {
        if !opts.retention.is_set() {
            return;
        }
        let records = match self.list(source).await {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(source, error = %e, "backup retention skipped");
                return;
            }
        };
        let times: Vec<DateTime<Utc>> = records.iter().map(|r| r.finished_at).collect();
        let keep = retention::kept(&times, &opts.retention);
        for (i, r) in records.iter().enumerate() {
            if !keep.contains(&i) {
                match self.repo.delete_backup(source, &r.id).await {
                    Ok(()) => tracing::info!(source, backup = %r.id, "backup removed by retention"),
                    Err(e) => {
                        tracing::warn!(source, backup = %r.id, error = %e, "retention failed to remove a backup")
                    }
                }
            }
        }
    }
}

/// The deployment of source `opts`; a key it refuses is named as the source's.
async fn discover(opts: &SourceOptions) -> Result<Deployment> {
    let key = opts.api_key.as_ref().map(|k| k.expose().to_string());
    Deployment::discover(&opts.url, &opts.peer_urls, key.as_deref())
        .await
        .map_err(|e| {
            let name = &opts.name;
            let key = format!("the api_key of source `{name}` (backup.sources.{name}.api_key)");
            cluster::refused_key(e, &key, false)
        })
}

/// The collections to back up: the request's (each must exist), else the configured ones,
/// else every collection of the deployment.
async fn chosen(
    requested: Option<Vec<String>>,
    opts: &SourceOptions,
    d: &Deployment,
) -> Result<Vec<String>> {
    Ok(match requested.filter(|c| !c.is_empty()) {
        Some(c) => {
            // Named in the request: all present, or nothing is done.
            let there = d.entry.collections().await.map_err(upstream)?;
            if let Some(missing) = c.iter().find(|n| !there.contains(n)) {
                return Err(Error::NotFound(format!(
                    "collection `{missing}` does not exist in source `{}`",
                    opts.name
                )));
            }
            c
        }
        None if !opts.collections.is_empty() => opts.collections.clone(),
        None => d.entry.collections().await.map_err(upstream)?,
    })
}

/// The error of a backup in which every collection failed, each with why.
fn nothing_backed_up(source: &str, failed: &BTreeMap<String, String>) -> Error {
    let why: Vec<String> = failed.iter().map(|(c, e)| format!("`{c}`: {e}")).collect();
    Error::Upstream(format!(
        "nothing was backed up from source `{source}`: {}",
        why.join("; ")
    ))
}

/// Gives each job what the stored (last) backup holds of its shard.
fn attach_previous(last: StoredBackup, jobs: &mut [ShardJob]) {
    let mut earlier = previous_shards(last);
    for job in jobs {
        job.previous = earlier.remove(&format!("{}/{}", job.collection, job.shard));
    }
}

/// What a stored backup holds of each shard that a partial pull can build on, by
/// `{collection}/{shard}`.
fn previous_shards(mut b: StoredBackup) -> BTreeMap<String, Previous> {
    let mut out = BTreeMap::new();
    if let Some(partial) = b.details.get("partial").and_then(Value::as_object) {
        for (key, v) in partial {
            if let (Some(peer_id), Some(manifest)) = (v["peer_id"].as_u64(), b.shards.remove(key)) {
                let qdrant = v["manifest"].clone();
                let marks = marks_of(&v["marks"], &manifest);
                let prev = Previous {
                    peer_id,
                    qdrant,
                    manifest,
                    marks,
                };
                out.insert(key.clone(), prev);
            }
        }
    }
    out
}

/// The stored marks of a shard's archive, if they are all readable and fit its manifest;
/// none otherwise (the next rebuild then hashes everything).
fn marks_of(stored: &Value, manifest: &Manifest) -> Vec<Mark> {
    let marks: Option<Vec<Mark>> = stored
        .as_array()
        .map(|a| a.iter().map(|m| m.as_str().and_then(Mark::parse)).collect())
        .unwrap_or_default();
    marks
        .filter(|m| Previous::marks_fit(manifest, m))
        .unwrap_or_default()
}

/// Each collection's record and its shards to pull; the collections that cannot be backed
/// up, with why.
async fn plan(
    deployment: &Deployment,
    names: &[String],
    previous: Option<&BackupRecord>,
) -> (
    BTreeMap<String, CollectionRecord>,
    BTreeMap<String, String>,
    Vec<ShardJob>,
) {
    let (mut described, mut failed, mut jobs) = (BTreeMap::new(), BTreeMap::new(), Vec::new());
    for name in names {
        match describe(deployment, name, previous).await {
            Ok((record, shard_jobs)) => {
                described.insert(name.clone(), record);
                jobs.extend(shard_jobs);
            }
            Err(e) => {
                tracing::warn!(collection = %name, error = %e, "collection not backed up");
                failed.insert(name.clone(), e.public_message());
            }
        }
    }
    (described, failed, jobs)
}

/// Records each pulled shard in its collection and returns the shards' manifests; a
/// collection with a shard that failed is in the backup not at all, only in `failed`.
fn gather(
    described: &mut BTreeMap<String, CollectionRecord>,
    failed: &mut BTreeMap<String, String>,
    pulled: Vec<PulledShard>,
) -> Gathered {
    let mut manifests = BTreeMap::new();
    let mut partial = serde_json::Map::new();
    for (collection, shard, outcome) in pulled {
        match outcome {
            Ok((replica, p)) => {
                if let Some(q) = p.qdrant {
                    let marks: Vec<String> = p.marks.iter().map(Mark::to_text).collect();
                    partial.insert(
                        format!("{collection}/{shard}"),
                        serde_json::json!({"peer_id": replica.peer_id, "manifest": q, "marks": marks}),
                    );
                }
                if let Some(c) = described.get_mut(&collection) {
                    c.shards.push(ShardRecord {
                        shard_id: shard,
                        peer_id: replica.peer_id,
                        points_count: replica.points_count.unwrap_or(0),
                        size: p.manifest.size,
                        sha256: p.manifest.sha256.clone(),
                        pulled_bytes: p.pulled_bytes,
                        stored_bytes: p.stored_bytes,
                    });
                }
                manifests.insert(format!("{collection}/{shard}"), p.manifest);
            }
            Err(e) => {
                tracing::warn!(collection = %collection, shard, error = %e, "shard not backed up");
                failed
                    .entry(collection.clone())
                    .or_insert_with(|| e.public_message());
            }
        }
    }
    for name in failed.keys() {
        described.remove(name);
        manifests.retain(|k, _| !k.starts_with(&format!("{name}/")));
        partial.retain(|k, _| !k.starts_with(&format!("{name}/")));
    }
    Gathered { manifests, partial }
}

/// Points of each collection to compare after a restore, read once the shards are in; a
/// collection that cannot be read is logged and has none.
async fn samples(deployment: &Deployment, names: impl Iterator<Item = &String>) -> Value {
    let mut out = serde_json::Map::new();
    for name in names {
        match deployment.entry.sample(name, SAMPLE_POINTS).await {
            Ok(points) => {
                out.insert(name.clone(), Value::Array(points));
            }
            Err(e) => {
                tracing::warn!(collection = %name, error = %e, "no points sampled for verification")
            }
        }
    }
    Value::Object(out)
}

/// Writes the record with the manifests: the commit point. The record's `stored_bytes`
/// counts the pieces; the record object itself is small beside them.
async fn commit(
    session: BackupSession,
    record: &BackupRecord,
    details: Value,
    manifests: BTreeMap<String, Manifest>,
) -> Result<()> {
    let value = serde_json::to_value(record)
        .map_err(|e| Error::internal("failed to serialize a backup record", e))?;
    session
        .commit(
            &record.source,
            &record.id,
            &StoredBackup::new(value, details, manifests),
        )
        .await?;
    Ok(())
}

/// A collection's configuration, aliases and indexes, and the shards to pull with their
/// candidate replicas.
async fn describe(
    d: &Deployment,
    name: &str,
    previous: Option<&BackupRecord>,
) -> Result<(CollectionRecord, Vec<ShardJob>)> {
    let info = d
        .entry
        .collection(name)
        .await
        .map_err(upstream)?
        .ok_or_else(|| Error::NotFound(format!("collection `{name}` does not exist")))?;
    let aliases = d.entry.collection_aliases(name).await.map_err(upstream)?;
    let (shard_count, replicas) = d.replicas(name).await?;
    let mut jobs = Vec::new();
    for shard in 0..shard_count {
        // The replica pulled last time first.
        let last = previous
            .and_then(|p| p.collections.get(name))
            .and_then(|c| c.shards.iter().find(|s| s.shard_id == shard))
            .map(|s| s.peer_id);
        jobs.push(ShardJob {
            collection: name.to_string(),
            shard,
            candidates: candidates(&replicas, name, shard, last)?,
            previous: None,
        });
    }
    let record = CollectionRecord {
        config: info["config"].clone(),
        aliases,
        payload_indexes: match &info["payload_schema"] {
            Value::Null => Value::Object(Default::default()),
            v => v.clone(),
        },
        points_count: 0,
        shards: Vec::new(),
    };
    Ok((record, jobs))
}

/// The Active replicas of shard `shard` of collection `name`, best first: the one on peer
/// `last`, then those whose peer reported a count (it answered); an error naming the
/// replicas' states when none is Active.
fn candidates(
    replicas: &[Replica],
    name: &str,
    shard: u32,
    last: Option<u64>,
) -> Result<Vec<Replica>> {
    let mut active: Vec<Replica> = replicas
        .iter()
        .filter(|r| r.shard_id == shard && r.state == "Active")
        .cloned()
        .collect();
    if active.is_empty() {
        let states: Vec<String> = replicas
            .iter()
            .filter(|r| r.shard_id == shard)
            .map(|r| format!("peer {} {}", r.peer_id, r.state))
            .collect();
        return Err(Error::Upstream(format!(
            "shard {shard} of `{name}` has no Active replica ({})",
            states.join(", ")
        )));
    }
    // Without a previous pull, shards start on different peers so that they are pulled in
    // parallel.
    let turn = shard as usize % active.len();
    active.rotate_left(turn);
    active.sort_by_key(|r| (Some(r.peer_id) != last, r.points_count.is_none()));
    Ok(active)
}

/// Pulls every shard, as many at once as there are peers, each from its first candidate
/// that delivers it whole.
async fn pull_all(
    d: &Deployment,
    session: &BackupSession,
    jobs: Vec<ShardJob>,
    created_at: DateTime<Utc>,
    progress: Option<Progress>,
) -> Vec<PulledShard> {
    let parallel = d.peers.len().max(1);
    futures::stream::iter(jobs)
        .map(|job| {
            let progress = progress.clone();
            async move {
                let mut last = None;
                for replica in &job.candidates {
                    let peer = match d.peer(replica.peer_id) {
                        Ok(p) => p,
                        Err(e) => {
                            last = Some(e);
                            continue;
                        }
                    };
                    match pull_from(&peer.server, &job, replica, session, created_at, &progress)
                        .await
                    {
                        Ok(p) => return (job.collection, job.shard, Ok((replica.clone(), p))),
                        Err(e) => {
                            tracing::warn!(
                                collection = %job.collection,
                                shard = job.shard,
                                peer = replica.peer_id,
                                error = %e,
                                "shard pull failed; trying another replica"
                            );
                            last = Some(e);
                        }
                    }
                }
                let e = last.unwrap_or_else(|| Error::Upstream("no replica".into()));
                (job.collection, job.shard, Err(e))
            }
        })
        .buffer_unordered(parallel)
        .collect()
        .await
}

/// Pulls `job` from `replica`: only its changes when the last backup pulled it from the
/// same replica and all its pieces are sound (the whole shard if that fails), else the
/// whole shard.
async fn pull_from(
    server: &crate::qdrant_api::Server,
    job: &ShardJob,
    replica: &Replica,
    session: &BackupSession,
    created_at: DateTime<Utc>,
    progress: &Option<Progress>,
) -> Result<pull::Pulled> {
    let (c, s) = (job.collection.as_str(), job.shard);
    if let Some(prev) = job
        .previous
        .as_ref()
        .filter(|p| p.peer_id == replica.peer_id)
    {
        // A partial pull keeps the last archive's unchanged files as stored: not when one
        // of its pieces is damaged or missing. A whole pull stores those bytes again (and
        // rebuilds the damaged packs it can), so no new backup is built on the damage.
        let p = progress.clone();
        match prev.manifest.pieces().find(|h| !session.sound(h)) {
            Some(piece) => tracing::warn!(
                collection = c,
                shard = s,
                piece,
                "the last backup of this shard holds a damaged or missing piece; pulling the whole shard"
            ),
            None => match partial::pull_changes(server, c, s, session, prev, created_at, p).await {
                Ok(pulled) => return Ok(pulled),
                Err(e) => tracing::warn!(
                    collection = c,
                    shard = s,
                    peer = replica.peer_id,
                    error = %e,
                    "partial pull failed; pulling the whole shard"
                ),
            },
        }
    }
    let previous = job.previous.as_ref().map(|p| &p.manifest);
    let p = progress.clone();
    pull::pull_shard(server, (c, s), session, previous, created_at, p).await
}

/// How a shard archive of a backup is named in errors.
pub(crate) fn shard_label(source: &str, id: &str, collection: &str, shard: u32) -> String {
    format!("backup {source}/{id}, shard {shard} of `{collection}`")
}

//! One collection: its configuration, its durable data files and its in-memory points.
//!
//! Writes go through one writer lock: encode, append to the WAL, fsync, then apply in
//! memory, so the memory view never runs ahead of what is durable. Readers take a shared
//! lock on the point store only.

pub(crate) mod codes;
pub(crate) mod compaction;
pub(crate) mod config;
pub(crate) mod files;
pub(crate) mod filter;
pub(crate) mod input;
pub(crate) mod loader;
pub(crate) mod parallel;
pub(crate) mod points;
pub(crate) mod record;
pub(crate) mod registry;
pub(crate) mod tuning;
pub(crate) mod types;

pub(crate) use input::UpsertInput;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use parking_lot::{Mutex, RwLock};

use crate::error::{Error, Result};
use crate::io::fs::write_atomic;
use config::CollectionConfig;
use files::{DataDir, PinnedFile};
use filter::Filter;
use points::PointStore;
use record::{Operation, Record};
use types::{normalize, Distance, Payload, PointId, PointWrite, DEFAULT_VECTOR};

/// Name of the configuration file inside a collection directory.
pub(crate) const CONFIG_FILE: &str = "config.json";
/// Name of the data directory inside a collection directory.
pub(crate) const DATA_DIR: &str = "data";

/// Seal the WAL into a segment once it grows past this.
const ROTATE_BYTES: u64 = 64 << 20;
/// Look for garbage once dead point entries reach this fraction of all on disk...
const COMPACT_GARBAGE_RATIO: f64 = 0.2;
/// ...and look again only after this much more has died since the last look, so that
/// garbage spread thinly over many segments is not re-read after every write.
const RESCAN_GARBAGE_RATIO: f64 = 0.1;
/// Sealed files smaller than this are merged with their neighbours when those are rewritten.
const SMALL_SEGMENT: u64 = ROTATE_BYTES / 8;

/// Whether to measure the sealed segments for garbage: enough dead entries overall
/// (`point_records` entries on disk for `live` points), and enough more than
/// `floor`, the garbage the last look left in place.
fn should_compact(sealed: usize, point_records: u64, live: u64, floor: u64) -> bool {
    let garbage = point_records.saturating_sub(live);
    let records = point_records as f64;
    sealed > 0
        && garbage as f64 >= COMPACT_GARBAGE_RATIO * records
        && garbage.saturating_sub(floor) as f64 >= RESCAN_GARBAGE_RATIO * records
}

struct Writer {
    data: DataDir,
    next_op: u64,
    /// Point entries (upserted points and deleted ids) in all data files; minus the live
    /// points, this estimates the garbage compaction would reclaim.
    point_records: u64,
    /// Dead entries the last compaction left where they were (see [`should_compact`]).
    garbage_floor: u64,
    closed: bool,
}

/// A point as a request gives it, before validation against the vector spaces.
#[derive(Clone, Debug, PartialEq)]
pub struct PointInput {
    /// The point's id.
    pub id: PointId,
    /// `(vector name, vector)` pairs; `""` names the unnamed vector.
    pub vectors: Vec<(String, Vec<f32>)>,
    /// The payload, if any.
    pub payload: Option<Payload>,
}

/// Which points an operation acts on.
#[derive(Clone, Debug)]
pub enum PointSelector {
    /// These ids (missing ones are ignored).
    Ids(Vec<PointId>),
    /// Every point the filter matches when the operation is applied.
    Filter(Box<Filter>),
}

/// How a payload update changes the payload of each selected point.
#[derive(Clone, Debug, PartialEq)]
pub enum PayloadChange {
    /// Merge these keys into the existing payload.
    Merge(Payload),
    /// Replace the whole payload with this one.
    Overwrite(Payload),
    /// Remove these keys.
    DeleteKeys(Vec<String>),
    /// Remove every key.
    Clear,
}

impl PayloadChange {
    fn apply(&self, old: Option<Payload>) -> Payload {
        match self {
            PayloadChange::Merge(p) => {
                let mut out = old.unwrap_or_default();
                out.extend(p.clone());
                out
            }
            PayloadChange::Overwrite(p) => p.clone(),
            PayloadChange::DeleteKeys(keys) => {
                let mut out = old.unwrap_or_default();
                for k in keys {
                    out.remove(k);
                }
                out
            }
            PayloadChange::Clear => Payload::new(),
        }
    }
}

/// A change to a collection's points, applied in one step under the writer lock.
///
/// Selections are resolved under that lock too, so a concurrent write can neither be
/// reverted by a payload update nor slip past a delete-by-filter.
#[derive(Clone, Debug)]
pub enum PointsChange {
    /// Insert or replace whole, validated points.
    Upsert(Vec<PointWrite>),
    /// Delete the selected points.
    Delete(PointSelector),
    /// Change the payloads of the selected points; their vectors stay as stored.
    Payload(PointSelector, PayloadChange),
}

/// A consistent, immutable image of a collection, pinned for a snapshot.
#[derive(Debug)]
pub struct PinnedCollection {
    /// The collection's name.
    pub name: String,
    /// `config.json` as it was at the seal.
    pub config_json: Vec<u8>,
    /// Every sealed data file, held open.
    pub files: Vec<PinnedFile>,
}

/// A live collection.
pub struct Collection {
    name: String,
    dir: PathBuf,
    config: RwLock<CollectionConfig>,
    /// Shared with the thread that cuts search codes in the background.
    points: Arc<RwLock<PointStore>>,
    writer: Mutex<Writer>,
    compacting: AtomicBool,
    /// A thread is cutting search codes ([`Collection::read`]).
    cutting: Arc<AtomicBool>,
}

impl std::fmt::Debug for Collection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Collection")
            .field("name", &self.name)
            .field("dir", &self.dir)
            .finish()
    }
}

/// Checks one vector against the space `name` and normalizes it for Cosine.
fn check_vector(
    cfg: &CollectionConfig,
    name: &str,
    mut v: Vec<f32>,
    what: impl FnOnce() -> String,
) -> Result<Vec<f32>> {
    let Some(params) = cfg.vectors.get(name) else {
        return Err(Error::bad_input(if name == DEFAULT_VECTOR {
            "Not existing vector name error: this collection has only named vectors".to_string()
        } else {
            format!("Not existing vector name error: {name}")
        }));
    };
    if v.len() as u64 != params.size {
        return Err(Error::bad_input(format!(
            "Vector dimension error: expected dim: {}, got {}",
            params.size,
            v.len()
        )));
    }
    if v.iter().any(|x| !x.is_finite()) {
        return Err(Error::bad_input(format!(
            "{} has a non-finite value",
            what()
        )));
    }
    if params.distance == Distance::Cosine {
        normalize(&mut v);
    }
    Ok(v)
}

fn storage_err(context: String) -> impl FnOnce(files::FilesError) -> Error {
    move |e| Error::internal(context, e)
}

impl Collection {
    /// Writes a new collection's files into `dir` (which must not exist yet).
    pub fn init_dir(dir: &Path, config: &CollectionConfig) -> Result<()> {
        std::fs::create_dir_all(dir.join(DATA_DIR))
            .map_err(|e| Error::internal(format!("failed to create `{}`", dir.display()), e))?;
        let json = serde_json::to_vec_pretty(config)
            .map_err(|e| Error::internal("failed to serialize collection config", e))?;
        write_atomic(&dir.join(CONFIG_FILE), &json).map_err(|e| {
            Error::internal(format!("failed to write config of `{}`", dir.display()), e)
        })
    }

    /// Opens a collection directory, replaying its data files.
    pub fn open(dir: &Path, name: &str) -> Result<Self> {
        Self::open_inner(dir, name, None)
    }

    /// Opens a collection directory whose sealed segments were already loaded into
    /// `preloaded` (snapshot recovery), so they are not read a second time.
    pub fn open_preloaded(dir: &Path, name: &str, preloaded: loader::Preloaded) -> Result<Self> {
        Self::open_inner(dir, name, Some(preloaded))
    }

    fn open_inner(dir: &Path, name: &str, preloaded: Option<loader::Preloaded>) -> Result<Self> {
        let raw = std::fs::read(dir.join(CONFIG_FILE)).map_err(|e| {
            Error::internal(format!("failed to read config of collection `{name}`"), e)
        })?;
        let config: CollectionConfig = serde_json::from_slice(&raw)
            .map_err(|e| Error::internal(format!("config of collection `{name}` is invalid"), e))?;
        config.validate().map_err(Error::BadInput)?;
        let replay_sealed = preloaded.is_none();
        let (mut store, mut last_op, mut point_records) = match preloaded {
            Some(p) => (p.store, p.last_op, p.point_records),
            None => (PointStore::new(&config.vectors.spaces()), 0, 0),
        };
        let data = DataDir::open(&dir.join(DATA_DIR), replay_sealed, |rec| {
            last_op = last_op.max(rec.op_id);
            point_records += rec.op.len() as u64;
            store.apply(rec);
        })
        .map_err(storage_err(format!(
            "failed to load data of collection `{name}`"
        )))?;
        Ok(Collection {
            name: name.to_string(),
            dir: dir.to_path_buf(),
            config: RwLock::new(config),
            points: Arc::new(RwLock::new(store)),
            writer: Mutex::new(Writer {
                data,
                next_op: last_op + 1,
                point_records,
                garbage_floor: 0,
                closed: false,
            }),
            compacting: AtomicBool::new(false),
            cutting: Arc::new(AtomicBool::new(false)),
        })
    }

    /// The collection's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The collection's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// A copy of the configuration.
    pub fn config(&self) -> CollectionConfig {
        self.config.read().clone()
    }

    /// Changes the configuration durably (payload indexes, parameter updates).
    pub fn update_config(&self, change: impl FnOnce(&mut CollectionConfig)) -> Result<()> {
        // The writer lock orders config changes with snapshot pins.
        let _w = self.writer.lock();
        let mut cfg = self.config.read().clone();
        change(&mut cfg);
        let json = serde_json::to_vec_pretty(&cfg)
            .map_err(|e| Error::internal("failed to serialize collection config", e))?;
        write_atomic(&self.dir.join(CONFIG_FILE), &json).map_err(|e| {
            Error::internal(format!("failed to write config of `{}`", self.name), e)
        })?;
        *self.config.write() = cfg;
        Ok(())
    }

    /// Runs `f` with shared access to the points. A search in `f` that left search codes to
    /// cut (many points loaded since the last search) starts their cutting beside it.
    pub fn read<R>(&self, f: impl FnOnce(&PointStore) -> R) -> R {
        let store = self.points.read();
        let out = f(&store);
        let wanted = store.codes_wanted();
        drop(store);
        if wanted {
            self.cut_codes();
        }
        out
    }

    /// Cuts the search codes on a thread of their own, a step at a time, unless one is at it.
    /// Each step holds the store shared for a few milliseconds, so writes wait no longer;
    /// searches meanwhile scan exactly or cut what little is left.
    fn cut_codes(&self) {
        if self.cutting.swap(true, Ordering::AcqRel) {
            return;
        }
        let (points, cutting) = (Arc::clone(&self.points), Arc::clone(&self.cutting));
        let started = std::thread::Builder::new()
            .name("search-codes".into())
            .spawn(move || {
                // Stops early once the collection is dropped (this is the last holder).
                while Arc::strong_count(&points) > 1 && !points.read().cut_codes(points::CUT_STEP) {
                    std::thread::yield_now();
                }
                cutting.store(false, Ordering::Release);
            });
        if let Err(e) = started {
            tracing::warn!(error = %e, "search codes are cut by searches: no thread for it");
            self.cutting.store(false, Ordering::Release);
        }
    }

    /// Validates request vectors against the vector spaces and normalizes Cosine ones.
    pub fn prepare(&self, points: Vec<PointInput>) -> Result<Vec<PointWrite>> {
        let cfg = self.config.read();
        points
            .into_iter()
            .map(
                |PointInput {
                     id,
                     vectors,
                     payload,
                 }| {
                    let vectors = vectors
                        .into_iter()
                        .map(|(name, v)| {
                            let v =
                                check_vector(&cfg, &name, v, || format!("vector of point {id}"))?;
                            Ok((name, v))
                        })
                        .collect::<Result<Vec<_>>>()?;
                    Ok(PointWrite {
                        id,
                        vectors,
                        payload,
                    })
                },
            )
            .collect()
    }

    /// Validates a query vector against the vector space `using` and normalizes it the way
    /// stored vectors of that space are.
    pub fn prepare_query(&self, using: &str, v: Vec<f32>) -> Result<Vec<f32>> {
        check_vector(&self.config.read(), using, v, || "query vector".to_string())
    }

    /// The writer lock, unless the collection has been closed (deleted or replaced).
    fn open_writer(&self) -> Result<parking_lot::MutexGuard<'_, Writer>> {
        let w = self.writer.lock();
        if w.closed {
            return Err(Error::NotFound(format!(
                "Collection `{}` doesn't exist!",
                self.name
            )));
        }
        Ok(w)
    }

    /// Logs and applies one operation; returns its operation id. Blocking (fsync).
    pub fn write_blocking(&self, op: Operation) -> Result<u64> {
        let mut w = self.open_writer()?;
        self.log_and_apply(&mut w, op)
    }

    /// Resolves `change` against the current points and applies it, both under the writer
    /// lock; returns the operation id. Blocking (fsync).
    pub fn change_blocking(&self, change: PointsChange) -> Result<u64> {
        let mut w = self.open_writer()?;
        // Every write holds the writer lock, so the points read here are the ones the
        // operation lands on.
        let op = match change {
            PointsChange::Upsert(points) => Operation::Upsert(points),
            PointsChange::Delete(sel) => Operation::Delete(self.resolve(&sel)),
            PointsChange::Payload(sel, change) => {
                let ids = self.resolve(&sel);
                let store = self.points.read();
                Operation::Upsert(
                    ids.iter()
                        .filter_map(|id| store.get(id))
                        .map(|p| PointWrite {
                            id: p.id,
                            // Stored vectors are validated and normalized: kept as they are.
                            vectors: p.vectors,
                            payload: Some(change.apply(p.payload)),
                        })
                        .collect(),
                )
            }
        };
        self.log_and_apply(&mut w, op)
    }

    /// Applies [`Collection::change_blocking`] off the async runtime.
    pub async fn change(self: &Arc<Self>, change: PointsChange) -> Result<u64> {
        let this = Arc::clone(self);
        let op_id = tokio::task::spawn_blocking(move || this.change_blocking(change))
            .await
            .map_err(|e| Error::internal("write task failed", e))??;
        self.maybe_compact();
        Ok(op_id)
    }

    fn resolve(&self, sel: &PointSelector) -> Vec<PointId> {
        match sel {
            PointSelector::Ids(ids) => ids.clone(),
            PointSelector::Filter(f) => self.points.read().matching_ids(f),
        }
    }

    fn log_and_apply(&self, w: &mut Writer, op: Operation) -> Result<u64> {
        w.point_records += op.len() as u64;
        let record = Record {
            op_id: w.next_op,
            op,
        };
        let mut buf = Vec::new();
        record::encode(&record, &mut buf);
        w.data.append(&buf, true).map_err(storage_err(format!(
            "failed to write to collection `{}`",
            self.name
        )))?;
        w.next_op += 1;
        let op_id = record.op_id;
        self.points.write().apply(record);
        if w.data.active_len() > ROTATE_BYTES {
            w.data.rotate().map_err(storage_err(format!(
                "failed to seal WAL of collection `{}`",
                self.name
            )))?;
        }
        Ok(op_id)
    }

    /// Pins every sealed file and the active WAL at its current length: a point-in-time
    /// image for a snapshot.
    ///
    /// Writers wait only for the opening of the files; nothing is written or renamed.
    pub fn pin_image(&self) -> Result<PinnedCollection> {
        let w = self.open_writer()?;
        let ctx = format!("failed to pin collection `{}`", self.name);
        let files = w.data.pin_with_active().map_err(storage_err(ctx))?;
        let config_json = serde_json::to_vec_pretty(&*self.config.read())
            .map_err(|e| Error::internal("failed to serialize collection config", e))?;
        Ok(PinnedCollection {
            name: self.name.clone(),
            config_json,
            files,
        })
    }

    /// Seals the active WAL into a segment now (it is also sealed when it passes 64 MiB).
    pub fn seal(&self) -> Result<()> {
        let mut w = self.open_writer()?;
        let ctx = format!("failed to seal collection `{}`", self.name);
        w.data.rotate().map_err(storage_err(ctx))
    }

    /// The id of the last operation written (0 for none): changes with every write, so a
    /// scheduler can skip collections unchanged since their last snapshot.
    pub fn last_op(&self) -> u64 {
        self.writer.lock().next_op.saturating_sub(1)
    }

    /// Stops accepting writes (the collection is being deleted or replaced).
    pub fn close(&self) {
        self.writer.lock().closed = true;
    }

    /// Starts a background compaction when enough garbage has accumulated; see
    /// [`compaction`] for which files it rewrites and why most are left alone.
    pub fn maybe_compact(self: &Arc<Self>) {
        let files = {
            let w = self.writer.lock();
            let live = self.points.read().len() as u64;
            let (sealed, records, floor) =
                (w.data.sealed().len(), w.point_records, w.garbage_floor);
            if w.closed || !should_compact(sealed, records, live, floor) {
                return;
            }
            w.data.sealed().to_vec()
        };
        if self.compacting.swap(true, Ordering::AcqRel) {
            return;
        }
        let this = Arc::clone(self);
        tokio::task::spawn_blocking(move || {
            if let Err(e) = this.compact(&files) {
                tracing::error!(collection = %this.name, error = %e, "compaction failed");
            }
            this.compacting.store(false, Ordering::Release);
        });
    }

    /// Measures each sealed file, then rewrites the runs [`compaction::plan`] picks.
    fn compact(&self, files: &[files::SealedFile]) -> std::result::Result<(), files::FilesError> {
        let version_of = |id: &types::PointId| self.points.read().version(id);
        let usage = files
            .iter()
            .enumerate()
            .map(|(i, f)| compaction::measure(f, i == 0, version_of))
            .collect::<std::result::Result<Vec<_>, _>>()?;
        let data_dir = self.dir.join(DATA_DIR);
        for run in compaction::plan(&usage, SMALL_SEGMENT, ROTATE_BYTES) {
            let oldest = run.start == 0;
            let inputs = &files[run];
            let (out, dropped) = compaction::rewrite(&data_dir, inputs, oldest, version_of)?;
            let mut w = self.writer.lock();
            w.data.replace_run(out, inputs)?;
            w.point_records = w.point_records.saturating_sub(dropped);
        }
        let mut w = self.writer.lock();
        let live = self.points.read().len() as u64;
        w.garbage_floor = w.point_records.saturating_sub(live);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_search_after_a_bulk_load_has_the_codes_cut_beside_it() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let config: CollectionConfig =
            serde_json::from_value(serde_json::json!({"vectors": {"size": 4, "distance": "Dot"}}))
                .expect("config");
        Collection::init_dir(tmp.path(), &config).expect("init");
        let col = Collection::open(tmp.path(), "c").expect("open");
        let n = 3 * points::CUT_STEP;
        let writes = (0..n as u64)
            .map(|i| PointWrite {
                id: PointId::Num(i),
                vectors: vec![(
                    String::new(),
                    vec![(i % 7) as f32, 1.0, -0.5, (i % 3) as f32],
                )],
                payload: None,
            })
            .collect();
        col.write_blocking(Operation::Upsert(writes))
            .expect("write");
        let ask = |p: &PointStore| {
            let q = [1.0, 0.5, 0.0, 2.0];
            p.search("", &q, 5, 0, None, None, false, &points::VectorSelect::None)
                .into_iter()
                .map(|(score, p)| (score, p.id))
                .collect::<Vec<_>>()
        };
        let first = col.read(ask);
        // The search scanned exactly and started the cut; it ends on its own.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        while col.cutting.load(Ordering::Acquire) || col.read(PointStore::codes_wanted) {
            assert!(
                std::time::Instant::now() < deadline,
                "the codes were never cut"
            );
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        assert!(!col.read(PointStore::codes_wanted));
        assert_eq!(col.read(ask), first);
    }

    #[test]
    fn compaction_looks_only_at_enough_new_garbage() {
        // Live-only data (a bulk load) is never looked at, however many segments.
        assert!(!should_compact(40, 700_000, 700_000, 0));
        // Nothing sealed: the garbage is all in the WAL.
        assert!(!should_compact(0, 1_000, 100, 0));
        assert!(should_compact(1, 1_000, 800, 0));
        assert!(!should_compact(1, 1_000, 801, 0));
        // The last look left 150 dead entries in place: wait for 100 more.
        assert!(!should_compact(1, 1_000, 751, 150));
        assert!(should_compact(1, 1_000, 750, 150));
    }
}

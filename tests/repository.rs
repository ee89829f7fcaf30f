//! The incremental snapshot repository: byte-identical downloads, deduplication, the
//! collector, a crash between every two storage calls, and a create racing a delete and a
//! collection. On local disk, and on the real S3 server for the round trip.

mod common;

use std::collections::HashSet;
use std::ops::Range;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures::TryStreamExt;
use sha2::{Digest, Sha256};

use snapstream::collections::Operation;
use snapstream::collections::Registry;
use snapstream::collections::{PointId, PointWrite};
use snapstream::engine::Layout;
use snapstream::engine::SnapshotKind;
use snapstream::engine::{manifest_key, Repository};
use snapstream::engine::{producer, unpack};
use snapstream::storage::LocalBackend;
use snapstream::storage::S3Backend;
use snapstream::storage::{
    Backend, BackendError, ByteStream, CreateOptions, DynBackend, ObjectKey, ObjectMeta, ObjectSink,
};

const DIM: usize = 64;

fn point(id: u64, round: u64) -> PointWrite {
    PointWrite {
        id: PointId::Num(id),
        vectors: vec![(
            String::new(),
            (0..DIM)
                .map(|d| ((id * 31 + d as u64 + round * 7) % 97) as f32)
                .collect(),
        )],
        payload: Some(
            serde_json::from_value(serde_json::json!({"round": round, "id": id})).unwrap(),
        ),
    }
}

/// A collection of `n` points in several sealed segments (~8 MiB each).
fn collection(dir: &std::path::Path, n: u64) -> Registry {
    let reg = Registry::open(&dir.join("storage")).unwrap();
    reg.create(
        "c",
        serde_json::from_value(serde_json::json!({"vectors": {"size": DIM, "distance": "Euclid"}}))
            .unwrap(),
    )
    .unwrap();
    let col = reg.get("c").unwrap();
    for start in (0..n).step_by(1000) {
        let batch = (start..(start + 1000).min(n))
            .map(|i| point(i, 0))
            .collect();
        col.write_blocking(Operation::Upsert(batch)).unwrap();
        if start % 30_000 == 29_000 {
            col.seal().unwrap();
        }
    }
    reg
}

/// Overwrites every 100th point (1%) and deletes a few.
fn change_one_percent(reg: &Registry, n: u64, round: u64) {
    let col = reg.get("c").unwrap();
    let changed = (0..n).step_by(100).map(|i| point(i, round)).collect();
    col.write_blocking(Operation::Upsert(changed)).unwrap();
    col.write_blocking(Operation::Delete(vec![PointId::Num(round * 3 + 1)]))
        .unwrap();
}

fn archive(reg: &Registry) -> snapstream::engine::Archive {
    let pinned = vec![reg.get("c").unwrap().pin_image().unwrap()];
    let manifest = producer::manifest(SnapshotKind::Collection, &pinned, Default::default());
    producer::archive(&manifest, pinned).unwrap()
}

fn key(name: &str) -> ObjectKey {
    ObjectKey::new(format!("c/{name}.snapshot")).unwrap()
}

async fn download(repo: &Repository, k: &ObjectKey, range: Option<Range<u64>>) -> Vec<u8> {
    let stored = repo.stat(k).await.unwrap();
    let chunks: Vec<Bytes> = repo
        .open(&stored, range)
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    chunks.concat()
}

/// Downloads a snapshot and checks it against its listed checksum, then unpacks it.
async fn assert_whole(repo: &Repository, k: &ObjectKey) -> Vec<u8> {
    let stored = repo.stat(k).await.unwrap();
    let bytes = download(repo, k, None).await;
    assert_eq!(bytes.len() as u64, stored.size, "{k}: size");
    assert_eq!(
        Some(hex::encode(Sha256::digest(&bytes))),
        stored.checksum,
        "{k}: SHA-256 of the download equals the listed checksum"
    );
    let staging = tempfile::tempdir().unwrap();
    let stream = futures::stream::iter(
        bytes
            .chunks(1 << 20)
            .map(|c| Ok(Bytes::copy_from_slice(c)))
            .collect::<Vec<_>>(),
    );
    let un = unpack::unpack(stream, staging.path(), Some(SnapshotKind::Collection), None)
        .await
        .unwrap_or_else(|e| panic!("{k}: the download must recover: {}", e.chain()));
    assert_eq!(Some(un.sha256), stored.checksum);
    bytes
}

async fn stored_pieces(b: &DynBackend) -> (usize, u64) {
    let dir = ObjectKey::new(".repository/pieces").unwrap();
    let all: Vec<ObjectMeta> = b.list_recursive(Some(&dir)).try_collect().await.unwrap();
    (all.len(), all.iter().map(|m| m.size).sum())
}

/// Create, dedupe, download byte for byte, delete and collect, on one backend.
async fn round_trip(backend: DynBackend) {
    let tmp = tempfile::tempdir().unwrap();
    let n = 60_000;
    let reg = collection(tmp.path(), n);
    let repo = Repository::new(Arc::clone(&backend), true);
    let first = repo
        .create_incremental(&key("first"), archive(&reg), None)
        .await
        .unwrap();
    let (_, bytes_after_first) = stored_pieces(&backend).await;
    let a = assert_whole(&repo, &key("first")).await;
    assert_eq!(
        a,
        download(&repo, &key("first"), None).await,
        "downloads are identical"
    );
    assert_eq!(
        download(&repo, &key("first"), Some(1000..9_000_000)).await,
        a[1000..9_000_000],
        "a range is the same bytes as the whole"
    );

    change_one_percent(&reg, n, 1);
    let second = repo
        .create_incremental(&key("second"), archive(&reg), None)
        .await
        .unwrap();
    let (_, bytes_after_second) = stored_pieces(&backend).await;
    let added = bytes_after_second - bytes_after_first;
    assert!(
        added <= second.size / 50 + (8 << 20),
        "1% changed added {added} bytes for a {} byte snapshot",
        second.size
    );
    assert!(
        bytes_after_first >= first.size * 9 / 10,
        "the first holds everything"
    );
    assert_whole(&repo, &key("second")).await;

    // Deleting one never breaks the other; deleting both frees everything.
    repo.delete(&key("first")).await.unwrap();
    assert!(repo.collect().await.unwrap().is_some());
    assert_whole(&repo, &key("second")).await;
    repo.delete(&key("second")).await.unwrap();
    let c = repo.collect().await.unwrap().expect("no create is running");
    assert_eq!(c.kept, 0);
    assert_eq!(
        stored_pieces(&backend).await,
        (0, 0),
        "{backend}: nothing left"
    );
    let rest: Vec<ObjectMeta> = backend
        .list_recursive(Some(&ObjectKey::new("c").unwrap()))
        .try_collect()
        .await
        .unwrap();
    assert!(rest.is_empty(), "{backend}: left behind {rest:?}");
}

#[tokio::test]
async fn incremental_snapshots_dedupe_and_download_byte_identical_on_local_disk() {
    let tmp = tempfile::tempdir().unwrap();
    round_trip(Arc::new(LocalBackend::new(tmp.path()).unwrap())).await;
}

#[tokio::test]
async fn incremental_snapshots_dedupe_and_download_byte_identical_on_s3() {
    let prefix = common::unique_prefix("repository");
    round_trip(Arc::new(
        S3Backend::new(&common::s3_config(&prefix)).unwrap(),
    ))
    .await;
}

/// A backend that stops working after `budget` calls, like a process killed at that point:
/// nothing after it happens, including the clean-up a live process would do. Each call
/// first waits `delay` (a slow network, to widen race windows).
#[derive(Debug)]
struct Dies {
    inner: DynBackend,
    budget: usize,
    calls: AtomicUsize,
    delay: Duration,
}

impl std::fmt::Display for Dies {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "dying {}", self.inner)
    }
}

impl Dies {
    fn new(inner: &DynBackend, budget: usize, delay: Duration) -> Arc<Self> {
        Arc::new(Dies {
            inner: Arc::clone(inner),
            budget,
            calls: AtomicUsize::new(0),
            delay,
        })
    }

    async fn step(&self) -> Result<(), BackendError> {
        tokio::time::sleep(self.delay).await;
        self.now()
    }

    fn now(&self) -> Result<(), BackendError> {
        if self.calls.fetch_add(1, Ordering::SeqCst) >= self.budget {
            return Err(BackendError::Io {
                action: "killed",
                path: String::new(),
                source: std::io::Error::other("the process died here"),
            });
        }
        Ok(())
    }
}

#[async_trait]
impl Backend for Dies {
    async fn create(
        &self,
        key: &ObjectKey,
        o: CreateOptions,
    ) -> Result<Box<dyn ObjectSink>, BackendError> {
        self.step().await?;
        self.inner.create(key, o).await
    }
    async fn open(
        &self,
        key: &ObjectKey,
        r: Option<Range<u64>>,
    ) -> Result<ByteStream, BackendError> {
        self.step().await?;
        self.inner.open(key, r).await
    }
    async fn stat(&self, key: &ObjectKey) -> Result<ObjectMeta, BackendError> {
        self.step().await?;
        self.inner.stat(key).await
    }
    async fn list(&self, dir: Option<&ObjectKey>) -> Result<Vec<ObjectMeta>, BackendError> {
        self.step().await?;
        self.inner.list(dir).await
    }
    fn list_recursive(
        &self,
        prefix: Option<&ObjectKey>,
    ) -> futures::stream::BoxStream<'static, Result<ObjectMeta, BackendError>> {
        match self.now() {
            Ok(()) => self.inner.list_recursive(prefix),
            Err(e) => Box::pin(futures::stream::once(async move { Err(e) })),
        }
    }
    async fn put_if_absent(
        &self,
        key: &ObjectKey,
        bytes: Bytes,
    ) -> Result<ObjectMeta, BackendError> {
        self.step().await?;
        self.inner.put_if_absent(key, bytes).await
    }
    async fn delete(&self, key: &ObjectKey) -> Result<(), BackendError> {
        self.step().await?;
        self.inner.delete(key).await
    }
    async fn cleanup(&self) -> Result<usize, BackendError> {
        self.step().await?;
        self.inner.cleanup().await
    }
    async fn link_file(
        &self,
        file: Arc<std::fs::File>,
        key: &ObjectKey,
        replace: bool,
    ) -> Result<(), BackendError> {
        self.step().await?;
        self.inner.link_file(file, key, replace).await
    }
    async fn sync_links(&self, dir: &ObjectKey) -> Result<(), BackendError> {
        self.step().await?;
        self.inner.sync_links(dir).await
    }
}

/// Every piece any manifest refers to, and every piece stored.
async fn referenced_and_stored(
    repo: &Repository,
    b: &DynBackend,
    names: &[&str],
) -> (HashSet<String>, HashSet<String>) {
    let mut referenced = HashSet::new();
    for n in names {
        if let Ok(s) = repo.stat(&key(n)).await {
            if let snapstream::engine::Layout::Incremental(m) = s.layout {
                referenced.extend(m.pieces().map(str::to_string));
                referenced.extend(m.linked().filter_map(|e| e.linked.clone()));
            }
        }
    }
    let mut stored = HashSet::new();
    for dir in [".repository/pieces", ".repository/linked"] {
        let dir = ObjectKey::new(dir).unwrap();
        let names: Vec<String> = b
            .list_recursive(Some(&dir))
            .map_ok(|m| m.key.file_name().to_string())
            .try_collect()
            .await
            .unwrap();
        stored.extend(names);
    }
    (referenced, stored)
}

#[tokio::test]
async fn a_crash_between_any_two_storage_calls_loses_nothing_and_leaves_nothing() {
    crash_between_calls(false).await;
}

#[tokio::test]
async fn a_crash_between_any_two_steps_of_a_linked_create_or_a_collection_leaves_nothing() {
    crash_between_calls(true).await;
}

/// How many storage calls a whole create of `reg` makes (through `repo`, over `inner`).
async fn calls_of_a_create(
    reg: &Registry,
    inner: &DynBackend,
    live: &Repository,
    repo: &impl Fn(DynBackend) -> Repository,
) -> usize {
    let counting = Dies::new(inner, usize::MAX, Duration::ZERO);
    let probe = repo(Arc::clone(&counting) as DynBackend);
    probe
        .create_incremental(&key("new"), archive(reg), None)
        .await
        .unwrap();
    let calls = counting.calls.load(Ordering::SeqCst);
    assert!(calls >= 5, "a create makes several storage calls ({calls})");
    live.delete(&key("new")).await.unwrap();
    calls
}

/// A create killed after each of its storage calls in turn (links too, when `link`); then,
/// linked, a collection killed after each of its calls.
async fn crash_between_calls(link: bool) {
    let tmp = tempfile::tempdir().unwrap();
    let n = 20_000;
    let reg = collection(tmp.path(), n);
    let inner: DynBackend = Arc::new(LocalBackend::new(tmp.path().join("snapshots")).unwrap());
    let ttl = Duration::from_millis(300);
    let repo = |b: DynBackend| Repository::with_lease_ttl(b, true, ttl).with_linked_files(link);
    let live = repo(Arc::clone(&inner));
    if link {
        // Sealed segments to link; the writes below go to a fresh WAL, stored as pieces.
        reg.get("c").unwrap().seal().unwrap();
    }
    live.create_incremental(&key("old"), archive(&reg), None)
        .await
        .unwrap();
    let old = assert_whole(&live, &key("old")).await;
    change_one_percent(&reg, n, 1);

    let calls = calls_of_a_create(&reg, &inner, &live, &repo).await;

    for budget in 0..calls {
        let doomed = repo(Dies::new(&inner, budget, Duration::ZERO));
        let outcome = doomed
            .create_incremental(&key("new"), archive(&reg), None)
            .await;
        drop(doomed);
        // "Restart": the dead process's lease expires, the collector runs.
        tokio::time::sleep(ttl + Duration::from_millis(50)).await;
        let collected = live.collect().await.unwrap();
        assert!(
            collected.is_some(),
            "budget {budget}: a dead lease must not block collection"
        );
        assert_eq!(
            assert_whole(&live, &key("old")).await,
            old,
            "budget {budget}: the older snapshot is intact"
        );
        let committed = live.exists(&key("new")).await.unwrap();
        assert_eq!(
            committed,
            outcome.is_ok(),
            "budget {budget}: listed exactly when the create succeeded"
        );
        if committed {
            assert_whole(&live, &key("new")).await;
        }
        let (referenced, stored) = referenced_and_stored(&live, &inner, &["old", "new"]).await;
        assert_eq!(
            stored, referenced,
            "budget {budget}: the collector removed every orphan and nothing else"
        );
        if committed {
            live.delete(&key("new")).await.unwrap();
        }
    }
    if link {
        collector_killed_at_every_step(&reg, n, &inner, &live, ttl).await;
    }
}

/// A collection killed after each of its storage calls in turn (each time over a fresh
/// snapshot's garbage: a newly linked segment and new pieces) leaves the kept snapshot
/// whole, and the next one finishes the work.
async fn collector_killed_at_every_step(
    reg: &Registry,
    n: u64,
    inner: &DynBackend,
    live: &Repository,
    ttl: Duration,
) {
    for budget in 0.. {
        // The kept snapshot links every segment so far: the garbage below is one segment's
        // link and the new WAL's pieces, whatever the round.
        live.create_incremental(&key("kept"), archive(reg), None)
            .await
            .unwrap();
        let kept = assert_whole(live, &key("kept")).await;
        change_one_percent(reg, n, 10 + budget as u64);
        reg.get("c").unwrap().seal().unwrap();
        change_one_percent(reg, n, 11 + budget as u64);
        live.create_incremental(&key("gone"), archive(reg), None)
            .await
            .unwrap();
        live.delete(&key("gone")).await.unwrap();
        let doomed =
            Repository::with_lease_ttl(Dies::new(inner, budget, Duration::ZERO), true, ttl);
        let finished = matches!(doomed.collect().await, Ok(Some(_)));
        tokio::time::sleep(ttl + Duration::from_millis(50)).await;
        assert_eq!(
            assert_whole(live, &key("kept")).await,
            kept,
            "collector killed after {budget} calls: the kept snapshot is whole"
        );
        assert!(live.collect().await.unwrap().is_some());
        let (referenced, stored) = referenced_and_stored(live, inner, &["kept"]).await;
        assert_eq!(
            stored, referenced,
            "collector killed after {budget} calls: the next one removed every orphan"
        );
        live.delete(&key("kept")).await.unwrap();
        if finished {
            assert!(budget > 3, "a collection makes several storage calls");
            break;
        }
    }
}

#[tokio::test]
async fn a_create_racing_a_delete_and_a_collection_stays_whole() {
    let tmp = tempfile::tempdir().unwrap();
    let n = 20_000;
    let reg = collection(tmp.path(), n);
    let backend: DynBackend = Arc::new(LocalBackend::new(tmp.path().join("snapshots")).unwrap());
    let repo = Arc::new(Repository::with_lease_ttl(
        Arc::clone(&backend),
        true,
        Duration::from_secs(5),
    ));
    // The creator is another process on a slow link to the same storage, so the delete
    // and the collector run while it is between listing pieces and committing.
    let slow: DynBackend = Dies::new(&backend, usize::MAX, Duration::from_millis(30));
    let creator = Arc::new(Repository::with_lease_ttl(
        slow,
        true,
        Duration::from_secs(5),
    ));
    for round in 0..6u64 {
        let older = format!("r{round}");
        repo.create_incremental(&key(&older), archive(&reg), None)
            .await
            .unwrap();
        change_one_percent(&reg, n, round + 2);
        // The new snapshot shares almost every piece with the one being deleted.
        let newer = format!("r{round}-next");
        let creating = {
            let (repo, a, k) = (Arc::clone(&creator), archive(&reg), key(&newer));
            tokio::spawn(async move { repo.create_incremental(&k, a, None).await })
        };
        tokio::time::sleep(Duration::from_millis(60 + round * 30)).await;
        repo.delete(&key(&older)).await.unwrap();
        let mut ran = 0;
        while ran < 2 {
            if repo.collect().await.unwrap().is_some() {
                ran += 1;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        creating.await.unwrap().unwrap();
        assert!(repo.collect().await.unwrap().is_some());
        assert_whole(&repo, &key(&newer)).await;
        let (referenced, stored) = referenced_and_stored(&repo, &backend, &[&newer]).await;
        assert_eq!(stored, referenced, "round {round}");
        repo.delete(&key(&newer)).await.unwrap();
    }
}

#[tokio::test]
async fn manifests_sit_beside_where_the_tar_would_be() {
    let tmp = tempfile::tempdir().unwrap();
    let reg = collection(tmp.path(), 2_000);
    let backend: DynBackend = Arc::new(LocalBackend::new(tmp.path().join("snapshots")).unwrap());
    let repo = Repository::new(Arc::clone(&backend), true);
    repo.create_incremental(&key("m"), archive(&reg), None)
        .await
        .unwrap();
    assert!(backend
        .stat(&manifest_key(&key("m")).unwrap())
        .await
        .is_ok());
    let listed = repo
        .list(Some(&ObjectKey::new("c").unwrap()))
        .await
        .unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].key, key("m"));
    assert!(matches!(
        repo.create_incremental(&key("m"), archive(&reg), None)
            .await,
        Err(BackendError::AlreadyExists(_))
    ));
}

/// A piece damaged in storage is refused on every read path: a whole download and a range
/// that wants only a few bytes of it.
#[tokio::test]
async fn a_damaged_piece_fails_whole_downloads_and_ranges_inside_it() {
    let tmp = tempfile::tempdir().unwrap();
    let store = tempfile::tempdir().unwrap();
    let backend: DynBackend = Arc::new(LocalBackend::new(store.path()).unwrap());
    let reg = collection(tmp.path(), 20_000);
    let repo = Repository::new(Arc::clone(&backend), true);
    let made = repo
        .create_incremental(&key("one"), archive(&reg), None)
        .await
        .unwrap();
    // Flip one byte of every piece, keeping its length.
    let dir = ObjectKey::new(".repository/pieces").unwrap();
    let all: Vec<ObjectMeta> = backend
        .list_recursive(Some(&dir))
        .try_collect()
        .await
        .unwrap();
    assert!(!all.is_empty());
    for m in all {
        let chunks: Vec<Bytes> = backend
            .open(&m.key, None)
            .await
            .unwrap()
            .try_collect()
            .await
            .unwrap();
        let mut bytes = chunks.concat();
        let mid = bytes.len() / 2;
        bytes[mid] ^= 0xff;
        backend.delete(&m.key).await.unwrap();
        backend.put_if_absent(&m.key, bytes.into()).await.unwrap();
    }
    let stored = repo.stat(&key("one")).await.unwrap();
    let mid = made.size / 2;
    for range in [None, Some(mid..mid + 10)] {
        let read: Result<Vec<Bytes>, _> = match repo.open(&stored, range.clone()).await {
            Ok(s) => s.try_collect().await,
            Err(e) => Err(std::io::Error::other(e.to_string())),
        };
        let e = read.expect_err("damaged bytes must not be served");
        assert!(
            e.to_string().contains("damaged"),
            "{range:?}: the error says what is wrong: {e}"
        );
    }
}

/// Every piece under `.repository/pieces/`.
async fn piece_objects(backend: &DynBackend) -> Vec<ObjectMeta> {
    let dir = ObjectKey::new(".repository/pieces").unwrap();
    backend
        .list_recursive(Some(&dir))
        .try_collect()
        .await
        .unwrap()
}

async fn read_all(repo: &Repository, name: &str) -> Result<Vec<u8>, String> {
    let stored = repo.stat(&key(name)).await.map_err(|e| e.to_string())?;
    let chunks: Vec<Bytes> = match repo.open(&stored, None).await {
        Ok(s) => s.try_collect().await.map_err(|e| e.to_string())?,
        Err(e) => return Err(e.to_string()),
    };
    Ok(chunks.concat())
}

/// A damaged piece and a deleted one are each named, with the snapshot and what is wrong;
/// the next create of the same data writes fresh copies, which makes the older snapshot
/// whole again, and a repository opened later (a restart) knows the damage too.
#[tokio::test]
async fn damage_is_named_remembered_and_repaired_by_the_next_create() {
    let tmp = tempfile::tempdir().unwrap();
    let store = tempfile::tempdir().unwrap();
    let backend: DynBackend = Arc::new(LocalBackend::new(store.path()).unwrap());
    let reg = collection(tmp.path(), 20_000);
    let repo = Repository::new(Arc::clone(&backend), true);
    let made = repo
        .create_incremental(&key("one"), archive(&reg), None)
        .await
        .unwrap();
    let whole = read_all(&repo, "one").await.unwrap();
    let pieces = piece_objects(&backend).await;
    assert!(pieces.len() >= 2);
    let (flipped, deleted) = (&pieces[0].key, &pieces[1].key);
    let mut bytes = common::read_object(backend.as_ref(), flipped, None).await;
    bytes[0] ^= 1;
    backend.delete(flipped).await.unwrap();
    backend.put_if_absent(flipped, bytes.into()).await.unwrap();
    backend.delete(deleted).await.unwrap();

    // Reads find both (the fetch-ahead window covers the whole small snapshot).
    let e = read_all(&repo, "one")
        .await
        .expect_err("damaged bytes are never served");
    assert!(e.contains("c/one.snapshot") && e.contains("damaged"), "{e}");
    let e2 = read_all(&repo, "one").await.unwrap_err();
    let named: HashSet<&str> = [e.as_str(), e2.as_str()]
        .iter()
        .flat_map(|m| {
            [flipped.file_name(), deleted.file_name()]
                .into_iter()
                .filter(|p| m.contains(*p))
        })
        .collect();
    assert!(!named.is_empty(), "the error names the piece: {e}");
    let markers: Vec<ObjectMeta> = backend
        .list_recursive(Some(&ObjectKey::new(".repository/damaged").unwrap()))
        .try_collect()
        .await
        .unwrap();
    assert!(!markers.is_empty(), "the damage is remembered in storage");

    // A restarted service (a fresh repository over the same storage) repairs what the
    // markers name, and finds the rest when it reads it.
    let restarted = Repository::new(Arc::clone(&backend), true);
    let again = restarted
        .create_incremental(&key("two"), archive(&reg), None)
        .await
        .unwrap();
    assert_eq!(again.size, made.size);
    for round in 0.. {
        assert!(round < 4, "still damaged after {round} repairing creates");
        match read_all(&restarted, "one").await {
            Ok(bytes) => {
                assert_eq!(bytes, whole, "the older snapshot is whole again");
                break;
            }
            Err(_) => {
                // Damage found only now: the next create repairs it.
                restarted
                    .create_incremental(
                        &key(&format!("r{}", uuid::Uuid::new_v4().simple())),
                        archive(&reg),
                        None,
                    )
                    .await
                    .unwrap();
            }
        }
    }
    let two = read_all(&restarted, "two").await.unwrap();
    assert_eq!(Some(hex::encode(Sha256::digest(&two))), again.checksum);
    let left: Vec<ObjectMeta> = backend
        .list_recursive(Some(&ObjectKey::new(".repository/damaged").unwrap()))
        .try_collect()
        .await
        .unwrap();
    assert!(
        left.is_empty(),
        "repaired pieces lose their markers: {left:?}"
    );
}

/// With piece compression on, pieces are stored smaller (the test collection's vectors repeat
/// a pattern), keep their names (content hashes: deduplication is unaffected), and read back
/// as the same tar, also through a repository with compression off.
#[tokio::test]
async fn compressed_pieces_dedupe_and_read_back_byte_identical() {
    let tmp = tempfile::tempdir().unwrap();
    let store = tempfile::tempdir().unwrap();
    let backend: DynBackend = Arc::new(LocalBackend::new(store.path()).unwrap());
    let reg = collection(tmp.path(), 20_000);
    let plain_store = tempfile::tempdir().unwrap();
    let plain: DynBackend = Arc::new(LocalBackend::new(plain_store.path()).unwrap());
    let raw = Repository::new(Arc::clone(&plain), true);
    let made_raw = raw
        .create_incremental(&key("one"), archive(&reg), None)
        .await
        .unwrap();
    let zipped = Repository::new(Arc::clone(&backend), true).with_piece_compression(true);
    let made = zipped
        .create_incremental(&key("one"), archive(&reg), None)
        .await
        .unwrap();
    let (raw_pieces, small) = (piece_objects(&plain).await, piece_objects(&backend).await);
    let names = |v: &[ObjectMeta]| -> HashSet<String> {
        v.iter().map(|m| m.key.file_name().to_string()).collect()
    };
    assert_eq!(
        names(&raw_pieces),
        names(&small),
        "the same content, the same names"
    );
    let sum = |v: &[ObjectMeta]| v.iter().map(|m| m.size).sum::<u64>();
    assert!(
        sum(&small) * 2 < sum(&raw_pieces),
        "compressed {} of {} bytes",
        sum(&small),
        sum(&raw_pieces)
    );
    let bytes = read_all(&zipped, "one").await.unwrap();
    assert_eq!(Some(hex::encode(Sha256::digest(&bytes))), made.checksum);
    assert_eq!(bytes.len() as u64, made_raw.size);
    let reader = Repository::new(Arc::clone(&backend), true);
    assert_eq!(read_all(&reader, "one").await.unwrap(), bytes);
    // A second snapshot of the same data stores no piece.
    let before = sum(&small);
    zipped
        .create_incremental(&key("two"), archive(&reg), None)
        .await
        .unwrap();
    assert_eq!(sum(&piece_objects(&backend).await), before);
}

/// The inode of a file.
fn inode(path: &std::path::Path) -> u64 {
    std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(path).unwrap())
}

/// The inodes of the collection's sealed segments.
fn segment_inodes(dir: &std::path::Path) -> HashSet<u64> {
    std::fs::read_dir(dir.join("storage/collections/c/data"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "seg"))
        .map(|p| inode(&p))
        .collect()
}

/// The active WAL of collection `c`.
fn wal_path(dir: &std::path::Path) -> std::path::PathBuf {
    std::fs::read_dir(dir.join("storage/collections/c/data"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|x| x == "wal"))
        .unwrap()
}

/// Files and bytes under `.repository/{what}` of a local storage.
fn stored_files(snapshots: &std::path::Path, what: &str) -> (usize, u64) {
    match std::fs::read_dir(snapshots.join(".repository").join(what)) {
        Ok(rd) => rd
            .map(|e| e.unwrap().metadata().unwrap().len())
            .fold((0, 0), |(n, b), len| (n + 1, b + len)),
        Err(_) => (0, 0),
    }
}

/// Recovers the snapshot `bytes` over collection `c`, as a recovery does; returns its points.
async fn recover_over(reg: &Registry, bytes: &[u8]) -> usize {
    let staging = reg.new_staging_dir().unwrap();
    let stream = futures::stream::iter(vec![Ok(Bytes::copy_from_slice(bytes))]);
    let un = unpack::unpack(stream, &staging, Some(SnapshotKind::Collection), None)
        .await
        .unwrap();
    let unpack::Contents::Ours(_, loaded) = un.contents else {
        panic!("our own archive read as Qdrant's");
    };
    let preloaded = loaded.into_iter().next().map(|(_, p)| p).unwrap();
    let points = preloaded.points();
    reg.install("c", &staging, Some(preloaded)).unwrap();
    points
}

/// Snapshot "one" downloads as `before`, whole and checked.
async fn assert_same(repo: &Repository, before: &[u8], when: &str) {
    assert!(assert_whole(repo, &key("one")).await == before, "{when}");
}

/// Creates collection `c` afresh, then recovers `snapshot` over it twice (the second time
/// over itself), each time with `points` points.
async fn recover_twice_over_a_new_collection(reg: &Registry, snapshot: &[u8], points: usize) {
    reg.create(
        "c",
        serde_json::from_value(serde_json::json!({"vectors": {"size": DIM, "distance": "Euclid"}}))
            .unwrap(),
    )
    .unwrap();
    assert_eq!(recover_over(reg, snapshot).await, points);
    assert_eq!(recover_over(reg, snapshot).await, points, "over itself");
}

/// Snapshot "one" of `reg` links every sealed segment (`sealed`), the very inodes, and
/// writes only the WAL's prefix as pieces.
async fn assert_links_segments(
    repo: &Repository,
    reg: &Registry,
    dir: &std::path::Path,
    sealed: &HashSet<u64>,
) {
    let snapshots = dir.join("snapshots");
    let wal_len = std::fs::metadata(wal_path(dir)).unwrap().len();
    let roots = create_linked(repo, reg, "one").await;
    let linked: HashSet<u64> = roots
        .iter()
        .map(|r| inode(&snapshots.join(".repository/linked").join(r)))
        .collect();
    assert_eq!(&linked, sealed, "the segments' inodes are linked");
    let (pieces, bytes) = stored_files(&snapshots, "pieces");
    assert!(
        pieces > 0 && bytes <= wal_len,
        "only the WAL prefix is written ({bytes} of {wal_len} bytes)"
    );
}

/// More writes past the linked WAL prefix, then a crash that leaves a torn record after
/// them: start-up cuts it off by writing a new WAL, never by changing the linked inode.
fn crash_with_a_torn_wal_tail(reg: Registry, dir: &std::path::Path, n: u64) -> Registry {
    let wal = wal_path(dir);
    change_one_percent(&reg, n, 2);
    let wal_inode = inode(&wal);
    drop(reg);
    let mut f = std::fs::OpenOptions::new().append(true).open(&wal).unwrap();
    std::io::Write::write_all(&mut f, &[7u8; 100]).unwrap();
    drop(f);
    let reg = Registry::open(&dir.join("storage")).unwrap();
    assert_ne!(
        inode(&wal),
        wal_inode,
        "the torn tail was cut into a new file"
    );
    reg
}

/// Overwrites every point, so that compaction rewrites or merges every segment of `sealed`;
/// waits until none of them is left in the collection.
async fn compact_every_segment(
    reg: &Registry,
    dir: &std::path::Path,
    n: u64,
    sealed: &HashSet<u64>,
) {
    let col = reg.get("c").unwrap();
    for start in (0..n).step_by(1000) {
        let batch = (start..start + 1000).map(|i| point(i, 9)).collect();
        col.write_blocking(Operation::Upsert(batch)).unwrap();
    }
    col.seal().unwrap();
    col.maybe_compact();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while !segment_inodes(dir).is_disjoint(sealed) {
        assert!(
            std::time::Instant::now() < deadline,
            "compaction replaced the old segments"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn linked_snapshots_survive_compaction_deletion_and_recovery_over_the_collection() {
    let tmp = tempfile::tempdir().unwrap();
    let n = 60_000;
    let reg = collection(tmp.path(), n);
    change_one_percent(&reg, n, 1);
    let snapshots = tmp.path().join("snapshots");
    let backend: DynBackend = Arc::new(LocalBackend::new(&snapshots).unwrap());
    let repo = Repository::new(Arc::clone(&backend), true).with_linked_files(true);
    let sealed = segment_inodes(tmp.path());
    assert_eq!(sealed.len(), 2, "two sealed segments and an active WAL");
    assert_links_segments(&repo, &reg, tmp.path(), &sealed).await;
    let before = assert_whole(&repo, &key("one")).await;
    let some = download(&repo, &key("one"), Some(1000..9_000_000)).await;
    assert!(
        some == before[1000..9_000_000],
        "a range reads from the linked files"
    );

    // Unchanged, a second snapshot links and stores nothing new.
    let pieces = stored_files(&snapshots, "pieces");
    repo.create_incremental(&key("two"), archive(&reg), None)
        .await
        .unwrap();
    assert_eq!(stored_files(&snapshots, "linked").0, 2);
    assert_eq!(stored_files(&snapshots, "pieces"), pieces);

    let reg = crash_with_a_torn_wal_tail(reg, tmp.path(), n);
    assert_same(&repo, &before, "after a torn tail was cut").await;

    compact_every_segment(&reg, tmp.path(), n, &sealed).await;
    assert_same(&repo, &before, "after compaction").await;

    // Deletion of the collection, then recoveries over it.
    assert!(reg.delete("c").unwrap());
    assert_same(&repo, &before, "after deletion").await;
    recover_twice_over_a_new_collection(&reg, &before, n as usize - 1).await;
    assert_same(&repo, &before, "after recoveries").await;

    // Deleted, the snapshots free what they alone held.
    repo.delete(&key("one")).await.unwrap();
    repo.delete(&key("two")).await.unwrap();
    assert!(repo.collect().await.unwrap().is_some());
    assert_eq!(stored_files(&snapshots, "linked"), (0, 0));
    assert_eq!(stored_files(&snapshots, "pieces"), (0, 0));
}

#[tokio::test]
async fn a_snapshots_directory_on_another_filesystem_copies_instead() {
    let tmp = tempfile::tempdir().unwrap();
    let other =
        tempfile::tempdir_in("/dev/shm").expect("/dev/shm, a tmpfs, for a second filesystem");
    let dev =
        |p: &std::path::Path| std::os::unix::fs::MetadataExt::dev(&std::fs::metadata(p).unwrap());
    assert_ne!(
        dev(tmp.path()),
        dev(other.path()),
        "the test needs two filesystems"
    );
    let n = 40_000;
    let reg = collection(tmp.path(), n);
    let backend: DynBackend = Arc::new(LocalBackend::new(other.path()).unwrap());
    let repo = Repository::new(Arc::clone(&backend), true).with_linked_files(true);
    let roots = create_linked(&repo, &reg, "one").await;
    assert!(roots.is_empty(), "nothing linked across filesystems");
    assert_eq!(stored_files(other.path(), "linked").0, 0);
    assert!(
        stored_files(other.path(), "pieces").1
            >= walk(&tmp.path().join("storage/collections/c/data")) - 4096
    );
    assert_whole(&repo, &key("one")).await;
}

/// Creates snapshot `name` of `reg` in `repo`; returns the roots of its linked files.
async fn create_linked(repo: &Repository, reg: &Registry, name: &str) -> Vec<String> {
    repo.create_incremental(&key(name), archive(reg), None)
        .await
        .unwrap();
    let Layout::Incremental(m) = repo.stat(&key(name)).await.unwrap().layout else {
        panic!("an incremental snapshot");
    };
    m.linked().filter_map(|e| e.linked.clone()).collect()
}

/// Bytes of the files in `dir`.
fn walk(dir: &std::path::Path) -> u64 {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().metadata().unwrap().len())
        .sum()
}

#[tokio::test]
async fn a_damaged_linked_file_is_caught_on_every_read_and_by_verification() {
    let tmp = tempfile::tempdir().unwrap();
    let reg = collection(tmp.path(), 40_000);
    let snapshots = tmp.path().join("snapshots");
    let backend: DynBackend = Arc::new(LocalBackend::new(&snapshots).unwrap());
    let repo = Repository::new(Arc::clone(&backend), true).with_linked_files(true);
    let roots = create_linked(&repo, &reg, "one").await;
    let root = roots[0].clone();
    // Bit rot in the shared inode (the collection's own segment is the same file).
    let path = snapshots.join(".repository/linked").join(&root);
    let mut bytes = std::fs::read(&path).unwrap();
    let at = bytes.len() / 2;
    bytes[at] ^= 0xFF;
    let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    std::os::unix::fs::FileExt::write_all_at(&f, &bytes[at..at + 1], at as u64).unwrap();

    let stored = repo.stat(&key("one")).await.unwrap();
    for range in [None, Some(at as u64..at as u64 + 1000)] {
        let read: Result<Vec<Bytes>, _> = repo
            .open(&stored, range.clone())
            .await
            .unwrap()
            .try_collect()
            .await;
        let err = read.expect_err("a damaged linked file is never served");
        assert!(
            err.to_string().contains(&root) || format!("{err:?}").contains(&root),
            "{range:?}: {err:?}"
        );
    }
    let report = repo.verify(1.0, 0).await.unwrap();
    assert_eq!(report.damaged.len(), 1, "{report:?}");
    assert_eq!(report.damaged[0].piece.as_deref(), Some(root.as_str()));
    assert_eq!(report.damaged[0].reason, "hash mismatch");
}

//! The conformance suite every [`Backend`] must pass, run against the local backend and a
//! real S3 server in `tests/backends.rs`.
//!
//! Each check panics with a message on failure. Keys live under a fresh random directory,
//! so runs can share a bucket.

use bytes::Bytes;
use futures::TryStreamExt;
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;

use snapstream::storage::{Backend, BackendError, BackendExt, CreateOptions, ObjectKey};

fn key(dir: &str, rest: &str) -> ObjectKey {
    ObjectKey::new(format!("{dir}/{rest}")).expect("valid test key")
}

/// Deterministic pseudo-random bytes.
pub(crate) fn test_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

async fn read_all(b: &dyn Backend, k: &ObjectKey, range: Option<std::ops::Range<u64>>) -> Vec<u8> {
    let chunks: Vec<Bytes> = b
        .open(k, range)
        .await
        .expect("open")
        .try_collect()
        .await
        .expect("read");
    chunks.concat()
}

/// Nothing is visible before commit; the committed bytes read back whole and by range.
pub(crate) async fn commit_makes_visible(b: &dyn Backend, dir: &str) {
    let k = key(dir, "c/one.snapshot");
    let data = test_bytes(300_000, 1);
    let mut sink = b
        .create(&k, CreateOptions::default())
        .await
        .expect("create");
    sink.write_all(&data[..1000]).await.expect("write");
    assert!(
        matches!(b.stat(&k).await, Err(BackendError::NotFound(_))),
        "{b}: visible before commit"
    );
    sink.write_all(&data[1000..]).await.expect("write");
    let meta = sink.commit().await.expect("commit");
    assert_eq!(meta.size, data.len() as u64, "{b}: committed size");
    assert_eq!(b.stat(&k).await.expect("stat").size, data.len() as u64);
    assert_eq!(read_all(b, &k, None).await, data, "{b}: bytes read back");
    assert_eq!(
        read_all(b, &k, Some(10..20)).await,
        &data[10..20],
        "{b}: range read"
    );
    assert_eq!(
        read_all(b, &k, Some(299_990..300_000)).await,
        &data[299_990..],
        "{b}: tail range"
    );
}

/// An aborted write leaves nothing visible.
pub(crate) async fn abort_leaves_nothing(b: &dyn Backend, dir: &str) {
    let k = key(dir, "c/aborted.snapshot");
    let mut sink = b
        .create(&k, CreateOptions::default())
        .await
        .expect("create");
    sink.write_all(&test_bytes(100_000, 2))
        .await
        .expect("write");
    sink.abort().await.expect("abort");
    assert!(
        matches!(b.stat(&k).await, Err(BackendError::NotFound(_))),
        "{b}: aborted object visible"
    );
    let listed = b.list(Some(&key(dir, "c"))).await.expect("list");
    assert!(
        listed.iter().all(|m| m.key != k),
        "{b}: aborted object listed"
    );
}

/// Listing is non-recursive.
pub(crate) async fn list_is_non_recursive(b: &dyn Backend, dir: &str) {
    b.put(&key(dir, "l/a.snapshot"), Bytes::from_static(b"a"))
        .await
        .expect("put");
    b.put(
        &key(dir, "l/a.snapshot.checksum"),
        Bytes::from_static(b"00"),
    )
    .await
    .expect("put");
    b.put(
        &key(dir, "l/shards/0/b.snapshot"),
        Bytes::from_static(b"bb"),
    )
    .await
    .expect("put");
    let mut names: Vec<String> = b
        .list(Some(&key(dir, "l")))
        .await
        .expect("list")
        .into_iter()
        .map(|m| m.key.to_string())
        .collect();
    names.sort();
    assert_eq!(
        names,
        vec![
            format!("{dir}/l/a.snapshot"),
            format!("{dir}/l/a.snapshot.checksum")
        ],
        "{b}"
    );
    let missing = b
        .list(Some(&key(dir, "nothing-here")))
        .await
        .expect("list of a missing dir");
    assert!(missing.is_empty(), "{b}: missing dir lists empty");
}

/// Delete removes; deleting or reading a missing key is `NotFound`.
pub(crate) async fn delete_and_not_found(b: &dyn Backend, dir: &str) {
    let k = key(dir, "d/x.snapshot");
    b.put(&k, Bytes::from_static(b"x")).await.expect("put");
    b.delete(&k).await.expect("delete");
    assert!(
        matches!(b.stat(&k).await, Err(BackendError::NotFound(_))),
        "{b}: deleted still there"
    );
    assert!(
        matches!(b.delete(&k).await, Err(BackendError::NotFound(_))),
        "{b}: delete of missing"
    );
    assert!(
        matches!(
            b.open(&k, None).await.map(|_| ()),
            Err(BackendError::NotFound(_))
        ),
        "{b}: open of missing"
    );
}

/// A write larger than several S3 parts round-trips byte for byte, and a commit replaces.
pub(crate) async fn large_write_round_trips(b: &dyn Backend, dir: &str) {
    let k = key(dir, "big/x.snapshot");
    let data = test_bytes(23 << 20, 3);
    let mut sink = b
        .create(
            &k,
            CreateOptions::default().with_size_hint(data.len() as u64),
        )
        .await
        .expect("create");
    for chunk in data.chunks(1 << 20) {
        sink.write_all(chunk).await.expect("write");
    }
    sink.commit().await.expect("commit");
    let back = read_all(b, &k, None).await;
    assert_eq!(back.len(), data.len(), "{b}: size");
    assert_eq!(Sha256::digest(&back), Sha256::digest(&data), "{b}: content");
    b.put(&k, Bytes::from_static(b"small"))
        .await
        .expect("replace");
    assert_eq!(
        b.get_bytes(&k).await.expect("get"),
        Bytes::from_static(b"small"),
        "{b}: replaced"
    );
}

/// `put_if_absent` creates once: a second write of the key gets `AlreadyExists` and the
/// first bytes stay. With `atomic_race`, of several racing writers exactly one wins: a
/// property of the storage itself (S3 servers that ignore `If-None-Match`, as Garage 2.x
/// does, cannot have it; nothing in this service relies on it for safety).
pub(crate) async fn put_if_absent_is_exclusive(b: &dyn Backend, dir: &str, atomic_race: bool) {
    let k = key(dir, "x/.pieces/ab/abcdef");
    let meta = b
        .put_if_absent(&k, Bytes::from_static(b"first"))
        .await
        .expect("first create");
    assert_eq!(meta.size, 5, "{b}: created size");
    assert!(
        matches!(
            b.put_if_absent(&k, Bytes::from_static(b"second")).await,
            Err(BackendError::AlreadyExists(_))
        ),
        "{b}: second create of one key must be AlreadyExists"
    );
    assert_eq!(
        b.get_bytes(&k).await.expect("get"),
        Bytes::from_static(b"first")
    );
    // A piece-sized object (the local backend writes these as it writes snapshots, paced
    // beside the WAL's flushes), of a length no block size divides.
    let big = key(dir, "x/.pieces/cd/cdef01");
    let bytes: Bytes = (0..(1usize << 20) + 3).map(|i| (i % 251) as u8).collect();
    let meta = b
        .put_if_absent(&big, bytes.clone())
        .await
        .expect("large create");
    assert_eq!(meta.size, bytes.len() as u64, "{b}: large created size");
    assert!(
        matches!(
            b.put_if_absent(&big, Bytes::from(vec![7u8; 1 << 20])).await,
            Err(BackendError::AlreadyExists(_))
        ),
        "{b}: a second large create of one key must be AlreadyExists"
    );
    assert_eq!(
        b.get_bytes(&big).await.expect("get"),
        bytes,
        "{b}: large bytes"
    );
    if !atomic_race {
        return;
    }
    let racy = key(dir, "x/race");
    let outcomes = futures::future::join_all(
        (0..8u8).map(|i| b.put_if_absent(&racy, Bytes::from(vec![i; 100]))),
    )
    .await;
    let won: Vec<usize> = outcomes
        .iter()
        .enumerate()
        .filter(|(_, o)| o.is_ok())
        .map(|(i, _)| i)
        .collect();
    assert_eq!(
        won.len(),
        1,
        "{b}: exactly one racing create wins: {outcomes:?}"
    );
    assert!(
        outcomes
            .iter()
            .all(|o| o.is_ok() || matches!(o, Err(BackendError::AlreadyExists(_)))),
        "{b}: losers get AlreadyExists"
    );
    assert_eq!(
        b.get_bytes(&racy).await.expect("get"),
        Bytes::from(vec![won[0] as u8; 100]),
        "{b}: the winner's bytes are stored"
    );
}

/// `list_recursive` streams every committed object under a prefix at any depth (hidden
/// directories included), with its size; uncommitted writes and other prefixes are absent.
pub(crate) async fn list_recursive_finds_everything(b: &dyn Backend, dir: &str) {
    let root = key(dir, "r");
    let mut expected = Vec::new();
    for (i, rest) in [
        "a.snapshot",
        "c/shards/0/b.snapshot",
        ".repo/pieces/0a/0a1",
        ".repo/m/x.manifest",
    ]
    .iter()
    .enumerate()
    {
        let k = key(dir, &format!("r/{rest}"));
        b.put(&k, Bytes::from(vec![7u8; i + 1])).await.expect("put");
        expected.push((k.to_string(), i as u64 + 1));
    }
    b.put(&key(dir, "rr/outside"), Bytes::from_static(b"o"))
        .await
        .expect("put");
    let mut pending = b
        .create(&key(dir, "r/c/pending.snapshot"), CreateOptions::default())
        .await
        .expect("create");
    pending.write_all(b"not yet").await.expect("write");
    let mut listed: Vec<(String, u64)> = b
        .list_recursive(Some(&root))
        .map_ok(|m| (m.key.to_string(), m.size))
        .try_collect()
        .await
        .expect("recursive list");
    listed.sort();
    expected.sort();
    assert_eq!(listed, expected, "{b}: recursive listing");
    pending.abort().await.expect("abort");
    let none: Vec<_> = b
        .list_recursive(Some(&key(dir, "absent")))
        .try_collect()
        .await
        .expect("list of a missing prefix");
    assert!(none.is_empty(), "{b}: missing prefix lists empty");
    let everything: Vec<_> = b
        .list_recursive(None)
        .try_collect()
        .await
        .expect("list of the whole store");
    assert!(
        everything
            .iter()
            .any(|m| m.key.to_string() == expected[0].0),
        "{b}: whole-store listing reaches nested keys"
    );
}

/// Runs every check under a fresh directory; `atomic_race` as in
/// [`put_if_absent_is_exclusive`].
pub(crate) async fn run_all(b: &dyn Backend, atomic_race: bool) {
    let dir = format!("conformance-{}", uuid::Uuid::new_v4().simple());
    commit_makes_visible(b, &dir).await;
    abort_leaves_nothing(b, &dir).await;
    list_is_non_recursive(b, &dir).await;
    delete_and_not_found(b, &dir).await;
    large_write_round_trips(b, &dir).await;
    put_if_absent_is_exclusive(b, &dir, atomic_race).await;
    list_recursive_finds_everything(b, &dir).await;
}

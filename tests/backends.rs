//! The storage backends against the conformance suite: the local one on a temporary
//! directory, the S3 one against a real S3-compatible server (MinIO or Garage from
//! `minio/`).

mod common;
mod conformance;

use snapstream::storage::S3Backend;
use snapstream::storage::{Backend, CreateOptions, LocalBackend, ObjectKey};
use tokio::io::AsyncWriteExt;

#[tokio::test]
async fn local_backend_passes_the_conformance_suite() {
    let tmp = tempfile::tempdir().unwrap();
    let backend = LocalBackend::new(tmp.path()).unwrap();
    conformance::run_all(&backend, true).await;
    // Nothing hidden is left behind by the suite's aborted writes.
    assert_eq!(backend.cleanup().await.unwrap(), 0);
}

#[tokio::test]
async fn s3_backend_passes_the_conformance_suite() {
    let prefix = common::unique_prefix("conformance");
    let backend = S3Backend::new(&common::s3_config(&prefix)).unwrap();
    // Garage 2.x ignores If-None-Match on PUT, so only MinIO is asked to decide races.
    let atomic_race = std::env::var("S3_TEST_SERVER").as_deref() == Ok("minio");
    conformance::run_all(&backend, atomic_race).await;
    let client = common::aws_client().await;
    let bucket = std::env::var("S3_TEST_BUCKET").unwrap();
    assert!(
        common::multipart_uploads(&client, &bucket, &prefix)
            .await
            .is_empty(),
        "the suite's aborted writes left multipart uploads behind"
    );
}

#[tokio::test]
async fn start_up_cleanup_aborts_orphaned_multipart_uploads() {
    let prefix = common::unique_prefix("orphans");
    let backend = S3Backend::new(&common::s3_config(&prefix)).unwrap();
    let client = common::aws_client().await;
    let bucket = std::env::var("S3_TEST_BUCKET").unwrap();
    // A multipart upload whose writer died without abort, as after kill -9.
    let key = ObjectKey::new("c/orphan.snapshot").unwrap();
    let mut sink = backend
        .create(&key, CreateOptions::default())
        .await
        .unwrap();
    sink.write_all(&conformance::test_bytes(6 << 20, 9))
        .await
        .unwrap();
    sink.flush().await.unwrap();
    std::mem::forget(sink);
    let listed = common::multipart_uploads(&client, &bucket, &prefix).await;
    assert_eq!(listed, vec![format!("{prefix}/c/orphan.snapshot")]);
    // The backend's own signed listing finds what the SDK finds.
    let own: Vec<String> = backend
        .unfinished_uploads()
        .await
        .unwrap()
        .into_iter()
        .map(|u| u.key)
        .collect();
    assert_eq!(own, listed);
    assert_eq!(backend.cleanup().await.unwrap(), 1);
    assert!(common::multipart_uploads(&client, &bucket, &prefix)
        .await
        .is_empty());
    assert!(
        backend.stat(&key).await.is_err(),
        "an orphaned upload must never become visible"
    );
}

#[tokio::test]
async fn part_size_grows_so_ten_thousand_parts_are_never_exceeded() {
    let backend = S3Backend::new(&common::s3_config("x")).unwrap();
    assert_eq!(backend.part_size(None), 5 << 20);
    let huge: u64 = 5 << 40; // 5 TiB
    let part = backend.part_size(Some(huge)) as u64;
    assert!(
        huge.div_ceil(part) <= 10_000,
        "part size {part} needs too many parts"
    );
}

//! `make bench`: measures snapstream against baselines taken in the same run.
//!
//! 1. Upsert throughput (100,000 x 768 in batches of 1,000) and query latency.
//! 2. Local snapshots of a 0.5 GiB and a 2 GiB collection: create vs `tar cf - DIR |
//!    openssl dgst -sha256`, the same while one client upserts back to back, recover vs
//!    `tar xf` + sync, upsert p99 during a snapshot vs without, RSS; then the same creates
//!    on incremental local storage, where sealed segments are linked, with the bytes a
//!    snapshot adds to the disk.
//! 3. S3 snapshots of the same collections: create vs a plain aws-sdk-s3 multipart upload
//!    of the same bytes, recover (by `s3://` URL and by name) vs a plain download of the
//!    same object + fsync, RSS, local bytes written; then the same in Azure Blob Storage
//!    (Azurite) against a plain block upload/download with `object_store`'s Azure client.
//! 4. Incremental S3 snapshots of the same collection: the first and the second snapshot
//!    (after 1% of the points changed), time and bytes added to the bucket, and recovery of
//!    the second vs a plain download of the same bytes.
//! 5. Backups of a live three-node Qdrant cluster (100,000 x 768, 3 shards): the first vs
//!    the shard streams uploaded by a plain multipart client, after 1% changed and after
//!    the optimizer rebuilt segments vs the first, restore into a fresh cluster vs
//!    recovering each shard by URL from a file server, memory. Needs the Qdrant binary
//!    (`make qdrant` or QDRANT_BIN); says so and skips without it.
//! 6. What encryption and piece compression cost: incremental S3 snapshots of the big
//!    collection into a fresh prefix and recovery, encryption off/on, zstd off/on.
//!
//! Environment: SNAPSTREAM_BIN (the release binary), S3_TEST_* (from minio/start.sh),
//! BENCH_POINTS (sizes of the big collection, comma-separated; sections 2 and 3 run on
//! each: default `150000,700000` = 0.44 and 2.0 GiB of vectors),
//! BENCH_REPEAT (runs per timed step, default 3), BENCH_DIR (work directory, removed at
//! the end), BENCH_SERVICE_LOG (the service's log filter, default `warn`), BENCH_LOG_DIR
//! (where the service logs go, default the work directory), BENCH_ONLY
//! (`grpc`, `migrate`: section 1 and that comparison only; `local`: section 1, then the
//! local snapshots of section 2 only; `snapshots`: sections 1 to 3; `incremental`: load the
//! big collection, then section 4 only; `backup`: section 5 only; `variants`: load the big collection, then section 6 only; `linked`: section 1, then
//! the linked local snapshots of section 2 only), BENCH_BACKUP_POINTS
//! (section 5's collection, default 100000).
#![allow(missing_docs, clippy::print_stdout)]

mod azure;
mod backup;
mod cluster;
mod collections;
mod grpc;
mod harness;
mod incremental;
mod migrate;
mod qdrant;
mod s3;
mod snapshots;
mod variants;

use std::path::PathBuf;

use harness::{drop_caches_hint, env_or, http, write_results, Service};

fn main() {
    let repeat: usize = env_or("BENCH_REPEAT", "3").parse().unwrap();
    let root = PathBuf::from(env_or("BENCH_DIR", "bench/out/work"));
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir_all(&root).unwrap();
    let root = root.canonicalize().unwrap();
    let mut results = serde_json::Map::new();
    let c = http();
    drop_caches_hint();

    let only = env_or("BENCH_ONLY", "");
    if only == "backup" {
        backup::backup_figures(&c, &root, &s3_server(), repeat, &mut results);
        write_results(&results);
        let _ = std::fs::remove_dir_all(&root);
        return;
    }

    // ---- 1. Upsert throughput and query latency --------------------------------------
    let svc = Service::start(&root, &[]);
    let bodies = collections::upsert_and_query(&c, &svc, &mut results);
    if only.is_empty() || only == "grpc" {
        grpc::grpc_vs_rest(&c, &svc, repeat, &mut results);
    }
    if only.is_empty() || only == "migrate" {
        migrate::migrate_vs_upsert(&c, &svc, &bodies, &root, repeat, &mut results);
        qdrant::qdrant_fixture_recovery(&c, &svc, &root, repeat, &mut results);
    }
    if !only.is_empty()
        && !["incremental", "local", "snapshots", "variants", "linked"].contains(&only.as_str())
    {
        write_results(&results);
        let _ = std::fs::remove_dir_all(&root);
        return;
    }
    let _ = c
        .delete(format!("{}/collections/bench100k", svc.url))
        .send();
    drop(bodies);
    drop(svc);

    let s3 = s3_server();
    let sizes = bench_points();
    for (i, &points) in sizes.iter().enumerate() {
        let build_only = (only == "incremental" || only == "variants") && i + 1 < sizes.len();
        if build_only {
            continue;
        }
        snapshots::snapshot_figures(&c, &root, &s3, points, repeat, &only, &mut results);
    }
    if only.is_empty() || only == "incremental" {
        let big_points = sizes.last().copied().unwrap_or(0);
        incremental::incremental_s3(&c, &root, &s3, big_points, repeat, &mut results);
    }
    if only.is_empty() || only == "variants" {
        let big_points = sizes.last().copied().unwrap_or(0);
        variants::encryption_and_compression(&c, &root, &s3, big_points, repeat, &mut results);
    }
    if only.is_empty() {
        backup::backup_figures(&c, &root, &s3, repeat, &mut results);
    }
    write_results(&results);
    let _ = std::fs::remove_dir_all(&root);
}

/// The S3 server `make bench` started, with a plain client for the baselines.
fn s3_server() -> s3::S3 {
    let Ok(endpoint) = std::env::var("S3_TEST_ENDPOINT") else {
        panic!("S3_TEST_ENDPOINT is not set: run `make bench` (it starts the S3 server)");
    };
    let rt = tokio::runtime::Runtime::new().unwrap();
    let client = rt.block_on(s3::sdk_client(&endpoint));
    s3::S3 {
        rt,
        client,
        bucket: env_or("S3_TEST_BUCKET", "snapshots"),
        endpoint,
    }
}

/// BENCH_POINTS, smallest first: the last one stays in storage for the incremental section.
fn bench_points() -> Vec<u64> {
    let mut sizes: Vec<u64> = env_or("BENCH_POINTS", "150000,700000")
        .split(',')
        .map(|p| {
            p.trim()
                .parse()
                .expect("BENCH_POINTS: point counts, comma-separated")
        })
        .collect();
    sizes.sort_unstable();
    sizes
}

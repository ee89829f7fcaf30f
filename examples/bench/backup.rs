//! Section 5: backups of a live three-node Qdrant cluster (issue 22), each against the
//! plain way of doing the same in the same run: the first backup against every shard's
//! stream uploaded by a plain client, the second (after 1% of the points changed) and one
//! after Qdrant's optimizer rewrote segments against the first, and a restore into a fresh
//! cluster against the tutorial's way (each shard recovered by URL from a file server).

use std::path::Path;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::cluster::{qdrant_bin, spawn_quiet, Cluster};
use crate::harness::{
    batch_body, call, cpu_seconds_of as cpu, env_or, median, mib, rss_bytes, s3_server_pid,
    RssSampler, Service, DIM,
};
use crate::incremental::overwrite_body;
use crate::s3::{plain_read, plain_stream_upload, plain_upload, S3};

const COLLECTION: &str = "bench";
const SOURCE: &str = "q";

/// One backup as snapstream recorded it, with its time and the service's added memory.
struct Run {
    secs: f64,
    record: Value,
    rss_added: u64,
}

impl Run {
    fn sum(&self, field: &str) -> u64 {
        self.record["collections"][COLLECTION]["shards"]
            .as_array()
            .map_or(0, |s| s.iter().filter_map(|s| s[field].as_u64()).sum())
    }
}

/// Section 5 (skipped, saying so, without a Qdrant binary).
pub(crate) fn backup_figures(
    c: &reqwest::blocking::Client,
    root: &Path,
    s3: &S3,
    repeat: usize,
    results: &mut serde_json::Map<String, Value>,
) {
    let Some(bin) = qdrant_bin() else {
        println!("backups of Qdrant skipped: no Qdrant binary (`make qdrant`, or QDRANT_BIN)");
        return;
    };
    let points: u64 = env_or("BENCH_BACKUP_POINTS", "100000").parse().unwrap();
    let source = Cluster::start(&bin, &root.join("qdrant-source"));
    load(c, &source, points);
    let shards = source.shard_peers(COLLECTION);
    println!("backups: {points} x {DIM} in 3 shards on a three-node Qdrant 1.19 cluster");

    let (svc, first) = first_backups(c, root, s3, &source, &shards, repeat, results);
    second_backups(c, &svc, &source, points, repeat, first, results);
    after_optimizer(c, &svc, &source, points, results);
    let target = Cluster::start(&bin, &root.join("qdrant-target"));
    restores(c, root, s3, &svc, &target, repeat, results);
}

/// The collection: 3 shards, `points` points, indexed (green).
fn load(c: &reqwest::blocking::Client, q: &Cluster, points: u64) {
    let url = format!("{}/collections/{COLLECTION}", q.url());
    let body = json!({"vectors": {"size": DIM, "distance": "Cosine"}, "shard_number": 3});
    call(c, reqwest::Method::PUT, &url, Some(body.to_string()));
    for start in (0..points).step_by(1000) {
        let body = batch_body(start, 1000.min(points - start));
        call(
            c,
            reqwest::Method::PUT,
            &format!("{url}/points?wait=true"),
            Some(body),
        );
    }
    std::thread::sleep(Duration::from_secs(2));
    q.wait_green(COLLECTION);
}

/// The service backing up `q` into S3 under `prefix`.
fn service(root: &Path, s3: &S3, prefix: &str, q: &Cluster) -> Service {
    let mut env = s3.env(prefix);
    env.push((
        format!("QDRANT__BACKUP__SOURCES__{}__URL", SOURCE.to_uppercase()),
        q.url().to_string(),
    ));
    Service::start(root, &env)
}

/// A backup now, timed, with the memory it added.
fn run_backup(c: &reqwest::blocking::Client, svc: &Service) -> Run {
    let idle = rss_bytes(svc.pid());
    let sampler = RssSampler::start(svc.pid());
    let t = Instant::now();
    let v = call(
        c,
        reqwest::Method::POST,
        &format!("{}/backup/sources/{SOURCE}/backups?wait=true", svc.url),
        None,
    );
    let secs = t.elapsed().as_secs_f64();
    let peak = sampler.finish();
    Run {
        secs,
        record: v["result"].clone(),
        rss_added: peak.saturating_sub(idle),
    }
}

/// The floor: each shard's stream (`GET .../shards/{s}/snapshot`) uploaded by a plain
/// client with a multipart upload, shards in parallel. Returns seconds and bytes.
fn floor(s3: &S3, shards: &[(u32, String)]) -> (f64, u64) {
    s3.rt.block_on(async {
        let http = reqwest::Client::new();
        let t = Instant::now();
        let mut set = tokio::task::JoinSet::new();
        for (s, url) in shards {
            let resp = http
                .get(format!(
                    "{url}/collections/{COLLECTION}/shards/{s}/snapshot"
                ))
                .header("accept-encoding", "identity")
                .send()
                .await
                .unwrap();
            let (client, bucket) = (s3.client.clone(), s3.bucket.clone());
            let key = format!(
                "bench-backup-floor-{}/{s}.tar",
                uuid::Uuid::new_v4().simple()
            );
            set.spawn(async move {
                plain_stream_upload(&client, &bucket, &key, resp, 8 << 20, 4).await
            });
        }
        let mut total = 0;
        while let Some(n) = set.join_next().await {
            total += n.unwrap();
        }
        (t.elapsed().as_secs_f64(), total)
    })
}

/// First backups, each into an empty prefix, alternating with the floor (which goes first
/// every other round, so neither profits from the other's warm caches). Returns the last
/// round's service (its backups are the base of the next steps) and the median time.
fn first_backups(
    c: &reqwest::blocking::Client,
    root: &Path,
    s3: &S3,
    q: &Cluster,
    shards: &[(u32, String)],
    repeat: usize,
    results: &mut serde_json::Map<String, Value>,
) -> (Service, f64) {
    let (mut floors, mut ours, mut rss) = (Vec::new(), Vec::new(), 0u64);
    let mut last: Option<Service> = None;
    let mut size = 0;
    let (peers, s3_server) = (q.pids(), s3_server_pid());
    for round in 0..repeat.max(1) {
        let floor_round = || {
            let before = (cpu(&peers), cpu(&[s3_server]));
            let (secs, bytes) = floor(s3, shards);
            let spent = (cpu(&peers) - before.0, cpu(&[s3_server]) - before.1);
            println!(
                "  floor {secs:.2} s ({:.0} MiB of shard streams); CPU s: peers {:.2}, S3 server {:.2}",
                mib(bytes),
                spent.0,
                spent.1
            );
            secs
        };
        if round % 2 == 0 {
            floors.push(floor_round());
        }
        drop(last.take());
        let prefix = format!("bench-backup-{}", uuid::Uuid::new_v4().simple());
        let svc = service(root, s3, &prefix, q);
        let before = (cpu(&peers), cpu(&[svc.pid()]), cpu(&[s3_server]));
        let run = run_backup(c, &svc);
        ours.push(run.secs);
        rss = rss.max(run.rss_added);
        size = run.record["size"].as_u64().unwrap_or(0);
        println!(
            "  first backup {:.2} s ({:.0} MiB); CPU s: peers {:.2}, snapstream {:.2}, S3 server {:.2}",
            run.secs,
            mib(size),
            cpu(&peers) - before.0,
            cpu(&[svc.pid()]) - before.1,
            cpu(&[s3_server]) - before.2
        );
        if round % 2 == 1 {
            floors.push(floor_round());
        }
        last = Some(svc);
    }
    let ratios: Vec<f64> = ours.iter().zip(&floors).map(|(o, f)| o / f).collect();
    let (f, o, r) = (median(floors), median(ours), median(ratios));
    println!(
        "backup first: {o:.2} s vs plain multipart upload of the shard streams {f:.2} s = {:.2}x (median of the rounds' own ratios {r:.2}x); memory added {:.0} MiB",
        o / f,
        mib(rss)
    );
    results.insert("backup_first_s".into(), json!(o));
    results.insert("backup_first_floor_s".into(), json!(f));
    results.insert("backup_first_vs_floor".into(), json!(o / f));
    results.insert("backup_first_round_ratio_median".into(), json!(r));
    results.insert("backup_size_bytes".into(), json!(size));
    results.insert("backup_rss_added_bytes".into(), json!(rss));
    (last.expect("at least one round"), o)
}

/// Overwrites `n` points spread over the collection (round `salt`) and deletes `deleted`.
fn change(
    c: &reqwest::blocking::Client,
    q: &Cluster,
    points: u64,
    n: u64,
    deleted: u64,
    salt: u64,
) {
    let url = format!("{}/collections/{COLLECTION}/points", q.url());
    let ids: Vec<u64> = (0..n)
        .map(|k| (k * (points / n) + salt * 7) % points)
        .collect();
    for chunk in ids.chunks(1000) {
        let body = overwrite_body(chunk, salt + 1);
        call(
            c,
            reqwest::Method::PUT,
            &format!("{url}?wait=true"),
            Some(body),
        );
    }
    if deleted > 0 {
        let gone: Vec<u64> = ids.iter().take(deleted as usize).map(|i| i + 1).collect();
        let body = json!({"points": gone}).to_string();
        call(
            c,
            reqwest::Method::POST,
            &format!("{url}/delete?wait=true"),
            Some(body),
        );
    }
}

/// Backups after 1% of the points were overwritten and a few deleted, each round on top
/// of the last; against the first backup's time.
fn second_backups(
    c: &reqwest::blocking::Client,
    svc: &Service,
    q: &Cluster,
    points: u64,
    repeat: usize,
    first: f64,
    results: &mut serde_json::Map<String, Value>,
) {
    let (mut times, mut rows) = (Vec::new(), Vec::new());
    for round in 0..repeat.max(1) {
        change(c, q, points, points / 100, 10, round as u64);
        let run = run_backup(c, svc);
        let size = run.record["size"].as_u64().unwrap_or(1).max(1);
        let (pulled, stored) = (
            run.sum("pulled_bytes"),
            run.record["stored_bytes"].as_u64().unwrap_or(0),
        );
        println!(
            "  after 1% changed: {:.2} s = {:.2}x the first; pulled {:.1}% and stored {:.1}% of {:.0} MiB; memory added {:.0} MiB",
            run.secs,
            run.secs / first,
            pulled as f64 * 100.0 / size as f64,
            stored as f64 * 100.0 / size as f64,
            mib(size),
            mib(run.rss_added)
        );
        times.push(run.secs);
        rows.push(
            json!({"secs": run.secs, "size": size, "pulled_bytes": pulled, "stored_bytes": stored}),
        );
    }
    let m = median(times);
    println!(
        "backup after 1% changed: median {m:.2} s = {:.2}x the first backup",
        m / first
    );
    results.insert("backup_second_s".into(), json!(m));
    results.insert("backup_second_vs_first".into(), json!(m / first));
    results.insert("backup_second_rounds".into(), Value::Array(rows));
}

/// A backup after Qdrant's optimizer rewrote segments: 4% of the points overwritten and
/// the indexing threshold lowered so that the segments holding them are rebuilt.
fn after_optimizer(
    c: &reqwest::blocking::Client,
    svc: &Service,
    q: &Cluster,
    points: u64,
    results: &mut serde_json::Map<String, Value>,
) {
    let url = format!("{}/collections/{COLLECTION}", q.url());
    let segments = |c: &reqwest::blocking::Client| {
        call(c, reqwest::Method::GET, &url, None)["result"]["segments_count"].as_u64()
    };
    let before = segments(c);
    change(c, q, points, points / 25, 0, 100);
    let body = json!({"optimizers_config": {"indexing_threshold": 1000}}).to_string();
    call(c, reqwest::Method::PATCH, &url, Some(body));
    std::thread::sleep(Duration::from_secs(2));
    q.wait_green(COLLECTION);
    let run = run_backup(c, svc);
    let size = run.record["size"].as_u64().unwrap_or(1).max(1);
    let stored = run.record["stored_bytes"].as_u64().unwrap_or(0);
    let pct = stored as f64 * 100.0 / size as f64;
    println!(
        "backup after the optimizer rebuilt segments (4% changed, segments {before:?} -> {:?}): {:.2} s, stored {pct:.1}% of {:.0} MiB, pulled {:.1}%",
        segments(c),
        run.secs,
        mib(size),
        run.sum("pulled_bytes") as f64 * 100.0 / size as f64
    );
    results.insert("backup_after_optimizer_stored_pct".into(), json!(pct));
    results.insert("backup_after_optimizer_s".into(), json!(run.secs));
}

/// The exact number of points in the target's collection.
fn count(c: &reqwest::blocking::Client, target: &Cluster) -> Option<u64> {
    let url = format!("{}/collections/{COLLECTION}/points/count", target.url());
    let body = json!({"exact": true}).to_string();
    call(c, reqwest::Method::POST, &url, Some(body))["result"]["count"].as_u64()
}

fn drop_collection(c: &reqwest::blocking::Client, target: &Cluster) {
    let url = format!("{}/collections/{COLLECTION}", target.url());
    call(c, reqwest::Method::DELETE, &url, None);
}

/// Our restore of backup `id` into `target`, verified; its seconds and added memory.
fn our_restore(
    c: &reqwest::blocking::Client,
    svc: &Service,
    target: &Cluster,
    id: &str,
) -> (f64, u64) {
    let idle = rss_bytes(svc.pid());
    let sampler = RssSampler::start(svc.pid());
    let t = Instant::now();
    let url = format!(
        "{}/backup/sources/{SOURCE}/backups/{id}/restore?wait=true",
        svc.url
    );
    let body = json!({"to": target.url()}).to_string();
    let v = call(c, reqwest::Method::POST, &url, Some(body));
    let secs = t.elapsed().as_secs_f64();
    let added = sampler.finish().saturating_sub(idle);
    assert_eq!(v["result"]["verified"], true, "our restore verified: {v}");
    (secs, added)
}

/// Bytes snapstream has read from its storage so far (`/metrics`).
fn storage_read_bytes(c: &reqwest::blocking::Client, svc: &Service) -> u64 {
    let text = c
        .get(format!("{}/metrics", svc.url))
        .send()
        .and_then(|r| r.text())
        .unwrap_or_default();
    text.lines()
        .filter(|l| l.starts_with("snapstream_storage_read_bytes_total"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

/// A plain HTTP file server for `dir` on loopback; returns it and its base URL.
fn file_server(dir: &Path) -> (Child, String) {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut cmd = Command::new("python3");
    cmd.args([
        "-m",
        "http.server",
        &port.to_string(),
        "--bind",
        "127.0.0.1",
    ]);
    let child = spawn_quiet(&mut cmd, dir);
    let base = format!("http://127.0.0.1:{port}");
    let probe = reqwest::blocking::Client::new();
    for _ in 0..100 {
        if probe.get(&base).send().is_ok() {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    (child, base)
}

/// The newest backup's shard archives, downloaded from snapstream into `dir`.
fn download_shards(c: &reqwest::blocking::Client, svc: &Service, dir: &Path) -> (String, u64) {
    let list = format!("{}/backup/sources/{SOURCE}/backups", svc.url);
    let newest = call(c, reqwest::Method::GET, &list, None)["result"][0].clone();
    let id = newest["id"].as_str().unwrap().to_string();
    std::fs::create_dir_all(dir).unwrap();
    for s in newest["collections"][COLLECTION]["shards"]
        .as_array()
        .unwrap()
    {
        let shard = s["shard_id"].as_u64().unwrap();
        let url = format!("{list}/{id}/collections/{COLLECTION}/shards/{shard}/snapshot");
        let mut resp = c.get(url).send().unwrap();
        let mut f = std::fs::File::create(dir.join(format!("{shard}.snapshot"))).unwrap();
        std::io::copy(&mut resp, &mut f).unwrap();
    }
    let points = newest["collections"][COLLECTION]["points_count"]
        .as_u64()
        .unwrap_or(0);
    (id, points)
}

/// The tutorial's restore: create the collection, then every shard recovered by URL on the
/// peer that holds it, in parallel.
fn tutorial_restore(c: &reqwest::blocking::Client, target: &Cluster, files: &str) -> f64 {
    let t = Instant::now();
    let url = format!("{}/collections/{COLLECTION}", target.url());
    let body = json!({"vectors": {"size": DIM, "distance": "Cosine"}, "shard_number": 3});
    call(c, reqwest::Method::PUT, &url, Some(body.to_string()));
    std::thread::scope(|scope| {
        for (s, peer) in target.shard_peers(COLLECTION) {
            scope.spawn(move || {
                let body = json!({"location": format!("{files}/{s}.snapshot")}).to_string();
                let u = format!(
                    "{peer}/collections/{COLLECTION}/shards/{s}/snapshots/recover?wait=true"
                );
                call(
                    &reqwest::blocking::Client::new(),
                    reqwest::Method::PUT,
                    &u,
                    Some(body),
                );
            });
        }
    });
    t.elapsed().as_secs_f64()
}

/// The bucket's floor for a restore: the shard archives in `dir` stored as plain objects,
/// then read back by a plain client, all in parallel. Returns the seconds of the reading.
fn bucket_floor(s3: &S3, dir: &Path) -> f64 {
    let prefix = format!("bench-backup-plain-{}", uuid::Uuid::new_v4().simple());
    let files: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    s3.rt.block_on(async {
        let mut keys = Vec::new();
        for f in &files {
            let key = format!("{prefix}/{}", f.file_name().unwrap().to_string_lossy());
            plain_upload(&s3.client, &s3.bucket, &key, f, 8 << 20, 4, true).await;
            keys.push(key);
        }
        let t = Instant::now();
        let mut set = tokio::task::JoinSet::new();
        for key in keys.clone() {
            let (client, bucket) = (s3.client.clone(), s3.bucket.clone());
            set.spawn(async move { plain_read(&client, &bucket, &key).await });
        }
        while let Some(n) = set.join_next().await {
            n.unwrap();
        }
        let secs = t.elapsed().as_secs_f64();
        for key in keys {
            let _ = s3
                .client
                .delete_object()
                .bucket(&s3.bucket)
                .key(key)
                .send()
                .await;
        }
        secs
    })
}

/// Restores of the newest backup into a fresh cluster: ours against the tutorial's way,
/// alternating; the collection is dropped between rounds and counted after each.
fn restores(
    c: &reqwest::blocking::Client,
    root: &Path,
    s3: &S3,
    svc: &Service,
    target: &Cluster,
    repeat: usize,
    results: &mut serde_json::Map<String, Value>,
) {
    let serve = root.join("serve");
    let (id, points) = download_shards(c, svc, &serve);
    let archives: u64 = std::fs::read_dir(&serve)
        .unwrap()
        .map(|e| e.unwrap().metadata().unwrap().len())
        .sum();
    let (mut server, files) = file_server(&serve);
    let (mut theirs, mut ours, mut rss) = (Vec::new(), Vec::new(), 0u64);
    let mut floors = Vec::new();
    // CPU seconds of each side's processes: where a restore's time goes on two cores.
    let s3_server = s3_server_pid();
    let peers = target.pids();
    for _ in 0..repeat.max(1) {
        floors.push(bucket_floor(s3, &serve));
        let before = (cpu(&peers), cpu(&[server.id()]));
        theirs.push(tutorial_restore(c, target, &files));
        println!(
            "  tutorial restore {:.2} s; CPU s: peers {:.2}, file server {:.2}",
            theirs.last().unwrap(),
            cpu(&peers) - before.0,
            cpu(&[server.id()]) - before.1
        );
        assert_eq!(
            count(c, target),
            Some(points),
            "the tutorial's restore holds every point"
        );
        drop_collection(c, target);
        let before = (cpu(&peers), cpu(&[svc.pid()]), cpu(&[s3_server]));
        let read_before = storage_read_bytes(c, svc);
        let (secs, added) = our_restore(c, svc, target, &id);
        let read = storage_read_bytes(c, svc).saturating_sub(read_before);
        println!(
            "  our restore {secs:.2} s; CPU s: peers {:.2}, snapstream {:.2}, S3 server {:.2}; read from the bucket {:.0} MiB for {:.0} MiB of archives",
            cpu(&peers) - before.0,
            cpu(&[svc.pid()]) - before.1,
            cpu(&[s3_server]) - before.2,
            mib(read),
            mib(archives)
        );
        ours.push(secs);
        rss = rss.max(added);
        assert_eq!(
            count(c, target),
            Some(points),
            "our restore holds every point"
        );
        drop_collection(c, target);
    }
    let _ = server.kill();
    let _ = server.wait();
    let (t, o, f) = (median(theirs), median(ours), median(floors));
    println!(
        "restore into a fresh three-node cluster: {o:.2} s (verified) vs the tutorial's recover-by-URL {t:.2} s = {:.2}x; memory added {:.0} MiB",
        o / t,
        mib(rss)
    );
    println!(
        "  reading the same archives from the bucket with a plain client alone: {f:.2} s; restore vs that plus the tutorial's: {:.2}x",
        o / (f + t)
    );
    results.insert("restore_bucket_read_floor_s".into(), json!(f));
    results.insert("restore_s".into(), json!(o));
    results.insert("restore_tutorial_s".into(), json!(t));
    results.insert("restore_vs_tutorial".into(), json!(o / t));
    results.insert("restore_rss_added_bytes".into(), json!(rss));
}

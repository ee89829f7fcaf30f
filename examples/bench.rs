//! `make bench`: measures snapstream against baselines taken in the same run.
//!
//! 1. Upsert throughput (100,000 x 768 in batches of 1,000) and query latency.
//! 2. Local snapshots of a 0.5 GiB and a 2 GiB collection: create vs `tar cf - DIR |
//!    openssl dgst -sha256`, the same while one client upserts back to back, recover vs
//!    `tar xf` + sync, upsert p99 during a snapshot vs without, RSS.
//! 3. S3 snapshots of the same collections: create vs a plain aws-sdk-s3 multipart upload
//!    of the same bytes, recover (by `s3://` URL and by name) vs a plain download of the
//!    same object + fsync, RSS, local bytes written.
//! 4. Incremental S3 snapshots of the same collection: the first and the second snapshot
//!    (after 1% of the points changed), time and bytes added to the bucket, and recovery of
//!    the second vs a plain download of the same bytes.
//!
//! Environment: SNAPSTREAM_BIN (the release binary), S3_TEST_* (from minio/start.sh),
//! BENCH_POINTS (sizes of the big collection, comma-separated; sections 2 and 3 run on
//! each: default `150000,700000` = 0.44 and 2.0 GiB of vectors),
//! BENCH_REPEAT (runs per timed step, default 3), BENCH_DIR (work directory), BENCH_ONLY
//! (`grpc`, `migrate`: section 1 and that comparison only; `local`: section 1, then the
//! local snapshots of section 2 only; `snapshots`: sections 1 to 3; `incremental`: load the
//! big collection, then section 4 only).
#![allow(missing_docs, clippy::print_stdout)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

const DIM: usize = 768;

fn env_or(k: &str, d: &str) -> String {
    std::env::var(k).unwrap_or_else(|_| d.to_string())
}

struct Service {
    child: Child,
    url: String,
    grpc_url: String,
}

impl Service {
    fn start(root: &Path, extra: &[(String, String)]) -> Service {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let grpc_port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let log = std::fs::File::create(root.join(format!("service-{port}.log"))).unwrap();
        let bin = PathBuf::from(env_or("SNAPSTREAM_BIN", "target/release/snapstream"));
        let bin = bin.canonicalize().unwrap_or(bin);
        let mut child = Command::new(bin)
            .current_dir(root)
            .env("QDRANT__SERVICE__HTTP_PORT", port.to_string())
            .env("QDRANT__SERVICE__GRPC_PORT", grpc_port.to_string())
            .env("QDRANT__STORAGE__STORAGE_PATH", root.join("storage"))
            .env("QDRANT__STORAGE__SNAPSHOTS_PATH", root.join("snapshots"))
            .env("RUST_LOG", "warn")
            .envs(extra.iter().cloned())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start snapstream (build it with `cargo build --release`)");
        let url = format!("http://127.0.0.1:{port}");
        let client = reqwest::blocking::Client::new();
        for _ in 0..600 {
            if client
                .get(format!("{url}/readyz"))
                .send()
                .is_ok_and(|r| r.status().is_success())
            {
                let grpc_url = format!("http://127.0.0.1:{grpc_port}");
                return Service {
                    child,
                    url,
                    grpc_url,
                };
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = child.kill();
        let _ = child.wait();
        panic!("service did not start");
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn http() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(3600))
        .build()
        .unwrap()
}

fn call(
    c: &reqwest::blocking::Client,
    method: reqwest::Method,
    url: &str,
    body: Option<String>,
) -> Value {
    let mut req = c.request(method, url);
    if let Some(b) = body {
        req = req.header("content-type", "application/json").body(b);
    }
    let resp = req.send().expect("request");
    let status = resp.status();
    let text = resp.text().unwrap_or_default();
    assert!(status.is_success(), "{url}: {status} {text}");
    serde_json::from_str(&text).unwrap_or(Value::Null)
}

/// Deterministic pseudo-random vector components.
fn vector(i: u64) -> Vec<f32> {
    let mut x = i.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..DIM)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 40) as f32 / (1u64 << 24) as f32 - 0.5
        })
        .collect()
}

fn batch_body(start: u64, n: u64) -> String {
    let ids: Vec<u64> = (start..start + n).collect();
    let vectors: Vec<Vec<f32>> = ids.iter().map(|&i| vector(i)).collect();
    let payloads: Vec<Value> = ids
        .iter()
        .map(|i| json!({"title": format!("doc {i}"), "n": i}))
        .collect();
    json!({"batch": {"ids": ids, "vectors": vectors, "payloads": payloads}}).to_string()
}

fn create_collection(c: &reqwest::blocking::Client, url: &str, name: &str) {
    let _ = c.delete(format!("{url}/collections/{name}")).send();
    call(
        c,
        reqwest::Method::PUT,
        &format!("{url}/collections/{name}"),
        Some(json!({"vectors": {"size": DIM, "distance": "Cosine"}}).to_string()),
    );
}

/// `snapstream migrate` of the 100,000 × 768 collection to a second server, over REST and
/// with `--from-grpc/--to-grpc`, against one REST client upserting the same points in
/// batches of 1,000 into that server; the three alternate within each round.
fn migrate_vs_upsert(
    c: &reqwest::blocking::Client,
    svc: &Service,
    bodies: &[String],
    root: &Path,
    repeat: usize,
    results: &mut serde_json::Map<String, Value>,
) {
    let dir = root.join("migrate-dest");
    std::fs::create_dir_all(&dir).unwrap();
    let dst = Service::start(&dir, &[]);
    let bin = PathBuf::from(env_or("SNAPSTREAM_BIN", "target/release/snapstream"));
    let run_migrate = |extra: &[&str]| {
        let _ = c
            .delete(format!("{}/collections/bench100k", dst.url))
            .send();
        let t = Instant::now();
        let out = Command::new(&bin)
            .args(["migrate", "--from", &svc.url, "--to", &dst.url])
            .args(["--collection", "bench100k"])
            .args(extra)
            .output()
            .expect("run snapstream migrate");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        100_000.0 / t.elapsed().as_secs_f64()
    };
    let (mut rest, mut grpc, mut base) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..repeat {
        rest.push(run_migrate(&[]));
        grpc.push(run_migrate(&[
            "--from-grpc",
            &svc.grpc_url,
            "--to-grpc",
            &dst.grpc_url,
        ]));
        create_collection(c, &dst.url, "baseline");
        let t = Instant::now();
        for body in bodies {
            call(
                c,
                reqwest::Method::PUT,
                &format!("{}/collections/baseline/points?wait=true", dst.url),
                Some(body.clone()),
            );
        }
        base.push(100_000.0 / t.elapsed().as_secs_f64());
        println!(
            "  round {round}: migrate over REST {:.0} points/s, over gRPC {:.0} points/s, one REST client upserting {:.0} points/s",
            rest[round], grpc[round], base[round]
        );
    }
    let (m, g, b) = (median(rest), median(grpc), median(base));
    println!(
        "migrate 100,000 x {DIM} between two local servers, median of {repeat} alternating rounds: over REST {m:.0} points/s = {:.2}x, over gRPC {g:.0} points/s = {:.2}x one REST upsert client ({b:.0} points/s; target >= 1.0x)",
        m / b,
        g / b
    );
    results.insert("migrate_points_per_s".into(), json!(m));
    results.insert("migrate_grpc_points_per_s".into(), json!(g));
    results.insert("migrate_baseline_upsert_points_per_s".into(), json!(b));
}

/// Recovery of Qdrant's `papers.snapshot` fixture against recovering our own snapshot of the
/// same points, both by `file://` from the snapshots directory, alternating.
fn qdrant_fixture_recovery(
    c: &reqwest::blocking::Client,
    svc: &Service,
    root: &Path,
    repeat: usize,
    results: &mut serde_json::Map<String, Value>,
) {
    let fixture =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/qdrant-1.19/papers.snapshot");
    let snapshots = root.join("snapshots");
    std::fs::create_dir_all(&snapshots).unwrap();
    let theirs = snapshots.join("qdrant-papers.snapshot");
    std::fs::copy(&fixture, &theirs).unwrap();
    let recover = |name: &str, file: &Path| -> f64 {
        let t = Instant::now();
        call(
            c,
            reqwest::Method::PUT,
            &format!("{}/collections/{name}/snapshots/recover", svc.url),
            Some(json!({"location": format!("file://{}", file.display())}).to_string()),
        );
        t.elapsed().as_secs_f64()
    };
    recover("qpapers", &theirs);
    let made = call(
        c,
        reqwest::Method::POST,
        &format!("{}/collections/qpapers/snapshots", svc.url),
        None,
    );
    let name = made["result"]["name"].as_str().unwrap().to_string();
    let ours_file = snapshots.join("qpapers").join(&name);
    let (mut q, mut o) = (Vec::new(), Vec::new());
    for _ in 0..repeat {
        q.push(recover("from_qdrant", &theirs));
        o.push(recover("from_ours", &ours_file));
    }
    let (q, o) = (median(q), median(o));
    println!(
        "recover Qdrant's papers.snapshot (980 x 768) {:.0} ms vs our own snapshot of the same points {:.0} ms = {:.2}x",
        q * 1000.0,
        o * 1000.0,
        q / o
    );
    results.insert("recover_qdrant_fixture_ms".into(), json!(q * 1000.0));
    results.insert(
        "recover_own_snapshot_same_points_ms".into(),
        json!(o * 1000.0),
    );
}

/// Upsert throughput and query latency over gRPC against REST on the same server, in
/// alternating rounds: 768-d batches of 1,000 (protobuf carries packed floats, REST parses
/// JSON text), and top-10 queries over the 100,000-point collection.
fn grpc_vs_rest(
    c: &reqwest::blocking::Client,
    svc: &Service,
    repeat: usize,
    results: &mut serde_json::Map<String, Value>,
) {
    use qdrant_client::qdrant as pb;
    const BATCHES: u64 = 20;
    let rt = tokio::runtime::Runtime::new().unwrap();
    let g = qdrant_client::Qdrant::from_url(&svc.grpc_url)
        .skip_compatibility_check()
        .build()
        .unwrap();
    let rest_bodies: Vec<String> = (0..BATCHES).map(|b| batch_body(b * 1000, 1000)).collect();
    let grpc_batches: Vec<Vec<pb::PointStruct>> = (0..BATCHES)
        .map(|b| {
            (b * 1000..(b + 1) * 1000)
                .map(|i| {
                    let payload = [
                        ("title".to_string(), pb::Value::from(format!("doc {i}"))),
                        ("n".to_string(), pb::Value::from(i as i64)),
                    ]
                    .into_iter()
                    .collect();
                    pb::PointStruct {
                        id: Some(i.into()),
                        vectors: Some(vector(i).into()),
                        payload,
                    }
                })
                .collect()
        })
        .collect();
    let (mut rest_rates, mut grpc_rates) = (Vec::new(), Vec::new());
    for round in 0..repeat {
        create_collection(c, &svc.url, "rest_up");
        let t = Instant::now();
        for body in &rest_bodies {
            call(
                c,
                reqwest::Method::PUT,
                &format!("{}/collections/rest_up/points?wait=true", svc.url),
                Some(body.clone()),
            );
        }
        rest_rates.push((BATCHES * 1000) as f64 / t.elapsed().as_secs_f64());
        create_collection(c, &svc.url, "grpc_up");
        let t = Instant::now();
        for batch in &grpc_batches {
            rt.block_on(g.upsert_points(pb::UpsertPoints {
                collection_name: "grpc_up".into(),
                wait: Some(true),
                points: batch.clone(),
                ..Default::default()
            }))
            .expect("gRPC upsert");
        }
        grpc_rates.push((BATCHES * 1000) as f64 / t.elapsed().as_secs_f64());
        println!(
            "  round {round}: upsert REST {:.0} points/s, gRPC {:.0} points/s",
            rest_rates[round], grpc_rates[round]
        );
    }
    let (rest_m, grpc_m) = (median(rest_rates), median(grpc_rates));
    let (mut rest_lat, mut grpc_lat) = (Vec::new(), Vec::new());
    for q in 0..200u64 {
        let v = vector(2_000_000 + q);
        let body = json!({"query": v, "limit": 10}).to_string();
        let t = Instant::now();
        call(
            c,
            reqwest::Method::POST,
            &format!("{}/collections/bench100k/points/query", svc.url),
            Some(body),
        );
        rest_lat.push(t.elapsed().as_secs_f64() * 1000.0);
        let req = pb::QueryPoints {
            collection_name: "bench100k".into(),
            query: Some(pb::Query {
                variant: Some(pb::query::Variant::Nearest(pb::VectorInput {
                    variant: Some(pb::vector_input::Variant::Dense(pb::DenseVector {
                        data: v,
                    })),
                })),
            }),
            limit: Some(10),
            ..Default::default()
        };
        let t = Instant::now();
        rt.block_on(g.query(req)).expect("gRPC query");
        grpc_lat.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    rest_lat.sort_by(f64::total_cmp);
    grpc_lat.sort_by(f64::total_cmp);
    let (rp99, gp99) = (percentile(&rest_lat, 0.99), percentile(&grpc_lat, 0.99));
    println!(
        "upsert {}k x {DIM} in batches of 1,000, median of {repeat} alternating rounds: gRPC {grpc_m:.0} points/s vs REST {rest_m:.0} points/s = {:.2}x (target >= 1.5x)",
        BATCHES,
        grpc_m / rest_m
    );
    println!("query top-10 over 100,000 points, 200 alternating queries: p99 gRPC {gp99:.1} ms vs REST {rp99:.1} ms");
    results.insert("grpc_upsert_points_per_s".into(), json!(grpc_m));
    results.insert("rest_upsert_points_per_s_same_rounds".into(), json!(rest_m));
    results.insert("grpc_vs_rest_upsert_ratio".into(), json!(grpc_m / rest_m));
    results.insert("grpc_query_p99_ms".into(), json!(gp99));
    results.insert("rest_query_p99_ms_same_run".into(), json!(rp99));
    for name in ["rest_up", "grpc_up"] {
        let _ = c.delete(format!("{}/collections/{name}", svc.url)).send();
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx]
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    percentile(&v, 0.5)
}

/// Samples VmRSS of `pid` until stopped; returns the peak in bytes.
struct RssSampler {
    stop: Arc<AtomicBool>,
    peak: Arc<AtomicU64>,
    handle: Option<std::thread::JoinHandle<()>>,
}

fn rss_bytes(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        })
        .unwrap_or(0)
        * 1024
}

fn io_write_bytes(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/io"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("write_bytes:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

impl RssSampler {
    fn start(pid: u32) -> RssSampler {
        let stop = Arc::new(AtomicBool::new(false));
        let peak = Arc::new(AtomicU64::new(rss_bytes(pid)));
        let (s, p) = (Arc::clone(&stop), Arc::clone(&peak));
        let handle = std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                p.fetch_max(rss_bytes(pid), Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(5));
            }
        });
        RssSampler {
            stop,
            peak,
            handle: Some(handle),
        }
    }

    fn finish(mut self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
        self.peak.load(Ordering::Relaxed)
    }
}

fn sh(cmd: &str) -> f64 {
    let t = Instant::now();
    let st = Command::new("bash")
        .arg("-c")
        .arg(cmd)
        .stdout(Stdio::null())
        .status()
        .expect("run baseline");
    assert!(st.success(), "baseline failed: {cmd}");
    t.elapsed().as_secs_f64()
}

fn drop_caches_hint() {
    // Page cache is left warm on purpose: every step reads files the previous step just
    // wrote, for ours and the baselines alike.
}

fn mib(b: u64) -> f64 {
    b as f64 / (1 << 20) as f64
}

fn main() {
    let repeat: usize = env_or("BENCH_REPEAT", "3").parse().unwrap();
    let root = PathBuf::from(env_or("BENCH_DIR", "bench/out/work"));
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir_all(&root).unwrap();
    let root = root.canonicalize().unwrap();
    let mut results = serde_json::Map::new();
    let c = http();
    drop_caches_hint();

    // ---- 1. Upsert throughput and query latency --------------------------------------
    let svc = Service::start(&root, &[]);
    create_collection(&c, &svc.url, "bench100k");
    let bodies: Vec<String> = (0..100).map(|b| batch_body(b * 1000, 1000)).collect();
    let t = Instant::now();
    for body in &bodies {
        call(
            &c,
            reqwest::Method::PUT,
            &format!("{}/collections/bench100k/points?wait=true", svc.url),
            Some(body.clone()),
        );
    }
    let upsert_s = t.elapsed().as_secs_f64();
    let pts_per_s = 100_000.0 / upsert_s;
    // The same load over two connections, as bulk loaders (qdrant-client's
    // `upload_points(parallel=2)`) send it: parsing one batch overlaps another's fsync.
    create_collection(&c, &svc.url, "bench100k_par");
    let bodies = Arc::new(bodies);
    let t = Instant::now();
    let workers: Vec<_> = (0..2usize)
        .map(|w| {
            let (url, bodies) = (svc.url.clone(), Arc::clone(&bodies));
            std::thread::spawn(move || {
                let c = http();
                for body in bodies.iter().skip(w).step_by(2) {
                    call(
                        &c,
                        reqwest::Method::PUT,
                        &format!("{url}/collections/bench100k_par/points?wait=true"),
                        Some(body.clone()),
                    );
                }
            })
        })
        .collect();
    for w in workers {
        w.join().unwrap();
    }
    let par_pts_per_s = 100_000.0 / t.elapsed().as_secs_f64();
    let _ = c
        .delete(format!("{}/collections/bench100k_par", svc.url))
        .send();
    let mut lat = Vec::new();
    for q in 0..300u64 {
        let body = json!({"query": vector(1_000_000 + q), "limit": 10}).to_string();
        let t = Instant::now();
        call(
            &c,
            reqwest::Method::POST,
            &format!("{}/collections/bench100k/points/query", svc.url),
            Some(body),
        );
        lat.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    lat.sort_by(f64::total_cmp);
    println!("upsert 100,000 x {DIM} in batches of 1,000: one connection {upsert_s:.2} s = {pts_per_s:.0} points/s; two connections {par_pts_per_s:.0} points/s (target >= 20,000)");
    println!(
        "query top-10 over 100,000 points: p50 {:.1} ms, p99 {:.1} ms (target p99 <= 50 ms)",
        percentile(&lat, 0.5),
        percentile(&lat, 0.99)
    );
    results.insert("upsert_points_per_s".into(), json!(pts_per_s));
    results.insert(
        "upsert_points_per_s_two_connections".into(),
        json!(par_pts_per_s),
    );
    results.insert("query_p50_ms".into(), json!(percentile(&lat, 0.5)));
    results.insert("query_p99_ms".into(), json!(percentile(&lat, 0.99)));
    let only = env_or("BENCH_ONLY", "");
    if only.is_empty() || only == "grpc" {
        grpc_vs_rest(&c, &svc, repeat, &mut results);
    }
    if only.is_empty() || only == "migrate" {
        migrate_vs_upsert(&c, &svc, &bodies, &root, repeat, &mut results);
        qdrant_fixture_recovery(&c, &svc, &root, repeat, &mut results);
    }
    if !only.is_empty() && !["incremental", "local", "snapshots"].contains(&only.as_str()) {
        write_results(&results);
        let _ = std::fs::remove_dir_all(&root);
        return;
    }
    let _ = c
        .delete(format!("{}/collections/bench100k", svc.url))
        .send();
    drop(bodies);
    drop(svc);

    let Ok(endpoint) = std::env::var("S3_TEST_ENDPOINT") else {
        panic!("S3_TEST_ENDPOINT is not set: run `make bench` (it starts the S3 server)");
    };
    let rt = tokio::runtime::Runtime::new().unwrap();
    let client = rt.block_on(sdk_client(&endpoint));
    let bucket = env_or("S3_TEST_BUCKET", "snapshots");
    let s3 = S3 {
        rt,
        client,
        bucket,
        endpoint,
    };
    // Smallest first: the last one stays in storage for the incremental section.
    let mut sizes: Vec<u64> = env_or("BENCH_POINTS", "150000,700000")
        .split(',')
        .map(|p| {
            p.trim()
                .parse()
                .expect("BENCH_POINTS: point counts, comma-separated")
        })
        .collect();
    sizes.sort_unstable();
    for (i, &points) in sizes.iter().enumerate() {
        let build_only = only == "incremental" && i + 1 < sizes.len();
        if build_only {
            continue;
        }
        snapshot_figures(&c, &root, &s3, points, repeat, &only, &mut results);
    }
    if only != "local" && only != "snapshots" {
        let big_points = sizes.last().copied().unwrap_or(0);
        incremental_s3(&c, &root, &s3, big_points, repeat, &mut results);
    }
    write_results(&results);
    let _ = std::fs::remove_dir_all(&root);
}

/// Sections 2 and 3 on a collection of `points` points (built fresh as `big`, and left in
/// storage): local snapshots, then S3 snapshots unless `only` is `local`. With `only` =
/// `incremental` it only builds the collection. Results are keyed `p{points}_...`.
fn snapshot_figures(
    c: &reqwest::blocking::Client,
    root: &Path,
    s3: &S3,
    points: u64,
    repeat: usize,
    only: &str,
    all_results: &mut serde_json::Map<String, Value>,
) {
    let tag = format!("p{points}_");
    let mut results = serde_json::Map::new();
    let svc = Service::start(root, &[]);
    let _ = c.delete(format!("{}/collections/big", svc.url)).send();
    // ---- 2. Local snapshots ---------------------------------------------------------
    create_collection(c, &svc.url, "big");
    let loaders: Vec<_> = (0..2u64)
        .map(|w| {
            let (url, n) = (svc.url.clone(), points);
            std::thread::spawn(move || {
                let c = http();
                let mut start = w * 1000;
                while start < n {
                    let body = batch_body(start, 1000.min(n - start));
                    call(
                        &c,
                        reqwest::Method::PUT,
                        &format!("{url}/collections/big/points?wait=true"),
                        Some(body),
                    );
                    start += 2000;
                }
            })
        })
        .collect();
    for l in loaders {
        l.join().unwrap();
    }
    let data_dir = root.join("storage/collections/big");
    let data_bytes: u64 = walk_size(&data_dir);
    println!(
        "big collection: {points} points, {:.2} GiB on disk",
        data_bytes as f64 / (1u64 << 30) as f64
    );
    results.insert("big_collection_bytes".into(), json!(data_bytes));
    println!("== {points} points ==");
    'plain: {
        if only == "incremental" {
            drop(svc);
            break 'plain;
        }

        // Seal once so the baseline tars the same immutable files a snapshot pins.
        let warm = call(
            c,
            reqwest::Method::POST,
            &format!("{}/collections/big/snapshots", svc.url),
            None,
        );
        let warm_name = warm["result"]["name"].as_str().unwrap().to_string();
        call(
            c,
            reqwest::Method::DELETE,
            &format!("{}/collections/big/snapshots/{warm_name}", svc.url),
            None,
        );
        let (mut ours, mut base, mut rss_peak, mut rss_before) =
            (Vec::new(), Vec::new(), 0u64, u64::MAX);
        let mut last_snapshot = String::new();
        for _ in 0..repeat {
            base.push(sh(&format!(
                "tar cf - -C '{}' . | openssl dgst -sha256",
                data_dir.display()
            )));
            rss_before = rss_before.min(rss_bytes(svc.pid()));
            let sampler = RssSampler::start(svc.pid());
            let t = Instant::now();
            let v = call(
                c,
                reqwest::Method::POST,
                &format!("{}/collections/big/snapshots?wait=true", svc.url),
                None,
            );
            ours.push(t.elapsed().as_secs_f64());
            rss_peak = rss_peak.max(sampler.finish());
            if !last_snapshot.is_empty() {
                call(
                    c,
                    reqwest::Method::DELETE,
                    &format!("{}/collections/big/snapshots/{last_snapshot}", svc.url),
                    None,
                );
            }
            last_snapshot = v["result"]["name"].as_str().unwrap().to_string();
        }
        // The floor on this disk: writing the same number of bytes durably, nothing else.
        let snap_path = root.join("snapshots/big").join(&last_snapshot);
        let floor: Vec<f64> = (0..repeat)
            .map(|i| {
                let out = root.join(format!("dd-{i}"));
                let t = sh(&format!(
                    "dd if='{}' of='{}' bs=1M conv=fdatasync status=none",
                    snap_path.display(),
                    out.display()
                ));
                let _ = std::fs::remove_file(out);
                t
            })
            .collect();
        let floor_m = median(floor.clone());
        println!("durable write floor: dd of the snapshot's bytes with fdatasync, median {floor_m:.2} s; runs {floor:.2?}");
        results.insert("dd_fdatasync_s".into(), json!(floor_m));
        let (ours_m, base_m) = (median(ours.clone()), median(base.clone()));
        println!(
        "local create: ours median {ours_m:.2} s vs tar|openssl {base_m:.2} s = {:.2}x (target <= 0.9x); runs ours {ours:.2?} base {base:.2?}",
        ours_m / base_m
    );
        println!(
        "RSS during local snapshot: before {:.0} MiB, peak {:.0} MiB, added {:.0} MiB (target < 100 MiB)",
        mib(rss_before),
        mib(rss_peak),
        mib(rss_peak.saturating_sub(rss_before))
    );
        results.insert("local_create_s".into(), json!(ours_m));
        results.insert("tar_openssl_s".into(), json!(base_m));
        results.insert("local_create_ratio".into(), json!(ours_m / base_m));
        results.insert(
            "local_snapshot_rss_added_mib".into(),
            json!(mib(rss_peak.saturating_sub(rss_before))),
        );

        // Recover vs GNU tar extracting the same archive (plus sync, as recovery fsyncs).
        let snap_file = root.join("snapshots/big").join(&last_snapshot);
        let (mut ours_r, mut base_r) = (Vec::new(), Vec::new());
        for i in 0..repeat {
            let x = root.join(format!("untar-{i}"));
            std::fs::create_dir_all(&x).unwrap();
            base_r.push(sh(&format!(
                "tar xf '{}' -C '{}' && sync -f '{}'",
                snap_file.display(),
                x.display(),
                x.display()
            )));
            let _ = std::fs::remove_dir_all(&x);
            let t = Instant::now();
            call(
                c,
                reqwest::Method::PUT,
                &format!("{}/collections/big_copy/snapshots/recover", svc.url),
                Some(json!({"location": format!("file://{}", snap_file.display())}).to_string()),
            );
            ours_r.push(t.elapsed().as_secs_f64());
            call(
                c,
                reqwest::Method::DELETE,
                &format!("{}/collections/big_copy", svc.url),
                None,
            );
        }
        let (or, br) = (median(ours_r.clone()), median(base_r.clone()));
        println!("local recover: ours median {or:.2} s vs tar xf + sync {br:.2} s = {:.2}x; runs ours {ours_r:.2?} base {base_r:.2?}", or / br);
        results.insert("local_recover_s".into(), json!(or));
        results.insert("tar_extract_s".into(), json!(br));

        // Upsert latency (batches of 10) without and during a snapshot.
        // Fresh ids for every write, so no run overwrites another's points.
        let mut next_id = 5_000_000u64;
        // How long each snapshot took while the client upserted back to back.
        let mut under_load = Vec::new();
        // The baseline again before each snapshot under load, so every ratio pairs two
        // timings taken moments apart.
        let mut load_base = Vec::new();
        let mut upsert_lat = |during: bool| -> Vec<f64> {
            if during {
                load_base.push(sh(&format!(
                    "tar cf - -C '{}' . | openssl dgst -sha256",
                    data_dir.display()
                )));
            }
            let stop = Arc::new(AtomicBool::new(false));
            let snap = during.then(|| {
                let (url, stop) = (svc.url.clone(), Arc::clone(&stop));
                std::thread::spawn(move || {
                    let t = Instant::now();
                    let v = call(
                        &http(),
                        reqwest::Method::POST,
                        &format!("{url}/collections/big/snapshots"),
                        None,
                    );
                    let took = t.elapsed().as_secs_f64();
                    stop.store(true, Ordering::SeqCst);
                    (v["result"]["name"].as_str().unwrap().to_string(), took)
                })
            });
            let mut lat = Vec::new();
            let t0 = Instant::now();
            while (during && !stop.load(Ordering::SeqCst))
                || (!during && t0.elapsed() < Duration::from_secs(3))
            {
                let body = batch_body(next_id, 10);
                next_id += 10;
                let t = Instant::now();
                call(
                    c,
                    reqwest::Method::PUT,
                    &format!("{}/collections/big/points?wait=true", svc.url),
                    Some(body),
                );
                lat.push(t.elapsed().as_secs_f64() * 1000.0);
            }
            if let Some(h) = snap {
                let (name, took) = h.join().unwrap();
                under_load.push(took);
                call(
                    c,
                    reqwest::Method::DELETE,
                    &format!("{}/collections/big/snapshots/{name}", svc.url),
                    None,
                );
            }
            lat.sort_by(f64::total_cmp);
            lat
        };
        // Alternating, `repeat` times each, pooled: one snapshot gives too few writes for a
        // stable p99.
        let (mut idle, mut busy) = (Vec::new(), Vec::new());
        for _ in 0..repeat {
            idle.extend(upsert_lat(false));
            busy.extend(upsert_lat(true));
        }
        idle.sort_by(f64::total_cmp);
        busy.sort_by(f64::total_cmp);
        let (p_idle, p_busy) = (percentile(&idle, 0.99), percentile(&busy, 0.99));
        println!(
        "upsert p99 (batches of 10): {p_idle:.1} ms without a snapshot ({} writes), {p_busy:.1} ms during {repeat} snapshots ({} writes) = {:.2}x (target <= 1.5x)",
        idle.len(),
        busy.len(),
        p_busy / p_idle
    );
        let loaded_m = median(under_load.clone());
        let load_base_m = median(load_base.clone());
        let pairs: Vec<f64> = under_load
            .iter()
            .zip(&load_base)
            .map(|(o, b)| o / b)
            .collect();
        println!(
            "local create while one client upserts back to back: median {loaded_m:.2} s vs tar|openssl {load_base_m:.2} s = {:.2}x (target <= 1.5x); runs {under_load:.2?} base {load_base:.2?}, ratio per round {pairs:.2?}",
            loaded_m / load_base_m
        );
        results.insert("tar_openssl_under_load_rounds_s".into(), json!(load_base_m));
        results.insert("local_create_under_load_s".into(), json!(loaded_m));
        results.insert("upsert_p99_idle_ms".into(), json!(p_idle));
        results.insert("upsert_p99_during_snapshot_ms".into(), json!(p_busy));
        // The latency step added points: the S3 baseline uploads an archive of the collection
        // as it is now, the one the S3 snapshots below will capture, so both move the same bytes.
        let v = call(
            c,
            reqwest::Method::POST,
            &format!("{}/collections/big/snapshots?wait=true", svc.url),
            None,
        );
        let s3_base_file = root
            .join("snapshots/big")
            .join(v["result"]["name"].as_str().unwrap());
        drop(svc);
        if only == "local" {
            break 'plain;
        }

        // ---- 3. S3 -----------------------------------------------------------------------
        let prefix = format!("bench-{}", uuid::Uuid::new_v4().simple());
        let svc = Service::start(root, &s3.env(&prefix));
        let (rt, bucket) = (&s3.rt, &s3.bucket);
        let s3 = &s3.client;
        let part = 8usize << 20;
        let (mut ours, mut base, mut rss_peak, mut wrote) = (Vec::new(), Vec::new(), 0u64, 0u64);
        let rss_before = rss_bytes(svc.pid());
        let mut name = String::new();
        let mut size = 0u64;
        for i in 0..repeat {
            base.push(rt.block_on(plain_upload(
                s3,
                bucket,
                &format!("{prefix}/baseline-{i}.tar"),
                &s3_base_file,
                part,
                8,
                false,
            )));
            let io0 = io_write_bytes(svc.pid());
            let sampler = RssSampler::start(svc.pid());
            let t = Instant::now();
            let v = call(
                c,
                reqwest::Method::POST,
                &format!("{}/collections/big/snapshots?wait=true", svc.url),
                None,
            );
            ours.push(t.elapsed().as_secs_f64());
            rss_peak = rss_peak.max(sampler.finish());
            wrote = wrote.max(io_write_bytes(svc.pid()) - io0);
            if !name.is_empty() {
                call(
                    c,
                    reqwest::Method::DELETE,
                    &format!("{}/collections/big/snapshots/{name}", svc.url),
                    None,
                );
            }
            name = v["result"]["name"].as_str().unwrap().to_string();
            size = v["result"]["size"].as_u64().unwrap();
        }
        let (om, bm) = (median(ours.clone()), median(base.clone()));
        println!(
        "S3 create: ours median {om:.2} s ({:.2} GiB) vs plain multipart upload of {:.2} GiB {bm:.2} s = {:.2}x (target <= 1.15x); runs ours {ours:.2?} base {base:.2?}",
        size as f64 / (1u64 << 30) as f64,
        std::fs::metadata(&s3_base_file).unwrap().len() as f64 / (1u64 << 30) as f64,
        om / bm
    );
        println!(
        "RSS during S3 snapshot: before {:.0} MiB, peak {:.0} MiB, added {:.0} MiB (target <= 150 MiB); local bytes written during it: {wrote}",
        mib(rss_before),
        mib(rss_peak),
        mib(rss_peak.saturating_sub(rss_before))
    );
        results.insert("s3_create_s".into(), json!(om));
        results.insert("s3_plain_upload_s".into(), json!(bm));
        results.insert("s3_create_ratio".into(), json!(om / bm));
        results.insert(
            "s3_snapshot_rss_added_mib".into(),
            json!(mib(rss_peak.saturating_sub(rss_before))),
        );
        results.insert("s3_snapshot_local_bytes_written".into(), json!(wrote));

        let key = format!("{prefix}/big/{name}");
        // Recovery by `s3://` URL into a new collection, and by the snapshot's name from the
        // configured bucket back into `big` (rolling it back), each round next to a plain
        // download of the same object.
        let (mut ours_r, mut ours_n, mut base_r) = (Vec::new(), Vec::new(), Vec::new());
        let mut rss_peak = 0u64;
        let rss_before = rss_bytes(svc.pid());
        for i in 0..repeat {
            let dl = root.join(format!("download-{i}.tar"));
            base_r.push(rt.block_on(plain_download(s3, bucket, &key, &dl)));
            let _ = std::fs::remove_file(&dl);
            let sampler = RssSampler::start(svc.pid());
            let t = Instant::now();
            call(
                c,
                reqwest::Method::PUT,
                &format!("{}/collections/big_s3/snapshots/recover", svc.url),
                Some(json!({"location": format!("s3://{bucket}/{key}")}).to_string()),
            );
            ours_r.push(t.elapsed().as_secs_f64());
            rss_peak = rss_peak.max(sampler.finish());
            call(
                c,
                reqwest::Method::DELETE,
                &format!("{}/collections/big_s3", svc.url),
                None,
            );
            let t = Instant::now();
            call(
                c,
                reqwest::Method::PUT,
                &format!("{}/collections/big/snapshots/recover", svc.url),
                Some(json!({ "location": name }).to_string()),
            );
            ours_n.push(t.elapsed().as_secs_f64());
        }
        let (or, on, br) = (
            median(ours_r.clone()),
            median(ours_n.clone()),
            median(base_r.clone()),
        );
        println!("S3 recover by s3:// URL: ours median {or:.2} s vs plain download to a file + fsync {br:.2} s = {:.2}x (target <= 1.15x); runs ours {ours_r:.2?} base {base_r:.2?}", or / br);
        println!("S3 recover by name (into the collection it came from): ours median {on:.2} s vs the same download {br:.2} s = {:.2}x (target <= 1.15x); runs {ours_n:.2?}", on / br);
        println!(
            "RSS during S3 recovery (the recovered collection is held in memory): before {:.0} MiB, peak {:.0} MiB",
            mib(rss_before),
            mib(rss_peak)
        );
        results.insert("s3_recover_s".into(), json!(or));
        results.insert("s3_recover_by_name_s".into(), json!(on));
        results.insert("s3_plain_download_s".into(), json!(br));
        results.insert("s3_recover_ratio".into(), json!(or / br));
        results.insert("s3_recover_by_name_ratio".into(), json!(on / br));
        drop(svc);
    }

    for (k, v) in results {
        all_results.insert(format!("{tag}{k}"), v);
    }
}

fn write_results(results: &serde_json::Map<String, Value>) {
    let root = PathBuf::from(env_or("BENCH_DIR", "bench/out/work"));
    let out = root.parent().unwrap_or(Path::new(".")).join("results.json");
    std::fs::write(
        &out,
        serde_json::to_string_pretty(&Value::Object(results.clone())).unwrap(),
    )
    .unwrap();
    println!("results written to {}", out.display());
}

fn walk_size(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(Result::ok)
                .map(|e| {
                    if e.path().is_dir() {
                        walk_size(&e.path())
                    } else {
                        e.metadata().map(|m| m.len()).unwrap_or(0)
                    }
                })
                .sum()
        })
        .unwrap_or(0)
}

async fn sdk_client(endpoint: &str) -> aws_sdk_s3::Client {
    let conf = aws_sdk_s3::config::Builder::new()
        .behavior_version(aws_sdk_s3::config::BehaviorVersion::latest())
        .region(aws_sdk_s3::config::Region::new(env_or(
            "S3_TEST_REGION",
            "us-east-1",
        )))
        .endpoint_url(endpoint)
        .force_path_style(true)
        .credentials_provider(aws_sdk_s3::config::Credentials::new(
            env_or("S3_TEST_ACCESS_KEY", ""),
            env_or("S3_TEST_SECRET_KEY", ""),
            None,
            None,
            "bench",
        ))
        // Garage on loopback has been seen to stall a request for minutes; give the
        // baseline the same way out as ours (`request_timeout_secs`: retry after 60 s)
        // instead of hanging the run.
        .timeout_config(
            aws_sdk_s3::config::timeout::TimeoutConfig::builder()
                .operation_attempt_timeout(Duration::from_secs(60))
                .build(),
        )
        .retry_config(aws_sdk_s3::config::retry::RetryConfig::standard().with_max_attempts(5))
        .build();
    aws_sdk_s3::Client::from_conf(conf)
}

/// A plain multipart upload of an existing file: `part` bytes, `concurrency` in flight.
/// The object is deleted afterwards unless `keep`.
async fn plain_upload(
    s3: &aws_sdk_s3::Client,
    bucket: &str,
    key: &str,
    file: &Path,
    part: usize,
    concurrency: usize,
    keep: bool,
) -> f64 {
    use aws_sdk_s3::primitives::ByteStream;
    use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
    use tokio::io::AsyncReadExt;
    let t = Instant::now();
    let up = s3
        .create_multipart_upload()
        .bucket(bucket)
        .key(key)
        .send()
        .await
        .unwrap();
    let id = up.upload_id().unwrap().to_string();
    let mut f = tokio::fs::File::open(file).await.unwrap();
    let mut set = tokio::task::JoinSet::new();
    let mut parts = Vec::new();
    let mut n = 1;
    loop {
        let mut buf = vec![0u8; part];
        let mut filled = 0;
        while filled < part {
            let r = f.read(&mut buf[filled..]).await.unwrap();
            if r == 0 {
                break;
            }
            filled += r;
        }
        if filled == 0 {
            break;
        }
        buf.truncate(filled);
        while set.len() >= concurrency {
            parts.push(set.join_next().await.unwrap().unwrap());
        }
        let (s3, bucket, key, id) = (s3.clone(), bucket.to_string(), key.to_string(), id.clone());
        set.spawn(async move {
            let out = s3
                .upload_part()
                .bucket(bucket)
                .key(key)
                .upload_id(id)
                .part_number(n)
                .body(ByteStream::from(buf))
                .send()
                .await
                .unwrap();
            CompletedPart::builder()
                .part_number(n)
                .e_tag(out.e_tag().unwrap())
                .build()
        });
        n += 1;
        if filled < part {
            break;
        }
    }
    while let Some(p) = set.join_next().await {
        parts.push(p.unwrap());
    }
    parts.sort_by_key(|p| p.part_number());
    s3.complete_multipart_upload()
        .bucket(bucket)
        .key(key)
        .upload_id(id)
        .multipart_upload(
            CompletedMultipartUpload::builder()
                .set_parts(Some(parts))
                .build(),
        )
        .send()
        .await
        .unwrap();
    let elapsed = t.elapsed().as_secs_f64();
    if !keep {
        s3.delete_object()
            .bucket(bucket)
            .key(key)
            .send()
            .await
            .unwrap();
    }
    elapsed
}

/// A plain download of an object into a local file, fsynced.
async fn plain_download(s3: &aws_sdk_s3::Client, bucket: &str, key: &str, dest: &Path) -> f64 {
    use tokio::io::AsyncWriteExt;
    let t = Instant::now();
    let out = s3
        .get_object()
        .bucket(bucket)
        .key(key)
        .send()
        .await
        .unwrap();
    let mut body = out.body.into_async_read();
    let mut f =
        tokio::io::BufWriter::with_capacity(1 << 20, tokio::fs::File::create(dest).await.unwrap());
    tokio::io::copy(&mut body, &mut f).await.unwrap();
    f.flush().await.unwrap();
    f.into_inner().sync_all().await.unwrap();
    t.elapsed().as_secs_f64()
}

/// The S3 server the S3 sections use, and a plain SDK client for the baselines.
struct S3 {
    rt: tokio::runtime::Runtime,
    client: aws_sdk_s3::Client,
    bucket: String,
    endpoint: String,
}

impl S3 {
    /// The service's environment for S3 snapshots under `prefix`.
    fn env(&self, prefix: &str) -> Vec<(String, String)> {
        let p = "QDRANT__STORAGE__SNAPSHOTS_CONFIG__";
        [
            ("SNAPSHOTS_STORAGE", "s3".to_string()),
            ("S3_CONFIG__BUCKET", self.bucket.clone()),
            ("S3_CONFIG__REGION", env_or("S3_TEST_REGION", "us-east-1")),
            ("S3_CONFIG__ACCESS_KEY", env_or("S3_TEST_ACCESS_KEY", "")),
            ("S3_CONFIG__SECRET_KEY", env_or("S3_TEST_SECRET_KEY", "")),
            ("S3_CONFIG__ENDPOINT_URL", self.endpoint.clone()),
            ("S3_CONFIG__PREFIX", prefix.to_string()),
        ]
        .into_iter()
        .map(|(k, v)| (format!("{p}{k}"), v))
        .collect()
    }

    /// Bytes stored under `prefix/`, as the bucket lists them.
    fn bytes_under(&self, prefix: &str) -> u64 {
        self.rt.block_on(async {
            let mut pages = self
                .client
                .list_objects_v2()
                .bucket(&self.bucket)
                .prefix(format!("{prefix}/"))
                .into_paginator()
                .send();
            let mut total = 0u64;
            while let Some(page) = pages.next().await {
                for o in page.unwrap().contents() {
                    total += o.size().unwrap_or(0) as u64;
                }
            }
            total
        })
    }
}

/// A batch overwriting `ids` with vectors and payloads they did not have before.
fn overwrite_body(ids: &[u64], salt: u64) -> String {
    let vectors: Vec<Vec<f32>> = ids.iter().map(|&i| vector(i ^ (salt << 40))).collect();
    let payloads: Vec<Value> = ids
        .iter()
        .map(|i| json!({"title": format!("doc {i} v{salt}"), "n": i}))
        .collect();
    json!({"batch": {"ids": ids, "vectors": vectors, "payloads": payloads}}).to_string()
}

/// Section 4: incremental snapshots on S3 of the big collection (issue 11). Each round
/// starts from an empty prefix: a first (full) snapshot, 1% of the points overwritten and
/// a few deleted, a second snapshot; then recovery of the second against a plain download
/// of the same bytes; then both are deleted and the collector empties the prefix.
fn incremental_s3(
    c: &reqwest::blocking::Client,
    root: &Path,
    s3: &S3,
    big_points: u64,
    repeat: usize,
    results: &mut serde_json::Map<String, Value>,
) {
    let prefix = format!("bench-inc-{}", uuid::Uuid::new_v4().simple());
    let plain_key = format!(
        "bench-inc-plain-{}/second.tar",
        uuid::Uuid::new_v4().simple()
    );
    let mut env = s3.env(&prefix);
    env.push((
        "QDRANT__STORAGE__SNAPSHOTS_CONFIG__INCREMENTAL".into(),
        "true".into(),
    ));
    let svc = Service::start(root, &env);
    let create = |c: &reqwest::blocking::Client| -> (f64, String, u64) {
        let t = Instant::now();
        let v = call(
            c,
            reqwest::Method::POST,
            &format!("{}/collections/big/snapshots?wait=true", svc.url),
            None,
        );
        let name = v["result"]["name"].as_str().unwrap().to_string();
        (
            t.elapsed().as_secs_f64(),
            name,
            v["result"]["size"].as_u64().unwrap(),
        )
    };
    let (mut first_s, mut second_s, mut ours_r, mut base_r) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let (mut first_added, mut second_added, mut logical) = (0u64, 0u64, 0u64);
    for round in 0..repeat as u64 {
        let b0 = s3.bytes_under(&prefix);
        let (t1, first, _) = create(c);
        let b1 = s3.bytes_under(&prefix);
        // 1% of the points get new vectors and payloads, in batches of 1,000; 100 deleted.
        let stride = 100;
        let ids: Vec<u64> = (0..big_points / stride)
            .map(|k| k * stride + (round * 37 + 11) % stride)
            .collect();
        for chunk in ids.chunks(1000) {
            call(
                c,
                reqwest::Method::PUT,
                &format!("{}/collections/big/points?wait=true", svc.url),
                Some(overwrite_body(chunk, round + 1)),
            );
        }
        call(
            c,
            reqwest::Method::POST,
            &format!("{}/collections/big/points/delete?wait=true", svc.url),
            Some(json!({"points": &ids[..100]}).to_string()),
        );
        let (t2, second, size) = create(c);
        let b2 = s3.bytes_under(&prefix);
        first_s.push(t1);
        second_s.push(t2);
        first_added = first_added.max(b1 - b0);
        second_added = second_added.max(b2 - b1);
        logical = size;

        // Recovery of the second vs a plain download of the same bytes.
        let url = format!("{}/collections/big/snapshots/{second}", svc.url);
        let tar = root.join("incremental-second.tar");
        let mut resp = c.get(&url).send().unwrap();
        let mut f = std::fs::File::create(&tar).unwrap();
        std::io::copy(&mut resp, &mut f).unwrap();
        drop(f);
        // The baseline object: the same bytes, stored plainly (and kept).
        s3.rt.block_on(plain_upload(
            &s3.client,
            &s3.bucket,
            &plain_key,
            &tar,
            8 << 20,
            8,
            true,
        ));
        let dl = root.join("incremental-download.tar");
        base_r.push(
            s3.rt
                .block_on(plain_download(&s3.client, &s3.bucket, &plain_key, &dl)),
        );
        let _ = std::fs::remove_file(&dl);
        let _ = std::fs::remove_file(&tar);
        let t = Instant::now();
        call(
            c,
            reqwest::Method::PUT,
            &format!("{}/collections/big_inc/snapshots/recover", svc.url),
            Some(
                json!({"location": format!("s3://{}/{prefix}/big/{second}", s3.bucket)})
                    .to_string(),
            ),
        );
        ours_r.push(t.elapsed().as_secs_f64());
        call(
            c,
            reqwest::Method::DELETE,
            &format!("{}/collections/big_inc", svc.url),
            None,
        );
        for name in [&first, &second] {
            call(
                c,
                reqwest::Method::DELETE,
                &format!("{}/collections/big/snapshots/{name}", svc.url),
                None,
            );
        }
        // The collector frees everything; the next round's first snapshot is full again.
        let t = Instant::now();
        while s3.bytes_under(&prefix) > 0 {
            assert!(
                t.elapsed() < Duration::from_secs(120),
                "the collector did not empty the prefix"
            );
            std::thread::sleep(Duration::from_millis(500));
        }
    }
    s3.rt.block_on(async {
        let _ = s3
            .client
            .delete_object()
            .bucket(&s3.bucket)
            .key(&plain_key)
            .send()
            .await;
    });
    let (f, s) = (median(first_s.clone()), median(second_s.clone()));
    println!(
        "incremental S3: first snapshot median {f:.2} s adding {:.0} MiB; second (1% changed) {s:.2} s adding {:.1} MiB = {:.2}x the time (target <= 0.35x), {:.2}% of its logical {:.0} MiB (target <= 2% + 8 MiB); runs first {first_s:.2?} second {second_s:.2?}",
        mib(first_added),
        mib(second_added),
        s / f,
        100.0 * second_added as f64 / logical as f64,
        mib(logical)
    );
    let (or, br) = (median(ours_r.clone()), median(base_r.clone()));
    println!("incremental S3 recover of the second: ours median {or:.2} s vs plain download of the same bytes + fsync {br:.2} s = {:.2}x (target <= 1.15x); runs ours {ours_r:.2?} base {base_r:.2?}", or / br);
    results.insert("incremental_first_s".into(), json!(f));
    results.insert("incremental_second_s".into(), json!(s));
    results.insert("incremental_time_ratio".into(), json!(s / f));
    results.insert("incremental_first_added_bytes".into(), json!(first_added));
    results.insert("incremental_second_added_bytes".into(), json!(second_added));
    results.insert("incremental_logical_bytes".into(), json!(logical));
    results.insert("incremental_recover_s".into(), json!(or));
    results.insert("incremental_plain_download_s".into(), json!(br));
    results.insert("incremental_recover_ratio".into(), json!(or / br));
}

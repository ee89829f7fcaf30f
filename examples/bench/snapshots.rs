//! Sections 2 and 3: local and S3 snapshots of the big collections against their
//! baselines.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::harness::{
    batch_body, call, create_collection, http, io_write_bytes, load_points, median, mib,
    percentile, rss_bytes, sh, timed_snapshot, walk_size, RssSampler, Service,
};
use crate::s3::{plain_download, plain_upload, S3};
use serde_json::{json, Value};

/// Sections 2 and 3 on a collection of `points` points (built fresh as `big`, and left in
/// storage): local snapshots, then S3 snapshots unless `only` is `local`. With `only` =
/// `incremental` it only builds the collection. Results are keyed `p{points}_...`.
pub(crate) fn snapshot_figures(
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
    load_points(&svc.url, "big", points, batch_body);
    let data_dir = root.join("storage/collections/big");
    let data_bytes: u64 = walk_size(&data_dir);
    println!(
        "big collection: {points} points, {:.2} GiB on disk",
        data_bytes as f64 / (1u64 << 30) as f64
    );
    results.insert("big_collection_bytes".into(), json!(data_bytes));
    println!("== {points} points ==");
    if ["incremental", "variants", "linked"].contains(&only) {
        drop(svc);
    } else {
        let s3_base_file = local_snapshots(c, root, &svc, &data_dir, repeat, &mut results);
        drop(svc);
        if only != "local" {
            s3_snapshots(c, root, s3, &s3_base_file, repeat, &mut results);
            crate::azure::azure_snapshots(c, root, &s3_base_file, repeat, &mut results);
        }
    }
    if ["", "local", "snapshots", "linked"].contains(&only) {
        linked_snapshots(c, root, &data_dir, repeat, &mut results);
    }

    for (k, v) in results {
        all_results.insert(format!("{tag}{k}"), v);
    }
}

/// Section 2: local snapshots of `big` against `tar | openssl`, idle and while a client
/// upserts, recovery against `tar xf` + sync, upsert p99 and RSS. Returns the archive the
/// S3 baseline uploads (a snapshot of the collection as it is at the end).
fn local_snapshots(
    c: &reqwest::blocking::Client,
    root: &Path,
    svc: &Service,
    data_dir: &Path,
    repeat: usize,
    results: &mut serde_json::Map<String, Value>,
) -> PathBuf {
    // Seal once so the baseline tars the same immutable files a snapshot pins.
    let warm = call(
        c,
        reqwest::Method::POST,
        &format!("{}/collections/big/snapshots", svc.url),
        None,
    );
    let warm_name = warm["result"]["name"].as_str().unwrap().to_string();
    delete_snapshot(c, svc, &warm_name);
    let idle = idle_creates(c, svc, data_dir, repeat);
    // The floor on this disk: writing the same number of bytes durably, nothing else.
    let snap_path = root.join("snapshots/big").join(&idle.last);
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
    idle.report("local create", 0.9, results);

    local_recover(c, root, svc, &idle.last, repeat, results);
    under_load(c, svc, data_dir, repeat, (1.5, 1.5), results);
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
    s3_base_file
}

/// Recovery of snapshot `name` of `big` by `file://` into a new collection, against GNU tar
/// extracting the same archive (plus sync, as recovery fsyncs).
fn local_recover(
    c: &reqwest::blocking::Client,
    root: &Path,
    svc: &Service,
    name: &str,
    repeat: usize,
    results: &mut serde_json::Map<String, Value>,
) {
    let snap_file = root.join("snapshots/big").join(name);
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
}

/// Section 2 again on incremental local storage, where sealed segments are linked rather
/// than copied: create vs `tar | openssl` idle and under upserts, upsert p99, and the bytes a
/// snapshot adds to the disk (distinct inodes) against the active WAL's pinned prefix.
fn linked_snapshots(
    c: &reqwest::blocking::Client,
    root: &Path,
    data_dir: &Path,
    repeat: usize,
    results: &mut serde_json::Map<String, Value>,
) {
    let env = [(
        "QDRANT__STORAGE__SNAPSHOTS_CONFIG__INCREMENTAL".to_string(),
        "true".to_string(),
    )];
    let svc = Service::start(root, &env);
    let mut linked = serde_json::Map::new();
    // A WAL with something in it, as a live collection has.
    call(
        c,
        reqwest::Method::PUT,
        &format!("{}/collections/big/points?wait=true", svc.url),
        Some(batch_body(9_000_000, 1000)),
    );
    let idle = idle_creates(c, &svc, data_dir, repeat);
    idle.report("linked local create", 1.1, &mut linked);
    let dirs = [root.join("storage"), root.join("snapshots")];
    let wal: u64 = std::fs::read_dir(data_dir.join("data"))
        .unwrap()
        .filter_map(Result::ok)
        .filter(|e| e.path().extension().is_some_and(|x| x == "wal"))
        .map(|e| e.metadata().unwrap().len())
        .sum();
    let before = disk_bytes(&dirs);
    let (_, v) = timed_snapshot(c, &svc.url, "big");
    let added = disk_bytes(&dirs).saturating_sub(before);
    println!(
        "linked local create adds {:.2} MiB to the disk (distinct inodes, allocated blocks); the active WAL's pinned prefix is {:.2} MiB (target <= prefix + 1 MiB)",
        mib(added),
        mib(wal)
    );
    linked.insert("bytes_added".into(), json!(added));
    linked.insert("wal_prefix_bytes".into(), json!(wal));
    delete_snapshot(c, &svc, v["result"]["name"].as_str().unwrap());
    delete_snapshot(c, &svc, &idle.last);
    under_load(c, &svc, data_dir, repeat, (1.3, 1.2), &mut linked);
    for (k, v) in linked {
        results.insert(format!("linked_{k}"), v);
    }
}

/// Allocated bytes of the distinct files (by inode) under `dirs`: a file linked twice counts
/// once, as the disk holds it once.
fn disk_bytes(dirs: &[PathBuf]) -> u64 {
    use std::os::unix::fs::MetadataExt;
    fn walk(dir: &Path, seen: &mut std::collections::HashSet<(u64, u64)>, total: &mut u64) {
        let Ok(rd) = std::fs::read_dir(dir) else {
            return;
        };
        for e in rd.filter_map(Result::ok) {
            let Ok(m) = std::fs::symlink_metadata(e.path()) else {
                continue;
            };
            if m.is_dir() {
                walk(&e.path(), seen, total);
            } else if seen.insert((m.dev(), m.ino())) {
                *total += m.blocks() * 512;
            }
        }
    }
    let (mut seen, mut total) = (std::collections::HashSet::new(), 0);
    for d in dirs {
        walk(d, &mut seen, &mut total);
    }
    total
}

fn delete_snapshot(c: &reqwest::blocking::Client, svc: &Service, name: &str) {
    call(
        c,
        reqwest::Method::DELETE,
        &format!("{}/collections/big/snapshots/{name}", svc.url),
        None,
    );
}

/// Idle creates against `tar | openssl`, alternating.
struct IdleCreates {
    ours: Vec<f64>,
    base: Vec<f64>,
    rss_before: u64,
    rss_peak: u64,
    /// The last snapshot made (kept; the others are deleted).
    last: String,
}

/// `repeat` snapshots of `big`, each after a `tar | openssl` of its files; each snapshot but
/// the last is deleted once the next exists.
fn idle_creates(
    c: &reqwest::blocking::Client,
    svc: &Service,
    data_dir: &Path,
    repeat: usize,
) -> IdleCreates {
    let mut r = IdleCreates {
        ours: Vec::new(),
        base: Vec::new(),
        rss_before: u64::MAX,
        rss_peak: 0,
        last: String::new(),
    };
    for _ in 0..repeat {
        r.base.push(sh(&format!(
            "tar cf - -C '{}' . | openssl dgst -sha256",
            data_dir.display()
        )));
        r.rss_before = r.rss_before.min(rss_bytes(svc.pid()));
        let sampler = RssSampler::start(svc.pid());
        let (took, v) = timed_snapshot(c, &svc.url, "big");
        r.ours.push(took);
        r.rss_peak = r.rss_peak.max(sampler.finish());
        if !r.last.is_empty() {
            delete_snapshot(c, svc, &r.last);
        }
        r.last = v["result"]["name"].as_str().unwrap().to_string();
    }
    r
}

impl IdleCreates {
    fn report(&self, what: &str, target: f64, results: &mut serde_json::Map<String, Value>) {
        let (ours, base) = (&self.ours, &self.base);
        let (ours_m, base_m) = (median(ours.clone()), median(base.clone()));
        println!(
            "{what}: ours median {ours_m:.2} s vs tar|openssl {base_m:.2} s = {:.2}x (target <= {target}x); runs ours {ours:.2?} base {base:.2?}",
            ours_m / base_m
        );
        let added = self.rss_peak.saturating_sub(self.rss_before);
        println!(
            "RSS during {what}: before {:.0} MiB, peak {:.0} MiB, added {:.0} MiB (target < 100 MiB)",
            mib(self.rss_before),
            mib(self.rss_peak),
            mib(added)
        );
        results.insert("local_create_s".into(), json!(ours_m));
        results.insert("tar_openssl_s".into(), json!(base_m));
        results.insert("local_create_ratio".into(), json!(ours_m / base_m));
        results.insert("local_snapshot_rss_added_mib".into(), json!(mib(added)));
    }
}

/// Upsert latency (batches of 10) without and during a snapshot, alternating `repeat`
/// times, and how long each snapshot took while the client upserted back to back, against
/// `tar | openssl` just before it. `targets`: (create under load, p99 ratio).
fn under_load(
    c: &reqwest::blocking::Client,
    svc: &Service,
    data_dir: &Path,
    repeat: usize,
    (create_target, p99_target): (f64, f64),
    results: &mut serde_json::Map<String, Value>,
) {
    let tar = format!(
        "tar cf - -C '{}' . | openssl dgst -sha256",
        data_dir.display()
    );
    // Fresh ids for every write, so no run overwrites another's points.
    let mut next_id = 5_000_000u64;
    // How long each snapshot (or `tar | openssl`) took while the client upserted.
    let (mut under_load, mut tar_loaded) = (Vec::new(), Vec::new());
    // The baseline again before each snapshot under load, so every ratio pairs two
    // timings taken moments apart.
    let mut load_base = Vec::new();
    // Alternating, `repeat` times each, pooled: one snapshot gives too few writes for a
    // stable p99. The third window is the client upserting while `tar | openssl` of the
    // same files runs: what reading and hashing them at all costs the writes.
    let (mut idle, mut busy, mut busy_tar) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..repeat {
        idle.extend(upsert_window(c, svc, &mut next_id, None).0);
        load_base.push(sh(&tar));
        let (lat, took) = upsert_window(c, svc, &mut next_id, Some(Beside::Snapshot));
        busy.extend(lat);
        under_load.push(took);
        let (lat, took) = upsert_window(c, svc, &mut next_id, Some(Beside::Command(&tar)));
        busy_tar.extend(lat);
        tar_loaded.push(took);
    }
    for v in [&mut idle, &mut busy, &mut busy_tar] {
        v.sort_by(f64::total_cmp);
    }
    let p = |v: &[f64]| percentile(v, 0.99);
    let (p_idle, p_busy, p_tar) = (p(&idle), p(&busy), p(&busy_tar));
    println!(
        "upsert p99 (batches of 10): {p_idle:.1} ms without a snapshot ({} writes), {p_busy:.1} ms during {repeat} snapshots ({} writes) = {:.2}x (target <= {p99_target}x); {p_tar:.1} ms during tar|openssl of the same files ({} writes) = {:.2}x",
        idle.len(),
        busy.len(),
        p_busy / p_idle,
        busy_tar.len(),
        p_tar / p_idle
    );
    let (loaded_m, load_base_m) =
        report_create_under_load(&under_load, &load_base, median(tar_loaded), create_target);
    results.insert("tar_openssl_under_load_rounds_s".into(), json!(load_base_m));
    results.insert("local_create_under_load_s".into(), json!(loaded_m));
    results.insert("upsert_p99_idle_ms".into(), json!(p_idle));
    results.insert("upsert_p99_during_snapshot_ms".into(), json!(p_busy));
    results.insert("upsert_p99_during_tar_openssl_ms".into(), json!(p_tar));
}

/// Prints the creates under load against the baselines; returns both medians.
fn report_create_under_load(
    under_load: &[f64],
    load_base: &[f64],
    tar_loaded: f64,
    create_target: f64,
) -> (f64, f64) {
    let loaded_m = median(under_load.to_vec());
    let load_base_m = median(load_base.to_vec());
    let pairs: Vec<f64> = under_load
        .iter()
        .zip(load_base)
        .map(|(o, b)| o / b)
        .collect();
    println!(
        "local create while one client upserts back to back: median {loaded_m:.2} s vs tar|openssl {load_base_m:.2} s = {:.2}x (target <= {create_target}x); runs {under_load:.2?} base {load_base:.2?}, ratio per round {pairs:.2?}; tar|openssl itself under the same load {:.2} s",
        loaded_m / load_base_m,
        tar_loaded
    );
    (loaded_m, load_base_m)
}

/// What runs beside the upserting client in one window.
#[derive(Clone, Copy)]
enum Beside<'a> {
    /// A snapshot of `big` (deleted afterwards).
    Snapshot,
    /// A shell command.
    Command(&'a str),
}

/// Upserts batches of 10 back to back for 3 s, or while `beside` runs; returns the
/// latencies (ms, sorted) and how long `beside` took.
fn upsert_window(
    c: &reqwest::blocking::Client,
    svc: &Service,
    next_id: &mut u64,
    beside: Option<Beside<'_>>,
) -> (Vec<f64>, f64) {
    let stop = Arc::new(AtomicBool::new(false));
    let job = beside.map(|b| {
        let (url, stop) = (svc.url.clone(), Arc::clone(&stop));
        let cmd = match b {
            Beside::Command(cmd) => Some(cmd.to_string()),
            Beside::Snapshot => None,
        };
        std::thread::spawn(move || {
            let t = Instant::now();
            let name = match cmd {
                Some(cmd) => {
                    sh(&cmd);
                    None
                }
                None => {
                    let to = format!("{url}/collections/big/snapshots");
                    let v = call(&http(), reqwest::Method::POST, &to, None);
                    Some(v["result"]["name"].as_str().unwrap().to_string())
                }
            };
            let took = t.elapsed().as_secs_f64();
            stop.store(true, Ordering::SeqCst);
            (name, took)
        })
    });
    let mut lat = Vec::new();
    let t0 = Instant::now();
    while (job.is_some() && !stop.load(Ordering::SeqCst))
        || (job.is_none() && t0.elapsed() < Duration::from_secs(3))
    {
        let body = batch_body(*next_id, 10);
        *next_id += 10;
        let t = Instant::now();
        let to = format!("{}/collections/big/points?wait=true", svc.url);
        call(c, reqwest::Method::PUT, &to, Some(body));
        lat.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    let mut took = 0.0;
    if let Some(h) = job {
        let (name, t) = h.join().unwrap();
        took = t;
        if let Some(name) = name {
            delete_snapshot(c, svc, &name);
        }
    }
    lat.sort_by(f64::total_cmp);
    (lat, took)
}

/// Section 3: S3 snapshots of `big` against a plain multipart upload of `s3_base_file` and
/// a plain download, with RSS and local bytes written.
fn s3_snapshots(
    c: &reqwest::blocking::Client,
    root: &Path,
    s3: &S3,
    s3_base_file: &Path,
    repeat: usize,
    results: &mut serde_json::Map<String, Value>,
) {
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
            s3_base_file,
            part,
            8,
            false,
        )));
        let io0 = io_write_bytes(svc.pid());
        let sampler = RssSampler::start(svc.pid());
        let (took, v) = timed_snapshot(c, &svc.url, "big");
        ours.push(took);
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
    std::fs::metadata(s3_base_file).unwrap().len() as f64 / (1u64 << 30) as f64,
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

//! Section 6: what encryption and piece compression cost. Incremental S3 snapshots of the
//! big collection into a fresh prefix (every piece written), then recovery by name, with
//! encryption off and on and zstd off and on; the variants alternate within each round.
//! Each round first refills the collection with vectors no earlier round stored: the test
//! S3 server (Garage) deduplicates blocks it already holds, even of deleted objects, so
//! without it a plain create from the second round on would write bytes the server has seen
//! (and skip their storing), while an encrypted one (a new data key per prefix) never does.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Instant;

use crate::harness::{
    call, cpu_seconds, create_collection, http, load_points, median, s3_server_pid, timed_snapshot,
    Service,
};
use crate::incremental::overwrite_body;
use crate::s3::S3;
use serde_json::{json, Value};

const P: &str = "QDRANT__STORAGE__SNAPSHOTS_CONFIG__";

/// Times per variant: creates, recoveries, bytes stored.
#[derive(Default)]
struct Runs {
    create: Vec<f64>,
    /// CPU seconds of snapstream and of the S3 server during each create.
    cpu: Vec<(f64, f64)>,
    recover: Vec<f64>,
    stored: u64,
}

pub(crate) fn encryption_and_compression(
    c: &reqwest::blocking::Client,
    root: &Path,
    s3: &S3,
    points: u64,
    repeat: usize,
    results: &mut serde_json::Map<String, Value>,
) {
    let variants: [(&str, Vec<(&str, &str)>); 3] = [
        ("plain", vec![]),
        ("encrypted", vec![("ENCRYPTION__KEY", "bench passphrase")]),
        ("zstd", vec![("COMPRESSION", "zstd")]),
    ];
    let mut runs: BTreeMap<&str, Runs> = BTreeMap::new();
    let mut logical = 0u64;
    let server = s3_server_pid();
    for round in 0..repeat {
        refill(root, points, round as u64 + 1);
        // Plain and encrypted take turns at going first after the refill.
        let mut order: Vec<_> = variants.iter().collect();
        if round % 2 == 1 {
            order.swap(0, 1);
        }
        for (name, extra) in order {
            let r = runs.entry(name).or_default();
            logical = run_variant(c, root, s3, server, extra, r);
        }
    }
    report(&runs, logical, results);
}

/// One create into a fresh prefix and one recovery by name, with `extra` settings; adds
/// to `r` and returns the snapshot's size.
fn run_variant(
    c: &reqwest::blocking::Client,
    root: &Path,
    s3: &S3,
    server: u32,
    extra: &[(&str, &str)],
    r: &mut Runs,
) -> u64 {
    let prefix = format!("bench-variant-{}", uuid::Uuid::new_v4().simple());
    let mut env = s3.env(&prefix);
    env.push((format!("{P}INCREMENTAL"), "true".into()));
    env.extend(
        extra
            .iter()
            .map(|(k, v)| (format!("{P}{k}"), v.to_string())),
    );
    let svc = Service::start(root, &env);
    let before = (cpu_seconds(svc.child.id()), cpu_seconds(server));
    let (took, v) = timed_snapshot(c, &svc.url, "big");
    r.create.push(took);
    r.cpu.push((
        cpu_seconds(svc.child.id()) - before.0,
        cpu_seconds(server) - before.1,
    ));
    let snapshot = v["result"]["name"].as_str().unwrap().to_string();
    r.stored = s3.bytes_under(&prefix);
    let t = Instant::now();
    call(
        c,
        reqwest::Method::PUT,
        &format!("{}/collections/big/snapshots/recover", svc.url),
        Some(json!({ "location": snapshot }).to_string()),
    );
    r.recover.push(t.elapsed().as_secs_f64());
    drop(svc);
    s3.empty(&prefix);
    v["result"]["size"].as_u64().unwrap()
}

/// Recreates the big collection with `points` points whose vectors and payloads depend on
/// `salt`, loaded by two clients.
fn refill(root: &Path, points: u64, salt: u64) {
    let svc = Service::start(root, &[]);
    create_collection(&http(), &svc.url, "big");
    load_points(&svc.url, "big", points, |start, n| {
        overwrite_body(&(start..start + n).collect::<Vec<_>>(), salt)
    });
    drop(svc);
    // The refill's writes reach the disk before the first create, not during it.
    let _ = std::process::Command::new("sync").status();
}

/// Prints and records each variant against the plain one.
fn report(runs: &BTreeMap<&str, Runs>, logical: u64, results: &mut serde_json::Map<String, Value>) {
    let plain = median(runs["plain"].create.clone());
    let plain_r = median(runs["plain"].recover.clone());
    for (name, r) in runs {
        let (cm, rm) = (median(r.create.clone()), median(r.recover.clone()));
        println!(
            "Incremental S3, {name}: create median {cm:.2} s ({:.2}x plain), recover by name {rm:.2} s ({:.2}x plain), stored {:.1}% of the {:.2} GiB tar; runs create {:.2?} recover {:.2?}; CPU seconds per create (snapstream, S3 server) {:.2?}",
            cm / plain,
            rm / plain_r,
            100.0 * r.stored as f64 / logical as f64,
            logical as f64 / (1u64 << 30) as f64,
            r.create,
            r.recover,
            r.cpu
        );
        results.insert(format!("variant_{name}_create_s"), json!(cm));
        results.insert(format!("variant_{name}_create_ratio"), json!(cm / plain));
        results.insert(format!("variant_{name}_recover_s"), json!(rm));
        results.insert(format!("variant_{name}_recover_ratio"), json!(rm / plain_r));
        results.insert(format!("variant_{name}_stored_bytes"), json!(r.stored));
    }
    println!("(targets: encrypted <= 1.1x plain in create and recovery time)");
}

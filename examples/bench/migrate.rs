//! `snapstream migrate` over REST and gRPC against one REST client upserting.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use crate::harness::{call, create_collection, env_or, median, Service, DIM};
use serde_json::{json, Value};

/// `snapstream migrate` of the 100,000 × 768 collection to a second server, over REST and
/// with `--from-grpc/--to-grpc`, against one REST client upserting the same points in
/// batches of 1,000 into that server; the three alternate within each round.
pub(crate) fn migrate_vs_upsert(
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

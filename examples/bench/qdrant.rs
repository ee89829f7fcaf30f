//! Recovery of Qdrant's own snapshot files (the fixtures).

use std::path::Path;
use std::time::Instant;

use crate::harness::{call, median, Service};
use serde_json::{json, Value};

/// Recovery of Qdrant's `papers.snapshot` fixture against recovering our own snapshot of the
/// same points, both by `file://` from the snapshots directory, alternating.
pub(crate) fn qdrant_fixture_recovery(
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

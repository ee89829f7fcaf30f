//! Section 1: upsert throughput (100,000 x 768 in batches of 1,000, over one and two
//! connections) and exact query latency over the same collection.

use std::sync::Arc;
use std::time::Instant;

use serde_json::{json, Value};

use crate::harness::{batch_body, call, create_collection, http, percentile, vector, Service, DIM};

/// Loads `bench100k` (left in place for the sections that follow) and records upsert
/// rates and query percentiles; returns the upsert bodies, which `migrate` reuses.
pub(crate) fn upsert_and_query(
    c: &reqwest::blocking::Client,
    svc: &Service,
    results: &mut serde_json::Map<String, Value>,
) -> Arc<Vec<String>> {
    create_collection(c, &svc.url, "bench100k");
    let bodies: Vec<String> = (0..100).map(|b| batch_body(b * 1000, 1000)).collect();
    let t = Instant::now();
    for body in &bodies {
        call(
            c,
            reqwest::Method::PUT,
            &format!("{}/collections/bench100k/points?wait=true", svc.url),
            Some(body.clone()),
        );
    }
    let upsert_s = t.elapsed().as_secs_f64();
    let pts_per_s = 100_000.0 / upsert_s;
    // The same load over two connections, as bulk loaders (qdrant-client's
    // `upload_points(parallel=2)`) send it: parsing one batch overlaps another's fsync.
    create_collection(c, &svc.url, "bench100k_par");
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
            c,
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
    bodies
}

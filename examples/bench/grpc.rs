//! Upserts and queries over gRPC against REST on the same server.

use std::time::Instant;

use crate::harness::{
    batch_body, call, create_collection, median, percentile, vector, Service, DIM,
};
use serde_json::{json, Value};

/// Upsert throughput and query latency over gRPC against REST on the same server, in
/// alternating rounds: 768-d batches of 1,000 (protobuf carries packed floats, REST parses
/// JSON text), and top-10 queries over the 100,000-point collection.
pub(crate) fn grpc_vs_rest(
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

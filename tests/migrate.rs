//! `snapstream migrate` between two running snapstream servers: an interrupted run, a second
//! run that completes, aliases and payload indexes, and the refusal to overwrite.

mod common;

use std::process::{Command, Stdio};

use serde_json::{json, Value};

const DIM: usize = 768;
const POINTS: u64 = 100_000;

async fn req(c: &reqwest::Client, m: reqwest::Method, url: String, body: Option<Value>) -> Value {
    let mut r = c.request(m, &url);
    if let Some(b) = body {
        r = r.json(&b);
    }
    let resp = r.send().await.unwrap();
    let status = resp.status();
    let v: Value = resp.json().await.unwrap();
    assert!(status.is_success(), "{url}: {status} {v}");
    v["result"].clone()
}

fn vector(i: u64) -> Vec<f32> {
    (0..DIM)
        .map(|d| (((i * 31 + d as u64 * 7) % 97) as f32 - 48.0) / 50.0)
        .collect()
}

async fn fill(c: &reqwest::Client, base: &str) {
    use reqwest::Method;
    req(
        c,
        Method::PUT,
        format!("{base}/collections/papers"),
        Some(json!({"vectors": {"size": DIM, "distance": "Cosine"}})),
    )
    .await;
    req(
        c,
        Method::PUT,
        format!("{base}/collections/papers/index?wait=true"),
        Some(json!({"field_name": "title", "field_schema": "keyword"})),
    )
    .await;
    for start in (0..POINTS).step_by(2000) {
        let points: Vec<Value> = (start..start + 2000)
            .map(|i| json!({"id": i, "vector": vector(i), "payload": {"title": format!("paper {i}"), "year": 1990 + i % 30}}))
            .collect();
        req(
            c,
            Method::PUT,
            format!("{base}/collections/papers/points?wait=true"),
            Some(json!({ "points": points })),
        )
        .await;
    }
    req(
        c,
        Method::PUT,
        format!("{base}/collections/named"),
        Some(json!({"vectors": {"text": {"size": 4, "distance": "Dot"}, "image": {"size": 2, "distance": "Euclid"}}})),
    )
    .await;
    let named: Vec<Value> = (0..300u64)
        .map(|i| {
            let id = if i % 2 == 0 {
                json!(i)
            } else {
                json!(format!("00000000-0000-4000-8000-{i:012}"))
            };
            json!({"id": id, "vector": {"text": [i as f32, 1.0, -0.5, 0.25], "image": [0.5, i as f32]}, "payload": {"name": format!("ünïcode {i}"), "tags": ["a", null, 3]}})
        })
        .collect();
    req(
        c,
        Method::PUT,
        format!("{base}/collections/named/points?wait=true"),
        Some(json!({ "points": named })),
    )
    .await;
    req(
        c,
        Method::POST,
        format!("{base}/collections/aliases"),
        Some(json!({"actions": [{"create_alias": {"alias_name": "library", "collection_name": "papers"}}]})),
    )
    .await;
}

async fn count(c: &reqwest::Client, base: &str, name: &str) -> u64 {
    let url = format!("{base}/collections/{name}/points/count");
    match c.post(&url).json(&json!({"exact": true})).send().await {
        Ok(r) if r.status().is_success() => r.json::<Value>().await.unwrap()["result"]["count"]
            .as_u64()
            .unwrap(),
        _ => 0,
    }
}

async fn all_points(c: &reqwest::Client, base: &str, name: &str) -> Vec<Value> {
    let v = req(
        c,
        reqwest::Method::POST,
        format!("{base}/collections/{name}/points/scroll"),
        Some(json!({"limit": 1000, "with_payload": true, "with_vector": true})),
    )
    .await;
    v["points"].as_array().unwrap().clone()
}

fn migrate(from: &str, to: &str, extra: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_snapstream"));
    cmd.args(["migrate", "--from", from, "--to", to])
        .args(extra)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupted_migration_is_finished_by_a_second_run() {
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let src = common::Service::start(a.path(), &[]).await;
    let dst = common::Service::start(b.path(), &[]).await;
    let c = reqwest::Client::new();
    fill(&c, &src.url()).await;

    // First run: interrupted part-way, through a proxy that lets about a fifth of the
    // points' bytes reach the destination and then cuts every connection, like a network
    // that goes away. The run fails by itself; no timing decides where it stops.
    let proxy = common::proxy::Proxy::start(&dst.url()).await;
    proxy.die_after(100 << 20);
    let first = migrate(&src.url(), &proxy.addr, &["--collection", "papers"])
        .output()
        .unwrap();
    assert!(
        !first.status.success(),
        "the first run should fail when the destination goes away"
    );
    let after_cut = count(&c, &dst.url(), "papers").await;
    assert!(
        (1..POINTS).contains(&after_cut),
        "the first run was interrupted part-way ({after_cut} points arrived)"
    );

    // Second run: every collection, finished and verified.
    let out = migrate(&src.url(), &dst.url(), &["--batch", "500"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains("papers: exists on the destination with the same vectors; continuing"),
        "{err}"
    );
    // Not a terminal: plain progress lines, ending at the total.
    assert!(
        err.contains(&format!("papers: {POINTS}/{POINTS} points (100.0%)")),
        "{err}"
    );
    assert!(err.contains("points/s") && !err.contains('\u{1b}'), "{err}");
    assert!(err.contains("counts and sampled points match"), "{err}");
    assert_eq!(count(&c, &dst.url(), "papers").await, POINTS);

    let (s, d) = (
        all_points(&c, &src.url(), "named").await,
        all_points(&c, &dst.url(), "named").await,
    );
    assert_eq!(s.len(), 300);
    assert_eq!(s, d, "every point of `named` is the same");
    let (s, d) = (
        all_points(&c, &src.url(), "papers").await,
        all_points(&c, &dst.url(), "papers").await,
    );
    // Cosine vectors are normalized again on arrival: equal to float precision.
    assert_eq!(s.len(), d.len());
    for (p, q) in s.iter().zip(&d) {
        assert_eq!((&p["id"], &p["payload"]), (&q["id"], &q["payload"]));
        let (a, b) = (
            p["vector"].as_array().unwrap(),
            q["vector"].as_array().unwrap(),
        );
        assert_eq!(a.len(), b.len());
        let worst = a
            .iter()
            .zip(b)
            .map(|(x, y)| (x.as_f64().unwrap() - y.as_f64().unwrap()).abs())
            .fold(0.0, f64::max);
        assert!(worst < 1e-6, "point {}: vectors differ by {worst}", p["id"]);
    }
    let aliases = req(
        &c,
        reqwest::Method::GET,
        format!("{}/aliases", dst.url()),
        None,
    )
    .await;
    assert_eq!(
        aliases["aliases"],
        json!([{"alias_name": "library", "collection_name": "papers"}])
    );
    let info = req(
        &c,
        reqwest::Method::GET,
        format!("{}/collections/papers", dst.url()),
        None,
    )
    .await;
    assert_eq!(info["payload_schema"]["title"]["data_type"], "keyword");
}

#[tokio::test]
async fn a_different_destination_is_replaced_only_with_overwrite() {
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let src = common::Service::start(a.path(), &[]).await;
    let dst = common::Service::start(b.path(), &[]).await;
    let c = reqwest::Client::new();
    for (base, size) in [(src.url(), 3), (dst.url(), 2)] {
        req(
            &c,
            reqwest::Method::PUT,
            format!("{base}/collections/clash"),
            Some(json!({"vectors": {"size": size, "distance": "Dot"}})),
        )
        .await;
    }
    req(
        &c,
        reqwest::Method::PUT,
        format!("{}/collections/clash/points?wait=true", src.url()),
        Some(json!({"points": [{"id": 1, "vector": [1.0, 2.0, 3.0], "payload": {"k": "v"}}]})),
    )
    .await;
    let out = migrate(&src.url(), &dst.url(), &[]).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("--overwrite"), "{err}");
    assert_eq!(count(&c, &dst.url(), "clash").await, 0, "nothing written");
    let out = migrate(&src.url(), &dst.url(), &["--overwrite"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        all_points(&c, &src.url(), "clash").await,
        all_points(&c, &dst.url(), "clash").await
    );
    let out = migrate(&src.url(), "ftp://nowhere", &[]).output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("must be an http(s) URL"));
}

#[tokio::test]
async fn points_travel_over_grpc_when_both_addresses_are_given() {
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (ga, gb) = (common::free_port(), common::free_port());
    let env = |port: u16, key: &str| {
        vec![
            ("QDRANT__SERVICE__GRPC_PORT".to_string(), port.to_string()),
            ("QDRANT__SERVICE__API_KEY".to_string(), key.to_string()),
        ]
    };
    let src = common::Service::start(a.path(), &env(ga, "source-key")).await;
    let dst = common::Service::start(b.path(), &env(gb, "dest-key")).await;
    let keyed = |key: &str| {
        let mut h = reqwest::header::HeaderMap::new();
        h.insert("api-key", key.parse().unwrap());
        reqwest::Client::builder()
            .default_headers(h)
            .build()
            .unwrap()
    };
    let (cs, cd) = (keyed("source-key"), keyed("dest-key"));
    // Named vectors, integer and UUID ids, nested payloads, points without a payload.
    req(
        &cs,
        reqwest::Method::PUT,
        format!("{}/collections/named", src.url()),
        Some(json!({"vectors": {"text": {"size": 4, "distance": "Dot"}, "image": {"size": 2, "distance": "Euclid"}}})),
    )
    .await;
    let points: Vec<Value> = (0..2500u64)
        .map(|i| {
            let id = if i % 3 == 0 {
                json!(format!("00000000-0000-4000-8000-{i:012}"))
            } else {
                json!(i)
            };
            let mut p = json!({"id": id, "vector": {"text": [i as f32, 0.1, -0.5, 0.25], "image": [0.5, i as f32 / 7.0]}});
            if i % 5 != 0 {
                p["payload"] = json!({"name": format!("ünïcode {i}"), "nested": {"tags": ["a", null, 3.5], "n": i}});
            }
            p
        })
        .collect();
    req(
        &cs,
        reqwest::Method::PUT,
        format!("{}/collections/named/points?wait=true", src.url()),
        Some(json!({ "points": points })),
    )
    .await;
    let (from_grpc, to_grpc) = (
        format!("http://127.0.0.1:{ga}"),
        format!("http://127.0.0.1:{gb}"),
    );
    let keys = [
        "--from-api-key",
        "source-key",
        "--to-api-key",
        "dest-key",
        "--batch",
        "700",
    ];
    // Only one gRPC address is a usage error; a wrong key is refused by the server.
    let out = migrate(&src.url(), &dst.url(), &["--from-grpc", &from_grpc])
        .args(keys)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--to-grpc"));
    let out = migrate(
        &src.url(),
        &dst.url(),
        &["--from-grpc", &from_grpc, "--to-grpc", &to_grpc],
    )
    .output()
    .unwrap();
    assert!(!out.status.success(), "no keys given");

    let out = migrate(
        &src.url(),
        &dst.url(),
        &["--from-grpc", &from_grpc, "--to-grpc", &to_grpc],
    )
    .args(keys)
    .output()
    .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut all = Vec::new();
    for (c, base) in [(&cs, src.url()), (&cd, dst.url())] {
        let v = req(
            c,
            reqwest::Method::POST,
            format!("{base}/collections/named/points/scroll"),
            Some(json!({"limit": 10_000, "with_payload": true, "with_vector": true})),
        )
        .await;
        all.push(v["points"].clone());
    }
    assert_eq!(all[0].as_array().unwrap().len(), 2500);
    assert_eq!(
        all[0], all[1],
        "every id, payload and vector arrives unchanged"
    );
}

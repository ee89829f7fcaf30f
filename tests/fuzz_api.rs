//! Property-based fuzzing of the REST API through the router: generated methods, paths,
//! query strings and bodies for every route.
//!
//! Every answer must be below 500; every 4xx must be Qdrant's JSON envelope; no body may
//! carry the server's paths; a rejected request must leave collections, aliases and points
//! as they were. `make test` runs a fixed seed and `FUZZ_CASES` (default 1000) cases;
//! `make fuzz` runs many more with a random seed (printed, so a failure can be replayed with
//! `FUZZ_SEED`).

mod common;

use proptest::prelude::*;
use proptest::test_runner::{Config, RngSeed, TestCaseError, TestRunner};
use serde_json::{json, Value};

/// Every route with the methods it serves (others are tried too, less often).
const ROUTES: &[(&str, &[&str])] = &[
    ("/", &["GET"]),
    ("/healthz", &["GET"]),
    ("/readyz", &["GET"]),
    ("/livez", &["GET"]),
    ("/aliases", &["GET"]),
    ("/collections", &["GET"]),
    ("/collections/aliases", &["POST"]),
    ("/collections/{name}", &["GET", "PUT", "PATCH", "DELETE"]),
    ("/collections/{name}/aliases", &["GET"]),
    ("/collections/{name}/exists", &["GET"]),
    ("/collections/{name}/index", &["PUT"]),
    ("/collections/{name}/index/{field}", &["DELETE"]),
    ("/collections/{name}/points", &["POST", "PUT"]),
    ("/collections/{name}/points/batch", &["POST"]),
    ("/collections/{name}/points/count", &["POST"]),
    ("/collections/{name}/points/delete", &["POST"]),
    ("/collections/{name}/points/payload", &["POST", "PUT"]),
    ("/collections/{name}/points/payload/clear", &["POST"]),
    ("/collections/{name}/points/payload/delete", &["POST"]),
    ("/collections/{name}/points/query", &["POST"]),
    ("/collections/{name}/points/query/batch", &["POST"]),
    ("/collections/{name}/points/scroll", &["POST"]),
    ("/collections/{name}/points/search", &["POST"]),
    ("/collections/{name}/points/search/batch", &["POST"]),
    ("/collections/{name}/points/{id}", &["GET"]),
    ("/collections/{name}/shards/{shard}/snapshot", &["GET"]),
    (
        "/collections/{name}/shards/{shard}/snapshots",
        &["GET", "POST"],
    ),
    (
        "/collections/{name}/shards/{shard}/snapshots/recover",
        &["PUT"],
    ),
    (
        "/collections/{name}/shards/{shard}/snapshots/upload",
        &["POST"],
    ),
    (
        "/collections/{name}/shards/{shard}/snapshots/{snapshot}",
        &["GET", "DELETE"],
    ),
    ("/collections/{name}/snapshots", &["GET", "POST"]),
    ("/collections/{name}/snapshots/recover", &["PUT"]),
    ("/collections/{name}/snapshots/upload", &["POST"]),
    (
        "/collections/{name}/snapshots/{snapshot}",
        &["GET", "DELETE"],
    ),
    ("/operations", &["GET"]),
    ("/operations/{id}", &["GET"]),
    ("/snapshots", &["GET", "POST"]),
    ("/snapshots/{snapshot}", &["GET", "DELETE"]),
    ("/no/such/route", &["GET"]),
];

const METHODS: &[&str] = &["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE"];

/// One generated request.
#[derive(Clone, Debug)]
struct Req {
    method: &'static str,
    uri: String,
    content_type: Option<&'static str>,
    body: Vec<u8>,
}

/// Percent-encodes everything but unreserved characters, so any text is a valid path
/// segment or query value.
fn enc(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn segment(named: &'static [&'static str]) -> impl Strategy<Value = String> {
    prop_oneof![
        3 => proptest::sample::select(named).prop_map(str::to_string),
        2 => "[a-z0-9_-]{1,12}".prop_map(|s| s),
        2 => any::<String>().prop_map(|s| enc(&s)),
        1 => (200usize..400).prop_map(|n| "x".repeat(n)),
        1 => proptest::sample::select(&["..", ".", "%2E%2E", "a%2Fb", "%00", "%2F", "~", "-1"][..])
            .prop_map(str::to_string),
    ]
}

fn id() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<u64>().prop_map(|n| n.to_string()),
        any::<i64>().prop_map(|n| n.to_string()),
        Just("550e8400-e29b-41d4-a716-446655440000".to_string()),
        "[0-9a-f-]{1,40}",
        Just("99999999999999999999999".to_string()),
    ]
}

fn query() -> impl Strategy<Value = String> {
    let pair = prop_oneof![
        proptest::sample::select(
            &[
                "wait=true",
                "wait=maybe",
                "wait=",
                "timeout=-1",
                "timeout=abc",
                "priority=snapshot",
                "priority=bogus",
                "checksum=zz",
                "limit=99999999999999999999",
                "offset=-3",
                "ordering=weak",
                "with_payload=maybe",
            ][..]
        )
        .prop_map(str::to_string),
        ("[a-z_]{1,8}", any::<String>()).prop_map(|(k, v)| format!("{k}={}", enc(&v))),
    ];
    proptest::collection::vec(pair, 0..3).prop_map(|v| {
        if v.is_empty() {
            String::new()
        } else {
            format!("?{}", v.join("&"))
        }
    })
}

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(|f| json!(f)),
        ".{0,12}".prop_map(Value::String),
        proptest::sample::select(
            &[
                "keep",
                "Cosine",
                "Dot",
                "file:///etc/passwd",
                "file://../../x",
                "s3://no-such-bucket/x.snapshot",
                "http://127.0.0.1:1/x.snapshot",
                "missing.snapshot",
                "keyword",
            ][..]
        )
        .prop_map(|s| Value::String(s.into())),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            proptest::collection::btree_map(
                proptest::sample::select(
                    &[
                        "vectors",
                        "size",
                        "distance",
                        "points",
                        "id",
                        "vector",
                        "payload",
                        "filter",
                        "must",
                        "key",
                        "match",
                        "value",
                        "location",
                        "checksum",
                        "priority",
                        "limit",
                        "query",
                        "keys",
                        "field_name",
                        "field_schema",
                        "actions",
                        "create_alias",
                        "collection_name",
                        "alias_name",
                        "ids",
                        "with_payload",
                        "offset",
                        "searches",
                        "batch",
                        "upsert",
                    ][..]
                )
                .prop_map(str::to_string),
                inner,
                0..4
            )
            .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn request() -> impl Strategy<Value = Req> {
    let route = proptest::sample::select(ROUTES).prop_flat_map(|(path, served)| {
        let method = prop_oneof![
            6 => proptest::sample::select(served),
            1 => proptest::sample::select(METHODS),
        ];
        (Just(path), method)
    });
    let body = prop_oneof![
        2 => Just((None, Vec::new())),
        4 => json_value().prop_map(|v| (Some("application/json"), v.to_string().into_bytes())),
        1 => proptest::collection::vec(any::<u8>(), 0..256)
            .prop_map(|b| (Some("application/json"), b)),
        1 => proptest::collection::vec(any::<u8>(), 0..256)
            .prop_map(|b| (Some("multipart/form-data; boundary=X"), b)),
    ];
    (
        route,
        segment(&["keep", "other", "gone"]),
        segment(&["keep-1.snapshot", "full-snapshot.snapshot", "x.snapshot"]),
        segment(&["city", "n", "tag"]),
        id(),
        prop_oneof![Just("0".to_string()), Just("1".to_string()), id()],
        query(),
        body,
    )
        .prop_map(
            |((route, method), name, snapshot, field, id, shard, query, (ct, body))| {
                let path = route
                    .replace("{name}", &name)
                    .replace("{snapshot}", &snapshot)
                    .replace("{field}", &field)
                    .replace("{shard}", &shard)
                    .replace("{id}", &id);
                Req {
                    method,
                    uri: format!("{path}{query}"),
                    content_type: ct,
                    body,
                }
            },
        )
}

/// Collections, aliases and every collection's points, as the API reports them.
async fn fingerprint(app: &axum::Router) -> Value {
    let (_, cols) = common::json(app, "GET", "/collections", json!(null)).await;
    let (_, aliases) = common::json(app, "GET", "/aliases", json!(null)).await;
    let mut names: Vec<String> = cols["result"]["collections"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|c| c["name"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    let mut points = serde_json::Map::new();
    for n in &names {
        let (_, v) = common::json(
            app,
            "POST",
            &format!("/collections/{}/points/scroll", enc(n)),
            json!({"limit": 10_000, "with_payload": true, "with_vector": true}),
        )
        .await;
        points.insert(n.clone(), v["result"]["points"].clone());
    }
    let mut aliases = aliases["result"]["aliases"].clone();
    if let Some(a) = aliases.as_array_mut() {
        a.sort_by_key(|v| v.to_string());
    }
    json!({"collections": names, "aliases": aliases, "points": points})
}

async fn seed(app: &axum::Router) {
    // A generated request may have made `keep` an alias; it must be a collection again.
    common::json(
        app,
        "POST",
        "/collections/aliases",
        json!({"actions": [{"delete_alias": {"alias_name": "keep"}}]}),
    )
    .await;
    let (s, v) = common::json(
        app,
        "PUT",
        "/collections/keep",
        json!({"vectors": {"size": 4, "distance": "Cosine"}}),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    let points: Vec<Value> = (0..20)
        .map(|i| json!({"id": i, "vector": [1.0, i as f32, 0.5, -1.0], "payload": {"city": format!("c{}", i % 3), "n": i}}))
        .collect();
    let (s, v) = common::json(
        app,
        "PUT",
        "/collections/keep/points?wait=true",
        json!({ "points": points }),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    // The alias may exist already (a reseed) or its name may have been taken.
    common::json(
        app,
        "POST",
        "/collections/aliases",
        json!({"actions": [{"create_alias": {"collection_name": "keep", "alias_name": "other"}}]}),
    )
    .await;
    let (s, v) = common::json(app, "POST", "/collections/keep/snapshots", json!(null)).await;
    assert_eq!(s, 200, "{v}");
}

async fn check(
    app: &axum::Router,
    root: &str,
    req: &Req,
    seen: &std::sync::Mutex<std::collections::BTreeMap<u16, u32>>,
) -> Result<(), TestCaseError> {
    let mut before = fingerprint(app).await;
    if !before["points"]
        .as_object()
        .is_some_and(|p| p.contains_key("keep"))
    {
        // A generated request deleted it (a valid one): bring the data back so later cases
        // reach the handlers again.
        seed(app).await;
        before = fingerprint(app).await;
    }
    let mut headers = Vec::new();
    if let Some(ct) = req.content_type {
        headers.push(("content-type", ct));
    }
    let (status, resp_headers, body) =
        common::call(app, req.method, &req.uri, &headers, req.body.clone()).await;
    let text = String::from_utf8_lossy(&body);
    *seen.lock().unwrap().entry(status.as_u16()).or_default() += 1;
    prop_assert!(
        !status.is_server_error(),
        "{} {} answered {status}: {text}",
        req.method,
        req.uri
    );
    for secret in [root, "/tmp/", "/root/", "/home/"] {
        prop_assert!(
            !text.contains(secret),
            "{} {} leaked a path ({secret}): {text}",
            req.method,
            req.uri
        );
    }
    if status.is_client_error() {
        let ct = resp_headers
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        prop_assert!(
            ct.starts_with("application/json")
                && v["status"]["error"].as_str().is_some_and(|m| !m.is_empty())
                && v.get("time").is_some(),
            "{} {} answered {status} without the envelope: {ct} {text}",
            req.method,
            req.uri
        );
        let after = fingerprint(app).await;
        prop_assert_eq!(
            &before,
            &after,
            "{} {} was rejected with {} but changed data",
            req.method,
            req.uri,
            status
        );
    }
    Ok(())
}

#[test]
fn generated_requests_get_4xx_envelopes_never_5xx_and_change_nothing_when_rejected() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().display().to_string();
    let app = rt.block_on(async {
        let app = common::test_app(dir.path(), &[]).await;
        seed(&app).await;
        app
    });
    let cases = std::env::var("FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000);
    let seed = std::env::var("FUZZ_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0x5eed_u64);
    eprintln!("fuzzing {cases} requests with FUZZ_SEED={seed}");
    let mut runner = TestRunner::new(Config {
        cases,
        rng_seed: RngSeed::Fixed(seed),
        failure_persistence: None,
        ..Config::default()
    });
    let seen = std::sync::Mutex::new(std::collections::BTreeMap::new());
    let result = runner.run(&request(), |req| {
        rt.block_on(check(&app, &root, &req, &seen))
    });
    if let Err(e) = result {
        panic!("{e}");
    }
    let seen = seen.into_inner().unwrap();
    eprintln!("answers by status: {seen:?}");
    // The generator must reach the handlers, not only the router's rejections.
    let ok: u32 = seen.iter().filter(|(s, _)| **s < 300).map(|(_, n)| n).sum();
    let rejected: u32 = seen
        .iter()
        .filter(|(s, _)| (400..500).contains(*s))
        .map(|(_, n)| n)
        .sum();
    assert!(ok > 0 && rejected > 0, "{seen:?}");
}

//! The service binary with S3 snapshot storage configured only through `QDRANT__`
//! variables, against the real S3 server; objects verified independently with aws-sdk-s3;
//! faults injected by a proxy.

mod common;

use common::proxy::Proxy;
use common::{aws_client, s3_env, unique_prefix, Service};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

fn bucket() -> String {
    std::env::var("S3_TEST_BUCKET").expect("S3_TEST_BUCKET is not set: run `make test`")
}

fn endpoint() -> String {
    std::env::var("S3_TEST_ENDPOINT").expect("S3_TEST_ENDPOINT is not set: run `make test`")
}

async fn api(method: reqwest::Method, url: String, body: Option<Value>) -> (u16, Value) {
    let client = reqwest::Client::new();
    let mut req = client.request(method, url);
    if let Some(b) = body {
        req = req
            .header("content-type", "application/json")
            .body(b.to_string());
    }
    let resp = req.send().await.expect("request");
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap_or_default();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

/// A collection of `n` 768-dimensional points (~3 KiB each).
async fn fill(svc: &Service, name: &str, n: usize) {
    let (s, v) = api(
        reqwest::Method::PUT,
        format!("{}/collections/{name}", svc.url()),
        Some(json!({"vectors": {"size": 768, "distance": "Dot"}})),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    for start in (0..n).step_by(500) {
        let points: Vec<Value> = (start..(start + 500).min(n))
            .map(|i| json!({"id": i, "vector": (0..768).map(|j| ((i * 31 + j) % 97) as f32 / 97.0).collect::<Vec<f32>>()}))
            .collect();
        let (s, v) = api(
            reqwest::Method::PUT,
            format!("{}/collections/{name}/points?wait=true", svc.url()),
            Some(json!({"points": points})),
        )
        .await;
        assert_eq!(s, 200, "{v}");
    }
}

async fn object_bytes(client: &aws_sdk_s3::Client, key: &str) -> Vec<u8> {
    let out = client
        .get_object()
        .bucket(bucket())
        .key(key)
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET {key}: {e:?}"));
    out.body.collect().await.unwrap().into_bytes().to_vec()
}

/// The value of an unlabelled sample in the service's `/metrics`.
async fn metric(svc: &Service, name: &str) -> f64 {
    let text = reqwest::get(format!("{}/metrics", svc.url()))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("{name} not in /metrics:\n{text}"))
}

async fn uploads(client: &aws_sdk_s3::Client, prefix: &str) -> Vec<String> {
    common::multipart_uploads(client, &bucket(), prefix).await
}

#[tokio::test]
async fn snapshots_land_in_the_bucket_with_a_verified_sidecar() {
    let tmp = tempfile::tempdir().unwrap();
    let prefix = unique_prefix("svc");
    let svc = Service::start(tmp.path(), &s3_env(&prefix, &endpoint())).await;
    fill(&svc, "c", 4000).await;
    let (s, v) = api(
        reqwest::Method::POST,
        format!("{}/collections/c/snapshots", svc.url()),
        None,
    )
    .await;
    assert_eq!(s, 200, "{v}");
    let desc = &v["result"];
    let name = desc["name"].as_str().unwrap();
    let s3 = aws_client().await;
    let key = format!("{prefix}/c/{name}");
    let head = s3
        .head_object()
        .bucket(bucket())
        .key(&key)
        .send()
        .await
        .expect("snapshot object exists");
    assert_eq!(
        head.content_length().unwrap() as u64,
        desc["size"].as_u64().unwrap()
    );
    let bytes = object_bytes(&s3, &key).await;
    let sidecar = String::from_utf8(object_bytes(&s3, &format!("{key}.checksum")).await).unwrap();
    assert_eq!(
        sidecar,
        hex::encode(Sha256::digest(&bytes)),
        "sidecar is the SHA-256 of the object"
    );
    assert_eq!(desc["checksum"], sidecar.as_str());
    assert!(bytes.len() > 10 << 20, "big enough to need several parts");
    assert!(uploads(&s3, &prefix).await.is_empty());
    // Nothing of the snapshot touched local disk.
    assert!(!tmp.path().join("snapshots/c").exists());
    // Listing is non-recursive and shows only *.snapshot objects.
    let (s, _) = api(
        reqwest::Method::POST,
        format!("{}/collections/c/shards/0/snapshots", svc.url()),
        None,
    )
    .await;
    assert_eq!(s, 200);
    let (_, listed) = api(
        reqwest::Method::GET,
        format!("{}/collections/c/snapshots", svc.url()),
        None,
    )
    .await;
    let names: Vec<&str> = listed["result"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, vec![name]);
    let (s, _) = api(
        reqwest::Method::DELETE,
        format!("{}/collections/c/snapshots/{name}", svc.url()),
        None,
    )
    .await;
    assert_eq!(s, 200);
    assert!(s3
        .head_object()
        .bucket(bucket())
        .key(&key)
        .send()
        .await
        .is_err());
    assert!(s3
        .head_object()
        .bucket(bucket())
        .key(format!("{key}.checksum"))
        .send()
        .await
        .is_err());
}

#[tokio::test]
async fn a_5xx_on_one_part_is_retried_and_the_snapshot_succeeds() {
    let tmp = tempfile::tempdir().unwrap();
    let prefix = unique_prefix("retry");
    let proxy = Proxy::start(&endpoint()).await;
    let svc = Service::start(tmp.path(), &s3_env(&prefix, &proxy.addr)).await;
    fill(&svc, "c", 4000).await;
    proxy
        .faults
        .fail_one_part
        .store(true, std::sync::atomic::Ordering::SeqCst);
    let (s, v) = api(
        reqwest::Method::POST,
        format!("{}/collections/c/snapshots", svc.url()),
        None,
    )
    .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(
        proxy
            .faults
            .injected
            .load(std::sync::atomic::Ordering::SeqCst),
        1,
        "a 500 was injected: {}",
        svc.log_text()
    );
    assert_eq!(metric(&svc, "snapstream_s3_part_retries_total").await, 1.0);
    let name = v["result"]["name"].as_str().unwrap();
    let s3 = aws_client().await;
    let bytes = object_bytes(&s3, &format!("{prefix}/c/{name}")).await;
    assert_eq!(
        hex::encode(Sha256::digest(&bytes)),
        v["result"]["checksum"].as_str().unwrap()
    );
    assert!(uploads(&s3, &prefix).await.is_empty());
}

#[tokio::test]
async fn s3_dying_mid_upload_fails_cleanly_and_the_next_start_aborts_the_upload() {
    let tmp = tempfile::tempdir().unwrap();
    let prefix = unique_prefix("dies");
    let proxy = Proxy::start(&endpoint()).await;
    let mut env = s3_env(&prefix, &proxy.addr);
    env.push((
        "QDRANT__STORAGE__SNAPSHOTS_CONFIG__S3_CONFIG__MAX_RETRIES".into(),
        "1".into(),
    ));
    env.push((
        "QDRANT__STORAGE__SNAPSHOTS_CONFIG__S3_CONFIG__RETRY_TIMEOUT_SECS".into(),
        "3".into(),
    ));
    let mut svc = Service::start(tmp.path(), &env).await;
    fill(&svc, "c", 4000).await;
    proxy.die_after(8 << 20);
    let (s, v) = api(
        reqwest::Method::POST,
        format!("{}/collections/c/snapshots", svc.url()),
        None,
    )
    .await;
    assert_eq!(s, 500, "{v}");
    let msg = v["status"]["error"].as_str().unwrap();
    assert!(
        msg.contains("snapshot storage failed") || msg.contains("failed to write snapshot"),
        "{msg}\n{}",
        svc.log_text()
    );
    // The service keeps serving.
    let (s, v) = api(
        reqwest::Method::POST,
        format!("{}/collections/c/points/count", svc.url()),
        Some(json!({})),
    )
    .await;
    assert_eq!((s, v["result"]["count"].as_u64()), (200, Some(4000)));
    let s3 = aws_client().await;
    let listed = s3
        .list_objects_v2()
        .bucket(bucket())
        .prefix(format!("{prefix}/"))
        .send()
        .await
        .unwrap();
    let keys: Vec<&str> = listed.contents().iter().filter_map(|o| o.key()).collect();
    assert!(
        keys.is_empty(),
        "no object is visible, found {keys:?}: {}",
        svc.log_text()
    );
    let orphans = uploads(&s3, &prefix).await;
    assert_eq!(
        orphans.len(),
        1,
        "the abort could not reach the dead server, so one upload is left"
    );
    proxy.heal();
    svc.restart().await;
    assert!(
        uploads(&s3, &prefix).await.is_empty(),
        "start-up aborted the orphaned upload"
    );
    assert_eq!(
        metric(&svc, "snapstream_s3_aborted_multipart_uploads_total").await,
        1.0
    );
    // And snapshots work again.
    let (s, v) = api(
        reqwest::Method::POST,
        format!("{}/collections/c/snapshots", svc.url()),
        None,
    )
    .await;
    assert_eq!(s, 200, "{v}");
}

#[tokio::test]
async fn wrong_credentials_and_missing_bucket_are_clear_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let prefix = unique_prefix("creds");
    let mut env = s3_env(&prefix, &endpoint());
    for (k, v) in env.iter_mut() {
        if k.ends_with("SECRET_KEY") {
            *v = "0".repeat(64);
        }
    }
    let svc = Service::start(tmp.path(), &env).await;
    assert!(
        svc.log_text()
            .contains("snapshot storage start-up check failed"),
        "{}",
        svc.log_text()
    );
    fill(&svc, "c", 10).await;
    let (s, v) = api(
        reqwest::Method::POST,
        format!("{}/collections/c/snapshots", svc.url()),
        None,
    )
    .await;
    assert_eq!(s, 500, "{v}");
    let msg = v["status"]["error"].as_str().unwrap();
    // One line naming the storage and what to check, not the SDK's cause chain.
    assert!(
        msg.contains("snapshot storage failed: S3 storage s3://")
            && msg.contains("access denied; check access_key / secret_key"),
        "{msg}"
    );
    assert!(
        !msg.contains("service error") && !msg.contains("http://"),
        "{msg}"
    );
    assert!(
        !msg.contains(&"0".repeat(64)) && !svc.log_text().contains(&"0".repeat(64)),
        "secret leaked"
    );
    let log = svc.log_text();
    let warning = log
        .lines()
        .find(|l| l.contains("snapshot storage start-up check failed"))
        .unwrap();
    assert!(warning.contains("access denied"), "{warning}");
    let ready = reqwest::get(format!("{}/readyz", svc.url())).await.unwrap();
    assert_eq!(ready.status(), 200);
    let ready = ready.text().await.unwrap();
    assert!(
        ready.contains("snapshot storage failing") && ready.contains("access denied"),
        "{ready}"
    );
    drop(svc);

    let tmp = tempfile::tempdir().unwrap();
    let mut env = s3_env(&prefix, &endpoint());
    for (k, v) in env.iter_mut() {
        if k.ends_with("BUCKET") {
            *v = "no-such-bucket-snapstream".into();
        }
    }
    let svc = Service::start(tmp.path(), &env).await;
    assert!(svc
        .log_text()
        .contains("snapshot storage start-up check failed"));
    fill(&svc, "c", 10).await;
    let (s, v) = api(
        reqwest::Method::GET,
        format!("{}/collections/c/snapshots", svc.url()),
        None,
    )
    .await;
    assert_eq!(s, 500, "{v}");
    let msg = v["status"]["error"].as_str().unwrap();
    assert!(
        msg.contains("snapshot storage failed") && msg.contains("bucket does not exist"),
        "{msg}"
    );
}

#[tokio::test]
async fn a_qdrant_snapshot_in_the_bucket_recovers_by_s3_url_and_bare_name() {
    let tmp = tempfile::tempdir().unwrap();
    let prefix = unique_prefix("qdrant");
    let svc = Service::start(tmp.path(), &s3_env(&prefix, &endpoint())).await;
    let fixture = std::fs::read(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/qdrant-1.19/papers.snapshot"),
    )
    .unwrap();
    let key = format!("{prefix}/papers/from-qdrant.snapshot");
    aws_client()
        .await
        .put_object()
        .bucket(bucket())
        .key(&key)
        .body(fixture.into())
        .send()
        .await
        .expect("put the fixture");
    let (s, v) = api(
        reqwest::Method::PUT,
        format!("{}/collections/from_s3/snapshots/recover", svc.url()),
        Some(json!({"location": format!("s3://{}/{key}", bucket())})),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    common::assert_qdrant_fixture(&svc.url(), "from_s3", "papers").await;
    let (s, v) = api(
        reqwest::Method::PUT,
        format!("{}/collections/papers/snapshots/recover", svc.url()),
        Some(json!({"location": "from-qdrant.snapshot"})),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    common::assert_qdrant_fixture(&svc.url(), "papers", "papers").await;
}

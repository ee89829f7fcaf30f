//! Helpers shared by the integration tests.
#![allow(dead_code, unreachable_pub, missing_docs)]

use snapstream::config::{S3Config, Secret};

/// The real S3 server started by `minio/start.sh` (`make test` starts it). Missing
/// configuration is a failure, never a skip: these tests exist to run against a server.
pub fn s3_config(prefix: &str) -> S3Config {
    let var = |k: &str| {
        std::env::var(k).unwrap_or_else(|_| {
            panic!("{k} is not set: start the S3 test server with `bash minio/start.sh` and source .s3-server/env (make test does both)")
        })
    };
    S3Config {
        bucket: var("S3_TEST_BUCKET"),
        region: var("S3_TEST_REGION"),
        access_key: Some(Secret::new(var("S3_TEST_ACCESS_KEY"))),
        secret_key: Some(Secret::new(var("S3_TEST_SECRET_KEY"))),
        endpoint_url: Some(var("S3_TEST_ENDPOINT")),
        prefix: prefix.to_string(),
        part_size: 5 << 20,
        upload_concurrency: 4,
        path_style: true,
        max_retries: 3,
        retry_timeout_secs: 20,
    }
}

/// A fresh random prefix so tests sharing the bucket never see each other's objects.
pub fn unique_prefix(name: &str) -> String {
    format!("test-{name}-{}", uuid::Uuid::new_v4().simple())
}

/// Every in-progress multipart upload under `prefix`, read independently with aws-sdk-s3.
pub async fn multipart_uploads(client: &aws_sdk_s3::Client, bucket: &str, prefix: &str) -> Vec<String> {
    let out = client
        .list_multipart_uploads()
        .bucket(bucket)
        .prefix(format!("{prefix}/"))
        .send()
        .await
        .expect("ListMultipartUploads");
    out.uploads().iter().filter_map(|u| u.key().map(str::to_string)).collect()
}

/// A configuration rooted in `dir`, with extra `QDRANT__*` overrides.
pub fn test_config(dir: &std::path::Path, extra: &[(&str, &str)]) -> snapstream::config::Config {
    let mut layers = snapstream::config::Layers::new().unwrap();
    let mut vars = vec![
        ("QDRANT__STORAGE__STORAGE_PATH".to_string(), dir.join("storage").display().to_string()),
        ("QDRANT__STORAGE__SNAPSHOTS_PATH".to_string(), dir.join("snapshots").display().to_string()),
    ];
    vars.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    layers.add_env(vars);
    layers.build(&|_| None).unwrap()
}

/// A router over fresh storage in `dir`.
pub async fn test_app(dir: &std::path::Path, extra: &[(&str, &str)]) -> axum::Router {
    let state = snapstream::build_state(test_config(dir, extra)).await.unwrap();
    snapstream::router(state)
}

/// Sends one request through the router and returns status, headers and body bytes.
pub async fn call(
    app: &axum::Router,
    method: &str,
    uri: &str,
    headers: &[(&str, &str)],
    body: impl Into<axum::body::Body>,
) -> (axum::http::StatusCode, axum::http::HeaderMap, bytes::Bytes) {
    use http_body_util::BodyExt;
    use tower::ServiceExt;
    let mut req = axum::http::Request::builder().method(method).uri(uri);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = app.clone().oneshot(req.body(body.into()).unwrap()).await.unwrap();
    let status = resp.status();
    let headers = resp.headers().clone();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    (status, headers, bytes)
}

/// Like [`call`] with a JSON body, returning the parsed JSON answer.
pub async fn json(
    app: &axum::Router,
    method: &str,
    uri: &str,
    body: serde_json::Value,
) -> (axum::http::StatusCode, serde_json::Value) {
    let (status, _, bytes) =
        call(app, method, uri, &[("content-type", "application/json")], body.to_string()).await;
    let v = serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::String(String::from_utf8_lossy(&bytes).into()));
    (status, v)
}

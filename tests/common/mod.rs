//! Helpers shared by the integration tests.
#![allow(dead_code, unreachable_pub, missing_docs)]

pub mod proxy;

use snapstream::storage::{AzureOptions, GcsOptions, S3Options, Transfer};
use snapstream::Secret;

/// The real S3 server started by `minio/start.sh` (`make test` starts it). Missing
/// configuration is a failure, never a skip: these tests exist to run against a server.
pub fn s3_config(prefix: &str) -> S3Options {
    let var = |k: &str| {
        std::env::var(k).unwrap_or_else(|_| {
            panic!("{k} is not set: start the S3 test server with `bash minio/start.sh` and source .s3-server/env (make test does both)")
        })
    };
    S3Options {
        bucket: var("S3_TEST_BUCKET"),
        region: var("S3_TEST_REGION"),
        access_key: Some(Secret::new(var("S3_TEST_ACCESS_KEY"))),
        secret_key: Some(Secret::new(var("S3_TEST_SECRET_KEY"))),
        endpoint_url: Some(var("S3_TEST_ENDPOINT")),
        prefix: prefix.to_string(),
        path_style: true,
        transfer: test_transfer(),
    }
}

/// Small parts, few retries: what the tests of every cloud use.
pub fn test_transfer() -> Transfer {
    Transfer {
        part_size: 5 << 20,
        upload_concurrency: 4,
        max_retries: 3,
        retry_timeout_secs: 20,
        request_timeout_secs: 10,
    }
}

/// A variable the emulators' start script writes (`emulators/start.sh`; make test runs it).
fn emulator_var(k: &str) -> String {
    std::env::var(k).unwrap_or_else(|_| {
        panic!("{k} is not set: start the emulators with `bash emulators/start.sh` and source .emulators/env (make test does both)")
    })
}

/// The Azurite server started by `emulators/start.sh`, with its well-known account.
pub fn azure_config(prefix: &str) -> AzureOptions {
    AzureOptions {
        container: emulator_var("AZURE_TEST_CONTAINER"),
        account: Some(emulator_var("AZURE_TEST_ACCOUNT")),
        access_key: Some(Secret::new(emulator_var("AZURE_TEST_KEY"))),
        sas_token: None,
        endpoint_url: Some(emulator_var("AZURE_TEST_ENDPOINT")),
        prefix: prefix.to_string(),
        transfer: test_transfer(),
    }
}

/// The fake-gcs-server started by `emulators/start.sh`.
pub fn gcs_config(prefix: &str) -> GcsOptions {
    GcsOptions {
        bucket: emulator_var("GCS_TEST_BUCKET"),
        service_account_path: None,
        service_account_key: None,
        endpoint_url: Some(emulator_var("GCS_TEST_ENDPOINT")),
        anonymous: true,
        prefix: prefix.to_string(),
        transfer: test_transfer(),
    }
}

/// The bytes of `key` (or of `range` of it), read through `b`.
pub async fn read_object(
    b: &dyn snapstream::storage::Backend,
    key: &snapstream::storage::ObjectKey,
    range: Option<std::ops::Range<u64>>,
) -> Vec<u8> {
    use futures::TryStreamExt;
    let chunks: Vec<bytes::Bytes> = b
        .open(key, range)
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    chunks.concat()
}

/// A fresh random prefix so tests sharing the bucket never see each other's objects.
pub fn unique_prefix(name: &str) -> String {
    format!("test-{name}-{}", uuid::Uuid::new_v4().simple())
}

/// Every in-progress multipart upload under `prefix`, read independently with aws-sdk-s3.
pub async fn multipart_uploads(
    client: &aws_sdk_s3::Client,
    bucket: &str,
    prefix: &str,
) -> Vec<String> {
    let out = client
        .list_multipart_uploads()
        .bucket(bucket)
        .prefix(format!("{prefix}/"))
        .send()
        .await
        .expect("ListMultipartUploads");
    out.uploads()
        .iter()
        .filter_map(|u| u.key().map(str::to_string))
        .collect()
}

/// A configuration rooted in `dir`, with extra `QDRANT__*` overrides.
pub fn test_config(dir: &std::path::Path, extra: &[(&str, &str)]) -> snapstream::config::Config {
    let mut layers = snapstream::config::Layers::new().unwrap();
    let mut vars = vec![
        (
            "QDRANT__STORAGE__STORAGE_PATH".to_string(),
            dir.join("storage").display().to_string(),
        ),
        (
            "QDRANT__STORAGE__SNAPSHOTS_PATH".to_string(),
            dir.join("snapshots").display().to_string(),
        ),
    ];
    vars.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    layers.add_env(vars);
    layers.build(&|_| None).unwrap()
}

/// A router over fresh storage in `dir`.
pub async fn test_app(dir: &std::path::Path, extra: &[(&str, &str)]) -> axum::Router {
    let state = snapstream::build_state(test_config(dir, extra))
        .await
        .unwrap();
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
    let resp = app
        .clone()
        .oneshot(req.body(body.into()).unwrap())
        .await
        .unwrap();
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
    let (status, _, bytes) = call(
        app,
        method,
        uri,
        &[("content-type", "application/json")],
        body.to_string(),
    )
    .await;
    let v = serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::String(
        String::from_utf8_lossy(&bytes).into(),
    ));
    (status, v)
}

/// An aws-sdk-s3 client built here, independently of the code under test.
pub async fn aws_client() -> aws_sdk_s3::Client {
    let var =
        |k: &str| std::env::var(k).unwrap_or_else(|_| panic!("{k} is not set: run `make test`"));
    let conf = aws_sdk_s3::config::Builder::new()
        .behavior_version(aws_sdk_s3::config::BehaviorVersion::latest())
        .region(aws_sdk_s3::config::Region::new(var("S3_TEST_REGION")))
        .endpoint_url(var("S3_TEST_ENDPOINT"))
        .force_path_style(true)
        .credentials_provider(aws_sdk_s3::config::Credentials::new(
            var("S3_TEST_ACCESS_KEY"),
            var("S3_TEST_SECRET_KEY"),
            None,
            None,
            "test",
        ))
        .build();
    aws_sdk_s3::Client::from_conf(conf)
}

/// The snapstream binary as a child process with its own storage; killed on drop.
pub struct Service {
    pub child: std::process::Child,
    pub port: u16,
    pub log: std::path::PathBuf,
    pub env: Vec<(String, String)>,
    pub args: Vec<String>,
    pub root: std::path::PathBuf,
}

/// A TCP port that was free a moment ago.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Service {
    pub async fn start(root: &std::path::Path, env: &[(String, String)]) -> Service {
        Self::start_with_args(root, env, &[]).await
    }

    /// Starts the binary with command-line arguments (start-up recovery).
    pub async fn start_with_args(
        root: &std::path::Path,
        env: &[(String, String)],
        args: &[&str],
    ) -> Service {
        let port = free_port();
        let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        let mut s = Service {
            child: Self::spawn(root, port, env, &args),
            port,
            log: root.join(format!("service-{port}.log")),
            env: env.to_vec(),
            args,
            root: root.to_path_buf(),
        };
        s.wait_ready().await;
        s
    }

    fn spawn(
        root: &std::path::Path,
        port: u16,
        env: &[(String, String)],
        args: &[String],
    ) -> std::process::Child {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(root.join(format!("service-{port}.log")))
            .unwrap();
        std::process::Command::new(env!("CARGO_BIN_EXE_snapstream"))
            .args(args)
            .current_dir(root)
            .env("QDRANT__SERVICE__HTTP_PORT", port.to_string())
            .env("QDRANT__STORAGE__STORAGE_PATH", root.join("storage"))
            .env("QDRANT__STORAGE__SNAPSHOTS_PATH", root.join("snapshots"))
            .env("RUST_LOG", "info")
            // Tests run in parallel: gRPC only where a test asks for a port.
            .env("QDRANT__SERVICE__GRPC_PORT", "null")
            .envs(env.iter().map(|(k, v)| (k.clone(), v.clone())))
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("spawn snapstream")
    }

    async fn wait_ready(&mut self) {
        for _ in 0..300 {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("snapstream exited with {status}: {}", self.log_text());
            }
            if let Ok(r) = reqwest::get(format!("{}/readyz", self.url())).await {
                if r.status().is_success() {
                    return;
                }
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        panic!("snapstream did not become ready: {}", self.log_text());
    }

    pub async fn restart(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.child = Self::spawn(&self.root, self.port, &self.env, &self.args);
        self.wait_ready().await;
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `QDRANT__` variables that put snapshots in the test bucket under `prefix`, via `endpoint`.
pub fn s3_env(prefix: &str, endpoint: &str) -> Vec<(String, String)> {
    let var =
        |k: &str| std::env::var(k).unwrap_or_else(|_| panic!("{k} is not set: run `make test`"));
    let p = "QDRANT__STORAGE__SNAPSHOTS_CONFIG__";
    vec![
        (format!("{p}SNAPSHOTS_STORAGE"), "s3".into()),
        (format!("{p}S3_CONFIG__BUCKET"), var("S3_TEST_BUCKET")),
        (format!("{p}S3_CONFIG__REGION"), var("S3_TEST_REGION")),
        (
            format!("{p}S3_CONFIG__ACCESS_KEY"),
            var("S3_TEST_ACCESS_KEY"),
        ),
        (
            format!("{p}S3_CONFIG__SECRET_KEY"),
            var("S3_TEST_SECRET_KEY"),
        ),
        (format!("{p}S3_CONFIG__ENDPOINT_URL"), endpoint.to_string()),
        (format!("{p}S3_CONFIG__PREFIX"), prefix.to_string()),
        (format!("{p}S3_CONFIG__PART_SIZE"), (5u64 << 20).to_string()),
        (format!("{p}S3_CONFIG__UPLOAD_CONCURRENCY"), "4".into()),
    ]
}

/// Serves the gRPC API (and REST, on its own port) over fresh storage in `dir`; returns
/// the services and the two base URLs `(rest, grpc)`.
pub async fn start_servers(
    dir: &std::path::Path,
    extra: &[(&str, &str)],
) -> (snapstream::Services, String, String) {
    let services = snapstream::build_state(test_config(dir, extra))
        .await
        .unwrap();
    let grpc = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let rest = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let (g, r) = (grpc.local_addr().unwrap(), rest.local_addr().unwrap());
    let s = services.clone();
    tokio::spawn(async move {
        snapstream::serve_grpc(s, grpc, std::future::pending())
            .await
            .unwrap()
    });
    let app = snapstream::router(services.clone());
    tokio::spawn(async move { axum::serve(rest, app).await.unwrap() });
    (services, format!("http://{r}"), format!("http://{g}"))
}

/// A multipart body with one file field, and its content type.
pub fn multipart(field: &str, file: &[u8]) -> (String, Vec<u8>) {
    let boundary = "snapstreamtestboundary";
    let mut body = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"{field}\"; filename=\"up.snapshot\"\r\nContent-Type: application/octet-stream\r\n\r\n"
    )
    .into_bytes();
    body.extend_from_slice(file);
    body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    (format!("multipart/form-data; boundary={boundary}"), body)
}

/// A ustar header.
pub fn tar_header(name: &[u8], kind: u8, size: u64, link: &[u8]) -> [u8; 512] {
    let mut h = [0u8; 512];
    h[..name.len()].copy_from_slice(name);
    h[100..108].copy_from_slice(b"0000644\0");
    h[108..116].copy_from_slice(b"0000000\0");
    h[116..124].copy_from_slice(b"0000000\0");
    h[124..136].copy_from_slice(format!("{size:011o}\0").as_bytes());
    h[136..148].copy_from_slice(b"00000000000\0");
    h[156] = kind;
    h[157..157 + link.len()].copy_from_slice(link);
    h[257..263].copy_from_slice(b"ustar\0");
    h[263..265].copy_from_slice(b"00");
    h[148..156].copy_from_slice(b"        ");
    let sum: u32 = h.iter().map(|&b| b as u32).sum();
    h[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
    h
}

/// One tar entry, padded.
pub fn entry(name: &str, kind: u8, data: &[u8], link: &str) -> Vec<u8> {
    let mut v = tar_header(name.as_bytes(), kind, data.len() as u64, link.as_bytes()).to_vec();
    v.extend_from_slice(data);
    v.resize(v.len().div_ceil(512) * 512, 0);
    v
}

/// Entries followed by the end-of-archive blocks.
pub fn build(parts: &[Vec<u8>]) -> Vec<u8> {
    let mut v: Vec<u8> = parts.concat();
    v.extend_from_slice(&[0u8; 1024]);
    v
}

/// The JSON Qdrant reported for fixture `name` (`tests/fixtures/qdrant-1.19/NAME.expected.json.gz`).
#[allow(dead_code)]
pub fn qdrant_expected(name: &str) -> serde_json::Value {
    let gz = std::fs::read(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(format!(
            "tests/fixtures/qdrant-1.19/{name}.expected.json.gz"
        )),
    )
    .unwrap();
    let mut text = String::new();
    std::io::Read::read_to_string(&mut flate2::read::GzDecoder::new(&gz[..]), &mut text).unwrap();
    serde_json::from_str(&text).unwrap()
}

/// Checks, over HTTP at `url`, that `collection` holds what Qdrant reported for fixture
/// `fixture`: the point count, every payload, and the top-10 ids of each fixed query.
#[allow(dead_code)]
pub async fn assert_qdrant_fixture(url: &str, collection: &str, fixture: &str) {
    use serde_json::{json, Value};
    let exp = qdrant_expected(fixture);
    let client = reqwest::Client::new();
    let post = |path: String, body: Value| {
        let req = client.post(format!("{url}{path}")).json(&body);
        async move { req.send().await.unwrap().json::<Value>().await.unwrap() }
    };
    let v = post(
        format!("/collections/{collection}/points/scroll"),
        json!({"limit": 100_000, "with_payload": true}),
    )
    .await;
    let got = v["result"]["points"].as_array().expect("scroll answer");
    assert_eq!(got.len() as u64, exp["points_count"].as_u64().unwrap());
    for w in exp["points"].as_array().unwrap() {
        let g = got.iter().find(|g| g["id"] == w["id"]).expect("point");
        assert_eq!(g["payload"], w["payload"], "payload of {}", w["id"]);
    }
    for q in exp["queries"].as_array().unwrap() {
        let mut body = json!({"query": q["query"], "limit": 10});
        if !q["using"].is_null() {
            body["using"] = q["using"].clone();
        }
        let r = post(format!("/collections/{collection}/points/query"), body).await;
        let ids: Vec<Value> = r["result"]["points"]
            .as_array()
            .expect("query answer")
            .iter()
            .map(|h| h["id"].clone())
            .collect();
        assert_eq!(Value::Array(ids), q["ids"], "top-10 of {collection}");
    }
}

/// Recovers collection `name` from `archive` through the upload endpoint, as a client
/// uploads it; returns the status and the body.
pub async fn upload_snapshot(
    app: &axum::Router,
    name: &str,
    archive: &[u8],
) -> (axum::http::StatusCode, bytes::Bytes) {
    let (ct, body) = multipart("snapshot", archive);
    let (s, _, resp) = call(
        app,
        "POST",
        &format!("/collections/{name}/snapshots/upload?wait=true"),
        &[("content-type", &ct)],
        body,
    )
    .await;
    (s, resp)
}

//! Regression tests for answers to bad input: each case once met a 5xx, an empty body or a
//! library's wording.

mod common;

use axum::http::StatusCode;
use common::{call, json, test_app};
use serde_json::{json, Value};

fn envelope(body: &[u8]) -> String {
    let v: Value = serde_json::from_slice(body).expect("a JSON envelope");
    v["status"]["error"]
        .as_str()
        .expect("status.error")
        .to_string()
}

#[tokio::test]
async fn over_long_names_in_snapshot_paths_are_4xx_without_paths() {
    let tmp = tempfile::tempdir().unwrap();
    let app = test_app(tmp.path(), &[]).await;
    let long = "x".repeat(300);
    let root = tmp.path().display().to_string();
    for (method, uri) in [
        ("GET", format!("/collections/{long}/snapshots/a.snapshot")),
        (
            "DELETE",
            format!("/collections/{long}/snapshots/a.snapshot"),
        ),
        (
            "GET",
            format!("/collections/{long}/shards/0/snapshots/a.snapshot"),
        ),
        ("GET", format!("/collections/c/snapshots/{long}")),
        ("DELETE", format!("/snapshots/{long}")),
        ("GET", format!("/snapshots/{long}")),
    ] {
        let (s, _, body) = call(&app, method, &uri, &[], "").await;
        assert!(s.is_client_error(), "{method} {uri}: {s}");
        let msg = envelope(&body);
        assert!(!msg.contains(&root) && !msg.contains("/tmp"), "{msg}");
    }
    let (s, v) = json(
        &app,
        "PUT",
        &format!("/collections/{long}/snapshots/recover"),
        json!({"location": "a.snapshot"}),
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
    assert!(v["status"]["error"]
        .as_str()
        .unwrap()
        .contains("between 1 and 255"));
}

#[tokio::test]
async fn framework_errors_use_the_envelope() {
    let tmp = tempfile::tempdir().unwrap();
    let app = test_app(tmp.path(), &[("QDRANT__SERVICE__MAX_REQUEST_SIZE_MB", "1")]).await;
    let (s, h, body) = call(&app, "PATCH", "/collections", &[], "").await;
    assert_eq!(s, StatusCode::METHOD_NOT_ALLOWED);
    assert!(envelope(&body).contains("Method not allowed"));
    assert!(h.get("allow").is_some(), "the Allow header is kept");
    let big = format!(
        "{{\"vectors\": {{\"size\": 4, \"distance\": \"Dot\"}}, \"x\": \"{}\"}}",
        "a".repeat(2 << 20)
    );
    let (s, _, body) = call(
        &app,
        "PUT",
        "/collections/c",
        &[("content-type", "application/json")],
        big,
    )
    .await;
    assert_eq!(s, StatusCode::PAYLOAD_TOO_LARGE);
    assert!(!envelope(&body).is_empty());
    let (s, _, body) = call(&app, "GET", "/no/such/thing", &[], "").await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert!(!envelope(&body).is_empty());
}

#[tokio::test]
async fn a_file_that_is_not_a_snapshot_says_so_plainly() {
    let tmp = tempfile::tempdir().unwrap();
    let app = test_app(tmp.path(), &[]).await;
    let snapshots = tmp.path().join("snapshots");
    std::fs::create_dir_all(&snapshots).unwrap();
    let page = snapshots.join("page.snapshot");
    std::fs::write(
        &page,
        "{\"result\": [1, 2, 3], \"status\": \"ok\"}\n".repeat(40),
    )
    .unwrap();
    let (s, v) = json(
        &app,
        "PUT",
        "/collections/c/snapshots/recover",
        json!({"location": format!("file://{}", page.display())}),
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
    let msg = v["status"]["error"].as_str().unwrap();
    assert!(msg.starts_with("Wrong input: invalid snapshot"), "{msg}");
    assert!(
        !msg.contains("other error") && !msg.contains(&tmp.path().display().to_string()),
        "{msg}"
    );
}

#[tokio::test]
async fn a_bare_name_that_is_not_stored_says_where_it_looked() {
    let tmp = tempfile::tempdir().unwrap();
    let app = test_app(tmp.path(), &[]).await;
    let (s, v) = json(
        &app,
        "PUT",
        "/collections/c/snapshots/recover",
        json!({"location": "nightly.snapshot"}),
    )
    .await;
    assert_eq!(s, StatusCode::NOT_FOUND, "{v}");
    let msg = v["status"]["error"].as_str().unwrap();
    assert!(
        msg.contains("snapshots_path/c/") && msg.contains("file://"),
        "{msg}"
    );
    let (_, exists) = json(&app, "GET", "/collections/c/exists", json!(null)).await;
    assert_eq!(exists["result"]["exists"], false);
}

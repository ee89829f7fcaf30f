//! What a new user sees from the binary: the start-up line, hints for typos, refusals of bad
//! values, `--help`, and a clean stop.

mod common;

use std::process::Command;

#[tokio::test]
async fn start_up_says_what_it_is_hints_at_typos_and_stops_cleanly() {
    let tmp = tempfile::tempdir().unwrap();
    let mut svc = common::Service::start(
        tmp.path(),
        &[(
            "QDRANT__STORAGE__SNAPSHOT_PATH".to_string(),
            "elsewhere".to_string(),
        )],
    )
    .await;
    let log = svc.log_text();
    assert!(
        log.contains(&format!("ready: REST on 127.0.0.1:{}", svc.port))
            && log.contains("gRPC on off")
            && log.contains("snapshots in local"),
        "{log}"
    );
    assert!(
        log.contains("`storage.snapshot_path`")
            && log.contains("did you mean `storage.snapshots_path`?"),
        "{log}"
    );
    assert!(!log.contains('\u{1b}'), "colour codes in a log file: {log}");
    let pid = svc.child.id().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    let status = svc.child.wait().unwrap();
    assert!(status.success(), "{status}");
    assert!(
        svc.log_text().contains("stopped cleanly"),
        "{}",
        svc.log_text()
    );
}

#[test]
fn a_log_level_typo_stops_start_up_with_the_key_and_its_origin() {
    let tmp = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_snapstream"))
        .current_dir(tmp.path())
        .env("QDRANT__LOG_LEVEL", "verbose")
        .env("QDRANT__SERVICE__HTTP_PORT", "1")
        .env_remove("RUST_LOG")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("log_level") && err.contains("QDRANT__LOG_LEVEL") && err.contains("verbose"),
        "{err}"
    );
}

#[test]
fn help_names_the_environment_scheme_defaults_and_docs() {
    let out = Command::new(env!("CARGO_BIN_EXE_snapstream"))
        .arg("--help")
        .output()
        .unwrap();
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for needle in [
        "QDRANT__SECTION__KEY",
        "6333",
        "6334",
        "./snapshots",
        "docs/configuration.md",
    ] {
        assert!(
            help.contains(needle),
            "{needle} missing from --help:\n{help}"
        );
    }
}

#[tokio::test]
async fn an_unreachable_bucket_is_one_line_in_readyz_and_each_snapshot_call() {
    let tmp = tempfile::tempdir().unwrap();
    let p = "QDRANT__STORAGE__SNAPSHOTS_CONFIG__";
    let env: Vec<(String, String)> = [
        ("SNAPSHOTS_STORAGE", "s3"),
        ("S3_CONFIG__BUCKET", "b"),
        ("S3_CONFIG__ENDPOINT_URL", "http://127.0.0.1:1"),
        ("S3_CONFIG__ACCESS_KEY", "ak"),
        ("S3_CONFIG__SECRET_KEY", "sk-not-to-be-shown"),
        ("S3_CONFIG__MAX_RETRIES", "1"),
    ]
    .iter()
    .map(|(k, v)| (format!("{p}{k}"), v.to_string()))
    .collect();
    let svc = common::Service::start(tmp.path(), &env).await;
    let ready = reqwest::get(format!("{}/readyz", svc.url()))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        ready.contains("S3 storage s3://b/snapshots: cannot connect; check endpoint_url"),
        "{ready}"
    );
    let c = reqwest::Client::new();
    let r = c
        .put(format!("{}/collections/c", svc.url()))
        .json(&serde_json::json!({"vectors": {"size": 2, "distance": "Dot"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "collections keep serving");
    let r = c
        .post(format!("{}/collections/c/snapshots", svc.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 500);
    let msg = r.text().await.unwrap();
    assert!(
        msg.contains("cannot connect") && !msg.contains("error sending request"),
        "{msg}"
    );
    assert!(!svc.log_text().contains("sk-not-to-be-shown"));
}

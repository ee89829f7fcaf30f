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

//! Snapshot endpoints through the router: create/list/download/delete, recovery from
//! file:// and upload, checksums, hostile archives, background operations.

mod common;

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use axum::http::StatusCode;
use common::{build, call, entry, json, multipart, test_app, upload_snapshot};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

async fn setup(app: &axum::Router, name: &str, n: u64) {
    let (s, _) = json(
        app,
        "PUT",
        &format!("/collections/{name}"),
        json!({"vectors": {"size": 4, "distance": "Dot"}}),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    let points: Vec<Value> = (0..n)
        .map(|i| json!({"id": i, "vector": [i as f32, 1.0, (i % 7) as f32, 0.5], "payload": {"i": i, "tag": format!("t{}", i % 3)}}))
        .collect();
    let (s, v) = json(
        app,
        "PUT",
        &format!("/collections/{name}/points?wait=true"),
        json!({"points": points}),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
}

async fn all_points(app: &axum::Router, name: &str) -> Value {
    let (s, v) = json(
        app,
        "POST",
        &format!("/collections/{name}/points/scroll"),
        json!({"limit": 100000, "with_vector": true}),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    v["result"]["points"].clone()
}

async fn create_snapshot(app: &axum::Router, name: &str) -> Value {
    let (s, v) = json(
        app,
        "POST",
        &format!("/collections/{name}/snapshots?wait=true"),
        json!(null),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    v["result"].clone()
}

async fn download(app: &axum::Router, uri: &str) -> Vec<u8> {
    let (s, h, body) = call(app, "GET", uri, &[], "").await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(
        h["content-length"]
            .to_str()
            .unwrap()
            .parse::<usize>()
            .unwrap(),
        body.len()
    );
    body.to_vec()
}

fn sha256_hex(b: &[u8]) -> String {
    hex::encode(Sha256::digest(b))
}

/// Nothing but live collections and empty work areas exist under storage.
fn assert_no_leftovers(root: &Path) {
    for work in [".staging", ".trash"] {
        let dir = root.join("storage").join(work);
        let n = std::fs::read_dir(&dir).map(|d| d.count()).unwrap_or(0);
        assert_eq!(n, 0, "{} is not empty", dir.display());
    }
}

#[tokio::test]
async fn create_list_download_recover_delete() {
    let tmp = tempfile::tempdir().unwrap();
    let app = test_app(tmp.path(), &[]).await;
    setup(&app, "src", 300).await;
    let desc = create_snapshot(&app, "src").await;
    let name = desc["name"].as_str().unwrap().to_string();
    assert!(
        name.starts_with("src-") && name.ends_with(".snapshot"),
        "{name}"
    );
    assert!(desc["creation_time"].as_str().unwrap().len() == 19);
    let (_, listed) = json(&app, "GET", "/collections/src/snapshots", json!(null)).await;
    assert_eq!(listed["result"], json!([desc.clone()]));
    // Qdrant's on-disk layout: the snapshot and its sidecar in {snapshots_path}/{collection}/.
    let on_disk = tmp.path().join("snapshots/src").join(&name);
    let sidecar = std::fs::read_to_string(format!("{}.checksum", on_disk.display())).unwrap();
    assert_eq!(sidecar.len(), 64);
    let bytes = download(&app, &format!("/collections/src/snapshots/{name}")).await;
    assert_eq!(bytes.len() as u64, desc["size"].as_u64().unwrap());
    assert_eq!(sha256_hex(&bytes), desc["checksum"].as_str().unwrap());
    assert_eq!(sidecar, sha256_hex(&bytes));
    // Ranges.
    let (s, h, part) = call(
        &app,
        "GET",
        &format!("/collections/src/snapshots/{name}"),
        &[("range", "bytes=100-199")],
        "",
    )
    .await;
    assert_eq!(s, StatusCode::PARTIAL_CONTENT);
    assert_eq!(&part[..], &bytes[100..200]);
    assert_eq!(
        h["content-range"],
        format!("bytes 100-199/{}", bytes.len()).as_str()
    );
    assert_eq!(h["x-checksum-sha256"], sidecar.as_str());

    // Recover into a new collection from file:// with priority and checksum.
    let loc = format!("file://{}", on_disk.display());
    let (s, v) = json(
        &app,
        "PUT",
        "/collections/copy/snapshots/recover?wait=true",
        json!({"location": loc, "priority": "snapshot", "checksum": sidecar}),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["result"], json!(true));
    assert_eq!(
        all_points(&app, "copy").await,
        all_points(&app, "src").await
    );
    let (_, info) = json(&app, "GET", "/collections/copy", json!(null)).await;
    assert_eq!(
        info["result"]["config"]["params"]["vectors"],
        json!({"size": 4, "distance": "Dot"})
    );
    assert_no_leftovers(tmp.path());

    let (s, v) = json(
        &app,
        "DELETE",
        &format!("/collections/src/snapshots/{name}?wait=true"),
        json!(null),
    )
    .await;
    assert_eq!((s, v["result"].clone()), (StatusCode::OK, json!(true)));
    assert!(!on_disk.exists());
    assert!(!Path::new(&format!("{}.checksum", on_disk.display())).exists());
    let (s, v) = json(
        &app,
        "DELETE",
        &format!("/collections/src/snapshots/{name}"),
        json!(null),
    )
    .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert_eq!(
        v["status"]["error"],
        format!("Not found: Snapshot {name} not found")
    );
}

#[tokio::test]
async fn same_second_snapshots_never_overwrite_each_other() {
    let tmp = tempfile::tempdir().unwrap();
    let app = test_app(tmp.path(), &[]).await;
    setup(&app, "c", 10).await;
    let (a, b) = tokio::join!(create_snapshot(&app, "c"), create_snapshot(&app, "c"));
    assert_ne!(a["name"], b["name"]);
    let (_, listed) = json(&app, "GET", "/collections/c/snapshots", json!(null)).await;
    assert_eq!(listed["result"].as_array().unwrap().len(), 2);
}

#[tokio::test]
async fn wrong_checksum_and_bad_locations_change_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let app = test_app(tmp.path(), &[]).await;
    setup(&app, "src", 20).await;
    let name = create_snapshot(&app, "src").await["name"]
        .as_str()
        .unwrap()
        .to_string();
    let loc = format!(
        "file://{}",
        tmp.path().join("snapshots/src").join(&name).display()
    );
    let (s, v) = json(
        &app,
        "PUT",
        "/collections/copy/snapshots/recover",
        json!({"location": loc, "checksum": "0".repeat(64)}),
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
    assert!(v["status"]["error"]
        .as_str()
        .unwrap()
        .starts_with("Checksum mismatch"));
    let (_, exists) = json(&app, "GET", "/collections/copy/exists", json!(null)).await;
    assert_eq!(exists["result"]["exists"], false);
    let (s, _) = json(
        &app,
        "PUT",
        "/collections/copy/snapshots/recover",
        json!({"location": loc, "checksum": "deadbeef"}),
    )
    .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);

    let outside = tmp.path().join("outside.snapshot");
    std::fs::copy(tmp.path().join("snapshots/src").join(&name), &outside).unwrap();
    let cases = [
        (
            format!("file://{}", outside.display()),
            StatusCode::FORBIDDEN,
        ),
        (
            format!(
                "file://{}/snapshots/src/../../outside.snapshot",
                tmp.path().display()
            ),
            StatusCode::FORBIDDEN,
        ),
        (
            "file:///whatever.snapshot".to_string(),
            StatusCode::BAD_REQUEST,
        ),
        (
            "file://otherhost/x.snapshot".to_string(),
            StatusCode::BAD_REQUEST,
        ),
        (
            "ftp://example.com/x.snapshot".to_string(),
            StatusCode::BAD_REQUEST,
        ),
        ("missing.snapshot".to_string(), StatusCode::NOT_FOUND),
        ("../../etc/passwd".to_string(), StatusCode::NOT_FOUND),
    ];
    for (location, want) in cases {
        let (s, v) = json(
            &app,
            "PUT",
            "/collections/copy/snapshots/recover",
            json!({"location": location}),
        )
        .await;
        assert_eq!(s, want, "{location}: {v}");
        assert!(v["status"]["error"].is_string());
    }
    let (_, exists) = json(&app, "GET", "/collections/copy/exists", json!(null)).await;
    assert_eq!(exists["result"]["exists"], false);
    for bad in ["..%2F..%2Fetc%2Fpasswd", "%2Fetc%2Fpasswd", "..", "x"] {
        let (s, _, _) = call(&app, "GET", &format!("/snapshots/{bad}"), &[], "").await;
        assert_eq!(s, StatusCode::NOT_FOUND, "{bad}");
    }
    assert_no_leftovers(tmp.path());
}

#[tokio::test]
async fn a_published_sidecar_is_verified_automatically() {
    let tmp = tempfile::tempdir().unwrap();
    let app = test_app(tmp.path(), &[]).await;
    setup(&app, "src", 20).await;
    let name = create_snapshot(&app, "src").await["name"]
        .as_str()
        .unwrap()
        .to_string();
    let path = tmp.path().join("snapshots/src").join(&name);
    std::fs::write(format!("{}.checksum", path.display()), "f".repeat(64)).unwrap();
    let loc = format!("file://{}", path.display());
    let (s, v) = json(
        &app,
        "PUT",
        "/collections/copy/snapshots/recover",
        json!({"location": loc}),
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
    assert!(
        v["status"]["error"]
            .as_str()
            .unwrap()
            .starts_with("Checksum mismatch"),
        "{v}"
    );
    let (_, exists) = json(&app, "GET", "/collections/copy/exists", json!(null)).await;
    assert_eq!(exists["result"]["exists"], false);
}

#[tokio::test]
async fn url_recovery_can_be_disabled() {
    let tmp = tempfile::tempdir().unwrap();
    let app = test_app(
        tmp.path(),
        &[("QDRANT__SERVICE__ENABLE_SNAPSHOT_URL_RECOVERY", "false")],
    )
    .await;
    let (s, v) = json(
        &app,
        "PUT",
        "/collections/c/snapshots/recover",
        json!({"location": "http://127.0.0.1:1/x.snapshot"}),
    )
    .await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{v}");
}

#[tokio::test]
async fn upload_streams_recovers_and_leaves_nothing_behind() {
    let tmp = tempfile::tempdir().unwrap();
    let app = test_app(tmp.path(), &[]).await;
    setup(&app, "src", 50).await;
    let desc = create_snapshot(&app, "src").await;
    let name = desc["name"].as_str().unwrap();
    let bytes = download(&app, &format!("/collections/src/snapshots/{name}")).await;
    let (ct, body) = multipart("snapshot", &bytes);
    let uri = format!(
        "/collections/up/snapshots/upload?priority=snapshot&checksum={}",
        "1".repeat(64)
    );
    let (s, _, b) = call(&app, "POST", &uri, &[("content-type", &ct)], body.clone()).await;
    assert_eq!(
        s,
        StatusCode::BAD_REQUEST,
        "{}",
        String::from_utf8_lossy(&b)
    );
    let (_, exists) = json(&app, "GET", "/collections/up/exists", json!(null)).await;
    assert_eq!(exists["result"]["exists"], false);
    let uri = format!(
        "/collections/up/snapshots/upload?wait=true&priority=snapshot&checksum={}",
        desc["checksum"].as_str().unwrap()
    );
    let (s, _, b) = call(&app, "POST", &uri, &[("content-type", &ct)], body).await;
    assert_eq!(s, StatusCode::OK, "{}", String::from_utf8_lossy(&b));
    assert_eq!(
        serde_json::from_slice::<Value>(&b).unwrap()["result"],
        json!(true)
    );
    assert_eq!(all_points(&app, "up").await, all_points(&app, "src").await);
    // Unlike Qdrant (#10207), the upload is not kept in the snapshots directory.
    assert!(!tmp.path().join("snapshots/up").exists());
    let (ct, body) = multipart("wrong_field", &bytes);
    let (s, _, _) = call(
        &app,
        "POST",
        "/collections/up2/snapshots/upload",
        &[("content-type", &ct)],
        body,
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert_no_leftovers(tmp.path());
}

#[tokio::test]
async fn wait_false_answers_202_with_a_pollable_operation() {
    let tmp = tempfile::tempdir().unwrap();
    let app = test_app(tmp.path(), &[]).await;
    setup(&app, "c", 100).await;
    let (s, h, b) = call(&app, "POST", "/collections/c/snapshots?wait=false", &[], "").await;
    assert_eq!(s, StatusCode::ACCEPTED);
    let v: Value = serde_json::from_slice(&b).unwrap();
    assert_eq!(v["status"], "accepted");
    assert!(v.get("result").is_none());
    let id = h["x-operation-id"].to_str().unwrap().to_string();
    let mut last = Value::Null;
    for _ in 0..200 {
        let (_, op) = json(&app, "GET", &format!("/operations/{id}"), json!(null)).await;
        last = op["result"].clone();
        if last["state"] != "running" {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(last["state"], "completed", "{last}");
    assert!(last["bytes_done"].as_u64().unwrap() > 0);
    assert_eq!(last["result"]["size"], last["bytes_done"]);
    let (s, _) = json(&app, "GET", "/operations/999999", json!(null)).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn full_and_shard_snapshots() {
    let tmp = tempfile::tempdir().unwrap();
    let app = test_app(tmp.path(), &[]).await;
    setup(&app, "a", 10).await;
    setup(&app, "b", 20).await;
    json(
        &app,
        "POST",
        "/collections/aliases",
        json!({"actions": [{"create_alias": {"collection_name": "b", "alias_name": "bee"}}]}),
    )
    .await;
    let (s, v) = json(&app, "POST", "/snapshots", json!(null)).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let name = v["result"]["name"].as_str().unwrap().to_string();
    assert!(name.starts_with("full-snapshot-"));
    assert!(tmp.path().join("snapshots").join(&name).is_file());
    let (_, listed) = json(&app, "GET", "/snapshots", json!(null)).await;
    assert_eq!(listed["result"][0]["name"], name.as_str());
    let bytes = download(&app, &format!("/snapshots/{name}")).await;
    assert_eq!(
        sha256_hex(&bytes),
        v["result"]["checksum"].as_str().unwrap()
    );
    let (s, _) = json(&app, "DELETE", &format!("/snapshots/{name}"), json!(null)).await;
    assert_eq!(s, StatusCode::OK);

    let (s, v) = json(
        &app,
        "POST",
        "/collections/a/shards/0/snapshots",
        json!(null),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let shard_name = v["result"]["name"].as_str().unwrap().to_string();
    assert!(shard_name.starts_with("a-shard-0-"));
    assert!(tmp
        .path()
        .join("snapshots/a/shards/0")
        .join(&shard_name)
        .is_file());
    let (_, listed) = json(&app, "GET", "/collections/a/snapshots", json!(null)).await;
    assert_eq!(
        listed["result"],
        json!([]),
        "collection listing is non-recursive"
    );
    let (s, _) = json(
        &app,
        "POST",
        "/collections/a/shards/1/snapshots",
        json!(null),
    )
    .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    // The streamed shard snapshot is a valid snapshot too.
    let streamed = download_streamed(&app, "/collections/b/shards/0/snapshot").await;
    let (ct, body) = multipart("snapshot", &streamed);
    let (s, _, b) = call(
        &app,
        "POST",
        "/collections/b2/shards/0/snapshots/upload",
        &[("content-type", &ct)],
        body,
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{}", String::from_utf8_lossy(&b));
    assert_eq!(
        serde_json::from_slice::<Value>(&b).unwrap()["result"],
        Value::Null
    );
    assert_eq!(all_points(&app, "b2").await, all_points(&app, "b").await);
}

async fn download_streamed(app: &axum::Router, uri: &str) -> Vec<u8> {
    let (s, _, body) = call(app, "GET", uri, &[], "").await;
    assert_eq!(s, StatusCode::OK);
    body.to_vec()
}

#[tokio::test]
async fn writes_during_a_snapshot_are_not_in_it() {
    let tmp = tempfile::tempdir().unwrap();
    let app = test_app(tmp.path(), &[]).await;
    setup(&app, "c", 0).await;
    // Writes acknowledged so far: the snapshot starts once 100 are in, while more keep
    // coming, and must hold every write acknowledged before it started and none that was
    // not acknowledged when it returned.
    let acked = Arc::new(AtomicU64::new(0));
    let some_acked = Arc::new(tokio::sync::Notify::new());
    let (writer_app, count, signal) = (app.clone(), Arc::clone(&acked), Arc::clone(&some_acked));
    let writer = tokio::spawn(async move {
        for i in 0..400u64 {
            let body = json!({"points": [{"id": i, "vector": [1.0, 0.0, 0.0, i as f32]}]});
            let (s, _) = json(&writer_app, "PUT", "/collections/c/points?wait=true", body).await;
            assert_eq!(s, StatusCode::OK);
            if count.fetch_add(1, Ordering::SeqCst) + 1 == 100 {
                signal.notify_one();
            }
        }
    });
    some_acked.notified().await;
    let before = acked.load(Ordering::SeqCst);
    let desc = create_snapshot(&app, "c").await;
    let after = acked.load(Ordering::SeqCst) + 1;
    writer.await.unwrap();
    let loc = format!(
        "file://{}",
        tmp.path()
            .join("snapshots/c")
            .join(desc["name"].as_str().unwrap())
            .display()
    );
    let (s, v) = json(
        &app,
        "PUT",
        "/collections/r/snapshots/recover",
        json!({"location": loc}),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    // Point-in-time: the snapshot holds exactly a prefix 0..k of the acknowledged writes.
    let ids: Vec<u64> = all_points(&app, "r")
        .await
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["id"].as_u64().unwrap())
        .collect();
    let k = ids.len() as u64;
    assert!(
        (before..=after).contains(&k),
        "the snapshot holds {k} points; {before} were acknowledged before it started and at \
         most {after} could be in it when it returned"
    );
    assert_eq!(ids, (0..k).collect::<Vec<_>>());
}

// ---- Hostile archives -------------------------------------------------------------------

/// Splits a plain snapshot archive into its entries `(name, data)`.
fn entries(archive: &[u8]) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    let mut pos = 0;
    while pos + 512 <= archive.len() && archive[pos] != 0 {
        let h = &archive[pos..pos + 512];
        let name = String::from_utf8_lossy(&h[..100])
            .trim_end_matches('\0')
            .to_string();
        let size = u64::from_str_radix(
            String::from_utf8_lossy(&h[124..135]).trim_matches(|c| c == '\0' || c == ' '),
            8,
        )
        .unwrap() as usize;
        out.push((name, archive[pos + 512..pos + 512 + size].to_vec()));
        pos += 512 + size.div_ceil(512) * 512;
    }
    out
}

#[tokio::test]
async fn hostile_archives_are_rejected_and_write_nothing_outside_staging() {
    let tmp = tempfile::tempdir().unwrap();
    let app = test_app(tmp.path(), &[]).await;
    setup(&app, "src", 30).await;
    setup(&app, "victim", 5).await;
    let before = all_points(&app, "victim").await;
    let name = create_snapshot(&app, "src").await["name"]
        .as_str()
        .unwrap()
        .to_string();
    let good = download(&app, &format!("/collections/src/snapshots/{name}")).await;
    let ents = entries(&good);
    assert_eq!(ents[0].0, "snapshot.json");
    assert_eq!(ents.last().unwrap().0, "snapshot.crc32");
    let plain = |e: &(String, Vec<u8>)| entry(&e.0, b'0', &e.1, "");
    let all: Vec<Vec<u8>> = ents.iter().map(plain).collect();
    let manifest: Value = serde_json::from_slice(&ents[0].1).unwrap();
    let with_manifest = |m: &Value| {
        let mut parts = all.clone();
        parts[0] = entry("snapshot.json", b'0', m.to_string().as_bytes(), "");
        build(&parts)
    };
    let data_idx = 2; // config.json is entry 1, the first segment entry 2.
    let data_name = ents[data_idx].0.clone();

    let mut cases: Vec<(&str, Vec<u8>)> = Vec::new();
    // Traversal and absolute paths, listed in the manifest so only the allowlist stops them.
    for evil in ["../escape.seg", "/tmp/escape.seg", "data/../../escape.seg"] {
        let mut m = manifest.clone();
        m["collections"][0]["files"][1]["path"] = json!(evil);
        let mut parts = all.clone();
        parts[0] = entry("snapshot.json", b'0', m.to_string().as_bytes(), "");
        parts[data_idx] = entry(evil, b'0', &ents[data_idx].1, "");
        cases.push(("traversal", build(&parts)));
    }
    for (label, kind, link) in [
        ("symlink", b'2', "/etc/passwd"),
        ("hardlink", b'1', "config.json"),
        ("device", b'3', ""),
        ("fifo", b'6', ""),
    ] {
        let mut parts = all.clone();
        parts[data_idx] = entry(&data_name, kind, b"", link);
        cases.push((label, build(&parts)));
    }
    let mut dup = all.clone();
    dup.insert(data_idx, all[data_idx].clone());
    cases.push(("duplicate entry", build(&dup)));
    cases.push(("truncated", good[..good.len() / 2].to_vec()));
    cases.push(("no trailer", build(&all[..all.len() - 1])));
    let mut lying = all.clone();
    lying[data_idx] = entry(
        &data_name,
        b'0',
        &ents[data_idx].1[..ents[data_idx].1.len() - 1],
        "",
    );
    cases.push(("header lies about size", build(&lying)));
    let mut absurd = manifest.clone();
    absurd["collections"][0]["files"][1]["size"] = json!(1u64 << 50);
    cases.push(("absurd size", with_manifest(&absurd)));
    let mut many = manifest.clone();
    let files: Vec<Value> = (0..1_000_001)
        .map(|i| json!({"path": format!("data/{i:020}-{i:020}.seg"), "size": 1}))
        .collect();
    many["collections"][0]["files"] = json!(files);
    cases.push((
        "absurd entry count",
        build(&[entry(
            "snapshot.json",
            b'0',
            many.to_string().as_bytes(),
            "",
        )]),
    ));
    let mut wrong = manifest.clone();
    wrong["format_version"] = json!(99);
    cases.push(("wrong manifest version", with_manifest(&wrong)));
    cases.push(("missing manifest", build(&all[1..])));
    cases.push((
        "not a tar",
        b"hello, this is not an archive at all".repeat(40),
    ));
    let mut flipped = good.clone();
    flipped[data_offset(&good, data_idx) + 10] ^= 0x20;
    cases.push(("corrupted data byte", flipped));
    // A corrupted record whose trailer CRC was recomputed to match: only the per-record
    // check made while the segment streams in can see it.
    let mut forged = ents.clone();
    forged[data_idx].1[40] ^= 0x01;
    let trailer: String = forged[1..forged.len() - 1]
        .iter()
        .map(|(n, d)| format!("{:08x}  {n}\n", crc32fast::hash(d)))
        .collect();
    let last = forged.len() - 1;
    forged[last].1 = trailer.into_bytes();
    cases.push((
        "corrupted record, forged trailer",
        build(&forged.iter().map(plain).collect::<Vec<_>>()),
    ));
    let mut after = all.clone();
    after.push(entry("extra.txt", b'0', b"x", ""));
    cases.push(("entry after trailer", build(&after)));

    for (label, archive) in cases {
        for target in ["fresh", "victim"] {
            let (ct, body) = multipart("snapshot", &archive);
            let (s, _, b) = call(
                &app,
                "POST",
                &format!("/collections/{target}/snapshots/upload"),
                &[("content-type", &ct)],
                body,
            )
            .await;
            assert_eq!(
                s,
                StatusCode::BAD_REQUEST,
                "{label} into {target}: {}",
                String::from_utf8_lossy(&b)
            );
            let msg: Value = serde_json::from_slice(&b).unwrap();
            assert!(
                msg["status"]["error"]
                    .as_str()
                    .unwrap()
                    .contains("snapshot"),
                "{label}: {msg}"
            );
        }
        assert!(
            !tmp.path().join("escape.seg").exists() && !Path::new("/tmp/escape.seg").exists(),
            "{label}"
        );
        assert!(!tmp.path().join("storage/escape.seg").exists(), "{label}");
    }
    let (_, exists) = json(&app, "GET", "/collections/fresh/exists", json!(null)).await;
    assert_eq!(
        exists["result"]["exists"], false,
        "no half-created collection"
    );
    assert_eq!(
        all_points(&app, "victim").await,
        before,
        "the existing collection is untouched"
    );
    assert_no_leftovers(tmp.path());
}

/// Byte offset of the data of entry `idx` in a plain archive.
fn data_offset(archive: &[u8], idx: usize) -> usize {
    let mut pos = 0;
    for _ in 0..idx {
        let h = &archive[pos..pos + 512];
        let size = u64::from_str_radix(
            String::from_utf8_lossy(&h[124..135]).trim_matches(|c| c == '\0' || c == ' '),
            8,
        )
        .unwrap() as usize;
        pos += 512 + size.div_ceil(512) * 512;
    }
    pos + 512
}

#[tokio::test]
async fn incremental_snapshots_list_their_files_last_and_hostile_ones_are_rejected() {
    let tmp = tempfile::tempdir().unwrap();
    let incremental = [("QDRANT__STORAGE__SNAPSHOTS_CONFIG__INCREMENTAL", "true")];
    let app = test_app(tmp.path(), &incremental).await;
    setup(&app, "src", 30).await;
    setup(&app, "victim", 5).await;
    let before = all_points(&app, "victim").await;
    let first = create_snapshot(&app, "src").await;
    let name = first["name"].as_str().unwrap().to_string();
    let good = download(&app, &format!("/collections/src/snapshots/{name}")).await;
    assert_eq!(sha256_hex(&good), first["checksum"].as_str().unwrap());

    // Version 2: an opening with no files or time, the files, the manifest, the CRCs.
    let ents = entries(&good);
    let names: Vec<&str> = ents.iter().map(|e| e.0.as_str()).collect();
    assert_eq!(names[..2], ["snapshot.json", "config.json"]);
    assert_eq!(
        names[names.len() - 2..],
        ["snapshot.contents.json", "snapshot.crc32"]
    );
    let opening: Value = serde_json::from_slice(&ents[0].1).unwrap();
    assert_eq!(
        opening,
        json!({"format": "snapstream-snapshot", "format_version": 2, "kind": "collection",
               "collections": [{"name": "src", "dir": ""}]})
    );
    let contents: Value = serde_json::from_slice(&ents[ents.len() - 2].1).unwrap();
    let listed: Vec<&str> = contents["collections"][0]["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["path"].as_str().unwrap())
        .collect();
    assert_eq!(listed, names[1..names.len() - 2]);

    // A second snapshot after more points: same opening bytes, recovers exactly.
    let more: Vec<Value> = (30..40)
        .map(|i| json!({"id": i, "vector": [1.0, i as f32, 0.0, 0.5]}))
        .collect();
    let uri = "/collections/src/points?wait=true";
    let (s, v) = json(&app, "PUT", uri, json!({ "points": more })).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let second = create_snapshot(&app, "src").await;
    let name2 = second["name"].as_str().unwrap();
    let good2 = download(&app, &format!("/collections/src/snapshots/{name2}")).await;
    assert_eq!(sha256_hex(&good2), second["checksum"].as_str().unwrap());
    assert_eq!(
        good2[..1024],
        good[..1024],
        "the tars open with the same bytes"
    );
    let (s, msg) = upload_snapshot(&app, "copy", &good2).await;
    assert_eq!(s, StatusCode::OK, "{msg:?}");
    assert_eq!(
        all_points(&app, "copy").await,
        all_points(&app, "src").await
    );

    let plain = |e: &(String, Vec<u8>)| entry(&e.0, b'0', &e.1, "");
    let all: Vec<Vec<u8>> = ents.iter().map(plain).collect();
    let last = all.len() - 1;
    let with = |i: usize, name: &str, data: &[u8]| {
        let mut parts = all.clone();
        parts[i] = entry(name, b'0', data, "");
        build(&parts)
    };
    let mut cases: Vec<(&str, Vec<u8>)> = Vec::new();
    let mut extra = opening.clone();
    extra["files"] = json!([{"path": "../escape.seg", "size": 1}]);
    cases.push((
        "opening with more fields",
        with(0, "snapshot.json", extra.to_string().as_bytes()),
    ));
    let mut lying = contents.clone();
    lying["collections"][0]["files"][1]["size"] = json!(1);
    cases.push((
        "manifest lists another size",
        with(
            last - 1,
            "snapshot.contents.json",
            lying.to_string().as_bytes(),
        ),
    ));
    let data = ents[2].1.clone();
    cases.push(("traversal", with(2, "../escape.seg", &data)));
    cases.push(("absolute", with(2, "/tmp/escape.seg", &data)));
    let mut parts = all.clone();
    parts.swap(1, 2);
    cases.push(("segment before config", build(&parts)));
    let mut parts = all.clone();
    parts.remove(last - 1);
    cases.push(("no manifest", build(&parts)));
    let mut parts = all.clone();
    parts.insert(
        last,
        entry(
            "data/99999999999999999999-99999999999999999999.seg",
            b'0',
            b"x",
            "",
        ),
    );
    cases.push(("a file after the manifest", build(&parts)));
    for (label, archive) in cases {
        let (s, msg) = upload_snapshot(&app, "victim", &archive).await;
        let msg = String::from_utf8_lossy(&msg);
        assert_eq!(s, StatusCode::BAD_REQUEST, "{label}: {msg}");
        assert!(msg.contains("snapshot"), "{label}: {msg}");
        assert!(!tmp.path().join("escape.seg").exists(), "{label}");
        assert!(!tmp.path().join("storage/escape.seg").exists(), "{label}");
    }
    assert_eq!(all_points(&app, "victim").await, before, "untouched");
    assert_no_leftovers(tmp.path());
}

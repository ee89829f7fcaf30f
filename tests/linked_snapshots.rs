//! Incremental local snapshots link sealed segments through the whole service (REST in,
//! REST out), and fall back to copying, saying so once at start-up, when the snapshots
//! directory is on another filesystem.

mod common;

use std::os::unix::fs::MetadataExt;
use std::path::Path;

use common::Service;
use serde_json::json;
use sha2::{Digest, Sha256};

/// Vectors of this size: a WAL seals at 64 MiB, past 4096 such points.
const DIM: usize = 4096;

fn incremental() -> Vec<(String, String)> {
    vec![(
        "QDRANT__STORAGE__SNAPSHOTS_CONFIG__INCREMENTAL".into(),
        "true".into(),
    )]
}

/// Sends `body` (if any) as JSON and returns the JSON answer, asserting success.
async fn send(
    http: &reqwest::Client,
    method: reqwest::Method,
    url: String,
    body: Option<serde_json::Value>,
) -> serde_json::Value {
    let mut req = http.request(method, url);
    if let Some(b) = body {
        req = req.json(&b);
    }
    let r = req.send().await.unwrap();
    let status = r.status();
    let text = r.text().await.unwrap();
    assert!(status.is_success(), "{status}: {text}");
    serde_json::from_str(&text).unwrap()
}

/// A collection `c` written past one WAL seal and a batch more, then a snapshot of it;
/// returns its name.
async fn snapshot_of_a_sealed_collection(http: &reqwest::Client, url: &str) -> String {
    use reqwest::Method;
    let body = json!({"vectors": {"size": DIM, "distance": "Dot"}});
    send(
        http,
        Method::PUT,
        format!("{url}/collections/c"),
        Some(body),
    )
    .await;
    for batch in 0..12u64 {
        let points: Vec<_> = (0..400u64)
            .map(|i| json!({"id": batch * 400 + i, "vector": vec![(batch + 1) as f32 * 0.5; DIM]}))
            .collect();
        let to = format!("{url}/collections/c/points?wait=true");
        send(http, Method::PUT, to, Some(json!({ "points": points }))).await;
    }
    let to = format!("{url}/collections/c/snapshots?wait=true");
    let r = send(http, Method::POST, to, None).await;
    r["result"]["name"].as_str().unwrap().to_string()
}

/// Downloads a snapshot and checks it against its listed checksum.
async fn download_checked(http: &reqwest::Client, url: &str, name: &str) -> Vec<u8> {
    let to = format!("{url}/collections/c/snapshots");
    let listed = send(http, reqwest::Method::GET, to, None).await;
    let entry = listed["result"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == name)
        .unwrap()
        .clone();
    let bytes = http
        .get(format!("{url}/collections/c/snapshots/{name}"))
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert_eq!(bytes.len() as u64, entry["size"].as_u64().unwrap());
    assert_eq!(
        Some(hex::encode(Sha256::digest(&bytes)).as_str()),
        entry["checksum"].as_str()
    );
    bytes.to_vec()
}

/// Inodes of the files in `dir` (none when it does not exist).
fn inodes(dir: &Path, ext: &str) -> Vec<u64> {
    std::fs::read_dir(dir).map_or(Vec::new(), |rd| {
        rd.map(|e| e.unwrap().path())
            .filter(|p| ext.is_empty() || p.extension().is_some_and(|x| x == ext))
            .map(|p| std::fs::metadata(p).unwrap().ino())
            .collect()
    })
}

/// Bytes of the files in `dir` ending in `.{ext}` (all when `ext` is empty).
fn bytes_in(dir: &Path, ext: &str) -> u64 {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| ext.is_empty() || p.extension().is_some_and(|x| x == ext))
        .map(|p| std::fs::metadata(p).unwrap().len())
        .sum()
}

/// Recovers collection `c` from `location` and checks it holds every point.
async fn recover_by_file_url(http: &reqwest::Client, url: &str, location: &str) {
    let to = format!("{url}/collections/c/snapshots/recover");
    let body = json!({ "location": location });
    send(http, reqwest::Method::PUT, to, Some(body)).await;
    let to = format!("{url}/collections/c/points/count");
    let count = send(
        http,
        reqwest::Method::POST,
        to,
        Some(json!({"exact": true})),
    )
    .await;
    assert_eq!(count["result"]["count"], 4800);
}

#[tokio::test]
async fn a_service_links_sealed_segments_and_downloads_the_same_tar() {
    let tmp = tempfile::tempdir().unwrap();
    let mut svc = Service::start(tmp.path(), &incremental()).await;
    let http = reqwest::Client::new();
    let name = snapshot_of_a_sealed_collection(&http, &svc.url()).await;
    let data = tmp.path().join("storage/collections/c/data");
    let segments = inodes(&data, "seg");
    assert_eq!(segments.len(), 1, "one WAL sealed");
    let linked = inodes(&tmp.path().join("snapshots/.repository/linked"), "");
    assert_eq!(linked, segments, "the segment is linked, not copied");
    // The WAL's prefix (one batch, 6.4 MB) is copied as pieces, and nothing else.
    let pieces = bytes_in(&tmp.path().join("snapshots/.repository/pieces"), "");
    let wal = bytes_in(&data, "wal");
    assert!(pieces > 0 && pieces <= wal, "{pieces} bytes, WAL {wal}");
    let first = download_checked(&http, &svc.url(), &name).await;
    assert!(!svc.log_text().contains("instead of linking"));
    // Deleting the collection and restarting keeps the snapshot whole: it recovers the
    // collection, then recovers over it, and downloads the same bytes each time.
    let to = format!("{}/collections/c", svc.url());
    send(&http, reqwest::Method::DELETE, to, None).await;
    svc.restart().await;
    let location = format!(
        "file://{}",
        tmp.path().join("snapshots/c").join(&name).display()
    );
    for _ in 0..2 {
        recover_by_file_url(&http, &svc.url(), &location).await;
        assert_eq!(download_checked(&http, &svc.url(), &name).await, first);
    }
    // Deleted, the snapshot frees its linked file.
    let to = format!("{}/collections/c/snapshots/{name}?wait=true", svc.url());
    send(&http, reqwest::Method::DELETE, to, None).await;
    let linked_dir = tmp.path().join("snapshots/.repository/linked");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !inodes(&linked_dir, "").is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "the collector frees the linked file"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn a_snapshots_directory_on_another_filesystem_copies_and_says_why_once() {
    let tmp = tempfile::tempdir().unwrap();
    let other = tempfile::tempdir_in("/dev/shm").expect("/dev/shm, a tmpfs: a second filesystem");
    assert_ne!(
        std::fs::metadata(tmp.path()).unwrap().dev(),
        std::fs::metadata(other.path()).unwrap().dev(),
        "the test needs two filesystems"
    );
    let mut env = incremental();
    env.push((
        "QDRANT__STORAGE__SNAPSHOTS_PATH".into(),
        other.path().display().to_string(),
    ));
    let svc = Service::start(tmp.path(), &env).await;
    let http = reqwest::Client::new();
    let name = snapshot_of_a_sealed_collection(&http, &svc.url()).await;
    download_checked(&http, &svc.url(), &name).await;
    assert!(inodes(&other.path().join(".repository/linked"), "").is_empty());
    assert!(!inodes(&other.path().join(".repository/pieces"), "").is_empty());
    let log = svc.log_text();
    let why = "incremental local snapshots copy sealed segments instead of linking them: \
               the snapshots directory is on another filesystem than the storage";
    assert_eq!(log.matches(why).count(), 1, "one line at start-up: {log}");
}

//! A real Qdrant cluster for the backup section: three peers on 127.0.0.1, .2 and .3 with
//! the same ports, as separate hosts would have, each with its own storage.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;

use crate::harness::env_or;

const HOSTS: [&str; 3] = ["127.0.0.1", "127.0.0.2", "127.0.0.3"];

/// The Qdrant binary: `QDRANT_BIN`, or what `make qdrant` unpacked.
pub(crate) fn qdrant_bin() -> Option<PathBuf> {
    let p = PathBuf::from(env_or("QDRANT_BIN", "target/qdrant/qdrant"));
    p.exists().then(|| p.canonicalize().unwrap_or(p))
}

/// Three running peers.
pub(crate) struct Cluster {
    children: Vec<Child>,
    /// Each peer's REST URL.
    pub(crate) urls: Vec<String>,
}

/// A port free on all three hosts.
fn free_port() -> u16 {
    loop {
        let port = std::net::TcpListener::bind((HOSTS[0], 0))
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        if HOSTS[1..]
            .iter()
            .all(|h| std::net::TcpListener::bind((*h, port)).is_ok())
        {
            return port;
        }
    }
}

impl Cluster {
    /// Starts three peers under `root` and waits until they form one cluster.
    pub(crate) fn start(bin: &Path, root: &Path) -> Cluster {
        let (http, grpc, p2p) = (free_port(), free_port(), free_port());
        let c = reqwest::blocking::Client::new();
        let mut cluster = Cluster {
            children: Vec::new(),
            urls: Vec::new(),
        };
        for (i, host) in HOSTS.iter().enumerate() {
            let dir = root.join(format!("peer{i}"));
            std::fs::create_dir_all(&dir).unwrap();
            let log = std::fs::File::create(dir.join("qdrant.log")).unwrap();
            let mut cmd = Command::new(bin);
            cmd.current_dir(&dir)
                .env("QDRANT__CLUSTER__ENABLED", "true")
                .env("QDRANT__SERVICE__HOST", host)
                .env("QDRANT__SERVICE__HTTP_PORT", http.to_string())
                .env("QDRANT__SERVICE__GRPC_PORT", grpc.to_string())
                .env("QDRANT__CLUSTER__P2P__PORT", p2p.to_string())
                .env("QDRANT__STORAGE__STORAGE_PATH", dir.join("storage"))
                .env("QDRANT__STORAGE__SNAPSHOTS_PATH", dir.join("snapshots"))
                .env("QDRANT__TELEMETRY_DISABLED", "true")
                .env("QDRANT__LOG_LEVEL", "WARN")
                .args(["--uri", &format!("http://{host}:{p2p}")])
                .stdout(log.try_clone().unwrap())
                .stderr(log);
            if i > 0 {
                cmd.args(["--bootstrap", &format!("http://{}:{p2p}", HOSTS[0])]);
            }
            cluster.children.push(cmd.spawn().expect("start qdrant"));
            let url = format!("http://{host}:{http}");
            wait_until(|| get(&c, &format!("{url}/cluster")).is_some());
            cluster.urls.push(url);
        }
        let first = cluster.urls[0].clone();
        wait_until(|| {
            get(&c, &format!("{first}/cluster"))
                .and_then(|v| v["result"]["peers"].as_object().map(|p| p.len() == 3))
                .unwrap_or(false)
        });
        cluster
    }

    /// The peers' process ids.
    pub(crate) fn pids(&self) -> Vec<u32> {
        self.children.iter().map(|c| c.id()).collect()
    }

    /// The first peer's URL.
    pub(crate) fn url(&self) -> &str {
        &self.urls[0]
    }

    /// The URL of the peer holding each shard of `collection`, by shard id.
    pub(crate) fn shard_peers(&self, collection: &str) -> Vec<(u32, String)> {
        let c = reqwest::blocking::Client::new();
        let mut out = Vec::new();
        for url in &self.urls {
            let v = get(&c, &format!("{url}/collections/{collection}/cluster")).unwrap();
            for s in v["result"]["local_shards"].as_array().unwrap() {
                out.push((s["shard_id"].as_u64().unwrap() as u32, url.clone()));
            }
        }
        out.sort();
        out
    }

    /// Waits until `collection` is green (the optimizers are done) on every peer.
    pub(crate) fn wait_green(&self, collection: &str) {
        let c = reqwest::blocking::Client::new();
        for url in &self.urls {
            let u = format!("{url}/collections/{collection}");
            wait_until(|| get(&c, &u).is_some_and(|v| v["result"]["status"] == "green"));
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn get(c: &reqwest::blocking::Client, url: &str) -> Option<Value> {
    let r = c.get(url).timeout(Duration::from_secs(10)).send().ok()?;
    r.status().is_success().then(|| r.json().ok())?
}

fn wait_until(mut ready: impl FnMut() -> bool) {
    for _ in 0..6000 {
        if ready() {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("Qdrant did not become ready");
}

/// Runs `cmd` quietly in `dir` (a baseline's helper process).
pub(crate) fn spawn_quiet(cmd: &mut Command, dir: &Path) -> Child {
    cmd.current_dir(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start helper")
}

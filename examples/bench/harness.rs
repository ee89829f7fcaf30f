//! What every section shares: the service under test, HTTP calls, generated points, and
//! measuring (percentiles, RSS, bytes written, shell baselines).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

pub(crate) const DIM: usize = 768;

pub(crate) fn env_or(k: &str, d: &str) -> String {
    std::env::var(k).unwrap_or_else(|_| d.to_string())
}

pub(crate) struct Service {
    pub(crate) child: Child,
    pub(crate) url: String,
    pub(crate) grpc_url: String,
}

impl Service {
    pub(crate) fn start(root: &Path, extra: &[(String, String)]) -> Service {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let grpc_port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        // BENCH_LOG_DIR keeps the logs out of the work directory, which the run removes.
        let log_dir = std::env::var_os("BENCH_LOG_DIR").map_or(root.to_path_buf(), PathBuf::from);
        std::fs::create_dir_all(&log_dir).unwrap();
        let log = std::fs::File::create(log_dir.join(format!("service-{port}.log"))).unwrap();
        let bin = PathBuf::from(env_or("SNAPSTREAM_BIN", "target/release/snapstream"));
        let bin = bin.canonicalize().unwrap_or(bin);
        let mut child = Command::new(bin)
            .current_dir(root)
            .env("QDRANT__SERVICE__HTTP_PORT", port.to_string())
            .env("QDRANT__SERVICE__GRPC_PORT", grpc_port.to_string())
            .env("QDRANT__STORAGE__STORAGE_PATH", root.join("storage"))
            .env("QDRANT__STORAGE__SNAPSHOTS_PATH", root.join("snapshots"))
            // `BENCH_SERVICE_LOG=info` logs what each create did (pieces, links, resumed).
            .env("RUST_LOG", env_or("BENCH_SERVICE_LOG", "warn"))
            .envs(extra.iter().cloned())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start snapstream (build it with `cargo build --release`)");
        let url = format!("http://127.0.0.1:{port}");
        let client = reqwest::blocking::Client::new();
        for _ in 0..600 {
            if client
                .get(format!("{url}/readyz"))
                .send()
                .is_ok_and(|r| r.status().is_success())
            {
                let grpc_url = format!("http://127.0.0.1:{grpc_port}");
                return Service {
                    child,
                    url,
                    grpc_url,
                };
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = child.kill();
        let _ = child.wait();
        panic!("service did not start");
    }

    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub(crate) fn http() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(3600))
        .build()
        .unwrap()
}

pub(crate) fn call(
    c: &reqwest::blocking::Client,
    method: reqwest::Method,
    url: &str,
    body: Option<String>,
) -> Value {
    let mut req = c.request(method, url);
    if let Some(b) = body {
        req = req.header("content-type", "application/json").body(b);
    }
    let resp = req.send().expect("request");
    let status = resp.status();
    let text = resp.text().unwrap_or_default();
    assert!(status.is_success(), "{url}: {status} {text}");
    serde_json::from_str(&text).unwrap_or(Value::Null)
}

/// Deterministic pseudo-random vector components.
pub(crate) fn vector(i: u64) -> Vec<f32> {
    let mut x = i.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..DIM)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 40) as f32 / (1u64 << 24) as f32 - 0.5
        })
        .collect()
}

pub(crate) fn batch_body(start: u64, n: u64) -> String {
    let ids: Vec<u64> = (start..start + n).collect();
    let vectors: Vec<Vec<f32>> = ids.iter().map(|&i| vector(i)).collect();
    let payloads: Vec<Value> = ids
        .iter()
        .map(|i| json!({"title": format!("doc {i}"), "n": i}))
        .collect();
    json!({"batch": {"ids": ids, "vectors": vectors, "payloads": payloads}}).to_string()
}

/// Loads `points` points into collection `name` at `url` with two clients, 1,000 a request;
/// `body(start, n)` is the request body for ids `start..start + n`.
pub(crate) fn load_points(
    url: &str,
    name: &str,
    points: u64,
    body: impl Fn(u64, u64) -> String + Sync,
) {
    std::thread::scope(|scope| {
        for w in 0..2u64 {
            let body = &body;
            scope.spawn(move || {
                let c = http();
                let mut start = w * 1000;
                while start < points {
                    call(
                        &c,
                        reqwest::Method::PUT,
                        &format!("{url}/collections/{name}/points?wait=true"),
                        Some(body(start, 1000.min(points - start))),
                    );
                    start += 2000;
                }
            });
        }
    });
}

pub(crate) fn create_collection(c: &reqwest::blocking::Client, url: &str, name: &str) {
    let _ = c.delete(format!("{url}/collections/{name}")).send();
    call(
        c,
        reqwest::Method::PUT,
        &format!("{url}/collections/{name}"),
        Some(json!({"vectors": {"size": DIM, "distance": "Cosine"}}).to_string()),
    );
}

pub(crate) fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx]
}

pub(crate) fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    percentile(&v, 0.5)
}

/// Samples VmRSS of `pid` until stopped; returns the peak in bytes.
pub(crate) struct RssSampler {
    pub(crate) stop: Arc<AtomicBool>,
    pub(crate) peak: Arc<AtomicU64>,
    pub(crate) handle: Option<std::thread::JoinHandle<()>>,
}

/// The S3 server's process, when `minio/start.sh` started it here (0: not counted).
pub(crate) fn s3_server_pid() -> u32 {
    std::fs::read_to_string(".s3-server/pid")
        .ok()
        .and_then(|p| p.trim().parse().ok())
        .unwrap_or(0)
}

/// CPU seconds (user + system) that process `pid` has used so far; 0 when unreadable.
pub(crate) fn cpu_seconds(pid: u32) -> f64 {
    // Fields 14 and 15 of /proc/PID/stat, counted after the command's closing parenthesis.
    let ticks = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            let rest = s.rsplit_once(')')?.1.split_whitespace().collect::<Vec<_>>();
            Some(rest.get(11)?.parse::<u64>().ok()? + rest.get(12)?.parse::<u64>().ok()?)
        })
        .unwrap_or(0);
    // The kernel's USER_HZ, 100 on Linux for x86-64 and arm64.
    ticks as f64 / 100.0
}

/// CPU seconds that processes `pids` have used so far, together.
pub(crate) fn cpu_seconds_of(pids: &[u32]) -> f64 {
    pids.iter().map(|p| cpu_seconds(*p)).sum()
}

pub(crate) fn rss_bytes(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        })
        .unwrap_or(0)
        * 1024
}

pub(crate) fn io_write_bytes(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/io"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("write_bytes:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

impl RssSampler {
    pub(crate) fn start(pid: u32) -> RssSampler {
        let stop = Arc::new(AtomicBool::new(false));
        let peak = Arc::new(AtomicU64::new(rss_bytes(pid)));
        let (s, p) = (Arc::clone(&stop), Arc::clone(&peak));
        let handle = std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                p.fetch_max(rss_bytes(pid), Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(5));
            }
        });
        RssSampler {
            stop,
            peak,
            handle: Some(handle),
        }
    }

    pub(crate) fn finish(mut self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
        self.peak.load(Ordering::Relaxed)
    }
}

pub(crate) fn sh(cmd: &str) -> f64 {
    let t = Instant::now();
    let st = Command::new("bash")
        .arg("-c")
        .arg(cmd)
        .stdout(Stdio::null())
        .status()
        .expect("run baseline");
    assert!(st.success(), "baseline failed: {cmd}");
    t.elapsed().as_secs_f64()
}

pub(crate) fn drop_caches_hint() {
    // Page cache is left warm on purpose: every step reads files the previous step just
    // wrote, for ours and the baselines alike.
}

pub(crate) fn mib(b: u64) -> f64 {
    b as f64 / (1 << 20) as f64
}

pub(crate) fn write_results(results: &serde_json::Map<String, Value>) {
    let root = PathBuf::from(env_or("BENCH_DIR", "bench/out/work"));
    let out = root.parent().unwrap_or(Path::new(".")).join("results.json");
    std::fs::write(
        &out,
        serde_json::to_string_pretty(&Value::Object(results.clone())).unwrap(),
    )
    .unwrap();
    println!("results written to {}", out.display());
}

pub(crate) fn walk_size(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(Result::ok)
                .map(|e| {
                    if e.path().is_dir() {
                        walk_size(&e.path())
                    } else {
                        e.metadata().map(|m| m.len()).unwrap_or(0)
                    }
                })
                .sum()
        })
        .unwrap_or(0)
}

/// Creates a snapshot of `collection` and waits for it: seconds taken, and the answer.
pub(crate) fn timed_snapshot(
    c: &reqwest::blocking::Client,
    url: &str,
    collection: &str,
) -> (f64, Value) {
    let t = std::time::Instant::now();
    let v = call(
        c,
        reqwest::Method::POST,
        &format!("{url}/collections/{collection}/snapshots?wait=true"),
        None,
    );
    (t.elapsed().as_secs_f64(), v)
}

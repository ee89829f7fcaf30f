//! A TCP proxy in front of the real S3 server that injects faults: a 500 answer to one
//! UploadPart, or every connection cut once a byte budget is spent (the server "dies").
#![allow(dead_code, unreachable_pub, missing_docs)]

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

#[derive(Default)]
pub struct Faults {
    /// Answer the next UploadPart seen at the start of a connection with a 500.
    pub fail_one_part: AtomicBool,
    /// 500s injected so far.
    pub injected: AtomicUsize,
    /// Bytes that may still go upstream before every connection is cut (u64::MAX: no limit).
    pub budget: AtomicU64,
    /// Once true, connections are cut and new ones closed at once.
    pub dead: AtomicBool,
}

pub struct Proxy {
    pub addr: String,
    pub faults: Arc<Faults>,
}

impl Proxy {
    pub async fn start(upstream: &str) -> Proxy {
        let upstream = upstream.trim_start_matches("http://").to_string();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = format!("http://{}", listener.local_addr().unwrap());
        let faults = Arc::new(Faults {
            budget: AtomicU64::new(u64::MAX),
            ..Default::default()
        });
        let f = Arc::clone(&faults);
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let (f, upstream) = (Arc::clone(&f), upstream.clone());
                tokio::spawn(async move {
                    let _ = handle(client, &upstream, f).await;
                });
            }
        });
        Proxy { addr, faults }
    }

    /// Lets `bytes` more go upstream, then behaves like a dead server.
    pub fn die_after(&self, bytes: u64) {
        self.faults.budget.store(bytes, Ordering::SeqCst);
    }

    /// Back to a healthy pass-through.
    pub fn heal(&self) {
        self.faults.budget.store(u64::MAX, Ordering::SeqCst);
        self.faults.dead.store(false, Ordering::SeqCst);
    }
}

/// Reads one HTTP/1.1 head (through the blank line); `None` at a clean end of stream.
async fn read_head<R: tokio::io::AsyncBufRead + Unpin>(
    r: &mut R,
) -> std::io::Result<Option<Vec<u8>>> {
    let mut head = Vec::new();
    loop {
        let n = r.read_until(b'\n', &mut head).await?;
        if n == 0 {
            return Ok(if head.is_empty() { None } else { Some(head) });
        }
        if head.ends_with(b"\r\n\r\n") {
            return Ok(Some(head));
        }
    }
}

fn header_value(head: &[u8], name: &str) -> Option<String> {
    String::from_utf8_lossy(head).lines().skip(1).find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim()
            .eq_ignore_ascii_case(name)
            .then(|| v.trim().to_string())
    })
}

/// Proxies one connection request by request, so every request can be inspected.
async fn handle(client: TcpStream, upstream: &str, f: Arc<Faults>) -> std::io::Result<()> {
    if f.dead.load(Ordering::SeqCst) {
        return Ok(());
    }
    let (cr, mut cw) = client.into_split();
    let mut cr = tokio::io::BufReader::new(cr);
    let server = TcpStream::connect(upstream).await?;
    let (sr, mut sw) = server.into_split();
    let mut sr = tokio::io::BufReader::new(sr);
    loop {
        let Some(head) = read_head(&mut cr).await? else {
            return Ok(());
        };
        let first_line = String::from_utf8_lossy(&head)
            .lines()
            .next()
            .unwrap_or_default()
            .to_string();
        let req_len: u64 = header_value(&head, "content-length")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        if first_line.starts_with("PUT ")
            && first_line.contains("partNumber=")
            && f.fail_one_part.swap(false, Ordering::SeqCst)
        {
            f.injected.fetch_add(1, Ordering::SeqCst);
            let body = "<Error><Code>InternalError</Code><Message>injected</Message></Error>";
            let resp = format!(
                "HTTP/1.1 500 Internal Server Error\r\nContent-Type: application/xml\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            cw.write_all(resp.as_bytes()).await?;
            return Ok(());
        }
        if !spend(&f, head.len() as u64) {
            return Ok(());
        }
        sw.write_all(&head).await?;
        let mut left = req_len;
        let mut buf = vec![0u8; 64 << 10];
        while left > 0 {
            let n = cr.read(&mut buf[..(left as usize).min(64 << 10)]).await?;
            if n == 0 || !spend(&f, n as u64) {
                return Ok(());
            }
            sw.write_all(&buf[..n]).await?;
            left -= n as u64;
        }
        let Some(resp) = read_head(&mut sr).await? else {
            return Ok(());
        };
        if f.dead.load(Ordering::SeqCst) {
            return Ok(());
        }
        cw.write_all(&resp).await?;
        let status: u16 = String::from_utf8_lossy(&resp)
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        let no_body =
            first_line.starts_with("HEAD ") || status == 204 || status == 304 || status < 200;
        let chunked =
            header_value(&resp, "transfer-encoding").is_some_and(|v| v.contains("chunked"));
        match header_value(&resp, "content-length").and_then(|v| v.parse::<u64>().ok()) {
            _ if no_body => {}
            Some(mut n) if !chunked => {
                while n > 0 {
                    let got = sr.read(&mut buf[..(n as usize).min(64 << 10)]).await?;
                    if got == 0 || f.dead.load(Ordering::SeqCst) {
                        return Ok(());
                    }
                    cw.write_all(&buf[..got]).await?;
                    n -= got as u64;
                }
            }
            // Chunked or unframed: pass the rest of the connection through unparsed.
            _ => {
                let _ = tokio::io::copy(&mut sr, &mut cw).await;
                return Ok(());
            }
        }
    }
}

/// Takes `n` bytes from the budget; false (and dead) when it is spent.
fn spend(f: &Faults, n: u64) -> bool {
    if f.dead.load(Ordering::SeqCst) {
        return false;
    }
    let left = f.budget.load(Ordering::SeqCst);
    if left == u64::MAX {
        return true;
    }
    if left < n {
        f.dead.store(true, Ordering::SeqCst);
        return false;
    }
    f.budget.fetch_sub(n, Ordering::SeqCst);
    true
}

//! Section 3b: snapshots of the big collection in Azure Blob Storage (Azurite, from
//! `emulators/`) against the same bytes uploaded and downloaded by a plain Azure client
//! (`object_store`'s, 8 MiB blocks, 8 in flight), rounds alternating.

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use futures::StreamExt;
use object_store::azure::{MicrosoftAzure, MicrosoftAzureBuilder};
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStoreExt, WriteMultipart};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::harness::{call, env_or, median, timed_snapshot, Service};

/// The emulator's settings, from `.emulators/env`; `None` when it is not running.
fn settings() -> Option<[String; 4]> {
    let get = |k: &str| std::env::var(k).ok();
    Some([
        get("AZURE_TEST_ENDPOINT")?,
        get("AZURE_TEST_ACCOUNT")?,
        get("AZURE_TEST_KEY")?,
        env_or("AZURE_TEST_CONTAINER", "snapshots"),
    ])
}

fn client(s: &[String; 4]) -> Arc<MicrosoftAzure> {
    let [endpoint, account, key, container] = s;
    Arc::new(
        MicrosoftAzureBuilder::new()
            .with_endpoint(endpoint.clone())
            .with_account(account.clone())
            .with_access_key(key.clone())
            .with_container_name(container.clone())
            .with_allow_http(true)
            .build()
            .unwrap(),
    )
}

/// A plain block upload of `file`: 8 MiB blocks, 8 in flight. Seconds.
async fn plain_upload(store: &Arc<MicrosoftAzure>, key: &str, file: &Path) -> f64 {
    let t = Instant::now();
    let upload = store.put_multipart(&ObjectPath::from(key)).await.unwrap();
    let mut w = WriteMultipart::new_with_chunk_size(upload, 8 << 20);
    let mut f = tokio::fs::File::open(file).await.unwrap();
    let mut buf = vec![0u8; 8 << 20];
    loop {
        let n = f.read(&mut buf).await.unwrap();
        if n == 0 {
            break;
        }
        w.wait_for_capacity(8).await.unwrap();
        w.write(&buf[..n]);
    }
    w.finish().await.unwrap();
    t.elapsed().as_secs_f64()
}

/// A plain download of `key` into `file`, fsynced. Seconds.
async fn plain_download(store: &Arc<MicrosoftAzure>, key: &str, file: &Path) -> f64 {
    let t = Instant::now();
    let mut body = store
        .get(&ObjectPath::from(key))
        .await
        .unwrap()
        .into_stream();
    let mut f = tokio::fs::File::create(file).await.unwrap();
    while let Some(chunk) = body.next().await {
        f.write_all(&chunk.unwrap()).await.unwrap();
    }
    f.sync_all().await.unwrap();
    t.elapsed().as_secs_f64()
}

/// The service's environment for Azure snapshots under `prefix`.
fn service_env(s: &[String; 4], prefix: &str) -> Vec<(String, String)> {
    let p = "QDRANT__STORAGE__SNAPSHOTS_CONFIG__";
    [
        ("SNAPSHOTS_STORAGE", "azure"),
        ("AZURE_CONFIG__ENDPOINT_URL", &s[0]),
        ("AZURE_CONFIG__ACCOUNT", &s[1]),
        ("AZURE_CONFIG__ACCESS_KEY", &s[2]),
        ("AZURE_CONFIG__CONTAINER", &s[3]),
        ("AZURE_CONFIG__PREFIX", prefix),
    ]
    .into_iter()
    .map(|(k, v)| (format!("{p}{k}"), v.to_string()))
    .collect()
}

/// Create and recovery (by `az://` URL) against the plain client, on the tar `base_file`.
pub(crate) fn azure_snapshots(
    c: &reqwest::blocking::Client,
    root: &Path,
    base_file: &Path,
    repeat: usize,
    results: &mut serde_json::Map<String, Value>,
) {
    let Some(s) = settings() else {
        println!("Azure: AZURE_TEST_ENDPOINT is not set (make bench starts Azurite); skipped");
        return;
    };
    let rt = tokio::runtime::Runtime::new().unwrap();
    let store = client(&s);
    let prefix = format!("bench-{}", uuid::Uuid::new_v4().simple());
    let svc = Service::start(root, &service_env(&s, &prefix));
    let (mut ours, mut base, mut ours_r, mut base_r) = (vec![], vec![], vec![], vec![]);
    let base_key = format!("{prefix}-plain/baseline.tar");
    for i in 0..repeat {
        base.push(rt.block_on(plain_upload(&store, &base_key, base_file)));
        let (took, v) = timed_snapshot(c, &svc.url, "big");
        ours.push(took);
        let name = v["result"]["name"].as_str().unwrap().to_string();
        let dl = root.join(format!("azure-download-{i}.tar"));
        base_r.push(rt.block_on(plain_download(&store, &base_key, &dl)));
        let _ = std::fs::remove_file(&dl);
        let t = Instant::now();
        call(
            c,
            reqwest::Method::PUT,
            &format!("{}/collections/big_az/snapshots/recover", svc.url),
            Some(json!({"location": format!("az://{}/{prefix}/big/{name}", s[3])}).to_string()),
        );
        ours_r.push(t.elapsed().as_secs_f64());
        let _ = c.delete(format!("{}/collections/big_az", svc.url)).send();
        let _ = c
            .delete(format!("{}/collections/big/snapshots/{name}", svc.url))
            .send();
    }
    let _ = rt.block_on(store.delete(&ObjectPath::from(base_key.as_str())));
    let (om, bm, orr, br) = (
        median(ours.clone()),
        median(base.clone()),
        median(ours_r.clone()),
        median(base_r.clone()),
    );
    println!("Azure (Azurite) create: ours median {om:.2} s vs a plain block upload of the same tar {bm:.2} s = {:.2}x (target <= 1.15x); runs ours {ours:.2?} base {base:.2?}", om / bm);
    println!("Azure (Azurite) recover by az:// URL: ours median {orr:.2} s vs a plain download + fsync {br:.2} s = {:.2}x (target <= 1.15x); runs ours {ours_r:.2?} base {base_r:.2?}", orr / br);
    results.insert("azure_create_ratio".into(), json!(om / bm));
    results.insert("azure_recover_ratio".into(), json!(orr / br));
    results.insert("azure_create_s".into(), json!(om));
    results.insert("azure_recover_s".into(), json!(orr));
}

//! Section 4: incremental S3 snapshots, first and second after 1% of the points changed.

use std::path::Path;
use std::time::{Duration, Instant};

use crate::harness::{call, median, mib, vector, Service};
use crate::s3::{plain_download, plain_upload, S3};
use serde_json::{json, Value};

/// A batch overwriting `ids` with vectors and payloads they did not have before.
pub(crate) fn overwrite_body(ids: &[u64], salt: u64) -> String {
    let vectors: Vec<Vec<f32>> = ids.iter().map(|&i| vector(i ^ (salt << 40))).collect();
    let payloads: Vec<Value> = ids
        .iter()
        .map(|i| json!({"title": format!("doc {i} v{salt}"), "n": i}))
        .collect();
    json!({"batch": {"ids": ids, "vectors": vectors, "payloads": payloads}}).to_string()
}

/// Section 4: incremental snapshots on S3 of the big collection (issue 11). Each round
/// starts from an empty prefix: a first (full) snapshot, 1% of the points overwritten and
/// a few deleted, a second snapshot; then recovery of the second against a plain download
/// of the same bytes; then both are deleted and the collector empties the prefix.
pub(crate) fn incremental_s3(
    c: &reqwest::blocking::Client,
    root: &Path,
    s3: &S3,
    big_points: u64,
    repeat: usize,
    results: &mut serde_json::Map<String, Value>,
) {
    let prefix = format!("bench-inc-{}", uuid::Uuid::new_v4().simple());
    let plain_key = format!(
        "bench-inc-plain-{}/second.tar",
        uuid::Uuid::new_v4().simple()
    );
    let mut env = s3.env(&prefix);
    env.push((
        "QDRANT__STORAGE__SNAPSHOTS_CONFIG__INCREMENTAL".into(),
        "true".into(),
    ));
    let svc = Service::start(root, &env);
    let create = |c: &reqwest::blocking::Client| -> (f64, String, u64) {
        let t = Instant::now();
        let v = call(
            c,
            reqwest::Method::POST,
            &format!("{}/collections/big/snapshots?wait=true", svc.url),
            None,
        );
        let name = v["result"]["name"].as_str().unwrap().to_string();
        (
            t.elapsed().as_secs_f64(),
            name,
            v["result"]["size"].as_u64().unwrap(),
        )
    };
    let (mut first_s, mut second_s, mut ours_r, mut base_r) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let (mut first_added, mut second_added, mut logical) = (0u64, 0u64, 0u64);
    for round in 0..repeat as u64 {
        let b0 = s3.bytes_under(&prefix);
        let (t1, first, _) = create(c);
        let b1 = s3.bytes_under(&prefix);
        // 1% of the points get new vectors and payloads, in batches of 1,000; 100 deleted.
        let stride = 100;
        let ids: Vec<u64> = (0..big_points / stride)
            .map(|k| k * stride + (round * 37 + 11) % stride)
            .collect();
        for chunk in ids.chunks(1000) {
            call(
                c,
                reqwest::Method::PUT,
                &format!("{}/collections/big/points?wait=true", svc.url),
                Some(overwrite_body(chunk, round + 1)),
            );
        }
        call(
            c,
            reqwest::Method::POST,
            &format!("{}/collections/big/points/delete?wait=true", svc.url),
            Some(json!({"points": &ids[..100]}).to_string()),
        );
        let (t2, second, size) = create(c);
        let b2 = s3.bytes_under(&prefix);
        first_s.push(t1);
        second_s.push(t2);
        first_added = first_added.max(b1 - b0);
        second_added = second_added.max(b2 - b1);
        logical = size;

        // Recovery of the second vs a plain download of the same bytes.
        let url = format!("{}/collections/big/snapshots/{second}", svc.url);
        let tar = root.join("incremental-second.tar");
        let mut resp = c.get(&url).send().unwrap();
        let mut f = std::fs::File::create(&tar).unwrap();
        std::io::copy(&mut resp, &mut f).unwrap();
        drop(f);
        // The baseline object: the same bytes, stored plainly (and kept).
        s3.rt.block_on(plain_upload(
            &s3.client,
            &s3.bucket,
            &plain_key,
            &tar,
            8 << 20,
            8,
            true,
        ));
        let dl = root.join("incremental-download.tar");
        base_r.push(
            s3.rt
                .block_on(plain_download(&s3.client, &s3.bucket, &plain_key, &dl)),
        );
        let _ = std::fs::remove_file(&dl);
        let _ = std::fs::remove_file(&tar);
        let t = Instant::now();
        call(
            c,
            reqwest::Method::PUT,
            &format!("{}/collections/big_inc/snapshots/recover", svc.url),
            Some(
                json!({"location": format!("s3://{}/{prefix}/big/{second}", s3.bucket)})
                    .to_string(),
            ),
        );
        ours_r.push(t.elapsed().as_secs_f64());
        call(
            c,
            reqwest::Method::DELETE,
            &format!("{}/collections/big_inc", svc.url),
            None,
        );
        for name in [&first, &second] {
            call(
                c,
                reqwest::Method::DELETE,
                &format!("{}/collections/big/snapshots/{name}", svc.url),
                None,
            );
        }
        // The collector frees everything; the next round's first snapshot is full again.
        let t = Instant::now();
        while s3.bytes_under(&prefix) > 0 {
            assert!(
                t.elapsed() < Duration::from_secs(120),
                "the collector did not empty the prefix"
            );
            std::thread::sleep(Duration::from_millis(500));
        }
    }
    s3.rt.block_on(async {
        let _ = s3
            .client
            .delete_object()
            .bucket(&s3.bucket)
            .key(&plain_key)
            .send()
            .await;
    });
    let (f, s) = (median(first_s.clone()), median(second_s.clone()));
    println!(
        "incremental S3: first snapshot median {f:.2} s adding {:.0} MiB; second (1% changed) {s:.2} s adding {:.1} MiB = {:.2}x the time (target <= 0.35x), {:.2}% of its logical {:.0} MiB (target <= 2% + 8 MiB); runs first {first_s:.2?} second {second_s:.2?}",
        mib(first_added),
        mib(second_added),
        s / f,
        100.0 * second_added as f64 / logical as f64,
        mib(logical)
    );
    let (or, br) = (median(ours_r.clone()), median(base_r.clone()));
    println!("incremental S3 recover of the second: ours median {or:.2} s vs plain download of the same bytes + fsync {br:.2} s = {:.2}x (target <= 1.15x); runs ours {ours_r:.2?} base {base_r:.2?}", or / br);
    results.insert("incremental_first_s".into(), json!(f));
    results.insert("incremental_second_s".into(), json!(s));
    results.insert("incremental_time_ratio".into(), json!(s / f));
    results.insert("incremental_first_added_bytes".into(), json!(first_added));
    results.insert("incremental_second_added_bytes".into(), json!(second_added));
    results.insert("incremental_logical_bytes".into(), json!(logical));
    results.insert("incremental_recover_s".into(), json!(or));
    results.insert("incremental_plain_download_s".into(), json!(br));
    results.insert("incremental_recover_ratio".into(), json!(or / br));
}

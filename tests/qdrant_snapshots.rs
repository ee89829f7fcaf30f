//! Snapshots written by real Qdrant 1.19.0 (`tests/fixtures/qdrant-1.19/`, with what Qdrant
//! reported for them) recover by upload, `file://` and bare name, and equal what Qdrant
//! served: every point, payload and vector, and the top-10 answers of fixed queries.

mod common;

use std::io::Read;
use std::path::Path;

use axum::http::StatusCode;
use common::{build, entry, json, test_app, upload_snapshot};
use serde_json::{json, Value};

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/qdrant-1.19")
            .join(name),
    )
    .unwrap()
}

fn expected(name: &str) -> Value {
    let mut text = String::new();
    flate2::read::GzDecoder::new(&fixture(&format!("{name}.expected.json.gz"))[..])
        .read_to_string(&mut text)
        .unwrap();
    serde_json::from_str(&text).unwrap()
}

fn max_diff(a: &Value, b: &Value) -> f64 {
    match (a, b) {
        (Value::Array(x), Value::Array(y)) if x.len() == y.len() => x
            .iter()
            .zip(y)
            .map(|(p, q)| (p.as_f64().unwrap() - q.as_f64().unwrap()).abs())
            .fold(0.0, f64::max),
        (Value::Object(x), Value::Object(y)) if x.len() == y.len() => x
            .iter()
            .map(|(k, v)| y.get(k).map_or(f64::INFINITY, |w| max_diff(v, w)))
            .fold(0.0, f64::max),
        _ => f64::INFINITY,
    }
}

/// Compares a recovered collection with what Qdrant reported for it.
async fn assert_same_as_qdrant(app: &axum::Router, collection: &str, exp: &Value) {
    let (s, info) = json(
        app,
        "GET",
        &format!("/collections/{collection}"),
        json!(null),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{info}");
    assert_eq!(
        info["result"]["config"]["params"]["vectors"],
        exp["info_config"]["params"]["vectors"]
    );
    assert_eq!(info["result"]["points_count"], exp["points_count"]);
    let (_, got) = json(
        app,
        "POST",
        &format!("/collections/{collection}/points/scroll"),
        json!({"limit": 100_000, "with_payload": true, "with_vector": true}),
    )
    .await;
    let got = got["result"]["points"].as_array().unwrap().clone();
    let want = exp["points"].as_array().unwrap();
    assert_eq!(got.len(), want.len());
    for w in want {
        let g = got
            .iter()
            .find(|g| g["id"] == w["id"])
            .unwrap_or_else(|| panic!("point {} is missing", w["id"]));
        assert_eq!(g["payload"], w["payload"], "payload of {}", w["id"]);
        let d = max_diff(&g["vector"], &w["vector"]);
        assert!(d < 1e-5, "vector of {} differs by {d}", w["id"]);
    }
    for q in exp["queries"].as_array().unwrap() {
        let mut body = json!({"query": q["query"], "limit": 10});
        if !q["using"].is_null() {
            body["using"] = q["using"].clone();
        }
        let (_, r) = json(
            app,
            "POST",
            &format!("/collections/{collection}/points/query"),
            body,
        )
        .await;
        let hits = r["result"]["points"].as_array().unwrap();
        let ids: Vec<&Value> = hits.iter().map(|h| &h["id"]).collect();
        let want: Vec<&Value> = q["ids"].as_array().unwrap().iter().collect();
        assert_eq!(ids, want, "top-10 of a query on {collection}");
        for (h, s) in hits.iter().zip(q["scores"].as_array().unwrap()) {
            let (a, b) = (h["score"].as_f64().unwrap(), s.as_f64().unwrap());
            assert!((a - b).abs() <= 1e-4 * b.abs().max(1.0), "score {a} vs {b}");
        }
    }
}

#[tokio::test]
async fn qdrant_snapshots_recover_by_upload_file_url_and_bare_name() {
    let tmp = tempfile::tempdir().unwrap();
    let app = test_app(tmp.path(), &[]).await;
    for name in ["papers", "named"] {
        let exp = expected(name);
        let snapshot = fixture(&format!("{name}.snapshot"));

        let (s, resp) = upload_snapshot(&app, name, &snapshot).await;
        assert_eq!(s, StatusCode::OK, "{}", String::from_utf8_lossy(&resp));
        assert_same_as_qdrant(&app, name, &exp).await;

        // file:// from the snapshots directory, into another collection.
        let dir = tmp.path().join("snapshots");
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join(format!("qdrant-{name}.snapshot"));
        std::fs::write(&file, &snapshot).unwrap();
        let copy = format!("{name}-file");
        let (s, v) = json(
            &app,
            "PUT",
            &format!("/collections/{copy}/snapshots/recover"),
            json!({"location": format!("file://{}", file.display())}),
        )
        .await;
        assert_eq!(s, StatusCode::OK, "{v}");
        assert_same_as_qdrant(&app, &copy, &exp).await;

        // A bare name among the collection's stored snapshots.
        let bare = format!("{name}-bare");
        let stored = dir.join(&bare);
        std::fs::create_dir_all(&stored).unwrap();
        std::fs::write(stored.join("from-qdrant.snapshot"), &snapshot).unwrap();
        let (s, v) = json(
            &app,
            "PUT",
            &format!("/collections/{bare}/snapshots/recover"),
            json!({"location": "from-qdrant.snapshot"}),
        )
        .await;
        assert_eq!(s, StatusCode::OK, "{v}");
        assert_same_as_qdrant(&app, &bare, &exp).await;
    }
    // A recovered collection takes writes and snapshots like any other.
    let (s, v) = json(
        &app,
        "PUT",
        "/collections/named/points?wait=true",
        json!({"points": [{"id": 9999, "vector": {"text": vec![0.5; 16], "image": [1.0, 2.0, 3.0, 4.0]}, "payload": {"new": true}}]}),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let (s, v) = json(&app, "POST", "/collections/named/snapshots", json!(null)).await;
    assert_eq!(s, StatusCode::OK, "{v}");
}

fn files_named(root: &Path, name: &str) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.file_name().is_some_and(|f| f == name) {
                out.push(p);
            }
        }
    }
    out
}

/// A GNU sparse entry (`S`) named `name` whose `blocks` are `(offset, length)` pairs; each
/// data block is filled with `x`. Blocks past the header's four go into extension headers.
fn sparse_entry(name: &str, blocks: &[(u64, u64)], real_size: u64) -> Vec<u8> {
    // Octal, or GNU's base-256 (high bit set, big-endian) when it does not fit.
    let octal = |v: u64, width: usize| {
        let text = format!("{v:0w$o}\0", w = width - 1).into_bytes();
        if text.len() == width {
            return text;
        }
        let mut out = vec![0u8; width];
        out[width - 8..].copy_from_slice(&v.to_be_bytes());
        out[0] = 0x80;
        out
    };
    let stored: u64 = blocks.iter().map(|b| b.1).sum();
    let mut h = common::tar_header(name.as_bytes(), b'S', stored, b"");
    h[257..265].copy_from_slice(b"ustar  \0");
    let put = |h: &mut [u8], at: usize, (off, len): (u64, u64)| {
        h[at..at + 12].copy_from_slice(&octal(off, 12));
        h[at + 12..at + 24].copy_from_slice(&octal(len, 12));
    };
    for (i, b) in blocks.iter().take(4).enumerate() {
        put(&mut h, 386 + i * 24, *b);
    }
    h[482] = u8::from(blocks.len() > 4);
    h[483..495].copy_from_slice(&octal(real_size, 12));
    h[148..156].copy_from_slice(b"        ");
    let sum: u32 = h.iter().map(|&b| b as u32).sum();
    h[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
    let mut out = h.to_vec();
    let rest: Vec<_> = blocks.iter().skip(4).collect();
    let chunks: Vec<_> = rest.chunks(21).collect();
    for (i, chunk) in chunks.iter().enumerate() {
        let mut ext = [0u8; 512];
        for (j, b) in chunk.iter().enumerate() {
            put(&mut ext, j * 24, **b);
        }
        ext[504] = u8::from(i + 1 < chunks.len());
        out.extend(ext);
    }
    out.extend(std::iter::repeat_n(b'x', stored as usize));
    out.resize(out.len().div_ceil(512) * 512, 0);
    out
}

#[tokio::test]
async fn hostile_qdrant_shaped_archives_get_a_400_and_leave_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let app = test_app(tmp.path(), &[]).await;
    let config = br#"{"params":{"vectors":{"size":4,"distance":"Dot"},"shard_number":1}}"#;
    let traversal = build(&[entry("snapshot/files/../../../../evil", b'0', b"x", "")]);
    let link = build(&[entry(
        "snapshot/files/segment.json",
        b'2',
        b"",
        "/etc/passwd",
    )]);
    let cases: Vec<(&str, Vec<u8>)> = vec![
        (
            "a nested segment with ../",
            build(&[
                entry("config.json", b'0', config, ""),
                entry("0/segments/a.tar", b'0', &traversal, ""),
            ]),
        ),
        (
            "a link in a segment",
            build(&[
                entry("config.json", b'0', config, ""),
                entry("0/segments/a.tar", b'0', &link, ""),
            ]),
        ),
        (
            "an outer ../",
            build(&[
                entry("config.json", b'0', config, ""),
                entry("0/../../evil", b'0', b"x", ""),
            ]),
        ),
        (
            "a second shard",
            build(&[
                entry("config.json", b'0', config, ""),
                entry("1/segments/a.tar", b'0', &traversal, ""),
            ]),
        ),
        (
            "no config",
            build(&[entry("version.info", b'0', b"0.4.2", "")]),
        ),
        (
            "a sparse file claiming a terabyte",
            build(&[
                entry("config.json", b'0', config, ""),
                entry(
                    "0/segments/a.tar",
                    b'0',
                    &build(&[sparse_entry(
                        "snapshot/files/payload_storage/page_0.dat",
                        &[((1 << 40) - 512, 512)],
                        1 << 40,
                    )]),
                    "",
                ),
            ]),
        ),
        (
            "a bomb of sparse entries",
            build(&[
                entry("config.json", b'0', config, ""),
                entry(
                    "0/segments/a.tar",
                    b'0',
                    &build(&[sparse_entry(
                        "snapshot/files/vector_storage/vectors/chunk_0.mmap",
                        &(1..100_000u64).map(|k| (k * 16, 0)).collect::<Vec<_>>(),
                        99_999 * 16,
                    )]),
                    "",
                ),
            ]),
        ),
        ("a lying size", {
            let mut v = build(&[
                entry("config.json", b'0', config, ""),
                entry("0/segments/a.tar", b'0', &traversal, ""),
            ]);
            v.truncate(900);
            v
        }),
    ];
    for (what, archive) in cases {
        let (s, resp) = upload_snapshot(&app, "h", &archive).await;
        let text = String::from_utf8_lossy(&resp);
        assert_eq!(s, StatusCode::BAD_REQUEST, "{what}: {text}");
        assert!(text.contains("invalid"), "{what}: {text}");
        let reason = match what {
            "a nested segment with ../" | "an outer ../" => "not a plain relative path",
            "a link in a segment" => "only files are allowed",
            "a second shard" => "more than one shard",
            "no config" => "config.json is missing",
            "a sparse file claiming a terabyte" => "larger than the limit",
            // Its hundred thousand holes are staged as holes; the segment is then incomplete.
            "a bomb of sparse entries" => "lacks its segment.json",
            _ => "truncated or corrupted",
        };
        assert!(text.contains(reason), "{what}: {text}");
        let (_, exists) = json(&app, "GET", "/collections/h/exists", json!(null)).await;
        assert_eq!(exists["result"]["exists"], false, "{what}");
    }
    assert!(files_named(tmp.path().parent().unwrap(), "evil").is_empty());
    let staging: Vec<_> = std::fs::read_dir(tmp.path().join("storage"))
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().contains("staging"))
        .flat_map(|e| std::fs::read_dir(e.path()).into_iter().flatten().flatten())
        .collect();
    assert!(staging.is_empty(), "staging left behind: {staging:?}");
}

#[tokio::test]
async fn a_qdrant_full_storage_snapshot_recovers_at_start_up() {
    let tmp = tempfile::tempdir().unwrap();
    let path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/qdrant-1.19/full.snapshot");
    let path = path.display().to_string();
    let svc =
        common::Service::start_with_args(tmp.path(), &[], &["--storage-snapshot", &path]).await;
    let base = svc.url();
    let get = |path: String| {
        let url = format!("{base}{path}");
        async move {
            reqwest::get(url)
                .await
                .unwrap()
                .json::<Value>()
                .await
                .unwrap()
        }
    };
    let want: Value = serde_json::from_slice(&fixture("full.expected.json")).unwrap();
    let aliases = get("/aliases".into()).await;
    let got: serde_json::Map<String, Value> = aliases["result"]["aliases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            (
                a["alias_name"].as_str().unwrap().into(),
                a["collection_name"].clone(),
            )
        })
        .collect();
    assert_eq!(Value::Object(got), want["aliases"]);
    for name in want["collections"].as_array().unwrap() {
        let name = name.as_str().unwrap();
        let info = get(format!("/collections/{name}")).await;
        assert_eq!(
            info["result"]["points_count"],
            expected(name)["points_count"],
            "{name}"
        );
    }
}

/// Every regular file of a tar, in order (GNU sparse entries come back expanded).
async fn read_tar(bytes: &[u8]) -> Vec<(String, Vec<u8>)> {
    use futures::StreamExt;
    use tokio::io::AsyncReadExt;
    let mut archive = tokio_tar::Archive::new(bytes);
    let mut entries = archive.entries().unwrap();
    let mut out = Vec::new();
    while let Some(e) = entries.next().await {
        let mut e = e.unwrap();
        if e.header().entry_type().is_dir() {
            continue;
        }
        let path = e.path().unwrap().to_string_lossy().into_owned();
        let mut data = Vec::new();
        e.read_to_end(&mut data).await.unwrap();
        out.push((path, data));
    }
    out
}

/// Rewrites an appendable segment's files into the layout of an optimized one, as Qdrant's
/// optimizer writes it: the immutable id tracker (`id_tracker.*`), single-file vectors
/// (`matrix.dat`, `deleted.dat`) with `storage_type`, plus an HNSW graph and a quantized copy
/// that recovery must skip. Payload storage is the same gridstore in both kinds.
fn optimize_segment(files: Vec<(String, Vec<u8>)>, storage_type: &str) -> Vec<u8> {
    let get = |name: &str| {
        files
            .iter()
            .find(|(p, _)| p == &format!("snapshot/files/{name}"))
            .map(|(_, d)| d.clone())
    };
    // The mutable tracker's change log, applied.
    let log = get("mutable_id_tracker.mappings").unwrap();
    let mut ids = std::collections::BTreeMap::new();
    let mut at = 0;
    while at < log.len() {
        let kind = log[at];
        let width = if kind == 1 || kind == 3 { 8 } else { 16 };
        let id = log[at + 1..at + 1 + width].to_vec();
        at += 1 + width;
        if kind <= 2 {
            let offset = u32::from_le_bytes(log[at..at + 4].try_into().unwrap());
            at += 4;
            ids.retain(|_, v: &mut Vec<u8>| *v != id);
            ids.insert(offset, id);
        } else {
            ids.retain(|_, v| *v != id);
        }
    }
    let mut mappings = (ids.len() as u64).to_le_bytes().to_vec();
    for (offset, id) in &ids {
        mappings.push(if id.len() == 8 { 0 } else { 1 });
        mappings.extend(id);
        mappings.extend(offset.to_le_bytes());
    }
    let points = ids.keys().max().map_or(0, |m| *m as usize + 1);
    let mut meta: Value = serde_json::from_slice(&get("segment.json").unwrap()).unwrap();
    let mut out = vec![
        entry("snapshot/files/id_tracker.mappings", b'0', &mappings, ""),
        entry(
            "snapshot/files/id_tracker.versions",
            b'0',
            &get("mutable_id_tracker.versions").unwrap(),
            "",
        ),
        entry(
            "snapshot/files/id_tracker.deleted",
            b'0',
            &vec![0u8; points.div_ceil(64) * 8],
            "",
        ),
        entry("snapshot/files/vector_index/graph.bin", b'0', b"hnsw", ""),
    ];
    let names: Vec<String> = meta["config"]["vector_data"]
        .as_object()
        .unwrap()
        .keys()
        .cloned()
        .collect();
    for name in names {
        let dir = if name.is_empty() {
            "vector_storage".to_string()
        } else {
            format!("vector_storage-{name}")
        };
        let dim = meta["config"]["vector_data"][&name]["size"]
            .as_u64()
            .unwrap() as usize;
        meta["config"]["vector_data"][&name]["storage_type"] = json!(storage_type);
        let mut matrix = b"data".to_vec();
        matrix.extend(&get(&format!("{dir}/vectors/chunk_0.mmap")).unwrap()[..points * dim * 4]);
        let mut deleted = b"drop\0\0\0\0".to_vec();
        deleted.extend(
            &get(&format!("{dir}/deleted/flags_a.dat")).unwrap()[..points.div_ceil(64) * 8],
        );
        out.push(entry(
            &format!("snapshot/files/{dir}/matrix.dat"),
            b'0',
            &matrix,
            "",
        ));
        out.push(entry(
            &format!("snapshot/files/{dir}/deleted.dat"),
            b'0',
            &deleted,
            "",
        ));
        out.push(entry(
            &format!("snapshot/files/{dir}/quantized/data.bin"),
            b'0',
            b"pq",
            "",
        ));
    }
    out.push(entry(
        "snapshot/files/segment.json",
        b'0',
        &serde_json::to_vec(&meta).unwrap(),
        "",
    ));
    for (path, data) in &files {
        if path.starts_with("snapshot/files/payload_storage/") {
            out.push(entry(path, b'0', data, ""));
        }
    }
    build(&out)
}

#[tokio::test]
async fn optimized_qdrant_segments_recover_like_appendable_ones() {
    let tmp = tempfile::tempdir().unwrap();
    let app = test_app(tmp.path(), &[]).await;
    for (name, storage_type) in [("papers", "InRamMmap"), ("named", "Mmap")] {
        let mut parts = Vec::new();
        for (path, data) in read_tar(&fixture(&format!("{name}.snapshot"))).await {
            if path.starts_with("0/segments/") {
                let optimized = optimize_segment(read_tar(&data).await, storage_type);
                parts.push(entry(&path, b'0', &optimized, ""));
            } else if !path.starts_with("0/wal/") {
                parts.push(entry(&path, b'0', &data, ""));
            }
        }
        let (s, resp) = upload_snapshot(&app, name, &build(&parts)).await;
        assert_eq!(s, StatusCode::OK, "{}", String::from_utf8_lossy(&resp));
        assert_same_as_qdrant(&app, name, &expected(name)).await;
    }
}

/// One WAL file in Qdrant's format (see `src/snapshot/qdrant/wal.rs`) holding `ops`.
fn wal_file(seed: u32, ops: &[Value]) -> Vec<u8> {
    let mut out = b"wal\0".to_vec();
    out.extend(seed.to_le_bytes());
    let mut crc = seed;
    for op in ops {
        let mut data = Vec::new();
        ciborium::into_writer(op, &mut data).unwrap();
        let len = data.len() as u64;
        let mut entry = len.to_le_bytes().to_vec();
        entry.extend(&data);
        entry.resize(entry.len() + (4u64.wrapping_sub(len) & 7) as usize, 0);
        crc = crc32c::crc32c_append(!crc.reverse_bits(), &entry);
        out.extend(&entry);
        out.extend(crc.to_le_bytes());
    }
    out.resize(out.len() + 8192, 0);
    out
}

#[test]
fn wal_entries_are_numbered_across_files_and_a_bad_crc_ends_a_file() {
    use snapstream::engine::wal;
    let dir = tempfile::tempdir().unwrap();
    let op = |i: u64| serde_json::json!({"delete_points": {"ids": [i]}});
    std::fs::write(dir.path().join("closed-5"), wal_file(7, &[op(5), op(6)])).unwrap();
    let mut open = wal_file(9, &[op(7), op(8)]);
    // Corrupt the last entry's CRC: it and anything after it are not operations.
    let last = open.len() - 8192 - 1;
    open[last] ^= 0xff;
    std::fs::write(dir.path().join("open-2"), open).unwrap();
    std::fs::write(dir.path().join("open-3"), b"").unwrap();
    let mut seen = Vec::new();
    wal::replay_from(dir.path(), 6, &mut |num, v| {
        seen.push((num, v["delete_points"]["ids"][0].as_u64().unwrap()));
        Ok(())
    })
    .unwrap();
    assert_eq!(seen, vec![(6, 6), (7, 7)]);
    assert!(wal::wanted("open-1") && wal::wanted("closed-12") && !wal::wanted("first-index"));
}

#[tokio::test]
async fn the_real_qdrant_wal_replayed_from_the_start_rebuilds_what_qdrant_served() {
    use snapstream::collections::{Collection, CollectionConfig, PointId};
    for name in ["papers", "named"] {
        let dir = tempfile::tempdir().unwrap();
        let wal = dir.path().join("wal");
        std::fs::create_dir(&wal).unwrap();
        for (path, data) in read_tar(&fixture(&format!("{name}.snapshot"))).await {
            if let Some(file) = path.strip_prefix("0/wal/") {
                std::fs::write(wal.join(file), data).unwrap();
            }
        }
        let mut ops = Vec::new();
        snapstream::engine::wal::replay_from(&wal, 0, &mut |num, op| {
            ops.push((num, op));
            Ok(())
        })
        .unwrap();
        let nums: Vec<u64> = ops.iter().map(|(n, _)| *n).collect();
        assert_eq!(nums, (0..nums.len() as u64).collect::<Vec<_>>(), "{name}");
        assert!(ops.len() > 1, "{name}");

        // Replayed onto an empty collection, the WAL rebuilds exactly what Qdrant served:
        // every operation as Qdrant 1.19 encodes it (batches, integer and UUID ids, named
        // vectors, overwrites, deletes, payload changes, an index) is understood.
        let exp = expected(name);
        let config: CollectionConfig =
            serde_json::from_value(json!({"vectors": exp["info_config"]["params"]["vectors"]}))
                .unwrap();
        let col_dir = dir.path().join("collection");
        Collection::init_dir(&col_dir, &config).unwrap();
        let col = Collection::open(&col_dir, name).unwrap();
        for (num, op) in &ops {
            snapstream::engine::replay::apply(&col, *num, op).unwrap();
        }
        assert_eq!(
            col.read(|s| s.len() as u64),
            exp["points_count"].as_u64().unwrap()
        );
        for w in exp["points"].as_array().unwrap() {
            let id: PointId = serde_json::from_value(w["id"].clone()).unwrap();
            let p = col.read(|s| s.get(&id)).expect("point replayed");
            assert_eq!(
                Value::Object(p.payload.unwrap_or_default()),
                w["payload"],
                "payload of {id} in {name}"
            );
            let got = if w["vector"].is_object() {
                Value::Object(p.vectors.into_iter().map(|(n, v)| (n, json!(v))).collect())
            } else {
                json!(p.vectors[0].1)
            };
            assert!(
                max_diff(&got, &w["vector"]) < 1e-5,
                "vector of {id} in {name}"
            );
        }
    }
}

#[tokio::test]
async fn operations_still_in_the_wal_are_replayed_and_unknown_ones_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let app = test_app(tmp.path(), &[]).await;
    let exp = expected("papers");
    let ids: Vec<u64> = exp["points"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["id"].as_u64().unwrap())
        .collect();
    let (a, b, c) = (ids[0], ids[1], ids[2]);
    let fresh: Vec<f32> = (0..768).map(|i| (i % 7) as f32 + 1.0).collect();
    // The fixture's segments hold operations 0..=7; these follow them in `open-2`.
    let later = vec![
        json!({"set_payload": {"payload": {"from_wal": true}, "points": [a]}}),
        json!({"delete_points": {"ids": [b]}}),
        json!({"upsert_points": {"points": [{"id": 5000, "vector": fresh, "payload": {"new": 1}}]}}),
        json!({"delete_payload": {"keys": ["title"], "points": [c]}}),
        json!({"create_index": {"field_name": "year", "field_schema": "integer"}}),
    ];
    let with_wal = |ops: Vec<Value>| async move {
        let mut parts = Vec::new();
        for (path, data) in read_tar(&fixture("papers.snapshot")).await {
            let data = if path == "0/wal/open-2" {
                wal_file(77, &ops)
            } else {
                data
            };
            parts.push(entry(&path, b'0', &data, ""));
        }
        build(&parts)
    };
    let (s, resp) = upload_snapshot(&app, "papers", &with_wal(later).await).await;
    assert_eq!(s, StatusCode::OK, "{}", String::from_utf8_lossy(&resp));
    let (_, info) = json(&app, "GET", "/collections/papers", json!(null)).await;
    assert_eq!(info["result"]["points_count"], 980);
    assert!(info["result"]["payload_schema"]["year"].is_object());
    let get = |id: u64| {
        let app = app.clone();
        async move {
            let (s, v) = json(
                &app,
                "GET",
                &format!("/collections/papers/points/{id}"),
                json!(null),
            )
            .await;
            (s, v["result"].clone())
        }
    };
    let old = |id: u64| {
        exp["points"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["id"] == id)
            .unwrap()["payload"]
            .clone()
    };
    let mut want_a = old(a);
    want_a["from_wal"] = json!(true);
    assert_eq!(get(a).await.1["payload"], want_a);
    assert_eq!(get(b).await.0, StatusCode::NOT_FOUND);
    assert_eq!(get(5000).await.1["payload"], json!({"new": 1}));
    let mut want_c = old(c);
    want_c.as_object_mut().unwrap().remove("title");
    assert_eq!(get(c).await.1["payload"], want_c);

    // An operation that cannot be replayed is a 400 naming it, and nothing is created.
    let (s, resp) = upload_snapshot(
        &app,
        "synced",
        &with_wal(vec![
            json!({"sync_points": {"from_id": null, "to_id": null, "points": []}}),
        ])
        .await,
    )
    .await;
    let text = String::from_utf8_lossy(&resp);
    assert_eq!(s, StatusCode::BAD_REQUEST, "{text}");
    assert!(text.contains("sync_points"), "{text}");
    let (_, exists) = json(&app, "GET", "/collections/synced/exists", json!(null)).await;
    assert_eq!(exists["result"]["exists"], false);
}

#[tokio::test]
async fn qdrant_snapshots_recover_by_url_and_with_the_snapshot_flag() {
    // A plain HTTP server holding the fixture, as a user's file server would.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let named = fixture("named.snapshot");
    let files = axum::Router::new().route(
        "/named.snapshot",
        axum::routing::get(move || async move { named }),
    );
    tokio::spawn(async move { axum::serve(listener, files).await });

    let tmp = tempfile::tempdir().unwrap();
    let papers =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/qdrant-1.19/papers.snapshot");
    let arg = format!("{}:papers", papers.display());
    let svc = common::Service::start_with_args(tmp.path(), &[], &["--snapshot", &arg]).await;
    common::assert_qdrant_fixture(&svc.url(), "papers", "papers").await;

    let resp = reqwest::Client::new()
        .put(format!("{}/collections/named/snapshots/recover", svc.url()))
        .json(&json!({"location": format!("http://{addr}/named.snapshot")}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200, "{}", resp.text().await.unwrap());
    common::assert_qdrant_fixture(&svc.url(), "named", "named").await;
}

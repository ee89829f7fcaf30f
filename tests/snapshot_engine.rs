//! Producer → unpacker round trips through the public engine API.

use std::collections::BTreeMap;

use snapstream::collections::Operation;
use snapstream::collections::Registry;
use snapstream::collections::{PointId, PointWrite};
use snapstream::engine::Compression;
use snapstream::engine::SnapshotKind;
use snapstream::engine::{codec, producer, unpack};

/// `bytes` as a stream of uneven chunks, as a network would deliver them: a 1-byte chunk
/// first (shorter than any magic number), then chunks that straddle tar blocks.
fn chunked(bytes: &[u8]) -> impl futures::Stream<Item = std::io::Result<bytes::Bytes>> + Unpin {
    let mut parts = vec![bytes::Bytes::copy_from_slice(&bytes[..1])];
    parts.extend(bytes[1..].chunks(70_001).map(bytes::Bytes::copy_from_slice));
    futures::stream::iter(parts.into_iter().map(Ok))
}

#[tokio::test]
async fn full_snapshots_round_trip_with_long_names_under_every_compression() {
    let tmp = tempfile::tempdir().unwrap();
    let reg = Registry::open(&tmp.path().join("storage")).unwrap();
    let long = format!("c{}", "x".repeat(150)); // archive paths beyond tar's 100-byte field
    for name in ["short", long.as_str()] {
        reg.create(
            name,
            serde_json::from_value(
                serde_json::json!({"vectors": {"size": 3, "distance": "Euclid"}}),
            )
            .unwrap(),
        )
        .unwrap();
        let col = reg.get(name).unwrap();
        for batch in 0..3u64 {
            let points = (0..50)
                .map(|i| PointWrite {
                    id: PointId::Num(batch * 50 + i),
                    vectors: vec![(String::new(), vec![i as f32, batch as f32, 1.0])],
                    payload: None,
                })
                .collect();
            col.write_blocking(Operation::Upsert(points)).unwrap();
            col.seal().unwrap(); // several segments
        }
    }
    let aliases = BTreeMap::from([("a".to_string(), long.clone())]);
    for compression in [Compression::None, Compression::Gzip, Compression::Zstd] {
        let pinned = vec![
            reg.get("short").unwrap().pin_image().unwrap(),
            reg.get(&long).unwrap().pin_image().unwrap(),
        ];
        let manifest = producer::manifest(SnapshotKind::Full, &pinned, aliases.clone());
        let (bytes, produced) =
            producer::write_archive(Vec::new(), &manifest, pinned, compression, None)
                .await
                .unwrap();
        assert_eq!(codec::detect(&bytes), compression);
        assert_eq!(produced.size, bytes.len() as u64);
        let staging = tempfile::tempdir().unwrap();
        let un = unpack::unpack(
            chunked(&bytes),
            staging.path(),
            Some(SnapshotKind::Full),
            None,
        )
        .await
        .unwrap();
        assert_eq!(un.sha256, produced.sha256);
        let snapstream::engine::unpack::Contents::Ours(got, loaded) = un.contents else {
            panic!("our archive read as Qdrant's");
        };
        assert_eq!(got, manifest);
        assert_eq!(got.aliases, aliases);
        let counts: Vec<(String, usize)> = loaded
            .iter()
            .map(|(n, p)| (n.clone(), p.points()))
            .collect();
        assert_eq!(
            counts,
            vec![("short".to_string(), 150), (long.clone(), 150)]
        );
        assert!(staging
            .path()
            .join("collections")
            .join(&long)
            .join("config.json")
            .is_file());
        // A full snapshot is not a collection snapshot.
        let wrong = tempfile::tempdir().unwrap();
        assert!(unpack::unpack(
            chunked(&bytes),
            wrong.path(),
            Some(SnapshotKind::Collection),
            None
        )
        .await
        .is_err());
    }
}

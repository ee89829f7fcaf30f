//! The gRPC API driven by the official Rust client (`qdrant_client::Qdrant`), the client
//! the Rust tab of Qdrant's documentation uses; Go, Java and .NET speak the same protocol.

mod common;

use std::collections::HashMap;

use qdrant_client::qdrant as pb;
use qdrant_client::{Qdrant, QdrantError};
use serde_json::json;
use tonic::Code;

fn code(e: QdrantError) -> Code {
    match e {
        QdrantError::ResponseError { status } => status.code(),
        other => panic!("not a status: {other}"),
    }
}

fn client(url: &str, key: Option<&str>) -> Qdrant {
    Qdrant::from_url(url)
        .api_key(key.map(str::to_string))
        .compression(Some(qdrant_client::config::CompressionEncoding::Gzip))
        .skip_compatibility_check()
        .build()
        .unwrap()
}

fn value(v: serde_json::Value) -> pb::Value {
    use pb::value::Kind;
    let kind = match v {
        serde_json::Value::Null => Kind::NullValue(0),
        serde_json::Value::Bool(b) => Kind::BoolValue(b),
        serde_json::Value::Number(n) if n.is_i64() => Kind::IntegerValue(n.as_i64().unwrap()),
        serde_json::Value::Number(n) => Kind::DoubleValue(n.as_f64().unwrap()),
        serde_json::Value::String(s) => Kind::StringValue(s),
        serde_json::Value::Array(a) => Kind::ListValue(pb::ListValue {
            values: a.into_iter().map(value).collect(),
        }),
        serde_json::Value::Object(m) => Kind::StructValue(pb::Struct {
            fields: m.into_iter().map(|(k, v)| (k, value(v))).collect(),
        }),
    };
    pb::Value { kind: Some(kind) }
}

fn payload(v: serde_json::Value) -> HashMap<String, pb::Value> {
    v.as_object()
        .unwrap()
        .clone()
        .into_iter()
        .map(|(k, v)| (k, value(v)))
        .collect()
}

fn create(name: &str, dim: u64) -> pb::CreateCollection {
    pb::CreateCollection {
        collection_name: name.into(),
        vectors_config: Some(pb::VectorsConfig {
            config: Some(pb::vectors_config::Config::Params(pb::VectorParams {
                size: dim,
                distance: pb::Distance::Cosine as i32,
                ..Default::default()
            })),
        }),
        ..Default::default()
    }
}

fn point(id: impl Into<pb::PointId>, v: Vec<f32>, p: serde_json::Value) -> pb::PointStruct {
    pb::PointStruct {
        id: Some(id.into()),
        vectors: Some(v.into()),
        payload: payload(p),
    }
}

fn upsert(name: &str, points: Vec<pb::PointStruct>) -> pb::UpsertPoints {
    pb::UpsertPoints {
        collection_name: name.into(),
        wait: Some(true),
        points,
        ..Default::default()
    }
}

fn all() -> (
    Option<pb::WithPayloadSelector>,
    Option<pb::WithVectorsSelector>,
) {
    (Some(true.into()), Some(true.into()))
}

fn ids(sel: Vec<pb::PointId>) -> pb::PointsSelector {
    pb::PointsSelector {
        points_selector_one_of: Some(pb::points_selector::PointsSelectorOneOf::Points(
            pb::PointsIdsList { ids: sel },
        )),
    }
}

#[tokio::test]
async fn collections_points_and_snapshots_over_grpc_match_rest() {
    let dir = tempfile::tempdir().unwrap();
    let (_svc, rest, grpc) = common::start_servers(dir.path(), &[]).await;
    let c = client(&grpc, None);
    let health = c.health_check().await.unwrap();
    assert_eq!(health.version, snapstream::QDRANT_COMPAT_VERSION);
    assert_eq!(health.title, snapstream::QDRANT_TITLE);

    c.create_collection(create("docs", 4)).await.unwrap();
    assert_eq!(
        code(c.create_collection(create("docs", 4)).await.unwrap_err()),
        Code::AlreadyExists
    );
    assert!(c.collection_exists("docs").await.unwrap());
    let uuid = "5c56c793-69f3-4fbf-87e6-c4bf54c28c26";
    let nested =
        json!({"n": 7, "f": 0.5, "s": "x", "b": true, "l": [1, "two", null], "o": {"k": [1.5]}});
    c.upsert_points(upsert(
        "docs",
        vec![
            point(
                1,
                vec![1.0, 0.0, 0.0, 0.0],
                json!({"city": "Berlin", "v": nested}),
            ),
            point(
                2,
                vec![0.0, 1.0, 0.0, 0.0],
                json!({"city": "London", "n": 2}),
            ),
            point(
                uuid,
                vec![0.6, 0.8, 0.0, 0.0],
                json!({"city": "Berlin", "n": 3}),
            ),
        ],
    ))
    .await
    .unwrap();

    // Every point read over gRPC equals what REST reads.
    let (wp, wv) = all();
    let got = c
        .get_points(pb::GetPoints {
            collection_name: "docs".into(),
            ids: vec![1.into(), uuid.into(), 99.into()],
            with_payload: wp,
            with_vectors: wv,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(got.result.len(), 2);
    let http = reqwest::Client::new();
    let rest_points: serde_json::Value = http
        .post(format!("{rest}/collections/docs/points"))
        .json(&json!({"ids": [1, uuid], "with_payload": true, "with_vector": true}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    for (g, r) in got
        .result
        .iter()
        .zip(rest_points["result"].as_array().unwrap())
    {
        let p: serde_json::Map<String, serde_json::Value> = g
            .payload
            .clone()
            .into_iter()
            .map(|(k, v)| (k, grpc_json(v)))
            .collect();
        assert_eq!(serde_json::Value::Object(p), r["payload"]);
        let Some(pb::vectors_output::VectorsOptions::Vector(v)) =
            g.vectors.clone().unwrap().vectors_options
        else {
            panic!("an unnamed vector was expected")
        };
        let Some(pb::vector_output::Vector::Dense(d)) = v.vector else {
            panic!("a dense vector was expected")
        };
        let rv: Vec<f32> = serde_json::from_value(r["vector"].clone()).unwrap();
        assert_eq!(d.data, rv);
    }
    assert_eq!(
        got.result[1].id,
        Some(pb::PointId::from(uuid.to_string())),
        "UUID ids round-trip"
    );

    // Query: the top hits and scores equal REST's.
    let q = c
        .query(pb::QueryPoints {
            collection_name: "docs".into(),
            query: Some(pb::Query {
                variant: Some(pb::query::Variant::Nearest(pb::VectorInput {
                    variant: Some(pb::vector_input::Variant::Dense(pb::DenseVector {
                        data: vec![1.0, 0.1, 0.0, 0.0],
                    })),
                })),
            }),
            limit: Some(10),
            with_payload: Some(true.into()),
            ..Default::default()
        })
        .await
        .unwrap();
    let rq: serde_json::Value = http
        .post(format!("{rest}/collections/docs/points/query"))
        .json(&json!({"query": [1.0, 0.1, 0.0, 0.0], "limit": 10, "with_payload": true}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let rhits = rq["result"]["points"].as_array().unwrap();
    assert_eq!(q.result.len(), 3);
    for (g, r) in q.result.iter().zip(rhits) {
        assert!((g.score as f64 - r["score"].as_f64().unwrap()).abs() < 1e-6);
        assert_eq!(g.version, r["version"].as_u64().unwrap());
    }

    // Filters: count, scroll and delete by filter.
    let berlin = pb::Filter::must([pb::Condition::matches("city", "Berlin".to_string())]);
    let n = c
        .count(pb::CountPoints {
            collection_name: "docs".into(),
            filter: Some(berlin.clone()),
            exact: Some(true),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(n.result.unwrap().count, 2);
    let page = c
        .scroll(pb::ScrollPoints {
            collection_name: "docs".into(),
            limit: Some(2),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(page.result.len(), 2);
    assert_eq!(
        page.next_page_offset,
        Some(pb::PointId::from(uuid.to_string()))
    );

    // Payload updates.
    c.set_payload(pb::SetPayloadPoints {
        collection_name: "docs".into(),
        wait: Some(true),
        payload: payload(json!({"seen": true})),
        points_selector: Some(ids(vec![2.into()])),
        ..Default::default()
    })
    .await
    .unwrap();
    c.delete_payload(pb::DeletePayloadPoints {
        collection_name: "docs".into(),
        wait: Some(true),
        keys: vec!["n".into()],
        points_selector: Some(ids(vec![2.into()])),
        ..Default::default()
    })
    .await
    .unwrap();
    let two: serde_json::Value = http
        .get(format!("{rest}/collections/docs/points/2"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        two["result"]["payload"],
        json!({"city": "London", "seen": true})
    );
    c.clear_payload(pb::ClearPayloadPoints {
        collection_name: "docs".into(),
        wait: Some(true),
        points: Some(ids(vec![2.into()])),
        ..Default::default()
    })
    .await
    .unwrap();
    c.delete_points(pb::DeletePoints {
        collection_name: "docs".into(),
        wait: Some(true),
        points: Some(berlin.into()),
        ..Default::default()
    })
    .await
    .unwrap();
    let left = c
        .count(pb::CountPoints {
            collection_name: "docs".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(left.result.unwrap().count, 1);

    // Payload indexes and aliases show up over REST.
    c.create_field_index(pb::CreateFieldIndexCollection {
        collection_name: "docs".into(),
        wait: Some(true),
        field_name: "city".into(),
        field_type: Some(pb::FieldType::Keyword as i32),
        ..Default::default()
    })
    .await
    .unwrap();
    c.create_alias(pb::CreateAliasBuilder::new("docs", "latest"))
        .await
        .unwrap();
    let info = c.collection_info("latest").await.unwrap().result.unwrap();
    assert_eq!(info.points_count, Some(1));
    assert!(info.payload_schema.contains_key("city"));
    assert_eq!(c.list_aliases().await.unwrap().aliases.len(), 1);

    // The snapshot calls of the documentation's Rust tab.
    let made = c.create_snapshot("docs").await.unwrap();
    let name = made.snapshot_description.unwrap().name;
    let listed = c.list_snapshots("docs").await.unwrap();
    assert_eq!(listed.snapshot_descriptions.len(), 1);
    assert_eq!(listed.snapshot_descriptions[0].name, name);
    assert!(listed.snapshot_descriptions[0].checksum.is_some());
    c.delete_snapshot(pb::DeleteSnapshotRequest {
        collection_name: "docs".into(),
        snapshot_name: name.clone(),
    })
    .await
    .unwrap();
    assert!(c
        .list_snapshots("docs")
        .await
        .unwrap()
        .snapshot_descriptions
        .is_empty());
    let full = c.create_full_snapshot().await.unwrap();
    let full_name = full.snapshot_description.unwrap().name;
    assert_eq!(
        c.list_full_snapshots()
            .await
            .unwrap()
            .snapshot_descriptions
            .len(),
        1
    );
    c.delete_full_snapshot(full_name).await.unwrap();
    assert!(c
        .list_full_snapshots()
        .await
        .unwrap()
        .snapshot_descriptions
        .is_empty());
    assert!(c.delete_collection("docs").await.unwrap().result);
}

fn grpc_json(v: pb::Value) -> serde_json::Value {
    use pb::value::Kind;
    match v.kind {
        None | Some(Kind::NullValue(_)) => serde_json::Value::Null,
        Some(Kind::BoolValue(b)) => json!(b),
        Some(Kind::IntegerValue(i)) => json!(i),
        Some(Kind::DoubleValue(d)) => json!(d),
        Some(Kind::StringValue(s)) => json!(s),
        Some(Kind::ListValue(l)) => l.values.into_iter().map(grpc_json).collect(),
        Some(Kind::StructValue(s)) => serde_json::Value::Object(
            s.fields
                .into_iter()
                .map(|(k, v)| (k, grpc_json(v)))
                .collect(),
        ),
    }
}

#[tokio::test]
async fn errors_map_to_status_codes() {
    let dir = tempfile::tempdir().unwrap();
    let (_svc, _rest, grpc) = common::start_servers(dir.path(), &[]).await;
    let c = client(&grpc, None);
    assert_eq!(
        code(c.collection_info("missing").await.unwrap_err()),
        Code::NotFound
    );
    assert_eq!(
        code(c.create_snapshot("missing").await.unwrap_err()),
        Code::NotFound
    );
    c.create_collection(create("c", 4)).await.unwrap();
    let wrong_dim = c
        .upsert_points(upsert("c", vec![point(1, vec![1.0], json!({}))]))
        .await
        .unwrap_err();
    assert_eq!(code(wrong_dim), Code::InvalidArgument);
    let bad_name = c.create_collection(create("a/b", 4)).await.unwrap_err();
    assert_eq!(code(bad_name), Code::InvalidArgument);
    let missing = c
        .delete_snapshot(pb::DeleteSnapshotRequest {
            collection_name: "c".into(),
            snapshot_name: "nope.snapshot".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(code(missing), Code::NotFound);
    // An RPC this service does not offer names itself.
    let mut raw = pb::points_client::PointsClient::connect(grpc.clone())
        .await
        .unwrap();
    let facet = raw
        .facet(pb::FacetCounts {
            collection_name: "c".into(),
            key: "k".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(facet.code(), Code::Unimplemented);
    assert!(facet.message().contains("qdrant.Points/Facet"));
}

#[tokio::test]
async fn keys_are_enforced_with_both_header_forms() {
    let dir = tempfile::tempdir().unwrap();
    let (_svc, _rest, grpc) = common::start_servers(
        dir.path(),
        &[
            ("QDRANT__SERVICE__API_KEY", "full-key"),
            ("QDRANT__SERVICE__READ_ONLY_API_KEY", "ro-key"),
        ],
    )
    .await;
    // Health and version probes need no key.
    client(&grpc, None).health_check().await.unwrap();
    let channel = tonic::transport::Channel::from_shared(grpc.clone())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
    let h = health
        .check(tonic_health::pb::HealthCheckRequest::default())
        .await
        .unwrap();
    assert_eq!(h.into_inner().status, 1, "SERVING");

    assert_eq!(
        code(client(&grpc, None).list_collections().await.unwrap_err()),
        Code::Unauthenticated
    );
    assert_eq!(
        code(
            client(&grpc, Some("wrong"))
                .list_collections()
                .await
                .unwrap_err()
        ),
        Code::Unauthenticated
    );
    let full = client(&grpc, Some("full-key"));
    full.create_collection(create("c", 2)).await.unwrap();
    let ro = client(&grpc, Some("ro-key"));
    assert_eq!(ro.list_collections().await.unwrap().collections.len(), 1);
    assert_eq!(
        code(
            ro.upsert_points(upsert("c", vec![point(1, vec![1.0, 0.0], json!({}))]))
                .await
                .unwrap_err()
        ),
        Code::PermissionDenied
    );
    assert_eq!(
        code(ro.create_snapshot("c").await.unwrap_err()),
        Code::PermissionDenied
    );
    assert!(ro.list_snapshots("c").await.is_ok());

    // `authorization: Bearer <key>`, as the Python client sends it.
    let channel = tonic::transport::Channel::from_shared(grpc.clone())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut bearer = pb::collections_client::CollectionsClient::with_interceptor(
        channel,
        |mut req: tonic::Request<()>| {
            req.metadata_mut()
                .insert("authorization", "Bearer full-key".parse().unwrap());
            Ok(req)
        },
    );
    let listed = bearer.list(pb::ListCollectionsRequest {}).await.unwrap();
    assert_eq!(listed.into_inner().collections.len(), 1);
}

#[tokio::test]
async fn large_gzip_upserts_pass_the_4_mib_default() {
    let dir = tempfile::tempdir().unwrap();
    let (svc, _rest, grpc) = common::start_servers(dir.path(), &[]).await;
    let c = client(&grpc, None);
    c.create_collection(create("big", 768)).await.unwrap();
    // 2,500 × 768 floats is ~7.7 MB on the wire, over tonic's 4 MiB default limit.
    let points = (0..2_500u64)
        .map(|i| {
            let v: Vec<f32> = (0..768).map(|j| ((i * 31 + j) % 97) as f32 + 0.5).collect();
            point(i, v, json!({"i": i}))
        })
        .collect();
    c.upsert_points(upsert("big", points)).await.unwrap();
    assert_eq!(svc.collections.get("big").unwrap().points_count, 2_500);
}

#[tokio::test]
async fn a_client_deadline_does_not_cancel_a_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let (_svc, _rest, grpc) = common::start_servers(dir.path(), &[]).await;
    let c = client(&grpc, None);
    c.create_collection(create("c", 256)).await.unwrap();
    // ~80 MB: hashing and writing it takes well over the 50 ms the server waits below,
    // even with SHA instructions and a fast disk.
    for b in 0..16u64 {
        let points = (b * 5_000..(b + 1) * 5_000)
            .map(|i| {
                point(
                    i,
                    (0..256).map(|j| (i + j) as f32).collect(),
                    json!({"i": i}),
                )
            })
            .collect();
        c.upsert_points(upsert("c", points)).await.unwrap();
    }
    let mut raw = pb::snapshots_client::SnapshotsClient::connect(grpc.clone())
        .await
        .unwrap();
    let mut req = tonic::Request::new(pb::CreateSnapshotRequest {
        collection_name: "c".into(),
    });
    // The deadline as the server sees it (`grpc-timeout`, 100 ms): it gives up on the call,
    // not on the snapshot. (`set_timeout` would also end the call on the client side.)
    req.metadata_mut()
        .insert("grpc-timeout", "100m".parse().unwrap());
    let err = raw.create(req).await.unwrap_err();
    assert_eq!(err.code(), Code::DeadlineExceeded, "{err:?}");
    let mut listed = Vec::new();
    for _ in 0..300 {
        listed = c.list_snapshots("c").await.unwrap().snapshot_descriptions;
        if listed.first().is_some_and(|d| d.checksum.is_some()) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(listed.len(), 1, "the snapshot completed and is listed");
    assert!(listed[0].size > 20_000 * 256 * 4);
}

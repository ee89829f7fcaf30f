//! Payload updates and deletes by filter race with concurrent writes: each must resolve its
//! selection and apply its change in one step, or it reverts or resurrects points.

mod common;

use serde_json::json;
use snapstream::collections::Filter;
use snapstream::collections::{Payload, PointId};
use snapstream::collections::{PayloadChange, PointInput, PointSelector};
use snapstream::collections::{PayloadSelector, PointsUpdate, ReadOptions};

fn payload(v: serde_json::Value) -> Payload {
    v.as_object().cloned().unwrap()
}

fn point(id: u64, x: f32, p: serde_json::Value) -> PointInput {
    PointInput {
        id: PointId::Num(id),
        vectors: vec![(String::new(), vec![x, 1.0])],
        payload: Some(payload(p)),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn payload_updates_and_filter_deletes_never_lose_concurrent_writes() {
    let dir = tempfile::tempdir().unwrap();
    let st = snapstream::build_state(common::test_config(dir.path(), &[]))
        .await
        .unwrap();
    let config =
        serde_json::from_value(json!({"vectors": {"size": 2, "distance": "Dot"}})).unwrap();
    st.collections.create("c".into(), config).await.unwrap();
    let read = ReadOptions {
        payload: PayloadSelector::All,
        vectors: snapstream::collections::VectorSelect::All,
    };
    let points = st.points.clone();
    let mut lost = 0;
    for round in 0..150u64 {
        let x = round as f32 + 2.0;
        points
            .update(
                "c",
                PointsUpdate::Upsert(vec![
                    point(1, 1.0, json!({})),
                    point(2, 1.0, json!({"tag": "old"})),
                ]),
                true,
            )
            .await
            .unwrap();
        let (a, b) = (points.clone(), points.clone());
        // Point 1: a payload merge races an upsert of new vectors.
        // Point 2: a payload merge races a delete by filter.
        let merge = tokio::spawn(async move {
            let sel = PointSelector::Ids(vec![PointId::Num(1), PointId::Num(2)]);
            let change = PayloadChange::Merge(payload(json!({"seen": true})));
            a.update("c", PointsUpdate::Payload(sel, change), true)
                .await
                .unwrap();
        });
        let write = tokio::spawn(async move {
            b.update(
                "c",
                PointsUpdate::Upsert(vec![point(1, x, json!({}))]),
                true,
            )
            .await
            .unwrap();
            let filter: Filter = serde_json::from_value(
                json!({"must": [{"key": "tag", "match": {"value": "old"}}]}),
            )
            .unwrap();
            b.update(
                "c",
                PointsUpdate::Delete(PointSelector::Filter(Box::new(filter))),
                true,
            )
            .await
            .unwrap();
        });
        merge.await.unwrap();
        write.await.unwrap();
        let found = st
            .points
            .retrieve("c", &[PointId::Num(1), PointId::Num(2)], &read)
            .unwrap();
        let one = found
            .points
            .iter()
            .find(|p| p.id == PointId::Num(1))
            .unwrap();
        let reverted = one.vectors[0].1[0] != x;
        let resurrected = found.points.iter().any(|p| p.id == PointId::Num(2));
        if reverted || resurrected {
            lost += 1;
        }
    }
    assert_eq!(lost, 0, "{lost} of 150 rounds lost a concurrent write");
}

//! The REST API through the router (no socket): envelopes, status codes, bad input, auth.

mod common;

use axum::http::StatusCode;
use common::{call, json, test_app};
use serde_json::json;

async fn make_collection(app: &axum::Router, name: &str, dim: usize) {
    let (s, v) = json(
        app,
        "PUT",
        &format!("/collections/{name}"),
        json!({"vectors": {"size": dim, "distance": "Cosine"}}),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["result"], json!(true));
}

#[tokio::test]
async fn root_and_health_answer_like_qdrant() {
    let tmp = tempfile::tempdir().unwrap();
    let app = test_app(tmp.path(), &[]).await;
    let (s, v) = json(&app, "GET", "/", json!(null)).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["title"], "qdrant - vector search engine");
    // Within one minor version of qdrant-client 1.20 and js-client-rest 1.18.
    let minor: u32 = v["version"]
        .as_str()
        .unwrap()
        .split('.')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    assert!(minor.abs_diff(20) <= 1 && minor.abs_diff(18) <= 1, "{v}");
    assert_eq!(v["product"], "snapstream");
    for path in ["/healthz", "/livez", "/readyz"] {
        assert_eq!(call(&app, "GET", path, &[], "").await.0, StatusCode::OK);
    }
}

#[tokio::test]
async fn collection_lifecycle_and_envelopes() {
    let tmp = tempfile::tempdir().unwrap();
    let app = test_app(tmp.path(), &[]).await;
    make_collection(&app, "demo", 4).await;
    let (s, v) = json(
        &app,
        "PUT",
        "/collections/demo",
        json!({"vectors": {"size": 4, "distance": "Cosine"}}),
    )
    .await;
    assert_eq!(s, StatusCode::CONFLICT);
    assert_eq!(
        v["status"]["error"],
        "Wrong input: Collection `demo` already exists!"
    );
    let (s, v) = json(&app, "GET", "/collections/demo", json!(null)).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["status"], "ok");
    assert_eq!(
        v["result"]["config"]["params"]["vectors"],
        json!({"size": 4, "distance": "Cosine"})
    );
    let (_, v) = json(&app, "GET", "/collections/demo/exists", json!(null)).await;
    assert_eq!(v["result"], json!({"exists": true}));
    let (_, v) = json(&app, "GET", "/collections", json!(null)).await;
    assert_eq!(v["result"]["collections"], json!([{"name": "demo"}]));
    let (s, v) = json(&app, "GET", "/collections/missing", json!(null)).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert_eq!(
        v["status"]["error"],
        "Not found: Collection `missing` doesn't exist!"
    );
    let (s, v) = json(&app, "DELETE", "/collections/missing", json!(null)).await;
    assert_eq!((s, v["result"].clone()), (StatusCode::OK, json!(false)));
    let (s, v) = json(&app, "DELETE", "/collections/demo", json!(null)).await;
    assert_eq!((s, v["result"].clone()), (StatusCode::OK, json!(true)));
}

#[tokio::test]
async fn points_upsert_query_scroll_count_and_delete() {
    let tmp = tempfile::tempdir().unwrap();
    let app = test_app(tmp.path(), &[]).await;
    make_collection(&app, "c", 4).await;
    let (s, v) = json(&app, "PUT", "/collections/c/points?wait=true", json!({"points": [
        {"id": 1, "vector": [1, 0, 0, 0], "payload": {"city": "Berlin", "n": 1}},
        {"id": "5c56c793-69f3-4fbf-87e6-c4bf54c28c26", "vector": [0, 1, 0, 0], "payload": {"city": "Paris"}},
        {"id": 3, "vector": [1, 1, 0, 0]}
    ]})).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["result"]["status"], "completed");
    let (_, v) = json(
        &app,
        "POST",
        "/collections/c/points/query",
        json!({"query": {"nearest": [1, 0, 0, 0]}, "limit": 2, "with_payload": true}),
    )
    .await;
    let pts = v["result"]["points"].as_array().unwrap();
    assert_eq!(pts[0]["id"], 1);
    assert!((pts[0]["score"].as_f64().unwrap() - 1.0).abs() < 1e-6);
    assert!(pts[0]["version"].as_u64().is_some());
    assert_eq!(pts[1]["id"], 3);
    let (_, bare) = json(
        &app,
        "POST",
        "/collections/c/points/query",
        json!({"query": [1, 0, 0, 0], "limit": 2}),
    )
    .await;
    assert_eq!(bare["result"]["points"][0]["id"], 1);
    let (_, v) = json(
        &app,
        "POST",
        "/collections/c/points/search",
        json!({"vector": [0, 1, 0, 0], "limit": 1}),
    )
    .await;
    assert_eq!(v["result"][0]["id"], "5c56c793-69f3-4fbf-87e6-c4bf54c28c26");
    let (_, v) = json(
        &app,
        "POST",
        "/collections/c/points/scroll",
        json!({"limit": 2, "with_vector": true}),
    )
    .await;
    assert_eq!(v["result"]["points"].as_array().unwrap().len(), 2);
    assert_eq!(
        v["result"]["next_page_offset"],
        "5c56c793-69f3-4fbf-87e6-c4bf54c28c26"
    );
    let filter = json!({"must": [{"key": "city", "match": {"value": "Berlin"}}]});
    let (_, v) = json(
        &app,
        "POST",
        "/collections/c/points/count",
        json!({"filter": filter, "exact": true}),
    )
    .await;
    assert_eq!(v["result"]["count"], 1);
    let (_, v) = json(
        &app,
        "POST",
        "/collections/c/points",
        json!({"ids": [1, 99], "with_payload": true}),
    )
    .await;
    assert_eq!(
        v["result"],
        json!([{"id": 1, "payload": {"city": "Berlin", "n": 1}, "vector": null}])
    );
    let (s, v) = json(&app, "GET", "/collections/c/points/3", json!(null)).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["result"]["id"], 3);
    let (_, v) = json(
        &app,
        "POST",
        "/collections/c/points/delete?wait=true",
        json!({"filter": filter}),
    )
    .await;
    assert_eq!(v["result"]["status"], "completed");
    let (_, v) = json(&app, "POST", "/collections/c/points/count", json!({})).await;
    assert_eq!(v["result"]["count"], 2);
    let (_, before) = json(
        &app,
        "POST",
        "/collections/c/points",
        json!({"ids": [3], "with_vector": true}),
    )
    .await;
    let (_, v) = json(
        &app,
        "POST",
        "/collections/c/points/payload?wait=true",
        json!({"payload": {"x": 1}, "points": [3]}),
    )
    .await;
    assert_eq!(v["result"]["status"], "completed");
    let (_, v) = json(&app, "POST", "/collections/c/points", json!({"ids": [3]})).await;
    assert_eq!(v["result"][0]["payload"], json!({"x": 1}));
    let (_, after) = json(
        &app,
        "POST",
        "/collections/c/points",
        json!({"ids": [3], "with_vector": true}),
    )
    .await;
    assert_eq!(
        after["result"][0]["vector"], before["result"][0]["vector"],
        "a payload update keeps the vector exactly"
    );
}

#[tokio::test]
async fn bad_input_is_a_4xx_in_the_envelope_and_changes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let app = test_app(tmp.path(), &[("QDRANT__SERVICE__MAX_REQUEST_SIZE_MB", "1")]).await;
    make_collection(&app, "c", 4).await;
    let cases = [
        (
            "PUT",
            "/collections/c/points",
            json!({"points": [{"id": 1, "vector": [1, 2, 3]}]}),
            "Vector dimension error",
        ),
        (
            "PUT",
            "/collections/c/points",
            json!({"points": [{"id": -5, "vector": [1, 2, 3, 4]}]}),
            "Format error",
        ),
        (
            "PUT",
            "/collections/c/points",
            json!({"points": [{"id": "not-a-uuid", "vector": [1, 2, 3, 4]}]}),
            "UUID",
        ),
        (
            "PUT",
            "/collections/missing/points",
            json!({"points": []}),
            "doesn't exist",
        ),
        (
            "PUT",
            "/collections/a%2Fb",
            json!({"vectors": {"size": 4, "distance": "Cosine"}}),
            "forbidden character",
        ),
        (
            "PUT",
            "/collections/..",
            json!({"vectors": {"size": 4, "distance": "Cosine"}}),
            "must not start",
        ),
        (
            "PUT",
            "/collections/d",
            json!({"vectors": {"size": 4, "distance": "cosine"}}),
            "Format error",
        ),
    ];
    for (method, uri, body, needle) in cases {
        let (s, v) = json(&app, method, uri, body).await;
        assert!(s.is_client_error(), "{uri}: {s} {v}");
        let msg = v["status"]["error"].as_str().unwrap_or_default();
        assert!(msg.contains(needle), "{uri}: {msg}");
    }
    let (s, _, b) = call(
        &app,
        "PUT",
        "/collections/c/points",
        &[("content-type", "application/json")],
        "{not json",
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(String::from_utf8_lossy(&b).contains("Format error in JSON body"));
    let big = format!("{{\"points\": [{}]}}", "1,".repeat(600_000));
    let (s, _, b) = call(
        &app,
        "PUT",
        "/collections/c/points",
        &[("content-type", "application/json")],
        big,
    )
    .await;
    assert_eq!(s, StatusCode::PAYLOAD_TOO_LARGE);
    assert!(
        serde_json::from_slice::<serde_json::Value>(&b).unwrap()["status"]["error"].is_string()
    );
    let (_, v) = json(&app, "POST", "/collections/c/points/count", json!({})).await;
    assert_eq!(v["result"]["count"], 0, "nothing was written");
    let (_, v) = json(&app, "GET", "/collections", json!(null)).await;
    assert_eq!(v["result"]["collections"], json!([{"name": "c"}]));
}

#[tokio::test]
async fn api_keys_are_enforced_on_every_route_that_needs_them() {
    let tmp = tempfile::tempdir().unwrap();
    let app = test_app(
        tmp.path(),
        &[
            ("QDRANT__SERVICE__API_KEY", "secret"),
            ("QDRANT__SERVICE__READ_ONLY_API_KEY", "reader"),
        ],
    )
    .await;
    assert_eq!(call(&app, "GET", "/", &[], "").await.0, StatusCode::OK);
    assert_eq!(
        call(&app, "GET", "/healthz", &[], "").await.0,
        StatusCode::OK
    );
    assert_eq!(
        call(&app, "GET", "/collections", &[], "").await.0,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        call(&app, "GET", "/collections", &[("api-key", "wrong")], "")
            .await
            .0,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        call(&app, "GET", "/collections", &[("api-key", "reader")], "")
            .await
            .0,
        StatusCode::OK
    );
    assert_eq!(
        call(
            &app,
            "GET",
            "/collections",
            &[("authorization", "Bearer secret")],
            ""
        )
        .await
        .0,
        StatusCode::OK
    );
    let body = json!({"vectors": {"size": 2, "distance": "Dot"}}).to_string();
    let ct = ("content-type", "application/json");
    let (s, _, _) = call(
        &app,
        "PUT",
        "/collections/c",
        &[("api-key", "reader"), ct],
        body.clone(),
    )
    .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let (s, _, _) = call(
        &app,
        "PUT",
        "/collections/c",
        &[("api-key", "secret"), ct],
        body,
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    for (method, uri) in [
        ("POST", "/collections/c/snapshots"),
        ("DELETE", "/collections/c/snapshots/x.snapshot"),
        ("PUT", "/collections/c/snapshots/recover"),
        ("POST", "/collections/c/snapshots/upload"),
        ("POST", "/snapshots"),
        ("DELETE", "/collections/c"),
    ] {
        let (s, _, _) = call(&app, method, uri, &[("api-key", "reader")], "").await;
        assert_eq!(s, StatusCode::FORBIDDEN, "{method} {uri}");
        let (s, _, _) = call(&app, method, uri, &[], "").await;
        assert_eq!(s, StatusCode::UNAUTHORIZED, "{method} {uri}");
    }
    let (s, _, _) = call(
        &app,
        "GET",
        "/collections/c/snapshots",
        &[("api-key", "reader")],
        "",
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    let (s, _, _) = call(
        &app,
        "POST",
        "/collections/c/points/count",
        &[("api-key", "reader"), ct],
        "{}",
    )
    .await;
    assert_eq!(s, StatusCode::OK);
}

#[tokio::test]
async fn aliases_create_list_rename_delete() {
    let tmp = tempfile::tempdir().unwrap();
    let app = test_app(tmp.path(), &[]).await;
    make_collection(&app, "c", 2).await;
    let (s, v) = json(
        &app,
        "POST",
        "/collections/aliases",
        json!({"actions": [{"create_alias": {"collection_name": "c", "alias_name": "a"}}]}),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let (_, v) = json(&app, "GET", "/aliases", json!(null)).await;
    assert_eq!(
        v["result"]["aliases"],
        json!([{"alias_name": "a", "collection_name": "c"}])
    );
    let (s, _) = json(&app, "GET", "/collections/a", json!(null)).await;
    assert_eq!(s, StatusCode::OK, "collections resolve through aliases");
    json(
        &app,
        "POST",
        "/collections/aliases",
        json!({"actions": [{"rename_alias": {"old_alias_name": "a", "new_alias_name": "b"}}]}),
    )
    .await;
    let (_, v) = json(&app, "GET", "/collections/c/aliases", json!(null)).await;
    assert_eq!(
        v["result"]["aliases"],
        json!([{"alias_name": "b", "collection_name": "c"}])
    );
    let (s, _) = json(
        &app,
        "POST",
        "/collections/aliases",
        json!({"actions": [{"delete_alias": {"alias_name": "zzz"}}]}),
    )
    .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn named_vectors_upsert_and_query_by_name() {
    let tmp = tempfile::tempdir().unwrap();
    let app = test_app(tmp.path(), &[]).await;
    let (s, v) = json(
        &app,
        "PUT",
        "/collections/n",
        json!({"vectors": {
        "image": {"size": 2, "distance": "Dot"}, "text": {"size": 3, "distance": "Euclid"}}}),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let (_, info) = json(&app, "GET", "/collections/n", json!(null)).await;
    assert_eq!(
        info["result"]["config"]["params"]["vectors"]["text"],
        json!({"size": 3, "distance": "Euclid"})
    );
    let (s, v) = json(
        &app,
        "PUT",
        "/collections/n/points?wait=true",
        json!({"batch": {
        "ids": [1, 2], "vectors": {"image": [[1, 0], [0, 1]], "text": [[0, 0, 0], [5, 5, 5]]}}}),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let (_, v) = json(
        &app,
        "POST",
        "/collections/n/points/query",
        json!({"query": [0, 1], "using": "image", "limit": 1}),
    )
    .await;
    assert_eq!(v["result"]["points"][0]["id"], 2);
    let (_, v) = json(
        &app,
        "POST",
        "/collections/n/points/query",
        json!({"query": [1, 1, 1], "using": "text", "limit": 2}),
    )
    .await;
    assert_eq!(
        v["result"]["points"][0]["id"], 1,
        "Euclid: smaller distance first"
    );
    let (_, v) = json(
        &app,
        "POST",
        "/collections/n/points/search",
        json!({"vector": {"name": "image", "vector": [1, 0]}, "limit": 1}),
    )
    .await;
    assert_eq!(v["result"][0]["id"], 1);
    let (_, v) = json(
        &app,
        "POST",
        "/collections/n/points",
        json!({"ids": [1], "with_vector": ["text"]}),
    )
    .await;
    assert_eq!(v["result"][0]["vector"], json!({"text": [0.0, 0.0, 0.0]}));
    let (s, v) = json(
        &app,
        "PUT",
        "/collections/n/points",
        json!({"points": [{"id": 3, "vector": {"audio": [1]}}]}),
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
}

#[tokio::test]
async fn vectors_and_scores_print_as_shortest_f32_like_qdrant() {
    let tmp = tempfile::tempdir().unwrap();
    let app = test_app(tmp.path(), &[]).await;
    let (s, _) = json(
        &app,
        "PUT",
        "/collections/d",
        json!({"vectors": {"size": 3, "distance": "Dot"}}),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    let (s, v) = json(
        &app,
        "PUT",
        "/collections/d/points?wait=true",
        json!({"points": [{"id": 1, "vector": [0.1, 0.2, 0.3]}]}),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    for (uri, body) in [
        ("/collections/d/points/scroll", json!({"with_vector": true})),
        (
            "/collections/d/points/query",
            json!({"query": [1.0, 0.0, 0.0], "with_vector": true}),
        ),
    ] {
        let (s, _, raw) = call(
            &app,
            "POST",
            uri,
            &[("content-type", "application/json")],
            body.to_string(),
        )
        .await;
        assert_eq!(s, StatusCode::OK);
        let text = String::from_utf8_lossy(&raw);
        // An f32 widened to f64 would print 0.10000000149011612.
        assert!(text.contains("[0.1,0.2,0.3]"), "{uri}: {text}");
    }
}

//! Qdrant's REST API: collections, payload indexes, aliases and points, on any server that speaks
//! it (Qdrant or snapstream).

use std::time::Duration;

use reqwest::Method;
use serde_json::{json, Value};

/// One server.
#[derive(Clone, Debug)]
pub(crate) struct Server {
    base: String,
    api_key: Option<String>,
    http: reqwest::Client,
}

/// What went wrong talking to a server, in one line.
pub(crate) type CallError = String;

impl Server {
    /// A server at `base` (e.g. `http://127.0.0.1:6333`), with an optional key.
    pub(crate) fn new(base: &str, api_key: Option<String>) -> Result<Self, CallError> {
        let url = url::Url::parse(base).map_err(|e| format!("`{base}` is not a URL: {e}"))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(format!("`{base}` must be an http(s) URL"));
        }
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(300))
            .build()
            .map_err(|e| format!("HTTP client: {e}"))?;
        Ok(Server {
            base: base.trim_end_matches('/').to_string(),
            api_key,
            http,
        })
    }

    /// The base URL, for messages.
    pub(crate) fn base(&self) -> &str {
        &self.base
    }

    /// The full URL of `tail` under collection `name` (see [`collection_path`]).
    fn collection_url(&self, name: &str, tail: &str) -> String {
        format!("{}{}", self.base, collection_path(name, tail))
    }

    /// Calls `path` and returns `result`; a non-2xx answer is an error with the server's
    /// message. `Ok(None)` for a 404 when `missing_ok`.
    async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
        missing_ok: bool,
    ) -> Result<Option<Value>, CallError> {
        let url = format!("{}{path}", self.base);
        let (status, text) = self
            .send(method.clone(), &url, body.map(Value::to_string))
            .await?;
        if status == reqwest::StatusCode::NOT_FOUND && missing_ok {
            return Ok(None);
        }
        if !status.is_success() {
            return Err(failure(&method, &url, status, &text));
        }
        let v: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        Ok(Some(v["result"].clone()))
    }

    /// A call whose answer carries nothing the caller needs.
    async fn write(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<(), CallError> {
        self.call(method, path, body, false).await.map(drop)
    }

    /// `POST` of `body` to `path`: the answer's `result`, null when it has none.
    async fn post(&self, path: &str, body: &Value) -> Result<Value, CallError> {
        let r = self.call(Method::POST, path, Some(body), false).await?;
        Ok(r.unwrap_or(Value::Null))
    }

    /// `GET /collections`: every collection's name.
    pub(crate) async fn collections(&self) -> Result<Vec<String>, CallError> {
        let r = self.call(Method::GET, "/collections", None, false).await?;
        Ok(r.and_then(|r| r["collections"].as_array().cloned())
            .unwrap_or_default()
            .iter()
            .filter_map(|c| c["name"].as_str().map(str::to_string))
            .collect())
    }

    /// `GET /collections/{name}`, or `None` if it does not exist.
    pub(crate) async fn collection(&self, name: &str) -> Result<Option<Value>, CallError> {
        self.call(Method::GET, &collection_path(name, ""), None, true)
            .await
    }

    /// `PUT /collections/{name}`.
    pub(crate) async fn create_collection(
        &self,
        name: &str,
        body: &Value,
    ) -> Result<(), CallError> {
        self.write(Method::PUT, &collection_path(name, ""), Some(body))
            .await
    }

    /// `DELETE /collections/{name}`.
    pub(crate) async fn delete_collection(&self, name: &str) -> Result<(), CallError> {
        self.write(Method::DELETE, &collection_path(name, ""), None)
            .await
    }

    /// `PUT /collections/{name}/index`.
    pub(crate) async fn create_index(
        &self,
        name: &str,
        field: &str,
        schema: &Value,
    ) -> Result<(), CallError> {
        let body = json!({"field_name": field, "field_schema": schema});
        let path = collection_path(name, "/index?wait=true");
        self.write(Method::PUT, &path, Some(&body)).await
    }

    /// `POST /collections/{name}/points/count` (exact).
    pub(crate) async fn count(&self, name: &str) -> Result<u64, CallError> {
        let r = self
            .post(
                &collection_path(name, "/points/count"),
                &json!({"exact": true}),
            )
            .await?;
        r["count"]
            .as_u64()
            .ok_or_else(|| format!("{}: count of `{name}` has no number", self.base))
    }

    /// One page of point ids (no payloads, no vectors), and the next page's offset.
    pub(crate) async fn scroll_ids(
        &self,
        name: &str,
        offset: Option<&Value>,
        limit: usize,
    ) -> Result<(Vec<Value>, Option<Value>), CallError> {
        let mut body = json!({"limit": limit, "with_payload": false, "with_vector": false});
        if let Some(o) = offset {
            body["offset"] = o.clone();
        }
        let r = self
            .post(&collection_path(name, "/points/scroll"), &body)
            .await?;
        let points = r["points"].as_array().cloned().unwrap_or_default();
        let next = match &r["next_page_offset"] {
            Value::Null => None,
            v => Some(v.clone()),
        };
        Ok((points, next))
    }

    /// One page of whole points as an upsert body, built from the scroll answer's raw JSON
    /// (ids, vectors and payloads are passed through, never parsed into values), with the
    /// number of points and the next page's offset.
    pub(crate) async fn scroll_raw(
        &self,
        name: &str,
        offset: Option<&Value>,
        limit: usize,
    ) -> Result<(String, usize, Option<Value>), CallError> {
        let mut body = json!({"limit": limit, "with_payload": true, "with_vector": true});
        if let Some(o) = offset {
            body["offset"] = o.clone();
        }
        let url = self.collection_url(name, "/points/scroll");
        let (status, text) = self
            .send(Method::POST, &url, Some(body.to_string()))
            .await?;
        if !status.is_success() {
            return Err(failure(&Method::POST, &url, status, &text));
        }
        let page: RawScroll = serde_json::from_str(&text)
            .map_err(|e| format!("POST {url}: the answer is not a scroll result: {e}"))?;
        let mut out = String::with_capacity(text.len() + 16);
        out.push_str("{\"points\":[");
        for (i, p) in page.result.points.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            out.push_str("{\"id\":");
            out.push_str(p.id.get());
            if let Some(v) = &p.vector {
                out.push_str(",\"vector\":");
                out.push_str(v.get());
            }
            if let Some(pl) = &p.payload {
                out.push_str(",\"payload\":");
                out.push_str(pl.get());
            }
            out.push('}');
        }
        out.push_str("]}");
        let next = page
            .result
            .next_page_offset
            .and_then(|o| serde_json::from_str::<Value>(o.get()).ok())
            .filter(|v| !v.is_null());
        Ok((out, page.result.points.len(), next))
    }

    /// `PUT /collections/{name}/points?wait=true` with a body built by [`Server::scroll_raw`].
    pub(crate) async fn upsert_raw(&self, name: &str, body: String) -> Result<(), CallError> {
        let url = self.collection_url(name, "/points?wait=true");
        let (status, text) = self.send(Method::PUT, &url, Some(body)).await?;
        if !status.is_success() {
            return Err(failure(&Method::PUT, &url, status, &text));
        }
        Ok(())
    }

    /// Sends a request with an optional JSON body; any answer is `Ok` with its status.
    async fn send(
        &self,
        method: Method,
        url: &str,
        body: Option<String>,
    ) -> Result<(reqwest::StatusCode, String), CallError> {
        let mut req = self.http.request(method.clone(), url);
        if let Some(k) = &self.api_key {
            req = req.header("api-key", k);
        }
        if let Some(b) = body {
            req = req
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(b);
        }
        let resp = req
            .send()
            .await
            .map_err(|e| format!("{method} {url}: {}", without_url(&e)))?;
        let status = resp.status();
        let text = resp
            .text()
            .await
            .map_err(|e| format!("{method} {url}: {}", without_url(&e)))?;
        Ok((status, text))
    }

    /// `POST /collections/{name}/points`: the given points with payloads and vectors.
    pub(crate) async fn points(&self, name: &str, ids: &[Value]) -> Result<Vec<Value>, CallError> {
        let r = self
            .post(
                &collection_path(name, "/points"),
                &json!({"ids": ids, "with_payload": true, "with_vector": true}),
            )
            .await?;
        Ok(r.as_array().cloned().unwrap_or_default())
    }

    /// `GET /aliases`: (alias, collection) pairs.
    pub(crate) async fn aliases(&self) -> Result<Vec<(String, String)>, CallError> {
        let r = self.call(Method::GET, "/aliases", None, false).await?;
        Ok(r.and_then(|r| r["aliases"].as_array().cloned())
            .unwrap_or_default()
            .iter()
            .filter_map(|a| {
                Some((
                    a["alias_name"].as_str()?.to_string(),
                    a["collection_name"].as_str()?.to_string(),
                ))
            })
            .collect())
    }

    /// `POST /collections/aliases` with `create_alias` actions (an existing alias moves).
    pub(crate) async fn create_aliases(&self, pairs: &[(String, String)]) -> Result<(), CallError> {
        if pairs.is_empty() {
            return Ok(());
        }
        let actions: Vec<Value> = pairs
            .iter()
            .map(|(a, c)| json!({"create_alias": {"alias_name": a, "collection_name": c}}))
            .collect();
        let body = json!({ "actions": actions });
        self.write(Method::POST, "/collections/aliases", Some(&body))
            .await
    }
}

/// `GET /cluster` of one peer.
#[derive(Clone, Debug, Default)]
pub(crate) struct ClusterInfo {
    /// Whether cluster mode is on (off: a single node with no peers listed).
    pub enabled: bool,
    /// The peer that answered.
    pub peer_id: u64,
    /// Every peer's id and p2p URI.
    pub peers: std::collections::BTreeMap<u64, String>,
}

/// One replica of a shard as `GET /collections/{c}/cluster` reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Replica {
    /// The shard.
    pub shard_id: u32,
    /// The peer holding it.
    pub peer_id: u64,
    /// `Active`, `Dead`, `Partial`, ...
    pub state: String,
    /// Points in it, when the answering peer holds it.
    pub points_count: Option<u64>,
}

/// `GET /collections/{c}/cluster` of one peer.
#[derive(Clone, Debug, Default)]
pub(crate) struct CollectionCluster {
    /// Shards of the collection.
    pub shard_count: u32,
    /// Every replica the peer knows of: its own (with counts) and the others'.
    pub replicas: Vec<Replica>,
}

impl Server {
    /// `GET /cluster`.
    pub(crate) async fn cluster(&self) -> Result<ClusterInfo, CallError> {
        let r = self
            .call(Method::GET, "/cluster", None, false)
            .await?
            .unwrap_or(Value::Null);
        let peers = r["peers"]
            .as_object()
            .map(|m| {
                m.iter()
                    .filter_map(|(id, p)| Some((id.parse().ok()?, p["uri"].as_str()?.to_string())))
                    .collect()
            })
            .unwrap_or_default();
        Ok(ClusterInfo {
            enabled: r["status"].as_str() == Some("enabled"),
            peer_id: r["peer_id"].as_u64().unwrap_or(0),
            peers,
        })
    }

    /// `GET /collections/{name}/cluster`.
    pub(crate) async fn collection_cluster(
        &self,
        name: &str,
    ) -> Result<CollectionCluster, CallError> {
        let r = self
            .call(Method::GET, &collection_path(name, "/cluster"), None, false)
            .await?
            .unwrap_or(Value::Null);
        let peer_id = r["peer_id"].as_u64().unwrap_or(0);
        let list = |k: &str| r[k].as_array().cloned().unwrap_or_default();
        let mut replicas = Vec::new();
        for s in list("local_shards") {
            replicas.push(Replica {
                shard_id: s["shard_id"].as_u64().unwrap_or(0) as u32,
                peer_id,
                state: s["state"].as_str().unwrap_or_default().to_string(),
                points_count: s["points_count"].as_u64(),
            });
        }
        for s in list("remote_shards") {
            replicas.push(Replica {
                shard_id: s["shard_id"].as_u64().unwrap_or(0) as u32,
                peer_id: s["peer_id"].as_u64().unwrap_or(0),
                state: s["state"].as_str().unwrap_or_default().to_string(),
                points_count: None,
            });
        }
        Ok(CollectionCluster {
            shard_count: r["shard_count"].as_u64().unwrap_or(0) as u32,
            replicas,
        })
    }

    /// `GET /collections/{name}/aliases`: the aliases of one collection.
    pub(crate) async fn collection_aliases(&self, name: &str) -> Result<Vec<String>, CallError> {
        let r = self
            .call(Method::GET, &collection_path(name, "/aliases"), None, false)
            .await?;
        Ok(r.and_then(|r| r["aliases"].as_array().cloned())
            .unwrap_or_default()
            .iter()
            .filter_map(|a| a["alias_name"].as_str().map(str::to_string))
            .collect())
    }

    /// `GET /collections/{name}/shards/{shard}/snapshot`: the shard's archive as Qdrant
    /// streams it (nothing is kept on the node), uncompressed.
    pub(crate) async fn shard_snapshot(
        &self,
        name: &str,
        shard: u32,
    ) -> Result<reqwest::Response, CallError> {
        let url = self.collection_url(name, &format!("/shards/{shard}/snapshot"));
        let req = self
            .http
            .get(&url)
            .header(reqwest::header::ACCEPT_ENCODING, "identity");
        self.send_long(Method::GET, &url, req).await
    }

    /// `GET /collections/{name}/shards/{shard}/snapshot/partial/manifest`: the versions of
    /// the shard's segment files on this peer (Qdrant's snapshot manifest: segment id →
    /// `{segment_id, segment_version, file_versions}`).
    pub(crate) async fn partial_manifest(
        &self,
        name: &str,
        shard: u32,
    ) -> Result<Value, CallError> {
        let path = collection_path(name, &format!("/shards/{shard}/snapshot/partial/manifest"));
        Ok(self
            .call(Method::GET, &path, None, false)
            .await?
            .unwrap_or(Value::Null))
    }

    /// `POST /collections/{name}/shards/{shard}/snapshot/partial/create` with the manifest
    /// of an earlier archive: an archive of what changed since (every segment's current
    /// `segment_manifest.json` and its changed files, the shard's own files), or `None` when
    /// nothing did (Qdrant answers 304).
    pub(crate) async fn partial_snapshot(
        &self,
        name: &str,
        shard: u32,
        since: &Value,
    ) -> Result<Option<reqwest::Response>, CallError> {
        let url = self.collection_url(name, &format!("/shards/{shard}/snapshot/partial/create"));
        let req = self
            .http
            .post(&url)
            .header(reqwest::header::ACCEPT_ENCODING, "identity")
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(since.to_string());
        let resp = self.send_raw(&Method::POST, &url, req).await?;
        if resp.status() == reqwest::StatusCode::NOT_MODIFIED {
            return Ok(None);
        }
        checked(&Method::POST, &url, resp).await.map(Some)
    }

    /// `GET /`: the server's version.
    pub(crate) async fn version(&self) -> Result<String, CallError> {
        let url = format!("{}/", self.base);
        let (status, text) = self.send(Method::GET, &url, None).await?;
        if !status.is_success() {
            return Err(failure(&Method::GET, &url, status, &text));
        }
        let v: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        Ok(v["version"].as_str().unwrap_or_default().to_string())
    }

    /// `POST /collections/{name}/points/scroll`: the first `limit` points with payloads
    /// and vectors.
    pub(crate) async fn sample(&self, name: &str, limit: usize) -> Result<Vec<Value>, CallError> {
        let body = json!({"limit": limit, "with_payload": true, "with_vector": true});
        let r = self
            .post(&collection_path(name, "/points/scroll"), &body)
            .await?;
        Ok(r["points"].as_array().cloned().unwrap_or_default())
    }

    /// `POST /collections/{name}/points/query` with `body`: the points found.
    pub(crate) async fn query(&self, name: &str, body: &Value) -> Result<Vec<Value>, CallError> {
        let r = self
            .post(&collection_path(name, "/points/query"), body)
            .await?;
        Ok(r["points"].as_array().cloned().unwrap_or_default())
    }

    /// `POST /collections/{name}/shards/{shard}/snapshots/upload`: recovers the shard on
    /// this peer from `body`, a shard archive of `len` bytes streamed as a multipart form
    /// (nothing is written on this side).
    pub(crate) async fn upload_shard_snapshot(
        &self,
        name: &str,
        shard: u32,
        archive: impl futures::Stream<Item = std::io::Result<bytes::Bytes>> + Send + 'static,
        len: u64,
        priority: &str,
        checksum: &str,
    ) -> Result<(), CallError> {
        use futures::StreamExt;
        let url = self.collection_url(
            name,
            &format!("/shards/{shard}/snapshots/upload?wait=true&priority={priority}&checksum={checksum}"),
        );
        let boundary = format!("snapstream-{}", uuid::Uuid::new_v4().simple());
        let head = format!(
            "--{boundary}\r\nContent-Disposition: form-data; name=\"snapshot\"; \
             filename=\"{name}-shard-{shard}.snapshot\"\r\n\
             Content-Type: application/octet-stream\r\n\r\n"
        );
        let tail = format!("\r\n--{boundary}--\r\n");
        let total = head.len() as u64 + len + tail.len() as u64;
        let body = futures::stream::once(async move { Ok(bytes::Bytes::from(head)) })
            .chain(archive)
            .chain(futures::stream::once(async move {
                Ok(bytes::Bytes::from(tail))
            }));
        let req = self
            .http
            .post(&url)
            .header(
                reqwest::header::CONTENT_TYPE,
                format!("multipart/form-data; boundary={boundary}"),
            )
            .header(reqwest::header::CONTENT_LENGTH, total)
            .body(reqwest::Body::wrap_stream(body));
        self.send_long(Method::POST, &url, req).await?;
        Ok(())
    }

    /// `PUT /collections/{name}/shards/{shard}/snapshots/recover`: the peer pulls the shard
    /// archive from `location` and recovers it, checked against `checksum`.
    pub(crate) async fn recover_shard_snapshot(
        &self,
        name: &str,
        shard: u32,
        location: &str,
        priority: &str,
        checksum: &str,
    ) -> Result<(), CallError> {
        let url = self.collection_url(
            name,
            &format!("/shards/{shard}/snapshots/recover?wait=true"),
        );
        let body = json!({"location": location, "priority": priority, "checksum": checksum});
        let req = self
            .http
            .put(&url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body.to_string());
        self.send_long(Method::PUT, &url, req).await?;
        Ok(())
    }

    /// Sends a request whose body streams for long (a shard archive either way), with the
    /// key and a deadline of a day instead of the client's; a non-2xx answer is an error.
    async fn send_long(
        &self,
        method: Method,
        url: &str,
        req: reqwest::RequestBuilder,
    ) -> Result<reqwest::Response, CallError> {
        let resp = self.send_raw(&method, url, req).await?;
        checked(&method, url, resp).await
    }

    /// Sends a long-running request with the key; any status is returned.
    async fn send_raw(
        &self,
        method: &Method,
        url: &str,
        mut req: reqwest::RequestBuilder,
    ) -> Result<reqwest::Response, CallError> {
        req = req.timeout(Duration::from_secs(24 * 3600));
        if let Some(k) = &self.api_key {
            req = req.header("api-key", k);
        }
        req.send()
            .await
            .map_err(|e| format!("{method} {url}: {}", without_url(&e)))
    }

    /// Whether the server answers at all (`GET /`, within a few seconds).
    pub(crate) async fn reachable(&self) -> bool {
        let req = self
            .http
            .get(format!("{}/", self.base))
            .timeout(Duration::from_secs(5));
        matches!(req.send().await, Ok(r) if r.status().is_success())
    }
}

/// `resp` if it is a success, else its message as [`failure`] words it.
async fn checked(
    method: &Method,
    url: &str,
    resp: reqwest::Response,
) -> Result<reqwest::Response, CallError> {
    let status = resp.status();
    if !status.is_success() {
        let text = resp.text().await.unwrap_or_default();
        return Err(failure(method, url, status, &text));
    }
    Ok(resp)
}

/// Whether `e` (made by [`failure`]) is Qdrant refusing the key the call carried.
pub(crate) fn key_refused(e: &CallError) -> bool {
    e.contains(": 401 Unauthorized:") || e.contains(": 403 Forbidden:")
}

/// A non-2xx answer as one line: the server's message from Qdrant's envelope.
fn failure(method: &Method, url: &str, status: reqwest::StatusCode, text: &str) -> CallError {
    let v: Value = serde_json::from_str(text).unwrap_or(Value::Null);
    let msg = v["status"]["error"]
        .as_str()
        .map(str::to_string)
        .unwrap_or_else(|| text.chars().take(200).collect());
    format!("{method} {url}: {status}: {msg}")
}

/// A scroll answer with each point's parts kept as raw JSON.
#[derive(serde::Deserialize)]
struct RawScroll {
    result: RawPage,
}

#[derive(serde::Deserialize)]
struct RawPage {
    points: Vec<RawPoint>,
    #[serde(default)]
    next_page_offset: Option<Box<serde_json::value::RawValue>>,
}

#[derive(serde::Deserialize)]
struct RawPoint {
    id: Box<serde_json::value::RawValue>,
    #[serde(default)]
    vector: Option<Box<serde_json::value::RawValue>>,
    #[serde(default)]
    payload: Option<Box<serde_json::value::RawValue>>,
}

/// `/collections/{name}` followed by `tail`.
fn collection_path(name: &str, tail: &str) -> String {
    format!("/collections/{}{tail}", enc(name))
}

/// Percent-encodes a path segment.
fn enc(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes())
        .collect::<String>()
        .replace('+', "%20")
}

/// What kind of failure, without reqwest's text (it repeats the URL).
fn without_url(e: &reqwest::Error) -> &'static str {
    if e.is_connect() {
        "cannot connect"
    } else if e.is_timeout() {
        "timed out"
    } else if e.is_decode() || e.is_body() {
        "the answer could not be read"
    } else {
        "request failed"
    }
}

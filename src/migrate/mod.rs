//! `snapstream migrate`: copies collections between two live servers that speak Qdrant's
//! REST API (Qdrant or snapstream, either way round).
//!
//! Per collection: create it on the destination from the source's vector parameters (or
//! check that an existing one matches), re-create its payload indexes, stream its points
//! (scroll in pages, upsert in pages: pages are read ahead while up to three upserts are in
//! flight, at most five pages in memory), then move the aliases that point at it, and finally
//! compare counts and a sample of points. Upserts by id are idempotent, so a run cut short is
//! finished by running it again. Points travel as REST's JSON, or over gRPC when both
//! servers' gRPC addresses are given (`crate::qdrant_api::grpc`); everything else stays on REST.

pub(crate) use futures::StreamExt;
use serde_json::{json, Value};

use crate::io::report::ProgressReport;
use crate::qdrant_api::{GrpcPoints, Server};

/// What to migrate, from the command line.
#[derive(Debug, Clone)]
pub struct Options {
    /// Source server URL.
    pub from: String,
    /// Destination server URL.
    pub to: String,
    /// Collections to copy; empty means all.
    pub collections: Vec<String>,
    /// Key for the source.
    pub from_api_key: Option<String>,
    /// Key for the destination.
    pub to_api_key: Option<String>,
    /// Points per page.
    pub batch: usize,
    /// Replace a destination collection whose vector parameters differ.
    pub overwrite: bool,
    /// The source's gRPC URL: with `to_grpc`, points travel over gRPC.
    pub from_grpc: Option<String>,
    /// The destination's gRPC URL.
    pub to_grpc: Option<String>,
}

/// How the points themselves travel: REST's JSON pages, or gRPC when both ends' gRPC
/// addresses are given (everything else, metadata and checks, stays on REST).
#[derive(Clone, Debug)]
enum Transport {
    Rest,
    /// The source's and the destination's points services.
    Grpc(Box<(GrpcPoints, GrpcPoints)>),
}

/// One page of points on its way from the source to the destination.
enum Page {
    /// A ready upsert body and its number of points.
    Json(String, usize),
    /// Points as the gRPC upsert takes them.
    Proto(crate::qdrant_api::grpc::Page),
}

/// Upserts in flight at once.
const WRITERS: usize = 3;
/// Pages read ahead of the writers.
const READ_AHEAD: usize = 2;

/// How many points of each collection are compared at the end.
const SAMPLE: usize = 64;

/// Runs a migration; `Err` is a one-line reason to print before exiting non-zero.
pub async fn run(opts: &Options) -> Result<(), String> {
    if opts.batch == 0 {
        return Err("--batch must be at least 1".into());
    }
    let from = Server::new(&opts.from, opts.from_api_key.clone())?;
    let to = Server::new(&opts.to, opts.to_api_key.clone())?;
    let names = if opts.collections.is_empty() {
        from.collections().await?
    } else {
        opts.collections.clone()
    };
    let transport = match (&opts.from_grpc, &opts.to_grpc) {
        (None, None) => Transport::Rest,
        (Some(f), Some(t)) => Transport::Grpc(Box::new((
            GrpcPoints::connect(f, opts.from_api_key.clone()).await?,
            GrpcPoints::connect(t, opts.to_api_key.clone()).await?,
        ))),
        _ => return Err("give both --from-grpc and --to-grpc, or neither".into()),
    };
    let aliases = from.aliases().await?;
    let mut differences = Vec::new();
    for name in &names {
        copy_collection(&from, &to, name, opts, &transport).await?;
        let moved: Vec<(String, String)> =
            aliases.iter().filter(|(_, c)| c == name).cloned().collect();
        to.create_aliases(&moved).await?;
        differences.extend(verify(&from, &to, name).await?);
    }
    if differences.is_empty() {
        eprintln!(
            "migrated {} collection(s) from {} to {}: counts and sampled points match",
            names.len(),
            from.base(),
            to.base()
        );
        Ok(())
    } else {
        for d in &differences {
            eprintln!("difference: {d}");
        }
        Err(format!(
            "{} difference(s) between source and destination",
            differences.len()
        ))
    }
}

/// Creates or checks the destination collection, its indexes, then copies every point.
async fn copy_collection(
    from: &Server,
    to: &Server,
    name: &str,
    opts: &Options,
    transport: &Transport,
) -> Result<(), String> {
    let info = from
        .collection(name)
        .await?
        .ok_or_else(|| format!("collection `{name}` does not exist on {}", from.base()))?;
    prepare_destination(to, name, &info, opts.overwrite).await?;
    copy_points(from, to, name, opts.batch, transport).await
}

/// Creates the destination collection from the source's `info` (or checks that one with
/// the same vectors exists, or replaces one with `overwrite`), then its payload indexes.
async fn prepare_destination(
    to: &Server,
    name: &str,
    info: &Value,
    overwrite: bool,
) -> Result<(), String> {
    let params = &info["config"]["params"];
    if params["sparse_vectors"]
        .as_object()
        .is_some_and(|m| !m.is_empty())
    {
        return Err(format!(
            "collection `{name}` has sparse vectors, which migrate does not copy"
        ));
    }
    let vectors = &params["vectors"];
    match to.collection(name).await? {
        None => create(to, name, params).await?,
        Some(existing) if existing["config"]["params"]["vectors"] == *vectors => {
            eprintln!("{name}: exists on the destination with the same vectors; continuing")
        }
        Some(_) if overwrite => {
            eprintln!("{name}: replacing the destination's collection (--overwrite)");
            to.delete_collection(name).await?;
            create(to, name, params).await?;
        }
        Some(existing) => {
            return Err(format!(
            "collection `{name}` exists on {} with other vector parameters ({} here, {} there); \
                 pass --overwrite to replace it",
            to.base(),
            vectors,
            existing["config"]["params"]["vectors"]
        ))
        }
    }
    if let Some(schema) = info["payload_schema"].as_object() {
        for (field, s) in schema {
            let field_schema = match &s["params"] {
                Value::Object(p) if !p.is_empty() => Value::Object(p.clone()),
                _ => s["data_type"].clone(),
            };
            to.create_index(name, field, &field_schema).await?;
        }
    }
    Ok(())
}

/// Streams every point of `name` from the source into the destination, in pages of
/// `batch`, with progress.
async fn copy_points(
    from: &Server,
    to: &Server,
    name: &str,
    batch: usize,
    transport: &Transport,
) -> Result<(), String> {
    let total = from.count(name).await?;
    let mut progress = ProgressReport::new(name, total, "points");
    // Pages are read ahead while up to WRITERS upserts are in flight: a destination that
    // fsyncs each write overlaps them. At most READ_AHEAD + WRITERS pages are in memory.
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Page, String>>(READ_AHEAD);
    let scroller = tokio::spawn(read_pages(
        from.clone(),
        transport.clone(),
        name.to_string(),
        batch,
        tx,
    ));
    let pages = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|page| (page, rx))
    });
    let mut writes = std::pin::pin!(pages
        .map(|page| write_page(to.clone(), transport.clone(), name, page))
        .buffer_unordered(WRITERS));
    while let Some(done) = writes.next().await {
        progress.add(done?);
    }
    scroller
        .await
        .map_err(|e| format!("reading `{name}` failed: {e}"))?;
    progress.finish();
    Ok(())
}

/// Upserts one page into the destination; returns its number of points.
async fn write_page(
    to: Server,
    transport: Transport,
    name: &str,
    page: Result<Page, String>,
) -> Result<u64, String> {
    match (page?, transport) {
        (Page::Json(body, n), _) => {
            to.upsert_raw(name, body).await?;
            Ok(n as u64)
        }
        (Page::Proto(points), Transport::Grpc(ends)) => {
            let n = points.len() as u64;
            ends.1.upsert(name, points).await?;
            Ok(n)
        }
        (Page::Proto(_), Transport::Rest) => Err("a gRPC page without gRPC".into()),
    }
}

/// Scrolls `name` on the source page by page into `tx` until the last page or an error
/// (sent too); stops early when the writers are gone.
async fn read_pages(
    from: Server,
    transport: Transport,
    name: String,
    batch: usize,
    tx: tokio::sync::mpsc::Sender<Result<Page, String>>,
) {
    match transport {
        Transport::Rest => {
            let mut offset: Option<Value> = None;
            loop {
                let (body, n, next) = match from.scroll_raw(&name, offset.as_ref(), batch).await {
                    Ok(p) => p,
                    Err(e) => {
                        let _ = tx.send(Err(e)).await;
                        return;
                    }
                };
                if n > 0 && tx.send(Ok(Page::Json(body, n))).await.is_err() {
                    return;
                }
                match next {
                    Some(n) => offset = Some(n),
                    None => return,
                }
            }
        }
        Transport::Grpc(ends) => {
            let source = &ends.0;
            let mut offset = None;
            loop {
                let (points, next) = match source.scroll(&name, offset, batch).await {
                    Ok(p) => p,
                    Err(e) => {
                        let _ = tx.send(Err(e)).await;
                        return;
                    }
                };
                if !points.is_empty() && tx.send(Ok(Page::Proto(points))).await.is_err() {
                    return;
                }
                match next {
                    Some(n) => offset = Some(n),
                    None => return,
                }
            }
        }
    }
}

async fn create(to: &Server, name: &str, params: &Value) -> Result<(), String> {
    let mut body = json!({"vectors": params["vectors"]});
    if let Some(b) = params["on_disk_payload"].as_bool() {
        body["on_disk_payload"] = json!(b);
    }
    to.create_collection(name, &body).await
}

/// Compares counts and a sample of points (the first of the collection and spread over it).
async fn verify(from: &Server, to: &Server, name: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    let (a, b) = (from.count(name).await?, to.count(name).await?);
    if a != b {
        out.push(format!(
            "`{name}`: {a} points in the source, {b} in the destination"
        ));
    }
    // The first id of every `step` ids, walking ids only (no vectors) over the collection.
    let step = (a as usize / SAMPLE).clamp(1, 10_000);
    let mut ids = Vec::new();
    let mut offset: Option<Value> = None;
    while ids.len() < SAMPLE {
        let (points, next) = from.scroll_ids(name, offset.as_ref(), step).await?;
        if let Some(first) = points.first() {
            ids.push(first["id"].clone());
        }
        match next {
            Some(n) => offset = Some(n),
            None => break,
        }
    }
    let source = from.points(name, &ids).await?;
    let dest = to.points(name, &ids).await?;
    for p in &source {
        match dest.iter().find(|q| q["id"] == p["id"]) {
            None => out.push(format!("`{name}`: point {} is missing", p["id"])),
            Some(q) if p["payload"] != q["payload"] => {
                out.push(format!("`{name}`: point {} has another payload", p["id"]))
            }
            Some(q) if !close(&p["vector"], &q["vector"]) => {
                out.push(format!("`{name}`: point {} has another vector", p["id"]))
            }
            Some(_) => {}
        }
    }
    Ok(out)
}

/// Equal, with numbers equal to float precision (a server may re-normalize a vector).
fn close(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => match (x.as_f64(), y.as_f64()) {
            (Some(x), Some(y)) => (x - y).abs() <= 1e-5 * x.abs().max(y.abs()).max(1.0),
            _ => x == y,
        },
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(x, y)| close(x, y))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| close(v, w)))
        }
        _ => a == b,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vectors_compare_to_float_precision_and_payloads_exactly() {
        assert!(close(&json!([0.1, 0.2]), &json!([0.100000001, 0.2])));
        assert!(!close(&json!([0.1, 0.2]), &json!([0.1, 0.3])));
        assert!(close(
            &json!({"a": [1.0], "b": [2.0]}),
            &json!({"b": [2.0], "a": [1.0000001]})
        ));
        assert!(!close(
            &json!({"a": [1.0]}),
            &json!({"a": [1.0], "b": [2.0]})
        ));
        assert!(!close(&json!("x"), &json!("y")));
    }
}

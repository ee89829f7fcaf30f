//! Point operations for every transport: writes with typed selectors, reads with typed
//! selectors of what to return, and nearest-neighbour queries.

use std::sync::Arc;

use super::blocking;
use crate::collection::filter::Filter;
use crate::collection::points::{PointView, VectorSelect};
use crate::collection::registry::Registry;
use crate::collection::types::{Payload, PointId, VectorsConfig};
use crate::collection::{Collection, PayloadChange, PointInput, PointSelector, PointsChange};
use crate::error::{Error, Result};

/// How a write was answered: writes are durable before any answer, so `wait` only
/// changes the word, as Qdrant's clients expect it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UpdateStatus {
    /// The caller did not ask to wait.
    Acknowledged,
    /// The caller asked to wait.
    Completed,
}

/// The result of one write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UpdateResult {
    /// The operation's sequence number in the collection.
    pub operation_id: u64,
    /// See [`UpdateStatus`].
    pub status: UpdateStatus,
}

/// One write to a collection's points.
#[derive(Clone, Debug)]
pub enum PointsUpdate {
    /// Insert or replace whole points.
    Upsert(Vec<PointInput>),
    /// Delete the selected points.
    Delete(PointSelector),
    /// Change the payload of the selected points.
    Payload(PointSelector, PayloadChange),
}

/// A set/overwrite payload change aimed at `key`, a nested object inside the payload:
/// only the top level (no key) is supported.
///
/// # Errors
/// `BadInput` naming the key when one is given.
pub(crate) fn payload_change(key: Option<&str>, change: PayloadChange) -> Result<PayloadChange> {
    match key {
        Some(k) if !k.is_empty() => Err(Error::bad_input(format!(
            "setting payload under a nested key (`{k}`) is not supported by this service"
        ))),
        _ => Ok(change),
    }
}

/// Which payload keys to return with points.
#[derive(Clone, Debug, PartialEq)]
pub enum PayloadSelector {
    /// The whole payload.
    All,
    /// No payload.
    None,
    /// Only these keys.
    Include(Vec<String>),
    /// All but these keys.
    Exclude(Vec<String>),
}

impl PayloadSelector {
    fn wanted(&self) -> bool {
        *self != PayloadSelector::None
    }

    fn project(&self, p: Payload) -> Payload {
        match self {
            PayloadSelector::All | PayloadSelector::None => p,
            PayloadSelector::Include(keys) => {
                p.into_iter().filter(|(k, _)| keys.contains(k)).collect()
            }
            PayloadSelector::Exclude(keys) => {
                p.into_iter().filter(|(k, _)| !keys.contains(k)).collect()
            }
        }
    }
}

/// What to return with each point.
#[derive(Clone, Debug, PartialEq)]
pub struct ReadOptions {
    /// Payload keys.
    pub payload: PayloadSelector,
    /// Vectors.
    pub vectors: VectorSelect,
}

/// Whether a collection has one unnamed vector or named ones: transports answer the
/// two with different shapes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VectorShape {
    /// One unnamed vector.
    Single,
    /// Named vectors.
    Named,
}

impl VectorShape {
    fn of(config: &VectorsConfig) -> Self {
        match config {
            VectorsConfig::Single(_) => VectorShape::Single,
            VectorsConfig::Named(_) => VectorShape::Named,
        }
    }
}

/// Points as read, with the payload already projected.
#[derive(Clone, Debug)]
pub struct Records {
    /// The collection's vector shape.
    pub shape: VectorShape,
    /// The points.
    pub points: Vec<PointView>,
}

/// A page of a scroll.
#[derive(Clone, Debug)]
pub struct ScrollPage {
    /// The points.
    pub records: Records,
    /// Where the next page starts, if there is one.
    pub next_offset: Option<PointId>,
}

/// Query hits, best first.
#[derive(Clone, Debug)]
pub struct ScoredPoints {
    /// The collection's vector shape.
    pub shape: VectorShape,
    /// `(score, point)` pairs.
    pub hits: Vec<(f32, PointView)>,
}

/// What a query is near.
#[derive(Clone, Debug, PartialEq)]
pub enum QueryInput {
    /// This vector.
    Vector(Vec<f32>),
    /// The stored vector of this point.
    Point(PointId),
}

/// A nearest-neighbour query; without `query` it scrolls in id order with score 0, as
/// Qdrant answers a query that has none.
#[derive(Clone, Debug)]
pub struct QueryRequest {
    /// What to search near.
    pub query: Option<QueryInput>,
    /// The vector space (`""` for the unnamed vector).
    pub using: String,
    /// Only points passing this filter.
    pub filter: Option<Filter>,
    /// Hits to return.
    pub limit: usize,
    /// Best hits to skip.
    pub offset: usize,
    /// Only hits at least this good.
    pub score_threshold: Option<f32>,
    /// What to return with each hit.
    pub read: ReadOptions,
}

/// A scroll through points in id order.
#[derive(Clone, Debug)]
pub struct ScrollRequest {
    /// First id of the page.
    pub offset: Option<PointId>,
    /// Points per page.
    pub limit: usize,
    /// Only points passing this filter.
    pub filter: Option<Filter>,
    /// What to return with each point.
    pub read: ReadOptions,
}

/// Point operations.
#[derive(Clone, Debug)]
pub struct Points {
    registry: Arc<Registry>,
}

fn project(read: &ReadOptions, mut p: PointView) -> PointView {
    p.payload = p.payload.map(|x| read.payload.project(x));
    p
}

impl Points {
    /// Operations over `registry`.
    pub fn new(registry: Arc<Registry>) -> Self {
        Points { registry }
    }

    /// Applies one write. Selections are resolved when the write is applied, under the
    /// collection's writer lock.
    ///
    /// # Errors
    /// `NotFound` for a missing collection, `BadInput` for vectors that do not fit it.
    pub async fn update(
        &self,
        name: &str,
        update: PointsUpdate,
        wait: bool,
    ) -> Result<UpdateResult> {
        let col = self.registry.get(name)?;
        apply(&col, update, wait).await
    }

    /// Applies writes in order; stops at the first that fails (earlier ones stay applied,
    /// as in Qdrant).
    pub async fn update_batch(
        &self,
        name: &str,
        updates: Vec<PointsUpdate>,
        wait: bool,
    ) -> Result<Vec<UpdateResult>> {
        let col = self.registry.get(name)?;
        let mut out = Vec::with_capacity(updates.len());
        for u in updates {
            out.push(apply(&col, u, wait).await?);
        }
        Ok(out)
    }

    /// Points by id, in request order, skipping missing ones.
    pub fn retrieve(&self, name: &str, ids: &[PointId], read: &ReadOptions) -> Result<Records> {
        let col = self.registry.get(name)?;
        let shape = VectorShape::of(&col.config().vectors);
        let points = col.read(|p| p.retrieve(ids, read.payload.wanted(), &read.vectors));
        Ok(Records {
            shape,
            points: points.into_iter().map(|p| project(read, p)).collect(),
        })
    }

    /// One point with its payload and every vector.
    ///
    /// # Errors
    /// `NotFound` when the collection or the point is missing.
    pub fn get(&self, name: &str, id: PointId) -> Result<Records> {
        let read = ReadOptions {
            payload: PayloadSelector::All,
            vectors: VectorSelect::All,
        };
        let found = self.retrieve(name, &[id], &read)?;
        if found.points.is_empty() {
            return Err(Error::NotFound(format!("No point with id {id} found")));
        }
        Ok(found)
    }

    /// A page of points in id order.
    pub async fn scroll(&self, name: &str, req: ScrollRequest) -> Result<ScrollPage> {
        let col = self.registry.get(name)?;
        blocking(move || {
            let shape = VectorShape::of(&col.config().vectors);
            let (points, next_offset) = col.read(|p| {
                p.scroll(
                    req.offset,
                    req.limit,
                    req.filter.as_ref(),
                    req.read.payload.wanted(),
                    &req.read.vectors,
                )
            });
            Ok(ScrollPage {
                records: Records {
                    shape,
                    points: points.into_iter().map(|p| project(&req.read, p)).collect(),
                },
                next_offset,
            })
        })
        .await
    }

    /// Number of points passing `filter`.
    pub async fn count(&self, name: &str, filter: Option<Filter>) -> Result<usize> {
        let col = self.registry.get(name)?;
        blocking(move || Ok(col.read(|p| p.count(filter.as_ref())))).await
    }

    /// Runs one query (see [`QueryRequest`]).
    ///
    /// # Errors
    /// `NotFound` for a missing collection or query point, `BadInput` for a vector that
    /// does not fit the space `using`.
    pub async fn query(&self, name: &str, req: QueryRequest) -> Result<ScoredPoints> {
        let col = self.registry.get(name)?;
        run_query(col, req).await
    }

    /// Runs queries against one collection, answering each in order.
    pub async fn query_batch(
        &self,
        name: &str,
        reqs: Vec<QueryRequest>,
    ) -> Result<Vec<ScoredPoints>> {
        let col = self.registry.get(name)?;
        let mut out = Vec::with_capacity(reqs.len());
        for r in reqs {
            out.push(run_query(Arc::clone(&col), r).await?);
        }
        Ok(out)
    }
}

async fn apply(col: &Arc<Collection>, update: PointsUpdate, wait: bool) -> Result<UpdateResult> {
    let change = match update {
        PointsUpdate::Upsert(points) => PointsChange::Upsert(col.prepare(points)?),
        PointsUpdate::Delete(sel) => PointsChange::Delete(sel),
        PointsUpdate::Payload(sel, change) => PointsChange::Payload(sel, change),
    };
    let operation_id = col.change(change).await?;
    Ok(UpdateResult {
        operation_id,
        status: if wait {
            UpdateStatus::Completed
        } else {
            UpdateStatus::Acknowledged
        },
    })
}

/// The vector a query searches with: the one given, or the `using` vector of a point.
fn query_vector(
    col: &Collection,
    query: Option<QueryInput>,
    using: &str,
) -> Result<Option<Vec<f32>>> {
    Ok(match query {
        None => None,
        Some(QueryInput::Vector(v)) => Some(col.prepare_query(using, v)?),
        Some(QueryInput::Point(id)) => {
            let point = col
                .read(|p| p.get(&id))
                .ok_or_else(|| Error::NotFound(format!("No point with id {id} found")))?;
            let v = point
                .vectors
                .into_iter()
                .find(|(n, _)| n == using)
                .map(|(_, v)| v)
                .ok_or_else(|| Error::bad_input(format!("point {id} has no vector `{using}`")))?;
            Some(v)
        }
    })
}

async fn run_query(col: Arc<Collection>, mut req: QueryRequest) -> Result<ScoredPoints> {
    let shape = VectorShape::of(&col.config().vectors);
    let vector = query_vector(&col, req.query.take(), &req.using)?;
    // A full scan takes milliseconds: keep it off the async workers.
    blocking(move || {
        let (read, filter) = (&req.read, req.filter.as_ref());
        let hits = match vector {
            None => col
                .read(|p| {
                    p.scroll(
                        None,
                        req.limit,
                        filter,
                        read.payload.wanted(),
                        &read.vectors,
                    )
                })
                .0
                .into_iter()
                .map(|p| (0.0, p))
                .collect::<Vec<_>>(),
            Some(v) => col.read(|p| {
                p.search(
                    &req.using,
                    &v,
                    req.limit,
                    req.offset,
                    filter,
                    req.score_threshold,
                    read.payload.wanted(),
                    &read.vectors,
                )
            }),
        };
        Ok(ScoredPoints {
            shape,
            hits: hits
                .into_iter()
                .map(|(s, p)| (s, project(read, p)))
                .collect(),
        })
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payload_selectors_project() {
        let p: Payload = serde_json::from_str(r#"{"a":1,"b":2}"#).unwrap();
        let inc = PayloadSelector::Include(vec!["a".into()]).project(p.clone());
        assert_eq!(inc.keys().collect::<Vec<_>>(), ["a"]);
        let exc = PayloadSelector::Exclude(vec!["a".into()]).project(p);
        assert_eq!(exc.keys().collect::<Vec<_>>(), ["b"]);
    }
}

//! `qdrant.Points`: writes, reads, counts and nearest-neighbour queries.
// Deprecated proto fields (`data`, `on_disk`, ...) are what older clients still send
// and read: handling them is deliberate.
#![allow(deprecated)]

use ::qdrant_client::qdrant as pb;
use pb::points_server::Points;
use pb::points_update_operation::Operation as BatchOp;
use tonic::{Request, Response, Status};

use super::convert::{
    opt_filter, payload, point, point_id, point_id_out, point_ids, read_options, retrieved, scored,
    selector,
};
use super::status::status;
use super::{answer, unsupported, Timed};
use crate::collection::PayloadChange;
use crate::service::points::{
    payload_change, PointsUpdate, QueryInput, QueryRequest, ReadOptions, ScoredPoints,
    ScrollRequest, UpdateResult, UpdateStatus,
};
use crate::service::Services;

/// The `Points` service.
#[derive(Clone, Debug)]
pub(crate) struct PointsApi(pub(crate) Services);

fn invalid(msg: impl Into<String>) -> Status {
    Status::invalid_argument(msg.into())
}

fn update_out(r: UpdateResult) -> pb::UpdateResult {
    pb::UpdateResult {
        operation_id: Some(r.operation_id),
        status: match r.status {
            UpdateStatus::Acknowledged => pb::UpdateStatus::Acknowledged,
            UpdateStatus::Completed => pb::UpdateStatus::Completed,
        } as i32,
    }
}

fn limit(v: Option<u64>, default: usize) -> usize {
    v.map_or(default, |l| usize::try_from(l).unwrap_or(usize::MAX))
}

fn scored_out(hits: ScoredPoints, read: &ReadOptions) -> Vec<pb::ScoredPoint> {
    let shape = hits.shape;
    hits.hits
        .into_iter()
        .map(|(s, p)| scored(shape, read, s, p))
        .collect()
}

/// A reply that carries a list of results (and the time, like every reply).
trait Reply<T>: Timed {
    fn with(result: Vec<T>) -> Self;
}

macro_rules! reply {
    ($item:ty: $($answer:ty),*) => {
        $(impl Reply<$item> for $answer {
            fn with(result: Vec<$item>) -> Self {
                Self { result, ..Default::default() }
            }
        })*
    };
}

reply!(pb::ScoredPoint: pb::SearchResponse, pb::QueryResponse);
reply!(pb::BatchResult: pb::SearchBatchResponse, pb::QueryBatchResponse);

fn query_request(q: pb::QueryPoints) -> Result<QueryRequest, Status> {
    use pb::query::Variant;
    use pb::vector_input::Variant as Input;
    if !q.prefetch.is_empty() {
        return Err(invalid(
            "prefetch queries are not supported by this service",
        ));
    }
    let query = match q.query.and_then(|q| q.variant) {
        None => None,
        Some(Variant::Nearest(v)) => Some(match v.variant {
            Some(Input::Id(id)) => QueryInput::Point(point_id(Some(id))?),
            Some(Input::Dense(d)) => QueryInput::Vector(d.data),
            Some(_) => {
                return Err(invalid(
                    "only dense vectors and point ids can be queried in this service",
                ))
            }
            None => return Err(invalid("the nearest query has no vector")),
        }),
        Some(_) => {
            return Err(invalid(
                "unsupported query type: this service supports nearest-neighbour queries",
            ))
        }
    };
    Ok(QueryRequest {
        query,
        using: q.using.unwrap_or_default(),
        filter: opt_filter(q.filter)?,
        limit: limit(q.limit, 10),
        offset: limit(q.offset, 0),
        score_threshold: q.score_threshold,
        read: read_options(q.with_payload, q.with_vectors),
    })
}

fn search_request(s: pb::SearchPoints) -> Result<QueryRequest, Status> {
    if s.sparse_indices.is_some() {
        return Err(invalid("sparse vectors are not supported by this service"));
    }
    Ok(QueryRequest {
        query: Some(QueryInput::Vector(s.vector)),
        using: s.vector_name.unwrap_or_default(),
        filter: opt_filter(s.filter)?,
        limit: limit(Some(s.limit), 10),
        offset: limit(s.offset, 0),
        score_threshold: s.score_threshold,
        read: read_options(Some(s.with_payload).flatten(), s.with_vectors),
    })
}

fn set_change(
    key: Option<String>,
    p: std::collections::HashMap<String, pb::Value>,
    overwrite: bool,
) -> Result<PayloadChange, Status> {
    let p = payload(p);
    let change = if overwrite {
        PayloadChange::Overwrite(p)
    } else {
        PayloadChange::Merge(p)
    };
    payload_change(key.as_deref(), change).map_err(status)
}

fn batch_update(op: pb::PointsUpdateOperation) -> Result<PointsUpdate, Status> {
    Ok(match op.operation {
        Some(BatchOp::Upsert(u)) => {
            PointsUpdate::Upsert(u.points.into_iter().map(point).collect::<Result<_, _>>()?)
        }
        Some(BatchOp::DeletePoints(d)) => PointsUpdate::Delete(selector(d.points)?),
        Some(BatchOp::SetPayload(s)) => PointsUpdate::Payload(
            selector(s.points_selector)?,
            set_change(s.key, s.payload, false)?,
        ),
        Some(BatchOp::OverwritePayload(s)) => PointsUpdate::Payload(
            selector(s.points_selector)?,
            set_change(s.key, s.payload, true)?,
        ),
        Some(BatchOp::DeletePayload(d)) => PointsUpdate::Payload(
            selector(d.points_selector)?,
            PayloadChange::DeleteKeys(d.keys),
        ),
        Some(BatchOp::ClearPayload(c)) => {
            PointsUpdate::Payload(selector(c.points)?, PayloadChange::Clear)
        }
        Some(BatchOp::DeleteDeprecated(s)) => PointsUpdate::Delete(selector(Some(s))?),
        Some(BatchOp::ClearPayloadDeprecated(s)) => {
            PointsUpdate::Payload(selector(Some(s))?, PayloadChange::Clear)
        }
        Some(BatchOp::UpdateVectors(_)) | Some(BatchOp::DeleteVectors(_)) => {
            return Err(invalid(
                "vector updates and deletes are not supported by this service",
            ))
        }
        None => return Err(invalid("a batch operation is empty")),
    })
}

impl PointsApi {
    async fn write(
        &self,
        collection: &str,
        update: PointsUpdate,
        wait: Option<bool>,
    ) -> Result<pb::PointsOperationResponse, Status> {
        let r = self
            .0
            .points
            .update(collection, update, wait.unwrap_or(false))
            .await
            .map_err(status)?;
        Ok(pb::PointsOperationResponse {
            result: Some(update_out(r)),
            ..Default::default()
        })
    }

    /// Answers one search or query: its hits, shown as it asked.
    async fn scored(
        &self,
        collection: &str,
        req: QueryRequest,
    ) -> Result<Vec<pb::ScoredPoint>, Status> {
        let read = req.read.clone();
        let hits = self.0.points.query(collection, req).await.map_err(status)?;
        Ok(scored_out(hits, &read))
    }

    /// Answers one search or query: `parse` names its collection and builds the request.
    async fn one<Req, Ans>(
        &self,
        r: Request<Req>,
        parse: impl FnOnce(Req) -> (String, Result<QueryRequest, Status>),
    ) -> Result<Response<Ans>, Status>
    where
        Ans: Reply<pb::ScoredPoint>,
    {
        answer(r, |r| async move {
            let (name, req) = parse(r);
            Ok(Ans::with(self.scored(&name, req?).await?))
        })
        .await
    }

    /// Answers a batch of searches or queries: `split` gives the collection, the
    /// requests and the builder that parses each.
    async fn batch<Req, Ans, Each>(
        &self,
        r: Request<Req>,
        split: impl FnOnce(Req) -> (String, Vec<Each>, fn(Each) -> Result<QueryRequest, Status>),
    ) -> Result<Response<Ans>, Status>
    where
        Ans: Reply<pb::BatchResult>,
    {
        answer(r, |r| async move {
            let (name, each, parse) = split(r);
            let reqs = each.into_iter().map(parse).collect::<Result<_, _>>()?;
            Ok(Ans::with(self.queries(&name, reqs).await?))
        })
        .await
    }

    /// Answers a batch of parsed searches or queries.
    async fn queries(
        &self,
        collection: &str,
        reqs: Vec<QueryRequest>,
    ) -> Result<Vec<pb::BatchResult>, Status> {
        let reads: Vec<ReadOptions> = reqs.iter().map(|r| r.read.clone()).collect();
        let results = self
            .0
            .points
            .query_batch(collection, reqs)
            .await
            .map_err(status)?;
        Ok(results
            .into_iter()
            .zip(&reads)
            .map(|(hits, read)| pb::BatchResult {
                result: scored_out(hits, read),
            })
            .collect())
    }
}

#[tonic::async_trait]
impl Points for PointsApi {
    async fn upsert(
        &self,
        r: Request<pb::UpsertPoints>,
    ) -> Result<Response<pb::PointsOperationResponse>, Status> {
        answer(r, |r| async move {
            if r.update_filter.is_some() {
                return Err(invalid(
                    "conditional upserts are not supported by this service",
                ));
            }
            let points = r.points.into_iter().map(point).collect::<Result<_, _>>()?;
            self.write(&r.collection_name, PointsUpdate::Upsert(points), r.wait)
                .await
        })
        .await
    }

    async fn delete(
        &self,
        r: Request<pb::DeletePoints>,
    ) -> Result<Response<pb::PointsOperationResponse>, Status> {
        answer(r, |r| async move {
            let update = PointsUpdate::Delete(selector(r.points)?);
            self.write(&r.collection_name, update, r.wait).await
        })
        .await
    }

    async fn get(&self, r: Request<pb::GetPoints>) -> Result<Response<pb::GetResponse>, Status> {
        answer(r, |r| async move {
            let read = read_options(r.with_payload, r.with_vectors);
            let ids = point_ids(r.ids)?;
            let records = self
                .0
                .points
                .retrieve(&r.collection_name, &ids, &read)
                .map_err(status)?;
            let shape = records.shape;
            Ok(pb::GetResponse {
                result: records
                    .points
                    .into_iter()
                    .map(|p| retrieved(shape, &read, p))
                    .collect(),
                ..Default::default()
            })
        })
        .await
    }

    async fn set_payload(
        &self,
        r: Request<pb::SetPayloadPoints>,
    ) -> Result<Response<pb::PointsOperationResponse>, Status> {
        answer(r, |r| async move {
            let change = set_change(r.key, r.payload, false)?;
            let update = PointsUpdate::Payload(selector(r.points_selector)?, change);
            self.write(&r.collection_name, update, r.wait).await
        })
        .await
    }

    async fn overwrite_payload(
        &self,
        r: Request<pb::SetPayloadPoints>,
    ) -> Result<Response<pb::PointsOperationResponse>, Status> {
        answer(r, |r| async move {
            let change = set_change(r.key, r.payload, true)?;
            let update = PointsUpdate::Payload(selector(r.points_selector)?, change);
            self.write(&r.collection_name, update, r.wait).await
        })
        .await
    }

    async fn delete_payload(
        &self,
        r: Request<pb::DeletePayloadPoints>,
    ) -> Result<Response<pb::PointsOperationResponse>, Status> {
        answer(r, |r| async move {
            let update = PointsUpdate::Payload(
                selector(r.points_selector)?,
                PayloadChange::DeleteKeys(r.keys),
            );
            self.write(&r.collection_name, update, r.wait).await
        })
        .await
    }

    async fn clear_payload(
        &self,
        r: Request<pb::ClearPayloadPoints>,
    ) -> Result<Response<pb::PointsOperationResponse>, Status> {
        answer(r, |r| async move {
            let update = PointsUpdate::Payload(selector(r.points)?, PayloadChange::Clear);
            self.write(&r.collection_name, update, r.wait).await
        })
        .await
    }

    async fn create_field_index(
        &self,
        r: Request<pb::CreateFieldIndexCollection>,
    ) -> Result<Response<pb::PointsOperationResponse>, Status> {
        answer(r, |r| async move {
            let schema = match r.field_type.map(pb::FieldType::try_from) {
                None => None,
                Some(Ok(ft)) => Some(serde_json::Value::String(
                    match ft {
                        pb::FieldType::Keyword => "keyword",
                        pb::FieldType::Integer => "integer",
                        pb::FieldType::Float => "float",
                        pb::FieldType::Geo => "geo",
                        pb::FieldType::Text => "text",
                        pb::FieldType::Bool => "bool",
                        pb::FieldType::Datetime => "datetime",
                        pb::FieldType::Uuid => "uuid",
                    }
                    .into(),
                )),
                Some(Err(_)) => return Err(invalid("unknown field type")),
            };
            self.0
                .collections
                .create_index(&r.collection_name, r.field_name, schema)
                .await
                .map_err(status)?;
            Ok(pb::PointsOperationResponse {
                result: Some(pb::UpdateResult {
                    operation_id: Some(0),
                    status: pb::UpdateStatus::Completed as i32,
                }),
                ..Default::default()
            })
        })
        .await
    }

    async fn delete_field_index(
        &self,
        r: Request<pb::DeleteFieldIndexCollection>,
    ) -> Result<Response<pb::PointsOperationResponse>, Status> {
        answer(r, |r| async move {
            self.0
                .collections
                .delete_index(&r.collection_name, r.field_name)
                .await
                .map_err(status)?;
            Ok(pb::PointsOperationResponse {
                result: Some(pb::UpdateResult {
                    operation_id: Some(0),
                    status: pb::UpdateStatus::Completed as i32,
                }),
                ..Default::default()
            })
        })
        .await
    }

    async fn search(
        &self,
        r: Request<pb::SearchPoints>,
    ) -> Result<Response<pb::SearchResponse>, Status> {
        self.one(r, |r| (r.collection_name.clone(), search_request(r)))
            .await
    }

    async fn search_batch(
        &self,
        r: Request<pb::SearchBatchPoints>,
    ) -> Result<Response<pb::SearchBatchResponse>, Status> {
        self.batch(r, |r| (r.collection_name, r.search_points, search_request))
            .await
    }

    async fn scroll(
        &self,
        r: Request<pb::ScrollPoints>,
    ) -> Result<Response<pb::ScrollResponse>, Status> {
        answer(r, |r| async move {
            if r.order_by.is_some() {
                return Err(invalid("order_by is not supported by this service"));
            }
            let read = read_options(r.with_payload, r.with_vectors);
            let req = ScrollRequest {
                offset: r.offset.map(|o| point_id(Some(o))).transpose()?,
                limit: r.limit.map_or(10, |l| l as usize),
                filter: opt_filter(r.filter)?,
                read: read.clone(),
            };
            let page = self
                .0
                .points
                .scroll(&r.collection_name, req)
                .await
                .map_err(status)?;
            let shape = page.records.shape;
            Ok(pb::ScrollResponse {
                next_page_offset: page.next_offset.map(point_id_out),
                result: page
                    .records
                    .points
                    .into_iter()
                    .map(|p| retrieved(shape, &read, p))
                    .collect(),
                ..Default::default()
            })
        })
        .await
    }

    async fn count(
        &self,
        r: Request<pb::CountPoints>,
    ) -> Result<Response<pb::CountResponse>, Status> {
        answer(r, |r| async move {
            let n = self
                .0
                .points
                .count(&r.collection_name, opt_filter(r.filter)?)
                .await
                .map_err(status)?;
            Ok(pb::CountResponse {
                result: Some(pb::CountResult { count: n as u64 }),
                ..Default::default()
            })
        })
        .await
    }

    async fn update_batch(
        &self,
        r: Request<pb::UpdateBatchPoints>,
    ) -> Result<Response<pb::UpdateBatchResponse>, Status> {
        answer(r, |r| async move {
            let updates = r
                .operations
                .into_iter()
                .map(batch_update)
                .collect::<Result<_, _>>()?;
            let results = self
                .0
                .points
                .update_batch(&r.collection_name, updates, r.wait.unwrap_or(false))
                .await
                .map_err(status)?;
            Ok(pb::UpdateBatchResponse {
                result: results.into_iter().map(update_out).collect(),
                ..Default::default()
            })
        })
        .await
    }

    async fn query(
        &self,
        r: Request<pb::QueryPoints>,
    ) -> Result<Response<pb::QueryResponse>, Status> {
        self.one(r, |r| (r.collection_name.clone(), query_request(r)))
            .await
    }

    async fn query_batch(
        &self,
        r: Request<pb::QueryBatchPoints>,
    ) -> Result<Response<pb::QueryBatchResponse>, Status> {
        self.batch(r, |r| (r.collection_name, r.query_points, query_request))
            .await
    }

    async fn update_vectors(
        &self,
        _: Request<pb::UpdatePointVectors>,
    ) -> Result<Response<pb::PointsOperationResponse>, Status> {
        unsupported("qdrant.Points/UpdateVectors")
    }

    async fn delete_vectors(
        &self,
        _: Request<pb::DeletePointVectors>,
    ) -> Result<Response<pb::PointsOperationResponse>, Status> {
        unsupported("qdrant.Points/DeleteVectors")
    }

    async fn create_vector_name(
        &self,
        _: Request<pb::CreateVectorNameRequest>,
    ) -> Result<Response<pb::PointsOperationResponse>, Status> {
        unsupported("qdrant.Points/CreateVectorName")
    }

    async fn delete_vector_name(
        &self,
        _: Request<pb::DeleteVectorNameRequest>,
    ) -> Result<Response<pb::PointsOperationResponse>, Status> {
        unsupported("qdrant.Points/DeleteVectorName")
    }

    async fn search_groups(
        &self,
        _: Request<pb::SearchPointGroups>,
    ) -> Result<Response<pb::SearchGroupsResponse>, Status> {
        unsupported("qdrant.Points/SearchGroups")
    }

    async fn recommend(
        &self,
        _: Request<pb::RecommendPoints>,
    ) -> Result<Response<pb::RecommendResponse>, Status> {
        unsupported("qdrant.Points/Recommend")
    }

    async fn recommend_batch(
        &self,
        _: Request<pb::RecommendBatchPoints>,
    ) -> Result<Response<pb::RecommendBatchResponse>, Status> {
        unsupported("qdrant.Points/RecommendBatch")
    }

    async fn recommend_groups(
        &self,
        _: Request<pb::RecommendPointGroups>,
    ) -> Result<Response<pb::RecommendGroupsResponse>, Status> {
        unsupported("qdrant.Points/RecommendGroups")
    }

    async fn discover(
        &self,
        _: Request<pb::DiscoverPoints>,
    ) -> Result<Response<pb::DiscoverResponse>, Status> {
        unsupported("qdrant.Points/Discover")
    }

    async fn discover_batch(
        &self,
        _: Request<pb::DiscoverBatchPoints>,
    ) -> Result<Response<pb::DiscoverBatchResponse>, Status> {
        unsupported("qdrant.Points/DiscoverBatch")
    }

    async fn query_groups(
        &self,
        _: Request<pb::QueryPointGroups>,
    ) -> Result<Response<pb::QueryGroupsResponse>, Status> {
        unsupported("qdrant.Points/QueryGroups")
    }

    async fn facet(
        &self,
        _: Request<pb::FacetCounts>,
    ) -> Result<Response<pb::FacetResponse>, Status> {
        unsupported("qdrant.Points/Facet")
    }

    async fn search_matrix_pairs(
        &self,
        _: Request<pb::SearchMatrixPoints>,
    ) -> Result<Response<pb::SearchMatrixPairsResponse>, Status> {
        unsupported("qdrant.Points/SearchMatrixPairs")
    }

    async fn search_matrix_offsets(
        &self,
        _: Request<pb::SearchMatrixPoints>,
    ) -> Result<Response<pb::SearchMatrixOffsetsResponse>, Status> {
        unsupported("qdrant.Points/SearchMatrixOffsets")
    }
}

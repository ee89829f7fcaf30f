//! `qdrant.Snapshots`: create, list and delete collection and full snapshots.

use std::time::Instant;

use ::qdrant_client::qdrant as pb;
use pb::snapshots_server::Snapshots;
use tonic::{Request, Response, Status};

use super::status::status;
use crate::service::snapshots::Outcome;
use crate::service::Services;
use crate::snapshot::{Scope, SnapshotDescription};

/// The `Snapshots` service.
#[derive(Clone, Debug)]
pub(crate) struct SnapshotsApi(pub(crate) Services);

fn description(d: SnapshotDescription) -> pb::SnapshotDescription {
    let creation_time =
        chrono::NaiveDateTime::parse_from_str(&d.creation_time, "%Y-%m-%dT%H:%M:%S")
            .ok()
            .map(|t| {
                let t = t.and_utc();
                prost_types::Timestamp {
                    seconds: t.timestamp(),
                    nanos: 0,
                }
            });
    pb::SnapshotDescription {
        name: d.name,
        creation_time,
        size: i64::try_from(d.size).unwrap_or(i64::MAX),
        checksum: d.checksum,
    }
}

impl SnapshotsApi {
    /// gRPC has no `wait` flag: creation always waits, in its own task, so a client
    /// deadline answers `DEADLINE_EXCEEDED` while the snapshot still completes.
    async fn create(&self, scope: Scope) -> Result<Response<pb::CreateSnapshotResponse>, Status> {
        let t = Instant::now();
        let out = self.0.snapshots.create(scope, true).await.map_err(status)?;
        let Outcome::Done(d) = out else {
            return Err(Status::internal("snapshot creation did not wait"));
        };
        Ok(Response::new(pb::CreateSnapshotResponse {
            snapshot_description: Some(description(d)),
            time: t.elapsed().as_secs_f64(),
        }))
    }

    async fn list(&self, scope: Scope) -> Result<Response<pb::ListSnapshotsResponse>, Status> {
        let t = Instant::now();
        let list = self.0.snapshots.list(&scope).await.map_err(status)?;
        Ok(Response::new(pb::ListSnapshotsResponse {
            snapshot_descriptions: list.into_iter().map(description).collect(),
            time: t.elapsed().as_secs_f64(),
        }))
    }

    async fn delete(
        &self,
        scope: Scope,
        name: String,
    ) -> Result<Response<pb::DeleteSnapshotResponse>, Status> {
        let t = Instant::now();
        self.0
            .snapshots
            .delete(scope, name, true)
            .await
            .map_err(status)?;
        Ok(Response::new(pb::DeleteSnapshotResponse {
            time: t.elapsed().as_secs_f64(),
        }))
    }
}

#[tonic::async_trait]
impl Snapshots for SnapshotsApi {
    async fn create(
        &self,
        r: Request<pb::CreateSnapshotRequest>,
    ) -> Result<Response<pb::CreateSnapshotResponse>, Status> {
        let scope = self
            .0
            .snapshots
            .collection_scope(&r.into_inner().collection_name)
            .map_err(status)?;
        SnapshotsApi::create(self, scope).await
    }

    async fn list(
        &self,
        r: Request<pb::ListSnapshotsRequest>,
    ) -> Result<Response<pb::ListSnapshotsResponse>, Status> {
        let scope = self
            .0
            .snapshots
            .collection_scope(&r.into_inner().collection_name)
            .map_err(status)?;
        SnapshotsApi::list(self, scope).await
    }

    async fn delete(
        &self,
        r: Request<pb::DeleteSnapshotRequest>,
    ) -> Result<Response<pb::DeleteSnapshotResponse>, Status> {
        let r = r.into_inner();
        let scope = crate::service::snapshots::Snapshots::stored_scope(&r.collection_name, None);
        SnapshotsApi::delete(self, scope, r.snapshot_name).await
    }

    async fn create_full(
        &self,
        _: Request<pb::CreateFullSnapshotRequest>,
    ) -> Result<Response<pb::CreateSnapshotResponse>, Status> {
        SnapshotsApi::create(self, Scope::Full).await
    }

    async fn list_full(
        &self,
        _: Request<pb::ListFullSnapshotsRequest>,
    ) -> Result<Response<pb::ListSnapshotsResponse>, Status> {
        SnapshotsApi::list(self, Scope::Full).await
    }

    async fn delete_full(
        &self,
        r: Request<pb::DeleteFullSnapshotRequest>,
    ) -> Result<Response<pb::DeleteSnapshotResponse>, Status> {
        SnapshotsApi::delete(self, Scope::Full, r.into_inner().snapshot_name).await
    }
}

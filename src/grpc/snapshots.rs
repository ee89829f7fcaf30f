//! `qdrant.Snapshots`: create, list and delete collection and full snapshots.

use std::time::Duration;

use ::qdrant_client::qdrant as pb;
use pb::snapshots_server::Snapshots;
use tonic::{Request, Response, Status};

use super::answer;
use super::status::status;
use crate::service::snapshots::{Outcome, Snapshots as SnapshotOps};
use crate::service::Services;
use crate::snapshot::{Scope, SnapshotDescription};

/// The `Snapshots` service.
#[derive(Clone, Debug)]
pub(crate) struct SnapshotsApi(pub(crate) Services);

fn description(d: SnapshotDescription) -> pb::SnapshotDescription {
    // Whole seconds, as Qdrant reports snapshot times.
    let creation_time = Some(prost_types::Timestamp {
        seconds: d.creation_time.timestamp(),
        nanos: 0,
    });
    pb::SnapshotDescription {
        name: d.name,
        creation_time,
        size: i64::try_from(d.size).unwrap_or(i64::MAX),
        checksum: d.checksum,
    }
}

/// The caller's deadline (`grpc-timeout`: digits and a unit), if it sent one.
fn deadline(meta: &tonic::metadata::MetadataMap) -> Option<Duration> {
    let v = meta.get("grpc-timeout")?.to_str().ok()?;
    let (digits, unit) = v.split_at(v.len().checked_sub(1)?);
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n.saturating_mul(3600)),
        "M" => Duration::from_secs(n.saturating_mul(60)),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

impl SnapshotsApi {
    /// gRPC has no `wait` flag: creation always waits, in its own task, so a client
    /// deadline answers `DEADLINE_EXCEEDED` while the snapshot still completes.
    ///
    /// tonic itself ends a call whose deadline passed with `CANCELLED`; this answers before
    /// it (half the deadline early, at most 250 ms: tonic's clock starts before this
    /// handler's, earlier by however long a busy server takes to reach it), with the code
    /// Qdrant's clients expect.
    async fn create(
        &self,
        scope: Scope,
        deadline: Option<Duration>,
    ) -> Result<pb::CreateSnapshotResponse, Status> {
        let work = self.0.snapshots.create(scope, true);
        let out = match deadline {
            Some(d) => {
                let margin = (d / 2).min(Duration::from_millis(250));
                tokio::time::timeout(d - margin, work).await.map_err(|_| {
                    Status::deadline_exceeded(
                        "deadline exceeded; the snapshot is still being created and will be listed when done",
                    )
                })?
            }
            None => work.await,
        }
        .map_err(status)?;
        let Outcome::Done(d) = out else {
            return Err(Status::internal("snapshot creation did not wait"));
        };
        Ok(pb::CreateSnapshotResponse {
            snapshot_description: Some(description(d)),
            ..Default::default()
        })
    }

    async fn list(&self, scope: Scope) -> Result<pb::ListSnapshotsResponse, Status> {
        let list = self.0.snapshots.list(&scope).await.map_err(status)?;
        Ok(pb::ListSnapshotsResponse {
            snapshot_descriptions: list.into_iter().map(description).collect(),
            ..Default::default()
        })
    }

    async fn delete(
        &self,
        scope: Scope,
        name: String,
    ) -> Result<pb::DeleteSnapshotResponse, Status> {
        self.0
            .snapshots
            .delete(scope, name, true)
            .await
            .map_err(status)?;
        Ok(pb::DeleteSnapshotResponse::default())
    }
}

#[tonic::async_trait]
impl Snapshots for SnapshotsApi {
    async fn create(
        &self,
        r: Request<pb::CreateSnapshotRequest>,
    ) -> Result<Response<pb::CreateSnapshotResponse>, Status> {
        let limit = deadline(r.metadata());
        answer(r, |r| async move {
            let scope = self
                .0
                .snapshots
                .collection_scope(&r.collection_name)
                .map_err(status)?;
            SnapshotsApi::create(self, scope, limit).await
        })
        .await
    }

    async fn list(
        &self,
        r: Request<pb::ListSnapshotsRequest>,
    ) -> Result<Response<pb::ListSnapshotsResponse>, Status> {
        answer(r, |r| async move {
            let scope = self
                .0
                .snapshots
                .collection_scope(&r.collection_name)
                .map_err(status)?;
            SnapshotsApi::list(self, scope).await
        })
        .await
    }

    async fn delete(
        &self,
        r: Request<pb::DeleteSnapshotRequest>,
    ) -> Result<Response<pb::DeleteSnapshotResponse>, Status> {
        answer(r, |r| async move {
            let scope = SnapshotOps::stored_scope(&r.collection_name, None).map_err(status)?;
            SnapshotsApi::delete(self, scope, r.snapshot_name).await
        })
        .await
    }

    async fn create_full(
        &self,
        r: Request<pb::CreateFullSnapshotRequest>,
    ) -> Result<Response<pb::CreateSnapshotResponse>, Status> {
        let limit = deadline(r.metadata());
        answer(r, |_| SnapshotsApi::create(self, Scope::Full, limit)).await
    }

    async fn list_full(
        &self,
        r: Request<pb::ListFullSnapshotsRequest>,
    ) -> Result<Response<pb::ListSnapshotsResponse>, Status> {
        answer(r, |_| SnapshotsApi::list(self, Scope::Full)).await
    }

    async fn delete_full(
        &self,
        r: Request<pb::DeleteFullSnapshotRequest>,
    ) -> Result<Response<pb::DeleteSnapshotResponse>, Status> {
        answer(r, |r| {
            SnapshotsApi::delete(self, Scope::Full, r.snapshot_name)
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_timeouts_parse() {
        let mut m = tonic::metadata::MetadataMap::new();
        assert_eq!(deadline(&m), None);
        m.insert("grpc-timeout", "250m".parse().unwrap());
        assert_eq!(deadline(&m), Some(Duration::from_millis(250)));
        m.insert("grpc-timeout", "5S".parse().unwrap());
        assert_eq!(deadline(&m), Some(Duration::from_secs(5)));
        m.insert("grpc-timeout", "x".parse().unwrap());
        assert_eq!(deadline(&m), None);
    }
}

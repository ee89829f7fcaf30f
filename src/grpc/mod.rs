//! Qdrant's gRPC API (port 6334) over the same service layer as REST.
//!
//! The message types and server traits are the ones generated in the official
//! `qdrant-client` crate; this module only converts messages (`convert`), maps errors to
//! status codes (`status`) and checks keys against each operation's declared access
//! (`auth`). Snapshot recovery stays REST-only, as in Qdrant and every client.

mod auth;
mod collections;
mod convert;
mod layer;
mod metered;
mod points;
mod snapshots;
mod status;

use std::future::Future;
use std::time::Instant;

use ::qdrant_client::qdrant as pb;
use pb::collections_server::CollectionsServer;
use pb::points_server::PointsServer;
use pb::qdrant_server::{Qdrant, QdrantServer};
use pb::snapshots_server::SnapshotsServer;
use tonic::codec::CompressionEncoding::Gzip;
use tonic::{Request, Response, Status};

use crate::service::{Services, QDRANT_COMPAT_VERSION, QDRANT_TITLE};

/// Answers an RPC this service does not offer, naming it.
fn unsupported<T>(rpc: &str) -> Result<T, Status> {
    Err(Status::unimplemented(format!(
        "{rpc} is not supported by this service"
    )))
}

/// Answers that report how long their call took, in seconds (Qdrant's `time` field).
trait Timed {
    /// Sets the time taken.
    fn set_time(&mut self, seconds: f64);
}

macro_rules! timed {
    ($($answer:ty),* $(,)?) => {
        $(impl Timed for $answer {
            fn set_time(&mut self, seconds: f64) {
                self.time = seconds;
            }
        })*
    };
}

timed!(
    pb::GetCollectionInfoResponse,
    pb::ListCollectionsResponse,
    pb::CollectionOperationResponse,
    pb::ListAliasesResponse,
    pb::CollectionExistsResponse,
    pb::PointsOperationResponse,
    pb::GetResponse,
    pb::SearchResponse,
    pb::SearchBatchResponse,
    pb::ScrollResponse,
    pb::CountResponse,
    pb::UpdateBatchResponse,
    pb::QueryResponse,
    pb::QueryBatchResponse,
    pb::CreateSnapshotResponse,
    pb::ListSnapshotsResponse,
    pb::DeleteSnapshotResponse,
);

/// Answers a unary call: `handle` gets the request's message, and the answer reports the
/// time the call took.
async fn answer<Req, Ans, Fut>(
    request: Request<Req>,
    handle: impl FnOnce(Req) -> Fut,
) -> Result<Response<Ans>, Status>
where
    Ans: Timed,
    Fut: Future<Output = Result<Ans, Status>>,
{
    let started = Instant::now();
    let mut ans = handle(request.into_inner()).await?;
    ans.set_time(started.elapsed().as_secs_f64());
    Ok(Response::new(ans))
}

/// `qdrant.Qdrant`: the version probe every client calls when it connects.
#[derive(Clone, Debug)]
struct Root;

#[tonic::async_trait]
impl Qdrant for Root {
    async fn health_check(
        &self,
        _: Request<pb::HealthCheckRequest>,
    ) -> Result<Response<pb::HealthCheckReply>, Status> {
        Ok(Response::new(pb::HealthCheckReply {
            title: QDRANT_TITLE.to_string(),
            version: QDRANT_COMPAT_VERSION.to_string(),
            commit: None,
        }))
    }
}

/// HTTP/2 flow-control window per stream: room for a 1,000 × 768 upsert batch (~3 MB).
const STREAM_WINDOW: u32 = 8 << 20;

/// Serves the gRPC API on `listener` until `shutdown` completes.
///
/// Every service accepts gzip-compressed requests, answers compressed when asked (the JS
/// client gzips by default), and has no decoding limit: a 2,500 × 768 upsert is ~8 MB,
/// over tonic's 4 MiB default.
pub async fn serve(
    services: Services,
    listener: tokio::net::TcpListener,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), tonic::transport::Error> {
    let (_health_reporter, health) = tonic_health::server::health_reporter();
    macro_rules! configured {
        ($server:expr) => {
            $server
                .accept_compressed(Gzip)
                .send_compressed(Gzip)
                .max_decoding_message_size(usize::MAX)
                .max_encoding_message_size(usize::MAX)
        };
    }
    tonic::transport::Server::builder()
        // HTTP/2's default 64 KiB flow-control window makes a 3 MB upsert batch wait for a
        // window update every 64 KiB; windows of a few batches let a request stream at once.
        .initial_stream_window_size(Some(STREAM_WINDOW))
        .initial_connection_window_size(Some(2 * STREAM_WINDOW))
        .layer(layer::GuardLayer::new(services.keys.clone()))
        .add_service(health)
        .add_service(configured!(QdrantServer::new(Root)))
        .add_service(configured!(CollectionsServer::new(
            collections::CollectionsApi(services.clone())
        )))
        .add_service(configured!(PointsServer::new(points::PointsApi(
            services.clone()
        ))))
        .add_service(configured!(SnapshotsServer::new(snapshots::SnapshotsApi(
            services
        ))))
        .serve_with_incoming_shutdown(
            tonic::transport::server::TcpIncoming::from(listener),
            shutdown,
        )
        .await
}

//! The service layer: every operation of the API, typed and transport-neutral.
//!
//! REST (`api`) and gRPC (`grpc`) only convert their wire formats to these requests and
//! these results back; rules live here and below. Each operation declares the access it
//! needs in [`access`], and both transports check keys against that one declaration.

pub(crate) mod access;
pub(crate) mod backups;
pub(crate) mod collections;
pub(crate) mod exposition;
pub(crate) mod operations;
pub(crate) mod points;
pub(crate) mod schedule;
pub(crate) mod snapshots;
pub(crate) mod startup;
pub(crate) mod storage_health;
pub(crate) mod verify;

use std::sync::Arc;

use crate::config::Config;
use crate::error::{Error, Result};

pub(crate) use access::{Access, ApiKeys, Denied, Operation};

/// The title both transports' version probes report, as Qdrant does.
pub const QDRANT_TITLE: &str = "qdrant - vector search engine";

/// The Qdrant version this service answers as, over REST `GET /` and gRPC `HealthCheck`.
/// Clients warn unless the minor versions are at most one apart: 1.19 satisfies the
/// current Python and Rust clients (1.20) and the newest JS client that runs on Node 20
/// (1.18) alike.
pub const QDRANT_COMPAT_VERSION: &str = "1.19.0";

/// Everything both transports serve.
#[derive(Clone, Debug)]
pub struct Services {
    /// The validated configuration.
    pub config: Arc<Config>,
    /// API keys and the access rules.
    pub keys: ApiKeys,
    /// Collections, aliases and payload indexes.
    pub collections: collections::Collections,
    /// Point writes, reads and queries.
    pub points: points::Points,
    /// Snapshots and background operations.
    pub snapshots: snapshots::Snapshots,
    /// Backups of Qdrant deployments.
    pub backups: backups::BackupService,
    /// Verifications of the snapshot storage.
    pub verify: verify::VerifyService,
    /// Whether the snapshot storage answers.
    pub storage_health: Arc<storage_health::StorageHealth>,
}

/// Runs blocking work (fsyncs, renames, scans) off the async workers.
pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::internal("background task failed", e))?
}

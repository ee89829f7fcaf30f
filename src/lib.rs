//! snapstream: a Qdrant-compatible collection and snapshot service.
//!
//! Layers, bottom up:
//! * [`metrics`]: the process's Prometheus metrics, which every layer records into;
//! * [`config`]: layered YAML + `QDRANT__*` environment configuration;
//! * [`collection`] and [`registry`]: durable collections (WAL + immutable segments) and aliases;
//! * [`backend`]: the snapshot storage trait with local and S3 implementations;
//! * [`snapshot`]: the streaming tar producer, the safe unpacker and recovery;
//! * [`service`]: every operation, typed and transport-neutral, with its access rule;
//! * [`api`] and [`grpc`]: Qdrant's REST and gRPC APIs, converting wire formats only.

pub mod api;
pub mod backend;
mod background;
mod bulk_file;
pub mod collection;
pub mod config;
pub mod env;
pub mod error;
mod foreground;
mod fsutil;
pub mod grpc;
pub mod hashing;
pub mod metrics;
pub mod migrate;
pub mod registry;
pub mod repository;
pub mod service;
pub mod snapshot;

use std::sync::Arc;

pub use api::router;
pub use error::{Error, Result};
pub use service::Services;

use backend::DynBackend;
use config::{Config, SnapshotsStorage};

/// Opens storage and the snapshot backend, cleans leftovers of interrupted work, and
/// returns the services both transports run on.
pub async fn build_state(config: Config) -> Result<Services> {
    let storage = &config.storage;
    let registry = {
        let path = storage.storage_path.clone();
        tokio::task::spawn_blocking(move || registry::Registry::open(&path))
            .await
            .map_err(|e| Error::internal("storage load task failed", e))??
    };
    let registry = Arc::new(registry);
    std::fs::create_dir_all(&storage.snapshots_path).map_err(|e| {
        Error::internal(
            format!(
                "failed to create snapshots directory `{}`",
                storage.snapshots_path.display()
            ),
            e,
        )
    })?;
    let (backend, s3_location): (DynBackend, _) = match storage.snapshots_config.storage {
        SnapshotsStorage::Local => {
            let local = backend::local::LocalBackend::new(&storage.snapshots_path)
                .map_err(|e| Error::internal("failed to open local snapshot storage", e))?;
            (
                Arc::new(backend::metered::Metered::new(local, "local")),
                None,
            )
        }
        SnapshotsStorage::S3 => {
            let s3 =
                storage.snapshots_config.s3.as_ref().ok_or_else(|| {
                    Error::bad_input("storage.snapshots_config.s3_config is missing")
                })?;
            let b = backend::s3::S3Backend::new(s3)?;
            let b = backend::metered::Metered::new(b, "s3");
            (Arc::new(b), Some((s3.bucket.clone(), s3.prefix.clone())))
        }
    };
    let snapshots = snapshot::SnapshotService::new(
        Arc::clone(&registry),
        backend,
        snapshot::SnapshotSettings {
            snapshots_path: storage.snapshots_path.clone(),
            temp_path: storage.temp_path.clone(),
            compression: storage.snapshots_config.compression,
            url_recovery: config.service.enable_snapshot_url_recovery,
            s3_location,
            incremental: storage.snapshots_config.incremental,
            keep_last: storage.snapshots_config.retention_keep_last,
        },
    )?;
    let storage_health = Arc::new(service::storage_health::StorageHealth::new(Arc::clone(
        snapshots.backend(),
    )));
    match snapshots.startup_cleanup().await {
        Ok(()) => storage_health.record(None).await,
        // A storage that cannot be reached at start-up (wrong credentials, missing bucket)
        // is one warning: the service still serves collections, reports the same line on
        // each snapshot call that needs the storage, and in `/readyz`.
        Err(e) => {
            let mut what = match &e {
                Error::Storage { summary, .. } => summary.clone(),
                other => other.public_message(),
            };
            if storage
                .snapshots_config
                .s3
                .as_ref()
                .is_some_and(|s3| s3.access_key.is_none() || s3.secret_key.is_none())
            {
                what.push_str(
                    " (no access_key / secret_key configured, nor AWS_ACCESS_KEY_ID / \
                     AWS_SECRET_ACCESS_KEY in the environment)",
                );
            }
            tracing::warn!("snapshot storage start-up check failed: {what}");
            tracing::debug!(error = %e.chain(), "snapshot storage start-up check: cause");
            storage_health.record(Some(what)).await;
        }
    }
    let snapshots = Arc::new(snapshots);
    if let Some(every) = storage.snapshots_config.schedule_interval_sec {
        service::schedule::spawn(
            Arc::clone(&registry),
            Arc::clone(&snapshots),
            std::time::Duration::from_secs(every),
        );
    }
    Ok(Services {
        keys: service::ApiKeys::new(
            config.service.api_key.clone(),
            config.service.read_only_api_key.clone(),
        ),
        config: Arc::new(config),
        collections: service::collections::Collections::new(Arc::clone(&registry)),
        points: service::points::Points::new(Arc::clone(&registry)),
        snapshots: service::snapshots::Snapshots::new(registry, snapshots),
        storage_health,
    })
}

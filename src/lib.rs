//! snapstream: a Qdrant-compatible collection and snapshot service.
//!
//! The tree is the architecture, bottom up:
//! * `io`: disk I/O under every storage layer (the pacer that makes bulk writes yield to
//!   WAL flushes, the bulk-file writer, a low-priority runtime, file streams, progress);
//! * `collection`: durable collections (WAL + immutable segments), the registry of
//!   collections and aliases;
//! * `backend`: the object storage trait with local and S3 implementations;
//! * `repository`: how snapshots are laid out in a backend (plain and incremental) and
//!   hashed;
//! * `snapshot`: creating, recovering, listing snapshots; the tar producer and unpacker;
//!   Qdrant's snapshot format;
//! * `qdrant_api`: the one client of Qdrant's API (REST and gRPC), used by `migrate` and
//!   by backups;
//! * `backup`: backups of live Qdrant deployments (clusters or single nodes) into the
//!   repository's shared pieces;
//! * [`config`]: layered YAML + `QDRANT__*` configuration, into the layers' own options;
//! * `service`: every operation, typed and transport-neutral, with its access rule;
//! * `api` and `grpc`: Qdrant's REST and gRPC APIs, converting wire formats only.
//!
//! Modules are private; what the binary, the tests and the benchmarks use is re-exported
//! here, grouped in [`storage`], [`collections`] and [`engine`].

mod api;
mod backend;
mod backup;
mod cli;
mod collection;
pub mod config;
pub mod env;
pub mod error;
mod grpc;
mod io;
mod migrate;
mod qdrant_api;
mod repository;
mod secret;
mod service;
mod snapshot;
mod state;
mod telemetry;

pub use api::router;
pub use cli::{
    backup_command, repository_command, verify_command, BackupCommand, RepositoryCommand,
};
pub use error::{Error, Result};
pub use grpc::serve as serve_grpc;
pub use migrate::{run as migrate, Options as MigrateOptions};
pub use secret::Secret;
pub use service::startup::{recover as recover_at_startup, StartupRecovery};
pub use service::{Services, QDRANT_COMPAT_VERSION, QDRANT_TITLE};
pub use state::build_state;

/// Snapshot storage: the backend contract, the local backend and the cloud ones.
pub mod storage {
    pub use crate::backend::azure::{AzureBackend, AzureOptions};
    pub use crate::backend::cloud::Transfer;
    pub use crate::backend::encryption::{Encrypted, EncryptionOptions, KeyError, Keyring};
    pub use crate::backend::gcs::{GcsBackend, GcsOptions};
    pub use crate::backend::local::LocalBackend;
    pub use crate::backend::s3::{S3Backend, S3Options};
    pub use crate::backend::s3_uploads::Upload;
    pub use crate::backend::{
        Backend, BackendError, BackendExt, ByteStream, CreateOptions, DynBackend, InvalidKey,
        ObjectKey, ObjectMeta, ObjectSink,
    };
}

/// Collections and their points, driven without a transport.
pub mod collections {
    pub use crate::collection::config::CollectionConfig;
    pub use crate::collection::filter::Filter;
    pub use crate::collection::points::VectorSelect;
    pub use crate::collection::record::Operation;
    pub use crate::collection::registry::Registry;
    pub use crate::collection::types::{Payload, PointId, PointWrite};
    pub use crate::collection::{Collection, PayloadChange, PointInput, PointSelector};
    pub use crate::service::points::{PayloadSelector, PointsUpdate, ReadOptions};
}

/// The snapshot engine's parts: archives and their codecs, the repository, Qdrant's WAL.
pub mod engine {
    pub use crate::io::progress::Progress;
    pub use crate::repository::{manifest_key, Archive, Layout, Repository};
    pub use crate::snapshot::codec::{self, Compression};
    pub use crate::snapshot::format::SnapshotKind;
    pub use crate::snapshot::qdrant::{replay, wal};
    pub use crate::snapshot::{producer, unpack};
}

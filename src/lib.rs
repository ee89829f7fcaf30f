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
pub mod collection;
pub mod config;
pub mod env;
pub mod error;
pub mod grpc;
pub mod io;
pub mod migrate;
pub mod qdrant_api;
pub mod repository;
pub mod secret;
pub mod service;
pub mod snapshot;
mod state;
pub mod telemetry;

pub use api::router;
pub use error::{Error, Result};
pub use service::Services;
pub use state::build_state;

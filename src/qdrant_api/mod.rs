//! The crate's one client of Qdrant's API: REST for collections, indexes and aliases, gRPC
//! for points in bulk. It talks to any server that speaks the API (Qdrant or snapstream).
//! `migrate` is built on it; backups and restores of Qdrant deployments will be too.

pub mod grpc;
pub mod rest;

pub use grpc::GrpcPoints;
pub use rest::{CallError, Server};

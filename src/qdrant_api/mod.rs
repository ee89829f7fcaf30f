//! The crate's one client of Qdrant's API: REST for collections, indexes and aliases, gRPC
//! for points in bulk. It talks to any server that speaks the API (Qdrant or snapstream).
//! `migrate`, backups and restores of Qdrant deployments are built on it.

pub(crate) mod grpc;
pub(crate) mod handoff;
pub(crate) mod rest;

pub(crate) use grpc::GrpcPoints;
pub(crate) use rest::Server;

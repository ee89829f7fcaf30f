//! Key checks for gRPC: each call is classified by its method path and asks the same
//! [`ApiKeys::check`] as REST. Health and version probes need no key.

use tonic::Status;

use crate::service::{ApiKeys, Denied, Operation};

/// The operation of a gRPC method path such as `/qdrant.Points/Search`.
pub(super) fn operation(path: &str) -> Operation {
    use Operation::*;
    match path.trim_start_matches('/') {
        "qdrant.Qdrant/HealthCheck" => Version,
        p if p.starts_with("grpc.health.v1.Health/") => Health,
        "qdrant.Collections/Get" => GetCollection,
        "qdrant.Collections/List" => ListCollections,
        "qdrant.Collections/Create" => CreateCollection,
        "qdrant.Collections/Update" => UpdateCollection,
        "qdrant.Collections/Delete" => DeleteCollection,
        "qdrant.Collections/CollectionExists" => CollectionExists,
        "qdrant.Collections/UpdateAliases" => UpdateAliases,
        "qdrant.Collections/ListCollectionAliases" => ListCollectionAliases,
        "qdrant.Collections/ListAliases" => ListAliases,
        "qdrant.Points/Upsert" => Upsert,
        "qdrant.Points/Delete" => DeletePoints,
        "qdrant.Points/Get" => GetPoints,
        "qdrant.Points/SetPayload" => SetPayload,
        "qdrant.Points/OverwritePayload" => OverwritePayload,
        "qdrant.Points/DeletePayload" => DeletePayload,
        "qdrant.Points/ClearPayload" => ClearPayload,
        "qdrant.Points/CreateFieldIndex" => CreateFieldIndex,
        "qdrant.Points/DeleteFieldIndex" => DeleteFieldIndex,
        "qdrant.Points/Scroll" => Scroll,
        "qdrant.Points/Count" => Count,
        "qdrant.Points/Query" => Query,
        "qdrant.Points/QueryBatch" => QueryBatch,
        "qdrant.Points/Search" => Search,
        "qdrant.Points/SearchBatch" => SearchBatch,
        "qdrant.Points/UpdateBatch" => UpdateBatch,
        "qdrant.Snapshots/Create" | "qdrant.Snapshots/CreateFull" => CreateSnapshot,
        "qdrant.Snapshots/List" | "qdrant.Snapshots/ListFull" => ListSnapshots,
        "qdrant.Snapshots/Delete" | "qdrant.Snapshots/DeleteFull" => DeleteSnapshot,
        _ => Unknown,
    }
}

/// Checks the key a call presents against what `op` needs; the refusal as a status.
pub(super) fn check(
    keys: &ApiKeys,
    headers: &http::HeaderMap,
    op: Operation,
) -> Result<(), Status> {
    keys.check(ApiKeys::presented(headers), op)
        .map_err(|denied| match denied {
            Denied::Unauthenticated(m) => Status::unauthenticated(m),
            Denied::Forbidden(m) => Status::permission_denied(m),
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::service::Access;

    #[test]
    fn methods_get_their_operations_access() {
        assert_eq!(
            operation("/qdrant.Qdrant/HealthCheck").access(),
            Access::Open
        );
        assert_eq!(
            operation("/grpc.health.v1.Health/Check").access(),
            Access::Open
        );
        assert_eq!(operation("/qdrant.Points/Query").access(), Access::Read);
        assert_eq!(
            operation("/qdrant.Snapshots/ListFull").access(),
            Access::Read
        );
        assert_eq!(operation("/qdrant.Points/Upsert").access(), Access::Write);
        assert_eq!(
            operation("/qdrant.Snapshots/Create").access(),
            Access::Manage
        );
        assert_eq!(operation("/qdrant.Points/Facet"), Operation::Unknown);
    }
}

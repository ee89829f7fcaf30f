//! Key checks for gRPC: a tower layer that classifies each call by its method path and
//! asks the same [`ApiKeys::check`] as REST. Health and version probes need no key.

use std::task::{Context, Poll};

use futures::future::BoxFuture;
use tonic::body::Body;
use tonic::Status;
use tower::{Layer, Service};

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

/// Wraps the gRPC services with the key check.
#[derive(Clone, Debug)]
pub(crate) struct AuthLayer {
    keys: ApiKeys,
}

impl AuthLayer {
    pub(crate) fn new(keys: ApiKeys) -> Self {
        AuthLayer { keys }
    }
}

impl<S> Layer<S> for AuthLayer {
    type Service = Auth<S>;
    fn layer(&self, inner: S) -> Auth<S> {
        Auth {
            inner,
            keys: self.keys.clone(),
        }
    }
}

/// The key check in front of one service stack.
#[derive(Clone, Debug)]
pub(crate) struct Auth<S> {
    inner: S,
    keys: ApiKeys,
}

impl<S> Service<http::Request<Body>> for Auth<S>
where
    S: Service<http::Request<Body>, Response = http::Response<Body>> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<Body>) -> Self::Future {
        let op = operation(req.uri().path());
        match self.keys.check(ApiKeys::presented(req.headers()), op) {
            Ok(()) => {
                // The ready service answers this call; a fresh clone waits for the next.
                let clone = self.inner.clone();
                let mut ready = std::mem::replace(&mut self.inner, clone);
                Box::pin(ready.call(req))
            }
            Err(denied) => {
                let status = match denied {
                    Denied::Unauthenticated(m) => Status::unauthenticated(m),
                    Denied::Forbidden(m) => Status::permission_denied(m),
                };
                Box::pin(async move { Ok(status.into_http()) })
            }
        }
    }
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

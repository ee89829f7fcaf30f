//! Counts each RPC by method and gRPC status code, with its latency, into the same
//! request metrics as REST (`transport="grpc"`).

use std::task::{Context, Poll};
use std::time::Instant;

use futures::future::BoxFuture;
use tonic::body::Body;
use tower::{Layer, Service};

use crate::service::Operation;
use crate::telemetry;

/// The layer that wraps every gRPC service.
#[derive(Clone, Debug, Default)]
pub(crate) struct MeteredLayer;

impl<S> Layer<S> for MeteredLayer {
    type Service = Metered<S>;
    fn layer(&self, inner: S) -> Metered<S> {
        Metered { inner }
    }
}

/// The wrapped service.
#[derive(Clone, Debug)]
pub(crate) struct Metered<S> {
    inner: S,
}

/// The RPC's path, or `other` for methods this service does not know (so a client
/// probing for names cannot grow the series without bound).
fn route(path: &str) -> String {
    match super::auth::operation(path) {
        Operation::Unknown => "other".to_string(),
        _ => path.to_string(),
    }
}

/// The gRPC status of a response: in its headers for errors ("trailers-only"
/// responses); a unary success carries `0` in trailers, which this layer does not wait for.
fn status(resp: &http::Response<Body>) -> String {
    resp.headers()
        .get("grpc-status")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("0")
        .to_string()
}

impl<S> Service<http::Request<Body>> for Metered<S>
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
        let route = route(req.uri().path());
        let started = Instant::now();
        let clone = self.inner.clone();
        let mut ready = std::mem::replace(&mut self.inner, clone);
        Box::pin(async move {
            let out = ready.call(req).await;
            let code = match &out {
                Ok(resp) => status(resp),
                // The transport failed: no status reached the client (`14` = UNAVAILABLE).
                Err(_) => "14".to_string(),
            };
            telemetry::get().request("grpc", route, code, started.elapsed());
            out
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_methods_share_one_series() {
        assert_eq!(route("/qdrant.Points/Upsert"), "/qdrant.Points/Upsert");
        assert_eq!(route("/qdrant.Points/NoSuchThing"), "other");
        let resp = tonic::Status::not_found("x").into_http::<Body>();
        assert_eq!(status(&resp), "5");
    }
}

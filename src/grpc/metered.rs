//! Counts each RPC by method and gRPC status code, with its latency, into the same
//! request metrics as REST (`transport="grpc"`).

use std::time::Instant;

use tonic::body::Body;

use crate::service::Operation;
use crate::telemetry;

/// The RPC's path, or `other` for methods this service does not know (so a client
/// probing for names cannot grow the series without bound).
pub(super) fn route(path: &str, op: Operation) -> String {
    match op {
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

/// Records one call that `route` names, started at `started`, as it ended.
pub(super) fn record<E>(route: String, out: &Result<http::Response<Body>, E>, started: Instant) {
    let code = match out {
        Ok(resp) => status(resp),
        // The transport failed: no status reached the client (`14` = UNAVAILABLE).
        Err(_) => "14".to_string(),
    };
    telemetry::get().request("grpc", route, code, started.elapsed());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_methods_share_one_series() {
        let route = |p| route(p, super::super::auth::operation(p));
        assert_eq!(route("/qdrant.Points/Upsert"), "/qdrant.Points/Upsert");
        assert_eq!(route("/qdrant.Points/NoSuchThing"), "other");
        let resp = tonic::Status::not_found("x").into_http::<Body>();
        assert_eq!(status(&resp), "5");
    }
}

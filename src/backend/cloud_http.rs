//! The HTTP client under `object_store`'s cloud stores: the default one, watched so that
//! every request to the bucket is counted by kind in `snapstream_storage_requests_total`
//! (LIST requests are what idle backup tools are billed for), S3 part uploads that fail
//! (and are then retried by `object_store`'s retry layer, while its budget lasts) in
//! `snapstream_s3_part_retries_total`, and multipart uploads aborted in
//! `snapstream_s3_aborted_multipart_uploads_total`.

use async_trait::async_trait;
use object_store::client::{
    HttpClient, HttpConnector, HttpError, HttpRequest, HttpResponse, HttpService, ReqwestConnector,
};
use object_store::ClientOptions;

use crate::telemetry;

/// Builds [`Watched`] clients.
#[derive(Debug, Default)]
pub(super) struct WatchedConnector(ReqwestConnector);

impl HttpConnector for WatchedConnector {
    fn connect(&self, options: &ClientOptions) -> object_store::Result<HttpClient> {
        Ok(HttpClient::new(Watched(self.0.connect(options)?)))
    }
}

/// The default client, counting failed part uploads.
#[derive(Debug)]
struct Watched(HttpClient);

/// Whether `req` is a `method` request with query parameter `param`.
fn is(req: &HttpRequest, method: http::Method, param: &str) -> bool {
    req.method() == method
        && req
            .uri()
            .query()
            .is_some_and(|q| q.split('&').any(|kv| kv.split('=').next() == Some(param)))
}

/// What kind of request `req` is, as billed: `list` (S3 `list-type`/`uploads`, Azure
/// `comp=list`, GCS's JSON object listing), else its method.
fn kind(req: &HttpRequest) -> &'static str {
    let query = req.uri().query().unwrap_or("");
    let params = || {
        query
            .split('&')
            .map(|kv| kv.split('=').next().unwrap_or(""))
    };
    let get = req.method() == http::Method::GET;
    let listing = params().any(|p| p == "list-type" || p == "uploads")
        || query.split('&').any(|kv| kv == "comp=list")
        || req.uri().path().ends_with("/o");
    match *req.method() {
        _ if get && listing => "list",
        http::Method::GET => "get",
        http::Method::HEAD => "head",
        http::Method::PUT => "put",
        http::Method::POST => "post",
        http::Method::DELETE => "delete",
        _ => "other",
    }
}

/// Whether a request aborts a multipart upload (`DELETE ?uploadId=`).
fn is_abort(req: &HttpRequest) -> bool {
    is(req, http::Method::DELETE, "uploadId")
}

/// Whether a request uploads one part of a multipart upload (`PUT ?partNumber=N&uploadId=`).
fn is_part_upload(req: &HttpRequest) -> bool {
    is(req, http::Method::PUT, "partNumber")
}

#[async_trait]
impl HttpService for Watched {
    async fn call(&self, req: HttpRequest) -> Result<HttpResponse, HttpError> {
        let (part, abort) = (is_part_upload(&req), is_abort(&req));
        telemetry::get()
            .storage_requests
            .get_or_create(&telemetry::RequestKindLabels { kind: kind(&req) })
            .inc();
        let out = self.0.execute(req).await;
        let failed = match &out {
            Ok(resp) => resp.status().is_server_error() || resp.status().as_u16() == 429,
            Err(_) => true,
        };
        if part && failed {
            telemetry::get().s3_part_retries.inc();
        }
        if abort && out.as_ref().is_ok_and(|r| r.status().is_success()) {
            telemetry::get().s3_aborted_uploads.inc();
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn part_uploads_are_recognised() {
        let req = |m: http::Method, uri: &str| {
            http::Request::builder()
                .method(m)
                .uri(uri)
                .body(object_store::client::HttpRequestBody::empty())
                .unwrap()
        };
        assert!(is_part_upload(&req(
            http::Method::PUT,
            "http://s3/b/k?partNumber=3&uploadId=x"
        )));
        assert!(!is_part_upload(&req(http::Method::PUT, "http://s3/b/k")));
        assert!(!is_part_upload(&req(
            http::Method::GET,
            "http://s3/b/k?partNumber=3"
        )));
        assert!(is_abort(&req(
            http::Method::DELETE,
            "http://s3/b/k?uploadId=x"
        )));
        assert!(!is_abort(&req(http::Method::DELETE, "http://s3/b/k")));
        assert_eq!(
            kind(&req(http::Method::GET, "http://s3/b?list-type=2&prefix=p")),
            "list"
        );
        assert_eq!(
            kind(&req(
                http::Method::GET,
                "http://az/acct/c?restype=container&comp=list"
            )),
            "list"
        );
        assert_eq!(
            kind(&req(http::Method::GET, "http://gcs/storage/v1/b/b/o")),
            "list"
        );
        assert_eq!(kind(&req(http::Method::GET, "http://s3/b/k")), "get");
        assert_eq!(kind(&req(http::Method::HEAD, "http://s3/b/k")), "head");
    }
}

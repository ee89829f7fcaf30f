//! The HTTP client under `object_store`'s S3 store: the default one, watched so that part
//! uploads that fail (and are then retried by `object_store`'s retry layer, while its
//! budget lasts) are counted in `snapstream_s3_part_retries_total`, and multipart uploads
//! aborted in `snapstream_s3_aborted_multipart_uploads_total`.

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
    }
}

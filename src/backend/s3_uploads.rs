//! Multipart uploads that a crash left behind, found and aborted at start-up.
//!
//! `object_store` aborts an upload whose id it holds but cannot list the uploads of a
//! bucket, so the listing is one S3 call made here: `ListMultipartUploads`, signed by
//! `object_store`'s own SigV4 authorizer with the store's own credentials and sent through
//! the same HTTP client stack. The abort goes through `object_store`'s `MultipartStore`.

use object_store::aws::{AmazonS3, AwsAuthorizer};
use object_store::client::{
    HttpClient, HttpConnector, HttpRequest, HttpRequestBody, ReqwestConnector,
};
use object_store::multipart::MultipartStore;
use object_store::path::Path;
use object_store::ClientOptions;
use serde::Deserialize;

use super::cloud::Orphans;
use super::s3::S3Options;
use super::BackendError;
use crate::error::BoxError;

/// Where a listing page starts: after this key and upload id.
type Markers = (Option<String>, Option<String>);

/// What failed and why, before it is named as a backend error.
type Failure = (&'static str, BoxError);

/// One unfinished multipart upload.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Upload {
    /// The object key it would create (with the store's prefix).
    pub key: String,
    /// Its upload id.
    pub id: String,
}

/// `ListMultipartUploadsResult`, the parts of it used here.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
struct ListResult {
    is_truncated: bool,
    next_key_marker: Option<String>,
    next_upload_id_marker: Option<String>,
    #[serde(rename = "Upload")]
    uploads: Vec<UploadEntry>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
struct UploadEntry {
    key: String,
    upload_id: String,
}

/// Lists and aborts the multipart uploads under one prefix of one bucket.
#[derive(Debug)]
pub struct Uploads {
    store: AmazonS3,
    http: HttpClient,
    /// The bucket's URL, addressed as the store addresses it.
    bucket_url: String,
    region: String,
    /// `{prefix}/`, or empty for the whole bucket.
    prefix: String,
}

/// What went wrong, as a backend error naming the prefix.
fn failed(
    action: &'static str,
    prefix: &str,
    backend: &str,
    e: impl Into<BoxError>,
) -> BackendError {
    BackendError::Remote {
        action,
        key: prefix.to_string(),
        backend: backend.to_string(),
        source: e.into(),
    }
}

impl Uploads {
    /// The uploads of `store`, configured by `cfg`.
    pub(super) fn new(
        store: AmazonS3,
        cfg: &S3Options,
        options: &ClientOptions,
    ) -> object_store::Result<Self> {
        // The same addressing as `object_store`'s own requests.
        let bucket_url = match (&cfg.endpoint_url, cfg.path_style) {
            (Some(ep), true) => format!("{}/{}", ep.trim_end_matches('/'), cfg.bucket),
            (Some(ep), false) => ep.trim_end_matches('/').to_string(),
            (None, true) => format!("https://s3.{}.amazonaws.com/{}", cfg.region, cfg.bucket),
            (None, false) => format!("https://{}.s3.{}.amazonaws.com", cfg.bucket, cfg.region),
        };
        Ok(Uploads {
            store,
            http: ReqwestConnector::default().connect(options)?,
            bucket_url,
            region: cfg.region.clone(),
            prefix: if cfg.prefix.is_empty() {
                String::new()
            } else {
                format!("{}/", cfg.prefix)
            },
        })
    }

    /// One page of the listing, after `markers` (key and upload id).
    async fn page(&self, markers: &Markers, backend: &str) -> Result<ListResult, BackendError> {
        self.try_page(markers)
            .await
            .map_err(|(action, e)| failed(action, &self.prefix, backend, e))
    }

    async fn try_page(&self, markers: &Markers) -> Result<ListResult, Failure> {
        const LIST: &str = "failed to list multipart uploads under";
        let request = self.signed_request(markers).await?;
        let response = self
            .http
            .execute(request)
            .await
            .map_err(|e| (LIST, e.into()))?;
        let status = response.status();
        let body = response
            .into_body()
            .bytes()
            .await
            .map_err(|e| (LIST, e.into()))?;
        if !status.is_success() {
            let text = String::from_utf8_lossy(&body);
            return Err((LIST, format!("HTTP {status}: {text}").into()));
        }
        quick_xml::de::from_reader(body.as_ref()).map_err(|e| {
            (
                "failed to read the listing of multipart uploads under",
                e.into(),
            )
        })
    }

    /// `GET /?uploads&prefix=..` after `markers`, signed with the store's credentials.
    async fn signed_request(&self, markers: &Markers) -> Result<HttpRequest, Failure> {
        let mut url = url::Url::parse(&format!("{}/", self.bucket_url))
            .map_err(|e| ("invalid bucket URL for", e.into()))?;
        {
            let mut q = url.query_pairs_mut();
            q.append_pair("uploads", "");
            q.append_pair("prefix", &self.prefix);
            if let Some(k) = &markers.0 {
                q.append_pair("key-marker", k);
            }
            if let Some(u) = &markers.1 {
                q.append_pair("upload-id-marker", u);
            }
        }
        let mut request = http::Request::builder()
            .method(http::Method::GET)
            .uri(url.as_str())
            .body(HttpRequestBody::empty())
            .map_err(|e| ("failed to build a request listing uploads under", e.into()))?;
        let credential = self
            .store
            .credentials()
            .get_credential()
            .await
            .map_err(|e| ("no credentials to list multipart uploads under", e.into()))?;
        AwsAuthorizer::new(&credential, "s3", &self.region)
            .try_authorize(&mut request, None)
            .map_err(|e| ("failed to sign a request listing uploads under", e.into()))?;
        Ok(request)
    }

    /// Every unfinished upload under the prefix. `backend` names the store in errors.
    pub(super) async fn list(&self, backend: &str) -> Result<Vec<Upload>, BackendError> {
        let mut out = Vec::new();
        let mut markers: Markers = (None, None);
        loop {
            let page = self.page(&markers, backend).await?;
            out.extend(page.uploads.into_iter().map(|u| Upload {
                key: u.key,
                id: u.upload_id,
            }));
            if !page.is_truncated {
                return Ok(out);
            }
            markers = (page.next_key_marker, page.next_upload_id_marker);
            if markers == (None, None) {
                return Ok(out);
            }
        }
    }

    /// Aborts `upload`; its parts are freed.
    pub(super) async fn abort(&self, upload: &Upload, backend: &str) -> Result<(), BackendError> {
        let path = Path::parse(&upload.key).map_err(|e| {
            failed(
                "invalid key of a multipart upload under",
                &self.prefix,
                backend,
                e,
            )
        })?;
        self.store
            .abort_multipart(&path, &upload.id)
            .await
            .map_err(|e| {
                failed(
                    "failed to abort a multipart upload under",
                    &self.prefix,
                    backend,
                    e,
                )
            })
    }
}

#[async_trait::async_trait]
impl Orphans for Uploads {
    /// Aborts every multipart upload under the prefix: a crash left them (a live write of
    /// this process holds its own and aborts it itself).
    async fn cleanup(&self, backend: &str) -> Result<usize, BackendError> {
        let orphans = self.list(backend).await?;
        for upload in &orphans {
            self.abort(upload, backend).await?;
            tracing::info!(key = %upload.key, "aborted an orphaned multipart upload");
        }
        Ok(orphans.len())
    }
}

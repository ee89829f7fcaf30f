//! The Google Cloud Storage backend: a [`CloudBackend`] over `object_store`'s GCS store.
//!
//! Large writes are XML-API multipart uploads, aborted on every error path; an upload a
//! crash left behind stays invisible (it is no object) until a bucket lifecycle rule
//! (`AbortIncompleteMultipartUpload`) removes it: `object_store` cannot list them.

use std::sync::Arc;

use async_trait::async_trait;
use object_store::gcp::{GoogleCloudStorage, GoogleCloudStorageBuilder};
use object_store::ClientOptions;

use super::cloud::{CloudBackend, Orphans, Transfer};
use super::BackendError;
use crate::error::{Error, Result};
use crate::secret::Secret;

/// Options of the GCS backend (configured as `storage.snapshots_config.gcs_config`).
/// Unset credentials fall back to `GOOGLE_SERVICE_ACCOUNT` / `GOOGLE_SERVICE_ACCOUNT_KEY`,
/// then to application default credentials (`GOOGLE_APPLICATION_CREDENTIALS`, gcloud's
/// file), then to the metadata server of the machine.
#[derive(Clone, Debug, PartialEq)]
pub struct GcsOptions {
    /// Bucket name.
    pub bucket: String,
    /// A service account's JSON key file.
    pub service_account_path: Option<String>,
    /// A service account's JSON key itself.
    pub service_account_key: Option<Secret>,
    /// Storage endpoint, such as `http://127.0.0.1:4443` for fake-gcs-server (default
    /// `https://storage.googleapis.com`).
    pub endpoint_url: Option<String>,
    /// Unsigned requests, with no credentials (emulators, public buckets).
    pub anonymous: bool,
    /// Key prefix inside the bucket.
    pub prefix: String,
    /// Part sizes, parallelism, retries.
    pub transfer: Transfer,
}

/// Multipart uploads a crash left behind: invisible, removed by a lifecycle rule.
#[derive(Debug)]
pub struct UnlistedUploads;

#[async_trait]
impl Orphans for UnlistedUploads {
    async fn cleanup(&self, _backend: &str) -> Result<usize, BackendError> {
        Ok(0)
    }
}

/// Snapshots as objects in one GCS bucket under one prefix.
pub type GcsBackend = CloudBackend<UnlistedUploads>;

fn build_store(cfg: &GcsOptions, options: ClientOptions) -> Result<GoogleCloudStorage> {
    let mut b = GoogleCloudStorageBuilder::from_env()
        .with_bucket_name(&cfg.bucket)
        .with_retry(cfg.transfer.retry())
        .with_http_connector(super::cloud_http::WatchedConnector::default())
        .with_client_options(options);
    if let Some(path) = &cfg.service_account_path {
        b = b.with_service_account_path(path);
    }
    if let Some(key) = &cfg.service_account_key {
        b = b.with_service_account_key(key.expose());
    }
    if let Some(ep) = &cfg.endpoint_url {
        b = b.with_base_url(ep.trim_end_matches('/'));
    }
    if cfg.anonymous {
        // An empty bearer token, so no credential is looked up (the metadata server
        // included) for any request.
        let none = object_store::gcp::GcpCredential {
            bearer: String::new(),
        };
        b = b
            .with_skip_signature(true)
            .with_credentials(Arc::new(object_store::StaticCredentialProvider::new(none)));
    }
    b.build()
        .map_err(|e| Error::bad_input(format!("invalid GCS configuration: {e}")))
}

impl CloudBackend<UnlistedUploads> {
    /// Builds the clients; nothing is sent until the first call.
    pub fn new(cfg: &GcsOptions) -> Result<Self> {
        CloudBackend::assemble(
            &cfg.transfer,
            |options| build_store(cfg, options),
            ("gs", &cfg.bucket, &cfg.prefix),
            UnlistedUploads,
        )
    }
}

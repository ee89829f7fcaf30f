//! The S3-compatible backend: a [`CloudBackend`] over `object_store`'s S3 store.
//!
//! * `commit` completes the multipart upload; `abort` (and every error path of the
//!   producer) sends AbortMultipartUpload. Uploads orphaned by a crash are listed and
//!   aborted by `cleanup` at start-up (`s3_uploads.rs`).
//! * Payloads are sent unsigned: signing hashes every part with SHA-256 a second time, on
//!   the hot path, while the archive's own checksum already covers every byte end to end
//!   and TLS protects https endpoints in transit.

use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::ClientOptions;

use super::cloud::{CloudBackend, Transfer};
use super::s3_uploads::{Upload, Uploads};
use super::BackendError;
use crate::error::{Error, Result};
use crate::secret::Secret;

/// The region used when neither the options nor `AWS_REGION` / `AWS_DEFAULT_REGION` name one.
pub(crate) const DEFAULT_REGION: &str = "us-east-1";

/// Options of the S3 backend (configured as `storage.snapshots_config.s3_config`).
#[derive(Clone, Debug, PartialEq)]
pub struct S3Options {
    /// Bucket name.
    pub bucket: String,
    /// Region (default [`DEFAULT_REGION`]).
    pub region: String,
    /// Access key id.
    pub access_key: Option<Secret>,
    /// Secret access key.
    pub secret_key: Option<Secret>,
    /// Custom endpoint (MinIO, Garage, Ceph...).
    pub endpoint_url: Option<String>,
    /// Key prefix inside the bucket (default `snapshots`).
    pub prefix: String,
    /// Path-style addressing (default on when `endpoint_url` is set).
    pub path_style: bool,
    /// Part sizes, parallelism, retries.
    pub transfer: Transfer,
}

/// Snapshots as objects in one S3 bucket under one prefix.
pub type S3Backend = CloudBackend<Uploads>;

fn build_store(cfg: &S3Options, options: ClientOptions) -> Result<AmazonS3> {
    let mut b = AmazonS3Builder::new()
        .with_bucket_name(&cfg.bucket)
        .with_region(&cfg.region)
        .with_virtual_hosted_style_request(!cfg.path_style)
        .with_retry(cfg.transfer.retry())
        .with_http_connector(super::cloud_http::WatchedConnector::default())
        .with_unsigned_payload(true)
        .with_client_options(options);
    if let Some(ep) = &cfg.endpoint_url {
        b = b.with_endpoint(ep);
    }
    if let Some(k) = &cfg.access_key {
        b = b.with_access_key_id(k.expose());
    }
    if let Some(k) = &cfg.secret_key {
        b = b.with_secret_access_key(k.expose());
    }
    b.build()
        .map_err(|e| Error::bad_input(format!("invalid S3 configuration: {e}")))
}

impl CloudBackend<Uploads> {
    /// Builds the clients; nothing is sent until the first call.
    pub fn new(cfg: &S3Options) -> Result<Self> {
        let (options, _) = cfg.transfer.client_options();
        let uploads = Uploads::new(build_store(cfg, options.clone())?, cfg, &options)
            .map_err(|e| Error::bad_input(format!("invalid S3 configuration: {e}")))?;
        CloudBackend::assemble(
            &cfg.transfer,
            |options| build_store(cfg, options),
            ("s3", &cfg.bucket, &cfg.prefix),
            uploads,
        )
    }

    /// The multipart uploads under the prefix that were neither completed nor aborted.
    ///
    /// # Errors
    /// The listing failed (unreachable, refused, unreadable answer).
    pub async fn unfinished_uploads(&self) -> Result<Vec<Upload>, BackendError> {
        self.orphans().list(&self.to_string()).await
    }
}

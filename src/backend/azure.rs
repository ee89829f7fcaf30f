//! The Azure Blob Storage backend: a [`CloudBackend`] over `object_store`'s Azure store.
//!
//! A write is a series of Put Block requests made visible by one Put Block List on commit.
//! Blocks that were never committed (an aborted write, a crash) are invisible, cannot be
//! listed as objects and are discarded by Azure itself after seven days, so start-up has
//! nothing to clean here.

use async_trait::async_trait;
use object_store::azure::{MicrosoftAzure, MicrosoftAzureBuilder};
use object_store::ClientOptions;

use super::cloud::{CloudBackend, Orphans, Transfer};
use super::BackendError;
use crate::error::{Error, Result};
use crate::secret::Secret;

/// Options of the Azure backend (configured as `storage.snapshots_config.azure_config`).
/// Unset credentials fall back to Azure's own variables (`AZURE_STORAGE_ACCOUNT_NAME`,
/// `AZURE_STORAGE_ACCOUNT_KEY`, `AZURE_STORAGE_SAS_KEY`, `AZURE_CLIENT_ID`...), then to a
/// managed identity.
#[derive(Clone, Debug, PartialEq)]
pub struct AzureOptions {
    /// Container name.
    pub container: String,
    /// Storage account name.
    pub account: Option<String>,
    /// Shared account key.
    pub access_key: Option<Secret>,
    /// A SAS token (`sv=...&sig=...`), instead of the account key.
    pub sas_token: Option<Secret>,
    /// Blob endpoint, such as `http://127.0.0.1:10000/devstoreaccount1` for Azurite
    /// (default `https://{account}.blob.core.windows.net`).
    pub endpoint_url: Option<String>,
    /// Key prefix inside the container.
    pub prefix: String,
    /// Part (block) sizes, parallelism, retries.
    pub transfer: Transfer,
}

/// Uncommitted blocks: invisible, and expired by Azure.
#[derive(Debug)]
pub struct UncommittedBlocks;

#[async_trait]
impl Orphans for UncommittedBlocks {
    async fn cleanup(&self, _backend: &str) -> Result<usize, BackendError> {
        Ok(0)
    }
}

/// Snapshots as blobs in one Azure container under one prefix.
pub type AzureBackend = CloudBackend<UncommittedBlocks>;

fn build_store(cfg: &AzureOptions, options: ClientOptions) -> Result<MicrosoftAzure> {
    let mut b = MicrosoftAzureBuilder::from_env()
        .with_container_name(&cfg.container)
        .with_retry(cfg.transfer.retry())
        .with_http_connector(super::cloud_http::WatchedConnector::default())
        .with_client_options(options);
    if let Some(account) = &cfg.account {
        b = b.with_account(account);
    }
    if let Some(key) = &cfg.access_key {
        b = b.with_access_key(key.expose());
    }
    if let Some(sas) = &cfg.sas_token {
        let pairs = url::form_urlencoded::parse(sas.expose().trim_start_matches('?').as_bytes())
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect::<Vec<_>>();
        b = b.with_sas_authorization(pairs);
    }
    if let Some(ep) = &cfg.endpoint_url {
        b = b.with_endpoint(ep.trim_end_matches('/').to_string());
    }
    b.build()
        .map_err(|e| Error::bad_input(format!("invalid Azure configuration: {e}")))
}

impl CloudBackend<UncommittedBlocks> {
    /// Builds the clients; nothing is sent until the first call.
    pub fn new(cfg: &AzureOptions) -> Result<Self> {
        CloudBackend::assemble(
            &cfg.transfer,
            |options| build_store(cfg, options),
            ("az", &cfg.container, &cfg.prefix),
            UncommittedBlocks,
        )
    }
}

//! Assembly: from a validated configuration to the services both transports run on. The
//! one place that knows every layer; nothing below imports it.

use std::sync::Arc;

use crate::backend::encryption::{Encrypted, Keyring};
use crate::backend::{self, DynBackend};
use crate::backup::Backups;
use crate::collection::registry::Registry;
use crate::config::{Config, SnapshotsStorage, StorageConfig};
use crate::error::{Error, Result};
use crate::repository::Repository;
use crate::service::{self, Services};
use crate::snapshot::codec::Compression;
use crate::snapshot::{create::CreateSettings, sources::SourceSettings, Engine, SnapshotSettings};

/// Opens storage and the snapshot backend, cleans leftovers of interrupted work, and
/// returns the services both transports run on.
pub async fn build_state(config: Config) -> Result<Services> {
    let storage = &config.storage;
    let registry = {
        let path = storage.storage_path.clone();
        tokio::task::spawn_blocking(move || Registry::open(&path))
            .await
            .map_err(|e| Error::internal("storage load task failed", e))??
    };
    let registry = Arc::new(registry);
    std::fs::create_dir_all(&storage.snapshots_path).map_err(|e| {
        Error::internal(
            format!(
                "failed to create snapshots directory `{}`",
                storage.snapshots_path.display()
            ),
            e,
        )
    })?;
    let engine = Engine::new(
        Arc::clone(&registry),
        Arc::new(open_repository(storage)?),
        snapshot_settings(&config),
    )?;
    let storage_health = Arc::new(service::storage_health::StorageHealth::new(Arc::clone(
        engine.backend(),
    )));
    storage_health
        .record(check_storage(&engine, storage).await)
        .await;
    if let Some(every) = storage.snapshots_config.schedule_interval_sec {
        service::schedule::spawn(
            Arc::clone(&registry),
            Arc::clone(&engine.creator),
            std::time::Duration::from_secs(every),
        );
    }
    let backups = Arc::new(Backups::new(
        Arc::clone(&engine.repo),
        config.backup_sources.clone(),
    ));
    service::schedule::spawn_backups(&backups);
    let repo = Arc::clone(&engine.repo);
    let snapshots = service::snapshots::Snapshots::new(Arc::clone(&registry), engine);
    let verify = verification(repo, &snapshots, storage);
    let backups = service::backups::BackupService::new(backups, snapshots.registry_of_operations());
    Ok(Services {
        keys: service::ApiKeys::new(
            config.service.api_key.clone(),
            config.service.read_only_api_key.clone(),
        ),
        config: Arc::new(config),
        collections: service::collections::Collections::new(Arc::clone(&registry)),
        points: service::points::Points::new(registry),
        snapshots,
        backups,
        verify,
        storage_health,
    })
}

/// Verifications of `repo`, on their schedule when one is configured.
fn verification(
    repo: Arc<crate::repository::Repository>,
    snapshots: &service::snapshots::Snapshots,
    storage: &StorageConfig,
) -> service::verify::VerifyService {
    let verify = service::verify::VerifyService::new(repo, snapshots.registry_of_operations());
    if let Some(every) = storage.snapshots_config.verify_interval_sec {
        verify.spawn_schedule(
            std::time::Duration::from_secs(every),
            storage.snapshots_config.verify_read_data,
        );
    }
    verify
}

/// The snapshot repository over the configured storage: incremental or not, pieces
/// compressed or not, encrypted when a key is configured (and checked, on first use, not
/// to be an encrypted storage when none is).
pub(crate) fn open_repository(storage: &StorageConfig) -> Result<Repository> {
    let sc = &storage.snapshots_config;
    let (backend, keyring) = open_encrypted(storage)?;
    Ok(Repository::new(backend, sc.incremental)
        .with_piece_compression(sc.compression != Compression::None)
        .with_keyring(Some(keyring))
        .with_linked_files(links_sealed_files(storage)))
}

/// Whether incremental snapshots link sealed segments rather than copy them: local snapshot
/// storage, not encrypted, on the collections' filesystem (probed with a real link). Says
/// once why not when incremental local snapshots must copy.
fn links_sealed_files(storage: &StorageConfig) -> bool {
    let sc = &storage.snapshots_config;
    if sc.storage != SnapshotsStorage::Local || !sc.incremental {
        return false;
    }
    let why_not = if !matches!(sc.encryption.passphrase(), Ok(None)) {
        "the snapshot storage is encrypted".to_string()
    } else {
        let from = storage.storage_path.join(".staging");
        let to = storage
            .snapshots_path
            .join(crate::repository::linked::LINKED_DIR);
        match crate::io::fs::can_link_between(&from, &to) {
            Ok(()) => return true,
            Err(e) => crate::io::fs::link_refusal(&e),
        }
    };
    tracing::info!(
        "incremental local snapshots copy sealed segments instead of linking them: {why_not}"
    );
    false
}

/// The configured snapshot storage seen through its encryption, and its keyring.
pub(crate) fn open_encrypted(storage: &StorageConfig) -> Result<(DynBackend, Arc<Keyring>)> {
    let raw = open_backend(storage)?;
    let passphrase = storage
        .snapshots_config
        .encryption
        .passphrase()
        .map_err(Error::bad_input)?;
    let keyring = Arc::new(Keyring::new(Arc::clone(&raw), passphrase));
    Ok((Arc::new(Encrypted::new(raw, Arc::clone(&keyring))), keyring))
}

/// The configured snapshot storage, metered.
fn open_backend(storage: &StorageConfig) -> Result<DynBackend> {
    let sc = &storage.snapshots_config;
    Ok(match sc.storage {
        SnapshotsStorage::Local => {
            let local = backend::local::LocalBackend::new(&storage.snapshots_path)
                .map_err(|e| Error::internal("failed to open local snapshot storage", e))?;
            Arc::new(backend::metered::Metered::new(local, "local"))
        }
        SnapshotsStorage::S3 => {
            let b = backend::s3::S3Backend::new(section(&sc.s3, "s3_config")?)?;
            Arc::new(backend::metered::Metered::new(b, "s3"))
        }
        SnapshotsStorage::Azure => {
            let b = backend::azure::AzureBackend::new(section(&sc.azure, "azure_config")?)?;
            Arc::new(backend::metered::Metered::new(b, "azure"))
        }
        SnapshotsStorage::Gcs => {
            let b = backend::gcs::GcsBackend::new(section(&sc.gcs, "gcs_config")?)?;
            Arc::new(backend::metered::Metered::new(b, "gcs"))
        }
    })
}

/// A cloud's options, present whenever that cloud is configured.
fn section<'a, T>(options: &'a Option<T>, name: &str) -> Result<&'a T> {
    options
        .as_ref()
        .ok_or_else(|| Error::bad_input(format!("storage.snapshots_config.{name} is missing")))
}

/// The snapshot engine's settings, from the configuration.
fn snapshot_settings(config: &Config) -> SnapshotSettings {
    let storage = &config.storage;
    SnapshotSettings {
        create: CreateSettings {
            compression: storage.snapshots_config.compression,
            low_priority: storage.snapshots_config.storage == SnapshotsStorage::Local,
            keep_last: storage.snapshots_config.retention_keep_last,
        },
        sources: SourceSettings {
            snapshots_path: storage.snapshots_path.clone(),
            url_recovery: config.service.enable_snapshot_url_recovery,
            cloud_location: storage.snapshots_config.cloud_location(),
        },
        temp_path: storage.temp_path.clone(),
    }
}

/// Cleans the leftovers of interrupted work; returns what is wrong with the storage, if
/// anything. A storage that cannot be reached at start-up (wrong credentials, missing
/// bucket) is one warning: the service still serves collections, reports the same line on
/// each snapshot call that needs the storage, and in `/readyz`.
async fn check_storage(engine: &Engine, storage: &StorageConfig) -> Option<String> {
    let e = engine.startup_cleanup().await.err()?;
    let mut what = match &e {
        Error::Storage { summary, .. } => summary.clone(),
        other => other.public_message(),
    };
    if storage
        .snapshots_config
        .s3
        .as_ref()
        .is_some_and(|s3| s3.access_key.is_none() || s3.secret_key.is_none())
    {
        what.push_str(
            " (no access_key / secret_key configured, nor AWS_ACCESS_KEY_ID / \
             AWS_SECRET_ACCESS_KEY in the environment)",
        );
    }
    tracing::warn!("snapshot storage start-up check failed: {what}");
    tracing::debug!(error = %e.chain(), "snapshot storage start-up check: cause");
    Some(what)
}

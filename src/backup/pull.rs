//! Pulling one shard from the peer that holds it into the repository: Qdrant's shard
//! archive is read as it streams, each file is cut into pieces of its own (so a file that
//! did not change costs nothing, whatever moved before it in the archive), and a tar that
//! Qdrant recovers is described by a manifest that is hashed on the way.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use futures::TryStreamExt;
use tokio_tar::{Archive, EntryType};

use crate::error::{Error, Result};
use crate::io::progress::Progress;
use crate::qdrant_api::Server;
use crate::repository::backups::BackupSession;
use crate::repository::manifest::Manifest;

/// Files up to this size that are UTF-8 (JSON, version files) are kept in the manifest
/// itself, not as pieces of their own.
const INLINE_MAX: u64 = 4096;

/// One shard as pulled.
#[derive(Debug)]
pub(crate) struct Pulled {
    /// The manifest of the shard archive (not yet committed).
    pub manifest: Manifest,
    /// Bytes received from Qdrant.
    pub pulled_bytes: u64,
    /// Bytes of new pieces stored.
    pub stored_bytes: u64,
}

/// Streams shard `shard` of `collection` from `server` into pieces.
pub(crate) async fn pull_shard(
    server: &Server,
    collection: &str,
    shard: u32,
    session: &BackupSession,
    created_at: DateTime<Utc>,
    progress: Option<Progress>,
) -> Result<Pulled> {
    let resp = server
        .shard_snapshot(collection, shard)
        .await
        .map_err(Error::Upstream)?;
    let received = Arc::new(AtomicU64::new(0));
    let counter = Arc::clone(&received);
    let body = resp
        .bytes_stream()
        .inspect_ok(move |b| {
            counter.fetch_add(b.len() as u64, Ordering::Relaxed);
            if let Some(p) = &progress {
                p.add(b.len() as u64);
            }
        })
        .map_err(std::io::Error::other);
    let reader = tokio_util::io::StreamReader::new(body);
    let mut archive = Archive::new(reader);
    let mut entries = archive
        .entries()
        .map_err(|e| broken(server, collection, shard, e))?;
    let mut builder = session.builder(None, created_at);
    while let Some(entry) = entries
        .try_next()
        .await
        .map_err(|e| broken(server, collection, shard, e))?
    {
        let mut entry = entry;
        let header = entry.header();
        let path = entry
            .path()
            .map_err(|e| broken(server, collection, shard, e))?
            .to_string_lossy()
            .trim_end_matches('/')
            .to_string();
        match header.entry_type() {
            EntryType::Directory => {
                builder.add_dir(path).await?;
                continue;
            }
            // GNU sparse members read back whole, holes as zeros, at their real size.
            EntryType::Regular | EntryType::Continuous | EntryType::GNUSparse => {}
            other => {
                return Err(Error::Upstream(format!(
                    "shard {shard} of `{collection}` from {}: entry `{path}` is a {other:?}, \
                     which a shard archive does not hold",
                    server.base()
                )))
            }
        }
        let len = entry.effective_size();
        builder
            .add_reader(path, &mut entry, len, len <= INLINE_MAX)
            .await?;
    }
    let written = builder.finish(None).await?;
    Ok(Pulled {
        manifest: written.manifest,
        pulled_bytes: received.load(Ordering::Relaxed),
        stored_bytes: written.uploaded_bytes,
    })
}

/// An archive that could not be read as it came: the peer, the shard and why.
fn broken(server: &Server, collection: &str, shard: u32, e: std::io::Error) -> Error {
    Error::Upstream(format!(
        "shard {shard} of `{collection}` from {}: the archive could not be read: {e}",
        server.base()
    ))
}

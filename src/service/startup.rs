//! Recovery from snapshot files named on the command line (`--snapshot PATH:NAME`,
//! `--storage-snapshot PATH`), before the service starts listening. Nobody polls these, so
//! progress goes to the log every [`REPORT_EVERY`].

use std::path::PathBuf;
use std::time::Duration;

use super::Services;
use crate::backend::ByteStream;
use crate::collection::registry::validate_name;
use crate::io::file_stream::file_stream;
use crate::io::progress::{counted, describe, reporting, Progress};

/// How often start-up recovery logs its progress.
pub(crate) const REPORT_EVERY: Duration = Duration::from_secs(5);

/// What to recover at start-up.
#[derive(Clone, Debug, Default)]
pub struct StartupRecovery {
    /// A full-storage snapshot (takes precedence over `snapshots`).
    pub storage_snapshot: Option<PathBuf>,
    /// Collection snapshots as `PATH:NAME` (split on the last `:`).
    pub snapshots: Vec<String>,
    /// Replace existing collections and aliases.
    pub force: bool,
}

/// A snapshot file's bytes, counted as they are read, and its size.
fn logged_file(file: std::fs::File) -> (ByteStream, Progress, Option<u64>) {
    let total = file.metadata().ok().map(|m| m.len());
    let progress = Progress::default();
    let stream = counted(
        file_stream(file, 0..u64::MAX),
        std::sync::Arc::clone(&progress),
    );
    (stream, progress, total)
}

/// Recovers what `req` names, in order; the error is one line for the operator.
pub async fn recover(services: &Services, req: &StartupRecovery) -> Result<(), String> {
    let engine = services.snapshots.engine();
    if let Some(path) = &req.storage_snapshot {
        let file = std::fs::File::open(path)
            .map_err(|e| format!("cannot open storage snapshot `{}`: {e}", path.display()))?;
        let (stream, progress, total) = logged_file(file);
        let what = path.display().to_string();
        let names = reporting(
            REPORT_EVERY,
            &progress,
            |done, took| tracing::info!("recovering `{what}`: {}", describe(done, total, took)),
            engine
                .recoverer
                .recover_full_from_stream(stream, req.force, None),
        )
        .await
        .map_err(|e| format!("recovering `{}` failed: {}", path.display(), e.chain()))?;
        tracing::info!(collections = ?names, "recovered full-storage snapshot");
        return Ok(());
    }
    for spec in &req.snapshots {
        let (path, name) = spec
            .rsplit_once(':')
            .filter(|(p, n)| !p.is_empty() && !n.is_empty())
            .ok_or_else(|| format!("--snapshot `{spec}` must be PATH:NAME"))?;
        validate_name(name).map_err(|e| format!("--snapshot `{spec}`: {e}"))?;
        if services.collections.exists(name) && !req.force {
            return Err(format!(
                "Collection {name} already exists. Use --force-snapshot to overwrite it."
            ));
        }
        let file =
            std::fs::File::open(path).map_err(|e| format!("cannot open snapshot `{path}`: {e}"))?;
        let (stream, progress, total) = logged_file(file);
        reporting(
            REPORT_EVERY,
            &progress,
            |done, took| {
                tracing::info!(
                    "recovering `{path}` into `{name}`: {}",
                    describe(done, total, took)
                )
            },
            engine
                .recoverer
                .recover_from_stream(name, stream, None, None),
        )
        .await
        .map_err(|e| format!("recovering `{path}` into `{name}` failed: {}", e.chain()))?;
        tracing::info!(collection = name, path, "recovered collection snapshot");
    }
    Ok(())
}

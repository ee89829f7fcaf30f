//! Command-line jobs that work on the storage directly, with no server running: `snapstream
//! backup list|run|restore` and `snapstream verify`. They read the same configuration as the server; everything a
//! restore needs is in the bucket.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use crate::backup::restore::RestoreRequest;
use crate::backup::Backups;
use crate::config::Config;
use crate::error::{Error, Result};
use crate::io::progress::Progress;
use crate::io::report::ProgressReport;

/// What `snapstream repository` does (its command line).
#[derive(Clone, Debug, clap::Subcommand)]
pub enum RepositoryCommand {
    /// Change the encryption key. The storage's data key is wrapped again with the new key;
    /// no snapshot is rewritten. The current key comes from the configuration; set the new
    /// one there afterwards (running servers keep working: the data key is unchanged).
    RotateKey {
        /// A file holding the new key; without it, the first line of standard input.
        #[arg(long)]
        new_key_file: Option<std::path::PathBuf>,
    },
}

/// Runs `snapstream repository ...` on the configured storage; returns what to print.
pub async fn repository_command(config: Config, cmd: RepositoryCommand) -> Result<String> {
    let RepositoryCommand::RotateKey { new_key_file } = cmd;
    let new = match new_key_file {
        Some(path) => crate::storage::EncryptionOptions {
            key: None,
            key_file: Some(path),
        },
        None => {
            let mut line = String::new();
            std::io::stdin().read_line(&mut line).map_err(|e| {
                Error::bad_input(format!("cannot read the new key from standard input: {e}"))
            })?;
            crate::storage::EncryptionOptions {
                key: Some(crate::secret::Secret::new(
                    line.trim_end_matches(['\r', '\n']),
                )),
                key_file: None,
            }
        }
    }
    .passphrase()
    .map_err(|why| Error::bad_input(format!("the new key: {why}")))?
    .ok_or_else(|| Error::bad_input("the new key is empty"))?;
    let (_, keyring) = crate::state::open_encrypted(&config.storage)?;
    keyring
        .rotate(&new)
        .await
        .map_err(|e| crate::backend::diagnosis::storage_error("key rotation failed", e))?;
    Ok(
        "the encryption key is changed: set the new key in storage.snapshots_config.encryption"
            .to_string(),
    )
}

/// What `snapstream backup` does (its command line).
#[derive(Clone, Debug, clap::Subcommand)]
pub enum BackupCommand {
    /// List a source's backups, newest first.
    List {
        /// The source (`backup.sources.NAME`).
        #[arg(long)]
        source: String,
    },
    /// Back a source up now.
    Run {
        /// The source.
        #[arg(long)]
        source: String,
        /// A collection to back up (repeatable); none means as configured.
        #[arg(long = "collection")]
        collections: Vec<String>,
    },
    /// Restore a backup into a Qdrant deployment (any peer), then verify it.
    Restore {
        /// The source.
        #[arg(long)]
        source: String,
        /// The backup's id.
        #[arg(long)]
        id: String,
        /// Any peer of the target, e.g. http://new:6333.
        #[arg(long)]
        to: String,
        /// The target's full-access key.
        #[arg(long)]
        api_key: Option<String>,
        /// A collection to restore (repeatable); none means all.
        #[arg(long = "collection")]
        collections: Vec<String>,
        /// Restore collection OLD as NEW (repeatable): `--rename OLD=NEW`.
        #[arg(long)]
        rename: Vec<String>,
        /// Replace collections that exist in the target.
        #[arg(long)]
        overwrite: bool,
    },
}

/// Verifies the configured storage, reading back `read_data` of the pieces; returns the
/// report as JSON and whether nothing is damaged.
pub async fn verify_command(config: Config, read_data: f64) -> Result<(String, bool)> {
    let fraction = crate::service::verify::check_fraction(read_data)?;
    let repo = crate::state::open_repository(&config.storage)?;
    // A command runs once: it reads a random group of pieces each time.
    let round = rand_round();
    let report = repo
        .verify(fraction, round)
        .await
        .map_err(|e| crate::backend::diagnosis::storage_error("verification failed", e))?;
    let text = serde_json::to_string_pretty(&report)
        .map_err(|e| Error::internal("failed to print the report", e))?;
    Ok((text, report.damaged.is_empty()))
}

/// A round number from the clock's nanoseconds: which group of pieces a one-off run reads.
fn rand_round() -> u64 {
    chrono::Utc::now().timestamp_subsec_nanos() as u64
}

/// Runs `cmd` against the configured storage, reporting progress on stderr; returns what
/// the command prints as its result.
pub async fn backup_command(config: Config, cmd: BackupCommand) -> Result<String> {
    let mut out = String::new();
    let repo = Arc::new(crate::state::open_repository(&config.storage)?);
    let backups = Arc::new(Backups::new(repo, config.backup_sources.clone()));
    match cmd {
        BackupCommand::List { source } => {
            for r in backups.list(&source).await? {
                let names: Vec<&str> = r.collections.keys().map(String::as_str).collect();
                out.push_str(&format!(
                    "{}  {}  {} bytes  {} stored  {}\n",
                    r.id,
                    r.finished_at
                        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                    r.size,
                    r.stored_bytes,
                    names.join(",")
                ));
            }
        }
        BackupCommand::Run {
            source,
            collections,
        } => {
            let progress = Progress::default();
            let report = report(&progress, &format!("backup of {source}"), 0);
            let r = backups
                .run(&source, Some(collections), Some(Arc::clone(&progress)))
                .await;
            report.abort();
            out = serde_json::to_string_pretty(&r?).unwrap_or_default();
        }
        BackupCommand::Restore {
            source,
            id,
            to,
            api_key,
            collections,
            rename,
            overwrite,
        } => {
            let req = RestoreRequest {
                to,
                api_key,
                collections,
                rename: renames(rename)?,
                overwrite,
            };
            out = restore(&backups, &source, &id, req).await?;
        }
    }
    Ok(out)
}

/// `--rename OLD=NEW`s as a map.
fn renames(pairs: Vec<String>) -> Result<BTreeMap<String, String>> {
    pairs
        .into_iter()
        .map(|r| match r.split_once('=') {
            Some((old, new)) => Ok((old.to_string(), new.to_string())),
            None => Err(Error::bad_input(format!("--rename `{r}` is not OLD=NEW"))),
        })
        .collect()
}

/// Restores with progress; the verification as JSON, an error when it does not verify.
async fn restore(backups: &Backups, source: &str, id: &str, req: RestoreRequest) -> Result<String> {
    let total = backups.get(source, id).await?.size;
    let progress = Progress::default();
    let report = report(&progress, &format!("restore of {id}"), total);
    let r = backups
        .restore(source, id, req, Some(Arc::clone(&progress)))
        .await;
    report.abort();
    let r = r?;
    let out = serde_json::to_string_pretty(&r).unwrap_or_default();
    if !r.verified {
        return Err(Error::Upstream(format!(
            "the restored collections differ from the backup: {out}"
        )));
    }
    Ok(out)
}

/// Reports `progress` in bytes until aborted: a bar on a terminal, a line every 2 s
/// otherwise.
fn report(progress: &Progress, name: &str, total: u64) -> tokio::task::JoinHandle<()> {
    let (progress, name) = (Arc::clone(progress), name.to_string());
    tokio::spawn(async move {
        let mut r = ProgressReport::new(&name, total, "bytes");
        let mut shown = 0;
        loop {
            tokio::time::sleep(Duration::from_millis(500)).await;
            let done = progress.done();
            r.add(done - shown);
            shown = done;
        }
    })
}

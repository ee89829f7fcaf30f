//! The `snapstream` binary: configuration, start-up recovery, then the HTTP server.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use tracing_subscriber::EnvFilter;

use snapstream::config;

/// A Qdrant-compatible collection and snapshot service.
#[derive(Parser, Debug)]
#[command(version, about, after_help = config_help())]
struct Args {
    /// Extra configuration file, applied over config/config.yaml and under QDRANT__* variables.
    #[arg(long, global = true)]
    config_path: Option<PathBuf>,
    /// Recover a collection snapshot at start-up: `PATH:NAME` (split on the last `:`). Repeatable.
    #[arg(long = "snapshot", alias = "collection-snapshot")]
    snapshot: Vec<String>,
    /// Recover a full-storage snapshot at start-up (takes precedence over --snapshot).
    #[arg(long)]
    storage_snapshot: Option<PathBuf>,
    /// Allow start-up recovery to replace existing collections and aliases.
    #[arg(short = 'f', long)]
    force_snapshot: bool,
    /// Another command instead of serving.
    #[command(subcommand)]
    command: Option<Command>,
}

/// Commands other than serving.
#[derive(clap::Subcommand, Debug)]
enum Command {
    /// Copy collections (configuration, points, payload indexes, aliases) from one server
    /// that speaks Qdrant's REST API to another (Qdrant or snapstream, either way).
    Migrate(MigrateArgs),
    /// Backups of Qdrant deployments, worked on in the storage directly (no server needed):
    /// list, run or restore. Reads the same configuration as the server.
    #[command(subcommand)]
    Backup(snapstream::BackupCommand),
    /// Verify the snapshot storage (no server needed): every snapshot and backup readable,
    /// every piece present, a fraction of the pieces read back and hashed again. Prints the
    /// report; exits with 2 when something is damaged.
    Verify {
        /// The fraction of pieces (and plain snapshots) read back, 0 to 1.
        #[arg(long, default_value_t = 0.1)]
        read_data: f64,
    },
    /// The snapshot storage itself (no server needed): `rotate-key` changes its
    /// encryption key.
    #[command(subcommand)]
    Repository(snapstream::RepositoryCommand),
}

/// `snapstream migrate`.
#[derive(clap::Args, Debug)]
struct MigrateArgs {
    /// Source server, e.g. http://127.0.0.1:6333.
    #[arg(long)]
    from: String,
    /// Destination server.
    #[arg(long)]
    to: String,
    /// A collection to copy (repeatable); none means all.
    #[arg(long = "collection")]
    collections: Vec<String>,
    /// API key of the source.
    #[arg(long)]
    from_api_key: Option<String>,
    /// API key of the destination.
    #[arg(long)]
    to_api_key: Option<String>,
    /// Points per scroll and upsert page.
    #[arg(long, default_value_t = 1000)]
    batch: usize,
    /// Replace a destination collection whose vector parameters differ.
    #[arg(long)]
    overwrite: bool,
    /// The source's gRPC address (e.g. http://127.0.0.1:6334); with --to-grpc, points
    /// travel over gRPC, several times cheaper than REST's JSON.
    #[arg(long)]
    from_grpc: Option<String>,
    /// The destination's gRPC address.
    #[arg(long)]
    to_grpc: Option<String>,
}

/// How configuration works, for `--help`, with the embedded defaults it names.
fn config_help() -> String {
    let d = |key: &str| config::embedded_default(key).unwrap_or_else(|| "?".into());
    format!(
        "\
Configuration, lowest to highest priority: built-in defaults; config/config.yaml in the
working directory; --config-path FILE; environment variables QDRANT__SECTION__KEY (double
underscores nest, e.g. QDRANT__SERVICE__HTTP_PORT=7333,
QDRANT__STORAGE__SNAPSHOTS_CONFIG__SNAPSHOTS_STORAGE=s3). S3 keys also fall back to AWS_*.

Defaults: REST on {host}:{http}, gRPC on {host}:{grpc}, collections in {storage},
snapshots in {snapshots} ({kind}), log_level {level}, no API key.

Every key: config/config.yaml and docs/configuration.md (in the source tree and the README).",
        host = d("service.host"),
        http = d("service.http_port"),
        grpc = d("service.grpc_port"),
        storage = d("storage.storage_path"),
        snapshots = d("storage.snapshots_path"),
        kind = d("storage.snapshots_config.snapshots_storage"),
        level = d("log_level"),
    )
}

fn fail(msg: impl std::fmt::Display) -> ExitCode {
    eprintln!("snapstream: {msg}");
    ExitCode::FAILURE
}

#[tokio::main]
async fn main() -> ExitCode {
    let mut args = Args::parse();
    match args.command.take() {
        Some(Command::Migrate(m)) => {
            return match snapstream::migrate(&m.options()).await {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => fail(format!("migrate: {e}")),
            }
        }
        Some(Command::Backup(b)) => return backup(&args, b).await,
        Some(Command::Verify { read_data }) => return verify(&args, read_data).await,
        Some(Command::Repository(r)) => return repository(&args, r).await,
        None => {}
    }
    match start(&args).await {
        Ok(()) => {
            tracing::info!("stopped cleanly");
            ExitCode::SUCCESS
        }
        Err(msg) => fail(msg),
    }
}

/// A command that works on the configured storage without serving: loads the
/// configuration, logs to stderr, runs `job`, prints what it returns (its result is its
/// output) and exits with the code it chose; a failure is one line prefixed with `name`.
async fn job<F, Fut>(args: &Args, name: &str, job: F) -> ExitCode
where
    F: FnOnce(config::Config) -> Fut,
    Fut: std::future::Future<Output = Result<(String, ExitCode), snapstream::Error>>,
{
    let loaded = match config::load(args.config_path.as_deref()) {
        Ok(l) => l,
        Err(e) => return fail(format!("configuration error: {e}")),
    };
    init_job_logging(&loaded.config);
    match job(loaded.config).await {
        Ok((out, code)) => {
            #[allow(clippy::print_stdout)]
            {
                println!("{}", out.trim_end());
            }
            code
        }
        Err(e) => fail(format!("{name}: {}", e.public_message())),
    }
}

/// `snapstream backup ...`.
async fn backup(args: &Args, b: snapstream::BackupCommand) -> ExitCode {
    job(args, "backup", |config| async move {
        Ok((
            snapstream::backup_command(config, b).await?,
            ExitCode::SUCCESS,
        ))
    })
    .await
}

/// `snapstream repository ...`.
async fn repository(args: &Args, r: snapstream::RepositoryCommand) -> ExitCode {
    job(args, "repository", |config| async move {
        Ok((
            snapstream::repository_command(config, r).await?,
            ExitCode::SUCCESS,
        ))
    })
    .await
}

/// `snapstream verify`: one verification; exit code 2 when something is damaged.
async fn verify(args: &Args, read_data: f64) -> ExitCode {
    job(args, "verify", |config| async move {
        let (out, healthy) = snapstream::verify_command(config, read_data).await?;
        Ok((
            out,
            if healthy {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(2)
            },
        ))
    })
    .await
}

impl MigrateArgs {
    fn options(&self) -> snapstream::MigrateOptions {
        snapstream::MigrateOptions {
            from: self.from.clone(),
            to: self.to.clone(),
            collections: self.collections.clone(),
            from_api_key: self.from_api_key.clone(),
            to_api_key: self.to_api_key.clone(),
            batch: self.batch,
            overwrite: self.overwrite,
            from_grpc: self.from_grpc.clone(),
            to_grpc: self.to_grpc.clone(),
        }
    }
}

/// Logs to stdout at the configured level, as text or JSON. `log_level` is validated by
/// the config; RUST_LOG, for developers, is not, and falls back to it. An empty RUST_LOG
/// counts as unset (it would otherwise parse as "log nothing").
fn init_logging(config: &config::Config) {
    let filter = std::env::var(snapstream::env::RUST_LOG)
        .ok()
        .filter(|v| !v.trim().is_empty())
        .ok_or(())
        .and_then(|v| EnvFilter::try_new(v).map_err(|_| ()))
        .or_else(|_| EnvFilter::try_new(config.log_level.to_lowercase()))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    // Colour only on a terminal: a log file or a collector gets plain text.
    let log = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stdout().is_terminal());
    match config.log_format {
        config::LogFormat::Text => log.init(),
        config::LogFormat::Json => log.json().init(),
    }
}

/// Logs of command-line jobs go to stderr, beside their progress: stdout is their result.
fn init_job_logging(config: &config::Config) {
    let filter = EnvFilter::try_new(config.log_level.to_lowercase())
        .unwrap_or_else(|_| EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
}

/// Loads the configuration, recovers what the command line names, then serves REST and
/// gRPC until a stop signal.
async fn start(args: &Args) -> Result<(), String> {
    let config::Loaded {
        config,
        unknown,
        files,
    } = config::load(args.config_path.as_deref())
        .map_err(|e| format!("configuration error: {e}"))?;
    init_logging(&config);
    for (key, origin) in unknown {
        match config::nearest_known_key(&key) {
            Some(near) => tracing::warn!(
                "unknown configuration key `{key}` ({origin}) ignored; did you mean `{near}`?"
            ),
            None => tracing::warn!("unknown configuration key `{key}` ({origin}) ignored"),
        }
    }
    let addr = format!("{}:{}", config.service.host, config.service.http_port);
    let state = snapstream::build_state(config)
        .await
        .map_err(|e| format!("start-up failed: {}", e.chain()))?;
    let recovery = snapstream::StartupRecovery {
        storage_snapshot: args.storage_snapshot.clone(),
        snapshots: args.snapshot.clone(),
        force: args.force_snapshot,
    };
    snapstream::recover_at_startup(&state, &recovery).await?;
    let listener = tokio::net::TcpListener::bind(&addr)
        .await
        .map_err(|e| format!("cannot listen on {addr}: {e}"))?;
    let grpc_listener = bind_grpc(&state.config.service).await?;
    let grpc_addr = grpc_listener.as_ref().and_then(|l| l.local_addr().ok());
    tracing::info!(
        "{}",
        startup_summary(&state.config, &addr, grpc_addr, &files)
    );
    serve(state, listener, grpc_listener).await
}

/// Serves REST (and gRPC, when it has a listener) until a stop signal; each finishes its
/// in-flight calls.
async fn serve(
    state: snapstream::Services,
    listener: tokio::net::TcpListener,
    grpc_listener: Option<tokio::net::TcpListener>,
) -> Result<(), String> {
    // One signal stops both listeners.
    let stop = tokio_util::sync::CancellationToken::new();
    let grpc = grpc_listener.map(|l| {
        let (services, stop) = (state.clone(), stop.clone());
        tokio::spawn(
            async move { snapstream::serve_grpc(services, l, stop.cancelled_owned()).await },
        )
    });
    let app = snapstream::router(state);
    let rest_stop = stop.clone();
    tokio::spawn(async move {
        shutdown_signal().await;
        rest_stop.cancel();
    });
    let rest = axum::serve(listener, app)
        .with_graceful_shutdown(stop.clone().cancelled_owned())
        .await;
    // REST ending for any reason ends gRPC too.
    stop.cancel();
    rest.map_err(|e| format!("server error: {e}"))?;
    if let Some(task) = grpc {
        match task.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(format!("gRPC server error: {e}")),
            Err(e) => return Err(format!("gRPC server task failed: {e}")),
        }
    }
    Ok(())
}

/// One line that says what this process is: version, where it listens, where it keeps
/// collections and snapshots, and which configuration files it read.
fn startup_summary(
    config: &config::Config,
    rest: &str,
    grpc: Option<std::net::SocketAddr>,
    files: &[PathBuf],
) -> String {
    let grpc = grpc.map_or_else(|| "off".to_string(), |a| a.to_string());
    let storage = &config.storage;
    let sc = &storage.snapshots_config;
    let endpoint = sc
        .s3
        .as_ref()
        .map(|c| &c.endpoint_url)
        .or(sc.azure.as_ref().map(|c| &c.endpoint_url))
        .or(sc.gcs.as_ref().map(|c| &c.endpoint_url))
        .and_then(Option::as_deref);
    let snapshots = match sc.cloud_location() {
        Some((scheme, bucket, prefix)) => format!(
            "{scheme}://{bucket}/{prefix} at {}",
            endpoint.unwrap_or("the cloud's own endpoint")
        ),
        None => format!("local `{}`", storage.snapshots_path.display()),
    };
    let files = if files.is_empty() {
        "none (embedded defaults and QDRANT__* variables)".to_string()
    } else {
        files
            .iter()
            .map(|f| format!("`{}`", f.display()))
            .collect::<Vec<_>>()
            .join(", ")
    };
    format!(
        "snapstream {} ready: REST on {rest}, gRPC on {grpc}; collections in `{}`; snapshots in {snapshots}; config files read: {files}",
        env!("CARGO_PKG_VERSION"),
        storage.storage_path.display(),
    )
}

/// Binds the gRPC port, if enabled. A port taken while it is only the embedded default
/// turns gRPC off with a warning (so several servers with default settings can share a
/// machine); a port set in a file or the environment must bind.
async fn bind_grpc(
    service: &config::ServiceConfig,
) -> Result<Option<tokio::net::TcpListener>, String> {
    let Some(port) = service.grpc_port else {
        tracing::info!("gRPC disabled (service.grpc_port is null)");
        return Ok(None);
    };
    let addr = format!("{}:{port}", service.host);
    match tokio::net::TcpListener::bind(&addr).await {
        Ok(l) => {
            tracing::debug!(%addr, "gRPC listener bound");
            Ok(Some(l))
        }
        Err(e) if !service.grpc_port_explicit => {
            tracing::warn!(%addr, error = %e, "default gRPC port unavailable: serving REST only; set service.grpc_port to choose another");
            Ok(None)
        }
        Err(e) => Err(format!("cannot listen for gRPC on {addr}: {e}")),
    }
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        if let Ok(mut s) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        {
            s.recv().await;
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! { _ = ctrl_c => {}, _ = term => {} }
}

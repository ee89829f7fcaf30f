//! The `snapstream` binary: configuration, start-up recovery, then the HTTP server.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use tracing_subscriber::EnvFilter;

use snapstream::backend::local::file_stream;
use snapstream::config;

/// A Qdrant-compatible collection and snapshot service.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// Extra configuration file, applied over config/config.yaml and under QDRANT__* variables.
    #[arg(long)]
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
}

fn fail(msg: impl std::fmt::Display) -> ExitCode {
    eprintln!("snapstream: {msg}");
    ExitCode::FAILURE
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    let (config, unknown) = match config::load(args.config_path.as_deref()) {
        Ok(c) => c,
        Err(e) => return fail(format!("configuration error: {e}")),
    };
    let filter = EnvFilter::try_from_env(snapstream::env::RUST_LOG)
        .or_else(|_| EnvFilter::try_new(config.log_level.to_lowercase()))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    tracing_subscriber::fmt().with_env_filter(filter).init();
    for (key, origin) in unknown {
        tracing::warn!(%key, %origin, "unknown configuration key ignored");
    }
    let addr = format!("{}:{}", config.service.host, config.service.http_port);
    let state = match snapstream::build_state(config).await {
        Ok(s) => s,
        Err(e) => return fail(format!("start-up failed: {}", e.chain())),
    };
    if let Err(msg) = startup_recovery(&args, &state).await {
        return fail(msg);
    }
    let listener = match tokio::net::TcpListener::bind(&addr).await {
        Ok(l) => l,
        Err(e) => return fail(format!("cannot listen on {addr}: {e}")),
    };
    let grpc_listener = match bind_grpc(&state.config.service).await {
        Ok(l) => l,
        Err(msg) => return fail(msg),
    };
    tracing::info!(%addr, version = env!("CARGO_PKG_VERSION"), "snapstream listening (REST)");
    // One signal stops both listeners; each finishes its in-flight calls.
    let stop = tokio_util::sync::CancellationToken::new();
    let grpc = grpc_listener.map(|l| {
        let (services, stop) = (state.clone(), stop.clone());
        tokio::spawn(
            async move { snapstream::grpc::serve(services, l, stop.cancelled_owned()).await },
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
    if let Err(e) = rest {
        return fail(format!("server error: {e}"));
    }
    if let Some(task) = grpc {
        match task.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return fail(format!("gRPC server error: {e}")),
            Err(e) => return fail(format!("gRPC server task failed: {e}")),
        }
    }
    tracing::info!("stopped cleanly");
    ExitCode::SUCCESS
}

async fn startup_recovery(args: &Args, state: &snapstream::Services) -> Result<(), String> {
    let svc = state.snapshots.engine();
    if let Some(path) = &args.storage_snapshot {
        let file = std::fs::File::open(path)
            .map_err(|e| format!("cannot open storage snapshot `{}`: {e}", path.display()))?;
        let names = svc
            .recover_full_from_stream(file_stream(file, 0..u64::MAX), args.force_snapshot)
            .await
            .map_err(|e| format!("recovering `{}` failed: {}", path.display(), e.chain()))?;
        tracing::info!(collections = ?names, "recovered full-storage snapshot");
        return Ok(());
    }
    for spec in &args.snapshot {
        let (path, name) = spec
            .rsplit_once(':')
            .filter(|(p, n)| !p.is_empty() && !n.is_empty())
            .ok_or_else(|| format!("--snapshot `{spec}` must be PATH:NAME"))?;
        snapstream::registry::validate_name(name)
            .map_err(|e| format!("--snapshot `{spec}`: {e}"))?;
        if state.collections.exists(name) && !args.force_snapshot {
            return Err(format!(
                "Collection {name} already exists. Use --force-snapshot to overwrite it."
            ));
        }
        let file =
            std::fs::File::open(path).map_err(|e| format!("cannot open snapshot `{path}`: {e}"))?;
        svc.recover_from_stream(name, file_stream(file, 0..u64::MAX), None, None)
            .await
            .map_err(|e| format!("recovering `{path}` into `{name}` failed: {}", e.chain()))?;
        tracing::info!(collection = name, path, "recovered collection snapshot");
    }
    Ok(())
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
            tracing::info!(%addr, "snapstream listening (gRPC)");
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

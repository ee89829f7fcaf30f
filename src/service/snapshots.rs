//! Snapshot operations for every transport: the scope rules (aliases, shard 0), running
//! work detached from the caller, background operations, and checksum validation.

use std::future::Future;
use std::ops::Range;
use std::sync::Arc;

use serde_json::Value;

use crate::backend::{ByteStream, ObjectMeta};
use crate::collection::registry::{validate_name, Registry};
use crate::error::{Error, Result};
use crate::io::progress::Progress;
use crate::repository::hashing::is_hex_digest;
use crate::service::operations::{OpStatus, Operations};
use crate::snapshot::{Engine, Scope, SnapshotDescription};
use crate::telemetry;

/// How a snapshot call ended for its caller.
#[derive(Debug)]
pub enum Outcome<T> {
    /// Finished; here is the result.
    Done(T),
    /// Started in the background (`wait=false`); poll this operation id.
    Started(u64),
}

/// A snapshot opened for download.
pub struct Download {
    /// Its metadata (size, modification time).
    pub meta: ObjectMeta,
    /// Its published SHA-256, when there is one.
    pub checksum: Option<String>,
    /// The requested bytes.
    pub stream: ByteStream,
}

/// Where to recover from, as a caller gives it.
#[derive(Clone, Debug)]
pub struct RecoverRequest {
    /// `file://`, `http(s)://`, `s3://` or the bare name of a stored snapshot.
    pub location: String,
    /// The SHA-256 the snapshot must have.
    pub checksum: Option<String>,
    /// A key to send when fetching an `http(s)://` location.
    pub api_key: Option<String>,
}

/// Checks a caller-given SHA-256.
///
/// # Errors
/// `InvalidField` unless it is 64 hexadecimal characters.
pub(crate) fn validate_checksum(checksum: Option<&str>) -> Result<()> {
    match checksum {
        Some(c) if !is_hex_digest(c.trim()) => Err(Error::InvalidField {
            field: "checksum",
            message: "must be a SHA-256 hash of 64 hexadecimal characters".into(),
        }),
        _ => Ok(()),
    }
}

/// This single-node service has one shard per collection: shard 0.
fn check_shard(name: &str, shard: u32) -> Result<()> {
    if shard != 0 {
        return Err(Error::NotFound(format!(
            "Shard {shard} of collection `{name}` does not exist"
        )));
    }
    Ok(())
}

fn to_value<T: serde::Serialize>(v: T) -> Result<Value> {
    serde_json::to_value(v).map_err(|e| Error::internal("failed to serialize result", e))
}

/// What an operation is, for its listing and its metrics.
struct What {
    /// `create`, `recover`, `upload` or `delete`.
    operation: &'static str,
    /// `collection`, `full` or `shard`.
    kind: &'static str,
    collection: Option<String>,
    target: String,
}

impl What {
    fn new(operation: &'static str, scope: &Scope, target: String) -> Self {
        let (kind, collection) = match scope {
            Scope::Collection(c) => ("collection", Some(c.clone())),
            Scope::Shard(c, _) => ("shard", Some(c.clone())),
            Scope::Full => ("full", None),
        };
        What {
            operation,
            kind,
            collection,
            target,
        }
    }
}

/// A registered operation on its way: listed, counted in flight, timed.
struct Tracked {
    id: u64,
    progress: Progress,
    ops: Arc<Operations>,
    operation: &'static str,
    kind: &'static str,
    started: std::time::Instant,
    finished: bool,
}

impl Tracked {
    fn start(ops: &Arc<Operations>, what: &What) -> Self {
        let (id, progress) = ops.start(
            &format!("{}_snapshot", what.operation),
            what.collection.as_deref(),
            &what.target,
        );
        let m = telemetry::get();
        m.in_flight
            .get_or_create(&telemetry::OperationLabels {
                operation: what.operation,
            })
            .inc();
        Tracked {
            id,
            progress,
            ops: Arc::clone(ops),
            operation: what.operation,
            kind: what.kind,
            started: std::time::Instant::now(),
            finished: false,
        }
    }

    fn finish(mut self, outcome: std::result::Result<Value, &Error>) {
        self.end(outcome);
    }

    fn end(&mut self, outcome: std::result::Result<Value, &Error>) {
        self.finished = true;
        let m = telemetry::get();
        m.in_flight
            .get_or_create(&telemetry::OperationLabels {
                operation: self.operation,
            })
            .dec();
        m.snapshot_op(
            self.operation,
            self.kind,
            outcome.is_ok(),
            self.started.elapsed(),
        );
        self.ops.finish(self.id, outcome);
    }
}

impl Drop for Tracked {
    /// An upload whose client went away is dropped mid-way: it failed, and is no longer
    /// in flight.
    fn drop(&mut self) {
        if !self.finished {
            self.end(Err(&Error::BadRequest(
                "interrupted: the request ended before the operation finished".into(),
            )));
        }
    }
}

/// Snapshot operations.
#[derive(Clone, Debug)]
pub struct Snapshots {
    registry: Arc<Registry>,
    engine: Engine,
    /// Background operations (`wait=false`) and waited ones, listed and polled.
    ops: Arc<Operations>,
}

impl Snapshots {
    /// Operations over the snapshot engine.
    pub fn new(registry: Arc<Registry>, engine: Engine) -> Self {
        Snapshots {
            registry,
            engine,
            ops: Arc::new(Operations::default()),
        }
    }

    /// The registry of operations, shared with backups.
    pub(crate) fn registry_of_operations(&self) -> Arc<Operations> {
        Arc::clone(&self.ops)
    }

    /// The snapshot engine (start-up recovery and the storage check use its parts).
    pub(crate) fn engine(&self) -> &Engine {
        &self.engine
    }

    /// The snapshots of an existing collection (an alias resolves to its collection).
    pub fn collection_scope(&self, name: &str) -> Result<Scope> {
        Ok(Scope::Collection(
            self.registry.get(name)?.name().to_string(),
        ))
    }

    /// The snapshots of shard `shard` of an existing collection.
    pub fn shard_scope(&self, name: &str, shard: u32) -> Result<Scope> {
        let col = self.registry.get(name)?;
        check_shard(name, shard)?;
        Ok(Scope::Shard(col.name().to_string(), shard))
    }

    /// The stored snapshots of a collection by name, whether or not it still exists:
    /// snapshots of a deleted collection stay downloadable and deletable, as in Qdrant. The
    /// name is checked as a collection name first, so a bad one never reaches storage; no
    /// snapshot can be under such a name, so it is not found (as traversal attempts are).
    pub fn stored_scope(name: &str, shard: Option<u32>) -> Result<Scope> {
        validate_name(name).map_err(|e| Error::NotFound(format!("No snapshots: {e}")))?;
        Ok(match shard {
            Some(s) => Scope::Shard(name.to_string(), s),
            None => Scope::Collection(name.to_string()),
        })
    }

    /// Runs snapshot work in its own task, so neither a disconnect nor a client deadline
    /// cancels it half-way, registered as an operation (listed, with its progress) and
    /// counted in the metrics. With `wait`, the caller awaits the task; without, it is
    /// polled by its operation id.
    async fn run<T, F, Fut>(&self, wait: bool, what: What, work: F) -> Result<Outcome<T>>
    where
        T: serde::Serialize + Send + 'static,
        F: FnOnce(Engine, Progress) -> Fut,
        Fut: Future<Output = Result<T>> + Send + 'static,
    {
        let tracked = Tracked::start(&self.ops, &what);
        let id = tracked.id;
        let fut = work(self.engine.clone(), Arc::clone(&tracked.progress));
        let task = tokio::spawn(async move {
            let out = fut.await;
            if let (Err(e), false) = (&out, wait) {
                // Qdrant only logs these; we log and keep them for polling.
                tracing::error!(operation = id, error = %e.chain(), "background operation failed");
            }
            tracked.finish(out.as_ref().map(|v| to_value(v).unwrap_or(Value::Null)));
            out
        });
        if !wait {
            return Ok(Outcome::Started(id));
        }
        let value = task
            .await
            .map_err(|e| Error::internal("snapshot task failed", e))??;
        Ok(Outcome::Done(value))
    }

    /// Creates a snapshot of `scope`.
    pub async fn create(&self, scope: Scope, wait: bool) -> Result<Outcome<SnapshotDescription>> {
        let target = format!("{scope:?}");
        let what = What::new("create", &scope, target);
        self.run(wait, what, move |engine, progress| async move {
            engine.creator.create(&scope, Some(progress)).await
        })
        .await
    }

    /// Snapshots of `scope`, newest first.
    pub async fn list(&self, scope: &Scope) -> Result<Vec<SnapshotDescription>> {
        self.engine.catalog.list(scope).await
    }

    /// Deletes snapshot `name` of `scope`; a missing one is `NotFound` even without `wait`.
    pub async fn delete(&self, scope: Scope, name: String, wait: bool) -> Result<Outcome<bool>> {
        let size = self.engine.catalog.stat(&scope, &name).await?.size;
        let what = What::new("delete", &scope, format!("{scope:?}/{name}"));
        self.run(wait, what, move |engine, _| async move {
            let started = std::time::Instant::now();
            engine.catalog.delete(&scope, &name).await?;
            tracing::info!(
                snapshot = %name,
                scope = ?scope,
                bytes = size,
                seconds = started.elapsed().as_secs_f64(),
                "snapshot deleted"
            );
            Ok(true)
        })
        .await
    }

    /// The size of snapshot `name` of `scope`, for answering ranges before opening it.
    pub async fn stat(&self, scope: &Scope, name: &str) -> Result<ObjectMeta> {
        self.engine.catalog.stat(scope, name).await
    }

    /// Opens a snapshot for download; `range` is clamped to its size.
    pub async fn download(&self, meta: ObjectMeta, range: Option<Range<u64>>) -> Result<Download> {
        let (checksum, stream) = self.engine.catalog.download(&meta, range).await?;
        Ok(Download {
            meta,
            checksum,
            stream,
        })
    }

    /// Recovers collection `target` (a shard recovery names its shard) from a location.
    pub async fn recover(
        &self,
        target: String,
        shard: Option<u32>,
        req: RecoverRequest,
        wait: bool,
    ) -> Result<Outcome<bool>> {
        validate_checksum(req.checksum.as_deref())?;
        validate_name(&target)?;
        if let Some(s) = shard {
            check_shard(&target, s)?;
        }
        let scope = Self::stored_scope(&target, shard)?;
        let dir = scope
            .dir()?
            .ok_or_else(|| Error::bad_input("no snapshot directory"))?;
        let what = What::new("recover", &scope, format!("{target} from {}", req.location));
        self.run(wait, what, move |engine, progress| async move {
            let source = engine
                .sources
                .open(&req.location, &dir, req.api_key.as_deref())
                .await?;
            if let Some(n) = source.size {
                progress.set_total(n);
            }
            let expected = req.checksum.or(source.published_sha256);
            engine
                .recoverer
                .recover_from_stream(&target, source.stream, expected, Some(progress))
                .await?;
            Ok(true)
        })
        .await
    }

    /// Checks an upload's target before its body is read.
    pub fn check_upload(
        &self,
        target: &str,
        shard: Option<u32>,
        checksum: Option<&str>,
    ) -> Result<()> {
        validate_checksum(checksum)?;
        validate_name(target)?;
        if let Some(s) = shard {
            check_shard(target, s)?;
        }
        Ok(())
    }

    /// Recovers collection `target` from an uploaded archive, streamed through the
    /// unpacker: nothing is spooled. `size` (the request's length, when sent) feeds the
    /// operation's progress.
    pub async fn recover_upload<S>(
        &self,
        target: &str,
        shard: Option<u32>,
        stream: S,
        checksum: Option<String>,
        size: Option<u64>,
    ) -> Result<()>
    where
        S: futures::Stream<Item = std::io::Result<bytes::Bytes>> + Unpin + Send,
    {
        let scope = Self::stored_scope(target, shard)?;
        let tracked = Tracked::start(
            &self.ops,
            &What::new("upload", &scope, format!("{target} from an upload")),
        );
        if let Some(n) = size {
            tracked.progress.set_total(n);
        }
        let progress = Some(Arc::clone(&tracked.progress));
        let out = self
            .engine
            .recoverer
            .recover_from_stream(target, stream, checksum, progress)
            .await;
        tracked.finish(out.as_ref().map(|()| Value::Bool(true)));
        out
    }

    /// A snapshot of shard `shard` built on the fly and streamed; returns its file name
    /// and bytes.
    pub async fn stream_shard(&self, name: &str, shard: u32) -> Result<(String, ByteStream)> {
        let Scope::Shard(collection, shard) = self.shard_scope(name, shard)? else {
            return Err(Error::internal("shard scope", "not a shard scope"));
        };
        self.engine.creator.stream(&collection, shard).await
    }

    /// Background operations, newest last.
    pub fn operations(&self) -> Vec<OpStatus> {
        self.ops.list()
    }

    /// One background operation.
    pub fn operation(&self, id: u64) -> Result<OpStatus> {
        self.ops
            .get(id)
            .ok_or_else(|| Error::NotFound(format!("Operation {id} not found")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checksums_and_shards_are_checked() {
        assert!(validate_checksum(None).is_ok());
        assert!(validate_checksum(Some(&"a".repeat(64))).is_ok());
        assert!(matches!(
            validate_checksum(Some("abc")),
            Err(Error::InvalidField {
                field: "checksum",
                ..
            })
        ));
        assert!(check_shard("c", 0).is_ok());
        assert!(matches!(check_shard("c", 1), Err(Error::NotFound(_))));
    }
}

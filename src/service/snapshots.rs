//! Snapshot operations for every transport: the scope rules (aliases, shard 0), running
//! work detached from the caller, background operations, and checksum validation.

use std::future::Future;
use std::ops::Range;
use std::sync::Arc;

use serde_json::Value;

use crate::backend::{ByteStream, ObjectMeta};
use crate::error::{Error, Result};
use crate::registry::{validate_name, Registry};
use crate::snapshot::format::is_sha256_hex;
use crate::snapshot::hashing::Progress;
use crate::snapshot::ops::OpStatus;
use crate::snapshot::{Scope, SnapshotDescription, SnapshotService};

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
pub fn validate_checksum(checksum: Option<&str>) -> Result<()> {
    match checksum {
        Some(c) if !is_sha256_hex(c.trim()) => Err(Error::InvalidField {
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

/// Snapshot operations.
#[derive(Clone, Debug)]
pub struct Snapshots {
    registry: Arc<Registry>,
    engine: Arc<SnapshotService>,
}

impl Snapshots {
    /// Operations over the snapshot engine.
    pub fn new(registry: Arc<Registry>, engine: Arc<SnapshotService>) -> Self {
        Snapshots { registry, engine }
    }

    /// The engine (start-up recovery and storage checks use it directly).
    pub fn engine(&self) -> &Arc<SnapshotService> {
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
    /// cancels it half-way. With `wait`, the caller awaits the task; without, it becomes
    /// a background operation.
    async fn run<T, F, Fut>(
        &self,
        wait: bool,
        kind: &str,
        target: &str,
        work: F,
    ) -> Result<Outcome<T>>
    where
        T: serde::Serialize + Send + 'static,
        F: FnOnce(Arc<SnapshotService>, Progress) -> Fut,
        Fut: Future<Output = Result<T>> + Send + 'static,
    {
        let engine = Arc::clone(&self.engine);
        if wait {
            let fut = work(engine, Progress::default());
            let value = tokio::spawn(fut)
                .await
                .map_err(|e| Error::internal("snapshot task failed", e))??;
            return Ok(Outcome::Done(value));
        }
        let id = self.engine.ops.spawn(kind, target, |progress| {
            let fut = work(engine, progress);
            async move { to_value(fut.await?) }
        });
        Ok(Outcome::Started(id))
    }

    /// Creates a snapshot of `scope`.
    pub async fn create(&self, scope: Scope, wait: bool) -> Result<Outcome<SnapshotDescription>> {
        let target = format!("{scope:?}");
        self.run(
            wait,
            "create_snapshot",
            &target,
            move |svc, progress| async move { svc.create(&scope, Some(progress)).await },
        )
        .await
    }

    /// Snapshots of `scope`, newest first.
    pub async fn list(&self, scope: &Scope) -> Result<Vec<SnapshotDescription>> {
        self.engine.list(scope).await
    }

    /// Deletes snapshot `name` of `scope`; a missing one is `NotFound` even without `wait`.
    pub async fn delete(&self, scope: Scope, name: String, wait: bool) -> Result<Outcome<bool>> {
        let size = self.engine.stat(&scope, &name).await?.size;
        let target = format!("{scope:?}/{name}");
        self.run(wait, "delete_snapshot", &target, move |svc, _| async move {
            let started = std::time::Instant::now();
            svc.delete(&scope, &name).await?;
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
        self.engine.stat(scope, name).await
    }

    /// Opens a snapshot for download; `range` is clamped to its size.
    pub async fn download(&self, meta: ObjectMeta, range: Option<Range<u64>>) -> Result<Download> {
        let (checksum, stream) = self.engine.download(&meta, range).await?;
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
        let dir = Self::stored_scope(&target, shard)?
            .dir()?
            .ok_or_else(|| Error::bad_input("no snapshot directory"))?;
        let what = format!("{target} from {}", req.location);
        self.run(
            wait,
            "recover_snapshot",
            &what,
            move |svc, progress| async move {
                svc.recover(
                    &target,
                    &dir,
                    &req.location,
                    req.checksum,
                    req.api_key.as_deref(),
                    Some(progress),
                )
                .await?;
                Ok(true)
            },
        )
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
    /// unpacker: nothing is spooled.
    pub async fn recover_upload<S>(
        &self,
        target: &str,
        stream: S,
        checksum: Option<String>,
    ) -> Result<()>
    where
        S: futures::Stream<Item = std::io::Result<bytes::Bytes>> + Unpin + Send,
    {
        self.engine
            .recover_from_stream(target, stream, checksum, None)
            .await
    }

    /// A snapshot of shard `shard` built on the fly and streamed; returns its file name
    /// and bytes.
    pub async fn stream_shard(&self, name: &str, shard: u32) -> Result<(String, ByteStream)> {
        let Scope::Shard(collection, shard) = self.shard_scope(name, shard)? else {
            return Err(Error::internal("shard scope", "not a shard scope"));
        };
        self.engine.stream(&collection, shard).await
    }

    /// Background operations, newest last.
    pub fn operations(&self) -> Vec<OpStatus> {
        self.engine.ops.list()
    }

    /// One background operation.
    pub fn operation(&self, id: u64) -> Result<OpStatus> {
        self.engine
            .ops
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

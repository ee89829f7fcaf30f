//! Snapshot operations (create, recover, upload, delete), waited for or not: an id, a
//! state, bytes done (and the expected total when known), listed at `GET /operations` and
//! pollable at `GET /operations/{id}`. Qdrant has no such endpoint; its `wait=false` is
//! fire-and-forget.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use parking_lot::Mutex;
use serde::Serialize;
use serde_json::Value;

use crate::error::Error;
use crate::io::progress::Progress;

/// Runs `work` (given the operation's progress) in its own task, registered in `ops` as an
/// operation of `kind` on `target`, so neither a disconnect nor a client deadline cancels
/// it: waited for with `wait`, else its id is returned to be polled. A failure nobody waits
/// for is logged.
pub(crate) async fn in_task<T, Fut>(
    ops: &Arc<Operations>,
    (kind, target): (&'static str, String),
    wait: bool,
    work: impl FnOnce(Progress) -> Fut,
) -> crate::error::Result<super::snapshots::Outcome<T>>
where
    T: Serialize + Send + 'static,
    Fut: std::future::Future<Output = crate::error::Result<T>> + Send + 'static,
{
    use super::snapshots::Outcome;
    let (id, progress) = ops.start(kind, None, &target);
    let fut = work(progress);
    let ops = Arc::clone(ops);
    let task = tokio::spawn(async move {
        let out = fut.await;
        if let (Err(e), false) = (&out, wait) {
            tracing::error!(operation = id, kind, target = %target, error = %e.chain(), "background operation failed");
        }
        ops.finish(
            id,
            out.as_ref()
                .map(|r| serde_json::to_value(r).unwrap_or(Value::Null)),
        );
        out
    });
    if !wait {
        return Ok(Outcome::Started(id));
    }
    let done = task
        .await
        .map_err(|e| Error::internal(format!("{kind} task failed"), e))??;
    Ok(Outcome::Done(done))
}

/// Finished operations kept for polling; older ones are forgotten first.
const KEEP_FINISHED: usize = 1000;

/// State of an operation.
#[derive(Clone, Debug, Serialize, PartialEq)]
#[serde(rename_all = "snake_case")]
pub enum OpState {
    /// Still running.
    Running,
    /// Finished successfully.
    Completed,
    /// Failed; see `error`.
    Failed,
}

/// What `GET /operations/{id}` returns.
#[derive(Clone, Debug, Serialize)]
pub struct OpStatus {
    /// The id.
    pub id: u64,
    /// What it does: `create_snapshot`, `recover_snapshot`, `upload_snapshot` or
    /// `delete_snapshot`.
    pub kind: String,
    /// The collection it acts on (none for full snapshots).
    pub collection: Option<String>,
    /// What it acts on, in words.
    pub target: String,
    /// State.
    pub state: OpState,
    /// Bytes of snapshot data moved so far.
    pub bytes_done: u64,
    /// Bytes expected in all, when known (an estimate for creates: compression moves fewer).
    pub bytes_total: Option<u64>,
    /// Average bytes per second since it started.
    pub rate: f64,
    /// When it started (RFC 3339).
    pub started_at: String,
    /// When it finished (RFC 3339).
    pub finished_at: Option<String>,
    /// The error, when failed.
    pub error: Option<String>,
    /// The result, when completed.
    pub result: Option<Value>,
}

struct Op {
    status: OpStatus,
    progress: Progress,
    started: Instant,
    seconds: Option<f64>,
}

/// The registry of snapshot operations.
#[derive(Default)]
pub(crate) struct Operations {
    next: AtomicU64,
    ops: Mutex<BTreeMap<u64, Op>>,
}

impl std::fmt::Debug for Operations {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Operations")
            .field("count", &self.ops.lock().len())
            .finish()
    }
}

fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

impl Operations {
    /// Registers a running operation; returns its id and the progress its work advances.
    pub(crate) fn start(
        &self,
        kind: &str,
        collection: Option<&str>,
        target: &str,
    ) -> (u64, Progress) {
        let id = self.next.fetch_add(1, Ordering::Relaxed) + 1;
        let progress = Progress::default();
        let status = OpStatus {
            id,
            kind: kind.to_string(),
            collection: collection.map(str::to_string),
            target: target.to_string(),
            state: OpState::Running,
            bytes_done: 0,
            bytes_total: None,
            rate: 0.0,
            started_at: now(),
            finished_at: None,
            error: None,
            result: None,
        };
        self.ops.lock().insert(
            id,
            Op {
                status,
                progress: Arc::clone(&progress),
                started: Instant::now(),
                seconds: None,
            },
        );
        (id, progress)
    }

    /// Records how operation `id` ended, and forgets the oldest finished ones beyond
    /// [`KEEP_FINISHED`].
    pub(crate) fn finish(&self, id: u64, outcome: std::result::Result<Value, &Error>) {
        let mut ops = self.ops.lock();
        if let Some(op) = ops.get_mut(&id) {
            match outcome {
                Ok(v) => {
                    op.status.state = OpState::Completed;
                    op.status.result = Some(v);
                }
                Err(e) => {
                    op.status.state = OpState::Failed;
                    op.status.error = Some(e.public_message());
                }
            }
            op.status.finished_at = Some(now());
            op.seconds = Some(op.started.elapsed().as_secs_f64());
        }
        let finished: Vec<u64> = ops
            .iter()
            .filter(|(_, o)| o.status.state != OpState::Running)
            .map(|(k, _)| *k)
            .collect();
        for k in finished
            .iter()
            .take(finished.len().saturating_sub(KEEP_FINISHED))
        {
            ops.remove(k);
        }
    }

    /// The status of one operation.
    pub(crate) fn get(&self, id: u64) -> Option<OpStatus> {
        self.ops.lock().get(&id).map(|op| {
            let mut s = op.status.clone();
            s.bytes_done = op.progress.done();
            s.bytes_total = op.progress.total();
            let seconds = op
                .seconds
                .unwrap_or_else(|| op.started.elapsed().as_secs_f64());
            if seconds > 0.0 {
                s.rate = (s.bytes_done as f64 / seconds).round();
            }
            s
        })
    }

    /// Every kept operation, oldest first.
    pub(crate) fn list(&self) -> Vec<OpStatus> {
        let ids: Vec<u64> = self.ops.lock().keys().copied().collect();
        ids.into_iter().filter_map(|id| self.get(id)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn operations_report_progress_completion_and_failure() {
        let ops = Operations::default();
        let (ok, p) = ops.start("create_snapshot", Some("a"), "a");
        p.add(5);
        p.set_total(10);
        let running = ops.get(ok).unwrap();
        assert_eq!(running.state, OpState::Running);
        assert_eq!((running.bytes_done, running.bytes_total), (5, Some(10)));
        ops.finish(ok, Ok(Value::Bool(true)));
        let (bad, _) = ops.start("recover_snapshot", None, "b");
        ops.finish(bad, Err(&Error::bad_input("nope")));
        let ok = ops.get(ok).unwrap();
        assert_eq!((ok.state, ok.bytes_done), (OpState::Completed, 5));
        assert!(ok.finished_at.is_some());
        assert_eq!(ok.collection.as_deref(), Some("a"));
        let bad = ops.get(bad).unwrap();
        assert_eq!(bad.state, OpState::Failed);
        assert!(bad.error.unwrap().contains("nope"));
        assert_eq!(ops.list().len(), 2);
    }

    #[test]
    fn history_is_bounded() {
        let ops = Operations::default();
        for _ in 0..KEEP_FINISHED + 5 {
            let (id, _) = ops.start("delete_snapshot", None, "x");
            ops.finish(id, Ok(Value::Null));
        }
        let (running, _) = ops.start("create_snapshot", None, "y");
        let list = ops.list();
        assert_eq!(list.len(), KEEP_FINISHED + 1);
        assert_eq!(list.last().map(|s| s.id), Some(running));
    }
}

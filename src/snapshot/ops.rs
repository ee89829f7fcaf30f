//! Background operations (`wait=false`): an id, a state, bytes done and the error, pollable
//! at `GET /operations/{id}`. Qdrant has no such endpoint; its `wait=false` is fire-and-forget.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;
use serde::Serialize;
use serde_json::Value;

use super::hashing::Progress;
use crate::error::Result;

/// Finished operations kept for polling.
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
    /// What it does, e.g. `create_snapshot`.
    pub kind: String,
    /// What it acts on.
    pub target: String,
    /// State.
    pub state: OpState,
    /// Bytes of snapshot data moved so far.
    pub bytes_done: u64,
    /// When it started (RFC 3339).
    pub started_at: String,
    /// The error, when failed.
    pub error: Option<String>,
    /// The result, when completed.
    pub result: Option<Value>,
}

struct Op {
    status: OpStatus,
    progress: Progress,
}

/// The registry of background operations.
#[derive(Default)]
pub struct Operations {
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

impl Operations {
    /// Registers an operation and runs `work(progress)` in the background; returns its id.
    pub fn spawn<F, Fut>(self: &Arc<Self>, kind: &str, target: &str, work: F) -> u64
    where
        F: FnOnce(Progress) -> Fut,
        Fut: Future<Output = Result<Value>> + Send + 'static,
    {
        let id = self.next.fetch_add(1, Ordering::Relaxed) + 1;
        let progress = Progress::default();
        let status = OpStatus {
            id,
            kind: kind.to_string(),
            target: target.to_string(),
            state: OpState::Running,
            bytes_done: 0,
            started_at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            error: None,
            result: None,
        };
        self.ops.lock().insert(
            id,
            Op {
                status,
                progress: Arc::clone(&progress),
            },
        );
        let fut = work(progress);
        let this = Arc::clone(self);
        tokio::spawn(async move {
            let outcome = fut.await;
            let mut ops = this.ops.lock();
            if let Some(op) = ops.get_mut(&id) {
                match outcome {
                    Ok(v) => {
                        op.status.state = OpState::Completed;
                        op.status.result = Some(v);
                    }
                    Err(e) => {
                        // Qdrant only logs these; we log and keep them for polling.
                        tracing::error!(operation = id, kind = %op.status.kind, error = %e.chain(), "background operation failed");
                        op.status.state = OpState::Failed;
                        op.status.error = Some(e.public_message());
                    }
                }
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
        });
        id
    }

    /// The status of one operation.
    pub fn get(&self, id: u64) -> Option<OpStatus> {
        self.ops.lock().get(&id).map(|op| {
            let mut s = op.status.clone();
            s.bytes_done = op.progress.load(Ordering::Relaxed);
            s
        })
    }

    /// Every kept operation, oldest first.
    pub fn list(&self) -> Vec<OpStatus> {
        let ids: Vec<u64> = self.ops.lock().keys().copied().collect();
        ids.into_iter().filter_map(|id| self.get(id)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn operations_report_completion_and_failure() {
        let ops = Arc::new(Operations::default());
        let ok = ops.spawn("test", "a", |p| async move {
            p.fetch_add(5, Ordering::Relaxed);
            Ok(Value::Bool(true))
        });
        let bad = ops.spawn("test", "b", |_| async {
            Err(crate::error::Error::bad_input("nope"))
        });
        for _ in 0..100 {
            if ops.list().iter().all(|s| s.state != OpState::Running) {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        let ok = ops.get(ok).unwrap();
        assert_eq!((ok.state, ok.bytes_done), (OpState::Completed, 5));
        let bad = ops.get(bad).unwrap();
        assert_eq!(bad.state, OpState::Failed);
        assert!(bad.error.unwrap().contains("nope"));
    }
}

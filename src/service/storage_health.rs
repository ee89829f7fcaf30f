//! Whether the snapshot storage answers, for `/readyz` and the start-up log.
//!
//! A misconfigured bucket must not stop the service: collections keep serving and each
//! snapshot call reports the storage's failure. Readiness shows the same one line, probed at
//! most every [`PROBE_EVERY`] so frequent health checks do not turn into storage traffic.

use std::time::{Duration, Instant};

use tokio::sync::Mutex;

use crate::backend::{diagnosis, BackendError, DynBackend};

/// How long a probe's answer is reused.
pub(crate) const PROBE_EVERY: Duration = Duration::from_secs(30);
/// How long a probe may take before the storage counts as not answering.
pub(crate) const PROBE_TIMEOUT: Duration = Duration::from_secs(5);

/// The last probe of the snapshot storage.
#[derive(Debug)]
pub struct StorageHealth {
    backend: DynBackend,
    last: Mutex<Option<(Instant, Option<String>)>>,
}

impl StorageHealth {
    /// Probes `backend` on demand.
    pub fn new(backend: DynBackend) -> Self {
        StorageHealth {
            backend,
            last: Mutex::new(None),
        }
    }

    /// Records what the start-up check found (`None`: the storage answered).
    pub async fn record(&self, problem: Option<String>) {
        *self.last.lock().await = Some((Instant::now(), problem));
    }

    /// What is wrong with the storage, in one line, or `None` when it answers. Concurrent
    /// callers share one probe.
    pub async fn problem(&self) -> Option<String> {
        let mut last = self.last.lock().await;
        if let Some((at, problem)) = last.as_ref() {
            if at.elapsed() < PROBE_EVERY {
                return problem.clone();
            }
        }
        let problem = match tokio::time::timeout(PROBE_TIMEOUT, self.backend.list(None)).await {
            Ok(Ok(_)) => None,
            Ok(Err(e)) => Some(describe(&e)),
            Err(_) => Some(format!(
                "{}: no answer within {} s",
                self.backend,
                PROBE_TIMEOUT.as_secs()
            )),
        };
        *last = Some((Instant::now(), problem.clone()));
        problem
    }
}

fn describe(e: &BackendError) -> String {
    diagnosis::summary(e).unwrap_or_else(|| "the storage's root cannot be listed".into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[tokio::test]
    async fn a_recorded_problem_is_reused_and_a_healthy_directory_has_none() {
        let dir = tempfile::tempdir().unwrap();
        let backend: DynBackend =
            Arc::new(crate::backend::local::LocalBackend::new(dir.path()).unwrap());
        let h = StorageHealth::new(backend);
        assert_eq!(h.problem().await, None);
        h.record(Some("S3 storage s3://b: access denied".into()))
            .await;
        assert_eq!(
            h.problem().await.as_deref(),
            Some("S3 storage s3://b: access denied")
        );
    }
}

//! Leases that keep the collector and snapshot creation apart, across processes and nodes
//! sharing one bucket and prefix, with nothing but plain writes and a listing.
//!
//! Each side first writes its own lease object (`.repository/leases/{role}-{uuid}`), then
//! lists the others': a create proceeds only when no fresh collector lease exists, and the
//! collector only when no fresh create lease exists. Because each writes before it looks
//! (and the storage lists what was written, as S3 and local files do), two that start
//! together cannot both miss each other: at worst both back off. The collector therefore
//! never sweeps while a create may be relying on a piece it saw stored.
//!
//! A lease is refreshed (rewritten) every quarter of its time to live while held; one not
//! rewritten for a whole time to live (its process died) is stale and ignored, then removed
//! by the collector. A holder that could not refresh for half the time to live stops
//! before committing anything (see [`Lease::check`]). Ages are compared on the storage's
//! own clock: the listed time of one's own fresh lease is "now".

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use chrono::{DateTime, Utc};
use parking_lot::Mutex;

use crate::backend::{BackendError, BackendExt, DynBackend, ObjectKey, ObjectMeta};

/// The directory of leases.
pub(crate) const LEASES_DIR: &str = ".repository/leases";

/// What a lease is held for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Role {
    /// A snapshot being created (many may run at once).
    Create,
    /// The collector (it runs only when no create does).
    Collect,
}

impl Role {
    fn prefix(self) -> &'static str {
        match self {
            Role::Create => "create-",
            Role::Collect => "collect-",
        }
    }

    fn of(name: &str) -> Option<Role> {
        [Role::Create, Role::Collect]
            .into_iter()
            .find(|r| name.starts_with(r.prefix()))
    }
}

/// Takes and checks leases in one storage.
#[derive(Clone, Debug)]
pub(crate) struct Leases {
    backend: DynBackend,
    ttl: Duration,
}

/// A held lease; release it with [`Lease::release`].
#[derive(Debug)]
pub(crate) struct Lease {
    key: ObjectKey,
    backend: DynBackend,
    ttl: Duration,
    refreshed: Arc<Mutex<Instant>>,
    refresher: tokio::task::JoinHandle<()>,
}

/// The collector holds the repository for longer than a create is willing to wait.
#[derive(Debug, thiserror::Error)]
#[error("the snapshot repository stayed busy collecting garbage for {0:?}")]
pub(crate) struct Busy(pub Duration);

impl Lease {
    /// Fails when the lease could not be refreshed for half its time to live: others may
    /// soon treat it as stale, so the holder must not commit.
    pub(crate) fn check(&self) -> Result<(), BackendError> {
        let age = self.refreshed.lock().elapsed();
        if age > self.ttl / 2 {
            return Err(BackendError::Io {
                action: "lost the lease",
                path: self.key.to_string(),
                source: std::io::Error::other(format!("not refreshed for {age:?}")),
            });
        }
        Ok(())
    }

    /// Stops refreshing and removes the lease.
    pub(crate) async fn release(self) {
        self.refresher.abort();
        match self.backend.delete(&self.key).await {
            Ok(()) | Err(BackendError::NotFound(_)) => {}
            Err(e) => {
                tracing::warn!(lease = %self.key, error = %e, "failed to release a lease; it expires by itself")
            }
        }
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.refresher.abort();
    }
}

fn dir() -> ObjectKey {
    ObjectKey::new(LEASES_DIR).expect("a constant, valid key")
}

impl Leases {
    /// Leases in `backend` that expire `ttl` after their last refresh.
    pub(crate) fn new(backend: DynBackend, ttl: Duration) -> Self {
        Leases { backend, ttl }
    }

    /// Writes a new lease of `role`; returns its key and its time on the storage's clock.
    async fn write(&self, role: Role) -> Result<(ObjectKey, DateTime<Utc>), BackendError> {
        let key = dir().join(&format!(
            "{}{}",
            role.prefix(),
            uuid::Uuid::new_v4().simple()
        ))?;
        self.backend.put(&key, Bytes::from_static(b"lease")).await?;
        let at = self.backend.stat(&key).await?.last_modified;
        Ok((key, at))
    }

    /// The other leases, each with whether it is fresh as of `now`.
    async fn others(
        &self,
        own: &ObjectKey,
        now: DateTime<Utc>,
    ) -> Result<Vec<(Role, bool, ObjectMeta)>, BackendError> {
        let ttl = chrono::Duration::from_std(self.ttl).unwrap_or(chrono::Duration::MAX);
        Ok(self
            .backend
            .list(Some(&dir()))
            .await?
            .into_iter()
            .filter(|m| &m.key != own)
            .filter_map(|m| {
                let role = Role::of(m.key.file_name())?;
                Some((role, m.last_modified + ttl >= now, m))
            })
            .collect())
    }

    fn hold(&self, key: ObjectKey) -> Lease {
        let refreshed = Arc::new(Mutex::new(Instant::now()));
        let (backend, k, r, every) = (
            Arc::clone(&self.backend),
            key.clone(),
            Arc::clone(&refreshed),
            self.ttl / 4,
        );
        let refresher = tokio::spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                let started = Instant::now();
                match backend.put(&k, Bytes::from_static(b"lease")).await {
                    Ok(_) => *r.lock() = started,
                    Err(e) => tracing::warn!(lease = %k, error = %e, "failed to refresh a lease"),
                }
            }
        });
        Lease {
            key,
            backend: Arc::clone(&self.backend),
            ttl: self.ttl,
            refreshed,
            refresher,
        }
    }

    async fn remove(&self, key: &ObjectKey) {
        if let Err(e) = self.backend.delete(key).await {
            if !matches!(e, BackendError::NotFound(_)) {
                tracing::warn!(lease = %key, error = %e, "failed to remove a lease");
            }
        }
    }

    /// A lease for creating a snapshot, waiting (up to three times the time to live) while
    /// the collector runs.
    pub(crate) async fn acquire_create(&self) -> Result<Lease, BackendError> {
        let started = Instant::now();
        loop {
            let (key, now) = self.write(Role::Create).await?;
            let collecting = self
                .others(&key, now)
                .await?
                .iter()
                .any(|(role, fresh, _)| *role == Role::Collect && *fresh);
            if !collecting {
                return Ok(self.hold(key));
            }
            self.remove(&key).await;
            if started.elapsed() > 3 * self.ttl {
                return Err(BackendError::Io {
                    action: "gave up waiting for",
                    path: LEASES_DIR.into(),
                    source: std::io::Error::other(Busy(started.elapsed())),
                });
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// A lease for collecting, or `None` when a create holds a fresh lease. Stale leases
    /// of dead processes are removed on the way.
    pub(crate) async fn try_collect(&self) -> Result<Option<Lease>, BackendError> {
        let (key, now) = self.write(Role::Collect).await?;
        let others = match self.others(&key, now).await {
            Ok(o) => o,
            Err(e) => {
                self.remove(&key).await;
                return Err(e);
            }
        };
        if others
            .iter()
            .any(|(role, fresh, _)| *role == Role::Create && *fresh)
        {
            self.remove(&key).await;
            return Ok(None);
        }
        for (_, fresh, m) in &others {
            if !fresh {
                self.remove(&m.key).await;
            }
        }
        Ok(Some(self.hold(key)))
    }
}

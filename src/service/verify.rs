//! Verification of the snapshot storage as an operation: run now (waited for, or polled at
//! `GET /operations/{id}`), or on a schedule (`storage.snapshots_config.verify`). Each run
//! reads the next group of pieces, so that `1 / read_data` runs read everything; what it
//! finds goes to the log and to `/metrics`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use super::operations::Operations;
use super::snapshots::Outcome;
use crate::error::{Error, Result};
use crate::repository::verify::VerifyReport;
use crate::repository::Repository;
use crate::telemetry;

/// Verifications of one repository.
#[derive(Clone, Debug)]
pub struct VerifyService {
    repo: Arc<Repository>,
    ops: Arc<Operations>,
    /// Rounds run by this process (which group of pieces the next one reads).
    rounds: Arc<AtomicU64>,
}

/// Checks a fraction of the pieces to read: a number in `0..=1`.
pub(crate) fn check_fraction(f: f64) -> Result<f64> {
    if (0.0..=1.0).contains(&f) {
        Ok(f)
    } else {
        Err(Error::BadRequest(format!(
            "read_data must be between 0 and 1 (the fraction of pieces read back), got {f}"
        )))
    }
}

impl VerifyService {
    /// Verifications of `repo`, registered in `ops` like snapshot operations.
    pub(crate) fn new(repo: Arc<Repository>, ops: Arc<Operations>) -> Self {
        // Rounds continue from the clock, so a restarted process goes on rotating.
        let start = chrono::Utc::now().timestamp().max(0) as u64 / 60;
        VerifyService {
            repo,
            ops,
            rounds: Arc::new(AtomicU64::new(start)),
        }
    }

    /// Verifies the storage, reading back `fraction` of the pieces.
    pub async fn run(&self, fraction: f64, wait: bool) -> Result<Outcome<VerifyReport>> {
        let fraction = check_fraction(fraction)?;
        let this = self.clone();
        super::operations::in_task(
            &self.ops,
            ("verify", "repository".into()),
            wait,
            |_| async move { this.once(fraction).await },
        )
        .await
    }

    /// One verification round: the report, logged and counted.
    pub async fn once(&self, fraction: f64) -> Result<VerifyReport> {
        let round = self.rounds.fetch_add(1, Ordering::Relaxed);
        let report = self
            .repo
            .verify(fraction, round)
            .await
            .map_err(|e| crate::backend::diagnosis::storage_error("verification failed", e))?;
        observe(&report);
        Ok(report)
    }

    /// Verifies every `every`, reading `fraction` each time, until the process ends. A
    /// failed run is logged and the next one runs on time.
    pub(crate) fn spawn_schedule(&self, every: Duration, fraction: f64) {
        let this = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                if let Err(e) = this.once(fraction).await {
                    tracing::warn!(error = %e.chain(), "scheduled verification failed");
                }
            }
        });
    }
}

/// Logs and counts what a verification found.
fn observe(report: &VerifyReport) {
    let damaged: std::collections::BTreeSet<(&str, &str)> = report
        .damaged
        .iter()
        .map(|d| (d.collection.as_str(), d.snapshot.as_str()))
        .collect();
    for d in &report.damaged {
        tracing::error!(collection = %d.collection, snapshot = %d.snapshot, piece = ?d.piece, reason = %d.reason, "verification: damaged");
    }
    tracing::info!(
        snapshots = report.snapshots_checked,
        pieces_checked = report.pieces_checked,
        pieces_read = report.pieces_read,
        damaged = damaged.len(),
        "verification finished"
    );
    let m = telemetry::get();
    m.verify_last
        .set(chrono::Utc::now().timestamp_millis() as f64 / 1000.0);
    m.verify_damaged.set(damaged.len() as i64);
}

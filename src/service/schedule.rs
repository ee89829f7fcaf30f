//! Scheduled snapshots (`storage.snapshots_config.schedule.interval_sec`): every interval,
//! a snapshot of each collection that changed since its last scheduled one. Retention
//! applies as after any create. A failure is logged and retried at the next tick; it
//! never stops the schedule or the service. Backup sources with a schedule run the same way.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use crate::backup::Backups;
use crate::collection::registry::Registry;
use crate::snapshot::{Creator, Scope};
use crate::telemetry;

/// Starts the schedule on the current runtime.
pub(crate) fn spawn(registry: Arc<Registry>, snapshots: Arc<Creator>, every: Duration) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
        // A tick missed while snapshots ran is not made up in a burst.
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // Collection → the last operation id its last scheduled snapshot holds.
        let mut taken: HashMap<String, u64> = HashMap::new();
        loop {
            tick.tick().await;
            run_once(&registry, &snapshots, &mut taken).await;
        }
    });
}

/// One tick: snapshots each changed collection; returns how many were taken.
pub(crate) async fn run_once(
    registry: &Registry,
    snapshots: &Creator,
    taken: &mut HashMap<String, u64>,
) -> usize {
    let names = registry.names();
    taken.retain(|n, _| names.contains(n));
    let mut made = 0;
    for name in names {
        let Ok(col) = registry.get(&name) else {
            continue;
        };
        let version = col.last_op();
        if taken.get(&name) == Some(&version) {
            continue;
        }
        let started = std::time::Instant::now();
        let out = snapshots
            .create(&Scope::Collection(name.clone()), None)
            .await;
        let m = telemetry::get();
        m.snapshot_op("create", "collection", out.is_ok(), started.elapsed());
        m.scheduled
            .get_or_create(&telemetry::OutcomeLabels {
                outcome: telemetry::outcome(out.is_ok()),
            })
            .inc();
        match out {
            Ok(d) => {
                tracing::info!(collection = %name, snapshot = %d.name, "scheduled snapshot created");
                taken.insert(name, version);
                made += 1;
            }
            Err(e) => tracing::warn!(
                collection = %name,
                error = %e.chain(),
                "scheduled snapshot failed; retrying at the next tick"
            ),
        }
    }
    made
}

/// Starts the backup schedule of every source that has one: a backup every
/// `schedule.interval_sec`, counted from the end of the previous one; a failure is logged
/// and the next one runs on time.
pub(crate) fn spawn_backups(backups: &Arc<Backups>) {
    for source in backups.sources() {
        let Some(every) = source.interval_sec.map(Duration::from_secs) else {
            continue;
        };
        let (backups, name) = (Arc::clone(backups), source.name.clone());
        tokio::spawn(async move {
            loop {
                let next = chrono::Utc::now()
                    + chrono::Duration::from_std(every).unwrap_or(chrono::Duration::MAX);
                backups.set_next_run(&name, next);
                tokio::time::sleep(every).await;
                let out = backups.run(&name, None, None).await;
                super::backups::observe_backup(&name, &out);
                match out {
                    Ok(r) => {
                        tracing::info!(source = %name, backup = %r.id, "scheduled backup stored")
                    }
                    Err(e) => tracing::warn!(
                        source = %name,
                        error = %e.chain(),
                        "scheduled backup failed; the next runs on schedule"
                    ),
                }
            }
        });
    }
}

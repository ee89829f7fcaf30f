//! `GET /metrics`: the kept metrics plus the figures read at scrape time (points per
//! collection, bytes done of each running operation).

use crate::service::operations::OpState;
use crate::telemetry::{self, RunningLabels};

use super::Services;

/// The OpenMetrics exposition of everything ([`telemetry::CONTENT_TYPE`]).
pub(crate) fn exposition(st: &Services) -> String {
    let mut now = telemetry::Snapshot::default();
    for name in st.collections.list() {
        if let Ok(info) = st.collections.get(&name) {
            now.points.push((name, info.points_count as u64));
        }
    }
    for op in st.snapshots.operations() {
        if op.state == OpState::Running {
            let labels = RunningLabels {
                id: op.id.to_string(),
                operation: op.kind.trim_end_matches("_snapshot").to_string(),
                collection: op.collection.unwrap_or_default(),
            };
            now.running.push((labels, op.bytes_done));
        }
    }
    telemetry::encode(now)
}

//! Process-wide Prometheus metrics (`GET /metrics`), kept with the `prometheus-client` crate.
//!
//! One registry for the whole process, so every layer (storage backends, the snapshot
//! service, both transports) records into it without threading a handle through each
//! constructor. Figures that are cheaper to read than to keep (points per collection, bytes
//! done of each running operation) are not kept here: [`encode`] takes them from a registry
//! built for the scrape. Names and labels are listed in `docs/metrics.md`.

use std::sync::OnceLock;
use std::time::Duration;

use prometheus_client::encoding::text::{encode_eof, encode_registry};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::{Family, MetricConstructor};
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::{Metric, Registry};

/// The content type of [`encode`]'s output.
pub(crate) const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Labels of a snapshot operation.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct OpLabels {
    /// `create`, `recover`, `upload` or `delete`.
    pub operation: &'static str,
    /// `collection`, `full` or `shard`.
    pub kind: &'static str,
    /// `ok` or `error`.
    pub outcome: &'static str,
}

/// Labels naming a storage backend.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct BackendLabels {
    /// `local`, `s3`, `azure` or `gcs`.
    pub backend: &'static str,
}

/// Labels naming a kind of request to a cloud store.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct RequestKindLabels {
    /// `list`, `get`, `head`, `put`, `post`, `delete` or `other`.
    pub kind: &'static str,
}

/// Labels naming an operation kind.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct OperationLabels {
    /// `create`, `recover`, `upload` or `delete`.
    pub operation: &'static str,
}

/// Labels naming an outcome.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct OutcomeLabels {
    /// `ok` or `error`.
    pub outcome: &'static str,
}

/// Labels naming a collection.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct CollectionLabels {
    /// The collection's name.
    pub collection: String,
}

/// Labels naming a backup source.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct SourceLabels {
    /// The source's name (`backup.sources.NAME`).
    pub source: String,
}

/// Labels naming a backup source and an outcome.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct SourceOutcomeLabels {
    /// The source's name.
    pub source: String,
    /// `ok` or `error`.
    pub outcome: &'static str,
}

/// Labels of a request.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct RequestLabels {
    /// `rest` or `grpc`.
    pub transport: &'static str,
    /// The route template (`/collections/{name}/snapshots`) or the RPC
    /// (`/qdrant.Points/Upsert`); requests matching neither count as `other`.
    pub route: String,
    /// The HTTP status code, or the gRPC status code for gRPC.
    pub status: String,
}

/// Labels of a running operation's progress.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct RunningLabels {
    /// The operation id, as in `GET /operations/{id}`.
    pub id: String,
    /// `create`, `recover`, `upload` or `delete`.
    pub operation: String,
    /// The collection it acts on (empty for full snapshots).
    pub collection: String,
}

/// Builds histograms with one set of buckets.
#[derive(Clone, Debug)]
pub(crate) struct Buckets {
    start: f64,
    factor: f64,
    count: u16,
}

impl MetricConstructor<Histogram> for Buckets {
    fn new_metric(&self) -> Histogram {
        Histogram::new(exponential_buckets(self.start, self.factor, self.count))
    }
}

/// Every metric the process keeps.
#[derive(Debug)]
pub(crate) struct Metrics {
    registry: Registry,
    /// Snapshot operations finished, by operation, kind and outcome.
    pub snapshot_ops: Family<OpLabels, Counter>,
    /// Their durations.
    pub snapshot_op_seconds: Family<OpLabels, Histogram, Buckets>,
    /// Bytes written to snapshot storage.
    pub storage_written: Family<BackendLabels, Counter>,
    /// Bytes read from snapshot storage.
    pub storage_read: Family<BackendLabels, Counter>,
    /// HTTP requests sent to the cloud store, by kind.
    pub storage_requests: Family<RequestKindLabels, Counter>,
    /// S3 part uploads that failed and were handed to the retry layer.
    pub s3_part_retries: Counter,
    /// Multipart uploads aborted (failed creates, and orphans found at start-up).
    pub s3_aborted_uploads: Counter,
    /// Snapshot operations running now.
    pub in_flight: Family<OperationLabels, Gauge>,
    /// When each collection's last successful snapshot finished (Unix seconds).
    pub last_snapshot: Family<CollectionLabels, Gauge<f64, std::sync::atomic::AtomicU64>>,
    /// Scheduled snapshots run, by outcome.
    pub scheduled: Family<OutcomeLabels, Counter>,
    /// Backups run, by source and outcome.
    pub backups: Family<SourceOutcomeLabels, Counter>,
    /// When each source's last successful backup finished (Unix seconds).
    pub last_backup: Family<SourceLabels, Gauge<f64, std::sync::atomic::AtomicU64>>,
    /// Bytes pulled from Qdrant by backups.
    pub backup_pulled: Family<SourceLabels, Counter>,
    /// Bytes backups added to storage.
    pub backup_stored: Family<SourceLabels, Counter>,
    /// Restores run, by source and outcome.
    pub restores: Family<SourceOutcomeLabels, Counter>,
    /// Stored pieces found damaged or missing (by a read or a verification).
    pub damaged_pieces_found: Counter,
    /// Damaged pieces written again by a create that held their bytes.
    pub damaged_pieces_repaired: Counter,
    /// When the last verification of the storage finished (Unix seconds).
    pub verify_last: Gauge<f64, std::sync::atomic::AtomicU64>,
    /// Snapshots and backups the last verification found damaged.
    pub verify_damaged: Gauge,
    /// Requests answered, by transport, route and status.
    pub requests: Family<RequestLabels, Counter>,
    /// Their latencies.
    pub request_seconds: Family<RequestLabels, Histogram, Buckets>,
}

/// Registers `metric` in `r` and hands it back, to be kept.
fn registered<M: Metric + Clone>(r: &mut Registry, name: &str, help: &str, metric: M) -> M {
    r.register(name, help, metric.clone());
    metric
}

/// Buckets of snapshot operation durations: 10 ms to ~25 min.
const SNAPSHOT_SECONDS: Buckets = Buckets {
    start: 0.01,
    factor: 2.5,
    count: 14,
};
/// Buckets of request latencies: 0.5 ms to ~16 s.
const REQUEST_SECONDS: Buckets = Buckets {
    start: 0.0005,
    factor: 2.0,
    count: 16,
};

impl Metrics {
    /// Every metric, registered in one registry: `field: name, help, metric;` per row.
    fn new() -> Self {
        let mut r = Registry::with_prefix("snapstream");
        macro_rules! metrics {
            ($($field:ident: $name:literal, $help:literal, $metric:expr;)*) => {
                Metrics { $($field: registered(&mut r, $name, $help, $metric),)* registry: r }
            };
        }
        metrics! {
            snapshot_ops: "snapshot_operations", "Snapshot operations finished", Family::default();
            snapshot_op_seconds: "snapshot_operation_duration_seconds",
                "Duration of snapshot operations", Family::new_with_constructor(SNAPSHOT_SECONDS);
            storage_written: "storage_written_bytes", "Bytes written to snapshot storage",
                Family::default();
            storage_read: "storage_read_bytes", "Bytes read from snapshot storage",
                Family::default();
            storage_requests: "storage_requests",
                "HTTP requests sent to the cloud snapshot store, by kind (list, get, head, put, post, delete)",
                Family::default();
            s3_part_retries: "s3_part_retries",
                "S3 part uploads that failed and were retried (while the retry budget lasted)",
                Counter::default();
            s3_aborted_uploads: "s3_aborted_multipart_uploads", "S3 multipart uploads aborted",
                Counter::default();
            in_flight: "operations_in_flight", "Snapshot operations running now",
                Family::default();
            last_snapshot: "collection_last_snapshot_timestamp_seconds",
                "When the collection's last successful snapshot finished, since this process started",
                Family::default();
            scheduled: "scheduled_snapshots", "Scheduled snapshots run", Family::default();
            backups: "backups", "Backups of Qdrant deployments run", Family::default();
            last_backup: "backup_last_success_timestamp_seconds",
                "When the source's last successful backup finished", Family::default();
            backup_pulled: "backup_pulled_bytes", "Bytes pulled from Qdrant by backups",
                Family::default();
            backup_stored: "backup_stored_bytes", "Bytes backups added to storage",
                Family::default();
            restores: "restores", "Restores of backups run", Family::default();
            damaged_pieces_found: "damaged_pieces_found",
                "Stored pieces found damaged or missing, by a read or a verification",
                Counter::default();
            damaged_pieces_repaired: "damaged_pieces_repaired",
                "Damaged pieces written again by a create that held their bytes", Counter::default();
            verify_last: "verify_last_run_timestamp_seconds",
                "When the last verification of the snapshot storage finished", Gauge::default();
            verify_damaged: "verify_damaged_snapshots",
                "Snapshots and backups the last verification found damaged", Gauge::default();
            requests: "requests", "Requests answered", Family::default();
            request_seconds: "request_duration_seconds",
                "Time to answer a request (until its response headers)",
                Family::new_with_constructor(REQUEST_SECONDS);
        }
    }

    /// Counts a finished snapshot operation and its duration.
    pub(crate) fn snapshot_op(
        &self,
        operation: &'static str,
        kind: &'static str,
        ok: bool,
        took: Duration,
    ) {
        let labels = OpLabels {
            operation,
            kind,
            outcome: outcome(ok),
        };
        self.snapshot_ops.get_or_create(&labels).inc();
        self.snapshot_op_seconds
            .get_or_create(&labels)
            .observe(took.as_secs_f64());
    }

    /// Counts a finished backup of `source`: its outcome and, when it succeeded, its time
    /// and bytes.
    pub(crate) fn backup(&self, source: &str, done: Option<(f64, u64, u64)>) {
        let labels = SourceOutcomeLabels {
            source: source.to_string(),
            outcome: outcome(done.is_some()),
        };
        self.backups.get_or_create(&labels).inc();
        if let Some((finished, pulled, stored)) = done {
            let s = SourceLabels {
                source: source.to_string(),
            };
            self.last_backup.get_or_create(&s).set(finished);
            self.backup_pulled.get_or_create(&s).inc_by(pulled);
            self.backup_stored.get_or_create(&s).inc_by(stored);
        }
    }

    /// Counts a finished restore from `source`.
    pub(crate) fn restore(&self, source: &str, ok: bool) {
        self.restores
            .get_or_create(&SourceOutcomeLabels {
                source: source.to_string(),
                outcome: outcome(ok),
            })
            .inc();
    }

    /// Counts an answered request and its latency.
    pub(crate) fn request(
        &self,
        transport: &'static str,
        route: String,
        status: String,
        took: Duration,
    ) {
        let labels = RequestLabels {
            transport,
            route,
            status,
        };
        self.requests.get_or_create(&labels).inc();
        self.request_seconds
            .get_or_create(&labels)
            .observe(took.as_secs_f64());
    }
}

/// `ok` or `error`.
pub(crate) fn outcome(ok: bool) -> &'static str {
    if ok {
        "ok"
    } else {
        "error"
    }
}

/// The process's metrics.
pub(crate) fn get() -> &'static Metrics {
    static METRICS: OnceLock<Metrics> = OnceLock::new();
    METRICS.get_or_init(Metrics::new)
}

/// Figures read at scrape time rather than kept.
#[derive(Debug, Default)]
pub(crate) struct Snapshot {
    /// Points per collection.
    pub points: Vec<(String, u64)>,
    /// Bytes done of each running operation.
    pub running: Vec<(RunningLabels, u64)>,
}

/// The exposition of every metric, in the OpenMetrics text format ([`CONTENT_TYPE`]).
pub(crate) fn encode(now: Snapshot) -> String {
    let mut scrape = Registry::with_prefix("snapstream");
    let points = Family::<CollectionLabels, Gauge>::default();
    for (collection, n) in now.points {
        points
            .get_or_create(&CollectionLabels { collection })
            .set(i64::try_from(n).unwrap_or(i64::MAX));
    }
    scrape.register("collection_points", "Points in each collection", points);
    let running = Family::<RunningLabels, Gauge>::default();
    for (labels, done) in now.running {
        running
            .get_or_create(&labels)
            .set(i64::try_from(done).unwrap_or(i64::MAX));
    }
    scrape.register_with_unit(
        "operation_done",
        "Bytes done of each running snapshot operation",
        prometheus_client::registry::Unit::Bytes,
        running,
    );
    let mut out = String::new();
    // Writing into a String cannot fail.
    let _ = encode_registry(&mut out, &get().registry);
    let _ = encode_registry(&mut out, &scrape);
    let _ = encode_eof(&mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposition_names_follow_conventions() {
        let m = get();
        m.snapshot_op("create", "collection", true, Duration::from_millis(20));
        m.storage_written
            .get_or_create(&BackendLabels { backend: "local" })
            .inc_by(7);
        let text = encode(Snapshot {
            points: vec![("papers".into(), 3)],
            running: vec![(
                RunningLabels {
                    id: "4".into(),
                    operation: "create".into(),
                    collection: "papers".into(),
                },
                99,
            )],
        });
        assert!(text.contains(
            "snapstream_snapshot_operations_total{operation=\"create\",kind=\"collection\",outcome=\"ok\"}"
        ));
        assert!(text.contains("snapstream_snapshot_operation_duration_seconds_bucket{"));
        assert!(text.contains("snapstream_storage_written_bytes_total{backend=\"local\"}"));
        assert!(text.contains("snapstream_collection_points{collection=\"papers\"} 3"));
        assert!(text.contains(
            "snapstream_operation_done_bytes{id=\"4\",operation=\"create\",collection=\"papers\"} 99"
        ));
        assert!(text.ends_with("# EOF\n"));
        assert_eq!(text.matches("# EOF").count(), 1);
    }
}

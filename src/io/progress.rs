//! Progress of long work: a counter of bytes moved that callers poll while the work runs
//! (operations' listings, metrics), and for work nobody polls (start-up recovery from
//! `--snapshot` and `--storage-snapshot`) a report made every period while it runs.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt};

use super::file_stream::ByteStream;

/// Shared progress of an operation, readable while it runs.
pub type Progress = Arc<ProgressCounter>;

/// Bytes moved so far, and how many there will be when that is known.
#[derive(Debug, Default)]
pub struct ProgressCounter {
    done: AtomicU64,
    /// 0 while unknown.
    total: AtomicU64,
}

impl ProgressCounter {
    /// Counts `n` more bytes moved.
    pub fn add(&self, n: u64) {
        self.done.fetch_add(n, Ordering::Relaxed);
    }

    /// Bytes moved so far.
    pub fn done(&self) -> u64 {
        self.done.load(Ordering::Relaxed)
    }

    /// Sets the expected total (an estimate: compression makes fewer bytes move).
    pub fn set_total(&self, n: u64) {
        self.total.store(n, Ordering::Relaxed);
    }

    /// The expected total, when known.
    pub fn total(&self) -> Option<u64> {
        Some(self.total.load(Ordering::Relaxed)).filter(|n| *n > 0)
    }
}

/// `stream`, counting the bytes it yields into `progress`.
pub(crate) fn counted(stream: ByteStream, progress: Progress) -> ByteStream {
    stream
        .inspect_ok(move |b| progress.add(b.len() as u64))
        .boxed()
}

/// Runs `work`, calling `report(bytes done, elapsed)` every `period` until it ends.
pub(crate) async fn reporting<T>(
    period: Duration,
    progress: &Progress,
    mut report: impl FnMut(u64, Duration),
    work: impl Future<Output = T>,
) -> T {
    let started = Instant::now();
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    tokio::pin!(work);
    loop {
        tokio::select! {
            out = &mut work => return out,
            _ = tick.tick() => report(progress.done(), started.elapsed()),
        }
    }
}

/// One progress line: `412.0 MiB of 2.0 GiB (20%), 180.3 MiB/s`.
pub(crate) fn describe(done: u64, total: Option<u64>, elapsed: Duration) -> String {
    const MIB: f64 = (1u64 << 20) as f64;
    let rate = done as f64 / MIB / elapsed.as_secs_f64().max(1e-3);
    match total {
        Some(t) if t > 0 => format!(
            "{:.1} MiB of {:.1} MiB ({:.0}%), {rate:.1} MiB/s",
            done as f64 / MIB,
            t as f64 / MIB,
            100.0 * done as f64 / t as f64
        ),
        _ => format!("{:.1} MiB, {rate:.1} MiB/s", done as f64 / MIB),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn reports_while_work_runs_and_returns_its_output() {
        let progress = Progress::default();
        let chunks: Vec<std::io::Result<bytes::Bytes>> = (0..3)
            .map(|_| Ok(bytes::Bytes::from_static(b"abcd")))
            .collect();
        let stream = counted(
            futures::stream::iter(chunks).boxed(),
            std::sync::Arc::clone(&progress),
        );
        let mut reports = Vec::new();
        let out = reporting(
            Duration::from_millis(10),
            &progress,
            |done, _| reports.push(done),
            async {
                let n: usize = stream
                    .map_ok(|b| b.len())
                    .try_collect::<Vec<_>>()
                    .await
                    .unwrap()
                    .iter()
                    .sum();
                tokio::time::sleep(Duration::from_millis(60)).await;
                n
            },
        )
        .await;
        assert_eq!(out, 12);
        assert!(reports.len() >= 2, "{reports:?}");
        assert!(reports.iter().all(|d| *d == 12));
        assert_eq!(
            describe(1 << 20, Some(4 << 20), Duration::from_secs(1)),
            "1.0 MiB of 4.0 MiB (25%), 1.0 MiB/s"
        );
    }
}

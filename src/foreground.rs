//! Durable writes that a request is waiting for, and bulk writers that step aside for them.
//!
//! An acknowledged upsert ends in `fdatasync` of the WAL, and on a shared virtual disk that
//! flush has to push out whatever else was written just before it: while a snapshot streams
//! gigabytes with direct I/O, every flush has more to do. So the WAL marks its write and
//! flush as in flight, and the writer of snapshot and staging files ([`crate::direct_file`])
//! pauses before its next block while one is in flight or one ended less than [`GRACE`]
//! ago (under a stream of upserts the next flush follows within about that long, and the
//! bytes written in between would be what it waits for). Each pause is bounded, so a
//! steady stream of upserts slows a snapshot down but cannot stop it.
//!
//! This is process-wide on purpose: all collections share the disk.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

static IN_FLIGHT: AtomicUsize = AtomicUsize::new(0);
/// When the last durable write ended, in microseconds since [`epoch`].
static LAST_END: AtomicU64 = AtomicU64::new(0);

/// How long after a durable write bulk writers keep pausing.
pub(crate) const GRACE: Duration = Duration::from_millis(1);
/// How often a paused bulk writer looks again.
const POLL: Duration = Duration::from_micros(100);

fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

fn now_us() -> u64 {
    u64::try_from(epoch().elapsed().as_micros()).unwrap_or(u64::MAX)
}

/// Marks a durable write as in flight until dropped.
#[must_use = "the write counts as in flight only while this is held"]
pub(crate) struct DurableWrite(());

/// Marks a durable write (write plus flush) that a caller is waiting for.
pub(crate) fn durable_write() -> DurableWrite {
    IN_FLIGHT.fetch_add(1, Ordering::SeqCst);
    DurableWrite(())
}

impl Drop for DurableWrite {
    fn drop(&mut self) {
        LAST_END.store(now_us(), Ordering::SeqCst);
        IN_FLIGHT.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Whether a durable write is in flight or ended within [`GRACE`].
fn busy() -> bool {
    if IN_FLIGHT.load(Ordering::SeqCst) > 0 {
        return true;
    }
    let last = LAST_END.load(Ordering::SeqCst);
    last != 0 && now_us().saturating_sub(last) < GRACE.as_micros() as u64
}

/// Blocks the calling (bulk-writer) thread while [`busy`], for at most `max`. Returns at
/// once when no durable write is near.
pub(crate) fn step_aside(max: Duration) {
    if !busy() {
        return;
    }
    let start = Instant::now();
    while busy() && start.elapsed() < max {
        std::thread::sleep(POLL);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bulk_writers_wait_for_a_durable_write_and_no_longer_than_allowed() {
        // A write in flight for 50 ms: a generous bound is not reached, the writer
        // resumes when the write ends.
        let write = durable_write();
        let release = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            drop(write);
        });
        let t = Instant::now();
        step_aside(Duration::from_secs(30));
        let waited = t.elapsed();
        release.join().expect("join");
        assert!(
            waited >= Duration::from_millis(50),
            "resumed early: {waited:?}"
        );
        assert!(waited < Duration::from_secs(30), "waited for the bound");

        // Right after a write ends, the writer still waits out the grace period.
        drop(durable_write());
        let t = Instant::now();
        step_aside(Duration::from_secs(30));
        assert!(t.elapsed() >= GRACE / 2, "no grace: {:?}", t.elapsed());

        // A write that never ends: the writer still goes on after the bound.
        let stuck = durable_write();
        let t = Instant::now();
        step_aside(Duration::from_millis(20));
        assert!(t.elapsed() >= Duration::from_millis(20));
        drop(stuck);
    }
}

//! Durable writes that a request is waiting for, and bulk writers that step aside for them.
//!
//! An acknowledged upsert ends in `fdatasync` of the WAL, and on a shared virtual disk that
//! flush waits behind whatever else was just written: while a snapshot streams gigabytes
//! with direct I/O, each flush has more to push out. So the WAL marks its write-and-flush
//! as in flight, and the writer of snapshot and staging files ([`crate::direct_file`])
//! pauses before its next block until no such flush is in flight. The pause is bounded, so
//! a steady stream of upserts slows a snapshot down but cannot stop it.
//!
//! This is process-wide on purpose: all collections share the disk.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

static IN_FLIGHT: AtomicUsize = AtomicUsize::new(0);

/// How often a paused bulk writer looks again.
const POLL: Duration = Duration::from_micros(100);

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
        IN_FLIGHT.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Blocks the calling (bulk-writer) thread while a durable write is in flight, for at
/// most `max`. Returns at once when none is.
pub(crate) fn step_aside(max: Duration) {
    if IN_FLIGHT.load(Ordering::SeqCst) == 0 {
        return;
    }
    let start = Instant::now();
    while IN_FLIGHT.load(Ordering::SeqCst) > 0 && start.elapsed() < max {
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

        // A write that never ends: the writer still goes on after the bound.
        let stuck = durable_write();
        let t = Instant::now();
        step_aside(Duration::from_millis(20));
        assert!(t.elapsed() >= Duration::from_millis(20));
        drop(stuck);
    }
}

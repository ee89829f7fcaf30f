//! Durable writes that a request is waiting for, and bulk writers that make room for them.
//!
//! An acknowledged upsert ends in `fdatasync` of the WAL, and on a shared virtual disk that
//! flush has to push out whatever else was written before it: while a snapshot streams
//! gigabytes, every flush has more to do. So the bulk writers
//! ([`crate::io::bulk_file`]) ask a [`Pacer`] before each piece they write:
//!
//! - with no durable writes around (none in flight, none ended within [`QUIET`]), nothing is
//!   paced: the whole block goes out at once;
//! - while durable writes keep coming, the writer is clocked by them: it writes one *quota*
//!   of bytes after each durable write ends, durably (`RWF_DSYNC`), so the device cache holds
//!   none of ours when the next flush arrives, and the snapshot's bytes are spread evenly
//!   between flushes instead of arriving in bursts. If none ends within [`CLOCK_WAIT`] the
//!   writer goes on anyway, so a snapshot always progresses;
//! - the quota follows the measured flush latency: every durable write is timed, those that
//!   ran while no bulk writer was at work give the *reference* (until one has been seen, the
//!   fastest one seen stands in), and each durable write slower than [`HEADROOM`] × the
//!   reference halves the quota, each faster one raises it by [`QUOTA_STEP`] (additive
//!   increase, multiplicative decrease, as TCP finds a link's capacity), within
//!   [`MIN_QUOTA`]..[`MAX_QUOTA`].
//!
//! This is process-wide on purpose: all collections share the disk.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// How long after the last durable write the disk counts as quiet (unpaced). Under a client
/// upserting back to back the next flush follows within a millisecond or two.
pub(crate) const QUIET: Duration = Duration::from_millis(20);
/// Longest wait for the next durable write to end before writing anyway.
pub(crate) const CLOCK_WAIT: Duration = Duration::from_millis(2);
/// A durable write slower than this many times the reference counts as slowed down by us.
/// The reference is an average, and unhurt flushes have a tail of their own: on this
/// project's machines an idle upsert's p99 was 3 to 4 times its mean. Measured settings
/// (BENCHMARKS.md): 1.5 kept the upsert p99 at 1.1–1.2× idle but made snapshots under load
/// 6–8× slower than idle reading; 4 keeps it near 1.5× at about 4.5×.
pub(crate) const HEADROOM: f64 = 4.0;
/// The smallest quota: with [`CLOCK_WAIT`], at least 32 MiB/s however slow the flushes.
pub(crate) const MIN_QUOTA: usize = 64 << 10;
/// The largest quota: one direct-I/O block (four blocks measured no faster and hurt more).
pub(crate) const MAX_QUOTA: usize = 512 << 10;
/// The quota a bulk writer starts from when it first meets durable writes.
const START_QUOTA: usize = 128 << 10;
/// How much each unhurt durable write raises the quota.
pub(crate) const QUOTA_STEP: usize = 16 << 10;
/// How often a waiting bulk writer looks again.
const POLL: Duration = Duration::from_micros(100);

/// What the pacer knows about durable writes. One process-wide instance ([`global`]);
/// tests make their own.
pub(crate) struct Signals {
    in_flight: AtomicUsize,
    /// When the last durable write ended, in microseconds since [`epoch`] (0: never).
    last_end: AtomicU64,
    /// Durable writes finished so far.
    finished: AtomicU64,
    /// How long the last one took, in microseconds.
    last_latency: AtomicU64,
    /// Running average of those that ran with no bulk writer at work (0: none yet).
    alone_latency: AtomicU64,
    /// The fastest seen (`u64::MAX`: none yet).
    fastest: AtomicU64,
    /// Bulk writers at work.
    bulk: AtomicUsize,
    /// [`QUIET`], in microseconds (tests lengthen it, so a slow test machine cannot make
    /// the disk look quiet between two steps).
    quiet_us: u64,
    /// [`CLOCK_WAIT`] (tests lengthen it, so a slow machine cannot end a wait before the
    /// durable write it waits for).
    clock_wait: Duration,
}

fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

/// Microseconds since the first call, plus one: never 0, which `last_end` uses for "no
/// durable write yet" (a write ending at the very first reading of the clock counts).
fn now_us() -> u64 {
    u64::try_from(epoch().elapsed().as_micros())
        .unwrap_or(u64::MAX)
        .saturating_add(1)
}

/// The process-wide signals: WAL flushes report here, snapshot and staging writers read.
pub(crate) fn global() -> &'static Signals {
    static GLOBAL: Signals = Signals::new();
    &GLOBAL
}

/// Marks a durable write as in flight until dropped, and times it.
#[must_use = "the write counts as in flight only while this is held"]
pub(crate) struct DurableWrite {
    signals: &'static Signals,
    start: Instant,
    /// Whether no bulk writer was at work when it started.
    alone: bool,
}

/// Marks a durable write (write plus flush) that a caller is waiting for.
pub(crate) fn durable_write() -> DurableWrite {
    global().durable_write()
}

impl Signals {
    pub(crate) const fn new() -> Self {
        Signals {
            in_flight: AtomicUsize::new(0),
            last_end: AtomicU64::new(0),
            finished: AtomicU64::new(0),
            last_latency: AtomicU64::new(0),
            alone_latency: AtomicU64::new(0),
            fastest: AtomicU64::new(u64::MAX),
            bulk: AtomicUsize::new(0),
            quiet_us: QUIET.as_micros() as u64,
            clock_wait: CLOCK_WAIT,
        }
    }

    /// See [`durable_write`].
    pub(crate) fn durable_write(&'static self) -> DurableWrite {
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        DurableWrite {
            signals: self,
            start: Instant::now(),
            alone: self.bulk.load(Ordering::SeqCst) == 0,
        }
    }

    fn ended(&self, took: Duration, alone: bool) {
        let us = u64::try_from(took.as_micros()).unwrap_or(u64::MAX).max(1);
        if alone && self.bulk.load(Ordering::SeqCst) == 0 {
            // Two racing updates may lose one sample of an average: harmless.
            let old = self.alone_latency.load(Ordering::Relaxed);
            let new = if old == 0 { us } else { (old * 7 + us) / 8 };
            self.alone_latency.store(new, Ordering::Relaxed);
        }
        self.fastest.fetch_min(us, Ordering::Relaxed);
        self.last_latency.store(us, Ordering::SeqCst);
        self.finished.fetch_add(1, Ordering::SeqCst);
        self.last_end.store(now_us(), Ordering::SeqCst);
        self.in_flight.fetch_sub(1, Ordering::SeqCst);
    }

    /// What an unhurt durable write takes, in microseconds, if anything is known.
    fn reference_us(&self) -> Option<u64> {
        match self.alone_latency.load(Ordering::Relaxed) {
            0 => Some(self.fastest.load(Ordering::Relaxed)).filter(|&f| f != u64::MAX),
            alone => Some(alone),
        }
    }

    fn in_flight(&self) -> bool {
        self.in_flight.load(Ordering::SeqCst) > 0
    }

    /// Whether durable writes are coming: one in flight or one ended within [`QUIET`].
    fn active(&self) -> bool {
        if self.in_flight() {
            return true;
        }
        let last = self.last_end.load(Ordering::SeqCst);
        last != 0 && now_us().saturating_sub(last) < self.quiet_us
    }
}

impl Drop for DurableWrite {
    fn drop(&mut self) {
        self.signals.ended(self.start.elapsed(), self.alone);
    }
}

#[cfg(test)]
impl DurableWrite {
    /// Ends the write as if it had taken `took`: tests set latencies instead of sleeping,
    /// so a slow machine cannot stretch them.
    fn end_as_if(self, took: Duration) {
        self.signals.ended(took, self.alone);
        std::mem::forget(self);
    }
}

/// How the next block is to be written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Write {
    /// Nobody is waiting on the disk: a plain write.
    Plain,
    /// Durable writes are coming: make the block durable as it is written.
    Durable,
}

/// Paces one bulk writer (see the module documentation). Counts as a bulk writer at work
/// until dropped.
pub(crate) struct Pacer {
    signals: &'static Signals,
    /// Bytes written after each durable write while they keep coming.
    quota: usize,
    /// Durable writes already judged (and written after).
    judged: u64,
    /// What is left of the quota granted after the last durable write.
    budget: usize,
}

impl Pacer {
    /// A pacer over the process-wide signals.
    pub(crate) fn new() -> Self {
        Self::over(global())
    }

    pub(crate) fn over(signals: &'static Signals) -> Self {
        signals.bulk.fetch_add(1, Ordering::SeqCst);
        Pacer {
            signals,
            quota: START_QUOTA,
            judged: signals.finished.load(Ordering::SeqCst),
            budget: 0,
        }
    }

    /// Judges the latest durable write, if one finished since the last look, against the
    /// reference, and adjusts the quota. Returns whether one had finished.
    fn judge(&mut self) -> bool {
        let finished = self.signals.finished.load(Ordering::SeqCst);
        if finished == self.judged {
            return false;
        }
        self.judged = finished;
        if let Some(reference) = self.signals.reference_us() {
            let last = self.signals.last_latency.load(Ordering::SeqCst);
            self.quota = if last as f64 > reference as f64 * HEADROOM {
                (self.quota / 2).max(MIN_QUOTA)
            } else {
                (self.quota + QUOTA_STEP).min(MAX_QUOTA)
            };
        }
        true
    }

    /// Waits until the next piece may be written and says how much of `want` bytes (whole
    /// `unit`s, unless `want` is less than one) and how.
    pub(crate) fn grant(&mut self, want: usize, unit: usize) -> (usize, Write) {
        if !self.signals.active() {
            self.judged = self.signals.finished.load(Ordering::SeqCst);
            return (want, Write::Plain);
        }
        if self.budget == 0 {
            let waiting = Instant::now();
            while !self.judge() && waiting.elapsed() < self.signals.clock_wait {
                std::thread::sleep(POLL);
            }
            self.budget = self.quota;
        }
        let n = self.piece(want, unit);
        self.budget = self.budget.saturating_sub(n);
        (n, Write::Durable)
    }

    /// How much of `want` the budget covers, in whole `unit`s (at least one, or `want`).
    fn piece(&self, want: usize, unit: usize) -> usize {
        let whole = self.budget.min(want) / unit.max(1) * unit.max(1);
        whole.max(unit.min(want))
    }
}

impl Drop for Pacer {
    fn drop(&mut self) {
        self.signals.bulk.fetch_sub(1, Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn signals() -> &'static Signals {
        let mut s = Signals::new();
        s.quiet_us = 60_000_000;
        s.clock_wait = Duration::from_secs(60);
        Box::leak(Box::new(s))
    }

    /// A durable write that took `took`, as the WAL reports one.
    fn flush(s: &'static Signals, took: Duration) {
        s.durable_write().end_as_if(took);
    }

    /// Moves the last durable write's end `by` into the past (to "never" if that is before
    /// the clock's start), instead of waiting.
    fn age(s: &'static Signals, by: Duration) {
        let last = s.last_end.load(Ordering::SeqCst);
        let by = u64::try_from(by.as_micros()).unwrap_or(u64::MAX);
        s.last_end.store(last.saturating_sub(by), Ordering::SeqCst);
    }

    /// Durable writes with no bulk writer at work, setting the reference to about `took`.
    fn reference(s: &'static Signals, took: Duration) {
        for _ in 0..4 {
            flush(s, took);
        }
    }

    #[test]
    fn without_durable_writes_nothing_is_paced() {
        let s = signals();
        let mut p = Pacer::over(s);
        for _ in 0..1000 {
            assert_eq!(p.grant(1 << 20, 4096), (1 << 20, Write::Plain));
        }
    }

    #[test]
    fn once_durable_writes_stop_the_writer_is_unpaced_again() {
        let s = signals();
        let mut p = Pacer::over(s);
        flush(s, Duration::from_millis(1));
        assert_eq!(p.grant(1 << 20, 4096).1, Write::Durable);
        age(s, Duration::from_micros(s.quiet_us + 1));
        assert_eq!(p.grant(1 << 20, 4096), (1 << 20, Write::Plain));
    }

    #[test]
    fn while_durable_writes_come_each_one_ending_lets_one_quota_through() {
        let s = signals();
        flush(s, Duration::from_millis(1));
        let mut p = Pacer::over(s);
        // One durable write ended since the pacer started looking: one quota at once.
        flush(s, Duration::from_millis(1));
        let (n, how) = p.grant(1 << 20, 4096);
        assert_eq!(how, Write::Durable);
        assert!((MIN_QUOTA..=MAX_QUOTA).contains(&n), "{n}");
        // The next piece waits for the next durable write to end.
        let w = s.durable_write();
        let release = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_micros(300));
            drop(w);
        });
        let before = s.finished.load(Ordering::SeqCst);
        p.grant(1 << 20, 4096);
        let after = s.finished.load(Ordering::SeqCst);
        release.join().expect("join");
        assert!(
            after > before,
            "granted before the durable write in flight ended"
        );
    }

    #[test]
    fn slowed_durable_writes_halve_the_quota_down_to_the_floor() {
        let s = signals();
        reference(s, Duration::from_millis(1));
        let mut p = Pacer::over(s);
        let start = p.quota;
        // Far beyond HEADROOM times the reference, however a busy machine stretches sleeps.
        let slow = Duration::from_millis(20);
        flush(s, slow);
        p.grant(1 << 20, 4096);
        assert_eq!(p.quota, start / 2);
        for _ in 0..10 {
            flush(s, slow);
            p.grant(1 << 20, 4096);
        }
        assert_eq!(p.quota, MIN_QUOTA, "never below the floor");
    }

    #[test]
    fn unhurt_durable_writes_raise_the_quota_up_to_the_ceiling() {
        let s = signals();
        reference(s, Duration::from_millis(2));
        let mut p = Pacer::over(s);
        let start = p.quota;
        for _ in 0..3 {
            flush(s, Duration::from_millis(1));
            p.grant(1 << 20, 4096);
        }
        assert_eq!(p.quota, start + 3 * QUOTA_STEP);
        for _ in 0..100 {
            flush(s, Duration::from_millis(1));
            p.grant(1 << 20, 4096);
        }
        assert_eq!(p.quota, MAX_QUOTA);
    }

    #[test]
    fn a_quota_larger_than_a_piece_is_spent_over_several() {
        let s = signals();
        flush(s, Duration::from_millis(1));
        let mut p = Pacer::over(s);
        p.quota = 256 << 10;
        flush(s, Duration::from_millis(1));
        assert_eq!(p.grant(128 << 10, 4096), (128 << 10, Write::Durable));
        // The durable write was unhurt, so the quota grew a step before it was granted.
        let quota = (256 << 10) + QUOTA_STEP;
        assert_eq!(p.quota, quota);
        assert_eq!(p.budget, quota - (128 << 10));
        // No durable write has ended since: the rest of the budget, without a new clock tick.
        assert_eq!(p.grant(128 << 10, 4096), (128 << 10, Write::Durable));
        assert_eq!(p.grant(1 << 20, 4096), (QUOTA_STEP, Write::Durable));
        assert_eq!(p.budget, 0);
    }

    #[test]
    fn a_stuck_durable_write_is_waited_for_a_while_but_never_stops_the_writer() {
        let mut stuck = Signals::new();
        stuck.quiet_us = 60_000_000;
        let s: &'static Signals = Box::leak(Box::new(stuck));
        flush(s, Duration::from_millis(1));
        let _stuck = s.durable_write();
        let mut p = Pacer::over(s);
        let t = Instant::now();
        let mut written = 0;
        // Each call returns with bytes to write (the writer goes on), after the bounded wait.
        for _ in 0..5 {
            let (n, _) = p.grant(1 << 20, 4096);
            assert!(n >= MIN_QUOTA, "{n}");
            written += n;
        }
        assert!(written >= 5 * MIN_QUOTA);
        assert!(t.elapsed() >= 5 * CLOCK_WAIT, "{:?}", t.elapsed());
    }

    #[test]
    fn pieces_are_whole_units_and_never_more_than_wanted() {
        let mut p = Pacer::over(signals());
        p.budget = START_QUOTA;
        assert_eq!(p.piece(1 << 20, 4096), START_QUOTA);
        assert_eq!(p.piece(10_000, 4096), 8192);
        assert_eq!(p.piece(100, 4096), 100);
        assert_eq!(p.piece(START_QUOTA + 5, 1), START_QUOTA);
    }

    #[test]
    fn writes_during_bulk_work_do_not_become_the_reference() {
        let s = signals();
        flush(s, Duration::from_millis(1));
        let reference = s.reference_us().expect("one write seen");
        let p = Pacer::over(s);
        for _ in 0..4 {
            flush(s, Duration::from_millis(10));
        }
        assert_eq!(s.reference_us(), Some(reference));
        drop(p);
        flush(s, Duration::from_millis(10));
        assert!(s.reference_us().expect("known") > reference);
    }
}

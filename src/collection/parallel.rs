//! Splitting work on a column's slots across the cores: a scan of a large column is bound
//! by memory bandwidth, which one core does not fill.

/// Floats below which work runs on one thread: spawning more costs tens of microseconds,
/// a scan of this size about a millisecond.
const PARALLEL_MIN: usize = 1 << 20;

/// Into how many parts work over `floats` vector floats is split: one per core when the
/// data is large (150,000 × 768 on 2 cores: 0.5× the time of one pass).
pub(crate) fn parts_for(floats: usize) -> usize {
    if floats < PARALLEL_MIN {
        return 1;
    }
    std::thread::available_parallelism()
        .map_or(1, |p| p.get())
        .min(8)
}

/// Runs `f` over `0..n` cut into `parts` ranges at once, one thread each; the results in
/// order.
pub(crate) fn in_parts<R: Send>(
    n: usize,
    parts: usize,
    f: impl Fn(std::ops::Range<usize>) -> R + Sync,
) -> Vec<R> {
    if parts < 2 {
        return vec![f(0..n)];
    }
    let per = n.div_ceil(parts);
    let ranges = (0..parts).map(|i| (i * per).min(n)..((i + 1) * per).min(n));
    each_on_a_thread(ranges.collect(), f)
}

/// Runs `f` on every item at once, one thread each (the calling thread alone for one item);
/// the results in order. A panic in `f` goes on in the caller.
pub(crate) fn each_on_a_thread<T: Send, R: Send>(
    items: Vec<T>,
    f: impl Fn(T) -> R + Sync,
) -> Vec<R> {
    if items.len() < 2 {
        return items.into_iter().map(f).collect();
    }
    std::thread::scope(|s| {
        let f = &f;
        let running: Vec<_> = items
            .into_iter()
            .map(|item| s.spawn(move || f(item)))
            .collect();
        running
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|e| std::panic::resume_unwind(e)))
            .collect()
    })
}

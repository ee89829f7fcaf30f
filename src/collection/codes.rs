//! A Dot or Cosine column kept a second time as 8-bit codes, so that an exact search reads a
//! quarter of the bytes first. Each stored vector `v` is `scale * q + r` with `q` whole
//! numbers in `-63..=63`; the query `x` is cut the same way, within ±127. The codes give an
//! estimate of `x · v` from whole numbers (added exactly), and the parts cut off give a bound
//! on how far the exactly computed score (the `f32` sum that the search reports) can be from
//! that estimate, rounding of that sum included. A search scores exactly only the points
//! whose bound reaches the best hits' bounds, so it returns what a full exact pass returns.
//!
//! Codes are cut when searches need them: a write only marks its slot stale, so upserts and
//! loads pay nothing for them. A search with little left to cut cuts it first (on every core
//! when there is enough); with more left (the first search after a start-up, a recovery or a
//! bulk load) it scans exactly, as fast as before codes existed, and marks the codes wanted,
//! and they are cut in steps beside the searches ([`Codes::cut_some`]).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{PoisonError, RwLock, RwLockReadGuard, TryLockError};

use super::parallel::{each_on_a_thread, parts_for};

/// What one stored vector's codes need beside them.
#[derive(Clone, Copy, Debug, Default)]
struct Slot {
    /// `v ≈ scale * q`.
    scale: f64,
    /// The largest `|v_i - scale * q_i|`.
    resid: f64,
    /// `Σ |v_i|`.
    l1: f64,
}

/// The codes of one column, cut for a search ([`Codes::for_search`]) or beside the searches
/// ([`Codes::cut_some`]).
#[derive(Debug)]
pub(crate) struct Codes {
    coded: RwLock<Coded>,
    /// A search found more left to cut than it cuts itself: cut in the background.
    wanted: AtomicBool,
}

/// Slots a search cuts itself before reading the codes (under 2 ms of one core at 768
/// floats); with more left, it scans exactly and leaves the cutting to [`Codes::cut_some`].
pub(crate) const CUT_INLINE: usize = 2048;

/// The codes of one column, slot by slot, as a search reads them.
#[derive(Debug)]
pub(crate) struct Coded {
    dim: usize,
    codes: Vec<i8>,
    slots: Vec<Slot>,
    /// Slots holding a value that is not finite: while there are any, bounds mean nothing and
    /// searches scan exactly.
    unbounded: usize,
    unbounded_at: Vec<bool>,
    /// The largest stored `|v_i|` ever set (it only grows): with the query's, it tells
    /// whether a score could overflow `f32`, where bounds would mean nothing.
    largest: f64,
    /// Slots written since their codes were cut, each once.
    stale: Vec<u32>,
    stale_at: Vec<bool>,
}

/// A query cut into codes, with what its bounds need.
#[derive(Debug)]
pub(crate) struct CodedQuery {
    codes: Vec<i16>,
    /// `x ≈ scale * p`.
    scale: f64,
    /// The largest `|x_i - scale * p_i|`.
    resid: f64,
    /// `Σ |p_i|`.
    l1_codes: f64,
    /// The largest `|x_i|`.
    max: f64,
    /// Bound on the relative rounding of a `dim`-term `f32` dot product: `n u / (1 - n u)`.
    gamma: f64,
}

/// Largest magnitude of a stored vector's codes.
const STORED_LEVELS: f32 = 63.0;
/// Largest magnitude of a query's codes: four products of a query code and a stored one
/// add up within `i16` (4 × 127 × 63 = 32,004), which is what makes [`code_dot`] fast.
const QUERY_LEVELS: f32 = 127.0;

/// What cutting a vector into codes found, every figure an upper bound where rounding
/// could make it low.
#[derive(Clone, Copy, Debug)]
struct Cut {
    /// `v ≈ scale * q` (an `f32` value, so both sides of the identity use the same one).
    scale: f64,
    /// The largest `|v_i - scale * q_i|`.
    resid: f64,
    /// `Σ |v_i|`.
    l1: f64,
    /// The largest `|v_i|`.
    max: f64,
}

/// Adding this to an `f32` below 2^22 in magnitude and taking it away again rounds it to a
/// whole number (ties to even), in a form the compiler vectorizes.
const ROUNDER: f32 = 12_582_912.0;

/// Cuts `v` into codes within `±levels` written to `out`. `None` when a value is not finite
/// or the sum of magnitudes overflows. Written as lanes of eight in `f32` so that it
/// vectorizes: it runs on every upsert (~0.8 µs for 768 floats, against ~5 µs in `f64`).
fn cut<T: From<i8>>(v: &[f32], levels: f32, out: &mut [T]) -> Option<Cut> {
    let (mut max, mut l1, mut bad) = ([0f32; 8], [0f32; 8], false);
    let lanes = v.chunks_exact(8);
    let rest = lanes.remainder();
    let mut take = |i: usize, x: f32| {
        let a = x.abs();
        bad |= !a.is_finite();
        max[i] = if a > max[i] { a } else { max[i] };
        l1[i] += a;
    };
    for lane in lanes {
        for (i, &x) in lane.iter().enumerate() {
            take(i, x);
        }
    }
    for &x in rest {
        take(0, x);
    }
    let max = max.iter().fold(0f32, |m, &a| if a > m { a } else { m });
    let l1: f32 = l1.iter().sum();
    if bad || !l1.is_finite() {
        return None;
    }
    let scale = max / levels;
    // A scale too small to invert leaves every code 0 and the residues the values.
    let inv = if scale >= f32::MIN_POSITIVE {
        1.0 / scale
    } else {
        0.0
    };
    let mut resid = [0f32; 8];
    let mut code = |i: usize, x: f32| {
        let q = ((x * inv + ROUNDER) - ROUNDER).clamp(-levels, levels);
        let d = (x - scale * q).abs();
        resid[i] = if d > resid[i] { d } else { resid[i] };
        // A whole number within ±127: the casts are exact.
        T::from(q as i32 as i8)
    };
    let whole = v.len() / 8 * 8;
    for (o, x) in out[..whole].chunks_exact_mut(8).zip(v.chunks_exact(8)) {
        for i in 0..8 {
            o[i] = code(i, x[i]);
        }
    }
    for (o, &x) in out[whole..].iter_mut().zip(&v[whole..]) {
        *o = code(0, x);
    }
    let resid = resid.iter().fold(0f32, |m, &a| if a > m { a } else { m });
    // Rounding in `scale * q` and the subtraction: |r| <= (d (1 + 2u) + u max) / (1 - u).
    // Rounding in the sum of magnitudes: at most n u (1 + ...) of it.
    let u = f64::from(f32::EPSILON) / 2.0;
    let n = v.len() as f64;
    Some(Cut {
        scale: f64::from(scale),
        resid: (f64::from(resid) * (1.0 + 2.0 * u) + u * f64::from(max)) * (1.0 + 2.0 * u),
        l1: f64::from(l1) * (1.0 + 2.0 * n * u),
        max: f64::from(max),
    })
}

impl Codes {
    /// No slots yet, for vectors of `dim` floats.
    pub(crate) fn new(dim: usize) -> Self {
        Codes {
            coded: RwLock::new(Coded {
                dim,
                codes: Vec::new(),
                slots: Vec::new(),
                unbounded: 0,
                unbounded_at: Vec::new(),
                largest: 0.0,
                stale: Vec::new(),
                stale_at: Vec::new(),
            }),
            wanted: AtomicBool::new(false),
        }
    }

    fn read(&self) -> RwLockReadGuard<'_, Coded> {
        self.coded.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn coded(&mut self) -> &mut Coded {
        self.coded.get_mut().unwrap_or_else(PoisonError::into_inner)
    }

    /// Slot `s` holds a new vector: its codes are cut before the next search. A slot the
    /// codes do not reach yet is cut when they grow to it.
    pub(crate) fn written(&mut self, s: usize) {
        let c = self.coded();
        if s < c.stale_at.len() && !c.stale_at[s] {
            c.stale_at[s] = true;
            // Slots are u32 throughout the store.
            c.stale.push(s as u32);
        }
    }

    /// The codes for a search over `data` (the column's vectors), first cut where they are
    /// missing or stale when that is at most [`CUT_INLINE`] slots; `None`, with the codes
    /// marked wanted, when more is left, and `None` while they are being cut (the caller
    /// scans exactly).
    pub(crate) fn for_search(&self, data: &[f32]) -> Option<RwLockReadGuard<'_, Coded>> {
        let coded = match self.coded.try_read() {
            Ok(coded) => coded,
            Err(TryLockError::Poisoned(p)) => p.into_inner(),
            // Being cut (a step of the background cut, which may take the lock again before
            // a waiting reader runs): scan exactly rather than wait for the whole cut.
            Err(TryLockError::WouldBlock) => return None,
        };
        match coded.left(data) {
            0 => return Some(coded),
            left if left > CUT_INLINE => {
                self.wanted.store(true, Ordering::Relaxed);
                return None;
            }
            _ => {}
        }
        drop(coded);
        // Writes hold the store exclusively, so only other searches (or the background cut)
        // can be here: whichever takes the lock first cuts, the others find less to do.
        self.cut_some(data, usize::MAX);
        Some(self.read())
    }

    /// The codes, every missing or stale slot cut first.
    #[cfg(test)]
    pub(crate) fn fresh(&self, data: &[f32]) -> RwLockReadGuard<'_, Coded> {
        self.cut_some(data, usize::MAX);
        self.read()
    }

    /// Whether a search left these codes for the background to cut.
    pub(crate) fn wanted(&self) -> bool {
        self.wanted.load(Ordering::Relaxed)
    }

    /// Cuts up to `step` of the slots whose codes are missing or stale; true (and no longer
    /// wanted) once none is left.
    pub(crate) fn cut_some(&self, data: &[f32], step: usize) -> bool {
        let mut coded = self.coded.write().unwrap_or_else(PoisonError::into_inner);
        coded.recode(data, step);
        let done = coded.left(data) == 0;
        if done {
            self.wanted.store(false, Ordering::Relaxed);
        }
        done
    }
}

/// What cutting one slot changed: `(slot, its codes' stats or None when unbounded)`.
type SlotCut = (usize, Option<Cut>);

impl Coded {
    /// Slots of `data` whose codes are missing or stale.
    fn left(&self, data: &[f32]) -> usize {
        (data.len() / self.dim).saturating_sub(self.slots.len()) + self.stale.len()
    }

    /// Cuts up to `budget` slots: stale ones first, then new slots of `data` in order; on
    /// every core when there are many.
    fn recode(&mut self, data: &[f32], budget: usize) {
        let dim = self.dim;
        let (old, n) = (self.slots.len(), data.len() / dim);
        let take = self.stale.len().min(budget);
        let mut stale: Vec<u32> = self.stale.drain(..take).collect();
        let grow_to = n.min(old.saturating_add(budget - take));
        if grow_to > old {
            // All of it at once: growing in steps would copy the codes at every doubling.
            self.codes.reserve_exact(n * dim - self.codes.len());
            self.codes.resize(grow_to * dim, 0);
            self.slots.resize(grow_to, Slot::default());
            self.unbounded_at.resize(grow_to, false);
            self.stale_at.resize(grow_to, false);
            // Slots are u32 throughout the store.
            stale.extend((old..grow_to).map(|s| s as u32));
        }
        stale.sort_unstable();
        let per = stale
            .len()
            .div_ceil(parts_for(stale.len().saturating_mul(dim)))
            .max(1);
        // Each run of stale slots is cut into a stretch of the codes of its own, so that the
        // runs can be cut at once.
        let mut runs = Vec::new();
        let (mut rest, mut base): (&mut [i8], usize) = (&mut self.codes, 0);
        for run in stale.chunks(per) {
            let end = run.last().map_or(base, |&s| s as usize + 1);
            let (stretch, tail) = std::mem::take(&mut rest).split_at_mut((end - base) * dim);
            runs.push((base, run, stretch));
            (rest, base) = (tail, end);
        }
        let cut_run = move |(base, run, stretch): (usize, &[u32], &mut [i8])| {
            run.iter()
                .map(|&s| {
                    let (s, at) = (s as usize, (s as usize - base) * dim);
                    let v = &data[s * dim..(s + 1) * dim];
                    (s, cut::<i8>(v, STORED_LEVELS, &mut stretch[at..at + dim]))
                })
                .collect::<Vec<SlotCut>>()
        };
        let cuts = each_on_a_thread(runs, cut_run);
        for (s, cut) in cuts.into_iter().flatten() {
            self.stale_at[s] = false;
            self.apply(s, cut);
        }
    }

    /// Records slot `s`'s new stats.
    fn apply(&mut self, s: usize, cut: Option<Cut>) {
        if self.unbounded_at[s] {
            self.unbounded -= 1;
        }
        self.unbounded_at[s] = cut.is_none();
        self.slots[s] = match cut {
            Some(cut) => {
                self.largest = self.largest.max(cut.max);
                Slot {
                    scale: cut.scale,
                    resid: cut.resid,
                    l1: cut.l1,
                }
            }
            None => {
                self.unbounded += 1;
                Slot::default()
            }
        };
    }

    /// The query's codes, or `None` when bounds cannot be had: a value that is not finite
    /// (in the query or stored), or values so large that a score could overflow `f32`. The
    /// caller then scans exactly.
    pub(crate) fn query(&self, x: &[f32]) -> Option<CodedQuery> {
        if self.unbounded > 0 || x.len() != self.dim {
            return None;
        }
        let mut codes = vec![0i16; x.len()];
        let cut = cut::<i16>(x, QUERY_LEVELS, &mut codes)?;
        let n = x.len() as f64;
        if cut.max * self.largest * n >= 1e36 {
            return None;
        }
        let u = f64::from(f32::EPSILON) / 2.0;
        Some(CodedQuery {
            l1_codes: codes.iter().map(|&p| f64::from(p).abs()).sum(),
            codes,
            scale: cut.scale,
            resid: cut.resid,
            max: cut.max,
            gamma: n * u / (1.0 - n * u),
        })
    }

    /// Lower and upper bounds on the exact score of slot `s` against `q`.
    pub(crate) fn bounds(&self, s: usize, q: &CodedQuery) -> (f64, f64) {
        let slot = self.slots[s];
        let codes = &self.codes[s * self.dim..(s + 1) * self.dim];
        let estimate = q.scale * slot.scale * f64::from(code_dot(&q.codes, codes));
        let n = self.dim as f64;
        // x·v - estimate = t Σ p r + s Σ w q + Σ w r, with |s q_i| <= |v_i| + resid; the
        // reported score differs from x·v by at most gamma Σ |x_i v_i|.
        let cut_off = q.scale * q.l1_codes * slot.resid
            + q.resid * (slot.l1 + n * slot.resid)
            + n * q.resid * slot.resid
            + q.gamma * q.max * slot.l1;
        // Margins for the f64 arithmetic here and products that underflow in the f32 sum.
        let err = cut_off * (1.0 + 1e-9) + estimate.abs() * 1e-12 + n * 1e-44;
        (estimate - err, estimate + err)
    }
}

/// `Σ p_i q_i` of a query's codes and a stored vector's, exact: each product is within
/// ±8,001, four of them within `i16`, and 65,536 terms within `i32`. Summing four products
/// in 16-bit lanes before widening them halves the instructions of a plain `i32` sum (the
/// scan is bound by this loop once it reads a quarter of the bytes).
fn code_dot(p: &[i16], q: &[i8]) -> i32 {
    let mut acc = [0i32; 16];
    let (cp, cq) = (p.chunks_exact(64), q.chunks_exact(64));
    let (rp, rq) = (cp.remainder(), cq.remainder());
    for (a, b) in cp.zip(cq) {
        let mut lanes = [0i16; 16];
        for k in 0..4 {
            for i in 0..16 {
                lanes[i] += a[16 * k + i] * i16::from(b[16 * k + i]);
            }
        }
        for i in 0..16 {
            acc[i] += i32::from(lanes[i]);
        }
    }
    let mut sum: i32 = acc.iter().sum();
    for (&a, &b) in rp.iter().zip(rq) {
        sum += i32::from(a) * i32::from(b);
    }
    sum
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::collection::types::dot;

    /// A small deterministic generator (xorshift), so failures reproduce.
    fn floats(n: usize, seed: &mut u64, spread: f32) -> Vec<f32> {
        (0..n)
            .map(|_| {
                *seed ^= *seed << 13;
                *seed ^= *seed >> 7;
                *seed ^= *seed << 17;
                ((*seed >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * spread
            })
            .collect()
    }

    /// A column of `vectors` (`dim` floats each) with its codes, none cut yet.
    fn column(dim: usize, vectors: &[Vec<f32>]) -> (Codes, Vec<f32>) {
        (Codes::new(dim), vectors.concat())
    }

    #[test]
    fn the_exact_score_lies_within_the_bounds() {
        let mut seed = 0x9e37_79b9_7f4a_7c15;
        // 2,000 slots of 768 floats are cut on every core.
        for (dim, n) in [
            (1, 200),
            (2, 200),
            (7, 200),
            (16, 200),
            (33, 200),
            (768, 2000),
        ] {
            let stored: Vec<Vec<f32>> = (0..n)
                .map(|i| floats(dim, &mut seed, [1e-6, 1.0, 3e4][i % 3]))
                .collect();
            let (codes, data) = column(dim, &stored);
            let codes = codes.fresh(&data);
            for spread in [1e-5, 1.0, 1e5] {
                let x = floats(dim, &mut seed, spread);
                let q = codes.query(&x).expect("finite");
                for (s, v) in stored.iter().enumerate() {
                    let exact = f64::from(dot(&x, v));
                    let (lo, hi) = codes.bounds(s, &q);
                    assert!(lo <= exact && exact <= hi, "{lo} <= {exact} <= {hi}");
                    // Tight enough to prune: within a few percent of the scale of the scores.
                    let scale = x.iter().map(|a| a.abs()).sum::<f32>()
                        * v.iter().map(|a| a.abs()).fold(0f32, f32::max);
                    assert!(
                        hi - lo <= 0.1 * f64::from(scale) + 1e-30,
                        "{lo}..{hi} vs {scale}"
                    );
                }
            }
        }
    }

    #[test]
    fn code_dot_is_exact_at_the_extremes() {
        for dim in [1, 63, 64, 65, 768, 65_536] {
            let p: Vec<i16> = (0..dim)
                .map(|i| if i % 3 == 0 { -127 } else { 127 })
                .collect();
            for flip in [false, true] {
                let q: Vec<i8> = (0..dim)
                    .map(|i| if (i % 3 == 0) != flip { -63 } else { 63 })
                    .collect();
                let naive: i64 = p
                    .iter()
                    .zip(&q)
                    .map(|(&a, &b)| i64::from(a) * i64::from(b))
                    .sum();
                assert_eq!(i64::from(code_dot(&p, &q)), naive, "dim {dim}");
            }
        }
    }

    #[test]
    fn zero_vectors_are_bounded_exactly_and_values_that_are_not_finite_stop_bounding() {
        let mut codes = Codes::new(3);
        let mut data = vec![0.0; 3];
        {
            let coded = codes.fresh(&data);
            let q = coded.query(&[1.0, 2.0, 3.0]).expect("finite");
            let (lo, hi) = coded.bounds(0, &q);
            assert!(lo <= 0.0 && (0.0..1e-40).contains(&hi), "{lo}..{hi}");
            assert!(coded.query(&[f32::NAN, 0.0, 0.0]).is_none());
        }
        data.extend([f32::INFINITY, 0.0, 0.0]);
        assert!(codes.fresh(&data).query(&[1.0, 2.0, 3.0]).is_none());
        // Overwritten with finite values, the column bounds again once searched.
        data[3] = 1.0;
        codes.written(1);
        {
            let coded = codes.fresh(&data);
            let q = coded.query(&[1.0, 2.0, 3.0]).expect("finite again");
            let (lo, hi) = coded.bounds(1, &q);
            assert!(lo <= 1.0 && 1.0 <= hi);
        }
        // Scores that could overflow f32 are not bounded.
        data.extend([0.0, 1e20, 0.0]);
        assert!(codes.fresh(&data).query(&[1e18, 0.0, 0.0]).is_none());
        assert!(codes.fresh(&data).query(&[1e3, 0.0, 0.0]).is_some());
    }

    #[test]
    fn writes_are_cut_at_the_next_search_and_only_once() {
        let mut seed = 7;
        let stored: Vec<Vec<f32>> = (0..3000).map(|_| floats(768, &mut seed, 1.0)).collect();
        let (mut codes, mut data) = column(768, &stored);
        let q = floats(768, &mut seed, 1.0);
        let within = |codes: &Codes, data: &[f32], s: usize| {
            let coded = codes.fresh(data);
            assert!(coded.stale.is_empty());
            let (lo, hi) = coded.bounds(s, &coded.query(&q).expect("finite"));
            let exact = f64::from(dot(&q, &data[s * 768..(s + 1) * 768]));
            lo <= exact && exact <= hi
        };
        assert!(within(&codes, &data, 2999));
        // Slot 5 written twice between searches: stale once, and bounded by its new value.
        for _ in 0..2 {
            data[5 * 768..6 * 768].copy_from_slice(&floats(768, &mut seed, 50.0));
            codes.written(5);
        }
        assert_eq!(codes.coded().stale, vec![5]);
        assert!(within(&codes, &data, 5));
    }

    #[test]
    fn searches_leave_large_cuts_to_steps_that_end_as_one_whole_cut() {
        let mut seed = 11;
        let n = CUT_INLINE * 3 + 5;
        let stored: Vec<Vec<f32>> = (0..n).map(|_| floats(16, &mut seed, 1.0)).collect();
        let (mut stepped, mut data) = column(16, &stored);
        // Too much left: the search gets nothing, and the codes are wanted.
        assert!(stepped.for_search(&data).is_none());
        assert!(stepped.wanted());
        assert!(!stepped.cut_some(&data, 1000));
        // A write between steps, to a slot already cut: cut again before the new slots.
        data[3 * 16..4 * 16].copy_from_slice(&floats(16, &mut seed, 9.0));
        stepped.written(3);
        let mut calls = 1;
        loop {
            calls += 1;
            if stepped.cut_some(&data, 1000) {
                break;
            }
        }
        // Every slot once, and the rewritten one again: no step cut less than its budget.
        assert_eq!(calls, (n + 1).div_ceil(1000));
        assert!(!stepped.wanted(), "cut: no longer wanted");
        let whole = Codes::new(16);
        let (a, b) = (stepped.fresh(&data), whole.fresh(&data));
        assert_eq!(a.codes, b.codes);
        assert_eq!(a.stale, b.stale);
        for (x, y) in a.slots.iter().zip(&b.slots) {
            assert_eq!((x.scale, x.resid, x.l1), (y.scale, y.resid, y.l1));
        }
        drop((a, b));
        // A few writes since: a search cuts them itself and reads the codes.
        for s in [1, 2] {
            stepped.written(s);
        }
        let coded = stepped.for_search(&data).expect("little left: cut inline");
        assert!(coded.stale.is_empty());
    }
}

//! A Dot or Cosine column kept a second time as 8-bit codes, so that an exact search reads a
//! quarter of the bytes first. Each stored vector `v` is `scale * q + r` with `q` whole
//! numbers in `-63..=63`; the query `x` is cut the same way, within ±127. The codes give an estimate of
//! `x · v` from whole numbers (added exactly), and the parts cut off give a bound on how far
//! the exactly computed score (the `f32` sum that the search reports) can be from that
//! estimate, rounding of that sum included. A search scores exactly only the points whose
//! bound reaches the best hits' bounds, so it returns what a full exact pass returns.

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

/// The codes of one column, slot by slot.
#[derive(Debug)]
pub(crate) struct Codes {
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
            dim,
            codes: Vec::new(),
            slots: Vec::new(),
            unbounded: 0,
            unbounded_at: Vec::new(),
            largest: 0.0,
        }
    }

    /// Room for `additional` more slots.
    pub(crate) fn reserve(&mut self, additional: usize) {
        self.codes.reserve(additional.saturating_mul(self.dim));
        self.slots.reserve(additional);
        self.unbounded_at.reserve(additional);
    }

    /// Appends a slot holding zeros (exactly what their codes say: no residue).
    pub(crate) fn push_zeros(&mut self) {
        self.codes.resize(self.codes.len() + self.dim, 0);
        self.slots.push(Slot::default());
        self.unbounded_at.push(false);
    }

    /// Appends a slot holding `v` (`dim` floats).
    pub(crate) fn push(&mut self, v: &[f32]) {
        let s = self.slots.len();
        self.push_zeros();
        self.set(s, v);
    }

    /// Sets slot `s` (which exists) to `v` (`dim` floats).
    pub(crate) fn set(&mut self, s: usize, v: &[f32]) {
        let out = &mut self.codes[s * self.dim..(s + 1) * self.dim];
        let cut = cut::<i8>(v, STORED_LEVELS, out);
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

    #[test]
    fn the_exact_score_lies_within_the_bounds() {
        let mut seed = 0x9e37_79b9_7f4a_7c15;
        for dim in [1, 2, 7, 16, 33, 768] {
            let mut codes = Codes::new(dim);
            let stored: Vec<Vec<f32>> = (0..200)
                .map(|i| floats(dim, &mut seed, [1e-6, 1.0, 3e4][i % 3]))
                .collect();
            for v in &stored {
                codes.push(v);
            }
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
        codes.push(&[0.0, 0.0, 0.0]);
        let q = codes.query(&[1.0, 2.0, 3.0]).expect("finite");
        let (lo, hi) = codes.bounds(0, &q);
        assert!(lo <= 0.0 && (0.0..1e-40).contains(&hi), "{lo}..{hi}");
        assert!(codes.query(&[f32::NAN, 0.0, 0.0]).is_none());
        codes.push(&[f32::INFINITY, 0.0, 0.0]);
        assert!(codes.query(&[1.0, 2.0, 3.0]).is_none());
        // Overwritten with finite values, the column bounds again.
        codes.set(1, &[1.0, 0.0, 0.0]);
        let q = codes.query(&[1.0, 2.0, 3.0]).expect("finite again");
        let (lo, hi) = codes.bounds(1, &q);
        assert!(lo <= 1.0 && 1.0 <= hi);
        // Scores that could overflow f32 are not bounded.
        codes.push(&[0.0, 1e20, 0.0]);
        assert!(codes.query(&[1e18, 0.0, 0.0]).is_none());
        assert!(codes.query(&[1e3, 0.0, 0.0]).is_some());
    }
}

//! The in-memory view of a collection's points, rebuilt from the data files at start-up.
//!
//! Vectors live in one contiguous column per vector name so a search streams through memory.
//! Search is exact: results equal a brute-force computation by construction. Dot and Cosine
//! columns also keep 8-bit codes of their vectors ([`Codes`]), which a search reads first to
//! rule out the points that cannot be among the hits; the rest are scored exactly.

use std::cmp::Ordering;
use std::collections::{BTreeMap, BinaryHeap};

use super::codes::{Coded, CodedQuery, Codes};
use super::filter::Filter;
use super::parallel::{in_parts, parts_for};
use super::record::{self, Operation, OperationRef, Record, RecordRef};
use super::types::{Distance, Payload, PointId, VectorParams};

struct Column {
    dim: usize,
    distance: Distance,
    data: Vec<f32>,
    present: Vec<bool>,
    /// The vectors again as 8-bit codes, for Dot and Cosine (see [`Codes`]).
    codes: Option<Codes>,
}

impl Column {
    /// Appends a slot: `v`'s `dim` floats, or zeros and absent when there are none.
    fn push(&mut self, v: Option<impl Iterator<Item = f32>>) {
        let start = self.data.len();
        self.present.push(v.is_some());
        match v {
            Some(v) => self.data.extend(v),
            None => self.data.resize(start + self.dim, 0.0),
        }
    }

    /// Overwrites slot `s` with `v`'s `dim` floats.
    fn set(&mut self, s: usize, v: impl Iterator<Item = f32>) {
        let dst = &mut self.data[s * self.dim..(s + 1) * self.dim];
        for (x, v) in dst.iter_mut().zip(v) {
            *x = v;
        }
        self.written(s);
    }

    /// Overwrites slot `s` with `v` (`dim` floats).
    fn set_slice(&mut self, s: usize, v: &[f32]) {
        self.data[s * self.dim..(s + 1) * self.dim].copy_from_slice(v);
        self.written(s);
    }

    /// Slot `s` holds a new vector: marks it present and its codes stale.
    fn written(&mut self, s: usize) {
        if let Some(codes) = &mut self.codes {
            codes.written(s);
        }
        self.present[s] = true;
    }
}

/// Slots of search codes cut per step in the background ([`PointStore::cut_codes`]): ~3 ms of
/// one core at 768 floats, as long as a write may wait for the step.
pub(crate) const CUT_STEP: usize = 4096;

/// All live points of a collection.
pub struct PointStore {
    by_id: BTreeMap<PointId, u32>,
    ids: Vec<PointId>,
    live: Vec<bool>,
    versions: Vec<u64>,
    payloads: Vec<Option<Payload>>,
    columns: BTreeMap<String, Column>,
    free: Vec<u32>,
}

/// A point as read back.
#[derive(Clone, Debug, PartialEq)]
pub struct PointView {
    /// Id.
    pub id: PointId,
    /// Version (the operation that last wrote it).
    pub version: u64,
    /// Payload, if any.
    pub payload: Option<Payload>,
    /// `(name, vector)` pairs.
    pub vectors: Vec<(String, Vec<f32>)>,
}

#[derive(PartialEq)]
struct Scored {
    key: f32,
    slot: u32,
}
impl Eq for Scored {}
impl PartialOrd for Scored {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Scored {
    // Reversed so the max-heap keeps the *worst* kept hit on top.
    fn cmp(&self, other: &Self) -> Ordering {
        other
            .key
            .total_cmp(&self.key)
            .then(self.slot.cmp(&other.slot))
    }
}

/// The best `want` hits of a scan, kept in a max-heap whose top is the worst kept.
struct TopHits {
    want: usize,
    heap: BinaryHeap<Scored>,
}

impl TopHits {
    fn new(want: usize) -> Self {
        TopHits {
            want,
            heap: BinaryHeap::with_capacity(want + 1),
        }
    }

    /// Keeps `slot` if it is among the best `want` so far. Slots are offered in ascending
    /// order, so of equal keys the earliest slots are kept.
    fn offer(&mut self, key: f32, slot: u32) {
        if self.heap.len() < self.want {
            self.heap.push(Scored { key, slot });
        } else if self.heap.peek().is_some_and(|worst| key > worst.key) {
            self.heap.pop();
            self.heap.push(Scored { key, slot });
        }
    }
}

/// Runs `scan` over `0..n` slots in `parts` parts at once. The parts' survivors are offered
/// again in slot order, so the result is exactly the one a single pass gives: a hit that
/// lost within its part loses to the same hits overall.
fn scan_in_parts<F>(n: usize, parts: usize, scan: F, want: usize) -> TopHits
where
    F: Fn(std::ops::Range<usize>) -> TopHits + Sync,
{
    let mut found = in_parts(n, parts, scan);
    if found.len() == 1 {
        return found.remove(0);
    }
    let mut candidates: Vec<Scored> = found.into_iter().flat_map(|t| t.heap).collect();
    candidates.sort_unstable_by_key(|c| c.slot);
    let mut top = TopHits::new(want);
    for c in candidates {
        top.offer(c.key, c.slot);
    }
    top
}

/// The `want` best lower bounds seen: no point can beat `want` points whose lower bounds
/// are above its upper bound. Kept among at most twice as many, settled by selection.
struct Floor {
    want: usize,
    lows: Vec<f64>,
    /// The `want`-th best lower bound when last settled (-∞ before): never above the true
    /// one, which is all the scan needs.
    level: f64,
}

impl Floor {
    fn new(want: usize) -> Self {
        Floor {
            want,
            lows: Vec::new(),
            level: f64::NEG_INFINITY,
        }
    }

    fn offer(&mut self, low: f64) {
        // At or below the level, it cannot raise it.
        if low > self.level {
            self.lows.push(low);
            if self.lows.len() >= self.want.saturating_mul(2) {
                self.settle();
            }
        }
    }

    /// Keeps the `want` best and sets the level to the worst of them.
    fn settle(&mut self) {
        if self.want > 0 && self.lows.len() >= self.want {
            let k = self.want - 1;
            self.lows.select_nth_unstable_by(k, |a, b| b.total_cmp(a));
            self.lows.truncate(self.want);
            self.level = self.lows[k];
        }
    }
}

/// A full exact top-`want` scan: every eligible slot scored.
fn exact_scan(
    n: usize,
    parts: usize,
    want: usize,
    (higher, threshold): (bool, Option<f32>),
    eligible: impl Fn(usize) -> bool + Sync,
    exact: impl Fn(usize) -> f32 + Sync,
) -> TopHits {
    let scan = |slots: std::ops::Range<usize>| {
        let mut heap = TopHits::new(want);
        for s in slots.filter(|&s| eligible(s)) {
            let score = exact(s);
            if let Some(t) = threshold {
                if (higher && score < t) || (!higher && score > t) {
                    continue;
                }
            }
            // `key` is "bigger is better" whatever the distance.
            heap.offer(if higher { score } else { -score }, s as u32);
        }
        heap
    };
    scan_in_parts(n, parts, scan, want)
}

/// An exact top-`want` scan of a Dot or Cosine column that reads the codes first (see
/// [`Codes`]): slots whose upper bound is below the `want`-th best lower bound cannot be
/// among the hits, and the others are scored exactly and offered in slot order, so the hits,
/// ties included, are the ones a full exact pass keeps.
#[allow(clippy::too_many_arguments)]
fn pruned_scan(
    n: usize,
    parts: usize,
    codes: &Coded,
    query: &CodedQuery,
    want: usize,
    threshold: Option<f32>,
    eligible: impl Fn(usize) -> bool + Sync,
    exact: impl Fn(usize) -> f32,
) -> TopHits {
    let t = threshold.map(f64::from);
    let found = in_parts(n, parts, |slots| {
        let mut floor = Floor::new(want);
        let mut candidates = Vec::new();
        for s in slots {
            if !eligible(s) {
                continue;
            }
            let (low, high) = codes.bounds(s, query);
            if t.is_some_and(|t| high < t) {
                continue;
            }
            if high >= floor.level {
                candidates.push((high, s as u32));
            }
            // Only a slot sure to pass the threshold may raise the floor.
            if t.is_none_or(|t| low >= t) {
                floor.offer(low);
            }
        }
        (floor, candidates)
    });
    let mut floor = Floor::new(want);
    for (part, _) in &found {
        for &low in &part.lows {
            floor.offer(low);
        }
    }
    floor.settle();
    let level = floor.level;
    let mut slots: Vec<u32> = found
        .into_iter()
        .flat_map(|(_, candidates)| candidates)
        .filter(|&(high, _)| high >= level)
        .map(|(_, s)| s)
        .collect();
    slots.sort_unstable();
    let mut top = TopHits::new(want);
    for s in slots {
        let score = exact(s as usize);
        if threshold.is_none_or(|t| score >= t) {
            top.offer(score, s);
        }
    }
    top
}

impl PointStore {
    /// An empty store with the given vector spaces.
    pub fn new(spaces: &[(String, VectorParams)]) -> Self {
        let columns = spaces
            .iter()
            .map(|(name, p)| {
                (
                    name.clone(),
                    Column {
                        dim: p.size as usize,
                        distance: p.distance,
                        data: Vec::new(),
                        present: Vec::new(),
                        codes: p
                            .distance
                            .higher_is_better()
                            .then(|| Codes::new(p.size as usize)),
                    },
                )
            })
            .collect();
        PointStore {
            by_id: BTreeMap::new(),
            ids: Vec::new(),
            live: Vec::new(),
            versions: Vec::new(),
            payloads: Vec::new(),
            columns,
            free: Vec::new(),
        }
    }

    /// Reserves room for `additional` more points, so loading a large collection does not
    /// grow (and copy) a multi-GiB vector column step by step.
    pub fn reserve(&mut self, additional: usize) {
        self.ids.reserve(additional);
        self.live.reserve(additional);
        self.versions.reserve(additional);
        self.payloads.reserve(additional);
        for col in self.columns.values_mut() {
            col.data.reserve(additional.saturating_mul(col.dim));
            col.present.reserve(additional);
        }
    }

    /// Whether a search left codes to cut in the background ([`PointStore::cut_codes`]).
    pub fn codes_wanted(&self) -> bool {
        self.columns
            .values()
            .any(|c| c.codes.as_ref().is_some_and(Codes::wanted))
    }

    /// Cuts up to `step` slots of each column's codes that a search wanted; true once none
    /// is left to cut. Takes the store shared, so writes wait for one step at most.
    pub fn cut_codes(&self, step: usize) -> bool {
        let mut done = true;
        for col in self.columns.values() {
            if let Some(codes) = col.codes.as_ref().filter(|c| c.wanted()) {
                done &= codes.cut_some(&col.data, step);
            }
        }
        done
    }

    /// Bytes of vector data one point takes when it has every vector.
    pub fn bytes_per_point(&self) -> usize {
        self.columns.values().map(|c| c.dim * 4).sum()
    }

    /// Number of live points.
    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    /// Whether there are no points.
    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }

    /// Applies a replayed or freshly logged record.
    pub fn apply(&mut self, record: Record) {
        match record.op {
            Operation::Upsert(points) => {
                for p in points {
                    let slot = self.slot_for(p.id);
                    let s = slot as usize;
                    self.versions[s] = record.op_id;
                    self.payloads[s] = p.payload;
                    for col in self.columns.values_mut() {
                        col.present[s] = false;
                    }
                    for (name, v) in p.vectors {
                        if let Some(col) = self.columns.get_mut(&name) {
                            if v.len() == col.dim {
                                col.set_slice(s, &v);
                            }
                        }
                    }
                }
            }
            Operation::Delete(ids) => self.delete(&ids),
        }
    }

    /// [`PointStore::apply`] for a record decoded in place (snapshot recovery). A point that
    /// takes a new slot at the end has its vectors decoded straight onto the columns' ends:
    /// one pass over fresh memory, no zero-filling first and no vector allocated per point.
    pub fn apply_encoded(&mut self, record: RecordRef<'_>) {
        let points = match record.op {
            OperationRef::Upsert(points) => points,
            OperationRef::Delete(ids) => return self.delete(&ids),
        };
        for p in points {
            let s = if !self.by_id.contains_key(&p.id) && self.free.is_empty() {
                let slot = self.ids.len() as u32;
                self.ids.push(p.id);
                self.live.push(true);
                self.versions.push(0);
                self.payloads.push(None);
                for (name, col) in self.columns.iter_mut() {
                    let raw = p
                        .vectors
                        .iter()
                        // The last valid one, as `apply` keeps.
                        .rev()
                        .find(|(n, raw)| n == name && raw.len() == col.dim * 4);
                    col.push(raw.map(|(_, raw)| record::f32s(raw)));
                }
                self.by_id.insert(p.id, slot);
                slot as usize
            } else {
                let s = self.slot_for(p.id) as usize;
                for col in self.columns.values_mut() {
                    col.present[s] = false;
                }
                for (name, raw) in &p.vectors {
                    if let Some(col) = self.columns.get_mut(*name) {
                        if raw.len() == col.dim * 4 {
                            col.set(s, record::f32s(raw));
                        }
                    }
                }
                s
            };
            self.versions[s] = record.op_id;
            self.payloads[s] = p.payload;
        }
    }

    fn delete(&mut self, ids: &[PointId]) {
        for id in ids {
            if let Some(slot) = self.by_id.remove(id) {
                let s = slot as usize;
                self.live[s] = false;
                self.payloads[s] = None;
                self.free.push(slot);
            }
        }
    }

    fn slot_for(&mut self, id: PointId) -> u32 {
        if let Some(&slot) = self.by_id.get(&id) {
            return slot;
        }
        let slot = match self.free.pop() {
            Some(slot) => {
                let s = slot as usize;
                self.ids[s] = id;
                self.live[s] = true;
                slot
            }
            None => {
                let slot = self.ids.len() as u32;
                self.ids.push(id);
                self.live.push(true);
                self.versions.push(0);
                self.payloads.push(None);
                for col in self.columns.values_mut() {
                    col.push(None::<std::iter::Empty<f32>>);
                }
                slot
            }
        };
        self.by_id.insert(id, slot);
        slot
    }

    fn view(&self, slot: u32, with_payload: bool, with_vectors: &VectorSelect) -> PointView {
        let s = slot as usize;
        let vectors = self
            .columns
            .iter()
            .filter(|(name, col)| col.present[s] && with_vectors.includes(name))
            .map(|(name, col)| {
                (
                    name.clone(),
                    col.data[s * col.dim..(s + 1) * col.dim].to_vec(),
                )
            })
            .collect();
        PointView {
            id: self.ids[s],
            version: self.versions[s],
            payload: if with_payload {
                self.payloads[s].clone()
            } else {
                None
            },
            vectors,
        }
    }

    /// A point's current vectors and payload (for payload updates).
    pub fn get(&self, id: &PointId) -> Option<PointView> {
        self.by_id
            .get(id)
            .map(|&slot| self.view(slot, true, &VectorSelect::All))
    }

    /// The version (id of the operation that last wrote it) of a live point.
    pub fn version(&self, id: &PointId) -> Option<u64> {
        self.by_id.get(id).map(|&slot| self.versions[slot as usize])
    }

    /// Points by id, in request order, skipping missing ones.
    pub fn retrieve(
        &self,
        ids: &[PointId],
        with_payload: bool,
        with_vectors: &VectorSelect,
    ) -> Vec<PointView> {
        ids.iter()
            .filter_map(|id| {
                self.by_id
                    .get(id)
                    .map(|&slot| self.view(slot, with_payload, with_vectors))
            })
            .collect()
    }

    /// Points in id order starting at `offset`; returns the page and the next offset.
    pub fn scroll(
        &self,
        offset: Option<PointId>,
        limit: usize,
        filter: Option<&Filter>,
        with_payload: bool,
        with_vectors: &VectorSelect,
    ) -> (Vec<PointView>, Option<PointId>) {
        let range = match offset {
            Some(o) => self.by_id.range(o..),
            None => self.by_id.range(..),
        };
        let mut out = Vec::new();
        for (id, &slot) in range {
            if !self.passes(slot, filter) {
                continue;
            }
            if out.len() == limit {
                return (out, Some(*id));
            }
            out.push(self.view(slot, with_payload, with_vectors));
        }
        (out, None)
    }

    /// Ids of points passing the filter.
    pub fn matching_ids(&self, filter: &Filter) -> Vec<PointId> {
        self.by_id
            .iter()
            .filter(|(_, &slot)| self.passes(slot, Some(filter)))
            .map(|(id, _)| *id)
            .collect()
    }

    /// Number of points passing the filter.
    pub fn count(&self, filter: Option<&Filter>) -> usize {
        match filter {
            None => self.by_id.len(),
            Some(_) => self
                .by_id
                .values()
                .filter(|&&slot| self.passes(slot, filter))
                .count(),
        }
    }

    fn passes(&self, slot: u32, filter: Option<&Filter>) -> bool {
        let s = slot as usize;
        filter.is_none_or(|f| f.matches(self.ids[s], self.payloads[s].as_ref()))
    }

    /// Exact top-`limit + offset` search of `query` in vector space `using`.
    ///
    /// Returns `(score, point)` best first, skipping `offset` hits.
    #[allow(clippy::too_many_arguments)]
    pub fn search(
        &self,
        using: &str,
        query: &[f32],
        limit: usize,
        offset: usize,
        filter: Option<&Filter>,
        score_threshold: Option<f32>,
        with_payload: bool,
        with_vectors: &VectorSelect,
    ) -> Vec<(f32, PointView)> {
        let Some(col) = self.columns.get(using) else {
            return Vec::new();
        };
        let want = limit.saturating_add(offset);
        if want == 0 {
            return Vec::new();
        }
        let higher = col.distance.higher_is_better();
        let eligible = |s: usize| self.live[s] && col.present[s] && self.passes(s as u32, filter);
        let exact = |s: usize| {
            col.distance
                .score(query, &col.data[s * col.dim..(s + 1) * col.dim])
        };
        let n = self.ids.len();
        let parts = parts_for(n.saturating_mul(col.dim));
        let fresh = col
            .codes
            .as_ref()
            .and_then(|codes| codes.for_search(&col.data));
        let coded = fresh
            .as_deref()
            .and_then(|codes| Some((codes, codes.query(query)?)));
        let heap = match coded {
            // Codes are kept only where higher is better, so `key` is the score.
            Some((codes, q)) => {
                pruned_scan(n, parts, codes, &q, want, score_threshold, eligible, exact)
            }
            None => exact_scan(n, parts, want, (higher, score_threshold), eligible, exact),
        };
        let mut hits = heap.heap.into_sorted_vec();
        // `into_sorted_vec` is ascending by `Ord`, which is reversed: best first.
        hits.drain(..offset.min(hits.len()));
        hits.into_iter()
            .map(|h| {
                let score = if higher { h.key } else { -h.key };
                (score, self.view(h.slot, with_payload, with_vectors))
            })
            .collect()
    }
}

/// Which vectors to return with points.
#[derive(Clone, Debug, PartialEq)]
pub enum VectorSelect {
    /// None.
    None,
    /// All of them.
    All,
    /// Only these names.
    Names(Vec<String>),
}

impl VectorSelect {
    fn includes(&self, name: &str) -> bool {
        match self {
            VectorSelect::None => false,
            VectorSelect::All => true,
            VectorSelect::Names(n) => n.iter().any(|x| x == name),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::collection::types::{dot, PointWrite};

    fn store(distance: Distance) -> PointStore {
        PointStore::new(&[(
            String::new(),
            VectorParams {
                size: 2,
                distance,
                on_disk: None,
                hnsw_config: None,
                quantization_config: None,
            },
        )])
    }

    fn put(s: &mut PointStore, op: u64, id: u64, v: [f32; 2]) {
        s.apply(Record {
            op_id: op,
            op: Operation::Upsert(vec![PointWrite {
                id: PointId::Num(id),
                vectors: vec![(String::new(), v.to_vec())],
                payload: None,
            }]),
        });
    }

    /// `(key, slot)` of the kept hits, best first.
    fn hits(t: TopHits) -> Vec<(f32, u32)> {
        t.heap
            .into_sorted_vec()
            .into_iter()
            .map(|h| (h.key, h.slot))
            .collect()
    }

    #[test]
    fn a_scan_in_parts_finds_exactly_what_one_pass_finds() {
        // Many equal keys, so which of them is kept depends on the tie rule.
        let keys: Vec<f32> = (0..10_000u32).map(|i| (i % 97) as f32).collect();
        let scan = |slots: std::ops::Range<usize>| {
            let mut top = TopHits::new(25);
            for s in slots {
                top.offer(keys[s], s as u32);
            }
            top
        };
        let one = hits(scan_in_parts(keys.len(), 1, scan, 25));
        for parts in [2, 3, 7] {
            assert_eq!(hits(scan_in_parts(keys.len(), parts, scan, 25)), one);
        }
        assert_eq!(one[0], (96.0, 96));
    }

    /// `n` points of `dim` floats drawn from a few values, so many scores tie, with some
    /// exact duplicates and a few points deleted or without the vector.
    fn tied_store(n: u64, dim: usize) -> PointStore {
        let mut s = PointStore::new(&[(
            String::new(),
            VectorParams {
                size: dim as u64,
                distance: Distance::Dot,
                on_disk: None,
                hnsw_config: None,
                quantization_config: None,
            },
        )]);
        let mut seed = 0x2545_f491_4f6c_dd1d_u64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for id in 0..n {
            let v: Vec<f32> = if id % 7 == 3 {
                // A duplicate of an earlier point.
                s.get(&PointId::Num(id - 3))
                    .and_then(|p| p.vectors.first().map(|v| v.1.clone()))
                    .unwrap_or_else(|| vec![0.5; dim])
            } else {
                (0..dim)
                    .map(|_| [-1.0, -0.5, 0.0, 0.25, 0.5, 1.0][(next() % 6) as usize] * 0.1)
                    .collect()
            };
            let vectors = if id % 50 == 7 {
                vec![]
            } else {
                vec![(String::new(), v)]
            };
            s.apply(Record {
                op_id: id + 1,
                op: Operation::Upsert(vec![PointWrite {
                    id: PointId::Num(id),
                    vectors,
                    payload: None,
                }]),
            });
        }
        s.apply(Record {
            op_id: n + 1,
            op: Operation::Delete((0..n).step_by(13).map(PointId::Num).collect()),
        });
        s
    }

    #[test]
    fn a_scan_pruned_by_codes_keeps_exactly_what_a_full_exact_pass_keeps() {
        let dim = 24;
        let s = tied_store(3000, dim);
        let col = &s.columns[""];
        let codes = col.codes.as_ref().expect("a Dot column has codes");
        let codes = &*codes.fresh(&col.data);
        let queries: Vec<Vec<f32>> = vec![
            col.data[5 * dim..6 * dim].to_vec(),
            (0..dim)
                .map(|i| if i % 2 == 0 { 0.3 } else { -0.2 })
                .collect(),
            vec![1e-3; dim],
            vec![0.0; dim],
        ];
        let n = s.ids.len();
        let mut pruned_away = 0;
        for q in &queries {
            let eligible = |i: usize| s.live[i] && col.present[i];
            let exact = |i: usize| dot(q, &col.data[i * dim..(i + 1) * dim]);
            let coded = codes.query(q).expect("finite");
            for want in [1, 10, 100, 5000] {
                for threshold in [None, Some(0.0), Some(0.01), Some(1e9)] {
                    let full = exact_scan(n, 1, want, (true, threshold), eligible, exact);
                    let want_hits = hits(full);
                    for parts in [1, 3] {
                        let got = hits(pruned_scan(
                            n, parts, codes, &coded, want, threshold, eligible, exact,
                        ));
                        assert_eq!(got, want_hits, "want {want}, threshold {threshold:?}");
                    }
                    let level = codes
                        .bounds(want_hits.last().map_or(0, |h| h.1 as usize), &coded)
                        .0;
                    pruned_away += (0..n)
                        .filter(|&i| eligible(i) && codes.bounds(i, &coded).1 < level)
                        .count();
                }
            }
        }
        // The codes did prune: the test is not passing by scoring everything.
        assert!(pruned_away > 0);
    }

    #[test]
    fn a_search_with_much_left_to_cut_scans_exactly_and_leaves_the_cut_to_steps() {
        let dim = 24;
        let s = tied_store(3000, dim);
        let q: Vec<f32> = (0..dim).map(|i| (i as f32 - 11.0) * 0.01).collect();
        let ask = |s: &PointStore| {
            let hits = s.search("", &q, 10, 0, None, None, false, &VectorSelect::None);
            hits.iter()
                .map(|(score, p)| (*score, p.id))
                .collect::<Vec<_>>()
        };
        assert!(!s.codes_wanted());
        let first = ask(&s);
        assert!(
            s.codes_wanted(),
            "3,000 uncut slots: left for the background"
        );
        let mut steps = 0;
        while !s.cut_codes(500) {
            steps += 1;
        }
        assert_eq!(steps, 5, "3,000 slots in steps of 500");
        assert!(!s.codes_wanted());
        // The codes are now read first, and the answer is the same.
        assert!(s.columns[""]
            .codes
            .as_ref()
            .and_then(|c| c.for_search(&s.columns[""].data))
            .is_some());
        assert_eq!(ask(&s), first);
    }

    /// Ids and scores only: a search of the unnamed vector without a filter.
    fn nearest(
        s: &PointStore,
        q: [f32; 2],
        limit: usize,
        offset: usize,
        threshold: Option<f32>,
    ) -> Vec<(f32, PointView)> {
        s.search(
            "",
            &q,
            limit,
            offset,
            None,
            threshold,
            false,
            &VectorSelect::None,
        )
    }

    #[test]
    fn search_orders_by_distance_kind() {
        let mut s = store(Distance::Euclid);
        put(&mut s, 1, 1, [0.0, 0.0]);
        put(&mut s, 2, 2, [3.0, 4.0]);
        put(&mut s, 3, 3, [1.0, 0.0]);
        let hits = nearest(&s, [0.0, 0.0], 2, 0, None);
        let ids: Vec<_> = hits.iter().map(|(_, p)| p.id).collect();
        assert_eq!(ids, vec![PointId::Num(1), PointId::Num(3)]);
        assert_eq!(hits[1].0, 1.0);
        let offset = nearest(&s, [0.0, 0.0], 1, 2, None);
        assert_eq!(offset[0].0, 5.0);

        let mut d = store(Distance::Dot);
        put(&mut d, 1, 1, [1.0, 0.0]);
        put(&mut d, 2, 2, [2.0, 0.0]);
        let hits = nearest(&d, [1.0, 0.0], 5, 0, Some(1.5));
        assert_eq!(hits.len(), 1);
        assert_eq!(hits[0].1.id, PointId::Num(2));
    }

    #[test]
    fn delete_frees_slots_and_scroll_pages_in_id_order() {
        let mut s = store(Distance::Dot);
        for i in 0..5 {
            put(&mut s, i + 1, 10 - i, [1.0, 1.0]);
        }
        s.apply(Record {
            op_id: 9,
            op: Operation::Delete(vec![PointId::Num(8)]),
        });
        put(&mut s, 10, 100, [0.0, 1.0]);
        assert_eq!(s.len(), 5);
        let (page, next) = s.scroll(None, 2, None, false, &VectorSelect::None);
        assert_eq!(
            page.iter().map(|p| p.id).collect::<Vec<_>>(),
            vec![PointId::Num(6), PointId::Num(7)]
        );
        assert_eq!(next, Some(PointId::Num(9)));
        let (page, next) = s.scroll(next, 10, None, false, &VectorSelect::All);
        assert_eq!(page.len(), 3);
        assert_eq!(next, None);
        assert_eq!(page[2].vectors, vec![(String::new(), vec![0.0, 1.0])]);
        assert_eq!(page[2].version, 10);
    }

    /// Upserts and deletes that exercise every case of applying a record: wrong dimensions,
    /// unknown and repeated names, deletes of missing ids, slot reuse and appends.
    fn mixed_records() -> Vec<Record> {
        let w = |id: u64, vectors: Vec<(&str, Vec<f32>)>| PointWrite {
            id: PointId::Num(id),
            vectors: vectors
                .into_iter()
                .map(|(n, v)| (n.to_string(), v))
                .collect(),
            payload: None,
        };
        vec![
            Record {
                op_id: 1,
                op: Operation::Upsert(vec![
                    w(1, vec![("", vec![1.0, 2.0])]),
                    w(2, vec![("", vec![3.0, 4.0])]),
                    // Wrong dimension, an unknown name: stored absent, as zeros.
                    w(3, vec![("", vec![5.0]), ("other", vec![1.0, 1.0])]),
                    // Two of the same name: the last valid one counts.
                    w(
                        4,
                        vec![("", vec![6.0, 7.0]), ("", vec![8.0, 9.0]), ("", vec![0.5])],
                    ),
                ]),
            },
            Record {
                op_id: 2,
                op: Operation::Delete(vec![PointId::Num(2), PointId::Num(99)]),
            },
            Record {
                op_id: 3,
                op: Operation::Upsert(vec![
                    // Overwrites in place, reuses the freed slot, then appends again.
                    w(1, vec![("", vec![-1.0, -2.0])]),
                    w(5, vec![("", vec![10.0, 11.0])]),
                    w(6, vec![]),
                    w(3, vec![("", vec![12.0, 13.0])]),
                ]),
            },
        ]
    }

    #[test]
    fn records_decoded_in_place_apply_exactly_as_owned_ones() {
        let records = mixed_records();
        let (mut owned, mut in_place) = (store(Distance::Dot), store(Distance::Dot));
        for rec in &records {
            let mut buf = Vec::new();
            record::encode(rec, &mut buf);
            let (decoded, used) = record::decode_framed_ref(&buf)
                .expect("decode")
                .expect("complete");
            assert_eq!(used, buf.len());
            in_place.apply_encoded(decoded);
            owned.apply(rec.clone());
        }
        let all = |s: &PointStore| {
            (0..=100)
                .map(|i| s.get(&PointId::Num(i)))
                .collect::<Vec<_>>()
        };
        assert_eq!(all(&in_place), all(&owned));
        assert_eq!(in_place.len(), 5);
        assert_eq!(
            in_place.get(&PointId::Num(4)).map(|p| p.vectors),
            Some(vec![(String::new(), vec![8.0, 9.0])])
        );
        // Searches see the same columns (slots included).
        let q = [1.0, 1.0];
        let search = |s: &PointStore| s.search("", &q, 10, 0, None, None, true, &VectorSelect::All);
        assert_eq!(search(&in_place), search(&owned));
    }
}

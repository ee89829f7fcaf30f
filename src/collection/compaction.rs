//! Reclaiming dead records without rewriting live data that did not change.
//!
//! Incremental snapshots share a file's pieces with the previous snapshot only while its
//! bytes stay the same, so merging every sealed segment into one (which rewrites all live
//! data) would make the next snapshot upload the whole collection again. Instead each sealed
//! segment is measured on its own, and only segments that are mostly dead are rewritten
//! (with small neighbours folded in, so the number of files stays bounded). Rewriting a
//! segment that is at least half dead writes no more live bytes than the garbage it frees,
//! so over time the bytes rewritten stay proportional to the bytes changed.
//!
//! A record is live when the in-memory store still holds its version of the point: the
//! store applies a write only after it is durable, so a record it no longer holds has a
//! newer, durable replacement (or deletion) later in the log. Delete records are kept
//! unless nothing older remains that they could hide, or the id was written again later.

use std::collections::HashSet;
use std::fs::{self, OpenOptions};
use std::io::{BufWriter, Write};
use std::ops::Range;
use std::path::Path;

use super::files::{for_each_record, io_err, segment_name, FilesError, SealedFile};
use super::record::{self, Operation, Record, FILE_MAGIC};
use super::types::{PointId, PointWrite};

/// A segment is rewritten once at least this fraction of its point entries is dead.
pub(crate) const REWRITE_DEAD_RATIO: f64 = 0.5;

/// What one sealed segment holds.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub(crate) struct SegmentUsage {
    /// Point entries (upserted points and deleted ids).
    pub entries: u64,
    /// Entries a rewrite would drop.
    pub dead: u64,
    /// File size.
    pub bytes: u64,
}

impl SegmentUsage {
    fn dead_ratio(&self) -> f64 {
        if self.entries == 0 {
            1.0
        } else {
            self.dead as f64 / self.entries as f64
        }
    }

    fn mostly_dead(&self) -> bool {
        self.dead > 0 && self.dead_ratio() >= REWRITE_DEAD_RATIO
    }

    /// Bytes a rewrite would keep, assuming dead entries are of average size.
    fn live_bytes(&self) -> u64 {
        (self.bytes as f64 * (1.0 - self.dead_ratio())) as u64
    }
}

/// Which entries of a record survive a rewrite. `version_of` gives a point's current
/// version (`None`: deleted); `oldest` says no older segment exists.
fn survivors(
    rec: Record,
    oldest: bool,
    version_of: &impl Fn(&PointId) -> Option<u64>,
) -> Option<Record> {
    let op = match rec.op {
        Operation::Upsert(points) => {
            // Within one record the last entry for an id wins, as replay applies them.
            let mut seen = HashSet::new();
            let mut keep: Vec<PointWrite> = points
                .into_iter()
                .rev()
                .filter(|p| seen.insert(p.id) && version_of(&p.id) == Some(rec.op_id))
                .collect();
            keep.reverse();
            (!keep.is_empty()).then_some(Operation::Upsert(keep))?
        }
        Operation::Delete(ids) => {
            let keep: Vec<PointId> = ids
                .into_iter()
                .filter(|id| !oldest && version_of(id).is_none())
                .collect();
            (!keep.is_empty()).then_some(Operation::Delete(keep))?
        }
    };
    Some(Record {
        op_id: rec.op_id,
        op,
    })
}

/// Reads one sealed segment and counts what a rewrite would drop.
pub(crate) fn measure(
    seg: &SealedFile,
    oldest: bool,
    version_of: impl Fn(&PointId) -> Option<u64>,
) -> Result<SegmentUsage, FilesError> {
    let mut usage = SegmentUsage {
        bytes: fs::metadata(&seg.path)
            .map_err(io_err("failed to stat", &seg.path))?
            .len(),
        ..SegmentUsage::default()
    };
    for_each_record(&seg.path, |rec| {
        let all = rec.op.len() as u64;
        let kept = survivors(rec, oldest, &version_of).map_or(0, |r| r.op.len() as u64);
        usage.entries += all;
        usage.dead += all - kept;
        Ok(())
    })?;
    Ok(usage)
}

/// Chooses runs of adjacent segments to rewrite, each into one file: segments at least
/// half dead, plus small segments beside them or beside each other. A run's expected
/// output stays under `max_bytes`; a run that would free nothing is dropped.
pub(crate) fn plan(usage: &[SegmentUsage], small: u64, max_bytes: u64) -> Vec<Range<usize>> {
    let is_small = |u: &SegmentUsage| u.bytes < small;
    let wanted: Vec<bool> = usage
        .iter()
        .enumerate()
        .map(|(i, u)| {
            let small_pair = is_small(u)
                && ((i > 0 && is_small(&usage[i - 1])) || usage.get(i + 1).is_some_and(&is_small));
            u.mostly_dead() || small_pair || (is_small(u) && neighbour_dead(usage, i))
        })
        .collect();
    let mut runs = Vec::new();
    let mut i = 0;
    while i < usage.len() {
        if !wanted[i] {
            i += 1;
            continue;
        }
        let start = i;
        let mut out = 0;
        while i < usage.len()
            && wanted[i]
            && (i == start || out + usage[i].live_bytes() <= max_bytes)
        {
            out += usage[i].live_bytes();
            i += 1;
        }
        let run = start..i;
        // One file with little garbage would be rewritten for nothing.
        let worth = run.len() > 1 || usage[start].mostly_dead();
        if worth {
            runs.push(run);
        }
    }
    runs
}

fn neighbour_dead(usage: &[SegmentUsage], i: usize) -> bool {
    (i > 0 && usage[i - 1].mostly_dead()) || usage.get(i + 1).is_some_and(|u| u.mostly_dead())
}

/// Rewrites `files` (adjacent sealed segments, oldest first) into one segment holding only
/// their surviving records, named for the range they cover. Returns the new segment (`None`
/// when nothing survives) and the number of entries dropped. Runs without the writer lock:
/// sealed files never change, and replacing one by a file of the same name is a rename.
pub(crate) fn rewrite(
    dir: &Path,
    files: &[SealedFile],
    oldest: bool,
    version_of: impl Fn(&PointId) -> Option<u64>,
) -> Result<(Option<SealedFile>, u64), FilesError> {
    let (start, end) = match (files.first(), files.last()) {
        (Some(a), Some(b)) => (a.start, b.end),
        _ => return Ok((None, 0)),
    };
    let name = segment_name(start, end);
    let tmp = dir.join(format!("{name}.tmp"));
    let file = OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .open(&tmp)
        .map_err(io_err("failed to create", &tmp))?;
    let mut w = BufWriter::with_capacity(1 << 20, file);
    w.write_all(FILE_MAGIC)
        .map_err(io_err("failed to write", &tmp))?;
    let (mut kept, mut dropped) = (0u64, 0u64);
    let mut buf = Vec::new();
    for seg in files {
        for_each_record(&seg.path, |rec| {
            let all = rec.op.len() as u64;
            if let Some(rec) = survivors(rec, oldest, &version_of) {
                let n = rec.op.len() as u64;
                kept += n;
                dropped += all - n;
                buf.clear();
                record::encode(&rec, &mut buf);
                w.write_all(&buf).map_err(io_err("failed to write", &tmp))?;
            } else {
                dropped += all;
            }
            Ok(())
        })?;
    }
    let file = w
        .into_inner()
        .map_err(|e| io_err("failed to write", &tmp)(e.into_error()))?;
    if kept == 0 {
        drop(file);
        fs::remove_file(&tmp).map_err(io_err("failed to remove", &tmp))?;
        return Ok((None, dropped));
    }
    file.sync_all().map_err(io_err("failed to sync", &tmp))?;
    let target = SealedFile {
        start,
        end,
        path: dir.join(name),
    };
    fs::rename(&tmp, &target.path).map_err(io_err("failed to install", &tmp))?;
    Ok((Some(target), dropped))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seg(entries: u64, dead: u64, bytes: u64) -> SegmentUsage {
        SegmentUsage {
            entries,
            dead,
            bytes,
        }
    }

    const MIB: u64 = 1 << 20;

    #[test]
    fn only_mostly_dead_segments_and_small_neighbours_are_rewritten() {
        let big_live = seg(1000, 100, 64 * MIB);
        let big_dead = seg(1000, 600, 64 * MIB);
        let small = seg(10, 0, MIB);
        // Live data that merely has some garbage keeps its bytes.
        assert!(plan(&[big_live, big_live, big_live], 8 * MIB, 64 * MIB).is_empty());
        // A mostly dead segment is rewritten alone; its live neighbours are left.
        assert_eq!(
            plan(&[big_live, big_dead, big_live], 8 * MIB, 64 * MIB),
            vec![1..2]
        );
        // Small files next to it (or next to each other) are folded in.
        assert_eq!(
            plan(
                &[big_live, big_dead, small, big_live, small, small],
                8 * MIB,
                64 * MIB
            ),
            vec![1..3, 4..6]
        );
        // A single small file with nothing to free is left as it is.
        assert!(plan(&[big_live, small, big_live], 8 * MIB, 64 * MIB).is_empty());
        // Runs stop growing at the size cap (each 32 MiB expected here).
        assert_eq!(
            plan(&[big_dead, big_dead, big_dead], 8 * MIB, 64 * MIB),
            vec![0..2, 2..3]
        );
    }

    fn record(op_id: u64, op: Operation) -> Vec<u8> {
        let mut b = Vec::new();
        record::encode(&Record { op_id, op }, &mut b);
        b
    }

    fn upsert(op_id: u64, id: u64) -> Vec<u8> {
        record(
            op_id,
            Operation::Upsert(vec![PointWrite {
                id: PointId::Num(id),
                vectors: vec![(String::new(), vec![id as f32])],
                payload: None,
            }]),
        )
    }

    fn delete(op_id: u64, id: u64) -> Vec<u8> {
        record(op_id, Operation::Delete(vec![PointId::Num(id)]))
    }

    /// Replays `dir`, returning the final version of each point, as the store would.
    fn replay(dir: &Path) -> (super::super::files::DataDir, Vec<(u64, u64)>) {
        let mut state = std::collections::BTreeMap::new();
        let d = super::super::files::DataDir::open(dir, true, |r| match r.op {
            Operation::Upsert(ps) => {
                for p in ps {
                    if let PointId::Num(n) = p.id {
                        state.insert(n, r.op_id);
                    }
                }
            }
            Operation::Delete(ids) => {
                for id in ids {
                    if let PointId::Num(n) = id {
                        state.remove(&n);
                    }
                }
            }
        })
        .unwrap();
        (d, state.into_iter().collect())
    }

    #[test]
    fn rewriting_a_middle_segment_keeps_its_tombstones_and_leaves_the_rest_alone() {
        let tmp = tempfile::tempdir().unwrap();
        let (mut d, _) = replay(tmp.path());
        // Segment 0: points 1 and 2. Segment 1: 1 and 3 overwritten later, 2 deleted.
        // Segment 2: the overwrites.
        d.append(&upsert(1, 1), true).unwrap();
        d.append(&upsert(2, 2), true).unwrap();
        d.rotate().unwrap();
        d.append(&upsert(3, 1), true).unwrap();
        d.append(&delete(4, 2), true).unwrap();
        d.append(&upsert(5, 3), true).unwrap();
        d.append(&upsert(6, 4), true).unwrap();
        d.rotate().unwrap();
        d.append(&upsert(7, 1), true).unwrap();
        d.append(&upsert(8, 3), true).unwrap();
        d.rotate().unwrap();
        let (_, before) = replay(tmp.path());
        let versions: std::collections::HashMap<u64, u64> = before.iter().copied().collect();
        let version_of = |id: &PointId| match id {
            PointId::Num(n) => versions.get(n).copied(),
            _ => None,
        };
        let sealed = d.sealed().to_vec();
        let untouched: Vec<Vec<u8>> = [&sealed[0], &sealed[2]]
            .iter()
            .map(|s| fs::read(&s.path).unwrap())
            .collect();
        let usage = measure(&sealed[1], false, version_of).unwrap();
        assert_eq!((usage.entries, usage.dead), (4, 2));
        let (out, dropped) = rewrite(tmp.path(), &sealed[1..2], false, version_of).unwrap();
        assert_eq!(dropped, 2);
        d.replace_run(out, &sealed[1..2]).unwrap();
        drop(d);
        let (d, after) = replay(tmp.path());
        // The delete of point 2 still hides segment 0's copy; nothing else changed.
        assert_eq!(after, before);
        assert_eq!(after, vec![(1, 7), (3, 8), (4, 6)]);
        assert_eq!(d.sealed().len(), 3);
        assert_eq!(fs::read(&d.sealed()[0].path).unwrap(), untouched[0]);
        assert_eq!(fs::read(&d.sealed()[2].path).unwrap(), untouched[1]);
    }

    #[test]
    fn a_merge_that_crashes_before_cleanup_loads_its_output() {
        let tmp = tempfile::tempdir().unwrap();
        let (mut d, _) = replay(tmp.path());
        d.append(&upsert(1, 1), true).unwrap();
        d.append(&upsert(2, 2), true).unwrap();
        d.rotate().unwrap();
        d.append(&delete(3, 2), true).unwrap();
        d.append(&upsert(4, 1), true).unwrap();
        d.rotate().unwrap();
        let files = d.sealed().to_vec();
        let version_of = |id: &PointId| (*id == PointId::Num(1)).then_some(4);
        let (out, dropped) = rewrite(tmp.path(), &files, true, version_of).unwrap();
        // Oldest: the tombstone has nothing left to hide.
        assert_eq!(dropped, 3);
        let out = out.unwrap();
        // Simulate a crash before the inputs were removed: load must prefer the output.
        drop(d);
        let (d, state) = replay(tmp.path());
        assert_eq!(state, vec![(1, 4)]);
        assert_eq!(d.sealed(), &[out]);
    }

    #[test]
    fn a_segment_with_nothing_left_disappears() {
        let tmp = tempfile::tempdir().unwrap();
        let (mut d, _) = replay(tmp.path());
        d.append(&upsert(1, 1), true).unwrap();
        d.rotate().unwrap();
        d.append(&upsert(2, 1), true).unwrap();
        d.rotate().unwrap();
        let sealed = d.sealed().to_vec();
        let version_of = |_: &PointId| Some(2);
        let (out, dropped) = rewrite(tmp.path(), &sealed[..1], true, version_of).unwrap();
        assert_eq!((out, dropped), (None, 1));
        d.replace_run(None, &sealed[..1]).unwrap();
        assert_eq!(d.sealed(), &sealed[1..]);
        assert!(!sealed[0].path.exists());
        drop(d);
        assert_eq!(replay(tmp.path()).1, vec![(1, 2)]);
    }
}

//! Damaged packs written again. Chunks that an earlier backup stored are never stored twice,
//! so a new backup cannot repair a damaged pack by uploading "the same piece" as plain pieces
//! are repaired: the pack holds chunks of its own choosing. But the chunk tables of the last
//! backup say which chunk lies at which offset of each pack; when the next backup pulls the
//! file again and meets every chunk of a damaged (or missing) pack, the pack's bytes can be
//! put back together, checked against the pack's name and written over the damaged copy,
//! which makes every backup that reads the pack whole again.

use std::collections::{BTreeMap, HashMap};

use bytes::Bytes;

use super::chunks::{key, Chunk, Table};

/// Packs rebuilt at once: each holds up to a pack's bytes until its last chunk comes, so
/// this bounds the memory a backup spends on repairs.
const OPEN_AT_MOST: usize = 8;

/// A pack larger than this is not rebuilt (packs are sealed at a piece's size, 1 MiB).
const PACK_AT_MOST: u64 = 4 << 20;

/// The chunks of the packs to rebuild, gathered from chunk tables.
#[derive(Debug, Default)]
pub(crate) struct RepairPlan(HashMap<String, BTreeMap<u32, (u32, [u8; 32])>>);

impl RepairPlan {
    /// Notes the chunks that `table` places in packs for which `unsound` holds.
    pub(crate) fn add(&mut self, table: &Table, unsound: &(dyn Fn(&str) -> bool + Sync)) {
        for Chunk(pack, offset, len, hash) in &table.chunks {
            let pack = &table.packs[*pack as usize];
            if let (true, Some(k)) = (unsound(pack), key(hash)) {
                let slots = self.0.entry(pack.clone()).or_default();
                slots.insert(*offset, (*len, k));
            }
        }
    }

    /// The repairs: each pack whose chunks, as the tables place them, fill it from its first
    /// byte to its last with no gap or overlap (otherwise some of its bytes are unknown).
    pub(crate) fn build(self) -> PackRepairs {
        let mut repairs = PackRepairs::default();
        for (name, slots) in self.0 {
            let mut end = 0u64;
            let tiled = slots.iter().all(|(offset, (len, _))| {
                let fits = u64::from(*offset) == end;
                end += u64::from(*len);
                fits
            });
            if !tiled || end == 0 || end > PACK_AT_MOST {
                continue;
            }
            let i = repairs.packs.len();
            for (offset, (len, k)) in &slots {
                repairs
                    .wanted
                    .entry(*k)
                    .or_default()
                    .push((i, *offset, *len));
            }
            repairs.packs.push(Rebuild {
                name,
                len: end as usize,
                bytes: None,
                missing: slots.len(),
            });
        }
        repairs
    }
}

/// Damaged packs being rebuilt from the chunks a backup meets (see the module).
#[derive(Debug, Default)]
pub(crate) struct PackRepairs {
    /// For each chunk wanted: the pack (index into `packs`), its offset and length there.
    wanted: HashMap<[u8; 32], Vec<(usize, u32, u32)>>,
    packs: Vec<Rebuild>,
    /// Packs holding a buffer.
    open: usize,
}

#[derive(Debug)]
struct Rebuild {
    name: String,
    len: usize,
    /// The pack's bytes so far; `None` until its first chunk comes.
    bytes: Option<Vec<u8>>,
    /// Chunks still to come; 0 once rebuilt or given up.
    missing: usize,
}

impl PackRepairs {
    /// Whether no pack is to be rebuilt.
    pub(crate) fn is_empty(&self) -> bool {
        self.wanted.is_empty()
    }

    /// Places chunk `k` (its bytes) wherever a pack wants it; returns each pack it
    /// completed, as `(name, bytes)`, for the caller to check against the name and store.
    pub(crate) fn offer(&mut self, k: &[u8; 32], chunk: &[u8]) -> Vec<(String, Bytes)> {
        let Some(places) = self.wanted.remove(k) else {
            return Vec::new();
        };
        let mut done = Vec::new();
        for (i, offset, len) in places {
            if self.packs[i].missing == 0 {
                continue;
            }
            if len as usize != chunk.len() {
                self.give_up(i);
                continue;
            }
            if self.packs[i].bytes.is_none() {
                if self.open >= OPEN_AT_MOST {
                    self.packs[i].missing = 0;
                    continue;
                }
                self.packs[i].bytes = Some(vec![0; self.packs[i].len]);
                self.open += 1;
            }
            let p = &mut self.packs[i];
            if let Some(b) = p.bytes.as_mut() {
                b[offset as usize..offset as usize + chunk.len()].copy_from_slice(chunk);
            }
            p.missing -= 1;
            if p.missing == 0 {
                if let Some(b) = p.bytes.take() {
                    self.open -= 1;
                    done.push((p.name.clone(), Bytes::from(b)));
                }
            }
        }
        done
    }

    /// Stops rebuilding pack `i`, freeing its buffer.
    fn give_up(&mut self, i: usize) {
        let p = &mut self.packs[i];
        p.missing = 0;
        if p.bytes.take().is_some() {
            self.open -= 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(packs: &[&str], chunks: &[(u32, u32, u32, u8)]) -> Table {
        Table {
            packs: packs.iter().map(|p| p.to_string()).collect(),
            chunks: chunks
                .iter()
                .map(|&(p, o, l, h)| Chunk(p, o, l, hex::encode([h; 32])))
                .collect(),
        }
    }

    #[test]
    fn a_pack_is_rebuilt_once_each_of_its_chunks_came_in_any_order() {
        let mut plan = RepairPlan::default();
        // Pack "bad" holds chunks 1, 2, 3 (chunk 2 listed twice); pack "good" is sound.
        let t = table(
            &["good", "bad"],
            &[
                (0, 0, 2, 9),
                (1, 0, 3, 1),
                (1, 3, 2, 2),
                (1, 3, 2, 2),
                (1, 5, 1, 3),
            ],
        );
        plan.add(&t, &|p| p == "bad");
        let mut r = plan.build();
        assert!(!r.is_empty());
        assert!(r.offer(&[9; 32], b"zz").is_empty(), "a sound pack's chunk");
        assert!(r.offer(&[3; 32], b"c").is_empty());
        assert!(r.offer(&[1; 32], b"aaa").is_empty());
        let done = r.offer(&[2; 32], b"bb");
        assert_eq!(
            done,
            vec![("bad".to_string(), Bytes::from_static(b"aaabbc"))]
        );
        assert!(r.offer(&[2; 32], b"bb").is_empty(), "rebuilt once");
        assert_eq!(r.open, 0);
    }

    #[test]
    fn a_pack_with_bytes_no_table_places_is_not_rebuilt() {
        let mut plan = RepairPlan::default();
        // A gap at 3..4: some chunk of the pack is listed by no table read.
        plan.add(&table(&["bad"], &[(0, 0, 3, 1), (0, 4, 2, 2)]), &|_| true);
        assert!(plan.build().is_empty());
    }

    #[test]
    fn a_chunk_of_another_length_gives_the_pack_up() {
        let mut plan = RepairPlan::default();
        plan.add(&table(&["bad"], &[(0, 0, 3, 1), (0, 3, 2, 2)]), &|_| true);
        let mut r = plan.build();
        assert!(r.offer(&[1; 32], b"aaa").is_empty());
        assert!(r.offer(&[2; 32], b"bbbb").is_empty());
        assert_eq!(r.open, 0, "its buffer is freed");
    }
}

//! Content-defined chunks of shard backups' files. Qdrant's optimizer rewrites a segment as
//! a new file that keeps most of the old bytes in order but shifted, which no fixed cut
//! finds again; FastCDC cuts where the bytes say, so the same runs of bytes give the same
//! chunks wherever they moved. Chunks are small (8 KiB on average), so new ones are
//! packed, in order, into pieces of about a piece's size ("packs"), and each file lists its
//! chunks in chunk tables, themselves stored as pieces: a backup object stays small, a
//! bucket request carries a pack, and everything stored is still a content-addressed piece
//! that the collector, verification, compression and encryption already handle.

use std::collections::HashMap;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use serde::{Deserialize, Serialize};

use super::hashing::is_hex_digest;
use super::pack_repair::PackRepairs;

/// Smallest chunk (but a file's last).
pub(crate) const MIN: usize = 2 << 10;
/// Average chunk. A backup right after Qdrant's optimizer merged segments (100,000 × 768,
/// 4% of the points changed) stored 36.5% of the shards' size with 8 KiB chunks, 51.6% with
/// 16 KiB ones and ~100% with 1 MiB pieces (`BENCHMARKS.md`).
pub(crate) const AVG: usize = 8 << 10;
/// Largest chunk.
pub(crate) const MAX: usize = 32 << 10;
/// Chunks per table: bounds a table to well under a megabyte (about 64 MiB of a file).
pub(crate) const TABLE_CHUNKS: usize = 8192;

/// One chunk of a table: `[pack index, offset in the pack, length, hash]`, the hash named
/// as pieces are (keyed when the storage is encrypted).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Chunk(pub u32, pub u32, pub u32, pub String);

/// A run of a file's chunks, in order, and the packs they lie in.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Table {
    /// The packs (stored pieces), by index.
    pub packs: Vec<String>,
    /// The chunks.
    pub chunks: Vec<Chunk>,
}

impl Table {
    /// Parses a stored table and checks that it covers exactly `len` bytes and names only
    /// packs of `allowed` (the entry's list, which the collector keeps).
    pub(crate) fn parse(bytes: &[u8], len: u64, allowed: &[String]) -> Result<Table, String> {
        let t: Table = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
        let covered: u64 = t.chunks.iter().map(|c| u64::from(c.2)).sum();
        let allowed: std::collections::HashSet<&str> = allowed.iter().map(String::as_str).collect();
        let sound = covered == len
            && t.packs.iter().all(|p| allowed.contains(p.as_str()))
            && t.chunks.iter().all(|Chunk(pack, _, len, hash)| {
                (*pack as usize) < t.packs.len() && *len > 0 && is_hex_digest(hash)
            });
        if sound {
            Ok(t)
        } else {
            Err(format!("a chunk table does not describe its {len} bytes"))
        }
    }

    /// The bytes of the table's chunks as ranges of packs, in order, a chunk that starts
    /// where the one before it ended in the same pack joined to it.
    pub(crate) fn spans(&self) -> Vec<(&str, std::ops::Range<u64>)> {
        let mut out: Vec<(&str, std::ops::Range<u64>)> = Vec::new();
        for Chunk(pack, offset, len, _) in &self.chunks {
            let pack = self.packs[*pack as usize].as_str();
            let r = u64::from(*offset)..u64::from(*offset) + u64::from(*len);
            match out.last_mut() {
                Some((p, last)) if *p == pack && last.end == r.start => last.end = r.end,
                _ => out.push((pack, r)),
            }
        }
        out
    }
}

/// Where a chunk is stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Location {
    /// The pack.
    pub pack: Arc<str>,
    /// Its first byte in the pack.
    pub offset: u32,
    /// Its length.
    pub len: u32,
}

/// What a backup knows of a shard's stored chunks: where each is (those of an earlier backup
/// of the shard, and those this backup stored), and the damaged packs it may write again.
#[derive(Debug, Default)]
pub(crate) struct Index {
    /// Chunks by hash (raw, not hex: an index holds a shard's every chunk, about 60 bytes
    /// each).
    pub stored: HashMap<[u8; 32], Location>,
    /// Packs of the earlier backup that are damaged or missing, rebuilt from the chunks
    /// this backup meets.
    pub repairs: PackRepairs,
}

/// The index key of the chunk named `hash` (hex); `None` if it is not a digest.
pub(crate) fn key(hash: &str) -> Option<[u8; 32]> {
    let mut k = [0u8; 32];
    hex::decode_to_slice(hash, &mut k).ok()?;
    Some(k)
}

/// Adds the chunks of `table` to `stored`.
pub(crate) fn index_table(stored: &mut HashMap<[u8; 32], Location>, table: &Table) {
    let packs: Vec<Arc<str>> = table.packs.iter().map(|p| Arc::from(p.as_str())).collect();
    for Chunk(pack, offset, len, hash) in &table.chunks {
        let Some(k) = key(hash) else { continue };
        stored.entry(k).or_insert_with(|| Location {
            pack: Arc::clone(&packs[*pack as usize]),
            offset: *offset,
            len: *len,
        });
    }
}

/// Cuts a stream of bytes into content-defined chunks as they arrive: a cut is made only
/// once [`MAX`] bytes past the chunk's start are at hand (or the stream ended), so chunks
/// are the same as those of the whole stream at once.
#[derive(Debug, Default)]
pub(crate) struct Cutter {
    buf: BytesMut,
}

impl Cutter {
    /// Appends bytes.
    pub(crate) fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// The chunks that can be cut now (all of them when `end`), in order.
    pub(crate) fn cut(&mut self, end: bool) -> Vec<Bytes> {
        let mut out = Vec::new();
        while !self.buf.is_empty() && (end || self.buf.len() >= MAX) {
            let cdc = fastcdc::v2020::FastCDC::new(&self.buf, MIN, AVG, MAX);
            let (_, next) = cdc.cut(0, self.buf.len());
            let n = next.clamp(1, self.buf.len());
            out.push(self.buf.split_to(n).freeze());
        }
        out
    }

    /// Bytes pushed and not yet cut.
    #[cfg(test)]
    pub(crate) fn pending(&self) -> usize {
        self.buf.len()
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// `n` bytes of xorshift noise from `seed`.
    pub(crate) fn noise(n: usize, seed: u64) -> Vec<u8> {
        let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect()
    }

    fn chunks_of(data: &[u8], step: usize) -> Vec<Vec<u8>> {
        let mut c = Cutter::default();
        let mut out = Vec::new();
        for part in data.chunks(step) {
            c.push(part);
            out.extend(c.cut(false).iter().map(|b| b.to_vec()));
        }
        out.extend(c.cut(true).iter().map(|b| b.to_vec()));
        assert_eq!(c.pending(), 0);
        out
    }

    #[test]
    fn cuts_do_not_depend_on_how_the_bytes_arrive() {
        let data = noise(1 << 20, 7);
        let whole = chunks_of(&data, data.len());
        assert_eq!(whole.concat(), data);
        assert!(whole.iter().all(|c| c.len() <= MAX));
        assert!(whole.len() > 20 && whole.len() < 200, "{}", whole.len());
        for step in [1000, 65536, 100_000] {
            assert_eq!(chunks_of(&data, step), whole, "step {step}");
        }
    }

    #[test]
    fn bytes_removed_in_the_middle_leave_the_other_chunks_alone() {
        let data = noise(1 << 20, 3);
        let mut cut = data.clone();
        cut.drain(500_000..503_072);
        let before: std::collections::HashSet<Vec<u8>> =
            chunks_of(&data, 1 << 16).into_iter().collect();
        let after = chunks_of(&cut, 1 << 16);
        let new: usize = after
            .iter()
            .filter(|c| !before.contains(*c))
            .map(Vec::len)
            .sum();
        assert!(new <= 2 * MAX, "{new} bytes new");
    }

    #[test]
    fn a_table_must_cover_its_bytes_with_its_entrys_packs() {
        let h = "a".repeat(64);
        let t = Table {
            packs: vec![h.clone()],
            chunks: vec![Chunk(0, 0, 10, h.clone()), Chunk(0, 10, 5, h.clone())],
        };
        let bytes = serde_json::to_vec(&t).unwrap();
        let allowed = std::slice::from_ref(&h);
        assert_eq!(Table::parse(&bytes, 15, allowed).unwrap(), t);
        assert!(Table::parse(&bytes, 16, allowed).is_err());
        assert!(Table::parse(&bytes, 15, &[]).is_err());
        assert_eq!(t.spans(), vec![(h.as_str(), 0..15)]);
        let bad = Table {
            packs: vec![h.clone()],
            chunks: vec![Chunk(1, 0, 15, h.clone())],
        };
        assert!(Table::parse(&serde_json::to_vec(&bad).unwrap(), 15, &[h]).is_err());
    }
}

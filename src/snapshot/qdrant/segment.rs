//! Readers of one Qdrant 1.19 segment's files, as extracted from its `segments/{uuid}.tar`:
//! both id trackers (mutable in appendable segments, immutable in optimized ones), chunked
//! and single-file dense vectors with their deletion flags, and gridstore payloads. Each
//! reads from files on disk, one point at a time: memory stays bounded by the id maps.
//!
//! Formats, as Qdrant's source writes them (all little-endian):
//! - `mutable_id_tracker.mappings`: concatenated changes, each a type byte (1 insert numeric
//!   id, 2 insert UUID, 3 delete numeric, 4 delete UUID), the external id (u64, or u128 of
//!   the UUID's little-endian form) and, for inserts, the internal offset (u32).
//! - `mutable_id_tracker.versions`, `id_tracker.versions`: one u64 version per offset.
//! - `id_tracker.mappings` (optimized segments): a u64 count, then per point a type byte
//!   (0 numeric, 1 UUID), the external id and the internal offset (u32);
//!   `id_tracker.deleted`: one bit per offset, set when the point was deleted since.
//! - `vector_storage[-NAME]/vectors/chunk_K.mmap`: `chunk_size_vectors` vectors of `dim`
//!   f32 each, no header (`config.json` gives both); `deleted/flags_a.dat`: one bit per
//!   offset (LSB first), set when the vector is absent.
//! - `vector_storage[-NAME]/matrix.dat` (optimized segments, `Mmap` and `InRamMmap`): the
//!   4-byte header `data`, then every vector back to back; `deleted.dat`: the header `drop`
//!   padded to 8 bytes, then one bit per offset.
//! - `payload_storage/`: `tracker.dat` (a u32 header, then 16 bytes per offset: present
//!   flag, page, block, length), `page_N.dat` pages of `block_size_bytes` blocks; a value
//!   may run on into the next page; LZ4 with its size prepended when `compression` is
//!   `LZ4`; the bytes are the payload's JSON.

use std::collections::HashMap;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_json::Value;

use crate::collection::types::PointId;
use crate::error::{Error, Result};

fn bad(msg: impl Into<String>) -> Error {
    Error::bad_input(format!("invalid Qdrant snapshot: {}", msg.into()))
}

fn read_file(path: &Path, what: &str) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|_| bad(format!("a segment lacks its {what}")))
}

/// A point's vectors by name (`""` for the unnamed one).
pub(crate) type NamedVectors = Vec<(String, Vec<f32>)>;

/// The newest version of each point in one segment and where its data lives.
pub(crate) struct Segment {
    /// External id → internal offset, after every change in the log.
    pub ids: HashMap<PointId, u32>,
    /// Version per internal offset.
    pub versions: Vec<u64>,
    /// The last operation the segment holds (`version` in `segment.json`; 0 when none).
    pub version: u64,
    vectors: Vec<(String, Vectors)>,
    payloads: Option<Payloads>,
}

/// The readers of a segment's dense vectors, by name; other kinds are refused by name.
fn open_vectors(dir: &Path, cfg: &Value) -> Result<Vec<(String, Vectors)>> {
    let mut vectors = Vec::new();
    if let Some(data) = cfg["vector_data"].as_object() {
        for (name, v) in data {
            let storage = v["storage_type"].as_str().unwrap_or("");
            let datatype = v["datatype"].as_str().unwrap_or("float32");
            if !datatype.eq_ignore_ascii_case("float32") {
                return Err(bad(format!(
                    "vector `{name}` is stored as `{datatype}`; snapstream holds float32 vectors only"
                )));
            }
            if !v["multivector_config"].is_null() {
                return Err(bad(format!(
                    "vector `{name}` is a multivector, which snapstream does not hold"
                )));
            }
            let sub = if name.is_empty() {
                "vector_storage".to_string()
            } else {
                format!("vector_storage-{name}")
            };
            let files = dir.join(sub);
            let reader = match storage {
                "InRamChunkedMmap" | "ChunkedMmap" => Vectors::Chunked(Chunked::open(&files)?),
                "Mmap" | "InRamMmap" => Vectors::Matrix(Matrix::open(&files, &v["size"])?),
                // A vector name added to an optimized segment after it was built: no data.
                "Empty" => Vectors::Empty,
                other => {
                    return Err(bad(format!(
                        "vector `{name}` uses storage type `{other}` (in-memory storage of \
                         Qdrant before 1.13); not supported"
                    )))
                }
            };
            vectors.push((name.clone(), reader));
        }
    }
    Ok(vectors)
}

/// The segment's point ids with their internal offsets (deleted ones left out) and the
/// versions by offset, from either id tracker Qdrant writes.
fn open_ids(dir: &Path) -> Result<(HashMap<PointId, u32>, Vec<u64>)> {
    let (ids, versions_file) = if dir.join("id_tracker.mappings").exists() {
        let deleted = std::fs::read(dir.join("id_tracker.deleted")).unwrap_or_default();
        let mappings = read_file(&dir.join("id_tracker.mappings"), "id mappings")?;
        (
            read_immutable_mappings(&mappings, &deleted)?,
            "id_tracker.versions",
        )
    } else {
        let mappings = read_file(&dir.join("mutable_id_tracker.mappings"), "id mappings")?;
        (read_mappings(&mappings)?, "mutable_id_tracker.versions")
    };
    let raw = read_file(&dir.join(versions_file), "versions")?;
    let versions = raw
        .chunks_exact(8)
        .map(|c| u64::from_le_bytes(c.try_into().unwrap_or([0; 8])))
        .collect();
    Ok((ids, versions))
}

impl Segment {
    /// Opens an extracted segment (`dir` is its `snapshot/files`).
    pub(crate) fn open(dir: &Path) -> Result<Self> {
        let meta: Value =
            serde_json::from_slice(&read_file(&dir.join("segment.json"), "segment.json")?)
                .map_err(|e| bad(format!("segment.json: {e}")))?;
        let cfg = &meta["config"];
        let vectors = open_vectors(dir, cfg)?;
        if cfg["sparse_vector_data"]
            .as_object()
            .is_some_and(|m| !m.is_empty())
        {
            return Err(bad(
                "the collection has sparse vectors, which snapstream does not hold",
            ));
        }
        let payloads = match cfg["payload_storage_type"]["type"].as_str() {
            Some("mmap" | "in_ram_mmap") => Some(Payloads::open(&dir.join("payload_storage"))?),
            other => {
                return Err(bad(format!(
                    "payload storage type `{}` is not read (only gridstore: `mmap`, `in_ram_mmap`)",
                    other.unwrap_or("none")
                )))
            }
        };
        if dir.join("id_tracker.i2e").exists() {
            return Err(bad(
                "a segment uses the disk-resident id tracker (serverless mode); not supported",
            ));
        }
        let (ids, versions) = open_ids(dir)?;
        Ok(Segment {
            ids,
            versions,
            version: meta["version"].as_u64().unwrap_or(0),
            vectors,
            payloads,
        })
    }

    /// The version of internal offset `offset` (0 when unknown).
    pub(crate) fn version(&self, offset: u32) -> u64 {
        self.versions.get(offset as usize).copied().unwrap_or(0)
    }

    /// The vectors and payload stored at `offset`.
    pub(crate) fn point(&mut self, offset: u32) -> Result<(NamedVectors, Value)> {
        let mut out = Vec::with_capacity(self.vectors.len());
        for (name, v) in &mut self.vectors {
            if let Some(vec) = v.get(offset)? {
                out.push((name.clone(), vec));
            }
        }
        let payload = match &mut self.payloads {
            Some(p) => p.get(offset)?.unwrap_or(Value::Object(Default::default())),
            None => Value::Object(Default::default()),
        };
        Ok((out, payload))
    }
}

/// Applies the id tracker's change log.
fn read_mappings(raw: &[u8]) -> Result<HashMap<PointId, u32>> {
    let mut ids = HashMap::new();
    let mut at = 0usize;
    let take = |at: &mut usize, n: usize| -> Option<&[u8]> {
        let s = raw.get(*at..*at + n)?;
        *at += n;
        Some(s)
    };
    while at < raw.len() {
        let kind = raw[at];
        at += 1;
        let id = match kind {
            1 | 3 => match take(&mut at, 8) {
                Some(b) => PointId::Num(u64::from_le_bytes(b.try_into().unwrap_or([0; 8]))),
                None => break,
            },
            2 | 4 => match take(&mut at, 16) {
                Some(b) => PointId::Uuid(uuid::Uuid::from_u128_le(u128::from_le_bytes(
                    b.try_into().unwrap_or([0; 16]),
                ))),
                None => break,
            },
            other => {
                return Err(bad(format!(
                    "id mappings hold an unknown change type {other}"
                )))
            }
        };
        if kind <= 2 {
            // A torn entry at the end is what Qdrant itself discards.
            let Some(b) = take(&mut at, 4) else { break };
            ids.insert(id, u32::from_le_bytes(b.try_into().unwrap_or([0; 4])));
        } else {
            ids.remove(&id);
        }
    }
    Ok(ids)
}

/// Whether bit `i` of a little-endian, least-significant-first bit set is on.
fn bit(bits: &[u8], i: usize) -> bool {
    bits.get(i / 8).is_some_and(|b| b & (1 << (i % 8)) != 0)
}

/// Reads an optimized segment's id list, leaving out the points flagged in `deleted`.
fn read_immutable_mappings(raw: &[u8], deleted: &[u8]) -> Result<HashMap<PointId, u32>> {
    let truncated = || bad("the id mappings of an optimized segment are truncated");
    let count = raw
        .get(..8)
        .map(|b| u64::from_le_bytes(b.try_into().unwrap_or([0; 8])))
        .ok_or_else(truncated)?;
    // Each entry takes at least 13 bytes: a lying count cannot make us allocate.
    if count > (raw.len() as u64) / 13 {
        return Err(truncated());
    }
    let mut ids = HashMap::with_capacity(count as usize);
    let mut at = 8usize;
    for _ in 0..count {
        let kind = *raw.get(at).ok_or_else(truncated)?;
        at += 1;
        let width = match kind {
            0 => 8,
            1 => 16,
            other => {
                return Err(bad(format!(
                    "the id mappings of an optimized segment hold an unknown id type {other}"
                )))
            }
        };
        let id_bytes = raw.get(at..at + width).ok_or_else(truncated)?;
        let id = if kind == 0 {
            PointId::Num(u64::from_le_bytes(id_bytes.try_into().unwrap_or([0; 8])))
        } else {
            PointId::Uuid(uuid::Uuid::from_u128_le(u128::from_le_bytes(
                id_bytes.try_into().unwrap_or([0; 16]),
            )))
        };
        at += width;
        let offset = raw
            .get(at..at + 4)
            .map(|b| u32::from_le_bytes(b.try_into().unwrap_or([0; 4])))
            .ok_or_else(truncated)?;
        at += 4;
        if !bit(deleted, offset as usize) {
            ids.insert(id, offset);
        }
    }
    Ok(ids)
}

/// One named vector's storage in a segment.
enum Vectors {
    Chunked(Chunked),
    Matrix(Matrix),
    Empty,
}

impl Vectors {
    fn get(&mut self, offset: u32) -> Result<Option<Vec<f32>>> {
        match self {
            Vectors::Chunked(c) => c.get(offset),
            Vectors::Matrix(m) => m.get(offset),
            Vectors::Empty => Ok(None),
        }
    }
}

fn floats(buf: &[u8]) -> Vec<f32> {
    buf.chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

/// Most dimensions read (Qdrant's own limit is 65,536).
const MAX_DIM: u64 = 65_536;

/// Single-file dense vectors of an optimized segment and their deletion flags.
struct Matrix {
    file: File,
    dim: usize,
    deleted: Vec<u8>,
}

/// Where the deletion bits start in `deleted.dat`: after the 4-byte header, aligned to 8.
const MATRIX_DELETED_START: usize = 8;

impl Matrix {
    fn open(dir: &Path, size: &Value) -> Result<Self> {
        let dim = size
            .as_u64()
            .filter(|d| (1..=MAX_DIM).contains(d))
            .ok_or_else(|| bad("segment.json gives a vector an impossible size"))?;
        let mut file = File::open(dir.join("matrix.dat"))
            .map_err(|_| bad("an optimized segment lacks its vectors (matrix.dat)"))?;
        let mut header = [0u8; 4];
        file.read_exact(&mut header)
            .map_err(|_| bad("matrix.dat is truncated"))?;
        if &header != b"data" {
            return Err(bad("matrix.dat does not start with its header"));
        }
        let deleted = std::fs::read(dir.join("deleted.dat")).unwrap_or_default();
        let deleted = deleted
            .get(MATRIX_DELETED_START..)
            .map(<[u8]>::to_vec)
            .unwrap_or_default();
        Ok(Matrix {
            file,
            dim: dim as usize,
            deleted,
        })
    }

    fn get(&mut self, offset: u32) -> Result<Option<Vec<f32>>> {
        if bit(&self.deleted, offset as usize) {
            return Ok(None);
        }
        let bytes = self.dim * 4;
        let mut buf = vec![0u8; bytes];
        self.file
            .seek(SeekFrom::Start(4 + u64::from(offset) * bytes as u64))
            .and_then(|_| self.file.read_exact(&mut buf))
            .map_err(|_| bad("matrix.dat is shorter than its points"))?;
        Ok(Some(floats(&buf)))
    }
}

#[derive(Deserialize)]
struct ChunkConfig {
    chunk_size_vectors: u64,
    dim: usize,
}

/// Chunked dense vectors of an appendable segment and their deletion flags.
struct Chunked {
    dir: PathBuf,
    cfg: ChunkConfig,
    deleted: Vec<u8>,
    open: Option<(u64, File)>,
}

impl Chunked {
    fn open(dir: &Path) -> Result<Self> {
        let cfg: ChunkConfig = serde_json::from_slice(&read_file(
            &dir.join("vectors/config.json"),
            "vector config",
        )?)
        .map_err(|e| bad(format!("vector config: {e}")))?;
        if cfg.chunk_size_vectors == 0 || cfg.dim == 0 || cfg.dim as u64 > MAX_DIM {
            return Err(bad("vector config has impossible sizes"));
        }
        let status = std::fs::read(dir.join("deleted/status.dat")).unwrap_or_default();
        let file_id = status
            .get(8..16)
            .map_or(0, |b| u64::from_le_bytes(b.try_into().unwrap_or([0; 8])));
        let flags = if file_id == 0 {
            "flags_a.dat"
        } else {
            "flags_b.dat"
        };
        let deleted = std::fs::read(dir.join("deleted").join(flags)).unwrap_or_default();
        Ok(Chunked {
            dir: dir.join("vectors"),
            cfg,
            deleted,
            open: None,
        })
    }

    fn get(&mut self, offset: u32) -> Result<Option<Vec<f32>>> {
        if bit(&self.deleted, offset as usize) {
            return Ok(None);
        }
        let chunk = u64::from(offset) / self.cfg.chunk_size_vectors;
        let within = u64::from(offset) % self.cfg.chunk_size_vectors;
        if self.open.as_ref().map(|(c, _)| *c) != Some(chunk) {
            let path = self.dir.join(format!("chunk_{chunk}.mmap"));
            let f =
                File::open(&path).map_err(|_| bad(format!("vector chunk {chunk} is missing")))?;
            self.open = Some((chunk, f));
        }
        let Some((_, f)) = self.open.as_mut() else {
            return Ok(None);
        };
        let bytes = self.cfg.dim * 4;
        let mut buf = vec![0u8; bytes];
        f.seek(SeekFrom::Start(within * bytes as u64))
            .and_then(|_| f.read_exact(&mut buf))
            .map_err(|_| bad(format!("vector chunk {chunk} is shorter than its points")))?;
        Ok(Some(floats(&buf)))
    }
}

#[derive(Deserialize)]
struct GridConfig {
    page_size_bytes: u64,
    block_size_bytes: u64,
    #[serde(default)]
    compression: Option<String>,
}

/// Gridstore payloads.
struct Payloads {
    dir: PathBuf,
    cfg: GridConfig,
    tracker: File,
    pages: HashMap<u32, File>,
}

/// Largest payload read (compressed or not).
const MAX_PAYLOAD: u64 = 64 << 20;

impl Payloads {
    fn open(dir: &Path) -> Result<Self> {
        let cfg: GridConfig =
            serde_json::from_slice(&read_file(&dir.join("config.json"), "payload config")?)
                .map_err(|e| bad(format!("payload config: {e}")))?;
        if cfg.page_size_bytes == 0 || cfg.block_size_bytes == 0 {
            return Err(bad("payload config has impossible sizes"));
        }
        let tracker = File::open(dir.join("tracker.dat"))
            .map_err(|_| bad("a segment lacks its payload tracker"))?;
        Ok(Payloads {
            dir: dir.to_path_buf(),
            cfg,
            tracker,
            pages: HashMap::new(),
        })
    }

    fn get(&mut self, offset: u32) -> Result<Option<Value>> {
        let mut slot = [0u8; 16];
        let at = 4 + u64::from(offset) * 16;
        if self
            .tracker
            .seek(SeekFrom::Start(at))
            .and_then(|_| self.tracker.read_exact(&mut slot))
            .is_err()
        {
            return Ok(None);
        }
        let word = |i: usize| u32::from_le_bytes([slot[i], slot[i + 1], slot[i + 2], slot[i + 3]]);
        if word(0) == 0 {
            return Ok(None);
        }
        let (mut page, block, len) = (word(4), word(8), u64::from(word(12)));
        if len > MAX_PAYLOAD {
            return Err(bad("a payload is larger than the limit"));
        }
        let mut pos = u64::from(block) * self.cfg.block_size_bytes;
        let mut raw = Vec::with_capacity(len as usize);
        while (raw.len() as u64) < len {
            if pos >= self.cfg.page_size_bytes {
                return Err(bad("a payload pointer lies outside its page"));
            }
            let n = (len - raw.len() as u64).min(self.cfg.page_size_bytes - pos);
            let f = match self.pages.entry(page) {
                std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
                std::collections::hash_map::Entry::Vacant(e) => e.insert(
                    File::open(self.dir.join(format!("page_{page}.dat")))
                        .map_err(|_| bad(format!("payload page {page} is missing")))?,
                ),
            };
            let mut part = vec![0u8; n as usize];
            f.seek(SeekFrom::Start(pos))
                .and_then(|_| f.read_exact(&mut part))
                .map_err(|_| bad(format!("payload page {page} is shorter than its values")))?;
            raw.extend_from_slice(&part);
            // A value that does not fit continues at the start of the next page.
            page += 1;
            pos = 0;
        }
        let json = match self.cfg.compression.as_deref() {
            Some("None") => raw,
            _ => {
                let size = raw
                    .get(..4)
                    .map_or(0, |b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]));
                if u64::from(size) > MAX_PAYLOAD {
                    return Err(bad("a payload is larger than the limit"));
                }
                lz4_flex::decompress_size_prepended(&raw)
                    .map_err(|_| bad("a payload is not valid LZ4"))?
            }
        };
        serde_json::from_slice(&json)
            .map(Some)
            .map_err(|_| bad("a payload is not valid JSON"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_change_log_ends_with_the_last_mapping_of_each_id() {
        let mut raw = vec![1u8];
        raw.extend(7u64.to_le_bytes());
        raw.extend(0u32.to_le_bytes());
        raw.push(2);
        raw.extend(5u128.to_le_bytes());
        raw.extend(1u32.to_le_bytes());
        raw.push(3);
        raw.extend(7u64.to_le_bytes());
        raw.push(1);
        raw.extend(7u64.to_le_bytes());
        raw.extend(2u32.to_le_bytes());
        raw.extend([1, 9, 9]); // torn tail
        let ids = read_mappings(&raw).unwrap();
        assert_eq!(ids.get(&PointId::Num(7)), Some(&2));
        assert_eq!(
            ids.get(&PointId::Uuid(uuid::Uuid::from_u128_le(5))),
            Some(&1)
        );
        assert_eq!(ids.len(), 2);
        assert!(read_mappings(&[9]).is_err());
    }

    #[test]
    fn an_optimized_segment_leaves_out_points_flagged_deleted() {
        let mut raw = 3u64.to_le_bytes().to_vec();
        for (kind, id, offset) in [(0u8, 10u128, 0u32), (1, 11, 1), (0, 12, 2)] {
            raw.push(kind);
            if kind == 0 {
                raw.extend((id as u64).to_le_bytes());
            } else {
                raw.extend(id.to_le_bytes());
            }
            raw.extend(offset.to_le_bytes());
        }
        let ids = read_immutable_mappings(&raw, &[0b010]).unwrap();
        assert_eq!(ids.get(&PointId::Num(10)), Some(&0));
        assert_eq!(ids.get(&PointId::Num(12)), Some(&2));
        assert_eq!(ids.len(), 2, "the UUID at offset 1 is deleted");
        // A count larger than the bytes can hold is refused before anything is allocated.
        let mut lying = u64::MAX.to_le_bytes().to_vec();
        lying.extend(&raw[8..]);
        assert!(read_immutable_mappings(&lying, &[]).is_err());
        assert!(read_immutable_mappings(&raw[..20], &[]).is_err());
    }
}

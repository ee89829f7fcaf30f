//! The binary record format shared by the write-ahead log and sealed segment files.
//!
//! A file is an 8-byte magic followed by records. A record is `len: u32 LE`, `crc32: u32 LE`
//! of the body, then `len` body bytes. One record holds one whole operation, so a batch is
//! applied entirely or (after a torn write) not at all. See `docs/storage-format.md`.

use std::io::{self, Read};

use uuid::Uuid;

use super::types::{Payload, PointId, PointWrite};

/// Magic bytes at the start of every WAL and segment file (format version 1).
pub(crate) const FILE_MAGIC: &[u8; 8] = b"SNAPSEG1";

/// Largest record body accepted when reading, so a corrupted length cannot allocate wildly.
pub(crate) const MAX_RECORD_LEN: usize = 1 << 30;

const KIND_UPSERT: u8 = 1;
const KIND_DELETE: u8 = 2;

/// One durable operation.
#[derive(Clone, Debug, PartialEq)]
pub enum Operation {
    /// Insert or replace whole points.
    Upsert(Vec<PointWrite>),
    /// Delete points by id (missing ids are ignored).
    Delete(Vec<PointId>),
}

impl Operation {
    /// Number of point entries (points upserted or ids deleted).
    pub fn len(&self) -> usize {
        match self {
            Operation::Upsert(p) => p.len(),
            Operation::Delete(ids) => ids.len(),
        }
    }

    /// Whether the operation touches no point.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// An operation with its sequence number, which becomes the `version` of the points it writes.
#[derive(Clone, Debug, PartialEq)]
pub struct Record {
    /// Monotonic operation number within the collection.
    pub op_id: u64,
    /// The operation.
    pub op: Operation,
}

/// A record decoded in place: vectors stay the little-endian bytes of the buffer they came
/// from, so loading one allocates nothing per vector (see `PointStore::apply_encoded`).
pub struct RecordRef<'a> {
    /// Monotonic operation number within the collection.
    pub op_id: u64,
    /// The operation.
    pub op: OperationRef<'a>,
}

/// [`Operation`], borrowing its vectors.
pub enum OperationRef<'a> {
    /// Insert or replace whole points.
    Upsert(Vec<PointRef<'a>>),
    /// Delete points by id.
    Delete(Vec<PointId>),
}

/// [`PointWrite`], borrowing its vectors.
pub struct PointRef<'a> {
    /// Id.
    pub id: PointId,
    /// `(name, little-endian f32 bytes)` pairs.
    pub vectors: Vec<(&'a str, &'a [u8])>,
    /// Payload, if any.
    pub payload: Option<Payload>,
}

/// Decodes little-endian `f32`s; `raw.len()` is a multiple of 4.
pub(crate) fn f32s(raw: &[u8]) -> impl Iterator<Item = f32> + '_ {
    raw.chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
}

impl OperationRef<'_> {
    /// Number of point entries (points upserted or ids deleted).
    pub fn len(&self) -> usize {
        match self {
            OperationRef::Upsert(p) => p.len(),
            OperationRef::Delete(ids) => ids.len(),
        }
    }

    /// Whether the operation touches no point.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl RecordRef<'_> {
    /// The owned record.
    pub fn into_owned(self) -> Record {
        let op = match self.op {
            OperationRef::Upsert(points) => Operation::Upsert(
                points
                    .into_iter()
                    .map(|p| PointWrite {
                        id: p.id,
                        vectors: p
                            .vectors
                            .into_iter()
                            .map(|(name, raw)| (name.to_string(), f32s(raw).collect()))
                            .collect(),
                        payload: p.payload,
                    })
                    .collect(),
            ),
            OperationRef::Delete(ids) => Operation::Delete(ids),
        };
        Record {
            op_id: self.op_id,
            op,
        }
    }
}

/// Why a record could not be read.
#[derive(Debug, thiserror::Error)]
pub(crate) enum RecordError {
    /// The file ended inside a record: a torn write at the tail of the log.
    #[error("file ends inside a record")]
    Truncated,
    /// The checksum or the structure of the body is wrong.
    #[error("corrupted record: {0}")]
    Corrupted(String),
    /// Reading failed.
    #[error("failed to read record")]
    Io(#[from] io::Error),
}

fn put_id(buf: &mut Vec<u8>, id: &PointId) {
    match id {
        PointId::Num(n) => {
            buf.push(0);
            buf.extend_from_slice(&n.to_le_bytes());
        }
        PointId::Uuid(u) => {
            buf.push(1);
            buf.extend_from_slice(u.as_bytes());
        }
    }
}

/// Appends the framed encoding of `record` to `out`.
pub(crate) fn encode(record: &Record, out: &mut Vec<u8>) {
    let start = out.len();
    out.extend_from_slice(&[0u8; 8]);
    out.extend_from_slice(&record.op_id.to_le_bytes());
    match &record.op {
        Operation::Upsert(points) => {
            out.push(KIND_UPSERT);
            out.extend_from_slice(&(points.len() as u32).to_le_bytes());
            for p in points {
                put_id(out, &p.id);
                out.extend_from_slice(&(p.vectors.len() as u16).to_le_bytes());
                for (name, v) in &p.vectors {
                    out.extend_from_slice(&(name.len() as u16).to_le_bytes());
                    out.extend_from_slice(name.as_bytes());
                    out.extend_from_slice(&(v.len() as u32).to_le_bytes());
                    for x in v {
                        out.extend_from_slice(&x.to_le_bytes());
                    }
                }
                match &p.payload {
                    None => out.extend_from_slice(&u32::MAX.to_le_bytes()),
                    Some(payload) => {
                        // Serializing a `Map` of `Value`s cannot fail.
                        let json = serde_json::to_vec(payload).unwrap_or_default();
                        out.extend_from_slice(&(json.len() as u32).to_le_bytes());
                        out.extend_from_slice(&json);
                    }
                }
            }
        }
        Operation::Delete(ids) => {
            out.push(KIND_DELETE);
            out.extend_from_slice(&(ids.len() as u32).to_le_bytes());
            for id in ids {
                put_id(out, id);
            }
        }
    }
    let body_len = (out.len() - start - 8) as u32;
    let crc = crc32fast::hash(&out[start + 8..]);
    out[start..start + 4].copy_from_slice(&body_len.to_le_bytes());
    out[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
}

/// Reads the next record; `Ok(None)` at a clean end of file.
pub(crate) fn read_next(r: &mut impl Read) -> Result<Option<(Record, u64)>, RecordError> {
    let mut head = [0u8; 8];
    let mut got = 0;
    while got < 8 {
        let n = r.read(&mut head[got..])?;
        if n == 0 {
            return if got == 0 {
                Ok(None)
            } else {
                Err(RecordError::Truncated)
            };
        }
        got += n;
    }
    let len = u32::from_le_bytes([head[0], head[1], head[2], head[3]]) as usize;
    let crc = u32::from_le_bytes([head[4], head[5], head[6], head[7]]);
    if len > MAX_RECORD_LEN {
        return Err(RecordError::Corrupted(format!(
            "record length {len} is too large"
        )));
    }
    let mut body = vec![0u8; len];
    if let Err(e) = r.read_exact(&mut body) {
        return Err(if e.kind() == io::ErrorKind::UnexpectedEof {
            RecordError::Truncated
        } else {
            RecordError::Io(e)
        });
    }
    if crc32fast::hash(&body) != crc {
        return Err(RecordError::Corrupted("checksum mismatch".into()));
    }
    let record = decode_body(&body)?;
    Ok(Some((record, 8 + len as u64)))
}

/// Decodes the framed record at the start of `buf`, borrowing the vectors from it: `Ok(None)`
/// if `buf` holds only part of it, else the record and the bytes it took. Used to load
/// records from a stream.
pub(crate) fn decode_framed_ref(buf: &[u8]) -> Result<Option<(RecordRef<'_>, usize)>, RecordError> {
    if buf.len() < 8 {
        return Ok(None);
    }
    let len = u32::from_le_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
    let crc = u32::from_le_bytes([buf[4], buf[5], buf[6], buf[7]]);
    if len > MAX_RECORD_LEN {
        return Err(RecordError::Corrupted(format!(
            "record length {len} is too large"
        )));
    }
    let Some(body) = buf.get(8..8 + len) else {
        return Ok(None);
    };
    if crc32fast::hash(body) != crc {
        return Err(RecordError::Corrupted("checksum mismatch".into()));
    }
    Ok(Some((decode_body_ref(body)?, 8 + len)))
}

struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], RecordError> {
        if self.buf.len() - self.pos < n {
            return Err(RecordError::Corrupted("record body too short".into()));
        }
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }
    fn u8(&mut self) -> Result<u8, RecordError> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u16, RecordError> {
        let b = self.take(2)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }
    fn u32(&mut self) -> Result<u32, RecordError> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn u64(&mut self) -> Result<u64, RecordError> {
        let b = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_le_bytes(a))
    }
    fn id(&mut self) -> Result<PointId, RecordError> {
        match self.u8()? {
            0 => Ok(PointId::Num(self.u64()?)),
            1 => {
                let b = self.take(16)?;
                let mut a = [0u8; 16];
                a.copy_from_slice(b);
                Ok(PointId::Uuid(Uuid::from_bytes(a)))
            }
            t => Err(RecordError::Corrupted(format!("unknown id tag {t}"))),
        }
    }
}

fn decode_body(body: &[u8]) -> Result<Record, RecordError> {
    decode_body_ref(body).map(RecordRef::into_owned)
}

fn decode_body_ref(body: &[u8]) -> Result<RecordRef<'_>, RecordError> {
    let mut c = Cursor { buf: body, pos: 0 };
    let op_id = c.u64()?;
    let op = match c.u8()? {
        KIND_UPSERT => {
            let n = c.u32()? as usize;
            let mut points = Vec::with_capacity(n.min(1 << 16));
            for _ in 0..n {
                let id = c.id()?;
                let nvec = c.u16()? as usize;
                let mut vectors = Vec::with_capacity(nvec);
                for _ in 0..nvec {
                    let name_len = c.u16()? as usize;
                    let name = std::str::from_utf8(c.take(name_len)?)
                        .map_err(|_| RecordError::Corrupted("vector name is not UTF-8".into()))?;
                    let dim = c.u32()? as usize;
                    let raw = c.take(dim.checked_mul(4).ok_or_else(|| {
                        RecordError::Corrupted("vector dimension overflows".into())
                    })?)?;
                    vectors.push((name, raw));
                }
                let plen = c.u32()?;
                let payload = if plen == u32::MAX {
                    None
                } else {
                    let raw = c.take(plen as usize)?;
                    Some(serde_json::from_slice::<Payload>(raw).map_err(|e| {
                        RecordError::Corrupted(format!("payload is not a JSON object: {e}"))
                    })?)
                };
                points.push(PointRef {
                    id,
                    vectors,
                    payload,
                });
            }
            OperationRef::Upsert(points)
        }
        KIND_DELETE => {
            let n = c.u32()? as usize;
            let mut ids = Vec::with_capacity(n.min(1 << 16));
            for _ in 0..n {
                ids.push(c.id()?);
            }
            OperationRef::Delete(ids)
        }
        k => {
            return Err(RecordError::Corrupted(format!(
                "unknown operation kind {k}"
            )))
        }
    };
    if c.pos != body.len() {
        return Err(RecordError::Corrupted("trailing bytes in record".into()));
    }
    Ok(RecordRef { op_id, op })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<Record> {
        let mut payload = Payload::new();
        payload.insert("title".into(), serde_json::json!("x"));
        vec![
            Record {
                op_id: 1,
                op: Operation::Upsert(vec![PointWrite {
                    id: PointId::Num(7),
                    vectors: vec![("".into(), vec![1.0, -2.5])],
                    payload: Some(payload),
                }]),
            },
            Record {
                op_id: 2,
                op: Operation::Delete(vec![PointId::Uuid(Uuid::nil())]),
            },
        ]
    }

    #[test]
    fn records_round_trip() {
        let mut buf = Vec::new();
        for r in sample() {
            encode(&r, &mut buf);
        }
        let mut cur = io::Cursor::new(buf);
        let mut out = Vec::new();
        while let Some((r, _)) = read_next(&mut cur).unwrap() {
            out.push(r);
        }
        assert_eq!(out, sample());
    }

    #[test]
    fn torn_tail_and_flipped_bytes_are_detected() {
        let mut buf = Vec::new();
        encode(&sample()[0], &mut buf);
        let mut torn = io::Cursor::new(buf[..buf.len() - 3].to_vec());
        assert!(matches!(read_next(&mut torn), Err(RecordError::Truncated)));
        let mut flipped = buf.clone();
        let last = flipped.len() - 1;
        flipped[last] ^= 0x40;
        assert!(matches!(
            read_next(&mut io::Cursor::new(flipped)),
            Err(RecordError::Corrupted(_))
        ));
    }
}

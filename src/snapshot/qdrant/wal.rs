//! A Qdrant 1.19 shard's write-ahead log (`0/wal/`), read so that operations the segments
//! do not hold yet can be replayed onto the recovered collection.
//!
//! Format, as Qdrant's `wal` crate writes it (little-endian):
//! - files `closed-{first operation number}` and `open-{id}`, numbered contiguously: closed
//!   ones by their start, then open ones that hold entries, in id order;
//! - each file: `wal`, a format version byte (0) and a u32 CRC seed; then entries of a u64
//!   length, the data, zero padding to a multiple of 8 after a 4-byte CRC, and that CRC-32C
//!   of length, data and padding, chained from the previous entry's. The first entry whose
//!   CRC does not match ends the file (the rest is preallocated space or a torn write);
//! - each entry's data is one operation in CBOR: a map whose key names the operation
//!   (`upsert_points`, `set_payload`, ...), shaped like the body of the REST call.

use std::fs::File;
use std::io::{BufReader, Read};
use std::path::Path;

use serde_json::Value;

use crate::error::{Error, Result};

fn bad(msg: impl Into<String>) -> Error {
    Error::bad_input(format!("invalid Qdrant snapshot: {}", msg.into()))
}

/// Whether `name` is a file of the WAL that recovery reads.
pub fn wanted(name: &str) -> bool {
    let number = |p: &str| {
        name.strip_prefix(p)
            .is_some_and(|n| n.parse::<u64>().is_ok())
    };
    number("open-") || number("closed-")
}

/// The WAL's files in operation order, each with the number of its first operation when
/// the file name gives it (closed files); open files continue where the previous one ended.
fn files_in_order(dir: &Path) -> Result<Vec<(std::path::PathBuf, Option<u64>)>> {
    let mut closed = Vec::new();
    let mut open = Vec::new();
    let Ok(listing) = std::fs::read_dir(dir) else {
        return Ok(Vec::new());
    };
    for e in listing.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if let Some(n) = name
            .strip_prefix("closed-")
            .and_then(|n| n.parse::<u64>().ok())
        {
            closed.push((n, e.path()));
        } else if let Some(n) = name
            .strip_prefix("open-")
            .and_then(|n| n.parse::<u64>().ok())
        {
            open.push((n, e.path()));
        }
    }
    closed.sort();
    open.sort();
    Ok(closed
        .into_iter()
        .map(|(n, p)| (p, Some(n)))
        .chain(open.into_iter().map(|(_, p)| (p, None)))
        .collect())
}

/// Largest entry read: a WAL segment is 32 MiB by default; a bigger one is refused.
const MAX_ENTRY: u64 = 1 << 30;

/// Calls `f(operation number, entry bytes)` for every entry of one WAL file, in order,
/// starting at number `first`. Returns the number after the last entry.
fn read_file(path: &Path, first: u64, f: &mut dyn FnMut(u64, &[u8]) -> Result<()>) -> Result<u64> {
    let file = File::open(path).map_err(|_| bad("a WAL file cannot be read"))?;
    let size = file.metadata().map(|m| m.len()).unwrap_or(0);
    let mut r = BufReader::with_capacity(1 << 16, file);
    let mut header = [0u8; 8];
    if r.read_exact(&mut header).is_err() {
        return Ok(first);
    }
    if &header[..3] != b"wal" || header[3] != 0 {
        return Err(bad("a WAL file is not in the format of Qdrant 1.19"));
    }
    let mut crc = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
    let (mut at, mut num) = (8u64, first);
    let mut buf = Vec::new();
    loop {
        let mut len_bytes = [0u8; 8];
        if r.read_exact(&mut len_bytes).is_err() {
            break;
        }
        let len = u64::from_le_bytes(len_bytes);
        let padded = len + (4u64.wrapping_sub(len) & 7);
        if len > MAX_ENTRY || at + 8 + padded + 4 > size {
            break;
        }
        buf.resize(padded as usize + 4, 0);
        if r.read_exact(&mut buf).is_err() {
            break;
        }
        let (body, stored) = buf.split_at(padded as usize);
        let stored = u32::from_le_bytes([stored[0], stored[1], stored[2], stored[3]]);
        let seed = !crc.reverse_bits();
        let computed = crc32c::crc32c_append(crc32c::crc32c_append(seed, &len_bytes), body);
        if computed != stored {
            break;
        }
        crc = computed;
        f(num, &body[..len as usize])?;
        num += 1;
        at += 8 + padded + 4;
    }
    Ok(num)
}

/// Calls `f(operation number, operation)` for every operation in the WAL directory `dir`
/// numbered `from` or above, in order. Earlier entries are checked, not decoded.
pub fn replay_from(
    dir: &Path,
    from: u64,
    f: &mut dyn FnMut(u64, Value) -> Result<()>,
) -> Result<()> {
    let mut next = 0u64;
    for (path, start) in files_in_order(dir)? {
        if let Some(start) = start {
            next = start;
        }
        next = read_file(&path, next, &mut |num, data| {
            if num < from {
                return Ok(());
            }
            let value: ciborium::Value = ciborium::from_reader(data)
                .map_err(|_| bad(format!("WAL operation {num} is not valid CBOR")))?;
            f(num, to_json(value))
        })?;
    }
    Ok(())
}

/// CBOR as JSON: byte strings of 16 bytes are UUIDs (how a point id may be encoded).
fn to_json(v: ciborium::Value) -> Value {
    use ciborium::Value as C;
    match v {
        C::Integer(i) => {
            let i = i128::from(i);
            if let Ok(u) = u64::try_from(i) {
                Value::from(u)
            } else {
                i64::try_from(i).map_or(Value::Null, Value::from)
            }
        }
        C::Float(f) => serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number),
        C::Text(s) => Value::String(s),
        C::Bool(b) => Value::Bool(b),
        C::Null => Value::Null,
        C::Bytes(b) => match <[u8; 16]>::try_from(b.as_slice()) {
            Ok(u) => Value::String(uuid::Uuid::from_bytes(u).to_string()),
            Err(_) => Value::Array(b.into_iter().map(Value::from).collect()),
        },
        C::Tag(_, inner) => to_json(*inner),
        C::Array(a) => Value::Array(a.into_iter().map(to_json).collect()),
        C::Map(m) => Value::Object(
            m.into_iter()
                .map(|(k, v)| {
                    let key = match to_json(k) {
                        Value::String(s) => s,
                        other => other.to_string(),
                    };
                    (key, to_json(v))
                })
                .collect(),
        ),
        _ => Value::Null,
    }
}

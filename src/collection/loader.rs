//! Builds a collection's in-memory points from its segment files while they stream past
//! (during snapshot recovery), so installing the collection needs no second read of the
//! data. Every record's CRC is checked on the way, before anything is installed.

use super::config::CollectionConfig;
use super::points::PointStore;
use super::record::{self, FILE_MAGIC};

/// Points already loaded for a collection directory.
pub struct Preloaded {
    pub(crate) store: PointStore,
    pub(crate) last_op: u64,
    pub(crate) point_records: u64,
}

impl Preloaded {
    /// Number of live points loaded.
    pub fn points(&self) -> usize {
        self.store.len()
    }
}

impl std::fmt::Debug for Preloaded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Preloaded")
            .field("points", &self.store.len())
            .field("last_op", &self.last_op)
            .finish()
    }
}

/// Incremental loader fed with the bytes of each segment file in order.
pub(crate) struct StreamLoader {
    store: PointStore,
    last_op: u64,
    point_records: u64,
    pending: Vec<u8>,
    consumed: usize,
    magic_seen: bool,
}

impl StreamLoader {
    /// Starts from a collection's `config.json`; `data_bytes` (the segments' total size)
    /// sizes the point store up front.
    pub(crate) fn new(config_json: &[u8], data_bytes: u64) -> Result<Self, String> {
        let config: CollectionConfig = serde_json::from_slice(config_json)
            .map_err(|e| format!("config.json is invalid: {e}"))?;
        config.validate()?;
        let mut store = PointStore::new(&config.vectors.spaces());
        // An upper bound: segments hold each point's vectors plus a little framing. Capped
        // so a lying manifest cannot make us reserve absurd memory before any data arrives.
        let per_point = store.bytes_per_point().max(1) as u64;
        store.reserve((data_bytes / per_point).min(1 << 26) as usize);
        Ok(StreamLoader {
            store,
            last_op: 0,
            point_records: 0,
            pending: Vec::new(),
            consumed: 0,
            magic_seen: false,
        })
    }

    /// Starts the next segment file.
    pub(crate) fn begin_file(&mut self) {
        self.pending.clear();
        self.consumed = 0;
        self.magic_seen = false;
    }

    /// Feeds the next bytes of the current file, applying every complete record.
    pub(crate) fn feed(&mut self, data: &[u8]) -> Result<(), String> {
        if self.pending.is_empty() && self.magic_seen {
            // The usual case: records decode straight from the caller's buffer and only a
            // partial record at its end is kept.
            let used = self.apply_records(data)?;
            self.pending.extend_from_slice(&data[used..]);
            self.consumed = 0;
            return Ok(());
        }
        self.pending.extend_from_slice(data);
        if !self.magic_seen {
            if self.pending.len() < FILE_MAGIC.len() {
                return Ok(());
            }
            if &self.pending[..FILE_MAGIC.len()] != FILE_MAGIC {
                return Err("segment has bad magic bytes".into());
            }
            self.magic_seen = true;
            self.consumed = FILE_MAGIC.len();
        }
        let pending = std::mem::take(&mut self.pending);
        let used = self.apply_records(&pending[self.consumed..]);
        self.pending = pending;
        self.consumed += used?;
        // Drop what was parsed once it outweighs the partial record kept.
        if self.consumed > self.pending.len() / 2 {
            self.pending.drain(..self.consumed);
            self.consumed = 0;
        }
        Ok(())
    }

    /// Applies the complete records at the start of `buf`; returns the bytes they took.
    fn apply_records(&mut self, buf: &[u8]) -> Result<usize, String> {
        let mut used = 0;
        while let Some((rec, n)) =
            record::decode_framed_ref(&buf[used..]).map_err(|e| format!("segment record: {e}"))?
        {
            used += n;
            self.last_op = self.last_op.max(rec.op_id);
            self.point_records += rec.op.len() as u64;
            self.store.apply_encoded(rec);
        }
        Ok(used)
    }

    /// Ends the current file: a sealed segment never ends inside a record.
    pub(crate) fn end_file(&mut self) -> Result<(), String> {
        if !self.magic_seen || self.consumed != self.pending.len() {
            return Err("segment ends inside a record".into());
        }
        Ok(())
    }

    /// The loaded points.
    pub(crate) fn finish(self) -> Preloaded {
        Preloaded {
            store: self.store,
            last_op: self.last_op,
            point_records: self.point_records,
        }
    }
}

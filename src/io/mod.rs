//! Disk I/O beneath every storage layer: durable writes that requests wait for and the
//! pacer that makes bulk writers yield to them, the bulk-file writer, a low-priority
//! runtime for bulk work, file streams, progress counters and their terminal report, and
//! small filesystem helpers.
//!
//! Nothing here knows about collections, snapshots or backends; they all build on it.

pub(crate) mod bulk_file;
pub(crate) mod file_stream;
pub(crate) mod fs;
pub(crate) mod low_priority;
pub(crate) mod pacer;
pub(crate) mod progress;
pub(crate) mod report;

//! A file's bytes as an async stream, read positionally on the blocking pool.

use std::io;
use std::ops::Range;

use bytes::Bytes;
use futures::stream::BoxStream;
use futures::StreamExt;

/// A stream of an object's or a file's bytes.
pub type ByteStream = BoxStream<'static, io::Result<Bytes>>;

/// Bytes read from a file at a time by [`file_stream`].
pub(crate) const READ_CHUNK: u64 = 1 << 20;

/// The bytes of `file` in `range` (ending early at the end of the file) as a stream of
/// chunks of up to 1 MiB, each read positionally on the blocking pool straight into the
/// buffer it is handed on in. Downloads and every recovery from a local file read this way.
pub(crate) fn file_stream(file: std::fs::File, range: Range<u64>) -> ByteStream {
    let file = std::sync::Arc::new(file);
    futures::stream::try_unfold(range.start, move |offset| {
        let file = std::sync::Arc::clone(&file);
        let want = READ_CHUNK.min(range.end.saturating_sub(offset)) as usize;
        async move {
            if want == 0 {
                return Ok(None);
            }
            let chunk = tokio::task::spawn_blocking(move || loop {
                let mut buf = vec![0u8; want];
                match std::os::unix::fs::FileExt::read_at(&*file, &mut buf, offset) {
                    Ok(n) => {
                        buf.truncate(n);
                        return Ok(Bytes::from(buf));
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => return Err(e),
                }
            })
            .await
            .map_err(io::Error::other)??;
            let next = offset + chunk.len() as u64;
            Ok((!chunk.is_empty()).then_some((chunk, next)))
        }
    })
    .boxed()
}

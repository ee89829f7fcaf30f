//! Reading an encrypted object back: each segment is authenticated before any of its bytes
//! are passed on, so a reader gets the content or an error, never altered bytes.

use bytes::{Buf, Bytes, BytesMut};
use futures::{StreamExt, TryStreamExt};

use super::format::{ObjectCipher, HEADER, SEALED, SEGMENT, TAG};
use crate::backend::{BackendError, ByteStream};

/// Which part of the object the stream covers.
pub(super) struct Window {
    /// The first segment the stream starts at.
    pub(super) first: u32,
    /// The last segment of the object, when known (ranged reads); a whole read finds it at
    /// the end of the stream.
    pub(super) last: Option<u32>,
    /// The stored size of the last segment, with `last`.
    pub(super) last_len: u64,
    /// Content bytes to drop from the start of the first segment.
    pub(super) skip: u64,
    /// Content bytes to pass on (then stop).
    pub(super) take: u64,
}

impl Window {
    /// The whole object.
    pub(super) fn whole() -> Self {
        Window {
            first: 0,
            last: None,
            last_len: 0,
            skip: 0,
            take: u64::MAX,
        }
    }
}

struct State {
    inner: ByteStream,
    key: String,
    cipher: Option<ObjectCipher>,
    /// Set when the stream starts mid-object: the header was read apart.
    buf: BytesMut,
    index: u32,
    window: Window,
    ended: bool,
}

/// Opens `inner` (the stored bytes from `HEADER`, or from segment `window.first` when
/// `cipher` is given) as a stream of content.
pub(super) fn open(
    inner: ByteStream,
    key: String,
    cipher: Option<ObjectCipher>,
    window: Window,
    data_key: [u8; 32],
) -> ByteStream {
    let state = State {
        inner,
        key,
        cipher,
        buf: BytesMut::new(),
        index: window.first,
        window,
        ended: false,
    };
    futures::stream::try_unfold((state, data_key), |(mut s, data_key)| async move {
        loop {
            if s.window.take == 0 {
                return Ok(None);
            }
            if let Some(segment) = s.next_segment(&data_key)? {
                return Ok(Some((segment, (s, data_key))));
            }
            match s.inner.next().await {
                Some(chunk) => s.buf.extend_from_slice(&chunk?),
                None if s.ended => return Ok(None),
                None => s.ended = true,
            }
        }
    })
    .try_filter(|b| std::future::ready(!b.is_empty()))
    .boxed()
}

impl State {
    fn unauthentic(&self) -> std::io::Error {
        std::io::Error::other(BackendError::Unauthentic(self.key.clone()))
    }

    /// The next segment's content if its bytes are all here; an error if the stream ended
    /// where no segment can end.
    fn next_segment(&mut self, data_key: &[u8; 32]) -> std::io::Result<Option<Bytes>> {
        if self.cipher.is_none() {
            if (self.buf.len() as u64) < HEADER {
                return if self.ended {
                    Err(self.unauthentic())
                } else {
                    Ok(None)
                };
            }
            let header = self.buf.split_to(HEADER as usize);
            self.cipher = Some(
                ObjectCipher::open(data_key, &header, &self.key)
                    .ok_or_else(|| self.unauthentic())?,
            );
        }
        let have = self.buf.len() as u64;
        let (len, last) = match self.window.last {
            Some(l) if l == self.index => (self.window.last_len, true),
            Some(_) => (SEALED, false),
            // A full segment is the last one only if nothing follows it.
            None if have > SEALED => (SEALED, false),
            None if self.ended && (TAG..=SEALED).contains(&have) => (have, true),
            None => (SEALED + 1, false),
        };
        if have < len {
            return if self.ended {
                Err(self.unauthentic())
            } else {
                Ok(None)
            };
        }
        let mut seg = self.buf.split_to(len as usize).to_vec();
        let cipher = self.cipher.as_ref().expect("set above");
        if !cipher.unseal(self.index, last, &mut seg) {
            return Err(self.unauthentic());
        }
        self.index = self.index.wrapping_add(1);
        let mut content = Bytes::from(seg);
        let skip = self.window.skip.min(content.len() as u64);
        content.advance(skip as usize);
        self.window.skip -= skip;
        let take = self.window.take.min(content.len() as u64);
        content.truncate(take as usize);
        self.window.take -= take;
        if last {
            self.window.take = 0;
        }
        debug_assert!(content.len() as u64 <= SEGMENT);
        Ok(Some(content))
    }
}

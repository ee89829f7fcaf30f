//! How one encrypted object is laid out: a header, then the content in segments sealed
//! with AES-256-GCM in the STREAM construction (RustCrypto's `aead-stream`: a 32-bit
//! segment counter and a last-segment flag in each nonce, so segments cannot be dropped,
//! reordered or cut off at the end unnoticed).
//!
//! ```text
//! "SSE1" | salt (32 bytes) | segment 0 | segment 1 | ... | last segment
//! segment = up to SEGMENT bytes of content, sealed: + 16-byte tag
//! ```
//!
//! Each object has its own key and nonce prefix, derived with HKDF-SHA-256 from the data
//! key and the object's random salt, so nonces never repeat across objects. The object's
//! key in storage is each segment's associated data: an object moved under another name
//! does not open. Every segment but the last is full, so any plain byte range maps to the
//! segments that hold it, and the plain size follows from the stored size.

use std::ops::Range;

use aead_stream::{NewStream, StreamBE32, StreamPrimitive};
use aes_gcm::{Aes256Gcm, Key};
use hkdf::Hkdf;
use sha2::Sha256;
use zeroize::Zeroizing;

/// The first bytes of every encrypted object.
pub(crate) const MAGIC: &[u8; 4] = b"SSE1";
/// Random bytes per object from which its key is derived.
const SALT: usize = 32;
/// Bytes before the first segment.
pub(crate) const HEADER: u64 = (MAGIC.len() + SALT) as u64;
/// Content bytes per segment (every segment but the last holds exactly this many).
pub(crate) const SEGMENT: u64 = 64 << 10;
/// What sealing adds to a segment (the GCM tag).
pub(crate) const TAG: u64 = 16;
/// A full sealed segment.
pub(crate) const SEALED: u64 = SEGMENT + TAG;
/// HKDF's `info` for an object's key and nonce prefix.
const OBJECT_INFO: &[u8] = b"snapstream object key v1";

/// The stored size of an object of `plain` content bytes.
pub(crate) fn sealed_size(plain: u64) -> u64 {
    HEADER + plain + segment_count(plain) * TAG
}

/// The content size of an object stored in `stored` bytes, or `None` when no encrypted
/// object has that size.
pub(crate) fn plain_size(stored: u64) -> Option<u64> {
    let body = stored.checked_sub(HEADER)?;
    if body < TAG {
        return None;
    }
    let segments = body.div_ceil(SEALED);
    Some(body - segments * TAG)
}

/// Which segments hold the content bytes `range` of an object of `plain` bytes, and the
/// stored byte range those segments occupy.
pub(crate) fn segments_of(range: &Range<u64>, plain: u64) -> (Range<u32>, Range<u64>) {
    let last = segment_count(plain) - 1;
    let first = (range.start / SEGMENT).min(last);
    let end = range.end.saturating_sub(1).max(range.start) / SEGMENT;
    let end = end.min(last) + 1;
    let stored_end = (HEADER + end * SEALED).min(sealed_size(plain));
    (
        first as u32..end as u32,
        HEADER + first * SEALED..stored_end,
    )
}

/// How many segments an object of `plain` bytes has (an empty one has one, empty).
pub(crate) fn segment_count(plain: u64) -> u64 {
    plain.div_ceil(SEGMENT).max(1)
}

/// The sealing state of one object: its own key, from the data key and its salt.
pub(crate) struct ObjectCipher {
    stream: StreamBE32<Aes256Gcm>,
    /// The object's key in storage, bound to every segment.
    aad: Vec<u8>,
}

impl ObjectCipher {
    /// A new object under `key`: a fresh salt (returned as the header to write first).
    pub(crate) fn create(data_key: &[u8; 32], key: &str) -> std::io::Result<(Self, Vec<u8>)> {
        let mut salt = [0u8; SALT];
        getrandom::fill(&mut salt).map_err(|e| std::io::Error::other(e.to_string()))?;
        let mut header = Vec::with_capacity(HEADER as usize);
        header.extend_from_slice(MAGIC);
        header.extend_from_slice(&salt);
        Ok((Self::derive(data_key, &salt, key), header))
    }

    /// The cipher of a stored object from its header; `None` when it is not one of ours.
    pub(crate) fn open(data_key: &[u8; 32], header: &[u8], key: &str) -> Option<Self> {
        let salt = header.strip_prefix(MAGIC.as_slice())?;
        (salt.len() == SALT).then(|| Self::derive(data_key, salt, key))
    }

    fn derive(data_key: &[u8; 32], salt: &[u8], key: &str) -> Self {
        let mut okm = Zeroizing::new([0u8; 32 + 7]);
        Hkdf::<Sha256>::new(Some(salt), data_key)
            .expand(OBJECT_INFO, okm.as_mut_slice())
            .expect("39 bytes is a valid HKDF-SHA-256 output length");
        let aes_key = Key::<Aes256Gcm>::try_from(&okm[..32]).expect("32 bytes");
        let prefix = aead_stream::Nonce::<Aes256Gcm, StreamBE32<Aes256Gcm>>::try_from(&okm[32..])
            .expect("7 bytes");
        ObjectCipher {
            stream: StreamBE32::new(&aes_key, &prefix),
            aad: key.as_bytes().to_vec(),
        }
    }

    /// Seals segment `index` in place (content in, content + tag out).
    pub(crate) fn seal(&self, index: u32, last: bool, buf: &mut Vec<u8>) -> std::io::Result<()> {
        self.stream
            .encrypt_in_place(index, last, &self.aad, buf)
            .map_err(|_| std::io::Error::other("encryption failed"))
    }

    /// Opens sealed segment `index` in place; false when it does not authenticate.
    #[must_use]
    pub(crate) fn unseal(&self, index: u32, last: bool, buf: &mut Vec<u8>) -> bool {
        self.stream
            .decrypt_in_place(index, last, &self.aad, buf)
            .is_ok()
    }
}

/// Seals a whole small object at once: header and every segment.
pub(crate) fn seal_all(data_key: &[u8; 32], key: &str, plain: &[u8]) -> std::io::Result<Vec<u8>> {
    let (cipher, mut out) = ObjectCipher::create(data_key, key)?;
    out.reserve(sealed_size(plain.len() as u64) as usize);
    let count = segment_count(plain.len() as u64);
    for i in 0..count {
        let start = (i * SEGMENT) as usize;
        let end = (start + SEGMENT as usize).min(plain.len());
        let mut seg = plain[start..end].to_vec();
        cipher.seal(i as u32, i + 1 == count, &mut seg)?;
        out.extend_from_slice(&seg);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_map_both_ways_at_every_boundary() {
        for plain in [
            0,
            1,
            SEGMENT - 1,
            SEGMENT,
            SEGMENT + 1,
            3 * SEGMENT,
            3 * SEGMENT + 7,
        ] {
            let stored = sealed_size(plain);
            assert_eq!(plain_size(stored), Some(plain), "plain {plain}");
            let sealed = seal_all(&[7; 32], "a/b", &vec![1u8; plain as usize]).unwrap();
            assert_eq!(sealed.len() as u64, stored, "plain {plain}");
        }
        assert_eq!(plain_size(HEADER + TAG - 1), None);
    }

    #[test]
    fn ranges_map_to_the_segments_that_hold_them() {
        let plain = 3 * SEGMENT + 10;
        assert_eq!(segments_of(&(0..1), plain), (0..1, HEADER..HEADER + SEALED));
        let (segs, stored) = segments_of(&(SEGMENT - 1..SEGMENT + 1), plain);
        assert_eq!(segs, 0..2);
        assert_eq!(stored, HEADER..HEADER + 2 * SEALED);
        let (segs, stored) = segments_of(&(3 * SEGMENT..plain), plain);
        assert_eq!(segs, 3..4);
        assert_eq!(stored.end, sealed_size(plain));
    }

    #[test]
    fn a_segment_opens_only_where_and_under_the_name_it_was_sealed() {
        let key = [9u8; 32];
        let sealed = seal_all(&key, "dir/x", &vec![5u8; (SEGMENT + 3) as usize]).unwrap();
        let header = &sealed[..HEADER as usize];
        let first = sealed[HEADER as usize..(HEADER + SEALED) as usize].to_vec();
        let c = ObjectCipher::open(&key, header, "dir/x").unwrap();
        assert!(c.unseal(0, false, &mut first.clone()));
        // As the last segment, at another position, under another name, another key: no.
        assert!(!c.unseal(0, true, &mut first.clone()));
        assert!(!c.unseal(1, false, &mut first.clone()));
        let moved = ObjectCipher::open(&key, header, "dir/y").unwrap();
        assert!(!moved.unseal(0, false, &mut first.clone()));
        let other = ObjectCipher::open(&[8u8; 32], header, "dir/x").unwrap();
        assert!(!other.unseal(0, false, &mut first.clone()));
        let mut flipped = first.clone();
        flipped[100] ^= 1;
        assert!(!c.unseal(0, false, &mut flipped));
    }
}

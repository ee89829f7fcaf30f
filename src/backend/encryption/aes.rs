//! AES-256-GCM behind RustCrypto's AEAD traits, computed by AWS-LC (`aws-lc-rs`, which
//! `object_store` and TLS already link). RustCrypto's STREAM construction (`aead-stream`)
//! runs on top of it unchanged, so every object is bit for bit what RustCrypto's own
//! `aes-gcm` would write and read (a test holds the two to it).
//!
//! Why not `aes-gcm` itself: sealing is on the path of every encrypted create, and on the
//! machines this was measured on AWS-LC's assembly sealed 64 KiB segments at 6.7-9.3 GB/s
//! against 2.0 GB/s for RustCrypto's (`BENCHMARKS.md`, "Encryption").

use aead::array::Array;
use aead::consts::{U12, U16, U32};
use aead::inout::InOutBuf;
use aead::{AeadCore, AeadInOut, Key, KeyInit, KeySizeUser, Nonce, Tag, TagPosition};
use aws_lc_rs::aead::{Aad, LessSafeKey, Nonce as LcNonce, UnboundKey, AES_256_GCM};

/// One AES-256-GCM key, ready to seal and open.
pub(crate) struct Aes256Gcm(LessSafeKey);

impl KeySizeUser for Aes256Gcm {
    type KeySize = U32;
}

impl KeyInit for Aes256Gcm {
    fn new(key: &Key<Self>) -> Self {
        let key = UnboundKey::new(&AES_256_GCM, key.as_slice())
            .expect("AES-256-GCM takes any 32-byte key");
        Aes256Gcm(LessSafeKey::new(key))
    }
}

impl AeadCore for Aes256Gcm {
    type NonceSize = U12;
    type TagSize = U16;
    const TAG_POSITION: TagPosition = TagPosition::Postfix;
}

fn nonce(n: &Nonce<Aes256Gcm>) -> LcNonce {
    LcNonce::assume_unique_for_key(n.0)
}

impl AeadInOut for Aes256Gcm {
    fn encrypt_inout_detached(
        &self,
        n: &Nonce<Self>,
        associated_data: &[u8],
        buffer: InOutBuf<'_, '_, u8>,
    ) -> aead::Result<Tag<Self>> {
        let data = buffer.into_out_with_copied_in();
        let tag = self
            .0
            .seal_in_place_separate_tag(nonce(n), Aad::from(associated_data), data)
            .map_err(|_| aead::Error)?;
        Array::try_from(tag.as_ref()).map_err(|_| aead::Error)
    }

    fn decrypt_inout_detached(
        &self,
        n: &Nonce<Self>,
        associated_data: &[u8],
        buffer: InOutBuf<'_, '_, u8>,
        tag: &Tag<Self>,
    ) -> aead::Result<()> {
        let data = buffer.into_out_with_copied_in();
        self.0
            .open_in_place_separate_tag(nonce(n), Aad::from(associated_data), tag, data)
            .map(|_| ())
            .map_err(|_| aead::Error)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Seals with one implementation and opens with the other, both ways, at the sizes
    /// the format uses: the two are the same cipher.
    #[test]
    fn seals_and_opens_exactly_as_rustcrypto_aes_gcm_does() {
        let key = [0x42u8; 32];
        let ours = Aes256Gcm::new(&Key::<Aes256Gcm>::from(key));
        let theirs = aes_gcm::Aes256Gcm::new(&aes_gcm::Key::<aes_gcm::Aes256Gcm>::from(key));
        for len in [0usize, 1, 15, 16, 17, 4096, 64 << 10] {
            let plain: Vec<u8> = (0..len).map(|i| (i * 7 % 251) as u8).collect();
            let n = [len as u8; 12];
            let mut a = plain.clone();
            ours.encrypt_in_place(&Nonce::<Aes256Gcm>::from(n), b"aad", &mut a)
                .unwrap();
            let mut b = plain.clone();
            aead::AeadInOut::encrypt_in_place(&theirs, &n.into(), b"aad", &mut b).unwrap();
            assert_eq!(a, b, "ciphertext and tag of {len} bytes");
            let mut opened = b.clone();
            ours.decrypt_in_place(&Nonce::<Aes256Gcm>::from(n), b"aad", &mut opened)
                .unwrap();
            assert_eq!(opened, plain);
            let mut flipped = b.clone();
            flipped[0] ^= 1;
            assert!(ours
                .decrypt_in_place(&Nonce::<Aes256Gcm>::from(n), b"aad", &mut flipped)
                .is_err());
            let mut other_aad = b;
            assert!(ours
                .decrypt_in_place(&Nonce::<Aes256Gcm>::from(n), b"aae", &mut other_aad)
                .is_err());
        }
    }
}

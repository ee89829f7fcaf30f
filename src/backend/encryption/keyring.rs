//! The storage's data key: 32 random bytes made once per storage, kept in the storage itself
//! wrapped (AES-256-GCM) by a key derived from the user's passphrase with Argon2id. Changing
//! the passphrase rewraps this one object; no snapshot is rewritten.

use std::sync::Arc;

use aes_gcm::aead::AeadInOut;
use aes_gcm::{Aes256Gcm, Key, KeyInit, Nonce};
use argon2::{Algorithm, Argon2, Params, Version};
use bytes::Bytes;
use futures::StreamExt;
use hkdf::Hkdf;
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use zeroize::Zeroizing;

use super::super::{BackendError, BackendExt, DynBackend, ObjectKey};
use crate::secret::Secret;

/// Where the wrapped data key is stored, beside the repository's other objects.
pub(crate) const KEY_OBJECT: &str = ".repository/key";
/// The associated data of the wrapped key.
const WRAP_AAD: &[u8] = b"snapstream data key v1";
/// HKDF's `info` for the key that names pieces.
const NAMES_INFO: &[u8] = b"snapstream piece names v1";
/// The configuration keys, for messages.
const KEY_SETTING: &str = "storage.snapshots_config.encryption.key (or key_file)";

/// Why the storage's data key is not available.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// The storage is encrypted and no key is configured.
    #[error("the snapshot storage is encrypted (it holds `{KEY_OBJECT}`): set {KEY_SETTING}")]
    Missing,
    /// The configured key does not unwrap the data key.
    #[error("{KEY_SETTING} does not open this storage's data key (`{KEY_OBJECT}`): wrong key")]
    Wrong,
    /// Encryption was turned on over a storage that already holds unencrypted objects.
    #[error(
        "{KEY_SETTING} is set but the snapshot storage already holds unencrypted objects \
         (`{0}`): encryption needs an empty storage (another bucket, container or prefix)"
    )]
    NotEmpty(String),
    /// The key object cannot be parsed.
    #[error("`{KEY_OBJECT}` is damaged: {0}")]
    Damaged(String),
    /// The key given for a rotation is not usable.
    #[error("{0}")]
    Unusable(String),
}

/// The keys content is sealed and named with.
pub(crate) struct Keys {
    /// The data key, from which each object's key is derived.
    pub(crate) data: Zeroizing<[u8; 32]>,
    /// The key of the keyed hash that names pieces.
    pub(crate) names: Zeroizing<[u8; 32]>,
}

impl std::fmt::Debug for Keys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Keys([redacted])")
    }
}

/// What the storage turned out to be.
#[derive(Clone, Debug)]
pub(crate) enum Mode {
    /// Not encrypted (no key configured, none stored).
    Plain,
    /// Encrypted with these keys.
    Sealed(Arc<Keys>),
}

/// The wrapped data key as stored (JSON).
#[derive(Serialize, Deserialize)]
struct Wrapped {
    version: u32,
    kdf: String,
    m_cost_kib: u32,
    t_cost: u32,
    p_cost: u32,
    salt: String,
    nonce: String,
    wrapped_key: String,
}

/// The user's passphrase and, once loaded, the storage's keys. Loaded on first use (not at
/// start-up, so a storage that is down then does not stop the service), retried until it
/// succeeds.
#[derive(Debug)]
pub struct Keyring {
    store: DynBackend,
    passphrase: Option<Secret>,
    mode: tokio::sync::OnceCell<Mode>,
}

impl Keyring {
    /// The keyring of `store` (the storage below encryption) for `passphrase`, if any.
    pub fn new(store: DynBackend, passphrase: Option<Secret>) -> Self {
        Keyring {
            store,
            passphrase,
            mode: tokio::sync::OnceCell::new(),
        }
    }

    /// Whether the storage is encrypted, and its keys; loads them on first use.
    pub(crate) async fn mode(&self) -> Result<Mode, BackendError> {
        self.mode.get_or_try_init(|| self.load()).await.cloned()
    }

    /// The key that names pieces, when the storage is encrypted.
    pub async fn names_key(&self) -> Result<Option<[u8; 32]>, BackendError> {
        Ok(match self.mode().await? {
            Mode::Plain => None,
            Mode::Sealed(keys) => Some(*keys.names),
        })
    }

    async fn load(&self) -> Result<Mode, BackendError> {
        let key = key_object();
        let stored = match self.store.get_bytes(&key).await {
            Ok(b) => Some(b),
            Err(BackendError::NotFound(_)) => None,
            Err(e) => return Err(e),
        };
        match (stored, &self.passphrase) {
            (None, None) => Ok(Mode::Plain),
            (Some(_), None) => Err(KeyError::Missing.into()),
            (Some(bytes), Some(pass)) => Ok(sealed(unwrap(&bytes, pass).await?)),
            (None, Some(pass)) => self.initialize(pass).await,
        }
    }

    /// Makes the data key of a new encrypted storage; refuses a storage with objects in it.
    async fn initialize(&self, pass: &Secret) -> Result<Mode, BackendError> {
        if let Some(first) = self.store.list_recursive(None).next().await {
            return Err(KeyError::NotEmpty(first?.key.to_string()).into());
        }
        let mut data = Zeroizing::new([0u8; 32]);
        random(data.as_mut_slice())?;
        let object = wrap(&data, pass).await?;
        match self.store.put_if_absent(&key_object(), object).await {
            Ok(_) => {
                tracing::info!(
                    "encrypted snapshot storage initialized (data key in `{KEY_OBJECT}`)"
                );
                Ok(sealed(data))
            }
            // Another process made it first: use theirs.
            Err(BackendError::AlreadyExists(_)) => {
                let bytes = self.store.get_bytes(&key_object()).await?;
                Ok(sealed(unwrap(&bytes, pass).await?))
            }
            Err(e) => Err(e),
        }
    }

    /// Rewraps the data key with `new`: after this only `new` opens the storage. The
    /// content is not touched; a crash leaves the old wrapping or the new one.
    pub async fn rotate(&self, new: &Secret) -> Result<(), BackendError> {
        if new.expose().is_empty() {
            return Err(KeyError::Unusable("the new key is empty".into()).into());
        }
        let Mode::Sealed(keys) = self.mode().await? else {
            return Err(KeyError::Unusable(format!(
                "the snapshot storage is not encrypted: no key to rotate (set {KEY_SETTING} on an empty storage to encrypt it)"
            ))
            .into());
        };
        let object = wrap(&keys.data, new).await?;
        self.store.put(&key_object(), object).await.map(|_| ())
    }
}

fn key_object() -> ObjectKey {
    ObjectKey::new(KEY_OBJECT).expect("a constant, valid key")
}

fn sealed(data: Zeroizing<[u8; 32]>) -> Mode {
    let mut names = Zeroizing::new([0u8; 32]);
    Hkdf::<Sha256>::new(None, data.as_slice())
        .expand(NAMES_INFO, names.as_mut_slice())
        .expect("32 bytes is a valid HKDF-SHA-256 output length");
    Mode::Sealed(Arc::new(Keys { data, names }))
}

fn random(buf: &mut [u8]) -> Result<(), BackendError> {
    getrandom::fill(buf).map_err(|e| KeyError::Unusable(format!("no randomness: {e}")).into())
}

/// The key-encryption key: Argon2id of the passphrase (run off the async threads: it is
/// made to be slow).
async fn derive(
    pass: &Secret,
    salt: Vec<u8>,
    params: Params,
) -> Result<Zeroizing<[u8; 32]>, BackendError> {
    let pass = Zeroizing::new(pass.expose().as_bytes().to_vec());
    tokio::task::spawn_blocking(move || {
        let mut kek = Zeroizing::new([0u8; 32]);
        Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
            .hash_password_into(&pass, &salt, kek.as_mut_slice())
            .map_err(|e| KeyError::Damaged(format!("Argon2id refused its parameters: {e}")))?;
        Ok::<_, KeyError>(kek)
    })
    .await
    .map_err(|e| KeyError::Unusable(format!("key derivation failed: {e}")))?
    .map_err(Into::into)
}

async fn wrap(data: &[u8; 32], pass: &Secret) -> Result<Bytes, BackendError> {
    let params = Params::DEFAULT;
    let mut salt = vec![0u8; 16];
    random(&mut salt)?;
    let mut nonce = [0u8; 12];
    random(&mut nonce)?;
    let kek = derive(pass, salt.clone(), params.clone()).await?;
    let mut buf = data.to_vec();
    Aes256Gcm::new(&Key::<Aes256Gcm>::from(*kek))
        .encrypt_in_place(&Nonce::from(nonce), WRAP_AAD, &mut buf)
        .map_err(|_| KeyError::Unusable("wrapping the data key failed".into()))?;
    let w = Wrapped {
        version: 1,
        kdf: "argon2id".into(),
        m_cost_kib: params.m_cost(),
        t_cost: params.t_cost(),
        p_cost: params.p_cost(),
        salt: hex::encode(salt),
        nonce: hex::encode(nonce),
        wrapped_key: hex::encode(&buf),
    };
    let json = serde_json::to_vec_pretty(&w).expect("plain data serializes");
    Ok(json.into())
}

async fn unwrap(bytes: &[u8], pass: &Secret) -> Result<Zeroizing<[u8; 32]>, BackendError> {
    let damaged = |what: &str| BackendError::from(KeyError::Damaged(what.to_string()));
    let w: Wrapped = serde_json::from_slice(bytes).map_err(|e| damaged(&e.to_string()))?;
    if w.version != 1 || w.kdf != "argon2id" {
        return Err(damaged("unknown version or key derivation"));
    }
    let params = Params::new(w.m_cost_kib, w.t_cost, w.p_cost, Some(32))
        .map_err(|e| damaged(&format!("Argon2id parameters: {e}")))?;
    // Refuse parameters that would make a tampered key object exhaust memory or time.
    if w.m_cost_kib > 4 << 20 || w.t_cost > 64 || w.p_cost > 64 {
        return Err(damaged("Argon2id parameters out of range"));
    }
    let salt = hex::decode(&w.salt).map_err(|_| damaged("salt"))?;
    let nonce: [u8; 12] = hex::decode(&w.nonce)
        .ok()
        .and_then(|n| n.try_into().ok())
        .ok_or_else(|| damaged("nonce"))?;
    let mut buf = hex::decode(&w.wrapped_key).map_err(|_| damaged("wrapped key"))?;
    let kek = derive(pass, salt, params).await?;
    Aes256Gcm::new(&Key::<Aes256Gcm>::from(*kek))
        .decrypt_in_place(&Nonce::from(nonce), WRAP_AAD, &mut buf)
        .map_err(|_| BackendError::from(KeyError::Wrong))?;
    let data: [u8; 32] = buf
        .as_slice()
        .try_into()
        .map_err(|_| damaged("key length"))?;
    buf.fill(0);
    Ok(Zeroizing::new(data))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_wrapped_key_opens_with_its_passphrase_only() {
        let data = [3u8; 32];
        let object = wrap(&data, &Secret::new("correct horse")).await.unwrap();
        let text = String::from_utf8(object.to_vec()).unwrap();
        assert!(
            !text.contains(&hex::encode(data)),
            "the data key is not stored in clear"
        );
        let back = unwrap(&object, &Secret::new("correct horse"))
            .await
            .unwrap();
        assert_eq!(*back, data);
        let wrong = unwrap(&object, &Secret::new("battery staple")).await;
        assert!(matches!(
            wrong,
            Err(BackendError::Encryption(KeyError::Wrong))
        ));
        // Two wrappings of the same key differ (fresh salt and nonce).
        assert_ne!(
            wrap(&data, &Secret::new("correct horse")).await.unwrap(),
            object
        );
    }
}

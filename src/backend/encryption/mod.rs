//! Client-side encryption: a backend that seals every object on its way into the backend it
//! wraps and authenticates every byte on its way out. Snapshot archives, pieces, manifests,
//! backup records, sidecars, leases and markers all pass through it; only the wrapped data
//! key (`.repository/key`) is stored as it is. Without a configured key it passes objects
//! through, after checking once that the storage is not an encrypted one.
//!
//! Sizes reported by `stat` and `list` are content sizes, as without encryption.

mod format;
pub(crate) mod keyring;
mod reader;
mod sink;

use std::fmt;
use std::ops::Range;
use std::path::PathBuf;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::BoxStream;
use futures::{StreamExt, TryStreamExt};

use super::{
    Backend, BackendError, ByteStream, CreateOptions, DynBackend, ObjectKey, ObjectMeta, ObjectSink,
};
use crate::secret::Secret;
pub use keyring::{KeyError, Keyring};
use keyring::{Mode, KEY_OBJECT};

/// The first bytes of every object encrypted by snapshot storage.
pub(crate) use format::MAGIC;

/// The user's key, as configured (`storage.snapshots_config.encryption`).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct EncryptionOptions {
    /// The passphrase itself.
    pub key: Option<Secret>,
    /// A file holding the passphrase (a trailing newline is not part of it).
    pub key_file: Option<PathBuf>,
}

impl EncryptionOptions {
    /// The passphrase, if one is configured; an error naming the setting when the file
    /// cannot be read or the key is empty.
    pub fn passphrase(&self) -> Result<Option<Secret>, String> {
        let key = match (&self.key, &self.key_file) {
            (Some(_), Some(_)) => {
                return Err("set encryption.key or encryption.key_file, not both".into())
            }
            (Some(k), None) => k.clone(),
            (None, Some(path)) => {
                let text = std::fs::read_to_string(path).map_err(|e| {
                    format!(
                        "encryption.key_file `{}` cannot be read: {e}",
                        path.display()
                    )
                })?;
                Secret::new(text.trim_end_matches(['\r', '\n']))
            }
            (None, None) => return Ok(None),
        };
        if key.expose().is_empty() {
            return Err("encryption.key is empty".into());
        }
        Ok(Some(key))
    }
}

/// Seals what it writes into `inner`, opens what it reads.
#[derive(Debug)]
pub struct Encrypted {
    inner: DynBackend,
    keyring: Arc<Keyring>,
}

impl Encrypted {
    /// `inner` under `keyring` (made over the same `inner`).
    pub fn new(inner: DynBackend, keyring: Arc<Keyring>) -> Self {
        Encrypted { inner, keyring }
    }

    async fn data_key(&self) -> Result<Option<[u8; 32]>, BackendError> {
        Ok(match self.keyring.mode().await? {
            Mode::Plain => None,
            Mode::Sealed(keys) => Some(*keys.data),
        })
    }

    /// Content metadata from stored metadata; `None` for the key object, which is not
    /// content.
    fn content_meta(
        sealed: bool,
        mut meta: ObjectMeta,
    ) -> Option<Result<ObjectMeta, BackendError>> {
        if meta.key.as_str() == KEY_OBJECT {
            return None;
        }
        if sealed {
            match format::plain_size(meta.size) {
                Some(size) => meta.size = size,
                None => return Some(Err(BackendError::Unauthentic(meta.key.to_string()))),
            }
        }
        Some(Ok(meta))
    }

    /// A content range of `key` (`size` content bytes): the header and the segments that
    /// hold it, read apart.
    async fn open_range(
        &self,
        key: &ObjectKey,
        data_key: [u8; 32],
        range: Range<u64>,
    ) -> Result<ByteStream, BackendError> {
        let stored = self.inner.stat(key).await?.size;
        let size =
            format::plain_size(stored).ok_or_else(|| BackendError::Unauthentic(key.to_string()))?;
        let range = range.start.min(size)..range.end.min(size);
        if range.is_empty() {
            return Ok(futures::stream::empty().boxed());
        }
        let header = self.inner.open(key, Some(0..format::HEADER)).await?;
        let header: Vec<Bytes> = header
            .try_collect()
            .await
            .map_err(|e| BackendError::io("failed to read", key, e))?;
        let cipher = format::ObjectCipher::open(&data_key, &header.concat(), key.as_str())
            .ok_or_else(|| BackendError::Unauthentic(key.to_string()))?;
        let (segments, stored_range) = format::segments_of(&range, size);
        let last = (format::segment_count(size) - 1) as u32;
        let window = reader::Window {
            first: segments.start,
            last: Some(last),
            last_len: stored - format::HEADER - u64::from(last) * format::SEALED,
            skip: range.start - u64::from(segments.start) * format::SEGMENT,
            take: range.end - range.start,
        };
        let body = self.inner.open(key, Some(stored_range)).await?;
        Ok(reader::open(
            body,
            key.to_string(),
            Some(cipher),
            window,
            data_key,
        ))
    }
}

impl fmt::Display for Encrypted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.inner.fmt(f)
    }
}

#[async_trait]
impl Backend for Encrypted {
    async fn create(
        &self,
        key: &ObjectKey,
        opts: CreateOptions,
    ) -> Result<Box<dyn ObjectSink>, BackendError> {
        let Some(data_key) = self.data_key().await? else {
            return self.inner.create(key, opts).await;
        };
        let opts = CreateOptions {
            size_hint: opts.size_hint.map(format::sealed_size),
        };
        let (cipher, header) = format::ObjectCipher::create(&data_key, key.as_str())
            .map_err(|e| BackendError::io("failed to encrypt", key, e))?;
        let inner = self.inner.create(key, opts).await?;
        Ok(Box::new(sink::SealingSink::new(inner, cipher, header)))
    }

    async fn open(
        &self,
        key: &ObjectKey,
        range: Option<Range<u64>>,
    ) -> Result<ByteStream, BackendError> {
        let Some(data_key) = self.data_key().await? else {
            return self.inner.open(key, range).await;
        };
        match range {
            Some(r) => self.open_range(key, data_key, r).await,
            None => {
                let body = self.inner.open(key, None).await?;
                Ok(reader::open(
                    body,
                    key.to_string(),
                    None,
                    reader::Window::whole(),
                    data_key,
                ))
            }
        }
    }

    async fn stat(&self, key: &ObjectKey) -> Result<ObjectMeta, BackendError> {
        let sealed = self.data_key().await?.is_some();
        let meta = self.inner.stat(key).await?;
        Self::content_meta(sealed, meta)
            .unwrap_or_else(|| Err(BackendError::NotFound(key.to_string())))
    }

    async fn list(&self, dir: Option<&ObjectKey>) -> Result<Vec<ObjectMeta>, BackendError> {
        let sealed = self.data_key().await?.is_some();
        self.inner
            .list(dir)
            .await?
            .into_iter()
            .filter_map(|m| Self::content_meta(sealed, m))
            .collect()
    }

    fn list_recursive(
        &self,
        prefix: Option<&ObjectKey>,
    ) -> BoxStream<'static, Result<ObjectMeta, BackendError>> {
        let keyring = Arc::clone(&self.keyring);
        let listing = self.inner.list_recursive(prefix);
        futures::stream::once(async move {
            let sealed = matches!(keyring.mode().await?, Mode::Sealed(_));
            Ok::<_, BackendError>(listing.try_filter_map(move |m| {
                std::future::ready(Self::content_meta(sealed, m).transpose())
            }))
        })
        .try_flatten()
        .boxed()
    }

    async fn put_if_absent(
        &self,
        key: &ObjectKey,
        bytes: Bytes,
    ) -> Result<ObjectMeta, BackendError> {
        let Some(data_key) = self.data_key().await? else {
            return self.inner.put_if_absent(key, bytes).await;
        };
        let size = bytes.len() as u64;
        let name = key.to_string();
        let sealed =
            tokio::task::spawn_blocking(move || format::seal_all(&data_key, &name, &bytes))
                .await
                .map_err(std::io::Error::other)
                .and_then(|r| r)
                .map_err(|e| BackendError::io("failed to encrypt", key, e))?;
        let mut meta = self.inner.put_if_absent(key, sealed.into()).await?;
        meta.size = size;
        Ok(meta)
    }

    async fn delete(&self, key: &ObjectKey) -> Result<(), BackendError> {
        self.inner.delete(key).await
    }

    async fn cleanup(&self) -> Result<usize, BackendError> {
        // Checks the key before the storage is touched at start-up.
        self.keyring.mode().await?;
        self.inner.cleanup().await
    }

    /// A linked file would be plaintext: linked only when the storage is not encrypted.
    async fn link_file(
        &self,
        file: Arc<std::fs::File>,
        key: &ObjectKey,
        replace: bool,
    ) -> Result<(), BackendError> {
        match self.data_key().await? {
            None => self.inner.link_file(file, key, replace).await,
            Some(_) => Err(BackendError::Unsupported(format!(
                "link a file as `{key}`: the storage is encrypted"
            ))),
        }
    }

    async fn sync_links(&self, dir: &ObjectKey) -> Result<(), BackendError> {
        self.inner.sync_links(dir).await
    }
}

//! Where a recovery reads from: `file://` (confined to `snapshots_path`), `http(s)://`
//! (streamed, never spooled), `s3://bucket/key` and bare snapshot names of the configured
//! storage. Each yields a stream of byte chunks plus the SHA-256 to expect, when one is known.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use futures::{StreamExt, TryStreamExt};

use super::not_found;
use crate::backend::{BackendError, ByteStream, ObjectKey};
use crate::collection::registry::validate_name;
use crate::error::{Error, Result};
use crate::io::file_stream::file_stream;
use crate::repository::{parse_checksum, Repository};

/// An opened recovery source.
pub struct Source {
    /// The snapshot's bytes.
    pub stream: ByteStream,
    /// The checksum published next to it (sidecar or `x-checksum-sha256`), if any.
    pub published_sha256: Option<String>,
    /// Its length, when known before reading (for progress).
    pub size: Option<u64>,
}

/// Settings of recovery sources.
#[derive(Clone, Debug)]
pub struct SourceSettings {
    /// `storage.snapshots_path`: `file://` locations are confined to it.
    pub snapshots_path: PathBuf,
    /// `service.enable_snapshot_url_recovery`.
    pub url_recovery: bool,
    /// `(scheme, bucket, prefix)` when snapshots live in a cloud, for locations in that
    /// cloud's own scheme (`s3://`, `az://`, `gs://`).
    pub cloud_location: Option<(&'static str, String, String)>,
}

/// Opens the locations a recovery may read from.
#[derive(Debug)]
pub struct Sources {
    repo: Arc<Repository>,
    settings: SourceSettings,
    http: reqwest::Client,
}

impl Sources {
    /// Sources over the configured repository `repo`.
    pub fn new(repo: Arc<Repository>, settings: SourceSettings) -> Result<Self> {
        let http = reqwest::Client::builder()
            .connect_timeout(std::time::Duration::from_secs(10))
            // An inactivity limit, like Qdrant's 60 s stream timeout, not a total limit.
            .read_timeout(std::time::Duration::from_secs(60))
            .build()
            .map_err(|e| Error::internal("failed to build HTTP client", e))?;
        Ok(Sources {
            repo,
            settings,
            http,
        })
    }

    /// Opens `location` for recovering into a collection whose snapshots live under `dir`.
    pub async fn open(
        &self,
        location: &str,
        dir: &ObjectKey,
        api_key: Option<&str>,
    ) -> Result<Source> {
        let url = match url::Url::parse(location) {
            Ok(url) => url,
            // `{collection}/{name}`: another collection's stored snapshot (the dashboard
            // recovers one collection's snapshot into another this way).
            Err(url::ParseError::RelativeUrlWithoutBase)
                if location
                    .split_once('/')
                    .is_some_and(|(c, n)| validate_name(c).is_ok() && !n.contains('/')) =>
            {
                return self.open_stored(location, None).await
            }
            Err(url::ParseError::RelativeUrlWithoutBase) => {
                return self.open_stored(location, Some(dir)).await
            }
            Err(e) => {
                return Err(Error::BadRequest(format!(
                    "Invalid snapshot location `{location}`: {e}"
                )))
            }
        };
        match url.scheme() {
            "file" => self.open_file(&url).await,
            "http" | "https" => self.open_http(url, api_key).await,
            "s3" | "az" | "gs" => self.open_cloud(&url).await,
            other => Err(Error::BadRequest(format!(
                "URL {url} with scheme {other} is not supported"
            ))),
        }
    }

    async fn open_file(&self, url: &url::Url) -> Result<Source> {
        if url
            .host_str()
            .is_some_and(|h| !h.is_empty() && h != "localhost")
        {
            return Err(Error::BadRequest(
                "Invalid snapshot URI, file path must be absolute or on localhost".into(),
            ));
        }
        let path = url.to_file_path().map_err(|()| {
            Error::BadRequest(
                "Invalid snapshot URI, file path must be absolute or on localhost".into(),
            )
        })?;
        if let Some(manifest) = self.local_manifest(&path).await {
            return self.open_local_stored(&path, &manifest, ".manifest").await;
        }

        let (canonical, root) = canonical_inside(&path, &self.settings.snapshots_path).await?;
        if !canonical.starts_with(&root) {
            // The server's own directory is not named: it is configuration, not input.
            return Err(Error::Forbidden(
                "Snapshot file path must be inside the snapshots directory \
                 (storage.snapshots_path)"
                    .into(),
            ));
        }
        if self.settings.cloud_location.is_none() && is_sealed(&canonical).await {
            // A snapshot of an encrypted local repository: read through it, decrypted.
            return self.open_local_stored(&path, &canonical, "").await;
        }
        let file = tokio::fs::File::open(&canonical)
            .await
            .map_err(|e| {
                Error::BadRequest(format!(
                    "Snapshot file \"{}\" cannot be opened: {e}",
                    path.display()
                ))
            })?
            .into_std()
            .await;
        let mut sidecar = canonical.clone().into_os_string();
        sidecar.push(".checksum");
        let published = tokio::fs::read_to_string(PathBuf::from(sidecar))
            .await
            .ok()
            .and_then(|t| parse_checksum(&t));
        let size = file.metadata().ok().map(|m| m.len());
        Ok(Source {
            stream: file_stream(file, 0..u64::MAX),
            published_sha256: published,
            size,
        })
    }

    /// The manifest of an incremental snapshot of the local repository named by `path`:
    /// it has no tar file, its manifest stands beside where the file would be.
    async fn local_manifest(&self, path: &Path) -> Option<PathBuf> {
        if self.settings.cloud_location.is_some() || tokio::fs::metadata(path).await.is_ok() {
            return None;
        }
        let mut manifest = path.to_path_buf().into_os_string();
        manifest.push(".manifest");
        let manifest = PathBuf::from(manifest);
        tokio::fs::metadata(&manifest).await.ok().map(|_| manifest)
    }

    /// Opens the stored snapshot whose object is the file `file` (its manifest, when
    /// `suffix` is `.manifest`; the tar, sealed, when it is empty) inside the snapshots
    /// directory, which is the local repository's root.
    async fn open_local_stored(&self, path: &Path, file: &Path, suffix: &str) -> Result<Source> {
        let (canonical, root) = canonical_inside(file, &self.settings.snapshots_path).await?;
        let rel = canonical
            .strip_prefix(&root)
            .ok()
            .and_then(|r| r.to_str())
            .and_then(|r| r.strip_suffix(suffix))
            .ok_or_else(|| {
                Error::Forbidden(
                    "Snapshot file path must be inside the snapshots directory \
                     (storage.snapshots_path)"
                        .into(),
                )
            })?;
        let key = ObjectKey::new(rel).map_err(|_| {
            Error::BadRequest(format!(
                "Snapshot file \"{}\" does not exist",
                path.display()
            ))
        })?;
        let stored = self.repo.stat(&key).await.map_err(not_found(rel))?;
        let stream = self
            .repo
            .open(&stored, None)
            .await
            .map_err(not_found(rel))?;
        Ok(Source {
            stream,
            published_sha256: stored.checksum,
            size: Some(stored.size),
        })
    }

    async fn open_http(&self, url: url::Url, api_key: Option<&str>) -> Result<Source> {
        if !self.settings.url_recovery {
            return Err(Error::Forbidden(
                "Snapshot recovery from remote URLs is disabled in the configuration".into(),
            ));
        }
        let mut req = self.http.get(url.clone());
        if let Some(key) = api_key {
            req = req.header("api-key", key);
        }
        let resp = req.send().await.map_err(|e| {
            Error::bad_input(format!(
                "Failed to download snapshot from {url}: {}",
                without_url(&e)
            ))
        })?;
        if !resp.status().is_success() {
            return Err(Error::bad_input(format!(
                "Failed to download snapshot from {url}: status - {}",
                resp.status()
            )));
        }
        let published = resp
            .headers()
            .get("x-checksum-sha256")
            .and_then(|v| v.to_str().ok())
            .and_then(parse_checksum);
        let size = resp.content_length();
        let stream = resp.bytes_stream().map_err(std::io::Error::other);
        Ok(Source {
            stream: stream.boxed(),
            published_sha256: published,
            size,
        })
    }

    async fn open_cloud(&self, url: &url::Url) -> Result<Source> {
        let scheme = url.scheme();
        let Some((_, bucket, prefix)) = self
            .settings
            .cloud_location
            .as_ref()
            .filter(|(s, _, _)| *s == scheme)
        else {
            let storage = match scheme {
                "az" => "azure",
                "gs" => "gcs",
                other => other,
            };
            return Err(Error::BadRequest(format!(
                "{scheme}:// locations need storage.snapshots_config.snapshots_storage: {storage}"
            )));
        };
        if url.host_str() != Some(bucket.as_str()) {
            return Err(Error::BadRequest(format!(
                "{scheme}:// location must be in the configured bucket `{bucket}`, got `{}`",
                url.host_str().unwrap_or_default()
            )));
        }
        let full = percent_decode(url.path().trim_start_matches('/'));
        let rel = if prefix.is_empty() {
            Some(full.as_str())
        } else {
            full.strip_prefix(prefix.as_str())
                .and_then(|r| r.strip_prefix('/'))
        };
        let rel = rel.ok_or_else(|| {
            Error::BadRequest(format!(
                "{scheme}:// location must be under the configured prefix `{prefix}/`"
            ))
        })?;
        self.open_stored(rel, None).await
    }

    /// Opens an object of the configured storage: `name` under `dir`, or a full key.
    async fn open_stored(&self, name: &str, dir: Option<&ObjectKey>) -> Result<Source> {
        let key = match dir {
            Some(d) => d.join(name),
            None => ObjectKey::new(name),
        }
        .map_err(|_| Error::NotFound(format!("Snapshot {name} not found")))?;
        let stored = self.repo.stat(&key).await;
        let stream = match &stored {
            Ok(s) => self.repo.open(s, None).await,
            Err(BackendError::NotFound(n)) => Err(BackendError::NotFound(n.clone())),
            Err(e) => Err(BackendError::Io {
                action: "failed to open",
                path: key.to_string(),
                source: std::io::Error::other(e.to_string()),
            }),
        };
        let size = stored.as_ref().ok().map(|s| s.size);
        let published = stored.ok().and_then(|s| s.checksum);
        let stream = stream.map_err(|e| match e {
            // A bare name is looked up in one place only: say which, and what else works.
            BackendError::NotFound(_) if dir.is_some() => {
                let dir = dir.map_or("", |d| d.as_str());
                let place = match &self.settings.cloud_location {
                    Some(_) => format!("{}/{dir}/", self.repo.backend()),
                    None => format!("snapshots_path/{dir}/"),
                };
                Error::NotFound(format!(
                    "Snapshot {name} not found: a bare name is looked up among the collection's \
                     stored snapshots, in {place}; for a snapshot elsewhere give a file://, \
                     http(s):// or s3:// (az://, gs://) location"
                ))
            }
            other => not_found(name)(other),
        })?;
        Ok(Source {
            stream: stream.boxed(),
            published_sha256: published,
            size,
        })
    }
}

/// reqwest errors print the URL, which may carry credentials; keep only the cause.
fn without_url(e: &reqwest::Error) -> String {
    let mut s = String::from(if e.is_connect() {
        "connection failed"
    } else if e.is_timeout() {
        "timed out"
    } else {
        "request failed"
    });
    let mut src = std::error::Error::source(e);
    while let Some(inner) = src {
        s = format!("{s}: {inner}");
        src = inner.source();
    }
    s
}

fn percent_decode(s: &str) -> String {
    url::form_urlencoded::parse(format!("k={}", s.replace('+', "%2B")).as_bytes())
        .next()
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default()
}

/// Canonicalizes `path` (which must exist) and the snapshots root.
async fn canonical_inside(path: &Path, root: &Path) -> Result<(PathBuf, PathBuf)> {
    let canonical = tokio::fs::canonicalize(path).await.map_err(|_| {
        Error::BadRequest(format!(
            "Snapshot file \"{}\" does not exist",
            path.display()
        ))
    })?;
    let root = tokio::fs::canonicalize(root).await.map_err(|e| {
        Error::internal(
            format!("snapshots directory `{}` is not accessible", root.display()),
            e,
        )
    })?;
    if !tokio::fs::metadata(&canonical)
        .await
        .map(|m| m.is_file())
        .unwrap_or(false)
    {
        return Err(Error::BadRequest(format!(
            "Snapshot file \"{}\" does not exist",
            path.display()
        )));
    }
    Ok((canonical, root))
}

/// Whether the file at `path` starts as an encrypted object of snapshot storage does.
async fn is_sealed(path: &Path) -> bool {
    use tokio::io::AsyncReadExt;
    let mut head = [0u8; 4];
    match tokio::fs::File::open(path).await {
        Ok(mut f) => {
            f.read_exact(&mut head).await.is_ok() && &head == crate::backend::encryption::MAGIC
        }
        Err(_) => false,
    }
}

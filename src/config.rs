//! Configuration, layered as Qdrant users know it.
//!
//! Lowest to highest priority: the embedded default (`config/config.yaml` at build time),
//! `config/config.yaml` in the working directory, `--config-path FILE`, then environment
//! variables `QDRANT__SECTION__KEY`. Every leaf remembers where it came from, so an error
//! names the key and its origin. Unknown keys are warnings; bad values are errors.
//!
//! The YAML crate is `serde_yaml_ng`, a maintained fork of the archived `serde_yaml` with
//! the same `Value` tree, which the layered merge needs.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use serde_yaml_ng::Value;

use crate::backend::azure::AzureOptions;
use crate::backend::cloud::Transfer;
use crate::backend::encryption::EncryptionOptions;
use crate::backend::gcs::GcsOptions;
use crate::backend::s3::{S3Options, DEFAULT_REGION};
use crate::backup::source::{
    validate_source_name, validate_url, Retention, SourceOptions, SOURCE_KEYS,
};
use crate::env;
pub use crate::secret::Secret;
use crate::snapshot::codec::Compression;

/// The configuration embedded at build time: the defaults of every key.
pub const EMBEDDED_DEFAULT: &str = include_str!("../config/config.yaml");
/// The optional configuration file read from the working directory.
pub const LOCAL_CONFIG_FILE: &str = "config/config.yaml";

/// Where a configuration value came from.
#[derive(Clone, Debug, PartialEq)]
pub enum Origin {
    /// The embedded default configuration.
    Default,
    /// A YAML file.
    File(PathBuf),
    /// An environment variable.
    Env(String),
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::Default => f.write_str("the embedded default configuration"),
            Origin::File(p) => write!(f, "file `{}`", p.display()),
            Origin::Env(v) => write!(f, "environment variable {v}"),
        }
    }
}

/// A configuration error that stops start-up.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A file could not be read.
    #[error("cannot read configuration file `{path}`")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A file is not valid YAML.
    #[error("configuration file `{path}` is not valid YAML: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The parser's message.
        message: String,
    },
    /// A key has a value of the wrong type or out of range.
    #[error("invalid value for `{key}` from {origin}: {message}")]
    Invalid {
        /// Dotted key.
        key: String,
        /// Where the value came from.
        origin: Origin,
        /// What is wrong.
        message: String,
    },
    /// A required key is missing.
    #[error("`{key}` must be set when {reason}")]
    Missing {
        /// Dotted key.
        key: String,
        /// Why it is required.
        reason: String,
    },
}

/// Where snapshots are stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SnapshotsStorage {
    /// Under `storage.snapshots_path`.
    Local,
    /// In an S3-compatible bucket.
    S3,
    /// In an Azure Blob Storage container.
    Azure,
    /// In a Google Cloud Storage bucket.
    Gcs,
}

/// `storage.snapshots_config`.
#[derive(Clone, Debug, PartialEq)]
pub struct SnapshotsConfig {
    /// Backend.
    pub storage: SnapshotsStorage,
    /// Compression of new snapshots.
    pub compression: Compression,
    /// S3 settings when `storage` is S3.
    pub s3: Option<S3Options>,
    /// Azure settings when `storage` is Azure.
    pub azure: Option<AzureOptions>,
    /// GCS settings when `storage` is GCS.
    pub gcs: Option<GcsOptions>,
    /// Incremental, deduplicated snapshots (`incremental`).
    pub incremental: bool,
    /// Snapshot every collection this often (`schedule.interval_sec`); `None` is off.
    pub schedule_interval_sec: Option<u64>,
    /// Keep this many newest snapshots per collection, and of full snapshots
    /// (`retention.keep_last`); `None` keeps all.
    pub retention_keep_last: Option<u64>,
    /// Verify the storage this often (`verify.interval_sec`); `None` is off.
    pub verify_interval_sec: Option<u64>,
    /// The fraction of pieces a scheduled verification reads back (`verify.read_data`).
    pub verify_read_data: f64,
    /// Client-side encryption (`encryption.key`, `encryption.key_file`).
    pub encryption: EncryptionOptions,
}

impl SnapshotsConfig {
    /// `(scheme, bucket, prefix)` of the cloud that holds snapshots: `s3`, `az` or `gs`
    /// with the bucket (container) and key prefix; `None` for local storage.
    pub fn cloud_location(&self) -> Option<(&'static str, String, String)> {
        let (scheme, bucket, prefix) = match self.storage {
            SnapshotsStorage::Local => return None,
            SnapshotsStorage::S3 => self.s3.as_ref().map(|c| ("s3", &c.bucket, &c.prefix))?,
            SnapshotsStorage::Azure => self
                .azure
                .as_ref()
                .map(|c| ("az", &c.container, &c.prefix))?,
            SnapshotsStorage::Gcs => self.gcs.as_ref().map(|c| ("gs", &c.bucket, &c.prefix))?,
        };
        Some((scheme, bucket.clone(), prefix.clone()))
    }
}

/// `service.*`.
#[derive(Clone, Debug, PartialEq)]
pub struct ServiceConfig {
    /// Listen address.
    pub host: String,
    /// HTTP port.
    pub http_port: u16,
    /// gRPC port; `None` (`null`) disables gRPC.
    pub grpc_port: Option<u16>,
    /// Whether `grpc_port` was set by a file or the environment rather than the embedded
    /// default: only an explicitly chosen port that cannot be bound stops start-up.
    pub grpc_port_explicit: bool,
    /// Full-access key.
    pub api_key: Option<Secret>,
    /// Read-only key.
    pub read_only_api_key: Option<Secret>,
    /// Largest JSON body in MiB (snapshot uploads are not limited).
    pub max_request_size_mb: u64,
    /// Whether `http(s)://` snapshot locations may be recovered from.
    pub enable_snapshot_url_recovery: bool,
}

/// `storage.*`.
#[derive(Clone, Debug, PartialEq)]
pub struct StorageConfig {
    /// Collections live here.
    pub storage_path: PathBuf,
    /// Local snapshots live here; `file://` recovery is confined to it.
    pub snapshots_path: PathBuf,
    /// Work files (recovery staging of downloads); defaults to inside `storage_path`.
    pub temp_path: Option<PathBuf>,
    /// Snapshot storage.
    pub snapshots_config: SnapshotsConfig,
}

/// How log lines are written (`logger.format`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum LogFormat {
    /// Human-readable lines (coloured only on a terminal).
    #[default]
    Text,
    /// One JSON object per line, for log collectors.
    Json,
}

/// The validated configuration.
#[derive(Clone, Debug, PartialEq)]
pub struct Config {
    /// Default log filter.
    pub log_level: String,
    /// Log line format.
    pub log_format: LogFormat,
    /// HTTP service.
    pub service: ServiceConfig,
    /// Storage.
    pub storage: StorageConfig,
    /// Qdrant deployments to back up (`backup.sources`), by name.
    pub backup_sources: Vec<SourceOptions>,
}

/// The raw layered key → value map before validation.
#[derive(Debug, Default)]
pub struct Layers {
    values: BTreeMap<String, (Value, Origin)>,
    /// The embedded default of every key: the keys this service understands, and what a
    /// key set to `null` (or to an empty string) falls back to.
    defaults: BTreeMap<String, Value>,
}

/// Every key of the embedded configuration with its default value: the one list of the
/// keys this service understands.
fn embedded_defaults() -> &'static BTreeMap<String, Value> {
    static DEFAULTS: std::sync::OnceLock<BTreeMap<String, Value>> = std::sync::OnceLock::new();
    DEFAULTS.get_or_init(|| {
        let mut out = BTreeMap::new();
        // The embedded file is checked by the tests; a broken build fails them, not start-up.
        if let Ok(doc) = serde_yaml_ng::from_str::<Value>(EMBEDDED_DEFAULT) {
            flatten(&doc, "", &Origin::Default, &mut out);
        }
        out.into_iter().map(|(k, (v, _))| (k, v)).collect()
    })
}

/// The embedded default of `key` as text (`None` when the key is unknown or its default is
/// `null`).
pub fn embedded_default(key: &str) -> Option<String> {
    match embedded_defaults().get(key)? {
        Value::Null => None,
        Value::String(s) => Some(s.clone()),
        other => serde_yaml_ng::to_string(other)
            .ok()
            .map(|t| t.trim().to_string()),
    }
}

/// Where each backup source's keys start: `backup.sources.{name}.{key}`.
const SOURCES_PREFIX: &str = "backup.sources.";

/// Whether `key` is one of a backup source's keys (`backup.sources.{name}.{key}`).
fn is_source_key(key: &str) -> bool {
    key.strip_prefix(SOURCES_PREFIX)
        .and_then(|rest| rest.split_once('.'))
        .is_some_and(|(_, k)| SOURCE_KEYS.iter().any(|(known, _)| *known == k))
}

/// Every configuration key this service understands, dotted.
pub fn known_keys() -> impl Iterator<Item = &'static str> {
    embedded_defaults().keys().map(String::as_str)
}

fn flatten(v: &Value, prefix: &str, origin: &Origin, out: &mut BTreeMap<String, (Value, Origin)>) {
    match v {
        Value::Mapping(m) => {
            for (k, child) in m {
                let key = match k {
                    Value::String(s) => s.clone(),
                    other => serde_yaml_ng::to_string(other)
                        .unwrap_or_default()
                        .trim()
                        .to_string(),
                };
                let full = if prefix.is_empty() {
                    key
                } else {
                    format!("{prefix}.{key}")
                };
                flatten(child, &full, origin, out);
            }
        }
        leaf => {
            out.insert(prefix.to_string(), (leaf.clone(), origin.clone()));
        }
    }
}

/// The known key nearest to an unknown one, when it is near enough to be a typo (or the
/// same key in another section, as `snapshots_path` for `storage.snapshots_path`).
pub fn nearest_known_key(unknown: &str) -> Option<&'static str> {
    let leaf = unknown.rsplit('.').next().unwrap_or(unknown);
    known_keys()
        .map(|k| {
            let whole = strsim::normalized_damerau_levenshtein(unknown, k);
            let known_leaf = k.rsplit('.').next().unwrap_or(k);
            let by_leaf = strsim::normalized_damerau_levenshtein(leaf, known_leaf) * 0.95;
            (whole.max(by_leaf), k)
        })
        .filter(|(score, _)| *score >= 0.7)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, k)| k)
}

impl Layers {
    /// Starts from the embedded defaults.
    pub fn new() -> Result<Self, ConfigError> {
        let mut l = Layers {
            values: BTreeMap::new(),
            defaults: embedded_defaults().clone(),
        };
        l.add_yaml(EMBEDDED_DEFAULT, Origin::Default)?;
        Ok(l)
    }

    /// Adds a YAML document on top.
    pub fn add_yaml(&mut self, text: &str, origin: Origin) -> Result<(), ConfigError> {
        let path = match &origin {
            Origin::File(p) => p.clone(),
            _ => PathBuf::from("<embedded>"),
        };
        let doc: Value = serde_yaml_ng::from_str(text).map_err(|e| ConfigError::Parse {
            path,
            message: e.to_string(),
        })?;
        if !doc.is_null() {
            flatten(&doc, "", &origin, &mut self.values);
        }
        Ok(())
    }

    /// Adds a YAML file on top.
    pub fn add_file(&mut self, path: &Path) -> Result<(), ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        self.add_yaml(&text, Origin::File(path.to_path_buf()))
    }

    /// Adds `QDRANT__*` variables on top (values are parsed as YAML scalars).
    pub fn add_env(&mut self, vars: impl IntoIterator<Item = (String, String)>) {
        for (name, raw) in vars {
            let Some(rest) = name.strip_prefix(env::CONFIG_PREFIX) else {
                continue;
            };
            let key = rest
                .split(env::CONFIG_SEPARATOR)
                .map(str::to_lowercase)
                .collect::<Vec<_>>()
                .join(".");
            let value =
                serde_yaml_ng::from_str::<Value>(&raw).unwrap_or(Value::String(raw.clone()));
            // Nested YAML in an env var is not supported; keep such text as a string.
            let value = if value.is_mapping() || value.is_sequence() {
                Value::String(raw)
            } else {
                value
            };
            self.values.insert(key, (value, Origin::Env(name)));
        }
    }

    /// Keys that were set but are not understood, with their origin.
    pub fn unknown_keys(&self) -> Vec<(String, Origin)> {
        self.values
            .iter()
            .filter(|(k, _)| !self.defaults.contains_key(k.as_str()) && !is_source_key(k))
            .map(|(k, (_, o))| (k.clone(), o.clone()))
            .collect()
    }

    fn invalid(&self, key: &str, message: impl Into<String>) -> ConfigError {
        let origin = self
            .values
            .get(key)
            .map(|(_, o)| o.clone())
            .unwrap_or(Origin::Default);
        ConfigError::Invalid {
            key: key.to_string(),
            origin,
            message: message.into(),
        }
    }

    /// The value of `key`: the one set, or the embedded default when it is unset or `null`.
    fn value(&self, key: &str) -> Option<&Value> {
        match self.values.get(key).map(|(v, _)| v) {
            None | Some(Value::Null) => self.defaults.get(key),
            Some(Value::String(s)) if s.is_empty() => self.defaults.get(key),
            set => set,
        }
    }

    fn string(&self, key: &str) -> Result<Option<String>, ConfigError> {
        match self.value(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) if s.is_empty() => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(Value::Number(n)) => Ok(Some(n.to_string())),
            Some(Value::Bool(b)) => Ok(Some(b.to_string())),
            Some(_) => Err(self.invalid(key, "expected a string")),
        }
    }

    /// A string key that has an embedded default, so is never unset.
    fn required(&self, key: &str) -> Result<String, ConfigError> {
        self.string(key)?
            .ok_or_else(|| self.invalid(key, "must be set"))
    }

    fn u64(&self, key: &str) -> Result<Option<u64>, ConfigError> {
        match self.value(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Number(n)) => n.as_u64().map(Some).ok_or_else(|| {
                self.invalid(key, format!("expected a non-negative integer, got {n}"))
            }),
            Some(Value::String(s)) => s.trim().parse().map(Some).map_err(|_| {
                self.invalid(key, format!("expected a non-negative integer, got {s:?}"))
            }),
            Some(_) => Err(self.invalid(key, "expected a non-negative integer")),
        }
    }

    fn bool(&self, key: &str) -> Result<Option<bool>, ConfigError> {
        match self.value(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(Value::String(s)) => match s.to_ascii_lowercase().as_str() {
                "true" | "1" | "yes" | "on" => Ok(Some(true)),
                "false" | "0" | "no" | "off" => Ok(Some(false)),
                _ => Err(self.invalid(key, format!("expected true or false, got {s:?}"))),
            },
            Some(Value::Number(n)) if n.as_u64() == Some(1) => Ok(Some(true)),
            Some(Value::Number(n)) if n.as_u64() == Some(0) => Ok(Some(false)),
            Some(_) => Err(self.invalid(key, "expected true or false")),
        }
    }

    /// A number between 0 and 1.
    fn fraction(&self, key: &str) -> Result<f64, ConfigError> {
        let v = match self.value(key) {
            Some(Value::Number(n)) => n.as_f64(),
            Some(Value::String(s)) => s.trim().parse().ok(),
            _ => None,
        };
        match v {
            Some(f) if (0.0..=1.0).contains(&f) => Ok(f),
            _ => Err(self.invalid(key, "expected a number between 0 and 1")),
        }
    }

    fn ranged(&self, key: &str, min: u64, max: u64) -> Result<u64, ConfigError> {
        let v = self
            .u64(key)?
            .ok_or_else(|| self.invalid(key, "must be set"))?;
        if v < min || v > max {
            return Err(self.invalid(key, format!("must be between {min} and {max}, got {v}")));
        }
        Ok(v)
    }

    /// Validates everything into a [`Config`]. `aws_env` is the process environment, read
    /// for the standard `AWS_*` fallbacks.
    pub fn build(&self, aws_env: &dyn Fn(&str) -> Option<String>) -> Result<Config, ConfigError> {
        let snapshots_config = self.snapshots_config(aws_env)?;
        let service = self.service()?;
        let storage = StorageConfig {
            storage_path: PathBuf::from(self.required("storage.storage_path")?),
            snapshots_path: PathBuf::from(self.required("storage.snapshots_path")?),
            temp_path: self.string("storage.temp_path")?.map(PathBuf::from),
            snapshots_config,
        };
        let log_format = self.choice(
            "logger.format",
            &[("text", LogFormat::Text), ("json", LogFormat::Json)],
        )?;
        Ok(Config {
            log_level: self.log_level()?,
            log_format,
            service,
            storage,
            backup_sources: self.backup_sources()?,
        })
    }

    /// A list: a YAML sequence of strings, or (from an environment variable) one string
    /// of comma-separated items. Unset is empty.
    fn list(&self, key: &str) -> Result<Vec<String>, ConfigError> {
        match self.value(key) {
            None | Some(Value::Null) => Ok(Vec::new()),
            Some(Value::String(s)) => Ok(s
                .split(',')
                .map(str::trim)
                .filter(|x| !x.is_empty())
                .map(str::to_string)
                .collect()),
            Some(Value::Sequence(items)) => items
                .iter()
                .map(|v| match v {
                    Value::String(s) => Ok(s.clone()),
                    _ => Err(self.invalid(key, "expected a list of strings")),
                })
                .collect(),
            Some(_) => Err(self.invalid(key, "expected a list of strings")),
        }
    }

    /// `backup.sources.{name}.*`, sorted by name.
    fn backup_sources(&self) -> Result<Vec<SourceOptions>, ConfigError> {
        let names: std::collections::BTreeSet<&str> = self
            .values
            .keys()
            .filter_map(|k| k.strip_prefix(SOURCES_PREFIX)?.split('.').next())
            .filter(|n| !n.is_empty())
            .collect();
        names.into_iter().map(|n| self.backup_source(n)).collect()
    }

    /// A mistyped key under a source would silently leave a backup unscheduled or unpruned:
    /// it stops start-up, with the nearest key.
    fn refuse_unknown_source_keys(&self, name: &str) -> Result<(), ConfigError> {
        let prefix = format!("{SOURCES_PREFIX}{name}.");
        let Some(unknown) = self
            .values
            .keys()
            .find(|k| k.starts_with(&prefix) && !is_source_key(k))
        else {
            return Ok(());
        };
        let leaf = &unknown[prefix.len()..];
        let near = SOURCE_KEYS
            .iter()
            .map(|(k, _)| (strsim::normalized_damerau_levenshtein(leaf, k), *k))
            .filter(|(score, _)| *score >= 0.6)
            .max_by(|a, b| a.0.total_cmp(&b.0))
            .map(|(_, k)| format!(" (did you mean `{prefix}{k}`?)"))
            .unwrap_or_default();
        Err(self.invalid(unknown, format!("is not a backup source key{near}")))
    }

    fn backup_source(&self, name: &str) -> Result<SourceOptions, ConfigError> {
        let key = |k: &str| format!("{SOURCES_PREFIX}{name}.{k}");
        let first = self
            .values
            .keys()
            .find(|k| k.starts_with(&format!("{SOURCES_PREFIX}{name}.")))
            .cloned()
            .unwrap_or_default();
        validate_source_name(name).map_err(|m| self.invalid(&first, m))?;
        self.refuse_unknown_source_keys(name)?;
        let url = self
            .string(&key("url"))?
            .ok_or_else(|| ConfigError::Missing {
                key: key("url"),
                reason: format!("backup source `{name}` is configured"),
            })?;
        validate_url(&url).map_err(|m| self.invalid(&key("url"), m))?;
        let peer_urls = self.list(&key("peer_urls"))?;
        for u in &peer_urls {
            validate_url(u).map_err(|m| self.invalid(&key("peer_urls"), m))?;
        }
        let count = |k: &str| -> Result<u32, ConfigError> {
            let v = self.u64(&key(k))?.unwrap_or(0);
            u32::try_from(v).map_err(|_| self.invalid(&key(k), "is too large"))
        };
        Ok(SourceOptions {
            name: name.to_string(),
            url: url.trim_end_matches('/').to_string(),
            peer_urls: peer_urls
                .iter()
                .map(|u| u.trim_end_matches('/').to_string())
                .collect(),
            api_key: self.string(&key("api_key"))?.map(Secret::new),
            collections: self.list(&key("collections"))?,
            interval_sec: self.u64(&key("schedule.interval_sec"))?.filter(|&s| s > 0),
            retention: Retention {
                keep_last: count("retention.keep_last")?,
                keep_hourly: count("retention.keep_hourly")?,
                keep_daily: count("retention.keep_daily")?,
                keep_weekly: count("retention.keep_weekly")?,
                keep_monthly: count("retention.keep_monthly")?,
            },
        })
    }

    /// One of `options` (the key's value and what it means); unset is the first.
    fn choice<T: Copy>(&self, key: &str, options: &[(&str, T)]) -> Result<T, ConfigError> {
        let Some(given) = self.string(key)? else {
            return Ok(options[0].1);
        };
        if let Some((_, v)) = options.iter().find(|(name, _)| *name == given) {
            return Ok(*v);
        }
        let names: Vec<String> = options.iter().map(|(n, _)| format!("`{n}`")).collect();
        let expected = match names.split_last() {
            Some((last, rest)) if !rest.is_empty() => format!("{} or {last}", rest.join(", ")),
            _ => names.join(""),
        };
        Err(self.invalid(key, format!("expected {expected}, got {given:?}")))
    }

    /// `service.*`.
    fn service(&self) -> Result<ServiceConfig, ConfigError> {
        let grpc_port = match self.values.get("service.grpc_port") {
            Some((Value::Null, _)) => None,
            _ => Some(self.ranged("service.grpc_port", 1, 65535)? as u16),
        };
        Ok(ServiceConfig {
            host: self.required("service.host")?,
            http_port: self.ranged("service.http_port", 1, 65535)? as u16,
            grpc_port,
            grpc_port_explicit: self
                .values
                .get("service.grpc_port")
                .is_some_and(|(_, o)| *o != Origin::Default),
            api_key: self.string("service.api_key")?.map(Secret::new),
            read_only_api_key: self.string("service.read_only_api_key")?.map(Secret::new),
            max_request_size_mb: self.ranged("service.max_request_size_mb", 1, 1 << 20)?,
            enable_snapshot_url_recovery: self
                .bool("service.enable_snapshot_url_recovery")?
                .ok_or_else(|| {
                    self.invalid("service.enable_snapshot_url_recovery", "must be set")
                })?,
        })
    }

    /// `storage.snapshots_config.*`.
    fn snapshots_config(
        &self,
        aws_env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<SnapshotsConfig, ConfigError> {
        const P: &str = "storage.snapshots_config";
        let storage = self.choice(
            &format!("{P}.snapshots_storage"),
            &[
                ("local", SnapshotsStorage::Local),
                ("s3", SnapshotsStorage::S3),
                ("azure", SnapshotsStorage::Azure),
                ("gcs", SnapshotsStorage::Gcs),
            ],
        )?;
        let compression = self.choice(
            &format!("{P}.compression"),
            &[
                ("none", Compression::None),
                ("gzip", Compression::Gzip),
                ("zstd", Compression::Zstd),
            ],
        )?;
        let keep_last = format!("{P}.retention.keep_last");
        Ok(SnapshotsConfig {
            storage,
            compression,
            s3: match storage {
                SnapshotsStorage::S3 => Some(self.s3(aws_env)?),
                _ => None,
            },
            azure: match storage {
                SnapshotsStorage::Azure => Some(self.azure()?),
                _ => None,
            },
            gcs: match storage {
                SnapshotsStorage::Gcs => Some(self.gcs()?),
                _ => None,
            },
            incremental: self.bool(&format!("{P}.incremental"))?.unwrap_or(false),
            schedule_interval_sec: self
                .u64(&format!("{P}.schedule.interval_sec"))?
                .filter(|&n| n > 0),
            verify_interval_sec: self
                .u64(&format!("{P}.verify.interval_sec"))?
                .filter(|&n| n > 0),
            verify_read_data: self.fraction(&format!("{P}.verify.read_data"))?,
            encryption: self.encryption()?,
            retention_keep_last: match self.u64(&keep_last)? {
                Some(0) => {
                    return Err(
                        self.invalid(&keep_last, "must be at least 1 (null keeps every snapshot)")
                    )
                }
                k => k,
            },
        })
    }

    /// `log_level`: one of Qdrant's levels, or a `tracing` filter directive such as
    /// `info,snapstream=debug`. A typo must stop start-up: an unparsable level would
    /// otherwise silence the log, errors included.
    fn log_level(&self) -> Result<String, ConfigError> {
        const LEVELS: [&str; 6] = ["off", "error", "warn", "info", "debug", "trace"];
        let level = self.required("log_level")?;
        let valid = level.split(',').all(|directive| {
            let lvl = directive.rsplit('=').next().unwrap_or("").trim();
            let target_ok = directive
                .split_once('=')
                .is_none_or(|(t, _)| !t.trim().is_empty());
            target_ok && LEVELS.contains(&lvl.to_ascii_lowercase().as_str())
        });
        if valid {
            Ok(level)
        } else {
            Err(self.invalid(
                "log_level",
                format!("expected one of TRACE, DEBUG, INFO, WARN, ERROR, OFF (or `target=level` directives), got {level:?}"),
            ))
        }
    }

    fn s3(&self, aws_env: &dyn Fn(&str) -> Option<String>) -> Result<S3Options, ConfigError> {
        const P: &str = "storage.snapshots_config.s3_config";
        let key = |k: &str| format!("{P}.{k}");
        let bucket = self.needed(P, "bucket", "s3")?;
        let from_env = aws_env(env::AWS_ENDPOINT_URL_S3).or_else(|| aws_env(env::AWS_ENDPOINT_URL));
        let endpoint_url = self.endpoint(&key("endpoint_url"), from_env)?;
        let path_style = self
            .bool(&key("path_style"))?
            .unwrap_or(endpoint_url.is_some());
        Ok(S3Options {
            bucket,
            region: self
                .string(&key("region"))?
                .or_else(|| aws_env(env::AWS_REGION))
                .or_else(|| aws_env(env::AWS_DEFAULT_REGION))
                .unwrap_or_else(|| DEFAULT_REGION.into()),
            access_key: self
                .string(&key("access_key"))?
                .or_else(|| aws_env(env::AWS_ACCESS_KEY_ID))
                .map(Secret::new),
            secret_key: self
                .string(&key("secret_key"))?
                .or_else(|| aws_env(env::AWS_SECRET_ACCESS_KEY))
                .map(Secret::new),
            endpoint_url,
            prefix: self.prefix(P)?,
            path_style,
            transfer: self.transfer(P)?,
        })
    }

    /// `{section}.prefix`, without surrounding slashes.
    fn prefix(&self, section: &str) -> Result<String, ConfigError> {
        Ok(self
            .string(&format!("{section}.prefix"))?
            .unwrap_or_default()
            .trim_matches('/')
            .to_string())
    }

    /// The transfer keys of a cloud's section.
    fn transfer(&self, section: &str) -> Result<Transfer, ConfigError> {
        let key = |k: &str| format!("{section}.{k}");
        Ok(Transfer {
            part_size: self.ranged(&key("part_size"), 5 << 20, 5 << 30)?,
            upload_concurrency: self.ranged(&key("upload_concurrency"), 1, 64)? as usize,
            max_retries: self.ranged(&key("max_retries"), 0, 100)? as usize,
            retry_timeout_secs: self.ranged(&key("retry_timeout_secs"), 1, 86_400)?,
            request_timeout_secs: self.ranged(&key("request_timeout_secs"), 1, 86_400)?,
        })
    }

    /// `{section}.{name}`, which must be set when `snapshots_storage` is `storage`.
    fn needed(&self, section: &str, name: &str, storage: &str) -> Result<String, ConfigError> {
        let key = format!("{section}.{name}");
        self.string(&key)?.ok_or_else(|| ConfigError::Missing {
            key,
            reason: format!("storage.snapshots_config.snapshots_storage is `{storage}`"),
        })
    }

    /// An optional endpoint URL (`key`, else `fallback`), which must be http(s).
    fn endpoint(&self, key: &str, fallback: Option<String>) -> Result<Option<String>, ConfigError> {
        let url = self.string(key)?.or(fallback);
        if let Some(u) = &url {
            if url::Url::parse(u)
                .map(|u| !matches!(u.scheme(), "http" | "https"))
                .unwrap_or(true)
            {
                return Err(self.invalid(key, format!("expected an http(s) URL, got {u:?}")));
            }
        }
        Ok(url)
    }

    fn azure(&self) -> Result<AzureOptions, ConfigError> {
        const P: &str = "storage.snapshots_config.azure_config";
        let key = |k: &str| format!("{P}.{k}");
        Ok(AzureOptions {
            container: self.needed(P, "container", "azure")?,
            account: self.string(&key("account"))?,
            access_key: self.string(&key("access_key"))?.map(Secret::new),
            sas_token: self.string(&key("sas_token"))?.map(Secret::new),
            endpoint_url: self.endpoint(&key("endpoint_url"), None)?,
            prefix: self.prefix(P)?,
            transfer: self.transfer(P)?,
        })
    }

    /// `storage.snapshots_config.encryption`; a key file that cannot be read stops start-up.
    fn encryption(&self) -> Result<EncryptionOptions, ConfigError> {
        const P: &str = "storage.snapshots_config.encryption";
        let options = EncryptionOptions {
            key: self.string(&format!("{P}.key"))?.map(Secret::new),
            key_file: self.string(&format!("{P}.key_file"))?.map(PathBuf::from),
        };
        options
            .passphrase()
            .map_err(|why| self.invalid(&format!("{P}.key"), why))?;
        Ok(options)
    }

    fn gcs(&self) -> Result<GcsOptions, ConfigError> {
        const P: &str = "storage.snapshots_config.gcs_config";
        let key = |k: &str| format!("{P}.{k}");
        Ok(GcsOptions {
            bucket: self.needed(P, "bucket", "gcs")?,
            service_account_path: self.string(&key("service_account_path"))?,
            service_account_key: self.string(&key("service_account_key"))?.map(Secret::new),
            endpoint_url: self.endpoint(&key("endpoint_url"), None)?,
            anonymous: self.bool(&key("anonymous"))?.unwrap_or(false),
            prefix: self.prefix(P)?,
            transfer: self.transfer(P)?,
        })
    }
}

/// What [`load`] found: the configuration, the keys it did not know (with where they were
/// set), and the files it read, in order.
#[derive(Debug)]
pub struct Loaded {
    /// The validated configuration.
    pub config: Config,
    /// Unknown keys and their origins.
    pub unknown: Vec<(String, Origin)>,
    /// Configuration files read, lowest precedence first.
    pub files: Vec<PathBuf>,
}

/// Loads the configuration the way the binary does: embedded default, `config/config.yaml`
/// if present, `config_path` if given (it must exist), then the process environment.
pub fn load(config_path: Option<&Path>) -> Result<Loaded, ConfigError> {
    let mut layers = Layers::new()?;
    let mut files = Vec::new();
    let local = Path::new(LOCAL_CONFIG_FILE);
    if local.is_file() {
        layers.add_file(local)?;
        files.push(local.to_path_buf());
    }
    if let Some(p) = config_path {
        layers.add_file(p)?;
        files.push(p.to_path_buf());
    }
    layers.add_env(std::env::vars());
    let config = layers.build(&|k| std::env::var(k).ok().filter(|v| !v.is_empty()))?;
    Ok(Loaded {
        config,
        unknown: layers.unknown_keys(),
        files,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_env(_: &str) -> Option<String> {
        None
    }

    #[test]
    fn embedded_defaults_match_the_documented_ones() {
        let c = Layers::new().unwrap().build(&no_env).unwrap();
        assert_eq!(c.service.http_port, 6333);
        assert_eq!(c.service.grpc_port, Some(6334));
        assert!(!c.service.grpc_port_explicit);
        assert_eq!(c.service.host, "127.0.0.1");
        assert_eq!(c.storage.storage_path, PathBuf::from("./storage"));
        assert_eq!(c.storage.snapshots_path, PathBuf::from("./snapshots"));
        assert_eq!(c.storage.temp_path, None);
        assert_eq!(c.storage.snapshots_config.storage, SnapshotsStorage::Local);
        assert_eq!(c.storage.snapshots_config.compression, Compression::None);
        assert!(c.service.api_key.is_none());
        assert!(c.service.enable_snapshot_url_recovery);
    }

    #[test]
    fn azure_and_gcs_are_configured_like_s3_and_name_what_is_missing() {
        let env = |pairs: &[(&str, &str)]| {
            let mut l = Layers::new().unwrap();
            l.add_env(pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())));
            l.build(&no_env)
        };
        const P: &str = "QDRANT__STORAGE__SNAPSHOTS_CONFIG__";
        let err = env(&[(&format!("{P}SNAPSHOTS_STORAGE"), "azure")])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("storage.snapshots_config.azure_config.container"),
            "{err}"
        );
        let c = env(&[
            (&format!("{P}SNAPSHOTS_STORAGE"), "azure"),
            (&format!("{P}AZURE_CONFIG__CONTAINER"), "backups"),
            (&format!("{P}AZURE_CONFIG__PREFIX"), "/team/a/"),
            (&format!("{P}AZURE_CONFIG__UPLOAD_CONCURRENCY"), "3"),
        ])
        .unwrap()
        .storage
        .snapshots_config;
        let azure = c.azure.clone().unwrap();
        assert_eq!(
            (azure.prefix.as_str(), azure.transfer.upload_concurrency),
            ("team/a", 3)
        );
        assert_eq!(
            c.cloud_location(),
            Some(("az", "backups".to_string(), "team/a".to_string()))
        );
        let err = env(&[
            (&format!("{P}SNAPSHOTS_STORAGE"), "gcs"),
            (&format!("{P}GCS_CONFIG__BUCKET"), "b"),
            (&format!("{P}GCS_CONFIG__ENDPOINT_URL"), "ftp://x"),
        ])
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("gcs_config.endpoint_url") && err.contains("http(s)"),
            "{err}"
        );
        let c = env(&[
            (&format!("{P}SNAPSHOTS_STORAGE"), "gcs"),
            (&format!("{P}GCS_CONFIG__BUCKET"), "b"),
        ])
        .unwrap()
        .storage
        .snapshots_config;
        assert_eq!(
            c.cloud_location(),
            Some(("gs", "b".to_string(), "snapshots".to_string()))
        );
        assert!(c.s3.is_none() && c.azure.is_none());
    }

    #[test]
    fn env_overrides_files_and_nests_with_double_underscores() {
        let mut l = Layers::new().unwrap();
        l.add_yaml(
            "service:\n  http_port: 7000\n",
            Origin::File("a.yaml".into()),
        )
        .unwrap();
        l.add_env([
            ("QDRANT__SERVICE__HTTP_PORT".to_string(), "7001".to_string()),
            ("QDRANT__SERVICE__API_KEY".to_string(), "12345".to_string()),
            (
                "QDRANT__STORAGE__SNAPSHOTS_CONFIG__SNAPSHOTS_STORAGE".to_string(),
                "s3".to_string(),
            ),
            (
                "QDRANT__STORAGE__SNAPSHOTS_CONFIG__S3_CONFIG__BUCKET".to_string(),
                "b".to_string(),
            ),
            ("OTHER".to_string(), "x".to_string()),
        ]);
        let c = l
            .build(&|k| (k == "AWS_REGION").then(|| "eu-west-1".to_string()))
            .unwrap();
        assert_eq!(c.service.http_port, 7001);
        assert_eq!(
            c.service.api_key.as_ref().map(Secret::expose),
            Some("12345")
        );
        let s3 = c.storage.snapshots_config.s3.unwrap();
        assert_eq!((s3.bucket.as_str(), s3.region.as_str()), ("b", "eu-west-1"));
        assert!(!s3.path_style);
    }

    #[test]
    fn bad_values_name_the_key_and_origin() {
        let mut l = Layers::new().unwrap();
        l.add_env([("QDRANT__SERVICE__HTTP_PORT".to_string(), "abc".to_string())]);
        let err = l.build(&no_env).unwrap_err().to_string();
        assert!(
            err.contains("service.http_port") && err.contains("QDRANT__SERVICE__HTTP_PORT"),
            "{err}"
        );

        let mut l = Layers::new().unwrap();
        l.add_yaml(
            "storage:\n  snapshots_config:\n    snapshots_storage: ftp\n",
            Origin::File("c.yaml".into()),
        )
        .unwrap();
        let err = l.build(&no_env).unwrap_err().to_string();
        assert!(
            err.contains("snapshots_storage") && err.contains("c.yaml"),
            "{err}"
        );

        let mut l = Layers::new().unwrap();
        l.add_yaml(
            "storage:\n  snapshots_config:\n    snapshots_storage: s3\n",
            Origin::Default,
        )
        .unwrap();
        assert!(l.build(&no_env).unwrap_err().to_string().contains("bucket"));
    }

    #[test]
    fn unknown_keys_are_reported_with_origin() {
        let mut l = Layers::new().unwrap();
        l.add_yaml("service:\n  http_prot: 1\n", Origin::File("x.yaml".into()))
            .unwrap();
        let unknown = l.unknown_keys();
        assert_eq!(
            unknown,
            vec![(
                "service.http_prot".to_string(),
                Origin::File("x.yaml".into())
            )]
        );
    }

    #[test]
    fn unknown_keys_get_the_nearest_known_one() {
        assert_eq!(
            nearest_known_key("storage.snapshot_path"),
            Some("storage.snapshots_path")
        );
        assert_eq!(
            nearest_known_key("service.http_prot"),
            Some("service.http_port")
        );
        assert_eq!(
            nearest_known_key("snapshots_path"),
            Some("storage.snapshots_path")
        );
        assert_eq!(nearest_known_key("cluster.enabled"), None);
    }

    #[test]
    fn log_level_typos_stop_start_up() {
        for good in ["INFO", "warn", "debug,snapstream=trace", "off"] {
            let mut l = Layers::new().unwrap();
            l.add_env([("QDRANT__LOG_LEVEL".to_string(), good.to_string())]);
            assert_eq!(l.build(&no_env).unwrap().log_level, good);
        }
        for bad in ["verbose", "warning", "snapstream=loud", "=info"] {
            let mut l = Layers::new().unwrap();
            l.add_env([("QDRANT__LOG_LEVEL".to_string(), bad.to_string())]);
            let msg = l.build(&no_env).unwrap_err().to_string();
            assert!(
                msg.contains("log_level") && msg.contains("QDRANT__LOG_LEVEL"),
                "{msg}"
            );
        }
    }

    #[test]
    fn grpc_port_can_be_moved_or_disabled() {
        let mut l = Layers::new().unwrap();
        l.add_env([("QDRANT__SERVICE__GRPC_PORT".to_string(), "7334".to_string())]);
        let c = l.build(&no_env).unwrap();
        assert_eq!(c.service.grpc_port, Some(7334));
        assert!(c.service.grpc_port_explicit);
        let mut l = Layers::new().unwrap();
        l.add_yaml(
            "service:\n  grpc_port: null\n",
            Origin::File("x.yaml".into()),
        )
        .unwrap();
        assert_eq!(l.build(&no_env).unwrap().service.grpc_port, None);
        let mut l = Layers::new().unwrap();
        l.add_env([("QDRANT__SERVICE__GRPC_PORT".to_string(), "0".to_string())]);
        let err = l.build(&no_env).unwrap_err().to_string();
        assert!(err.contains("service.grpc_port") && err.contains("QDRANT__SERVICE__GRPC_PORT"));
    }

    /// The documentation's table lists every key with its embedded default, and no other key.
    #[test]
    fn documented_keys_and_defaults_are_the_embedded_ones() {
        let doc = include_str!("../docs/configuration.md");
        let mut documented = BTreeMap::new();
        let main_table = doc.lines().take_while(|l| !l.starts_with("| source key"));
        for line in main_table.filter(|l| l.starts_with("| `")) {
            let cells: Vec<&str> = line.split('|').map(str::trim).collect();
            let key = cells[1].trim_matches('`');
            documented.insert(key.to_string(), cells[2].to_string());
        }
        let known: Vec<&str> = known_keys().collect();
        assert_eq!(
            documented.keys().map(String::as_str).collect::<Vec<_>>(),
            known,
            "docs/configuration.md lists other keys than config/config.yaml"
        );
        for (key, value) in embedded_defaults() {
            let shown = documented[key.as_str()].as_str();
            let expected = match value {
                // `null` is unset or derived (the AWS_* fall-backs), which the table says in words.
                Value::Null => continue,
                Value::String(s) => format!("`{s}`"),
                other => format!("`{}`", serde_yaml_ng::to_string(other).unwrap().trim()),
            };
            assert!(
                shown == expected || shown.starts_with(&format!("{expected} ")),
                "docs/configuration.md gives `{key}` the default {shown}, config.yaml {expected}"
            );
        }
    }

    #[test]
    fn documented_source_keys_are_the_known_ones() {
        let doc = include_str!("../docs/configuration.md");
        let documented: Vec<(String, String)> = doc
            .lines()
            .skip_while(|l| !l.starts_with("| source key"))
            .filter(|l| l.starts_with("| `"))
            .map(|l| {
                let cells: Vec<&str> = l.split('|').map(str::trim).collect();
                (
                    cells[1].trim_matches('`').to_string(),
                    cells[2].trim_matches('`').to_string(),
                )
            })
            .collect();
        let known: Vec<(String, String)> = SOURCE_KEYS
            .iter()
            .map(|(k, d)| (k.to_string(), d.to_string()))
            .collect();
        assert_eq!(documented, known);
    }

    #[test]
    fn backup_sources_come_from_files_and_the_environment() {
        let mut l = Layers::new().unwrap();
        l.add_yaml(
            "backup:\n  sources:\n    prod:\n      url: http://10.0.0.5:6333/\n      collections: [a, b]\n      retention: {keep_daily: 7}\n",
            Origin::File("f.yaml".into()),
        )
        .unwrap();
        l.add_env([
            (
                "QDRANT__BACKUP__SOURCES__PROD__API_KEY".to_string(),
                "k".to_string(),
            ),
            (
                "QDRANT__BACKUP__SOURCES__EU__URL".to_string(),
                "https://q.eu:6333".to_string(),
            ),
            (
                "QDRANT__BACKUP__SOURCES__EU__PEER_URLS".to_string(),
                "https://a:1, https://b:2".to_string(),
            ),
            (
                "QDRANT__BACKUP__SOURCES__EU__SCHEDULE__INTERVAL_SEC".to_string(),
                "3600".to_string(),
            ),
        ]);
        assert!(l.unknown_keys().is_empty(), "{:?}", l.unknown_keys());
        let c = l.build(&no_env).unwrap();
        let [eu, prod] = &c.backup_sources[..] else {
            panic!("{:?}", c.backup_sources)
        };
        assert_eq!(
            (eu.name.as_str(), eu.url.as_str()),
            ("eu", "https://q.eu:6333")
        );
        assert_eq!(eu.peer_urls, vec!["https://a:1", "https://b:2"]);
        assert_eq!(eu.interval_sec, Some(3600));
        assert_eq!(prod.url, "http://10.0.0.5:6333");
        assert_eq!(prod.collections, vec!["a", "b"]);
        assert_eq!(prod.api_key.as_ref().map(Secret::expose), Some("k"));
        assert_eq!(prod.retention.keep_daily, 7);
        assert_eq!(prod.interval_sec, None);
    }

    #[test]
    fn bad_backup_sources_stop_start_up_naming_the_key() {
        let build = |yaml: &str| {
            let mut l = Layers::new().unwrap();
            l.add_yaml(yaml, Origin::File("f.yaml".into())).unwrap();
            l.build(&no_env).unwrap_err().to_string()
        };
        let e = build("backup:\n  sources:\n    prod:\n      collections: [a]\n");
        assert!(e.contains("backup.sources.prod.url"), "{e}");
        let e = build("backup:\n  sources:\n    prod:\n      url: 10.0.0.5:6333\n");
        assert!(
            e.contains("backup.sources.prod.url") && e.contains("f.yaml"),
            "{e}"
        );
        let e = build("backup:\n  sources:\n    Prod:\n      url: http://x:1\n");
        assert!(e.contains("lowercase"), "{e}");
        let e = build("backup:\n  sources:\n    prod:\n      url: http://x:1\n      shedule: {interval_sec: 1}\n");
        assert!(
            e.contains("backup.sources.prod.shedule.interval_sec")
                && e.contains("did you mean `backup.sources.prod.schedule.interval_sec`"),
            "{e}"
        );
    }

    #[test]
    fn secrets_are_redacted_in_debug() {
        let s = Secret::new("hunter2");
        assert!(!format!("{s:?}").contains("hunter2"));
    }
}

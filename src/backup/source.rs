//! A Qdrant deployment to back up (`backup.sources.{name}`), as the configuration gives it.

use crate::secret::Secret;

/// Keys of one source under `backup.sources.{name}`, with their defaults: the one list the
/// configuration checks keys against and documents.
pub(crate) const SOURCE_KEYS: &[(&str, &str)] = &[
    ("url", "(required)"),
    ("peer_urls", "[]"),
    ("api_key", "null"),
    ("collections", "[]"),
    ("schedule.interval_sec", "0"),
    ("retention.keep_last", "0"),
    ("retention.keep_hourly", "0"),
    ("retention.keep_daily", "0"),
    ("retention.keep_weekly", "0"),
    ("retention.keep_monthly", "0"),
];

/// How many backups each rule keeps; a backup kept by any rule stays (restic's `forget`).
/// All zero keeps everything.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Retention {
    /// The newest this many.
    pub keep_last: u32,
    /// The newest of each of the last this many hours that have a backup.
    pub keep_hourly: u32,
    /// The same per day.
    pub keep_daily: u32,
    /// The same per ISO week.
    pub keep_weekly: u32,
    /// The same per month.
    pub keep_monthly: u32,
}

impl Retention {
    /// Whether any rule is set.
    pub fn is_set(&self) -> bool {
        self.keep_last + self.keep_hourly + self.keep_daily + self.keep_weekly + self.keep_monthly
            > 0
    }
}

/// One source.
#[derive(Clone, Debug, PartialEq)]
pub struct SourceOptions {
    /// Its name: lowercase letters, digits, `-` and `_`.
    pub name: String,
    /// Any one peer's HTTP URL.
    pub url: String,
    /// Every peer's HTTP URL, when peers do not share `url`'s port.
    pub peer_urls: Vec<String>,
    /// Qdrant's full-access key (streaming a shard needs it).
    pub api_key: Option<Secret>,
    /// Collections to back up; empty is every collection, found at each run.
    pub collections: Vec<String>,
    /// Back up this often; `None` is off.
    pub interval_sec: Option<u64>,
    /// What to keep after each backup.
    pub retention: Retention,
}

/// Checks a source name: what may stand in a key and an environment variable.
pub(crate) fn validate_source_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "source name `{name}` must be 1 to 64 lowercase letters, digits, '-' or '_'"
        ))
    }
}

/// Checks a peer URL: http(s) with a host.
pub(crate) fn validate_url(url: &str) -> Result<(), String> {
    let parsed = url::Url::parse(url).map_err(|e| format!("`{url}` is not a URL: {e}"))?;
    if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none() {
        return Err(format!(
            "`{url}` must be an http:// or https:// URL with a host"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_urls_are_checked() {
        assert!(validate_source_name("prod-eu_1").is_ok());
        for bad in ["", "Prod", "a/b", "a.b", &"x".repeat(65)] {
            assert!(validate_source_name(bad).is_err(), "{bad}");
        }
        assert!(validate_url("http://10.0.0.5:6333").is_ok());
        for bad in ["10.0.0.5:6333", "ftp://x", "http://", "nonsense"] {
            assert!(validate_url(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn retention_is_set_by_any_rule() {
        assert!(!Retention::default().is_set());
        let r = Retention {
            keep_weekly: 1,
            ..Default::default()
        };
        assert!(r.is_set());
    }
}

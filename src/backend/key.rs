//! Validated object keys: the only way a backend is ever addressed.

use std::fmt;

/// A relative, `/`-separated key with no empty, `.` or `..` segment, no backslash and no
/// control character. Checked once in the constructor, so backends can map it to a path or
/// an object name without escaping their root.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObjectKey(String);

/// Why a key was rejected.
#[derive(Debug, thiserror::Error)]
#[error("invalid object key `{key}`: {reason}")]
pub struct InvalidKey {
    /// The rejected text.
    pub key: String,
    /// What is wrong.
    pub reason: &'static str,
}

fn check_segment(seg: &str) -> Result<(), &'static str> {
    if seg.is_empty() {
        return Err("empty segment");
    }
    if seg == "." || seg == ".." {
        return Err("`.` and `..` segments are not allowed");
    }
    if seg.contains('\\') {
        return Err("backslashes are not allowed");
    }
    if seg.chars().any(char::is_control) {
        return Err("control characters are not allowed");
    }
    if seg.len() > 1024 {
        return Err("segment longer than 1024 bytes");
    }
    Ok(())
}

impl ObjectKey {
    /// Parses and validates a key like `collection/name.snapshot`.
    pub fn new(key: impl Into<String>) -> Result<Self, InvalidKey> {
        let key = key.into();
        if key.starts_with('/') {
            return Err(InvalidKey {
                key,
                reason: "absolute keys are not allowed",
            });
        }
        for seg in key.split('/') {
            if let Err(reason) = check_segment(seg) {
                return Err(InvalidKey { key, reason });
            }
        }
        Ok(ObjectKey(key))
    }

    /// A child key; `segment` must be a single valid segment.
    pub fn join(&self, segment: &str) -> Result<Self, InvalidKey> {
        check_segment(segment).map_err(|reason| InvalidKey {
            key: segment.to_string(),
            reason,
        })?;
        if segment.contains('/') {
            return Err(InvalidKey {
                key: segment.to_string(),
                reason: "a single segment cannot contain `/`",
            });
        }
        Ok(ObjectKey(format!("{}/{segment}", self.0)))
    }

    /// The key as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The last segment.
    pub fn file_name(&self) -> &str {
        self.0.rsplit('/').next().unwrap_or(&self.0)
    }

    /// The segments.
    pub fn segments(&self) -> impl Iterator<Item = &str> {
        self.0.split('/')
    }
}

impl fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traversal_and_odd_keys_are_rejected() {
        for bad in [
            "",
            "/etc/passwd",
            "../x",
            "a/../b",
            "a//b",
            "a/./b",
            "a\\b",
            "a/",
            "x\0y",
        ] {
            assert!(ObjectKey::new(bad).is_err(), "{bad:?}");
        }
        let k = ObjectKey::new("c/x.snapshot").unwrap();
        assert_eq!(k.file_name(), "x.snapshot");
        assert!(k.join("..").is_err());
        assert!(k.join("a/b").is_err());
    }
}

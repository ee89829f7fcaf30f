//! One line a person can act on for a failed storage call.
//!
//! S3 SDKs report a failure as a chain of wrapped errors (request, retry, HTTP, XML body).
//! Callers and the start-up log get one short sentence instead: which storage, what kind of
//! failure, and what setting to check. The full chain still goes to the log.

use std::error::Error as StdError;
use std::io;

use super::BackendError;
use crate::error::{BoxError, Error};

/// An error of a storage write or read carried as `source`: [`Error::Storage`] with a
/// summary a person can act on when a backend failure is in its chain, otherwise an
/// internal error with `context`.
pub(crate) fn storage_error(context: impl Into<String>, source: impl Into<BoxError>) -> Error {
    let source = source.into();
    match find(source.as_ref()).and_then(summary) {
        Some(summary) => Error::Storage { summary, source },
        None => Error::internal(context, source),
    }
}

/// The first [`BackendError`] in `err`'s source chain (itself included).
pub(crate) fn find<'a>(err: &'a (dyn StdError + 'static)) -> Option<&'a BackendError> {
    let mut cur: Option<&'a (dyn StdError + 'static)> = Some(err);
    while let Some(e) = cur {
        if let Some(b) = e.downcast_ref::<BackendError>() {
            return Some(b);
        }
        // Errors carried through an `io::Error` (an `AsyncWrite` sink) sit in its payload,
        // which `source()` skips for custom errors.
        if let Some(inner) = e.downcast_ref::<io::Error>().and_then(|io| io.get_ref()) {
            if let Some(b) = find(inner) {
                return Some(b);
            }
        }
        cur = e.source();
    }
    None
}

/// `WHERE: WHAT`, naming the storage without local paths, object keys, the server's answer
/// or credentials. `None` for a missing object or a bad key, which
/// are not storage failures.
pub(crate) fn summary(err: &BackendError) -> Option<String> {
    let (place, what) = match err {
        BackendError::NotFound(_)
        | BackendError::AlreadyExists(_)
        | BackendError::InvalidKey(_) => return None,
        // Both name what is wrong in full: an object's key, or the setting to fix.
        BackendError::Unauthentic(_)
        | BackendError::Encryption(_)
        | BackendError::Unsupported(_) => return Some(err.to_string()),
        BackendError::Io { source, .. } => (
            "local snapshots directory".to_string(),
            io_kind(source.kind()),
        ),
        BackendError::Remote {
            backend, source, ..
        } => (
            format!("{} storage {backend}", cloud_of(backend)),
            remote_kind(source.as_ref()),
        ),
    };
    Some(format!("{place}: {what}"))
}

/// The cloud a backend's name (`s3://...`, `az://...`, `gs://...`) points at.
fn cloud_of(backend: &str) -> &'static str {
    match backend.split_once("://").map(|(scheme, _)| scheme) {
        Some("az") => "Azure",
        Some("gs") => "GCS",
        _ => "S3",
    }
}

fn io_kind(kind: io::ErrorKind) -> String {
    match kind {
        io::ErrorKind::PermissionDenied => {
            "permission denied; check the owner and mode of snapshots_path".to_string()
        }
        io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded => {
            "no space left on the device of snapshots_path".to_string()
        }
        io::ErrorKind::ReadOnlyFilesystem => "the file system is read-only".to_string(),
        other => format!("I/O error ({other})"),
    }
}

/// Classifies a remote failure from typed errors where the SDK exposes them, and from the
/// S3 error codes in the chain's text where it does not (`aws-sdk-s3` errors are flattened
/// to text before they reach us; S3 error codes are stable API).
fn remote_kind(err: &(dyn StdError + 'static)) -> String {
    let mut text = String::new();
    let mut cur: Option<&(dyn StdError + 'static)> = Some(err);
    while let Some(e) = cur {
        if let Some(os) = e.downcast_ref::<object_store::Error>() {
            match os {
                object_store::Error::PermissionDenied { .. }
                | object_store::Error::Unauthenticated { .. } => return access_denied(),
                object_store::Error::NotFound { .. } => return no_bucket(),
                _ => {}
            }
        }
        if let Some(http) = e.downcast_ref::<object_store::client::HttpError>() {
            use object_store::client::HttpErrorKind as K;
            match http.kind() {
                K::Connect => return unreachable(),
                K::Timeout => {
                    return "requests time out; check endpoint_url and the network".into()
                }
                K::Request | K::Interrupted => {
                    return "the connection failed during a request; check that the S3 server is up"
                        .into()
                }
                _ => {}
            }
        }
        text.push_str(&e.to_string());
        text.push('\n');
        cur = e.source();
    }
    let has = |needles: &[&str]| needles.iter().any(|n| text.contains(n));
    if has(&["NoSuchBucket", "bucket does not exist"]) {
        no_bucket()
    } else if has(&[
        "InvalidAccessKeyId",
        "SignatureDoesNotMatch",
        "AccessDenied",
        "Forbidden",
    ]) {
        access_denied()
    } else if has(&["no credentials", "NoCredentials", "credentials provider"]) {
        "no credentials; set access_key and secret_key".into()
    } else if has(&[
        "dispatch failure",
        "Connection refused",
        "dns error",
        "connect",
    ]) {
        unreachable()
    } else {
        "the request failed (the service log has the S3 server's answer)".into()
    }
}

fn access_denied() -> String {
    "access denied; check access_key / secret_key and the bucket's policy".into()
}

fn no_bucket() -> String {
    "the bucket does not exist; check bucket (and region)".into()
}

fn unreachable() -> String {
    "cannot connect; check endpoint_url and that the S3 server is up".into()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn remote(cause: &str) -> BackendError {
        BackendError::Remote {
            action: "failed to list",
            key: "p".into(),
            backend: "s3://b/p".into(),
            source: Box::new(io::Error::other(cause.to_string())),
        }
    }

    #[test]
    fn s3_error_codes_become_one_actionable_line() {
        let s = summary(&remote(
            "service error: InvalidAccessKeyId: The key does not exist",
        ))
        .unwrap();
        assert_eq!(
            s,
            "S3 storage s3://b/p: access denied; check access_key / secret_key and the \
             bucket's policy"
        );
        assert!(summary(&remote("NoSuchBucket"))
            .unwrap()
            .contains("bucket does not exist"));
        assert!(summary(&remote("dispatch failure: Connection refused"))
            .unwrap()
            .contains("cannot connect"));
        assert!(summary(&remote("something odd"))
            .unwrap()
            .contains("service log"));
    }

    #[test]
    fn local_failures_name_no_path_and_missing_objects_are_not_failures() {
        let e = BackendError::Io {
            action: "failed to create",
            path: "/very/secret/place".into(),
            source: io::Error::from(io::ErrorKind::PermissionDenied),
        };
        let s = summary(&e).unwrap();
        assert!(
            s.contains("permission denied") && !s.contains("/very"),
            "{s}"
        );
        assert_eq!(summary(&BackendError::NotFound("k".into())), None);
    }

    #[test]
    fn a_backend_error_is_found_inside_an_io_error() {
        let wrapped = io::Error::other(remote("AccessDenied"));
        let outer = crate::error::Error::internal("writing", wrapped);
        assert!(find(&outer).is_some());
    }
}

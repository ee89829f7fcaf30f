//! The crate's error type: semantic variants, one per thing a caller can do about it.
//!
//! Transports map each variant once (REST in `api::error`, gRPC in `grpc::status`); what a
//! variant means is documented here, never its HTTP or gRPC code.

use std::error::Error as StdError;

/// A boxed error source.
pub type BoxError = Box<dyn StdError + Send + Sync + 'static>;

/// What went wrong, by what the caller should do about it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The request's content is invalid: a value the caller must change.
    #[error("{0}")]
    BadInput(String),
    /// The request itself is malformed (a missing part, a wrong shape).
    #[error("{0}")]
    BadRequest(String),
    /// One named field of the request fails validation.
    #[error("{field}: {message}")]
    InvalidField {
        /// The field's name as the caller wrote it.
        field: &'static str,
        /// What is wrong with it.
        message: String,
    },
    /// Something named does not exist.
    #[error("{0}")]
    NotFound(String),
    /// Something to be created exists already.
    #[error("{0}")]
    AlreadyExists(String),
    /// Not allowed by configuration or location, whoever asks.
    #[error("{0}")]
    Forbidden(String),
    /// Bytes received do not match the checksum the caller gave: data was lost or altered.
    #[error("expected {expected}, actual {actual}")]
    ChecksumMismatch {
        /// The checksum the caller gave.
        expected: String,
        /// The checksum of the bytes received.
        actual: String,
    },
    /// A Qdrant deployment this service backs up or restores into failed, refused or
    /// could not be reached; the message names the peer and what it said.
    #[error("{0}")]
    Upstream(String),
    /// The snapshot storage (local directory or bucket) failed or refused. `summary` is one
    /// line naming the storage and what to check, safe to show; the cause chain is for the log.
    #[error("snapshot storage failed: {summary}")]
    Storage {
        /// What failed, in words a person can act on.
        summary: String,
        /// Why it failed.
        #[source]
        source: BoxError,
    },
    /// The service itself failed; `context` says what it was doing. Callers see only a
    /// generic message ([`Error::public_message`]); the cause chain goes to the log.
    #[error("{context}")]
    Internal {
        /// What was being done.
        context: String,
        /// Why it failed.
        #[source]
        source: BoxError,
    },
}

/// The crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// An internal error with context.
    pub fn internal(context: impl Into<String>, source: impl Into<BoxError>) -> Self {
        Error::Internal {
            context: context.into(),
            source: source.into(),
        }
    }

    /// A bad-input error.
    pub fn bad_input(msg: impl Into<String>) -> Self {
        Error::BadInput(msg.into())
    }

    /// What a caller may be told: the message for every variant, except that an internal
    /// failure says only "internal error" (its context can name paths and endpoints). A
    /// storage failure says which storage failed and what to check.
    pub fn public_message(&self) -> String {
        match self {
            Error::Internal { .. } => "internal error; see the service log".to_string(),
            other => other.to_string(),
        }
    }

    /// The error and its sources on one line, for logs.
    pub fn chain(&self) -> String {
        chain(self)
    }
}

/// Any error and its sources on one line.
pub(crate) fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(c) = src {
        s.push_str(": ");
        s.push_str(&c.to_string());
        src = c.source();
    }
    s
}

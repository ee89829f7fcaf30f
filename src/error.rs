//! The crate's error type: semantic variants that the HTTP layer maps to Qdrant's statuses.

use std::error::Error as StdError;

/// A boxed error source.
pub type BoxError = Box<dyn StdError + Send + Sync + 'static>;

/// What went wrong, by what the caller should do about it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The request's content is invalid (400, "Wrong input: ...").
    #[error("{0}")]
    BadInput(String),
    /// The request itself is malformed (400, "Bad request: ...").
    #[error("{0}")]
    BadRequest(String),
    /// Something named does not exist (404).
    #[error("{0}")]
    NotFound(String),
    /// Something to be created exists already (409).
    #[error("{0}")]
    AlreadyExists(String),
    /// Not allowed by configuration or location (403).
    #[error("{0}")]
    Forbidden(String),
    /// A checksum did not match (400).
    #[error("expected {expected}, actual {actual}")]
    ChecksumMismatch {
        /// The checksum the caller gave.
        expected: String,
        /// The checksum of the bytes received.
        actual: String,
    },
    /// The service failed (500); `context` says what it was doing.
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

    /// The error and its sources on one line, for logs.
    pub fn chain(&self) -> String {
        let mut s = self.to_string();
        let mut src = self.source();
        while let Some(e) = src {
            s.push_str(": ");
            s.push_str(&e.to_string());
            src = e.source();
        }
        s
    }
}

//! Service errors as gRPC status codes, mapped once, as Qdrant maps its storage errors.

use tonic::Status;

use crate::error::Error;

/// The status for an error. An internal failure answers a generic message with a request
/// id; its cause chain goes to the log only.
pub(crate) fn status(e: Error) -> Status {
    match &e {
        Error::BadInput(_) | Error::BadRequest(_) | Error::InvalidField { .. } => {
            Status::invalid_argument(e.public_message())
        }
        Error::NotFound(_) => Status::not_found(e.public_message()),
        Error::AlreadyExists(_) => Status::already_exists(e.public_message()),
        Error::Forbidden(_) => Status::permission_denied(e.public_message()),
        Error::Upstream(_) => Status::unavailable(e.public_message()),
        Error::ChecksumMismatch { .. } => Status::data_loss(e.public_message()),
        _ => {
            let id = uuid::Uuid::new_v4().simple().to_string();
            tracing::error!(request_id = %id, error = %e.chain(), "gRPC request failed");
            Status::internal(format!("{} (request id {id})", e.public_message()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::Code;

    #[test]
    fn errors_map_to_qdrants_codes_and_internals_stay_private() {
        assert_eq!(status(Error::bad_input("x")).code(), Code::InvalidArgument);
        assert_eq!(status(Error::NotFound("x".into())).code(), Code::NotFound);
        assert_eq!(
            status(Error::ChecksumMismatch {
                expected: "a".into(),
                actual: "b".into()
            })
            .code(),
            Code::DataLoss
        );
        let s = status(Error::internal("reading /secret/path", "disk on fire"));
        assert_eq!(s.code(), Code::Internal);
        assert!(!s.message().contains("/secret/path") && !s.message().contains("fire"));
    }
}

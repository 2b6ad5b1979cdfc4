//! The one place where crius errors become gRPC statuses.

use tonic::{Code, Status};

#[derive(Debug, thiserror::Error)]
pub enum CriError {
    #[error("{0}")]
    NotFound(String),
    #[error("{field}: {message}")]
    InvalidArgument {
        field: &'static str,
        message: String,
    },
    #[error("{0}")]
    AlreadyExists(String),
    #[error("{0}")]
    DeadlineExceeded(String),
    #[error("{0} is not implemented yet")]
    Unimplemented(&'static str),
    #[error("{0}")]
    FailedPrecondition(String),
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

impl CriError {
    pub fn invalid(field: &'static str, message: impl Into<String>) -> CriError {
        CriError::InvalidArgument {
            field,
            message: message.into(),
        }
    }
}

impl From<CriError> for Status {
    fn from(e: CriError) -> Status {
        let code = match &e {
            CriError::NotFound(_) => Code::NotFound,
            CriError::InvalidArgument { .. } => Code::InvalidArgument,
            CriError::AlreadyExists(_) => Code::AlreadyExists,
            CriError::DeadlineExceeded(_) => Code::DeadlineExceeded,
            CriError::Unimplemented(_) => Code::Unimplemented,
            CriError::FailedPrecondition(_) => Code::FailedPrecondition,
            CriError::Internal(_) => Code::Internal,
        };
        // `{:#}` prints anyhow's whole cause chain on one line.
        let message = match &e {
            CriError::Internal(inner) => format!("{inner:#}"),
            other => other.to_string(),
        };
        Status::new(code, message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_mapped_on_purpose() {
        let s: Status = CriError::invalid("config.metadata.name", "must not be empty").into();
        assert_eq!(s.code(), Code::InvalidArgument);
        assert_eq!(s.message(), "config.metadata.name: must not be empty");
        let s: Status = CriError::Unimplemented("Attach").into();
        assert_eq!(s.code(), Code::Unimplemented);
        assert!(s.message().contains("Attach"));
        let s: Status =
            CriError::Internal(anyhow::anyhow!("disk full").context("writing record")).into();
        assert_eq!(s.code(), Code::Internal);
        assert_eq!(s.message(), "writing record: disk full");
    }
}

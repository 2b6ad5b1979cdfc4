//! The shim's RPC errors and their one mapping to gRPC codes.

use crius_runtime::RuntimeError;
use tonic::{Code, Status};

#[derive(Debug, thiserror::Error)]
pub enum ShimError {
    /// The request does not fit the container's state (e.g. Start before Create).
    #[error("{0}")]
    FailedPrecondition(String),
    #[error("{0}")]
    InvalidArgument(String),
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

impl From<ShimError> for Status {
    fn from(err: ShimError) -> Status {
        let code = match &err {
            ShimError::FailedPrecondition(_) => Code::FailedPrecondition,
            ShimError::InvalidArgument(_) => Code::InvalidArgument,
            ShimError::Runtime(RuntimeError::NotFound { .. }) => Code::NotFound,
            ShimError::Runtime(RuntimeError::AlreadyExists { .. }) => Code::AlreadyExists,
            ShimError::Runtime(RuntimeError::InvalidStatus { .. }) => Code::FailedPrecondition,
            ShimError::Runtime(_) | ShimError::Internal(_) => Code::Internal,
        };
        // The whole cause chain, so criusd can report why libcontainer failed.
        Status::new(code, format!("{:#}", anyhow::Error::new(err)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_carries_code_and_cause_chain() {
        let err = ShimError::Internal(anyhow::anyhow!("disk full").context("write the exit file"));
        let status = Status::from(err);
        assert_eq!(status.code(), Code::Internal);
        assert_eq!(status.message(), "write the exit file: disk full");

        let status = Status::from(ShimError::FailedPrecondition("not created".into()));
        assert_eq!(status.code(), Code::FailedPrecondition);
        assert_eq!(status.message(), "not created");
    }
}

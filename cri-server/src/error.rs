//! The one place where crius errors become gRPC statuses.
//!
//! Each concern's error converts into [`CriError`] with a `From` impl kept
//! beside that error (this base module imports no concern): the table's in
//! `state/table.rs`, the shim's in `shim_client.rs`, the image store's in
//! `image/mod.rs`, CNI's in `network/cni.rs`, namespace pinning's in
//! `namespaces.rs`, the cgroup driver's in `cgroups/mod.rs`, the spec's in
//! `spec/error.rs`. Lifecycle code uses `?` and never picks a code itself
//! for a concern's error.

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
    /// A container's shim cannot be reached (its socket refuses, the
    /// connection broke); the message names the container.
    #[error("{0}")]
    Unavailable(String),
    /// A registry refused a pull's credentials; the message names it.
    #[error("{0}")]
    Unauthenticated(String),
    /// A limit on pending work is reached (streaming tokens).
    #[error("{0}")]
    ResourceExhausted(String),
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

    /// The answer to a call that needs a running container that is not:
    /// FailedPrecondition "container <id> is not running".
    pub fn not_running(id: &str) -> CriError {
        CriError::FailedPrecondition(format!("container {id} is not running"))
    }

    /// The message the caller gets: an Internal error's whole cause chain
    /// on one line (anyhow's `{:#}`), else the error's own words.
    pub fn message(&self) -> String {
        match self {
            CriError::Internal(inner) => format!("{inner:#}"),
            other => other.to_string(),
        }
    }

    /// Adds `context` to the cause chain of an Internal error; the others
    /// keep their code and message (they already name what failed).
    pub fn context(self, context: &'static str) -> CriError {
        match self {
            CriError::Internal(e) => CriError::Internal(e.context(context)),
            other => other,
        }
    }
}

/// A spawned task that panicked or was cancelled: Internal.
impl From<tokio::task::JoinError> for CriError {
    fn from(e: tokio::task::JoinError) -> CriError {
        CriError::Internal(anyhow::Error::new(e).context("a spawned task failed"))
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
            CriError::Unavailable(_) => Code::Unavailable,
            CriError::ResourceExhausted(_) => Code::ResourceExhausted,
            CriError::Unauthenticated(_) => Code::Unauthenticated,
            CriError::Internal(_) => Code::Internal,
        };
        Status::new(code, e.message())
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
        let s: Status = CriError::not_running("c1").into();
        assert_eq!(s.code(), Code::FailedPrecondition);
        assert_eq!(s.message(), "container c1 is not running");
        let s: Status =
            CriError::Unavailable("the shim of container c1 is unreachable".into()).into();
        assert_eq!(s.code(), Code::Unavailable);
        assert!(s.message().contains("c1"));
    }

    #[test]
    fn context_is_added_to_internal_errors_only() {
        let s: Status = CriError::Internal(anyhow::anyhow!("disk full"))
            .context("running pod sandbox")
            .into();
        assert_eq!(s.code(), Code::Internal);
        assert_eq!(s.message(), "running pod sandbox: disk full");
        let s: Status = CriError::invalid("config.linux.cgroup_parent", "bad")
            .context("running pod sandbox")
            .into();
        assert_eq!(s.code(), Code::InvalidArgument);
        assert_eq!(s.message(), "config.linux.cgroup_parent: bad");
    }

    #[tokio::test]
    async fn a_failed_task_is_internal() {
        let join = tokio::spawn(async { panic!("boom") }).await.unwrap_err();
        let s: Status = CriError::from(join).into();
        assert_eq!(s.code(), Code::Internal);
        assert!(
            s.message().starts_with("a spawned task failed"),
            "{}",
            s.message()
        );
    }
}

//! What can go wrong while turning a CRI config into an OCI spec.

use std::path::PathBuf;

use crate::error::CriError;

#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    /// The request (or the image config it names) asks for something invalid or
    /// unsupported; `field` is the CRI field to blame.
    #[error("{field}: {message}")]
    InvalidArgument {
        field: &'static str,
        message: String,
    },
    #[error("reading {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    /// An oci-spec builder refused a value: a bug here, not in the request.
    #[error("building the OCI spec: {0}")]
    Build(#[from] oci_spec::OciSpecError),
}

impl SpecError {
    pub(crate) fn invalid(field: &'static str, message: impl Into<String>) -> SpecError {
        SpecError::InvalidArgument {
            field,
            message: message.into(),
        }
    }
}

impl From<SpecError> for CriError {
    fn from(e: SpecError) -> CriError {
        match e {
            SpecError::InvalidArgument { field, message } => {
                CriError::InvalidArgument { field, message }
            }
            other => CriError::Internal(anyhow::Error::new(other)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invalid_argument_keeps_its_field() {
        let e: CriError = SpecError::invalid("config.command", "no command").into();
        let s: tonic::Status = e.into();
        assert_eq!(s.code(), tonic::Code::InvalidArgument);
        assert_eq!(s.message(), "config.command: no command");
    }

    #[test]
    fn io_is_internal() {
        let e: CriError = SpecError::Io {
            path: "/r/etc/passwd".into(),
            source: std::io::Error::from_raw_os_error(libc::EACCES),
        }
        .into();
        let s: tonic::Status = e.into();
        assert_eq!(s.code(), tonic::Code::Internal);
        assert!(s.message().contains("/r/etc/passwd"), "{}", s.message());
    }

    #[test]
    fn a_builder_refusal_is_internal() {
        let e: CriError =
            SpecError::Build(oci_spec::OciSpecError::Other("bad mount".into())).into();
        let s: tonic::Status = e.into();
        assert_eq!(s.code(), tonic::Code::Internal);
        assert!(
            s.message().starts_with("building the OCI spec: ") && s.message().contains("bad mount"),
            "{}",
            s.message()
        );
    }
}

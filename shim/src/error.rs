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
    /// A runtime error and what libcontainer's processes logged as errors
    /// meanwhile: the mount, path and errno its own error leaves out.
    #[error("{}; libcontainer logged: {}", chain(.0), .1.join("; "))]
    Logged(RuntimeError, Vec<String>),
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

impl From<ShimError> for Status {
    fn from(err: ShimError) -> Status {
        let code = match &err {
            ShimError::FailedPrecondition(_) => Code::FailedPrecondition,
            ShimError::InvalidArgument(_) => Code::InvalidArgument,
            ShimError::Runtime(err) | ShimError::Logged(err, _) => match err {
                RuntimeError::NotFound { .. } => Code::NotFound,
                RuntimeError::AlreadyExists { .. } => Code::AlreadyExists,
                RuntimeError::InvalidStatus { .. } => Code::FailedPrecondition,
                _ => Code::Internal,
            },
            ShimError::Internal(_) => Code::Internal,
        };
        // The whole cause chain, so criusd can report why libcontainer failed.
        Status::new(code, format!("{:#}", anyhow::Error::new(err)))
    }
}

impl ShimError {
    /// `err` with the lines libcontainer's processes `logged` meanwhile, less
    /// those that end in `err`'s innermost cause: they only repeat it on its
    /// way up ("failed to initialize container process: failed to prepare
    /// rootfs"). Without any left, just `err`.
    pub fn logged(err: RuntimeError, mut logged: Vec<String>) -> ShimError {
        let mut innermost: &dyn std::error::Error = &err;
        while let Some(cause) = innermost.source() {
            innermost = cause;
        }
        let innermost = innermost.to_string();
        logged.retain(|line| !line.ends_with(&innermost));
        if logged.is_empty() {
            ShimError::Runtime(err)
        } else {
            ShimError::Logged(err, logged)
        }
    }
}

/// `err` and its causes, as anyhow's `{:#}` prints them.
fn chain(err: &RuntimeError) -> String {
    let mut text = err.to_string();
    let mut source = std::error::Error::source(err);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use crius_runtime::Step;

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

    #[test]
    fn what_libcontainer_logged_follows_the_cause_chain_and_keeps_its_code() {
        let err = RuntimeError::Io {
            id: "c1".into(),
            step: Step::Create,
            what: "prepare stdio",
            source: std::io::Error::other("too many open files"),
        };
        let logged = vec![
            r#"failed to mount Mount { destination: "/etc" }: syscall"#.to_string(),
            "failed to prepare rootfs err=ENOTDIR (Not a directory)".to_string(),
        ];
        let status = Status::from(ShimError::Logged(err, logged));
        assert_eq!(status.code(), Code::Internal);
        assert_eq!(
            status.message(),
            "container c1: create: prepare stdio: too many open files; libcontainer logged: \
             failed to mount Mount { destination: \"/etc\" }: syscall; \
             failed to prepare rootfs err=ENOTDIR (Not a directory)"
        );

        let gone = RuntimeError::NotFound {
            id: "c1".into(),
            step: Step::Start,
        };
        let status = Status::from(ShimError::Logged(gone, vec!["x".into()]));
        assert_eq!(status.code(), Code::NotFound);
    }

    #[test]
    fn logged_lines_that_repeat_the_innermost_cause_are_left_out() {
        let err = || RuntimeError::Io {
            id: "c1".into(),
            step: Step::Create,
            what: "run init",
            source: std::io::Error::other("failed to prepare rootfs"),
        };
        let logged = vec![
            r#"failed to mount Mount { destination: "/etc" }: syscall"#.to_string(),
            "failed to prepare rootfs err=Mount(Syscall(Nix(EINVAL (Invalid argument))))".into(),
            "failed to initialize container process: failed to prepare rootfs".into(),
            "failed to run container process exec process failed: failed to prepare rootfs".into(),
        ];
        let ShimError::Logged(_, kept) = ShimError::logged(err(), logged) else {
            panic!("the detail was dropped");
        };
        assert_eq!(
            kept,
            [
                r#"failed to mount Mount { destination: "/etc" }: syscall"#,
                "failed to prepare rootfs err=Mount(Syscall(Nix(EINVAL (Invalid argument))))",
            ]
        );
        let only_repeats = vec!["x: failed to prepare rootfs".to_string()];
        assert!(matches!(
            ShimError::logged(err(), only_repeats),
            ShimError::Runtime(_)
        ));
    }

    #[test]
    fn a_process_that_cannot_be_execd_fails_start_naming_the_file() {
        let err = RuntimeError::NotExecutable {
            id: "c1".into(),
            step: Step::Start,
            reason: r#"exec: "nosuch": executable file not found in $PATH"#.into(),
        };
        let status = Status::from(ShimError::from(err));
        assert_eq!(status.code(), Code::Internal);
        assert_eq!(
            status.message(),
            r#"container c1: start: exec: "nosuch": executable file not found in $PATH"#
        );
    }
}

//! The one error type of the crate: which container, which lifecycle step, and why.

use std::fmt;

use libcontainer::error::LibcontainerError;

use crate::state::ContainerStatus;

/// The lifecycle step that failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    Create,
    Start,
    Kill,
    Delete,
    Exec,
    State,
    Update,
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Step::Create => "create",
            Step::Start => "start",
            Step::Kill => "kill",
            Step::Delete => "delete",
            Step::Exec => "exec",
            Step::State => "state",
            Step::Update => "update",
        })
    }
}

/// A failed runtime operation. The message names the container and the step; the cause is in
/// [`std::error::Error::source`], so print the whole chain (e.g. anyhow's `{:#}`).
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("container {id}: {step}: no such container")]
    NotFound { id: String, step: Step },

    #[error("container {id}: {step}: container already exists")]
    AlreadyExists { id: String, step: Step },

    #[error("container {id}: {step}: not allowed while the container is {status}")]
    InvalidStatus {
        id: String,
        step: Step,
        status: ContainerStatus,
    },

    /// The container's process cannot be exec'd; `reason` in runc's words, e.g.
    /// `exec: "nosuch": executable file not found in $PATH`. Found before anything was made.
    #[error("container {id}: {step}: {reason}")]
    NotExecutable {
        id: String,
        step: Step,
        reason: String,
    },

    #[error("container {id}: {step}: {what}")]
    Io {
        id: String,
        step: Step,
        what: &'static str,
        #[source]
        source: std::io::Error,
    },

    /// An OCI runtime binary (runc, crun) failed: `message` is what it logged as errors,
    /// else its stderr.
    #[error("container {id}: {step}: {} exited with {status}: {message}", .runtime.display())]
    Binary {
        id: String,
        step: Step,
        runtime: std::path::PathBuf,
        status: std::process::ExitStatus,
        message: String,
    },

    #[error("container {id}: {step} failed")]
    Libcontainer {
        id: String,
        step: Step,
        // Boxed: libcontainer's error is large and would bloat every Result.
        #[source]
        source: Box<LibcontainerError>,
    },
}

impl RuntimeError {
    /// Maps libcontainer's error, keeping the cases callers branch on as their own variants.
    pub(crate) fn libcontainer(id: &str, step: Step, source: LibcontainerError) -> Self {
        let id = id.to_owned();
        match source {
            LibcontainerError::Exist => RuntimeError::AlreadyExists { id, step },
            LibcontainerError::NoDirectory => RuntimeError::NotFound { id, step },
            LibcontainerError::IncorrectStatus(status) => RuntimeError::InvalidStatus {
                id,
                step,
                status: status.into(),
            },
            source => RuntimeError::Libcontainer {
                id,
                step,
                source: Box::new(source),
            },
        }
    }

    pub(crate) fn io(id: &str, step: Step, what: &'static str, source: std::io::Error) -> Self {
        RuntimeError::Io {
            id: id.to_owned(),
            step,
            what,
            source,
        }
    }

    /// The container the failed operation was about.
    pub fn id(&self) -> &str {
        match self {
            RuntimeError::NotFound { id, .. }
            | RuntimeError::AlreadyExists { id, .. }
            | RuntimeError::InvalidStatus { id, .. }
            | RuntimeError::NotExecutable { id, .. }
            | RuntimeError::Io { id, .. }
            | RuntimeError::Binary { id, .. }
            | RuntimeError::Libcontainer { id, .. } => id,
        }
    }

    /// The step that failed.
    pub fn step(&self) -> Step {
        match self {
            RuntimeError::NotFound { step, .. }
            | RuntimeError::AlreadyExists { step, .. }
            | RuntimeError::InvalidStatus { step, .. }
            | RuntimeError::NotExecutable { step, .. }
            | RuntimeError::Io { step, .. }
            | RuntimeError::Binary { step, .. }
            | RuntimeError::Libcontainer { step, .. } => *step,
        }
    }

    pub fn is_not_found(&self) -> bool {
        matches!(self, RuntimeError::NotFound { .. })
    }
}

#[cfg(test)]
mod tests {
    use std::error::Error;

    use super::*;

    #[test]
    fn message_names_container_and_step() {
        let err = RuntimeError::io(
            "c1",
            Step::Exec,
            "write process.json",
            std::io::Error::other("disk full"),
        );
        assert_eq!(err.to_string(), "container c1: exec: write process.json");
        assert_eq!(err.source().unwrap().to_string(), "disk full");
        assert_eq!(err.id(), "c1");
        assert_eq!(err.step(), Step::Exec);
    }

    #[test]
    fn a_process_that_cannot_be_execd_reads_as_runc_words_it() {
        let err = RuntimeError::NotExecutable {
            id: "c1".into(),
            step: Step::Start,
            reason: r#"exec: "nosuch": executable file not found in $PATH"#.into(),
        };
        assert_eq!(
            err.to_string(),
            r#"container c1: start: exec: "nosuch": executable file not found in $PATH"#
        );
        assert_eq!((err.id(), err.step()), ("c1", Step::Start));
    }

    #[test]
    fn libcontainer_cases_callers_branch_on_get_their_own_variant() {
        let err = RuntimeError::libcontainer("c1", Step::Start, LibcontainerError::NoDirectory);
        assert!(err.is_not_found());

        let err = RuntimeError::libcontainer("c1", Step::Create, LibcontainerError::Exist);
        assert!(matches!(err, RuntimeError::AlreadyExists { .. }));

        let err = RuntimeError::libcontainer(
            "c1",
            Step::Start,
            LibcontainerError::IncorrectStatus(libcontainer::container::ContainerStatus::Running),
        );
        assert_eq!(
            err.to_string(),
            "container c1: start: not allowed while the container is running"
        );

        let err =
            RuntimeError::libcontainer("c1", Step::Kill, LibcontainerError::Other("x".into()));
        assert_eq!(err.to_string(), "container c1: kill failed");
        assert_eq!(err.source().unwrap().to_string(), "x");
    }
}

//! What a container looks like from outside: status and init pid.

use std::fmt;
use std::path::PathBuf;

use libcontainer::container::{Container, ContainerStatus as LibStatus};
use nix::unistd::Pid;

/// OCI lifecycle status of a container.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContainerStatus {
    /// `create` is under way (or died half-way).
    Creating,
    /// Set up; init waits for `start`.
    Created,
    /// Init has exec'd the user's process and has not exited.
    Running,
    /// Init has exited (a zombie not yet reaped by the caller counts as exited).
    Stopped,
    Paused,
}

impl From<LibStatus> for ContainerStatus {
    fn from(status: LibStatus) -> Self {
        match status {
            LibStatus::Creating => ContainerStatus::Creating,
            LibStatus::Created => ContainerStatus::Created,
            LibStatus::Running => ContainerStatus::Running,
            LibStatus::Stopped => ContainerStatus::Stopped,
            LibStatus::Paused => ContainerStatus::Paused,
        }
    }
}

impl fmt::Display for ContainerStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ContainerStatus::Creating => "creating",
            ContainerStatus::Created => "created",
            ContainerStatus::Running => "running",
            ContainerStatus::Stopped => "stopped",
            ContainerStatus::Paused => "paused",
        })
    }
}

/// A snapshot of one container's runtime state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerState {
    pub id: String,
    pub status: ContainerStatus,
    /// The init process (host pid namespace); None only while creating.
    pub pid: Option<Pid>,
    pub bundle: PathBuf,
}

impl From<&Container> for ContainerState {
    fn from(container: &Container) -> Self {
        ContainerState {
            id: container.id().to_owned(),
            status: container.status().into(),
            pid: container.pid(),
            bundle: container.bundle().clone(),
        }
    }
}

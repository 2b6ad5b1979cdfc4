//! The OCI lifecycle verbs a shim calls, whichever runtime carries them out: [`Runtime`]
//! (libcontainer, in-process) or [`crate::BinaryRuntime`] (an OCI runtime binary such as runc
//! or crun, a Kubernetes runtime handler).

use std::os::fd::OwnedFd;
use std::path::Path;

use nix::sys::signal::Signal;
use nix::unistd::Pid;
use oci_spec::runtime::{LinuxResources, Process};

use crate::error::RuntimeError;
use crate::runtime::Runtime;
use crate::stdio::Stdio;

/// Creates, starts, signals, execs into and deletes containers from OCI bundles.
///
/// Both implementations share the caller's contract of the crate docs: a container's init and
/// every exec'd process end up as children of the caller, which must be a child subreaper (a
/// binary runtime's processes are re-parented to it when the binary exits) and reap them all;
/// while a call runs the caller must not reap with `waitpid(-1)`; calls block and never run
/// concurrently. An exec'd process's process group (`getpgid`) holds it and what it starts, and
/// no process of the caller: killing that group ends the exec.
pub trait OciRuntime: Send + Sync + std::fmt::Debug {
    /// Creates the container from `bundle` (config.json + rootfs), init blocked before exec
    /// until [`OciRuntime::start`]; `stdio` becomes init's 0/1/2. Returns init's pid.
    /// [`RuntimeError::NotExecutable`] when the process cannot be exec'd (nothing is left).
    fn create(&self, id: &str, bundle: &Path, stdio: Stdio) -> Result<Pid, RuntimeError>;

    /// As [`OciRuntime::create`], init on a new pseudo-terminal (`process.terminal`): returns
    /// init's pid and the pty master, sized to `process.consoleSize` if given.
    fn create_with_terminal(&self, id: &str, bundle: &Path)
        -> Result<(Pid, OwnedFd), RuntimeError>;

    /// Releases init to exec the container's process.
    fn start(&self, id: &str) -> Result<(), RuntimeError>;

    /// Sends `signal` to init; with `all`, to every process of the container's cgroup. A
    /// stopped container is not an error.
    fn kill(&self, id: &str, signal: Signal, all: bool) -> Result<(), RuntimeError>;

    /// Removes the container's cgroup and state; an unknown id is Ok. With `force`, whatever
    /// still runs in its cgroup is killed first.
    fn delete(&self, id: &str, force: bool) -> Result<(), RuntimeError>;

    /// Starts `process` in the running container, `stdio` as its 0/1/2; returns its pid once
    /// it has exec'd.
    fn exec(&self, id: &str, process: &Process, stdio: Stdio) -> Result<Pid, RuntimeError>;

    /// As [`OciRuntime::exec`], on a new pseudo-terminal (`process.terminal`): its pid and the
    /// pty master.
    fn exec_with_terminal(
        &self,
        id: &str,
        process: &Process,
    ) -> Result<(Pid, OwnedFd), RuntimeError>;

    /// Applies `resources` (an OCI `linux.resources`: cpu, memory, pids, hugepage and
    /// `unified` limits) to the created or running container's cgroup, as `runc update` does;
    /// what `resources` leaves out stays. Errors: NotFound; InvalidStatus for a stopped
    /// container; the cgroup's refusal, named with the value (cgroup v1 refuses a memory limit
    /// below the usage with EBUSY), after which the limits that held still hold.
    fn update(&self, id: &str, resources: &LinuxResources) -> Result<(), RuntimeError>;
}

impl OciRuntime for Runtime {
    fn create(&self, id: &str, bundle: &Path, stdio: Stdio) -> Result<Pid, RuntimeError> {
        Runtime::create(self, id, bundle, stdio)
    }

    fn create_with_terminal(
        &self,
        id: &str,
        bundle: &Path,
    ) -> Result<(Pid, OwnedFd), RuntimeError> {
        Runtime::create_with_terminal(self, id, bundle)
    }

    fn start(&self, id: &str) -> Result<(), RuntimeError> {
        Runtime::start(self, id)
    }

    fn kill(&self, id: &str, signal: Signal, all: bool) -> Result<(), RuntimeError> {
        Runtime::kill(self, id, signal, all)
    }

    fn delete(&self, id: &str, force: bool) -> Result<(), RuntimeError> {
        Runtime::delete(self, id, force)
    }

    fn exec(&self, id: &str, process: &Process, stdio: Stdio) -> Result<Pid, RuntimeError> {
        Runtime::exec(self, id, process, stdio)
    }

    fn exec_with_terminal(
        &self,
        id: &str,
        process: &Process,
    ) -> Result<(Pid, OwnedFd), RuntimeError> {
        Runtime::exec_with_terminal(self, id, process)
    }

    fn update(&self, id: &str, resources: &LinuxResources) -> Result<(), RuntimeError> {
        Runtime::update(self, id, resources)
    }
}

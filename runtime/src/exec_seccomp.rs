//! Puts exec'd processes under their container's seccomp filter.
//!
//! libcontainer 0.7 builds an exec's spec from the process plus the container's namespaces and
//! cgroup only, so the container's filter is lost and an exec would run unfiltered (runc and
//! crun apply it). We install it ourselves from libcontainer's executor hook, which runs in the
//! exec'd process right before execve, after capabilities and user are set.

use caps::{CapSet, Capability};
use libcontainer::workload::default::DefaultExecutor;
use libcontainer::workload::{Executor, ExecutorError, ExecutorValidationError};
use oci_spec::runtime::{LinuxSeccomp, Spec};

/// The default executor (execvp of `process.args`), with the filter loaded just before.
#[derive(Clone)]
pub(crate) struct SeccompExecutor {
    seccomp: LinuxSeccomp,
}

impl SeccompExecutor {
    /// None for a filter that needs a seccomp notify listener: only the init's setup can hand
    /// its fd to the runtime, so an exec cannot honour it.
    pub fn new(seccomp: LinuxSeccomp) -> Option<SeccompExecutor> {
        if libcontainer::seccomp::is_notify(&seccomp) {
            return None;
        }
        Some(SeccompExecutor { seccomp })
    }
}

impl Executor for SeccompExecutor {
    fn exec(&self, spec: &Spec) -> Result<(), ExecutorError> {
        // Loading a filter takes CAP_SYS_ADMIN or no_new_privs, and capabilities are already
        // dropped here: an unprivileged exec gets no_new_privs (setuid binaries it runs do not
        // elevate), which runc avoids only by loading the filter earlier than any hook we have.
        let privileged = caps::has_cap(None, CapSet::Effective, Capability::CAP_SYS_ADMIN)
            .map_err(|e| ExecutorError::Other(format!("read capabilities: {e}")))?;
        if !privileged {
            nix::sys::prctl::set_no_new_privs()
                .map_err(|e| ExecutorError::Other(format!("set no_new_privs: {e}")))?;
        }
        libcontainer::seccomp::initialize_seccomp(&self.seccomp).map_err(|e| {
            ExecutorError::Other(format!("load the container's seccomp filter: {e}"))
        })?;
        DefaultExecutor {}.exec(spec)
    }

    fn validate(&self, spec: &Spec) -> Result<(), ExecutorValidationError> {
        DefaultExecutor {}.validate(spec)
    }
}

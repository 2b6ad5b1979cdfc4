//! What libcontainer 0.7 leaves out of an exec, done from its executor hook (which runs in the
//! exec'd process right before execve, after its namespaces, cgroup, cwd, user and capabilities
//! are set):
//!
//! - **The container's user namespace.** libcontainer's tenant builder joins the init's IPC,
//!   UTS, network, PID, mount, cgroup and time namespaces but not its user namespace, so an exec
//!   into a pod with a user namespace (KEP-127) would run as the host's root. The exec is started
//!   as the host's root with every capability and joins the user namespace here, then takes its
//!   user, groups and capabilities inside it (runc's nsexec joins the user namespace first; the
//!   result is the same process).
//! - **The container's seccomp filter.** libcontainer builds an exec's spec from the process plus
//!   the container's namespaces and cgroup only, so the filter is lost and an exec would run
//!   unfiltered (runc and crun apply it).

use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::Arc;

use caps::{CapSet, Capability};
use libcontainer::capabilities;
use libcontainer::syscall::syscall::create_syscall;
use libcontainer::workload::default::DefaultExecutor;
use libcontainer::workload::{Executor, ExecutorError, ExecutorValidationError};
use nix::sched::CloneFlags;
use nix::unistd::{Gid, Uid};
use oci_spec::runtime::{LinuxCapabilities, LinuxSeccomp, Process, Spec, User, UserBuilder};

/// The default executor (execvp of `process.args`) after the steps libcontainer skipped.
#[derive(Clone, Default)]
pub(crate) struct ExecExecutor {
    user_namespace: Option<UserNamespaceEntry>,
    seccomp: Option<LinuxSeccomp>,
}

/// The exec's identity inside its container's user namespace.
#[derive(Clone)]
struct UserNamespaceEntry {
    /// `/proc/<init>/ns/user`, opened by the caller (it is inherited, and closed at execve).
    namespace: Arc<OwnedFd>,
    user: User,
    capabilities: Option<LinuxCapabilities>,
}

impl ExecExecutor {
    /// Nothing to add: None. An exec in a user namespace (`user_namespace`, the container init's)
    /// must be started with [`ExecExecutor::host_process`] in place of `process`. Errors: the
    /// filter needs a seccomp notify listener (only the init's setup can hand its fd to the
    /// runtime, so an exec cannot honour it).
    pub fn new(
        process: &Process,
        user_namespace: Option<OwnedFd>,
        seccomp: Option<LinuxSeccomp>,
    ) -> Result<Option<ExecExecutor>, &'static str> {
        if seccomp
            .as_ref()
            .is_some_and(libcontainer::seccomp::is_notify)
        {
            return Err(
                "the container's seccomp filter needs a notify listener, which an exec cannot have",
            );
        }
        if user_namespace.is_none() && seccomp.is_none() {
            return Ok(None);
        }
        Ok(Some(ExecExecutor {
            user_namespace: user_namespace.map(|namespace| UserNamespaceEntry {
                namespace: Arc::new(namespace),
                user: process.user().clone(),
                capabilities: process.capabilities().clone(),
            }),
            seccomp,
        }))
    }

    /// The process libcontainer starts: `process` itself, or for an exec that joins a user
    /// namespace the host's root (keeping its umask) with every capability, which it needs to
    /// enter the namespace; its own user and capabilities are taken inside.
    pub fn host_process(&self, process: &Process) -> Process {
        let mut host = process.clone();
        if self.user_namespace.is_some() {
            let mut root = UserBuilder::default().uid(0u32).gid(0u32);
            if let Some(umask) = process.user().umask() {
                root = root.umask(umask);
            }
            host.set_user(root.build().expect("uid and gid are set"))
                .set_capabilities(None);
        }
        host
    }
}

impl Executor for ExecExecutor {
    fn exec(&self, spec: &Spec) -> Result<(), ExecutorError> {
        if let Some(entry) = &self.user_namespace {
            entry.enter()?;
        }
        if let Some(seccomp) = &self.seccomp {
            // Loading a filter takes CAP_SYS_ADMIN or no_new_privs, and capabilities are already
            // dropped here: an unprivileged exec gets no_new_privs (setuid binaries it runs do
            // not elevate), which runc avoids only by loading the filter earlier than any hook
            // we have.
            let privileged = caps::has_cap(None, CapSet::Effective, Capability::CAP_SYS_ADMIN)
                .map_err(|e| other("read capabilities", e))?;
            if !privileged {
                nix::sys::prctl::set_no_new_privs().map_err(|e| other("set no_new_privs", e))?;
            }
            libcontainer::seccomp::initialize_seccomp(seccomp)
                .map_err(|e| other("load the container's seccomp filter", e))?;
        }
        DefaultExecutor {}.exec(spec)
    }

    fn validate(&self, spec: &Spec) -> Result<(), ExecutorValidationError> {
        DefaultExecutor {}.validate(spec)
    }
}

impl UserNamespaceEntry {
    /// Joins the namespace (the kernel grants every capability in it), then sets the exec's
    /// groups, ids and capabilities as libcontainer's init does, now as seen inside it.
    fn enter(&self) -> Result<(), ExecutorError> {
        let syscall = create_syscall();
        syscall
            .set_ns(self.namespace.as_raw_fd(), CloneFlags::CLONE_NEWUSER)
            .map_err(|e| other("join the container's user namespace", e))?;
        // The host root's groups mean nothing inside: an exec without additional gids has none.
        let groups: Vec<Gid> = self
            .user
            .additional_gids()
            .iter()
            .flatten()
            .map(|&gid| Gid::from_raw(gid))
            .collect();
        syscall
            .set_groups(&groups)
            .map_err(|e| other("set the exec's additional gids", e))?;
        syscall
            .set_id(
                Uid::from_raw(self.user.uid()),
                Gid::from_raw(self.user.gid()),
            )
            .map_err(|e| other("set the exec's uid and gid", e))?;
        capabilities::reset_effective(syscall.as_ref())
            .map_err(|e| other("reset the exec's capabilities", e))?;
        if let Some(caps) = &self.capabilities {
            capabilities::drop_privileges(caps, syscall.as_ref())
                .map_err(|e| other("drop the exec's capabilities", e))?;
        }
        Ok(())
    }
}

fn other(what: &str, e: impl std::fmt::Display) -> ExecutorError {
    ExecutorError::Other(format!("{what}: {e}"))
}

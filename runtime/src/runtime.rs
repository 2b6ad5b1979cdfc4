//! The lifecycle verbs, each a thin call into libcontainer with our error and stdio rules.

use std::fs;
use std::io::Write;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use libcgroups::common::CgroupManager;
use libcontainer::container::builder::ContainerBuilder;
use libcontainer::container::{Container, ContainerStatus as LibStatus};
use libcontainer::error::LibcontainerError;
use libcontainer::syscall::syscall::SyscallType;
use nix::sys::signal::Signal;
use nix::unistd::Pid;
use oci_spec::runtime::{Box as ConsoleSize, LinuxNamespaceType, LinuxResources, Process, Spec};

use crate::console::{self, ConsoleSocket};
use crate::error::{RuntimeError, Step};
use crate::exec_executor::ExecExecutor;
use crate::init_identity;
use crate::oom_score::OomScoreAdj;
use crate::pause::PauseExecutor;
use crate::state::ContainerState;
use crate::stdio::{ContainerStdio, Stdio};

/// Creates, starts, signals, execs into and deletes containers; all state lives under one
/// directory, one subdirectory per container (libcontainer's layout).
///
/// Calls block and must not run concurrently, nor beside other busy threads (see the crate
/// docs: libcontainer `chdir`s the process and forks without atfork handlers). The crate docs
/// also say which children a call leaves to the caller.
#[derive(Debug, Clone)]
pub struct Runtime {
    state_root: PathBuf,
    /// The cgroup driver of the containers it creates: systemd when true.
    systemd_cgroups: bool,
}

impl Runtime {
    /// A runtime keeping its state under `state_root` (created on first `create`). Keep it short:
    /// `<state_root>/<id>/notify.sock` is a unix socket path.
    pub fn new(state_root: impl Into<PathBuf>) -> Runtime {
        Runtime {
            state_root: state_root.into(),
            systemd_cgroups: false,
        }
    }

    /// The same runtime with the cgroup driver set: `false` (the default) is
    /// cgroupfs, where `linux.cgroupsPath` is a path under each hierarchy;
    /// `true` is systemd, where it is `<slice>:<prefix>:<name>` and each
    /// container becomes the scope `<prefix>-<name>.scope`. The daemon's
    /// `cgroups` module names both. Applies to containers created after.
    pub fn with_systemd_cgroups(mut self, systemd: bool) -> Runtime {
        self.systemd_cgroups = systemd;
        self
    }

    pub fn state_root(&self) -> &Path {
        &self.state_root
    }

    /// Creates the container from `bundle` (config.json + rootfs): every namespace, mount and
    /// cgroup set up, init blocked just before exec until [`Runtime::start`]. Returns init's pid.
    ///
    /// Init is a CHILD of the calling process (libcontainer's intermediate process clones it
    /// with `CLONE_PARENT`), so a subreaper caller can `waitpid` it. It runs in its own session
    /// (setsid). The stdio fds become init's 0/1/2 (None → /dev/null); this process's copies
    /// are closed before returning.
    ///
    /// Reaping: during this call libcontainer forks an intermediate child and reaps it with
    /// `waitpid(<its pid>)`. A caller must not reap with `waitpid(-1)` while `create` runs: it
    /// would take that intermediate (libcontainer tolerates it, but the caller sees a pid it
    /// does not know), and if init dies early the caller gets init's status before it knows
    /// init's pid. If `create` fails after forking, libcontainer returns without reaping: the
    /// intermediate and init exit and are left for the caller to reap. Keep the statuses of
    /// unknown pids until `create` returns.
    ///
    /// Errors: [`RuntimeError::NotExecutable`] when the process cannot be exec'd (not on its
    /// `PATH`, missing, a directory, not executable by its user), found once the mount points
    /// and the working directory are made in the rootfs (as runc looks it up) but before
    /// anything is forked, so no container is left to delete; runc reports the same at create.
    pub fn create(&self, id: &str, bundle: &Path, stdio: Stdio) -> Result<Pid, RuntimeError> {
        let step = Step::Create;
        self.ensure_state_root(id, step)?;
        let stdio = stdio
            .into_container_stdio()
            .map_err(|e| RuntimeError::io(id, step, "prepare stdio", e))?;
        self.create_container(id, bundle, ProcessIo::Fds(stdio))
    }

    /// As [`Runtime::create`], but init's stdio is a new pseudo-terminal inside the container
    /// (the bundle's `process.terminal` must be true; it also becomes /dev/console). Returns
    /// init's pid and the pty master, which carries init's input and output both ways. The
    /// bundle's `process.consoleSize`, if any, is the pty's window size before init runs;
    /// without it the kernel's 0×0 stays.
    pub fn create_with_terminal(
        &self,
        id: &str,
        bundle: &Path,
    ) -> Result<(Pid, OwnedFd), RuntimeError> {
        let step = Step::Create;
        self.ensure_state_root(id, step)?;
        let console_size = Spec::load(bundle.join("config.json"))
            .map_err(|e| RuntimeError::libcontainer(id, step, e.into()))?
            .process()
            .as_ref()
            .and_then(Process::console_size);
        let console = ConsoleSocket::bind(&self.state_root)
            .map_err(|e| RuntimeError::io(id, step, "bind the console socket", e))?;
        let pid = self.create_container(id, bundle, ProcessIo::Terminal(console.path()))?;
        let master = receive_master(id, step, &console, console_size)?;
        Ok((pid, master))
    }

    /// Releases init to exec the container's process.
    pub fn start(&self, id: &str) -> Result<(), RuntimeError> {
        let step = Step::Start;
        let mut container = self.load(id, step)?.ok_or_else(|| not_found(id, step))?;
        container
            .start()
            .map_err(|e| RuntimeError::libcontainer(id, step, e))
    }

    /// Sends `signal` to init; with `all`, to every process in the container's cgroup.
    /// A stopped container is not an error.
    pub fn kill(&self, id: &str, signal: Signal, all: bool) -> Result<(), RuntimeError> {
        let step = Step::Kill;
        let mut container = self.load(id, step)?.ok_or_else(|| not_found(id, step))?;
        if !all && container.status() == LibStatus::Stopped {
            return Ok(());
        }
        container
            .kill(signal, all)
            .map_err(|e| RuntimeError::libcontainer(id, step, e))
    }

    /// Removes the container's cgroup and runtime state. Idempotent: an unknown id is Ok.
    /// A created (never started) container is killed first; a running or paused one only
    /// with `force` (SIGKILL to every process of its cgroup), else it is an error.
    pub fn delete(&self, id: &str, force: bool) -> Result<(), RuntimeError> {
        let step = Step::Delete;
        let Some(mut container) = self.load(id, step)? else {
            return Ok(());
        };
        // libcontainer re-reads the status and would call a reused init pid running; forcing
        // only adds a SIGKILL to whatever is left in the container's cgroup.
        let force = force || container.status() == LibStatus::Stopped;
        container
            .delete(force)
            .map_err(|e| RuntimeError::libcontainer(id, step, e))
    }

    /// Applies `resources` to the created or running container's cgroup through libcgroups
    /// (the manager of the container's cgroup path and driver, as libcontainer made it); see
    /// [`crate::OciRuntime::update`]. Devices are left out: a `linux.resources` without
    /// `devices` only re-allows the runtime's default device nodes.
    pub fn update(&self, id: &str, resources: &LinuxResources) -> Result<(), RuntimeError> {
        let step = Step::Update;
        let container = self.load(id, step)?.ok_or_else(|| not_found(id, step))?;
        if !matches!(
            container.status(),
            LibStatus::Created | LibStatus::Running | LibStatus::Paused
        ) {
            return Err(RuntimeError::InvalidStatus {
                id: id.to_owned(),
                step,
                status: container.status().into(),
            });
        }
        let config = container
            .spec()
            .map_err(|e| RuntimeError::libcontainer(id, step, e))?;
        let manager = libcgroups::common::create_cgroup_manager(libcgroups::common::CgroupConfig {
            cgroup_path: config.cgroup_path,
            systemd_cgroup: container.systemd(),
            container_name: id.to_owned(),
        })
        .map_err(|e| RuntimeError::libcontainer(id, step, e.into()))?;
        let mut resources = resources.clone();
        resources.set_devices(None);
        manager
            .apply(&libcgroups::common::ControllerOpt {
                resources: &resources,
                disable_oom_killer: false,
                oom_score_adj: None,
                freezer_state: None,
            })
            .map_err(|e| RuntimeError::libcontainer(id, step, e.into()))
    }

    /// Starts `process` inside the running container: its namespaces and cgroup; the
    /// capabilities, user, env, cwd and rlimits of `process`. Returns once the process has
    /// exec'd (an exec failure, e.g. a missing binary, is an error).
    ///
    /// The process is a CHILD of the caller and leads its own session and process group
    /// (pgid == pid), so `kill(-pid, SIGKILL)` ends it and everything it started.
    ///
    /// Reaping: as for [`Runtime::create`], libcontainer forks and reaps an intermediate child
    /// during this call; do not `waitpid(-1)` meanwhile. The exec'd process may already have
    /// exited (and be reaped by a concurrent reaper) before this returns its pid. If the call
    /// fails after forking (e.g. the binary is missing), the intermediate and the exec's process
    /// exit and are left for the caller to reap; the latter sits in the container's pid
    /// namespace, and the container's init cannot finish exiting until it is reaped.
    ///
    /// The container's seccomp filter applies (libcontainer 0.7 drops it; this crate loads it
    /// right before execve). A process without CAP_SYS_ADMIN then also gets `no_new_privs`, as
    /// the filter cannot be loaded otherwise at that point. Not inherited, as fields of
    /// `process` instead: AppArmor profile and `noNewPrivileges`.
    pub fn exec(&self, id: &str, process: &Process, stdio: Stdio) -> Result<Pid, RuntimeError> {
        let step = Step::Exec;
        let stdio = stdio
            .into_container_stdio()
            .map_err(|e| RuntimeError::io(id, step, "prepare stdio", e))?;
        self.exec_process(id, process, ProcessIo::Fds(stdio))
    }

    /// As [`Runtime::exec`], but the process's stdio is a new pseudo-terminal inside the
    /// container (`process.terminal` must be true). Returns its pid and the pty master. The
    /// process's `consoleSize`, if any, is set once it runs (it gets SIGWINCH).
    pub fn exec_with_terminal(
        &self,
        id: &str,
        process: &Process,
    ) -> Result<(Pid, OwnedFd), RuntimeError> {
        let step = Step::Exec;
        let console = ConsoleSocket::bind(&self.state_root)
            .map_err(|e| RuntimeError::io(id, step, "bind the console socket", e))?;
        let pid = self.exec_process(id, process, ProcessIo::Terminal(console.path()))?;
        let master = receive_master(id, step, &console, process.console_size())?;
        Ok((pid, master))
    }

    /// The container's status and init pid, refreshed from /proc.
    pub fn state(&self, id: &str) -> Result<ContainerState, RuntimeError> {
        let step = Step::State;
        let container = self.load(id, step)?.ok_or_else(|| not_found(id, step))?;
        Ok(ContainerState::from(&container))
    }

    fn ensure_state_root(&self, id: &str, step: Step) -> Result<(), RuntimeError> {
        fs::create_dir_all(&self.state_root)
            .map_err(|e| RuntimeError::io(id, step, "create the state root", e))
    }

    fn create_container(
        &self,
        id: &str,
        bundle: &Path,
        io: ProcessIo,
    ) -> Result<Pid, RuntimeError> {
        let step = Step::Create;
        let spec = Spec::load(bundle.join("config.json")).map_err(|e| {
            RuntimeError::io(id, step, "read the bundle's config.json", io_error(e))
        })?;
        // A sandbox runs the built-in pause workload: nothing to exec.
        let sandbox = crate::pause::is_sandbox(&spec);
        // runc makes mount points through the image's symlinks and the working directory;
        // libcontainer does neither.
        let prepared = crate::bundle::prepare(id, bundle, spec)?;
        // Looked up as runc does, once the mount points and the working directory exist.
        if let Some(reason) = (!sandbox)
            .then(|| crate::executable::unexecutable(&prepared.spec, &prepared.rootfs))
            .flatten()
        {
            return Err(RuntimeError::NotExecutable {
                id: id.to_owned(),
                step,
                reason,
            });
        }
        // Most images need no resolving: no second config.json on the hot path then.
        let bundle = if prepared.resolved {
            crate::bundle::write(id, bundle, &prepared.spec)?
        } else {
            bundle.to_path_buf()
        };
        let container = with_own_oom_score(id, step, || {
            let builder = self.builder(id, io)?;
            let builder = if sandbox {
                builder.with_executor(PauseExecutor)
            } else {
                builder
            };
            builder
                .as_init(&bundle)
                .with_systemd(self.systemd_cgroups)
                .with_detach(true)
                .build()
        })?;
        let pid = container.pid().ok_or_else(|| {
            RuntimeError::libcontainer(
                id,
                step,
                LibcontainerError::Other("no init pid after create".into()),
            )
        })?;
        init_identity::record(&self.state_root.join(id), pid)
            .map_err(|e| RuntimeError::io(id, step, "record init's start time", e))?;
        Ok(pid)
    }

    fn exec_process(
        &self,
        id: &str,
        process: &Process,
        io: ProcessIo,
    ) -> Result<Pid, RuntimeError> {
        let step = Step::Exec;
        let container = self.load(id, step)?.ok_or_else(|| not_found(id, step))?;
        // Checked here too: libcontainer would join the namespaces of whatever process now
        // has init's pid.
        if container.status() != LibStatus::Running {
            return Err(RuntimeError::InvalidStatus {
                id: id.to_owned(),
                step,
                status: container.status().into(),
            });
        }
        let executor = exec_executor(&container, process).map_err(|e| match e {
            ExecSetup::Libcontainer(e) => RuntimeError::libcontainer(id, step, e),
            ExecSetup::Io(what, e) => RuntimeError::io(id, step, what, e),
        })?;
        let process = match &executor {
            Some(executor) => executor.host_process(process),
            None => process.clone(),
        };
        // libcontainer takes the exec's process spec as a file; it lives as long as this call.
        let mut process_json = tempfile::Builder::new()
            .prefix("exec-")
            .suffix(".json")
            .tempfile_in(self.state_root.join(id))
            .map_err(|e| RuntimeError::io(id, step, "create process.json", e))?;
        serde_json::to_writer(&mut process_json, &process)
            .map_err(std::io::Error::from)
            .and_then(|()| process_json.flush())
            .map_err(|e| RuntimeError::io(id, step, "write process.json", e))?;

        with_own_oom_score(id, step, || {
            let mut builder = self.builder(id, io)?;
            if let Some(executor) = executor {
                builder = builder.with_executor(executor);
            }
            builder
                .as_tenant()
                .with_detach(true)
                .with_process(Some(process_json.path()))
                .build()
        })
    }

    fn builder(&self, id: &str, io: ProcessIo) -> Result<ContainerBuilder, LibcontainerError> {
        let builder = ContainerBuilder::new(id.to_owned(), SyscallType::default())
            .validate_id()?
            .with_root_path(&self.state_root)?;
        Ok(match io {
            ProcessIo::Fds(stdio) => builder
                .with_stdin(stdio.stdin)
                .with_stdout(stdio.stdout)
                .with_stderr(stdio.stderr),
            ProcessIo::Terminal(console_socket) => {
                builder.with_console_socket(Some(console_socket))
            }
        })
    }

    /// The container's state directory; the id is checked so it cannot name another path.
    fn container_dir(&self, id: &str, step: Step) -> Result<PathBuf, RuntimeError> {
        ContainerBuilder::new(id.to_owned(), SyscallType::default())
            .validate_id()
            .map_err(|e| RuntimeError::libcontainer(id, step, e))?;
        Ok(self.state_root.join(id))
    }

    /// The container with its status refreshed from /proc; None when it does not exist.
    /// An init pid now held by another process counts as stopped.
    fn load(&self, id: &str, step: Step) -> Result<Option<Container>, RuntimeError> {
        let dir = self.container_dir(id, step)?;
        if !dir.exists() {
            return Ok(None);
        }
        let mut container =
            Container::load(dir.clone()).map_err(|e| RuntimeError::libcontainer(id, step, e))?;
        if let (Some(pid), false) = (container.pid(), container.status() == LibStatus::Stopped) {
            let same = init_identity::is_recorded_init(&dir, pid)
                .map_err(|e| RuntimeError::io(id, step, "check init's start time", e))?;
            if same == Some(false) {
                container.set_status(LibStatus::Stopped);
            }
        }
        Ok(Some(container))
    }
}

/// Why an exec's executor could not be made.
enum ExecSetup {
    Libcontainer(LibcontainerError),
    Io(&'static str, std::io::Error),
}

/// The executor that adds to `process` what libcontainer leaves out of an exec: the
/// container's user namespace, if its spec has one (joined through its init's), and its
/// seccomp filter, if it has one. None when neither.
fn exec_executor(
    container: &Container,
    process: &Process,
) -> Result<Option<ExecExecutor>, ExecSetup> {
    let spec = Spec::load(container.bundle().join("config.json"))
        .map_err(|e| ExecSetup::Libcontainer(e.into()))?;
    let linux = spec.linux().as_ref();
    let in_user_namespace = linux
        .and_then(|l| l.namespaces().as_ref())
        .is_some_and(|namespaces| {
            namespaces
                .iter()
                .any(|n| n.typ() == LinuxNamespaceType::User)
        });
    let user_namespace = match (in_user_namespace, container.pid()) {
        (true, Some(init)) => Some(
            fs::File::open(format!("/proc/{init}/ns/user"))
                .map(OwnedFd::from)
                .map_err(|e| ExecSetup::Io("open the init's user namespace", e))?,
        ),
        _ => None,
    };
    let seccomp = linux.and_then(|l| l.seccomp().clone());
    ExecExecutor::new(process, user_namespace, seccomp)
        .map_err(|e| ExecSetup::Libcontainer(LibcontainerError::Other(e.into())))
}

pub(crate) fn io_error(e: oci_spec::OciSpecError) -> std::io::Error {
    match e {
        oci_spec::OciSpecError::Io(e) => e,
        other => std::io::Error::other(other),
    }
}

/// Where a new container process's stdio comes from.
enum ProcessIo<'a> {
    Fds(ContainerStdio),
    /// The console socket to which the process sends the master of its new pty.
    Terminal(&'a Path),
}

/// The pty master the new process sent, sized to `console_size` if given.
pub(crate) fn receive_master(
    id: &str,
    step: Step,
    console: &ConsoleSocket,
    console_size: Option<ConsoleSize>,
) -> Result<OwnedFd, RuntimeError> {
    let master = console
        .receive_master()
        .map_err(|e| RuntimeError::io(id, step, "receive the pty master", e))?;
    if let Some(size) = console_size {
        console::set_window_size(&master, size)
            .map_err(|e| RuntimeError::io(id, step, "set the console size", e))?;
    }
    Ok(master)
}

fn not_found(id: &str, step: Step) -> RuntimeError {
    RuntimeError::NotFound {
        id: id.to_owned(),
        step,
    }
}

/// Runs a libcontainer call that may rewrite this process's OOM score, and puts it back.
fn with_own_oom_score<T>(
    id: &str,
    step: Step,
    call: impl FnOnce() -> Result<T, LibcontainerError>,
) -> Result<T, RuntimeError> {
    let saved =
        OomScoreAdj::save().map_err(|e| RuntimeError::io(id, step, "read our oom_score_adj", e))?;
    let result = call();
    // The container exists by now; a failed restore must not make the call look failed.
    if let Err(err) = saved.restore() {
        tracing::warn!(id, %step, %err, "failed to restore the caller's oom_score_adj");
    }
    result.map_err(|e| RuntimeError::libcontainer(id, step, e))
}

//! The one container a shim monitors: its lifecycle through the runtime,
//! its recorded exit, and the execs run in it.

use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use crius_proto::exit_file::{self, ExitRecord};
use crius_proto::shim::v1::{AttachStart, ExecStart, Status};
use crius_runtime::oci_spec::runtime::{LinuxResources, Spec};
use crius_runtime::{OciRuntime, Pid, RuntimeError, Signal, Stdio, Step};
use tokio::net::unix::pipe;
use tokio::sync::{broadcast, mpsc, oneshot, watch};

use crate::child_errors::ErrorEvents;
use crate::container_io::{self, Chunk, ContainerStdin, Output, ReopenRequest};
use crate::cri_log::{CriLogFile, Source, Stream};
use crate::error::ShimError;
use crate::exec::{self, ExecOutput, KillOnDrop};
use crate::oom::OomCounter;
use crate::reaper::{Exit, Reaper};
use crate::streams::{self, Attachment, StartedExec};
use crate::terminal::Terminal;

/// How long Delete waits for a created container's init, killed by the
/// runtime, to be reaped, so that its exit is recorded when Delete returns.
const DELETE_REAP_TIMEOUT: Duration = Duration::from_secs(5);

/// How long the exit record waits for the container's output to reach EOF.
const OUTPUT_DRAIN_GRACE: Duration = Duration::from_secs(1);

/// Where the container's files are and what to do with its output.
pub struct ContainerConfig {
    pub id: String,
    pub bundle: PathBuf,
    pub log_path: Option<PathBuf>,
    pub exit_file: PathBuf,
}

pub struct Container {
    config: ContainerConfig,
    runtime: Box<dyn OciRuntime>,
    reaper: Reaper,
    /// What libcontainer's processes log as errors, folded into a failed create's error.
    error_events: ErrorEvents,
    state: Mutex<State>,
    /// None until init's exit is recorded.
    exit: watch::Sender<Option<InitExit>>,
}

/// Init's exit as the shim records it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InitExit {
    /// The exit status, or 128+N when killed by signal N.
    pub code: i32,
    pub at: SystemTime,
    /// The OOM killer killed a process of the container's cgroup.
    pub oom_killed: bool,
}

#[derive(Default)]
struct State {
    created: Option<Created>,
    /// Set instead of `created` when the container's process cannot be exec'd.
    unstartable: Option<Unstartable>,
    started_at: Option<SystemTime>,
    deleted: bool,
}

impl State {
    fn is_created(&self) -> bool {
        self.created.is_some() || self.unstartable.is_some()
    }
}

/// What a create made for init's stdio, besides init.
enum Made {
    /// The pty's master.
    Terminal(OwnedFd),
    /// The output pipes' read ends, and stdin's write end.
    Pipes(Output, Option<OwnedFd>),
}

/// A container whose process cannot be exec'd: nothing of it was made (the
/// runtime looks the process up first, as runc does). It reads as created,
/// so that Start fails with the reason and records exit 128, as containerd
/// reports runc's lookup failure at StartContainer.
struct Unstartable {
    /// In runc's words, e.g. `exec: "nosuch": executable file not found in $PATH`.
    reason: String,
    at: SystemTime,
}

/// The exit code a failed start records (containerd's `errorStartExitCode`).
const START_ERROR_EXIT_CODE: i32 = 128;

struct Created {
    pid: Pid,
    at: SystemTime,
    /// The container's stdin for attachers (its task keeps the pipe's write
    /// end, so stdin stays open); None when created without stdin.
    stdin: Option<ContainerStdin>,
    /// CRI `stdin_once`: the first attacher's stdin EOF closes `stdin`.
    stdin_once: bool,
    /// Init's pty, when it runs on a terminal.
    terminal: Option<Terminal>,
    /// The container's output as attachers subscribe to it.
    attachers: broadcast::Sender<Chunk>,
    /// To the task that writes the CRI log.
    log_reopen: mpsc::Sender<ReopenRequest>,
}

/// What State reports.
pub struct Snapshot {
    pub pid: Option<Pid>,
    pub status: Status,
    pub created_at: Option<SystemTime>,
    pub started_at: Option<SystemTime>,
    pub exit: Option<InitExit>,
    pub deleted: bool,
}

impl Container {
    /// The container of `config`, not created yet: created through
    /// `runtime`, its processes reaped by `reaper`, and what libcontainer's
    /// processes log as errors captured by `error_events` (for a failed
    /// create's error).
    pub fn new(
        config: ContainerConfig,
        runtime: Box<dyn OciRuntime>,
        reaper: Reaper,
        error_events: ErrorEvents,
    ) -> Arc<Container> {
        Arc::new(Container {
            config,
            runtime,
            reaper,
            error_events,
            state: Mutex::default(),
            exit: watch::Sender::new(None),
        })
    }

    pub fn id(&self) -> &str {
        &self.config.id
    }

    /// Creates the container from the shim's bundle. With `process.terminal`
    /// in its config.json, init's stdin, stdout and stderr are a pty whose
    /// master the shim holds while the container lives, its output logged as
    /// stdout; the pty is always the stdin, and stays open, but attachers
    /// feed it only with `stdin`. Otherwise stdout and stderr are pipes, and
    /// stdin is a pipe the shim holds open with `stdin`, else /dev/null; with
    /// `stdin_once` the first attacher's stdin EOF closes it. Returns init's pid;
    /// None when the container's process cannot be exec'd: then no init
    /// exists, the container reads as created and Start fails (see
    /// [`Unstartable`]).
    pub fn create(
        self: &Arc<Self>,
        stdin: bool,
        stdin_once: bool,
    ) -> Result<Option<Pid>, ShimError> {
        if self.lock().is_created() {
            return Err(ShimError::FailedPrecondition(
                "the container was already created".into(),
            ));
        }
        let bundle = &self.config.bundle;
        let spec = load_spec(bundle)?;
        let source = if spec.terminal {
            Source::Terminal
        } else {
            Source::Pipes
        };
        let log = match &self.config.log_path {
            Some(path) => Some(
                CriLogFile::open(path, source)
                    .with_context(|| format!("open the container log {}", path.display()))?,
            ),
            None => None,
        };
        // Without a counter the container's exits are reported as no OOM kill.
        let oom = spec.cgroups_path.and_then(|path| {
            OomCounter::locate(&path)
                .inspect_err(|err| tracing::warn!(%err, "OOM kills will not be reported"))
                .ok()
        });
        let pipes = if spec.terminal {
            None
        } else {
            Some(Self::pipes(stdin)?)
        };
        // Only what this create's processes log.
        self.logged_errors();
        let created = match pipes {
            None => (self.runtime.create_with_terminal(self.id(), bundle))
                .map(|(pid, master)| (pid, Made::Terminal(master))),
            Some((stdio, output, stdin_writer)) => (self.runtime.create(self.id(), bundle, stdio))
                .map(|pid| (pid, Made::Pipes(output, stdin_writer))),
        };
        let (pid, made) = match created {
            Ok(created) => created,
            Err(RuntimeError::NotExecutable { reason, .. }) => {
                tracing::info!(%reason, "created without init: its process cannot be exec'd");
                self.lock().unstartable = Some(Unstartable {
                    reason,
                    at: SystemTime::now(),
                });
                return Ok(None);
            }
            Err(err) => {
                return Err(ShimError::logged(err, self.logged_errors()));
            }
        };
        let (output, stdin_writer, terminal) = match made {
            Made::Terminal(master) => match Terminal::new(master) {
                Ok(terminal) => {
                    let stdin = stdin.then(|| ContainerStdin::spawn(terminal.clone()));
                    (Output::Terminal(terminal.clone()), stdin, Some(terminal))
                }
                Err(err) => {
                    // Init exists, waiting for start: end it with its cgroup and state.
                    if let Err(delete) = self.runtime.delete(self.id(), true) {
                        tracing::error!(%delete, "deleting the container whose pty failed");
                    }
                    return Err(anyhow::Error::new(err)
                        .context("watch the pty master")
                        .into());
                }
            },
            Made::Pipes(output, stdin_writer) => {
                let stdin = match stdin_writer.map(pipe::Sender::from_owned_fd).transpose() {
                    Ok(stdin) => stdin.map(ContainerStdin::spawn),
                    Err(err) => {
                        if let Err(delete) = self.runtime.delete(self.id(), true) {
                            tracing::error!(%delete, "deleting the container whose stdin failed");
                        }
                        return Err(anyhow::Error::new(err)
                            .context("watch the stdin pipe")
                            .into());
                    }
                };
                (output, stdin, None)
            }
        };
        // Before any await, so the reaper cannot take init unwatched.
        let exited = self.reaper.watch(pid);
        tracing::info!(%pid, bundle = %bundle.display(), "created");

        // A request waits only while the log task finishes a write.
        let (log_reopen, reopen_requests) = mpsc::channel(1);
        let attachers = container_io::attachers();
        let mut output = tokio::spawn(container_io::forward_to_log(
            output,
            log,
            attachers.clone(),
            reopen_requests,
        ));
        let container = Arc::clone(self);
        tokio::spawn(async move {
            let Ok(exit) = exited.await else {
                tracing::error!(%pid, "the reaper dropped init");
                return;
            };
            // Let the log take the container's last words before anyone
            // hears of the exit; a process left holding the pipes or the
            // pty's slave open must not delay it for long.
            if tokio::time::timeout(OUTPUT_DRAIN_GRACE, &mut output)
                .await
                .is_err()
            {
                tracing::debug!("container output still open after init exited");
            }
            // Delete, which removes the cgroup, waits for this record.
            let oom_killed = oom.is_some_and(|counter| match counter.kills() {
                Ok(kills) => kills > 0,
                Err(err) => {
                    tracing::warn!(%err, "reading the OOM kills failed");
                    false
                }
            });
            container.record_exit(exit, oom_killed);
        });
        self.lock().created = Some(Created {
            pid,
            at: SystemTime::now(),
            stdin: stdin_writer,
            stdin_once,
            terminal,
            attachers,
            log_reopen,
        });
        Ok(Some(pid))
    }

    /// Makes stdout and stderr pipes (and stdin one with `stdin`): init's
    /// stdio, the output the shim reads, and stdin's write end.
    fn pipes(stdin: bool) -> Result<(Stdio, Output, Option<OwnedFd>), ShimError> {
        let (stdout, stdout_writer) = container_io::pipe().context("create the stdout pipe")?;
        let (stderr, stderr_writer) = container_io::pipe().context("create the stderr pipe")?;
        let (stdin_reader, stdin_writer) = if stdin {
            let (reader, writer) = container_io::pipe().context("create the stdin pipe")?;
            (Some(reader), Some(writer))
        } else {
            (None, None)
        };
        let output = Output::Pipes {
            stdout: container_io::receiver(stdout).context("watch the stdout pipe")?,
            stderr: container_io::receiver(stderr).context("watch the stderr pipe")?,
        };
        let stdio = Stdio {
            stdin: stdin_reader,
            stdout: Some(stdout_writer),
            stderr: Some(stderr_writer),
        };
        Ok((stdio, output, stdin_writer))
    }

    /// Releases init. A container whose process cannot be exec'd fails
    /// with the reason and records exit 128 now.
    pub fn start(&self) -> Result<(), ShimError> {
        if !self.lock().is_created() {
            return Err(not_created());
        }
        if self.exit.borrow().is_some() {
            return Err(ShimError::FailedPrecondition(
                "the container has already exited".into(),
            ));
        }
        if self.lock().started_at.is_some() {
            return Err(ShimError::FailedPrecondition(
                "the container was already started".into(),
            ));
        }
        let unstartable = self.lock().unstartable.as_ref().map(|u| u.reason.clone());
        if let Some(reason) = unstartable {
            self.end_without_init(START_ERROR_EXIT_CODE);
            return Err(RuntimeError::NotExecutable {
                id: self.id().to_owned(),
                step: Step::Start,
                reason,
            }
            .into());
        }
        self.runtime.start(self.id())?;
        self.lock().started_at = Some(SystemTime::now());
        tracing::info!("started");
        Ok(())
    }

    pub fn snapshot(&self) -> Snapshot {
        let exit = *self.exit.borrow();
        let state = self.lock();
        let status = match (state.is_created(), state.started_at, exit) {
            (false, _, _) => Status::Unspecified,
            (true, _, Some(_)) => Status::Stopped,
            (true, None, None) => Status::Created,
            (true, Some(_), None) => Status::Running,
        };
        let created_at = match (&state.created, &state.unstartable) {
            (Some(created), _) => Some(created.at),
            (None, unstartable) => unstartable.as_ref().map(|u| u.at),
        };
        Snapshot {
            pid: state.created.as_ref().map(|created| created.pid),
            status,
            created_at,
            started_at: state.started_at,
            exit,
            deleted: state.deleted,
        }
    }

    /// Signals init (`all`: every process of the container's cgroup). A
    /// container without init ends at the first signal, as a created init
    /// killed by it would.
    pub fn kill(&self, signal: u32, all: bool) -> Result<(), ShimError> {
        if !self.lock().is_created() {
            return Err(not_created());
        }
        let signal = i32::try_from(signal)
            .ok()
            .and_then(|number| Signal::try_from(number).ok())
            .ok_or_else(|| ShimError::InvalidArgument(format!("unknown signal {signal}")))?;
        // Init is gone: nothing left to signal, unless `all` reaches others
        // in the container's cgroup.
        if !all && self.exit.borrow().is_some() {
            return Ok(());
        }
        if self.lock().unstartable.is_some() {
            if self.exit.borrow().is_none() {
                self.end_without_init(128 + signal as i32);
            }
            return Ok(());
        }
        self.runtime.kill(self.id(), signal, all)?;
        tracing::info!(%signal, all, "signalled");
        Ok(())
    }

    /// Applies the OCI `linux.resources` in `resources_json` to the
    /// container's cgroup (see [`OciRuntime::update`]). Errors:
    /// InvalidArgument for JSON that is not one; FailedPrecondition before
    /// create, without init, or once init has exited; the runtime's refusal.
    pub fn update(&self, resources_json: &[u8]) -> Result<(), ShimError> {
        let resources: LinuxResources = serde_json::from_slice(resources_json).map_err(|e| {
            ShimError::InvalidArgument(format!("resources_json is not an OCI linux.resources: {e}"))
        })?;
        {
            let state = self.lock();
            if !state.is_created() {
                return Err(not_created());
            }
            if state.unstartable.is_some() {
                return Err(not_running());
            }
        }
        if self.exit.borrow().is_some() {
            return Err(not_running());
        }
        self.runtime.update(self.id(), &resources)?;
        tracing::info!("resources updated");
        Ok(())
    }

    /// Init's exit, once recorded.
    pub async fn wait(&self) -> Result<InitExit, ShimError> {
        if !self.lock().is_created() {
            return Err(not_created());
        }
        let mut exit = self.exit.subscribe();
        let exit = *exit
            .wait_for(Option::is_some)
            .await
            .context("the exit watch closed")?;
        Ok(exit.expect("wait_for(Option::is_some) yields Some"))
    }

    /// Runs the OCI process `process_json` in the running container and
    /// collects its output; see [`exec::supervise`] for the timeout.
    pub async fn exec_sync(
        &self,
        process_json: &[u8],
        timeout_ms: u64,
    ) -> Result<ExecOutput, ShimError> {
        let deadline = exec::deadline_after(timeout_ms);
        self.running(&self.lock())?;
        let process = exec::sync_process_from_json(process_json)?;
        let (stdout, stdout_writer) = container_io::pipe().context("create the stdout pipe")?;
        let (stderr, stderr_writer) = container_io::pipe().context("create the stderr pipe")?;
        let stdout = container_io::receiver(stdout).context("watch the stdout pipe")?;
        let stderr = container_io::receiver(stderr).context("watch the stderr pipe")?;
        let stdio = Stdio {
            stdin: None,
            stdout: Some(stdout_writer),
            stderr: Some(stderr_writer),
        };
        let pid = self.runtime.exec(self.id(), &process, stdio)?;
        // Before any await, so the reaper cannot take it unwatched.
        let exited = self.reaper.watch(pid);
        tracing::debug!(%pid, "exec started");
        let group = exec::process_group(pid);
        let output = exec::supervise(group, exited, stdout, stderr, deadline).await?;
        tracing::debug!(
            %pid,
            exit_code = output.exit_code,
            timed_out = output.timed_out,
            "exec finished"
        );
        Ok(output)
    }

    /// Starts the process of `start` in the running container for a streamed
    /// exec, in its own process group: on a new pty when its `terminal` asks
    /// (the pty is its stdin and its output, sent as stdout), else on pipes
    /// for what `start` asks and /dev/null for the rest. See
    /// [`streams::exec`] for the session.
    pub fn exec(&self, start: &ExecStart) -> Result<StartedExec, ShimError> {
        self.running(&self.lock())?;
        let process = exec::process_from_json(&start.process_json)?;
        if process.terminal() == Some(true) {
            let (pid, master) = self.runtime.exec_with_terminal(self.id(), &process)?;
            // Before any await, so the reaper cannot take it unwatched.
            let exited = self.reaper.watch(pid);
            // Killed if anything below fails.
            let group = KillOnDrop::new(exec::process_group(pid));
            let terminal = Terminal::new(master).context("watch the exec's pty master")?;
            tracing::debug!(%pid, "streamed exec started on a terminal");
            return Ok(StartedExec {
                group,
                exited,
                stdout: Some(streams::OutputSource {
                    reader: Box::new(terminal.clone()),
                    stream: start.stdout.then_some(Stream::Stdout),
                }),
                stderr: None,
                stdin: start.stdin.then(|| Box::new(terminal.clone()) as Box<_>),
                terminal: Some(terminal),
            });
        }
        let output_pipe = |wanted: bool, name: &str| -> Result<_, ShimError> {
            if !wanted {
                return Ok((None, None));
            }
            let (reader, writer) =
                container_io::pipe().with_context(|| format!("create the {name} pipe"))?;
            let reader =
                container_io::receiver(reader).with_context(|| format!("watch the {name} pipe"))?;
            Ok((Some(reader), Some(writer)))
        };
        let (stdout, stdout_writer) = output_pipe(start.stdout, "stdout")?;
        let (stderr, stderr_writer) = output_pipe(start.stderr, "stderr")?;
        let (stdin_reader, stdin) = if start.stdin {
            let (reader, writer) = container_io::pipe().context("create the stdin pipe")?;
            let writer = pipe::Sender::from_owned_fd(writer).context("watch the stdin pipe")?;
            (Some(reader), Some(writer))
        } else {
            (None, None)
        };
        let stdio = Stdio {
            stdin: stdin_reader,
            stdout: stdout_writer,
            stderr: stderr_writer,
        };
        let pid = self.runtime.exec(self.id(), &process, stdio)?;
        // Before any await, so the reaper cannot take it unwatched.
        let exited = self.reaper.watch(pid);
        tracing::debug!(%pid, "streamed exec started");
        let output = |reader: Option<pipe::Receiver>, stream| {
            reader.map(|reader| streams::OutputSource {
                reader: Box::new(reader),
                stream: Some(stream),
            })
        };
        Ok(StartedExec {
            group: KillOnDrop::new(exec::process_group(pid)),
            exited,
            stdout: output(stdout, Stream::Stdout),
            stderr: output(stderr, Stream::Stderr),
            stdin: stdin.map(|stdin| Box::new(stdin) as Box<_>),
            terminal: None,
        })
    }

    /// Attaches to the running container's stdio as `start` asks: its
    /// output from now on, its stdin when it has one (else the attacher's is
    /// ignored, as containerd does), its pty's size. See [`streams::attach`].
    pub fn attach(&self, start: &AttachStart) -> Result<Attachment, ShimError> {
        let state = self.lock();
        let created = self.running(&state)?;
        Ok(Attachment {
            chunks: created.attachers.subscribe(),
            stdout: start.stdout,
            stderr: start.stderr,
            stdin: created.stdin.clone().filter(|_| start.stdin),
            // containerd closes a terminal's stdin never: the pty stays open.
            stdin_once: created.stdin_once && created.terminal.is_none(),
            terminal: created.terminal.clone(),
            exit: self.exit.subscribe(),
        })
    }

    /// Reopens the CRI log at its path, once the log task has taken every
    /// earlier read.
    pub async fn reopen_log(&self) -> Result<(), ShimError> {
        let requests = self.running(&self.lock())?.log_reopen.clone();
        let (reply, reopened) = oneshot::channel();
        // The log task ends when every holder of the container's output has
        // exited, which a running container's init has not.
        requests.send(reply).await.map_err(|_| not_running())?;
        reopened
            .await
            .map_err(|_| not_running())?
            .context("reopen the container log")?;
        tracing::info!("reopened the container log");
        Ok(())
    }

    pub async fn delete(&self) -> Result<(), ShimError> {
        let (created, started, unstartable) = {
            let state = self.lock();
            (
                state.is_created(),
                state.started_at.is_some(),
                state.unstartable.is_some(),
            )
        };
        let exited = self.exit.borrow().is_some();
        if started && !exited {
            return Err(ShimError::FailedPrecondition(
                "the container is running; kill it first".into(),
            ));
        }
        // Init has exited or never started: force only removes what is left
        // in the container's cgroup. Without a created container this clears
        // what a failed Create may have left.
        self.runtime.delete(self.id(), true)?;
        if !created {
            return Ok(());
        }
        if unstartable && !exited {
            self.end_without_init(128 + Signal::SIGKILL as i32);
        } else if !exited {
            let mut exit = self.exit.subscribe();
            tokio::time::timeout(DELETE_REAP_TIMEOUT, exit.wait_for(Option::is_some))
                .await
                .context("init of the deleted container was not reaped in time")?
                .context("the exit watch closed")?;
        }
        self.lock().deleted = true;
        tracing::info!("deleted");
        Ok(())
    }

    /// Whether the shim may exit without abandoning a container.
    pub fn may_shut_down(&self) -> bool {
        let state = self.lock();
        !state.is_created() || state.deleted
    }

    /// The created container if it was started and init has not exited.
    fn running<'s>(&self, state: &'s State) -> Result<&'s Created, ShimError> {
        let created = state.created.as_ref().ok_or_else(not_created)?;
        if state.started_at.is_none() || self.exit.borrow().is_some() {
            return Err(not_running());
        }
        Ok(created)
    }

    /// The errors libcontainer's processes logged since the last call.
    fn logged_errors(&self) -> Vec<String> {
        self.error_events.take().unwrap_or_else(|err| {
            tracing::warn!(%err, "reading libcontainer's errors failed");
            Vec::new()
        })
    }

    /// Records the end of a container that has no init, with `code`.
    fn end_without_init(&self, code: i32) {
        let exit = Exit {
            code,
            at: SystemTime::now(),
        };
        self.record_exit(exit, false);
    }

    fn record_exit(&self, exit: Exit, oom_killed: bool) {
        tracing::info!(exit_code = exit.code, oom_killed, "init exited");
        let record = ExitRecord {
            exit_code: exit.code,
            finished_at_unix_nanos: unix_nanos(exit.at),
            oom_killed,
        };
        if let Err(err) = exit_file::write(&self.config.exit_file, record) {
            tracing::error!(%err, "recording the exit failed");
        }
        self.exit.send_replace(Some(InitExit {
            code: exit.code,
            at: exit.at,
            oom_killed,
        }));
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn not_created() -> ShimError {
    ShimError::FailedPrecondition("the container was not created".into())
}

fn not_running() -> ShimError {
    ShimError::FailedPrecondition("the container is not running".into())
}

/// What the shim needs from the bundle's config.json.
struct BundleSpec {
    /// The container's cgroup, `linux.cgroupsPath`.
    cgroups_path: Option<PathBuf>,
    /// Init runs on a terminal, `process.terminal`.
    terminal: bool,
}

/// Loads config.json, which must have a process.
fn load_spec(bundle: &Path) -> Result<BundleSpec, ShimError> {
    let config = bundle.join("config.json");
    let spec = Spec::load(&config)
        .map_err(|e| ShimError::InvalidArgument(format!("{}: {e}", config.display())))?;
    let Some(process) = spec.process() else {
        return Err(ShimError::InvalidArgument(format!(
            "{}: no process",
            config.display()
        )));
    };
    Ok(BundleSpec {
        cgroups_path: spec
            .linux()
            .as_ref()
            .and_then(|linux| linux.cgroups_path().clone()),
        terminal: process.terminal() == Some(true),
    })
}

/// Unix nanoseconds; 0 for "never" and for times before 1970.
pub fn unix_nanos(time: SystemTime) -> i64 {
    time.duration_since(UNIX_EPOCH)
        .map(|since| i64::try_from(since.as_nanos()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

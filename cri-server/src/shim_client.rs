//! criusd's side of the shim API: starting a container's `crius-shim` and
//! talking to it over its unix socket.
//!
//! The seam is two traits: [`ShimLauncher`] (spawn a shim, connect to a
//! running one) and [`ShimApi`] (the calls on one shim), with
//! [`ProcessShims`] and [`Shim`] for the host; unit tests use
//! `fake::FakeShims`. [`Shims`] caches the connections by container id.

use std::future::Future;
use std::io::Read;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use crius_proto::ready::{self, Readiness};
use crius_proto::shim::v1 as pb;
use crius_proto::shim::v1::shim_client::ShimClient;
use hyper_util::rt::TokioIo;
use nix::fcntl::{fcntl, FcntlArg, FdFlag, OFlag};
use tonic::transport::{Channel, Endpoint, Uri};

use crate::error::CriError;

#[cfg(test)]
pub mod fake;

/// What a [`ShimLauncher`] or [`ShimApi`] call returns.
pub type ShimFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, ShimError>> + Send + 'a>>;

/// How a shim runs its container (the runtime of its pod's runtime handler,
/// [`crate::runtime_handlers`]), and where that runtime keeps its state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ShimRuntime {
    /// crius-runtime in the shim's own process (libcontainer).
    InProcess { root: PathBuf },
    /// An OCI runtime binary with runc's command line (the shim's
    /// `--runtime-path`), its `--root` being `root`; with
    /// `hide_unified_cgroup`, run without a hybrid host's cgroup2 mount.
    Binary {
        path: PathBuf,
        root: PathBuf,
        hide_unified_cgroup: bool,
    },
}

impl ShimRuntime {
    /// The shim's flags that select this runtime.
    fn shim_args(&self) -> Vec<std::ffi::OsString> {
        let mut args: Vec<std::ffi::OsString> = vec!["--runtime-root".into()];
        match self {
            ShimRuntime::InProcess { root } => args.push(root.into()),
            ShimRuntime::Binary {
                path,
                root,
                hide_unified_cgroup,
            } => {
                args.extend([root.into(), "--runtime-path".into(), path.into()]);
                if *hide_unified_cgroup {
                    args.push("--runtime-hide-unified-cgroup".into());
                }
            }
        }
        args
    }
}

/// Starts shims and connects to running ones.
pub trait ShimLauncher: Send + Sync {
    /// Starts container `id`'s shim on the bundle in `paths`, running the
    /// container with `runtime` (its output to `log_path`, if any), and
    /// returns once it serves. Errors: `Spawn`, `Start` (Internal),
    /// `Connect` (Unavailable). Not idempotent.
    fn spawn<'a>(
        &'a self,
        id: &'a str,
        paths: &'a ShimPaths,
        runtime: &'a ShimRuntime,
        log_path: Option<&'a Path>,
    ) -> ShimFuture<'a, Arc<dyn ShimApi>>;

    /// Connects to container `id`'s running shim at `socket`. Errors:
    /// unreachable ones (`is_unreachable`) when no shim serves there.
    fn connect<'a>(&'a self, id: &'a str, socket: &'a Path) -> ShimFuture<'a, Arc<dyn ShimApi>>;
}

/// The calls on one container's shim; every error names the container.
pub trait ShimApi: Send + Sync {
    /// Creates the container from the shim's bundle (keeping its stdin open
    /// with `stdin`, closed after the first attacher's with `stdin_once`, CRI's
    /// fields): init's host pid, 0 when the container's process cannot be
    /// exec'd (no init; its start fails naming the file). Not idempotent.
    fn create(&self, stdin: bool, stdin_once: bool) -> ShimFuture<'_, u32>;
    /// Releases the created container's process. Not idempotent.
    fn start(&self) -> ShimFuture<'_, ()>;
    /// Signals init (`all`: every process of the container).
    fn kill(&self, signal: i32, all: bool) -> ShimFuture<'_, ()>;
    /// Waits for init's exit: its status. Idempotent once exited.
    fn wait(&self) -> ShimFuture<'_, pb::WaitResponse>;
    /// Runs an OCI `process` (JSON) in the running container to completion;
    /// the shim kills it after `timeout` (zero: never).
    fn exec_sync(
        &self,
        process_json: Vec<u8>,
        timeout: Duration,
    ) -> ShimFuture<'_, pb::ExecSyncResponse>;
    /// Starts a streamed exec (see the shim API's `Exec`): returns once the
    /// process runs, so a refused exec (bad process JSON: the shim's
    /// InvalidArgument; container not running: FailedPrecondition) is an
    /// error of this call.
    fn exec(&self, start: pb::ExecStart) -> ShimFuture<'_, ProcessIo>;
    /// Attaches to init's stdio (see the shim API's `Attach`): returns once
    /// the shim attached; a container not running is FailedPrecondition.
    fn attach(&self, start: pb::AttachStart) -> ShimFuture<'_, ProcessIo>;
    /// Deletes the container (its runtime state and cgroup). Idempotent.
    fn delete(&self) -> ShimFuture<'_, ()>;
    /// Reopens the container's log at its path.
    fn reopen_log(&self) -> ShimFuture<'_, ()>;
    /// Applies an OCI `linux.resources` (JSON) to the created or running
    /// container's cgroup; the shim's FailedPrecondition once init exited.
    fn update(&self, resources_json: Vec<u8>) -> ShimFuture<'_, ()>;
    /// Ends the shim; it exits after replying (a broken connection after it
    /// is success).
    fn shutdown(&self) -> ShimFuture<'_, ()>;
}

/// The two directions of a streamed Exec or Attach.
pub struct ProcessIo {
    /// `stdin` chunks, `close_stdin` and `resize`, in order (the first
    /// message, `exec` or `attach`, was sent by [`ShimApi::exec`] or
    /// [`ShimApi::attach`]). Dropping it ends the call: the shim kills an exec
    /// that has not exited, and ends an attach.
    pub input: tokio::sync::mpsc::Sender<pb::IoInput>,
    /// `stdout` and `stderr` chunks (at most 32 KiB each), then `exit`; an
    /// error (`ShimError::Call`) if the connection breaks.
    pub output: Pin<Box<dyn futures_util::Stream<Item = Result<pb::IoOutput, ShimError>> + Send>>,
}

/// How many input messages may wait for the shim: enough to keep a
/// stdin copy busy, little enough to hold back a fast writer.
const INPUT_BUFFER: usize = 16;

/// The input of a streamed call, `first` already in it: the sender for
/// [`ProcessIo::input`] and the request stream.
fn input_channel(
    first: pb::io_input::Kind,
) -> (
    tokio::sync::mpsc::Sender<pb::IoInput>,
    tokio_stream::wrappers::ReceiverStream<pb::IoInput>,
) {
    let (input, requests) = tokio::sync::mpsc::channel(INPUT_BUFFER);
    input
        .try_send(pb::IoInput { kind: Some(first) })
        .expect("a new channel has room for its first message");
    (input, tokio_stream::wrappers::ReceiverStream::new(requests))
}

/// The host's launcher: runs the `crius-shim` binary `bin`.
#[derive(Debug, Clone)]
pub struct ProcessShims {
    bin: PathBuf,
}

impl ProcessShims {
    /// A launcher of `bin`.
    pub fn new(bin: PathBuf) -> ProcessShims {
        ProcessShims { bin }
    }
}

impl ShimLauncher for ProcessShims {
    fn spawn<'a>(
        &'a self,
        id: &'a str,
        paths: &'a ShimPaths,
        runtime: &'a ShimRuntime,
        log_path: Option<&'a Path>,
    ) -> ShimFuture<'a, Arc<dyn ShimApi>> {
        Box::pin(async move {
            let shim = spawn(&self.bin, id, paths, runtime, log_path).await?;
            Ok(Arc::new(shim) as Arc<dyn ShimApi>)
        })
    }

    fn connect<'a>(&'a self, id: &'a str, socket: &'a Path) -> ShimFuture<'a, Arc<dyn ShimApi>> {
        Box::pin(async move { Ok(Arc::new(Shim::connect(id, socket).await?) as Arc<dyn ShimApi>) })
    }
}

/// How long a shim may take to serve its socket.
const START_TIMEOUT: Duration = Duration::from_secs(10);

/// A failed shim operation; every variant names the container (`id`).
#[derive(Debug, thiserror::Error)]
pub enum ShimError {
    #[error("starting shim {bin} for container {id}: {source}")]
    Spawn {
        id: String,
        bin: PathBuf,
        source: std::io::Error,
    },
    #[error("shim for container {id} failed to start: {message}")]
    Start { id: String, message: String },
    #[error("connecting to the shim of container {id} at {socket}: {source}")]
    Connect {
        id: String,
        socket: PathBuf,
        source: tonic::transport::Error,
    },
    #[error("shim {call} for container {id}: {code:?}: {message}", code = .status.code(), message = .status.message())]
    Call {
        id: String,
        call: &'static str,
        status: tonic::Status,
    },
}

impl ShimError {
    /// The shim is gone (its socket refuses or the connection broke).
    pub fn is_unreachable(&self) -> bool {
        match self {
            ShimError::Connect { .. } => true,
            ShimError::Call { status, .. } => status.code() == tonic::Code::Unavailable,
            _ => false,
        }
    }

    /// The container whose shim failed.
    pub fn container_id(&self) -> &str {
        match self {
            ShimError::Spawn { id, .. }
            | ShimError::Start { id, .. }
            | ShimError::Connect { id, .. }
            | ShimError::Call { id, .. } => id,
        }
    }
}

/// Shim calls that need a running container: the shim answers them
/// FailedPrecondition when its container stopped after our record said
/// running (kubelet probes race with stops), which is "not running" as if
/// the record had said so.
const NEEDS_RUNNING: &[&str] = &["ExecSync", "Exec", "Attach", "ReopenLog"];

/// The one mapping of shim faults to CRI codes, for every call (create,
/// start, stop, exec, log reopen, remove):
/// - unreachable (socket refuses, connection broke) → Unavailable naming
///   the container;
/// - the shim's FailedPrecondition → FailedPrecondition: "container <id> is
///   not running" for a call that needs it running (ExecSync, Exec, Attach,
///   ReopenLog),
///   else the shim's reason with the container id;
/// - the shim's DeadlineExceeded → DeadlineExceeded;
/// - anything else (spawn, start, the shim's other answers) → Internal with
///   the cause chain.
impl From<ShimError> for CriError {
    fn from(e: ShimError) -> CriError {
        if e.is_unreachable() {
            return CriError::Unavailable(format!(
                "the shim of container {} is unreachable: {e}",
                e.container_id()
            ));
        }
        match &e {
            ShimError::Call { id, call, status } => match status.code() {
                tonic::Code::FailedPrecondition if NEEDS_RUNNING.contains(call) => {
                    CriError::not_running(id)
                }
                tonic::Code::FailedPrecondition => {
                    CriError::FailedPrecondition(format!("container {id}: {}", status.message()))
                }
                tonic::Code::DeadlineExceeded => CriError::DeadlineExceeded(e.to_string()),
                _ => CriError::Internal(e.into()),
            },
            _ => CriError::Internal(e.into()),
        }
    }
}

/// The bundle dir of container or pod `id` under `bundles_dir`: named by
/// the id's first 16 hex digits, short because the shim's socket lives in
/// it and a unix socket path holds at most 107 bytes. `id` is one crius
/// made (64 hex digits).
pub fn bundle_dir(bundles_dir: &Path, id: &str) -> PathBuf {
    bundles_dir.join(&id[..16])
}

/// Where a container's shim keeps its files (all under the bundle dir).
#[derive(Debug, Clone)]
pub struct ShimPaths {
    pub bundle: PathBuf,
    pub socket: PathBuf,
    pub exit_file: PathBuf,
}

impl ShimPaths {
    pub fn in_bundle(bundle: &Path) -> ShimPaths {
        ShimPaths {
            bundle: bundle.to_path_buf(),
            socket: bundle.join("shim.sock"),
            exit_file: bundle.join("exit"),
        }
    }
}

/// Starts a shim and returns once its socket serves. The shim detaches at once
/// (it outlives criusd); readiness comes over an inherited pipe.
pub async fn spawn(
    shim_bin: &Path,
    id: &str,
    paths: &ShimPaths,
    runtime: &ShimRuntime,
    log_path: Option<&Path>,
) -> Result<Shim, ShimError> {
    let spawn_err = |source| ShimError::Spawn {
        id: id.to_string(),
        bin: shim_bin.to_path_buf(),
        source,
    };
    // Close-on-exec in criusd, so that no other child (a CNI plugin, another
    // shim) inherits the write end and delays the EOF; only this shim gets it.
    let (read_end, write_end) =
        nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(|e| spawn_err(e.into()))?;
    let ready_fd = write_end.as_raw_fd();
    let mut cmd = std::process::Command::new(shim_bin);
    cmd.arg("--id")
        .arg(id)
        .arg("--bundle")
        .arg(&paths.bundle)
        .arg("--socket")
        .arg(&paths.socket)
        .args(runtime.shim_args())
        .arg("--exit-file")
        .arg(&paths.exit_file)
        .arg("--ready-fd")
        .arg(ready_fd.to_string())
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    if let Some(log) = log_path {
        cmd.arg("--log-path").arg(log);
    }
    // SAFETY: between fork and exec only the async-signal-safe fcntl runs.
    unsafe {
        cmd.pre_exec(move || {
            fcntl(ready_fd, FcntlArg::F_SETFD(FdFlag::empty()))
                .map(|_| ())
                .map_err(std::io::Error::from)
        });
    }
    let report = tokio::task::spawn_blocking(move || -> std::io::Result<Vec<u8>> {
        let mut child = cmd.spawn()?;
        drop(write_end);
        // The shim forks and its first process exits at once.
        child.wait()?;
        read_to_end(read_end)
    });
    let report = tokio::time::timeout(START_TIMEOUT, report)
        .await
        .map_err(|_| ShimError::Start {
            id: id.to_string(),
            message: format!("no readiness report within {START_TIMEOUT:?}"),
        })?
        .map_err(|e| spawn_err(std::io::Error::other(e)))?
        .map_err(spawn_err)?;
    match ready::parse(&report) {
        Readiness::Ready => Shim::connect(id, &paths.socket).await,
        Readiness::Failed(message) => Err(ShimError::Start {
            id: id.to_string(),
            message,
        }),
        // Its log goes with the bundle when the create is rolled back: its
        // last lines go into the error.
        Readiness::Died => Err(ShimError::Start {
            id: id.to_string(),
            message: format!(
                "it exited before serving; {}",
                log_tail(&paths.bundle.join("shim.log"))
            ),
        }),
    }
}

/// How many of a dead shim's last log lines its error carries.
const LOG_TAIL_LINES: usize = 5;

/// The last [`LOG_TAIL_LINES`] lines of the shim's log at `path` (at most
/// its last 4 KiB), for an error: "its log ends: <line> | <line>".
fn log_tail(path: &Path) -> String {
    use std::io::{Seek, SeekFrom};
    const MAX_BYTES: u64 = 4096;
    let read = || -> std::io::Result<String> {
        let mut file = std::fs::File::open(path)?;
        let len = file.metadata()?.len();
        file.seek(SeekFrom::Start(len.saturating_sub(MAX_BYTES)))?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes)?;
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    };
    match read() {
        Ok(text) => {
            let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
            let tail = &lines[lines.len().saturating_sub(LOG_TAIL_LINES)..];
            if tail.is_empty() {
                format!("its log {} is empty", path.display())
            } else {
                format!("its log ends: {}", tail.join(" | "))
            }
        }
        Err(e) => format!("its log {} is unreadable: {e}", path.display()),
    }
}

fn read_to_end(fd: OwnedFd) -> std::io::Result<Vec<u8>> {
    let mut buf = Vec::new();
    std::fs::File::from(fd).read_to_end(&mut buf)?;
    Ok(buf)
}

/// A connection to one container's shim.
#[derive(Clone)]
pub struct Shim {
    /// The container's id, named by every error.
    id: std::sync::Arc<str>,
    client: ShimClient<Channel>,
}

impl Shim {
    fn call_err(&self, call: &'static str) -> impl FnOnce(tonic::Status) -> ShimError {
        let id = self.id.to_string();
        move |status| ShimError::Call { id, call, status }
    }

    /// Connects to container `id`'s shim at `socket`. Errors: `Connect`
    /// (unreachable: Unavailable).
    pub async fn connect(id: &str, socket: &Path) -> Result<Shim, ShimError> {
        let path = socket.to_path_buf();
        let channel = Endpoint::from_static("http://shim")
            .connect_with_connector(tower::service_fn(move |_: Uri| {
                let path = path.clone();
                async move {
                    Ok::<_, std::io::Error>(TokioIo::new(
                        tokio::net::UnixStream::connect(path).await?,
                    ))
                }
            }))
            .await
            .map_err(|source| ShimError::Connect {
                id: id.to_string(),
                socket: socket.to_path_buf(),
                source,
            })?;
        Ok(Shim {
            id: id.into(),
            client: ShimClient::new(channel)
                .max_decoding_message_size(64 * 1024 * 1024)
                .max_encoding_message_size(64 * 1024 * 1024),
        })
    }

    /// Creates the container from the bundle the shim was started with (its
    /// output goes to the shim's --log-path); with `stdin` the shim keeps the
    /// container's stdin open, with `stdin_once` until the first attacher's
    /// stdin ends. Returns init's host pid.
    pub async fn create(&self, stdin: bool, stdin_once: bool) -> Result<u32, ShimError> {
        let r = self
            .client
            .clone()
            .create(pb::CreateRequest { stdin, stdin_once })
            .await
            .map_err(self.call_err("Create"))?;
        Ok(r.into_inner().pid)
    }

    pub async fn start(&self) -> Result<(), ShimError> {
        self.client
            .clone()
            .start(pb::StartRequest {})
            .await
            .map_err(self.call_err("Start"))?;
        Ok(())
    }

    pub async fn state(&self) -> Result<pb::StateResponse, ShimError> {
        Ok(self
            .client
            .clone()
            .state(pb::StateRequest {})
            .await
            .map_err(self.call_err("State"))?
            .into_inner())
    }

    pub async fn kill(&self, signal: i32, all: bool) -> Result<(), ShimError> {
        self.client
            .clone()
            .kill(pb::KillRequest {
                signal: signal as u32,
                all,
            })
            .await
            .map_err(self.call_err("Kill"))?;
        Ok(())
    }

    pub async fn wait(&self) -> Result<pb::WaitResponse, ShimError> {
        Ok(self
            .client
            .clone()
            .wait(pb::WaitRequest {})
            .await
            .map_err(self.call_err("Wait"))?
            .into_inner())
    }

    /// Runs `process_json` (an OCI `process` object, `terminal` false) in
    /// the running container and returns its output; the shim kills it
    /// after `timeout` (zero: never).
    pub async fn exec_sync(
        &self,
        process_json: Vec<u8>,
        timeout: Duration,
    ) -> Result<pb::ExecSyncResponse, ShimError> {
        Ok(self
            .client
            .clone()
            .exec_sync(pb::ExecSyncRequest {
                process_json,
                timeout_ms: timeout.as_millis() as u64,
            })
            .await
            .map_err(self.call_err("ExecSync"))?
            .into_inner())
    }

    /// Starts a streamed exec: see [`ShimApi::exec`].
    pub async fn exec(&self, start: pb::ExecStart) -> Result<ProcessIo, ShimError> {
        let (input, requests) = input_channel(pb::io_input::Kind::Exec(start));
        let response = (self.client.clone().exec(requests).await).map_err(self.call_err("Exec"))?;
        Ok(self.process_io("Exec", input, response.into_inner()))
    }

    /// Attaches to init's stdio: see [`ShimApi::attach`].
    pub async fn attach(&self, start: pb::AttachStart) -> Result<ProcessIo, ShimError> {
        let (input, requests) = input_channel(pb::io_input::Kind::Attach(start));
        let response =
            (self.client.clone().attach(requests).await).map_err(self.call_err("Attach"))?;
        Ok(self.process_io("Attach", input, response.into_inner()))
    }

    /// The caller's ends of the streaming `call` whose input goes to
    /// `input`'s receiver and whose answer is `output`.
    fn process_io(
        &self,
        call: &'static str,
        input: tokio::sync::mpsc::Sender<pb::IoInput>,
        output: tonic::Streaming<pb::IoOutput>,
    ) -> ProcessIo {
        let id = self.id.clone();
        let output = tokio_stream::StreamExt::map(output, move |item| {
            item.map_err(|status| ShimError::Call {
                id: id.to_string(),
                call,
                status,
            })
        });
        ProcessIo {
            input,
            output: Box::pin(output),
        }
    }

    pub async fn delete(&self) -> Result<(), ShimError> {
        self.client
            .clone()
            .delete(pb::DeleteRequest {})
            .await
            .map_err(self.call_err("Delete"))?;
        Ok(())
    }

    pub async fn reopen_log(&self) -> Result<(), ShimError> {
        self.client
            .clone()
            .reopen_log(pb::ReopenLogRequest {})
            .await
            .map_err(self.call_err("ReopenLog"))?;
        Ok(())
    }

    pub async fn update(&self, resources_json: Vec<u8>) -> Result<(), ShimError> {
        self.client
            .clone()
            .update(pb::UpdateRequest { resources_json })
            .await
            .map_err(self.call_err("Update"))?;
        Ok(())
    }

    pub async fn shutdown(&self) -> Result<(), ShimError> {
        self.client
            .clone()
            .shutdown(pb::ShutdownRequest {})
            .await
            .map_err(self.call_err("Shutdown"))?;
        Ok(())
    }
}

impl ShimApi for Shim {
    fn create(&self, stdin: bool, stdin_once: bool) -> ShimFuture<'_, u32> {
        Box::pin(Shim::create(self, stdin, stdin_once))
    }
    fn start(&self) -> ShimFuture<'_, ()> {
        Box::pin(Shim::start(self))
    }
    fn kill(&self, signal: i32, all: bool) -> ShimFuture<'_, ()> {
        Box::pin(Shim::kill(self, signal, all))
    }
    fn wait(&self) -> ShimFuture<'_, pb::WaitResponse> {
        Box::pin(Shim::wait(self))
    }
    fn exec_sync(
        &self,
        process_json: Vec<u8>,
        timeout: Duration,
    ) -> ShimFuture<'_, pb::ExecSyncResponse> {
        Box::pin(Shim::exec_sync(self, process_json, timeout))
    }
    fn exec(&self, start: pb::ExecStart) -> ShimFuture<'_, ProcessIo> {
        Box::pin(Shim::exec(self, start))
    }
    fn attach(&self, start: pb::AttachStart) -> ShimFuture<'_, ProcessIo> {
        Box::pin(Shim::attach(self, start))
    }
    fn delete(&self) -> ShimFuture<'_, ()> {
        Box::pin(Shim::delete(self))
    }
    fn reopen_log(&self) -> ShimFuture<'_, ()> {
        Box::pin(Shim::reopen_log(self))
    }
    fn update(&self, resources_json: Vec<u8>) -> ShimFuture<'_, ()> {
        Box::pin(Shim::update(self, resources_json))
    }
    fn shutdown(&self) -> ShimFuture<'_, ()> {
        Box::pin(Shim::shutdown(self))
    }
}

/// The launcher and the open connections to the shims, by container id;
/// connected on first use (after a criusd restart, from the socket in the
/// bundle).
pub struct Shims {
    launcher: Arc<dyn ShimLauncher>,
    map: std::sync::Mutex<std::collections::HashMap<String, Arc<dyn ShimApi>>>,
}

impl Shims {
    /// No connections yet; shims spawned and connected through `launcher`.
    pub fn new(launcher: Arc<dyn ShimLauncher>) -> Shims {
        Shims {
            launcher,
            map: Default::default(),
        }
    }

    /// Starts container `id`'s shim (see [`ShimLauncher::spawn`]) and keeps
    /// the connection. Not idempotent.
    pub async fn spawn(
        &self,
        id: &str,
        paths: &ShimPaths,
        runtime: &ShimRuntime,
        log_path: Option<&Path>,
    ) -> Result<Arc<dyn ShimApi>, ShimError> {
        let shim = self.launcher.spawn(id, paths, runtime, log_path).await?;
        self.insert(id, shim.clone());
        Ok(shim)
    }

    /// Keeps `shim` as container `id`'s connection.
    pub fn insert(&self, id: &str, shim: Arc<dyn ShimApi>) {
        self.map
            .lock()
            .expect("shims lock")
            .insert(id.to_string(), shim);
    }

    /// Forgets container `id`'s connection. Idempotent.
    pub fn remove(&self, id: &str) {
        self.map.lock().expect("shims lock").remove(id);
    }

    /// Container `id`'s shim: the kept connection, else a new one to the
    /// socket in `bundle`. Errors: unreachable ones when no shim serves.
    pub async fn get(&self, id: &str, bundle: &Path) -> Result<Arc<dyn ShimApi>, ShimError> {
        if let Some(shim) = self.map.lock().expect("shims lock").get(id) {
            return Ok(shim.clone());
        }
        let shim = self
            .launcher
            .connect(id, &ShimPaths::in_bundle(bundle).socket)
            .await?;
        self.insert(id, shim.clone());
        Ok(shim)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::{Code, Status};

    fn call(call: &'static str, status: Status) -> ShimError {
        ShimError::Call {
            id: "c1".into(),
            call,
            status,
        }
    }

    fn status_of(e: ShimError) -> Status {
        CriError::from(e).into()
    }

    #[test]
    fn the_shim_is_told_its_runtime() {
        let in_process = ShimRuntime::InProcess {
            root: "/run/crius/runtime".into(),
        };
        assert_eq!(
            in_process.shim_args(),
            ["--runtime-root", "/run/crius/runtime"]
        );
        let crun = ShimRuntime::Binary {
            path: "/usr/bin/crun".into(),
            root: "/run/crius/runtimes/crun".into(),
            hide_unified_cgroup: true,
        };
        assert_eq!(
            crun.shim_args(),
            [
                "--runtime-root",
                "/run/crius/runtimes/crun",
                "--runtime-path",
                "/usr/bin/crun",
                "--runtime-hide-unified-cgroup"
            ]
        );
    }

    #[test]
    fn a_dead_shims_error_carries_the_end_of_its_log() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("shim.log");
        assert!(log_tail(&log).starts_with(&format!("its log {} is unreadable: ", log.display())));
        std::fs::write(&log, "").unwrap();
        assert_eq!(
            log_tail(&log),
            format!("its log {} is empty", log.display())
        );
        let lines: Vec<String> = (1..=8).map(|i| format!("line {i}")).collect();
        std::fs::write(&log, lines.join("\n") + "\n\n").unwrap();
        assert_eq!(
            log_tail(&log),
            "its log ends: line 4 | line 5 | line 6 | line 7 | line 8"
        );
    }

    #[test]
    fn a_broken_connection_is_unavailable_naming_the_container() {
        for name in ["ExecSync", "ReopenLog", "Start", "Kill", "Wait", "Delete"] {
            let s = status_of(call(name, Status::unavailable("connection reset")));
            assert_eq!(s.code(), Code::Unavailable, "{name}");
            assert!(s.message().contains("container c1"), "{}", s.message());
            assert!(s.message().contains("unreachable"), "{}", s.message());
        }
    }

    #[tokio::test]
    async fn a_refusing_socket_is_unavailable_naming_the_container() {
        let dir = tempfile::tempdir().unwrap();
        let Err(e) = Shim::connect("c1", &dir.path().join("shim.sock")).await else {
            panic!("connected to a socket that does not exist");
        };
        assert!(e.is_unreachable(), "{e}");
        let s = status_of(e);
        assert_eq!(s.code(), Code::Unavailable);
        assert!(s.message().contains("container c1"), "{}", s.message());
    }

    #[test]
    fn a_stopped_container_is_not_running_for_calls_that_need_it_running() {
        for name in ["ExecSync", "Exec", "Attach", "ReopenLog"] {
            let s = status_of(call(
                name,
                Status::failed_precondition("the container is not running"),
            ));
            assert_eq!(s.code(), Code::FailedPrecondition);
            assert_eq!(s.message(), "container c1 is not running");
        }
    }

    #[test]
    fn other_failed_preconditions_keep_the_shims_reason() {
        let s = status_of(call(
            "Start",
            Status::failed_precondition("the container was already started"),
        ));
        assert_eq!(s.code(), Code::FailedPrecondition);
        assert_eq!(
            s.message(),
            "container c1: the container was already started"
        );
    }

    #[test]
    fn a_shim_deadline_is_deadline_exceeded() {
        let s = status_of(call("Wait", Status::deadline_exceeded("too slow")));
        assert_eq!(s.code(), Code::DeadlineExceeded);
        assert!(s.message().contains("c1"), "{}", s.message());
    }

    #[test]
    fn everything_else_is_internal_naming_the_container() {
        let errors = [
            call("Create", Status::internal("disk full")),
            call("Kill", Status::invalid_argument("unknown signal 99")),
            ShimError::Start {
                id: "c1".into(),
                message: "it exited before serving".into(),
            },
            ShimError::Spawn {
                id: "c1".into(),
                bin: "/usr/bin/crius-shim".into(),
                source: std::io::Error::from_raw_os_error(libc::ENOENT),
            },
        ];
        for e in errors {
            assert!(!e.is_unreachable());
            let s = status_of(e);
            assert_eq!(s.code(), Code::Internal);
            assert!(s.message().contains("container c1"), "{}", s.message());
        }
    }
}

//! criusd's side of the shim API: starting a container's `crius-shim` and
//! talking to it over its unix socket.

use std::io::Read;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crius_proto::ready::{self, Readiness};
use crius_proto::shim::v1 as pb;
use crius_proto::shim::v1::shim_client::ShimClient;
use hyper_util::rt::TokioIo;
use nix::fcntl::{fcntl, FcntlArg, FdFlag, OFlag};
use tonic::transport::{Channel, Endpoint, Uri};

/// How long a shim may take to serve its socket.
const START_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum ShimError {
    #[error("starting shim {bin}: {source}")]
    Spawn {
        bin: PathBuf,
        source: std::io::Error,
    },
    #[error("shim for {id} failed to start: {message}")]
    Start { id: String, message: String },
    #[error("connecting to shim socket {socket}: {source}")]
    Connect {
        socket: PathBuf,
        source: tonic::transport::Error,
    },
    #[error("shim {call}: {status}")]
    Call {
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
    runtime_root: &Path,
    log_path: Option<&Path>,
) -> Result<Shim, ShimError> {
    let spawn_err = |source| ShimError::Spawn {
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
        .arg("--runtime-root")
        .arg(runtime_root)
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
        Readiness::Ready => Shim::connect(&paths.socket).await,
        Readiness::Failed(message) => Err(ShimError::Start {
            id: id.to_string(),
            message,
        }),
        Readiness::Died => Err(ShimError::Start {
            id: id.to_string(),
            message: format!(
                "it exited before serving (see {})",
                paths.bundle.join("shim.log").display()
            ),
        }),
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
    client: ShimClient<Channel>,
}

fn call_err(call: &'static str) -> impl FnOnce(tonic::Status) -> ShimError {
    move |status| ShimError::Call { call, status }
}

impl Shim {
    pub async fn connect(socket: &Path) -> Result<Shim, ShimError> {
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
                socket: socket.to_path_buf(),
                source,
            })?;
        Ok(Shim {
            client: ShimClient::new(channel)
                .max_decoding_message_size(64 * 1024 * 1024)
                .max_encoding_message_size(64 * 1024 * 1024),
        })
    }

    /// Creates the container from the bundle the shim was started with (its
    /// output goes to the shim's --log-path); with `stdin` the shim keeps the
    /// container's stdin open. Returns init's host pid.
    pub async fn create(&self, stdin: bool) -> Result<u32, ShimError> {
        let r = self
            .client
            .clone()
            .create(pb::CreateRequest { stdin })
            .await
            .map_err(call_err("Create"))?;
        Ok(r.into_inner().pid)
    }

    pub async fn start(&self) -> Result<(), ShimError> {
        self.client
            .clone()
            .start(pb::StartRequest {})
            .await
            .map_err(call_err("Start"))?;
        Ok(())
    }

    pub async fn state(&self) -> Result<pb::StateResponse, ShimError> {
        Ok(self
            .client
            .clone()
            .state(pb::StateRequest {})
            .await
            .map_err(call_err("State"))?
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
            .map_err(call_err("Kill"))?;
        Ok(())
    }

    pub async fn wait(&self) -> Result<pb::WaitResponse, ShimError> {
        Ok(self
            .client
            .clone()
            .wait(pb::WaitRequest {})
            .await
            .map_err(call_err("Wait"))?
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
            .map_err(call_err("ExecSync"))?
            .into_inner())
    }

    pub async fn delete(&self) -> Result<(), ShimError> {
        self.client
            .clone()
            .delete(pb::DeleteRequest {})
            .await
            .map_err(call_err("Delete"))?;
        Ok(())
    }

    pub async fn reopen_log(&self) -> Result<(), ShimError> {
        self.client
            .clone()
            .reopen_log(pb::ReopenLogRequest {})
            .await
            .map_err(call_err("ReopenLog"))?;
        Ok(())
    }

    pub async fn shutdown(&self) -> Result<(), ShimError> {
        self.client
            .clone()
            .shutdown(pb::ShutdownRequest {})
            .await
            .map_err(call_err("Shutdown"))?;
        Ok(())
    }
}

/// The open connections to the shims, by container id; connected on first
/// use (after a criusd restart, from the socket in the bundle).
#[derive(Default)]
pub struct Shims {
    map: std::sync::Mutex<std::collections::HashMap<String, Shim>>,
}

impl Shims {
    pub fn insert(&self, id: &str, shim: Shim) {
        self.map
            .lock()
            .expect("shims lock")
            .insert(id.to_string(), shim);
    }

    pub fn remove(&self, id: &str) {
        self.map.lock().expect("shims lock").remove(id);
    }

    pub async fn get(&self, id: &str, bundle: &Path) -> Result<Shim, ShimError> {
        if let Some(shim) = self.map.lock().expect("shims lock").get(id) {
            return Ok(shim.clone());
        }
        let shim = Shim::connect(&ShimPaths::in_bundle(bundle).socket).await?;
        self.insert(id, shim.clone());
        Ok(shim)
    }
}

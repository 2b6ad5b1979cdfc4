//! Serving CRI on the unix socket: the single-instance lock, the socket's
//! life cycle and graceful shutdown.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context};
use k8s_cri::v1::image_service_server::ImageServiceServer;
use k8s_cri::v1::runtime_service_server::RuntimeServiceServer;
use nix::fcntl::{Flock, FlockArg};
use tokio::net::UnixListener;
use tokio_stream::wrappers::UnixListenerStream;

use crate::config::Config;
use crate::deadline::DeadlineLayer;
use crate::image_service::ImageHandler;
use crate::runtime_service::RuntimeHandler;
use crate::Crius;

/// ExecSync output may be 16 MiB a stream; leave room for both and framing.
const MAX_MESSAGE_SIZE: usize = 40 * 1024 * 1024;

/// How long in-flight calls may run on after SIGTERM.
const SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(10);

/// The socket, bound, and the lock that makes this daemon its only server.
pub struct BoundSocket {
    listener: UnixListener,
    path: PathBuf,
    _lock: Flock<File>,
}

fn lock_path(socket: &Path) -> PathBuf {
    let mut name = socket.as_os_str().to_owned();
    name.push(".lock");
    PathBuf::from(name)
}

/// Takes the socket's lock, replaces a stale socket file and binds with mode 0660.
/// A live daemon holds the lock, so a second one fails here and leaves its socket alone.
pub fn bind(socket: &Path) -> anyhow::Result<BoundSocket> {
    let dir = socket
        .parent()
        .with_context(|| format!("socket path {} has no parent dir", socket.display()))?;
    std::fs::create_dir_all(dir)
        .with_context(|| format!("creating socket dir {}", dir.display()))?;
    let lock_path = lock_path(socket);
    let lock_file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .with_context(|| format!("opening lock file {}", lock_path.display()))?;
    let lock = match Flock::lock(lock_file, FlockArg::LockExclusiveNonblock) {
        Ok(lock) => lock,
        Err((_, nix::errno::Errno::EWOULDBLOCK)) => bail!(
            "another criusd is already serving {} (lock {} is held)",
            socket.display(),
            lock_path.display()
        ),
        Err((_, e)) => return Err(e).with_context(|| format!("locking {}", lock_path.display())),
    };
    match std::fs::remove_file(socket) {
        Ok(()) => tracing::info!(socket = %socket.display(), "replaced stale socket"),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => {
            return Err(e).with_context(|| format!("removing stale socket {}", socket.display()))
        }
    }
    let listener = UnixListener::bind(socket)
        .with_context(|| format!("binding socket {}", socket.display()))?;
    std::fs::set_permissions(socket, std::fs::Permissions::from_mode(0o660))
        .with_context(|| format!("setting mode of {}", socket.display()))?;
    Ok(BoundSocket {
        listener,
        path: socket.to_path_buf(),
        _lock: lock,
    })
}

/// Serves until SIGTERM or SIGINT, then stops accepting, lets in-flight calls
/// finish and removes the socket.
pub async fn run(config: Config) -> anyhow::Result<()> {
    let signals = ShutdownSignals::install()?;
    let bound = bind(&config.socket)?;
    let crius = Arc::new(Crius::open(config)?);
    crate::container::recover(&crius);
    tracing::info!(socket = %bound.path.display(), "criusd serving CRI");
    let runtime = RuntimeServiceServer::new(RuntimeHandler::new(crius.clone()))
        .max_decoding_message_size(MAX_MESSAGE_SIZE)
        .max_encoding_message_size(MAX_MESSAGE_SIZE);
    let image = ImageServiceServer::new(ImageHandler::new(crius.clone()))
        .max_decoding_message_size(MAX_MESSAGE_SIZE)
        .max_encoding_message_size(MAX_MESSAGE_SIZE);
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let mut serving = tokio::spawn(
        tonic::transport::Server::builder()
            .layer(DeadlineLayer)
            .add_service(runtime)
            .add_service(image)
            .serve_with_incoming_shutdown(UnixListenerStream::new(bound.listener), async {
                let _ = stop_rx.await;
            }),
    );
    let result = tokio::select! {
        served = &mut serving => served,
        () = signals.recv() => {
            let _ = stop_tx.send(());
            // Idle client connections (kubelet keeps one open) must not hold
            // the exit hostage: in-flight calls get a bounded grace.
            match tokio::time::timeout(SHUTDOWN_GRACE, &mut serving).await {
                Ok(served) => served,
                Err(_) => {
                    tracing::warn!(grace = ?SHUTDOWN_GRACE, "connections still open after the grace; exiting");
                    Ok(Ok(()))
                }
            }
        }
    };
    let _ = std::fs::remove_file(&bound.path);
    result.context("CRI server task")?.context("serving CRI")?;
    tracing::info!("criusd stopped");
    Ok(())
}

/// SIGTERM and SIGINT, installed before the socket serves: a signal that
/// arrives once clients can connect must never meet the default action.
struct ShutdownSignals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
}

impl ShutdownSignals {
    fn install() -> anyhow::Result<ShutdownSignals> {
        use tokio::signal::unix::{signal, SignalKind};
        Ok(ShutdownSignals {
            term: signal(SignalKind::terminate()).context("installing the SIGTERM handler")?,
            int: signal(SignalKind::interrupt()).context("installing the SIGINT handler")?,
        })
    }

    async fn recv(mut self) {
        tokio::select! {
            _ = self.term.recv() => tracing::info!("SIGTERM: shutting down"),
            _ = self.int.recv() => tracing::info!("SIGINT: shutting down"),
        }
    }
}

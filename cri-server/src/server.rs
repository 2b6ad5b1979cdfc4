//! Serving CRI on the unix socket: the single-instance lock, the socket's
//! life cycle and graceful shutdown.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context};
use crius_proto::cri::image_service_server::ImageServiceServer;
use crius_proto::cri::runtime_service_server::RuntimeServiceServer;
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
    crate::container::recover(&crius.container_deps());
    crate::pod::recover(&crius.pod_deps());
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

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use crius_proto::cri;
    use crius_proto::cri::image_service_client::ImageServiceClient;
    use crius_proto::cri::runtime_service_client::RuntimeServiceClient;
    use hyper_util::rt::TokioIo;
    use tokio::net::{UnixListener, UnixStream};
    use tokio_stream::wrappers::UnixListenerStream;
    use tonic::transport::{Channel, Endpoint};
    use tonic::Code;

    use super::*;

    /// Both services served in-process on a socket of their own (no criusd,
    /// no network), and a channel to them.
    async fn serve() -> (tempfile::TempDir, Channel) {
        let tmp = tempfile::tempdir().unwrap();
        let config = Config {
            root: tmp.path().join("root"),
            state: tmp.path().join("state"),
            ..Default::default()
        };
        let crius = Arc::new(Crius::open(config).unwrap());
        let socket = tmp.path().join("crius.sock");
        let listener = UnixListener::bind(&socket).unwrap();
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(RuntimeServiceServer::new(RuntimeHandler::new(
                    crius.clone(),
                )))
                .add_service(ImageServiceServer::new(ImageHandler::new(crius)))
                .serve_with_incoming(UnixListenerStream::new(listener)),
        );
        let channel =
            Endpoint::from_static("http://[::]:50051")
                .connect_with_connector(tower::service_fn(move |_| {
                    let socket = socket.clone();
                    async move {
                        Ok::<_, std::io::Error>(TokioIo::new(UnixStream::connect(socket).await?))
                    }
                }))
                .await
                .unwrap();
        (tmp, channel)
    }

    /// The call reached our handler (not tonic's answer to an unknown
    /// method, which names nothing) and it answered UNIMPLEMENTED naming it.
    macro_rules! assert_unimplemented {
        ($call:expr, $name:literal) => {
            match $call.await {
                Ok(_) => panic!("{} answered", $name),
                Err(status) => {
                    assert_eq!(status.code(), Code::Unimplemented, "{}: {status:?}", $name);
                    assert!(status.message().contains($name), "{}: {status:?}", $name);
                }
            }
        };
    }

    #[tokio::test]
    async fn rpcs_not_built_yet_are_routed_and_unimplemented_by_name() {
        let (_tmp, channel) = serve().await;
        let mut rt = RuntimeServiceClient::new(channel.clone());
        let mut img = ImageServiceClient::new(channel);
        assert_unimplemented!(
            rt.stream_pod_sandboxes(cri::StreamPodSandboxesRequest::default()),
            "StreamPodSandboxes"
        );
        assert_unimplemented!(
            rt.stream_containers(cri::StreamContainersRequest::default()),
            "StreamContainers"
        );
        assert_unimplemented!(
            rt.update_container_resources(cri::UpdateContainerResourcesRequest::default()),
            "UpdateContainerResources"
        );
        assert_unimplemented!(rt.exec(cri::ExecRequest::default()), "Exec");
        assert_unimplemented!(rt.attach(cri::AttachRequest::default()), "Attach");
        assert_unimplemented!(
            rt.port_forward(cri::PortForwardRequest::default()),
            "PortForward"
        );
        assert_unimplemented!(
            rt.stream_container_stats(cri::StreamContainerStatsRequest::default()),
            "StreamContainerStats"
        );
        assert_unimplemented!(
            rt.stream_pod_sandbox_stats(cri::StreamPodSandboxStatsRequest::default()),
            "StreamPodSandboxStats"
        );
        assert_unimplemented!(
            rt.checkpoint_container(cri::CheckpointContainerRequest::default()),
            "CheckpointContainer"
        );
        assert_unimplemented!(
            rt.checkpoint_pod(cri::CheckpointPodRequest::default()),
            "CheckpointPod"
        );
        assert_unimplemented!(
            rt.restore_pod(cri::RestorePodRequest::default()),
            "RestorePod"
        );
        assert_unimplemented!(
            rt.get_container_events(cri::GetEventsRequest::default()),
            "GetContainerEvents"
        );
        assert_unimplemented!(
            rt.list_metric_descriptors(cri::ListMetricDescriptorsRequest::default()),
            "ListMetricDescriptors"
        );
        assert_unimplemented!(
            rt.list_pod_sandbox_metrics(cri::ListPodSandboxMetricsRequest::default()),
            "ListPodSandboxMetrics"
        );
        assert_unimplemented!(
            rt.stream_pod_sandbox_metrics(cri::StreamPodSandboxMetricsRequest::default()),
            "StreamPodSandboxMetrics"
        );
        assert_unimplemented!(
            rt.update_pod_sandbox_resources(cri::UpdatePodSandboxResourcesRequest::default()),
            "UpdatePodSandboxResources"
        );
        assert_unimplemented!(
            img.stream_images(cri::StreamImagesRequest::default()),
            "StreamImages"
        );
    }
}

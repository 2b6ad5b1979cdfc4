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
use tokio_stream::{Stream, StreamExt};

use crate::config::Config;
use crate::deadline::DeadlineLayer;
use crate::image_service::ImageHandler;
use crate::runtime_service::RuntimeHandler;
use crate::Crius;

mod authority;

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

/// The connections to serve, each read through [`authority::AuthorityFix`]:
/// a client that names the socket in `:authority` (Python, Java) is served
/// like one that says `localhost` (Go).
fn incoming(
    listener: UnixListener,
) -> impl Stream<Item = std::io::Result<authority::AuthorityFix<tokio::net::UnixStream>>> {
    UnixListenerStream::new(listener).map(|conn| conn.map(authority::AuthorityFix::new))
}

/// Serves until SIGTERM or SIGINT, then stops accepting, lets in-flight calls
/// finish and removes the socket.
pub async fn run(config: Config) -> anyhow::Result<()> {
    let signals = ShutdownSignals::install()?;
    let bound = bind(&config.socket)?;
    let crius = Arc::new(Crius::open(config)?);
    crate::container::recover(&crius.container_deps());
    crate::pod::recover(&crius.pod_deps());
    if let Some(listener) = crius.streaming.take_listener() {
        let listener =
            tokio::net::TcpListener::from_std(listener).context("serving the streaming socket")?;
        tracing::info!(address = %listener.local_addr()?, "streaming server listening");
        tokio::spawn(crate::streaming::server::serve(listener, crius.clone()));
    }
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
            .serve_with_incoming_shutdown(incoming(bound.listener), async {
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
    use tonic::transport::{Channel, Endpoint};
    use tonic::Code;

    use super::*;

    /// Both services served in-process on a socket of their own (no criusd,
    /// no network), as `run` serves them; returns the socket's path.
    fn serve_socket() -> (tempfile::TempDir, PathBuf) {
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
                .serve_with_incoming(incoming(listener)),
        );
        (tmp, socket)
    }

    /// [`serve_socket`] and a tonic channel to it.
    async fn serve() -> (tempfile::TempDir, Channel) {
        let (tmp, socket) = serve_socket();
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
    async fn the_streaming_rpcs_are_routed_and_check_their_requests() {
        let (_tmp, channel) = serve().await;
        let mut rt = RuntimeServiceClient::new(channel);
        let err = rt.exec(cri::ExecRequest::default()).await.unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
        assert!(
            err.message().contains("one of stdin, stdout or stderr"),
            "{err:?}"
        );
        let exec = cri::ExecRequest {
            container_id: "nosuch".into(),
            cmd: vec!["true".into()],
            stdout: true,
            ..Default::default()
        };
        let err = rt.exec(exec).await.unwrap_err();
        assert_eq!(err.code(), Code::NotFound, "{err:?}");
        let err = rt.attach(cri::AttachRequest::default()).await.unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
        let err = rt
            .port_forward(cri::PortForwardRequest::default())
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
        assert!(err.message().contains("pod_sandbox_id"), "{err:?}");
        // GetContainerEvents answers with a stream that stays open.
        let mut events = rt
            .get_container_events(cri::GetEventsRequest::default())
            .await
            .expect("GetContainerEvents is served")
            .into_inner();
        let idle = tokio::time::timeout(std::time::Duration::from_millis(100), events.message());
        assert!(idle.await.is_err(), "no event and no end without a change");
    }

    #[tokio::test]
    async fn the_metrics_rpcs_are_routed_and_answer() {
        let (_tmp, channel) = serve().await;
        let mut rt = RuntimeServiceClient::new(channel);
        let descriptors = rt
            .list_metric_descriptors(cri::ListMetricDescriptorsRequest::default())
            .await
            .unwrap()
            .into_inner()
            .descriptors;
        assert!(
            descriptors
                .iter()
                .any(|d| d.name == "container_network_receive_bytes_total"),
            "{descriptors:?}"
        );
        let metrics = rt
            .list_pod_sandbox_metrics(cri::ListPodSandboxMetricsRequest::default())
            .await
            .unwrap()
            .into_inner();
        assert!(metrics.pod_metrics.is_empty(), "no pods: {metrics:?}");
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

    // Clients that name the socket in `:authority` (issue 9, item 8). No Rust
    // client sends such a value (hyper and tonic take it from an `http::Uri`,
    // which refuses it), so this one writes the HTTP/2 frames itself, laid
    // out as grpc-core (grpcio 1.85, read off the wire) lays them out: HPACK
    // literals with new names, added to the dynamic table, which the next
    // request names by index.

    const VERSION_PATH: &[u8] = b"/runtime.v1.RuntimeService/Version";
    /// Static table entries (RFC 7541 Appendix A).
    const METHOD_POST: u8 = 3;
    const SCHEME_HTTP: u8 = 6;
    /// The first dynamic table entry, the newest.
    const NEWEST: u8 = 62;

    /// A header field as an HPACK client writes it, without Huffman coding.
    #[derive(Clone, Copy)]
    enum Field<'a> {
        /// A table entry (RFC 7541 §6.1).
        Indexed(u8),
        /// A new name and its value, added to the dynamic table (§6.2.1).
        Literal(&'a [u8], &'a [u8]),
    }
    use Field::{Indexed, Literal};

    fn header_block(fields: &[Field<'_>]) -> Vec<u8> {
        let mut block = Vec::new();
        for field in fields {
            match *field {
                Indexed(index) => block.push(0x80 | index),
                Literal(name, value) => {
                    block.push(0x40);
                    for string in [name, value] {
                        block.push(u8::try_from(string.len()).unwrap());
                        block.extend_from_slice(string);
                    }
                }
            }
        }
        block
    }

    /// A Version request as grpc-core's first on a connection: after it the
    /// dynamic table holds, newest first, `te`, `content-type`, `:authority`
    /// and `:path`.
    fn grpc_core_version(authority: &[u8]) -> Vec<u8> {
        header_block(&[
            Literal(b":path", VERSION_PATH),
            Literal(b":authority", authority),
            Indexed(METHOD_POST),
            Indexed(SCHEME_HTTP),
            Literal(b"content-type", b"application/grpc"),
            Literal(b"te", b"trailers"),
        ])
    }

    fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
        let mut frame = u32::try_from(payload.len()).unwrap().to_be_bytes()[1..].to_vec();
        frame.extend_from_slice(&[kind, flags]);
        frame.extend_from_slice(&stream.to_be_bytes());
        frame.extend_from_slice(payload);
        frame
    }

    /// A hand-driven HTTP/2 client connection.
    struct RawClient {
        conn: UnixStream,
        /// Follows h2's encoder, for the response headers.
        decoder: loona_hpack::Decoder<'static>,
    }

    impl RawClient {
        async fn connect(socket: &Path) -> RawClient {
            use tokio::io::AsyncWriteExt;
            let mut conn = UnixStream::connect(socket).await.unwrap();
            conn.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
                .await
                .unwrap();
            conn.write_all(&frame(0x4, 0, 0, &[])).await.unwrap(); // SETTINGS
            RawClient {
                conn,
                decoder: loona_hpack::Decoder::new(),
            }
        }

        /// A Version call on `stream` with this header block: its answer, or
        /// what the server did instead.
        async fn version(
            &mut self,
            stream: u32,
            block: &[u8],
        ) -> Result<cri::VersionResponse, String> {
            use prost::Message;
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            // HEADERS with END_HEADERS, then an empty VersionRequest with END_STREAM.
            let mut request = frame(0x1, 0x4, stream, block);
            request.extend(frame(0x0, 0x1, stream, &[0; 5]));
            self.conn.write_all(&request).await.unwrap();
            let mut fields = Vec::new();
            let mut data = Vec::new();
            loop {
                let mut head = [0u8; 9];
                self.conn
                    .read_exact(&mut head)
                    .await
                    .map_err(|e| format!("reading: {e}"))?;
                let len = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
                let (kind, flags) = (head[3], head[4]);
                let id = u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff;
                let mut payload = vec![0; len];
                self.conn
                    .read_exact(&mut payload)
                    .await
                    .map_err(|e| format!("reading: {e}"))?;
                match kind {
                    0x0 if id == stream => data.extend_from_slice(&payload),
                    0x1 => {
                        assert!(flags & 0x4 != 0, "response headers in CONTINUATION frames");
                        let mut block = Vec::new();
                        self.decoder
                            .decode_with_cb(&payload, |name, value| {
                                block.push((name.into_owned(), value.into_owned()))
                            })
                            .map_err(|e| format!("response headers: {e}"))?;
                        if id == stream {
                            fields.extend(block);
                            // The trailers end the call.
                            if flags & 0x1 != 0 {
                                break;
                            }
                        }
                    }
                    0x3 if id == stream => return Err(format!("RST_STREAM {payload:?}")),
                    0x4 if flags & 0x1 == 0 => {
                        self.conn.write_all(&frame(0x4, 0x1, 0, &[])).await.unwrap()
                    }
                    0x7 => return Err(format!("GOAWAY {payload:?}")),
                    _ => {}
                }
            }
            let field = |name: &[u8]| {
                fields
                    .iter()
                    .find(|(n, _)| n == name)
                    .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
            };
            if field(b":status").as_deref() != Some("200")
                || field(b"grpc-status").as_deref() != Some("0")
            {
                return Err(format!("answered {fields:?}"));
            }
            // One uncompressed gRPC message: flag 0, length, VersionResponse.
            let message = match data.split_first_chunk::<5>() {
                Some(([0, length @ ..], message))
                    if u32::from_be_bytes(*length) as usize == message.len() =>
                {
                    message
                }
                _ => return Err(format!("not one gRPC message: {data:?}")),
            };
            cri::VersionResponse::decode(message).map_err(|e| format!("VersionResponse: {e}"))
        }
    }

    fn assert_crius(answer: Result<cri::VersionResponse, String>, what: &str) {
        let response = answer.unwrap_or_else(|e| panic!("{what}: {e}"));
        assert_eq!(response.runtime_name, "crius", "{what}: {response:?}");
        assert_eq!(response.runtime_api_version, "v1", "{what}: {response:?}");
    }

    /// grpcio's authority for `unix:<socket>`: the path percent-encoded,
    /// without its leading `/`.
    fn grpcio_authority(socket: &Path) -> String {
        let path = socket.to_str().unwrap();
        path.strip_prefix('/').unwrap_or(path).replace('/', "%2F")
    }

    #[tokio::test]
    async fn version_answers_grpcio_percent_encoded_authority() {
        let (_tmp, socket) = serve_socket();
        let authority = grpcio_authority(&socket);
        // What h2 refused with PROTOCOL_ERROR before any handler ran.
        assert!(http::uri::Authority::try_from(authority.as_str()).is_err());
        let mut client = RawClient::connect(&socket).await;
        let first = grpc_core_version(authority.as_bytes());
        assert_crius(client.version(1, &first).await, "grpcio's first call");
        let again = header_block(&[
            Indexed(NEWEST + 3),
            Indexed(NEWEST + 2),
            Indexed(METHOD_POST),
            Indexed(SCHEME_HTTP),
            Indexed(NEWEST + 1),
            Indexed(NEWEST),
        ]);
        assert_crius(
            client.version(3, &again).await,
            "grpcio's next call, by index",
        );
    }

    #[tokio::test]
    async fn version_answers_localhost_authority() {
        let (_tmp, socket) = serve_socket();
        let mut client = RawClient::connect(&socket).await;
        let first = grpc_core_version(b"localhost");
        assert_crius(client.version(1, &first).await, "localhost");
        let again = header_block(&[
            Indexed(NEWEST + 3),
            Indexed(NEWEST + 2),
            Indexed(METHOD_POST),
            Indexed(SCHEME_HTTP),
            Indexed(NEWEST + 1),
            Indexed(NEWEST),
        ]);
        assert_crius(client.version(3, &again).await, "localhost, by index");
    }

    /// A connection that starts with a valid authority and then sends the
    /// socket's path (grpc-java's authority): the later calls' indexes name
    /// the client's entries, added before and after the switch.
    #[tokio::test]
    async fn version_answers_after_a_connection_turns_to_a_refused_authority() {
        let (_tmp, socket) = serve_socket();
        let path = socket.to_str().unwrap().as_bytes();
        let mut client = RawClient::connect(&socket).await;
        // Table after: te, content-type, :authority localhost, :path.
        assert_crius(
            client.version(1, &grpc_core_version(b"localhost")).await,
            "localhost",
        );
        // Table after: :authority path, te, content-type, :authority localhost, :path.
        let java = header_block(&[
            Indexed(NEWEST + 3),
            Literal(b":authority", path),
            Indexed(METHOD_POST),
            Indexed(SCHEME_HTTP),
            Indexed(NEWEST + 2),
            Indexed(NEWEST + 1),
        ]);
        assert_crius(client.version(3, &java).await, "the socket's path");
        for (stream, authority, what) in [
            (5, NEWEST + 3, "localhost again, by index"),
            (7, NEWEST, "the path again, by index"),
        ] {
            let block = header_block(&[
                Indexed(NEWEST + 4),
                Indexed(authority),
                Indexed(METHOD_POST),
                Indexed(SCHEME_HTTP),
                Indexed(NEWEST + 2),
                Indexed(NEWEST + 1),
            ]);
            assert_crius(client.version(stream, &block).await, what);
        }
    }
}

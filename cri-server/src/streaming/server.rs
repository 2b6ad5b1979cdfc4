//! The HTTP/1.1 side of the streaming server (hyper): routes
//! `/<exec|attach|portforward>/<token>`, answers 404 for a token that is
//! unknown, used or expired, negotiates the upgrade (SPDY/3.1 with
//! `X-Stream-Protocol-Version`, as client-go's `httpstream.Handshake`
//! expects) and hands the upgraded connection to its protocol.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use crius_proto::cri;
use http::{header, HeaderMap, HeaderValue, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::mpsc;

use super::remotecommand::{self, Channels, Outcome, Protocol, StdinEnd, StreamOptions};
use super::{portforward, spdy, websocket, StreamRequest};
use crate::{container, pod, Crius};

/// The header a client lists its protocol versions in, and the server
/// names its choice in.
const PROTOCOL_HEADER: &str = "x-stream-protocol-version";

/// How long the client has to open the streams it asked for (kubelet's
/// `streamCreationTimeout` default).
const STREAM_CREATION_TIMEOUT: Duration = Duration::from_secs(30);

/// Serves the streaming endpoint on `listener` for as long as the daemon
/// runs; each connection on its own task.
pub async fn serve(listener: TcpListener, crius: Arc<Crius>) {
    loop {
        let tcp = match listener.accept().await {
            Ok((tcp, _)) => tcp,
            Err(err) => {
                // Out of fds and the like: back off rather than spin.
                tracing::warn!(%err, "accepting a streaming connection failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        let crius = crius.clone();
        tokio::spawn(async move {
            match crius.streaming.tls().cloned() {
                Some(tls) => match tls.accept(tcp).await {
                    Ok(tls) => serve_http(tls, crius).await,
                    Err(err) => tracing::debug!(%err, "TLS handshake failed"),
                },
                None => serve_http(tcp, crius).await,
            }
        });
    }
}

/// Serves one connection's HTTP/1.1 requests, upgrades allowed.
async fn serve_http<T>(io: T, crius: Arc<Crius>)
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static,
{
    let service = service_fn(move |req| {
        let crius = crius.clone();
        async move { Ok::<_, Infallible>(route(req, crius)) }
    });
    let served = hyper::server::conn::http1::Builder::new()
        .serve_connection(TokioIo::new(io), service)
        .with_upgrades()
        .await;
    if let Err(err) = served {
        tracing::debug!(%err, "streaming connection ended with an error");
    }
}

type Reply = Response<Full<Bytes>>;

fn plain(status: StatusCode, text: impl Into<String>) -> Reply {
    let mut reply = Response::new(Full::new(Bytes::from(text.into())));
    *reply.status_mut() = status;
    reply.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    reply
}

fn route(req: Request<Incoming>, crius: Arc<Crius>) -> Reply {
    let mut segments = req.uri().path().trim_start_matches('/').split('/');
    let (Some(kind), Some(token), None) = (segments.next(), segments.next(), segments.next())
    else {
        return plain(StatusCode::NOT_FOUND, "not found");
    };
    let Some(request) = crius.streaming.take(kind, token) else {
        return plain(StatusCode::NOT_FOUND, "unknown or expired streaming token");
    };
    match request {
        StreamRequest::Exec(exec) => {
            let options = StreamOptions {
                stdin: exec.stdin,
                stdout: exec.stdout,
                stderr: exec.stderr,
                tty: exec.tty,
            };
            upgrade_remote_command(
                req,
                options,
                move |mut channels, protocol, gone| async move {
                    let deps = crius.container_deps();
                    // A terminal starts at the client's size, not the kernel's 0x0.
                    let mut size = None;
                    if let Some(resize) = channels.resize.take() {
                        let (first, rest) = remotecommand::first_size(resize).await;
                        (size, channels.resize) = (first, Some(rest));
                    }
                    let (outcome, error) = match container::stream::exec(&deps, &exec, size).await {
                        Ok(io) => remotecommand::pump(channels, io, StdinEnd::Close, gone).await,
                        Err(err) => (Outcome::Failed(err.message()), channels.error),
                    };
                    remotecommand::write_status(error, protocol, &outcome, &exec.cmd).await;
                },
            )
        }
        StreamRequest::Attach(attach) => {
            let options = StreamOptions {
                stdin: attach.stdin,
                stdout: attach.stdout,
                stderr: attach.stderr,
                tty: attach.tty,
            };
            upgrade_remote_command(req, options, move |channels, protocol, gone| async move {
                let deps = crius.container_deps();
                let (outcome, error) = match container::stream::attach(&deps, &attach).await {
                    Ok((io, stdin)) => {
                        let end = if stdin.closes_container_stdin {
                            StdinEnd::Close
                        } else {
                            StdinEnd::Detach
                        };
                        remotecommand::pump(channels, io, end, gone).await
                    }
                    Err(err) => (Outcome::Failed(err.message()), channels.error),
                };
                // An attach reports no exit code: the container's end is its own.
                let outcome = match outcome {
                    Outcome::Exited(_) => Outcome::Detached,
                    other => other,
                };
                remotecommand::write_status(error, protocol, &outcome, &[]).await;
            })
        }
        StreamRequest::PortForward(forward) => upgrade_port_forward(req, forward, crius),
    }
}

/// The protocol both sides speak: the first of `offered` (ours, best first)
/// that the client lists. Ok(None) when the client lists none.
fn negotiate(
    headers: &HeaderMap,
    offered: &[&'static str],
) -> Result<Option<&'static str>, Box<Reply>> {
    let asked: Vec<&str> = headers
        .get_all(PROTOCOL_HEADER)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .collect();
    if asked.is_empty() {
        return Ok(None);
    }
    match offered.iter().find(|ours| asked.contains(ours)) {
        Some(chosen) => Ok(Some(chosen)),
        None => {
            let mut reply = plain(
                StatusCode::FORBIDDEN,
                format!(
                    "unable to upgrade: unable to negotiate protocol: client supports {asked:?}, server supports {offered:?}"
                ),
            );
            for ours in offered {
                reply.headers_mut().append(
                    "x-accepted-stream-protocol-versions",
                    HeaderValue::from_static(ours),
                );
            }
            Err(Box::new(reply))
        }
    }
}

/// Whether `req` asks to upgrade to `protocol` (`Connection: Upgrade`,
/// `Upgrade: <protocol>`, case-insensitive).
fn upgrades_to(req: &Request<Incoming>, protocol: &str) -> bool {
    let has = |name, wanted: &str| {
        req.headers().get_all(name).iter().any(|value| {
            value
                .to_str()
                .unwrap_or_default()
                .split(',')
                .any(|token| token.trim().eq_ignore_ascii_case(wanted))
        })
    };
    has(header::CONNECTION, "upgrade") && has(header::UPGRADE, protocol)
}

/// The 101 answer of a SPDY upgrade choosing `protocol`.
fn switching_to_spdy(protocol: Option<&str>) -> Reply {
    let mut reply = Response::new(Full::new(Bytes::new()));
    *reply.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let headers = reply.headers_mut();
    headers.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    headers.insert(header::UPGRADE, HeaderValue::from_static(spdy::UPGRADE));
    if let Some(protocol) = protocol {
        headers.insert(
            PROTOCOL_HEADER,
            HeaderValue::from_str(protocol).expect("protocol names are header values"),
        );
    }
    reply
}

/// The session an exec or attach runs once its channels are open: given
/// the channels, the protocol and what resolves when the client has gone.
type Gone = std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>;

/// How long a finished WebSocket session waits for its last messages to
/// reach a client that stopped reading.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(30);

/// Upgrades an exec or attach request to WebSocket or SPDY, opens the
/// channels `options` calls for and runs `session` on them; the connection
/// closes when it returns.
fn upgrade_remote_command<F, Fut>(
    mut req: Request<Incoming>,
    options: StreamOptions,
    session: F,
) -> Reply
where
    F: FnOnce(Channels, Protocol, Gone) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    if websocket::is_websocket(&req) {
        let names: Vec<&str> = websocket::REMOTE_COMMAND.iter().map(|p| p.name()).collect();
        let (reply, chosen) = match websocket::accept(&req, &names) {
            Ok(accepted) => accepted,
            Err(refused) => return *refused,
        };
        let protocol = websocket::REMOTE_COMMAND
            .into_iter()
            .find(|p| p.name() == chosen)
            .expect("negotiated among ours");
        let upgrade = hyper::upgrade::on(&mut req);
        tokio::spawn(async move {
            let upgraded = match upgrade.await {
                Ok(upgraded) => upgraded,
                Err(err) => return tracing::debug!(%err, "streaming upgrade failed"),
            };
            let socket = websocket::socket(upgraded).await;
            let (channels, connection) = websocket::remote_command(socket, options, protocol);
            session(channels, protocol, Box::pin(connection.gone())).await;
            if tokio::time::timeout(FLUSH_TIMEOUT, connection.finish())
                .await
                .is_err()
            {
                tracing::debug!("a streaming client stopped reading; its connection is dropped");
            }
        });
        return reply;
    }
    if !upgrades_to(&req, spdy::UPGRADE) {
        return plain(
            StatusCode::BAD_REQUEST,
            "this endpoint speaks SPDY/3.1 or WebSocket (Connection: Upgrade)",
        );
    }
    let names: Vec<&str> = Protocol::SPDY.iter().map(|p| p.name()).collect();
    let protocol = match negotiate(req.headers(), &names) {
        Ok(Some(chosen)) => Protocol::SPDY
            .into_iter()
            .find(|p| p.name() == chosen)
            .expect("negotiated among ours"),
        Ok(None) => {
            return plain(
                StatusCode::BAD_REQUEST,
                format!("no {PROTOCOL_HEADER} header: the server speaks {names:?}"),
            )
        }
        Err(refused) => return *refused,
    };
    let upgrade = hyper::upgrade::on(&mut req);
    tokio::spawn(async move {
        let upgraded = match upgrade.await {
            Ok(upgraded) => upgraded,
            Err(err) => return tracing::debug!(%err, "streaming upgrade failed"),
        };
        let (connection, mut incoming) = spdy::serve(TokioIo::new(upgraded));
        match collect_streams(&mut incoming, options, protocol).await {
            Ok((channels, held)) => {
                let watch = connection.clone();
                session(
                    channels,
                    protocol,
                    Box::pin(async move { watch.closed().await }),
                )
                .await;
                drop(held);
            }
            Err(err) => tracing::debug!(%err, "remote-command streams not opened"),
        }
        connection.close().await;
    });
    switching_to_spdy(Some(protocol.name()))
}

/// The halves of the streams the session does not use, kept open until it
/// ends (dropping one would close that direction early).
type Held = Vec<Box<dyn std::any::Any + Send>>;

/// Receives the streams a remote-command client opens (named by their
/// `streamtype` header) until every one `options` calls for is there: an
/// error stream always, resize with a terminal (v3 on), stderr only
/// without a terminal. Errors: the client did not open them within
/// [`STREAM_CREATION_TIMEOUT`] or the connection ended first.
async fn collect_streams(
    incoming: &mut mpsc::Receiver<spdy::Stream>,
    options: StreamOptions,
    protocol: Protocol,
) -> Result<(Channels, Held), String> {
    let wants_resize = options.tty && protocol.has_resize();
    let wants_stderr = options.stderr && !options.tty;
    let mut held: Held = Vec::new();
    let (mut error, mut stdin, mut stdout, mut stderr, mut resize) = (None, None, None, None, None);
    let complete = |error: &Option<_>,
                    stdin: &Option<_>,
                    stdout: &Option<_>,
                    stderr: &Option<_>,
                    resize: &Option<_>| {
        error.is_some()
            && (stdin.is_some() || !options.stdin)
            && (stdout.is_some() || !options.stdout)
            && (stderr.is_some() || !wants_stderr)
            && (resize.is_some() || !wants_resize)
    };
    let deadline = tokio::time::Instant::now() + STREAM_CREATION_TIMEOUT;
    while !complete(&error, &stdin, &stdout, &stderr, &resize) {
        let stream = match tokio::time::timeout_at(deadline, incoming.recv()).await {
            Ok(Some(stream)) => stream,
            Ok(None) => return Err("the connection ended before its streams were opened".into()),
            Err(_) => return Err("timed out waiting for the client to open its streams".into()),
        };
        let kind = stream
            .headers()
            .get("streamtype")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        tracing::debug!(stream_type = kind, id = stream.id(), "stream opened");
        let (reader, writer) = stream.split();
        match kind.as_str() {
            "error" => {
                error = Some(Box::pin(writer) as remotecommand::Writer);
                held.push(Box::new(reader));
            }
            "stdout" => {
                stdout = Some(Box::pin(writer) as remotecommand::Writer);
                held.push(Box::new(reader));
            }
            "stderr" => {
                stderr = Some(Box::pin(writer) as remotecommand::Writer);
                held.push(Box::new(reader));
            }
            "stdin" => {
                stdin = Some(Box::pin(reader) as remotecommand::Reader);
                held.push(Box::new(writer));
            }
            "resize" => {
                resize = Some(Box::pin(reader) as remotecommand::Reader);
                held.push(Box::new(writer));
            }
            other => {
                tracing::debug!(stream_type = other, "ignoring an unknown stream");
                held.push(Box::new((reader, writer)));
            }
        }
    }
    let channels = Channels {
        stdin,
        stdout,
        stderr,
        resize,
        error: error.expect("complete() requires the error stream"),
    };
    Ok((channels, held))
}

/// Upgrades a port-forward request to SPDY (or SPDY tunnelled in
/// WebSocket) and serves its streams into the pod's network namespace until
/// the client closes the connection.
fn upgrade_port_forward(
    mut req: Request<Incoming>,
    forward: cri::PortForwardRequest,
    crius: Arc<Crius>,
) -> Reply {
    let tunnelled = websocket::is_websocket(&req);
    let reply = if tunnelled {
        match websocket::accept(&req, &[websocket::TUNNELED_PORT_FORWARD]) {
            Ok((reply, _)) => reply,
            Err(refused) => return *refused,
        }
    } else if upgrades_to(&req, spdy::UPGRADE) {
        match negotiate(req.headers(), &[portforward::PROTOCOL]) {
            Ok(protocol) => switching_to_spdy(protocol),
            Err(refused) => return *refused,
        }
    } else {
        return plain(
            StatusCode::BAD_REQUEST,
            "this endpoint speaks SPDY/3.1 or SPDY/3.1 in WebSocket (Connection: Upgrade)",
        );
    };
    // The pod may have stopped since the RPC: refuse before upgrading.
    let netns = match pod::port_forward_netns(&crius.pods, &forward.pod_sandbox_id) {
        Ok(netns) => netns,
        Err(err) => return plain(StatusCode::BAD_REQUEST, err.message()),
    };
    let upgrade = hyper::upgrade::on(&mut req);
    tokio::spawn(async move {
        let upgraded = match upgrade.await {
            Ok(upgraded) => upgraded,
            Err(err) => return tracing::debug!(%err, "streaming upgrade failed"),
        };
        let (connection, incoming) = if tunnelled {
            spdy::serve(websocket::tunnel(websocket::socket(upgraded).await))
        } else {
            spdy::serve(TokioIo::new(upgraded))
        };
        portforward::serve(incoming, forward.pod_sandbox_id, netns).await;
        connection.close().await;
    });
    reply
}

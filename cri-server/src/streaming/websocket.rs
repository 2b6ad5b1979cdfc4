//! Exec, attach and port-forward over WebSocket (tokio-tungstenite), as
//! client-go's `NewWebSocketExecutor` and `NewSPDYOverWebsocketDialer`
//! speak it (crictl and critest with `--transport websocket`):
//!
//! - `v5.channel.k8s.io` / `v4.channel.k8s.io` for exec and attach: every
//!   binary message starts with its channel (0 stdin, 1 stdout, 2 stderr,
//!   3 error, 4 resize); v5 adds the client's close signal `[255, channel]`
//!   for the end of stdin (apimachinery's `wsstream`, KEP-4006). The server
//!   ends with a normal Close once the status is written: only then does the
//!   client read EOF on its outputs.
//! - `SPDY/3.1+portforward.k8s.io` for port-forward: the binary messages
//!   carry a SPDY session's bytes (client-go's `TunnelingConnection`).

use bytes::{BufMut, Bytes, BytesMut};
use futures_util::{SinkExt, StreamExt};
use http::{header, HeaderValue, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, DuplexStream};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

use super::remotecommand::{Channels, Protocol, StreamOptions};

/// The sub-protocols offered for exec and attach, best first.
pub const REMOTE_COMMAND: [Protocol; 2] = [Protocol::V5, Protocol::V4];

/// The sub-protocol of port-forward tunnelled in WebSocket.
pub const TUNNELED_PORT_FORWARD: &str = "SPDY/3.1+portforward.k8s.io";

/// The v5 close signal's first byte.
const CLOSE_SIGNAL: u8 = 255;

/// How much one channel buffers between the socket and its user.
const CHANNEL_BUFFER: usize = 64 * 1024;

/// The upgraded WebSocket.
pub type Socket = WebSocketStream<TokioIo<Upgraded>>;

type Reply = Response<Full<Bytes>>;

/// Whether `req` asks for a WebSocket (`Upgrade: websocket`).
pub fn is_websocket(req: &Request<Incoming>) -> bool {
    req.headers()
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("websocket"))
}

/// Answers a WebSocket handshake choosing the first of `offered` (ours,
/// best first) that the client lists in `Sec-WebSocket-Protocol`: the 101
/// reply and the choice. Errors: the reply refusing it (400 for a bad
/// handshake, 403 when no protocol is shared).
pub fn accept(
    req: &Request<Incoming>,
    offered: &[&'static str],
) -> Result<(Reply, &'static str), Box<Reply>> {
    let refuse = |status, text: String| {
        let mut reply = Response::new(Full::new(Bytes::from(text)));
        *reply.status_mut() = status;
        Box::new(reply)
    };
    let headers = req.headers();
    let Some(key) = headers.get(header::SEC_WEBSOCKET_KEY) else {
        return Err(refuse(
            StatusCode::BAD_REQUEST,
            "missing Sec-WebSocket-Key".into(),
        ));
    };
    if headers
        .get(header::SEC_WEBSOCKET_VERSION)
        .map(HeaderValue::as_bytes)
        != Some(b"13")
    {
        return Err(refuse(
            StatusCode::BAD_REQUEST,
            "Sec-WebSocket-Version must be 13".into(),
        ));
    }
    let asked: Vec<&str> = headers
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .collect();
    let Some(chosen) = offered.iter().find(|ours| asked.contains(ours)) else {
        return Err(refuse(
            StatusCode::FORBIDDEN,
            format!("unable to negotiate a sub-protocol: client supports {asked:?}, server supports {offered:?}"),
        ));
    };
    let mut reply = Response::new(Full::new(Bytes::new()));
    *reply.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let out = reply.headers_mut();
    out.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    out.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    out.insert(
        header::SEC_WEBSOCKET_ACCEPT,
        HeaderValue::from_str(&derive_accept_key(key.as_bytes()))
            .expect("base64 is a header value"),
    );
    out.insert(
        header::SEC_WEBSOCKET_PROTOCOL,
        HeaderValue::from_static(chosen),
    );
    Ok((reply, chosen))
}

/// Wraps the upgraded connection as the server's side of a WebSocket.
pub async fn socket(upgraded: Upgraded) -> Socket {
    WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, None).await
}

/// The remote-command channels of one WebSocket, and what ends it.
pub struct Connection {
    /// Resolves once the client's side has ended (Close, error, EOF).
    gone: watch::Receiver<bool>,
    /// Sends the queued messages, then the Close; ends when every output
    /// channel has ended.
    writer: JoinHandle<()>,
    reader: JoinHandle<()>,
}

impl Connection {
    /// Resolves once the client has gone.
    pub fn gone(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let mut gone = self.gone.clone();
        async move {
            let _ = gone.wait_for(|gone| *gone).await;
        }
    }

    /// Waits until every output channel's data is sent and the Close with
    /// it, then stops reading.
    pub async fn finish(self) {
        let _ = self.writer.await;
        self.reader.abort();
    }
}

/// Splits `socket` into the channels `options` asks for (an error channel
/// always, resize with a terminal) under `protocol`, and tells the client
/// the connection is up with an empty message on the lowest output channel
/// (as kubelet's server does).
pub fn remote_command(
    socket: Socket,
    options: StreamOptions,
    protocol: Protocol,
) -> (Channels, Connection) {
    let (mut sink, mut stream) = socket.split();
    let (out_tx, mut out_rx) = mpsc::channel::<Message>(64);
    let output = |number: u8| {
        let (user, ours) = tokio::io::duplex(CHANNEL_BUFFER);
        tokio::spawn(send_channel(number, ours, out_tx.clone()));
        Box::pin(user) as super::remotecommand::Writer
    };
    let stdout = options.stdout.then(|| output(1));
    let stderr = (options.stderr && !options.tty).then(|| output(2));
    let error = output(3);
    let first = if options.stdout {
        1
    } else if options.stderr && !options.tty {
        2
    } else {
        3
    };
    let _ = out_tx.try_send(Message::Binary(Bytes::from(vec![first])));
    drop(out_tx);

    let mut inputs: [Option<DuplexStream>; 5] = Default::default();
    let mut input = |number: usize| {
        let (user, ours) = tokio::io::duplex(CHANNEL_BUFFER);
        inputs[number] = Some(ours);
        Box::pin(user) as super::remotecommand::Reader
    };
    let stdin = options.stdin.then(|| input(0));
    let resize = options.tty.then(|| input(4));

    let (gone_tx, gone) = watch::channel(false);
    let close_signal = protocol >= Protocol::V5;
    let reader = tokio::spawn(async move {
        while let Some(Ok(message)) = stream.next().await {
            let data = match message {
                Message::Binary(data) => data,
                Message::Close(_) => break,
                // Pings are answered by tungstenite; nothing else carries data.
                _ => continue,
            };
            match data.first().copied() {
                Some(CLOSE_SIGNAL) if close_signal => {
                    if let Some(&channel) = data.get(1) {
                        // Dropping the channel's writing end is its EOF.
                        inputs.get_mut(usize::from(channel)).map(Option::take);
                    }
                }
                Some(channel) => {
                    if let Some(Some(writer)) = inputs.get_mut(usize::from(channel)) {
                        if writer.write_all(&data[1..]).await.is_err() {
                            inputs[usize::from(channel)] = None;
                        }
                    }
                }
                None => {}
            }
        }
        drop(inputs);
        let _ = gone_tx.send(true);
    });
    let writer = tokio::spawn(async move {
        while let Some(message) = out_rx.recv().await {
            if sink.send(message).await.is_err() {
                return;
            }
        }
        let close = CloseFrame {
            code: CloseCode::Normal,
            reason: "".into(),
        };
        let _ = sink.send(Message::Close(Some(close))).await;
        let _ = sink.close().await;
    });
    let channels = Channels {
        stdin,
        stdout,
        stderr,
        resize,
        error,
    };
    (
        channels,
        Connection {
            gone,
            writer,
            reader,
        },
    )
}

/// Sends what is written to channel `number` as binary messages prefixed
/// with it, until its writer shuts down.
async fn send_channel(number: u8, mut from: DuplexStream, to: mpsc::Sender<Message>) {
    let mut buf = vec![0; CHANNEL_BUFFER];
    loop {
        match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                let mut frame = BytesMut::with_capacity(n + 1);
                frame.put_u8(number);
                frame.put_slice(&buf[..n]);
                if to.send(Message::Binary(frame.freeze())).await.is_err() {
                    return;
                }
            }
        }
    }
}

/// The byte stream a SPDY session runs on inside `socket`: each binary
/// message is a piece of it, each write one message. The socket closes
/// once the stream's user drops it.
pub fn tunnel(socket: Socket) -> impl AsyncRead + AsyncWrite + Send + Unpin + 'static {
    let (user, ours) = tokio::io::duplex(4 * CHANNEL_BUFFER);
    tokio::spawn(async move {
        let (mut sink, mut stream) = socket.split();
        let (mut from_user, mut to_user) = tokio::io::split(ours);
        let mut buf = vec![0; CHANNEL_BUFFER];
        loop {
            tokio::select! {
                read = from_user.read(&mut buf) => match read {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        if sink.send(Message::Binary(Bytes::copy_from_slice(&buf[..n]))).await.is_err() {
                            return;
                        }
                    }
                },
                message = stream.next() => match message {
                    Some(Ok(Message::Binary(data))) => {
                        if to_user.write_all(&data).await.is_err() {
                            break;
                        }
                    }
                    Some(Ok(Message::Close(_))) | Some(Err(_)) | None => break,
                    Some(Ok(_)) => {}
                },
            }
        }
        let close = CloseFrame {
            code: CloseCode::Normal,
            reason: "".into(),
        };
        let _ = sink.send(Message::Close(Some(close))).await;
        let _ = sink.close().await;
    });
    user
}

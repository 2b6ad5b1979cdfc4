//! A minimal SPDY/3.1 client for the streaming measurements: the HTTP/1.1
//! upgrade client-go's SPDY round tripper makes, then streams opened as
//! client-go's `remotecommand` and `portforward` open them, one at a time,
//! each waiting for its SYN_REPLY (`httpstream/spdy`'s `CreateStream`).
//! Frames and header blocks go through crius' own codec
//! (`crius::streaming::spdy::{frame, headers}`); against containerd
//! (kubelet's streaming library on spdystream) the same client runs, so
//! both runtimes are measured through identical client work.
//!
//! One owner, no tasks and no locks: the measurement drives the connection,
//! and [`Connection::run_until`] reads frames into per-stream state until
//! what it waits for has happened. Flow control is spdystream's: no send
//! window is honoured and WINDOW_UPDATE is ignored (the servers do the
//! same), so neither side stalls.

use anyhow::{bail, ensure, Context};
use bytes::{Buf, BytesMut};
use crius::streaming::spdy::frame::{self, Frame, FLAG_FIN};
use crius::streaming::spdy::headers::{HeaderCompressor, HeaderDecompressor};
use http::{HeaderMap, HeaderName, HeaderValue};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

/// The `Upgrade` token of a SPDY/3.1 connection.
const UPGRADE: &str = "SPDY/3.1";
/// The header naming the sub-protocol (client-go's
/// `httpstream.HeaderProtocolVersion`).
const PROTOCOL_HEADER: &str = "X-Stream-Protocol-Version";
/// Socket reads go into a buffer with at least this much room: large reads
/// keep the client from being the bottleneck of a bulk transfer.
const READ_CHUNK: usize = 1 << 20;
/// The server's answer to the upgrade must fit in this many bytes.
const MAX_RESPONSE_HEAD: usize = 16 * 1024;
/// Bytes of each stream's data kept (the rest is only counted): enough for
/// a v4 status or an HTTP response head.
pub const KEPT_BYTES: usize = 64 * 1024;

/// How a stream ended for this side: no more data will come on it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StreamEnd {
    /// FLAG_FIN on a DATA, SYN_REPLY or HEADERS frame.
    Fin,
    /// RST_STREAM with this status (kubelet's server resets every stream
    /// when it closes the connection).
    Reset(u32),
    /// The server's GOAWAY named a last good stream below this one.
    GoneAway,
    /// The connection closed.
    ConnectionClosed,
}

/// What arrived on one stream this side opened.
#[derive(Debug)]
pub struct StreamState {
    pub id: u32,
    /// The server answered the SYN_STREAM.
    pub replied: bool,
    pub end: Option<StreamEnd>,
    /// Data bytes received.
    pub received: u64,
    /// The first [`KEPT_BYTES`] of them.
    pub kept: Vec<u8>,
}

/// A SPDY/3.1 client session over an upgraded connection.
pub struct Connection<T> {
    io: T,
    read_buf: BytesMut,
    write_buf: BytesMut,
    compressor: HeaderCompressor,
    decompressor: HeaderDecompressor,
    /// Client stream IDs are odd and increasing (SPDY/3 section 2.3.2).
    next_stream_id: u32,
    streams: Vec<StreamState>,
    closed: bool,
}

/// Opens a SPDY/3.1 connection to a streaming URL as the Exec, Attach and
/// PortForward RPCs return it (`http://HOST:PORT/PATH`; TLS is not
/// spoken), asking for `protocol` as the one `X-Stream-Protocol-Version`.
pub async fn dial(url: &str, protocol: &str) -> anyhow::Result<Connection<TcpStream>> {
    let (authority, path) = split_url(url)?;
    let tcp = TcpStream::connect(authority)
        .await
        .with_context(|| format!("connecting to {url}"))?;
    tcp.set_nodelay(true)?;
    Connection::upgrade(tcp, authority, path, protocol)
        .await
        .with_context(|| format!("upgrading {url} to {UPGRADE} ({protocol})"))
}

/// `http://HOST:PORT/PATH` as (`HOST:PORT`, `/PATH`).
fn split_url(url: &str) -> anyhow::Result<(&str, &str)> {
    let Some(rest) = url.strip_prefix("http://") else {
        bail!("streaming URL {url:?} is not http://HOST:PORT/PATH");
    };
    let slash = rest.find('/').unwrap_or(rest.len());
    let (authority, path) = rest.split_at(slash);
    ensure!(!authority.is_empty(), "streaming URL {url:?} has no host");
    Ok((authority, if path.is_empty() { "/" } else { path }))
}

/// Checks the server's answer to the upgrade request in `buf`: Ok(None)
/// while its head is incomplete, the head's length once it is a 101 to
/// SPDY/3.1 choosing `protocol`. Any other answer is an error quoting its
/// status line and what arrived of its body.
fn parse_upgrade_response(buf: &[u8], protocol: &str) -> anyhow::Result<Option<usize>> {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut response = httparse::Response::new(&mut headers);
    let head_len = match response
        .parse(buf)
        .context("parsing the upgrade response")?
    {
        httparse::Status::Partial => return Ok(None),
        httparse::Status::Complete(len) => len,
    };
    let code = response.code.unwrap_or_default();
    if code != 101 {
        let body = String::from_utf8_lossy(&buf[head_len..]);
        bail!(
            "upgrade refused: {code} {}: {}",
            response.reason.unwrap_or_default(),
            body.trim()
        );
    }
    let header = |name: &str| {
        response
            .headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .map(|h| String::from_utf8_lossy(h.value).trim().to_string())
    };
    let upgrade = header("Upgrade").unwrap_or_default();
    ensure!(
        upgrade.eq_ignore_ascii_case(UPGRADE),
        "101 with Upgrade {upgrade:?}, want {UPGRADE}"
    );
    let chosen = header(PROTOCOL_HEADER).unwrap_or_default();
    ensure!(
        chosen == protocol,
        "101 with {PROTOCOL_HEADER} {chosen:?}, want {protocol:?}"
    );
    Ok(Some(head_len))
}

impl<T: AsyncRead + AsyncWrite + Unpin> Connection<T> {
    /// Sends the upgrade request (`POST PATH`, `Connection: Upgrade`,
    /// `Upgrade: SPDY/3.1`, `protocol`) on `io` and reads the 101; the
    /// session starts with whatever followed the answer's head.
    pub async fn upgrade(
        mut io: T,
        authority: &str,
        path: &str,
        protocol: &str,
    ) -> anyhow::Result<Self> {
        let request = format!(
            "POST {path} HTTP/1.1\r\nHost: {authority}\r\nConnection: Upgrade\r\n\
             Upgrade: {UPGRADE}\r\n{PROTOCOL_HEADER}: {protocol}\r\nContent-Length: 0\r\n\r\n"
        );
        io.write_all(request.as_bytes()).await?;
        let mut buf = BytesMut::with_capacity(READ_CHUNK);
        loop {
            if let Some(head_len) = parse_upgrade_response(&buf, protocol)? {
                buf.advance(head_len);
                return Ok(Self::new(io, buf));
            }
            ensure!(
                buf.len() <= MAX_RESPONSE_HEAD,
                "the upgrade response's head passes {MAX_RESPONSE_HEAD} bytes"
            );
            ensure!(
                io.read_buf(&mut buf).await? > 0,
                "the server closed the connection before answering"
            );
        }
    }

    /// A session over `io`, already upgraded; `read` holds bytes of it read
    /// before.
    pub fn new(io: T, read: BytesMut) -> Self {
        Connection {
            io,
            read_buf: read,
            write_buf: BytesMut::with_capacity(4096),
            compressor: HeaderCompressor::default(),
            decompressor: HeaderDecompressor::default(),
            next_stream_id: 1,
            streams: Vec::new(),
            closed: false,
        }
    }

    /// Opens a stream with `headers` (lower-case names, e.g. `streamtype`)
    /// and waits for its SYN_REPLY. Returns its ID. Errors: the server
    /// ended the stream or the connection instead of answering.
    pub async fn open_stream(&mut self, headers: &[(&'static str, &str)]) -> anyhow::Result<u32> {
        let stream_id = self.next_stream_id;
        self.next_stream_id += 2;
        let mut map = HeaderMap::with_capacity(headers.len());
        for (name, value) in headers {
            map.insert(HeaderName::from_static(name), HeaderValue::from_str(value)?);
        }
        let header_block = self.compressor.compress(&map);
        frame::encode(
            &Frame::SynStream {
                stream_id,
                associated_stream_id: 0,
                priority: 0,
                slot: 0,
                flags: 0,
                header_block,
            },
            &mut self.write_buf,
        );
        self.flush().await?;
        self.streams.push(StreamState {
            id: stream_id,
            replied: false,
            end: None,
            received: 0,
            kept: Vec::new(),
        });
        self.run_until(|c| {
            let s = c.stream(stream_id);
            s.replied || s.end.is_some()
        })
        .await?;
        let stream = self.stream(stream_id);
        ensure!(
            stream.replied,
            "stream {headers:?} ended ({:?}) without a SYN_REPLY",
            stream.end
        );
        Ok(stream_id)
    }

    /// Sends `data` on stream `stream_id`, with FLAG_FIN when `fin` (the
    /// last frame this side sends on it).
    pub async fn send(&mut self, stream_id: u32, data: &[u8], fin: bool) -> anyhow::Result<()> {
        let flags = if fin { FLAG_FIN } else { 0 };
        frame::encode_data_header(&mut self.write_buf, stream_id, flags, data.len());
        self.write_buf.extend_from_slice(data);
        self.flush().await
    }

    /// A stream this side opened. Panics on an ID [`Connection::open_stream`]
    /// did not return.
    pub fn stream(&self, stream_id: u32) -> &StreamState {
        self.streams
            .iter()
            .find(|s| s.id == stream_id)
            .expect("a stream this connection opened")
    }

    /// Reads and handles frames until `done` holds (checked before each
    /// read and after each frame). Errors: the connection closed first, or
    /// reading, writing or a frame failed.
    pub async fn run_until(&mut self, done: impl Fn(&Self) -> bool) -> anyhow::Result<()> {
        loop {
            if done(self) {
                return Ok(());
            }
            match frame::decode(&mut self.read_buf).context("a malformed SPDY frame")? {
                Some(frame) => self.handle(frame)?,
                None => {
                    ensure!(
                        !self.closed,
                        "the connection closed before the streams ended as expected"
                    );
                    if !self.write_buf.is_empty() {
                        self.flush().await?;
                    }
                    if self.read_buf.capacity() - self.read_buf.len() < READ_CHUNK / 4 {
                        self.read_buf.reserve(READ_CHUNK);
                    }
                    if self.io.read_buf(&mut self.read_buf).await? == 0 {
                        self.closed = true;
                        self.end_streams(|_| true, StreamEnd::ConnectionClosed);
                    }
                }
            }
        }
    }

    async fn flush(&mut self) -> anyhow::Result<()> {
        self.io.write_all(&self.write_buf).await?;
        self.write_buf.clear();
        Ok(())
    }

    fn stream_mut(&mut self, stream_id: u32) -> Option<&mut StreamState> {
        self.streams.iter_mut().find(|s| s.id == stream_id)
    }

    fn end_stream(&mut self, stream_id: u32, end: StreamEnd) {
        if let Some(stream) = self.stream_mut(stream_id) {
            stream.end.get_or_insert(end);
        }
    }

    fn end_streams(&mut self, which: impl Fn(u32) -> bool, end: StreamEnd) {
        for stream in self.streams.iter_mut().filter(|s| which(s.id)) {
            stream.end.get_or_insert(end);
        }
    }

    fn handle(&mut self, frame: Frame) -> anyhow::Result<()> {
        match frame {
            Frame::Data {
                stream_id,
                flags,
                data,
            } => {
                if let Some(stream) = self.stream_mut(stream_id) {
                    stream.received += data.len() as u64;
                    let room = KEPT_BYTES.saturating_sub(stream.kept.len());
                    stream.kept.extend_from_slice(&data[..room.min(data.len())]);
                    if flags & FLAG_FIN != 0 {
                        stream.end.get_or_insert(StreamEnd::Fin);
                    }
                }
            }
            // Every header block goes through the decompressor, in wire
            // order: the zlib context spans the connection.
            Frame::SynReply {
                stream_id,
                flags,
                header_block,
            } => {
                self.decompressor.decompress(&header_block)?;
                if let Some(stream) = self.stream_mut(stream_id) {
                    stream.replied = true;
                }
                if flags & FLAG_FIN != 0 {
                    self.end_stream(stream_id, StreamEnd::Fin);
                }
            }
            Frame::Headers {
                stream_id,
                flags,
                header_block,
            } => {
                self.decompressor.decompress(&header_block)?;
                if flags & FLAG_FIN != 0 {
                    self.end_stream(stream_id, StreamEnd::Fin);
                }
            }
            Frame::SynStream {
                stream_id,
                header_block,
                ..
            } => {
                // Neither protocol has the server open streams: refuse.
                self.decompressor.decompress(&header_block)?;
                frame::encode(
                    &Frame::RstStream {
                        stream_id,
                        status: frame::rst::REFUSED_STREAM,
                    },
                    &mut self.write_buf,
                );
            }
            Frame::RstStream { stream_id, status } => {
                self.end_stream(stream_id, StreamEnd::Reset(status))
            }
            Frame::Ping { id } => {
                // Even IDs are the server's pings; odd ones would answer
                // ours, and this side sends none (SPDY/3 section 2.6.5).
                if id & 1 == 0 {
                    frame::encode(&Frame::Ping { id }, &mut self.write_buf);
                }
            }
            Frame::GoAway {
                last_good_stream_id,
                ..
            } => {
                // Streams up to the last good one may still finish; the
                // server closes the connection after them.
                self.end_streams(|id| id > last_good_stream_id, StreamEnd::GoneAway);
            }
            Frame::Settings { .. } | Frame::WindowUpdate { .. } | Frame::Unknown { .. } => {}
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{duplex, AsyncReadExt, AsyncWriteExt};

    const V4: &str = "v4.channel.k8s.io";

    #[test]
    fn urls_split_into_authority_and_path() {
        assert_eq!(
            split_url("http://127.0.0.1:4321/exec/tok").unwrap(),
            ("127.0.0.1:4321", "/exec/tok")
        );
        assert_eq!(split_url("http://[::1]:80").unwrap(), ("[::1]:80", "/"));
        assert!(split_url("https://127.0.0.1:1/exec/x").is_err());
        assert!(split_url("http:///exec/x").is_err());
    }

    #[test]
    fn a_101_to_spdy_with_our_protocol_is_accepted() {
        let head = "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\n\
                    Upgrade: spdy/3.1\r\nx-stream-protocol-version: v4.channel.k8s.io\r\n\r\n";
        let mut wire = head.as_bytes().to_vec();
        wire.extend_from_slice(b"\x80\x03");
        assert_eq!(parse_upgrade_response(&wire, V4).unwrap(), Some(head.len()));
        for cut in 0..head.len() {
            assert_eq!(
                parse_upgrade_response(&wire[..cut], V4).unwrap(),
                None,
                "cut at {cut}"
            );
        }
    }

    #[test]
    fn other_answers_are_errors_that_say_why() {
        let refused = b"HTTP/1.1 404 Not Found\r\nContent-Length: 33\r\n\r\n\
                        unknown or expired streaming token";
        let err = parse_upgrade_response(refused, V4).unwrap_err().to_string();
        assert!(
            err.contains("404 Not Found") && err.contains("unknown or expired"),
            "{err}"
        );
        let other_protocol = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: SPDY/3.1\r\n\
                               X-Stream-Protocol-Version: v3.channel.k8s.io\r\n\r\n";
        let err = parse_upgrade_response(other_protocol, V4)
            .unwrap_err()
            .to_string();
        assert!(err.contains("v3.channel.k8s.io"), "{err}");
        let websocket = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\
                          X-Stream-Protocol-Version: v4.channel.k8s.io\r\n\r\n";
        assert!(parse_upgrade_response(websocket, V4).is_err());
    }

    /// The request on the wire, and frames the server sent right behind its
    /// 101 reach the session.
    #[tokio::test]
    async fn upgrade_sends_the_request_and_keeps_what_follows_the_head() {
        let (client, mut server) = duplex(64 * 1024);
        let server = tokio::spawn(async move {
            let mut request = Vec::new();
            while !request.ends_with(b"\r\n\r\n") {
                let mut byte = [0];
                server.read_exact(&mut byte).await.unwrap();
                request.push(byte[0]);
            }
            let mut answer = BytesMut::from(
                &b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\n\
                   Upgrade: SPDY/3.1\r\nX-Stream-Protocol-Version: v4.channel.k8s.io\r\n\r\n"[..],
            );
            frame::encode(&Frame::Ping { id: 2 }, &mut answer);
            server.write_all(&answer).await.unwrap();
            let mut echo = [0; 12];
            server.read_exact(&mut echo).await.unwrap();
            (String::from_utf8(request).unwrap(), echo)
        });
        let mut conn = Connection::upgrade(client, "127.0.0.1:9", "/exec/tok", V4)
            .await
            .unwrap();
        // The PING is handled (and its echo queued) once the session runs.
        conn.run_until(|c| c.read_buf.is_empty()).await.unwrap();
        conn.flush().await.unwrap();
        let (request, echo) = server.await.unwrap();
        assert!(
            request.starts_with("POST /exec/tok HTTP/1.1\r\nHost: 127.0.0.1:9\r\n"),
            "{request}"
        );
        for header in [
            "Connection: Upgrade\r\n",
            "Upgrade: SPDY/3.1\r\n",
            "X-Stream-Protocol-Version: v4.channel.k8s.io\r\n",
        ] {
            assert!(request.contains(header), "{request} lacks {header}");
        }
        let mut want = BytesMut::new();
        frame::encode(&Frame::Ping { id: 2 }, &mut want);
        assert_eq!(&echo[..], &want[..]);
    }
}

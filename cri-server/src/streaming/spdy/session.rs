//! The connection: a reader task that owns the socket's read half and a
//! writer task that owns its write half, and the streams between them.

use std::collections::{HashMap, VecDeque};
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{ready, Context, Poll, Waker};
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use http::HeaderMap;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::sync::{mpsc, Notify};
use tokio::task::JoinHandle;
use tokio_util::sync::{CancellationToken, PollSender};

use super::frame::{self, goaway, rst, Frame, FLAG_FIN, FLAG_UNIDIRECTIONAL};
use super::headers::{HeaderCompressor, HeaderDecompressor};

/// The largest DATA payload this side sends; longer writes are split.
/// 32 KiB is what kubelet's own server sends (Go's `io.Copy` buffer, one
/// frame a write), and fewer frames mean less per-frame work in the
/// client (spdystream hands each frame to its reader through a channel).
pub const MAX_DATA_PAYLOAD: usize = 32 * 1024;
/// Frames queued for the writer task at most. A stream's write returns
/// once its frame is queued, so a slow socket slows every writer.
const QUEUE_FRAMES: usize = 64;
/// Unread bytes a stream buffers before the reader task stops reading the
/// socket until the application reads (see [`super`]).
pub const RECV_BUFFER_LIMIT: usize = 1 << 20;
/// The receive window every stream starts with (SPDY/3 section 2.6.8;
/// this side sends no SETTINGS, so the default).
const INITIAL_WINDOW: u32 = 64 * 1024;
/// A WINDOW_UPDATE goes out once this much has been read since the last.
const WINDOW_UPDATE_AT: u32 = INITIAL_WINDOW / 2;
/// The writer task gathers frames into one socket write up to this size.
const WRITE_BATCH: usize = 64 * 1024;
/// Room the reader task keeps free in its buffer before each socket read.
const READ_CHUNK: usize = 64 * 1024;
/// Streams opened but not yet taken by the application, at most.
const ACCEPT_QUEUE: usize = 16;
/// Once the session ends, how long the writer task may take to write what
/// is queued before it drops the connection (a peer that stopped reading
/// must not keep the tasks alive).
const CLOSE_FLUSH_TIMEOUT: Duration = Duration::from_secs(10);

/// A lock that survives a panicking holder (none of ours can panic).
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

fn broken_pipe(why: &'static str) -> io::Error {
    io::Error::new(io::ErrorKind::BrokenPipe, why)
}

/// Why the session ended (the first reason wins).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum End {
    /// [`Session::close`]: GOAWAY with OK.
    Closed,
    /// The peer broke the protocol: GOAWAY with PROTOCOL_ERROR.
    ProtocolError,
    /// The peer sent GOAWAY.
    PeerGoAway,
    /// The peer closed the connection.
    PeerClosed,
    /// Reading or writing the socket failed.
    Io,
}

/// What the reader task and the streams queue for the writer task.
/// Every frame of a stream takes this one queue, so a stream's SYN_REPLY,
/// DATA and FIN reach the wire in the order they were queued.
enum Out {
    Data {
        stream_id: u32,
        fin: bool,
        data: Bytes,
    },
    SynReply {
        stream_id: u32,
    },
    Rst {
        stream_id: u32,
        status: u32,
    },
    Ping {
        id: u32,
    },
}

/// The session's state shared by its tasks, the handle and the streams.
#[derive(Default)]
struct Conn {
    /// Streams the peer may still send on or this side may still write.
    streams: Mutex<HashMap<u32, Arc<StreamShared>>>,
    /// Cancelled when the session starts to end.
    ending: CancellationToken,
    /// Cancelled when both tasks have finished.
    ended: CancellationToken,
    end: Mutex<Option<End>>,
    /// The highest stream ID accepted, for GOAWAY.
    last_stream_id: AtomicU32,
    /// Streams with read data to acknowledge by WINDOW_UPDATE; each at
    /// most once (`StreamState::update_queued`), so the list is bounded.
    window_updates: Mutex<Vec<Arc<StreamShared>>>,
    window_notify: Notify,
}

impl Conn {
    fn end(&self, why: End) {
        lock(&self.end).get_or_insert(why);
        self.ending.cancel();
    }

    fn end_reason(&self) -> Option<End> {
        *lock(&self.end)
    }

    /// Drops the stream from the table once neither side sends on it.
    fn forget_if_closed(&self, stream: &StreamShared) {
        let closed = {
            let state = lock(&stream.state);
            state.recv_closed && state.send_closed
        };
        if closed {
            lock(&self.streams).remove(&stream.id);
        }
    }

    fn queue_window_update(&self, stream: Arc<StreamShared>) {
        lock(&self.window_updates).push(stream);
        self.window_notify.notify_one();
    }
}

struct StreamShared {
    id: u32,
    state: Mutex<StreamState>,
}

#[derive(Default)]
struct StreamState {
    /// Received, not yet read.
    chunks: VecDeque<Bytes>,
    buffered: usize,
    /// Nothing more arrives: the peer's FIN or RST_STREAM, our reset, or
    /// the session's end.
    recv_closed: bool,
    /// RST_STREAM either way: writes fail.
    reset: bool,
    /// Our FIN or RST_STREAM is queued (or the stream is unidirectional).
    send_closed: bool,
    reader_gone: bool,
    read_waker: Option<Waker>,
    /// The reader task, waiting for the application to read.
    space_waker: Option<Waker>,
    /// Bytes read since the last WINDOW_UPDATE.
    unacked: u32,
    update_queued: bool,
}

impl StreamState {
    fn wake_all(&mut self) {
        if let Some(waker) = self.read_waker.take() {
            waker.wake();
        }
        if let Some(waker) = self.space_waker.take() {
            waker.wake();
        }
    }

    /// Counts `n` bytes as read; true if the stream must now be queued
    /// for a WINDOW_UPDATE.
    fn consumed(&mut self, n: usize) -> bool {
        self.unacked = self.unacked.saturating_add(n as u32);
        let queue = self.unacked >= WINDOW_UPDATE_AT && !self.update_queued && !self.recv_closed;
        self.update_queued |= queue;
        queue
    }
}

impl StreamShared {
    /// Marks the stream reset; true if it was open before (so a reset
    /// from this side still has to tell the peer).
    fn reset(&self) -> bool {
        let mut state = lock(&self.state);
        let was_open = !(state.reset || state.recv_closed && state.send_closed);
        state.reset = true;
        state.recv_closed = true;
        state.send_closed = true;
        state.chunks.clear();
        state.buffered = 0;
        state.wake_all();
        was_open
    }

    fn close_recv(&self) {
        let mut state = lock(&self.state);
        state.recv_closed = true;
        state.wake_all();
    }
}

/// Runs a SPDY/3.1 server session over `io` (the upgraded connection).
/// Returns the session handle and the receiver of streams the client
/// opens. Spawns the session's two tasks (call it inside a tokio
/// runtime); they end with the connection. Take the streams as they come:
/// while 16 wait in the receiver, the session reads no further frames;
/// once the receiver is dropped, new streams are refused
/// (RST_STREAM with REFUSED_STREAM).
pub fn serve<T>(io: T) -> (Session, mpsc::Receiver<Stream>)
where
    T: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let (read_half, write_half) = tokio::io::split(io);
    let (out_tx, out_rx) = mpsc::channel(QUEUE_FRAMES);
    let (accept_tx, accept_rx) = mpsc::channel(ACCEPT_QUEUE);
    let conn = Arc::new(Conn::default());
    let reader = Reader {
        io: read_half,
        conn: conn.clone(),
        out: out_tx,
        accept: accept_tx,
        buf: BytesMut::with_capacity(READ_CHUNK),
        headers: HeaderDecompressor::default(),
        next_stream_id: 1,
    };
    let reader = tokio::spawn(reader.run());
    let writer = Writer {
        conn: conn.clone(),
        headers: HeaderCompressor::default(),
        buf: BytesMut::with_capacity(2 * WRITE_BATCH),
    };
    tokio::spawn(writer.run(write_half, out_rx, reader));
    (Session { conn }, accept_rx)
}

/// A handle to the session; cloning is cheap.
#[derive(Clone)]
pub struct Session {
    conn: Arc<Conn>,
}

impl Session {
    /// Sends GOAWAY and closes the connection once every queued frame is
    /// written; streams still open read EOF / fail to write. Idempotent;
    /// returns once the session has ended.
    pub async fn close(&self) {
        self.conn.end(End::Closed);
        self.closed().await;
    }

    /// Resolves once the connection has ended (peer closed, GOAWAY
    /// received, I/O error, malformed frame, or [`Session::close`]) and
    /// both of the session's tasks have finished.
    pub async fn closed(&self) {
        self.conn.ended.cancelled().await;
    }
}

struct Reader<R> {
    io: R,
    conn: Arc<Conn>,
    out: mpsc::Sender<Out>,
    accept: mpsc::Sender<Stream>,
    buf: BytesMut,
    headers: HeaderDecompressor,
    /// The lowest ID the peer may open next: odd and increasing
    /// (SPDY/3 section 2.3.2).
    next_stream_id: u32,
}

impl<R: AsyncRead + Unpin> Reader<R> {
    async fn run(mut self) {
        let conn = self.conn.clone();
        tokio::select! {
            biased;
            _ = conn.ending.cancelled() => {}
            why = self.read_frames() => conn.end(why),
        }
        // Every stream's reader reads what it has buffered, then EOF.
        let streams: Vec<_> = lock(&conn.streams).drain().map(|(_, s)| s).collect();
        for stream in streams {
            stream.close_recv();
        }
    }

    async fn read_frames(&mut self) -> End {
        loop {
            loop {
                match frame::decode(&mut self.buf) {
                    Ok(Some(frame)) => {
                        if let Some(end) = self.handle(frame).await {
                            return end;
                        }
                    }
                    Ok(None) => break,
                    Err(e) => {
                        tracing::warn!(error = %e, "SPDY: malformed frame, ending the session");
                        return End::ProtocolError;
                    }
                }
            }
            if self.buf.capacity() - self.buf.len() < READ_CHUNK / 4 {
                self.buf.reserve(READ_CHUNK);
            }
            match self.io.read_buf(&mut self.buf).await {
                Ok(0) => return End::PeerClosed,
                Ok(_) => {}
                Err(e) => {
                    tracing::debug!(error = %e, "SPDY: reading the connection");
                    return End::Io;
                }
            }
        }
    }

    /// Queues a frame; false once the writer is gone (the session ends).
    async fn send(&mut self, out: Out) -> bool {
        self.out.send(out).await.is_ok()
    }

    fn decompress(&mut self, block: &[u8]) -> Result<HeaderMap, End> {
        self.headers.decompress(block).map_err(|e| {
            tracing::warn!(error = %e, "SPDY: bad header block, ending the session");
            End::ProtocolError
        })
    }

    async fn handle(&mut self, frame: Frame) -> Option<End> {
        match frame {
            Frame::Data {
                stream_id,
                flags,
                data,
            } => self.on_data(stream_id, flags & FLAG_FIN != 0, data).await,
            Frame::SynStream {
                stream_id,
                flags,
                header_block,
                ..
            } => {
                // Decompressed even for a stream refused below: the zlib
                // context spans every block.
                let headers = match self.decompress(&header_block) {
                    Ok(headers) => headers,
                    Err(end) => return Some(end),
                };
                self.on_syn_stream(stream_id, flags, headers).await;
            }
            Frame::SynReply {
                stream_id,
                header_block,
                ..
            } => {
                if let Err(end) = self.decompress(&header_block) {
                    return Some(end);
                }
                tracing::debug!(
                    stream_id,
                    "SPDY: ignoring SYN_REPLY (this side opens no streams)"
                );
            }
            Frame::Headers {
                stream_id,
                flags,
                header_block,
            } => {
                // Extra headers after SYN_STREAM: nothing in kubelet's
                // protocols sends them, so they are dropped; a FIN counts.
                if let Err(end) = self.decompress(&header_block) {
                    return Some(end);
                }
                if flags & FLAG_FIN != 0 {
                    self.on_fin(stream_id);
                }
            }
            Frame::RstStream { stream_id, status } => {
                tracing::debug!(stream_id, status, "SPDY: stream reset by the peer");
                let stream = lock(&self.conn.streams).remove(&stream_id);
                if let Some(stream) = stream {
                    stream.reset();
                }
            }
            Frame::Settings { entries, .. } => {
                // The send window is not enforced (see the module doc),
                // so the peer's INITIAL_WINDOW_SIZE changes nothing here.
                for setting in entries {
                    tracing::debug!(id = setting.id, value = setting.value, "SPDY: SETTINGS");
                }
            }
            Frame::Ping { id } => {
                // Odd IDs are the client's; even ones would answer pings
                // of this side, which sends none (SPDY/3 section 2.6.5).
                if id & 1 == 1 && !self.send(Out::Ping { id }).await {
                    return Some(End::Io);
                }
            }
            Frame::GoAway { .. } => return Some(End::PeerGoAway),
            Frame::WindowUpdate { .. } => {}
            Frame::Unknown { frame_type } => {
                tracing::debug!(frame_type, "SPDY: skipping a control frame of unknown type");
            }
        }
        None
    }

    async fn on_syn_stream(&mut self, stream_id: u32, flags: u8, headers: HeaderMap) {
        if stream_id & 1 == 0 || stream_id < self.next_stream_id {
            tracing::debug!(stream_id, "SPDY: refusing a stream ID out of order");
            self.send(Out::Rst {
                stream_id,
                status: rst::PROTOCOL_ERROR,
            })
            .await;
            return;
        }
        self.next_stream_id = stream_id.saturating_add(2);
        self.conn.last_stream_id.store(stream_id, Ordering::Relaxed);
        if self.accept.is_closed() {
            self.send(Out::Rst {
                stream_id,
                status: rst::REFUSED_STREAM,
            })
            .await;
            return;
        }
        let unidirectional = flags & FLAG_UNIDIRECTIONAL != 0;
        let shared = Arc::new(StreamShared {
            id: stream_id,
            state: Mutex::new(StreamState {
                recv_closed: flags & FLAG_FIN != 0,
                send_closed: unidirectional,
                ..StreamState::default()
            }),
        });
        lock(&self.conn.streams).insert(stream_id, shared.clone());
        self.conn.forget_if_closed(&shared);
        // A unidirectional stream gets no reply: this side never sends on it.
        if !unidirectional && !self.send(Out::SynReply { stream_id }).await {
            return;
        }
        let stream = Stream {
            headers,
            reader: StreamReader {
                shared: shared.clone(),
                conn: self.conn.clone(),
            },
            writer: StreamWriter {
                shared,
                conn: self.conn.clone(),
                sender: self.out.clone(),
                queue: PollSender::new(self.out.clone()),
                closed: unidirectional,
            },
        };
        // If the application stopped taking streams, the stream drops
        // here, which ends it with a FIN.
        let _ = self.accept.send(stream).await;
    }

    async fn on_data(&mut self, stream_id: u32, fin: bool, data: Bytes) {
        // Data for a stream that is gone (reset or finished) is dropped,
        // as spdystream does.
        let Some(stream) = lock(&self.conn.streams).get(&stream_id).cloned() else {
            return;
        };
        let (full, update) = {
            let mut state = lock(&stream.state);
            let mut update = false;
            if state.recv_closed {
                // Data after FIN: dropped.
            } else if state.reader_gone {
                update = state.consumed(data.len());
            } else if !data.is_empty() {
                state.buffered += data.len();
                state.chunks.push_back(data);
                if let Some(waker) = state.read_waker.take() {
                    waker.wake();
                }
            }
            (state.buffered > RECV_BUFFER_LIMIT, update)
        };
        if update {
            self.conn.queue_window_update(stream.clone());
        }
        if fin {
            self.on_fin(stream_id);
        }
        if full {
            // Backpressure: no more frames from the socket until the
            // application has read this stream down to the limit.
            std::future::poll_fn(|cx| {
                let mut state = lock(&stream.state);
                if state.buffered <= RECV_BUFFER_LIMIT {
                    return Poll::Ready(());
                }
                state.space_waker = Some(cx.waker().clone());
                Poll::Pending
            })
            .await;
        }
    }

    fn on_fin(&mut self, stream_id: u32) {
        let stream = lock(&self.conn.streams).get(&stream_id).cloned();
        if let Some(stream) = stream {
            stream.close_recv();
            self.conn.forget_if_closed(&stream);
        }
    }
}

struct Writer {
    conn: Arc<Conn>,
    headers: HeaderCompressor,
    buf: BytesMut,
}

impl Writer {
    async fn run<W: AsyncWrite + Unpin>(
        mut self,
        mut io: W,
        mut queue: mpsc::Receiver<Out>,
        reader: JoinHandle<()>,
    ) {
        let conn = self.conn.clone();
        let deadline = async {
            conn.ending.cancelled().await;
            tokio::time::sleep(CLOSE_FLUSH_TIMEOUT).await;
        };
        tokio::select! {
            _ = self.write_frames(&mut io, &mut queue) => {}
            _ = deadline => tracing::debug!("SPDY: the peer took no more frames, dropping the connection"),
        }
        queue.close();
        drop(io);
        let _ = reader.await;
        // Break the cycle stream → session → stream table; a reader task
        // that ended on its own has already drained it.
        lock(&conn.streams).clear();
        lock(&conn.window_updates).clear();
        conn.ended.cancel();
    }

    async fn write_frames<W: AsyncWrite + Unpin>(
        &mut self,
        io: &mut W,
        queue: &mut mpsc::Receiver<Out>,
    ) {
        let conn = self.conn.clone();
        loop {
            tokio::select! {
                biased;
                _ = conn.ending.cancelled() => break,
                _ = conn.window_notify.notified() => self.window_updates(),
                out = queue.recv() => match out {
                    Some(out) => self.encode(out),
                    None => break,
                },
            }
            while self.buf.len() < WRITE_BATCH {
                match queue.try_recv() {
                    Ok(out) => self.encode(out),
                    Err(_) => break,
                }
            }
            if let Err(e) = io.write_all(&self.buf).await {
                tracing::debug!(error = %e, "SPDY: writing the connection");
                conn.end(End::Io);
                return;
            }
            self.buf.clear();
        }

        // The session ends: no new frames; what is queued goes out first.
        let why = conn.end_reason();
        if why == Some(End::Io) {
            return;
        }
        queue.close();
        while let Some(out) = queue.recv().await {
            self.encode(out);
            if self.buf.len() >= WRITE_BATCH {
                if io.write_all(&self.buf).await.is_err() {
                    return;
                }
                self.buf.clear();
            }
        }
        let status = match why {
            Some(End::Closed) => Some(goaway::OK),
            Some(End::ProtocolError) => Some(goaway::PROTOCOL_ERROR),
            _ => None,
        };
        if let Some(status) = status {
            let last_good_stream_id = conn.last_stream_id.load(Ordering::Relaxed);
            frame::encode(
                &Frame::GoAway {
                    last_good_stream_id,
                    status,
                },
                &mut self.buf,
            );
        }
        let _ = io.write_all(&self.buf).await;
        let _ = io.shutdown().await;
    }

    fn encode(&mut self, out: Out) {
        match out {
            Out::Data {
                stream_id,
                fin,
                data,
            } => {
                let flags = if fin { FLAG_FIN } else { 0 };
                frame::encode_data_header(&mut self.buf, stream_id, flags, data.len());
                self.buf.extend_from_slice(&data);
            }
            Out::SynReply { stream_id } => {
                // Compressed here, in wire order: one zlib context for
                // every block this side sends.
                let header_block = self.headers.compress(&HeaderMap::new());
                frame::encode(
                    &Frame::SynReply {
                        stream_id,
                        flags: 0,
                        header_block,
                    },
                    &mut self.buf,
                );
            }
            Out::Rst { stream_id, status } => {
                frame::encode(&Frame::RstStream { stream_id, status }, &mut self.buf)
            }
            Out::Ping { id } => frame::encode(&Frame::Ping { id }, &mut self.buf),
        }
    }

    fn window_updates(&mut self) {
        let streams = std::mem::take(&mut *lock(&self.conn.window_updates));
        for stream in streams {
            let delta = {
                let mut state = lock(&stream.state);
                state.update_queued = false;
                if state.recv_closed {
                    0
                } else {
                    let delta = state.unacked.min(0x7fff_ffff);
                    state.unacked -= delta;
                    delta
                }
            };
            if delta > 0 {
                frame::encode(
                    &Frame::WindowUpdate {
                        stream_id: stream.id,
                        delta_window_size: delta,
                    },
                    &mut self.buf,
                );
            }
        }
    }
}

/// A stream the client opened (SYN_STREAM). The session has already
/// queued its SYN_REPLY (empty headers), as kubelet's server answers,
/// before handing it out. Dropping it ends the writing side with FIN.
pub struct Stream {
    headers: HeaderMap,
    reader: StreamReader,
    writer: StreamWriter,
}

impl Stream {
    pub fn id(&self) -> u32 {
        self.reader.shared.id
    }

    /// The SYN_STREAM's headers (names lower-case as on the wire, e.g.
    /// "streamtype", "port", "requestid").
    pub fn headers(&self) -> &HeaderMap {
        &self.headers
    }

    /// Splits into the read half (data the client sends; EOF at the
    /// client's FIN, RST_STREAM or the session's end) and the write half.
    pub fn split(self) -> (StreamReader, StreamWriter) {
        (self.reader, self.writer)
    }

    /// Resets the stream: see [`StreamWriter::reset`].
    pub async fn reset(self) {
        self.writer.reset().await;
    }
}

/// The read half of a [`Stream`]: the DATA the client sends, EOF at its
/// FIN, its RST_STREAM, this side's reset or the session's end. Dropping
/// it discards what arrives later (the stream stays open for writing).
pub struct StreamReader {
    shared: Arc<StreamShared>,
    conn: Arc<Conn>,
}

impl StreamReader {
    pub fn id(&self) -> u32 {
        self.shared.id
    }
}

impl AsyncRead for StreamReader {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let mut state = lock(&self.shared.state);
        let mut n = 0;
        while buf.remaining() > 0 {
            let Some(chunk) = state.chunks.front_mut() else {
                break;
            };
            let take = chunk.len().min(buf.remaining());
            buf.put_slice(&chunk[..take]);
            chunk.advance(take);
            if chunk.is_empty() {
                state.chunks.pop_front();
            }
            n += take;
        }
        if n == 0 {
            if state.recv_closed || buf.remaining() == 0 {
                return Poll::Ready(Ok(()));
            }
            if !matches!(&state.read_waker, Some(w) if w.will_wake(cx.waker())) {
                state.read_waker = Some(cx.waker().clone());
            }
            return Poll::Pending;
        }
        state.buffered -= n;
        let space = if state.buffered <= RECV_BUFFER_LIMIT {
            state.space_waker.take()
        } else {
            None
        };
        let update = state.consumed(n);
        drop(state);
        if let Some(waker) = space {
            waker.wake();
        }
        if update {
            self.conn.queue_window_update(self.shared.clone());
        }
        Poll::Ready(Ok(()))
    }
}

impl Drop for StreamReader {
    fn drop(&mut self) {
        let mut state = lock(&self.shared.state);
        state.reader_gone = true;
        let n = state.buffered;
        state.chunks.clear();
        state.buffered = 0;
        let update = state.consumed(n);
        if let Some(waker) = state.space_waker.take() {
            waker.wake();
        }
        drop(state);
        if update {
            self.conn.queue_window_update(self.shared.clone());
        }
    }
}

/// The write half of a [`Stream`]: each write queues DATA frames of at
/// most [`MAX_DATA_PAYLOAD`] bytes and completes once they are queued;
/// `shutdown()` queues an empty DATA frame with FLAG_FIN, and dropping
/// the writer without it does the same. Writes after the peer's
/// RST_STREAM, this side's reset or the session's end fail with
/// [`io::ErrorKind::BrokenPipe`].
pub struct StreamWriter {
    shared: Arc<StreamShared>,
    conn: Arc<Conn>,
    /// For the FIN of a dropped writer and for [`StreamWriter::reset`].
    sender: mpsc::Sender<Out>,
    queue: PollSender<Out>,
    /// FIN or RST_STREAM queued (or the stream is unidirectional).
    closed: bool,
}

impl StreamWriter {
    pub fn id(&self) -> u32 {
        self.shared.id
    }

    /// Resets the stream (RST_STREAM with CANCEL): both halves end (the
    /// reader reads EOF, discarding what it buffered).
    pub async fn reset(mut self) {
        self.closed = true;
        if self.shared.reset() {
            let _ = self
                .sender
                .send(Out::Rst {
                    stream_id: self.shared.id,
                    status: rst::CANCEL,
                })
                .await;
        }
        lock(&self.conn.streams).remove(&self.shared.id);
    }

    /// Marks the writing side closed after its FIN is queued.
    fn finish(&mut self) {
        self.closed = true;
        lock(&self.shared.state).send_closed = true;
        self.conn.forget_if_closed(&self.shared);
    }

    /// Waits for room in the session's queue; fails once the stream is
    /// reset or the session ended.
    fn poll_reserve(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if lock(&self.shared.state).reset {
            return Poll::Ready(Err(broken_pipe("SPDY stream reset")));
        }
        ready!(self.queue.poll_reserve(cx)).map_err(|_| broken_pipe("SPDY session ended"))?;
        Poll::Ready(Ok(()))
    }

    /// Queues a DATA frame into the room [`Self::poll_reserve`] made.
    fn send_reserved(&mut self, fin: bool, data: Bytes) -> io::Result<()> {
        let stream_id = self.shared.id;
        self.queue
            .send_item(Out::Data {
                stream_id,
                fin,
                data,
            })
            .map_err(|_| broken_pipe("SPDY session ended"))
    }
}

impl AsyncWrite for StreamWriter {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.closed {
            return Poll::Ready(Err(broken_pipe("SPDY stream closed for writing")));
        }
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        ready!(this.poll_reserve(cx))?;
        // Copied only once the frame has room in the queue.
        let n = buf.len().min(MAX_DATA_PAYLOAD);
        this.send_reserved(false, Bytes::copy_from_slice(&buf[..n]))?;
        Poll::Ready(Ok(n))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // Queued frames are the writer task's to write; nothing to wait for.
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.closed {
            return Poll::Ready(Ok(()));
        }
        ready!(this.poll_reserve(cx))?;
        this.send_reserved(true, Bytes::new())?;
        this.finish();
        Poll::Ready(Ok(()))
    }
}

impl Drop for StreamWriter {
    fn drop(&mut self) {
        if self.closed {
            return;
        }
        let reset = lock(&self.shared.state).reset;
        if !reset {
            let fin = Out::Data {
                stream_id: self.shared.id,
                fin: true,
                data: Bytes::new(),
            };
            if let Err(mpsc::error::TrySendError::Full(fin)) = self.sender.try_send(fin) {
                // The queue is full: a task waits for room (it ends when
                // the session does, whose end closes the queue).
                if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                    let sender = self.sender.clone();
                    runtime.spawn(async move { sender.send(fin).await });
                }
            }
        }
        self.finish();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::{HeaderName, HeaderValue};
    use tokio::io::DuplexStream;

    const WAIT: Duration = Duration::from_secs(10);

    async fn within<F: std::future::Future>(what: &str, fut: F) -> F::Output {
        tokio::time::timeout(WAIT, fut)
            .await
            .unwrap_or_else(|_| panic!("{what}: timed out"))
    }

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        pairs
            .iter()
            .map(|(name, value)| {
                (
                    HeaderName::from_bytes(name.as_bytes()).unwrap(),
                    HeaderValue::from_str(value).unwrap(),
                )
            })
            .collect()
    }

    fn pattern(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i % 251) as u8).collect()
    }

    fn reply(stream_id: u32) -> Frame {
        Frame::SynReply {
            stream_id,
            flags: 0,
            header_block: Bytes::new(),
        }
    }

    /// The client side, from this module's own frame and header code.
    struct Client {
        io: DuplexStream,
        buf: BytesMut,
        compressor: HeaderCompressor,
        decompressor: HeaderDecompressor,
    }

    impl Client {
        async fn send(&mut self, frame: Frame) {
            let mut wire = BytesMut::new();
            frame::encode(&frame, &mut wire);
            self.io.write_all(&wire).await.unwrap();
        }

        async fn open(&mut self, stream_id: u32, pairs: &[(&str, &str)], flags: u8) {
            let header_block = self.compressor.compress(&headers(pairs));
            self.send(Frame::SynStream {
                stream_id,
                associated_stream_id: 0,
                priority: 0,
                slot: 0,
                flags,
                header_block,
            })
            .await;
        }

        async fn data(&mut self, stream_id: u32, flags: u8, data: &[u8]) {
            self.send(Frame::Data {
                stream_id,
                flags,
                data: Bytes::copy_from_slice(data),
            })
            .await;
        }

        /// The next frame, `None` at EOF. A SYN_REPLY's header block is
        /// decompressed (it must hold no headers) and left out.
        async fn next(&mut self) -> Option<Frame> {
            loop {
                if let Some(frame) = frame::decode(&mut self.buf).unwrap() {
                    return Some(match frame {
                        Frame::SynReply {
                            stream_id,
                            flags,
                            header_block,
                        } => {
                            let got = self.decompressor.decompress(&header_block).unwrap();
                            assert!(got.is_empty(), "SYN_REPLY headers {got:?}");
                            Frame::SynReply {
                                stream_id,
                                flags,
                                header_block: Bytes::new(),
                            }
                        }
                        frame => frame,
                    });
                }
                let n = within("reading a frame", self.io.read_buf(&mut self.buf))
                    .await
                    .unwrap();
                if n == 0 {
                    assert!(self.buf.is_empty(), "a partial frame before EOF");
                    return None;
                }
            }
        }

        /// The next frame that is not a WINDOW_UPDATE.
        async fn next_skipping_updates(&mut self) -> Option<Frame> {
            loop {
                match self.next().await {
                    Some(Frame::WindowUpdate { .. }) => {}
                    other => return other,
                }
            }
        }

        /// Data of `stream_id` up to its FIN; every frame within the size cap.
        async fn read_to_fin(&mut self, stream_id: u32) -> Vec<u8> {
            let mut got = Vec::new();
            loop {
                match self.next_skipping_updates().await {
                    Some(Frame::Data {
                        stream_id: id,
                        flags,
                        data,
                    }) if id == stream_id => {
                        assert!(data.len() <= MAX_DATA_PAYLOAD, "{} bytes", data.len());
                        got.extend_from_slice(&data);
                        if flags & FLAG_FIN != 0 {
                            return got;
                        }
                    }
                    other => panic!("want data of stream {stream_id}, got {other:?}"),
                }
            }
        }
    }

    fn start(buffer: usize) -> (Session, mpsc::Receiver<Stream>, Client) {
        let (server, client) = tokio::io::duplex(buffer);
        let (session, streams) = serve(server);
        let client = Client {
            io: client,
            buf: BytesMut::new(),
            compressor: HeaderCompressor::default(),
            decompressor: HeaderDecompressor::default(),
        };
        (session, streams, client)
    }

    async fn accept(streams: &mut mpsc::Receiver<Stream>) -> Stream {
        within("accepting a stream", streams.recv())
            .await
            .expect("a stream")
    }

    fn is_broken_pipe<T: std::fmt::Debug>(result: io::Result<T>) -> bool {
        matches!(result, Err(e) if e.kind() == io::ErrorKind::BrokenPipe)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_stream_carries_data_both_ways_without_window_updates() {
        let (_session, mut streams, mut client) = start(16 * 1024);
        client
            .open(1, &[("streamtype", "stdout"), ("requestid", "0")], 0)
            .await;
        let stream = accept(&mut streams).await;
        assert_eq!(stream.id(), 1);
        assert_eq!(stream.headers()["streamtype"], "stdout");
        assert_eq!(stream.headers()["requestid"], "0");
        assert_eq!(client.next().await, Some(reply(1)));

        client.data(1, 0, b"hello ").await;
        client.data(1, FLAG_FIN, b"world").await;
        let (mut reader, mut writer) = stream.split();
        let mut got = String::new();
        within(
            "reading to the client's FIN",
            reader.read_to_string(&mut got),
        )
        .await
        .unwrap();
        assert_eq!(got, "hello world");

        // 100 KiB through a 16 KiB pipe, the client sending no
        // WINDOW_UPDATE (as spdystream): the writes must not stall.
        let payload = pattern(100 * 1024);
        let sent = payload.clone();
        let server = tokio::spawn(async move {
            writer.write_all(&sent).await.unwrap();
            writer.shutdown().await.unwrap();
        });
        assert_eq!(client.read_to_fin(1).await, payload);
        within("the server's writes", server).await.unwrap();
    }

    #[tokio::test]
    async fn client_pings_are_echoed() {
        let (_session, _streams, mut client) = start(4096);
        client.send(Frame::Ping { id: 1 }).await;
        assert_eq!(client.next().await, Some(Frame::Ping { id: 1 }));
        // An even ID would be this side's own ping: not answered.
        client.send(Frame::Ping { id: 2 }).await;
        client.send(Frame::Ping { id: 3 }).await;
        assert_eq!(client.next().await, Some(Frame::Ping { id: 3 }));
    }

    #[tokio::test]
    async fn rst_stream_ends_reads_and_fails_writes() {
        let (_session, mut streams, mut client) = start(64 * 1024);
        client.open(1, &[("streamtype", "stdin")], 0).await;
        let (mut reader, mut writer) = accept(&mut streams).await.split();
        assert_eq!(client.next().await, Some(reply(1)));
        client
            .send(Frame::RstStream {
                stream_id: 1,
                status: rst::CANCEL,
            })
            .await;
        let mut got = Vec::new();
        within("reading to the reset", reader.read_to_end(&mut got))
            .await
            .unwrap();
        assert!(got.is_empty());
        assert!(is_broken_pipe(writer.write_all(b"late").await));
        assert!(is_broken_pipe(writer.shutdown().await));
        drop(writer);
        // No FIN follows the peer's reset: the next frame is the ping's echo.
        client.send(Frame::Ping { id: 5 }).await;
        assert_eq!(client.next().await, Some(Frame::Ping { id: 5 }));
    }

    #[tokio::test]
    async fn goaway_from_the_client_ends_the_session_after_pending_reads() {
        let (session, mut streams, mut client) = start(64 * 1024);
        client.open(1, &[("streamtype", "stdin")], 0).await;
        client.data(1, 0, b"pending").await;
        client
            .send(Frame::GoAway {
                last_good_stream_id: 0,
                status: goaway::OK,
            })
            .await;
        within("the session's end", session.closed()).await;
        let (mut reader, mut writer) = accept(&mut streams).await.split();
        let mut got = String::new();
        reader.read_to_string(&mut got).await.unwrap();
        assert_eq!(got, "pending");
        assert!(is_broken_pipe(writer.write_all(b"late").await));
        assert_eq!(client.next().await, Some(reply(1)));
        assert_eq!(client.next().await, None);
    }

    #[tokio::test]
    async fn a_malformed_frame_ends_the_session_with_protocol_error() {
        let ping_of_five_bytes = &b"\x80\x03\x00\x06\x00\x00\x00\x05\x00\x00\x00\x01\x00"[..];
        let bad_header_block =
            &b"\x80\x03\x00\x01\x00\x00\x00\x0e\x00\x00\x00\x03\x00\x00\x00\x00\x00\x00garb"[..];
        for garbage in [ping_of_five_bytes, bad_header_block] {
            let (session, mut streams, mut client) = start(64 * 1024);
            client.open(1, &[("streamtype", "stdout")], 0).await;
            let (mut reader, _writer) = accept(&mut streams).await.split();
            client.io.write_all(garbage).await.unwrap();
            within("the session's end", session.closed()).await;
            assert_eq!(client.next().await, Some(reply(1)));
            assert_eq!(
                client.next().await,
                Some(Frame::GoAway {
                    last_good_stream_id: 1,
                    status: goaway::PROTOCOL_ERROR,
                })
            );
            assert_eq!(client.next().await, None);
            assert_eq!(reader.read(&mut [0; 8]).await.unwrap(), 0);
        }
    }

    #[tokio::test]
    async fn close_sends_goaway_after_the_queued_frames() {
        let (session, mut streams, mut client) = start(64 * 1024);
        client.open(1, &[("streamtype", "stdout")], 0).await;
        let (mut reader, mut writer) = accept(&mut streams).await.split();
        writer.write_all(b"bye").await.unwrap();
        within("close", session.close()).await;
        within("a second close", session.close()).await;
        assert_eq!(client.next().await, Some(reply(1)));
        assert_eq!(
            client.next().await,
            Some(Frame::Data {
                stream_id: 1,
                flags: 0,
                data: Bytes::from_static(b"bye"),
            })
        );
        assert_eq!(
            client.next().await,
            Some(Frame::GoAway {
                last_good_stream_id: 1,
                status: goaway::OK,
            })
        );
        assert_eq!(client.next().await, None);
        assert_eq!(reader.read(&mut [0; 8]).await.unwrap(), 0);
        assert!(is_broken_pipe(writer.write_all(b"late").await));
    }

    #[tokio::test]
    async fn stream_ids_must_be_odd_and_increasing() {
        let (_session, mut streams, mut client) = start(64 * 1024);
        let refused = |stream_id| {
            Some(Frame::RstStream {
                stream_id,
                status: rst::PROTOCOL_ERROR,
            })
        };
        client.open(2, &[("streamtype", "error")], 0).await;
        assert_eq!(client.next().await, refused(2));
        client.open(3, &[("streamtype", "error")], 0).await;
        assert_eq!(client.next().await, Some(reply(3)));
        client.open(1, &[("streamtype", "data")], 0).await;
        assert_eq!(client.next().await, refused(1));
        client.open(3, &[("streamtype", "data")], 0).await;
        assert_eq!(client.next().await, refused(3));
        // The refused streams' header blocks kept the zlib contexts in step.
        client
            .open(5, &[("streamtype", "data"), ("port", "80")], 0)
            .await;
        assert_eq!(client.next().await, Some(reply(5)));
        assert_eq!(accept(&mut streams).await.id(), 3);
        let five = accept(&mut streams).await;
        assert_eq!(five.id(), 5);
        assert_eq!(
            five.headers(),
            &headers(&[("streamtype", "data"), ("port", "80")])
        );
    }

    #[tokio::test]
    async fn read_data_is_acknowledged_and_the_clients_other_frames_are_accepted() {
        let (_session, mut streams, mut client) = start(256 * 1024);
        client
            .send(Frame::Settings {
                flags: 0,
                entries: vec![frame::Setting {
                    flags: 0,
                    id: frame::SETTINGS_INITIAL_WINDOW_SIZE,
                    value: 1 << 20,
                }],
            })
            .await;
        client.open(1, &[("streamtype", "data")], 0).await;
        client
            .send(Frame::WindowUpdate {
                stream_id: 1,
                delta_window_size: 1 << 20,
            })
            .await;
        let header_block = client.compressor.compress(&headers(&[("x-extra", "1")]));
        client
            .send(Frame::Headers {
                stream_id: 1,
                flags: 0,
                header_block,
            })
            .await;
        // CREDENTIAL, a type this side does not know: skipped.
        client
            .io
            .write_all(b"\x80\x03\x00\x0a\x00\x00\x00\x03abc")
            .await
            .unwrap();
        let payload = pattern(64 * 1024);
        client.data(1, 0, &payload[..MAX_DATA_PAYLOAD]).await;
        client.data(1, 0, &payload[MAX_DATA_PAYLOAD..]).await;

        let (mut reader, _writer) = accept(&mut streams).await.split();
        assert_eq!(client.next().await, Some(reply(1)));
        let mut got = vec![0; payload.len()];
        let (first, second) = got.split_at_mut(WINDOW_UPDATE_AT as usize);
        reader.read_exact(first).await.unwrap();
        let update = Some(Frame::WindowUpdate {
            stream_id: 1,
            delta_window_size: WINDOW_UPDATE_AT,
        });
        assert_eq!(client.next().await, update);
        reader.read_exact(second).await.unwrap();
        assert_eq!(client.next().await, update);
        assert_eq!(got, payload);

        // HEADERS with FIN ends the client's side.
        let header_block = client.compressor.compress(&HeaderMap::new());
        client
            .send(Frame::Headers {
                stream_id: 1,
                flags: FLAG_FIN,
                header_block,
            })
            .await;
        assert_eq!(within("EOF", reader.read(&mut [0; 8])).await.unwrap(), 0);
    }

    #[tokio::test]
    async fn the_connections_end_reaches_every_stream_and_nothing_stays_behind() {
        let (session, mut streams, mut client) = start(64 * 1024);
        client.open(1, &[("streamtype", "stdin")], 0).await;
        client.open(3, &[("streamtype", "stdout")], 0).await;
        let (mut one_reader, mut one_writer) = accept(&mut streams).await.split();
        let (mut three_reader, three_writer) = accept(&mut streams).await.split();
        assert_eq!(client.next().await, Some(reply(1)));
        assert_eq!(client.next().await, Some(reply(3)));
        // Dropping a writer ends its side with FIN.
        drop(three_writer);
        assert_eq!(
            client.next().await,
            Some(Frame::Data {
                stream_id: 3,
                flags: FLAG_FIN,
                data: Bytes::new(),
            })
        );

        drop(client);
        within("the session's end", session.closed()).await;
        assert_eq!(one_reader.read(&mut [0; 8]).await.unwrap(), 0);
        assert_eq!(three_reader.read(&mut [0; 8]).await.unwrap(), 0);
        assert!(is_broken_pipe(one_writer.write_all(b"late").await));

        // Both tasks are gone and no reference cycle keeps the session.
        let conn = Arc::downgrade(&session.conn);
        drop((session, streams, one_reader, one_writer, three_reader));
        assert!(conn.upgrade().is_none());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_unread_stream_stops_the_socket_at_its_limit() {
        let (_session, mut streams, mut client) = start(64 * 1024);
        client.open(1, &[("streamtype", "data")], 0).await;
        let (mut reader, _writer) = accept(&mut streams).await.split();
        assert_eq!(client.next().await, Some(reply(1)));
        let payload = pattern(4 << 20);
        let sent = payload.clone();
        let mut sender = tokio::spawn(async move {
            for chunk in sent.chunks(MAX_DATA_PAYLOAD) {
                client.data(1, 0, chunk).await;
            }
            client
        });
        // Nobody reads: the client's sends stall once the stream's
        // buffer is full and the pipe between them too.
        assert!(
            tokio::time::timeout(Duration::from_millis(300), &mut sender)
                .await
                .is_err(),
            "4 MiB went into a stream nobody reads"
        );
        let buffered = lock(&reader.shared.state).buffered;
        assert!(
            buffered <= RECV_BUFFER_LIMIT + MAX_DATA_PAYLOAD,
            "{buffered} bytes buffered"
        );
        let mut got = vec![0; payload.len()];
        within("reading it all", reader.read_exact(&mut got))
            .await
            .unwrap();
        assert!(got == payload, "data changed on the way");
        within("the client's sends", sender).await.unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn writes_wait_for_a_slow_socket() {
        let (_session, mut streams, mut client) = start(16 * 1024);
        client.open(1, &[("streamtype", "stdout")], 0).await;
        let (_reader, mut writer) = accept(&mut streams).await.split();
        let payload = pattern(16 << 20);
        let sent = payload.clone();
        let mut server = tokio::spawn(async move {
            writer.write_all(&sent).await.unwrap();
            writer.shutdown().await.unwrap();
        });
        // The client reads nothing yet: the bounded queue holds the
        // writer back instead of buffering 16 MiB.
        assert!(
            tokio::time::timeout(Duration::from_millis(300), &mut server)
                .await
                .is_err(),
            "16 MiB queued for a socket nobody reads"
        );
        assert_eq!(client.next().await, Some(reply(1)));
        let got = client.read_to_fin(1).await;
        assert!(got == payload, "data changed on the way");
        within("the server's writes", server).await.unwrap();
    }
}

//! A SPDY/3.1 server session, generic over the byte stream: what kubelet,
//! crictl and critest speak (client-go over github.com/moby/spdystream)
//! once the streaming server has upgraded an HTTP/1.1 request with
//! `Upgrade: SPDY/3.1`. The client opens the streams (exec/attach:
//! stdin, stdout, stderr, error, resize; port-forward: a data and an error
//! stream per request); [`serve`] answers each with SYN_REPLY and hands it
//! out as a [`Stream`]. No maintained Rust crate speaks SPDY.
//!
//! The protocol is the SPDY/3 draft
//! (<http://www.chromium.org/spdy/spdy-protocol/spdy-protocol-draft3>)
//! with SPDY/3.1's session-level flow control, which only matters to a
//! sender that honours windows:
//!
//! - [`frame`]: the frames' wire layout; [`headers`]: name/value header
//!   blocks and their zlib compression with the SPDY/3 dictionary (one
//!   zlib stream per direction per connection).
//! - Two tasks per session: the reader owns the socket's read half and
//!   routes frames to streams; the writer owns the write half and writes
//!   every frame, serialized from one bounded queue (SYN_REPLY, a
//!   stream's DATA and FIN keep their order). PING from the client is
//!   echoed; GOAWAY ends the session; RST_STREAM ends that stream (reads
//!   EOF, writes fail with BrokenPipe); HEADERS and SETTINGS are accepted;
//!   unknown control frames are skipped; a malformed frame or header
//!   block ends the session with GOAWAY(PROTOCOL_ERROR); a stream ID that
//!   is even or not above the last one gets RST_STREAM(PROTOCOL_ERROR).
//!
//! **Flow control.** spdystream, the only client that matters, never sends
//! WINDOW_UPDATE and ignores those it gets (its `connection.go` has no
//! case for them and writes DATA regardless of any window), and kubelet's
//! own server (spdystream too) writes without a window. So this session
//! never holds its writes for the peer's send window, or spdystream
//! clients would stall after 64 KiB; it writes as fast as the socket
//! takes. It accepts WINDOW_UPDATE from the peer and ignores it. As a
//! receiver it sends WINDOW_UPDATE for what the application has read, so
//! a client that does honour windows keeps flowing.
//!
//! **Backpressure.** A [`StreamWriter`]'s write completes once its frame
//! is in the writer's bounded queue, so a slow socket slows the writers.
//! A [`StreamReader`] buffers at most about [`RECV_BUFFER_LIMIT`] unread
//! bytes: past that, the reader task stops reading the socket until the
//! application reads, and TCP pushes back on the client (spdystream
//! cannot be asked to pause one stream: it ignores windows). This blocks
//! the connection's other streams meanwhile, as kubelet's spdystream
//! server does when its stream handler blocks on an unread stream.
//!
//! When the connection ends, however it ends, every stream's reader reads
//! EOF after what it buffered, writes fail, and both tasks exit.

pub mod frame;
pub mod headers;
mod session;

pub use session::{
    serve, Session, Stream, StreamReader, StreamWriter, MAX_DATA_PAYLOAD, RECV_BUFFER_LIMIT,
};

/// The `Upgrade` header's value for a SPDY/3.1 connection.
pub const UPGRADE: &str = "SPDY/3.1";

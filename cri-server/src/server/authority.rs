//! Any `:authority` on the unix socket (issue 9, item 8).
//!
//! What clients send for a `unix:` target: grpc-core (Python grpcio ≥ 1.57,
//! Ruby, C++; grpc/grpc#33571 made it the default) the target's path
//! percent-encoded, without its leading `/` (grpcio 1.85:
//! `run%2Fcrius%2Fcrius.sock`); grpc-java (Netty's `DomainSocketAddress`) the
//! path itself; grpc-go (kubelet, crictl) `localhost`.
//!
//! Why h2 refused the first two: its server parses `:authority` into an
//! `http::uri::Authority`, which refuses a `%` outside userinfo and any `/`,
//! and resets the stream with PROTOCOL_ERROR before hyper or tonic see the
//! request ("malformed headers: malformed authority"). No h2 (0.4.20 is the
//! newest), hyper or tonic setting relaxes it; upstream: hyperium/h2#442,
//! hyperium/h2#487 (open), hyperium/hyper#3750, grpc/grpc#38142,
//! grpc/grpc-java#12664.
//!
//! The fix, on the connection: [`AuthorityFix`] reads the client's HTTP/2
//! frames on their way to h2 and decodes each header block with an HPACK
//! decoder of its own, which follows the client's encoder. Blocks pass byte
//! for byte until one carries an authority that h2 would refuse (the same
//! `Authority` parse); that one is re-encoded with the refused authority
//! replaced by `localhost` (what grpc-go sends), and so is every later block
//! of the connection, since h2's dynamic table no longer holds what the
//! client's indexes name. The re-encoder keeps no dynamic table, so its
//! indexes name only static entries, which h2 reads alike whatever its own
//! dynamic table holds. gRPC routes by `:path`; no handler reads the
//! authority. Other frames, and the server's, pass untouched.

use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use loona_hpack::{Decoder, Encoder};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tonic::transport::server::Connected;

/// The client connection preface (RFC 9113 §3.4) precedes the first frame.
const PREFACE_LEN: usize = 24;
const FRAME_HEADER_LEN: usize = 9;
const HEADERS: u8 = 0x1;
const CONTINUATION: u8 = 0x9;
const END_STREAM: u8 = 0x1;
const END_HEADERS: u8 = 0x4;
const PADDED: u8 = 0x8;
const PRIORITY: u8 = 0x20;
const PRIORITY_LEN: usize = 5;
/// SETTINGS_MAX_FRAME_SIZE's floor: every HTTP/2 peer takes frames this large.
const MIN_MAX_FRAME_SIZE: usize = 16_384;
/// The largest header block held, as received or re-encoded, in bytes. h2
/// (through hyper) refuses header lists above 16 KiB, so only a broken or
/// hostile client reaches it.
const MAX_BLOCK: usize = 1 << 20;
/// The dynamic table size h2's decoder allows: SETTINGS_HEADER_TABLE_SIZE's
/// initial value, which it keeps (neither hyper nor tonic sets another).
const H2_HEADER_TABLE_SIZE: usize = 4096;
/// What a refused authority becomes: grpc-go's authority for unix targets.
const REPLACEMENT_AUTHORITY: &[u8] = b"localhost";

/// A connection whose reads are the client's bytes with every refused
/// `:authority` replaced (see the module's doc); writes pass through.
/// A header block this cannot take (see [`Rewriter::feed`]) fails the read
/// with `InvalidData`, which closes the connection.
pub struct AuthorityFix<IO> {
    io: IO,
    rewriter: Rewriter,
    read_buf: Box<[u8]>,
    /// Bytes ready for h2; `ready[ready_from..]` are still to be read.
    ready: Vec<u8>,
    ready_from: usize,
    eof: bool,
}

impl<IO> AuthorityFix<IO> {
    /// Wraps an accepted connection.
    pub fn new(io: IO) -> AuthorityFix<IO> {
        AuthorityFix {
            io,
            rewriter: Rewriter::new(),
            read_buf: vec![0; 8192].into_boxed_slice(),
            ready: Vec::new(),
            ready_from: 0,
            eof: false,
        }
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for AuthorityFix<IO> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            if this.ready_from < this.ready.len() {
                let n = buf.remaining().min(this.ready.len() - this.ready_from);
                buf.put_slice(&this.ready[this.ready_from..this.ready_from + n]);
                this.ready_from += n;
                if this.ready_from == this.ready.len() {
                    this.ready.clear();
                    this.ready_from = 0;
                }
                return Poll::Ready(Ok(()));
            }
            if this.eof {
                return Poll::Ready(Ok(()));
            }
            let mut read = ReadBuf::new(&mut this.read_buf);
            ready!(Pin::new(&mut this.io).poll_read(cx, &mut read))?;
            if read.filled().is_empty() {
                this.eof = true;
                this.rewriter.finish(&mut this.ready);
            } else {
                this.rewriter
                    .feed(read.filled(), &mut this.ready)
                    .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
            }
        }
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for AuthorityFix<IO> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

impl<IO: Connected> Connected for AuthorityFix<IO> {
    type ConnectInfo = IO::ConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.io.connect_info()
    }
}

/// A header block the rewriter cannot read. Before any block was re-encoded
/// it and the rest of the connection go to h2 as received; after, h2's
/// decoder could misread the client's block, so the connection is closed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum Refused {
    /// The client's HPACK block does not decode.
    #[error("header block of stream {stream} does not decode: {source}")]
    Hpack {
        stream: u32,
        source: loona_hpack::decoder::DecoderError,
    },
    /// A header block, as received or re-encoded, exceeds [`MAX_BLOCK`].
    #[error("header block of stream {stream} exceeds {MAX_BLOCK} bytes")]
    TooLarge { stream: u32 },
    /// A HEADERS frame's padding or priority overruns it, or a header block
    /// is interrupted by another frame than its CONTINUATION.
    #[error("malformed header block frames on stream {stream}")]
    Frames { stream: u32 },
}

/// How the connection's header blocks reach h2.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    /// As received: h2's dynamic table is the client's.
    Verbatim,
    /// Re-encoded, since a block needed it.
    Reencoded,
    /// Everything as received, unread: the client broke HTTP/2 or HPACK
    /// before any block needed re-encoding, and h2 judges that as it would
    /// without us.
    Blind,
}

/// Where the byte stream is.
#[derive(Clone, Copy, Debug)]
enum State {
    /// In the connection preface: this many bytes of it to go.
    Preface(usize),
    /// Collecting a frame header into `head`.
    FrameHeader,
    /// In the payload of a frame that passes as is: this many bytes to go.
    Passing(usize),
    /// In the payload of a frame of the header block: this many bytes to go.
    BlockPayload(usize),
}

/// A header block being collected: its HEADERS and CONTINUATION frames.
struct Block {
    stream: u32,
    /// The HEADERS frame's END_STREAM and PRIORITY flags.
    flags: u8,
    priority: Option<[u8; PRIORITY_LEN]>,
    /// The frames as received, for passing on verbatim.
    raw: Vec<u8>,
    /// The header block fragments, joined.
    fragments: Vec<u8>,
    /// The current frame's type and flags.
    frame_kind: u8,
    frame_flags: u8,
    /// Where the current frame's payload starts in `raw`.
    payload_start: usize,
}

/// The connection's client-to-server byte stream, rewritten as the module's
/// doc says; pure, so every split of the stream into reads is testable.
pub(crate) struct Rewriter {
    mode: Mode,
    state: State,
    head: [u8; FRAME_HEADER_LEN],
    head_len: usize,
    block: Option<Block>,
    /// Follows the client's encoder.
    decoder: Decoder<'static>,
    /// Keeps no dynamic table (maximum size 0), so holds no state.
    encoder: Encoder<'static>,
    reencoded: Vec<u8>,
}

impl Rewriter {
    pub(crate) fn new() -> Rewriter {
        let mut decoder = Decoder::new();
        decoder.set_max_allowed_table_size(H2_HEADER_TABLE_SIZE);
        let mut encoder = Encoder::new();
        encoder.set_max_table_size(0);
        Rewriter {
            mode: Mode::Verbatim,
            state: State::Preface(PREFACE_LEN),
            head: [0; FRAME_HEADER_LEN],
            head_len: 0,
            block: None,
            decoder,
            encoder,
            reencoded: Vec::new(),
        }
    }

    /// Takes the next bytes from the client and appends what h2 is to read
    /// to `out`. After an error the connection must be closed.
    pub(crate) fn feed(&mut self, mut input: &[u8], out: &mut Vec<u8>) -> Result<(), Refused> {
        while !input.is_empty() {
            if self.mode == Mode::Blind {
                out.extend_from_slice(input);
                return Ok(());
            }
            match self.state {
                State::Preface(left) | State::Passing(left) => {
                    let n = left.min(input.len());
                    out.extend_from_slice(&input[..n]);
                    input = &input[n..];
                    self.state = match self.state {
                        _ if left == n => State::FrameHeader,
                        State::Preface(_) => State::Preface(left - n),
                        _ => State::Passing(left - n),
                    };
                }
                State::FrameHeader => {
                    let n = (FRAME_HEADER_LEN - self.head_len).min(input.len());
                    self.head[self.head_len..self.head_len + n].copy_from_slice(&input[..n]);
                    self.head_len += n;
                    input = &input[n..];
                    if self.head_len == FRAME_HEADER_LEN {
                        self.head_len = 0;
                        self.frame_header(out)?;
                    }
                }
                State::BlockPayload(left) => {
                    let n = left.min(input.len());
                    let block = self.block.as_mut().expect("a block is being collected");
                    block.raw.extend_from_slice(&input[..n]);
                    input = &input[n..];
                    if left == n {
                        self.state = State::FrameHeader;
                        self.block_frame_done(out)?;
                    } else {
                        self.state = State::BlockPayload(left - n);
                    }
                }
            }
        }
        Ok(())
    }

    /// The client closed its side: what is still held goes to h2 as it came,
    /// which then sees the same truncated stream it would have seen.
    pub(crate) fn finish(&mut self, out: &mut Vec<u8>) {
        if let Some(block) = self.block.take() {
            out.extend_from_slice(&block.raw);
        }
        out.extend_from_slice(&self.head[..self.head_len]);
        self.head_len = 0;
    }

    /// A complete frame header in `head`: starts or continues a header
    /// block, or passes.
    fn frame_header(&mut self, out: &mut Vec<u8>) -> Result<(), Refused> {
        let head = self.head;
        let len = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
        let (kind, flags) = (head[3], head[4]);
        let stream = u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff;
        let block = match self.block.take() {
            Some(block) if kind == CONTINUATION && stream == block.stream => Some(block),
            Some(mut block) => {
                block.raw.extend_from_slice(&head);
                let stream = block.stream;
                return self.give_up(block.raw, Refused::Frames { stream }, out);
            }
            None if kind == HEADERS => Some(Block {
                stream,
                flags: 0,
                priority: None,
                raw: Vec::new(),
                fragments: Vec::new(),
                frame_kind: kind,
                frame_flags: flags,
                payload_start: 0,
            }),
            // A CONTINUATION outside a block is h2's to refuse.
            None => None,
        };
        let Some(mut block) = block else {
            out.extend_from_slice(&head);
            self.state = if len == 0 {
                State::FrameHeader
            } else {
                State::Passing(len)
            };
            return Ok(());
        };
        block.raw.extend_from_slice(&head);
        if block.raw.len() + len > MAX_BLOCK {
            return self.give_up(block.raw, Refused::TooLarge { stream }, out);
        }
        block.frame_kind = kind;
        block.frame_flags = flags;
        block.payload_start = block.raw.len();
        self.block = Some(block);
        if len == 0 {
            self.block_frame_done(out)
        } else {
            self.state = State::BlockPayload(len);
            Ok(())
        }
    }

    /// A frame of the header block is complete: takes its fragment, and at
    /// END_HEADERS passes the block on.
    fn block_frame_done(&mut self, out: &mut Vec<u8>) -> Result<(), Refused> {
        let mut block = self.block.take().expect("a block is being collected");
        let payload = &block.raw[block.payload_start..];
        let fragment = if block.frame_kind == HEADERS {
            let Some((fragment, priority)) = headers_fragment(block.frame_flags, payload) else {
                let stream = block.stream;
                return self.give_up(block.raw, Refused::Frames { stream }, out);
            };
            block.flags = block.frame_flags & (END_STREAM | PRIORITY);
            block.priority = priority;
            fragment
        } else {
            payload
        };
        block.fragments.extend_from_slice(fragment);
        if block.frame_flags & END_HEADERS == 0 {
            self.block = Some(block);
            return Ok(());
        }
        self.pass_block(block, out)
    }

    /// Decodes a whole block and passes it on verbatim or re-encoded.
    fn pass_block(&mut self, block: Block, out: &mut Vec<u8>) -> Result<(), Refused> {
        let stream = block.stream;
        let mut refused_authority = false;
        let (encoder, reencoded) = (&mut self.encoder, &mut self.reencoded);
        reencoded.clear();
        // Re-encoded as decoded: a block's first fields decide whether it
        // needs it, and the decoder cannot go back.
        let decoded = self
            .decoder
            .decode_with_cb(&block.fragments, |name, value| {
                let value = if &*name == b":authority"
                    && http::uri::Authority::try_from(&*value).is_err()
                {
                    refused_authority = true;
                    REPLACEMENT_AUTHORITY
                } else {
                    &*value
                };
                if reencoded.len() <= MAX_BLOCK {
                    encoder
                        .encode_header_into((&*name, value), reencoded)
                        .expect("writing to a Vec cannot fail");
                }
            });
        if let Err(source) = decoded {
            return self.give_up(block.raw, Refused::Hpack { stream, source }, out);
        }
        if refused_authority && self.mode == Mode::Verbatim {
            tracing::debug!(
                stream,
                "client sent an :authority h2 refuses; re-encoding this connection's header blocks"
            );
            self.mode = Mode::Reencoded;
        }
        if self.mode == Mode::Verbatim {
            out.extend_from_slice(&block.raw);
            return Ok(());
        }
        if self.reencoded.len() > MAX_BLOCK {
            return Err(Refused::TooLarge { stream });
        }
        write_block(out, stream, block.flags, block.priority, &self.reencoded);
        Ok(())
    }

    /// Something h2 will refuse (or judge) on its own: while blocks pass
    /// verbatim, `raw` and all that follows go to h2 as received; once they
    /// are re-encoded, h2 could misread the client's block, so the connection
    /// ends with `why`.
    fn give_up(&mut self, raw: Vec<u8>, why: Refused, out: &mut Vec<u8>) -> Result<(), Refused> {
        if self.mode == Mode::Reencoded {
            return Err(why);
        }
        tracing::debug!(error = %why, "passing the rest of the connection to h2 unread");
        out.extend_from_slice(&raw);
        self.mode = Mode::Blind;
        Ok(())
    }
}

/// A HEADERS frame's header block fragment and priority fields (RFC 9113
/// §6.2), or `None` when its padding or priority overrun the payload.
fn headers_fragment(flags: u8, payload: &[u8]) -> Option<(&[u8], Option<[u8; PRIORITY_LEN]>)> {
    let (pad, mut rest) = if flags & PADDED != 0 {
        let (&pad, rest) = payload.split_first()?;
        (usize::from(pad), rest)
    } else {
        (0, payload)
    };
    let priority = if flags & PRIORITY != 0 {
        let (priority, after) = rest.split_first_chunk::<PRIORITY_LEN>()?;
        rest = after;
        Some(*priority)
    } else {
        None
    };
    let end = rest.len().checked_sub(pad)?;
    Some((&rest[..end], priority))
}

/// Frames a re-encoded block: a HEADERS frame (unpadded, with the original
/// END_STREAM and priority) and as many CONTINUATION frames as the block
/// needs at the smallest frame size every peer takes.
fn write_block(
    out: &mut Vec<u8>,
    stream: u32,
    flags: u8,
    priority: Option<[u8; PRIORITY_LEN]>,
    block: &[u8],
) {
    let priority: &[u8] = priority.as_ref().map_or(&[], |p| p);
    let (first, mut rest) = block.split_at((MIN_MAX_FRAME_SIZE - priority.len()).min(block.len()));
    let end = if rest.is_empty() { END_HEADERS } else { 0 };
    write_frame_header(
        out,
        priority.len() + first.len(),
        HEADERS,
        flags | end,
        stream,
    );
    out.extend_from_slice(priority);
    out.extend_from_slice(first);
    while !rest.is_empty() {
        let (chunk, after) = rest.split_at(MIN_MAX_FRAME_SIZE.min(rest.len()));
        rest = after;
        let end = if rest.is_empty() { END_HEADERS } else { 0 };
        write_frame_header(out, chunk.len(), CONTINUATION, end, stream);
        out.extend_from_slice(chunk);
    }
}

fn write_frame_header(out: &mut Vec<u8>, len: usize, kind: u8, flags: u8, stream: u32) {
    out.extend_from_slice(&(len as u32).to_be_bytes()[1..]);
    out.extend_from_slice(&[kind, flags]);
    out.extend_from_slice(&stream.to_be_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
    const DATA: u8 = 0x0;
    const SETTINGS: u8 = 0x4;
    const WINDOW_UPDATE: u8 = 0x8;
    const VERSION_PATH: &[u8] = b"/runtime.v1.RuntimeService/Version";
    /// grpcio 1.85's authority for `unix:/run/crius/crius.sock`.
    const GRPCIO_AUTHORITY: &[u8] = b"run%2Fcrius%2Fcrius.sock";

    fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
        let mut frame = Vec::new();
        write_frame_header(&mut frame, payload.len(), kind, flags, stream);
        frame.extend_from_slice(payload);
        frame
    }

    fn request_fields(authority: &[u8]) -> Vec<(Vec<u8>, Vec<u8>)> {
        [
            (&b":path"[..], VERSION_PATH),
            (b":authority", authority),
            (b":method", b"POST"),
            (b":scheme", b"http"),
            (b"content-type", b"application/grpc"),
            (b"te", b"trailers"),
        ]
        .into_iter()
        .map(|(n, v)| (n.to_vec(), v.to_vec()))
        .collect()
    }

    /// The client's side: an HPACK encoder with a dynamic table, so a
    /// repeated request is sent as indexes.
    fn encode(client: &mut Encoder<'_>, fields: &[(Vec<u8>, Vec<u8>)]) -> Vec<u8> {
        client.encode(fields.iter().map(|(n, v)| (&n[..], &v[..])))
    }

    /// Feeds `input` to a new rewriter `chunk` bytes at a time, then ends it.
    fn rewrite(input: &[u8], chunk: usize) -> Result<Vec<u8>, Refused> {
        let mut rewriter = Rewriter::new();
        let mut out = Vec::new();
        for piece in input.chunks(chunk) {
            rewriter.feed(piece, &mut out)?;
        }
        rewriter.finish(&mut out);
        Ok(out)
    }

    /// The same output whatever the reads' sizes.
    fn rewrite_in_any_split(input: &[u8]) -> Result<Vec<u8>, Refused> {
        let whole = rewrite(input, input.len())?;
        for chunk in [1, 2, 5, 9, 10, 100] {
            assert_eq!(
                rewrite(input, chunk)?,
                whole,
                "read {chunk} bytes at a time"
            );
        }
        Ok(whole)
    }

    /// What h2 reads from the rewriter's output, after the preface.
    #[derive(Debug, PartialEq)]
    enum Seen {
        /// A header block: its frames' types and flags, its priority field
        /// and the fields it decodes to.
        Block {
            stream: u32,
            frames: Vec<(u8, u8)>,
            priority: Vec<u8>,
            fields: Vec<(Vec<u8>, Vec<u8>)>,
        },
        Frame {
            kind: u8,
            flags: u8,
            stream: u32,
            payload: Vec<u8>,
        },
    }

    fn as_h2_reads(out: &[u8]) -> Vec<Seen> {
        let mut rest = out.strip_prefix(PREFACE).expect("the preface comes first");
        let mut decoder = Decoder::new();
        let mut seen = Vec::new();
        let mut block: Option<(Seen, Vec<u8>)> = None;
        while !rest.is_empty() {
            let len = u32::from_be_bytes([0, rest[0], rest[1], rest[2]]) as usize;
            let (kind, flags) = (rest[3], rest[4]);
            let stream = u32::from_be_bytes([rest[5], rest[6], rest[7], rest[8]]);
            let payload = &rest[FRAME_HEADER_LEN..FRAME_HEADER_LEN + len];
            rest = &rest[FRAME_HEADER_LEN + len..];
            if kind != HEADERS && kind != CONTINUATION {
                seen.push(Seen::Frame {
                    kind,
                    flags,
                    stream,
                    payload: payload.to_vec(),
                });
                continue;
            }
            let (fragment, priority) = if kind == HEADERS {
                headers_fragment(flags, payload).unwrap()
            } else {
                (payload, None)
            };
            let (collected, fragments) = block.get_or_insert_with(|| {
                let block = Seen::Block {
                    stream,
                    frames: Vec::new(),
                    priority: priority.map(Vec::from).unwrap_or_default(),
                    fields: Vec::new(),
                };
                (block, Vec::new())
            });
            let Seen::Block { frames, fields, .. } = collected else {
                unreachable!("only blocks are collected")
            };
            frames.push((kind, flags));
            fragments.extend_from_slice(fragment);
            if flags & END_HEADERS != 0 {
                *fields = decoder.decode(fragments).unwrap();
                seen.push(block.take().unwrap().0);
            }
        }
        seen
    }

    fn request_block(stream: u32, fields: Vec<(Vec<u8>, Vec<u8>)>) -> Seen {
        Seen::Block {
            stream,
            frames: vec![(HEADERS, END_HEADERS)],
            priority: Vec::new(),
            fields,
        }
    }

    fn empty_message(stream: u32) -> Seen {
        Seen::Frame {
            kind: DATA,
            flags: END_STREAM,
            stream,
            payload: vec![0; 5],
        }
    }

    /// Two requests on one connection, the second sent as indexes.
    fn two_requests(authority: &[u8]) -> Vec<u8> {
        let mut client = Encoder::new();
        let fields = request_fields(authority);
        let mut input = PREFACE.to_vec();
        input.extend(frame(SETTINGS, 0, 0, &[0, 0x4, 0, 0x10, 0, 0]));
        for stream in [1, 3] {
            input.extend(frame(
                HEADERS,
                END_HEADERS,
                stream,
                &encode(&mut client, &fields),
            ));
            input.extend(frame(DATA, END_STREAM, stream, &[0; 5]));
        }
        input.extend(frame(WINDOW_UPDATE, 0, 0, &[0, 0, 0x40, 0]));
        input
    }

    #[test]
    fn valid_authorities_pass_byte_for_byte() {
        for authority in [&b"localhost"[..], b"[::]:50051", b"crius.sock"] {
            let input = two_requests(authority);
            assert_eq!(rewrite_in_any_split(&input).unwrap(), input);
        }
    }

    #[test]
    fn refused_authority_becomes_localhost_in_this_and_every_later_block() {
        for authority in [GRPCIO_AUTHORITY, b"/run/crius/crius.sock", b""] {
            assert!(http::uri::Authority::try_from(authority).is_err());
            let out = rewrite_in_any_split(&two_requests(authority)).unwrap();
            let expected = request_fields(REPLACEMENT_AUTHORITY);
            assert_eq!(
                as_h2_reads(&out),
                vec![
                    Seen::Frame {
                        kind: SETTINGS,
                        flags: 0,
                        stream: 0,
                        payload: vec![0, 0x4, 0, 0x10, 0, 0]
                    },
                    request_block(1, expected.clone()),
                    empty_message(1),
                    request_block(3, expected),
                    empty_message(3),
                    Seen::Frame {
                        kind: WINDOW_UPDATE,
                        flags: 0,
                        stream: 0,
                        payload: vec![0, 0, 0x40, 0]
                    },
                ],
                "authority {:?}",
                String::from_utf8_lossy(authority)
            );
        }
    }

    #[test]
    fn padded_prioritized_block_in_continuation_frames_keeps_priority_and_end_stream() {
        let block = encode(&mut Encoder::new(), &request_fields(GRPCIO_AUTHORITY));
        let (first, second) = block.split_at(block.len() / 2);
        let priority = [0x80, 0, 0, 0, 7, 15];
        let mut headers = vec![3];
        headers.extend_from_slice(&priority[1..]);
        headers.extend_from_slice(first);
        headers.extend_from_slice(&[0; 3]);
        let mut input = PREFACE.to_vec();
        input.extend(frame(HEADERS, PADDED | PRIORITY | END_STREAM, 5, &headers));
        input.extend(frame(CONTINUATION, END_HEADERS, 5, second));
        let out = rewrite_in_any_split(&input).unwrap();
        assert_eq!(
            as_h2_reads(&out),
            vec![Seen::Block {
                stream: 5,
                frames: vec![(HEADERS, PRIORITY | END_STREAM | END_HEADERS)],
                priority: priority[1..].to_vec(),
                fields: request_fields(REPLACEMENT_AUTHORITY),
            }]
        );
    }

    #[test]
    fn large_reencoded_block_is_split_into_frames_every_peer_takes() {
        let mut fields = request_fields(GRPCIO_AUTHORITY);
        fields.push((b"x-large".to_vec(), vec![b'a'; 40_000]));
        let mut input = PREFACE.to_vec();
        let block = encode(&mut Encoder::new(), &fields);
        input.extend(frame(HEADERS, 0, 1, &block[..30_000]));
        input.extend(frame(CONTINUATION, END_HEADERS, 1, &block[30_000..]));
        let out = rewrite_in_any_split(&input).unwrap();
        let mut expected = request_fields(REPLACEMENT_AUTHORITY);
        expected.push(fields.pop().unwrap());
        assert_eq!(
            as_h2_reads(&out),
            vec![Seen::Block {
                stream: 1,
                frames: vec![(HEADERS, 0), (CONTINUATION, 0), (CONTINUATION, END_HEADERS)],
                priority: Vec::new(),
                fields: expected,
            }]
        );
    }

    /// Blocks that h2 refuses on its own: an index beyond the dynamic table,
    /// a dynamic table larger than h2 allows (8192 bytes), and a block
    /// interrupted by a DATA frame.
    fn broken_blocks() -> [Vec<u8>; 3] {
        let mut interrupted = frame(HEADERS, 0, 3, &[0x82]);
        interrupted.extend(frame(DATA, 0, 3, &[0; 5]));
        [
            frame(HEADERS, END_HEADERS, 3, &[0x80 | 120]),
            frame(HEADERS, END_HEADERS, 3, &[0x3f, 0xe1, 0x3f, 0x82]),
            interrupted,
        ]
    }

    #[test]
    fn broken_block_before_any_rewrite_leaves_the_connection_to_h2_unread() {
        for broken in broken_blocks() {
            let mut input = PREFACE.to_vec();
            input.extend(broken);
            let refused = encode(&mut Encoder::new(), &request_fields(GRPCIO_AUTHORITY));
            input.extend(frame(HEADERS, END_HEADERS, 5, &refused));
            assert_eq!(rewrite_in_any_split(&input).unwrap(), input);
        }
    }

    #[test]
    fn broken_block_after_a_rewrite_closes_the_connection() {
        for (broken, want) in
            broken_blocks()
                .into_iter()
                .zip(["does not decode", "does not decode", "malformed"])
        {
            let mut input = PREFACE.to_vec();
            let refused = encode(&mut Encoder::new(), &request_fields(GRPCIO_AUTHORITY));
            input.extend(frame(HEADERS, END_HEADERS, 1, &refused));
            input.extend(broken);
            let error = rewrite(&input, input.len()).unwrap_err();
            assert!(error.to_string().contains(want), "{error}");
            assert!(error.to_string().contains("stream 3"), "{error}");
        }
    }

    #[test]
    fn a_stream_cut_short_reaches_h2_as_cut() {
        let block = encode(&mut Encoder::new(), &request_fields(GRPCIO_AUTHORITY));
        let headers = frame(HEADERS, END_HEADERS, 1, &block);
        for cut in [PREFACE.len() + 4, PREFACE.len() + 20] {
            let mut input = PREFACE.to_vec();
            input.extend_from_slice(&headers);
            input.truncate(cut);
            assert_eq!(rewrite_in_any_split(&input).unwrap(), input);
        }
    }
}

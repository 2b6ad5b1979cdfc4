//! SPDY/3 frames on the wire: decoding from and encoding into byte buffers.
//!
//! Pure: no I/O and no zlib; header blocks stay compressed here (the
//! session runs them through its one zlib context per direction, in wire
//! order). Layout from the SPDY/3 draft, section 2.2 ("Framing") and 2.6
//! ("Control frames"), as spdystream's `spdy/read.go` and `spdy/write.go`
//! read and write it:
//!
//! ```text
//! control: |1| version(15) | type(16) | flags(8) | length(24) | data
//! data:    |0| stream id(31)          | flags(8) | length(24) | data
//! ```

use bytes::{Buf, BufMut, Bytes, BytesMut};

/// The SPDY version this module speaks.
pub const VERSION: u16 = 3;
/// Bytes of every frame's header (both kinds).
pub const HEADER_LEN: usize = 8;
/// The largest payload a frame's 24-bit length field can carry.
pub const MAX_PAYLOAD: usize = (1 << 24) - 1;

/// FLAG_FIN on a data frame or a SYN_STREAM/SYN_REPLY/HEADERS frame: the
/// sender's last frame on the stream.
pub const FLAG_FIN: u8 = 0x01;
/// FLAG_UNIDIRECTIONAL on a SYN_STREAM: the recipient never sends on the stream.
pub const FLAG_UNIDIRECTIONAL: u8 = 0x02;

const TYPE_SYN_STREAM: u16 = 1;
const TYPE_SYN_REPLY: u16 = 2;
const TYPE_RST_STREAM: u16 = 3;
const TYPE_SETTINGS: u16 = 4;
const TYPE_PING: u16 = 6;
const TYPE_GOAWAY: u16 = 7;
const TYPE_HEADERS: u16 = 8;
const TYPE_WINDOW_UPDATE: u16 = 9;

/// RST_STREAM status codes (SPDY/3 section 2.4.2).
pub mod rst {
    pub const PROTOCOL_ERROR: u32 = 1;
    pub const INVALID_STREAM: u32 = 2;
    pub const REFUSED_STREAM: u32 = 3;
    pub const CANCEL: u32 = 5;
}

/// GOAWAY status codes (SPDY/3 section 2.6.6).
pub mod goaway {
    pub const OK: u32 = 0;
    pub const PROTOCOL_ERROR: u32 = 1;
}

/// SETTINGS ID of SETTINGS_INITIAL_WINDOW_SIZE (SPDY/3 section 2.6.4).
pub const SETTINGS_INITIAL_WINDOW_SIZE: u32 = 7;

/// One ID/value pair of a SETTINGS frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Setting {
    /// FLAG_SETTINGS_PERSIST_VALUE (1) / FLAG_SETTINGS_PERSISTED (2).
    pub flags: u8,
    /// 24-bit setting ID.
    pub id: u32,
    pub value: u32,
}

/// A decoded frame. Stream IDs are 31-bit (the reserved high bit is
/// dropped on decode); `header_block` is the compressed name/value block.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Frame {
    Data {
        stream_id: u32,
        flags: u8,
        data: Bytes,
    },
    SynStream {
        stream_id: u32,
        associated_stream_id: u32,
        /// 3-bit priority, 0 the highest.
        priority: u8,
        slot: u8,
        flags: u8,
        header_block: Bytes,
    },
    SynReply {
        stream_id: u32,
        flags: u8,
        header_block: Bytes,
    },
    RstStream {
        stream_id: u32,
        status: u32,
    },
    Settings {
        flags: u8,
        entries: Vec<Setting>,
    },
    Ping {
        id: u32,
    },
    GoAway {
        last_good_stream_id: u32,
        status: u32,
    },
    Headers {
        stream_id: u32,
        flags: u8,
        header_block: Bytes,
    },
    WindowUpdate {
        stream_id: u32,
        delta_window_size: u32,
    },
    /// A control frame of a type SPDY/3 does not define (or CREDENTIAL,
    /// which nothing here uses); the spec says to ignore it.
    Unknown {
        frame_type: u16,
    },
}

/// A frame the peer sent that breaks SPDY/3's layout: a session error
/// (GOAWAY with PROTOCOL_ERROR).
#[derive(Clone, Debug, thiserror::Error, PartialEq, Eq)]
pub enum FrameError {
    #[error("control frame of SPDY version {0}, want 3")]
    UnsupportedVersion(u16),
    #[error("control frame type {frame_type} with length {length}: wrong length for its type")]
    BadLength { frame_type: u16, length: usize },
    #[error("frame type {frame_type} on stream 0")]
    ZeroStreamId { frame_type: u16 },
    #[error("RST_STREAM with status 0")]
    ZeroStatus,
}

/// The 31-bit ID in a word whose high bit is reserved or the control bit.
const fn id31(word: u32) -> u32 {
    word & 0x7fff_ffff
}

/// Takes the next whole frame off the front of `buf`; `Ok(None)` if `buf`
/// holds only part of one (read more and call again). Payloads are
/// slices of `buf`'s memory, not copies.
pub fn decode(buf: &mut BytesMut) -> Result<Option<Frame>, FrameError> {
    if buf.len() < HEADER_LEN {
        return Ok(None);
    }
    let length = u32::from_be_bytes([0, buf[5], buf[6], buf[7]]) as usize;
    if buf.len() < HEADER_LEN + length {
        buf.reserve(HEADER_LEN + length - buf.len());
        return Ok(None);
    }
    let first = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]);
    let flags = buf[4];
    buf.advance(HEADER_LEN);
    let mut payload = buf.split_to(length).freeze();

    if first & 0x8000_0000 == 0 {
        let stream_id = id31(first);
        if stream_id == 0 {
            return Err(FrameError::ZeroStreamId { frame_type: 0 });
        }
        return Ok(Some(Frame::Data {
            stream_id,
            flags,
            data: payload,
        }));
    }

    let version = ((first >> 16) & 0x7fff) as u16;
    if version != VERSION {
        return Err(FrameError::UnsupportedVersion(version));
    }
    let frame_type = (first & 0xffff) as u16;
    let bad_length = FrameError::BadLength { frame_type, length };
    let need = |min: usize, exact: bool| {
        if length < min || (exact && length != min) {
            Err(bad_length.clone())
        } else {
            Ok(())
        }
    };
    let frame = match frame_type {
        TYPE_SYN_STREAM => {
            need(10, false)?;
            let stream_id = id31(payload.get_u32());
            let associated_stream_id = id31(payload.get_u32());
            let priority = payload.get_u8() >> 5;
            let slot = payload.get_u8();
            Frame::SynStream {
                stream_id,
                associated_stream_id,
                priority,
                slot,
                flags,
                header_block: payload,
            }
        }
        TYPE_SYN_REPLY | TYPE_HEADERS => {
            need(4, false)?;
            let stream_id = id31(payload.get_u32());
            if frame_type == TYPE_SYN_REPLY {
                Frame::SynReply {
                    stream_id,
                    flags,
                    header_block: payload,
                }
            } else {
                Frame::Headers {
                    stream_id,
                    flags,
                    header_block: payload,
                }
            }
        }
        TYPE_RST_STREAM => {
            need(8, true)?;
            let stream_id = id31(payload.get_u32());
            let status = payload.get_u32();
            if status == 0 {
                return Err(FrameError::ZeroStatus);
            }
            Frame::RstStream { stream_id, status }
        }
        TYPE_SETTINGS => {
            need(4, false)?;
            let count = payload.get_u32() as usize;
            if payload.len() != count.saturating_mul(8) {
                return Err(bad_length);
            }
            let entries = (0..count)
                .map(|_| {
                    let flags_id = payload.get_u32();
                    Setting {
                        flags: (flags_id >> 24) as u8,
                        id: flags_id & 0x00ff_ffff,
                        value: payload.get_u32(),
                    }
                })
                .collect();
            Frame::Settings { flags, entries }
        }
        TYPE_PING => {
            need(4, true)?;
            Frame::Ping {
                id: payload.get_u32(),
            }
        }
        TYPE_GOAWAY => {
            need(8, true)?;
            Frame::GoAway {
                last_good_stream_id: id31(payload.get_u32()),
                status: payload.get_u32(),
            }
        }
        TYPE_WINDOW_UPDATE => {
            need(8, true)?;
            Frame::WindowUpdate {
                stream_id: id31(payload.get_u32()),
                delta_window_size: payload.get_u32() & 0x7fff_ffff,
            }
        }
        _ => return Ok(Some(Frame::Unknown { frame_type })),
    };
    if let Frame::SynStream { stream_id: 0, .. }
    | Frame::SynReply { stream_id: 0, .. }
    | Frame::Headers { stream_id: 0, .. }
    | Frame::RstStream { stream_id: 0, .. } = frame
    {
        return Err(FrameError::ZeroStreamId { frame_type });
    }
    Ok(Some(frame))
}

fn control_header(dst: &mut BytesMut, frame_type: u16, flags: u8, length: usize) {
    debug_assert!(length <= MAX_PAYLOAD);
    dst.put_u16(0x8000 | VERSION);
    dst.put_u16(frame_type);
    dst.put_u32((u32::from(flags) << 24) | length as u32);
}

/// Appends a data frame's 8-byte header; the caller appends the
/// `length` payload bytes after it (no copy through a [`Frame`]).
pub fn encode_data_header(dst: &mut BytesMut, stream_id: u32, flags: u8, length: usize) {
    debug_assert!(length <= MAX_PAYLOAD && stream_id & 0x8000_0000 == 0);
    dst.put_u32(stream_id);
    dst.put_u32((u32::from(flags) << 24) | length as u32);
}

/// Appends `frame` in its wire form to `dst`. Lengths are the caller's to
/// keep within [`MAX_PAYLOAD`]; an [`Frame::Unknown`] writes nothing.
pub fn encode(frame: &Frame, dst: &mut BytesMut) {
    match frame {
        Frame::Data {
            stream_id,
            flags,
            data,
        } => {
            encode_data_header(dst, *stream_id, *flags, data.len());
            dst.extend_from_slice(data);
        }
        Frame::SynStream {
            stream_id,
            associated_stream_id,
            priority,
            slot,
            flags,
            header_block,
        } => {
            control_header(dst, TYPE_SYN_STREAM, *flags, 10 + header_block.len());
            dst.put_u32(*stream_id);
            dst.put_u32(*associated_stream_id);
            dst.put_u8(priority << 5);
            dst.put_u8(*slot);
            dst.extend_from_slice(header_block);
        }
        Frame::SynReply {
            stream_id,
            flags,
            header_block,
        } => {
            control_header(dst, TYPE_SYN_REPLY, *flags, 4 + header_block.len());
            dst.put_u32(*stream_id);
            dst.extend_from_slice(header_block);
        }
        Frame::Headers {
            stream_id,
            flags,
            header_block,
        } => {
            control_header(dst, TYPE_HEADERS, *flags, 4 + header_block.len());
            dst.put_u32(*stream_id);
            dst.extend_from_slice(header_block);
        }
        Frame::RstStream { stream_id, status } => {
            control_header(dst, TYPE_RST_STREAM, 0, 8);
            dst.put_u32(*stream_id);
            dst.put_u32(*status);
        }
        Frame::Settings { flags, entries } => {
            control_header(dst, TYPE_SETTINGS, *flags, 4 + 8 * entries.len());
            dst.put_u32(entries.len() as u32);
            for setting in entries {
                dst.put_u32((u32::from(setting.flags) << 24) | setting.id);
                dst.put_u32(setting.value);
            }
        }
        Frame::Ping { id } => {
            control_header(dst, TYPE_PING, 0, 4);
            dst.put_u32(*id);
        }
        Frame::GoAway {
            last_good_stream_id,
            status,
        } => {
            control_header(dst, TYPE_GOAWAY, 0, 8);
            dst.put_u32(*last_good_stream_id);
            dst.put_u32(*status);
        }
        Frame::WindowUpdate {
            stream_id,
            delta_window_size,
        } => {
            control_header(dst, TYPE_WINDOW_UPDATE, 0, 8);
            dst.put_u32(*stream_id);
            dst.put_u32(*delta_window_size);
        }
        Frame::Unknown { .. } => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(frame: Frame) {
        let mut buf = BytesMut::new();
        encode(&frame, &mut buf);
        // A frame split anywhere decodes only once whole.
        let wire = buf.clone();
        for cut in 0..wire.len() {
            let mut part = BytesMut::from(&wire[..cut]);
            assert_eq!(decode(&mut part), Ok(None), "{frame:?} cut at {cut}");
        }
        assert_eq!(decode(&mut buf), Ok(Some(frame)));
        assert!(buf.is_empty());
    }

    #[test]
    fn every_frame_type_round_trips() {
        let block = Bytes::from_static(b"\x78\xbb compressed");
        for frame in [
            Frame::Data {
                stream_id: 1,
                flags: FLAG_FIN,
                data: Bytes::from_static(b"hello"),
            },
            Frame::Data {
                stream_id: 0x7fff_ffff,
                flags: 0,
                data: Bytes::new(),
            },
            Frame::SynStream {
                stream_id: 3,
                associated_stream_id: 1,
                priority: 7,
                slot: 2,
                flags: FLAG_FIN | FLAG_UNIDIRECTIONAL,
                header_block: block.clone(),
            },
            Frame::SynReply {
                stream_id: 3,
                flags: FLAG_FIN,
                header_block: block.clone(),
            },
            Frame::RstStream {
                stream_id: 5,
                status: rst::CANCEL,
            },
            Frame::Settings {
                flags: 1,
                entries: vec![
                    Setting {
                        flags: 1,
                        id: SETTINGS_INITIAL_WINDOW_SIZE,
                        value: 1 << 20,
                    },
                    Setting {
                        flags: 0,
                        id: 4,
                        value: 100,
                    },
                ],
            },
            Frame::Settings {
                flags: 0,
                entries: vec![],
            },
            Frame::Ping { id: 1 },
            Frame::GoAway {
                last_good_stream_id: 9,
                status: goaway::PROTOCOL_ERROR,
            },
            Frame::Headers {
                stream_id: 7,
                flags: 0,
                header_block: block.clone(),
            },
            Frame::WindowUpdate {
                stream_id: 7,
                delta_window_size: 65536,
            },
        ] {
            round_trip(frame);
        }
    }

    /// Hand-written wire bytes of each frame type, from the SPDY/3 layout.
    #[test]
    fn decodes_hand_written_frames() {
        let cases: Vec<(&[u8], Frame)> = vec![
            (
                b"\x00\x00\x00\x05\x01\x00\x00\x02hi",
                Frame::Data {
                    stream_id: 5,
                    flags: FLAG_FIN,
                    data: Bytes::from_static(b"hi"),
                },
            ),
            (
                b"\x80\x03\x00\x01\x00\x00\x00\x0c\x00\x00\x00\x01\x00\x00\x00\x00\x60\x00\xab\xcd",
                Frame::SynStream {
                    stream_id: 1,
                    associated_stream_id: 0,
                    priority: 3,
                    slot: 0,
                    flags: 0,
                    header_block: Bytes::from_static(b"\xab\xcd"),
                },
            ),
            (
                b"\x80\x03\x00\x02\x01\x00\x00\x05\x00\x00\x00\x03\xee",
                Frame::SynReply {
                    stream_id: 3,
                    flags: FLAG_FIN,
                    header_block: Bytes::from_static(b"\xee"),
                },
            ),
            (
                b"\x80\x03\x00\x03\x00\x00\x00\x08\x00\x00\x00\x03\x00\x00\x00\x05",
                Frame::RstStream {
                    stream_id: 3,
                    status: rst::CANCEL,
                },
            ),
            (
                b"\x80\x03\x00\x04\x00\x00\x00\x0c\x00\x00\x00\x01\x01\x00\x00\x07\x00\x01\x00\x00",
                Frame::Settings {
                    flags: 0,
                    entries: vec![Setting {
                        flags: 1,
                        id: SETTINGS_INITIAL_WINDOW_SIZE,
                        value: 0x10000,
                    }],
                },
            ),
            (
                b"\x80\x03\x00\x06\x00\x00\x00\x04\x00\x00\x00\x01",
                Frame::Ping { id: 1 },
            ),
            (
                b"\x80\x03\x00\x07\x00\x00\x00\x08\x00\x00\x00\x07\x00\x00\x00\x00",
                Frame::GoAway {
                    last_good_stream_id: 7,
                    status: goaway::OK,
                },
            ),
            (
                b"\x80\x03\x00\x08\x01\x00\x00\x06\x00\x00\x00\x01\x12\x34",
                Frame::Headers {
                    stream_id: 1,
                    flags: FLAG_FIN,
                    header_block: Bytes::from_static(b"\x12\x34"),
                },
            ),
            (
                b"\x80\x03\x00\x09\x00\x00\x00\x08\x00\x00\x00\x01\x00\x00\x80\x00",
                Frame::WindowUpdate {
                    stream_id: 1,
                    delta_window_size: 0x8000,
                },
            ),
            (
                // CREDENTIAL (type 10): skipped with its payload.
                b"\x80\x03\x00\x0a\x00\x00\x00\x03abc",
                Frame::Unknown { frame_type: 10 },
            ),
        ];
        for (wire, want) in cases {
            let mut buf = BytesMut::from(wire);
            assert_eq!(decode(&mut buf), Ok(Some(want.clone())), "{wire:x?}");
            assert!(buf.is_empty());
            // Our encoder writes the same bytes (an unknown type it cannot).
            if !matches!(want, Frame::Unknown { .. }) {
                let mut out = BytesMut::new();
                encode(&want, &mut out);
                assert_eq!(&out[..], wire);
            }
        }
    }

    #[test]
    fn two_frames_in_one_buffer_decode_in_order() {
        let mut buf = BytesMut::new();
        encode(&Frame::Ping { id: 1 }, &mut buf);
        encode(&Frame::Ping { id: 3 }, &mut buf);
        buf.extend_from_slice(b"\x80\x03"); // the start of a third
        assert_eq!(decode(&mut buf), Ok(Some(Frame::Ping { id: 1 })));
        assert_eq!(decode(&mut buf), Ok(Some(Frame::Ping { id: 3 })));
        assert_eq!(decode(&mut buf), Ok(None));
        assert_eq!(&buf[..], b"\x80\x03");
    }

    #[test]
    fn malformed_frames_are_errors() {
        let cases: Vec<(&[u8], FrameError)> = vec![
            (
                b"\x80\x02\x00\x06\x00\x00\x00\x04\x00\x00\x00\x01",
                FrameError::UnsupportedVersion(2),
            ),
            (
                b"\x80\x03\x00\x06\x00\x00\x00\x05\x00\x00\x00\x01\x00",
                FrameError::BadLength {
                    frame_type: 6,
                    length: 5,
                },
            ),
            (
                b"\x80\x03\x00\x01\x00\x00\x00\x04\x00\x00\x00\x01",
                FrameError::BadLength {
                    frame_type: 1,
                    length: 4,
                },
            ),
            (
                b"\x80\x03\x00\x04\x00\x00\x00\x08\x00\x00\x00\x02\x00\x00\x00\x07",
                FrameError::BadLength {
                    frame_type: 4,
                    length: 8,
                },
            ),
            (
                b"\x80\x03\x00\x03\x00\x00\x00\x08\x00\x00\x00\x01\x00\x00\x00\x00",
                FrameError::ZeroStatus,
            ),
            (
                b"\x80\x03\x00\x03\x00\x00\x00\x08\x00\x00\x00\x00\x00\x00\x00\x05",
                FrameError::ZeroStreamId { frame_type: 3 },
            ),
            (
                b"\x00\x00\x00\x00\x00\x00\x00\x00",
                FrameError::ZeroStreamId { frame_type: 0 },
            ),
        ];
        for (wire, want) in cases {
            assert_eq!(decode(&mut BytesMut::from(wire)), Err(want), "{wire:x?}");
        }
    }
}

//! SPDY/3 name/value header blocks (SPDY/3 draft section 2.6.10) and
//! their compression: one zlib stream per direction per connection, primed
//! with the spec's dictionary, each block ending in a sync flush.
//!
//! Block layout (all lengths 32-bit big-endian): the number of names, then
//! per name its length and bytes, then the length and bytes of its values
//! joined by NUL.

use bytes::{BufMut, Bytes};
use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress};
use http::{HeaderMap, HeaderName, HeaderValue};

/// The zlib dictionary of SPDY/3 header blocks (SPDY/3 draft section
/// 2.6.10.1; byte for byte as spdystream's `spdy/dictionary.go`).
#[rustfmt::skip]
pub const DICTIONARY: &[u8; 1423] = b"\
\x00\x00\x00\x07options\x00\x00\x00\x04head\x00\x00\x00\x04post\x00\x00\x00\x03put\
\x00\x00\x00\x06delete\x00\x00\x00\x05trace\x00\x00\x00\x06accept\
\x00\x00\x00\x0eaccept-charset\x00\x00\x00\x0faccept-encoding\
\x00\x00\x00\x0faccept-language\x00\x00\x00\x0daccept-ranges\x00\x00\x00\x03age\
\x00\x00\x00\x05allow\x00\x00\x00\x0dauthorization\x00\x00\x00\x0dcache-control\
\x00\x00\x00\x0aconnection\x00\x00\x00\x0ccontent-base\x00\x00\x00\x10content-encoding\
\x00\x00\x00\x10content-language\x00\x00\x00\x0econtent-length\
\x00\x00\x00\x10content-location\x00\x00\x00\x0bcontent-md5\x00\x00\x00\x0dcontent-range\
\x00\x00\x00\x0ccontent-type\x00\x00\x00\x04date\x00\x00\x00\x04etag\
\x00\x00\x00\x06expect\x00\x00\x00\x07expires\x00\x00\x00\x04from\x00\x00\x00\x04host\
\x00\x00\x00\x08if-match\x00\x00\x00\x11if-modified-since\x00\x00\x00\x0dif-none-match\
\x00\x00\x00\x08if-range\x00\x00\x00\x13if-unmodified-since\x00\x00\x00\x0dlast-modified\
\x00\x00\x00\x08location\x00\x00\x00\x0cmax-forwards\x00\x00\x00\x06pragma\
\x00\x00\x00\x12proxy-authenticate\x00\x00\x00\x13proxy-authorization\
\x00\x00\x00\x05range\x00\x00\x00\x07referer\x00\x00\x00\x0bretry-after\
\x00\x00\x00\x06server\x00\x00\x00\x02te\x00\x00\x00\x07trailer\
\x00\x00\x00\x11transfer-encoding\x00\x00\x00\x07upgrade\x00\x00\x00\x0auser-agent\
\x00\x00\x00\x04vary\x00\x00\x00\x03via\x00\x00\x00\x07warning\
\x00\x00\x00\x10www-authenticate\x00\x00\x00\x06method\x00\x00\x00\x03get\
\x00\x00\x00\x06status\x00\x00\x00\x06200 OK\x00\x00\x00\x07version\
\x00\x00\x00\x08HTTP/1.1\x00\x00\x00\x03url\x00\x00\x00\x06public\
\x00\x00\x00\x0aset-cookie\x00\x00\x00\x0akeep-alive\x00\x00\x00\x06origin\
1001012012022052063003023033043053063074024054064074084094104114124134144154164175025045\
05203 Non-Authoritative Information204 No Content301 Moved Permanently400 Bad Request401\
\x20Unauthorized403 Forbidden404 Not Found500 Internal Server Error501 Not Implemented503 S\
ervice UnavailableJan Feb Mar Apr May Jun Jul Aug Sept Oct Nov Dec 00:00:00 Mon, Tue, We\
d, Thu, Fri, Sat, Sun, GMTchunked,text/html,image/png,image/jpg,image/gif,application/xm\
l,application/xhtml+xml,text/plain,text/javascript,publicprivatemax-age=gzip,deflate,sdc\
hcharset=utf-8charset=iso-8859-1,utf-,*,enq=0.";

/// Decompressed header blocks larger than this end the session: kubelet's
/// streams carry a handful of short headers, and the cap keeps a
/// compressed bomb from growing memory.
pub const MAX_BLOCK_LEN: usize = 256 * 1024;

/// A header block that cannot be decompressed or parsed: a session error
/// (GOAWAY with PROTOCOL_ERROR), since the shared zlib context is lost.
#[derive(Debug, thiserror::Error)]
pub enum HeaderError {
    #[error("decompressing a header block: {0}")]
    Decompress(#[from] flate2::DecompressError),
    #[error("header block decompresses to more than {MAX_BLOCK_LEN} bytes")]
    TooLarge,
    #[error("zlib takes none of the header block's last {0} bytes")]
    Stalled(usize),
    #[error("header block truncated")]
    Truncated,
    #[error("{0} bytes after the header block's last header")]
    TrailingBytes(usize),
    #[error("header name {0:?} is not a valid name")]
    Name(String),
    #[error("value of header {0} is not a valid value")]
    Value(HeaderName),
}

/// The sending direction's zlib context.
pub struct HeaderCompressor {
    zlib: Compress,
    block: Vec<u8>,
}

impl Default for HeaderCompressor {
    fn default() -> Self {
        let mut zlib = Compress::new(Compression::default(), true);
        zlib.set_dictionary(DICTIONARY)
            .expect("a fresh zlib stream takes a dictionary");
        HeaderCompressor {
            zlib,
            block: Vec::new(),
        }
    }
}

impl HeaderCompressor {
    /// The compressed block of `headers` (names as the map holds them,
    /// lower-case; several values of one name joined by NUL), ending in a
    /// sync flush so that the peer decodes it without the next one.
    pub fn compress(&mut self, headers: &HeaderMap) -> Bytes {
        self.block.clear();
        self.block.put_u32(headers.keys_len() as u32);
        for name in headers.keys() {
            self.block.put_u32(name.as_str().len() as u32);
            self.block.put_slice(name.as_str().as_bytes());
            let len_at = self.block.len();
            self.block.put_u32(0);
            for (i, value) in headers.get_all(name).iter().enumerate() {
                if i > 0 {
                    self.block.put_u8(0);
                }
                self.block.put_slice(value.as_bytes());
            }
            let len = (self.block.len() - len_at - 4) as u32;
            self.block[len_at..len_at + 4].copy_from_slice(&len.to_be_bytes());
        }

        let mut out = Vec::with_capacity(self.block.len() + 64);
        let mut input = &self.block[..];
        loop {
            let before = self.zlib.total_in();
            self.zlib
                .compress_vec(input, &mut out, FlushCompress::Sync)
                .expect("deflate of an in-memory block cannot fail");
            input = &input[(self.zlib.total_in() - before) as usize..];
            // The flush is complete once zlib leaves output space unused.
            if input.is_empty() && out.len() < out.capacity() {
                break;
            }
            out.reserve(out.capacity().max(64));
        }
        Bytes::from(out)
    }
}

/// The receiving direction's zlib context.
pub struct HeaderDecompressor {
    zlib: Decompress,
    out: Vec<u8>,
}

impl Default for HeaderDecompressor {
    fn default() -> Self {
        HeaderDecompressor {
            zlib: Decompress::new(true),
            out: Vec::new(),
        }
    }
}

impl HeaderDecompressor {
    /// Decompresses and parses the next block of the peer's stream of
    /// blocks (blocks must come in wire order).
    pub fn decompress(&mut self, block: &[u8]) -> Result<HeaderMap, HeaderError> {
        self.out.clear();
        let mut input = block;
        loop {
            if self.out.len() >= MAX_BLOCK_LEN {
                return Err(HeaderError::TooLarge);
            }
            self.out
                .reserve(4096.max(input.len() * 4).min(MAX_BLOCK_LEN));
            let (in_before, out_before) = (self.zlib.total_in(), self.zlib.total_out());
            let result = self
                .zlib
                .decompress_vec(input, &mut self.out, FlushDecompress::Sync);
            let consumed = (self.zlib.total_in() - in_before) as usize;
            input = &input[consumed..];
            match result {
                Ok(_) => {}
                // The zlib header names the dictionary by its Adler-32;
                // set_dictionary checks it against ours.
                Err(e) if e.needs_dictionary().is_some() => {
                    self.zlib.set_dictionary(DICTIONARY)?;
                    continue;
                }
                Err(e) => return Err(e.into()),
            }
            let stalled = consumed == 0 && self.zlib.total_out() == out_before;
            if input.is_empty() && (stalled || self.out.len() < self.out.capacity()) {
                break;
            }
            if stalled {
                return Err(HeaderError::Stalled(input.len()));
            }
        }
        parse_block(&self.out)
    }
}

fn take<'a>(block: &mut &'a [u8], len: usize) -> Result<&'a [u8], HeaderError> {
    if block.len() < len {
        return Err(HeaderError::Truncated);
    }
    let (head, rest) = block.split_at(len);
    *block = rest;
    Ok(head)
}

fn take_u32(block: &mut &[u8]) -> Result<usize, HeaderError> {
    let bytes = take(block, 4)?;
    Ok(u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]) as usize)
}

/// Parses a decompressed name/value block.
pub fn parse_block(mut block: &[u8]) -> Result<HeaderMap, HeaderError> {
    let count = take_u32(&mut block)?;
    let mut headers = HeaderMap::with_capacity(count.min(32));
    for _ in 0..count {
        let len = take_u32(&mut block)?;
        let name = take(&mut block, len)?;
        let name = HeaderName::from_bytes(name)
            .map_err(|_| HeaderError::Name(String::from_utf8_lossy(name).into_owned()))?;
        let len = take_u32(&mut block)?;
        for value in take(&mut block, len)?.split(|&b| b == 0) {
            let value =
                HeaderValue::from_bytes(value).map_err(|_| HeaderError::Value(name.clone()))?;
            headers.append(name.clone(), value);
        }
    }
    if !block.is_empty() {
        return Err(HeaderError::TrailingBytes(block.len()));
    }
    Ok(headers)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(
                HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_str(value).unwrap(),
            );
        }
        map
    }

    /// Adler-32 as RFC 1950 section 8 defines it, to check the zlib
    /// header against the dictionary independently of the zlib library.
    fn adler32(data: &[u8]) -> u32 {
        let (mut a, mut b) = (1u32, 0u32);
        for &byte in data {
            a = (a + u32::from(byte)) % 65521;
            b = (b + a) % 65521;
        }
        (b << 16) | a
    }

    #[test]
    fn dictionary_is_the_spdy3_one() {
        // Adler-32 of the SPDY/3 dictionary as Python's zlib computes it
        // from spdystream's bytes: every byte typed in right.
        assert_eq!(DICTIONARY.len(), 1423);
        assert_eq!(adler32(DICTIONARY), 0xe3c6_a7c2);
        assert!(DICTIONARY.starts_with(b"\x00\x00\x00\x07options"));
        assert!(DICTIONARY.ends_with(b",*,enq=0."));
    }

    #[test]
    fn compressed_block_names_the_dictionary_in_its_zlib_header() {
        let block = HeaderCompressor::default().compress(&headers(&[("streamtype", "error")]));
        // RFC 1950: CMF, FLG with FDICT (0x20) set, then DICTID = Adler-32
        // of the dictionary, big-endian; CMF*256+FLG a multiple of 31.
        assert_eq!(block[0] & 0x0f, 8, "deflate");
        assert_ne!(block[1] & 0x20, 0, "FDICT");
        assert_eq!((u16::from(block[0]) * 256 + u16::from(block[1])) % 31, 0);
        let dictid = u32::from_be_bytes([block[2], block[3], block[4], block[5]]);
        assert_eq!(dictid, adler32(DICTIONARY));
        // A sync flush ends in an empty stored block.
        assert!(block.ends_with(&[0x00, 0x00, 0xff, 0xff]));
    }

    #[test]
    fn blocks_decompress_with_a_fresh_context_in_order() {
        let first = headers(&[("streamtype", "stdout"), ("port", "80"), ("requestid", "0")]);
        let second = headers(&[("streamtype", "error"), ("x-multi", "a"), ("x-multi", "b")]);
        let mut compressor = HeaderCompressor::default();
        let a = compressor.compress(&first);
        let b = compressor.compress(&second);
        let empty = compressor.compress(&HeaderMap::new());

        let mut decompressor = HeaderDecompressor::default();
        assert_eq!(decompressor.decompress(&a).unwrap(), first);
        assert_eq!(decompressor.decompress(&b).unwrap(), second);
        assert_eq!(decompressor.decompress(&empty).unwrap(), HeaderMap::new());
        // The second block leans on the first's window: alone it fails.
        assert!(HeaderDecompressor::default().decompress(&b).is_err());
    }

    #[test]
    fn a_hand_written_block_parses() {
        let block = b"\x00\x00\x00\x02\
            \x00\x00\x00\x0astreamtype\x00\x00\x00\x05stdin\
            \x00\x00\x00\x01a\x00\x00\x00\x03x\x00y";
        let parsed = parse_block(block).unwrap();
        assert_eq!(
            parsed,
            headers(&[("streamtype", "stdin"), ("a", "x"), ("a", "y")])
        );
    }

    #[test]
    fn bad_blocks_are_errors_not_panics() {
        let mut d = HeaderDecompressor::default();
        assert!(matches!(
            d.decompress(b"not zlib at all"),
            Err(HeaderError::Decompress(_))
        ));
        // zlib data under another dictionary: set_dictionary refuses it.
        let mut other = Compress::new(Compression::default(), true);
        other.set_dictionary(b"another dictionary").unwrap();
        let mut out = Vec::with_capacity(256);
        other
            .compress_vec(b"\0\0\0\0", &mut out, FlushCompress::Sync)
            .unwrap();
        assert!(HeaderDecompressor::default().decompress(&out).is_err());

        for block in [
            &b"\x00\x00\x00"[..],
            b"\x00\x00\x00\x01\x00\x00\x00\x05ab",
            b"\x00\x00\x00\x01\x00\x00\x00\x00\x00\x00\x00\x00",
            b"\x00\x00\x00\x00extra",
            b"\x00\x00\x00\x01\x00\x00\x00\x01a\x00\x00\x00\x01\n",
            b"\xff\xff\xff\xff",
        ] {
            assert!(parse_block(block).is_err(), "{block:x?}");
        }
    }

    #[test]
    fn a_decompression_bomb_is_refused() {
        let value = "a".repeat(MAX_BLOCK_LEN);
        let block = HeaderCompressor::default().compress(&headers(&[("x", &value)]));
        assert!(block.len() < MAX_BLOCK_LEN / 100);
        assert!(matches!(
            HeaderDecompressor::default().decompress(&block),
            Err(HeaderError::TooLarge)
        ));
    }
}

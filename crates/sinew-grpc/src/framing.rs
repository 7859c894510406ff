//! gRPC message framing: a 5-byte prefix (compressed flag, big-endian length)
//! before each message, and gzip compression.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use sinew_rpc::Status;
use std::io::{Read, Write};

/// Bytes of the prefix in front of every message.
pub const PREFIX_LEN: usize = 5;

/// Message compression, as named in `grpc-encoding`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Encoding {
    /// No compression.
    Identity,
    /// gzip.
    Gzip,
}

impl Encoding {
    /// The encodings this bridge accepts, for `grpc-accept-encoding`.
    pub const ACCEPTED: &'static str = "identity,gzip";

    /// The encoding for a `grpc-encoding` value; `None` if unsupported.
    pub fn from_header(value: Option<&str>) -> Option<Encoding> {
        match value {
            None | Some("identity") => Some(Encoding::Identity),
            Some("gzip") => Some(Encoding::Gzip),
            Some(_) => None,
        }
    }

    /// The header value.
    pub fn as_str(self) -> &'static str {
        match self {
            Encoding::Identity => "identity",
            Encoding::Gzip => "gzip",
        }
    }
}

/// Splits gRPC messages out of a request body as its bytes arrive.
#[derive(Debug)]
pub struct MessageDecoder {
    buffer: BytesMut,
    encoding: Encoding,
    max_message_size: usize,
}

impl MessageDecoder {
    /// A decoder for messages compressed with `encoding` (when flagged), refusing
    /// any larger than `max_message_size` bytes, compressed or not.
    pub fn new(encoding: Encoding, max_message_size: usize) -> MessageDecoder {
        MessageDecoder {
            buffer: BytesMut::new(),
            encoding,
            max_message_size,
        }
    }

    /// Bytes held: the partial message (and any whole ones not taken yet).
    pub fn buffered(&self) -> usize {
        self.buffer.len()
    }

    /// Adds body bytes.
    pub fn push(&mut self, bytes: &[u8]) {
        self.buffer.extend_from_slice(bytes);
    }

    /// The next whole message, `Ok(None)` if more bytes are needed.
    pub fn next_message(&mut self) -> Result<Option<Bytes>, Status> {
        if self.buffer.len() < PREFIX_LEN {
            return Ok(None);
        }
        let compressed = match self.buffer[0] {
            0 => false,
            1 => true,
            flag => {
                return Err(Status::internal(format!(
                    "invalid gRPC message flag {flag} (expected 0 or 1)"
                )))
            }
        };
        let len = u32::from_be_bytes([
            self.buffer[1],
            self.buffer[2],
            self.buffer[3],
            self.buffer[4],
        ]) as usize;
        if len > self.max_message_size {
            return Err(Status::resource_exhausted(format!(
                "message of {len} bytes is larger than the limit of {} bytes",
                self.max_message_size
            )));
        }
        if self.buffer.len() < PREFIX_LEN + len {
            return Ok(None);
        }
        self.buffer.advance(PREFIX_LEN);
        let message = self.buffer.split_to(len).freeze();
        if !compressed {
            return Ok(Some(message));
        }
        match self.encoding {
            Encoding::Identity => Err(Status::internal(
                "a message is flagged compressed but the call has no grpc-encoding",
            )),
            Encoding::Gzip => {
                let mut out = Vec::new();
                flate2::read::GzDecoder::new(&message[..])
                    .take(self.max_message_size as u64 + 1)
                    .read_to_end(&mut out)
                    .map_err(|e| Status::internal(format!("cannot gunzip a message: {e}")))?;
                if out.len() > self.max_message_size {
                    return Err(Status::resource_exhausted(format!(
                        "decompressed message is larger than the limit of {} bytes",
                        self.max_message_size
                    )));
                }
                Ok(Some(out.into()))
            }
        }
    }

    /// True when a partial message is left over (the body ended mid-message).
    pub fn has_partial(&self) -> bool {
        !self.buffer.is_empty()
    }
}

/// Turns `buf`, an encoded message after [`PREFIX_LEN`] bytes of headroom, into
/// a framed gRPC message: the prefix is written in place, or, for gzip, the
/// message is compressed into a new buffer.
pub fn frame_in_place(mut buf: BytesMut, encoding: Encoding) -> Bytes {
    debug_assert!(buf.len() >= PREFIX_LEN, "no room for the gRPC prefix");
    match encoding {
        Encoding::Identity => {
            let len = (buf.len() - PREFIX_LEN) as u32;
            buf[0] = 0;
            buf[1..PREFIX_LEN].copy_from_slice(&len.to_be_bytes());
            buf.freeze()
        }
        Encoding::Gzip => encode_message(&buf[PREFIX_LEN..], encoding),
    }
}

/// One message with its prefix, compressed with `encoding`.
pub fn encode_message(message: &[u8], encoding: Encoding) -> Bytes {
    let (flag, payload) = match encoding {
        Encoding::Identity => (0u8, std::borrow::Cow::Borrowed(message)),
        Encoding::Gzip => {
            let mut gzip = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            // Writing to a Vec cannot fail.
            let _ = gzip.write_all(message);
            (
                1u8,
                std::borrow::Cow::Owned(gzip.finish().unwrap_or_default()),
            )
        }
    };
    let mut out = BytesMut::with_capacity(PREFIX_LEN + payload.len());
    out.put_u8(flag);
    out.put_u32(payload.len() as u32);
    out.put_slice(&payload);
    out.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_round_trip_whole_split_and_compressed() {
        for encoding in [Encoding::Identity, Encoding::Gzip] {
            let mut wire = BytesMut::new();
            for message in [&b"hello"[..], b"", &[7u8; 3000][..]] {
                wire.extend_from_slice(&encode_message(message, encoding));
            }
            let mut decoder = MessageDecoder::new(encoding, 1 << 20);
            let mut out = Vec::new();
            for byte in wire.iter() {
                decoder.push(&[*byte]);
                while let Some(message) = decoder.next_message().unwrap() {
                    out.push(message);
                }
            }
            assert_eq!(
                out,
                vec![
                    Bytes::from_static(b"hello"),
                    Bytes::new(),
                    Bytes::from(vec![7u8; 3000])
                ]
            );
            assert!(!decoder.has_partial());
        }
    }

    #[test]
    fn oversize_and_malformed_messages_are_refused() {
        let mut decoder = MessageDecoder::new(Encoding::Identity, 10);
        decoder.push(&encode_message(&[0u8; 11], Encoding::Identity));
        assert_eq!(
            decoder.next_message().unwrap_err().code(),
            sinew_rpc::Code::ResourceExhausted
        );

        let mut decoder = MessageDecoder::new(Encoding::Identity, 10);
        decoder.push(&[2, 0, 0, 0, 0]);
        assert_eq!(
            decoder.next_message().unwrap_err().code(),
            sinew_rpc::Code::Internal
        );

        let mut decoder = MessageDecoder::new(Encoding::Identity, 100);
        decoder.push(&encode_message(b"x", Encoding::Gzip));
        assert!(
            decoder.next_message().is_err(),
            "compressed without grpc-encoding"
        );

        // A gzip bomb is stopped at the limit.
        let mut decoder = MessageDecoder::new(Encoding::Gzip, 1000);
        decoder.push(&encode_message(&[0u8; 100_000], Encoding::Gzip));
        assert_eq!(
            decoder.next_message().unwrap_err().code(),
            sinew_rpc::Code::ResourceExhausted
        );
    }
}

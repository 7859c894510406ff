//! The frame decoder: bytes in, [`Frame`]s out.

use crate::error::{Reason, WireError};
use crate::frame::{Frame, FrameHeader, FrameKind, FRAME_HEADER_LEN};
use crate::preface::Settings;
use bytes::{Buf, BytesMut};

/// Decodes frames from a read buffer, refusing any larger than `max_frame_size`.
///
/// Contract (as tokio-util's `Decoder`): `Ok(Some(frame))` consumed one frame from
/// the front of the buffer; `Ok(None)` means more bytes are needed and nothing was
/// consumed; `Err` means the stream can never be valid again. An oversize frame is
/// refused as soon as its length field is readable, before its payload arrives, so
/// a peer cannot make us buffer it.
#[derive(Clone, Copy, Debug)]
pub struct FrameDecoder {
    max_frame_size: u32,
    max_header_list_size: u32,
}

impl FrameDecoder {
    /// A decoder accepting payloads up to `max_frame_size` bytes.
    pub fn new(max_frame_size: u32) -> FrameDecoder {
        FrameDecoder {
            max_frame_size,
            max_header_list_size: max_frame_size,
        }
    }

    /// A decoder enforcing the limits this side announced: `max_frame_size`
    /// for every frame and `max_header_list_size` for HEADERS and TRAILERS.
    pub fn from_settings(settings: &Settings) -> FrameDecoder {
        FrameDecoder {
            max_frame_size: settings.max_frame_size,
            max_header_list_size: settings.max_header_list_size,
        }
    }

    /// The largest payload accepted.
    pub fn max_frame_size(&self) -> u32 {
        self.max_frame_size
    }

    /// Decodes one frame from the front of `src`, if it is all there. Never
    /// grows `src`.
    pub fn decode(&self, src: &mut BytesMut) -> Result<Option<Frame>, WireError> {
        if src.len() < 4 {
            return Ok(None);
        }
        let length = u32::from_be_bytes([src[0], src[1], src[2], src[3]]);
        if length > self.max_frame_size {
            return Err(WireError::new(
                Reason::FrameSizeError,
                format!(
                    "frame payload of {length} bytes exceeds the maximum frame size of {} bytes",
                    self.max_frame_size
                ),
            ));
        }
        // Like the frame size, checked before the payload is buffered: parsing
        // metadata costs time per entry, so its size is bounded up front.
        if length > self.max_header_list_size
            && src.len() > 4
            && (src[4] == FrameKind::Headers as u8 || src[4] == FrameKind::Trailers as u8)
        {
            return Err(WireError::new(
                Reason::FrameSizeError,
                format!(
                    "{} frame of {length} bytes exceeds the maximum header list size of {} bytes",
                    if src[4] == FrameKind::Headers as u8 {
                        "HEADERS"
                    } else {
                        "TRAILERS"
                    },
                    self.max_header_list_size
                ),
            ));
        }
        let total = FRAME_HEADER_LEN + length as usize;
        if src.len() < total {
            // Room for the rest is the reader's to make: it decides how much
            // a peer has earned and which buffer the bytes go to.
            return Ok(None);
        }
        let mut header_bytes = [0u8; FRAME_HEADER_LEN];
        header_bytes.copy_from_slice(&src[..FRAME_HEADER_LEN]);
        let header = FrameHeader::parse(&header_bytes);
        src.advance(FRAME_HEADER_LEN);
        let payload = src.split_to(length as usize).freeze();
        Frame::parse(header, payload).map(Some)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::code::Code;
    use crate::frame::*;
    use crate::metadata::MetadataMap;
    use bytes::{BufMut, Bytes};
    use std::time::Duration;

    fn every_kind() -> Vec<Frame> {
        let mut metadata = MetadataMap::new();
        metadata.insert("x-user", "ada").unwrap();
        metadata.insert_bin("trace-bin", vec![0u8, 1, 255]).unwrap();
        vec![
            Frame::Data(Data {
                stream_id: 1,
                end_stream: true,
                payload: Bytes::from_static(b"\x0a\x02hi"),
            }),
            Frame::Data(Data {
                stream_id: 3,
                end_stream: false,
                payload: Bytes::new(),
            }),
            Frame::Headers(Headers {
                stream_id: 5,
                end_stream: false,
                timeout: Some(Duration::from_millis(250)),
                path: Bytes::from_static(b"/grpc.examples.echo.Echo/UnaryEcho"),
                metadata: metadata.clone(),
            }),
            Frame::Headers(Headers {
                stream_id: 7,
                end_stream: true,
                timeout: None,
                path: Bytes::new(),
                metadata: MetadataMap::new(),
            }),
            Frame::Trailers(Trailers {
                stream_id: 5,
                code: Code::NotFound,
                message: "no such key: k".into(),
                details: Bytes::from_static(b"\x08\x05"),
                metadata,
            }),
            Frame::HalfClose(HalfClose { stream_id: 9 }),
            Frame::Reset(Reset {
                stream_id: 9,
                code: Code::Cancelled,
                message: "caller went away".into(),
                refused: false,
            }),
            Frame::Reset(Reset {
                stream_id: 11,
                code: Code::Unavailable,
                message: "server is shutting down; call not processed".into(),
                refused: true,
            }),
            Frame::Ping(Ping {
                ack: true,
                payload: *b"12345678",
            }),
            Frame::GoAway(GoAway {
                last_stream_id: 41,
                reason: Reason::NoError,
                message: "shutting down".into(),
            }),
            Frame::WindowUpdate(WindowUpdate {
                stream_id: 0,
                increment: 65536,
            }),
        ]
    }

    #[test]
    fn every_kind_round_trips_back_to_back_and_byte_by_byte() {
        let frames = every_kind();
        let mut wire = BytesMut::new();
        for frame in &frames {
            frame.encode(&mut wire);
        }
        let decoder = FrameDecoder::new(1 << 20);
        let mut all = wire.clone();
        for frame in &frames {
            assert_eq!(decoder.decode(&mut all).unwrap().as_ref(), Some(frame));
        }
        assert!(all.is_empty());

        // Fed one byte at a time, the decoder waits for whole frames.
        let mut trickle = BytesMut::new();
        let mut decoded = Vec::new();
        for byte in wire.iter() {
            trickle.put_u8(*byte);
            while let Some(frame) = decoder.decode(&mut trickle).unwrap() {
                decoded.push(frame);
            }
        }
        assert_eq!(decoded, frames);
    }

    #[test]
    fn oversize_frame_is_refused_from_its_length_alone() {
        let decoder = FrameDecoder::new(16 * 1024);
        let mut src = BytesMut::new();
        src.put_u32(16 * 1024 + 1);
        let err = decoder.decode(&mut src).unwrap_err();
        assert_eq!(err.reason(), Reason::FrameSizeError);
    }

    fn raw(kind: u8, flags: u8, stream_id: u32, payload: &[u8]) -> BytesMut {
        let mut src = BytesMut::new();
        src.put_u32(payload.len() as u32);
        src.put_u8(kind);
        src.put_u8(flags);
        src.put_u32(stream_id);
        src.put_slice(payload);
        src
    }

    #[test]
    fn malformed_frames_are_protocol_errors() {
        let decoder = FrameDecoder::new(1 << 20);
        let cases: Vec<(&str, BytesMut)> = vec![
            ("unknown kind", raw(0x42, 0, 1, b"")),
            ("data on stream 0", raw(0x0, 0, 0, b"x")),
            ("ping on a stream", raw(0x5, 0, 1, b"12345678")),
            ("short ping", raw(0x5, 0, 0, b"123")),
            ("headers path past the end", raw(0x1, 0, 1, &[0, 9, b'/'])),
            (
                "headers path not utf-8",
                raw(0x1, 0, 1, &[0, 2, 0xff, 0xfe]),
            ),
            ("trailers without code", raw(0x2, 0, 1, &[0, 0])),
            ("metadata key too short", raw(0x1, 0, 1, &[0, 0, 5, b'a'])),
            (
                "metadata key upper-case",
                raw(0x1, 0, 1, &[0, 0, 1, b'A', 0, 0, 0, 0]),
            ),
            (
                "metadata value with newline",
                raw(0x1, 0, 1, &[0, 0, 1, b'a', 0, 0, 0, 1, b'\n']),
            ),
            ("trailing bytes", raw(0x7, 0, 0, &[0, 0, 0, 1, 9])),
        ];
        for (name, mut src) in cases {
            let err = decoder.decode(&mut src).expect_err(name);
            assert_eq!(err.reason(), Reason::ProtocolError, "{name}: {err}");
        }
        let mut zero_window = raw(0x7, 0, 0, &[0, 0, 0, 0]);
        assert_eq!(
            decoder.decode(&mut zero_window).unwrap_err().reason(),
            Reason::FlowControlError
        );
    }
}

//! Frame encoders that append to a write buffer.
//!
//! Each function appends one whole frame to `dst`. They never fail: sizes are the
//! caller's business (check a message against the peer's `max_frame_size` before
//! encoding it). To serialize a message straight into the buffer without an
//! intermediate copy, use [`begin`] / [`finish`]:
//!
//! ```
//! use bytes::{BufMut, BytesMut};
//! use sinew_wire::{encode, FrameKind};
//!
//! let mut buf = BytesMut::new();
//! let start = encode::begin(&mut buf, FrameKind::Data, 0, 1);
//! buf.put_slice(b"message bytes written in place");
//! let payload_len = encode::finish(&mut buf, start);
//! assert_eq!(payload_len, 30);
//! ```

use crate::code::Code;
use crate::error::Reason;
use crate::frame::{flags, Frame, FrameKind, FRAME_HEADER_LEN};
use crate::metadata::MetadataMap;
use bytes::{BufMut, BytesMut};
use std::time::Duration;

/// Where a frame begun with [`begin`] starts in the buffer.
#[derive(Debug)]
#[must_use = "a begun frame must be finished"]
pub struct FrameStart(usize);

/// Appends a frame header with a zero length; write the payload, then call [`finish`].
pub fn begin(dst: &mut BytesMut, kind: FrameKind, flags: u8, stream_id: u32) -> FrameStart {
    let start = dst.len();
    dst.put_u32(0);
    dst.put_u8(kind as u8);
    dst.put_u8(flags);
    dst.put_u32(stream_id);
    FrameStart(start)
}

/// Patches the length of the frame begun at `start`; returns the payload length.
pub fn finish(dst: &mut BytesMut, start: FrameStart) -> usize {
    let length = dst.len() - start.0 - FRAME_HEADER_LEN;
    dst[start.0..start.0 + 4].copy_from_slice(&(length as u32).to_be_bytes());
    length
}

/// Reserves room for a whole frame, then appends its header.
fn header(dst: &mut BytesMut, kind: FrameKind, flags: u8, stream_id: u32, length: usize) {
    dst.reserve(FRAME_HEADER_LEN + length);
    put_header(dst, kind, flags, stream_id, length);
}

fn put_header(dst: &mut BytesMut, kind: FrameKind, flags: u8, stream_id: u32, length: usize) {
    dst.put_u32(length as u32);
    dst.put_u8(kind as u8);
    dst.put_u8(flags);
    dst.put_u32(stream_id);
}

/// DATA carrying `payload` (an already-encoded message).
pub fn data(dst: &mut BytesMut, stream_id: u32, end_stream: bool, payload: &[u8]) {
    let flags = if end_stream { flags::END_STREAM } else { 0 };
    header(dst, FrameKind::Data, flags, stream_id, payload.len());
    dst.put_slice(payload);
}

/// DATA's header alone, for a payload of `payload_len` bytes that reaches the
/// peer by another way, right after it in the byte stream (a shared-memory
/// slab the message was encoded into).
pub fn data_header(dst: &mut BytesMut, stream_id: u32, end_stream: bool, payload_len: usize) {
    let flags = if end_stream { flags::END_STREAM } else { 0 };
    put_header(dst, FrameKind::Data, flags, stream_id, payload_len);
}

/// Payload length of a HEADERS frame (what the receiver's
/// `max_header_list_size` bounds).
pub fn headers_len(has_timeout: bool, path: &str, metadata: &MetadataMap) -> usize {
    let timeout_len = if has_timeout { 8 } else { 0 };
    timeout_len + 2 + path.len() + metadata.encoded_len()
}

/// Payload length of a TRAILERS frame (what the receiver's
/// `max_header_list_size` bounds).
pub fn trailers_len(message: &str, details: &[u8], metadata: &MetadataMap) -> usize {
    4 + 4 + message.len() + 4 + details.len() + metadata.encoded_len()
}

/// HEADERS: a call's path, timeout and metadata (path empty in response headers).
pub fn headers(
    dst: &mut BytesMut,
    stream_id: u32,
    end_stream: bool,
    timeout: Option<Duration>,
    path: &str,
    metadata: &MetadataMap,
) {
    let mut frame_flags = if end_stream { flags::END_STREAM } else { 0 };
    if timeout.is_some() {
        frame_flags |= flags::HAS_TIMEOUT;
    }
    let length = headers_len(timeout.is_some(), path, metadata);
    header(dst, FrameKind::Headers, frame_flags, stream_id, length);
    if let Some(timeout) = timeout {
        dst.put_u64(u64::try_from(timeout.as_micros()).unwrap_or(u64::MAX));
    }
    dst.put_u16(path.len() as u16);
    dst.put_slice(path.as_bytes());
    encode_metadata(dst, metadata);
}

/// TRAILERS: the status that ends a call, with trailing metadata.
pub fn trailers(
    dst: &mut BytesMut,
    stream_id: u32,
    code: Code,
    message: &str,
    details: &[u8],
    metadata: &MetadataMap,
) {
    let length = trailers_len(message, details, metadata);
    header(dst, FrameKind::Trailers, 0, stream_id, length);
    dst.put_u32(code.as_u32());
    dst.put_u32(message.len() as u32);
    dst.put_slice(message.as_bytes());
    dst.put_u32(details.len() as u32);
    dst.put_slice(details);
    encode_metadata(dst, metadata);
}

/// HALF_CLOSE: no more messages from this side on the stream.
pub fn half_close(dst: &mut BytesMut, stream_id: u32) {
    header(dst, FrameKind::HalfClose, 0, stream_id, 0);
}

/// RESET: abort the stream with a code and an explanation.
///
/// `refused` (servers only) says the call never reached application code: the
/// client may send it again (flag `REFUSED`).
pub fn reset(dst: &mut BytesMut, stream_id: u32, code: Code, message: &str, refused: bool) {
    let flags = if refused { flags::REFUSED } else { 0 };
    header(dst, FrameKind::Reset, flags, stream_id, 4 + message.len());
    dst.put_u32(code.as_u32());
    dst.put_slice(message.as_bytes());
}

/// PING, or its answer when `ack` is set.
pub fn ping(dst: &mut BytesMut, ack: bool, payload: [u8; 8]) {
    let flags = if ack { flags::ACK } else { 0 };
    header(dst, FrameKind::Ping, flags, 0, 8);
    dst.put_slice(&payload);
}

/// GOAWAY: no stream above `last_stream_id` will be served.
pub fn goaway(dst: &mut BytesMut, last_stream_id: u32, reason: Reason, message: &str) {
    header(dst, FrameKind::GoAway, 0, 0, 8 + message.len());
    dst.put_u32(last_stream_id);
    dst.put_u32(reason.as_u32());
    dst.put_slice(message.as_bytes());
}

/// WINDOW_UPDATE: return `increment` bytes of credit (stream 0: the connection).
pub fn window_update(dst: &mut BytesMut, stream_id: u32, increment: u32) {
    header(dst, FrameKind::WindowUpdate, 0, stream_id, 4);
    dst.put_u32(increment);
}

fn encode_metadata(dst: &mut BytesMut, metadata: &MetadataMap) {
    for (key, value) in metadata.iter() {
        dst.put_u8(key.len() as u8);
        dst.put_slice(key.as_bytes());
        dst.put_u32(value.len() as u32);
        dst.put_slice(value);
    }
}

impl Frame {
    /// Appends this frame to `dst` (convenient for tests and tools; the RPC layer
    /// calls the functions of this module directly to avoid building a `Frame`).
    pub fn encode(&self, dst: &mut BytesMut) {
        match self {
            Frame::Data(f) => data(dst, f.stream_id, f.end_stream, &f.payload),
            Frame::Headers(f) => headers(
                dst,
                f.stream_id,
                f.end_stream,
                f.timeout,
                f.path_str(),
                &f.metadata,
            ),
            Frame::Trailers(f) => trailers(
                dst,
                f.stream_id,
                f.code,
                &f.message,
                &f.details,
                &f.metadata,
            ),
            Frame::HalfClose(f) => half_close(dst, f.stream_id),
            Frame::Reset(f) => reset(dst, f.stream_id, f.code, &f.message, f.refused),
            Frame::Ping(f) => ping(dst, f.ack, f.payload),
            Frame::GoAway(f) => goaway(dst, f.last_stream_id, f.reason, &f.message),
            Frame::WindowUpdate(f) => window_update(dst, f.stream_id, f.increment),
        }
    }
}

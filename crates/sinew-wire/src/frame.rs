//! Frames: the unit of everything sent after the preface.
//!
//! Every frame starts with the same 10-byte header:
//!
//! ```text
//!  0                   1                   2                   3
//!  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//! +---------------------------------------------------------------+
//! |                 payload length (u32, big-endian)              |
//! +---------------+---------------+-------------------------------+
//! |   kind (u8)   |  flags (u8)   |  stream id (u32) ...          |
//! +---------------+---------------+-------------------------------+
//! |  ... stream id                |  payload (length bytes) ...   |
//! +-------------------------------+-------------------------------+
//! ```
//!
//! All integers are big-endian. Stream 0 is the connection itself; every call is
//! one stream with a non-zero id chosen by the client. The payload layout of each
//! kind is documented on its struct below and in `docs/protocol.md`.

use crate::code::Code;
use crate::error::{Reason, WireError};
use crate::metadata::{MetadataMap, MAX_KEY_LEN};
use bytes::{Buf, Bytes};
use std::time::Duration;

/// Bytes in a frame header.
pub const FRAME_HEADER_LEN: usize = 10;

/// What a DATA frame costs in flow control on top of its payload: a receiver
/// queues an item per message whatever its size, so windows bound the number
/// of queued messages as well as their bytes (an empty message is not free).
pub const DATA_FRAME_COST: usize = 64;

/// Flow-control cost of a DATA frame whose payload is `payload_len` bytes
/// (`docs/protocol.md`, section 4).
pub const fn flow_cost(payload_len: usize) -> usize {
    payload_len + DATA_FRAME_COST
}

/// Flag bits; which ones a kind honours is documented on its struct.
/// Bits a kind does not define must be sent as zero and are ignored on receipt.
pub mod flags {
    /// DATA, HEADERS: the sender sends nothing more on this stream (half-close).
    pub const END_STREAM: u8 = 0x1;
    /// HEADERS: a 64-bit timeout in microseconds precedes the path.
    pub const HAS_TIMEOUT: u8 = 0x2;
    /// PING: this ping answers one received.
    pub const ACK: u8 = 0x1;
    /// RESET from a server: the call was refused before any application code
    /// saw it (stream limit, opened after GOAWAY), so it may be sent again.
    pub const REFUSED: u8 = 0x1;
}

/// What a frame is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum FrameKind {
    /// One message of a call.
    Data = 0x0,
    /// Opens a call (client to server) or carries response metadata (server to client).
    Headers = 0x1,
    /// Ends a call with its status (server to client).
    Trailers = 0x2,
    /// The sender will send no more messages on the stream.
    HalfClose = 0x3,
    /// Aborts one stream (cancellation, refusal).
    Reset = 0x4,
    /// Liveness check; must be answered with an ACK.
    Ping = 0x5,
    /// The sender will accept no new streams; graceful shutdown or a connection error.
    GoAway = 0x6,
    /// Returns flow-control credit to the peer.
    WindowUpdate = 0x7,
}

impl FrameKind {
    /// The kind for a byte on the wire, if it is one this version knows.
    pub fn from_u8(value: u8) -> Option<FrameKind> {
        Some(match value {
            0x0 => FrameKind::Data,
            0x1 => FrameKind::Headers,
            0x2 => FrameKind::Trailers,
            0x3 => FrameKind::HalfClose,
            0x4 => FrameKind::Reset,
            0x5 => FrameKind::Ping,
            0x6 => FrameKind::GoAway,
            0x7 => FrameKind::WindowUpdate,
            _ => return None,
        })
    }
}

/// The fixed 10-byte header in front of every frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameHeader {
    /// Payload bytes that follow the header.
    pub length: u32,
    /// The raw kind byte (may be unknown).
    pub kind: u8,
    /// Flag bits.
    pub flags: u8,
    /// 0 for the connection, otherwise the call.
    pub stream_id: u32,
}

impl FrameHeader {
    /// Reads a header from the first [`FRAME_HEADER_LEN`] bytes of `bytes`.
    pub fn parse(bytes: &[u8; FRAME_HEADER_LEN]) -> FrameHeader {
        FrameHeader {
            length: u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]),
            kind: bytes[4],
            flags: bytes[5],
            stream_id: u32::from_be_bytes([bytes[6], bytes[7], bytes[8], bytes[9]]),
        }
    }
}

/// A decoded frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Frame {
    /// See [`Data`].
    Data(Data),
    /// See [`Headers`].
    Headers(Headers),
    /// See [`Trailers`].
    Trailers(Trailers),
    /// See [`HalfClose`].
    HalfClose(HalfClose),
    /// See [`Reset`].
    Reset(Reset),
    /// See [`Ping`].
    Ping(Ping),
    /// See [`GoAway`].
    GoAway(GoAway),
    /// See [`WindowUpdate`].
    WindowUpdate(WindowUpdate),
}

/// DATA: one whole message (protobuf bytes), counted against flow control.
///
/// Payload: the message. Flags: `END_STREAM`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Data {
    /// The call.
    pub stream_id: u32,
    /// No more messages follow from this sender.
    pub end_stream: bool,
    /// The encoded message.
    pub payload: Bytes,
}

/// HEADERS: opens a call, or (from the server) carries response metadata.
///
/// ```text
/// [timeout micros: u64, only if HAS_TIMEOUT] [path length: u16] [path: UTF-8]
/// [metadata entries until the end of the payload]
/// metadata entry: [key length: u8] [key: ASCII] [value length: u32] [value]
/// ```
///
/// The path is `/package.Service/Method`; it is empty in response headers.
/// Flags: `END_STREAM` (no request messages follow), `HAS_TIMEOUT`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Headers {
    /// The call.
    pub stream_id: u32,
    /// No messages follow from this sender.
    pub end_stream: bool,
    /// Time the caller allows for the call, measured from when it sent the frame.
    pub timeout: Option<Duration>,
    /// `/package.Service/Method`, or empty in response headers (valid UTF-8).
    pub path: Bytes,
    /// Call metadata.
    pub metadata: MetadataMap,
}

impl Headers {
    /// The path as text (validated as UTF-8 when decoded).
    pub fn path_str(&self) -> &str {
        std::str::from_utf8(&self.path).unwrap_or("")
    }
}

/// TRAILERS: ends a call with its status; the server's last frame on the stream.
///
/// ```text
/// [code: u32] [message length: u32] [message: UTF-8]
/// [details length: u32] [details: bytes] [metadata entries until the end]
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Trailers {
    /// The call.
    pub stream_id: u32,
    /// Status code (unknown numbers decode as `Unknown`).
    pub code: Code,
    /// Status message for humans.
    pub message: String,
    /// Opaque status details (in gRPC, an encoded `google.rpc.Status`).
    pub details: Bytes,
    /// Trailing metadata.
    pub metadata: MetadataMap,
}

/// HALF_CLOSE: the sender will send no more messages on this stream. Empty payload.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HalfClose {
    /// The call.
    pub stream_id: u32,
}

/// RESET: aborts a stream at once; both sides forget it.
///
/// `[code: u32] [message: UTF-8, rest of the payload]`
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reset {
    /// The call.
    pub stream_id: u32,
    /// Why: `Cancelled` when a client gives up, `Unavailable` when a server refuses
    /// a stream it never processed, `ResourceExhausted` past a limit, ...
    pub code: Code,
    /// Explanation for humans.
    pub message: String,
    /// Set by a server that refused the call before any application code saw
    /// it (flag `REFUSED`): sending it again is safe, even if it is not
    /// idempotent.
    pub refused: bool,
}

/// PING: on stream 0; the receiver answers with the same 8 bytes and `ACK`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ping {
    /// This frame answers a ping.
    pub ack: bool,
    /// Opaque data echoed back.
    pub payload: [u8; 8],
}

/// GOAWAY: on stream 0; the sender will start no stream above `last_stream_id`.
///
/// `[last stream id: u32] [reason: u32] [message: UTF-8, rest of the payload]`
///
/// Streams up to `last_stream_id` are finished normally; streams above it were
/// never processed and may be retried elsewhere. With a reason other than
/// `NO_ERROR` the sender closes the connection right after this frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GoAway {
    /// Highest stream id the sender processed or will process.
    pub last_stream_id: u32,
    /// Why the connection goes away.
    pub reason: Reason,
    /// Explanation for humans.
    pub message: String,
}

/// WINDOW_UPDATE: returns `increment` bytes of send credit; stream 0 is the connection.
///
/// `[increment: u32, 1 ..= 2^31-1]`
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WindowUpdate {
    /// 0 for the connection window, otherwise the stream's.
    pub stream_id: u32,
    /// Credit returned, in DATA payload bytes.
    pub increment: u32,
}

impl Frame {
    /// Parses the payload of a frame whose header has been read.
    pub(crate) fn parse(header: FrameHeader, mut payload: Bytes) -> Result<Frame, WireError> {
        let kind = FrameKind::from_u8(header.kind).ok_or_else(|| {
            WireError::protocol(format!("unknown frame kind 0x{:02x}", header.kind))
        })?;
        let stream_id = header.stream_id;
        let on_stream = matches!(
            kind,
            FrameKind::Data
                | FrameKind::Headers
                | FrameKind::Trailers
                | FrameKind::HalfClose
                | FrameKind::Reset
        );
        if on_stream && stream_id == 0 {
            return Err(WireError::protocol(format!("{kind:?} frame on stream 0")));
        }
        if matches!(kind, FrameKind::Ping | FrameKind::GoAway) && stream_id != 0 {
            return Err(WireError::protocol(format!(
                "{kind:?} frame on stream {stream_id}; it belongs on stream 0"
            )));
        }
        let mut reader = Reader {
            kind,
            bytes: &mut payload,
        };
        let frame = match kind {
            FrameKind::Data => {
                return Ok(Frame::Data(Data {
                    stream_id,
                    end_stream: header.flags & flags::END_STREAM != 0,
                    payload,
                }))
            }
            FrameKind::Headers => {
                let timeout = if header.flags & flags::HAS_TIMEOUT != 0 {
                    Some(Duration::from_micros(reader.u64()?))
                } else {
                    None
                };
                let path_len = reader.u16()? as usize;
                let path = reader.take(path_len)?;
                if std::str::from_utf8(&path).is_err() {
                    return Err(WireError::protocol("HEADERS path is not valid UTF-8"));
                }
                Frame::Headers(Headers {
                    stream_id,
                    end_stream: header.flags & flags::END_STREAM != 0,
                    timeout,
                    path,
                    metadata: reader.metadata()?,
                })
            }
            FrameKind::Trailers => {
                let code = Code::from_u32(reader.u32()?);
                let message_len = reader.u32()? as usize;
                let message = reader.text(message_len)?;
                let details_len = reader.u32()? as usize;
                let details = reader.take(details_len)?;
                Frame::Trailers(Trailers {
                    stream_id,
                    code,
                    message,
                    details,
                    metadata: reader.metadata()?,
                })
            }
            FrameKind::HalfClose => Frame::HalfClose(HalfClose { stream_id }),
            FrameKind::Reset => {
                let code = Code::from_u32(reader.u32()?);
                let rest = reader.remaining();
                Frame::Reset(Reset {
                    stream_id,
                    code,
                    message: reader.text(rest)?,
                    refused: header.flags & flags::REFUSED != 0,
                })
            }
            FrameKind::Ping => {
                let mut data = [0u8; 8];
                data.copy_from_slice(&reader.take(8)?);
                Frame::Ping(Ping {
                    ack: header.flags & flags::ACK != 0,
                    payload: data,
                })
            }
            FrameKind::GoAway => {
                let last_stream_id = reader.u32()?;
                let reason = Reason::from_u32(reader.u32()?);
                let rest = reader.remaining();
                Frame::GoAway(GoAway {
                    last_stream_id,
                    reason,
                    message: reader.text(rest)?,
                })
            }
            FrameKind::WindowUpdate => {
                let increment = reader.u32()?;
                if increment == 0 || increment > i32::MAX as u32 {
                    return Err(WireError::new(
                        Reason::FlowControlError,
                        format!("WINDOW_UPDATE increment {increment} outside 1..=2^31-1"),
                    ));
                }
                Frame::WindowUpdate(WindowUpdate {
                    stream_id,
                    increment,
                })
            }
        };
        if reader.remaining() != 0 {
            return Err(WireError::protocol(format!(
                "{kind:?} frame has {} bytes after its last field",
                reader.remaining()
            )));
        }
        Ok(frame)
    }
}

/// Bounds-checked field reader over one frame's payload.
struct Reader<'a> {
    kind: FrameKind,
    bytes: &'a mut Bytes,
}

impl Reader<'_> {
    fn remaining(&self) -> usize {
        self.bytes.remaining()
    }

    fn need(&self, n: usize, what: &str) -> Result<(), WireError> {
        if self.bytes.remaining() < n {
            Err(WireError::protocol(format!(
                "{:?} frame too short: {what} needs {n} bytes, {} left",
                self.kind,
                self.bytes.remaining()
            )))
        } else {
            Ok(())
        }
    }

    fn u16(&mut self) -> Result<u16, WireError> {
        self.need(2, "a u16 field")?;
        Ok(self.bytes.get_u16())
    }

    fn u32(&mut self) -> Result<u32, WireError> {
        self.need(4, "a u32 field")?;
        Ok(self.bytes.get_u32())
    }

    fn u64(&mut self) -> Result<u64, WireError> {
        self.need(8, "a u64 field")?;
        Ok(self.bytes.get_u64())
    }

    fn take(&mut self, n: usize) -> Result<Bytes, WireError> {
        self.need(n, "a length-prefixed field")?;
        Ok(self.bytes.split_to(n))
    }

    fn text(&mut self, n: usize) -> Result<String, WireError> {
        let bytes = self.take(n)?;
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    }

    fn metadata(&mut self) -> Result<MetadataMap, WireError> {
        let mut map = MetadataMap::new();
        while self.bytes.has_remaining() {
            let key_len = self.bytes.get_u8() as usize;
            debug_assert!(key_len <= MAX_KEY_LEN);
            let key_bytes = self.take(key_len)?;
            let key = std::str::from_utf8(&key_bytes)
                .map_err(|_| WireError::protocol("metadata key is not ASCII"))?;
            MetadataMap::validate_key(key).map_err(|e| WireError::protocol(e.to_string()))?;
            let value_len = self.u32()? as usize;
            let value = self.take(value_len)?;
            MetadataMap::validate_value(key, &value)
                .map_err(|e| WireError::protocol(e.to_string()))?;
            // The key is a slice of the frame, as the value is: no copy.
            map.push_unchecked(key_bytes, value);
        }
        Ok(map)
    }
}

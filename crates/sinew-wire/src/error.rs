//! Connection-level errors: what makes a byte stream unusable as a sinew connection.
//!
//! A [`WireError`] always closes the connection: the side that detects it sends a
//! GOAWAY carrying the [`Reason`] and a human-readable message, then closes. Errors
//! that concern one call only (unknown method, bad request message, ...) are not
//! wire errors; they end that one stream with a status and the connection goes on.

use std::fmt;

/// Why a connection is being closed; carried in GOAWAY frames.
///
/// This is a code space of its own (like HTTP/2's error codes), distinct from the
/// per-call [`Code`](crate::Code): it describes the connection, not a call.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u32)]
pub enum Reason {
    /// Graceful shutdown; no error.
    NoError = 0,
    /// The peer broke a rule of the protocol (bad frame layout, unknown frame kind,
    /// frame on the wrong stream, stream ids going backwards, ...).
    ProtocolError = 1,
    /// The side sending it failed internally.
    InternalError = 2,
    /// The peer sent more data than the flow-control window allowed.
    FlowControlError = 3,
    /// A frame was larger than the receiver's advertised maximum frame size.
    FrameSizeError = 4,
    /// The connection did not start with a valid sinew preface (wrong magic bytes).
    BadPreface = 5,
    /// The preface carried a protocol version this side does not speak.
    UnsupportedVersion = 6,
    /// The peer is using too many resources (for instance it never reads and keeps
    /// sending frames that need an answer).
    EnhanceYourCalm = 7,
}

impl Reason {
    /// The reason for a number on the wire; unknown numbers map to `InternalError`.
    pub fn from_u32(value: u32) -> Reason {
        match value {
            0 => Reason::NoError,
            1 => Reason::ProtocolError,
            3 => Reason::FlowControlError,
            4 => Reason::FrameSizeError,
            5 => Reason::BadPreface,
            6 => Reason::UnsupportedVersion,
            7 => Reason::EnhanceYourCalm,
            _ => Reason::InternalError,
        }
    }

    /// The number of this reason on the wire.
    pub fn as_u32(self) -> u32 {
        self as u32
    }

    /// The upper-case name used in docs and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::NoError => "NO_ERROR",
            Reason::ProtocolError => "PROTOCOL_ERROR",
            Reason::InternalError => "INTERNAL_ERROR",
            Reason::FlowControlError => "FLOW_CONTROL_ERROR",
            Reason::FrameSizeError => "FRAME_SIZE_ERROR",
            Reason::BadPreface => "BAD_PREFACE",
            Reason::UnsupportedVersion => "UNSUPPORTED_VERSION",
            Reason::EnhanceYourCalm => "ENHANCE_YOUR_CALM",
        }
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Bytes that can never become a valid frame or preface.
///
/// The connection cannot continue after this error; send a GOAWAY with
/// [`WireError::reason`] and [`WireError::message`], then close.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{reason}: {message}")]
pub struct WireError {
    reason: Reason,
    message: String,
}

impl WireError {
    /// A wire error with its reason and a message that says what was wrong.
    pub fn new(reason: Reason, message: impl Into<String>) -> WireError {
        WireError {
            reason,
            message: message.into(),
        }
    }

    /// A `PROTOCOL_ERROR` with a message.
    pub fn protocol(message: impl Into<String>) -> WireError {
        WireError::new(Reason::ProtocolError, message)
    }

    /// The reason to send in the GOAWAY.
    pub fn reason(&self) -> Reason {
        self.reason
    }

    /// What exactly was wrong, for humans.
    pub fn message(&self) -> &str {
        &self.message
    }
}

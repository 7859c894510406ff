//! The connection preface: the first bytes each side sends.
//!
//! ```text
//!  0                   1                   2                   3
//!  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//! +---------------------------------------------------------------+
//! |        magic: 0x89 'S' 'I' 'N' 'E' 'W' '\r' '\n' (8 bytes)     |
//! +-------------------------------+-------------------------------+
//! |        version (u16)          |    settings length (u16)      |
//! +-------------------------------+-------------------------------+
//! |  setting id (u16)             |  setting value (u32) ...      |
//! +-------------------------------+-------------------------------+
//! ```
//!
//! The magic starts with a byte above 0x7F, so no text protocol (HTTP/1.x, the
//! HTTP/2 preface `PRI * HTTP/2.0`) and no TLS record (0x16) can be mistaken for
//! sinew: a listener can route a connection on its first byte. Settings are
//! (id, value) pairs; ids this version does not know are ignored so that later
//! versions can add settings. Each side announces the limits *it* enforces on
//! what it receives; the other side must respect them.

use crate::error::{Reason, WireError};
use bytes::{Buf, BufMut, BytesMut};

/// The eight bytes every sinew connection starts with, in both directions.
pub const MAGIC: [u8; 8] = [0x89, b'S', b'I', b'N', b'E', b'W', b'\r', b'\n'];

/// The protocol version this crate speaks.
pub const PROTOCOL_VERSION: u16 = 1;

const FIXED_LEN: usize = MAGIC.len() + 2 + 2;
const SETTING_LEN: usize = 6;
/// More settings than this is not a preface but an attack on the parser.
const MAX_SETTINGS: usize = 64;

const SETTING_MAX_FRAME_SIZE: u16 = 1;
const SETTING_INITIAL_STREAM_WINDOW: u16 = 2;
const SETTING_INITIAL_CONNECTION_WINDOW: u16 = 3;
const SETTING_MAX_CONCURRENT_STREAMS: u16 = 4;
const SETTING_MAX_HEADER_LIST_SIZE: u16 = 5;

/// The limits one side enforces on what it receives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Settings {
    /// Largest frame payload, in bytes, this side accepts (16 KiB ..= 2^31-1).
    /// One message travels in one DATA frame, so this is also the largest message.
    pub max_frame_size: u32,
    /// Flow-control window of each new stream, in DATA payload bytes.
    pub initial_stream_window: u32,
    /// Flow-control window of the whole connection, in DATA payload bytes.
    pub initial_connection_window: u32,
    /// How many streams (calls) the peer may have open at once on this connection.
    pub max_concurrent_streams: u32,
    /// Largest HEADERS or TRAILERS payload, in bytes, this side accepts (path,
    /// timeout, status message and details, and metadata together; 1 KiB ..=
    /// 2^31-1). The cap on what one call's metadata costs to receive and parse.
    pub max_header_list_size: u32,
}

impl Settings {
    /// Smallest allowed `max_frame_size`.
    pub const MIN_FRAME_SIZE: u32 = 16 * 1024;
    /// Smallest allowed `max_header_list_size`.
    pub const MIN_HEADER_LIST_SIZE: u32 = 1024;
    /// Largest allowed value of any size or window.
    pub const MAX_VALUE: u32 = i32::MAX as u32;

    /// Sets `max_frame_size`, brought into its valid range (16 KiB ..= 2^31-1).
    pub fn set_max_frame_size(&mut self, bytes: u32) {
        self.max_frame_size = bytes.clamp(Settings::MIN_FRAME_SIZE, Settings::MAX_VALUE);
    }

    /// Sets `initial_stream_window`, brought into its valid range (1 ..= 2^31-1).
    pub fn set_initial_stream_window(&mut self, bytes: u32) {
        self.initial_stream_window = bytes.clamp(1, Settings::MAX_VALUE);
    }

    /// Sets `initial_connection_window`, brought into its valid range (1 ..= 2^31-1).
    pub fn set_initial_connection_window(&mut self, bytes: u32) {
        self.initial_connection_window = bytes.clamp(1, Settings::MAX_VALUE);
    }

    /// Sets `max_concurrent_streams`, brought into its valid range (1 ..= 2^31-1).
    pub fn set_max_concurrent_streams(&mut self, limit: u32) {
        self.max_concurrent_streams = limit.clamp(1, Settings::MAX_VALUE);
    }

    /// Sets `max_header_list_size`, brought into its valid range (1 KiB ..= 2^31-1).
    pub fn set_max_header_list_size(&mut self, bytes: u32) {
        self.max_header_list_size =
            bytes.clamp(Settings::MIN_HEADER_LIST_SIZE, Settings::MAX_VALUE);
    }
}

impl Default for Settings {
    fn default() -> Settings {
        Settings {
            max_frame_size: 4 * 1024 * 1024,
            initial_stream_window: 1024 * 1024,
            initial_connection_window: 8 * 1024 * 1024,
            max_concurrent_streams: 1024,
            max_header_list_size: 16 * 1024,
        }
    }
}

/// The preface one side sends: protocol version and settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Preface {
    /// The protocol version of the sender.
    pub version: u16,
    /// The sender's receive limits.
    pub settings: Settings,
}

impl Preface {
    /// A preface for this crate's protocol version.
    pub fn new(settings: Settings) -> Preface {
        Preface {
            version: PROTOCOL_VERSION,
            settings,
        }
    }

    /// True when `first_bytes` (however few) could be the start of a sinew preface;
    /// used to sniff the protocol of a new connection.
    pub fn matches_prefix(first_bytes: &[u8]) -> bool {
        let n = first_bytes.len().min(MAGIC.len());
        first_bytes[..n] == MAGIC[..n]
    }

    /// Appends this preface to `dst`.
    pub fn encode(&self, dst: &mut BytesMut) {
        let settings = [
            (SETTING_MAX_FRAME_SIZE, self.settings.max_frame_size),
            (
                SETTING_INITIAL_STREAM_WINDOW,
                self.settings.initial_stream_window,
            ),
            (
                SETTING_INITIAL_CONNECTION_WINDOW,
                self.settings.initial_connection_window,
            ),
            (
                SETTING_MAX_CONCURRENT_STREAMS,
                self.settings.max_concurrent_streams,
            ),
            (
                SETTING_MAX_HEADER_LIST_SIZE,
                self.settings.max_header_list_size,
            ),
        ];
        dst.reserve(FIXED_LEN + settings.len() * SETTING_LEN);
        dst.put_slice(&MAGIC);
        dst.put_u16(self.version);
        dst.put_u16((settings.len() * SETTING_LEN) as u16);
        for (id, value) in settings {
            dst.put_u16(id);
            dst.put_u32(value);
        }
    }

    /// Decodes a preface from the front of `src`.
    ///
    /// `Ok(None)`: not enough bytes yet. Wrong magic bytes are reported as soon as
    /// the first differing byte arrives, so garbage is refused without waiting.
    /// Unknown setting ids are skipped; values out of range are an error.
    pub fn decode(src: &mut BytesMut) -> Result<Option<Preface>, WireError> {
        if !Preface::matches_prefix(src) {
            return Err(WireError::new(
                Reason::BadPreface,
                "connection does not start with the sinew preface (magic bytes 0x89 \"SINEW\\r\\n\")",
            ));
        }
        if src.len() < FIXED_LEN {
            return Ok(None);
        }
        let version = u16::from_be_bytes([src[8], src[9]]);
        let settings_len = u16::from_be_bytes([src[10], src[11]]) as usize;
        if version != PROTOCOL_VERSION {
            return Err(WireError::new(
                Reason::UnsupportedVersion,
                format!("peer speaks sinew protocol version {version}; this side speaks version {PROTOCOL_VERSION}"),
            ));
        }
        if !settings_len.is_multiple_of(SETTING_LEN) || settings_len / SETTING_LEN > MAX_SETTINGS {
            return Err(WireError::new(
                Reason::BadPreface,
                format!("settings length {settings_len} is not a multiple of 6 bytes up to {MAX_SETTINGS} settings"),
            ));
        }
        if src.len() < FIXED_LEN + settings_len {
            return Ok(None);
        }
        src.advance(FIXED_LEN);
        let mut body = src.split_to(settings_len);
        let mut settings = Settings::default();
        while body.has_remaining() {
            let id = body.get_u16();
            let value = body.get_u32();
            let in_range = |low: u32| {
                if (low..=Settings::MAX_VALUE).contains(&value) {
                    Ok(value)
                } else {
                    Err(WireError::new(
                        Reason::BadPreface,
                        format!(
                            "setting {id} has value {value}, outside {low}..={}",
                            Settings::MAX_VALUE
                        ),
                    ))
                }
            };
            match id {
                SETTING_MAX_FRAME_SIZE => {
                    settings.max_frame_size = in_range(Settings::MIN_FRAME_SIZE)?
                }
                SETTING_INITIAL_STREAM_WINDOW => settings.initial_stream_window = in_range(1)?,
                SETTING_INITIAL_CONNECTION_WINDOW => {
                    settings.initial_connection_window = in_range(1)?
                }
                SETTING_MAX_CONCURRENT_STREAMS => settings.max_concurrent_streams = in_range(1)?,
                SETTING_MAX_HEADER_LIST_SIZE => {
                    settings.max_header_list_size = in_range(Settings::MIN_HEADER_LIST_SIZE)?
                }
                _ => {} // unknown settings are ignored, for forward compatibility
            }
        }
        Ok(Some(Preface { version, settings }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_needs_every_byte() {
        let preface = Preface::new(Settings {
            max_frame_size: 1 << 20,
            initial_stream_window: 12345,
            initial_connection_window: 99999,
            max_concurrent_streams: 7,
            max_header_list_size: 4096,
        });
        let mut encoded = BytesMut::new();
        preface.encode(&mut encoded);
        for cut in 0..encoded.len() {
            let mut partial = BytesMut::from(&encoded[..cut]);
            assert_eq!(Preface::decode(&mut partial), Ok(None), "cut at {cut}");
        }
        encoded.extend_from_slice(b"next");
        assert_eq!(Preface::decode(&mut encoded), Ok(Some(preface)));
        assert_eq!(&encoded[..], b"next");
    }

    #[test]
    fn garbage_is_refused_on_the_first_byte() {
        let err = Preface::decode(&mut BytesMut::from(&b"G"[..])).unwrap_err();
        assert_eq!(err.reason(), Reason::BadPreface);
        let err = Preface::decode(&mut BytesMut::from(
            &b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"[..],
        ))
        .unwrap_err();
        assert_eq!(err.reason(), Reason::BadPreface);
    }

    #[test]
    fn other_versions_and_bad_values_are_refused_and_unknown_ids_skipped() {
        let mut bytes = BytesMut::new();
        bytes.put_slice(&MAGIC);
        bytes.put_u16(2);
        bytes.put_u16(0);
        assert_eq!(
            Preface::decode(&mut bytes).unwrap_err().reason(),
            Reason::UnsupportedVersion
        );

        let mut bytes = BytesMut::new();
        bytes.put_slice(&MAGIC);
        bytes.put_u16(1);
        bytes.put_u16(12);
        bytes.put_u16(99); // unknown: skipped
        bytes.put_u32(5);
        bytes.put_u16(SETTING_MAX_FRAME_SIZE);
        bytes.put_u32(100); // below the 16 KiB minimum
        assert_eq!(
            Preface::decode(&mut bytes).unwrap_err().reason(),
            Reason::BadPreface
        );

        let mut bytes = BytesMut::new();
        bytes.put_slice(&MAGIC);
        bytes.put_u16(1);
        bytes.put_u16(7);
        assert_eq!(
            Preface::decode(&mut bytes).unwrap_err().reason(),
            Reason::BadPreface
        );
    }
}

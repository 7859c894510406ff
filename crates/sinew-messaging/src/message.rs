//! [`Message`]: what is published and delivered, and the rules a message
//! is checked against before any subscriber sees it.

use crate::error::Error;
use crate::subject::Subject;
use bytes::Bytes;

/// A message: its subject, where to reply (for a request), headers and
/// payload.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    /// What it was published to.
    pub subject: Subject,
    /// Where the publisher waits for an answer, for a request.
    pub reply: Option<Subject>,
    /// Headers, in the order added (names may repeat).
    pub headers: Vec<(String, String)>,
    /// The body.
    pub payload: Bytes,
}

impl Message {
    /// A message to `subject` with `payload`, no headers, no reply.
    pub fn new(subject: Subject, payload: impl Into<Bytes>) -> Message {
        Message {
            subject,
            reply: None,
            headers: Vec::new(),
            payload: payload.into(),
        }
    }

    /// The first value of header `name`.
    pub fn header(&self, name: &str) -> Option<&str> {
        header(&self.headers, name)
    }

    /// Adds a header (checked when the message is published).
    pub fn with_header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// A message to `subject` whose payload is `message`, encoded.
    pub fn encode<M: prost::Message>(subject: Subject, message: &M) -> Message {
        Message::new(subject, message.encode_to_vec())
    }

    /// The payload, decoded as an `M`.
    pub fn decode<M: prost::Message + Default>(&self) -> Result<M, prost::DecodeError> {
        M::decode(self.payload.clone())
    }

    /// Checks the payload's size against `max_payload` and every header.
    pub(crate) fn check(&self, max_payload: usize) -> Result<(), Error> {
        check_payload(self.payload.len(), max_payload)?;
        check_headers(&self.headers)
    }
}

/// The first value of header `name` in `headers`.
pub(crate) fn header<'h>(headers: &'h [(String, String)], name: &str) -> Option<&'h str> {
    headers
        .iter()
        .find(|(key, _)| key == name)
        .map(|(_, value)| value.as_str())
}

/// A payload of `size` bytes is at most `max`.
pub(crate) fn check_payload(size: usize, max: usize) -> Result<(), Error> {
    if size > max {
        return Err(Error::PayloadTooLarge { size, max });
    }
    Ok(())
}

/// Checks headers: a name of visible characters without `:`, a value
/// without line breaks or other control characters (tab allowed).
pub(crate) fn check_headers(headers: &[(String, String)]) -> Result<(), Error> {
    for (name, value) in headers {
        let bad_name = name.is_empty()
            || name
                .chars()
                .any(|c| c == ':' || c.is_whitespace() || c.is_control());
        let bad_value = value.chars().any(|c| c.is_control() && c != '\t');
        if bad_name || bad_value {
            return Err(Error::InvalidHeader {
                name: name.chars().take(80).collect(),
                reason: if bad_name {
                    "a header name is visible characters, without `:`"
                } else {
                    "a header value has no line break or other control character"
                },
            });
        }
    }
    Ok(())
}

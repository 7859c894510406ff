//! [`Decoder`]: how a call turns received bytes into messages.
//!
//! Generated clients decode into their prost types ([`Decoder::prost`], a plain
//! function pointer: no allocation, no indirection beyond the call). Tools that
//! only learn the message type at run time (the `sinew` CLI, gateways) pass a
//! closure over a descriptor, for instance one that builds a
//! `prost_reflect::DynamicMessage`.

use bytes::Bytes;
use std::fmt;
use std::sync::Arc;

/// Turns the bytes of one received message into a `T`.
pub struct Decoder<T> {
    kind: Kind<T>,
}

enum Kind<T> {
    Function(fn(Bytes) -> Result<T, prost::DecodeError>),
    Closure(Arc<dyn Fn(Bytes) -> Result<T, prost::DecodeError> + Send + Sync>),
}

/// A message passed through as its encoded bytes, neither decoded nor
/// re-encoded: what a proxy or protocol bridge forwards. Send it like any message;
/// receive it with [`Decoder::raw`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RawMessage(pub Bytes);

impl prost::Message for RawMessage {
    fn encode_raw(&self, buf: &mut impl bytes::BufMut) {
        buf.put_slice(&self.0);
    }

    /// Never used to decode: [`Decoder::raw`] takes the bytes as they are. Any
    /// field merged by prost is skipped.
    fn merge_field(
        &mut self,
        tag: u32,
        wire_type: prost::encoding::WireType,
        buf: &mut impl bytes::Buf,
        ctx: prost::encoding::DecodeContext,
    ) -> Result<(), prost::DecodeError> {
        prost::encoding::skip_field(wire_type, tag, buf, ctx)
    }

    fn encoded_len(&self) -> usize {
        self.0.len()
    }

    fn clear(&mut self) {
        self.0 = Bytes::new();
    }
}

fn decode_raw(bytes: Bytes) -> Result<RawMessage, prost::DecodeError> {
    Ok(RawMessage(bytes))
}

impl Decoder<RawMessage> {
    /// Takes each message's bytes as they are.
    pub fn raw() -> Decoder<RawMessage> {
        Decoder {
            kind: Kind::Function(decode_raw),
        }
    }
}

fn decode_prost<T: prost::Message + Default>(bytes: Bytes) -> Result<T, prost::DecodeError> {
    T::decode(bytes)
}

impl<T: prost::Message + Default> Decoder<T> {
    /// Decodes a prost-generated message type.
    pub fn prost() -> Decoder<T> {
        Decoder {
            kind: Kind::Function(decode_prost::<T>),
        }
    }
}

impl<T> Decoder<T> {
    /// Decodes with any function, for message types known only at run time.
    pub fn new(
        decode: impl Fn(Bytes) -> Result<T, prost::DecodeError> + Send + Sync + 'static,
    ) -> Decoder<T> {
        Decoder {
            kind: Kind::Closure(Arc::new(decode)),
        }
    }

    /// Decodes one message.
    pub fn decode(&self, bytes: Bytes) -> Result<T, prost::DecodeError> {
        match &self.kind {
            Kind::Function(decode) => decode(bytes),
            Kind::Closure(decode) => decode(bytes),
        }
    }
}

impl<T> Clone for Decoder<T> {
    fn clone(&self) -> Self {
        Decoder {
            kind: match &self.kind {
                Kind::Function(decode) => Kind::Function(*decode),
                Kind::Closure(decode) => Kind::Closure(decode.clone()),
            },
        }
    }
}

impl<T> fmt::Debug for Decoder<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self.kind {
            Kind::Function(_) => "Decoder::prost",
            Kind::Closure(_) => "Decoder::new",
        })
    }
}

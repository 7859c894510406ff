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

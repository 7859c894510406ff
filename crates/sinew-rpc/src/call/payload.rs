//! [`Payload`]: one outgoing message, encoded straight into the transport's
//! buffer, and encoded only once however many times it is sent.

use bytes::{BufMut, Bytes, BytesMut};
use sinew_transport::SlabBuf;
use std::fmt;
use std::sync::{Arc, OnceLock};

/// One request message on its way out: a protobuf message of any type, or
/// bytes already encoded. Cheap to clone (a reference count), so that a retry
/// or a hedge sends the same payload again.
///
/// A payload held in one place only is encoded straight into the connection's
/// write buffer (or a shared-memory slab) when it is sent: no intermediate
/// buffer, no copy. Once it has been cloned, the first send encodes it into
/// bytes kept in the payload, and every send copies those: it is never
/// encoded twice.
#[derive(Clone)]
pub struct Payload {
    repr: Repr,
}

#[derive(Clone)]
enum Repr {
    Encoded(Bytes),
    Message(Arc<dyn Erased>),
}

/// A message behind the type erasure: encoders monomorphised for the buffers
/// the transports use, and the encoding kept once a clone exists.
trait Erased: Send + Sync + 'static {
    fn encoded_len(&self) -> usize;
    fn encode_to(&self, buf: &mut BytesMut);
    fn encode_to_slab(&self, buf: &mut SlabBuf);
    fn encoding(&self) -> &OnceLock<Bytes>;
}

struct Typed<M> {
    message: M,
    encoding: OnceLock<Bytes>,
}

impl<M: prost::Message + Send + Sync + 'static> Erased for Typed<M> {
    fn encoded_len(&self) -> usize {
        self.message.encoded_len()
    }

    fn encode_to(&self, buf: &mut BytesMut) {
        // Not `encode`, which measures the message again to check the room
        // left: a BytesMut grows on demand.
        self.message.encode_raw(buf);
    }

    fn encode_to_slab(&self, buf: &mut SlabBuf) {
        // The caller sized the slabs with `encoded_len`.
        self.message.encode_raw(buf);
    }

    fn encoding(&self) -> &OnceLock<Bytes> {
        &self.encoding
    }
}

impl Payload {
    /// A payload of a protobuf message, encoded when it is sent.
    pub fn new<M: prost::Message + Send + Sync + 'static>(message: M) -> Payload {
        Payload {
            repr: Repr::Message(Arc::new(Typed {
                message,
                encoding: OnceLock::new(),
            })),
        }
    }

    /// A payload of bytes that already are one encoded message (a proxy
    /// forwarding what it received, for instance).
    pub fn from_bytes(bytes: Bytes) -> Payload {
        Payload {
            repr: Repr::Encoded(bytes),
        }
    }

    /// The length of the encoded message.
    pub fn encoded_len(&self) -> usize {
        match &self.repr {
            Repr::Encoded(bytes) => bytes.len(),
            Repr::Message(message) => match message.encoding().get() {
                Some(bytes) => bytes.len(),
                None => message.encoded_len(),
            },
        }
    }

    /// The encoded message. Encodes it the first time and keeps the bytes, so
    /// later calls (and sends of clones) share them.
    pub fn to_bytes(&self) -> Bytes {
        match &self.repr {
            Repr::Encoded(bytes) => bytes.clone(),
            Repr::Message(message) => message
                .encoding()
                .get_or_init(|| {
                    let mut buf = BytesMut::with_capacity(message.encoded_len());
                    message.encode_to(&mut buf);
                    buf.freeze()
                })
                .clone(),
        }
    }

    /// Appends the encoded message to `buf`.
    pub fn encode(&self, buf: &mut BytesMut) {
        match self.direct() {
            Some(message) => message.encode_to(buf),
            None => buf.put_slice(&self.to_bytes()),
        }
    }

    /// Appends the encoded message to shared-memory slabs sized for it.
    pub(crate) fn encode_to_slab(&self, buf: &mut SlabBuf) {
        match self.direct() {
            Some(message) => message.encode_to_slab(buf),
            None => buf.put_slice(&self.to_bytes()),
        }
    }

    /// The message, when encoding it in place is best: nobody else holds it
    /// (so no other send could reuse an encoding) and it has none yet.
    fn direct(&self) -> Option<&dyn Erased> {
        match &self.repr {
            Repr::Message(message)
                if Arc::strong_count(message) == 1 && message.encoding().get().is_none() =>
            {
                Some(&**message)
            }
            _ => None,
        }
    }
}

impl fmt::Debug for Payload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Payload")
            .field("encoded_len", &self.encoded_len())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A message that counts how often it is encoded.
    #[derive(Default)]
    struct Counted {
        encodings: Arc<AtomicUsize>,
    }

    impl fmt::Debug for Counted {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("Counted")
        }
    }

    impl prost::Message for Counted {
        fn encode_raw(&self, buf: &mut impl BufMut) {
            self.encodings.fetch_add(1, Ordering::SeqCst);
            prost::encoding::string::encode(1, &"hello".to_owned(), buf);
        }
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
            prost::encoding::string::encoded_len(1, &"hello".to_owned())
        }
        fn clear(&mut self) {}
    }

    #[test]
    fn a_payload_held_once_is_encoded_in_place_each_time_it_is_sent() {
        let encodings = Arc::new(AtomicUsize::new(0));
        let payload = Payload::new(Counted {
            encodings: encodings.clone(),
        });
        let mut buf = BytesMut::new();
        payload.encode(&mut buf);
        assert_eq!(&buf[..], b"\x0a\x05hello");
        assert_eq!(payload.encoded_len(), 7);
        assert_eq!(encodings.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn a_cloned_payload_is_encoded_once_for_every_send() {
        let encodings = Arc::new(AtomicUsize::new(0));
        let payload = Payload::new(Counted {
            encodings: encodings.clone(),
        });
        let retry = payload.clone();
        let hedge = payload.clone();
        let mut buf = BytesMut::new();
        for sent in [&payload, &retry, &hedge] {
            sent.encode(&mut buf);
        }
        drop((retry, hedge));
        // Alone again, but its encoding exists: it is reused, not redone.
        payload.encode(&mut buf);
        assert_eq!(&buf[..], &b"\x0a\x05hello".repeat(4)[..]);
        assert_eq!(encodings.load(Ordering::SeqCst), 1);
        assert_eq!(payload.to_bytes(), Bytes::from_static(b"\x0a\x05hello"));
    }

    #[test]
    fn encoded_bytes_are_sent_as_they_are() {
        let payload = Payload::from_bytes(Bytes::from_static(b"\x08\x01"));
        let mut buf = BytesMut::from(&b"head"[..]);
        payload.clone().encode(&mut buf);
        assert_eq!(&buf[..], b"head\x08\x01");
        assert_eq!(payload.encoded_len(), 2);
    }
}

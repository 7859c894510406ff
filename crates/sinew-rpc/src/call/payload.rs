//! [`Payload`]: one outgoing message, encoded straight into the transport's
//! buffer, and encoded only once however many times it is sent (a spare kept
//! for a send that may never happen does not count).

use bytes::{BufMut, Bytes, BytesMut};
use sinew_transport::SlabBuf;
use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

/// One request message on its way out: a protobuf message of any type, or
/// bytes already encoded. Cheap to clone (a reference count), so that a retry
/// or a hedge sends the same payload again.
///
/// A payload held in one place only is encoded straight into the connection's
/// write buffer (or a shared-memory slab) when it is sent: no intermediate
/// buffer, no copy. Once it has been cloned, the first send encodes it into
/// bytes kept in the payload, and every send copies those: it is never
/// encoded twice. A [spare](Payload::spare), kept in case a send must be
/// made again, is the exception: it does not count as a second holder.
pub struct Payload {
    repr: Repr,
    // Whether this is a spare, counted in the message's spares until dropped.
    spare: bool,
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
    fn spares(&self) -> &AtomicUsize;
}

struct Typed<M> {
    message: M,
    encoding: OnceLock<Bytes>,
    // Holders that are spares (`Payload::spare`).
    spares: AtomicUsize,
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

    fn spares(&self) -> &AtomicUsize {
        &self.spares
    }
}

impl Payload {
    /// A payload of a protobuf message, encoded when it is sent.
    pub fn new<M: prost::Message + Send + Sync + 'static>(message: M) -> Payload {
        Payload {
            repr: Repr::Message(Arc::new(Typed {
                message,
                encoding: OnceLock::new(),
                spares: AtomicUsize::new(0),
            })),
            spare: false,
        }
    }

    /// A payload of bytes that already are one encoded message (a proxy
    /// forwarding what it received, for instance).
    pub fn from_bytes(bytes: Bytes) -> Payload {
        Payload {
            repr: Repr::Encoded(bytes),
            spare: false,
        }
    }

    /// A copy to keep in reserve, in case a send fails and must be made
    /// again (a retry or fail-over buffer). Unlike a clone, a spare does not
    /// keep the payload from being encoded in place: the common send that
    /// succeeds pays nothing for it, and the rare one made from the spare
    /// encodes the message again. A clone of a spare is an ordinary clone.
    pub fn spare(&self) -> Payload {
        if let Repr::Message(message) = &self.repr {
            message.spares().fetch_add(1, Ordering::Relaxed);
        }
        Payload {
            repr: self.repr.clone(),
            spare: true,
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
    /// but spares (so no other send is likely to reuse an encoding) and it
    /// has none yet. The counts may race a clone or a drop elsewhere; that
    /// only decides whether a send copies a kept encoding or encodes again.
    fn direct(&self) -> Option<&dyn Erased> {
        match &self.repr {
            Repr::Message(message)
                if Arc::strong_count(message) <= 1 + message.spares().load(Ordering::Relaxed)
                    && message.encoding().get().is_none() =>
            {
                Some(&**message)
            }
            _ => None,
        }
    }
}

impl Clone for Payload {
    fn clone(&self) -> Payload {
        Payload {
            repr: self.repr.clone(),
            spare: false,
        }
    }
}

impl Drop for Payload {
    fn drop(&mut self) {
        if let (true, Repr::Message(message)) = (self.spare, &self.repr) {
            message.spares().fetch_sub(1, Ordering::Relaxed);
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
    fn a_spare_leaves_the_payload_encoded_in_place_and_encodes_again_if_sent() {
        let encodings = Arc::new(AtomicUsize::new(0));
        let payload = Payload::new(Counted {
            encodings: encodings.clone(),
        });
        let spare = payload.spare();
        let mut buf = BytesMut::new();
        assert!(payload.direct().is_some(), "a spare is not a second holder");
        payload.encode(&mut buf);
        drop(payload);
        // The send failed; the spare goes out instead, encoded again.
        spare.encode(&mut buf);
        assert_eq!(&buf[..], &b"\x0a\x05hello".repeat(2)[..]);
        assert_eq!(encodings.load(Ordering::SeqCst), 2);
        // A second fail-over sends a clone of the spare and keeps the spare:
        // the clone is the one holder that sends, so it encodes in place.
        let again = spare.clone();
        assert!(again.direct().is_some());
        again.encode(&mut buf);
        assert_eq!(encodings.load(Ordering::SeqCst), 3);
        // An ordinary clone next to it is a second sender: both share one
        // encoding from then on.
        let hedge = again.clone();
        assert!(again.direct().is_none());
        again.encode(&mut buf);
        hedge.encode(&mut buf);
        assert_eq!(encodings.load(Ordering::SeqCst), 4);
        drop(spare);
        let Repr::Message(message) = &again.repr else {
            unreachable!("a message payload")
        };
        assert_eq!(message.spares().load(Ordering::SeqCst), 0);
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

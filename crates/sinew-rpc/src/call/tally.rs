//! [`MessageTally`]: how many messages a call carried each way, and their
//! bytes, for a layer that asked (a span's `rpc.request.size`, say).
//!
//! Nothing counts unless a layer asks: a server layer with
//! [`ServerCall::tally_messages`](crate::server::ServerCall::tally_messages),
//! a client layer with [`ResponseBody::tally_messages`](super::ResponseBody::tally_messages)
//! (and the request's own payload). Sizes are of the encoded messages, as
//! the application sent and received them (before any compression a
//! transport applies).

use std::sync::atomic::{AtomicU64, Ordering};

/// Messages and bytes one call sent and received; read it once the call
/// ended.
#[derive(Debug, Default)]
pub struct MessageTally {
    sent: AtomicU64,
    sent_bytes: AtomicU64,
    received: AtomicU64,
    received_bytes: AtomicU64,
}

impl MessageTally {
    /// Messages sent, and their bytes.
    pub fn sent(&self) -> (u64, u64) {
        (
            self.sent.load(Ordering::Relaxed),
            self.sent_bytes.load(Ordering::Relaxed),
        )
    }

    /// Messages received, and their bytes.
    pub fn received(&self) -> (u64, u64) {
        (
            self.received.load(Ordering::Relaxed),
            self.received_bytes.load(Ordering::Relaxed),
        )
    }

    /// Counts a message of `bytes` sent.
    pub fn count_sent(&self, bytes: usize) {
        self.sent.fetch_add(1, Ordering::Relaxed);
        self.sent_bytes.fetch_add(bytes as u64, Ordering::Relaxed);
    }

    /// Counts a message of `bytes` received.
    pub fn count_received(&self, bytes: usize) {
        self.received.fetch_add(1, Ordering::Relaxed);
        self.received_bytes
            .fetch_add(bytes as u64, Ordering::Relaxed);
    }
}

/// Counts into `tally`, if there is one.
pub(crate) fn count_received(tally: &Option<std::sync::Arc<MessageTally>>, bytes: usize) {
    if let Some(tally) = tally {
        tally.count_received(bytes);
    }
}

/// Counts into `tally`, if there is one.
pub(crate) fn count_sent(tally: &Option<std::sync::Arc<MessageTally>>, bytes: usize) {
    if let Some(tally) = tally {
        tally.count_sent(bytes);
    }
}

//! The writer task: moves queued frames to the socket in as few syscalls as possible.

use super::{Shared, PENDING_WRITE_HIGH};
use bytes::BytesMut;
use std::sync::Arc;
use tokio::io::{AsyncWrite, AsyncWriteExt};

/// A batch buffer that grew past this is replaced after use, so one huge message
/// does not pin megabytes per connection forever.
const KEEP_CAPACITY: usize = 4 * 1024 * 1024;

/// Runs until the connection is closed: waits for queued frames, swaps the pending
/// buffer with its own (empty) one under the lock, writes the batch, repeats.
///
/// Swapping instead of copying means the lock is held for a pointer swap; every
/// frame queued while a write is in flight goes out with the next single write.
pub(crate) async fn run<W: AsyncWrite + Unpin>(shared: Arc<Shared>, mut io: W) {
    let mut batch = BytesMut::with_capacity(64 * 1024);
    loop {
        // Take the whole pending batch, or learn that there is nothing to write.
        let took_batch = {
            let mut state = shared.lock();
            if state.pending.is_empty() {
                if state.close_after_flush {
                    break;
                }
                false
            } else {
                let wake_senders = state.pending.len() >= PENDING_WRITE_HIGH;
                std::mem::swap(&mut state.pending, &mut batch);
                if wake_senders {
                    let waiters = std::mem::take(&mut state.capacity_waiters);
                    state.wake.extend(waiters);
                }
                true
            }
        };
        if !took_batch {
            shared.writer_wake.notified().await;
            // Let every task that is ready to run queue its frames first: the
            // call that woke us is rarely the only one. Without this, tokio's
            // LIFO slot runs the writer right after the first call and each call
            // costs its own syscall.
            tokio::task::yield_now().await;
            continue;
        }
        if let Err(error) = io.write_all(&batch).await {
            tracing::debug!(%error, "connection write failed");
            shared.lock().kill(crate::Status::unavailable(format!(
                "connection lost: {error}"
            )));
            break;
        }
        if batch.capacity() > KEEP_CAPACITY {
            batch = BytesMut::with_capacity(64 * 1024);
        } else {
            batch.clear();
        }
        shared.flushed.notify_waiters();
    }
    let _ = io.shutdown().await;
    shared.flushed.notify_waiters();
}

//! The writer task: moves queued frames to the socket in as few syscalls as possible.

use super::{Encode, Shared, PENDING_WRITE_HIGH};
use bytes::BytesMut;
use sinew_transport::{SlabBuf, SlabPool};
use sinew_wire::encode;
use std::io;
use std::sync::Arc;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};

/// The writing side of a connection's transport, as the writer task uses it:
/// a byte sink that may also take shared-memory slabs.
pub(crate) trait Outbound: AsyncWrite + Unpin + Send + 'static {
    /// Slabs to encode large messages into, if the transport has them.
    fn slab_pool(&self) -> Option<SlabPool> {
        None
    }

    /// How full the transport's shared-memory rings are, if it has them.
    fn ring_gauge(&self) -> Option<sinew_transport::RingGauge> {
        None
    }

    /// Sends a filled slab as the stream's next bytes.
    fn send_slab(&mut self, _buf: SlabBuf) -> io::Result<()> {
        Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "this transport has no slabs",
        ))
    }
}

impl Outbound for sinew_transport::WriteHalf {
    fn slab_pool(&self) -> Option<SlabPool> {
        sinew_transport::WriteHalf::slab_pool(self)
    }

    fn ring_gauge(&self) -> Option<sinew_transport::RingGauge> {
        sinew_transport::WriteHalf::ring_gauge(self)
    }

    fn send_slab(&mut self, buf: SlabBuf) -> io::Result<()> {
        sinew_transport::WriteHalf::send_slab(self, buf)
    }
}

/// In-process connections (`tokio::io::split` of a duplex pipe).
impl<T: AsyncRead + AsyncWrite + Send + 'static> Outbound for tokio::io::WriteHalf<T> {}

/// Messages encoded outside the pending buffer, into buffers the transport
/// sends in their place: shared-memory slabs, today the only kind. The rest of
/// the connection only asks whether a message goes out of line
/// ([`OutOfLine::encode`]) and how many bytes wait here.
///
/// Over shared memory with slabs, a message of at least the pool's threshold
/// is encoded straight into free slabs and only its frame header goes into the
/// pending buffer: the writer sends the slabs at that place in the stream, and
/// the message is never copied again on this side. Without free slabs (or on
/// any other transport), messages go into the pending buffer.
#[derive(Debug, Default)]
pub(crate) struct OutOfLine {
    pool: Option<SlabPool>,
    /// Each filled slab, with the offset in the pending buffer where it goes
    /// (right after its DATA header).
    frames: Vec<(usize, SlabBuf)>,
    /// Bytes in `frames`.
    bytes: usize,
}

impl OutOfLine {
    pub(crate) fn new(pool: Option<SlabPool>) -> OutOfLine {
        OutOfLine {
            pool,
            ..OutOfLine::default()
        }
    }

    /// Bytes waiting here for the writer.
    pub(crate) fn queued_len(&self) -> usize {
        self.bytes
    }

    /// Queues one DATA frame carrying `message` (`len` bytes encoded) with
    /// the message out of line, if the transport takes it that way: its header
    /// goes into `pending`. False if the message must go into `pending` itself.
    pub(crate) fn encode<M: Encode + ?Sized>(
        &mut self,
        pending: &mut BytesMut,
        id: u32,
        end_stream: bool,
        message: &M,
        len: usize,
    ) -> bool {
        let Some(pool) = self.pool.as_ref().filter(|pool| len >= pool.threshold()) else {
            return false;
        };
        let Some(mut buf) = pool.alloc(len) else {
            return false;
        };
        message.write_to_slab(&mut buf);
        // A message whose encoded_len lies would break the framing: such a
        // message takes the ordinary path, which measures.
        if buf.len() != len {
            return false;
        }
        encode::data_header(pending, id, end_stream, len);
        self.bytes += len;
        self.frames.push((pending.len(), buf));
        true
    }

    /// Takes what waits here (into `frames`, which must be empty).
    fn take(&mut self, frames: &mut Vec<(usize, SlabBuf)>) {
        std::mem::swap(&mut self.frames, frames);
        self.bytes = 0;
    }
}

/// After a failed write, how long the reader may take in what the peer sent
/// before it closed, before the connection is failed.
const READ_AFTER_WRITE_ERROR: std::time::Duration = std::time::Duration::from_secs(1);

/// A batch buffer that grew past this is replaced after use, so one huge message
/// does not pin megabytes per connection forever.
const KEEP_CAPACITY: usize = 4 * 1024 * 1024;

/// Runs until the connection is closed: waits for queued frames, swaps the pending
/// buffer with its own (empty) one under the lock, writes the batch, repeats.
///
/// Swapping instead of copying means the lock is held for a pointer swap; every
/// frame queued while a write is in flight goes out with the next single write.
/// Messages encoded into slabs go out in their place in the batch.
pub(crate) async fn run<W: Outbound>(shared: Arc<Shared>, mut io: W) {
    let mut batch = BytesMut::with_capacity(64 * 1024);
    let mut slab_frames = Vec::new();
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
                let wake_senders = state.queued_len() >= PENDING_WRITE_HIGH;
                std::mem::swap(&mut state.pending, &mut batch);
                state.out_of_line.take(&mut slab_frames);
                state.batches_taken += 1;
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
        let slab_bytes: usize = slab_frames.iter().map(|(_, slab)| slab.len()).sum();
        let bytes = batch.len() + slab_bytes;
        if let Err(error) = write_batch(&mut io, &batch, &mut slab_frames).await {
            tracing::debug!(%error, "connection write failed");
            // A peer that closed may have said why first (a GOAWAY naming the
            // last call it processed, so that the calls after it fail *not
            // processed* and can go elsewhere) and answered calls: that waits
            // in our receive buffer. The reader takes it in and sees the end
            // of the stream right after; only then, or after a grace period,
            // is the connection failed with the write's error.
            shared.stop_accepting();
            let _ = tokio::time::timeout(READ_AFTER_WRITE_ERROR, shared.until_dead()).await;
            shared.lock().kill(crate::Status::unavailable(format!(
                "connection lost: {error}"
            )));
            break;
        }
        shared.activity().sent(bytes);
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

/// Writes a batch, sending each slab at its offset. On an error the slabs not
/// sent yet are dropped (back to their pool).
async fn write_batch<W: Outbound>(
    io: &mut W,
    batch: &[u8],
    slab_frames: &mut Vec<(usize, SlabBuf)>,
) -> io::Result<()> {
    let mut written = 0;
    let mut frames = slab_frames.drain(..);
    for (offset, slab) in frames.by_ref() {
        io.write_all(&batch[written..offset]).await?;
        io.send_slab(slab)?;
        written = offset;
    }
    drop(frames);
    io.write_all(&batch[written..]).await?;
    // Free for the socket transports; TLS may hold the last record until told.
    io.flush().await
}

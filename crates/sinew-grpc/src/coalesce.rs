//! Write coalescing under hyper's HTTP/2 server: one system call per turn of
//! a connection's task instead of one per response.
//!
//! h2 keeps at most one DATA payload of 256 bytes or more aside uncopied, so
//! it must write to the socket before it can take the next such frame: every
//! 1 KiB response of a busy connection cost a system call of its own (1.7
//! `writev` per unary call under h2load, 38% of the server's CPU). grpc-go
//! writes through a buffer and flushes when its writer has nothing more to
//! send; this does the same for hyper. (Not on the client side: hyper's
//! client drives its connection in a task of its own that it spawns, so
//! there is no turn of it to hook.)
//!
//! [`coalesce`] splits a connection into two handles on one buffer:
//! [`Coalesced`], the I/O object hyper reads and writes, whose writes land in
//! the buffer (and whose `poll_flush` leaves them there), and
//! [`FlushAfter`], a future around hyper's connection that writes the buffer
//! out each time the connection has done what it can and is about to wait.
//! Every byte h2 hands over reaches the socket before the task sleeps, so no
//! frame waits for another to be sent.
//!
//! Memory stays bounded: past [`BUFFER_LIMIT`] bytes a write first drains
//! the buffer to the socket (and waits for the socket if it is full, which
//! is the back-pressure h2 would see without the buffer), and a write larger
//! than the limit goes to the socket directly.

use bytes::{Buf, BytesMut};
use std::future::Future;
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{ready, Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Bytes a connection buffers before a write must go to the socket first.
pub(crate) const BUFFER_LIMIT: usize = 64 * 1024;

/// Splits `io` into the handle to give hyper and the one that flushes it;
/// wrap hyper's connection future with [`FlushAfter::new`] and the second.
pub(crate) fn coalesce<T>(io: T) -> (Coalesced<T>, Flusher<T>) {
    let shared = Arc::new(Mutex::new(Shared {
        io,
        buffer: BytesMut::new(),
        failed: None,
    }));
    (
        Coalesced {
            shared: shared.clone(),
        },
        Flusher { shared },
    )
}

struct Shared<T> {
    io: T,
    /// Bytes written by h2 and not yet by the socket.
    buffer: BytesMut,
    /// Why the socket last refused a write; every later write or flush fails
    /// with it, so the connection ends instead of buffering into a dead socket.
    failed: Option<io::ErrorKind>,
}

impl<T: AsyncWrite + Unpin> Shared<T> {
    /// Writes the whole buffer to the socket.
    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if let Some(kind) = self.failed {
            return Poll::Ready(Err(kind.into()));
        }
        let result = ready!(self.poll_write_out(cx));
        if let Err(error) = &result {
            self.failed = Some(error.kind());
        }
        Poll::Ready(result)
    }

    fn has_buffered(&self) -> bool {
        !self.buffer.is_empty()
    }

    fn poll_write_out(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while !self.buffer.is_empty() {
            let written = ready!(Pin::new(&mut self.io).poll_write(cx, &self.buffer))?;
            if written == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.buffer.advance(written);
        }
        Pin::new(&mut self.io).poll_flush(cx)
    }

    /// Takes `bufs` (`len` bytes in all) into the buffer, or, when they would
    /// pass the limit, drains it first and writes large ones straight through.
    fn poll_take(
        &mut self,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
        len: usize,
    ) -> Poll<io::Result<usize>> {
        if let Some(kind) = self.failed {
            return Poll::Ready(Err(kind.into()));
        }
        if self.buffer.len() + len > BUFFER_LIMIT {
            ready!(self.poll_drain(cx))?;
            if len > BUFFER_LIMIT {
                return Pin::new(&mut self.io).poll_write_vectored(cx, bufs);
            }
        }
        self.buffer.reserve(len);
        for buf in bufs {
            self.buffer.extend_from_slice(buf);
        }
        Poll::Ready(Ok(len))
    }
}

fn lock<T>(shared: &Mutex<Shared<T>>) -> MutexGuard<'_, Shared<T>> {
    // Nothing panics while holding the lock; recover the data if it did.
    shared
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The connection as hyper sees it: reads go to the socket, writes to the
/// shared buffer (see the module docs).
pub(crate) struct Coalesced<T> {
    shared: Arc<Mutex<Shared<T>>>,
}

impl<T: AsyncRead + Unpin> AsyncRead for Coalesced<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut lock(&self.shared).io).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Coalesced<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        lock(&self.shared).poll_take(cx, &[IoSlice::new(buf)], buf.len())
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let len = bufs.iter().map(|buf| buf.len()).sum();
        lock(&self.shared).poll_take(cx, bufs, len)
    }

    fn is_write_vectored(&self) -> bool {
        // h2 then hands over a DATA payload as a slice of its own instead of
        // copying it into its buffer first: one copy (into this buffer), not two.
        true
    }

    /// Leaves the bytes in the buffer: [`FlushAfter`] writes them once the
    /// connection task has nothing more to do.
    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match lock(&self.shared).failed {
            Some(kind) => Poll::Ready(Err(kind.into())),
            None => Poll::Ready(Ok(())),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let mut shared = lock(&self.shared);
        ready!(shared.poll_drain(cx))?;
        Pin::new(&mut shared.io).poll_shutdown(cx)
    }
}

/// The other handle on a [`Coalesced`] connection's buffer.
pub(crate) struct Flusher<T> {
    shared: Arc<Mutex<Shared<T>>>,
}

/// Polls the connection future `F`, then writes out whatever it buffered.
pub(crate) struct FlushAfter<F, T> {
    connection: Pin<Box<F>>,
    flusher: Flusher<T>,
    /// Whether the task has yielded once since it last wrote (see `poll`).
    yielded: bool,
}

impl<F: Future, T: AsyncWrite + Unpin> FlushAfter<F, T> {
    pub(crate) fn new(connection: F, flusher: Flusher<T>) -> Self {
        FlushAfter {
            connection: Box::pin(connection),
            flusher,
            yielded: false,
        }
    }

    /// The connection future, for its own methods (graceful shutdown).
    pub(crate) fn connection(&mut self) -> Pin<&mut F> {
        self.connection.as_mut()
    }
}

impl<F: Future, T: AsyncWrite + Unpin> Future for FlushAfter<F, T> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let output = self.connection.as_mut().poll(cx);
        // Each response is finished by a task of its own (hyper's, per
        // request), which wakes this one: written at once, every response
        // would still be a system call of its own. So before writing, yield
        // once, to the back of the run queue: the other responses that are
        // ready get finished meanwhile and go out in the same write. (With
        // nothing else to run the task is polled again at once.)
        if output.is_pending() && !self.yielded && lock(&self.flusher.shared).has_buffered() {
            self.yielded = true;
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        self.yielded = false;
        // If the socket is full, its readiness wakes this task to try again.
        // A failed write is kept and returned by the connection's next write
        // or flush (h2 flushes on every turn): poll it once more to end it.
        if let Poll::Ready(Err(error)) = lock(&self.flusher.shared).poll_drain(cx) {
            if output.is_pending() {
                tracing::debug!(%error, "writing a gRPC connection's buffered frames failed");
                cx.waker().wake_by_ref();
            }
        }
        output
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::FutureExt;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn writes_wait_in_the_buffer_until_the_flusher_runs() {
        let (near, mut far) = tokio::io::duplex(1 << 20);
        let (mut io, flusher) = coalesce(near);
        io.write_all(b"headers").await.unwrap();
        io.flush().await.unwrap();
        let mut probe = [0u8; 16];
        let nothing_yet =
            tokio::time::timeout(std::time::Duration::from_millis(20), far.read(&mut probe)).await;
        assert!(
            nothing_yet.is_err(),
            "bytes reached the socket before the flusher ran"
        );

        let flushed = FlushAfter::new(async {}, flusher);
        flushed.await;
        let n = far.read(&mut probe).await.unwrap();
        assert_eq!(&probe[..n], b"headers");
    }

    #[tokio::test]
    async fn a_waiting_connection_yields_once_then_writes_everything_at_once() {
        let (near, mut far) = tokio::io::duplex(1 << 16);
        let (mut io, flusher) = coalesce(near);
        let mut connection = FlushAfter::new(std::future::pending::<()>(), flusher);
        io.write_all(b"first").await.unwrap();
        assert!((&mut connection).now_or_never().is_none());
        // What another task finished meanwhile joins the same write.
        io.write_all(b" second").await.unwrap();
        assert!((&mut connection).now_or_never().is_none());
        let mut got = [0u8; 32];
        let n = far.read(&mut got).await.unwrap();
        assert_eq!(&got[..n], b"first second");
        // Nothing buffered: no yield, nothing written.
        assert!((&mut connection).now_or_never().is_none());
        assert!(lock(&io.shared).buffer.is_empty());
    }

    #[tokio::test]
    async fn a_full_buffer_drains_first_and_large_writes_go_straight_through() {
        let (near, mut far) = tokio::io::duplex(8 << 20);
        let (mut io, _flusher) = coalesce(near);
        let small = vec![1u8; BUFFER_LIMIT - 10];
        let large = vec![2u8; BUFFER_LIMIT * 3];
        io.write_all(&small).await.unwrap();
        io.write_all(&large).await.unwrap();
        // Both are on the socket, in order, without a flush: the second write
        // passed the limit.
        let mut got = vec![0u8; small.len() + large.len()];
        far.read_exact(&mut got).await.unwrap();
        assert_eq!(&got[..small.len()], &small[..]);
        assert_eq!(&got[small.len()..], &large[..]);
        assert!(lock(&io.shared).buffer.len() <= BUFFER_LIMIT);
    }

    #[tokio::test]
    async fn a_full_socket_holds_writes_back_once_the_buffer_is_full() {
        // A peer that reads nothing: the socket takes 4 KiB, the buffer 64.
        let (near, _far) = tokio::io::duplex(4096);
        let (mut io, _flusher) = coalesce(near);
        let chunk = vec![7u8; 1024];
        let mut accepted = 0;
        let writing = async {
            loop {
                io.write_all(&chunk).await.unwrap();
                accepted += chunk.len();
            }
        };
        let stalled = tokio::time::timeout(std::time::Duration::from_millis(100), writing).await;
        assert!(stalled.is_err(), "writes never stopped");
        assert!(accepted <= BUFFER_LIMIT + 4096, "took {accepted} bytes");
    }

    #[tokio::test]
    async fn a_failed_write_fails_every_later_write_and_flush() {
        let (near, far) = tokio::io::duplex(1 << 16);
        drop(far);
        let (mut io, flusher) = coalesce(near);
        io.write_all(b"data").await.unwrap();
        // Two turns of a connection that never ends: the first yields before
        // writing, the second writes, and fails.
        let mut connection = FlushAfter::new(std::future::pending::<()>(), flusher);
        assert!((&mut connection).now_or_never().is_none());
        assert!(
            io.flush().now_or_never().unwrap().is_ok(),
            "failed before writing"
        );
        assert!((&mut connection).now_or_never().is_none());
        assert!(io.flush().await.is_err());
        assert!(io.write_all(b"more").await.is_err());
    }

    #[tokio::test]
    async fn shutdown_writes_the_buffer_before_closing() {
        let (near, mut far) = tokio::io::duplex(1 << 16);
        let (mut io, _flusher) = coalesce(near);
        io.write_all(b"goaway").await.unwrap();
        io.shutdown().await.unwrap();
        let mut got = Vec::new();
        far.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, b"goaway");
    }
}

//! [`Buffered`]: the socket under a TLS session, read in large chunks.
//!
//! rustls asks its transport for at most 4 KiB per read (and resizes its
//! buffer each time), so a batch of calls arriving as 64 KiB of records
//! costs sixteen `read` system calls where plaintext costs one. Reading the
//! socket into a buffer of our own turns those into copies from memory. The
//! buffer is held only while the connection has something to read: one that
//! waits gives it back to a small per-thread pool (idle TLS connections cost
//! no more for it, and a busy one does not allocate and clear 64 KiB at
//! every wake-up).

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// How much is read from the socket at once.
const CHUNK: usize = 64 * 1024;

/// Buffers kept per thread for the next connection that has bytes to read.
const POOLED: usize = 16;

thread_local! {
    static SPARE: std::cell::RefCell<Vec<Box<[u8]>>> = const { std::cell::RefCell::new(Vec::new()) };
}

fn take_buffer() -> Box<[u8]> {
    SPARE
        .with(|spare| spare.borrow_mut().pop())
        .unwrap_or_else(|| vec![0u8; CHUNK].into_boxed_slice())
}

fn give_back(buffer: Box<[u8]>) {
    SPARE.with(|spare| {
        let mut spare = spare.borrow_mut();
        if spare.len() < POOLED {
            spare.push(buffer);
        }
    });
}

/// A byte stream whose reads go through a buffer of 64 KiB;
/// writes go straight through.
#[derive(Debug)]
pub struct Buffered<S> {
    inner: S,
    buf: Option<Box<[u8]>>,
    start: usize,
    end: usize,
}

impl<S> Buffered<S> {
    /// Wraps `inner`.
    pub fn new(inner: S) -> Buffered<S> {
        Buffered {
            inner,
            buf: None,
            start: 0,
            end: 0,
        }
    }

    /// The stream underneath.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// Gives the (empty) buffer back to the pool.
    fn release(&mut self) {
        if let Some(buffer) = self.buf.take() {
            give_back(buffer);
        }
    }
}

impl<S> Drop for Buffered<S> {
    fn drop(&mut self) {
        self.release();
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Buffered<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        out: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if this.start == this.end {
            // A caller asking for as much as a chunk gains nothing from
            // the buffer.
            if out.remaining() >= CHUNK {
                return Pin::new(&mut this.inner).poll_read(cx, out);
            }
            let buf = this.buf.get_or_insert_with(take_buffer);
            let mut into = ReadBuf::new(buf);
            match Pin::new(&mut this.inner).poll_read(cx, &mut into) {
                Poll::Ready(Ok(())) => {
                    this.start = 0;
                    this.end = into.filled().len();
                    if this.end == 0 {
                        this.release();
                        return Poll::Ready(Ok(()));
                    }
                }
                Poll::Ready(Err(error)) => {
                    this.release();
                    return Poll::Ready(Err(error));
                }
                Poll::Pending => {
                    // Nothing to read: hold no buffer while waiting.
                    this.release();
                    return Poll::Pending;
                }
            }
        }
        let buf = this.buf.as_ref().expect("a buffer holds the unread bytes");
        let n = out.remaining().min(this.end - this.start);
        out.put_slice(&buf[this.start..this.start + n]);
        this.start += n;
        if this.start == this.end {
            this.start = 0;
            this.end = 0;
        }
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Buffered<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn bytes_come_out_as_they_went_in_whatever_the_read_sizes() {
        let (client, server) = tokio::io::duplex(1024);
        let mut reader = Buffered::new(server);
        let sent: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        let writing = {
            let sent = sent.clone();
            tokio::spawn(async move {
                let mut client = client;
                for piece in sent.chunks(777) {
                    client.write_all(piece).await.unwrap();
                }
            })
        };
        let mut received = Vec::new();
        let mut sizes = [1usize, 4096, 100, CHUNK, 3].into_iter().cycle();
        loop {
            let mut buf = vec![0u8; sizes.next().unwrap()];
            let n = reader.read(&mut buf).await.unwrap();
            if n == 0 {
                break;
            }
            received.extend_from_slice(&buf[..n]);
        }
        writing.await.unwrap();
        assert_eq!(received, sent);
        assert!(reader.buf.is_none(), "no buffer held at the end");
    }
}

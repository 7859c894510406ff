//! [`ShmStream`]: a byte stream over a connection's two rings (and its slabs,
//! which the reader splices into the stream at their place), with eventfd
//! wake-ups registered with tokio.
//!
//! Each side waits on two eventfds of its own (data ready for its reader, room
//! ready for its writer) and holds the peer's two to wake it. A reader or writer
//! that finds nothing to do first spins for a short while (returning `Pending`
//! after waking itself, so the runtime's other tasks still run), then announces
//! it sleeps and waits for its eventfd; the other side only writes to that
//! eventfd when it sees the announcement. See the crate docs for why no wake-up
//! is lost.

use crate::region::Region;
use crate::ring::{Consumer, Producer};
use crate::slab::{read_stream, SlabBuf, SlabPool, SlabReceiver, SlabSender};
use rustix::fd::OwnedFd;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::task::{ready, Context, Poll};
use std::time::{Duration, Instant};
use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// What one side of a connection holds, shared by its two halves.
pub(crate) struct Connection {
    /// Ours: signalled when our inbound ring has data (or closed).
    data_ready: AsyncFd<OwnedFd>,
    /// Ours: signalled when our outbound ring has room.
    space_ready: AsyncFd<OwnedFd>,
    /// The peer's `data_ready`.
    wake_peer_reader: OwnedFd,
    /// The peer's `space_ready`.
    wake_peer_writer: OwnedFd,
    /// Set when the control socket hangs up: the peer process is gone (or
    /// dropped the connection).
    peer_gone: AtomicBool,
    /// The control socket; shut down when we go, which is how the peer learns it.
    control: std::os::unix::net::UnixStream,
    /// How long a reader or writer spins before it sleeps.
    spin: Duration,
    /// Which of the region's rings we write (0 connecting side, 1 accepting).
    outbound_ring: usize,
    /// Last, so that it is unmapped after everything else is gone (slab
    /// pools and buffers hold it too).
    region: Arc<Region>,
}

impl Drop for Connection {
    fn drop(&mut self) {
        // Shuts the socket itself down (not only our descriptor): the peer and
        // our own watcher task both see the hang-up.
        let _ = self.control.shutdown(std::net::Shutdown::Both);
    }
}

/// Which rings and eventfds a side uses.
pub(crate) struct Parts {
    pub(crate) region: Region,
    /// 0 for the connecting side, 1 for the accepting side.
    pub(crate) outbound_ring: usize,
    pub(crate) data_ready: OwnedFd,
    pub(crate) space_ready: OwnedFd,
    pub(crate) wake_peer_reader: OwnedFd,
    pub(crate) wake_peer_writer: OwnedFd,
    pub(crate) control: tokio::net::UnixStream,
    pub(crate) spin: Duration,
    /// Smallest message our side sends through slabs.
    pub(crate) slab_threshold: usize,
    /// From `SO_PEERCRED` at the handshake.
    pub(crate) peer: crate::handshake::PeerCredentials,
}

/// A connected shared-memory stream. Use it as any `AsyncRead + AsyncWrite`,
/// or split it into halves for two tasks.
#[derive(Debug)]
pub struct ShmStream {
    read: ShmReadHalf,
    write: ShmWriteHalf,
    peer: crate::handshake::PeerCredentials,
}

/// The reading half of a [`ShmStream`].
pub struct ShmReadHalf {
    connection: Arc<Connection>,
    consumer: Consumer,
    /// The peer's slabs, if the connection has any (boxed: the half stays
    /// small, as does every stream enum that holds it).
    slabs: Option<Box<SlabReceiver>>,
    spin: Spin,
}

/// The writing half of a [`ShmStream`]. Dropping it closes the stream in this
/// direction (the peer reads what is left, then the end).
pub struct ShmWriteHalf {
    connection: Arc<Connection>,
    producer: Producer,
    /// Our slabs, if the connection has any.
    slabs: Option<SlabSender>,
    spin: Spin,
    closed: bool,
}

impl std::fmt::Debug for ShmReadHalf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShmReadHalf").finish_non_exhaustive()
    }
}

impl std::fmt::Debug for ShmWriteHalf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShmWriteHalf").finish_non_exhaustive()
    }
}

impl ShmStream {
    /// Builds one side of a connection whose handshake is done.
    pub(crate) fn new(parts: Parts) -> io::Result<ShmStream> {
        let Parts {
            region,
            outbound_ring,
            data_ready,
            space_ready,
            wake_peer_reader,
            wake_peer_writer,
            control,
            spin,
            slab_threshold,
            peer,
        } = parts;
        let watcher_socket = control.into_std()?;
        let control = watcher_socket.try_clone()?;
        let region = Arc::new(region);
        let outbound = region.ring(outbound_ring);
        let inbound = region.ring(1 - outbound_ring);
        let sender = region
            .slabs(outbound_ring)
            .map(|memory| SlabSender::new(SlabPool::new(memory, region.clone(), slab_threshold)));
        let receiver = region
            .slabs(1 - outbound_ring)
            .map(|memory| Box::new(SlabReceiver::new(memory, region.clone())));
        let connection = Arc::new(Connection {
            data_ready: register(data_ready)?,
            space_ready: register(space_ready)?,
            wake_peer_reader,
            wake_peer_writer,
            peer_gone: AtomicBool::new(false),
            control,
            spin,
            outbound_ring,
            region,
        });
        watch_peer(
            tokio::net::UnixStream::from_std(watcher_socket)?,
            Arc::downgrade(&connection),
        );
        Ok(ShmStream {
            read: ShmReadHalf {
                connection: connection.clone(),
                consumer: Consumer::new(inbound),
                slabs: receiver,
                spin: Spin::default(),
            },
            write: ShmWriteHalf {
                connection,
                producer: Producer::new(outbound),
                slabs: sender,
                spin: Spin::default(),
                closed: false,
            },
            peer,
        })
    }

    /// The peer's process id (from `SO_PEERCRED`, in our pid namespace;
    /// `None` when its process is not visible from it).
    pub fn peer_pid(&self) -> Option<u32> {
        self.peer.pid
    }

    /// The peer's process, user and group ids (from `SO_PEERCRED`).
    pub fn peer_credentials(&self) -> crate::handshake::PeerCredentials {
        self.peer
    }

    /// Splits into halves that can be used from two tasks without a lock.
    pub fn into_split(self) -> (ShmReadHalf, ShmWriteHalf) {
        (self.read, self.write)
    }

    /// The slabs this side sends large messages from (see
    /// [`ShmWriteHalf::slab_pool`]).
    pub fn slab_pool(&self) -> Option<SlabPool> {
        self.write.slab_pool()
    }

    /// Sends a filled slab buffer (see [`ShmWriteHalf::send_slab`]).
    pub fn send_slab(&mut self, buf: SlabBuf) -> io::Result<()> {
        self.write.send_slab(buf)
    }

    /// Bytes each ring of this connection holds.
    pub fn ring_capacity(&self) -> u64 {
        self.read.connection.region.capacity()
    }
}

/// Registers an eventfd we own with tokio's reactor, for readability.
fn register(eventfd: OwnedFd) -> io::Result<AsyncFd<OwnedFd>> {
    // SAFETY: the `OwnedFd` is moved into the `AsyncFd` and never handed out,
    // so its descriptor stays open and refers to the same eventfd for the
    // `AsyncFd`'s whole life.
    unsafe { AsyncFd::register_with_interest(eventfd, tokio::io::Interest::READABLE) }
        .map_err(|error| error.into_parts().1)
}

/// Waits for the control socket to hang up, then marks the peer gone and wakes
/// both halves. Ends by itself when our side drops the connection (the shutdown
/// in `Connection::drop` hangs the socket up for us too).
fn watch_peer(control: tokio::net::UnixStream, connection: Weak<Connection>) {
    tokio::spawn(async move {
        let mut scratch = [0u8; 64];
        loop {
            if control.readable().await.is_err() {
                break;
            }
            match control.try_read(&mut scratch) {
                Ok(0) => break,
                // The peer sends nothing after the handshake; ignore stray bytes.
                Ok(_) => {}
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => {}
                Err(_) => break,
            }
        }
        if let Some(connection) = connection.upgrade() {
            connection.peer_gone.store(true, Ordering::Release);
            signal(connection.data_ready.get_ref());
            signal(connection.space_ready.get_ref());
        }
    });
}

/// Adds one to an eventfd's counter, waking whoever waits on it. A counter at
/// its maximum (EAGAIN) is already signalled, so errors need no handling.
fn signal(eventfd: &OwnedFd) {
    let _ = rustix::io::write(eventfd, &1u64.to_ne_bytes());
}

/// Waits until `eventfd` is signalled, and resets it.
fn poll_signalled(eventfd: &AsyncFd<OwnedFd>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
    loop {
        let mut guard = ready!(eventfd.poll_read_ready(cx))?;
        let mut counter = [0u8; 8];
        match rustix::io::read(eventfd.get_ref(), &mut counter) {
            Ok(_) => return Poll::Ready(Ok(())),
            Err(rustix::io::Errno::AGAIN) => guard.clear_ready(),
            Err(error) => return Poll::Ready(Err(error.into())),
        }
    }
}

/// Rounds of the spin between two reads of the clock (which is not free in a
/// virtual machine: a third of a spinning reader's time went to it).
const ROUNDS_PER_CLOCK_READ: u32 = 8;

/// Where a half is in its spin phase, since it last found nothing to do.
#[derive(Debug, Default)]
struct Spin {
    since: Option<Instant>,
    rounds: u32,
}

impl Spin {
    /// True (and the task re-scheduled) while the spin phase lasts: `spin`
    /// after the half first found nothing to do.
    ///
    /// The spin goes through the task scheduler instead of looping in place on
    /// `std::hint::spin_loop`: besides letting the runtime's other tasks run, it
    /// avoids PAUSE loops, which a hypervisor with pause-loop exiting answers by
    /// descheduling the virtual CPU. Measured on this project's (virtual)
    /// machine, 32 in-place polls before each yield took the 1 KiB round trip
    /// from 9 µs to 130 µs.
    fn keep_spinning(&mut self, spin: Duration, cx: &mut Context<'_>) -> bool {
        if spin.is_zero() {
            return false;
        }
        self.rounds = self.rounds.wrapping_add(1);
        let since = match self.since {
            None => *self.since.insert(Instant::now()),
            Some(_) if !self.rounds.is_multiple_of(ROUNDS_PER_CLOCK_READ) => {
                cx.waker().wake_by_ref();
                return true;
            }
            Some(since) => since,
        };
        if since.elapsed() < spin {
            cx.waker().wake_by_ref();
            return true;
        }
        false
    }
}

fn peer_gone_error() -> io::Error {
    io::Error::new(
        io::ErrorKind::ConnectionReset,
        "the peer process is gone (its shared-memory connection hung up)",
    )
}

impl AsyncRead for ShmReadHalf {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if buf.remaining() == 0 {
            return Poll::Ready(Ok(()));
        }
        let connection = &*this.connection;
        loop {
            // SAFETY: we only write initialised bytes into the unfilled part
            // (the ring or slab copy), and tell `buf` exactly how many.
            let unfilled = unsafe { buf.unfilled_mut() };
            let (out, len) = (unfilled.as_mut_ptr().cast::<u8>(), unfilled.len());
            // SAFETY: `out` is our caller's buffer, valid for `len` bytes, and
            // not part of the shared mapping.
            let copied =
                unsafe { read_stream(&mut this.consumer, this.slabs.as_deref_mut(), out, len) }?;
            if copied.n > 0 {
                // SAFETY: the copy initialised the first `n` unfilled bytes.
                unsafe { buf.assume_init(copied.n) };
                buf.advance(copied.n);
                if copied.from_ring && this.consumer.release() {
                    signal(&connection.wake_peer_writer);
                }
                this.spin = Spin::default();
                return Poll::Ready(Ok(()));
            }
            // Only after seeing the ring empty: bytes published before the close
            // or the hang-up are still read.
            if this.consumer.is_closed() {
                if this.has_input()? {
                    continue;
                }
                return Poll::Ready(Ok(()));
            }
            if connection.peer_gone.load(Ordering::Acquire) {
                if this.has_input()? {
                    continue;
                }
                return Poll::Ready(Err(peer_gone_error()));
            }
            if this.spin.keep_spinning(connection.spin, cx) {
                return Poll::Pending;
            }
            if !this.consumer.announce_sleep()? {
                continue;
            }
            // The fence in `announce_sleep` also orders our flag before this
            // look at the descriptor ring (the sender fences after publishing a
            // descriptor, then looks at the flag: `Producer::publish`).
            if this.slabs_queued()? > 0 {
                this.consumer.end_sleep();
                continue;
            }
            // The flag stays set while we are parked: the next publish wakes us.
            ready!(poll_signalled(&connection.data_ready, cx))?;
            this.consumer.end_sleep();
        }
    }
}

impl ShmReadHalf {
    /// Slab descriptors waiting (none without slabs).
    fn slabs_queued(&self) -> io::Result<u64> {
        Ok(self.slabs.as_ref().map_or(Ok(0), |slabs| slabs.queued())?)
    }

    /// Whether ring bytes or slab descriptors are waiting.
    fn has_input(&self) -> io::Result<bool> {
        Ok(self.consumer.available()? > 0 || self.slabs_queued()? > 0)
    }
}

/// How full a connection's two rings are, readable from anywhere (metrics)
/// without keeping the connection's memory mapped
/// ([`ShmWriteHalf::ring_gauge`]).
#[derive(Clone, Debug)]
pub struct RingGauge {
    region: Weak<Region>,
    outbound_ring: usize,
}

impl RingGauge {
    /// Bytes each ring holds.
    pub fn capacity(&self) -> Option<u64> {
        Some(self.region.upgrade()?.capacity())
    }

    /// Bytes waiting now in the ring we write and in the one we read
    /// (written, not yet read); `None` once the connection is gone.
    pub fn used(&self) -> Option<(u64, u64)> {
        let region = self.region.upgrade()?;
        let outbound = region.ring(self.outbound_ring).used();
        let inbound = region.ring(1 - self.outbound_ring).used();
        Some((outbound, inbound))
    }
}

impl ShmWriteHalf {
    /// A gauge of this connection's rings.
    pub fn ring_gauge(&self) -> RingGauge {
        RingGauge {
            region: Arc::downgrade(&self.connection.region),
            outbound_ring: self.connection.outbound_ring,
        }
    }

    /// The slabs this side sends large messages from, if the connection has
    /// any ([`ShmOptions::slab_count`](crate::ShmOptions::slab_count)): fill a
    /// [`SlabBuf`] from [`SlabPool::alloc`], then [`ShmWriteHalf::send_slab`].
    pub fn slab_pool(&self) -> Option<SlabPool> {
        self.slabs.as_ref().map(|sender| sender.pool.clone())
    }

    /// Sends a filled slab buffer as the next bytes of the stream, after
    /// everything written before: the peer reads them as if they had been
    /// written with `poll_write`, one copy fewer. Never waits: the descriptor
    /// ring has room for every slab.
    pub fn send_slab(&mut self, buf: SlabBuf) -> io::Result<()> {
        if self.closed {
            return Err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                "write after shutdown",
            ));
        }
        if self.connection.peer_gone.load(Ordering::Acquire) {
            return Err(peer_gone_error());
        }
        let Some(sender) = &mut self.slabs else {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "this shared-memory connection has no slabs",
            ));
        };
        if buf.is_empty() {
            return Ok(());
        }
        sender.publish(self.producer.position(), buf)?;
        if self.producer.publish() {
            signal(&self.connection.wake_peer_reader);
        }
        Ok(())
    }

    fn poll_write_with(
        &mut self,
        cx: &mut Context<'_>,
        mut write: impl FnMut(&mut Producer) -> io::Result<usize>,
    ) -> Poll<io::Result<usize>> {
        let connection = &*self.connection;
        if self.closed {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                "write after shutdown",
            )));
        }
        if let Some(sender) = &self.slabs {
            sender.pool.check()?;
        }
        loop {
            if connection.peer_gone.load(Ordering::Acquire) {
                return Poll::Ready(Err(peer_gone_error()));
            }
            let n = write(&mut self.producer)?;
            if n > 0 {
                if self.producer.publish() {
                    signal(&connection.wake_peer_reader);
                }
                self.spin = Spin::default();
                return Poll::Ready(Ok(n));
            }
            if self.spin.keep_spinning(connection.spin, cx) {
                return Poll::Pending;
            }
            if !self.producer.announce_sleep()? {
                continue;
            }
            ready!(poll_signalled(&connection.space_ready, cx))?;
            self.producer.end_sleep();
        }
    }

    fn close(&mut self) {
        if !self.closed {
            self.closed = true;
            self.producer.close();
            signal(&self.connection.wake_peer_reader);
        }
    }
}

impl AsyncWrite for ShmWriteHalf {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        self.get_mut()
            .poll_write_with(cx, |producer| Ok(producer.write(buf)?))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        if bufs.iter().all(|b| b.is_empty()) {
            return Poll::Ready(Ok(0));
        }
        // As many whole slices as fit, then part of the next: published at once.
        self.get_mut().poll_write_with(cx, |producer| {
            let mut total = 0;
            for buf in bufs {
                let n = producer.write(buf)?;
                total += n;
                if n < buf.len() {
                    break;
                }
            }
            Ok(total)
        })
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // Every write is published (visible to the peer) before it returns.
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.get_mut().close();
        Poll::Ready(Ok(()))
    }
}

impl Drop for ShmWriteHalf {
    fn drop(&mut self) {
        self.close();
    }
}

impl AsyncRead for ShmStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().read).poll_read(cx, buf)
    }
}

impl AsyncWrite for ShmStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().write).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().write).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().write).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().write).poll_shutdown(cx)
    }
}

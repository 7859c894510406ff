//! The state of one connection, shared by its reader, its writer and its calls.
//!
//! Both sides of a connection (client and server) are built from the same parts:
//!
//! * [`Shared`]: one mutex around the connection's [`State`]: the pending write
//!   buffer, the table of open streams with their inboxes and flow-control windows,
//!   and the connection's own windows. Calls never touch the socket: they encode
//!   frames straight into the pending write buffer under the lock (no intermediate
//!   allocation or copy) and wake the writer.
//! * the writer task ([`writer::run`]): swaps the pending buffer for an empty one
//!   and writes the whole batch with one `write_all`. Frames from many calls made
//!   while the previous write was in flight leave in one syscall, which is what
//!   makes many concurrent calls cheap.
//! * the reader (driven by `client::connection` or `server::connection`): reads
//!   large chunks, decodes every whole frame in them under a single lock
//!   acquisition ([`State::handle_common`] for what both roles share), then wakes
//!   the calls it delivered to.
//!
//! One mutex for everything keeps the invariants (a stream's window, its inbox and
//! the bytes queued for it) trivially consistent; critical sections are a few
//! hundred nanoseconds of bookkeeping and encoding, never I/O.
//!
//! Memory is bounded whatever the peer does: inbound messages are bounded by the
//! receive windows (section 4 of `docs/protocol.md`; every DATA frame costs
//! window, so their number is bounded too), the pending write buffer by the
//! peer's windows for DATA and by the reader pausing while the buffer is above
//! [`PENDING_WRITE_PAUSE`] for everything else. A server also bounds the
//! messages its calls hold while they wait to be sent (a peer that grants
//! no credit, or does not read): see [`ServerLimits::memory_budget`].

mod flood;
mod inbox;
pub(crate) mod keepalive;
pub(crate) mod options;
mod read_buf;
pub(crate) mod stream;
pub(crate) mod writer;

pub(crate) use inbox::Inbox;
pub use keepalive::Keepalive;
pub(crate) use read_buf::reserve_for_read;

use crate::call::Payload;
use crate::server::Activity;
use crate::status::Status;
use bytes::{Bytes, BytesMut};
use rustc_hash::FxHashMap;
use sinew_transport::{SlabBuf, SlabPool};
use sinew_wire::{encode, flow_cost, Code, Frame, MetadataMap, Reason, Settings, WireError};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use tokio::sync::Notify;

/// Senders of DATA wait while more than this is queued for the socket: it keeps
/// latency low and buffers small when the socket is the bottleneck.
pub(crate) const PENDING_WRITE_HIGH: usize = 1024 * 1024;
/// The reader stops reading while more than this is queued for the socket on
/// top of what DATA alone can queue ([`wait_for_writer`]): a peer that never
/// reads cannot make us queue unbounded answers (PING ACKs, resets).
pub(crate) const PENDING_WRITE_PAUSE: usize = 4 * 1024 * 1024;

/// A message a connection can encode straight into its pending write buffer or
/// into shared-memory slabs: any prost message (the server's typed responses),
/// or a [`Payload`] (the client's type-erased requests).
pub(crate) trait Encode {
    /// Length of the encoding.
    fn wire_len(&self) -> usize;
    /// Appends the encoding to the pending buffer.
    fn write_to(&self, buf: &mut BytesMut);
    /// Writes the encoding into slabs sized with `wire_len`.
    fn write_to_slab(&self, buf: &mut SlabBuf);
}

impl<M: prost::Message> Encode for M {
    fn wire_len(&self) -> usize {
        self.encoded_len()
    }

    fn write_to(&self, buf: &mut BytesMut) {
        // Not `encode`, which measures the message again to check the room
        // left: a BytesMut grows on demand.
        self.encode_raw(buf);
    }

    fn write_to_slab(&self, buf: &mut SlabBuf) {
        // The slabs hold `wire_len` bytes (measured by the caller).
        self.encode_raw(buf);
    }
}

impl Encode for Payload {
    fn wire_len(&self) -> usize {
        self.encoded_len()
    }

    fn write_to(&self, buf: &mut BytesMut) {
        self.encode(buf);
    }

    fn write_to_slab(&self, buf: &mut SlabBuf) {
        self.encode_to_slab(buf);
    }
}

/// The reader's back-pressure, on both sides: while more than
/// [`PENDING_WRITE_PAUSE`] waits for the socket beyond what DATA alone can
/// queue (a peer that does not read its answers), waits for the writer to make
/// progress before reading more, so that what is queued for the peer stays
/// bounded.
///
/// DATA is bounded on its own: senders wait above [`PENDING_WRITE_HIGH`], so
/// at most that plus one frame of the peer's largest is queued. Counting it
/// against the pause made two legitimate peers that both send near-maximum
/// messages stop reading at once, each waiting on a writer blocked by the
/// other's full socket or ring, until keepalive killed the connection.
pub(crate) async fn wait_for_writer(shared: &Shared) {
    let limit = PENDING_WRITE_PAUSE
        + PENDING_WRITE_HIGH
        + sinew_wire::FRAME_HEADER_LEN
        + shared.peer.max_frame_size as usize;
    while shared.pending_len() > limit {
        let flushed = shared.flushed.notified();
        if shared.pending_len() <= limit || shared.lock().dead.is_some() {
            break;
        }
        flushed.await;
    }
}

/// Wakers collected under the lock and woken after it is released. Inline up to
/// eight, so that waking the calls of a batch does not allocate.
pub(crate) type Wakers = smallvec::SmallVec<[Waker; 8]>;

/// What a stream's inbox can hold, in arrival order.
#[derive(Debug)]
pub(crate) enum Inbound {
    /// Response headers (client side).
    Headers(MetadataMap),
    /// One message.
    Message(Bytes),
    /// The peer will send no more messages (server side: client half-closed).
    End,
    /// The call's final status (client side).
    Trailers(Status),
    /// The stream was reset, or the connection died: the call is over.
    Reset(Status),
}

/// Per-stream bookkeeping, owned by the connection state.
#[derive(Debug)]
pub(crate) struct StreamState {
    pub(crate) inbox: Inbox,
    pub(crate) recv_waker: Option<Waker>,
    pub(crate) send_waker: Option<Waker>,
    /// Bytes we may still send on this stream (may dip below zero by one frame).
    pub(crate) send_window: i64,
    /// Bytes the peer may still send on this stream before we credit more.
    pub(crate) recv_window: i64,
    /// Bytes consumed by the application and not yet credited back.
    pub(crate) recv_unacked: u32,
    /// The peer sent END_STREAM / HALF_CLOSE / TRAILERS: no more messages come.
    pub(crate) remote_closed: bool,
    /// We sent END_STREAM / HALF_CLOSE (client) or TRAILERS (server).
    pub(crate) local_closed: bool,
    /// A RESET was sent or received, or the connection died.
    pub(crate) reset: bool,
    /// Server side: the call's task, woken when the call is cancelled from
    /// outside (client reset, connection lost, drain deadline).
    pub(crate) cancel_waker: Option<Waker>,
    /// Server side: why the call was cancelled from outside, once it was.
    pub(crate) cancelled: Option<Status>,
    /// Client side: the value of [`State::batches_taken`] when this stream's
    /// HEADERS were queued. While it is still current, no byte of the call
    /// has been handed to the socket.
    pub(crate) queued_in_batch: u64,
    /// Bytes of the message this stream's call is waiting to send (counted
    /// in [`State::held`]).
    pub(crate) waiting: usize,
    /// The message waiting now was counted as a stall (once per message).
    pub(crate) stalled: bool,
}

impl StreamState {
    pub(crate) fn new(send_window: u32, recv_window: u32) -> StreamState {
        StreamState {
            inbox: Inbox::default(),
            recv_waker: None,
            send_waker: None,
            send_window: send_window as i64,
            recv_window: recv_window as i64,
            recv_unacked: 0,
            remote_closed: false,
            local_closed: false,
            reset: false,
            cancel_waker: None,
            cancelled: None,
            queued_in_batch: 0,
            waiting: 0,
            stalled: false,
        }
    }

    /// Flow-control cost of the messages still in the inbox: connection
    /// credit the peer gets back when the stream is dropped unread.
    pub(crate) fn unread_credit(&self) -> usize {
        self.inbox
            .as_slice()
            .iter()
            .map(|item| match item {
                Inbound::Message(bytes) => flow_cost(bytes.len()),
                _ => 0,
            })
            .sum()
    }

    /// Takes the oldest inbound item.
    pub(crate) fn pop_inbound(&mut self) -> Option<Inbound> {
        self.inbox.pop()
    }

    fn deliver(&mut self, item: Inbound, wake: &mut Wakers) {
        self.inbox.push(item);
        if let Some(waker) = self.recv_waker.take() {
            wake.push(waker);
        }
    }

    /// Ends the stream with a status, waking whoever waits on it.
    pub(crate) fn fail(&mut self, status: Status, wake: &mut Wakers) {
        if self.reset {
            return;
        }
        self.reset = true;
        self.remote_closed = true;
        self.cancel(status.clone(), wake);
        self.deliver(Inbound::Reset(status), wake);
        if let Some(waker) = self.send_waker.take() {
            wake.push(waker);
        }
    }

    /// Server side: tells the call's task that the call is over from outside.
    pub(crate) fn cancel(&mut self, status: Status, wake: &mut Wakers) {
        self.cancelled.get_or_insert(status);
        if let Some(waker) = self.cancel_waker.take() {
            wake.push(waker);
        }
    }
}

/// A frame whose meaning depends on the side that receives it, handed back by
/// [`Locked::handle_common`] to the client's or the server's reader.
#[derive(Debug)]
pub(crate) enum RoleFrame {
    Headers(sinew_wire::Headers),
    Trailers(sinew_wire::Trailers),
    GoAway(sinew_wire::GoAway),
}

/// Which end of the connection this process is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Role {
    /// Opens streams (a channel's connection).
    Client,
    /// Accepts them.
    Server,
}

/// Everything about a connection that calls, reader and writer share.
#[derive(Debug)]
pub(crate) struct State {
    /// Frames encoded and not yet handed to the socket.
    pub(crate) pending: BytesMut,
    /// Messages encoded out of line (shared-memory slabs), sent in their
    /// place in `pending`.
    pub(crate) out_of_line: writer::OutOfLine,
    pub(crate) streams: FxHashMap<u32, StreamState>,
    /// Connection-level send credit (may dip below zero by one frame).
    pub(crate) send_window: i64,
    /// Connection-level credit the peer still has.
    pub(crate) recv_window: i64,
    pub(crate) recv_unacked: u32,
    /// Tasks waiting for connection-level send credit, buffer space or a stream slot.
    pub(crate) capacity_waiters: Vec<Waker>,
    /// Set when the connection can no longer carry calls; the reason calls get.
    pub(crate) dead: Option<Status>,
    /// The writer should flush what is pending, then close the socket.
    pub(crate) close_after_flush: bool,
    /// Highest stream id opened (server: received; client: allocated).
    pub(crate) highest_stream_id: u32,
    /// Streams currently in the table that count against the concurrency limit.
    pub(crate) open_streams: u32,
    /// A GOAWAY was received: no new streams above this id.
    pub(crate) goaway_received: Option<u32>,
    /// A GOAWAY was sent with this last stream id.
    pub(crate) goaway_sent: Option<u32>,
    /// Client side: the channel is gone; close once the last call ends.
    pub(crate) close_when_idle: bool,
    /// How many times the writer took the pending buffer: bytes queued since
    /// the last time have not reached the socket (see
    /// [`StreamState::queued_in_batch`]).
    pub(crate) batches_taken: u64,
    /// Bytes of the messages calls are waiting to send (for credit from the
    /// peer, or for room in the write buffer): what the peer makes this side
    /// hold by not reading. See [`ServerLimits::memory_budget`].
    pub(crate) held: usize,
    /// Frames the peer sent that did no work for a call (PINGs, frames for
    /// streams already gone): a budget, past which the peer is told to calm
    /// down and the connection closes.
    pub(crate) flood: flood::FloodGuard,
}

/// The connection's shared half: state, settings of both sides, and the signals
/// between the calls, the reader and the writer.
#[derive(Debug)]
pub(crate) struct Shared {
    state: Mutex<State>,
    /// Wakes the writer when the pending buffer goes from empty to non-empty.
    pub(crate) writer_wake: Notify,
    /// Signalled by the writer after each flush (the reader's backpressure waits on it).
    pub(crate) flushed: Notify,
    /// Signalled when a stream leaves the table (graceful shutdown waits on it).
    pub(crate) stream_closed: Notify,
    /// False once the connection must not carry new calls (dead, or GOAWAY
    /// received); read without the lock by the client's connection pool.
    /// Cleared only by [`Shared::stop_accepting`].
    pub(crate) accepting: AtomicBool,
    /// Signalled when `accepting` turns false ([`Shared::until_unusable`]).
    unusable: Notify,
    /// Signalled when the connection is killed ([`Shared::until_dead`]).
    died: Notify,
    /// [`State::open_streams`], readable without the lock (readiness and load
    /// of the client's pool; the server's connection table tells idle
    /// connections by it).
    open_streams: Arc<Activity>,
    /// Set by the reader whenever bytes arrive; keepalive reads and clears it.
    pub(crate) received: AtomicBool,
    /// What we announced: the limits we enforce on what we receive.
    pub(crate) local: Settings,
    /// What the peer announced: the limits we must respect when sending.
    pub(crate) peer: Settings,
    pub(crate) role: Role,
    /// What a server bounds on this connection ([`ServerLimits::CLIENT`]
    /// on a client).
    pub(crate) limits: ServerLimits,
}

/// What a server bounds on each of its connections.
#[derive(Clone, Copy, Debug)]
pub(crate) struct ServerLimits {
    /// How many bytes of messages its calls may hold waiting to be sent
    /// ([`State::held`]). Near it the connection stops returning credit for
    /// requests (back-pressure, see `Locked::return_connection_credit`);
    /// above it it refuses new calls, and a call whose message would have
    /// to wait as well ends with `RESOURCE_EXHAUSTED` instead (so the bound
    /// holds even for calls that were already running).
    pub(crate) memory_budget: usize,
    /// How long the single request of a unary or server-streaming call may
    /// take to arrive.
    pub(crate) request_timeout: std::time::Duration,
}

impl ServerLimits {
    /// No bound: what a client's calls hold is the application's own memory.
    pub(crate) const CLIENT: ServerLimits = ServerLimits {
        memory_budget: usize::MAX,
        request_timeout: std::time::Duration::MAX,
    };
}

/// Kills the connection when dropped: however the task driving a connection ends
/// (returning, or unwinding from a bug), the writer closes the socket and the peer
/// learns at once, instead of waiting on a connection nobody reads any more.
pub(crate) struct KillOnExit(pub(crate) Arc<Shared>);

impl Drop for KillOnExit {
    fn drop(&mut self) {
        self.0.lock().kill(Status::unavailable("connection closed"));
    }
}

/// A locked [`State`] that wakes the writer when it is released, if frames were
/// queued while it was held. Waking happens after the unlock, so the writer never
/// wakes up only to block on the lock.
pub(crate) struct Locked<'a> {
    guard: Option<MutexGuard<'a, State>>,
    shared: &'a Shared,
    was_empty: bool,
    /// Wakers collected while locked, woken after unlocking.
    pub(crate) wake: Wakers,
}

impl std::ops::Deref for Locked<'_> {
    type Target = State;
    fn deref(&self) -> &State {
        self.guard.as_ref().expect("guard present until drop")
    }
}

impl std::ops::DerefMut for Locked<'_> {
    fn deref_mut(&mut self) -> &mut State {
        self.guard.as_mut().expect("guard present until drop")
    }
}

impl Drop for Locked<'_> {
    fn drop(&mut self) {
        let queued = self.was_empty && !self.pending.is_empty();
        drop(self.guard.take());
        if queued {
            self.shared.writer_wake.notify_one();
        }
        for waker in self.wake.drain(..) {
            waker.wake();
        }
    }
}

impl Shared {
    pub(crate) fn new(
        role: Role,
        local: Settings,
        peer: Settings,
        slabs: Option<SlabPool>,
        activity: Arc<Activity>,
        limits: ServerLimits,
    ) -> Arc<Shared> {
        Arc::new(Shared {
            state: Mutex::new(State {
                pending: BytesMut::with_capacity(64 * 1024),
                out_of_line: writer::OutOfLine::new(slabs),
                streams: FxHashMap::default(),
                send_window: peer.initial_connection_window as i64,
                recv_window: local.initial_connection_window as i64,
                recv_unacked: 0,
                capacity_waiters: Vec::new(),
                dead: None,
                close_after_flush: false,
                highest_stream_id: 0,
                open_streams: 0,
                goaway_received: None,
                goaway_sent: None,
                close_when_idle: false,
                batches_taken: 0,
                held: 0,
                flood: flood::FloodGuard::new(),
            }),
            writer_wake: Notify::new(),
            flushed: Notify::new(),
            stream_closed: Notify::new(),
            accepting: AtomicBool::new(true),
            unusable: Notify::new(),
            died: Notify::new(),
            open_streams: activity,
            received: AtomicBool::new(false),
            local,
            peer,
            role,
            limits,
        })
    }

    /// Locks the state. Poisoning is ignored: every critical section leaves the
    /// state consistent before doing anything that could panic.
    pub(crate) fn lock(&self) -> Locked<'_> {
        let guard = self
            .state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let was_empty = guard.pending.is_empty();
        Locked {
            guard: Some(guard),
            shared: self,
            was_empty,
            wake: Wakers::new(),
        }
    }

    /// The connection takes no new calls from now on (it died, or the peer
    /// sent GOAWAY); wakes [`Shared::until_unusable`].
    pub(crate) fn stop_accepting(&self) {
        self.accepting.store(false, Ordering::Release);
        self.unusable.notify_waiters();
    }

    /// Resolves once the connection takes no new calls.
    pub(crate) async fn until_unusable(&self) {
        loop {
            let unusable = self.unusable.notified();
            tokio::pin!(unusable);
            // Registered before the check, so a stop in between is not missed.
            unusable.as_mut().enable();
            if !self.accepting.load(Ordering::Acquire) {
                return;
            }
            unusable.await;
        }
    }

    /// Resolves once the connection has been killed.
    pub(crate) async fn until_dead(&self) {
        loop {
            let died = self.died.notified();
            tokio::pin!(died);
            died.as_mut().enable();
            if self.lock().dead.is_some() {
                return;
            }
            died.await;
        }
    }

    /// Bytes waiting for the writer.
    pub(crate) fn pending_len(&self) -> usize {
        self.lock().queued_len()
    }

    /// What the connection carries, counted ([`Activity`]).
    pub(crate) fn activity(&self) -> &Arc<Activity> {
        &self.open_streams
    }

    /// Streams open on the connection (calls in flight).
    pub(crate) fn streams_open(&self) -> usize {
        self.open_streams.calls() as usize
    }

    /// Ready while the peer's stream limit leaves room for another stream;
    /// otherwise wakes the task when a stream closes.
    pub(crate) fn poll_stream_room(&self, cx: &mut Context<'_>) -> Poll<()> {
        let limit = self.peer.max_concurrent_streams;
        if self.open_streams.calls() < limit {
            return Poll::Ready(());
        }
        let mut state = self.lock();
        if state.open_streams < limit {
            return Poll::Ready(());
        }
        state.capacity_waiters.push(cx.waker().clone());
        Poll::Pending
    }
}

impl State {
    /// Bytes waiting for the writer, in the pending buffer and out of line.
    pub(crate) fn queued_len(&self) -> usize {
        self.pending.len() + self.out_of_line.queued_len()
    }

    /// Queues one DATA frame carrying `message` (`len` bytes encoded): out of
    /// line when the transport takes it so (see [`writer::OutOfLine`]),
    /// otherwise encoded straight into the pending buffer.
    pub(crate) fn encode_data<M: Encode + ?Sized>(
        &mut self,
        id: u32,
        end_stream: bool,
        message: &M,
        len: usize,
    ) {
        if self
            .out_of_line
            .encode(&mut self.pending, id, end_stream, message, len)
        {
            return;
        }
        let flags = if end_stream {
            sinew_wire::flags::END_STREAM
        } else {
            0
        };
        let buf = &mut self.pending;
        buf.reserve(sinew_wire::FRAME_HEADER_LEN + len);
        let start = encode::begin(buf, sinew_wire::FrameKind::Data, flags, id);
        message.write_to(buf);
        encode::finish(buf, start);
    }
}

impl Locked<'_> {
    /// The connection this lock belongs to.
    pub(crate) fn shared_ref(&self) -> &Shared {
        self.shared
    }

    /// Marks the connection dead: every stream fails with `status`, every waiter
    /// wakes, the writer flushes what is queued and closes.
    ///
    /// A client call none of whose bytes reached the socket yet fails with the
    /// status marked not processed: the server cannot have seen it.
    pub(crate) fn kill(&mut self, status: Status) {
        if self.dead.is_some() {
            return;
        }
        let mut wake = std::mem::take(&mut self.wake);
        self.shared.stop_accepting();
        self.shared.died.notify_waiters();
        self.dead = Some(status.clone());
        self.close_after_flush = true;
        let current_batch = self.batches_taken;
        for stream in self.streams.values_mut() {
            let status = if stream.queued_in_batch == current_batch {
                status.clone().mark_not_processed()
            } else {
                status.clone()
            };
            stream.fail(status, &mut wake);
        }
        wake.extend(self.capacity_waiters.drain(..));
        self.wake = wake;
        // Wake the writer even if nothing is queued, so it can close.
        self.shared.writer_wake.notify_one();
    }

    /// Reports a connection error to the peer (GOAWAY) and kills the connection.
    pub(crate) fn connection_error(&mut self, error: &WireError) {
        tracing::debug!(%error, "connection error");
        // Once per connection: an error on a connection already dead was
        // never sent.
        if self.dead.is_none() {
            self.shared.open_streams.connection_error(error.reason());
        }
        let last = self.highest_stream_id;
        encode::goaway(&mut self.pending, last, error.reason(), error.message());
        self.kill(Status::unavailable(format!("connection error: {error}")));
    }

    /// Credits `len` consumed bytes back to the connection (and maybe the stream),
    /// sending WINDOW_UPDATEs once half a window has been consumed.
    pub(crate) fn credit(&mut self, stream_id: Option<u32>, len: usize) {
        let len = len as u32;
        let stream_threshold = (self.shared.local.initial_stream_window / 2).max(1);
        let state: &mut State = self;
        if let Some(id) = stream_id {
            if let Some(stream) = state.streams.get_mut(&id) {
                stream.recv_unacked += len;
                if stream.recv_unacked >= stream_threshold && !stream.remote_closed {
                    let increment = stream.recv_unacked;
                    stream.recv_unacked = 0;
                    stream.recv_window += increment as i64;
                    encode::window_update(&mut state.pending, id, increment);
                }
            }
        }
        state.recv_unacked += len;
        self.return_connection_credit();
    }

    /// Returns the connection credit consumed so far once it is worth an
    /// update, unless what calls hold plus room for two receive windows
    /// would pass the memory budget: then the peer gets it back only when
    /// nothing waits. The room is for the answers still to come to the
    /// requests already granted (a window of them) and to those taken but
    /// not answered yet (the call returning this credit is one): for calls
    /// that answer about what they are asked, a client that sends faster
    /// than it takes answers is slowed down at its requests, never failed at
    /// its answers.
    fn return_connection_credit(&mut self) {
        let window = self.shared.local.initial_connection_window;
        let threshold = (window / 2).max(1);
        let budget = self.shared.limits.memory_budget;
        let state: &mut State = self;
        let room = state.held == 0 || state.held.saturating_add(2 * window as usize) <= budget;
        if state.recv_unacked >= threshold && room {
            let increment = state.recv_unacked;
            state.recv_unacked = 0;
            state.recv_window += increment as i64;
            encode::window_update(&mut state.pending, 0, increment);
        }
    }

    /// A stream's call no longer waits to send what it held.
    pub(crate) fn release_held(&mut self, waiting: usize) {
        if waiting > 0 {
            self.held -= waiting;
            self.return_connection_credit();
        }
    }

    /// Whether calls hold more than the memory budget (a server then refuses
    /// new calls).
    pub(crate) fn over_memory_budget(&self) -> bool {
        self.held > self.shared.limits.memory_budget
    }

    /// Handles the frames both roles treat alike. Returns the frame back when it
    /// is role-specific (HEADERS, TRAILERS, GOAWAY), `Ok(None)` when handled.
    pub(crate) fn handle_common(&mut self, frame: Frame) -> Result<Option<RoleFrame>, WireError> {
        match frame {
            Frame::Data(data) => {
                let len = flow_cost(data.payload.len());
                if self.recv_window <= 0 {
                    return Err(WireError::new(
                        Reason::FlowControlError,
                        "DATA beyond the connection's flow-control window",
                    ));
                }
                self.recv_window -= len as i64;
                let highest = self.highest_stream_id;
                let mut wake = std::mem::take(&mut self.wake);
                let mut misplaced = false;
                let outcome = match self.streams.get_mut(&data.stream_id) {
                    Some(stream) if stream.reset => Ok(false),
                    Some(stream) => {
                        if stream.remote_closed {
                            // A stream error (the stream's own rule broken):
                            // RESET INTERNAL, and the call ends with it.
                            let status = Status::internal(format!(
                                "the peer sent DATA on stream {} after ending it",
                                data.stream_id
                            ));
                            stream.fail(status, &mut wake);
                            misplaced = true;
                            Ok(false)
                        } else if stream.recv_window <= 0 {
                            Err(WireError::new(
                                Reason::FlowControlError,
                                format!(
                                    "DATA beyond the flow-control window of stream {}",
                                    data.stream_id
                                ),
                            ))
                        } else {
                            stream.recv_window -= len as i64;
                            stream.deliver(Inbound::Message(data.payload), &mut wake);
                            if data.end_stream {
                                stream.remote_closed = true;
                                stream.deliver(Inbound::End, &mut wake);
                            }
                            Ok(true)
                        }
                    }
                    None if data.stream_id > highest => Err(WireError::protocol(format!(
                        "DATA on stream {} which was never opened",
                        data.stream_id
                    ))),
                    None => Ok(false),
                };
                self.wake = wake;
                if misplaced {
                    self.encode_reset(
                        data.stream_id,
                        Code::Internal,
                        "DATA after the stream's END_STREAM",
                    );
                }
                if !outcome? {
                    // Closed or reset stream: nobody will consume it, credit it now.
                    self.credit(None, len);
                }
                Ok(None)
            }
            Frame::HalfClose(half_close) => {
                let highest = self.highest_stream_id;
                let mut wake = std::mem::take(&mut self.wake);
                let result = match self.streams.get_mut(&half_close.stream_id) {
                    Some(stream) if stream.reset => {
                        self.flood.spend("HALF_CLOSE on a reset stream")
                    }
                    Some(stream) if !stream.remote_closed => {
                        stream.remote_closed = true;
                        stream.deliver(Inbound::End, &mut wake);
                        Ok(None)
                    }
                    Some(_) => Err(WireError::protocol(format!(
                        "HALF_CLOSE on stream {} which the peer had already ended",
                        half_close.stream_id
                    ))),
                    None if half_close.stream_id > highest => Err(WireError::protocol(format!(
                        "HALF_CLOSE on stream {} which was never opened",
                        half_close.stream_id
                    ))),
                    None => self.flood.spend("HALF_CLOSE on a closed stream"),
                };
                self.wake = wake;
                result
            }
            Frame::Reset(reset) => {
                let mut wake = std::mem::take(&mut self.wake);
                let role = self.shared.role;
                let highest = self.highest_stream_id;
                let stream = self.streams.get_mut(&reset.stream_id);
                if let Some(stream) = stream.filter(|stream| !stream.reset) {
                    let message = if reset.message.is_empty() {
                        "stream reset by peer".to_owned()
                    } else {
                        reset.message
                    };
                    let mut status = Status::new(reset.code, message);
                    // Only a server refuses; a client's flag means nothing.
                    if reset.refused && role == Role::Client {
                        status = status.mark_not_processed();
                    }
                    stream.fail(status, &mut wake);
                    self.wake = wake;
                    Ok(None)
                } else if reset.stream_id > highest {
                    self.wake = wake;
                    Err(WireError::protocol(format!(
                        "RESET on stream {} which was never opened",
                        reset.stream_id
                    )))
                } else {
                    self.wake = wake;
                    self.flood.spend("RESET of a closed stream")
                }
            }
            Frame::Ping(ping) => {
                self.flood.spend::<RoleFrame>("PING")?;
                if !ping.ack {
                    encode::ping(&mut self.pending, true, ping.payload);
                }
                Ok(None)
            }
            Frame::WindowUpdate(update) => {
                let increment = update.increment as i64;
                let max = Settings::MAX_VALUE as i64;
                if update.stream_id == 0 {
                    self.send_window += increment;
                    if self.send_window > max {
                        return Err(WireError::new(
                            Reason::FlowControlError,
                            "WINDOW_UPDATE lifts the connection window above 2^31-1",
                        ));
                    }
                    let waiters = std::mem::take(&mut self.capacity_waiters);
                    self.wake.extend(waiters);
                } else if let Some(stream) = self.streams.get_mut(&update.stream_id) {
                    stream.send_window += increment;
                    if stream.send_window > max {
                        return Err(WireError::new(
                            Reason::FlowControlError,
                            format!(
                                "WINDOW_UPDATE lifts the window of stream {} above 2^31-1",
                                update.stream_id
                            ),
                        ));
                    }
                    if let Some(waker) = stream.send_waker.take() {
                        self.wake.push(waker);
                    }
                } else if update.stream_id > self.highest_stream_id {
                    return Err(WireError::protocol(format!(
                        "WINDOW_UPDATE on stream {} which was never opened",
                        update.stream_id
                    )));
                } else {
                    return self.flood.spend("WINDOW_UPDATE on a closed stream");
                }
                Ok(None)
            }
            Frame::Headers(headers) => Ok(Some(RoleFrame::Headers(headers))),
            Frame::Trailers(trailers) => Ok(Some(RoleFrame::Trailers(trailers))),
            Frame::GoAway(goaway) => Ok(Some(RoleFrame::GoAway(goaway))),
        }
    }

    /// Adds a stream to the table: the one place streams enter it.
    pub(crate) fn insert_stream(&mut self, id: u32, stream: StreamState) {
        self.streams.insert(id, stream);
        self.flood.earn();
        self.open_streams += 1;
        self.shared.open_streams.set(self.open_streams, true);
    }

    /// Removes a stream from the table, waking anyone waiting for a free slot:
    /// the one place streams leave it.
    pub(crate) fn remove_stream(&mut self, id: u32) -> Option<StreamState> {
        let removed = self.streams.remove(&id);
        if let Some(stream) = &removed {
            self.release_held(stream.waiting);
            self.open_streams -= 1;
            self.shared.open_streams.set(self.open_streams, false);
            let waiters = std::mem::take(&mut self.capacity_waiters);
            self.wake.extend(waiters);
            // Only a draining server waits for streams to close; notifying
            // costs a lock inside tokio's Notify, so skip it otherwise.
            if self.goaway_sent.is_some() {
                self.shared.stream_closed.notify_waiters();
            }
        }
        removed
    }

    /// Queues TRAILERS for a stream. A status too large for the client's
    /// header list limit is replaced by an `INTERNAL` one saying so (the
    /// client would otherwise have to close the whole connection).
    pub(crate) fn encode_trailers(&mut self, id: u32, status: &Status) {
        let (message, details, metadata) = (status.message(), status.details(), status.metadata());
        let len = encode::trailers_len(message, details, metadata);
        let limit = self.shared.peer.max_header_list_size as usize;
        if len > limit {
            let message = format!(
                "the call's status ({} with {len} bytes of message, details and trailing \
                 metadata) is larger than the client's header list limit of {limit} bytes",
                status.code()
            );
            let empty = MetadataMap::new();
            encode::trailers(&mut self.pending, id, Code::Internal, &message, &[], &empty);
            return;
        }
        encode::trailers(
            &mut self.pending,
            id,
            status.code(),
            message,
            details,
            metadata,
        );
    }

    /// Queues a RESET for a stream.
    pub(crate) fn encode_reset(&mut self, id: u32, code: Code, message: &str) {
        encode::reset(&mut self.pending, id, code, message, false);
    }

    /// Server side: queues a RESET refusing a call no application code saw (the
    /// client may send it again).
    pub(crate) fn encode_refusal(&mut self, id: u32, message: &str) {
        encode::reset(&mut self.pending, id, Code::Unavailable, message, true);
    }
}

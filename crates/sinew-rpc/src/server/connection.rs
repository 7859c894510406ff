//! Serving one accepted connection: the handshake, then a loop that reads
//! frames and starts calls, then the drain of a graceful shutdown.
//!
//! * [`serve`]: the client's preface within the handshake timeout (a peer that
//!   says nothing, or garbage, is refused with a GOAWAY saying why), then the
//!   connection's writer task and this reader loop.
//! * [`Reader::read_frames`]: decodes every whole frame read so far under one
//!   lock acquisition; HEADERS open calls, which start once the lock is
//!   released, each in a task of its own running [`Router::serve`].
//! * The drain ([`Reader::start_drain`], [`Reader::end_stragglers`]): GOAWAY,
//!   then calls in flight may finish until the drain deadline, when those
//!   still running are ended with `UNAVAILABLE` (their tasks see it as a
//!   cancellation, so their layers see the status too).

use super::admission::Activity;
use super::call::{CallIo, ServerCall};
use super::stats::Limit;
use super::{MethodKind, Peer, Router, ServerConfig, Serving};
use crate::connection::stream::StreamRef;
use crate::connection::writer::Outbound;
use crate::connection::{
    keepalive, reserve_for_read, wait_for_writer, writer, Inbound, KillOnExit, Locked, Role,
    RoleFrame, ServerLimits, Shared, StreamState,
};
use crate::status::Status;
use bytes::BytesMut;
use sinew_wire::{encode, flow_cost, FrameDecoder, Preface, Reason, WireError};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::watch;
use tokio::time::Instant;

/// What happened to the calls of one connection while it drained.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct DrainCounts {
    pub(crate) drained: u64,
    pub(crate) cancelled: u64,
}

/// How long the calls ended by the drain deadline get to wind down (their
/// layers to see the status) before the connection closes under them.
const STRAGGLER_GRACE: Duration = Duration::from_secs(1);

/// What a connection gets from the server that accepted it.
pub(crate) struct Setup {
    pub(crate) router: Arc<Router>,
    pub(crate) config: Arc<ServerConfig>,
    pub(crate) peer: Option<Arc<Peer>>,
    /// Turns true when the connection must drain and close.
    pub(crate) shutdown: watch::Receiver<bool>,
    /// When the client's preface must have arrived by (the handshake's
    /// budget started when the connection was accepted).
    pub(crate) handshake_deadline: Instant,
    /// Where the connection's open streams are counted.
    pub(crate) activity: Arc<Activity>,
}

/// Serves one connection until the peer leaves, a connection error, or shutdown.
///
/// `buf` holds bytes already read from the connection (the ones the listener
/// looked at to pick the protocol); reading continues after them.
pub(crate) async fn serve<R, W>(
    mut reader: R,
    writer_half: W,
    mut buf: BytesMut,
    setup: Setup,
) -> DrainCounts
where
    R: AsyncRead + Unpin + Send + 'static,
    W: Outbound,
{
    let Setup {
        router,
        config,
        peer,
        shutdown,
        handshake_deadline,
        activity,
    } = setup;
    activity.received(buf.len());
    let preface = match handshake(&mut reader, &mut buf, handshake_deadline, &activity).await {
        Ok(preface) => preface,
        Err(error) => {
            activity.handshake_failed();
            return refuse(writer_half, &config, &error).await;
        }
    };
    if let Some(rings) = writer_half.ring_gauge() {
        activity.set_shm(rings, writer_half.slab_pool().map(|pool| pool.gauge()));
    }
    let shared = Shared::new(
        Role::Server,
        config.settings,
        preface.settings,
        writer_half.slab_pool(),
        activity,
        ServerLimits {
            memory_budget: config.connection_memory,
            request_timeout: config.request_timeout,
        },
    );
    Preface::new(config.settings).encode(&mut shared.lock().pending);
    let mut writer_task = AbortOnDrop(tokio::spawn(writer::run(shared.clone(), writer_half)));
    keepalive::start(&shared, config.keepalive);
    let _kill_on_exit = KillOnExit(shared.clone());
    let mut connection = Reader {
        shared: shared.clone(),
        decoder: FrameDecoder::from_settings(&config.settings),
        router,
        config,
        peer,
        new_calls: Vec::new(),
        drain_deadline: None,
        open_at_drain: 0,
        broke_a_rule: false,
        frames: 0,
    };
    let counts = connection.run(&mut reader, buf, shutdown).await;
    shared.lock().kill(Status::unavailable("connection closed"));
    // The writer flushes what is queued (a GOAWAY, last statuses) and closes;
    // a peer that does not read gets a moment, then the socket is dropped.
    let flushed = tokio::time::timeout(STRAGGLER_GRACE, &mut writer_task.0)
        .await
        .is_ok();
    if flushed && connection.broke_a_rule {
        linger(&mut reader).await;
    }
    counts
}

/// After a connection error, how long and how much the server keeps reading
/// (and discarding) before it closes.
const LINGER: Duration = Duration::from_secs(1);
const LINGER_BYTES: usize = 4 * 1024 * 1024;

/// Reads and discards what the peer still sends, until it closes its side,
/// for at most [`LINGER`] and [`LINGER_BYTES`]. Closing a socket with unread
/// bytes in it makes the kernel send a TCP reset, which can destroy the
/// GOAWAY we just sent before the peer reads it: a peer that broke a rule
/// would never learn which (a "lingering close", as nginx and HTTP/2 servers
/// do). Our writer has already shut down its side, so a peer that reads sees
/// the GOAWAY, then the end, and closes too.
async fn linger<R: AsyncRead + Unpin>(reader: &mut R) {
    let mut discard = vec![0u8; 64 * 1024];
    let _ = tokio::time::timeout(LINGER, async {
        let mut total = 0;
        while total < LINGER_BYTES {
            match reader.read(&mut discard).await {
                Ok(0) | Err(_) => break,
                Ok(n) => total += n,
            }
        }
    })
    .await;
}

/// Aborts the writer task when the connection's task ends, however it ends
/// (including the server dropping it at its shutdown deadline): a writer
/// blocked on a peer that never reads must not outlive its connection.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Reads the client's preface, within the handshake timeout, so that a peer
/// that connects and says nothing (or garbage) does not hold a task forever.
async fn handshake<R: AsyncRead + Unpin>(
    reader: &mut R,
    buf: &mut BytesMut,
    deadline: Instant,
    activity: &Activity,
) -> Result<Preface, WireError> {
    let read_preface = async {
        loop {
            if let Some(preface) = Preface::decode(buf)? {
                return Ok(preface);
            }
            let n = reader
                .read_buf(buf)
                .await
                .map_err(|e| WireError::new(Reason::BadPreface, format!("read failed: {e}")))?;
            activity.received(n);
            if n == 0 {
                return Err(WireError::new(
                    Reason::BadPreface,
                    "connection closed before the preface was complete",
                ));
            }
        }
    };
    tokio::time::timeout_at(deadline, read_preface)
        .await
        .unwrap_or_else(|_| {
            Err(WireError::new(
                Reason::BadPreface,
                "no preface within the handshake timeout",
            ))
        })
}

/// Answers a failed handshake with our preface and a GOAWAY saying why, then closes.
pub(crate) async fn refuse<W: AsyncWrite + Unpin>(
    mut writer: W,
    config: &ServerConfig,
    error: &WireError,
) -> DrainCounts {
    tracing::debug!(%error, "refusing connection");
    let mut out = BytesMut::new();
    Preface::new(config.settings).encode(&mut out);
    encode::goaway(&mut out, 0, error.reason(), error.message());
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        let _ = writer.write_all(&out).await;
        let _ = writer.shutdown().await;
    })
    .await;
    DrainCounts::default()
}

/// The reading side of a served connection, and its drain.
struct Reader {
    shared: Arc<Shared>,
    decoder: FrameDecoder,
    router: Arc<Router>,
    config: Arc<ServerConfig>,
    peer: Option<Arc<Peer>>,
    /// Calls opened by the frames of the current batch, started once the lock
    /// is released.
    new_calls: Vec<ServerCall>,
    /// Set once a graceful shutdown began.
    drain_deadline: Option<Instant>,
    open_at_drain: u64,
    /// The peer broke a rule: a GOAWAY saying which was sent.
    broke_a_rule: bool,
    /// Frames decoded so far (the frame timeout watches for progress).
    frames: u64,
}

/// Why the read loop stopped.
enum Ended {
    /// The connection is over (closed, lost, or a connection error).
    Closed,
    /// Every call in flight at the shutdown finished.
    Drained,
    /// The drain deadline passed.
    DeadlinePassed,
}

impl Reader {
    async fn run<R: AsyncRead + Unpin>(
        &mut self,
        reader: &mut R,
        mut buf: BytesMut,
        mut shutdown: watch::Receiver<bool>,
    ) -> DrainCounts {
        let mut shutdown_seen = *shutdown.borrow();
        // The frame timeout, checked by a clock that ticks a few times per
        // timeout (one timer for the connection, not one per read): the
        // number of frames decoded when a tick last saw a partial frame.
        let frame_timeout = self.config.frame_timeout;
        let period = (frame_timeout / 4).max(Duration::from_millis(50));
        let mut frame_clock = tokio::time::interval_at(Instant::now() + period, period);
        frame_clock.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut partial: Option<(Instant, u64)> = None;
        // Since when no call has been open (nor opened: the highest id then).
        let mut idle: Option<(Instant, u32)> = None;
        let mut close_idle = false;
        let ended = loop {
            if !self.read_frames(&mut buf) {
                break Ended::Closed;
            }
            if shutdown_seen && self.drain_deadline.is_none() {
                self.start_drain("server shutting down");
            }
            if close_idle && self.drain_deadline.is_none() {
                self.shared.activity().limit_hit(Limit::IdleTimeout);
                self.start_drain("idle connection closed (the server's idle timeout)");
            }
            // While draining, wake when a call leaves the table; stop when none is left.
            let stream_closed = self.shared.stream_closed.notified();
            tokio::pin!(stream_closed);
            stream_closed.as_mut().enable();
            if self.drain_deadline.is_some() && self.shared.lock().open_streams == 0 {
                break Ended::Drained;
            }
            reserve_for_read(&mut buf);
            // A peer that does not read its answers: stop reading from it until
            // the writer has made progress, so what we queue for it stays
            // bounded. (Inside the read branch, so that a shutdown and the
            // drain deadline are still seen meanwhile.)
            let read = async {
                wait_for_writer(&self.shared).await;
                reader.read_buf(&mut buf).await
            };
            tokio::select! {
                read = read => match read {
                    Ok(0) => {
                        let mut state = self.shared.lock();
                        if !buf.is_empty() {
                            state.connection_error(&WireError::new(
                                Reason::ProtocolError,
                                format!("connection closed in the middle of a frame ({} bytes of it received)", buf.len()),
                            ));
                        } else {
                            state.kill(Status::unavailable("client closed the connection"));
                        }
                        break Ended::Closed;
                    }
                    Ok(n) => {
                        self.shared.activity().received(n);
                        self.shared.received.store(true, std::sync::atomic::Ordering::Relaxed);
                    }
                    Err(error) => {
                        self.shared.lock().kill(Status::unavailable(format!("connection lost: {error}")));
                        break Ended::Closed;
                    }
                },
                _ = &mut stream_closed, if self.drain_deadline.is_some() => {}
                changed = shutdown.changed(), if !shutdown_seen => {
                    // A dropped sender also means shut down.
                    let _ = changed;
                    shutdown_seen = true;
                }
                _ = sleep_until_option(self.drain_deadline) => break Ended::DeadlinePassed,
                now = frame_clock.tick() => {
                    // A frame is late when one was partly in the buffer at a
                    // tick, with no frame decoded since, for the timeout.
                    partial = match partial {
                        _ if buf.is_empty() => None,
                        Some((since, frames)) if frames == self.frames => Some((since, frames)),
                        _ => Some((now, self.frames)),
                    };
                    if partial.is_some_and(|(since, _)| now >= since + frame_timeout) {
                        self.shared.activity().limit_hit(Limit::FrameTimeout);
                        self.shared.lock().connection_error(&WireError::new(
                            Reason::EnhanceYourCalm,
                            format!("a frame took longer than {frame_timeout:?} to arrive (the server's frame timeout); {} bytes of it came", buf.len()),
                        ));
                        break Ended::Closed;
                    }
                    // A connection without calls for the idle timeout is
                    // closed gracefully (a client opens a new one when it
                    // needs one); keepalive PINGs do not count as calls.
                    let (open, highest) = {
                        let state = self.shared.lock();
                        (state.open_streams, state.highest_stream_id)
                    };
                    idle = match idle {
                        Some((since, seen)) if open == 0 && seen == highest => Some((since, seen)),
                        _ if open == 0 => Some((now, highest)),
                        _ => None,
                    };
                    if let (Some(limit), Some((since, _))) = (self.config.idle_timeout, idle) {
                        close_idle |= now >= since + limit;
                    }
                }
            }
        };
        self.finish(ended).await
    }

    /// Decodes and handles every whole frame in `buf` under one lock, then
    /// starts the calls they opened. Returns false when the connection must
    /// end (a connection error was sent, or the client went away).
    fn read_frames(&mut self, buf: &mut BytesMut) -> bool {
        let shared = self.shared.clone();
        let alive = {
            let mut state = shared.lock();
            loop {
                let frame = match self.decoder.decode(buf) {
                    Ok(Some(frame)) => {
                        self.frames += 1;
                        frame
                    }
                    Ok(None) => {
                        prefetch_single_requests(&mut state, &mut self.new_calls);
                        break state.dead.is_none();
                    }
                    Err(error) => {
                        state.connection_error(&error);
                        self.broke_a_rule = true;
                        break false;
                    }
                };
                let handled = match state.handle_common(frame) {
                    Ok(None) => Ok(()),
                    Ok(Some(frame)) => self.handle_server_frame(&mut state, frame),
                    Err(error) => Err(error),
                };
                if let Err(error) = handled {
                    state.connection_error(&error);
                    self.broke_a_rule = true;
                    break false;
                }
            }
        };
        // Calls are plain tasks, not a JoinSet: finishing one wakes nobody but
        // the writer. They leave the stream table themselves (`CallGuard`).
        for call in self.new_calls.drain(..) {
            tokio::spawn(CallTask::new(&self.shared, &self.router, call));
        }
        alive
    }

    fn handle_server_frame(
        &mut self,
        state: &mut Locked<'_>,
        frame: RoleFrame,
    ) -> Result<(), WireError> {
        match frame {
            RoleFrame::Headers(headers) => {
                let id = headers.stream_id;
                if id <= state.highest_stream_id {
                    return Err(WireError::new(
                        Reason::ProtocolError,
                        format!(
                            "HEADERS opens stream {id}, not above the highest stream id so far ({})",
                            state.highest_stream_id
                        ),
                    ));
                }
                state.highest_stream_id = id;
                if state.goaway_sent.is_some() {
                    state.encode_refusal(id, "server is shutting down; call not processed");
                    return Ok(());
                }
                if state.over_memory_budget() {
                    let message = format!(
                        "the connection's memory budget ({} bytes) is spent on responses \
                         the client has not taken yet; call not processed",
                        self.shared.limits.memory_budget
                    );
                    self.shared.activity().limit_hit(Limit::ConnectionMemory);
                    state.encode_refusal(id, &message);
                    return Ok(());
                }
                let limit = self.shared.local.max_concurrent_streams;
                if state.open_streams >= limit {
                    let message =
                        format!("too many concurrent streams (limit {limit}); call not processed");
                    self.shared.activity().limit_hit(Limit::ConcurrentStreams);
                    state.encode_refusal(id, &message);
                    return Ok(());
                }
                let route = self.router.route(headers.path_str(), headers.timeout);
                if let Err(status) = &route {
                    // Without layers, nobody needs to see the refusal: answer it
                    // here, without a task.
                    if !self.router.has_layers() {
                        state.encode_trailers(id, status);
                        return Ok(());
                    }
                }
                let mut stream = StreamState::new(
                    self.shared.peer.initial_stream_window,
                    self.shared.local.initial_stream_window,
                );
                if headers.end_stream {
                    stream.remote_closed = true;
                    stream.inbox.push(Inbound::End);
                }
                state.insert_stream(id, stream);
                self.new_calls.push(ServerCall {
                    io: CallIo::Sinew(StreamRef {
                        shared: self.shared.clone(),
                        id,
                    }),
                    path: headers.path.clone(),
                    metadata: headers.metadata,
                    timeout: headers.timeout,
                    deadline: headers.timeout.map(|timeout| Instant::now() + timeout),
                    extensions: crate::call::Extensions::new(),
                    peer: self.peer.clone(),
                    route,
                    prefetched: None,
                    tally: None,
                    deadline_margin: self.config.deadline_margin,
                });
                Ok(())
            }
            RoleFrame::Trailers(trailers) => Err(WireError::new(
                Reason::ProtocolError,
                format!("TRAILERS on stream {} sent by a client", trailers.stream_id),
            )),
            RoleFrame::GoAway(goaway) => {
                if goaway.reason != Reason::NoError {
                    tracing::debug!(reason = %goaway.reason, message = %goaway.message, "client reported a connection error");
                    state.kill(Status::unavailable(format!(
                        "client closed the connection: {}: {}",
                        goaway.reason, goaway.message
                    )));
                }
                Ok(())
            }
        }
    }

    /// Begins a graceful shutdown: GOAWAY, and the drain deadline.
    fn start_drain(&mut self, why: &str) {
        self.drain_deadline = Some(Instant::now() + self.config.drain_timeout);
        let mut state = self.shared.lock();
        let last = state.highest_stream_id;
        state.goaway_sent = Some(last);
        self.open_at_drain = u64::from(state.open_streams);
        encode::goaway(&mut state.pending, last, Reason::NoError, why);
    }

    /// Ends every call still running at the drain deadline with `UNAVAILABLE`;
    /// returns how many there were.
    fn end_stragglers(&self) -> u64 {
        let status = Status::unavailable(
            "server shutting down: the drain deadline passed before the call finished",
        );
        let mut state = self.shared.lock();
        let ids: Vec<u32> = state.streams.keys().copied().collect();
        let mut wake = std::mem::take(&mut state.wake);
        for &id in &ids {
            let stream = state.streams.get_mut(&id).expect("listed above");
            if !stream.local_closed && !stream.reset {
                stream.local_closed = true;
                stream.cancel(status.clone(), &mut wake);
                state.encode_trailers(id, &status);
            }
        }
        state.wake = wake;
        u64::from(state.open_streams)
    }

    /// Counts what the drain did, and lets stragglers wind down.
    async fn finish(&self, ended: Ended) -> DrainCounts {
        let mut counts = DrainCounts::default();
        match ended {
            Ended::Drained => counts.drained = self.open_at_drain,
            Ended::DeadlinePassed => {
                counts.cancelled = self.end_stragglers();
                counts.drained = self.open_at_drain.saturating_sub(counts.cancelled);
                // Their tasks see the cancellation and end (their layers see the
                // status); a short grace lets them before the connection closes.
                let _ = tokio::time::timeout(STRAGGLER_GRACE, async {
                    loop {
                        let closed = self.shared.stream_closed.notified();
                        if self.shared.lock().open_streams == 0 {
                            return;
                        }
                        closed.await;
                    }
                })
                .await;
            }
            Ended::Closed if self.drain_deadline.is_some() => {
                // The connection ended while draining (the client left): the
                // calls that left the table before that finished.
                let open = u64::from(self.shared.lock().open_streams);
                counts.drained = self.open_at_drain.saturating_sub(open);
            }
            Ended::Closed => {}
        }
        counts
    }
}

async fn sleep_until_option(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

/// For the calls of this batch that take one request (unary, server streaming)
/// and whose request arrived whole, moves the message out of the inbox into the
/// call itself. Saves the handler two lock round trips on the hottest path.
fn prefetch_single_requests(state: &mut Locked<'_>, new_calls: &mut [ServerCall]) {
    for call in new_calls.iter_mut() {
        // A fallback service has no method list: its calls are not prefetched.
        let kind = call.method().map(|method| method.kind);
        if !matches!(kind, Some(MethodKind::Unary | MethodKind::ServerStreaming)) {
            continue;
        }
        let CallIo::Sinew(stream_ref) = &call.io else {
            continue;
        };
        let id = stream_ref.id;
        let Some(stream) = state.streams.get_mut(&id) else {
            continue;
        };
        let whole = matches!(stream.inbox.as_slice(), [Inbound::Message(_), Inbound::End]);
        if !whole {
            continue;
        }
        let Some(Inbound::Message(bytes)) = stream.pop_inbound() else {
            continue;
        };
        stream.inbox.clear();
        let cost = flow_cost(bytes.len());
        call.prefetched = Some(bytes);
        state.credit(Some(id), cost);
    }
}

pin_project_lite::pin_project! {
    /// One call's task: runs the call through the server's layers and its
    /// handler (which always end it with a status), then leaves the stream
    /// table. A struct rather than an `async fn`, to keep the task small.
    struct CallTask {
        guard: CallGuard,
        #[pin]
        serving: Serving,
    }
}

impl CallTask {
    fn new(shared: &Arc<Shared>, router: &Router, call: ServerCall) -> CallTask {
        let id = match &call.io {
            CallIo::Sinew(stream) => stream.id,
            CallIo::External(_) => unreachable!("a sinew connection's calls have sinew streams"),
        };
        CallTask {
            guard: CallGuard {
                shared: shared.clone(),
                id,
            },
            serving: router.serve(call),
        }
    }
}

impl Future for CallTask {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        self.project().serving.poll(cx).map(drop)
    }
}

/// Removes the call's stream from the table when the call task ends, however it
/// ends (completed, panicked, aborted). A call that ended without a status gets
/// one: no accepted call goes unanswered.
struct CallGuard {
    shared: Arc<Shared>,
    id: u32,
}

impl Drop for CallGuard {
    fn drop(&mut self) {
        let mut state = self.shared.lock();
        if let Some(stream) = state.remove_stream(self.id) {
            if !stream.local_closed && !stream.reset && state.dead.is_none() {
                state.encode_trailers(
                    self.id,
                    &Status::internal("the handler ended without sending a status"),
                );
            }
            // Messages the handler never read still hold connection credit.
            let unread = stream.unread_credit();
            if unread > 0 {
                state.credit(None, unread);
            }
        }
    }
}

//! Serving one accepted connection: handshake, frame dispatch, call tasks, drain.

use super::call::{run_handler, CallIo, ServerCall};
use super::{MethodKind, Router, ServerConfig};
use crate::connection::stream::StreamRef;
use crate::connection::writer::Outbound;
use crate::connection::{
    reserve_for_read, writer, Inbound, KillOnExit, Locked, Role, Shared, StreamState,
    PENDING_WRITE_PAUSE,
};
use crate::status::Status;
use bytes::BytesMut;
use sinew_wire::{encode, Frame, FrameDecoder, Preface, Reason, WireError};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::watch;
use tokio::task::AbortHandle;
use tokio::time::Instant;

/// What happened to the calls of one connection while it drained.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct DrainCounts {
    pub(crate) drained: u64,
    pub(crate) cancelled: u64,
}

/// A call decoded from HEADERS, to be spawned once the state lock is released.
struct NewCall {
    id: u32,
    service: usize,
    method: usize,
    call: ServerCall,
    deadline: Option<Instant>,
}

/// Serves one connection until the peer leaves, a connection error, or shutdown.
///
/// `buf` holds bytes already read from the connection (the ones the listener
/// looked at to pick the protocol); reading continues after them.
pub(crate) async fn serve<R, W>(
    mut reader: R,
    writer_half: W,
    mut buf: BytesMut,
    router: Arc<Router>,
    config: Arc<ServerConfig>,
    mut shutdown: watch::Receiver<bool>,
) -> DrainCounts
where
    R: AsyncRead + Unpin + Send + 'static,
    W: Outbound,
{
    // Handshake: the client's preface first, within a time limit, so that a peer
    // that connects and says nothing (or garbage) does not hold a task forever.
    let handshake = async {
        loop {
            if let Some(preface) = Preface::decode(&mut buf)? {
                return Ok(preface);
            }
            let n = reader
                .read_buf(&mut buf)
                .await
                .map_err(|e| WireError::new(Reason::BadPreface, format!("read failed: {e}")))?;
            if n == 0 {
                return Err(WireError::new(
                    Reason::BadPreface,
                    "connection closed before the preface was complete",
                ));
            }
        }
    };
    let preface = match tokio::time::timeout(config.handshake_timeout, handshake).await {
        Ok(Ok(preface)) => preface,
        Ok(Err(error)) => return refuse(writer_half, &config, &error).await,
        Err(_) => {
            let error = WireError::new(
                Reason::BadPreface,
                "no preface within the handshake timeout",
            );
            return refuse(writer_half, &config, &error).await;
        }
    };

    let shared = Shared::new(
        Role::Server,
        config.settings,
        preface.settings,
        writer_half.slab_pool(),
    );
    Preface::new(config.settings).encode(&mut shared.lock().pending);
    let writer_task = tokio::spawn(writer::run(shared.clone(), writer_half));
    let _kill_on_exit = KillOnExit(shared.clone());

    let decoder = FrameDecoder::new(config.settings.max_frame_size);
    let mut new_calls = Vec::new();
    let mut spawned: Vec<(u32, AbortHandle)> = Vec::new();
    let mut counts = DrainCounts::default();
    let mut drain_deadline: Option<Instant> = None;
    let mut open_at_drain = 0u64;
    let mut shutdown_seen = *shutdown.borrow();

    loop {
        // Decode every whole frame read so far under one lock acquisition, and
        // hand the calls spawned after the previous batch their abort handles.
        let alive = {
            let mut state = shared.lock();
            for (id, handle) in spawned.drain(..) {
                match state.streams.get_mut(&id) {
                    Some(stream) if !stream.reset => stream.abort = Some(handle),
                    // Reset (or done) before we got here: stop it now.
                    _ => handle.abort(),
                }
            }
            process_frames(
                &mut state,
                &shared,
                &decoder,
                &mut buf,
                &router,
                &mut new_calls,
            )
        };
        // Calls are plain tasks, not a JoinSet: finishing one wakes nobody but
        // the writer. They leave the stream table themselves (`CallGuard`).
        for call in new_calls.drain(..) {
            let id = call.id;
            let task = tokio::spawn(run_call(shared.clone(), router.clone(), call));
            spawned.push((id, task.abort_handle()));
        }
        if !alive {
            break;
        }
        if shutdown_seen && drain_deadline.is_none() {
            drain_deadline = Some(Instant::now() + config.drain_timeout);
            let mut state = shared.lock();
            let last = state.highest_stream_id;
            state.goaway_sent = Some(last);
            open_at_drain = u64::from(state.open_streams);
            encode::goaway(
                &mut state.pending,
                last,
                Reason::NoError,
                "server shutting down",
            );
        }
        // While draining, wake when a call leaves the table; stop when none is left.
        let stream_closed = shared.stream_closed.notified();
        tokio::pin!(stream_closed);
        stream_closed.as_mut().enable();
        if drain_deadline.is_some() && shared.lock().open_streams == 0 {
            counts.drained = open_at_drain;
            break;
        }
        // A peer that does not read its answers: stop reading from it until the
        // writer has made progress, so what we queue for it stays bounded.
        while shared.pending_len() > PENDING_WRITE_PAUSE {
            let flushed = shared.flushed.notified();
            if shared.pending_len() <= PENDING_WRITE_PAUSE || shared.lock().dead.is_some() {
                break;
            }
            flushed.await;
        }

        reserve_for_read(&mut buf);
        tokio::select! {
            read = reader.read_buf(&mut buf) => match read {
                Ok(0) => {
                    let mut state = shared.lock();
                    if !buf.is_empty() {
                        state.connection_error(&WireError::new(
                            Reason::ProtocolError,
                            format!("connection closed in the middle of a frame ({} bytes of it received)", buf.len()),
                        ));
                    } else {
                        state.kill(Status::unavailable("client closed the connection"));
                    }
                    break;
                }
                Ok(_) => {}
                Err(error) => {
                    shared.lock().kill(Status::unavailable(format!("connection lost: {error}")));
                    break;
                }
            },
            _ = &mut stream_closed, if drain_deadline.is_some() => {}
            changed = shutdown.changed(), if !shutdown_seen => {
                // A dropped sender also means shut down.
                let _ = changed;
                shutdown_seen = true;
            }
            _ = sleep_until_option(drain_deadline) => {
                // Drain deadline: every call still running ends with UNAVAILABLE.
                let mut state = shared.lock();
                let status = Status::unavailable("server shutting down: the drain deadline passed before the call finished");
                let ids: Vec<u32> = state.streams.keys().copied().collect();
                for id in ids {
                    let stream = state.streams.get_mut(&id).expect("listed above");
                    if !stream.local_closed && !stream.reset {
                        stream.local_closed = true;
                        state.encode_trailers(id, &status);
                    }
                }
                counts.cancelled = u64::from(state.open_streams);
                counts.drained = open_at_drain.saturating_sub(counts.cancelled);
                break;
            }
        }
    }

    // Whatever is still running cannot be answered any more: cancel it.
    {
        let mut state = shared.lock();
        if drain_deadline.is_some() && counts.drained == 0 && counts.cancelled == 0 {
            // The connection ended while draining (the client left): the calls
            // that left the table before that finished.
            counts.drained = open_at_drain.saturating_sub(u64::from(state.open_streams));
        }
        for (_, handle) in spawned.drain(..) {
            handle.abort();
        }
        for stream in state.streams.values_mut() {
            if let Some(handle) = stream.abort.take() {
                handle.abort();
            }
        }
        state.close_after_flush = true;
        state.kill(Status::unavailable("connection closed"));
    }
    let _ = writer_task.await;
    counts
}

async fn sleep_until_option(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

/// Answers a failed handshake with our preface and a GOAWAY saying why, then closes.
async fn refuse<W: AsyncWrite + Unpin>(
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

/// Decodes and handles every whole frame in `buf`. Returns false when the
/// connection must end (a connection error was sent, or the client went away).
fn process_frames(
    state: &mut Locked<'_>,
    shared: &Arc<Shared>,
    decoder: &FrameDecoder,
    buf: &mut BytesMut,
    router: &Router,
    new_calls: &mut Vec<NewCall>,
) -> bool {
    loop {
        let frame = match decoder.decode(buf) {
            Ok(Some(frame)) => frame,
            Ok(None) => {
                prefetch_single_requests(state, router, new_calls);
                return state.dead.is_none();
            }
            Err(error) => {
                state.connection_error(&error);
                return false;
            }
        };
        if let Frame::Reset(reset) = &frame {
            // The client gave up on this call: stop its handler.
            if let Some(handle) = state
                .streams
                .get_mut(&reset.stream_id)
                .and_then(|stream| stream.abort.take())
            {
                handle.abort();
            }
        }
        let result = match state.handle_common(frame) {
            Ok(None) => Ok(()),
            Ok(Some(frame)) => handle_server_frame(state, shared, frame, router, new_calls),
            Err(error) => Err(error),
        };
        if let Err(error) = result {
            state.connection_error(&error);
            return false;
        }
    }
}

fn handle_server_frame(
    state: &mut Locked<'_>,
    shared: &Arc<Shared>,
    frame: Frame,
    router: &Router,
    new_calls: &mut Vec<NewCall>,
) -> Result<(), WireError> {
    match frame {
        Frame::Headers(headers) => {
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
            let limit = shared.local.max_concurrent_streams;
            if state.open_streams >= limit {
                let message =
                    format!("too many concurrent streams (limit {limit}); call not processed");
                state.encode_refusal(id, &message);
                return Ok(());
            }
            let (service, method) = match router.resolve(headers.path_str()) {
                Ok(route) => route,
                Err(status) => {
                    state.encode_trailers(id, &status);
                    return Ok(());
                }
            };
            if headers.timeout == Some(Duration::ZERO) {
                state.encode_trailers(
                    id,
                    &Status::deadline_exceeded("deadline already expired when the call arrived"),
                );
                return Ok(());
            }
            let mut stream = StreamState::new(
                shared.peer.initial_stream_window,
                shared.local.initial_stream_window,
            );
            if headers.end_stream {
                stream.remote_closed = true;
                stream.inbox.push(Inbound::End);
            }
            state.streams.insert(id, stream);
            state.open_streams += 1;
            let deadline = headers.timeout.map(|timeout| Instant::now() + timeout);
            new_calls.push(NewCall {
                id,
                service,
                method,
                deadline,
                call: ServerCall {
                    path: headers.path.clone(),
                    io: CallIo::Sinew(StreamRef {
                        shared: shared.clone(),
                        id,
                    }),
                    metadata: headers.metadata,
                    timeout: headers.timeout,
                    prefetched: None,
                },
            });
            Ok(())
        }
        Frame::Trailers(trailers) => Err(WireError::new(
            Reason::ProtocolError,
            format!("TRAILERS on stream {} sent by a client", trailers.stream_id),
        )),
        Frame::GoAway(goaway) => {
            if goaway.reason != Reason::NoError {
                tracing::debug!(reason = %goaway.reason, message = %goaway.message, "client reported a connection error");
                state.kill(Status::unavailable(format!(
                    "client closed the connection: {}: {}",
                    goaway.reason, goaway.message
                )));
            }
            Ok(())
        }
        other => Err(WireError::protocol(format!("unexpected frame {other:?}"))),
    }
}

/// For the calls of this batch that take one request (unary, server streaming)
/// and whose request arrived whole, moves the message out of the inbox into the
/// call itself. Saves the handler two lock round trips on the hottest path.
fn prefetch_single_requests(state: &mut Locked<'_>, router: &Router, new_calls: &mut [NewCall]) {
    for new_call in new_calls.iter_mut() {
        // A fallback service has no method list: its calls are not prefetched.
        let kind = router.services[new_call.service]
            .descriptor()
            .methods
            .get(new_call.method)
            .map(|method| method.kind);
        if !matches!(kind, Some(MethodKind::Unary | MethodKind::ServerStreaming)) {
            continue;
        }
        let Some(stream) = state.streams.get_mut(&new_call.id) else {
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
        let len = bytes.len();
        new_call.call.prefetched = Some(bytes);
        state.credit(Some(new_call.id), len);
    }
}

/// One call's task: runs the handler under the deadline and catches panics, then
/// makes sure the call ended with a status and leaves the stream table.
async fn run_call(shared: Arc<Shared>, router: Arc<Router>, new_call: NewCall) -> u32 {
    let id = new_call.id;
    let guard = CallGuard { shared, id };
    let service = &router.services[new_call.service];
    let ending = run_handler(service, new_call.method, new_call.call, new_call.deadline).await;
    if let Some(status) = ending {
        guard.finish(status);
    }
    id
}

/// Removes the call's stream from the table when the call task ends, however it
/// ends (completed, panicked, timed out, aborted). A call that ended without a
/// status gets one: no accepted call goes unanswered.
struct CallGuard {
    shared: Arc<Shared>,
    id: u32,
}

impl CallGuard {
    fn finish(&self, status: Status) {
        let mut state = self.shared.lock();
        if let Some(stream) = state.streams.get_mut(&self.id) {
            if !stream.local_closed && !stream.reset {
                stream.local_closed = true;
                state.encode_trailers(self.id, &status);
            }
        }
    }
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
            let unread = stream.unread_bytes();
            if unread > 0 {
                state.credit(None, unread);
            }
        }
    }
}

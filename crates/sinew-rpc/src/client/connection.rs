//! One client connection: handshake, then a reader task and a writer task.

use super::ChannelConfig;
use crate::connection::writer::Outbound;
use crate::connection::{
    keepalive, reserve_for_read, wait_for_writer, writer, Inbound, KillOnExit, Locked, Role,
    RoleFrame, ServerLimits, Shared,
};
use crate::status::Status;
use bytes::BytesMut;
use sinew_transport::Address;
use sinew_wire::{Code, Frame, FrameDecoder, Preface, Reason, WireError};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};

/// Connects, exchanges prefaces, and starts the connection's reader and writer
/// tasks. Returns the shared state calls use.
pub(crate) async fn connect(
    address: &Address,
    config: &ChannelConfig,
) -> Result<Arc<Shared>, Status> {
    connect_to_process(address, None, config).await
}

/// As [`connect`], and when `expected_pid` is given, refuses a peer that is not
/// that process (by its `SO_PEERCRED` credentials; only local transports have
/// them).
pub(crate) async fn connect_to_process(
    address: &Address,
    expected_pid: Option<u32>,
    config: &ChannelConfig,
) -> Result<Arc<Shared>, Status> {
    let connect_timeout = config.connect_timeout;
    let stream = sinew_transport::connect_with(address, Some(connect_timeout), &config.transport)
        .await
        .map_err(|e| Status::unavailable(e.to_string()))?;
    if let Some(pid) = expected_pid {
        let peer = stream.peer_pid();
        if peer != Some(pid) {
            return Err(Status::unavailable(format!(
                "{address} leads to process {peer:?}, not to the advertised process {pid}"
            )));
        }
    }
    let (reader, writer) = stream.into_split();
    handshake(reader, writer, config, &address.to_string()).await
}

/// Exchanges prefaces over any byte stream and starts the reader and writer tasks.
/// `peer` names the other side in error messages.
pub(crate) async fn handshake<R, W>(
    mut reader: R,
    mut writer_half: W,
    config: &ChannelConfig,
    peer: &str,
) -> Result<Arc<Shared>, Status>
where
    R: AsyncRead + Unpin + Send + 'static,
    W: Outbound,
{
    let address = peer;
    let (settings, connect_timeout) = (config.settings, config.connect_timeout);
    let mut buf = BytesMut::with_capacity(64 * 1024);
    let handshake = async {
        let mut out = BytesMut::new();
        Preface::new(settings).encode(&mut out);
        writer_half.write_all(&out).await?;
        loop {
            match Preface::decode(&mut buf) {
                Ok(Some(preface)) => return Ok(Ok(preface)),
                Ok(None) => {}
                Err(error) => return Ok(Err(error)),
            }
            if reader.read_buf(&mut buf).await? == 0 {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "server closed the connection during the handshake",
                ));
            }
        }
    };
    let preface = match tokio::time::timeout(connect_timeout, handshake).await {
        Err(_) => {
            return Err(Status::unavailable(format!(
                "{address}: no sinew preface from the server within {connect_timeout:?}"
            )))
        }
        // A TLS server answers a plaintext client with a TLS alert record.
        Ok(_) if is_tls_record(&buf) => {
            return Err(Status::unavailable(format!(
                "{address} answered with TLS: connect to it with a tls:// address"
            )))
        }
        Ok(Err(error)) => return Err(Status::unavailable(format!("{address}: {error}"))),
        Ok(Ok(Err(error))) => {
            return Err(Status::unavailable(format!(
                "{address} does not speak sinew: {error}"
            )))
        }
        Ok(Ok(Ok(preface))) => preface,
    };
    // A server that refuses us answers its preface with a GOAWAY: report its reason.
    if let Ok(Some(Frame::GoAway(goaway))) =
        FrameDecoder::new(settings.max_frame_size).decode(&mut buf.clone())
    {
        if goaway.reason != Reason::NoError {
            return Err(Status::unavailable(format!(
                "{address} refused the connection: {}: {}",
                goaway.reason, goaway.message
            )));
        }
    }
    let shared = Shared::new(
        Role::Client,
        settings,
        preface.settings,
        writer_half.slab_pool(),
        Default::default(),
        ServerLimits::CLIENT,
    );
    tokio::spawn(writer::run(shared.clone(), writer_half));
    tokio::spawn(read_loop(shared.clone(), reader, buf));
    keepalive::start(&shared, config.keepalive);
    Ok(shared)
}

/// Whether `bytes` start like a TLS record: an alert or a handshake, in a
/// version of TLS 1.0 to 1.3's record layer (sinew's preface starts with
/// 0x89, so it never looks like one).
fn is_tls_record(bytes: &[u8]) -> bool {
    matches!(bytes, [0x15 | 0x16, 0x03, 0x00..=0x04, ..])
}

async fn read_loop<R: AsyncRead + Unpin>(shared: Arc<Shared>, mut reader: R, mut buf: BytesMut) {
    let _kill_on_exit = KillOnExit(shared.clone());
    let decoder = FrameDecoder::from_settings(&shared.local);
    loop {
        {
            let mut state = shared.lock();
            if let Err(error) = process_frames(&mut state, &decoder, &mut buf) {
                state.connection_error(&error);
            }
            if state.dead.is_some() {
                return;
            }
        }
        wait_for_writer(&shared).await;
        reserve_for_read(&mut buf);
        match reader.read_buf(&mut buf).await {
            Ok(n) if n > 0 => shared.received.store(true, Ordering::Relaxed),
            Ok(_) => {
                let mut state = shared.lock();
                let status = match &state.goaway_received {
                    Some(_) => Status::unavailable("server closed the connection after GOAWAY"),
                    None => Status::unavailable("server closed the connection"),
                };
                state.kill(status);
                return;
            }
            Err(error) => {
                shared
                    .lock()
                    .kill(Status::unavailable(format!("connection lost: {error}")));
                return;
            }
        }
    }
}

fn process_frames(
    state: &mut Locked<'_>,
    decoder: &FrameDecoder,
    buf: &mut BytesMut,
) -> Result<(), WireError> {
    while let Some(frame) = decoder.decode(buf)? {
        let Some(frame) = state.handle_common(frame)? else {
            continue;
        };
        match frame {
            RoleFrame::Headers(headers) => {
                let mut wake = std::mem::take(&mut state.wake);
                let known = headers.stream_id <= state.highest_stream_id;
                if let Some(stream) = state.streams.get_mut(&headers.stream_id) {
                    if !stream.reset {
                        stream.inbox.push(Inbound::Headers(headers.metadata));
                        if let Some(waker) = stream.recv_waker.take() {
                            wake.push(waker);
                        }
                    }
                } else if !known {
                    return Err(WireError::protocol(format!(
                        "HEADERS from the server on stream {} which was never opened",
                        headers.stream_id
                    )));
                }
                state.wake = wake;
            }
            RoleFrame::Trailers(trailers) => {
                let mut wake = std::mem::take(&mut state.wake);
                let known = trailers.stream_id <= state.highest_stream_id;
                if let Some(stream) = state.streams.get_mut(&trailers.stream_id) {
                    if !stream.reset && !stream.remote_closed {
                        stream.remote_closed = true;
                        let status = Status::from_parts(
                            trailers.code,
                            trailers.message,
                            trailers.details,
                            trailers.metadata,
                        );
                        stream.inbox.push(Inbound::Trailers(status));
                        if let Some(waker) = stream.recv_waker.take() {
                            wake.push(waker);
                        }
                        // The server forgot the stream: a blocked sender must stop.
                        if let Some(waker) = stream.send_waker.take() {
                            wake.push(waker);
                        }
                        stream.local_closed = true;
                    }
                } else if !known {
                    return Err(WireError::protocol(format!(
                        "TRAILERS on stream {} which was never opened",
                        trailers.stream_id
                    )));
                }
                state.wake = wake;
            }
            RoleFrame::GoAway(goaway) => {
                state.shared_ref().stop_accepting();
                state.goaway_received = Some(goaway.last_stream_id);
                if goaway.reason != Reason::NoError {
                    state.kill(Status::unavailable(format!(
                        "server closed the connection: {}: {}",
                        goaway.reason, goaway.message
                    )));
                    return Ok(());
                }
                // Calls the server will never process: fail them so they can be retried.
                let mut wake = std::mem::take(&mut state.wake);
                for (id, stream) in state.streams.iter_mut() {
                    if *id > goaway.last_stream_id {
                        stream.fail(
                            Status::new(
                                Code::Unavailable,
                                "server is shutting down; call not processed",
                            )
                            .mark_not_processed(),
                            &mut wake,
                        );
                    }
                }
                state.wake = wake;
            }
        }
    }
    Ok(())
}

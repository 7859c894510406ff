//! A raw protocol client: writes hand-made bytes at a real server and reads the
//! frames it answers with, to test what the typed client would never send; and
//! its mirror, a raw server that a real client talks to, to make the server's
//! side of a test deterministic (which call it refuses, a peer that falls silent).

#![allow(dead_code, unreachable_pub)]

use bytes::{BufMut, BytesMut};
use prost::Message;
use sinew::transport::Address;
use sinew_wire::{encode, Frame, FrameDecoder, MetadataMap, Preface, Settings};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

pub const READ_LIMIT: Duration = Duration::from_secs(10);

pub struct RawClient {
    pub stream: TcpStream,
    buf: BytesMut,
    decoder: FrameDecoder,
    pub server_settings: Option<Settings>,
}

impl RawClient {
    /// Connects without sending anything.
    pub async fn connect(address: &Address) -> RawClient {
        let Address::Tcp { host, port } = address else {
            panic!("raw client speaks TCP only")
        };
        RawClient {
            stream: TcpStream::connect((host.as_str(), *port))
                .await
                .expect("connect"),
            buf: BytesMut::new(),
            decoder: FrameDecoder::new(64 * 1024 * 1024),
            server_settings: None,
        }
    }

    /// Connects and completes the handshake with default settings.
    pub async fn handshake(address: &Address) -> RawClient {
        RawClient::handshake_with(address, Settings::default()).await
    }

    pub async fn handshake_with(address: &Address, settings: Settings) -> RawClient {
        let mut client = RawClient::connect(address).await;
        let mut preface = BytesMut::new();
        Preface::new(settings).encode(&mut preface);
        client.send_bytes(&preface).await;
        client.read_preface().await;
        client
    }

    pub async fn read_preface(&mut self) -> Settings {
        loop {
            if let Some(preface) = Preface::decode(&mut self.buf).expect("server preface") {
                self.server_settings = Some(preface.settings);
                return preface.settings;
            }
            self.fill().await.expect("server closed before its preface");
        }
    }

    pub async fn send_bytes(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.expect("write");
    }

    pub async fn send(&mut self, build: impl FnOnce(&mut BytesMut)) {
        let mut out = BytesMut::new();
        build(&mut out);
        self.send_bytes(&out).await;
    }

    /// Opens a call: HEADERS (optionally with a timeout) and, if given, one
    /// message with END_STREAM.
    pub async fn call(
        &mut self,
        stream_id: u32,
        path: &str,
        timeout: Option<Duration>,
        message: Option<&[u8]>,
    ) {
        self.send(|out| {
            encode::headers(
                out,
                stream_id,
                message.is_none(),
                timeout,
                path,
                &MetadataMap::new(),
            );
            if let Some(message) = message {
                encode::data(out, stream_id, true, message);
            }
        })
        .await;
    }

    pub async fn call_message(&mut self, stream_id: u32, path: &str, message: &impl Message) {
        self.call(stream_id, path, None, Some(&message.encode_to_vec()))
            .await;
    }

    /// Reads more bytes; `None` at end of stream.
    async fn fill(&mut self) -> Option<usize> {
        self.buf.reserve(64 * 1024);
        match tokio::time::timeout(READ_LIMIT, self.stream.read_buf(&mut self.buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => None,
            Ok(Ok(n)) => Some(n),
            Err(_) => panic!("server sent nothing for {READ_LIMIT:?}"),
        }
    }

    /// The next frame, or `None` if the server closed the connection.
    pub async fn next_frame(&mut self) -> Option<Frame> {
        loop {
            if let Some(frame) = self
                .decoder
                .decode(&mut self.buf)
                .expect("server frames decode")
            {
                return Some(frame);
            }
            self.fill().await?;
        }
    }

    /// The next frame that is not a WINDOW_UPDATE or PING.
    pub async fn next_significant_frame(&mut self) -> Option<Frame> {
        loop {
            match self.next_frame().await? {
                Frame::WindowUpdate(_) | Frame::Ping(_) => continue,
                frame => return Some(frame),
            }
        }
    }

    /// Reads until the server closes; returns every frame seen.
    pub async fn read_until_closed(&mut self) -> Vec<Frame> {
        let mut frames = Vec::new();
        while let Some(frame) = self.next_frame().await {
            frames.push(frame);
        }
        frames
    }

    /// Skips frames until TRAILERS or RESET for `stream_id`.
    pub async fn end_of(&mut self, stream_id: u32) -> Frame {
        loop {
            match self.next_frame().await.expect("connection open") {
                Frame::Trailers(t) if t.stream_id == stream_id => return Frame::Trailers(t),
                Frame::Reset(r) if r.stream_id == stream_id => return Frame::Reset(r),
                _ => continue,
            }
        }
    }
}

/// The server end of one sinew connection, driven by hand.
pub struct RawServer {
    pub socket: TcpStream,
    buf: BytesMut,
    decoder: FrameDecoder,
}

impl RawServer {
    /// Accepts one connection and exchanges prefaces.
    pub async fn accept(listener: &tokio::net::TcpListener) -> RawServer {
        let (socket, _) = listener.accept().await.unwrap();
        let mut server = RawServer {
            socket,
            buf: BytesMut::new(),
            decoder: FrameDecoder::new(Settings::default().max_frame_size),
        };
        loop {
            if Preface::decode(&mut server.buf).unwrap().is_some() {
                break;
            }
            assert!(
                server.fill().await.is_some(),
                "the client closed before its preface"
            );
        }
        server
            .send(|out| Preface::new(Settings::default()).encode(out))
            .await;
        server
    }

    async fn fill(&mut self) -> Option<usize> {
        let read = tokio::time::timeout(READ_LIMIT, self.socket.read_buf(&mut self.buf))
            .await
            .expect("the client sent something in time")
            .ok()?;
        (read > 0).then_some(read)
    }

    pub async fn send(&mut self, build: impl FnOnce(&mut BytesMut)) {
        let mut out = BytesMut::new();
        build(&mut out);
        self.socket.write_all(&out).await.unwrap();
    }

    /// The next frame from the client, or `None` once it closed.
    pub async fn next_frame(&mut self) -> Option<Frame> {
        loop {
            if let Some(frame) = self.decoder.decode(&mut self.buf).unwrap() {
                return Some(frame);
            }
            self.fill().await?;
        }
    }

    /// Reads frames until HEADERS have opened `count` calls; returns their ids.
    pub async fn opened_calls(&mut self, count: usize) -> Vec<u32> {
        let mut ids = Vec::new();
        while ids.len() < count {
            if let Frame::Headers(headers) =
                self.next_frame().await.expect("the client is still there")
            {
                ids.push(headers.stream_id);
            }
        }
        ids
    }
}

/// A frame header with arbitrary fields, for malformed frames.
pub fn raw_frame(kind: u8, flags: u8, stream_id: u32, payload: &[u8]) -> BytesMut {
    let mut out = BytesMut::new();
    out.put_u32(payload.len() as u32);
    out.put_u8(kind);
    out.put_u8(flags);
    out.put_u32(stream_id);
    out.put_slice(payload);
    out
}

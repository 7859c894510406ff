//! HTTP/1.1 to an upstream server, driven inline by the request that uses
//! the connection: no connection task, no channels between tasks.
//!
//! A proxy's upstream side is its hot path: hyper's client runs each
//! connection as a task of its own and hands requests, responses and body
//! chunks to it through channels, three task wake-ups and as many
//! allocations a request, which measured as a fifth of the gateway's time
//! against nginx. Here the request's own task writes the request, reads
//! the response's head and, through the response body the client is sent,
//! its body: bytes go from the upstream's socket to the client's without a
//! task in between. The connection goes back to its pool at the body's end.
//!
//! What is read: the status line and headers (httparse, at most
//! [`MAX_HEAD_BYTES`] and [`MAX_HEADERS`]), interim 1xx responses skipped;
//! the body framed by `Transfer-Encoding: chunked` (extensions and
//! trailers read and dropped), by `Content-Length`, or by the connection's
//! end; none for HEAD, 204 and 304. Anything else (a malformed head, two
//! different lengths, a broken chunk) is an error for this request and
//! the connection is closed. A connection is reused only when its response
//! was read exactly to its end, neither side asked to close, and nothing
//! arrived while it sat idle (a server's idle close is seen there,
//! without a system call, from the readiness the runtime already has).
//!
//! What is written: `METHOD path HTTP/1.1`, the headers given (their
//! framing headers dropped), and the body framed by `Content-Length` when
//! its size is known, chunked otherwise. The whole request is written
//! before the response is read, as nginx's default request buffering does.

use crate::body::{BoxError, RequestBody, TooLarge};
use bytes::{Buf, Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, StatusCode};
use http_body::{Body, Frame};
use std::future::{poll_fn, Future as _};
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

/// The largest response head read.
pub(crate) const MAX_HEAD_BYTES: usize = 64 * 1024;
/// The most headers a response may have.
pub(crate) const MAX_HEADERS: usize = 128;
/// The longest chunk-size line (with extensions) or trailer section.
const MAX_CHUNK_LINE: usize = 4096;
const MAX_TRAILERS: usize = 16 * 1024;
const READ_CHUNK: usize = 16 * 1024;

/// One HTTP/1.1 connection to a server.
pub(crate) struct Conn {
    stream: TcpStream,
    read: BytesMut,
    /// Where the socket is read into before `read`: an initialized buffer
    /// (no unsafe code to read into spare capacity).
    scratch: Box<[u8]>,
    write: Vec<u8>,
    /// Requests it has carried, the current one included.
    pub(crate) served: u32,
}

/// Why a request on a connection failed.
#[derive(Debug)]
pub(crate) enum SendError {
    /// Nothing of the request left (the connect, or the first write,
    /// failed): any request may go to another server.
    Unsent(io::Error),
    /// The request (or part of it) left; the server's answer did not come
    /// back whole.
    Failed(String),
    /// The connection was a kept one and had closed: writing the request
    /// failed at once, nothing was sent.
    ClosedIdle,
    /// The connection was a kept one and closed after the request was
    /// written, before any byte of an answer: most likely the server's
    /// idle close crossing the request, but it may have been processed.
    ClosedAfterSend,
    /// The server did not take the request, or did not answer it, within
    /// the try's time.
    Timeout(Duration),
    /// The client's body went over the limit.
    TooLarge(u64),
    /// The client's body broke off.
    ClientBody(String),
}

impl std::fmt::Display for SendError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SendError::Unsent(error) => write!(f, "{error}"),
            SendError::Failed(message) => f.write_str(message),
            SendError::ClosedIdle => f.write_str("the kept connection had closed"),
            SendError::ClosedAfterSend => {
                f.write_str("the kept connection closed after the request, before an answer")
            }
            SendError::Timeout(after) => write!(f, "no answer within {after:?}"),
            SendError::TooLarge(limit) => write!(f, "{}", TooLarge(*limit)),
            SendError::ClientBody(message) => f.write_str(message),
        }
    }
}

/// How a response's body ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Framing {
    Length(u64),
    Chunked(Chunk),
    UntilClose,
}

/// Where a chunked body's reader is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Chunk {
    /// Before a chunk-size line.
    Size,
    /// Inside a chunk's data: bytes left.
    Data(u64),
    /// After a chunk's data: its CRLF.
    DataEnd,
    /// After the last chunk: trailers, up to an empty line.
    Trailers,
}

impl Conn {
    /// Opens a connection to `address` within `timeout`.
    pub(crate) async fn connect(address: SocketAddr, timeout: Duration) -> io::Result<Conn> {
        let stream = tokio::time::timeout(timeout, TcpStream::connect(address))
            .await
            .map_err(|_| {
                io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("connect to {address} timed out after {timeout:?}"),
                )
            })??;
        stream.set_nodelay(true)?;
        Ok(Conn {
            stream,
            read: BytesMut::with_capacity(READ_CHUNK),
            scratch: vec![0; READ_CHUNK].into_boxed_slice(),
            write: Vec::with_capacity(1024),
            served: 0,
        })
    }

    /// Whether the idle connection can carry a request: nothing arrived
    /// while it was idle (an end of stream, or bytes nobody asked for).
    pub(crate) fn idle_and_open(&self) -> bool {
        if !self.read.is_empty() {
            return false;
        }
        let mut cx = Context::from_waker(std::task::Waker::noop());
        self.stream.poll_read_ready(&mut cx).is_pending()
    }

    /// Sends a request and reads the response's head. The body is read
    /// through the returned [`UpstreamBody`], which gives the connection
    /// back (if it can be reused) at its end.
    /// `timeout` bounds each wait on the server: taking the request (each
    /// write), its response's head, and then each read of its body; and
    /// each wait on the client for the next piece of a streamed body.
    pub(crate) async fn send(
        mut self,
        method: &Method,
        path: &str,
        headers: &HeaderMap,
        body: RequestBody,
        timeout: Duration,
    ) -> Result<(http::response::Parts, UpstreamBody), (SendError, Option<RequestBody>)> {
        let reused = self.served > 0;
        self.served += 1;
        let (length, chunked) = match &body {
            RequestBody::Full(Some(bytes)) => (Some(bytes.len() as u64), false),
            RequestBody::Full(None) => (None, false),
            RequestBody::Stream { incoming, .. } => match incoming.size_hint().exact() {
                Some(length) => (Some(length), false),
                None => (None, true),
            },
        };
        self.write.clear();
        encode_head(&mut self.write, method, path, headers, length, chunked);
        let mut body = body;
        if let RequestBody::Full(Some(bytes)) = &body {
            self.write.extend_from_slice(bytes);
        }
        let written = match tokio::time::timeout(timeout, self.stream.write_all(&self.write)).await
        {
            Ok(written) => written,
            Err(_) => return Err((SendError::Timeout(timeout), None)),
        };
        if let Err(error) = written {
            let back = Some(body);
            // A write that fails at once sent nothing.
            return Err((
                if reused && is_reset(&error) {
                    SendError::ClosedIdle
                } else {
                    SendError::Unsent(error)
                },
                back,
            ));
        }
        if let RequestBody::Stream { .. } = &body {
            if let Err(error) = self.stream_body(&mut body, chunked, reused, timeout).await {
                return Err((error, None));
            }
        }
        let head_only = *method == Method::HEAD;
        let head = match tokio::time::timeout(timeout, self.read_head(head_only, reused)).await {
            Ok(head) => head,
            Err(_) => return Err((SendError::Timeout(timeout), None)),
        };
        match head {
            Ok((parts, framing, keep_alive)) => {
                let mut upstream = UpstreamBody {
                    conn: Some(self),
                    framing,
                    keep_alive,
                    done: false,
                    read_timeout: timeout,
                    idle: None,
                };
                if framing == Framing::Length(0) {
                    upstream.done = true;
                }
                Ok((parts, upstream))
            }
            Err(error) => Err((error, None)),
        }
    }

    /// Writes a streamed request body, framed.
    async fn stream_body(
        &mut self,
        body: &mut RequestBody,
        chunked: bool,
        reused: bool,
        timeout: Duration,
    ) -> Result<(), SendError> {
        let write_failed = |error: io::Error| {
            if reused && is_reset(&error) {
                SendError::ClosedAfterSend
            } else {
                SendError::Failed(format!("writing the request body failed: {error}"))
            }
        };
        loop {
            let next = poll_fn(|cx| Pin::new(&mut *body).poll_frame(cx));
            let Ok(frame) = tokio::time::timeout(timeout, next).await else {
                return Err(SendError::ClientBody(format!(
                    "the request body stalled for {timeout:?}"
                )));
            };
            match frame {
                None => break,
                Some(Err(error)) => {
                    return Err(match error.downcast::<TooLarge>() {
                        Ok(too_large) => SendError::TooLarge(too_large.0),
                        Err(error) => SendError::ClientBody(error.to_string()),
                    })
                }
                Some(Ok(frame)) => {
                    let Ok(data) = frame.into_data() else {
                        continue;
                    };
                    if data.is_empty() {
                        continue;
                    }
                    let write = if chunked {
                        self.write.clear();
                        self.write
                            .extend_from_slice(format!("{:x}\r\n", data.len()).as_bytes());
                        self.write.extend_from_slice(&data);
                        self.write.extend_from_slice(b"\r\n");
                        tokio::time::timeout(timeout, self.stream.write_all(&self.write)).await
                    } else {
                        tokio::time::timeout(timeout, self.stream.write_all(&data)).await
                    };
                    write
                        .map_err(|_| SendError::Timeout(timeout))?
                        .map_err(write_failed)?;
                }
            }
        }
        if chunked {
            tokio::time::timeout(timeout, self.stream.write_all(b"0\r\n\r\n"))
                .await
                .map_err(|_| SendError::Timeout(timeout))?
                .map_err(write_failed)?;
        }
        Ok(())
    }

    /// Reads until a final response's head is whole; parses it.
    async fn read_head(
        &mut self,
        head_only: bool,
        reused: bool,
    ) -> Result<(http::response::Parts, Framing, bool), SendError> {
        let mut received_any = false;
        loop {
            if !self.read.is_empty() {
                received_any = true;
                match parse_head(&mut self.read, head_only)? {
                    Some(Parsed::Interim) => continue,
                    Some(Parsed::Final(parts, framing, keep_alive)) => {
                        return Ok((parts, framing, keep_alive))
                    }
                    None if self.read.len() >= MAX_HEAD_BYTES => {
                        return Err(SendError::Failed(format!(
                            "the upstream's response head is over {MAX_HEAD_BYTES} bytes"
                        )))
                    }
                    None => {}
                }
            }
            let read =
                poll_fn(|cx| poll_fill(&self.stream, &mut self.scratch, &mut self.read, cx)).await;
            match read {
                Ok(0) if !received_any && reused => return Err(SendError::ClosedAfterSend),
                Ok(0) => {
                    return Err(SendError::Failed(
                        "the upstream closed the connection before a whole response".to_owned(),
                    ))
                }
                Ok(_) => {}
                Err(error) if !received_any && reused && is_reset(&error) => {
                    return Err(SendError::ClosedAfterSend)
                }
                Err(error) => {
                    return Err(SendError::Failed(format!(
                        "reading the upstream's response failed: {error}"
                    )))
                }
            }
        }
    }
}

fn is_reset(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        io::ErrorKind::ConnectionReset
            | io::ErrorKind::BrokenPipe
            | io::ErrorKind::ConnectionAborted
    )
}

/// Reads what the socket has into `buffer`: `Ok(0)` at its end.
///
/// The read happens inside the runtime's readiness check (`try_io`): a
/// short read (the socket drained) answers `WouldBlock` to it, which clears
/// the readiness the runtime had *before* the read, so an idle connection
/// reads as ready again only when something arrives (see
/// [`Conn::idle_and_open`]) and an event that came in during the read is
/// kept. An end of stream stays ready.
fn poll_fill(
    stream: &TcpStream,
    scratch: &mut [u8],
    buffer: &mut BytesMut,
    cx: &mut Context<'_>,
) -> Poll<io::Result<usize>> {
    use std::io::Read as _;
    loop {
        ready!(stream.poll_read_ready(cx))?;
        let mut read = 0;
        let result = stream.try_io(tokio::io::Interest::READABLE, || {
            read = (&*socket2::SockRef::from(stream)).read(scratch)?;
            if read > 0 && read < scratch.len() {
                Err(io::ErrorKind::WouldBlock.into())
            } else {
                Ok(())
            }
        });
        match result {
            Ok(()) => {}
            Err(error) if error.kind() == io::ErrorKind::WouldBlock && read > 0 => {}
            Err(error) if error.kind() == io::ErrorKind::WouldBlock => continue,
            Err(error) => return Poll::Ready(Err(error)),
        }
        buffer.extend_from_slice(&scratch[..read]);
        return Poll::Ready(Ok(read));
    }
}

/// Writes the request line and headers, framing headers of our own.
fn encode_head(
    out: &mut Vec<u8>,
    method: &Method,
    path: &str,
    headers: &HeaderMap,
    length: Option<u64>,
    chunked: bool,
) {
    out.extend_from_slice(method.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(path.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    for (name, value) in headers {
        if name == header::CONTENT_LENGTH || name == header::TRANSFER_ENCODING {
            continue;
        }
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    if chunked {
        out.extend_from_slice(b"transfer-encoding: chunked\r\n");
    } else if let Some(length) = length {
        out.extend_from_slice(b"content-length: ");
        out.extend_from_slice(length.to_string().as_bytes());
        out.extend_from_slice(b"\r\n");
    } else if matches!(method.as_str(), "POST" | "PUT" | "PATCH") {
        out.extend_from_slice(b"content-length: 0\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

enum Parsed {
    /// A 1xx other than 101, consumed.
    Interim,
    Final(http::response::Parts, Framing, bool),
}

fn malformed(what: impl std::fmt::Display) -> SendError {
    SendError::Failed(format!("the upstream's response is malformed: {what}"))
}

/// Parses a response head at the start of `buffer`, consuming it;
/// `Ok(None)` if it is not whole yet.
fn parse_head(buffer: &mut BytesMut, head_only: bool) -> Result<Option<Parsed>, SendError> {
    let mut slots = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut response = httparse::Response::new(&mut slots);
    let length = match response.parse(buffer) {
        Ok(httparse::Status::Complete(length)) => length,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(error) => return Err(malformed(error)),
    };
    let code = response.code.unwrap_or(0);
    let status = StatusCode::from_u16(code).map_err(malformed)?;
    let version = response.version.unwrap_or(1);
    // Offsets of every header in the buffer, to take the values from the
    // head's bytes without copying them.
    let base = buffer.as_ptr() as usize;
    let ranges: Vec<(HeaderName, usize, usize)> = response
        .headers
        .iter()
        .map(|h| {
            let name = HeaderName::from_bytes(h.name.as_bytes()).map_err(malformed)?;
            let start = h.value.as_ptr() as usize - base;
            Ok((name, start, start + h.value.len()))
        })
        .collect::<Result<_, SendError>>()?;
    let head = buffer.split_to(length).freeze();
    if status.is_informational() {
        if status == StatusCode::SWITCHING_PROTOCOLS {
            return Err(malformed(
                "101 Switching Protocols to a request that asked for none",
            ));
        }
        return Ok(Some(Parsed::Interim));
    }
    let mut headers = HeaderMap::with_capacity(ranges.len());
    for (name, start, end) in ranges {
        let value = HeaderValue::from_maybe_shared(head.slice(start..end)).map_err(malformed)?;
        headers.append(name, value);
    }
    let mut keep_alive = version == 1;
    for value in headers.get_all(header::CONNECTION) {
        for token in value.to_str().unwrap_or("").split(',') {
            let token = token.trim();
            if token.eq_ignore_ascii_case("close") {
                keep_alive = false;
            } else if token.eq_ignore_ascii_case("keep-alive") && version == 0 {
                keep_alive = true;
            }
        }
    }
    let framing = if head_only
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED
    {
        Framing::Length(0)
    } else if headers.contains_key(header::TRANSFER_ENCODING) {
        // Only `chunked` alone: another coding would reach the client
        // unlabelled once the hop-by-hop header is dropped, and a length
        // beside it must not be passed on (RFC 9112 §6.3).
        let codings: Vec<&HeaderValue> =
            headers.get_all(header::TRANSFER_ENCODING).iter().collect();
        if codings.len() != 1
            || !codings[0]
                .as_bytes()
                .trim_ascii()
                .eq_ignore_ascii_case(b"chunked")
        {
            return Err(malformed(format!(
                "transfer-encoding {:?} (only chunked is passed on)",
                codings
                    .iter()
                    .map(|value| String::from_utf8_lossy(value.as_bytes()))
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
        headers.remove(header::CONTENT_LENGTH);
        Framing::Chunked(Chunk::Size)
    } else {
        let mut length = None;
        for value in headers.get_all(header::CONTENT_LENGTH) {
            for part in value.to_str().unwrap_or("x").split(',') {
                let part = part.trim();
                if part.is_empty() || !part.bytes().all(|b| b.is_ascii_digit()) || part.len() > 18 {
                    return Err(malformed(format!("content-length {part:?}")));
                }
                let parsed: u64 = part.parse().map_err(malformed)?;
                if length.is_some_and(|earlier| earlier != parsed) {
                    return Err(malformed("two different content-lengths"));
                }
                length = Some(parsed);
            }
        }
        match length {
            Some(length) => Framing::Length(length),
            None => {
                keep_alive = false;
                Framing::UntilClose
            }
        }
    };
    let mut parts = http::Response::new(()).into_parts().0;
    parts.status = status;
    // The client's connection has its own version; the front frames the
    // body for it.
    parts.version = http::Version::HTTP_11;
    parts.headers = headers;
    Ok(Some(Parsed::Final(parts, framing, keep_alive)))
}

/// A response's body, read from its connection as the client takes it.
pub(crate) struct UpstreamBody {
    conn: Option<Conn>,
    framing: Framing,
    keep_alive: bool,
    done: bool,
    /// How long the server may send nothing while the body is read
    /// (nginx's `proxy_read_timeout`).
    read_timeout: Duration,
    /// Armed while a read waits (only then: a body already buffered costs
    /// no timer).
    idle: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl UpstreamBody {
    /// The connection, if the body was read to its end and it may carry
    /// another request.
    pub(crate) fn reusable(&mut self) -> Option<Conn> {
        if self.done && self.keep_alive {
            let conn = self.conn.take()?;
            if conn.read.is_empty() {
                return Some(conn);
            }
        }
        None
    }

    pub(crate) fn is_done(&self) -> bool {
        self.done
    }

    fn exact_left(&self) -> Option<u64> {
        match self.framing {
            _ if self.done => Some(0),
            Framing::Length(left) => Some(left),
            _ => None,
        }
    }

    /// The next data of the body, `None` at its end.
    pub(crate) fn poll_data(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Bytes, BoxError>>> {
        if self.done {
            return Poll::Ready(None);
        }
        let Some(conn) = self.conn.as_mut() else {
            return Poll::Ready(None);
        };
        loop {
            let buffer = &mut conn.read;
            match &mut self.framing {
                Framing::Length(left) => {
                    if !buffer.is_empty() {
                        let take = (*left).min(buffer.len() as u64) as usize;
                        let data = buffer.split_to(take).freeze();
                        *left -= take as u64;
                        if *left == 0 {
                            self.done = true;
                        }
                        return Poll::Ready(Some(Ok(data)));
                    }
                }
                Framing::UntilClose => {
                    if !buffer.is_empty() {
                        let data = buffer.split().freeze();
                        return Poll::Ready(Some(Ok(data)));
                    }
                }
                Framing::Chunked(state) => match step_chunked(state, buffer) {
                    Ok(ChunkStep::Data(data)) => return Poll::Ready(Some(Ok(data))),
                    Ok(ChunkStep::End) => {
                        self.done = true;
                        return Poll::Ready(None);
                    }
                    Ok(ChunkStep::More) => {}
                    Err(message) => {
                        self.conn = None;
                        return Poll::Ready(Some(Err(message.into())));
                    }
                },
            }
            let filled = match poll_fill(&conn.stream, &mut conn.scratch, &mut conn.read, cx) {
                Poll::Ready(filled) => {
                    self.idle = None;
                    filled
                }
                Poll::Pending => {
                    let timeout = self.read_timeout;
                    let idle = self
                        .idle
                        .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
                    if idle.as_mut().poll(cx).is_ready() {
                        self.conn = None;
                        return Poll::Ready(Some(Err(format!(
                            "the upstream sent nothing of the body for {timeout:?}"
                        )
                        .into())));
                    }
                    return Poll::Pending;
                }
            };
            match filled {
                Ok(0) if self.framing == Framing::UntilClose => {
                    self.done = true;
                    self.keep_alive = false;
                    return Poll::Ready(None);
                }
                Ok(0) => {
                    self.conn = None;
                    return Poll::Ready(Some(Err(
                        "the upstream closed the connection in the middle of the body".into(),
                    )));
                }
                Ok(_) => {}
                Err(error) => {
                    self.conn = None;
                    return Poll::Ready(Some(Err(Box::new(error))));
                }
            }
        }
    }
}

impl Body for UpstreamBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        self.get_mut()
            .poll_data(cx)
            .map(|data| data.map(|data| data.map(Frame::data)))
    }

    fn is_end_stream(&self) -> bool {
        self.done
    }

    fn size_hint(&self) -> http_body::SizeHint {
        match self.exact_left() {
            Some(left) => http_body::SizeHint::with_exact(left),
            None => http_body::SizeHint::default(),
        }
    }
}

enum ChunkStep {
    Data(Bytes),
    End,
    /// The buffer holds too little to go on.
    More,
}

/// One step of a chunked body's reader over what is buffered.
fn step_chunked(state: &mut Chunk, buffer: &mut BytesMut) -> Result<ChunkStep, String> {
    loop {
        match state {
            Chunk::Size => {
                let Some(end) = find_crlf(buffer) else {
                    if buffer.len() > MAX_CHUNK_LINE {
                        return Err("a chunk-size line is too long".to_owned());
                    }
                    return Ok(ChunkStep::More);
                };
                let line = &buffer[..end];
                let digits = line
                    .iter()
                    .position(|b| !b.is_ascii_hexdigit())
                    .unwrap_or(line.len());
                if digits == 0 || digits > 15 {
                    return Err("a chunk size is not hexadecimal".to_owned());
                }
                let rest = &line[digits..];
                if !rest.is_empty()
                    && !matches!(
                        rest.iter().find(|b| **b != b' ' && **b != b'\t'),
                        Some(b';') | None
                    )
                {
                    return Err("a chunk-size line has junk after the size".to_owned());
                }
                let size = u64::from_str_radix(
                    std::str::from_utf8(&line[..digits]).map_err(|e| e.to_string())?,
                    16,
                )
                .map_err(|e| e.to_string())?;
                buffer.advance(end + 2);
                *state = if size == 0 {
                    Chunk::Trailers
                } else {
                    Chunk::Data(size)
                };
            }
            Chunk::Data(left) => {
                if buffer.is_empty() {
                    return Ok(ChunkStep::More);
                }
                let take = (*left).min(buffer.len() as u64) as usize;
                let data = buffer.split_to(take).freeze();
                *left -= take as u64;
                if *left == 0 {
                    *state = Chunk::DataEnd;
                }
                return Ok(ChunkStep::Data(data));
            }
            Chunk::DataEnd => {
                if buffer.len() < 2 {
                    return Ok(ChunkStep::More);
                }
                if &buffer[..2] != b"\r\n" {
                    return Err("a chunk's data does not end with CRLF".to_owned());
                }
                buffer.advance(2);
                *state = Chunk::Size;
            }
            Chunk::Trailers => {
                let Some(end) = find_crlf(buffer) else {
                    if buffer.len() > MAX_TRAILERS {
                        return Err("the trailers are too long".to_owned());
                    }
                    return Ok(ChunkStep::More);
                };
                buffer.advance(end + 2);
                if end == 0 {
                    return Ok(ChunkStep::End);
                }
            }
        }
    }
}

fn find_crlf(bytes: &[u8]) -> Option<usize> {
    bytes.windows(2).position(|pair| pair == b"\r\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(text: &str) -> Result<Option<Parsed>, SendError> {
        parse_head(&mut BytesMut::from(text.as_bytes()), false)
    }

    fn framing(text: &str) -> (Framing, bool) {
        match head(text) {
            Ok(Some(Parsed::Final(_, framing, keep_alive))) => (framing, keep_alive),
            _ => panic!("{text:?} did not parse"),
        }
    }

    #[test]
    fn response_heads_give_the_framing() {
        assert_eq!(
            framing("HTTP/1.1 200 OK\r\nContent-Length: 12\r\n\r\n"),
            (Framing::Length(12), true)
        );
        assert_eq!(
            framing("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n"),
            (Framing::Chunked(Chunk::Size), true)
        );
        match head("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n") {
            Ok(Some(Parsed::Final(parts, ..))) => assert!(
                !parts.headers.contains_key(header::CONTENT_LENGTH),
                "the length beside chunked is dropped"
            ),
            _ => panic!("did not parse"),
        }
        assert_eq!(
            framing("HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 1\r\n\r\n"),
            (Framing::Length(1), false)
        );
        assert_eq!(
            framing("HTTP/1.1 200 OK\r\n\r\n"),
            (Framing::UntilClose, false)
        );
        assert_eq!(
            framing("HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\n"),
            (Framing::Length(1), false)
        );
        assert_eq!(
            framing("HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\n"),
            (Framing::Length(0), true)
        );
        assert!(matches!(
            head("HTTP/1.1 100 Continue\r\n\r\n"),
            Ok(Some(Parsed::Interim))
        ));
        assert!(matches!(head("HTTP/1.1 200 OK\r\nContent-Le"), Ok(None)));
    }

    #[test]
    fn malformed_heads_are_errors() {
        for text in [
            "HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: 1x\r\n\r\n",
            "HTTP/1.1 2000 OK\r\n\r\n",
            "HTXP/1.1 200 OK\r\n\r\n",
            "HTTP/1.1 101 Switching Protocols\r\n\r\n",
            "HTTP/1.1 200 OK\r\nBad Name: 1\r\n\r\n",
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n",
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n",
        ] {
            assert!(head(text).is_err(), "{text:?}");
        }
    }

    fn dechunk(input: &[u8]) -> Result<(Vec<u8>, bool), String> {
        let mut buffer = BytesMut::from(input);
        let mut state = Chunk::Size;
        let mut out = Vec::new();
        loop {
            match step_chunked(&mut state, &mut buffer)? {
                ChunkStep::Data(data) => out.extend_from_slice(&data),
                ChunkStep::End => return Ok((out, true)),
                ChunkStep::More => return Ok((out, false)),
            }
        }
    }

    #[test]
    fn chunked_bodies_decode() {
        assert_eq!(
            dechunk(b"5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\nX-Trailer: t\r\n\r\n").unwrap(),
            (b"hello world".to_vec(), true)
        );
        assert_eq!(dechunk(b"5\r\nhel").unwrap(), (b"hel".to_vec(), false));
        assert_eq!(
            dechunk(b"A\r\n0123456789\r\n0\r\n\r\n").unwrap().0.len(),
            10
        );
        for broken in [
            &b"zz\r\n"[..],
            b"5\r\nhelloXX",
            b"5 junk\r\nhello\r\n",
            b"ffffffffffffffff1\r\n",
        ] {
            assert!(
                dechunk(broken).is_err(),
                "{:?}",
                String::from_utf8_lossy(broken)
            );
        }
        assert!(dechunk(&[b'1'; 5000]).is_err(), "an endless size line");
    }

    #[test]
    fn request_heads_carry_their_own_framing() {
        let mut headers = HeaderMap::new();
        headers.insert(header::HOST, HeaderValue::from_static("a"));
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from_static("99"));
        let mut out = Vec::new();
        encode_head(&mut out, &Method::POST, "/x?y=1", &headers, Some(3), false);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "POST /x?y=1 HTTP/1.1\r\nhost: a\r\ncontent-length: 3\r\n\r\n"
        );
        let mut out = Vec::new();
        encode_head(&mut out, &Method::PUT, "/", &HeaderMap::new(), None, true);
        assert!(String::from_utf8(out)
            .unwrap()
            .ends_with("transfer-encoding: chunked\r\n\r\n"));
        let mut out = Vec::new();
        encode_head(&mut out, &Method::GET, "/", &HeaderMap::new(), None, false);
        assert_eq!(String::from_utf8(out).unwrap(), "GET / HTTP/1.1\r\n\r\n");
    }
}

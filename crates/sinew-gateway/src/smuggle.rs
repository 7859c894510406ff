//! Requests that could smuggle another, spotted on the wire and refused.
//!
//! A request with both `Content-Length` and `Transfer-Encoding` is how a
//! request is hidden inside another's body when two HTTP/1 parsers on the
//! path disagree about which header frames it. hyper reads such a request
//! as chunked, drops the length and closes the connection after it (RFC
//! 9112 §6.3 allows that), so nothing can follow it; but it drops the
//! length before the service sees the request, so the service could not
//! refuse it. The front therefore watches its connections' bytes on their
//! way to hyper ([`Watched`]): it follows each HTTP/1 request's framing
//! (its head, then a body by length or by chunks, to where the next head
//! starts) and notes the first request whose head has both headers
//! ([`Conflicts`]); the service gives that request a 400, logged like any
//! other, before it reaches a route.
//!
//! Following the framing costs one scan of each head and a walk over chunk
//! size lines; bodies by length are skipped, and nothing is copied unless
//! a head spans two reads. A connection that is not HTTP/1 (the HTTP/2
//! preface), that the walk cannot follow (a malformed head or chunk, which
//! hyper refuses itself and closes on), or that is past a conflict or a
//! `CONNECT` is no longer watched.

use pin_project_lite::pin_project;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Which request of a connection (counted from 0, in the order hyper
/// serves them) has both `Content-Length` and `Transfer-Encoding`.
#[derive(Debug)]
pub(crate) struct Conflicts {
    /// The index of that request, `u64::MAX` for none.
    first: AtomicU64,
}

impl Default for Conflicts {
    fn default() -> Conflicts {
        Conflicts {
            first: AtomicU64::new(u64::MAX),
        }
    }
}

impl Conflicts {
    /// Whether the connection's request number `index` is the conflicting
    /// one. Its head has passed through [`Watched`] before hyper hands the
    /// request to the service, so the answer is known by then.
    pub(crate) fn at(&self, index: u64) -> bool {
        self.first.load(Ordering::Acquire) == index
    }
}

/// Put in the extensions of a request whose head had both
/// `Content-Length` and `Transfer-Encoding`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Conflicting;

pin_project! {
    /// A client connection whose incoming bytes are followed request by
    /// request (see the module docs); what is written passes untouched.
    pub(crate) struct Watched<S> {
        #[pin]
        inner: S,
        framing: Framing,
    }
}

impl<S> Watched<S> {
    /// Watches `inner`, noting conflicts in `conflicts`; heads longer than
    /// `max_head` bytes end the watch (hyper refuses them with 431).
    pub(crate) fn new(inner: S, conflicts: Arc<Conflicts>, max_head: usize) -> Watched<S> {
        Watched {
            inner,
            framing: Framing {
                state: State::Head,
                head: Vec::new(),
                index: 0,
                max_head,
                conflicts,
            },
        }
    }
}

impl<S: AsyncRead> AsyncRead for Watched<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.project();
        let before = buf.filled().len();
        ready!(this.inner.poll_read(cx, buf))?;
        if !matches!(this.framing.state, State::Off) {
            this.framing.feed(&buf.filled()[before..]);
        }
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncWrite> AsyncWrite for Watched<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.project().inner.poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.project().inner.poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().inner.poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().inner.poll_shutdown(cx)
    }
}

/// Where in a request the next byte falls.
#[derive(Debug, PartialEq, Eq)]
enum State {
    /// In a head (or the empty lines before one).
    Head,
    /// In a body by length: this many bytes left.
    Body(u64),
    /// In a chunk's size line: the size so far, whether the size has a
    /// digit yet, whether its extensions have started.
    ChunkSize { size: u64, digits: bool, rest: bool },
    /// In a chunk's data: this many bytes left.
    ChunkData(u64),
    /// After a chunk's data, before its line end.
    ChunkEnd,
    /// In the trailers after the last chunk: whether the line so far is
    /// empty.
    Trailers { empty: bool },
    /// Not watched any more.
    Off,
}

struct Framing {
    state: State,
    /// A head that spans reads, so far.
    head: Vec<u8>,
    /// The number of heads read whole.
    index: u64,
    max_head: usize,
    conflicts: Arc<Conflicts>,
}

impl Framing {
    fn feed(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            match &mut self.state {
                State::Off => return,
                State::Head => bytes = self.head_bytes(bytes),
                State::Body(left) | State::ChunkData(left) => {
                    let taken = (*left).min(bytes.len() as u64);
                    *left -= taken;
                    bytes = &bytes[taken as usize..];
                    if *left == 0 {
                        self.state = match self.state {
                            State::Body(_) => State::Head,
                            _ => State::ChunkEnd,
                        };
                    }
                }
                _ => {
                    self.chunk_byte(bytes[0]);
                    bytes = &bytes[1..];
                }
            }
        }
    }

    /// Takes bytes of a head; returns those after it.
    fn head_bytes<'a>(&mut self, bytes: &'a [u8]) -> &'a [u8] {
        if self.head.is_empty() {
            // Empty lines before a request line are skipped, as hyper
            // (httparse) skips them.
            let start = bytes
                .iter()
                .position(|b| !matches!(b, b'\r' | b'\n'))
                .unwrap_or(bytes.len());
            let bytes = &bytes[start..];
            if bytes.is_empty() {
                return bytes;
            }
            return match end_of_head(bytes) {
                Some(end) => {
                    self.on_head(&bytes[..end]);
                    &bytes[end..]
                }
                None => {
                    if bytes.len() > self.max_head {
                        self.state = State::Off;
                    } else {
                        self.head.extend_from_slice(bytes);
                    }
                    &[]
                }
            };
        }
        let had = self.head.len();
        let room = (self.max_head + 1).saturating_sub(had);
        self.head.extend_from_slice(&bytes[..bytes.len().min(room)]);
        let from = had.saturating_sub(3);
        match end_of_head(&self.head[from..]) {
            Some(end) => {
                let end = from + end;
                let head = std::mem::take(&mut self.head);
                self.on_head(&head[..end]);
                self.head = head;
                self.head.clear();
                &bytes[end - had..]
            }
            None => {
                if self.head.len() > self.max_head {
                    self.state = State::Off;
                    self.head = Vec::new();
                }
                &[]
            }
        }
    }

    /// A whole head: how its body is framed, and whether it conflicts.
    fn on_head(&mut self, head: &[u8]) {
        let mut lines = head
            .split(|&b| b == b'\n')
            .map(|line| line.strip_suffix(b"\r").unwrap_or(line));
        let request_line = lines.next().unwrap_or_default();
        let http11 = request_line.ends_with(b" HTTP/1.1");
        if !http11 && !request_line.ends_with(b" HTTP/1.0") {
            self.state = State::Off;
            return;
        }
        let mut length: Option<u64> = None;
        let mut transfer_encoding = false;
        let mut chunked = false;
        for line in lines.filter(|line| !line.is_empty()) {
            let Some(colon) = line.iter().position(|&b| b == b':') else {
                self.state = State::Off;
                return;
            };
            let (name, value) = (&line[..colon], line[colon + 1..].trim_ascii());
            if name.eq_ignore_ascii_case(b"content-length") {
                let parsed = (!value.is_empty() && value.iter().all(u8::is_ascii_digit))
                    .then(|| std::str::from_utf8(value).ok()?.parse::<u64>().ok())
                    .flatten();
                match (parsed, length) {
                    (Some(new), None) => length = Some(new),
                    (Some(new), Some(old)) if new == old => {}
                    // hyper refuses these (400) and closes.
                    _ => {
                        self.state = State::Off;
                        return;
                    }
                }
            } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
                transfer_encoding = true;
                // The last coding of the last line decides, as in hyper.
                let last = value.rsplit(|&b| b == b',').next().unwrap_or_default();
                chunked = last.trim_ascii().eq_ignore_ascii_case(b"chunked");
            }
        }
        if transfer_encoding && length.is_some() {
            self.conflicts.first.store(self.index, Ordering::Release);
            // hyper closes the connection after this request.
            self.state = State::Off;
            return;
        }
        self.index += 1;
        self.state = if request_line.starts_with(b"CONNECT ") {
            State::Off
        } else if transfer_encoding {
            if http11 && chunked {
                State::ChunkSize {
                    size: 0,
                    digits: false,
                    rest: false,
                }
            } else {
                State::Off
            }
        } else {
            match length {
                Some(length) if length > 0 => State::Body(length),
                _ => State::Head,
            }
        };
    }

    /// A byte of a chunk's size line, line end or trailers.
    fn chunk_byte(&mut self, byte: u8) {
        self.state = match std::mem::replace(&mut self.state, State::Off) {
            State::ChunkSize { size, digits, rest } => match byte {
                b'\n' if digits && size == 0 => State::Trailers { empty: true },
                b'\n' if digits => State::ChunkData(size),
                b'\n' => State::Off,
                _ if rest => State::ChunkSize { size, digits, rest },
                b'0'..=b'9' | b'a'..=b'f' | b'A'..=b'F' => {
                    let digit = u64::from((byte as char).to_digit(16).unwrap_or(0));
                    match size.checked_mul(16) {
                        Some(size) => State::ChunkSize {
                            size: size + digit,
                            digits: true,
                            rest,
                        },
                        None => State::Off,
                    }
                }
                b';' | b' ' | b'\t' | b'\r' if digits => State::ChunkSize {
                    size,
                    digits,
                    rest: true,
                },
                _ => State::Off,
            },
            State::ChunkEnd => match byte {
                b'\r' => State::ChunkEnd,
                b'\n' => State::ChunkSize {
                    size: 0,
                    digits: false,
                    rest: false,
                },
                _ => State::Off,
            },
            State::Trailers { empty } => match byte {
                b'\n' if empty => State::Head,
                b'\n' => State::Trailers { empty: true },
                b'\r' => State::Trailers { empty },
                _ => State::Trailers { empty: false },
            },
            other => other,
        };
    }
}

/// The length of the head at the start of `bytes` (through the empty line
/// that ends it), if it is all there.
fn end_of_head(bytes: &[u8]) -> Option<usize> {
    let mut at = 0;
    while let Some(found) = bytes[at..].iter().position(|&b| b == b'\n') {
        let newline = at + found;
        match bytes.get(newline + 1) {
            Some(b'\n') => return Some(newline + 2),
            Some(b'\r') if bytes.get(newline + 2) == Some(&b'\n') => return Some(newline + 3),
            _ => at = newline + 1,
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `wire` in pieces of `step` bytes; returns the conflict's index
    /// and the heads read.
    fn follow(wire: &[u8], step: usize) -> (Option<u64>, u64, State) {
        let conflicts = Arc::new(Conflicts::default());
        let mut framing = Watched::new((), conflicts.clone(), 1024).framing;
        for piece in wire.chunks(step) {
            framing.feed(piece);
        }
        let first = conflicts.first.load(Ordering::Acquire);
        (
            (first != u64::MAX).then_some(first),
            framing.index,
            framing.state,
        )
    }

    const PIPELINE: &[u8] = b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n\
        POST /b HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello\
        POST /c HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n\
        5;ext=1\r\nhello\r\n10\r\n0123456789abcdef\r\n0\r\nTrailer: t\r\n\r\n\
        \r\nGET /d HTTP/1.0\n\n";

    #[test]
    fn framing_is_followed_across_any_split() {
        for step in [1, 2, 3, 7, 64, PIPELINE.len()] {
            assert_eq!(
                follow(PIPELINE, step),
                (None, 4, State::Head),
                "step {step}"
            );
        }
    }

    #[test]
    fn the_conflicting_request_is_found_wherever_it_is() {
        for (second, tail) in [
            (
                &b"POST /s HTTP/1.1\r\nContent-Length: 60\r\nTransfer-Encoding: chunked\r\n\r\n"[..],
                &b"0\r\n\r\nGET /smuggled HTTP/1.1\r\n\r\n"[..],
            ),
            (
                b"POST /s HTTP/1.1\r\ntransfer-encoding: chunked\r\ncontent-length: 4\r\n\r\n",
                b"5c\r\nGET /smuggled HTTP/1.1\r\n\r\n",
            ),
        ] {
            let wire = [PIPELINE, second, tail].concat();
            for step in [1, 5, wire.len()] {
                let (conflict, _, state) = follow(&wire, step);
                assert_eq!(conflict, Some(4), "step {step}");
                assert_eq!(state, State::Off);
            }
        }
    }

    #[test]
    fn what_cannot_be_followed_is_let_go() {
        for wire in [
            &b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"[..],
            b"GET / HTTP/1.1\r\nbroken\r\n\r\n",
            b"POST / HTTP/1.1\r\nContent-Length: 1, 2\r\n\r\n",
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
            b"POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n",
            b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"CONNECT x:1 HTTP/1.1\r\n\r\nGET / HTTP/1.1\r\n",
        ] {
            let (conflict, _, state) = follow(wire, 3);
            assert_eq!((conflict, state), (None, State::Off), "{wire:?}");
        }
        // A head longer than the bound.
        let long = [&b"GET / HTTP/1.1\r\nX: "[..], &[b'a'; 2000]].concat();
        assert_eq!(follow(&long, 100).2, State::Off);
        assert_eq!(follow(&long, long.len()).2, State::Off);
    }
}

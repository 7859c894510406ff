//! [`Replay`]: a streaming request kept for its retries. The caller's
//! stream is read once; the messages it yielded are kept (up to a byte
//! limit) so that each attempt's body sends them again from the start,
//! then goes on with the caller's stream where the last attempt left it.
//!
//! Kept until the call commits (its response began: no attempt follows,
//! and the messages still to be sent are dropped as they go) or the
//! messages outgrow the limit (they are dropped at once and the call can no
//! longer be retried, as gRPC's per-call retry buffer does), or the
//! caller's stream fails (a retry would fail alike). Only the latest
//! attempt reads, and once it failed none does until the next begins: an
//! earlier attempt's body, should its transport still poll it, ends in
//! `CANCELLED`, never as a complete stream.

use sinew_rpc::call::{CallRequest, Payload, PayloadStream, RequestBody};
use sinew_rpc::Status;
use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

/// A streaming request's messages, kept for its retries; see the module
/// docs. Cheap to clone: clones share the messages.
#[derive(Clone)]
pub(crate) struct Replay {
    shared: Arc<Mutex<Kept>>,
}

struct Kept {
    /// The caller's stream; `None` once it ended.
    source: Option<PayloadStream>,
    /// How the caller's stream ended, once it did.
    ended: Option<Result<(), Status>>,
    /// The messages kept, from the `first`-th the stream yielded.
    messages: VecDeque<Payload>,
    first: usize,
    /// Their encoded size, and the most it may be.
    bytes: usize,
    limit: usize,
    /// Whether messages are still kept: not after the call committed or
    /// the limit was passed.
    keeping: bool,
    /// Whether the call can still be sent again from its first message.
    replayable: bool,
    /// The latest attempt: the only one whose body reads.
    attempt: u32,
}

impl Replay {
    /// Takes the streaming body of `request` to keep its messages (up to
    /// `limit` bytes, encoded): the request to send as the first attempt,
    /// and the replay that makes the next ones.
    pub(crate) fn split(request: CallRequest, limit: usize) -> (CallRequest, Replay) {
        let mut parts = request.into_parts();
        let source = std::mem::replace(
            &mut parts.body,
            RequestBody::stream(futures_util::stream::empty()),
        )
        .into_stream();
        let replay = Replay {
            shared: Arc::new(Mutex::new(Kept {
                source: Some(source),
                ended: None,
                messages: VecDeque::new(),
                first: 0,
                bytes: 0,
                limit,
                keeping: true,
                replayable: true,
                attempt: 0,
            })),
        };
        (CallRequest::from_parts(parts), replay)
    }

    /// The body of the next attempt: every message from the first, then
    /// the rest of the caller's stream. Earlier attempts' bodies stop.
    pub(crate) fn next_body(&self) -> RequestBody {
        let attempt = {
            let mut kept = lock(&self.shared);
            kept.attempt += 1;
            kept.attempt
        };
        RequestBody::stream(AttemptBody {
            shared: self.shared.clone(),
            attempt,
            next: 0,
        })
    }

    /// The latest attempt failed: its body stops reading (should its
    /// transport still poll it), and whether another attempt can send the
    /// whole stream again.
    pub(crate) fn retire(&self) -> bool {
        let mut kept = lock(&self.shared);
        kept.attempt += 1;
        kept.replayable
    }

    /// The call committed: no other attempt follows, and messages are kept
    /// no more (those the attempt still has to send go as it sends them).
    pub(crate) fn commit(&self) {
        let mut kept = lock(&self.shared);
        kept.keeping = false;
        kept.replayable = false;
    }
}

/// One attempt's request body.
struct AttemptBody {
    shared: Arc<Mutex<Kept>>,
    attempt: u32,
    /// The index, in the caller's stream, of the next message to send.
    next: usize,
}

impl futures_core::Stream for AttemptBody {
    type Item = Result<Payload, Status>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        let mut kept = lock(&this.shared);
        if kept.attempt != this.attempt {
            return Poll::Ready(Some(Err(Status::cancelled(
                "a later attempt of the call replaced this one",
            ))));
        }
        if !kept.keeping {
            // Committed: what this attempt sent goes.
            while kept.first < this.next && kept.messages.pop_front().is_some() {
                kept.first += 1;
            }
        }
        if this.next < kept.first {
            // (Messages this attempt would need were let go: it cannot be
            // a new attempt of a replayable call. Not reached.)
            return Poll::Ready(Some(Err(Status::internal(
                "the request stream's first messages are no longer kept",
            ))));
        }
        // What earlier attempts read, again.
        if this.next < kept.first + kept.messages.len() {
            let index = this.next - kept.first;
            this.next += 1;
            let message = if kept.keeping {
                kept.messages[index].clone()
            } else {
                // (Sent for the last time; index is 0.)
                kept.first += 1;
                match kept.messages.pop_front() {
                    Some(message) => message,
                    None => return Poll::Ready(None),
                }
            };
            return Poll::Ready(Some(Ok(message)));
        }
        if let Some(ended) = &kept.ended {
            return Poll::Ready(match ended {
                Ok(()) => None,
                Err(status) => Some(Err(status.clone())),
            });
        }
        // The caller's stream, read under the lock: an earlier attempt's
        // body (stopped above) never reads it, and a message read here is
        // this attempt's.
        let Some(source) = kept.source.as_mut() else {
            return Poll::Ready(None);
        };
        match source.as_mut().poll_next(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(None) => {
                kept.source = None;
                kept.ended = Some(Ok(()));
                Poll::Ready(None)
            }
            Poll::Ready(Some(Err(status))) => {
                // The caller gave up: sending it again would fail alike.
                kept.source = None;
                kept.ended = Some(Err(status.clone()));
                kept.replayable = false;
                Poll::Ready(Some(Err(status)))
            }
            Poll::Ready(Some(Ok(message))) => {
                this.next += 1;
                if kept.keeping {
                    kept.bytes = kept.bytes.saturating_add(message.encoded_len());
                    if kept.bytes > kept.limit {
                        // Too much to keep: this attempt is the last.
                        kept.keeping = false;
                        kept.replayable = false;
                        kept.messages = VecDeque::new();
                    } else {
                        kept.messages.push_back(message.spare());
                    }
                }
                if !kept.keeping {
                    kept.first = this.next;
                }
                Poll::Ready(Some(Ok(message)))
            }
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // The state is whole between steps: a poisoned lock holds a valid one.
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use futures_util::StreamExt;
    use sinew_rpc::Code;

    fn replay_of(items: Vec<Result<&'static [u8], Status>>, limit: usize) -> Replay {
        let stream = futures_util::stream::iter(
            items
                .into_iter()
                .map(|item| item.map(|bytes| Payload::from_bytes(Bytes::from_static(bytes)))),
        );
        let request = CallRequest::new("/a.B/C", RequestBody::stream(stream));
        Replay::split(request, limit).1
    }

    async fn next(body: &mut PayloadStream) -> Option<Result<Bytes, Code>> {
        let item = body.next().await?;
        Some(item.map(|p| p.to_bytes()).map_err(|s| s.code()))
    }

    fn ok(bytes: &'static [u8]) -> Option<Result<Bytes, Code>> {
        Some(Ok(Bytes::from_static(bytes)))
    }

    #[tokio::test]
    async fn a_retry_sends_what_was_read_then_goes_on_with_the_stream() {
        let replay = replay_of(vec![Ok(b"a"), Ok(b"b"), Ok(b"c")], 1024);
        let mut first = replay.next_body().into_stream();
        assert_eq!(next(&mut first).await, ok(b"a"));
        // The first attempt fails after one message: the second sends it
        // again, then reads on.
        let mut second = replay.next_body().into_stream();
        assert_eq!(next(&mut first).await, Some(Err(Code::Cancelled)));
        assert_eq!(next(&mut second).await, ok(b"a"));
        assert_eq!(next(&mut second).await, ok(b"b"));
        let mut third = replay.next_body().into_stream();
        for expected in [b"a", b"b", b"c"] {
            assert_eq!(next(&mut third).await, ok(expected));
        }
        assert_eq!(next(&mut third).await, None);
        assert!(lock(&replay.shared).replayable);
        // And a fourth sends the whole stream, ended as it ended.
        let fourth: Vec<_> = replay.next_body().into_stream().collect().await;
        assert_eq!(fourth.len(), 3);
    }

    #[tokio::test]
    async fn a_failed_callers_stream_is_not_sent_again() {
        let replay = replay_of(vec![Ok(b"a"), Err(Status::aborted("gave up"))], 1024);
        let mut first = replay.next_body().into_stream();
        assert_eq!(next(&mut first).await, ok(b"a"));
        assert_eq!(next(&mut first).await, Some(Err(Code::Aborted)));
        assert!(!replay.retire(), "a retry would fail alike");
    }

    #[tokio::test]
    async fn a_failed_attempt_reads_nothing_more_while_the_next_waits() {
        let replay = replay_of(vec![Ok(b"a"), Ok(b"b")], 1024);
        let mut first = replay.next_body().into_stream();
        assert_eq!(next(&mut first).await, ok(b"a"));
        // It failed; its transport polls its body again during the backoff.
        assert!(replay.retire());
        assert_eq!(next(&mut first).await, Some(Err(Code::Cancelled)));
        // The next attempt gets every message, "b" read only now.
        let second: Vec<_> = replay.next_body().into_stream().collect().await;
        assert_eq!(second.len(), 2);
    }

    #[tokio::test]
    async fn past_the_limit_nothing_is_kept_and_the_stream_is_not_replayable() {
        let replay = replay_of(vec![Ok(b"1234"), Ok(b"5678"), Ok(b"9")], 6);
        let mut first = replay.next_body().into_stream();
        assert_eq!(next(&mut first).await, ok(b"1234"));
        assert!(lock(&replay.shared).replayable);
        assert_eq!(next(&mut first).await, ok(b"5678"));
        assert!(!lock(&replay.shared).replayable);
        assert_eq!(lock(&replay.shared).messages.len(), 0, "nothing kept");
        // The attempt goes on to the end.
        assert_eq!(next(&mut first).await, ok(b"9"));
        assert_eq!(next(&mut first).await, None);
    }

    #[tokio::test]
    async fn once_committed_kept_messages_go_as_they_are_sent() {
        let replay = replay_of(vec![Ok(b"a"), Ok(b"b"), Ok(b"c")], 1024);
        let mut first = replay.next_body().into_stream();
        assert_eq!(next(&mut first).await, ok(b"a"));
        assert_eq!(next(&mut first).await, ok(b"b"));
        let mut second = replay.next_body().into_stream();
        assert_eq!(next(&mut second).await, ok(b"a"));
        // The second attempt's response begins while it is still behind.
        replay.commit();
        assert!(!lock(&replay.shared).replayable);
        assert_eq!(lock(&replay.shared).messages.len(), 2);
        assert_eq!(next(&mut second).await, ok(b"b"));
        assert_eq!(lock(&replay.shared).messages.len(), 0);
        assert_eq!(next(&mut second).await, ok(b"c"));
        assert_eq!(lock(&replay.shared).messages.len(), 0);
        assert_eq!(next(&mut second).await, None);
    }
}

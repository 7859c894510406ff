//! Server streams on their way to clients, bounded: how many a service
//! has open at once, how long a message may wait for a client that does
//! not read, and keep-alive comments on quiet server-sent events.
//!
//! A streamed response's chunks are pumped by a task of its own into a
//! channel of one chunk that the response body reads. The body is read as
//! the client takes the bytes, so a client that stops reading stops the
//! body; the pump then waits on the channel, and after
//! `stream_write_timeout` it gives up: the call is dropped (cancelled at
//! the server, its stream freed on the service's connection), and the body
//! ends in an error, which makes hyper cut the response off rather than
//! end it as if complete. A stream holds one of the service's
//! `max_streams` slots while it is open (the ones beyond are refused with
//! `RESOURCE_EXHAUSTED`, 429) so that clients that never read cannot take
//! every stream the service's connection has. Server-sent events quiet
//! for `sse_keep_alive` get a `: keep-alive` comment line, which browsers
//! ignore and which keeps idle intermediaries from closing the
//! connection (and finds clients gone away).

use crate::body::ResponseBody;
use crate::config;
use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use sinew_rpc::Status;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::body::BoxError;

/// A service's bounds on its streams.
pub(crate) struct Streams {
    slots: Arc<Semaphore>,
    max: usize,
    write_timeout: Duration,
    keep_alive: Option<Duration>,
}

/// One open stream's place among its service's `max_streams`, given
/// back when dropped.
pub(crate) struct Slot {
    _permit: OwnedSemaphorePermit,
}

impl Streams {
    pub(crate) fn new(settings: &config::Service) -> Streams {
        Streams {
            slots: Arc::new(Semaphore::new(settings.max_streams)),
            max: settings.max_streams,
            write_timeout: settings.stream_write_timeout,
            keep_alive: (!settings.sse_keep_alive.is_zero()).then_some(settings.sse_keep_alive),
        }
    }

    /// A slot for one more stream, or `RESOURCE_EXHAUSTED` when every
    /// one is taken.
    pub(crate) fn slot(&self) -> Result<Slot, Status> {
        self.slots
            .clone()
            .try_acquire_owned()
            .map(|permit| Slot { _permit: permit })
            .map_err(|_| {
                Status::resource_exhausted(format!(
                    "this service has {} streams open, its max_streams",
                    self.max
                ))
            })
    }

    /// The body of `chunks`, pumped by a task of its own (see the module
    /// docs); with `keep_alive`, that chunk is sent when the stream is
    /// quiet for the service's `sse_keep_alive`.
    pub(crate) fn body<S>(&self, chunks: S, slot: Slot, keep_alive: Option<Bytes>) -> ResponseBody
    where
        S: Stream<Item = Result<Bytes, BoxError>> + Send + 'static,
    {
        let (sender, mut receiver) = tokio::sync::mpsc::channel::<Result<Bytes, BoxError>>(1);
        let stalled = Arc::new(AtomicBool::new(false));
        let write_timeout = self.write_timeout;
        let keep_alive = keep_alive.zip(self.keep_alive);
        tokio::spawn({
            let stalled = stalled.clone();
            async move {
                let _slot = slot;
                let mut chunks = std::pin::pin!(chunks);
                loop {
                    let next = match keep_alive {
                        None => chunks.next().await,
                        Some((ref comment, every)) => {
                            match tokio::time::timeout(every, chunks.next()).await {
                                Ok(next) => next,
                                Err(_) => Some(Ok(comment.clone())),
                            }
                        }
                    };
                    let Some(chunk) = next else { return };
                    match tokio::time::timeout(write_timeout, sender.send(chunk)).await {
                        Ok(Ok(())) => {}
                        // The body is gone: the client went away.
                        Ok(Err(_)) => return,
                        Err(_) => {
                            stalled.store(true, Ordering::Release);
                            return;
                        }
                    }
                }
            }
        });
        let mut ended = false;
        ResponseBody::stream(futures_util::stream::poll_fn(move |cx| {
            if ended {
                return Poll::Ready(None);
            }
            match receiver.poll_recv(cx) {
                Poll::Pending => Poll::Pending,
                Poll::Ready(Some(chunk)) => Poll::Ready(Some(chunk)),
                Poll::Ready(None) => {
                    ended = true;
                    if stalled.load(Ordering::Acquire) {
                        Poll::Ready(Some(Err(format!(
                            "the client took nothing of the stream for {write_timeout:?}"
                        )
                        .into())))
                    } else {
                        Poll::Ready(None)
                    }
                }
            }
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body::Body;
    use http_body_util::BodyExt;

    fn streams(max: usize, write_timeout: Duration, keep_alive: Duration) -> Streams {
        Streams::new(&config::Service {
            max_streams: max,
            stream_write_timeout: write_timeout,
            sse_keep_alive: keep_alive,
            ..config::Service::default()
        })
    }

    #[tokio::test]
    async fn slots_run_out_and_come_back() {
        let streams = streams(2, Duration::from_secs(5), Duration::ZERO);
        let (a, b) = (streams.slot().unwrap(), streams.slot().unwrap());
        let refused = streams.slot().err().unwrap();
        assert_eq!(refused.code(), sinew_rpc::Code::ResourceExhausted);
        drop(a);
        let body = streams.body(
            futures_util::stream::iter([Ok(Bytes::from_static(b"x"))]),
            streams.slot().unwrap(),
            None,
        );
        assert!(streams.slot().is_err(), "the open stream holds its slot");
        assert_eq!(body.collect().await.unwrap().to_bytes(), "x");
        tokio::task::yield_now().await;
        assert!(streams.slot().is_ok(), "the slot comes back at the end");
        drop(b);
    }

    #[tokio::test(start_paused = true)]
    async fn a_client_that_does_not_read_is_cut_off_and_the_call_dropped() {
        let streams = streams(1, Duration::from_secs(30), Duration::ZERO);
        // An endless stream; dropping it is the call's cancellation.
        let (dropped_tx, dropped) = tokio::sync::oneshot::channel::<()>();
        let endless = futures_util::stream::unfold(dropped_tx, |guard| async move {
            Some((Ok::<_, BoxError>(Bytes::from_static(b"chunk")), guard))
        });
        let mut body = streams.body(endless, streams.slot().unwrap(), None);
        // Read one chunk, then stop reading.
        let first = body.frame().await.unwrap().unwrap();
        assert_eq!(first.into_data().unwrap(), "chunk");
        tokio::time::sleep(Duration::from_secs(31)).await;
        dropped.await.unwrap_err();
        assert!(streams.slot().is_ok(), "the slot is free again");
        // What was queued, then the error.
        let mut frames = Vec::new();
        while let Some(frame) = body.frame().await {
            frames.push(frame.map(|_| ()));
        }
        assert!(frames.last().unwrap().is_err(), "{frames:?}");
        assert!(body.is_end_stream() || body.frame().await.is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn quiet_events_get_keep_alive_comments() {
        let streams = streams(1, Duration::from_secs(30), Duration::from_secs(15));
        let quiet = futures_util::stream::pending::<Result<Bytes, BoxError>>();
        let mut body = streams.body(
            quiet,
            streams.slot().unwrap(),
            Some(Bytes::from_static(b": keep-alive\n\n")),
        );
        let started = tokio::time::Instant::now();
        let comment = body.frame().await.unwrap().unwrap().into_data().unwrap();
        assert_eq!(comment, ": keep-alive\n\n");
        assert!(started.elapsed() >= Duration::from_secs(15));
    }
}

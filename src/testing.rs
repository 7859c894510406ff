//! The `sinew.testing.Testing` service and its counters.

#![allow(missing_docs)] // generated code; the .proto comments become its docs
include!(concat!(env!("OUT_DIR"), "/sinew.testing.rs"));

use futures_util::StreamExt;
use sinew::{Code, Request, Response, Status, Streaming};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use testing_server::Testing;

/// What the service has seen; shared with the test through an `Arc`.
#[derive(Debug, Default)]
pub struct Counters {
    pub sleeps_started: AtomicU64,
    pub sleeps_finished: AtomicU64,
    /// Sleep calls whose handler was dropped before finishing (cancelled).
    pub sleeps_cancelled: AtomicU64,
    pub flood_chunks_sent: AtomicU64,
}

impl Counters {
    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::SeqCst)
    }
}

/// The test service.
#[derive(Debug, Default, Clone)]
pub struct TestingService {
    pub counters: Arc<Counters>,
}

/// Counts a cancelled sleep when dropped before `finish`.
struct SleepGuard {
    counters: Arc<Counters>,
    finished: bool,
}

impl Drop for SleepGuard {
    fn drop(&mut self) {
        if !self.finished {
            self.counters
                .sleeps_cancelled
                .fetch_add(1, Ordering::SeqCst);
        }
    }
}

type ChunkStream = Pin<Box<dyn futures_util::Stream<Item = Result<Chunk, Status>> + Send>>;

impl Testing for TestingService {
    type FloodStream = ChunkStream;

    async fn sleep(
        &self,
        request: Request<SleepRequest>,
    ) -> Result<Response<SleepResponse>, Status> {
        let timeout_millis = request.timeout().map_or(0, |t| t.as_millis() as u64);
        self.counters.sleeps_started.fetch_add(1, Ordering::SeqCst);
        let mut guard = SleepGuard {
            counters: self.counters.clone(),
            finished: false,
        };
        tokio::time::sleep(Duration::from_millis(request.into_inner().millis)).await;
        guard.finished = true;
        self.counters.sleeps_finished.fetch_add(1, Ordering::SeqCst);
        Ok(Response::new(SleepResponse { timeout_millis }))
    }

    async fn fail(&self, request: Request<FailRequest>) -> Result<Response<()>, Status> {
        let FailRequest { code, message } = request.into_inner();
        let mut status = Status::new(Code::from_u32(code), message);
        status
            .metadata_mut()
            .insert("x-fail-detail", "from the testing service")
            .map_err(|e| Status::internal(e.to_string()))?;
        Err(status)
    }

    async fn panic(&self, _request: Request<()>) -> Result<Response<()>, Status> {
        panic!("the Panic method panics, as asked");
    }

    async fn flood(
        &self,
        request: Request<FloodRequest>,
    ) -> Result<Response<Self::FloodStream>, Status> {
        let FloodRequest { count, size } = request.into_inner();
        let counters = self.counters.clone();
        let data = vec![0xA5u8; size as usize];
        let stream = futures_util::stream::iter(0..count).map(move |index| {
            counters.flood_chunks_sent.fetch_add(1, Ordering::SeqCst);
            Ok(Chunk {
                data: data.clone(),
                index,
            })
        });
        Ok(Response::new(Box::pin(stream) as ChunkStream))
    }

    async fn sink(
        &self,
        request: Request<Streaming<Chunk>>,
    ) -> Result<Response<SinkSummary>, Status> {
        let pause = request
            .metadata()
            .get("x-pause-millis")
            .and_then(|v| v.parse().ok())
            .map(Duration::from_millis);
        let mut chunks = request.into_inner();
        let mut summary = SinkSummary::default();
        while let Some(chunk) = chunks.message().await? {
            summary.chunks += 1;
            summary.bytes += chunk.data.len() as u64;
            if let Some(pause) = pause {
                tokio::time::sleep(pause).await;
            }
        }
        Ok(Response::new(summary))
    }

    async fn whoami(&self, request: Request<()>) -> Result<Response<Caller>, Status> {
        let peer = request.peer();
        Ok(Response::new(Caller {
            principals: peer
                .and_then(|peer| peer.identity())
                .map(|identity| identity.principals())
                .unwrap_or_default(),
            tls: peer.is_some_and(|peer| peer.is_tls()),
            token_subject: request
                .extensions()
                .get::<sinew::auth::TokenIdentity>()
                .map(|token| token.subject().to_owned())
                .unwrap_or_default(),
        }))
    }

    async fn metadata(&self, request: Request<()>) -> Result<Response<MetadataList>, Status> {
        let mut list = MetadataList::default();
        for (key, value) in request.metadata().iter() {
            list.keys.push(key.to_owned());
            list.values.push(value.to_vec());
        }
        let trailer = request.metadata().get("x-trailer").map(str::to_owned);
        let mut response = Response::new(list);
        if let Some(value) = trailer {
            response
                .metadata_mut()
                .insert("x-trailer-echo", &value)
                .map_err(|e| Status::internal(e.to_string()))?;
        }
        Ok(response)
    }
}

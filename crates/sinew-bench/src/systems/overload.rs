//! The overload rows: one sinew server whose echo handler needs one of 8
//! connections to a backend for 1 ms per call (a semaphore and a sleep: the
//! shape of a service in front of a database pool, where calls queue inside
//! the handler), so that its capacity is about 8 calls a millisecond,
//! driven past it without (`sinew-overload`) and with
//! (`sinew-overload-limited`) an adaptive concurrency limit
//! (`sinew::resilience::AdaptiveLimitLayer`). Every call has a 100 ms
//! deadline (a service config's timeout).
//!
//! One run measures, in order: the unloaded p99 (one call at a time), the
//! capacity (the closed-loop QPS with 8 calls in flight), then an open loop
//! at three times that capacity. The row's QPS is the goodput of the open
//! loop (calls answered within their deadline, per second), its p99 that of
//! those calls; `goodput_share` is goodput over capacity. Calls refused by
//! the limit or past their deadline are what overload is expected to do
//! here, so they are not the run's errors: the goodput counts them out.

use super::sinew_peer::{caller, serve_tcp};
use super::System;
use crate::load::{drive, open_phase, Cell, Plan, Runtimes, Stats};
use crate::sample::Sample;
use sinew::resilience::{
    AdaptiveLimit, AdaptiveLimitLayer, MethodConfig, MethodName, ServiceConfig, ServiceConfigLayer,
};
use sinew::{Request, Response, Status};
use sinew_examples::echo::echo_server::{Echo, EchoServer};
use sinew_examples::echo::{EchoRequest, EchoResponse, EchoService, UnaryEcho, WithUnary};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Semaphore;
use tower::Layer;

/// How long each call holds a backend connection.
const WORK: Duration = Duration::from_millis(1);

/// The backend's connections.
const BACKEND: usize = 8;

/// Every call's deadline.
const DEADLINE: Duration = Duration::from_millis(100);

/// The open loop's rate, in capacities.
const OVERLOAD: f64 = 3.0;

/// Calls in flight while the capacity is measured.
const CAPACITY_CONCURRENCY: usize = 8;

/// An echo that first holds one of the backend's [`BACKEND`] connections
/// for [`WORK`].
struct Backend {
    connections: Arc<Semaphore>,
}

impl UnaryEcho for Backend {
    async fn unary_echo(
        &self,
        request: Request<EchoRequest>,
    ) -> Result<Response<EchoResponse>, Status> {
        let _connection = self
            .connections
            .acquire()
            .await
            .map_err(|_| Status::internal("the backend closed"))?;
        tokio::time::sleep(WORK).await;
        EchoService.unary_echo(request).await
    }
}

/// Runs an overload row's cell.
pub(crate) fn run(runtimes: &Runtimes, plan: &Plan, cell: Cell) -> anyhow::Result<Sample> {
    let mut builder = sinew::Server::builder();
    if cell.system == System::SinewOverloadLimited {
        builder = builder.layer(AdaptiveLimitLayer::new(AdaptiveLimit::default()));
    }
    let backend = Backend {
        connections: Arc::new(Semaphore::new(BACKEND)),
    };
    let server = serve_tcp(
        runtimes,
        builder.add_service(EchoServer::new(WithUnary(backend))),
    )?;
    let address = format!("tcp://{}", server.address);
    let config = ServiceConfig::new()
        .with_method(MethodConfig::new([MethodName::all()]).timeout(DEADLINE))?;
    let channel = runtimes
        .client
        .block_on(sinew::Channel::connect(&address))?;
    let channel = sinew::Channel::from_service(ServiceConfigLayer::new(config).layer(channel));
    let caller = caller(channel, cell);

    let unloaded = drive(
        runtimes,
        plan,
        Cell::closed(cell.system, cell.payload, 1, 1),
        caller.clone(),
    );
    let capacity = drive(
        runtimes,
        plan,
        Cell::closed(cell.system, cell.payload, CAPACITY_CONCURRENCY, 1),
        caller.clone(),
    );
    anyhow::ensure!(
        unloaded.errors == 0 && capacity.errors == 0 && capacity.qps() > 0.0,
        "calls failed below capacity: {:?}",
        capacity
            .first_error
            .as_ref()
            .or(unloaded.first_error.as_ref())
    );
    let rate = (capacity.qps() * OVERLOAD).round().max(1.0) as u32;
    let handle = runtimes.client.handle().clone();
    open_phase(&handle, &caller, rate, plan.warmup);
    let started = Instant::now();
    let tally = open_phase(&handle, &caller, rate, plan.duration);
    let overloaded: Stats = tally.into_stats(started.elapsed(), Duration::ZERO);
    server.stop()?;

    let goodput = overloaded.calls as f64 / plan.duration.as_secs_f64();
    let mut sample = Sample::new(cell, &overloaded);
    sample.qps = goodput;
    sample.goodput_share = goodput / capacity.qps();
    sample.unloaded_p99_us = unloaded.percentile_us(0.99);
    // Refusals and missed deadlines are what overload does here: counted
    // out of the goodput, not errors of the run.
    sample.errors = 0;
    sample.first_error = None;
    Ok(sample)
}

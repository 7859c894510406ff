//! Balancing over three replicas: the `sinew-balanced*` rows (sinew's
//! [`Balanced`](sinew::cluster::Balanced) channel, power of two choices over
//! peak-EWMA latency) and `tonic-balanced-slow` (tonic's
//! `Channel::balance_list`, tower's P2C over pending requests).
//!
//! Three sinew echo servers (with the gRPC bridge, so tonic's client can
//! call them too) run on the server runtime. In the `-slow` rows the first
//! answers every unary call 20 ms late, and the row reports the share of the
//! calls (of the whole run, warm-up included) that went to it, counted by
//! the servers.

use super::sinew_peer::serve_tcp;
use super::{RunningServer, System};
use crate::load::{drive, Cell, OverConnections, Plan, Runtimes, Stats};
use crate::sample::Sample;
use sinew::{Request, Response, Status};
use sinew_examples::echo::{echo_server::Echo, echo_server::EchoServer, EchoRequest, EchoResponse};
use sinew_examples::echo::{EchoService, UnaryEcho, WithUnary};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// How many replicas the rows balance over.
const REPLICAS: usize = 3;

/// How much later the slow replica answers.
pub(crate) const SLOW_BY: Duration = Duration::from_millis(20);

/// The echo service of one replica: counts the calls it serves, and answers
/// unary calls `delay` late.
#[derive(Clone)]
struct Replica {
    delay: Duration,
    served: Arc<AtomicU64>,
}

impl UnaryEcho for Replica {
    async fn unary_echo(
        &self,
        request: Request<EchoRequest>,
    ) -> Result<Response<EchoResponse>, Status> {
        self.served.fetch_add(1, Ordering::Relaxed);
        if !self.delay.is_zero() {
            tokio::time::sleep(self.delay).await;
        }
        EchoService.unary_echo(request).await
    }
}

/// The replicas, running, with their call counters.
pub(super) struct Replicas<'a> {
    servers: Vec<RunningServer<'a>>,
    served: Vec<Arc<AtomicU64>>,
}

impl<'a> Replicas<'a> {
    /// Starts three; the first is `first_delay` late.
    fn start(runtimes: &'a Runtimes, first_delay: Duration) -> anyhow::Result<Replicas<'a>> {
        Replicas::start_with(runtimes, REPLICAS, first_delay, Vec::new())
    }

    /// Starts `count`; the first is `first_delay` late and injects the
    /// faults `first_faults` (`sinew::resilience::FaultRule`s) on its calls.
    pub(super) fn start_with(
        runtimes: &'a Runtimes,
        count: usize,
        first_delay: Duration,
        first_faults: Vec<sinew::resilience::FaultRule>,
    ) -> anyhow::Result<Replicas<'a>> {
        let mut servers = Vec::with_capacity(count);
        let mut served = Vec::with_capacity(count);
        for index in 0..count {
            let replica = Replica {
                delay: if index == 0 {
                    first_delay
                } else {
                    Duration::ZERO
                },
                served: Arc::new(AtomicU64::new(0)),
            };
            served.push(replica.served.clone());
            let mut builder = sinew::Server::builder();
            if index == 0 && !first_faults.is_empty() {
                builder = builder.layer(sinew::resilience::FaultLayer::with_rules(
                    first_faults.clone(),
                ));
            }
            let builder = builder
                .add_service(EchoServer::new(WithUnary(replica)))
                .add_protocol(sinew_grpc::GrpcProtocol::default());
            servers.push(serve_tcp(runtimes, builder)?);
        }
        Ok(Replicas { servers, served })
    }

    pub(super) fn addresses(&self) -> Vec<std::net::SocketAddr> {
        self.servers.iter().map(|server| server.address).collect()
    }

    /// The share of the calls served that the first replica served.
    fn first_share(&self) -> f64 {
        let counts: Vec<u64> = self
            .served
            .iter()
            .map(|served| served.load(Ordering::Relaxed))
            .collect();
        let total: u64 = counts.iter().sum();
        if total == 0 {
            0.0
        } else {
            counts[0] as f64 / total as f64
        }
    }

    pub(super) fn stop(self) -> anyhow::Result<()> {
        for server in self.servers {
            server.stop()?;
        }
        Ok(())
    }
}

/// Runs a `sinew-balanced*` or `tonic-balanced-slow` cell.
pub(crate) fn run(runtimes: &Runtimes, plan: &Plan, cell: Cell) -> anyhow::Result<Sample> {
    let slow = matches!(
        cell.system,
        System::SinewBalancedSlow | System::TonicBalancedSlow
    );
    let replicas = Replicas::start(runtimes, if slow { SLOW_BY } else { Duration::ZERO })?;
    let stats = match cell.system {
        System::TonicBalancedSlow => run_tonic(runtimes, plan, cell, &replicas),
        _ => run_sinew(runtimes, plan, cell, &replicas),
    };
    let share = replicas.first_share();
    replicas.stop()?;
    let mut sample = Sample::new(cell, &stats?);
    if slow {
        sample.slow_share = share;
    }
    Ok(sample)
}

/// sinew's balanced channel over the replicas, one per connection of the
/// cell, as `sinew::connect` gives it for a name (a `Channel` over it).
fn run_sinew(
    runtimes: &Runtimes,
    plan: &Plan,
    cell: Cell,
    replicas: &Replicas<'_>,
) -> anyhow::Result<Stats> {
    let addresses: Vec<String> = replicas
        .addresses()
        .iter()
        .map(|address| format!("tcp://{address}"))
        .collect();
    let callers = runtimes.client.block_on(async {
        let resolver = sinew::cluster::resolve::Fixed::parse(addresses.iter().map(String::as_str))?;
        let mut callers = Vec::with_capacity(cell.connections);
        for _ in 0..cell.connections {
            let balanced =
                sinew::cluster::Balanced::builder(resolver.clone(), "grpc.examples.echo.Echo")
                    .build();
            // Every replica connected before the clock starts.
            tokio::time::timeout(
                Duration::from_secs(10),
                balanced.until_ready(addresses.len()),
            )
            .await
            .map_err(|_| anyhow::anyhow!("replicas not ready in 10 s"))?;
            callers.push(super::sinew_peer::caller(
                sinew::Channel::from_service(balanced),
                cell,
            ));
        }
        Ok::<_, anyhow::Error>(callers)
    })?;
    Ok(drive(runtimes, plan, cell, OverConnections::new(callers)))
}

/// tonic's balanced channel (`Channel::balance_list`) over the replicas.
fn run_tonic(
    runtimes: &Runtimes,
    plan: &Plan,
    cell: Cell,
    replicas: &Replicas<'_>,
) -> anyhow::Result<Stats> {
    let addresses = replicas.addresses();
    let callers = runtimes.client.block_on(async {
        let mut callers = Vec::with_capacity(cell.connections);
        for _ in 0..cell.connections {
            let endpoints = addresses
                .iter()
                .map(|address| {
                    tonic::transport::Endpoint::from_shared(format!("http://{address}"))
                        .map(|endpoint| endpoint.tcp_nodelay(true))
                })
                .collect::<Result<Vec<_>, _>>()?;
            let channel = tonic::transport::Channel::balance_list(endpoints.into_iter());
            callers.push(super::tonic_peer::TonicCaller::new(channel, cell));
        }
        Ok::<_, anyhow::Error>(callers)
    })?;
    Ok(drive(runtimes, plan, cell, OverConnections::new(callers)))
}

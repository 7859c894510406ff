//! The resilience rows: sinew's call policies (`sinew::resilience`) over
//! the replicas of the balancing rows, with faults injected on the first
//! replica's server (its `FaultLayer`), 1 KiB at 64 calls in flight:
//!
//! * `sinew-hedge-off` / `sinew-hedge-on`: the first of three replicas
//!   delays 5% of its calls by 50 ms; a round-robin balanced channel alone,
//!   then with a hedging policy (2 copies, the second after 5 ms). Round
//!   robin, because the default peak-EWMA policy sees the slow replica
//!   coming after its first slow call and mostly avoids it (its p99 stays
//!   near the healthy one without hedging); hedging is for delays no
//!   balancer can predict. The p99 ratio is what hedging buys, attempts
//!   per call what it costs.
//! * `sinew-failing`: the first of three replicas fails every call with
//!   `UNAVAILABLE`; a retry policy (3 attempts, `UNAVAILABLE`, 1 to 10 ms
//!   backoff) with retry throttling. Attempts per call and failed calls.
//! * `sinew-stack`: the full client stack (a service config with a timeout,
//!   retries and throttling; a circuit breaker per method; the balanced
//!   channel) over one server, against `sinew-tcp`'s bare channel: what
//!   the layers cost when nothing fails.
//!
//! Attempts per call are counted on the client: calls that entered the
//! stack against calls the balanced channel below it was given (warm-up
//! included in both).

use super::balanced::Replicas;
use super::System;
use crate::load::{drive, Cell, OverConnections, Plan, Runtimes};
use crate::sample::Sample;
use sinew::cluster::{resolve::Fixed, Balanced, Policy};
use sinew::resilience::{
    BreakerConfig, BreakerLayer, FaultRule, HedgingPolicy, MethodConfig, MethodName, RetryPolicy,
    RetryThrottling, ServiceConfig, ServiceConfigLayer,
};
use sinew::Code;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tower::ServiceBuilder;

const SERVICE: &str = "grpc.examples.echo.Echo";

/// What one row runs: the faults of its first replica, how many replicas,
/// and the client's policies.
struct Scenario {
    replicas: usize,
    policy: Policy,
    faults: Vec<FaultRule>,
    config: Option<ServiceConfig>,
    breaker: bool,
}

fn scenario(system: System) -> anyhow::Result<Scenario> {
    let all = || MethodConfig::new([MethodName::service(SERVICE)]);
    let slow = || vec![FaultRule::all().delay(0.05, Duration::from_millis(50))];
    Ok(match system {
        System::SinewHedgeOff => Scenario {
            replicas: 3,
            policy: Policy::round_robin(),
            faults: slow(),
            config: None,
            breaker: false,
        },
        System::SinewHedgeOn => {
            let hedging = HedgingPolicy::new(2, Duration::from_millis(5), [Code::Unavailable])?;
            Scenario {
                replicas: 3,
                policy: Policy::round_robin(),
                faults: slow(),
                config: Some(ServiceConfig::new().with_method(all().hedging(hedging))?),
                breaker: false,
            }
        }
        System::SinewFailing => {
            let retry = RetryPolicy::new(3, [Code::Unavailable]).backoff(
                Duration::from_millis(1),
                Duration::from_millis(10),
                2.0,
            );
            Scenario {
                replicas: 3,
                policy: Policy::default(),
                faults: vec![FaultRule::all().abort_with(1.0, Code::Unavailable)],
                config: Some(
                    ServiceConfig::new()
                        .with_method(all().retry(retry))?
                        .with_retry_throttling(RetryThrottling::new(10, 0.1)?),
                ),
                breaker: false,
            }
        }
        System::SinewStack => Scenario {
            replicas: 1,
            policy: Policy::default(),
            faults: Vec::new(),
            config: Some(
                ServiceConfig::new()
                    .with_method(
                        all()
                            .timeout(Duration::from_secs(10))
                            .retry(RetryPolicy::new(3, [Code::Unavailable])),
                    )?
                    .with_retry_throttling(RetryThrottling::new(10, 0.1)?),
            ),
            breaker: true,
        },
        other => anyhow::bail!("{} is not a resilience row", other.name()),
    })
}

/// Runs a resilience row's cell.
pub(crate) fn run(runtimes: &Runtimes, plan: &Plan, cell: Cell) -> anyhow::Result<Sample> {
    let scenario = scenario(cell.system)?;
    let replicas = Replicas::start_with(
        runtimes,
        scenario.replicas,
        Duration::ZERO,
        scenario.faults.clone(),
    )?;
    let addresses: Vec<String> = replicas
        .addresses()
        .iter()
        .map(|address| format!("tcp://{address}"))
        .collect();
    // Counted per connection (a counter shared by every caller would be
    // a contended cache line that the bare channel's row does not pay).
    let mut counters: Vec<(Arc<AtomicU64>, Arc<AtomicU64>)> = Vec::new();
    let callers = runtimes.client.block_on(async {
        let resolver = Fixed::parse(addresses.iter().map(String::as_str))?;
        let config = scenario.config.clone().map(ServiceConfigLayer::new);
        let breaker = scenario
            .breaker
            .then(|| BreakerLayer::per_method(BreakerConfig::default()));
        let mut callers = Vec::with_capacity(cell.connections);
        for _ in 0..cell.connections {
            let balanced = Balanced::builder(resolver.clone(), SERVICE)
                .policy(scenario.policy.clone())
                .build();
            tokio::time::timeout(
                Duration::from_secs(10),
                balanced.until_ready(addresses.len()),
            )
            .await
            .map_err(|_| anyhow::anyhow!("replicas not ready in 10 s"))?;
            let (entered, attempted) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
            counters.push((entered.clone(), attempted.clone()));
            let stack = ServiceBuilder::new()
                .map_request(move |request| {
                    entered.fetch_add(1, Ordering::Relaxed);
                    request
                })
                .option_layer(config.clone())
                .option_layer(breaker.clone())
                .map_request(move |request| {
                    attempted.fetch_add(1, Ordering::Relaxed);
                    request
                })
                .service(balanced);
            callers.push(super::sinew_peer::caller(
                sinew::Channel::from_service(stack),
                cell,
            ));
        }
        Ok::<_, anyhow::Error>(callers)
    })?;
    let stats = drive(runtimes, plan, cell, OverConnections::new(callers));
    replicas.stop()?;
    let mut sample = Sample::new(cell, &stats);
    let total = |pick: fn(&(Arc<AtomicU64>, Arc<AtomicU64>)) -> &AtomicU64| {
        counters
            .iter()
            .map(|pair| pick(pair).load(Ordering::Relaxed))
            .sum::<u64>()
    };
    let entered = total(|pair| &pair.0);
    if entered > 0 {
        sample.attempts_per_call = total(|pair| &pair.1) as f64 / entered as f64;
    }
    Ok(sample)
}

//! The balancer's endpoint set as callers see it: one [`EndpointState`] per
//! endpoint (its channel, whether it can take calls, its load), published by
//! the worker as an immutable [`Set`] that callers pick from without locks.

use super::ewma::PeakEwma;
use super::locality::Zones;
use super::outlier::Outlier;
use super::policy::{Group, Policy};
use crate::endpoint::Endpoint;
use arc_swap::ArcSwap;
use sinew_rpc::{Channel, Status};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Whether an endpoint can take calls, as its worker task last saw it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Health {
    /// A connection is being made (or none was asked for yet).
    Connecting,
    /// Connected, with room for calls: the only state a call is sent in.
    Ready,
    /// The last connect failed; waiting out a backoff before the next.
    Failed,
}

impl Health {
    fn from_u8(value: u8) -> Health {
        match value {
            1 => Health::Ready,
            2 => Health::Failed,
            _ => Health::Connecting,
        }
    }

    /// The state's name, as `sinew` reports it.
    pub fn as_str(self) -> &'static str {
        match self {
            Health::Connecting => "connecting",
            Health::Ready => "ready",
            Health::Failed => "failed",
        }
    }
}

impl std::fmt::Display for Health {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One endpoint of the set, shared by the worker (which keeps its health)
/// and the calls (which count themselves in and feed its latency estimate).
#[derive(Debug)]
pub(crate) struct EndpointState {
    pub(crate) endpoint: ArcSwap<Endpoint>,
    pub(crate) channel: Channel,
    pub(crate) in_flight: AtomicUsize,
    /// Calls sent to it, ever.
    pub(crate) calls: AtomicU64,
    pub(crate) rtt: PeakEwma,
    pub(crate) outlier: Outlier,
    /// What its health service last said (true until it says otherwise).
    pub(crate) serving: AtomicBool,
    health: AtomicU8,
}

impl EndpointState {
    pub(crate) fn new(
        endpoint: Endpoint,
        channel: Channel,
        initial_rtt: Duration,
        decay: Duration,
    ) -> EndpointState {
        EndpointState {
            endpoint: ArcSwap::from_pointee(endpoint),
            channel,
            in_flight: AtomicUsize::new(0),
            calls: AtomicU64::new(0),
            rtt: PeakEwma::new(initial_rtt, decay, Instant::now()),
            outlier: Outlier::default(),
            serving: AtomicBool::new(true),
            health: AtomicU8::new(Health::Connecting as u8),
        }
    }

    pub(crate) fn health(&self) -> Health {
        Health::from_u8(self.health.load(Ordering::Acquire))
    }

    pub(crate) fn is_ready(&self) -> bool {
        self.health() == Health::Ready
    }

    pub(crate) fn is_serving(&self) -> bool {
        self.serving.load(Ordering::Relaxed)
    }

    /// Whether outlier detection lets it take another call: not ejected,
    /// and under its probes while on probation.
    pub(crate) fn outlier_admits(&self) -> bool {
        self.outlier.admits(self.in_flight.load(Ordering::Relaxed))
    }

    /// Sets the health; whether it changed.
    pub(crate) fn set_health(&self, health: Health) -> bool {
        self.health.swap(health as u8, Ordering::AcqRel) != health as u8
    }

    /// Peak EWMA cost: the latency estimate times the calls that would be
    /// waiting (in flight, plus this one).
    pub(crate) fn cost(&self, now: Instant) -> f64 {
        self.rtt.estimate(now) * (self.in_flight.load(Ordering::Relaxed) + 1) as f64
    }

    /// A report of the endpoint for people (`sinew members`) and tests.
    pub(crate) fn report(&self, now: Instant) -> EndpointReport {
        EndpointReport {
            endpoint: (**self.endpoint.load()).clone(),
            health: self.health(),
            ejected: self.outlier.is_ejected(),
            on_probation: self.outlier.on_probation(),
            serving: self.is_serving(),
            in_flight: self.in_flight.load(Ordering::Relaxed),
            calls: self.calls.load(Ordering::Relaxed),
            rtt_estimate: Duration::from_nanos(self.rtt.estimate(now) as u64),
            last_error: self.channel.last_connect_error(),
        }
    }
}

/// The endpoints callers pick from, with the policy's state over them:
/// replaced whole by the worker.
#[derive(Debug, Default)]
pub(crate) struct Set {
    /// Every endpoint; the policy picks among them unless the channel
    /// prefers a zone.
    pub(crate) all: Group,
    /// The caller's zone's endpoints and the others', when it prefers one.
    pub(crate) zones: Option<Zones>,
}

impl Set {
    /// `endpoints`, in groups for `policy` (and `zone`, if preferred).
    pub(crate) fn new(
        policy: &Policy,
        zone: Option<&str>,
        endpoints: Vec<Arc<EndpointState>>,
    ) -> Set {
        match zone {
            None => Set {
                all: Group::new(policy, endpoints),
                zones: None,
            },
            Some(zone) => Set {
                zones: Some(Zones::new(policy, zone, &endpoints)),
                // Listed, never picked from: no policy state to build.
                all: Group::plain(endpoints),
            },
        }
    }

    /// Every endpoint.
    pub(crate) fn endpoints(&self) -> &[Arc<EndpointState>] {
        &self.all.endpoints
    }
}

/// One endpoint as a balanced channel sees it now
/// ([`Balanced::endpoints`](super::Balanced::endpoints)).
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct EndpointReport {
    /// The endpoint, as its resolver last reported it.
    pub endpoint: Endpoint,
    /// Whether it takes calls.
    pub health: Health,
    /// Left out of the picks for a while because its calls kept failing
    /// ([`OutlierDetection`](super::OutlierDetection)).
    pub ejected: bool,
    /// Back from an ejection, taking a few probe calls until enough of
    /// them succeed ([`OutlierDetection::probes`](super::OutlierDetection::probes)).
    pub on_probation: bool,
    /// What its health service last said: serving, or not (out of the
    /// picks while not).
    pub serving: bool,
    /// Calls sent to it whose response has not begun.
    pub in_flight: usize,
    /// Calls sent to it since it joined the set (fail-overs included).
    pub calls: u64,
    /// Its peak-EWMA latency estimate.
    pub rtt_estimate: Duration,
    /// Why its last connect failed, while it backs off.
    pub last_error: Option<Status>,
}

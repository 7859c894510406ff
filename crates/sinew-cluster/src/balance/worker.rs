//! The balancer's own task: applies the resolver's updates to the endpoint
//! set, and runs one watcher per endpoint that connects it and keeps its
//! health current (linkerd2-proxy's balancer worker is the model).
//!
//! A watcher connects its endpoint at once (not when a call comes), waits out
//! reconnect backoffs, marks the endpoint `Ready` when a connection has room,
//! `Failed` while the last connect failed, and `Connecting` again as soon as
//! the connection is lost or the server sends GOAWAY, so no call is sent to
//! an endpoint that is going away. Every change wakes the callers waiting for
//! readiness.

use super::endpoints::{EndpointState, Health, Set};
use super::{health_check, MakeChannel, Shared};
use crate::endpoint::Endpoint;
use crate::resolve::{Update, Updates};
use futures_util::StreamExt;
use sinew_transport::Address;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::task::JoinHandle;

/// An endpoint's latency estimate before its first response, when no other
/// endpoint has one to borrow.
const INITIAL_RTT: Duration = Duration::from_millis(1);

/// How long a watcher waits before asking a channel over another service
/// (which cannot report its connection) for readiness again after it failed.
const SERVICE_RETRY: Duration = Duration::from_secs(1);

/// How often ejected endpoints whose time is up are taken back.
const EJECTION_TICK: Duration = Duration::from_millis(250);

/// A watcher task, aborted when its endpoint leaves the set (or the worker
/// stops).
struct Watcher(JoinHandle<()>);

impl Drop for Watcher {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Runs until aborted (when the last clone of the balanced channel drops).
pub(super) async fn run(shared: Arc<Shared>, mut updates: Updates, make_channel: MakeChannel) {
    let mut watchers: HashMap<Address, Watcher> = HashMap::new();
    // Every endpoint the resolver reported (the set holds only the subset,
    // when there is one).
    let mut resolved: Vec<Endpoint> = Vec::new();
    let mut ejections = tokio::time::interval(EJECTION_TICK);
    ejections.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // The success-rate rule's intervals (never, when it is off).
    let success_rate = shared.outlier.success_rate_rule();
    let mut rates =
        tokio::time::interval(success_rate.map_or(Duration::from_secs(3600), |rule| rule.interval));
    rates.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    rates.reset();
    let mut resolving = true;
    loop {
        tokio::select! {
            item = updates.next(), if resolving => match item {
                Some(Ok(update)) => apply(&shared, update, &mut resolved, &mut watchers, &make_channel),
                Some(Err(status)) => shared.resolve_failed(status),
                None => {
                    // The watchers keep the endpoints' health current, and
                    // ejections end, until the channel drops.
                    tracing::debug!(service = %shared.service, "resolver ended; the endpoint set stays as it is");
                    resolving = false;
                }
            },
            _ = ejections.tick() => shared.return_ejected(),
            _ = rates.tick(), if success_rate.is_some() => shared.eject_by_success_rate(),
        }
    }
}

/// Applies one update: takes it into the resolver's list, chooses the
/// endpoints to connect (the subset, or all), publishes the new set, starts
/// watchers for new endpoints and stops those of endpoints that left.
fn apply(
    shared: &Arc<Shared>,
    update: Update,
    resolved: &mut Vec<Endpoint>,
    watchers: &mut HashMap<Address, Watcher>,
    make_channel: &MakeChannel,
) {
    merge(resolved, update);
    let wanted = match &shared.subset {
        Some(subset) => subset.select(resolved),
        None => resolved.clone(),
    };
    reconcile(shared, wanted, watchers, make_channel);
}

/// Takes an update into the list of every endpoint the resolver reported.
/// An endpoint reported again replaces the one of its address.
fn merge(resolved: &mut Vec<Endpoint>, update: Update) {
    let added = match update {
        Update::Add(endpoints) => endpoints,
        Update::Remove(addresses) => {
            resolved.retain(|endpoint| !addresses.contains(endpoint.address()));
            return;
        }
        Update::Reset(endpoints) => {
            resolved.clear();
            endpoints
        }
    };
    for endpoint in added {
        match resolved
            .iter_mut()
            .find(|known| known.address() == endpoint.address())
        {
            Some(known) => *known = endpoint,
            None => resolved.push(endpoint),
        }
    }
}

/// Makes the published set the `wanted` endpoints: keeps the state (and
/// connection) of those already in it, in their order, and adds the others
/// after them, in the resolver's order.
fn reconcile(
    shared: &Arc<Shared>,
    wanted: Vec<Endpoint>,
    watchers: &mut HashMap<Address, Watcher>,
    make_channel: &MakeChannel,
) {
    let current = shared.set.load_full();
    // Addresses are distinct: `merge` keeps one endpoint per address.
    let position: HashMap<&Address, usize> = wanted
        .iter()
        .enumerate()
        .map(|(index, endpoint)| (endpoint.address(), index))
        .collect();
    let mut known = vec![false; wanted.len()];
    let mut kept: Vec<Arc<EndpointState>> = Vec::with_capacity(wanted.len());
    let mut removed: Vec<Address> = Vec::new();
    for state in current.endpoints() {
        let address = state.endpoint.load().address().clone();
        match position.get(&address) {
            Some(&index) => {
                known[index] = true;
                // Known: only its weight, zone or metadata may have changed.
                if **state.endpoint.load() != wanted[index] {
                    state.endpoint.store(Arc::new(wanted[index].clone()));
                }
                kept.push(state.clone());
            }
            None => {
                watchers.remove(&address);
                removed.push(address);
            }
        }
    }
    drop(position);
    // New endpoints start from the mean estimate of the others, so that they
    // are neither shunned nor flooded before their first responses.
    let now = Instant::now();
    let initial_rtt = match kept.len() {
        0 => INITIAL_RTT,
        count => Duration::from_nanos(
            (kept
                .iter()
                .map(|state| state.rtt.estimate(now))
                .sum::<f64>()
                / count as f64) as u64,
        )
        .max(Duration::from_micros(1)),
    };
    for (endpoint, known) in wanted.into_iter().zip(known) {
        if known {
            continue;
        }
        let channel = make_channel(&endpoint);
        let address = endpoint.address().clone();
        let state = Arc::new(EndpointState::new(
            endpoint,
            channel,
            initial_rtt,
            shared.policy.decay(),
        ));
        let watcher = tokio::spawn(watch(shared.clone(), state.clone()));
        watchers.insert(address, Watcher(watcher));
        kept.push(state);
    }
    if !removed.is_empty() {
        tracing::debug!(service = %shared.service, ?removed, "endpoints left");
    }
    let zone = shared.locality.as_ref().map(|locality| &*locality.zone);
    shared.publish(Set::new(&shared.policy, zone, kept));
}

/// Connects one endpoint and follows its connection, for as long as it is
/// in the set.
async fn watch(shared: Arc<Shared>, state: Arc<EndpointState>) {
    let mut channel = state.channel.clone();
    loop {
        let connected = std::future::poll_fn(|cx| {
            let poll = channel.poll_connected(cx);
            if poll.is_pending() {
                // Woken when a connect ends, failed or not: tell which.
                let health = match channel.last_connect_error() {
                    Some(_) => Health::Failed,
                    None => Health::Connecting,
                };
                if state.set_health(health) {
                    shared.wake_waiters();
                    if health == Health::Failed {
                        shared.resolver.reresolve(&shared.service);
                    }
                }
            }
            poll
        })
        .await;
        if let Err(status) = connected {
            // Only a channel over another service fails here.
            tracing::debug!(endpoint = %state.endpoint.load().address(), %status, "endpoint not ready");
            if state.set_health(Health::Failed) {
                shared.wake_waiters();
            }
            tokio::time::sleep(SERVICE_RETRY).await;
            continue;
        }
        if state.set_health(Health::Ready) {
            shared.wake_waiters();
        }
        let lost = channel.connection_lost();
        if shared.health_check {
            // The health watch lives as long as this connection.
            let health = health_check::watch(shared.clone(), state.clone(), channel.clone());
            tokio::select! {
                _ = lost => {}
                _ = health => {}
            }
        } else {
            lost.await;
        }
        tracing::debug!(endpoint = %state.endpoint.load().address(), "endpoint's connection lost or going away");
        if state.set_health(Health::Connecting) {
            shared.wake_waiters();
        }
    }
}

//! The connections behind a [`Channel`](super::Channel) to one endpoint, and
//! what readiness means for them.
//!
//! A pool has a few slots (one by default), each a [`Reconnect`] slot holding
//! one multiplexed connection or making one in the background. Readiness
//! tells the truth about them:
//!
//! * ready: a slot has a live connection with room for another stream (the
//!   slots are tried round-robin, from a different one each time);
//! * pending: every live connection is at its stream limit (woken when a stream
//!   closes), or a connect is under way (woken when it ends);
//! * every slot backing off after a failed connect: the failure (fail fast,
//!   the default) or pending (wait for ready); see `reconnect.rs`.
//!
//! A `tcp://` pool with `prefer_local` makes its connections to the server's
//! shared-memory or Unix-socket endpoint when the server is on this host
//! (`crate::local`).

use super::connection;
use super::reconnect::{Connect, Reconnect, ReconnectPolicy};
use super::{ChannelConfig, Connector};
use crate::connection::Shared;
use crate::local::{self, LocalRoute};
use crate::status::Status;
use futures_util::future::BoxFuture;
use sinew_transport::Address;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};

/// Where a pool's connections go.
#[derive(Clone)]
pub(crate) enum Target {
    Address(Address),
    Connector(Arc<dyn Connector>),
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Target::Address(address) => write!(f, "{address}"),
            Target::Connector(_) => f.write_str("<connector>"),
        }
    }
}

/// The connections to one endpoint.
#[derive(Debug)]
pub(crate) struct Pool {
    pub(crate) endpoint: Arc<Endpoint>,
    slots: Box<[Arc<Reconnect<Arc<Endpoint>>>]>,
    next: AtomicUsize,
}

/// What every connection of a pool is made from.
#[derive(Debug)]
pub(crate) struct Endpoint {
    pub(crate) target: Target,
    pub(crate) config: ChannelConfig,
    local: Mutex<LocalState>,
}

/// What a `prefer_local` channel knows of its server's local endpoints.
#[derive(Debug, Default)]
pub(crate) struct LocalState {
    /// Whether the server was asked (since the last local failure).
    asked: bool,
    route: Option<LocalRoute>,
    /// The local endpoint connections use now.
    pub(crate) in_use: Option<Address>,
}

impl Connect for Arc<Endpoint> {
    type Connection = Arc<Shared>;

    fn connect(&self) -> BoxFuture<'_, Result<Arc<Shared>, Status>> {
        Box::pin(self.connect_once())
    }

    fn is_usable(&self, shared: &Arc<Shared>) -> bool {
        shared.accepting.load(Ordering::Acquire)
    }

    /// Closes the connection: at once if idle, after its last call otherwise.
    fn close(&self, shared: Arc<Shared>) {
        let mut state = shared.lock();
        if state.streams.is_empty() {
            state.kill(Status::unavailable("channel closed"));
        } else {
            state.close_when_idle = true;
        }
    }
}

impl Pool {
    pub(crate) fn new(target: Target, config: ChannelConfig) -> Pool {
        let policy = ReconnectPolicy {
            backoff_base: config.backoff_base,
            backoff_max: config.backoff_max,
            wait_for_ready: config.wait_for_ready,
        };
        let endpoint = Arc::new(Endpoint {
            target,
            config,
            local: Mutex::default(),
        });
        let slots = (0..endpoint.config.connections)
            .map(|_| Reconnect::new(endpoint.clone(), policy))
            .collect();
        Pool {
            endpoint,
            slots,
            next: AtomicUsize::new(0),
        }
    }

    /// A live connection with room for a stream, picked round-robin, or why
    /// there is none (see the module docs). Starts connects as needed.
    pub(crate) fn poll_connection(
        &self,
        cx: &mut Context<'_>,
    ) -> Poll<Result<Arc<Shared>, Status>> {
        self.poll_slots(cx, false)
    }

    /// A live connection with room for a stream; pending (never failing)
    /// while every slot connects or backs off.
    pub(crate) fn poll_connection_waiting(&self, cx: &mut Context<'_>) -> Poll<Arc<Shared>> {
        match self.poll_slots(cx, true) {
            Poll::Ready(Ok(shared)) => Poll::Ready(shared),
            Poll::Ready(Err(_)) | Poll::Pending => Poll::Pending,
        }
    }

    fn poll_slots(
        &self,
        cx: &mut Context<'_>,
        wait_out_backoff: bool,
    ) -> Poll<Result<Arc<Shared>, Status>> {
        let count = self.slots.len();
        let start = self.next.fetch_add(1, Ordering::Relaxed) % count;
        let mut failure = None;
        let mut waiting = false;
        for offset in 0..count {
            let slot = &self.slots[(start + offset) % count];
            let outcome = match wait_out_backoff {
                true => slot.poll_connection_waiting(cx).map(Ok),
                false => slot.poll_connection(cx),
            };
            match outcome {
                Poll::Ready(Ok(shared)) => {
                    if shared.poll_stream_room(cx).is_ready() {
                        return Poll::Ready(Ok(shared));
                    }
                    // At its stream limit: woken when one of its streams closes.
                    waiting = true;
                }
                Poll::Ready(Err(status)) => {
                    failure.get_or_insert(status);
                }
                Poll::Pending => waiting = true,
            }
        }
        // Backing off everywhere (fail fast) is an error; anything else waits.
        match failure {
            Some(status) if !waiting => Poll::Ready(Err(status)),
            _ => Poll::Pending,
        }
    }

    /// The error of the last failed connect, while a slot backs off from it.
    pub(crate) fn last_error(&self) -> Option<Status> {
        self.slots.iter().find_map(|slot| slot.last_error())
    }

    /// Calls in flight on the pool's connections.
    pub(crate) fn in_flight(&self) -> usize {
        self.slots
            .iter()
            .filter_map(|slot| slot.connection())
            .map(|shared| shared.streams_open())
            .sum()
    }
}

impl Endpoint {
    pub(crate) fn local_state(&self) -> MutexGuard<'_, LocalState> {
        self.local.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Endpoint {
    /// A new connection to the target, or to the server's local endpoint when
    /// `prefer_local` applies.
    async fn connect_once(&self) -> Result<Arc<Shared>, Status> {
        let config = &self.config;
        let address = match &self.target {
            Target::Connector(connector) => {
                return match connector.connect().await {
                    Ok(stream) => {
                        let (reader, writer) = tokio::io::split(stream);
                        connection::handshake(reader, writer, config, "connector").await
                    }
                    Err(error) => Err(Status::unavailable(format!("connector failed: {error}"))),
                };
            }
            Target::Address(address) => address,
        };
        if config.prefer_local && matches!(address, Address::Tcp { .. }) {
            if let Some(route) = self.local_route(address).await {
                for local in &route.addresses {
                    let connected =
                        connection::connect_to_process(local, Some(route.pid), config).await;
                    match connected {
                        Ok(shared) => {
                            self.local_state().in_use = Some(local.clone());
                            return Ok(shared);
                        }
                        Err(status) => {
                            tracing::debug!(%local, %status, "local endpoint not usable");
                        }
                    }
                }
                // None usable: TCP. If one worked before (the server may have
                // restarted elsewhere), ask again at the next connect.
                let mut state = self.local_state();
                state.asked = state.in_use.is_none();
                state.route = None;
                state.in_use = None;
            }
        }
        connection::connect(address, config).await
    }

    /// The server's local endpoints, asked once (over a short-lived channel
    /// of its own). Returns a boxed future with its `Send` bound spelled out:
    /// the probe's own call connects through a pool again (with
    /// `prefer_local` off), so the future types are recursive.
    fn local_route<'a>(&'a self, address: &'a Address) -> BoxFuture<'a, Option<LocalRoute>> {
        Box::pin(async move {
            {
                let state = self.local_state();
                if state.asked {
                    return state.route.clone();
                }
            }
            let probe = super::Channel::builder(address.clone())
                .connect_timeout(self.config.connect_timeout)
                .lazy();
            let route = local::discover(address, probe).await;
            let mut state = self.local_state();
            state.asked = true;
            state.route = route.clone();
            route
        })
    }
}

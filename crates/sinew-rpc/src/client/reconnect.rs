//! [`Reconnect`]: one connection to an endpoint, made and made again in the
//! background, with readiness that tells the truth about it.
//!
//! A building block for call services over a connection-oriented transport:
//! sinew's own [`Channel`](super::Channel) keeps a few of them (one per pooled
//! connection), and `sinew_grpc`'s client keeps one HTTP/2 connection in one.
//!
//! * A usable connection is handed out at once.
//! * Otherwise a connect starts in a task of its own (the slot's driver), and
//!   callers are woken when it ends: no caller ever blocks another on a
//!   connect, and dropping the last reference to the slot stops the driver (it
//!   holds only a weak one while it waits).
//! * A failed connect starts a backoff (exponential from `backoff_base` to
//!   `backoff_max`, with up to 20% jitter so that many clients do not reconnect
//!   in lockstep). While it lasts, a fail-fast slot answers with the failure
//!   (`UNAVAILABLE`, marked not processed); a wait-for-ready slot stays pending
//!   and its driver connects again when the backoff ends, for as long as
//!   someone waits. Neither ever hands out a dead connection.

use crate::status::Status;
use futures_util::future::BoxFuture;
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::task::{Context, Poll, Waker};
use std::time::Duration;
use tokio::time::Instant;

/// Makes the connections of a [`Reconnect`] slot.
pub trait Connect: Send + Sync + 'static {
    /// A connection: a cheap handle shared by the calls that use it.
    type Connection: Clone + Send + Sync + 'static;

    /// Makes a new connection (within whatever timeout the connector applies).
    fn connect(&self) -> BoxFuture<'_, Result<Self::Connection, Status>>;

    /// Whether `connection` can still take new calls (alive, no GOAWAY).
    fn is_usable(&self, connection: &Self::Connection) -> bool;

    /// Called when the slot lets go of a connection because the slot itself is
    /// dropped: close it once its calls are done. (Dropping it is the default.)
    fn close(&self, connection: Self::Connection) {
        drop(connection);
    }
}

/// How a [`Reconnect`] slot waits between connects, and what callers get
/// meanwhile.
#[derive(Clone, Copy, Debug)]
pub struct ReconnectPolicy {
    /// The first wait after a failed connect (default 100 ms).
    pub backoff_base: Duration,
    /// The longest wait (default 5 s).
    pub backoff_max: Duration,
    /// Whether callers wait through a backoff (pending) rather than get its
    /// failure at once (default false: fail fast, as gRPC does).
    pub wait_for_ready: bool,
}

impl Default for ReconnectPolicy {
    fn default() -> Self {
        ReconnectPolicy {
            backoff_base: Duration::from_millis(100),
            backoff_max: Duration::from_secs(5),
            wait_for_ready: false,
        }
    }
}

/// One connection slot: see the module docs.
pub struct Reconnect<K: Connect> {
    connector: K,
    policy: ReconnectPolicy,
    state: Mutex<SlotState<K::Connection>>,
}

struct SlotState<C> {
    /// The connection, once made (it may have become unusable since).
    connection: Option<C>,
    /// A driver task is connecting, or waiting out a backoff to connect again.
    driving: bool,
    backoff: Backoff,
    /// Tasks to wake when the slot's state changes.
    waiters: Vec<Waker>,
}

#[derive(Default)]
struct Backoff {
    failures: u32,
    retry_at: Option<Instant>,
    last_error: Option<Status>,
}

impl Backoff {
    /// The failure to report while backing off; `None` once it is over.
    fn failure(&self, now: Instant) -> Option<Status> {
        let (retry_at, error) = (self.retry_at?, self.last_error.as_ref()?);
        (now < retry_at).then(|| {
            Status::unavailable(format!(
                "{} (next attempt in {})",
                error.message(),
                human_duration(retry_at - now)
            ))
            .mark_not_processed()
        })
    }

    fn record(&mut self, error: Status, policy: &ReconnectPolicy) {
        self.failures = self.failures.saturating_add(1);
        let exponent = self.failures.min(16) - 1;
        let wait = policy
            .backoff_base
            .saturating_mul(1 << exponent)
            .min(policy.backoff_max.max(policy.backoff_base));
        let jitter = wait.mul_f64(0.2 * pseudo_random_fraction());
        self.retry_at = Some(Instant::now() + wait - jitter);
        self.last_error = Some(error);
    }
}

/// A duration as people write it: `80ms`, `1.5s`.
pub(crate) fn human_duration(duration: Duration) -> String {
    if duration < Duration::from_millis(1) {
        format!("{}us", duration.as_micros())
    } else if duration < Duration::from_secs(1) {
        format!("{}ms", duration.as_millis())
    } else {
        format!("{:.1}s", duration.as_secs_f64())
    }
}

impl<K: Connect> Reconnect<K> {
    /// A slot with no connection yet: the first [`Reconnect::poll_connection`]
    /// starts one.
    pub fn new(connector: K, policy: ReconnectPolicy) -> Arc<Reconnect<K>> {
        Arc::new(Reconnect {
            connector,
            policy,
            state: Mutex::new(SlotState {
                connection: None,
                driving: false,
                backoff: Backoff::default(),
                waiters: Vec::new(),
            }),
        })
    }

    /// The connector.
    pub fn connector(&self) -> &K {
        &self.connector
    }

    /// A usable connection; pending while one is being made (the task is woken
    /// when that ends); while backing off after a failed connect, its failure
    /// (fail fast) or pending (wait for ready).
    pub fn poll_connection(
        self: &Arc<Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Result<K::Connection, Status>> {
        self.poll(cx, self.policy.wait_for_ready)
    }

    /// A usable connection; pending while one is being made and while the
    /// slot backs off (it connects again when the backoff ends), whatever the
    /// policy says: for a watcher that waits for the endpoint to come back.
    pub fn poll_connection_waiting(self: &Arc<Self>, cx: &mut Context<'_>) -> Poll<K::Connection> {
        match self.poll(cx, true) {
            Poll::Ready(Ok(connection)) => Poll::Ready(connection),
            // Waiting never fails: a backoff is waited out.
            Poll::Ready(Err(_)) | Poll::Pending => Poll::Pending,
        }
    }

    fn poll(
        self: &Arc<Self>,
        cx: &mut Context<'_>,
        wait_for_ready: bool,
    ) -> Poll<Result<K::Connection, Status>> {
        let mut state = self.lock();
        if let Some(connection) = &state.connection {
            if self.connector.is_usable(connection) {
                return Poll::Ready(Ok(connection.clone()));
            }
            // Dead or going away: make a new one, at once (it worked before).
            state.connection = None;
        }
        if !state.driving {
            match state.backoff.failure(Instant::now()) {
                Some(status) if !wait_for_ready => return Poll::Ready(Err(status)),
                _ => {
                    state.driving = true;
                    tokio::spawn(drive(Arc::downgrade(self)));
                }
            }
        }
        if !state.waiters.iter().any(|w| w.will_wake(cx.waker())) {
            state.waiters.push(cx.waker().clone());
        }
        Poll::Pending
    }

    /// The usable connection, if there is one now (no connect is started).
    pub fn connection(&self) -> Option<K::Connection> {
        let state = self.lock();
        state
            .connection
            .as_ref()
            .filter(|connection| self.connector.is_usable(connection))
            .cloned()
    }

    /// The error of the last failed connect, while the slot backs off from it.
    pub fn last_error(&self) -> Option<Status> {
        let state = self.lock();
        state.backoff.retry_at?;
        state.backoff.last_error.clone()
    }

    fn lock(&self) -> MutexGuard<'_, SlotState<K::Connection>> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl<K: Connect> Drop for Reconnect<K> {
    fn drop(&mut self) {
        let connection = self
            .state
            .get_mut()
            .unwrap_or_else(|e| e.into_inner())
            .connection
            .take();
        if let Some(connection) = connection {
            self.connector.close(connection);
        }
    }
}

impl<K: Connect> fmt::Debug for Reconnect<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = self.lock();
        f.debug_struct("Reconnect")
            .field("connected", &state.connection.is_some())
            .field("driving", &state.driving)
            .field("failures", &state.backoff.failures)
            .finish()
    }
}

/// A slot's driver: connects, and in a wait-for-ready slot keeps trying after
/// each backoff for as long as someone waits.
async fn drive<K: Connect>(slot: Weak<Reconnect<K>>) {
    loop {
        // Wait out a backoff first (only wait-for-ready slots start one in it).
        let retry_at = match slot.upgrade() {
            Some(slot) => slot.lock().backoff.retry_at,
            None => return,
        };
        if let Some(retry_at) = retry_at {
            tokio::time::sleep_until(retry_at).await;
        }
        let Some(strong) = slot.upgrade() else {
            return;
        };
        if retry_at.is_some() {
            let mut state = strong.lock();
            if state.waiters.is_empty() {
                // Nobody waits any more: the next caller starts a driver again.
                state.driving = false;
                return;
            }
        }
        let connected = strong.connector.connect().await;
        let mut state = strong.lock();
        let waiters = std::mem::take(&mut state.waiters);
        let done = match connected {
            Ok(connection) => {
                state.backoff = Backoff::default();
                state.connection = Some(connection);
                true
            }
            Err(status) => {
                tracing::debug!(%status, "connect failed");
                state.backoff.record(status, &strong.policy);
                !strong.policy.wait_for_ready
            }
        };
        if done {
            state.driving = false;
        }
        drop(state);
        for waker in waiters {
            waker.wake();
        }
        if done {
            return;
        }
    }
}

/// A number in [0, 1) that differs between calls; good enough for backoff jitter.
fn pseudo_random_fraction() -> f64 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    (hasher.finish() >> 11) as f64 / (1u64 << 53) as f64
}

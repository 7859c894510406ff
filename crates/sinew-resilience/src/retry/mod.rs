//! Retries as gRPC specifies them (gRFC A6): [`RetryPolicy`] says how many
//! attempts a call may make, which failures are worth another, and how long
//! to wait between them; [`RetryThrottling`] stops retries across a channel
//! when most calls fail, so that retries cannot multiply an outage.
//!
//! The rules, as the attempt loop (`future.rs`) applies them:
//!
//! * A call commits when its response begins (headers, or the first
//!   message): after that it is never sent again. Only a failure before
//!   that (a status alone) is retried.
//! * A failure marked *not processed* (the request never reached a server's
//!   handler: refused at a connect, a GOAWAY, a full stream table) is sent
//!   again at once, once, without counting as an attempt (A6's transparent
//!   retry).
//! * Otherwise a failure whose code is retryable is tried again after a
//!   backoff: the n-th retry waits a random time in `[0, min(initial *
//!   multiplier^(n-1), max))` (full jitter). A server that answers with
//!   `grpc-retry-pushback-ms` sets the wait instead (and the backoff starts
//!   over); a pushback that is negative or not a number means do not retry.
//! * No retry after `max_attempts` attempts, when the throttle says no, or
//!   when the wait would end past the call's deadline (the deadline covers
//!   every attempt).
//! * Each retry carries `grpc-previous-rpc-attempts` (the attempts before
//!   it), and asks the balancer below for another endpoint than the attempt
//!   that failed ([`sinew_rpc::call::Attempts`]).
//! * A streaming request is kept (up to the config's retry buffer,
//!   [`ConfigHandle::set_retry_buffer`](crate::ConfigHandle::set_retry_buffer))
//!   so that a retry sends it again from its first message (`replay.rs`);
//!   once its messages outgrow the buffer, the call is not retried.

mod future;
mod replay;
mod throttle;

pub(crate) use future::Retrying;
pub(crate) use replay::Replay;
pub use throttle::{RetryThrottle, RetryThrottling};

use crate::config::{CodeSet, MAX_ATTEMPTS_CAP};
use sinew_rpc::call::CallRequest;
use sinew_rpc::{Code, Status};
use std::time::Duration;

/// The metadata entry a server sets to say when to retry, in milliseconds
/// (or, negative or not a number, not to).
pub const PUSHBACK: &str = "grpc-retry-pushback-ms";

/// The metadata entry a retry or hedge carries: how many attempts of the
/// call were made before it.
pub const PREVIOUS_ATTEMPTS: &str = "grpc-previous-rpc-attempts";

/// How a method's failed calls are retried (gRPC's `retryPolicy`); see the
/// module docs.
#[derive(Clone, Debug, PartialEq)]
pub struct RetryPolicy {
    max_attempts: u32,
    initial_backoff: Duration,
    max_backoff: Duration,
    multiplier: f64,
    retryable: CodeSet,
}

impl RetryPolicy {
    /// Up to `max_attempts` attempts in all (the first included; 1 means
    /// none is retried, more than 5 count as 5, as in gRPC), retrying
    /// failures with a code of `retryable`; backoff from 100 ms, doubling,
    /// up to 1 s ([`RetryPolicy::backoff`] sets it).
    pub fn new(max_attempts: u32, retryable: impl IntoIterator<Item = Code>) -> RetryPolicy {
        RetryPolicy {
            max_attempts: max_attempts.clamp(1, MAX_ATTEMPTS_CAP),
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(1),
            multiplier: 2.0,
            retryable: CodeSet::from_codes(retryable),
        }
    }

    /// The policy for methods declared idempotent that have none of their
    /// own: 3 attempts, `UNAVAILABLE` retried (the server was down or went
    /// away), backoff from 100 ms, doubling, up to 1 s.
    pub fn for_idempotent() -> RetryPolicy {
        RetryPolicy::new(3, [Code::Unavailable])
    }

    /// The backoff: the first retry waits up to `initial`, each next one up
    /// to `multiplier` times longer, never more than `max`.
    pub fn backoff(mut self, initial: Duration, max: Duration, multiplier: f64) -> Self {
        self.initial_backoff = initial;
        self.max_backoff = max.max(initial);
        self.multiplier = if multiplier.is_finite() && multiplier > 0.0 {
            multiplier
        } else {
            1.0
        };
        self
    }

    /// Attempts at most, the first included.
    pub fn max_attempts(&self) -> u32 {
        self.max_attempts
    }

    /// The longest wait before the first retry.
    pub fn initial_backoff(&self) -> Duration {
        self.initial_backoff
    }

    /// The longest wait before any retry.
    pub fn max_backoff(&self) -> Duration {
        self.max_backoff
    }

    /// How much longer each next wait may be.
    pub fn backoff_multiplier(&self) -> f64 {
        self.multiplier
    }

    /// Whether a failure with `code` may be retried.
    pub fn is_retryable(&self, code: Code) -> bool {
        self.retryable.contains(code)
    }

    /// The wait before a retry, the `retry`-th (from 0) since the call began
    /// or since the last pushback: random in `[0, cap)` (full jitter).
    pub(crate) fn delay(&self, retry: u32) -> Duration {
        let cap = self.initial_backoff.as_secs_f64() * self.multiplier.powi(retry as i32);
        let cap = cap.min(self.max_backoff.as_secs_f64());
        Duration::from_secs_f64(cap * fastrand::f64())
    }
}

/// The request of a call's next attempt (a retry or a hedge): a copy of
/// `spare` (with the replay's next body, for a streaming request) saying
/// how many attempts were `sent` before it, which counts it.
pub(crate) fn next_attempt(
    spare: &CallRequest,
    replay: Option<&Replay>,
    sent: &mut u32,
) -> CallRequest {
    let mut request = match replay {
        Some(replay) => spare.with_body(replay.next_body()),
        None => spare
            .try_clone()
            .expect("a single-message request or a replay"),
    };
    if *sent > 0 {
        // The count is a number: always valid metadata.
        let _ = request
            .metadata_mut()
            .insert(PREVIOUS_ATTEMPTS, &sent.to_string());
    }
    *sent += 1;
    request
}

/// What a failed call's status says about retrying it: `None` without a
/// pushback; `Some(None)` for "do not retry"; `Some(Some(wait))` for
/// "retry after `wait`".
pub(crate) fn pushback(status: &Status) -> Option<Option<Duration>> {
    let value = status.metadata().get(PUSHBACK)?;
    Some(value.trim().parse::<u64>().ok().map(Duration::from_millis))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_backoff_is_full_jitter_under_a_cap_that_grows_to_the_max() {
        let policy = RetryPolicy::new(5, [Code::Unavailable]).backoff(
            Duration::from_millis(100),
            Duration::from_millis(350),
            2.0,
        );
        for (retry, cap_ms) in [(0, 100.0), (1, 200.0), (2, 350.0), (3, 350.0)] {
            let waits: Vec<f64> = (0..2000)
                .map(|_| policy.delay(retry).as_secs_f64() * 1000.0)
                .collect();
            let max = waits.iter().cloned().fold(0.0, f64::max);
            let mean = waits.iter().sum::<f64>() / waits.len() as f64;
            assert!(max < cap_ms, "retry {retry}: {max} >= {cap_ms}");
            // Uniform on [0, cap): mean cap/2 (standard error ~0.6% of cap).
            assert!(
                (mean / cap_ms - 0.5).abs() < 0.03,
                "retry {retry}: mean {mean}"
            );
            assert!(
                max > cap_ms * 0.95,
                "retry {retry}: the top of the range is reached"
            );
        }
    }

    #[test]
    fn attempts_are_between_one_and_five() {
        assert_eq!(RetryPolicy::new(0, [Code::Unavailable]).max_attempts(), 1);
        assert_eq!(RetryPolicy::new(9, [Code::Unavailable]).max_attempts(), 5);
        let policy = RetryPolicy::new(3, [Code::Unavailable, Code::Aborted]);
        assert!(policy.is_retryable(Code::Aborted));
        assert!(!policy.is_retryable(Code::Internal));
    }

    #[test]
    fn pushback_is_a_wait_or_a_refusal() {
        let mut status = Status::unavailable("busy");
        assert_eq!(pushback(&status), None);
        status.metadata_mut().insert(PUSHBACK, "250").unwrap();
        assert_eq!(pushback(&status), Some(Some(Duration::from_millis(250))));
        for refusal in ["-1", "soon", ""] {
            let mut status = Status::unavailable("busy");
            status.metadata_mut().insert(PUSHBACK, refusal).unwrap();
            assert_eq!(pushback(&status), Some(None), "{refusal:?}");
        }
    }
}

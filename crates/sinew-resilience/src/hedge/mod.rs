//! Hedging as gRPC specifies it (gRFC A6): when a call is slow, send a
//! copy to another endpoint and take whichever answers first.
//!
//! The rules, as the attempt loop (`future.rs`) applies them:
//!
//! * The first attempt goes at once; while no response has begun, another
//!   copy goes every `delay` (to another endpoint than the last copy's,
//!   when the balancer below has one), up to `max_attempts` copies.
//! * The first response to begin wins and commits the call; the other
//!   copies are dropped, which cancels them on their servers (sinew sends
//!   RESET CANCELLED, gRPC RST_STREAM).
//! * A copy failing with a *non-fatal* code, or not processed (no server
//!   saw it), does not end the call: the next copy goes at once instead of
//!   after the delay (or, if the server sent
//!   `grpc-retry-pushback-ms`, after that wait; a negative one stops the
//!   hedging). A copy failing with any other code ends the call with that
//!   failure. When every copy failed, the call fails with the last failure.
//! * The channel's retry throttle counts each non-fatal failure and stops
//!   new copies when it says so, as it stops retries.
//! * Each copy after the first carries `grpc-previous-rpc-attempts`.
//! * Requests of one message only: a streaming request is sent once (its
//!   retries replay it, `retry/replay.rs`; copies in flight together
//!   would each need the whole stream at once).
//!
//! Hedge only methods that are safe to run twice (idempotent, or without
//! side effects): the servers of the losing copies may have done the work.

mod future;

pub(crate) use future::Hedging;

use crate::config::{CodeSet, ConfigError, MAX_ATTEMPTS_CAP};
use sinew_rpc::Code;
use std::time::Duration;

/// gRPC's hedging policy: up to `max_attempts` copies of a call, one more
/// every `delay` until one answers; the first answer wins.
#[derive(Clone, Debug, PartialEq)]
pub struct HedgingPolicy {
    max_attempts: u32,
    delay: Duration,
    non_fatal: CodeSet,
}

impl HedgingPolicy {
    /// Up to `max_attempts` (2 to 5; more count as 5) copies, one every
    /// `delay`; a copy failing with a code of `non_fatal` does not end the
    /// call while others may still answer.
    pub fn new(
        max_attempts: u32,
        delay: Duration,
        non_fatal: impl IntoIterator<Item = Code>,
    ) -> Result<HedgingPolicy, ConfigError> {
        if max_attempts < 2 {
            return Err(ConfigError::new(format!(
                "hedgingPolicy.maxAttempts is {max_attempts}; it must be at least 2"
            )));
        }
        Ok(HedgingPolicy {
            max_attempts: max_attempts.min(MAX_ATTEMPTS_CAP),
            delay,
            non_fatal: CodeSet::from_codes(non_fatal),
        })
    }

    /// Copies at most.
    pub fn max_attempts(&self) -> u32 {
        self.max_attempts
    }

    /// Time between copies.
    pub fn delay(&self) -> Duration {
        self.delay
    }

    /// Whether a copy failing with `code` leaves the others running.
    pub fn is_non_fatal(&self, code: Code) -> bool {
        self.non_fatal.contains(code)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hedging_policy_has_two_to_five_copies() {
        assert!(HedgingPolicy::new(1, Duration::ZERO, []).is_err());
        let policy = HedgingPolicy::new(8, Duration::from_millis(5), [Code::Unavailable]).unwrap();
        assert_eq!(policy.max_attempts(), 5);
        assert_eq!(policy.delay(), Duration::from_millis(5));
        assert!(policy.is_non_fatal(Code::Unavailable));
        assert!(!policy.is_non_fatal(Code::Internal));
    }
}

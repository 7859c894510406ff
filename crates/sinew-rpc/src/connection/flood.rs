//! [`FloodGuard`]: a budget for the frames a peer sends that do no work for
//! any call, so that a flood of them ends the connection instead of keeping a
//! core busy.
//!
//! Some frames cost the receiver work without moving a call forward: a PING
//! (which must be answered), and RESET, HALF_CLOSE or WINDOW_UPDATE for a
//! stream that is already gone. A few of them are normal (keepalive pings,
//! frames crossing a stream's end on the wire), so each one spends a token
//! from a bucket instead of being an error outright. The bucket holds
//! [`BURST`] tokens and refills with time ([`PER_SECOND`]) and with every
//! stream opened (a frame for a closed stream is at most one per stream that
//! existed). A peer that empties it gets GOAWAY `ENHANCE_YOUR_CALM`, as
//! `docs/protocol.md` (section 4) says, and the connection closes.
//!
//! Frames that are never legitimate (a second HALF_CLOSE on a stream, frames
//! on streams never opened) are protocol errors on their own and need no budget.

use sinew_wire::{Reason, WireError};
use std::time::Instant;

/// Tokens the bucket holds: the burst of no-work frames a peer may send.
pub(crate) const BURST: u32 = 10_000;
/// Tokens added per second of connection life.
pub(crate) const PER_SECOND: u32 = 1_000;

/// The budget of one connection.
#[derive(Debug)]
pub(crate) struct FloodGuard {
    tokens: u32,
    /// When tokens were last added for elapsed time.
    refilled: Instant,
}

impl FloodGuard {
    pub(crate) fn new() -> FloodGuard {
        FloodGuard {
            tokens: BURST,
            refilled: Instant::now(),
        }
    }

    /// A stream was opened: one more frame for it may come after it closes.
    pub(crate) fn earn(&mut self) {
        self.tokens = (self.tokens + 1).min(BURST);
    }

    /// Spends a token on a frame that did no work (`what`, for the GOAWAY);
    /// an `ENHANCE_YOUR_CALM` connection error when none is left.
    pub(crate) fn spend<T>(&mut self, what: &str) -> Result<Option<T>, WireError> {
        if self.tokens == 0 {
            self.refill(Instant::now());
        }
        match self.tokens.checked_sub(1) {
            Some(left) => {
                self.tokens = left;
                Ok(None)
            }
            None => Err(WireError::new(
                Reason::EnhanceYourCalm,
                format!(
                    "too many frames that do no work ({what}): more than {BURST} at once \
                     or {PER_SECOND} a second"
                ),
            )),
        }
    }

    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.refilled);
        let earned = elapsed.as_millis() * u128::from(PER_SECOND) / 1000;
        if earned > 0 {
            self.tokens = u32::try_from(earned).unwrap_or(BURST).min(BURST);
            self.refilled = now;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_burst_passes_then_the_rate_holds() {
        let mut guard = FloodGuard::new();
        let start = guard.refilled;
        for _ in 0..BURST {
            assert!(guard.spend::<()>("PING").is_ok());
        }
        let error = guard.spend::<()>("PING").unwrap_err();
        assert_eq!(error.reason(), Reason::EnhanceYourCalm);
        assert!(error.message().contains("PING"), "{error}");
        // A tenth of a second later, a tenth of a second's worth.
        guard.refill(start + Duration::from_millis(100));
        for _ in 0..PER_SECOND / 10 {
            assert!(guard.spend::<()>("PING").is_ok());
        }
        assert!(guard.spend::<()>("PING").is_err());
        // Opening streams earns tokens too, up to the burst.
        guard.earn();
        assert!(guard.spend::<()>("RESET of a closed stream").is_ok());
        for _ in 0..2 * BURST {
            guard.earn();
        }
        assert_eq!(guard.tokens, BURST);
    }
}

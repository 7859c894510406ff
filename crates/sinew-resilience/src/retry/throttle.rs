//! [`RetryThrottle`]: gRPC's retry throttling (A6), a token bucket per
//! channel. Every failure with a retryable code takes a token, every success
//! gives back `token_ratio` of one; while half the tokens or fewer are left,
//! nothing is retried or hedged. In a healthy channel the bucket stays
//! full; when most calls fail, retries stop until calls succeed again, so
//! that retries cannot turn an outage into an overload.

use crate::config::ConfigError;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// Tokens are kept in thousandths, as gRPC keeps them (`tokenRatio` has
/// three decimals).
const MILLI: u64 = 1000;

/// The settings of a [`RetryThrottle`] (gRPC's `retryThrottling`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RetryThrottling {
    max_tokens: u32,
    token_ratio: f64,
}

impl RetryThrottling {
    /// `max_tokens` (1 to 1000) tokens, `token_ratio` (above 0) of one given
    /// back by each success.
    pub fn new(max_tokens: u32, token_ratio: f64) -> Result<RetryThrottling, ConfigError> {
        if !(1..=1000).contains(&max_tokens) {
            return Err(ConfigError::new(format!(
                "retryThrottling.maxTokens is {max_tokens}; it must be 1 to 1000"
            )));
        }
        if !(token_ratio.is_finite() && token_ratio > 0.0) {
            return Err(ConfigError::new(format!(
                "retryThrottling.tokenRatio is {token_ratio}; it must be above 0"
            )));
        }
        Ok(RetryThrottling {
            max_tokens,
            token_ratio,
        })
    }

    /// Tokens when full.
    pub fn max_tokens(&self) -> u32 {
        self.max_tokens
    }

    /// The share of a token each success gives back.
    pub fn token_ratio(&self) -> f64 {
        self.token_ratio
    }
}

/// A channel's retry throttle; cheap to clone (clones share the bucket).
#[derive(Clone, Debug)]
pub struct RetryThrottle {
    shared: Arc<Bucket>,
}

#[derive(Debug)]
struct Bucket {
    settings: RetryThrottling,
    max: u64,
    ratio: u64,
    /// Thousandths of a token.
    tokens: AtomicU64,
}

impl RetryThrottle {
    /// A full bucket.
    pub fn new(settings: RetryThrottling) -> RetryThrottle {
        let max = u64::from(settings.max_tokens) * MILLI;
        RetryThrottle {
            shared: Arc::new(Bucket {
                settings,
                max,
                ratio: ((settings.token_ratio * MILLI as f64) as u64).max(1),
                tokens: AtomicU64::new(max),
            }),
        }
    }

    /// The settings it was made with.
    pub fn settings(&self) -> RetryThrottling {
        self.shared.settings
    }

    /// Tokens left now.
    pub fn tokens(&self) -> f64 {
        self.shared.tokens.load(Ordering::Relaxed) as f64 / MILLI as f64
    }

    /// Whether a retry or a hedge may be sent now: more than half the
    /// tokens are left.
    pub fn allows_retry(&self) -> bool {
        self.shared.tokens.load(Ordering::Relaxed) * 2 > self.shared.max
    }

    /// A call failed with a retryable code: one token less.
    pub fn failed(&self) {
        let _ = self
            .shared
            .tokens
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |tokens| {
                Some(tokens.saturating_sub(MILLI))
            });
    }

    /// A call succeeded: `token_ratio` of a token more, up to the maximum.
    pub fn succeeded(&self) {
        let shared = &*self.shared;
        if shared.tokens.load(Ordering::Relaxed) >= shared.max {
            // The common case in a healthy channel: nothing to write.
            return;
        }
        let _ = shared
            .tokens
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |tokens| {
                Some((tokens + shared.ratio).min(shared.max))
            });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_stop_at_half_the_tokens_and_come_back_with_successes() {
        let throttle = RetryThrottle::new(RetryThrottling::new(10, 0.1).unwrap());
        assert!(throttle.allows_retry());
        for _ in 0..4 {
            throttle.failed();
        }
        assert_eq!(throttle.tokens(), 6.0);
        assert!(throttle.allows_retry());
        throttle.failed();
        assert_eq!(throttle.tokens(), 5.0);
        assert!(!throttle.allows_retry(), "5 of 10 is not more than half");
        // Ten successes give one token back.
        for _ in 0..10 {
            throttle.succeeded();
        }
        assert_eq!(throttle.tokens(), 6.0);
        assert!(throttle.allows_retry());
        // Never below zero, never above the maximum.
        for _ in 0..50 {
            throttle.failed();
        }
        assert_eq!(throttle.tokens(), 0.0);
        for _ in 0..500 {
            throttle.succeeded();
        }
        assert_eq!(throttle.tokens(), 10.0);
    }

    #[test]
    fn settings_out_of_range_are_refused() {
        assert!(RetryThrottling::new(0, 0.1).is_err());
        assert!(RetryThrottling::new(1001, 0.1).is_err());
        assert!(RetryThrottling::new(10, 0.0).is_err());
        assert!(RetryThrottling::new(10, f64::NAN).is_err());
        assert!(RetryThrottling::new(1000, 0.001).is_ok());
    }
}

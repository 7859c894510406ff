//! The most recent slow and failed calls, with their trace ids: what an
//! operator looks at first.
//!
//! A bounded ring: the newest calls (100 by default,
//! [`TelemetryBuilder::recent_calls`](crate::TelemetryBuilder::recent_calls)) that failed
//! or took longer than the slow threshold, on either side. Calls that
//! succeed in time cost nothing here.

use crate::trace::TraceId;
use sinew_wire::Code;
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

/// Which side of a call recorded it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    /// This process served the call.
    Server,
    /// This process made the call.
    Client,
}

impl Side {
    /// `server` or `client`.
    pub fn as_str(self) -> &'static str {
        match self {
            Side::Server => "server",
            Side::Client => "client",
        }
    }
}

/// One slow or failed call.
#[derive(Clone, Debug)]
pub struct RecentCall {
    /// When it ended.
    pub ended: SystemTime,
    /// Served or made.
    pub side: Side,
    /// `package.Service/Method` (`_OTHER` for a path no service offers).
    pub method: Arc<str>,
    /// The protocol (server side) or the target (client side).
    pub peer: Arc<str>,
    /// How it ended.
    pub code: Code,
    /// The status message, cut at 256 bytes.
    pub message: String,
    /// How long it took.
    pub duration: Duration,
    /// The trace it belongs to.
    pub trace_id: TraceId,
}

/// The ring of recent slow and failed calls.
#[derive(Debug)]
pub(crate) struct RecentCalls {
    slow: Duration,
    capacity: usize,
    calls: Mutex<VecDeque<RecentCall>>,
}

/// Longest status message kept.
const MESSAGE_BYTES: usize = 256;

impl RecentCalls {
    pub(crate) fn new(slow: Duration, capacity: usize) -> RecentCalls {
        RecentCalls {
            slow,
            capacity,
            calls: Mutex::new(VecDeque::with_capacity(capacity.min(1024))),
        }
    }

    /// Whether a call that ended so is kept.
    pub(crate) fn wants(&self, code: Code, duration: Duration) -> bool {
        self.capacity > 0 && (code != Code::Ok || duration >= self.slow)
    }

    /// Keeps `call` (the caller checked [`RecentCalls::wants`]).
    pub(crate) fn push(&self, mut call: RecentCall) {
        if call.message.len() > MESSAGE_BYTES {
            let mut cut = MESSAGE_BYTES;
            while !call.message.is_char_boundary(cut) {
                cut -= 1;
            }
            call.message.truncate(cut);
        }
        let mut calls = self
            .calls
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        if calls.len() == self.capacity {
            calls.pop_front();
        }
        calls.push_back(call);
    }

    /// Newest first.
    pub(crate) fn list(&self) -> Vec<RecentCall> {
        let calls = self
            .calls
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        calls.iter().rev().cloned().collect()
    }

    pub(crate) fn slow_threshold(&self) -> Duration {
        self.slow
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(code: Code, message: &str) -> RecentCall {
        RecentCall {
            ended: SystemTime::now(),
            side: Side::Server,
            method: Arc::from("a.B/C"),
            peer: Arc::from("sinew"),
            code,
            message: message.to_string(),
            duration: Duration::from_millis(1),
            trace_id: TraceId::random(),
        }
    }

    #[test]
    fn keeps_the_newest_failures_and_slow_calls() {
        let recent = RecentCalls::new(Duration::from_millis(100), 2);
        assert!(!recent.wants(Code::Ok, Duration::from_millis(99)));
        assert!(recent.wants(Code::Ok, Duration::from_millis(100)));
        assert!(recent.wants(Code::Unavailable, Duration::ZERO));
        recent.push(call(Code::Internal, "first"));
        recent.push(call(Code::Internal, "second"));
        recent.push(call(Code::Internal, &"é".repeat(200)));
        let list = recent.list();
        assert_eq!(list.len(), 2);
        assert_eq!(list[1].message, "second");
        assert_eq!(list[0].message.len(), 256);
    }
}

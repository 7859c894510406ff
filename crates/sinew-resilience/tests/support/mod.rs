//! What the tests of live service configs share: a config with one
//! timeout, and a wait until a handle has it in force.

use sinew_resilience::ConfigHandle;
use std::time::Duration;

/// A service config whose only setting is `timeout` for every method.
pub(crate) fn config(timeout: &str) -> String {
    format!(r#"{{"methodConfig": [{{"name": [{{}}], "timeout": "{timeout}"}}]}}"#)
}

/// The timeout `handle`'s config in force gives a method.
pub(crate) fn timeout(handle: &ConfigHandle) -> Option<Duration> {
    handle.get().method_config("/a.B/C")?.timeout_value()
}

/// Waits (5 s at most) until `handle`'s config gives `expected`.
pub(crate) async fn until(handle: &ConfigHandle, expected: Option<Duration>) {
    for _ in 0..500 {
        if timeout(handle) == expected {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!(
        "the config in force has timeout {:?}, not {expected:?}",
        timeout(handle)
    );
}

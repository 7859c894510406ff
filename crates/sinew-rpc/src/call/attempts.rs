//! [`Attempts`]: what the attempts of one call share with the services
//! below the layer that makes them (a retrying or hedging layer above a
//! balancer): where the last attempt went, so that the next goes elsewhere.

use std::any::Any;
use std::fmt;
use std::sync::{Arc, Mutex};

/// A request extension that the attempts of one call share (copies of the
/// request share it too). A service that picks an endpoint for each call (a
/// balancer) records its pick here, and for a later attempt of the same
/// call prefers another endpoint than the one recorded, when one is ready:
/// a retry does not go back to the endpoint that just failed it.
///
/// The recorded value is the picker's own (an endpoint's state, say), kept
/// as `Any`: only the picker reads it back.
#[derive(Clone, Default)]
pub struct Attempts {
    last: Arc<Mutex<Option<Arc<dyn Any + Send + Sync>>>>,
}

impl Attempts {
    /// Nothing recorded yet.
    pub fn new() -> Attempts {
        Attempts::default()
    }

    /// Records where an attempt went.
    pub fn record<T: Any + Send + Sync>(&self, target: Arc<T>) {
        *self.lock() = Some(target);
    }

    /// Where the last attempt went, if a picker of type `T` recorded it.
    pub fn last<T: Any + Send + Sync>(&self) -> Option<Arc<T>> {
        self.lock().clone()?.downcast().ok()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Arc<dyn Any + Send + Sync>>> {
        // A panic while the slot was held cannot leave it half-written.
        self.last
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }
}

impl fmt::Debug for Attempts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Attempts")
            .field("recorded", &self.lock().is_some())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copies_share_the_last_pick_and_only_its_type_reads_it() {
        let attempts = Attempts::new();
        let copy = attempts.clone();
        assert!(copy.last::<String>().is_none());
        attempts.record(Arc::new("endpoint-1".to_owned()));
        assert_eq!(
            copy.last::<String>().as_deref().map(String::as_str),
            Some("endpoint-1")
        );
        assert!(
            copy.last::<u32>().is_none(),
            "another picker's record is not read"
        );
    }
}

//! What the attempts of one call share with the services below the layer
//! that makes them (a retrying or hedging layer above a balancer): where an
//! attempt went ([`Destination`]), so that the next goes elsewhere.
//!
//! A picker (a balancer) marks the failure of an attempt with the
//! destination it picked ([`Status::destination`](crate::Status::destination));
//! a retry carries it to the picker in an [`Attempts`] extension, which the
//! picker reads to avoid that destination. Copies of a call in flight
//! together (hedges) share one [`Attempts`], where the picker records each
//! pick. Calls that are never sent again carry nothing and cost nothing.

use std::any::Any;
use std::fmt;
use std::sync::{Arc, Mutex};

/// Where an attempt of a call went, as the picker that sent it there marks
/// it (a balancer's endpoint), opaque to everyone else: only that picker
/// reads it back ([`Destination::get`]).
#[derive(Clone)]
pub struct Destination(Arc<dyn Any + Send + Sync>);

impl Destination {
    /// The destination `target`, the picker's own value.
    pub fn new<T: Any + Send + Sync>(target: Arc<T>) -> Destination {
        Destination(target)
    }

    /// The picker's value, if it is of type `T`.
    pub fn get<T: Any + Send + Sync>(&self) -> Option<Arc<T>> {
        self.0.clone().downcast().ok()
    }
}

impl fmt::Debug for Destination {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Destination")
    }
}

/// A request extension for an attempt after the first (a retry, a hedge):
/// where the last attempt of the same call went, so that a picker prefers
/// another destination when one is ready. Copies of the request share it,
/// and a picker records its own picks in it (hedges in flight together
/// then spread over as many destinations).
#[derive(Clone, Default)]
pub struct Attempts {
    last: Arc<Mutex<Option<Destination>>>,
}

impl Attempts {
    /// Nothing recorded yet.
    pub fn new() -> Attempts {
        Attempts::default()
    }

    /// Attempts of a call whose last attempt went to `destination`.
    pub fn after(destination: Destination) -> Attempts {
        Attempts {
            last: Arc::new(Mutex::new(Some(destination))),
        }
    }

    /// Records where an attempt went.
    pub fn record(&self, destination: Destination) {
        *self.lock() = Some(destination);
    }

    /// Where the last attempt went, if recorded.
    pub fn last(&self) -> Option<Destination> {
        self.lock().clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Destination>> {
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
        assert!(copy.last().is_none());
        attempts.record(Destination::new(Arc::new("endpoint-1".to_owned())));
        let last = copy.last().unwrap();
        assert_eq!(
            last.get::<String>().as_deref().map(String::as_str),
            Some("endpoint-1")
        );
        assert!(
            last.get::<u32>().is_none(),
            "another picker's mark is not read"
        );
        let after = Attempts::after(Destination::new(Arc::new(7u32)));
        assert_eq!(after.last().unwrap().get::<u32>().as_deref(), Some(&7));
    }
}

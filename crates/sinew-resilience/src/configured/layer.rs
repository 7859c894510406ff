//! [`ServiceConfigLayer`]: wraps a call service in [`Configured`].

use super::{ConfigHandle, Configured};
use crate::config::{MethodConfig, MethodName, ServiceConfig};
use crate::retry::RetryPolicy;
use tower::Layer;

/// Applies a service config to every call of the service it wraps
/// ([`Configured`]); cheap to clone, and every service it made follows the
/// same [`ConfigHandle`].
#[derive(Clone, Debug)]
pub struct ServiceConfigLayer {
    config: ConfigHandle,
}

impl ServiceConfigLayer {
    /// A layer that applies `config`.
    pub fn new(config: ServiceConfig) -> ServiceConfigLayer {
        ServiceConfigLayer::with_handle(ConfigHandle::new(config))
    }

    /// A layer that applies the config `handle` holds, as it changes.
    pub fn with_handle(handle: ConfigHandle) -> ServiceConfigLayer {
        ServiceConfigLayer { config: handle }
    }

    /// A layer that retries the calls of every method under `policy`.
    pub fn retry_all(policy: RetryPolicy) -> ServiceConfigLayer {
        let all = MethodConfig::new([MethodName::all()]).retry(policy);
        let config = ServiceConfig::new()
            .with_method(all)
            .expect("one method config names nothing twice");
        ServiceConfigLayer::new(config)
    }

    /// The handle that replaces the config.
    pub fn handle(&self) -> &ConfigHandle {
        &self.config
    }
}

impl<S> Layer<S> for ServiceConfigLayer {
    type Service = Configured<S>;

    fn layer(&self, inner: S) -> Configured<S> {
        Configured::new(inner, self.config.clone())
    }
}

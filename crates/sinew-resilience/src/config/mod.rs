//! [`ServiceConfig`]: per-method call policies, written as gRPC service
//! configs are (the JSON that grpc-go, grpc-java and grpc-core accept), or
//! built in code.
//!
//! A service config holds method configs, each for a list of names: a method
//! (`{"service": "pkg.Svc", "method": "M"}`), every method of a service
//! (`{"service": "pkg.Svc"}`), or every method (`{}`); a call takes the most
//! specific one that names it. A method config sets the call's timeout, its
//! retry or hedging policy, whether it waits for a ready endpoint, and the
//! largest request and response messages. `retryThrottling` bounds the
//! retries of the whole channel; `loadBalancingConfig` names the balancing
//! policies in order of preference.
//!
//! Parsing checks what gRPC checks (a config gRPC rejects is rejected here,
//! with the field named): retry policies need `maxAttempts` of at least 2,
//! positive backoffs and multiplier, and at least one retryable code; a
//! method config has a retry or a hedging policy, not both; a name is in one
//! method config only. `maxAttempts` above 5 counts as 5, as in gRPC. What
//! this module does not do: apply the config. [`ServiceConfigLayer`]
//! (`crate::configured`) does, on every call.
//!
//! [`ServiceConfigLayer`]: crate::ServiceConfigLayer

mod json;

use crate::hedge::HedgingPolicy;
use crate::retry::{RetryPolicy, RetryThrottling};
use sinew_rpc::Code;
use std::collections::HashMap;
use std::fmt;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

pub use json::ConfigError;

/// Attempts above this many count as this many, as in gRPC.
pub const MAX_ATTEMPTS_CAP: u32 = 5;

/// Per-method call policies, as a gRPC service config sets them; see the
/// module docs.
#[derive(Clone)]
pub struct ServiceConfig {
    /// The method configs in the order given.
    methods: Vec<Arc<MethodConfig>>,
    /// By `/package.Service/Method`.
    by_method: HashMap<String, Arc<MethodConfig>>,
    /// By `package.Service`.
    by_service: HashMap<String, Arc<MethodConfig>>,
    /// For every method.
    default: Option<Arc<MethodConfig>>,
    retry_throttling: Option<RetryThrottling>,
    load_balancing: Vec<LoadBalancingConfig>,
    /// For idempotent methods that no retry or hedging policy names.
    idempotent_retry: Option<RetryPolicy>,
    /// Whether a method config says `waitForReady: true`.
    waits_for_ready: bool,
}

impl Default for ServiceConfig {
    fn default() -> ServiceConfig {
        ServiceConfig {
            methods: Vec::new(),
            by_method: HashMap::new(),
            by_service: HashMap::new(),
            default: None,
            retry_throttling: None,
            load_balancing: Vec::new(),
            idempotent_retry: Some(RetryPolicy::for_idempotent()),
            waits_for_ready: false,
        }
    }
}

impl ServiceConfig {
    /// An empty config: no policy for any method, but the default retries
    /// of idempotent ones ([`ServiceConfig::idempotent_retry`]).
    pub fn new() -> ServiceConfig {
        ServiceConfig::default()
    }

    /// How calls of methods whose `.proto` declares them idempotent (or
    /// free of side effects; [`sinew_rpc::call::Idempotency`]) are retried
    /// when no method config gives them a retry or hedging policy: by
    /// default [`RetryPolicy::for_idempotent`]; `None` for no retries.
    pub fn with_idempotent_retry(mut self, policy: Option<RetryPolicy>) -> ServiceConfig {
        self.idempotent_retry = policy;
        self
    }

    /// The retry policy of idempotent methods without one of their own.
    pub fn idempotent_retry(&self) -> Option<&RetryPolicy> {
        self.idempotent_retry.as_ref()
    }

    /// Parses a gRPC service config (JSON). Unknown fields are ignored, as
    /// gRPC does, so that configs written for newer gRPC versions load.
    pub fn from_json(text: &str) -> Result<ServiceConfig, ConfigError> {
        json::parse(text)
    }

    /// Reads and parses a service config file.
    pub fn from_file(path: impl AsRef<Path>) -> Result<ServiceConfig, ConfigError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|error| {
            ConfigError::new(format!("cannot read {}: {error}", path.display()))
        })?;
        ServiceConfig::from_json(&text)
    }

    /// Adds `config` for the methods it names. A name another method config
    /// already has is an error, as in a JSON config.
    pub fn with_method(mut self, config: MethodConfig) -> Result<ServiceConfig, ConfigError> {
        self.add(config)?;
        Ok(self)
    }

    /// Throttles the retries and hedges of every method together (gRPC's
    /// `retryThrottling`).
    pub fn with_retry_throttling(mut self, throttling: RetryThrottling) -> ServiceConfig {
        self.retry_throttling = Some(throttling);
        self
    }

    pub(crate) fn add(&mut self, config: MethodConfig) -> Result<(), ConfigError> {
        if config.retry.is_some() && config.hedging.is_some() {
            return Err(ConfigError::new(
                "a method config has both a retryPolicy and a hedgingPolicy; gRPC allows one",
            ));
        }
        let config = Arc::new(config);
        self.waits_for_ready |= config.wait_for_ready == Some(true);
        for name in &config.names {
            let taken = match (&name.service, &name.method) {
                (None, _) => self.default.replace(config.clone()).is_some(),
                (Some(service), None) => self
                    .by_service
                    .insert(service.clone(), config.clone())
                    .is_some(),
                (Some(service), Some(method)) => self
                    .by_method
                    .insert(format!("/{service}/{method}"), config.clone())
                    .is_some(),
            };
            if taken {
                return Err(ConfigError::new(format!(
                    "{name} is named by two method configs"
                )));
            }
        }
        self.methods.push(config);
        Ok(())
    }

    /// The method config for a call to `path` (`/package.Service/Method`):
    /// the method's own, else its service's, else the default, if any.
    pub fn method_config(&self, path: &str) -> Option<&Arc<MethodConfig>> {
        if self.methods.is_empty() {
            return None;
        }
        if let Some(config) = self.by_method.get(path) {
            return Some(config);
        }
        let service = path
            .strip_prefix('/')
            .and_then(|rest| rest.rsplit_once('/'))
            .map(|(service, _)| service);
        service
            .and_then(|service| self.by_service.get(service))
            .or(self.default.as_ref())
    }

    /// Whether some method config says `waitForReady: true`.
    pub fn waits_for_ready(&self) -> bool {
        self.waits_for_ready
    }

    /// The method configs, in the order given.
    pub fn method_configs(&self) -> impl Iterator<Item = &MethodConfig> {
        self.methods.iter().map(|config| &**config)
    }

    /// The retry throttling, if the config sets one.
    pub fn retry_throttling(&self) -> Option<RetryThrottling> {
        self.retry_throttling
    }

    /// The balancing policies the config names, most preferred first; a
    /// client uses the first it supports.
    pub fn load_balancing(&self) -> &[LoadBalancingConfig] {
        &self.load_balancing
    }
}

impl fmt::Debug for ServiceConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServiceConfig")
            .field("methods", &self.methods)
            .field("retry_throttling", &self.retry_throttling)
            .field("load_balancing", &self.load_balancing)
            .finish()
    }
}

/// The methods a method config applies to: one method, every method of a
/// service, or every method.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MethodName {
    service: Option<String>,
    method: Option<String>,
}

impl MethodName {
    /// Every method of every service.
    pub fn all() -> MethodName {
        MethodName {
            service: None,
            method: None,
        }
    }

    /// Every method of `service` (`package.Service`).
    pub fn service(service: impl Into<String>) -> MethodName {
        MethodName {
            service: Some(service.into()),
            method: None,
        }
    }

    /// One method of `service`.
    pub fn method(service: impl Into<String>, method: impl Into<String>) -> MethodName {
        MethodName {
            service: Some(service.into()),
            method: Some(method.into()),
        }
    }
}

impl fmt::Display for MethodName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.service, &self.method) {
            (None, _) => f.write_str("every method"),
            (Some(service), None) => write!(f, "service {service}"),
            (Some(service), Some(method)) => write!(f, "method /{service}/{method}"),
        }
    }
}

/// The policies of the methods a config names; see the module docs.
#[derive(Clone, Debug, Default)]
pub struct MethodConfig {
    names: Vec<MethodName>,
    timeout: Option<Duration>,
    wait_for_ready: Option<bool>,
    retry: Option<RetryPolicy>,
    hedging: Option<HedgingPolicy>,
    max_request_bytes: Option<usize>,
    max_response_bytes: Option<usize>,
}

impl MethodConfig {
    /// A method config for `names`, with no policy yet.
    pub fn new(names: impl IntoIterator<Item = MethodName>) -> MethodConfig {
        MethodConfig {
            names: names.into_iter().collect(),
            ..MethodConfig::default()
        }
    }

    /// The longest a call may take, all attempts together; a call whose own
    /// deadline is sooner keeps it.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// Retries failed calls ([`RetryPolicy`]). A method config has a retry
    /// policy or a hedging policy; the last one set wins.
    pub fn retry(mut self, policy: RetryPolicy) -> Self {
        self.retry = Some(policy);
        self.hedging = None;
        self
    }

    /// Hedges calls ([`HedgingPolicy`]): sends copies to other endpoints
    /// while the first is slow, and takes the first answer. A method config
    /// has a retry policy or a hedging policy; the last one set wins.
    pub fn hedging(mut self, policy: HedgingPolicy) -> Self {
        self.hedging = Some(policy);
        self.retry = None;
        self
    }

    /// Whether calls wait for a ready endpoint rather than fail at once when
    /// none is (gRPC's `waitForReady`).
    pub fn wait_for_ready(mut self, enabled: bool) -> Self {
        self.wait_for_ready = Some(enabled);
        self
    }

    /// Request messages larger than `bytes` fail with `RESOURCE_EXHAUSTED`
    /// before they are sent.
    pub fn max_request_bytes(mut self, bytes: usize) -> Self {
        self.max_request_bytes = Some(bytes);
        self
    }

    /// A response message larger than `bytes` ends the call with
    /// `RESOURCE_EXHAUSTED`.
    pub fn max_response_bytes(mut self, bytes: usize) -> Self {
        self.max_response_bytes = Some(bytes);
        self
    }

    /// The methods this config is for.
    pub fn names(&self) -> &[MethodName] {
        &self.names
    }

    /// The timeout, if set.
    pub fn timeout_value(&self) -> Option<Duration> {
        self.timeout
    }

    /// The retry policy, if set.
    pub fn retry_policy(&self) -> Option<&RetryPolicy> {
        self.retry.as_ref()
    }

    /// The hedging policy, if set.
    pub fn hedging_policy(&self) -> Option<&HedgingPolicy> {
        self.hedging.as_ref()
    }

    /// `waitForReady`, if set.
    pub fn wait_for_ready_value(&self) -> Option<bool> {
        self.wait_for_ready
    }

    /// The largest request message, if limited.
    pub fn max_request_bytes_value(&self) -> Option<usize> {
        self.max_request_bytes
    }

    /// The largest response message, if limited.
    pub fn max_response_bytes_value(&self) -> Option<usize> {
        self.max_response_bytes
    }
}

/// A balancing policy a config names (`loadBalancingConfig`): its name
/// (`round_robin`, `pick_first`, ...) and its settings as given.
#[derive(Clone, Debug, PartialEq)]
pub struct LoadBalancingConfig {
    /// The policy's name.
    pub name: String,
    /// Its settings (an empty object for most).
    pub settings: serde_json::Value,
}

/// A set of status codes, as one bit each.
#[derive(Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct CodeSet(u32);

impl CodeSet {
    pub(crate) fn from_codes(codes: impl IntoIterator<Item = Code>) -> CodeSet {
        CodeSet(
            codes
                .into_iter()
                .fold(0, |bits, code| bits | 1 << code.as_u32()),
        )
    }

    pub(crate) fn contains(self, code: Code) -> bool {
        self.0 & (1 << code.as_u32()) != 0
    }
}

impl fmt::Debug for CodeSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set()
            .entries(Code::ALL.iter().filter(|code| self.contains(**code)))
            .finish()
    }
}

#[cfg(test)]
mod tests;

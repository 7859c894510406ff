//! Per-route request counts: responses by status class and the time to
//! their heads, kept by route name across reloads, for the metrics of
//! `sinew-telemetry` (`sinew_gateway_route_*`).
//!
//! A route's name is its `name`, or its host and path (`api.example.com/v1/`,
//! `/v1/`); routes of the same name share their counts. Counting is a few
//! relaxed atomic additions per request.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// One route's counts.
#[derive(Debug, Default)]
pub(crate) struct RouteStats {
    /// Responses by class: 1xx, 2xx, 3xx, 4xx, 5xx.
    classes: [AtomicU64; 5],
    /// Microseconds from request to response head, summed (nanoseconds
    /// would wrap a u64 within months of busy, slow traffic).
    micros: AtomicU64,
}

impl RouteStats {
    /// Counts one response.
    pub(crate) fn record(&self, status: http::StatusCode, elapsed: Duration) {
        let class = usize::from(status.as_u16() / 100).clamp(1, 5) - 1;
        self.classes[class].fetch_add(1, Ordering::Relaxed);
        let micros = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
        self.micros.fetch_add(micros, Ordering::Relaxed);
    }
}

/// Every route's counts by name, for as long as the gateway lives.
#[derive(Debug, Default)]
pub(crate) struct Registry {
    routes: Mutex<BTreeMap<String, Arc<RouteStats>>>,
}

impl Registry {
    /// The counts of the route named `name`, kept from earlier tables.
    pub(crate) fn route(&self, name: &str) -> Arc<RouteStats> {
        crate::lock(&self.routes)
            .entry(name.to_owned())
            .or_default()
            .clone()
    }

    pub(crate) fn report(&self) -> Vec<RouteReport> {
        crate::lock(&self.routes)
            .iter()
            .map(|(name, stats)| {
                let responses =
                    std::array::from_fn(|class| stats.classes[class].load(Ordering::Relaxed));
                RouteReport {
                    route: name.clone(),
                    responses,
                    seconds: Duration::from_micros(stats.micros.load(Ordering::Relaxed))
                        .as_secs_f64(),
                }
            })
            .collect()
    }
}

/// One route's counts so far ([`Gateway::routes`](crate::Gateway::routes)).
#[derive(Clone, Debug, PartialEq)]
pub struct RouteReport {
    /// The route's name (its `name`, or its host and path).
    pub route: String,
    /// Responses by status class: `[1xx, 2xx, 3xx, 4xx, 5xx]`.
    pub responses: [u64; 5],
    /// Seconds from requests to their response heads, summed (divide by
    /// the responses for the mean).
    pub seconds: f64,
}

impl RouteReport {
    /// Every response counted.
    pub fn requests(&self) -> u64 {
        self.responses.iter().sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn responses_are_counted_by_class_and_kept_by_name() {
        let registry = Registry::default();
        let route = registry.route("/v1/");
        for status in [200, 204, 404, 503, 101, 302] {
            route.record(
                http::StatusCode::from_u16(status).unwrap(),
                Duration::from_millis(10),
            );
        }
        // A reload asks for the same name: the same counts.
        registry
            .route("/v1/")
            .record(http::StatusCode::OK, Duration::from_millis(10));
        let report = registry.report();
        assert_eq!(report.len(), 1);
        assert_eq!(report[0].responses, [1, 3, 1, 1, 1]);
        assert_eq!(report[0].requests(), 7);
        assert!((report[0].seconds - 0.07).abs() < 1e-9);
    }
}

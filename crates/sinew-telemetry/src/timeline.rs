//! Per-method figures over the last minutes, one point a second: what the
//! dashboard charts and `sinew top` shows.
//!
//! A sampler task (started with the admin endpoint, [`Timeline::spawn`])
//! reads every method's histograms each second and keeps the difference
//! from the second before as a [`Point`]: calls a second, the share that
//! failed, p50 and p99 of that second (interpolated in the histogram's
//! buckets, as Prometheus's `histogram_quantile` does). Each method keeps
//! [`HISTORY`] points; the call path is not touched.

use crate::metrics::{Metrics, Snapshot};
use serde::{Deserialize, Serialize, Serializer};
use sinew_wire::Code;
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Points kept per method: five minutes.
pub const HISTORY: usize = 300;

/// One method's second.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Point {
    /// The end of the second, in milliseconds since the Unix epoch.
    pub at: u64,
    /// Calls that ended in the second, per second.
    #[serde(serialize_with = "rounded")]
    pub qps: f64,
    /// The share of them that did not end OK (0 to 1).
    #[serde(serialize_with = "rounded")]
    pub errors: f64,
    /// Median duration, milliseconds (0 without calls).
    #[serde(serialize_with = "rounded")]
    pub p50_ms: f64,
    /// 99th percentile duration, milliseconds (0 without calls).
    #[serde(serialize_with = "rounded")]
    pub p99_ms: f64,
}

/// Four decimals are more than a chart shows, and a third of the bytes.
fn rounded<S: Serializer>(value: &f64, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_f64((value * 10_000.0).round() / 10_000.0)
}

/// Which side and method a series is for.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct SeriesKey {
    /// `server` or `client`.
    pub side: String,
    /// The protocol (server) or the target (client).
    pub peer: String,
    /// `package.Service/Method`, `_OTHER` or `other`.
    pub method: String,
}

/// One method's history and where it stands now.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Series {
    /// Which.
    #[serde(flatten)]
    pub key: SeriesKey,
    /// Calls in progress now (server side).
    pub in_flight: u64,
    /// Calls that ended since the process started.
    pub total: u64,
    /// Oldest first.
    pub points: Vec<Point>,
}

/// A method's per-status histograms at one moment.
type Durations = Vec<(Code, Snapshot)>;

#[derive(Debug)]
struct Tracked {
    last: Option<(Durations, SystemTime)>,
    points: VecDeque<Point>,
    in_flight: u64,
    total: u64,
}

/// The histories of a process's methods (see the module docs). Clones
/// share them.
#[derive(Clone, Debug, Default)]
pub struct Timeline {
    series: Arc<Mutex<HashMap<SeriesKey, Tracked>>>,
}

impl Timeline {
    /// Starts sampling `metrics` every second on the current runtime, for
    /// as long as a clone of the timeline lives.
    pub fn spawn(metrics: Metrics) -> Timeline {
        let timeline = Timeline::default();
        let weak = Arc::downgrade(&timeline.series);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(series) = weak.upgrade() else { return };
                Timeline { series }.sample(&metrics, SystemTime::now());
            }
        });
        timeline
    }

    /// Takes one second's points (the sampler's step; public for tests and
    /// for callers that sample on their own clock).
    pub fn sample(&self, metrics: &Metrics, now: SystemTime) {
        self.take(metrics, now, true);
    }

    /// Starts following the methods first called since the last sample
    /// (no point yet; their first comes with the next sample), so that a
    /// snapshot lists every method the metrics know.
    pub fn follow_new(&self, metrics: &Metrics) {
        self.take(metrics, SystemTime::now(), false);
    }

    fn take(&self, metrics: &Metrics, now: SystemTime, sample: bool) {
        let mut current: Vec<(SeriesKey, Durations, u64)> = Vec::new();
        for method in metrics.server_methods() {
            current.push((
                SeriesKey {
                    side: "server".to_owned(),
                    peer: method.system().to_owned(),
                    method: method.method().to_owned(),
                },
                method.durations(),
                method.in_flight(),
            ));
        }
        for target in metrics.client_targets() {
            for method in target.methods() {
                current.push((
                    SeriesKey {
                        side: "client".to_owned(),
                        peer: target.target().to_owned(),
                        method: method.method().to_owned(),
                    },
                    method.call_durations(),
                    0,
                ));
            }
        }
        let mut series = self.lock();
        for (key, durations, in_flight) in current {
            if !sample && series.contains_key(&key) {
                continue;
            }
            let tracked = series.entry(key).or_insert_with(|| Tracked {
                last: None,
                points: VecDeque::with_capacity(HISTORY),
                in_flight: 0,
                total: 0,
            });
            tracked.in_flight = in_flight;
            tracked.total = durations.iter().map(|(_, s)| s.count()).sum();
            if let Some((before, then)) = &tracked.last {
                let seconds = now
                    .duration_since(*then)
                    .unwrap_or(Duration::from_secs(1))
                    .as_secs_f64()
                    .max(0.001);
                if tracked.points.len() == HISTORY {
                    tracked.points.pop_front();
                }
                tracked
                    .points
                    .push_back(point(before, &durations, seconds, now));
            }
            tracked.last = Some((durations, now));
        }
    }

    /// Every method's history, ordered by side, peer and method.
    pub fn series(&self) -> Vec<Series> {
        let series = self.lock();
        let mut all: Vec<Series> = series
            .iter()
            .map(|(key, tracked)| Series {
                key: key.clone(),
                in_flight: tracked.in_flight,
                total: tracked.total,
                points: tracked.points.iter().copied().collect(),
            })
            .collect();
        all.sort_by(|a, b| a.key.cmp(&b.key));
        all
    }

    /// Every method, the `history` busiest (by their newest point) with
    /// their whole history and the others with only their newest point: a
    /// page charts a few and lists the rest (0: newest points only, for
    /// live updates).
    pub fn with_history(&self, history: usize) -> Vec<Series> {
        keep_history(self.series(), history)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<SeriesKey, Tracked>> {
        self.series
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }
}

/// `at` in milliseconds since the Unix epoch (0 before it).
pub(crate) fn unix_millis(at: SystemTime) -> u64 {
    at.duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_millis() as u64)
}

/// `series` with only the `history` busiest keeping all their points.
pub fn keep_history(mut series: Vec<Series>, history: usize) -> Vec<Series> {
    if history < series.len() {
        let newest = |one: &Series| one.points.last().map_or(0.0, |point| point.qps);
        let mut busiest: Vec<usize> = (0..series.len()).collect();
        busiest.sort_by(|&a, &b| newest(&series[b]).total_cmp(&newest(&series[a])));
        let mut keep = vec![false; series.len()];
        for &index in busiest.iter().take(history) {
            keep[index] = true;
        }
        for (one, keep) in series.iter_mut().zip(keep) {
            if !keep {
                let last = one.points.last().copied();
                one.points = last.into_iter().collect();
            }
        }
    }
    series
}

/// The second between two snapshots of a method's per-status histograms.
fn point(
    before: &[(Code, Snapshot)],
    now_durations: &[(Code, Snapshot)],
    seconds: f64,
    now: SystemTime,
) -> Point {
    let mut merged: Option<Snapshot> = None;
    let mut calls = 0;
    let mut failed = 0;
    for (code, snapshot) in now_durations {
        let window = match before.iter().find(|(earlier, _)| earlier == code) {
            Some((_, earlier)) => snapshot.since(earlier),
            None => snapshot.clone(),
        };
        calls += window.count();
        if *code != Code::Ok {
            failed += window.count();
        }
        merged = Some(match merged {
            None => window,
            Some(total) => total.merged(&window),
        });
    }
    let quantile = |q| {
        merged
            .as_ref()
            .and_then(|window| window.quantile(q))
            .map_or(0.0, |seconds| seconds * 1000.0)
    };
    Point {
        at: unix_millis(now),
        qps: calls as f64 / seconds,
        errors: if calls == 0 {
            0.0
        } else {
            failed as f64 / calls as f64
        },
        p50_ms: quantile(0.5),
        p99_ms: quantile(0.99),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_point_is_the_second_between_two_samples() {
        let metrics = Metrics::new();
        let timeline = Timeline::default();
        let method = metrics.calls().server.get("sinew", None);
        let start = SystemTime::now();
        timeline.sample(&metrics, start);
        for _ in 0..90 {
            method
                .durations
                .get(Code::Ok)
                .observe_duration(Duration::from_millis(2));
        }
        for _ in 0..10 {
            method
                .durations
                .get(Code::Unavailable)
                .observe_duration(Duration::from_millis(200));
        }
        timeline.sample(&metrics, start + Duration::from_secs(1));
        let series = timeline.series();
        assert_eq!(series.len(), 1);
        let point = series[0].points[0];
        assert_eq!(point.qps, 100.0);
        assert!((point.errors - 0.1).abs() < 1e-9);
        assert!(point.p50_ms > 1.0 && point.p50_ms <= 2.0, "{point:?}");
        assert!(point.p99_ms > 160.0 && point.p99_ms <= 200.0, "{point:?}");
        assert_eq!(series[0].total, 100);

        // A quiet second.
        timeline.sample(&metrics, start + Duration::from_secs(2));
        let point = timeline.with_history(0)[0].points[0];
        assert_eq!((point.qps, point.errors, point.p50_ms), (0.0, 0.0, 0.0));
        assert_eq!(timeline.series()[0].points.len(), 2);
    }
}

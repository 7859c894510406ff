//! One run of one cell as a line of JSON ([`Sample`]: what a child process
//! prints and the parent reads), the figures a sample carries ([`Figure`]), and
//! the spread of a figure over a cell's runs ([`Spread`]: median, min, max and
//! interquartile range).

use crate::load::{Cell, Stats};
use serde::{Deserialize, Serialize};

/// The figures of one run of one cell.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Sample {
    pub(crate) system: String,
    pub(crate) payload_bytes: usize,
    pub(crate) concurrency: usize,
    pub(crate) connections: usize,
    /// Open-loop rate (calls per second); 0 for a closed loop.
    #[serde(default)]
    pub(crate) rate: u32,
    /// A server-streaming cell: QPS is messages per second.
    #[serde(default)]
    pub(crate) streaming: bool,
    /// A cell of the `bytes` payload.
    #[serde(default)]
    pub(crate) bytes: bool,
    pub(crate) calls: u64,
    pub(crate) errors: u64,
    pub(crate) seconds: f64,
    pub(crate) qps: f64,
    pub(crate) p50_us: f64,
    pub(crate) p90_us: f64,
    pub(crate) p99_us: f64,
    pub(crate) p999_us: f64,
    pub(crate) max_us: f64,
    pub(crate) mean_us: f64,
    pub(crate) cpu_us_per_call: f64,
    /// Idle-connection cells: the server's resident memory per connection,
    /// in bytes (0 in other cells).
    #[serde(default)]
    pub(crate) rss_per_connection: f64,
    /// Balancing rows with a slow replica: the share of the calls that
    /// replica served (0 in other cells).
    #[serde(default)]
    pub(crate) slow_share: f64,
    /// Resilience rows: attempts the balanced channel was given per call
    /// that entered the client stack (0 in other cells).
    #[serde(default)]
    pub(crate) attempts_per_call: f64,
    /// Overload rows: goodput under overload over the capacity measured
    /// before it (0 in other cells).
    #[serde(default)]
    pub(crate) goodput_share: f64,
    /// Overload rows: the p99 of calls made one at a time, in µs (0 in
    /// other cells).
    #[serde(default)]
    pub(crate) unloaded_p99_us: f64,
    /// Why the first failed call failed (absent when none did).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) first_error: Option<String>,
}

impl Sample {
    pub(crate) fn new(cell: Cell, stats: &Stats) -> Sample {
        Sample {
            calls: stats.calls,
            errors: stats.errors,
            seconds: stats.elapsed.as_secs_f64(),
            qps: stats.qps(),
            p50_us: stats.percentile_us(0.5),
            p90_us: stats.percentile_us(0.9),
            p99_us: stats.percentile_us(0.99),
            p999_us: stats.percentile_us(0.999),
            max_us: stats.latency.max() as f64 / 1_000.0,
            mean_us: stats.latency.mean() / 1_000.0,
            cpu_us_per_call: stats.cpu_us_per_call(),
            first_error: stats.first_error.clone(),
            ..Sample::empty(cell)
        }
    }

    /// A sample of `cell` with every figure zero: the base of the samples
    /// of cells that make no timed calls (idle connections).
    pub(crate) fn empty(cell: Cell) -> Sample {
        Sample {
            system: cell.system.name().to_owned(),
            payload_bytes: cell.payload,
            concurrency: cell.concurrency,
            connections: cell.connections,
            rate: cell.rate,
            streaming: cell.streaming,
            bytes: cell.bytes,
            calls: 0,
            errors: 0,
            seconds: 0.0,
            qps: 0.0,
            p50_us: 0.0,
            p90_us: 0.0,
            p99_us: 0.0,
            p999_us: 0.0,
            max_us: 0.0,
            mean_us: 0.0,
            cpu_us_per_call: 0.0,
            rss_per_connection: 0.0,
            slow_share: 0.0,
            attempts_per_call: 0.0,
            goodput_share: 0.0,
            unloaded_p99_us: 0.0,
            first_error: None,
        }
    }

    /// Whether this sample is of `cell`.
    pub(crate) fn is_of(&self, cell: Cell) -> bool {
        self.system == cell.system.name()
            && self.payload_bytes == cell.payload
            && self.concurrency == cell.concurrency
            && self.connections == cell.connections
            && self.rate == cell.rate
            && self.streaming == cell.streaming
            && self.bytes == cell.bytes
    }

    /// A run counts only if every call in it succeeded.
    pub(crate) fn is_clean(&self) -> bool {
        self.calls > 0 && self.errors == 0
    }
}

/// A figure of a [`Sample`] that the report summarizes over runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Figure {
    Qps,
    P50,
    P90,
    P99,
    P999,
    Max,
    Mean,
    CpuPerCall,
    RssPerConnection,
    SlowShare,
    AttemptsPerCall,
    GoodputShare,
    UnloadedP99,
}

impl Figure {
    pub(crate) const ALL: [Figure; 13] = [
        Figure::Qps,
        Figure::P50,
        Figure::P90,
        Figure::P99,
        Figure::P999,
        Figure::Max,
        Figure::Mean,
        Figure::CpuPerCall,
        Figure::RssPerConnection,
        Figure::SlowShare,
        Figure::AttemptsPerCall,
        Figure::GoodputShare,
        Figure::UnloadedP99,
    ];

    /// The figure's key in the JSON, the same as the [`Sample`] field's.
    pub(crate) fn key(self) -> &'static str {
        match self {
            Figure::Qps => "qps",
            Figure::P50 => "p50_us",
            Figure::P90 => "p90_us",
            Figure::P99 => "p99_us",
            Figure::P999 => "p999_us",
            Figure::Max => "max_us",
            Figure::Mean => "mean_us",
            Figure::CpuPerCall => "cpu_us_per_call",
            Figure::RssPerConnection => "rss_per_connection",
            Figure::SlowShare => "slow_share",
            Figure::AttemptsPerCall => "attempts_per_call",
            Figure::GoodputShare => "goodput_share",
            Figure::UnloadedP99 => "unloaded_p99_us",
        }
    }

    pub(crate) fn of(self, sample: &Sample) -> f64 {
        match self {
            Figure::Qps => sample.qps,
            Figure::P50 => sample.p50_us,
            Figure::P90 => sample.p90_us,
            Figure::P99 => sample.p99_us,
            Figure::P999 => sample.p999_us,
            Figure::Max => sample.max_us,
            Figure::Mean => sample.mean_us,
            Figure::CpuPerCall => sample.cpu_us_per_call,
            Figure::RssPerConnection => sample.rss_per_connection,
            Figure::SlowShare => sample.slow_share,
            Figure::AttemptsPerCall => sample.attempts_per_call,
            Figure::GoodputShare => sample.goodput_share,
            Figure::UnloadedP99 => sample.unloaded_p99_us,
        }
    }
}

/// How a figure spread over a cell's runs.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Spread {
    pub(crate) median: f64,
    pub(crate) min: f64,
    pub(crate) max: f64,
    /// First and third quartiles (linear interpolation between runs).
    pub(crate) q1: f64,
    pub(crate) q3: f64,
}

impl Spread {
    /// The spread of `figure` over `samples`; `None` without samples.
    pub(crate) fn of(figure: Figure, samples: &[Sample]) -> Option<Spread> {
        let mut values: Vec<f64> = samples.iter().map(|s| figure.of(s)).collect();
        if values.is_empty() {
            return None;
        }
        values.sort_by(f64::total_cmp);
        Some(Spread {
            median: quantile(&values, 0.5),
            min: values[0],
            max: values[values.len() - 1],
            q1: quantile(&values, 0.25),
            q3: quantile(&values, 0.75),
        })
    }

    pub(crate) fn iqr(&self) -> f64 {
        self.q3 - self.q1
    }
}

/// The `q` quantile of sorted, non-empty `values`, interpolating linearly
/// between neighbours (the median of an even count is the mean of the middle two).
fn quantile(values: &[f64], q: f64) -> f64 {
    let position = q * (values.len() - 1) as f64;
    let below = position.floor() as usize;
    let above = position.ceil() as usize;
    let weight = position - below as f64;
    values[below] + (values[above] - values[below]) * weight
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(qps: f64) -> Sample {
        Sample {
            calls: 1,
            seconds: 1.0,
            qps,
            p50_us: qps / 10.0,
            ..Sample::empty(Cell::closed(crate::systems::System::SinewTcp, 1024, 64, 1))
        }
    }

    #[test]
    fn median_of_odd_and_even_counts() {
        let odd: Vec<_> = [5.0, 1.0, 3.0].map(sample).into();
        let spread = Spread::of(Figure::Qps, &odd).unwrap();
        assert_eq!((spread.median, spread.min, spread.max), (3.0, 1.0, 5.0));
        let even: Vec<_> = [4.0, 1.0, 3.0, 2.0].map(sample).into();
        let spread = Spread::of(Figure::Qps, &even).unwrap();
        assert_eq!(spread.median, 2.5);
        assert_eq!((spread.q1, spread.q3), (1.75, 3.25));
        assert_eq!(spread.iqr(), 1.5);
        assert_eq!(Spread::of(Figure::P50, &even).unwrap().median, 0.25);
    }

    #[test]
    fn one_run_has_no_spread_and_none_has_no_figure() {
        let spread = Spread::of(Figure::Qps, &[sample(7.0)]).unwrap();
        assert_eq!((spread.median, spread.min, spread.max), (7.0, 7.0, 7.0));
        assert_eq!(spread.iqr(), 0.0);
        assert_eq!(Spread::of(Figure::Qps, &[]), None);
    }

    #[test]
    fn a_sample_survives_its_json_line() {
        let line = serde_json::to_string(&sample(42.0)).unwrap();
        assert!(!line.contains('\n'));
        let back: Sample = serde_json::from_str(&line).unwrap();
        assert_eq!((back.qps, back.p50_us), (42.0, 4.2));
        assert!(back.is_clean());
    }
}

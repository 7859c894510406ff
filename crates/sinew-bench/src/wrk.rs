//! wrk (Debian's wrk 4) as the HTTP/1.1 client of the gateway benchmarks:
//! one run against a URL over kept-alive connections, and what its summary
//! says. wrk counts only what it sees on the wire: answers other than 2xx
//! and 3xx, and socket errors (connect, read, write, timeout); it checks no
//! body.

use anyhow::{bail, Context as _};
use std::process::Command;

/// What one wrk run printed.
#[derive(Debug, Clone, PartialEq)]
pub struct Summary {
    /// Requests a second over the run.
    pub rps: f64,
    /// The 99th percentile latency, in milliseconds (NaN if not printed).
    pub p99_ms: f64,
    /// Requests answered, whatever their status.
    pub requests: u64,
    /// Answers with a status other than 2xx or 3xx.
    pub non_2xx: u64,
    /// Connect, read, write and timeout errors, summed.
    pub socket_errors: u64,
}

impl Summary {
    /// Non-2xx/3xx answers and socket errors: every request that failed.
    pub fn errors(&self) -> u64 {
        self.non_2xx + self.socket_errors
    }

    /// Reads wrk's summary (run with `--latency`).
    pub fn parse(text: &str) -> Summary {
        let mut summary = Summary {
            rps: 0.0,
            p99_ms: f64::NAN,
            requests: 0,
            non_2xx: 0,
            socket_errors: 0,
        };
        for line in text.lines() {
            let line = line.trim();
            if let Some(rest) = line.strip_prefix("Requests/sec:") {
                summary.rps = rest.trim().parse().unwrap_or(0.0);
            } else if let Some(rest) = line.strip_prefix("99%") {
                summary.p99_ms = milliseconds(rest.trim());
            } else if let Some(rest) = line.strip_prefix("Non-2xx or 3xx responses:") {
                summary.non_2xx += rest.trim().parse::<u64>().unwrap_or(0);
            } else if let Some(rest) = line.strip_prefix("Socket errors:") {
                summary.socket_errors += rest
                    .split(',')
                    .filter_map(|part| part.split_whitespace().last()?.parse::<u64>().ok())
                    .sum::<u64>();
            } else if line.contains("requests in") {
                summary.requests = line
                    .split_whitespace()
                    .next()
                    .and_then(|count| count.parse().ok())
                    .unwrap_or(0);
            }
        }
        summary
    }
}

/// One run of `wrk -t1 -cN -dS --timeout 5s --latency URL`, the duration
/// rounded up to whole seconds (wrk's unit).
pub fn run(url: &str, connections: usize, duration_ms: u64) -> anyhow::Result<Summary> {
    let output = Command::new("wrk")
        .args([
            "-t1",
            &format!("-c{connections}"),
            &format!("-d{}s", duration_ms.div_ceil(1000)),
            "--timeout",
            "5s",
            "--latency",
            url,
        ])
        .output()
        .context("run wrk")?;
    let text = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        bail!(
            "wrk failed: {text}{}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(Summary::parse(&text))
}

/// wrk's `1.23ms`, `850.00us`, `1.02s` in milliseconds.
fn milliseconds(text: &str) -> f64 {
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: f64 = number.parse().unwrap_or(f64::NAN);
    match unit {
        "us" => value / 1000.0,
        "ms" => value,
        "s" => value * 1000.0,
        "m" => value * 60_000.0,
        _ => f64::NAN,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_wrks_summary() {
        let text = "Running 5s test @ http://127.0.0.1:8080/\n\
            \x20 1 threads and 64 connections\n\
            \x20 Latency Distribution\n\
            \x20    50%    1.70ms\n\
            \x20    99%  850.00us\n\
            \x20 171234 requests in 5.00s, 20.00MB read\n\
            \x20 Socket errors: connect 0, read 2, write 1, timeout 3\n\
            \x20 Non-2xx or 3xx responses: 7\n\
            Requests/sec:  34246.80\n";
        let summary = Summary::parse(text);
        assert_eq!(summary.requests, 171234);
        assert_eq!(summary.rps, 34246.80);
        assert_eq!(summary.p99_ms, 0.85);
        assert_eq!((summary.non_2xx, summary.socket_errors), (7, 6));
        assert_eq!(summary.errors(), 13);
    }

    #[test]
    fn reads_wrks_durations() {
        assert_eq!(milliseconds("1.50ms"), 1.5);
        assert_eq!(milliseconds("2.00s"), 2000.0);
        assert!(milliseconds("3h").is_nan());
    }
}

//! `sinew bench`: a closed-loop load generator for one unary method, like ghz.

use super::CallOptions;
use crate::error::{CliError, ExitCode};
use crate::schema;
use crate::time::format_duration;
use hdrhistogram::Histogram;
use sinew::Code;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(clap::Args, Debug)]
#[command(
    after_help = "Example:\n  sinew bench tcp://127.0.0.1:7000 grpc.examples.echo.Echo/UnaryEcho '{\"message\":\"hi\"}' --concurrency 64 --duration 10s"
)]
pub(crate) struct Args {
    /// Server address: tcp://HOST:PORT, unix:///PATH or shm:///PATH.
    address: String,
    /// Unary method to call: package.Service/Method.
    method: String,
    /// The request as JSON (default {}).
    json: Option<String>,
    /// Calls in flight at once.
    #[arg(short, long, default_value_t = 16)]
    concurrency: usize,
    /// How long to run.
    #[arg(short, long, value_name = "DURATION", default_value = "10s", value_parser = crate::time::parse_duration, conflicts_with = "requests")]
    duration: Duration,
    /// Make exactly this many calls instead of running for a duration.
    #[arg(short = 'n', long)]
    requests: Option<u64>,
    /// Take the schema from this .proto file instead of asking the server.
    #[arg(long, value_name = "FILE")]
    proto: Option<PathBuf>,
    #[command(flatten)]
    options: CallOptions,
    #[command(flatten)]
    security: super::security::ClientSecurity,
}

#[derive(Default)]
struct Tally {
    latency: Option<Histogram<u64>>,
    errors: BTreeMap<&'static str, u64>,
    first_error: Option<sinew::Status>,
}

pub(crate) async fn run(args: Args) -> Result<(), CliError> {
    let schema::ResolvedMethod {
        channel,
        method,
        path,
    } = schema::resolve_method(
        &args.address,
        &args.method,
        args.proto.as_deref(),
        &args.security,
    )
    .await?;
    let channel = args.options.channel(channel)?;
    if method.is_client_streaming() || method.is_server_streaming() {
        return Err(CliError::usage(format!(
            "bench drives unary methods; {} is streaming",
            method.full_name()
        )));
    }
    let message = schema::parse_message(&method.input(), args.json.as_deref().unwrap_or("{}"))?;
    args.options.request(message.clone())?; // validate metadata and deadline once
    let path: Arc<str> = path.into();
    let client = sinew::Client::new(channel);
    let decoder = schema::decoder(method.output());
    let concurrency = args.concurrency.max(1);

    let progress = match args.requests {
        Some(total) => indicatif::ProgressBar::new(total),
        None => indicatif::ProgressBar::new(args.duration.as_millis() as u64),
    };
    progress.set_style(
        indicatif::ProgressStyle::with_template("{spinner} [{elapsed_precise}] {wide_bar} {msg}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let done = Arc::new(AtomicU64::new(0));
    let remaining = Arc::new(AtomicU64::new(args.requests.unwrap_or(u64::MAX)));
    let started = Instant::now();
    let deadline = args.requests.is_none().then(|| started + args.duration);

    let mut workers = Vec::new();
    for _ in 0..concurrency {
        let (client, path, decoder) = (client.clone(), path.clone(), decoder.clone());
        let (message, options) = (message.clone(), args.options.clone());
        let (done, remaining) = (done.clone(), remaining.clone());
        workers.push(tokio::spawn(async move {
            let mut tally = Tally {
                latency: Histogram::new_with_bounds(1, 3_600_000_000, 3).ok(),
                ..Tally::default()
            };
            let mut backoff = Backoff::default();
            loop {
                if deadline.is_some_and(|d| Instant::now() >= d) {
                    break;
                }
                if remaining
                    .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
                    .is_err()
                {
                    break;
                }
                let Ok(request) = options.request(message.clone()) else {
                    break;
                };
                let call_started = Instant::now();
                match client.unary_with(path.clone(), request, &decoder).await {
                    Ok(_) => {
                        backoff.reset();
                        if let Some(latency) = &mut tally.latency {
                            latency.saturating_record(call_started.elapsed().as_micros() as u64);
                        }
                    }
                    Err(status) => {
                        let unavailable = status.code() == sinew::Code::Unavailable;
                        *tally.errors.entry(status.code().as_str()).or_default() += 1;
                        tally.first_error.get_or_insert(status);
                        // A server that is gone fails calls at once: wait
                        // before the next one instead of spinning on it.
                        if unavailable {
                            backoff.wait(deadline).await;
                        }
                    }
                }
                done.fetch_add(1, Ordering::Relaxed);
            }
            tally
        }));
    }
    let ticker = {
        let (progress, done) = (progress.clone(), done.clone());
        let by_count = args.requests.is_some();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(100)).await;
                let calls = done.load(Ordering::Relaxed);
                let elapsed = started.elapsed();
                progress.set_position(if by_count {
                    calls
                } else {
                    elapsed.as_millis() as u64
                });
                progress.set_message(format!(
                    "{calls} calls, {:.0}/s",
                    calls as f64 / elapsed.as_secs_f64().max(1e-9)
                ));
            }
        })
    };
    let mut latency = Histogram::<u64>::new_with_bounds(1, 3_600_000_000, 3)
        .map_err(|e| CliError::failure(e.to_string()))?;
    let mut errors: BTreeMap<&'static str, u64> = BTreeMap::new();
    let mut first_error = None;
    for worker in workers {
        let tally = worker.await.map_err(|e| CliError::failure(e.to_string()))?;
        if let Some(histogram) = &tally.latency {
            let _ = latency.add(histogram);
        }
        for (code, count) in tally.errors {
            *errors.entry(code).or_default() += count;
        }
        if first_error.is_none() {
            first_error = tally.first_error;
        }
    }
    ticker.abort();
    progress.finish_and_clear();
    let elapsed = started.elapsed();
    let ok = latency.len();
    let failed: u64 = errors.values().sum();
    print!(
        "{}",
        report(&args.method, concurrency, elapsed, &latency, ok, &errors)
    );
    if ok == 0 && failed > 0 {
        let status = first_error.unwrap_or_else(|| sinew::Status::unknown("every call failed"));
        let error = CliError::from(status.clone());
        return Err(CliError::new(
            if error.exit_code() == ExitCode::Failure {
                ExitCode::ErrorStatus
            } else {
                error.exit_code()
            },
            format!("every call failed; the first with {status}"),
        ));
    }
    Ok(())
}

fn report(
    method: &str,
    concurrency: usize,
    elapsed: Duration,
    latency: &Histogram<u64>,
    ok: u64,
    errors: &BTreeMap<&'static str, u64>,
) -> String {
    use std::fmt::Write;
    let failed: u64 = errors.values().sum();
    let total = ok + failed;
    let mut out = String::new();
    let _ = writeln!(out, "Summary: {method}, {concurrency} in flight");
    let _ = writeln!(out, "  Calls:      {total} ({ok} ok, {failed} failed)");
    let _ = writeln!(out, "  Duration:   {}", format_duration(elapsed));
    let _ = writeln!(
        out,
        "  Throughput: {:.0} calls/s",
        total as f64 / elapsed.as_secs_f64().max(1e-9)
    );
    if ok > 0 {
        // The histogram records microseconds.
        let human = |us: u64| format_duration(Duration::from_micros(us));
        let ms = |us: u64| us as f64 / 1000.0;
        let _ = writeln!(out, "Latency:");
        let _ = writeln!(
            out,
            "  min {}  mean {}  max {}",
            human(latency.min()),
            format_duration(Duration::try_from_secs_f64(latency.mean() / 1e6).unwrap_or_default()),
            human(latency.max())
        );
        for (label, q) in [("p50", 0.5), ("p90", 0.9), ("p99", 0.99), ("p999", 0.999)] {
            let _ = writeln!(
                out,
                "  {label:<5} {:>6}",
                human(latency.value_at_quantile(q))
            );
        }
        // Bucket bounds stay in one unit with three decimals: rounded like the
        // figures above, neighbouring bounds would often print the same.
        let _ = writeln!(out, "Histogram (ms):");
        let (low, high) = (latency.min(), latency.max().max(latency.min() + 1));
        let step = (high - low).div_ceil(10).max(1);
        let buckets: Vec<(u64, u64)> = (0..10)
            .map(|i| {
                let from = low + i * step;
                let to = from + step;
                (to, latency.count_between(from, to.saturating_sub(1)))
            })
            .collect();
        let widest = buckets.iter().map(|(_, n)| *n).max().unwrap_or(1).max(1);
        for (to, count) in buckets {
            let bar = "#".repeat((count * 40 / widest) as usize);
            let _ = writeln!(out, "  <= {:>9.3} {count:>9} {bar}", ms(to));
        }
    }
    let _ = writeln!(out, "Status codes:");
    let _ = writeln!(out, "  {:<20} {ok}", Code::Ok.as_str());
    for (code, count) in errors {
        let _ = writeln!(out, "  {code:<20} {count}");
    }
    out
}

/// How long a worker waits after an `UNAVAILABLE` call: doubling from 10 ms
/// to 1 s while calls keep failing, back to nothing after a success.
#[derive(Debug, Default)]
struct Backoff {
    next: Option<Duration>,
}

impl Backoff {
    const FIRST: Duration = Duration::from_millis(10);
    const MAX: Duration = Duration::from_secs(1);

    fn reset(&mut self) {
        self.next = None;
    }

    /// Sleeps for the current backoff (never past `deadline`), then doubles it.
    async fn wait(&mut self, deadline: Option<Instant>) {
        let delay = self.next.unwrap_or(Self::FIRST);
        self.next = Some((delay * 2).min(Self::MAX));
        let wake = Instant::now() + delay;
        let wake = deadline.map_or(wake, |deadline| wake.min(deadline));
        tokio::time::sleep_until(wake.into()).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_report_prints_durations_rounded_and_keeps_its_parsed_lines() {
        let mut latency = Histogram::<u64>::new_with_bounds(1, 3_600_000_000, 3).unwrap();
        for us in [35, 80, 850, 1_234] {
            latency.record(us).unwrap();
        }
        let errors = BTreeMap::from([("UNAVAILABLE", 1)]);
        let text = report(
            "grpc.examples.echo.Echo/UnaryEcho",
            4,
            Duration::from_nanos(1_234_567_891),
            &latency,
            4,
            &errors,
        );
        assert!(
            text.contains("  Calls:      5 (4 ok, 1 failed)\n"),
            "{text}"
        );
        assert!(text.contains("  Duration:   1.2s\n"), "{text}");
        assert!(
            text.contains("  min 35us  mean 550us  max 1.2ms\n"),
            "{text}"
        );
        assert!(text.contains("  p50     80us\n"), "{text}");
        assert!(text.contains("  p99    1.2ms\n"), "{text}");
        assert!(text.contains("  OK                   4\n"), "{text}");
        assert!(text.contains("  UNAVAILABLE          1\n"), "{text}");
        assert!(
            !text.contains("1.234567891"),
            "no Debug-formatted durations: {text}"
        );
    }
}

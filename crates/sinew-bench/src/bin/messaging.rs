//! `sinew-bench-messaging`: sinew's messaging against NATS, side by side:
//! publish/subscribe through sinew's API on the embedded broker (served by
//! a sinew server, reached over TCP) and on nats-server; sinew's NATS
//! backend against the raw async-nats client; durable work queues (push,
//! pull, ack) on the embedded store and on JetStream; end-to-end latency at
//! half the highest rate both sustain.
//!
//! Every cell runs `--runs` times, each in a fresh process (this binary
//! with `--cell`), the cells of each round in a new random order; the
//! report gives medians with their spread, and ratios of medians. Each run
//! starts its own nats-server (Debian's, `GOMAXPROCS=1`, JetStream in a
//! temporary directory) or its own sinew server (a runtime of one thread),
//! and drives it from a client runtime of one thread.
//!
//! ```text
//! cargo run --release -p sinew-bench --bin sinew-bench-messaging -- --runs 5 --json docs/benchmarks/messaging.json
//! ```

use anyhow::{bail, Context as _};
use clap::Parser;
use futures_util::StreamExt;
use serde_json::{json, Value};
use sinew::messaging::{Broker, FsyncPolicy, Job, QueueConfig};
use sinew_bench::cpu;
use sinew_bench::process::Process;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[derive(Parser, Debug)]
#[command(
    name = "sinew-bench-messaging",
    about = "sinew's messaging against NATS, side by side"
)]
struct Options {
    /// Runs of every cell, each in a fresh process.
    #[arg(long, default_value_t = 5)]
    runs: usize,
    /// Payload of every message and job, in bytes.
    #[arg(long, default_value_t = 1024)]
    payload: usize,
    /// Warm-up per run, in milliseconds.
    #[arg(long, default_value_t = 500)]
    warmup_ms: u64,
    /// Measured duration per run, in milliseconds.
    #[arg(long, default_value_t = 2000)]
    duration_ms: u64,
    /// Write every figure and the ratios to this JSON file.
    #[arg(long)]
    json: Option<std::path::PathBuf>,
    /// Run this one cell in this process and print its figures as JSON.
    #[arg(long)]
    cell: Option<String>,
    /// The rate of a latency cell, messages per second.
    #[arg(long, default_value_t = 0)]
    rate: u64,
    /// Seed of the order of the cells (default: from the clock).
    #[arg(long)]
    seed: Option<u64>,
}

/// The throughput cells: what, and on which broker.
const CELLS: &[&str] = &[
    "pubsub-1:embedded",
    "pubsub-1:nats",
    "pubsub-1:nats-raw",
    "pubsub-4:embedded",
    "pubsub-4:nats",
    "pubsub-4:nats-raw",
    "queue:embedded",
    "queue:embedded-interval",
    "queue:jetstream",
];
/// The latency cells, at a rate found from the throughput cells.
const LATENCY_CELLS: &[&str] = &["latency:embedded", "latency:nats"];

fn main() -> anyhow::Result<()> {
    let options = Options::parse();
    if let Some(cell) = &options.cell {
        let figures = run_cell(cell, &options)?;
        println!("{figures}");
        return Ok(());
    }
    let seed = options.seed.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |since| since.as_nanos() as u64)
    });
    let mut rng = fastrand::Rng::with_seed(seed);
    let started = chrono_now();
    let mut samples: Vec<(String, Value)> = Vec::new();
    for round in 0..options.runs {
        let mut order = CELLS.to_vec();
        rng.shuffle(&mut order);
        for cell in order {
            eprintln!("round {}/{}: {cell}", round + 1, options.runs);
            samples.push((cell.to_owned(), child(cell, &options, 0)?));
        }
    }
    // Half the highest rate both brokers sustain, one publisher to one
    // subscriber, for the latency cells.
    let rate = (median(&samples, "pubsub-1:embedded", "msgs_per_s").min(median(
        &samples,
        "pubsub-1:nats",
        "msgs_per_s",
    )) / 2.0) as u64;
    for round in 0..options.runs {
        let mut order = LATENCY_CELLS.to_vec();
        rng.shuffle(&mut order);
        for cell in order {
            eprintln!("round {}/{}: {cell} at {rate}/s", round + 1, options.runs);
            samples.push((cell.to_owned(), child(cell, &options, rate)?));
        }
    }
    let report = report(&samples, &options, seed, rate, &started);
    println!("{}", report["markdown"].as_str().unwrap_or_default());
    if let Some(path) = &options.json {
        std::fs::write(path, serde_json::to_string_pretty(&report)?)?;
    }
    Ok(())
}

fn chrono_now() -> String {
    let output = Command::new("date")
        .args(["-u", "+%Y-%m-%dT%H:%M:%SZ"])
        .output();
    output
        .ok()
        .map(|output| String::from_utf8_lossy(&output.stdout).trim().to_owned())
        .unwrap_or_default()
}

/// Runs one cell in a fresh process; its figures.
fn child(cell: &str, options: &Options, rate: u64) -> anyhow::Result<Value> {
    let output = Command::new(std::env::current_exe()?)
        .args(["--cell", cell])
        .args(["--payload", &options.payload.to_string()])
        .args(["--warmup-ms", &options.warmup_ms.to_string()])
        .args(["--duration-ms", &options.duration_ms.to_string()])
        .args(["--rate", &rate.to_string()])
        .stderr(Stdio::inherit())
        .output()?;
    if !output.status.success() {
        bail!("cell {cell} failed: {}", output.status);
    }
    let text = String::from_utf8(output.stdout)?;
    let line = text.lines().last().context("a cell prints its figures")?;
    Ok(serde_json::from_str(line)?)
}

fn values(samples: &[(String, Value)], cell: &str, figure: &str) -> Vec<f64> {
    let mut values: Vec<f64> = samples
        .iter()
        .filter(|(name, _)| name == cell)
        .filter_map(|(_, figures)| figures[figure].as_f64())
        .collect();
    values.sort_by(f64::total_cmp);
    values
}

fn median(samples: &[(String, Value)], cell: &str, figure: &str) -> f64 {
    let values = values(samples, cell, figure);
    if values.is_empty() {
        return f64::NAN;
    }
    let middle = values.len() / 2;
    if values.len() % 2 == 1 {
        values[middle]
    } else {
        (values[middle - 1] + values[middle]) / 2.0
    }
}

fn report(
    samples: &[(String, Value)],
    options: &Options,
    seed: u64,
    rate: u64,
    started: &str,
) -> Value {
    let mut rows = Vec::new();
    let mut markdown = format!(
        "Run of {started} on {} cores; {} runs of every cell, each in a fresh process, the cells of each round in random order (seed {seed}); {} B payloads; warm-up {} ms, measured {} ms per run; latency cells at {rate} msgs/s. Medians [min-max].\n\n",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        options.runs,
        options.payload,
        options.warmup_ms,
        options.duration_ms
    );
    markdown.push_str("| cell | msgs/s (jobs/s) | p50 µs | p99 µs | dropped | CPU µs/msg |\n|---|---:|---:|---:|---:|---:|\n");
    for cell in CELLS.iter().chain(LATENCY_CELLS) {
        let throughput = values(samples, cell, "msgs_per_s");
        let (low, high) = (
            throughput.first().copied().unwrap_or(f64::NAN),
            throughput.last().copied().unwrap_or(f64::NAN),
        );
        let row = json!({
            "cell": cell,
            "msgs_per_s": median(samples, cell, "msgs_per_s"),
            "msgs_per_s_min": low,
            "msgs_per_s_max": high,
            "p50_us": median(samples, cell, "p50_us"),
            "p99_us": median(samples, cell, "p99_us"),
            "dropped": median(samples, cell, "dropped"),
            "cpu_us_per_msg": median(samples, cell, "cpu_us_per_msg"),
        });
        markdown.push_str(&format!(
            "| {cell} | {:.0} [{low:.0}-{high:.0}] | {:.1} | {:.1} | {:.0} | {:.2} |\n",
            row["msgs_per_s"].as_f64().unwrap_or(f64::NAN),
            row["p50_us"].as_f64().unwrap_or(f64::NAN),
            row["p99_us"].as_f64().unwrap_or(f64::NAN),
            row["dropped"].as_f64().unwrap_or(f64::NAN),
            row["cpu_us_per_msg"].as_f64().unwrap_or(f64::NAN),
        ));
        rows.push(row);
    }
    let ratio =
        |a: &str, b: &str, figure: &str| median(samples, a, figure) / median(samples, b, figure);
    let ratios = json!({
        "pubsub_1to1_embedded_vs_nats": ratio("pubsub-1:embedded", "pubsub-1:nats", "msgs_per_s"),
        "pubsub_1to4_embedded_vs_nats": ratio("pubsub-4:embedded", "pubsub-4:nats", "msgs_per_s"),
        "nats_backend_vs_raw_1to1": ratio("pubsub-1:nats", "pubsub-1:nats-raw", "msgs_per_s"),
        "nats_backend_vs_raw_1to4": ratio("pubsub-4:nats", "pubsub-4:nats-raw", "msgs_per_s"),
        "queue_embedded_vs_jetstream": ratio("queue:embedded", "queue:jetstream", "msgs_per_s"),
        "queue_embedded_interval_vs_jetstream": ratio("queue:embedded-interval", "queue:jetstream", "msgs_per_s"),
        "latency_p99_embedded_vs_nats": ratio("latency:embedded", "latency:nats", "p99_us"),
    });
    markdown.push_str("\n| ratio | value | target |\n|---|---:|---|\n");
    for (name, target) in [
        ("pubsub_1to1_embedded_vs_nats", ">= 1.0"),
        ("pubsub_1to4_embedded_vs_nats", ">= 1.0"),
        ("nats_backend_vs_raw_1to1", ">= 0.9"),
        ("nats_backend_vs_raw_1to4", ">= 0.9"),
        ("queue_embedded_vs_jetstream", ">= 1.0"),
        ("queue_embedded_interval_vs_jetstream", ">= 1.0"),
        ("latency_p99_embedded_vs_nats", "<= 1.0"),
    ] {
        markdown.push_str(&format!(
            "| `{name}` | {:.2} | {target} |\n",
            ratios[name].as_f64().unwrap_or(f64::NAN)
        ));
    }
    json!({
        "started": started,
        "seed": seed,
        "runs": options.runs,
        "payload": options.payload,
        "latency_rate": rate,
        "rows": rows,
        "ratios": ratios,
        "samples": samples.iter().map(|(cell, figures)| json!({"cell": cell, "figures": figures})).collect::<Vec<_>>(),
        "markdown": markdown,
    })
}

/// A nats-server child: `GOMAXPROCS=1` (one thread of work, as the sinew
/// server's runtime), JetStream in a temporary directory; SIGKILLed when
/// dropped.
struct NatsServer {
    process: Process,
    url: String,
    dir: std::path::PathBuf,
}

impl NatsServer {
    fn start() -> anyhow::Result<NatsServer> {
        let dir = std::env::temp_dir().join(format!("sinew-bench-nats-{}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        let mut child = Command::new("nats-server")
            .args(["-a", "127.0.0.1", "-p", "-1", "-js", "-sd"])
            .arg(&dir)
            .env("GOMAXPROCS", "1")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .context("nats-server (scripts/install-peers.sh installs it)")?;
        let mut log = BufReader::new(child.stderr.take().context("its log")?);
        // Stopped from here on, should it never get ready.
        let process = Process::from_child(child);
        let mut url = None;
        let mut line = String::new();
        loop {
            line.clear();
            if log.read_line(&mut line)? == 0 {
                bail!("nats-server exited before it was ready");
            }
            if let Some((_, address)) = line.split_once("Listening for client connections on ") {
                url = Some(format!("nats://{}", address.trim()));
            }
            if line.contains("Server is ready") {
                break;
            }
        }
        std::thread::spawn(move || for _ in log.lines() {});
        Ok(NatsServer {
            process,
            url: url.context("where nats-server listens")?,
            dir,
        })
    }

    fn cpu(&self) -> Duration {
        cpu::of_process(self.process.id())
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.process.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The broker a cell runs on, and what must live as long as the cell.
struct Setup {
    broker: Option<Broker>,
    raw: Option<async_nats::Client>,
    nats: Option<NatsServer>,
    _server_runtime: Option<tokio::runtime::Runtime>,
    _storage: Option<std::path::PathBuf>,
}

impl Setup {
    fn cpu(&self) -> Duration {
        cpu::of_process(std::process::id())
            + self.nats.as_ref().map_or(Duration::ZERO, NatsServer::cpu)
    }
}

fn setup(kind: &str, client: &tokio::runtime::Runtime) -> anyhow::Result<Setup> {
    match kind {
        "embedded" | "embedded-interval" => {
            let server_runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()?;
            let storage =
                std::env::temp_dir().join(format!("sinew-bench-{}.redb", std::process::id()));
            let _ = std::fs::remove_file(&storage);
            let fsync = if kind == "embedded" {
                FsyncPolicy::Always
            } else {
                FsyncPolicy::Interval(Duration::from_secs(120))
            };
            let served = Broker::builder().storage(&storage).fsync(fsync).build()?;
            let address = server_runtime.block_on(async {
                let server = sinew::Server::builder()
                    .add_service(served.service())
                    .bind(["tcp://127.0.0.1:0"])
                    .await?;
                let address = server.local_addresses()[0].to_string();
                tokio::spawn(server.serve());
                anyhow::Ok(address)
            })?;
            let broker = client.block_on(Broker::connect(&address))?;
            Ok(Setup {
                broker: Some(broker),
                raw: None,
                nats: None,
                _server_runtime: Some(server_runtime),
                _storage: Some(storage),
            })
        }
        "nats" | "jetstream" => {
            let nats = NatsServer::start()?;
            let broker = client.block_on(Broker::nats(&nats.url))?;
            Ok(Setup {
                broker: Some(broker),
                raw: None,
                nats: Some(nats),
                _server_runtime: None,
                _storage: None,
            })
        }
        "nats-raw" => {
            let nats = NatsServer::start()?;
            let raw = client.block_on(async_nats::connect(&nats.url))?;
            Ok(Setup {
                broker: None,
                raw: Some(raw),
                nats: Some(nats),
                _server_runtime: None,
                _storage: None,
            })
        }
        other => bail!("unknown broker {other}"),
    }
}

/// One cell, in this process: its figures as one line of JSON.
fn run_cell(cell: &str, options: &Options) -> anyhow::Result<Value> {
    let (what, kind) = cell.split_once(':').context("CELL is WHAT:BROKER")?;
    let client = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    let setup = setup(kind, &client)?;
    let warmup = Duration::from_millis(options.warmup_ms);
    let duration = Duration::from_millis(options.duration_ms);
    let figures = match what {
        "pubsub-1" => client.block_on(pubsub(&setup, 1, options.payload, warmup, duration))?,
        "pubsub-4" => client.block_on(pubsub(&setup, 4, options.payload, warmup, duration))?,
        "queue" => client.block_on(queue(&setup, options.payload, warmup, duration))?,
        "latency" => client.block_on(latency(
            &setup,
            options.payload,
            options.rate,
            warmup,
            duration,
        ))?,
        other => bail!("unknown cell {other}"),
    };
    drop(client);
    Ok(figures)
}

/// Something that publishes and subscribes: sinew's API, or raw async-nats.
#[derive(Clone)]
enum Bus {
    Sinew(Broker),
    Raw(async_nats::Client),
}

impl Bus {
    fn of(setup: &Setup) -> Bus {
        match (&setup.broker, &setup.raw) {
            (Some(broker), _) => Bus::Sinew(broker.clone()),
            (None, Some(raw)) => Bus::Raw(raw.clone()),
            _ => unreachable!("a setup has one or the other"),
        }
    }

    async fn publish(&self, payload: bytes::Bytes) -> anyhow::Result<()> {
        match self {
            Bus::Sinew(broker) => broker.publish("bench.messages", payload).await?,
            Bus::Raw(client) => client.publish("bench.messages", payload).await?,
        }
        Ok(())
    }

    async fn flush(&self) -> anyhow::Result<()> {
        match self {
            Bus::Sinew(broker) => broker.flush().await?,
            Bus::Raw(client) => client.flush().await?,
        }
        Ok(())
    }

    /// A subscriber task calling `each` with every payload.
    async fn subscribe(
        &self,
        each: impl Fn(&[u8]) + Send + 'static,
    ) -> anyhow::Result<tokio::task::JoinHandle<()>> {
        Ok(match self {
            Bus::Sinew(broker) => {
                let mut subscription = broker.subscribe("bench.messages").await?;
                tokio::spawn(async move {
                    while let Some(message) = subscription.next_message().await {
                        each(&message.payload);
                    }
                })
            }
            Bus::Raw(client) => {
                let mut subscriber = client.subscribe("bench.messages").await?;
                client.flush().await?;
                tokio::spawn(async move {
                    while let Some(message) = subscriber.next().await {
                        each(&message.payload);
                    }
                })
            }
        })
    }

    fn dropped(&self) -> u64 {
        0
    }
}

/// One publisher as fast as it can go, `subscribers` subscribers: the
/// messages each received per second (the slowest one's), and drops.
async fn pubsub(
    setup: &Setup,
    subscribers: usize,
    payload: usize,
    warmup: Duration,
    duration: Duration,
) -> anyhow::Result<Value> {
    let bus = Bus::of(setup);
    let counts: Vec<Arc<AtomicU64>> = (0..subscribers)
        .map(|_| Arc::new(AtomicU64::new(0)))
        .collect();
    let mut tasks = Vec::new();
    for count in &counts {
        let count = count.clone();
        tasks.push(
            bus.subscribe(move |_| {
                count.fetch_add(1, Ordering::Relaxed);
            })
            .await?,
        );
    }
    let body = bytes::Bytes::from(vec![7u8; payload]);
    // Warm-up, then drained.
    let until = Instant::now() + warmup;
    while Instant::now() < until {
        bus.publish(body.clone()).await?;
    }
    bus.flush().await?;
    settle(&counts).await;
    let before: Vec<u64> = counts.iter().map(|c| c.load(Ordering::Relaxed)).collect();
    let cpu_before = setup.cpu();
    let started = Instant::now();
    let mut published = 0u64;
    while started.elapsed() < duration {
        bus.publish(body.clone()).await?;
        published += 1;
    }
    bus.flush().await?;
    settle(&counts).await;
    let elapsed = started.elapsed().as_secs_f64();
    let cpu = setup.cpu().saturating_sub(cpu_before);
    let received: Vec<u64> = counts
        .iter()
        .zip(&before)
        .map(|(count, before)| count.load(Ordering::Relaxed) - before)
        .collect();
    let slowest = received.iter().copied().min().unwrap_or(0);
    let dropped = published * subscribers as u64 - received.iter().sum::<u64>();
    for task in tasks {
        task.abort();
    }
    let _ = bus.dropped();
    Ok(json!({
        "msgs_per_s": slowest as f64 / elapsed,
        "published": published,
        "dropped": dropped,
        "cpu_us_per_msg": cpu.as_secs_f64() * 1e6 / (published.max(1) as f64),
    }))
}

/// Waits until the counts stop moving (for 100 ms), up to 10 s.
async fn settle(counts: &[Arc<AtomicU64>]) {
    let total = || {
        counts
            .iter()
            .map(|c| c.load(Ordering::Relaxed))
            .sum::<u64>()
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut last = total();
    loop {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let now = total();
        if now == last || Instant::now() > deadline {
            return;
        }
        last = now;
    }
}

/// Producers pushing (64 in flight) while one worker pulls (256 in flight)
/// and acks each job: jobs acked per second.
async fn queue(
    setup: &Setup,
    payload: usize,
    warmup: Duration,
    duration: Duration,
) -> anyhow::Result<Value> {
    let broker = setup.broker.clone().context("a sinew broker")?;
    let queue = broker
        .work_queue("bench.jobs", QueueConfig::default())
        .await?;
    let acked = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut worker = queue.pull(256).await?;
    let worker_task = {
        let acked = acked.clone();
        tokio::spawn(async move {
            let mut settling = tokio::task::JoinSet::new();
            while let Some(job) = worker.next_job().await {
                let acked = acked.clone();
                settling.spawn(async move {
                    if job.ack().await.is_ok() {
                        acked.fetch_add(1, Ordering::Relaxed);
                    }
                });
                while settling.try_join_next().is_some() {}
            }
        })
    };
    let body = bytes::Bytes::from(vec![7u8; payload]);
    let mut producers = Vec::new();
    for _ in 0..64 {
        let queue = queue.clone();
        let body = body.clone();
        let stop = stop.clone();
        producers.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let _ = queue.push(Job::new(body.clone())).await;
            }
        }));
    }
    tokio::time::sleep(warmup).await;
    let before = acked.load(Ordering::Relaxed);
    let cpu_before = setup.cpu();
    let started = Instant::now();
    tokio::time::sleep(duration).await;
    let done = acked.load(Ordering::Relaxed) - before;
    let elapsed = started.elapsed().as_secs_f64();
    let cpu = setup.cpu().saturating_sub(cpu_before);
    stop.store(true, Ordering::Relaxed);
    for producer in producers {
        let _ = producer.await;
    }
    worker_task.abort();
    Ok(json!({
        "msgs_per_s": done as f64 / elapsed,
        "dropped": 0,
        "cpu_us_per_msg": cpu.as_secs_f64() * 1e6 / (done.max(1) as f64),
    }))
}

/// One publisher at `rate` messages per second (each carrying its send
/// time), one subscriber: the latency from publish to receipt.
async fn latency(
    setup: &Setup,
    payload: usize,
    rate: u64,
    warmup: Duration,
    duration: Duration,
) -> anyhow::Result<Value> {
    if rate == 0 {
        bail!("a latency cell needs --rate");
    }
    let bus = Bus::of(setup);
    let base = Instant::now();
    let histogram = Arc::new(Mutex::new(hdrhistogram::Histogram::<u64>::new_with_bounds(
        1, 60_000_000, 3,
    )?));
    let measuring = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let received = Arc::new(AtomicU64::new(0));
    let task = {
        let histogram = histogram.clone();
        let measuring = measuring.clone();
        let received = received.clone();
        bus.subscribe(move |payload| {
            let sent = u64::from_be_bytes(payload[..8].try_into().unwrap_or_default());
            let now = base.elapsed().as_micros() as u64;
            if measuring.load(Ordering::Relaxed) {
                received.fetch_add(1, Ordering::Relaxed);
                let mut histogram = histogram.lock().unwrap_or_else(|p| p.into_inner());
                let _ = histogram.record(now.saturating_sub(sent).max(1));
            }
        })
        .await?
    };
    let interval = Duration::from_secs_f64(1.0 / rate as f64);
    let mut body = vec![7u8; payload.max(8)];
    let total = warmup + duration;
    let started = Instant::now();
    let mut sent = 0u64;
    let mut next = started;
    while started.elapsed() < total {
        if !measuring.load(Ordering::Relaxed) && started.elapsed() >= warmup {
            measuring.store(true, Ordering::Relaxed);
        }
        // Open loop: each message at its time, late ones at once (their
        // latency counts the lateness).
        let now = Instant::now();
        if next > now {
            tokio::time::sleep_until(next.into()).await;
        }
        let stamp = (base.elapsed().as_micros() as u64).to_be_bytes();
        body[..8].copy_from_slice(&stamp);
        bus.publish(bytes::Bytes::copy_from_slice(&body)).await?;
        sent += 1;
        next += interval;
    }
    bus.flush().await?;
    tokio::time::sleep(Duration::from_millis(200)).await;
    task.abort();
    let histogram = histogram.lock().unwrap_or_else(|p| p.into_inner());
    Ok(json!({
        "msgs_per_s": received.load(Ordering::Relaxed) as f64 / duration.as_secs_f64(),
        "p50_us": histogram.value_at_quantile(0.5),
        "p99_us": histogram.value_at_quantile(0.99),
        "sent": sent,
        "dropped": 0,
    }))
}

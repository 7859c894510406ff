//! `sinew demo`: the whole system on one machine, with no set-up.
//!
//! Four servers (two on TCP, one on a Unix socket, one on shared memory) serve
//! the echo and key-value services over one shared store. Client tasks drive a mixed workload (unary
//! echo, key-value writes and reads, server-streaming echo) spread round-robin
//! over the servers, while a watch streams every change from the Unix-socket
//! server. Part-way through, one server shuts down gracefully: its calls in
//! flight drain, and its clients fail over to the others. The run ends with a
//! report per transport.
//!
//! Later layers (discovery, load balancing, the gateway) extend this file: add a server kind to `SERVERS` or a call kind to `Kind`.

use crate::error::CliError;
use crate::time::format_duration;
use hdrhistogram::Histogram;
use sinew::rpc::server::ServerHandle;
use sinew::rpc::ShutdownReport;
use sinew::transport::Address;
use sinew::{Channel, Code, Request, Server, Status};
use sinew_examples::echo::{
    echo_client::EchoClient, echo_server::EchoServer, EchoRequest, EchoService,
};
use sinew_examples::kv::{
    key_value_client::KeyValueClient, key_value_server::KeyValueServer, GetRequest, KeyValueStore,
    PutRequest, WatchRequest,
};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::task::JoinHandle;

#[derive(clap::Args, Debug)]
pub(crate) struct Args {
    /// How long to drive the workload.
    #[arg(short, long, value_name = "DURATION", default_value = "10s", value_parser = crate::time::parse_duration)]
    duration: Duration,
    /// Client tasks making calls at once.
    #[arg(short, long, default_value_t = 16)]
    concurrency: usize,
}

/// The servers of the demo: name and listen address (`{dir}` is a temp directory).
const SERVERS: [(&str, &str); 4] = [
    ("alpha", "tcp://127.0.0.1:0"),
    ("beta", "tcp://127.0.0.1:0"),
    ("gamma", "unix://{dir}/gamma.sock"),
    ("delta", "shm://{dir}/delta.sock"),
];
/// The server that shuts down mid-run.
const LEAVING: usize = 1;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    UnaryEcho,
    KeyValue,
    StreamingEcho,
}

impl Kind {
    fn for_call(n: u64) -> Kind {
        match n % 10 {
            0..=6 => Kind::UnaryEcho,
            7 | 8 => Kind::KeyValue,
            _ => Kind::StreamingEcho,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Kind::UnaryEcho => "unary echo",
            Kind::KeyValue => "key-value put+get",
            Kind::StreamingEcho => "server-streaming echo (5 messages)",
        }
    }
}

struct RunningServer {
    name: &'static str,
    address: Address,
    handle: ServerHandle,
    task: JoinHandle<ShutdownReport>,
    channel: Channel,
}

/// Figures of one transport.
struct TransportTally {
    latency: Histogram<u64>,
    errors: BTreeMap<&'static str, u64>,
}

impl TransportTally {
    fn new() -> TransportTally {
        TransportTally {
            latency: Histogram::new_with_bounds(1, 600_000_000, 3).expect("valid bounds"),
            errors: BTreeMap::new(),
        }
    }
}

#[derive(Default)]
struct Shared {
    /// Servers a client found unavailable: skipped from then on (a stand-in for
    /// the health checking a balancer does).
    down: Vec<std::sync::atomic::AtomicBool>,
    calls: AtomicU64,
    errors: AtomicU64,
    failovers: AtomicU64,
    stream_messages: AtomicU64,
    watch_events: AtomicU64,
    by_transport: Mutex<BTreeMap<&'static str, TransportTally>>,
    by_kind: Mutex<BTreeMap<Kind, u64>>,
}

pub(crate) async fn run(args: Args) -> Result<(), CliError> {
    let dir = std::env::temp_dir().join(format!("sinew-demo-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let result = demo(&args, &dir).await;
    let _ = std::fs::remove_dir_all(&dir);
    result
}

async fn demo(args: &Args, dir: &std::path::Path) -> Result<(), CliError> {
    let store = KeyValueStore::default();
    let mut servers = Vec::new();
    for (name, address) in SERVERS {
        let address = address.replace("{dir}", &dir.display().to_string());
        let server = Server::builder()
            .add_service(EchoServer::new(EchoService))
            .add_service(KeyValueServer::new(store.clone()))
            .add_protocol(sinew_grpc::GrpcProtocol::default())
            .drain_timeout(Duration::from_secs(2))
            .bind([address])
            .await
            .map_err(|e| CliError::failure(format!("starting server {name}: {e}")))?;
        let address = server.local_addresses()[0].clone();
        let channel = Channel::builder(address.clone())
            .connect_timeout(Duration::from_secs(1))
            .reconnect_backoff(Duration::from_millis(50), Duration::from_millis(500))
            .lazy();
        let handle = server.handle();
        let task = tokio::spawn(server.serve());
        println!("server {name:<5} listening on {address}");
        servers.push(RunningServer {
            name,
            address,
            handle,
            task,
            channel,
        });
    }
    let channels: Arc<Vec<(Channel, &'static str)>> = Arc::new(
        servers
            .iter()
            .map(|s| (s.channel.clone(), transport(&s.address)))
            .collect(),
    );
    let shared = Arc::new(Shared {
        down: (0..servers.len()).map(|_| Default::default()).collect(),
        ..Shared::default()
    });
    println!(
        "driving {} client tasks for {}: unary echo, key-value writes and reads, streaming echo; a watch on gamma",
        args.concurrency,
        format_duration(args.duration)
    );

    // A watch on the Unix-socket server for the whole run.
    let watch = {
        let shared = shared.clone();
        let client = KeyValueClient::new(servers[2].channel.clone());
        tokio::spawn(async move {
            let request = WatchRequest {
                prefix: "demo/".into(),
                send_initial: false,
            };
            if let Ok(response) = client.watch(request).await {
                let mut events = response.into_inner();
                while let Ok(Some(_)) = events.message().await {
                    shared.watch_events.fetch_add(1, Ordering::Relaxed);
                }
            }
        })
    };

    let started = Instant::now();
    let deadline = started + args.duration;
    let workers: Vec<_> = (0..args.concurrency.max(1))
        .map(|worker| {
            let (channels, shared) = (channels.clone(), shared.clone());
            tokio::spawn(async move {
                let mut n = worker as u64;
                while Instant::now() < deadline {
                    one_call(&channels, &shared, worker, n).await;
                    n += 1;
                }
            })
        })
        .collect();

    // Progress, and the graceful shutdown of one server part-way through.
    let progress = indicatif::ProgressBar::new(args.duration.as_millis() as u64);
    progress.set_style(
        indicatif::ProgressStyle::with_template("{spinner} [{elapsed_precise}] {wide_bar} {msg}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let leave_at = started + args.duration.mul_f64(0.4);
    let mut leaving: Option<(Duration, JoinHandle<ShutdownReport>)> = None;
    let mut stopped = vec![false; servers.len()];
    while Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
        if leaving.is_none() && Instant::now() >= leave_at {
            let server = &mut servers[LEAVING];
            server.handle.shutdown();
            stopped[LEAVING] = true;
            let task = std::mem::replace(
                &mut server.task,
                tokio::spawn(async { ShutdownReport::default() }),
            );
            let at = started.elapsed();
            leaving = Some((at, task));
            progress.println(format!(
                "server {} shutting down gracefully at {}",
                server.name,
                format_duration(at)
            ));
        }
        let calls = shared.calls.load(Ordering::Relaxed);
        progress.set_position(started.elapsed().as_millis() as u64);
        progress.set_message(format!(
            "{calls} calls ({:.0}/s), {} errors, {} failovers, {} watch events",
            calls as f64 / started.elapsed().as_secs_f64(),
            shared.errors.load(Ordering::Relaxed),
            shared.failovers.load(Ordering::Relaxed),
            shared.watch_events.load(Ordering::Relaxed),
        ));
    }
    for worker in workers {
        let _ = worker.await;
    }
    progress.finish_and_clear();
    let elapsed = started.elapsed();

    let mut leaving_report = None;
    if let Some((at, task)) = leaving {
        leaving_report = Some((at, task.await.unwrap_or_default()));
    }
    for (index, server) in servers.into_iter().enumerate() {
        if !stopped[index] {
            server.handle.shutdown();
            let _ = server.task.await;
        }
    }
    watch.abort();
    print!("{}", report(args, &shared, elapsed, leaving_report));
    let errors = shared.errors.load(Ordering::Relaxed);
    if shared.calls.load(Ordering::Relaxed) == 0 {
        return Err(CliError::failure("the demo made no successful call"));
    }
    if errors > 0 {
        eprintln!("note: {errors} calls failed on every server they tried (see the report)");
    }
    Ok(())
}

fn transport(address: &Address) -> &'static str {
    address.scheme()
}

/// One call of the mix, on the worker's next server, failing over to the others
/// when a server is unavailable (shutting down or gone).
async fn one_call(channels: &[(Channel, &'static str)], shared: &Shared, worker: usize, n: u64) {
    let kind = Kind::for_call(n);
    let first = (worker + n as usize) % channels.len();
    let all_down = shared.down.iter().all(|down| down.load(Ordering::Relaxed));
    let mut last_error = None;
    for attempt in 0..channels.len() {
        let index = (first + attempt) % channels.len();
        if !all_down && shared.down[index].load(Ordering::Relaxed) {
            continue;
        }
        let (channel, transport) = &channels[index];
        let started = Instant::now();
        match call(channel, kind, worker, n, shared).await {
            Ok(()) => {
                shared.calls.fetch_add(1, Ordering::Relaxed);
                *shared
                    .by_kind
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .entry(kind)
                    .or_default() += 1;
                let mut tallies = shared
                    .by_transport
                    .lock()
                    .unwrap_or_else(|e| e.into_inner());
                tallies
                    .entry(transport)
                    .or_insert_with(TransportTally::new)
                    .latency
                    .saturating_record(started.elapsed().as_micros() as u64);
                return;
            }
            Err(status) if status.code() == Code::Unavailable => {
                shared.down[index].store(true, Ordering::Relaxed);
                shared.failovers.fetch_add(1, Ordering::Relaxed);
                last_error = Some((status, *transport));
            }
            Err(status) => {
                last_error = Some((status, *transport));
                break;
            }
        }
    }
    if let Some((status, transport)) = last_error {
        shared.errors.fetch_add(1, Ordering::Relaxed);
        let mut tallies = shared
            .by_transport
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        *tallies
            .entry(transport)
            .or_insert_with(TransportTally::new)
            .errors
            .entry(status.code().as_str())
            .or_default() += 1;
    }
}

async fn call(
    channel: &Channel,
    kind: Kind,
    worker: usize,
    n: u64,
    shared: &Shared,
) -> Result<(), Status> {
    let message = format!("worker {worker} call {n}");
    match kind {
        Kind::UnaryEcho => {
            let echo = EchoClient::new(channel.clone());
            let reply = echo
                .unary_echo(EchoRequest {
                    message: message.clone(),
                })
                .await?;
            if reply.get_ref().message != message {
                return Err(Status::data_loss("echo came back different"));
            }
        }
        Kind::KeyValue => {
            let kv = KeyValueClient::new(channel.clone());
            let key = format!("demo/worker-{worker}");
            kv.put(PutRequest {
                key: key.clone(),
                value: message.clone().into_bytes(),
                expected_version: None,
            })
            .await?;
            kv.get(GetRequest { key }).await?;
        }
        Kind::StreamingEcho => {
            let echo = EchoClient::new(channel.clone());
            let mut request = Request::new(EchoRequest { message });
            request
                .metadata_mut()
                .insert("x-repeat", "5")
                .map_err(|e| Status::internal(e.to_string()))?;
            let mut stream = echo.server_streaming_echo(request).await?.into_inner();
            while stream.message().await?.is_some() {
                shared.stream_messages.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
    Ok(())
}

fn report(
    args: &Args,
    shared: &Shared,
    elapsed: Duration,
    leaving: Option<(Duration, ShutdownReport)>,
) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let calls = shared.calls.load(Ordering::Relaxed);
    let _ = writeln!(out, "\nsinew demo report");
    let _ = writeln!(
        out,
        "  {} servers ({}), {} client tasks, {}: {calls} calls ({:.0}/s), {} failed",
        SERVERS.len(),
        server_kinds(),
        args.concurrency,
        format_duration(elapsed),
        calls as f64 / elapsed.as_secs_f64(),
        shared.errors.load(Ordering::Relaxed),
    );
    if let Some((at, report)) = leaving {
        let _ = writeln!(
            out,
            "  server {} shut down gracefully at {}: {} calls in flight drained, {} cancelled; \
             {} calls failed over to another server",
            SERVERS[LEAVING].0,
            format_duration(at),
            report.drained_calls,
            report.cancelled_calls,
            shared.failovers.load(Ordering::Relaxed),
        );
    }
    let _ = writeln!(out, "  by call kind:");
    for (kind, count) in shared
        .by_kind
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
    {
        let _ = writeln!(out, "    {:<36} {count}", kind.name());
    }
    let _ = writeln!(
        out,
        "  streamed messages received: {}; watch events seen on gamma: {}",
        shared.stream_messages.load(Ordering::Relaxed),
        shared.watch_events.load(Ordering::Relaxed)
    );
    let _ = writeln!(
        out,
        "  {:<10} {:>9} {:>9} {:>9} {:>9}  errors by code",
        "transport", "calls", "p50 us", "p99 us", "p999 us"
    );
    for (transport, tally) in shared
        .by_transport
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
    {
        let errors = if tally.errors.is_empty() {
            "none".to_owned()
        } else {
            tally
                .errors
                .iter()
                .map(|(code, n)| format!("{code} {n}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let _ = writeln!(
            out,
            "  {:<10} {:>9} {:>9} {:>9} {:>9}  {errors}",
            transport,
            tally.latency.len(),
            tally.latency.value_at_quantile(0.5),
            tally.latency.value_at_quantile(0.99),
            tally.latency.value_at_quantile(0.999),
        );
    }
    out
}

/// How many servers listen on each transport, as `2 tcp, 1 unix, 1 shm`.
fn server_kinds() -> String {
    let mut kinds: Vec<(&str, usize)> = Vec::new();
    for (_, address) in SERVERS {
        let scheme = address.split("://").next().unwrap_or(address);
        match kinds.iter_mut().find(|(kind, _)| *kind == scheme) {
            Some((_, count)) => *count += 1,
            None => kinds.push((scheme, 1)),
        }
    }
    kinds
        .iter()
        .map(|(kind, count)| format!("{count} {kind}"))
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_report_prints_durations_rounded_for_humans() {
        let args = Args {
            duration: Duration::from_secs(2),
            concurrency: 8,
        };
        let shared = Shared::default();
        shared.calls.store(4_000, Ordering::Relaxed);
        let text = report(
            &args,
            &shared,
            Duration::from_nanos(2_003_456_789),
            Some((Duration::from_nanos(812_345_678), ShutdownReport::default())),
        );
        assert!(
            text.contains("8 client tasks, 2s: 4000 calls (1997/s), 0 failed"),
            "{text}"
        );
        assert!(
            text.contains("server beta shut down gracefully at 812ms: 0 calls in flight drained"),
            "{text}"
        );
        assert!(!text.contains("2.003456789"), "{text}");
    }
}

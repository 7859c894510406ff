//! The load generators (closed loop, open loop at a fixed rate, server
//! streams), what they count ([`Tally`]), the plan of cells, and the runtimes
//! they drive systems on.

use crate::sample::Sample;
use crate::systems::System;
use hdrhistogram::Histogram;
use std::future::Future;
use std::time::{Duration, Instant};
use tokio::runtime::Runtime;

/// What to run.
#[derive(Debug, Clone)]
pub(crate) struct Plan {
    pub(crate) systems: Vec<System>,
    pub(crate) payloads: Vec<usize>,
    /// More payload sizes, for the sinew transports only (the shared-memory
    /// comparison: shm vs Unix socket vs TCP).
    pub(crate) local_payloads: Vec<usize>,
    pub(crate) concurrency: Vec<usize>,
    /// Client connections the matrix's calls are spread over (usually 1).
    pub(crate) connections: usize,
    /// Many-client shapes, at 1 KiB: (connections, calls in flight on each).
    pub(crate) shapes: Vec<(usize, usize)>,
    /// Open-loop rates, as fractions of the rate tonic sustains in the open
    /// loop (searched in the same run; see [`crate::isolate::OpenLoopBase`]).
    pub(crate) open_loop: Vec<f64>,
    /// Idle-connection cells: this many connections per system, each after
    /// one call (0: none).
    pub(crate) idle_connections: usize,
    /// The shapes of the `h2load-*` rows (see [`H2LOAD_SHAPES`]).
    pub(crate) h2load_shapes: Vec<(usize, usize)>,
    /// Server-streaming cells: streams per cell (one connection each).
    pub(crate) streams: Vec<usize>,
    /// Payload sizes of the `bytes` cells (the systems with [`System::has_bytes_echo`], at
    /// [`BYTES_CONCURRENCY`] on one connection).
    pub(crate) bytes_payloads: Vec<usize>,
    /// Set in a child: the one cell it runs (`--cell`).
    pub(crate) only: Option<Cell>,
    pub(crate) warmup: Duration,
    pub(crate) duration: Duration,
    pub(crate) server_threads: usize,
    pub(crate) client_threads: usize,
}

/// One cell of the matrix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Cell {
    pub(crate) system: System,
    pub(crate) payload: usize,
    /// Calls in flight, in all.
    pub(crate) concurrency: usize,
    /// Client connections (clients) the calls are spread over; 1 but for the
    /// many-client shapes. Systems whose client pools connections itself
    /// (Volo; raw ping-pong, one connection per call) get one client each.
    pub(crate) connections: usize,
    /// Open loop: calls started per second at fixed intended times, each
    /// timed from its intended start ([`open_loop`]); 0 for a closed loop
    /// (`concurrency` calls in flight). Open-loop cells have `concurrency` 0.
    pub(crate) rate: u32,
    /// Server streaming: `concurrency` streams of echoed messages on one
    /// connection, read as fast as they come ([`drive_streams`]).
    pub(crate) streaming: bool,
    /// The payload travels as bytes (protobuf `bytes`, Thrift `binary`, Go
    /// `[]byte`) instead of a string: no UTF-8 check, and no copy where the
    /// framework can share the received buffer. Closed-loop cells only.
    pub(crate) bytes: bool,
}

/// The payload of the many-client shapes.
pub(crate) const SHAPE_PAYLOAD: usize = 1024;

/// The shapes the `h2load-*` rows run by default, at [`SHAPE_PAYLOAD`]:
/// (connections, streams in flight on each): one connection with 64 streams,
/// and 64 connections with one.
pub(crate) const H2LOAD_SHAPES: [(usize, usize); 2] = [(1, 64), (64, 1)];

/// The systems that run the open-loop cells: those driven by a Rust client
/// this harness can pace (not the Go client, h2load or the raw baselines).
pub(crate) const OPEN_LOOP_SYSTEMS: [System; 6] = [
    System::SinewTcp,
    System::SinewGrpc,
    System::Tonic,
    System::Tarpc,
    System::Volo,
    System::GrpcGo,
];

/// The systems that run the server-streaming cells: those with server
/// streaming (not tarpc or Volo Thrift, not Go's net/rpc).
pub(crate) const STREAM_SYSTEMS: [System; 6] = [
    System::SinewTcp,
    System::SinewUnix,
    System::SinewShm,
    System::SinewGrpc,
    System::Tonic,
    System::GrpcGo,
];

/// Calls in flight in the balancing rows' cell.
pub(crate) const BALANCED_CONCURRENCY: usize = 64;

/// Calls in flight in the `bytes` cells.
pub(crate) const BYTES_CONCURRENCY: usize = 64;

/// The systems that run the idle-connection cells: those whose client this
/// harness can run in a process of its own (not Go's net/rpc client, whose
/// server the Go client drives; not the raw baselines).
pub(crate) const IDLE_SYSTEMS: [System; 6] = OPEN_LOOP_SYSTEMS;

impl Cell {
    /// An idle-connection cell: `connections` connections that each made one
    /// call of [`SHAPE_PAYLOAD`], then stay open and quiet (the server's
    /// memory per connection; see `systems::idle`).
    pub(crate) fn idle(system: System, connections: usize) -> Cell {
        Cell {
            system,
            payload: SHAPE_PAYLOAD,
            concurrency: 0,
            connections,
            rate: 0,
            streaming: false,
            bytes: false,
        }
    }

    /// A server-streaming cell: `streams` streams of `payload`-byte messages
    /// on one connection.
    pub(crate) fn stream(system: System, payload: usize, streams: usize) -> Cell {
        Cell {
            system,
            payload,
            concurrency: streams,
            connections: 1,
            rate: 0,
            streaming: true,
            bytes: false,
        }
    }

    /// Whether this is an idle-connection cell.
    pub(crate) fn is_idle(&self) -> bool {
        self.concurrency == 0 && self.rate == 0
    }

    /// A closed-loop cell of the `bytes` payload: `concurrency` calls in
    /// flight on one connection.
    pub(crate) fn bytes(system: System, payload: usize, concurrency: usize) -> Cell {
        Cell {
            bytes: true,
            ..Cell::closed(system, payload, concurrency, 1)
        }
    }

    /// The cell as one command-line argument (`--cell`):
    /// `SYSTEM:PAYLOAD:CONCURRENCY:CONNECTIONS:RATE`, then `:stream` for a
    /// streaming cell, `:bytes` for the bytes payload.
    pub(crate) fn to_arg(self) -> String {
        format!(
            "{}:{}:{}:{}:{}{}{}",
            self.system.name(),
            self.payload,
            self.concurrency,
            self.connections,
            self.rate,
            if self.streaming { ":stream" } else { "" },
            if self.bytes { ":bytes" } else { "" }
        )
    }

    /// Reads what [`Cell::to_arg`] wrote.
    pub(crate) fn from_arg(arg: &str) -> anyhow::Result<Cell> {
        use clap::ValueEnum;
        let mut parts: Vec<&str> = arg.split(':').collect();
        let bytes = parts.last() == Some(&"bytes");
        if bytes {
            parts.pop();
        }
        let streaming = parts.last() == Some(&"stream");
        if streaming {
            parts.pop();
        }
        let [system, payload, concurrency, connections, rate] = parts[..] else {
            anyhow::bail!(
                "--cell `{arg}` is not SYSTEM:PAYLOAD:CONCURRENCY:CONNECTIONS:RATE[:stream][:bytes]"
            );
        };
        let system = System::from_str(system, false)
            .map_err(|_| anyhow::anyhow!("--cell: no system `{system}`"))?;
        Ok(Cell {
            system,
            payload: payload.parse()?,
            concurrency: concurrency.parse()?,
            connections: connections.parse::<usize>()?.max(1),
            rate: rate.parse()?,
            streaming,
            bytes,
        })
    }

    /// A closed-loop cell: `concurrency` calls in flight over `connections`.
    pub(crate) fn closed(
        system: System,
        payload: usize,
        concurrency: usize,
        connections: usize,
    ) -> Cell {
        Cell {
            system,
            payload,
            concurrency,
            connections,
            rate: 0,
            streaming: false,
            bytes: false,
        }
    }

    /// An open-loop cell: `rate` calls started per second, on one connection.
    pub(crate) fn open(system: System, payload: usize, rate: u32) -> Cell {
        Cell {
            system,
            payload,
            concurrency: 0,
            connections: 1,
            rate,
            streaming: false,
            bytes: false,
        }
    }

    /// The cell as the progress lines and the table name it.
    pub(crate) fn label(&self) -> String {
        if self.streaming {
            return format!(
                "{:<17} {:>7} B  {} server stream(s)",
                self.system.name(),
                self.payload,
                self.concurrency
            );
        }
        if self.is_idle() {
            return format!(
                "{:<17} {} idle connections",
                self.system.name(),
                self.connections
            );
        }
        if self.rate > 0 {
            return format!(
                "{:<17} {:>7} B  open loop at {}/s",
                self.system.name(),
                self.payload,
                self.rate
            );
        }
        format!(
            "{:<17} {:>7} B  c={:<4} k={:<4}{}",
            self.system.name(),
            self.payload,
            self.concurrency,
            self.connections,
            if self.bytes { " bytes" } else { "" }
        )
    }
}

/// The figures of one cell.
#[derive(Debug, Clone)]
pub(crate) struct Stats {
    pub(crate) calls: u64,
    pub(crate) errors: u64,
    /// Why the first failed call failed: a failed cell says why.
    pub(crate) first_error: Option<String>,
    pub(crate) elapsed: Duration,
    pub(crate) latency: Histogram<u64>,
    /// Process CPU time (user + system) during the measured phase.
    pub(crate) cpu: Duration,
}

/// What call loops counted: the latency of every answered call, the calls
/// answered and failed, and the first failure's reason. Each loop (or
/// connection) keeps its own, merged at the end of the phase.
#[derive(Debug)]
pub(crate) struct Tally {
    latency: Histogram<u64>,
    calls: u64,
    errors: u64,
    first_error: Option<String>,
}

impl Tally {
    pub(crate) fn new() -> Tally {
        Tally {
            latency: new_histogram(),
            calls: 0,
            errors: 0,
            first_error: None,
        }
    }

    /// A call answered (and checked) after `latency`.
    pub(crate) fn answered(&mut self, latency: Duration) {
        self.calls += 1;
        self.latency.saturating_record(latency.as_nanos() as u64);
    }

    /// Calls answered so far.
    pub(crate) fn calls(&self) -> u64 {
        self.calls
    }

    /// A call (or a loop, or a connection) failed.
    pub(crate) fn failed(&mut self, why: impl std::fmt::Display) {
        self.errors += 1;
        if self.first_error.is_none() {
            self.first_error = Some(why.to_string());
        }
    }

    pub(crate) fn merge(&mut self, other: Tally) {
        let _ = self.latency.add(&other.latency);
        self.calls += other.calls;
        self.errors += other.errors;
        if self.first_error.is_none() {
            self.first_error = other.first_error;
        }
    }

    /// The cell's figures, for a measured phase of `elapsed` that cost `cpu`.
    pub(crate) fn into_stats(self, elapsed: Duration, cpu: Duration) -> Stats {
        Stats {
            calls: self.calls,
            errors: self.errors,
            first_error: self.first_error,
            elapsed,
            latency: self.latency,
            cpu,
        }
    }
}

impl Stats {
    pub(crate) fn qps(&self) -> f64 {
        self.calls as f64 / self.elapsed.as_secs_f64()
    }

    /// Latency percentile in microseconds.
    pub(crate) fn percentile_us(&self, q: f64) -> f64 {
        self.latency.value_at_quantile(q) as f64 / 1_000.0
    }

    pub(crate) fn cpu_us_per_call(&self) -> f64 {
        if self.calls == 0 {
            return 0.0;
        }
        self.cpu.as_secs_f64() * 1e6 / self.calls as f64
    }
}

/// The server and client runtimes, with the same thread counts for every system.
pub(crate) struct Runtimes {
    pub(crate) server: Runtime,
    pub(crate) client: Runtime,
}

impl Runtimes {
    pub(crate) fn new(plan: &Plan) -> anyhow::Result<Runtimes> {
        let build = |threads: usize, name: &str| {
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(threads)
                .thread_name(name)
                .enable_all()
                .build()
        };
        Ok(Runtimes {
            server: build(plan.server_threads, "bench-server")?,
            client: build(plan.client_threads, "bench-client")?,
        })
    }
}

/// Something that makes one echo call with the cell's payload and checks the answer.
pub(crate) trait Caller: Clone + Send + Sync + 'static {
    fn call(&self) -> impl Future<Output = anyhow::Result<()>> + Send;
}

/// Something that opens a server stream of echoed messages (the cell's
/// payload, `repeat` times) and checks each message as it is read.
pub(crate) trait Streamer: Clone + Send + Sync + 'static {
    fn open(
        &self,
        repeat: u32,
    ) -> impl Future<
        Output = anyhow::Result<futures_util::stream::BoxStream<'static, anyhow::Result<()>>>,
    > + Send;
}

/// A server stream of echoes as a [`Streamer`] returns it: each message
/// compared with `payload`.
pub(crate) fn checked_echoes(
    messages: impl futures_util::Stream<Item = anyhow::Result<String>> + Send + 'static,
    payload: String,
) -> futures_util::stream::BoxStream<'static, anyhow::Result<()>> {
    use futures_util::StreamExt;
    messages
        .map(move |message| {
            anyhow::ensure!(message? == payload, "wrong echo");
            Ok(())
        })
        .boxed()
}

/// Messages asked for per stream (sinew-examples' echo allows at most a
/// million); a stream that ends before the phase does is replaced.
const STREAM_REPEAT: u32 = 1_000_000;

/// Drives a server-streaming cell: `cell.concurrency` streams read as fast
/// as messages come, for the plan's warm-up and then its measured phase. The
/// QPS figure is messages per second; the latencies are the gaps between
/// consecutive messages of a stream.
pub(crate) fn drive_streams<S: Streamer>(
    runtimes: &Runtimes,
    plan: &Plan,
    cell: Cell,
    streamer: S,
    cpu: impl Fn() -> Duration + Send + 'static,
) -> Stats {
    let streams = cell.concurrency;
    runtimes.client.block_on(async move {
        stream_phase(streamer.clone(), streams, plan.warmup).await;
        let cpu_before = cpu();
        let started = Instant::now();
        let tally = stream_phase(streamer, streams, plan.duration).await;
        let elapsed = started.elapsed().min(plan.duration);
        tally.into_stats(elapsed, cpu().saturating_sub(cpu_before))
    })
}

async fn stream_phase<S: Streamer>(streamer: S, streams: usize, duration: Duration) -> Tally {
    use futures_util::StreamExt;
    let deadline = Instant::now() + duration;
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..streams {
        let streamer = streamer.clone();
        tasks.spawn(async move {
            let mut tally = Tally::new();
            'streams: while Instant::now() < deadline {
                let mut stream = match streamer.open(STREAM_REPEAT).await {
                    Ok(stream) => stream,
                    Err(error) => {
                        tally.failed(format_args!("opening a stream: {error:#}"));
                        break;
                    }
                };
                let mut last = Instant::now();
                while let Some(item) = stream.next().await {
                    let now = Instant::now();
                    if now >= deadline {
                        // Dropping the stream cancels it.
                        break 'streams;
                    }
                    match item {
                        Ok(()) => tally.answered(now - last),
                        Err(error) => {
                            tally.failed(format_args!("{error:#}"));
                            break 'streams;
                        }
                    }
                    last = now;
                }
            }
            tally
        });
    }
    join_phase(tasks, deadline, "a stream").await
}

/// Merges what the tasks of a phase counted as they end. A watchdog for the
/// whole phase rather than a timer per call (which would cost every system a
/// timer registration per call): a task (`what`) still running CALL_LIMIT
/// after the deadline is stuck, and counts as one failure.
async fn join_phase(
    mut tasks: tokio::task::JoinSet<Tally>,
    deadline: Instant,
    what: &str,
) -> Tally {
    let mut tally = Tally::new();
    let watchdog = tokio::time::sleep_until((deadline + CALL_LIMIT).into());
    tokio::pin!(watchdog);
    loop {
        tokio::select! {
            joined = tasks.join_next() => match joined {
                Some(Ok(task_tally)) => tally.merge(task_tally),
                Some(Err(error)) => tally.failed(format_args!("{what} ended: {error}")),
                None => break,
            },
            _ = &mut watchdog => {
                for _ in 0..tasks.len() {
                    tally.failed(format_args!("{what} still running {CALL_LIMIT:?} after the phase"));
                }
                tasks.abort_all();
                break;
            }
        }
    }
    tally
}

/// Spreads the closed loop's loops over one caller per connection: each clone
/// (one per loop) takes the next caller in turn, so `c` loops over `k`
/// connections put `c / k` calls in flight on each.
pub(crate) struct OverConnections<C> {
    callers: std::sync::Arc<Vec<C>>,
    next: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    mine: usize,
}

impl<C> OverConnections<C> {
    pub(crate) fn new(callers: Vec<C>) -> OverConnections<C> {
        assert!(!callers.is_empty(), "at least one connection");
        OverConnections {
            callers: std::sync::Arc::new(callers),
            next: std::sync::Arc::default(),
            mine: 0,
        }
    }
}

impl<C> OverConnections<C> {
    /// The callers, one per connection.
    pub(crate) fn callers(&self) -> &[C] {
        &self.callers
    }
}

impl<C> Clone for OverConnections<C> {
    fn clone(&self) -> Self {
        let turn = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        OverConnections {
            callers: self.callers.clone(),
            next: self.next.clone(),
            mine: turn % self.callers.len(),
        }
    }
}

impl<C: Caller> Caller for OverConnections<C> {
    fn call(&self) -> impl Future<Output = anyhow::Result<()>> + Send {
        self.callers[self.mine].call()
    }
}

/// How long after a phase's deadline a call may still be running before its loop
/// counts as stuck: keeps every phase bounded in time even if a system hangs.
const CALL_LIMIT: Duration = Duration::from_secs(5);

pub(crate) fn new_histogram() -> Histogram<u64> {
    // 1 ns to 60 s, 3 significant digits.
    Histogram::new_with_bounds(1, 60_000_000_000, 3).expect("valid histogram bounds")
}

/// Process CPU time so far (user + system, all threads).
pub(crate) fn process_cpu() -> Duration {
    use nix::sys::resource::{getrusage, UsageWho};
    match getrusage(UsageWho::RUSAGE_SELF) {
        Ok(usage) => {
            let user = usage.user_time();
            let system = usage.system_time();
            let micros =
                |t: nix::sys::time::TimeVal| t.tv_sec() as u64 * 1_000_000 + t.tv_usec() as u64;
            Duration::from_micros(micros(user) + micros(system))
        }
        Err(_) => Duration::ZERO,
    }
}

/// Drives the cell's load through `caller` on the client runtime: the plan's
/// warm-up, then its measured phase. A closed loop (the cell's `concurrency`
/// loops, each making its next call when the last one is answered), or an
/// open loop for a cell with a rate ([`open_loop`]).
pub(crate) fn drive<C: Caller>(runtimes: &Runtimes, plan: &Plan, cell: Cell, caller: C) -> Stats {
    drive_measuring(runtimes, plan, cell, caller, process_cpu)
}

/// Most calls an open loop lets be outstanding. A system slower than the rate
/// builds a queue, and its latencies (timed from the intended starts) show
/// it; past this bound (seconds of backlog at the rates run here) the calls it
/// cannot start fail, and so does the cell, rather than holding memory
/// without end.
const OPEN_LOOP_OUTSTANDING: usize = 100_000;

/// The open loop (wrk2's method): calls start at fixed intended times,
/// `cell.rate` per second, whether or not earlier calls were answered, and
/// each is timed from its intended start, so a stall shows in the latencies of
/// every call it delayed (no coordinated omission).
///
/// A pacing thread of its own sleeps to each intended time (to tens of
/// microseconds; the runtime's timer has a millisecond's grain, which would
/// add up to a millisecond to every call) and spawns the calls that are due
/// onto the client runtime.
fn open_loop<C: Caller>(
    runtimes: &Runtimes,
    plan: &Plan,
    cell: Cell,
    caller: C,
    cpu: impl Fn() -> Duration,
) -> Stats {
    let handle = runtimes.client.handle().clone();
    open_phase(&handle, &caller, cell.rate, plan.warmup);
    let cpu_before = cpu();
    let started = Instant::now();
    let tally = open_phase(&handle, &caller, cell.rate, plan.duration);
    // Until the last call was answered: the QPS is the rate when the system
    // keeps up, and less when it had a backlog left to drain at the end.
    let elapsed = started.elapsed();
    tally.into_stats(elapsed, cpu().saturating_sub(cpu_before))
}

/// One open-loop phase: `rate` calls a second for `duration` (see
/// [`open_loop`]), then until the calls still out are answered (or
/// [`CALL_LIMIT`] has passed).
pub(crate) fn open_phase<C: Caller>(
    handle: &tokio::runtime::Handle,
    caller: &C,
    rate: u32,
    duration: Duration,
) -> Tally {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{Arc, Mutex};
    let tally = Arc::new(Mutex::new(Tally::new()));
    let outstanding = Arc::new(AtomicUsize::new(0));
    let interval = Duration::from_secs_f64(1.0 / f64::from(rate.max(1)));
    let start = Instant::now();
    let end = start + duration;
    let mut next = start;
    let mut refused = 0u64;
    while next < end {
        let now = Instant::now();
        if next > now {
            std::thread::sleep(next - now);
            continue;
        }
        // Every call whose intended time has come.
        while next <= now && next < end {
            let intended = next;
            next += interval;
            if outstanding.load(Ordering::Relaxed) >= OPEN_LOOP_OUTSTANDING {
                refused += 1;
                continue;
            }
            outstanding.fetch_add(1, Ordering::Relaxed);
            let (caller, tally, outstanding) = (caller.clone(), tally.clone(), outstanding.clone());
            handle.spawn(async move {
                let result = caller.call().await;
                let latency = intended.elapsed();
                {
                    let mut tally = tally.lock().unwrap_or_else(|e| e.into_inner());
                    match result {
                        Ok(()) => tally.answered(latency),
                        Err(error) => tally.failed(format_args!("{error:#}")),
                    }
                }
                outstanding.fetch_sub(1, Ordering::Release);
            });
        }
    }
    // The calls still out get until CALL_LIMIT past the phase.
    while outstanding.load(Ordering::Acquire) > 0 && Instant::now() < end + CALL_LIMIT {
        std::thread::sleep(Duration::from_millis(1));
    }
    let still_out = outstanding.load(Ordering::Acquire);
    let mut tally = std::mem::replace(
        &mut *tally.lock().unwrap_or_else(|e| e.into_inner()),
        Tally::new(),
    );
    for _ in 0..refused {
        tally.failed(format_args!(
            "{OPEN_LOOP_OUTSTANDING} calls outstanding: the system does not keep up with {rate}/s"
        ));
    }
    for _ in 0..still_out {
        tally.failed(format_args!(
            "a call still running {CALL_LIMIT:?} after the phase"
        ));
    }
    tally
}

/// [`drive`], with the CPU time of the measured phase read from `cpu`
/// (for a server in another process: this process's CPU plus that one's).
pub(crate) fn drive_measuring<C: Caller>(
    runtimes: &Runtimes,
    plan: &Plan,
    cell: Cell,
    caller: C,
    cpu: impl Fn() -> Duration + Send + 'static,
) -> Stats {
    if cell.rate > 0 {
        return open_loop(runtimes, plan, cell, caller, cpu);
    }
    let (concurrency, warmup, duration) = (cell.concurrency, plan.warmup, plan.duration);
    runtimes.client.block_on(async move {
        phase(caller.clone(), concurrency, warmup).await;
        let cpu_before = cpu();
        let started = Instant::now();
        let tally = phase(caller, concurrency, duration).await;
        let elapsed = started.elapsed();
        tally.into_stats(elapsed, cpu().saturating_sub(cpu_before))
    })
}

async fn phase<C: Caller>(caller: C, concurrency: usize, duration: Duration) -> Tally {
    let deadline = Instant::now() + duration;
    let mut loops = tokio::task::JoinSet::new();
    for _ in 0..concurrency {
        let caller = caller.clone();
        loops.spawn(async move {
            let mut tally = Tally::new();
            loop {
                let started = Instant::now();
                if started >= deadline {
                    break;
                }
                match caller.call().await {
                    Ok(()) => tally.answered(started.elapsed()),
                    Err(error) => tally.failed(format_args!("{error:#}")),
                }
            }
            tally
        });
    }
    join_phase(loops, deadline, "a call loop").await
}

impl Plan {
    /// The payload sizes `system` runs, smallest first.
    pub(crate) fn payloads_for(&self, system: System) -> Vec<usize> {
        let mut payloads = self.payloads.clone();
        if system.is_sinew_transport() {
            payloads.extend(&self.local_payloads);
        }
        payloads.sort_unstable();
        payloads.dedup();
        payloads
    }

    /// Every cell of the matrix, one system at a time (the order `--in-process`
    /// runs them in; the isolated runs shuffle it).
    pub(crate) fn cells(&self) -> Vec<Cell> {
        if let Some(cell) = self.only {
            return vec![cell];
        }
        let mut cells = Vec::new();
        for &system in &self.systems {
            if system.is_h2load() {
                for &(connections, each) in &self.h2load_shapes {
                    cells.push(Cell::closed(
                        system,
                        SHAPE_PAYLOAD,
                        connections * each,
                        connections,
                    ));
                }
                continue;
            }
            if system.is_balanced() {
                cells.push(Cell::closed(system, SHAPE_PAYLOAD, BALANCED_CONCURRENCY, 1));
                continue;
            }
            for payload in self.payloads_for(system) {
                for &concurrency in &self.concurrency {
                    cells.push(Cell::closed(system, payload, concurrency, self.connections));
                }
            }
            for &(connections, each) in &self.shapes {
                cells.push(Cell::closed(
                    system,
                    SHAPE_PAYLOAD,
                    connections * each,
                    connections,
                ));
            }
            if self.idle_connections > 0 && IDLE_SYSTEMS.contains(&system) {
                cells.push(Cell::idle(system, self.idle_connections));
            }
            if STREAM_SYSTEMS.contains(&system) {
                for &streams in &self.streams {
                    cells.push(Cell::stream(system, SHAPE_PAYLOAD, streams));
                }
            }
            if system.has_bytes_echo() {
                for &payload in &self.bytes_payloads {
                    cells.push(Cell::bytes(system, payload, BYTES_CONCURRENCY));
                }
            }
        }
        cells
    }

    /// The open-loop cells at `rate` of the plan's systems that run them.
    pub(crate) fn open_cells(&self, rate: u32, payloads: &[usize]) -> Vec<Cell> {
        let mut cells = Vec::new();
        for &system in &self.systems {
            if OPEN_LOOP_SYSTEMS.contains(&system) {
                for &payload in payloads {
                    cells.push(Cell::open(system, payload, rate));
                }
            }
        }
        cells
    }
}

/// Runs every cell of the plan once, in this process and in order, and hands
/// each cell's figures to `done` as it finishes. A cell that fails to start is
/// an error; calls that fail are counted in its figures.
pub(crate) fn run_in_process(
    plan: &Plan,
    mut done: impl FnMut(Sample) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let runtimes = Runtimes::new(plan)?;
    for cell in plan.cells() {
        done(crate::systems::run_cell(&runtimes, plan, cell)?)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Answers at once, or fails every other call.
    #[derive(Clone)]
    struct Echo {
        fail_every_other: bool,
        made: std::sync::Arc<std::sync::atomic::AtomicU64>,
    }

    impl Caller for Echo {
        async fn call(&self) -> anyhow::Result<()> {
            let n = self.made.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            anyhow::ensure!(
                !self.fail_every_other || n.is_multiple_of(2),
                "call {n} failed"
            );
            Ok(())
        }
    }

    /// The open loop starts exactly one call per intended time, whatever the
    /// timer's grain or the calls' speed, and counts every outcome.
    #[test]
    fn the_open_loop_starts_one_call_per_intended_time() {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        for fail_every_other in [false, true] {
            let caller = Echo {
                fail_every_other,
                made: Default::default(),
            };
            // 2,000/s for 100 ms: intended times 0, 0.5 ms, ..., 99.5 ms.
            let tally = open_phase(runtime.handle(), &caller, 2_000, Duration::from_millis(100));
            assert_eq!(tally.calls + tally.errors, 200);
            assert_eq!(tally.errors, if fail_every_other { 100 } else { 0 });
            assert_eq!(tally.first_error.is_some(), fail_every_other);
            assert_eq!(tally.latency.len(), tally.calls);
        }
    }
}

//! The closed-loop load generator and the runtimes it drives systems on.

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
}

/// The payload of the many-client shapes.
pub(crate) const SHAPE_PAYLOAD: usize = 1024;

/// The shapes the `h2load-*` rows run, at [`SHAPE_PAYLOAD`]: (connections,
/// streams in flight on each): one connection with 64 streams, and 64
/// connections with one.
pub(crate) const H2LOAD_SHAPES: [(usize, usize); 2] = [(1, 64), (64, 1)];

impl Cell {
    /// The cell as the progress lines and the table name it.
    pub(crate) fn label(&self) -> String {
        format!(
            "{:<17} {:>7} B  c={:<4} k={:<4}",
            self.system.name(),
            self.payload,
            self.concurrency,
            self.connections
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

/// Runs the cell's `concurrency` loops of calls on the client runtime: the
/// plan's warm-up, then its measured phase.
pub(crate) fn closed_loop<C: Caller>(
    runtimes: &Runtimes,
    plan: &Plan,
    cell: Cell,
    caller: C,
) -> Stats {
    closed_loop_measuring(runtimes, plan, cell, caller, process_cpu)
}

/// [`closed_loop`], with the CPU time of the measured phase read from `cpu`
/// (for a server in another process: this process's CPU plus that one's).
pub(crate) fn closed_loop_measuring<C: Caller>(
    runtimes: &Runtimes,
    plan: &Plan,
    cell: Cell,
    caller: C,
    cpu: impl Fn() -> Duration + Send + 'static,
) -> Stats {
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
    let mut tally = Tally::new();
    // A watchdog for the whole phase rather than a timer per call (which would
    // cost every system a timer registration per call): a loop still running
    // CALL_LIMIT after the deadline is stuck, and counts as one error.
    let watchdog = tokio::time::sleep_until((deadline + CALL_LIMIT).into());
    tokio::pin!(watchdog);
    loop {
        tokio::select! {
            joined = loops.join_next() => match joined {
                Some(Ok(loop_tally)) => tally.merge(loop_tally),
                Some(Err(error)) => tally.failed(format_args!("call loop ended: {error}")),
                None => break,
            },
            _ = &mut watchdog => {
                for _ in 0..loops.len() {
                    tally.failed(format_args!("a call still running {CALL_LIMIT:?} after the phase"));
                }
                loops.abort_all();
                break;
            }
        }
    }
    tally
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
        let mut cells = Vec::new();
        for &system in &self.systems {
            if system.is_h2load() {
                for (connections, each) in H2LOAD_SHAPES {
                    cells.push(Cell {
                        system,
                        payload: SHAPE_PAYLOAD,
                        concurrency: connections * each,
                        connections,
                    });
                }
                continue;
            }
            for payload in self.payloads_for(system) {
                for &concurrency in &self.concurrency {
                    cells.push(Cell {
                        system,
                        payload,
                        concurrency,
                        connections: self.connections,
                    });
                }
            }
            for &(connections, each) in &self.shapes {
                cells.push(Cell {
                    system,
                    payload: SHAPE_PAYLOAD,
                    concurrency: connections * each,
                    connections,
                });
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

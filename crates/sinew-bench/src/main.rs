//! `sinew-bench`: sinew against tonic, tarpc, Volo, grpc-go, Go's net/rpc and
//! raw sockets, side by side, on one machine.
//!
//! Every system serves the same unary echo (a string of the payload size in, the
//! same string out) on a server runtime and is driven by a closed-loop load
//! generator on a client runtime; both runtimes have the same thread counts for
//! every system. Each cell of the matrix (system x payload x concurrency) gets a
//! warm-up, then a fixed measured duration: QPS, latency percentiles from an HDR
//! histogram, and process CPU time per call (client + server, both in the cell's
//! process). Beside the matrix: many-client shapes, open-loop cells at fixed
//! rates ([`load`]), h2load driving the gRPC servers, server memory per idle
//! connection, server-streaming throughput, and the `bytes` payload (a bytes
//! field instead of a string, so that every system can skip UTF-8 checks and
//! copies) ([`systems`]). Every cell runs
//! several times, each time in a fresh process, the cells of each round in
//! random order ([`isolate`]); the report gives medians with their spread, and
//! ratios of medians ([`report`]).
//!
//! See `docs/benchmarks.md` for how to run it and how to read it.

mod isolate;
mod load;
mod report;
mod sample;
mod scratch;
mod systems;

use clap::Parser;
use sinew_bench::cpu;
use std::path::PathBuf;
use std::time::Duration;
use systems::System;

/// Command-line options.
#[derive(Parser, Debug)]
#[command(
    name = "sinew-bench",
    about = "sinew against tonic, tarpc, Volo, grpc-go, Go net/rpc and raw sockets, side by side, every cell repeated in fresh processes",
    after_help = "Examples:\n  sinew-bench --quick --json out.json\n  sinew-bench --systems sinew-tcp,tonic --payloads 1024 --concurrency 64"
)]
struct Options {
    /// Reduced matrix (1 KiB at c=1 and c=64 for every system, 64 KiB and 1 MiB
    /// for the sinew transports; h2load 1x64, the open loop at 80%, 2,000 idle
    /// connections, 64 streams, the bytes payload at 64 KiB; no many-client
    /// shapes), shorter phases, 3 runs: under 5 minutes.
    #[arg(long)]
    quick: bool,
    /// Runs of every cell, each in a fresh process (default 5; 3 with --quick).
    #[arg(long)]
    runs: Option<usize>,
    /// Seed of the random order of the cells in each round (default: from the
    /// clock; the report records it).
    #[arg(long)]
    seed: Option<u64>,
    /// Run every cell of the plan once, in this process and in order, and print
    /// one line of JSON per cell on stdout (what each child of a normal run
    /// does; for profiling one process).
    #[arg(long)]
    in_process: bool,
    /// Write every figure and the ratios to this JSON file.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Systems to run (comma-separated); default: all.
    #[arg(long, value_delimiter = ',', value_enum)]
    systems: Option<Vec<System>>,
    /// Payload sizes in bytes (comma-separated); default 64,1024,65536.
    #[arg(long, value_delimiter = ',')]
    payloads: Option<Vec<usize>>,
    /// More payload sizes for the sinew transports only (sinew-tcp, sinew-unix,
    /// sinew-shm), for the shared-memory comparison; default
    /// 64,1024,4096,65536,1048576 (--quick: 65536,1048576; none when --payloads
    /// is given).
    #[arg(long, value_delimiter = ',')]
    local_payloads: Option<Vec<usize>>,
    /// In-flight calls (comma-separated); default 1,64,256.
    #[arg(long, value_delimiter = ',')]
    concurrency: Option<Vec<usize>>,
    /// Client connections the calls of every cell are spread over (each
    /// system's own client per connection); default 1.
    #[arg(long, default_value_t = 1)]
    connections: usize,
    /// Many-client shapes at 1 KiB, as CONNECTIONSxCALLS (calls in flight on
    /// each connection), comma-separated, or `none`; default 256x1,16x16
    /// (--quick and when --payloads is given: none).
    #[arg(long, value_delimiter = ',')]
    shapes: Option<Vec<String>>,
    /// Open-loop rates, as fractions of the highest rate tonic sustains in
    /// the open loop, searched after the closed-loop cells from tonic's QPS
    /// at 1 KiB c=64 (comma-separated), or `none`; default 0.5,0.8 (--quick:
    /// 0.8). The open-loop cells (sinew-tcp, sinew-grpc, tonic, tarpc, Volo,
    /// grpc-go at 1 KiB) run after the search.
    #[arg(long, value_delimiter = ',')]
    open_loop: Option<Vec<String>>,
    /// Idle-connection cells: this many connections to each server (from a
    /// client in a process of its own), each after one call; the server's
    /// memory per connection. 0 for none; default 10000 (--quick: 1000).
    #[arg(long)]
    idle_connections: Option<usize>,
    /// Server-streaming cells (sinew over TCP, Unix socket and shared memory,
    /// sinew's gRPC path, tonic, grpc-go; 1 KiB messages): streams per cell,
    /// on one connection, comma-separated, or `none`; default 1,64 (--quick: 64).
    #[arg(long, value_delimiter = ',')]
    streams: Option<Vec<String>>,
    /// Cells of the `bytes` payload (a bytes field instead of a string: no
    /// UTF-8 check, zero-copy where the framework can), at c=64 on one
    /// connection, for every system with a bytes echo (not raw, not h2load):
    /// payload sizes, comma-separated, or `none`; default 1024,65536
    /// (--quick: 65536; none when --payloads is given).
    #[arg(long, value_delimiter = ',')]
    bytes_payloads: Option<Vec<String>>,
    /// Run only this cell, `SYSTEM:PAYLOAD:CONCURRENCY:CONNECTIONS:RATE`,
    /// then `:stream` or `:bytes` for those cells (what each child of a
    /// normal run is given, with --in-process).
    #[arg(long)]
    cell: Option<String>,
    /// Hold idle connections to ADDRESS: the client half of an
    /// idle-connection cell (the cell's own child starts it).
    #[arg(long, hide = true)]
    hold_idle: Option<std::net::SocketAddr>,
    /// Warm-up per cell, in milliseconds.
    #[arg(long)]
    warmup_ms: Option<u64>,
    /// Measured duration per cell, in milliseconds.
    #[arg(long)]
    duration_ms: Option<u64>,
    /// Worker threads of the server runtime (the same for every system).
    #[arg(long, default_value_t = 1)]
    server_threads: usize,
    /// Worker threads of the client runtime (the same for every system).
    #[arg(long, default_value_t = 1)]
    client_threads: usize,
}

fn main() -> anyhow::Result<()> {
    // tarpc turns on tracing's `log` feature, which in a process without a
    // subscriber sends every span h2, hyper and sinew create (enabled or not)
    // through `log`: a cost of sharing this binary with tarpc that no user of
    // those crates pays (1-3% of the gRPC servers' CPU). A subscriber that
    // wants nothing turns that path off for every system alike.
    let _ = tracing::subscriber::set_global_default(tracing::subscriber::NoSubscriber::default());
    let options = Options::parse();
    let (default_warmup, default_duration) = if options.quick {
        (200, 1_000)
    } else {
        (500, 2_500)
    };
    let local_payloads = options.local_payloads.unwrap_or_else(|| {
        if options.payloads.is_some() {
            Vec::new()
        } else if options.quick {
            vec![65536, 1 << 20]
        } else {
            vec![64, 1024, 4096, 65536, 1 << 20]
        }
    });
    let shapes = match &options.shapes {
        Some(shapes) => parse_shapes(shapes)?,
        None if options.payloads.is_some() => Vec::new(),
        None if options.quick => Vec::new(),
        None => vec![(256, 1), (16, 16)],
    };
    let connections = options.connections.max(1);
    let concurrency = options.concurrency.unwrap_or_else(|| {
        if options.quick {
            vec![1, 64]
        } else {
            vec![1, 64, 256]
        }
    });
    if let Some(c) = concurrency.iter().find(|&&c| c % connections != 0) {
        anyhow::bail!("--concurrency {c} is not a multiple of --connections {connections}");
    }
    let open_loop = match &options.open_loop {
        Some(items) => parse_fractions(items)?,
        None if options.quick => vec![0.8],
        None => vec![0.5, 0.8],
    };
    let streams = match &options.streams {
        Some(items) => parse_counts(items, "--streams")?,
        None if options.quick => vec![64],
        None => vec![1, 64],
    };
    let bytes_payloads = match &options.bytes_payloads {
        Some(items) => parse_counts(items, "--bytes-payloads")?,
        None if options.payloads.is_some() => Vec::new(),
        None if options.quick => vec![65536],
        None => vec![1024, 65536],
    };
    let plan = load::Plan {
        streams,
        bytes_payloads,
        h2load_shapes: if options.quick {
            load::H2LOAD_SHAPES[..1].to_vec()
        } else {
            load::H2LOAD_SHAPES.to_vec()
        },
        connections,
        shapes,
        open_loop,
        idle_connections: options.idle_connections.unwrap_or(if options.quick {
            2_000
        } else {
            10_000
        }),
        only: options
            .cell
            .as_deref()
            .map(load::Cell::from_arg)
            .transpose()?,
        systems: options.systems.unwrap_or_else(|| System::ALL.to_vec()),
        local_payloads,
        payloads: options.payloads.unwrap_or_else(|| {
            if options.quick {
                vec![1024]
            } else {
                vec![64, 1024, 65536]
            }
        }),
        concurrency,
        warmup: Duration::from_millis(options.warmup_ms.unwrap_or(default_warmup)),
        duration: Duration::from_millis(options.duration_ms.unwrap_or(default_duration)),
        server_threads: options.server_threads.max(1),
        client_threads: options.client_threads.max(1),
    };
    if let Some(address) = options.hold_idle {
        let Some(cell) = plan.only else {
            anyhow::bail!("--hold-idle needs the --cell it holds connections for");
        };
        return systems::hold_idle(&plan, cell, address);
    }
    systems::prepare_go_peers(&plan, !options.in_process)?;
    if options.in_process {
        return load::run_in_process(&plan, |sample| {
            println!("{}", serde_json::to_string(&sample)?);
            Ok(())
        });
    }
    let runs = options
        .runs
        .unwrap_or(if options.quick { 3 } else { 5 })
        .max(1);
    let seed = options.seed.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64)
    });
    let (outcomes, open_loop_base) = isolate::run(&plan, runs, seed)?;
    let idle_cpu = idle_cpu(&plan)?;
    let summary = report::Summary::new(&plan, runs, seed, outcomes, open_loop_base, idle_cpu);
    println!("{}", summary.table());
    println!("{}", summary.ratios_text());
    if let Some(path) = options.json {
        std::fs::write(&path, serde_json::to_string_pretty(&summary.json())?)?;
        println!("wrote {}", path.display());
    }
    if summary.any_failed() {
        anyhow::bail!("some cells failed (see the status column)");
    }
    Ok(())
}

/// Parses `--shapes`: `KxN` items (K connections, N calls in flight on each) or `none`.
fn parse_shapes(items: &[String]) -> anyhow::Result<Vec<(usize, usize)>> {
    let mut shapes = Vec::new();
    for item in items {
        if item == "none" {
            continue;
        }
        let parsed = item
            .split_once('x')
            .and_then(|(k, n)| Some((k.parse::<usize>().ok()?, n.parse::<usize>().ok()?)))
            .filter(|&(k, n)| k > 0 && n > 0);
        match parsed {
            Some(shape) => shapes.push(shape),
            None => anyhow::bail!("--shapes: `{item}` is not CONNECTIONSxCALLS, e.g. 256x1"),
        }
    }
    Ok(shapes)
}

/// Parses a list of positive counts (`--streams`, `--bytes-payloads`), or `none`.
fn parse_counts(items: &[String], flag: &str) -> anyhow::Result<Vec<usize>> {
    items
        .iter()
        .filter(|item| item.as_str() != "none")
        .map(|item| {
            item.parse::<usize>()
                .ok()
                .filter(|&n| n > 0)
                .ok_or_else(|| anyhow::anyhow!("{flag}: `{item}` is not a positive number"))
        })
        .collect()
}

/// Parses `--open-loop`: fractions in (0, 2], or `none`.
fn parse_fractions(items: &[String]) -> anyhow::Result<Vec<f64>> {
    let mut fractions = Vec::new();
    for item in items {
        if item == "none" {
            continue;
        }
        match item.parse::<f64>() {
            Ok(f) if f > 0.0 && f <= 2.0 => fractions.push(f),
            _ => anyhow::bail!("--open-loop: `{item}` is not a fraction of tonic's QPS, e.g. 0.8"),
        }
    }
    Ok(fractions)
}

/// Idle CPU of a connected, quiet sinew pair over Unix sockets and shared
/// memory (whichever the plan runs): what spinning costs when nothing happens.
fn idle_cpu(plan: &load::Plan) -> anyhow::Result<Vec<(System, f64)>> {
    let runtimes = load::Runtimes::new(plan)?;
    let quiet = plan.duration.min(Duration::from_secs(2));
    let mut idle = Vec::new();
    for (system, transport) in [
        (System::SinewUnix, systems::Transport::Unix),
        (System::SinewShm, systems::Transport::Shm),
    ] {
        if plan.systems.contains(&system) {
            let percent = systems::idle_cpu_percent(&runtimes, transport, quiet)?;
            eprintln!(
                "{:<16} idle pair      ... {percent:.2}% of a core",
                transport.name()
            );
            idle.push((system, percent));
        }
    }
    Ok(idle)
}

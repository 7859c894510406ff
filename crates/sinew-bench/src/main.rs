//! `sinew-bench`: sinew against tonic, tarpc, Volo and raw sockets, side by side,
//! in one process run on one machine.
//!
//! Every system serves the same unary echo (a string of the payload size in, the
//! same string out) on a server runtime and is driven by a closed-loop load
//! generator on a client runtime; both runtimes have the same thread counts for
//! every system. Each cell of the matrix (system x payload x concurrency) gets a
//! warm-up, then a fixed measured duration: QPS, latency percentiles from an HDR
//! histogram, and process CPU time per call (client + server, both in this process).
//!
//! See `docs/benchmarks.md` for how to run it and how to read it.

mod load;
mod report;
mod systems;

use clap::Parser;
use std::path::PathBuf;
use std::time::Duration;
use systems::System;

/// Command-line options.
#[derive(Parser, Debug)]
#[command(
    name = "sinew-bench",
    about = "sinew against tonic, tarpc, Volo and raw sockets, in one run",
    after_help = "Examples:\n  sinew-bench --quick --json out.json\n  sinew-bench --systems sinew-tcp,tonic --payloads 1024 --concurrency 64"
)]
struct Options {
    /// Reduced matrix (1 KiB at c=1 and c=64, every system, shorter phases), under 2 minutes.
    #[arg(long)]
    quick: bool,
    /// Write every figure and the ratios to this JSON file.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Systems to run (comma-separated); default: all.
    #[arg(long, value_delimiter = ',', value_enum)]
    systems: Option<Vec<System>>,
    /// Payload sizes in bytes (comma-separated); default 64,1024,65536.
    #[arg(long, value_delimiter = ',')]
    payloads: Option<Vec<usize>>,
    /// In-flight calls (comma-separated); default 1,64,256.
    #[arg(long, value_delimiter = ',')]
    concurrency: Option<Vec<usize>>,
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
    let options = Options::parse();
    let (default_warmup, default_duration) = if options.quick {
        (500, 2_000)
    } else {
        (1_000, 3_000)
    };
    let plan = load::Plan {
        systems: options.systems.unwrap_or_else(|| System::ALL.to_vec()),
        payloads: options.payloads.unwrap_or_else(|| {
            if options.quick {
                vec![1024]
            } else {
                vec![64, 1024, 65536]
            }
        }),
        concurrency: options.concurrency.unwrap_or_else(|| {
            if options.quick {
                vec![1, 64]
            } else {
                vec![1, 64, 256]
            }
        }),
        warmup: Duration::from_millis(options.warmup_ms.unwrap_or(default_warmup)),
        duration: Duration::from_millis(options.duration_ms.unwrap_or(default_duration)),
        server_threads: options.server_threads.max(1),
        client_threads: options.client_threads.max(1),
    };
    let results = load::run(&plan)?;
    let summary = report::Summary::new(&plan, results);
    println!("{}", summary.table());
    println!("{}", summary.ratios_text());
    if let Some(path) = options.json {
        std::fs::write(&path, serde_json::to_string_pretty(&summary.json())?)?;
        println!("wrote {}", path.display());
    }
    Ok(())
}

//! `sinew`: the command line of the sinew toolkit.
//!
//! One binary, one verb per module in `cmd/`: `serve` the example services, `call`
//! any method with JSON, `list` and `describe` what a server offers (learned from
//! the server itself through gRPC server reflection), `bench` a method, `demo`
//! the whole system on one machine, and `certs` for trying TLS. Every failure is one line on stderr and a
//! distinct exit code ([`error::ExitCode`]), never a panic or a backtrace.

#![forbid(unsafe_code)]

mod cmd;
mod error;
mod schema;
mod size;
mod time;

use clap::{Parser, Subcommand};
use error::CliError;

const EXIT_CODES: &str = "\
Exit codes:
  0  success
  1  unexpected failure (I/O error, internal error)
  2  usage error: bad arguments, malformed address, metadata or deadline
  3  server unreachable, or the connection was lost
  4  unknown service or method
  5  the JSON input does not parse
  6  the JSON input does not fit the method's message type
  7  the deadline passed
  8  the server answered with another error status (printed with its code)";

/// sinew: fast, reliable communication between the parts of a distributed system.
#[derive(Parser, Debug)]
#[command(
    name = "sinew",
    version,
    about,
    long_about = "sinew: fast, reliable communication between the parts of a distributed system.\n\n\
Addresses are URLs: tcp://HOST:PORT, tls://HOST:PORT, unix:///PATH or shm:///PATH (shared memory, same host) for sinew's protocol, \
grpc://HOST:PORT (or http://), grpcs://HOST:PORT (or https://) and grpc+unix:///PATH for any gRPC server. Services and methods are named as in \
their .proto, e.g. grpc.examples.echo.Echo/UnaryEcho. Schemas come from the server itself \
(gRPC server reflection, which every sinew server offers) unless --proto is given.",
    after_help = EXIT_CODES
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Serve the example services until Ctrl-C, then shut down gracefully.
    // Boxed: its many options would make every command as large.
    Serve(Box<cmd::serve::Args>),
    /// Call a method with JSON and print the response as JSON.
    Call(cmd::call::Args),
    /// List the services a server offers.
    List(cmd::list::Args),
    /// Describe a service, method or message of a server (all services if none named).
    Describe(cmd::describe::Args),
    /// Load-test a unary method: QPS, latency percentiles, errors by status code.
    Bench(cmd::bench::Args),
    /// Run a small cluster on this machine and drive a mixed workload through it.
    Demo(cmd::demo::Args),
    /// List the members of a gossip cluster (or what is registered in etcd) and each service's endpoints.
    Members(cmd::members::Args),
    /// Serve a live web page of a gossip cluster: its members, each method's calls a second, errors and latency, recent failures.
    Dashboard(cmd::dashboard::Args),
    /// Show each method's live figures in the terminal, from an admin endpoint or a whole gossip cluster.
    Top(cmd::top::Args),
    /// Make a throwaway CA and certificates, for trying TLS and mutual TLS.
    Certs(cmd::certs::Args),
    /// Run a standalone message broker: publish/subscribe and durable work queues.
    Broker(cmd::broker::Args),
    /// Publish a message to a broker.
    Pub(cmd::publish::Args),
    /// Print the messages published to subjects a filter matches.
    Sub(cmd::subscribe::Args),
    /// Declare work queues, push jobs, work on them, and see each queue's figures.
    Queue(cmd::queue::Args),
    /// Run the HTTP gateway: a reverse proxy in place of an nginx upstream block.
    Gateway(cmd::gateway::Args),
    /// Run the embedded shared-state store (one node, not replicated) as etcd's API.
    State(cmd::state::Args),
    /// Read, write and watch keys of the shared-state store (etcd or `sinew state`).
    Kv(cmd::kv::Args),
    /// Run a command while holding a lock (its fencing token in SINEW_FENCING_TOKEN).
    Lock(cmd::lock::Args),
    /// Stand in a leader election until Ctrl-C, or observe who leads.
    Elect(cmd::elect::Args),
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    // Logs only when asked for (SINEW_LOG=info, =sinew_telemetry=debug, ...):
    // on stderr, each event inside a call with the call's span, so with its
    // trace id.
    if let Ok(filter) = std::env::var("SINEW_LOG") {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
            .with_writer(std::io::stderr)
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init();
    }
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if let Command::Gateway(args) = &cli.command {
        if let Some(workers) = args.workers() {
            builder.worker_threads(workers);
        }
    }
    let runtime = match builder.enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("sinew: cannot start the async runtime: {error}");
            return std::process::ExitCode::from(error::ExitCode::Failure as u8);
        }
    };
    let result: Result<(), CliError> = runtime.block_on(async move {
        match cli.command {
            Command::Serve(args) => cmd::serve::run(*args).await,
            Command::Call(args) => cmd::call::run(args).await,
            Command::List(args) => cmd::list::run(args).await,
            Command::Describe(args) => cmd::describe::run(args).await,
            Command::Bench(args) => cmd::bench::run(args).await,
            Command::Demo(args) => cmd::demo::run(args).await,
            Command::Members(args) => cmd::members::run(args).await,
            Command::Dashboard(args) => cmd::dashboard::run(args).await,
            Command::Top(args) => cmd::top::run(args).await,
            Command::Certs(args) => cmd::certs::run(args).await,
            Command::Broker(args) => cmd::broker::run(args).await,
            Command::Pub(args) => cmd::publish::run(args).await,
            Command::Sub(args) => cmd::subscribe::run(args).await,
            Command::Queue(args) => cmd::queue::run(args).await,
            Command::Gateway(args) => cmd::gateway::run(args).await,
            Command::State(args) => cmd::state::run(args).await,
            Command::Kv(args) => cmd::kv::run(args).await,
            Command::Lock(args) => cmd::lock::run(args).await,
            Command::Elect(args) => cmd::elect::run(args).await,
        }
    });
    // Do not wait for tasks left behind (streams being cancelled, pumps).
    runtime.shutdown_background();
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("sinew: {}", error.message());
            std::process::ExitCode::from(error.exit_code() as u8)
        }
    }
}

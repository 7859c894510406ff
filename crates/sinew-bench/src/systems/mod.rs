//! The systems under test. Each module starts its server on the server runtime
//! (the Go peers: in a process of its own), builds a
//! [`Caller`](crate::load::Caller) that makes one verified echo call, runs the
//! closed loop, and stops its server. The `h2load-*` rows drive the gRPC
//! servers with nghttp2's h2load instead (see [`h2load`]).

mod balanced;
mod blob;
mod go_peers;
mod h2load;
mod idle;
mod overload;
mod raw;
mod resilience;
mod sinew_grpc_peer;
mod sinew_peer;
mod tarpc_peer;
mod tls;
mod tonic_peer;
mod volo_peer;

use crate::load::{Cell, Plan, Runtimes};
use crate::sample::Sample;
pub(crate) use go_peers::prepare as prepare_go_peers;
pub(crate) use idle::hold as hold_idle;
pub(crate) use sinew_peer::{idle_cpu_percent, Transport};

/// A system in the comparison.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, clap::ValueEnum)]
pub(crate) enum System {
    /// sinew's protocol over TCP.
    SinewTcp,
    /// sinew's protocol over TLS (rustls, ring), TCP.
    SinewTls,
    /// sinew's protocol over a Unix domain socket.
    SinewUnix,
    /// sinew's protocol over shared memory (`sinew-shm`).
    SinewShm,
    /// sinew's gRPC path: a sinew server with the gRPC bridge, driven by tonic's
    /// client (the same client as the `tonic` row), TCP.
    SinewGrpc,
    /// tonic (gRPC over HTTP/2), same .proto, TCP.
    Tonic,
    /// tonic over TLS (its `tls-ring` feature: rustls, ring), TCP.
    #[value(name = "tonic-tls")]
    TonicTls,
    /// tarpc with its serde + bincode transport, TCP.
    Tarpc,
    /// tonic with sinew's HTTP/2 settings (1 MiB stream and 8 MiB
    /// connection windows, 4 MiB frames) on both sides, TCP.
    #[value(name = "tonic-tuned")]
    TonicTuned,
    /// Volo Thrift with its default TTHeader framing, TCP.
    Volo,
    /// Volo Thrift with multiplexing on (every call on one connection), TCP.
    #[value(name = "volo-mux")]
    VoloMux,
    /// grpc-go's server (Go, its own process), driven by tonic's client as the
    /// `tonic` and `sinew-grpc` rows are.
    #[value(name = "grpc-go")]
    GrpcGo,
    /// Go's standard net/rpc with gob: its server and its client (Go).
    #[value(name = "go-netrpc")]
    GoNetRpc,
    /// 4-byte length prefix, no encoding, one connection per in-flight call.
    #[value(name = "raw-pingpong")]
    RawPingPong,
    /// 4-byte length prefix, all calls pipelined on one connection.
    RawPipelined,
    /// sinew's gRPC path (as `sinew-grpc`), driven by h2load.
    #[value(name = "h2load-sinew-grpc")]
    H2loadSinewGrpc,
    /// tonic's server (as `tonic`), driven by h2load.
    #[value(name = "h2load-tonic")]
    H2loadTonic,
    /// grpc-go's server (as `grpc-go`), driven by h2load.
    #[value(name = "h2load-grpc-go")]
    H2loadGrpcGo,
    /// sinew's balanced channel (P2C over peak-EWMA) over three sinew
    /// servers, TCP: what balancing costs against `sinew-tcp`.
    #[value(name = "sinew-balanced")]
    SinewBalanced,
    /// As `sinew-balanced`, one of the three servers 20 ms slower.
    #[value(name = "sinew-balanced-slow")]
    SinewBalancedSlow,
    /// tonic's balanced channel (`Channel::balance_list`) over the same
    /// three servers (gRPC), one 20 ms slower.
    #[value(name = "tonic-balanced-slow")]
    TonicBalancedSlow,
    /// sinew's balanced channel over three servers, the first delaying 5%
    /// of its calls by 50 ms: the baseline of `sinew-hedge-on`.
    #[value(name = "sinew-hedge-off")]
    SinewHedgeOff,
    /// As `sinew-hedge-off`, with a hedging policy (2 copies, 5 ms apart).
    #[value(name = "sinew-hedge-on")]
    SinewHedgeOn,
    /// sinew's balanced channel over three servers, the first failing every
    /// call, with retries and retry throttling.
    #[value(name = "sinew-failing")]
    SinewFailing,
    /// The full client stack (service config with timeout and retries,
    /// circuit breaker, balanced channel) over one server: what the layers
    /// cost against `sinew-tcp`.
    #[value(name = "sinew-stack")]
    SinewStack,
    /// One sinew server with 200 µs of CPU per call, driven at three times
    /// its capacity in an open loop, with no limit.
    #[value(name = "sinew-overload")]
    SinewOverload,
    /// As `sinew-overload`, with an adaptive concurrency limit.
    #[value(name = "sinew-overload-limited")]
    SinewOverloadLimited,
    /// Each call on a new TLS connection with a full handshake (no
    /// resumption): handshakes a second, and CPU per handshake.
    #[value(name = "sinew-tls-handshake")]
    SinewTlsHandshake,
    /// sinew over TCP with telemetry's server and client layers (spans,
    /// trace context, metrics; no subscriber, sampling off).
    #[value(name = "sinew-telemetry")]
    SinewTelemetry,
}

impl System {
    pub(crate) const ALL: [System; 29] = [
        System::SinewTcp,
        System::SinewTls,
        System::SinewUnix,
        System::SinewShm,
        System::SinewGrpc,
        System::Tonic,
        System::TonicTls,
        System::TonicTuned,
        System::Tarpc,
        System::Volo,
        System::VoloMux,
        System::GrpcGo,
        System::GoNetRpc,
        System::RawPingPong,
        System::RawPipelined,
        System::H2loadSinewGrpc,
        System::H2loadTonic,
        System::H2loadGrpcGo,
        System::SinewBalanced,
        System::SinewBalancedSlow,
        System::TonicBalancedSlow,
        System::SinewHedgeOff,
        System::SinewHedgeOn,
        System::SinewFailing,
        System::SinewStack,
        System::SinewOverload,
        System::SinewOverloadLimited,
        System::SinewTlsHandshake,
        System::SinewTelemetry,
    ];

    /// The frameworks sinew is compared with (not the raw baselines).
    pub(crate) const FRAMEWORK_PEERS: [System; 7] = [
        System::Tonic,
        System::TonicTuned,
        System::Tarpc,
        System::Volo,
        System::VoloMux,
        System::GrpcGo,
        System::GoNetRpc,
    ];

    /// sinew over one of its local-capable transports: these also run the
    /// plan's local payloads (the shared-memory comparison).
    pub(crate) fn is_sinew_transport(self) -> bool {
        matches!(
            self,
            System::SinewTcp | System::SinewUnix | System::SinewShm
        )
    }

    /// Driven by h2load: these run only the h2load shapes
    /// (`Plan::h2load_shapes`), not the matrix.
    pub(crate) fn is_h2load(self) -> bool {
        matches!(
            self,
            System::H2loadSinewGrpc | System::H2loadTonic | System::H2loadGrpcGo
        )
    }

    /// A balancing or resilience row: these run one cell, 1 KiB at 64
    /// calls in flight over one balanced channel.
    pub(crate) fn is_balanced(self) -> bool {
        matches!(
            self,
            System::SinewBalanced
                | System::SinewBalancedSlow
                | System::TonicBalancedSlow
                | System::SinewTlsHandshake
                | System::SinewTelemetry
        ) || self.is_resilience()
    }

    /// A resilience row (`resilience.rs`, `overload.rs`).
    pub(crate) fn is_resilience(self) -> bool {
        matches!(
            self,
            System::SinewHedgeOff
                | System::SinewHedgeOn
                | System::SinewFailing
                | System::SinewStack
                | System::SinewOverload
                | System::SinewOverloadLimited
        )
    }

    /// Whether the system runs the `bytes` cells: every one with an encoding
    /// (not the raw baselines, which have none, nor the h2load rows, whose
    /// request is the same protobuf bytes whichever field type the server
    /// decodes them as).
    pub(crate) fn has_bytes_echo(self) -> bool {
        !self.is_h2load()
            && !self.is_balanced()
            && !matches!(self, System::RawPingPong | System::RawPipelined)
    }

    pub(crate) fn name(self) -> &'static str {
        match self {
            System::SinewTcp => "sinew-tcp",
            System::SinewTls => "sinew-tls",
            System::TonicTls => "tonic-tls",
            System::SinewTlsHandshake => "sinew-tls-handshake",
            System::SinewTelemetry => "sinew-telemetry",
            System::SinewUnix => "sinew-unix",
            System::SinewShm => "sinew-shm",
            System::SinewGrpc => "sinew-grpc",
            System::Tonic => "tonic",
            System::Tarpc => "tarpc",
            System::TonicTuned => "tonic-tuned",
            System::Volo => "volo",
            System::VoloMux => "volo-mux",
            System::GrpcGo => "grpc-go",
            System::GoNetRpc => "go-netrpc",
            System::RawPingPong => "raw-pingpong",
            System::RawPipelined => "raw-pipelined",
            System::H2loadSinewGrpc => "h2load-sinew-grpc",
            System::H2loadTonic => "h2load-tonic",
            System::H2loadGrpcGo => "h2load-grpc-go",
            System::SinewBalanced => "sinew-balanced",
            System::SinewBalancedSlow => "sinew-balanced-slow",
            System::TonicBalancedSlow => "tonic-balanced-slow",
            System::SinewHedgeOff => "sinew-hedge-off",
            System::SinewHedgeOn => "sinew-hedge-on",
            System::SinewFailing => "sinew-failing",
            System::SinewStack => "sinew-stack",
            System::SinewOverload => "sinew-overload",
            System::SinewOverloadLimited => "sinew-overload-limited",
        }
    }
}

/// The echo payload of `size` bytes: printable, so it is valid UTF-8 for the
/// string fields every system uses.
pub(crate) fn payload(size: usize) -> String {
    "x".repeat(size)
}

/// The payload of the `bytes` cells: the same bytes as [`payload`].
pub(crate) fn payload_bytes(size: usize) -> bytes::Bytes {
    bytes::Bytes::from(payload(size))
}

/// Runs one cell once and returns its figures.
pub(crate) fn run_cell(runtimes: &Runtimes, plan: &Plan, cell: Cell) -> anyhow::Result<Sample> {
    if cell.is_idle() {
        return idle::run(runtimes, plan, cell);
    }
    if cell.streaming {
        return Ok(Sample::new(cell, &run_streams(runtimes, plan, cell)?));
    }
    let stats = match cell.system {
        System::SinewTcp => sinew_peer::run(runtimes, plan, cell, Transport::Tcp),
        System::SinewTls => sinew_peer::run(runtimes, plan, cell, Transport::Tls),
        System::TonicTls => tonic_peer::run_tls(runtimes, plan, cell),
        System::SinewTlsHandshake => tls::run_handshakes(runtimes, plan, cell),
        System::SinewTelemetry => sinew_peer::run_telemetry(runtimes, plan, cell),
        System::SinewUnix => sinew_peer::run(runtimes, plan, cell, Transport::Unix),
        System::SinewShm => sinew_peer::run(runtimes, plan, cell, Transport::Shm),
        System::SinewGrpc => sinew_grpc_peer::run(runtimes, plan, cell),
        System::Tonic => tonic_peer::run(runtimes, plan, cell, tonic_peer::Tuning::Default),
        System::TonicTuned => tonic_peer::run(runtimes, plan, cell, tonic_peer::Tuning::Sinew),
        System::Tarpc => tarpc_peer::run(runtimes, plan, cell),
        System::Volo => volo_peer::run(runtimes, plan, cell, false),
        System::VoloMux => volo_peer::run(runtimes, plan, cell, true),
        System::GrpcGo => go_peers::run_grpc_go(runtimes, plan, cell),
        System::GoNetRpc => return go_peers::run_netrpc(plan, cell),
        System::SinewBalanced | System::SinewBalancedSlow | System::TonicBalancedSlow => {
            return balanced::run(runtimes, plan, cell)
        }
        System::SinewHedgeOff
        | System::SinewHedgeOn
        | System::SinewFailing
        | System::SinewStack => return resilience::run(runtimes, plan, cell),
        System::SinewOverload | System::SinewOverloadLimited => {
            return overload::run(runtimes, plan, cell)
        }
        System::RawPingPong => raw::run_ping_pong(runtimes, plan, cell),
        System::RawPipelined => raw::run_pipelined(runtimes, plan, cell),
        System::H2loadSinewGrpc | System::H2loadTonic | System::H2loadGrpcGo => {
            h2load::run(plan, cell, start_server(runtimes, plan, cell.system)?)
        }
    }?;
    Ok(Sample::new(cell, &stats))
}

/// Runs a server-streaming cell.
fn run_streams(runtimes: &Runtimes, plan: &Plan, cell: Cell) -> anyhow::Result<crate::load::Stats> {
    let server = match cell.system {
        System::SinewTcp => return sinew_peer::run_streams(runtimes, plan, cell, Transport::Tcp),
        System::SinewUnix => return sinew_peer::run_streams(runtimes, plan, cell, Transport::Unix),
        System::SinewShm => return sinew_peer::run_streams(runtimes, plan, cell, Transport::Shm),
        System::SinewGrpc | System::Tonic | System::GrpcGo => {
            start_server(runtimes, plan, cell.system)?
        }
        other => anyhow::bail!("{} has no server-streaming cell", other.name()),
    };
    // tonic's client for the three gRPC servers, as in their unary rows.
    let streamer = tonic_peer::streamer(runtimes, server.address, cell.payload)?;
    let cpu = go_peers::with_server_cpu(server.pid);
    let stats = crate::load::drive_streams(runtimes, plan, cell, streamer, cpu);
    server.stop()?;
    Ok(stats)
}

/// The echo server of `system` alone, for a client other than its row's
/// own loop (h2load, the streaming and idle-connection cells). The h2load rows
/// start the server they drive.
pub(crate) fn start_server<'a>(
    runtimes: &'a Runtimes,
    plan: &Plan,
    system: System,
) -> anyhow::Result<RunningServer<'a>> {
    match system {
        System::SinewTcp => sinew_peer::start_tcp(runtimes),
        System::SinewGrpc | System::H2loadSinewGrpc => sinew_grpc_peer::start(runtimes),
        System::Tonic | System::H2loadTonic => tonic_peer::start(runtimes),
        System::Tarpc => tarpc_peer::start(runtimes),
        System::Volo => volo_peer::start(runtimes),
        System::GrpcGo | System::H2loadGrpcGo => go_peers::start_grpc_go(plan),
        other => anyhow::bail!("{} has no server of its own to start", other.name()),
    }
}

/// An echo server the harness started (in this process or its own), for
/// whichever client drives it.
pub(crate) struct RunningServer<'a> {
    pub(crate) address: std::net::SocketAddr,
    /// The server's process.
    pub(crate) pid: u32,
    /// The server's CPU time so far (user + system).
    cpu: Box<dyn Fn() -> std::time::Duration + 'a>,
    stop: Box<dyn FnOnce() -> anyhow::Result<()> + 'a>,
}

impl<'a> RunningServer<'a> {
    /// A server on the server runtime: its CPU is this process's (the client
    /// runtime is idle while another process drives the server).
    fn in_process(
        address: std::net::SocketAddr,
        stop: impl FnOnce() -> anyhow::Result<()> + 'a,
    ) -> RunningServer<'a> {
        RunningServer {
            address,
            pid: std::process::id(),
            cpu: Box::new(crate::load::process_cpu),
            stop: Box::new(stop),
        }
    }

    pub(crate) fn cpu(&self) -> std::time::Duration {
        (self.cpu)()
    }

    /// Stops the server and waits until it has.
    pub(crate) fn stop(self) -> anyhow::Result<()> {
        (self.stop)()
    }
}

//! The Go peers, as a Go user runs them:
//!
//! * `grpc-go`: grpc-go's server with its defaults (`go/src/sinewbench/grpcserver`),
//!   driven by tonic's client exactly as the `tonic` and `sinew-grpc` rows are,
//!   so the three rows differ only in the server;
//! * `go-netrpc`: Go's standard net/rpc with gob, its own server and client
//!   (`go/src/sinewbench/netrpc`); the Go client runs the same closed loop as
//!   the harness and prints the cell's figures.
//!
//! Both are built offline in GOPATH mode against Debian's `golang-go` and
//! `golang-google-grpc-dev` (what `scripts/test.sh` installs) into
//! `target/bench-peers/`, once per harness run ([`prepare`]). Each server runs
//! in its own process with `GOMAXPROCS` set to the plan's server threads (the
//! Go client to its client threads), and its CPU time, read from `/proc`, is
//! added to the cell's CPU per call.

use crate::load::{drive_measuring, process_cpu, Cell, Plan, Runtimes, Stats};
use crate::sample::Sample;
use crate::scratch::Scratch;
use crate::systems::{RunningServer, System};
use anyhow::Context;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The Go workspace (GOPATH entry) of the peers' sources.
fn sources() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("go")
}

/// Where the peers' binaries and Go's build cache go.
fn out_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/bench-peers")
}

fn binary(name: &str) -> PathBuf {
    out_dir().join(name)
}

/// Builds the Go peers the plan runs: every one when `rebuild` (once per harness
/// run, before any cell; Go's cache makes a rebuild of unchanged sources
/// quick), else only those not built yet (an `--in-process` child).
pub(crate) fn prepare(plan: &Plan, rebuild: bool) -> anyhow::Result<()> {
    let mut packages = Vec::new();
    if plan.systems.contains(&System::GrpcGo) {
        packages.push("grpcserver");
    }
    if plan.systems.contains(&System::GoNetRpc) {
        packages.push("netrpc");
    }
    packages.retain(|package| rebuild || !binary(package).exists());
    if packages.is_empty() {
        return Ok(());
    }
    let out = out_dir();
    std::fs::create_dir_all(&out)?;
    let gopath = format!("{}:/usr/share/gocode", sources().display());
    for package in packages {
        let status = Command::new("go")
            .args(["build", "-o"])
            .arg(binary(package))
            .arg(format!("sinewbench/{package}"))
            .env("GO111MODULE", "off")
            .env("GOFLAGS", "")
            .env("GOPATH", &gopath)
            .env("GOCACHE", out.join("go-cache"))
            .status()
            .context(
                "cannot run `go` for the Go peers: install Debian's golang-go and \
                 golang-google-grpc-dev (scripts/test.sh does), or leave out grpc-go and go-netrpc",
            )?;
        anyhow::ensure!(status.success(), "building the Go peer {package}: {status}");
    }
    Ok(())
}

/// A Go server in its own process, killed when dropped.
struct GoServer {
    child: Child,
    port: u16,
    _scratch: Scratch,
}

impl GoServer {
    fn start(binary: &Path, args: &[&str], plan: &Plan) -> anyhow::Result<GoServer> {
        let scratch = Scratch::new("go")?;
        let port_file = scratch.join("port");
        let mut child = Command::new(binary)
            .args(args)
            .arg("-port-file")
            .arg(&port_file)
            .env("GOMAXPROCS", plan.server_threads.to_string())
            .stdin(Stdio::null())
            .spawn()
            .with_context(|| {
                format!(
                    "starting {} (run with the Go peers built)",
                    binary.display()
                )
            })?;
        let started = Instant::now();
        let port = loop {
            if let Ok(text) = std::fs::read_to_string(&port_file) {
                break text.trim().parse::<u16>()?;
            }
            if let Some(status) = child.try_wait()? {
                anyhow::bail!("{} exited at start: {status}", binary.display());
            }
            if started.elapsed() > Duration::from_secs(10) {
                let _ = child.kill();
                anyhow::bail!("{} did not start listening within 10 s", binary.display());
            }
            std::thread::sleep(Duration::from_millis(5));
        };
        Ok(GoServer {
            child,
            port,
            _scratch: scratch,
        })
    }

    fn address(&self) -> std::net::SocketAddr {
        std::net::SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for GoServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// grpc-go's server, driven by tonic's client.
pub(crate) fn run_grpc_go(runtimes: &Runtimes, plan: &Plan, cell: Cell) -> anyhow::Result<Stats> {
    let server = GoServer::start(&binary("grpcserver"), &[], plan)?;
    let caller = super::tonic_peer::caller(runtimes, server.address(), cell)?;
    let stats = drive_measuring(runtimes, plan, cell, caller, with_server_cpu(server.pid()));
    Ok(stats)
}

/// The CPU of this process (the client, and the server if it runs here) plus
/// the server's when process `pid` is another one.
pub(crate) fn with_server_cpu(pid: u32) -> impl Fn() -> Duration + Send + 'static {
    let other = pid != std::process::id();
    move || {
        process_cpu()
            + if other {
                crate::cpu::of_process(pid)
            } else {
                Duration::ZERO
            }
    }
}

/// grpc-go's server alone (for h2load), its CPU read from `/proc`.
pub(crate) fn start_grpc_go(plan: &Plan) -> anyhow::Result<RunningServer<'static>> {
    let server = GoServer::start(&binary("grpcserver"), &[], plan)?;
    let (address, pid) = (server.address(), server.pid());
    Ok(RunningServer {
        address,
        pid,
        cpu: Box::new(move || crate::cpu::of_process(pid)),
        stop: Box::new(move || {
            drop(server);
            Ok(())
        }),
    })
}

/// Go's net/rpc: its server, and its client running the closed loop.
pub(crate) fn run_netrpc(plan: &Plan, cell: Cell) -> anyhow::Result<Sample> {
    let netrpc = binary("netrpc");
    let server = GoServer::start(&netrpc, &["serve"], plan)?;
    let output = Command::new(&netrpc)
        .arg("load")
        .args(["-address", &server.address().to_string()])
        .args(["-payload", &cell.payload.to_string()])
        .args(cell.bytes.then_some("-bytes"))
        .args(["-concurrency", &cell.concurrency.to_string()])
        .args(["-connections", &cell.connections.to_string()])
        .args(["-warmup-ms", &plan.warmup.as_millis().to_string()])
        .args(["-duration-ms", &plan.duration.as_millis().to_string()])
        .args(["-server-pid", &server.pid().to_string()])
        .env("GOMAXPROCS", plan.client_threads.to_string())
        .stdin(Stdio::null())
        .output()?;
    anyhow::ensure!(
        output.status.success(),
        "the net/rpc client failed ({}): {}",
        output.status,
        String::from_utf8_lossy(&output.stderr).trim()
    );
    let sample: Sample =
        serde_json::from_slice(&output.stdout).context("the net/rpc client printed no figures")?;
    anyhow::ensure!(
        sample.is_of(cell),
        "the net/rpc client measured another cell"
    );
    Ok(sample)
}

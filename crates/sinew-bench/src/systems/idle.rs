//! Memory per idle connection: what a server keeps for each connection that
//! made one call and then stays open and quiet (the fleet-of-clients shape:
//! most connections of a busy server are idle at any moment).
//!
//! The cell's process starts the server and measures its resident memory
//! (`VmRSS`); a second process (this binary with `--hold-idle`) opens the
//! cell's connections with the system's own client, makes one 1 KiB call on
//! each, says `ready` and holds them until its stdin closes. The figure is the
//! growth of the server's RSS over the connection count. The clients are in
//! their own process so their memory is not counted; an in-process server's
//! RSS includes the idle client runtime, the same for every system.

use super::{sinew_peer, tarpc_peer, tonic_peer, volo_peer};
use super::{RunningServer, System};
use crate::load::{Caller, Cell, OverConnections, Plan, Runtimes};
use crate::sample::Sample;
use anyhow::Context;
use futures_util::StreamExt;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// How long the holder may take to connect and call: 10,000 connections of
/// the slowest client take a few seconds.
const HOLD_LIMIT: Duration = Duration::from_secs(60);

/// Runs an idle-connection cell: the server here, the clients in a holder
/// process.
pub(crate) fn run(runtimes: &Runtimes, plan: &Plan, cell: Cell) -> anyhow::Result<Sample> {
    raise_open_files_limit();
    let server = super::start_server(runtimes, plan, cell.system)?;
    let result = measure(plan, cell, &server);
    server.stop()?;
    result
}

fn measure(plan: &Plan, cell: Cell, server: &RunningServer<'_>) -> anyhow::Result<Sample> {
    // A moment for the server to finish starting, then the baseline.
    std::thread::sleep(Duration::from_millis(200));
    let before = rss(server.pid)?;
    let mut holder = Command::new(std::env::current_exe()?)
        .args(["--hold-idle", &server.address.to_string()])
        .args(["--cell", &cell.to_arg()])
        .args(["--client-threads", &plan.client_threads.to_string()])
        .args(["--server-threads", &plan.server_threads.to_string()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()?;
    let started = Instant::now();
    let stdout = holder.stdout.take().context("the holder's stdout")?;
    // The holder prints `ready` once every connection has made its call, or
    // exits with an error.
    let (ready, waited) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = BufReader::new(stdout).read_line(&mut line);
        let _ = ready.send(line);
    });
    let line = waited.recv_timeout(HOLD_LIMIT);
    let connected = started.elapsed();
    let outcome = match line {
        Ok(line) if line.trim() == "ready" => {
            // Past the last call's buffers being released.
            std::thread::sleep(Duration::from_millis(500));
            Ok(rss(server.pid)?)
        }
        Ok(_) => Err(anyhow::anyhow!(
            "the holder ended before holding every connection"
        )),
        Err(_) => Err(anyhow::anyhow!(
            "the holder was not ready within {HOLD_LIMIT:?}"
        )),
    };
    drop(holder.stdin.take());
    let _ = holder.kill();
    let _ = holder.wait();
    let after = outcome?;
    let per_connection = after.saturating_sub(before) as f64 / cell.connections as f64;
    Ok(Sample {
        calls: cell.connections as u64,
        seconds: connected.as_secs_f64(),
        rss_per_connection: per_connection,
        ..Sample::empty(cell)
    })
}

/// The holder (`--hold-idle ADDRESS --cell ...`): opens the cell's
/// connections to `address` with the system's own client, makes one call on
/// each, prints `ready`, and holds them until stdin closes.
pub(crate) fn hold(plan: &Plan, cell: Cell, address: std::net::SocketAddr) -> anyhow::Result<()> {
    raise_open_files_limit();
    let runtimes = Runtimes::new(plan)?;
    let runtimes = &runtimes;
    match cell.system {
        System::SinewTcp => hold_with(
            runtimes,
            sinew_peer::tcp_callers(runtimes, address, cell)?,
            cell,
        ),
        System::SinewGrpc | System::Tonic | System::GrpcGo => {
            hold_with(runtimes, tonic_peer::caller(runtimes, address, cell)?, cell)
        }
        System::Tarpc => hold_with(
            runtimes,
            tarpc_peer::callers(runtimes, address, cell)?,
            cell,
        ),
        System::Volo => {
            // Volo's client pools connections itself: a client per connection.
            let callers = (0..cell.connections)
                .map(|_| volo_peer::caller(runtimes, address, cell))
                .collect();
            hold_with(runtimes, OverConnections::new(callers), cell)
        }
        other => anyhow::bail!("{} has no idle-connection cell", other.name()),
    }
}

/// One call on each connection of `callers` (64 at a time), then `ready`,
/// then the connections held until stdin closes.
fn hold_with<C: Caller>(
    runtimes: &Runtimes,
    callers: OverConnections<C>,
    cell: Cell,
) -> anyhow::Result<()> {
    runtimes.client.block_on(async {
        // Each clone takes the next connection in turn.
        let mut calls = futures_util::stream::iter(0..cell.connections)
            .map(|_| {
                let caller = callers.clone();
                async move { caller.call().await }
            })
            .buffer_unordered(64);
        while let Some(result) = calls.next().await {
            result?;
        }
        Ok::<_, anyhow::Error>(())
    })?;
    println!("ready");
    // Hold everything until the cell's process closes our stdin (or dies).
    let mut rest = String::new();
    let _ = std::io::stdin().read_line(&mut rest);
    drop(callers);
    Ok(())
}

/// Resident memory of process `pid` in bytes (`VmRSS` in `/proc/PID/status`).
fn rss(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.trim().strip_suffix("kB"))
        .and_then(|kb| kb.trim().parse::<u64>().ok())
        .map(|kb| kb * 1024)
        .with_context(|| format!("no VmRSS for process {pid}"))
}

/// Raises this process's soft limit on open files to its hard limit:
/// 10,000 connections need more descriptors than the usual soft 1,024.
fn raise_open_files_limit() {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    if let Ok((_, hard)) = getrlimit(Resource::RLIMIT_NOFILE) {
        let _ = setrlimit(Resource::RLIMIT_NOFILE, hard, hard);
    }
}

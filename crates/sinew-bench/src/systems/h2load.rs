//! h2load (nghttp2's HTTP/2 load generator, Debian's `nghttp2-client`) as an
//! independent client for the three gRPC servers: sinew's gRPC path, tonic
//! and grpc-go. The other gRPC rows share tonic's client, whose own costs
//! cap what any server can show; h2load is written in C and costs the same
//! whatever the server, so these rows compare servers.
//!
//! h2load posts one prepared gRPC request (the echo of the cell's payload)
//! over `-c` connections with `-m` streams in flight on each, for the plan's
//! warm-up and duration, and logs every measured request: the latencies come
//! from that log. It checks HTTP status codes, not gRPC ones or bodies, so
//! each run also checks that the bytes of DATA received cover an echo per
//! request (a server answering errors sends none). The CPU figure is the
//! server's alone.

use super::RunningServer;
use crate::load::{Cell, Plan, Stats, Tally};
use crate::scratch::Scratch;
use anyhow::Context;
use std::process::{Command, Stdio};
use std::time::Duration;

/// Runs `cell` against `server` with h2load, then stops the server.
pub(crate) fn run(plan: &Plan, cell: Cell, server: RunningServer<'_>) -> anyhow::Result<Stats> {
    let result = drive(plan, cell, &server);
    server.stop()?;
    result
}

fn drive(plan: &Plan, cell: Cell, server: &RunningServer<'_>) -> anyhow::Result<Stats> {
    let scratch = Scratch::new("h2load")?;
    let body = grpc_frame(&super::payload(cell.payload));
    let body_path = scratch.join("request");
    std::fs::write(&body_path, &body)?;
    let log_path = scratch.join("log");
    let each = cell.concurrency / cell.connections;
    let child = Command::new("h2load")
        .args(["-c", &cell.connections.to_string()])
        .args(["-m", &each.to_string()])
        .args(["-t", &plan.client_threads.min(cell.connections).to_string()])
        .args(["-D", &format!("{}ms", plan.duration.as_millis())])
        .args(["--warm-up-time", &format!("{}ms", plan.warmup.as_millis())])
        .arg("-d")
        .arg(&body_path)
        .args(["-H", "content-type: application/grpc", "-H", "te: trailers"])
        .arg("--log-file")
        .arg(&log_path)
        .arg(format!(
            "http://{}/grpc.examples.echo.Echo/UnaryEcho",
            server.address
        ))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context(
            "cannot run h2load: install Debian's nghttp2-client (scripts/test.sh does), \
             or leave out the h2load rows",
        )?;
    // h2load connects at once and then warms up: the measured phase starts
    // about now.
    std::thread::sleep(plan.warmup);
    let cpu_before = server.cpu();
    let output = child.wait_with_output()?;
    let cpu = server.cpu().saturating_sub(cpu_before);
    let stdout = String::from_utf8_lossy(&output.stdout);
    anyhow::ensure!(
        output.status.success(),
        "h2load failed ({}): {}{}",
        output.status,
        stdout.trim(),
        String::from_utf8_lossy(&output.stderr).trim()
    );
    let summary = Summary::parse(&stdout)?;
    let mut tally = Tally::new();
    let mut unrecorded = 0;
    let log = std::fs::read_to_string(&log_path).context("h2load wrote no request log")?;
    for line in log.lines() {
        // start (µs since the epoch), HTTP status, µs until the response ended
        let mut fields = line.split('\t');
        let (Some(_), Some(status), Some(micros)) = (fields.next(), fields.next(), fields.next())
        else {
            anyhow::bail!("h2load's log has a line it does not document: {line:?}");
        };
        match (status, micros.trim().parse::<u64>()) {
            ("200", Ok(micros)) => tally.answered(Duration::from_micros(micros)),
            // A request that straddled the end of the warm-up: h2load counts
            // it succeeded but logs no status (checked below).
            ("0", _) if summary.failed == 0 => unrecorded += 1,
            (status, _) => tally.failed(format_args!("HTTP status {status}")),
        }
    }
    let logged = tally.calls() + unrecorded;
    if logged != summary.succeeded {
        tally.failed(format_args!(
            "h2load logged {logged} requests but counted {} succeeded",
            summary.succeeded
        ));
    }
    for _ in 0..summary.failed {
        tally.failed("h2load counted a request failed, errored or timed out");
    }
    // DATA received (both phases) must hold at least one echo per measured
    // request: the response is the request's frame, echoed.
    if summary.data_bytes < summary.succeeded * body.len() as u64 {
        tally.failed(format_args!(
            "{} bytes of DATA received for {} requests of {} bytes: not every answer was an echo",
            summary.data_bytes,
            summary.succeeded,
            body.len()
        ));
    }
    Ok(tally.into_stats(plan.duration, cpu))
}

/// A gRPC message frame holding `EchoRequest { message }` (field 1, a string).
fn grpc_frame(message: &str) -> Vec<u8> {
    let mut protobuf = vec![0x0a];
    let mut len = message.len();
    while len >= 0x80 {
        protobuf.push((len as u8 & 0x7f) | 0x80);
        len >>= 7;
    }
    protobuf.push(len as u8);
    protobuf.extend_from_slice(message.as_bytes());
    let mut frame = vec![0];
    frame.extend_from_slice(&(protobuf.len() as u32).to_be_bytes());
    frame.extend_from_slice(&protobuf);
    frame
}

/// What h2load's summary on stdout says of the measured phase.
#[derive(Debug, PartialEq)]
struct Summary {
    succeeded: u64,
    /// Requests failed, errored or timed out.
    failed: u64,
    /// Bytes of DATA frames received, warm-up included.
    data_bytes: u64,
}

impl Summary {
    fn parse(stdout: &str) -> anyhow::Result<Summary> {
        let line = |prefix: &str| {
            stdout
                .lines()
                .find_map(|l| l.strip_prefix(prefix))
                .with_context(|| format!("h2load printed no `{prefix}` line: {stdout}"))
        };
        // "requests: 94316 total, 94316 started, 94316 done, 94316 succeeded,
        //  0 failed, 0 errored, 0 timeout"
        let requests = line("requests: ")?;
        let count = |what: &str| -> anyhow::Result<u64> {
            requests
                .split(", ")
                .find_map(|item| item.strip_suffix(what)?.trim().parse().ok())
                .with_context(|| format!("no `{what}` count in h2load's `{requests}`"))
        };
        // "traffic: 95.67MB (100322221) total, 278.46KB (285138) headers
        //  (space savings 94.74%), 140.31MB (147125016) data"
        let traffic = line("traffic: ")?;
        let data_bytes = traffic
            .split(", ")
            .find_map(|item| {
                let item = item.strip_suffix(" data")?;
                let (_, exact) = item.split_once('(')?;
                exact.strip_suffix(')')?.parse().ok()
            })
            .with_context(|| format!("no data bytes in h2load's `{traffic}`"))?;
        Ok(Summary {
            succeeded: count(" succeeded")?,
            failed: count(" failed")? + count(" errored")? + count(" timeout")?,
            data_bytes,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_h2loads_summary() {
        let stdout = "finished in 3.00s, 47158.00 req/s, 47.84MB/s\n\
            requests: 94316 total, 94316 started, 94316 done, 94310 succeeded, 4 failed, 1 errored, 1 timeout\n\
            status codes: 94316 2xx, 0 3xx, 0 4xx, 0 5xx\n\
            traffic: 95.67MB (100322221) total, 278.46KB (285138) headers (space savings 94.74%), 140.31MB (147125016) data\n";
        assert_eq!(
            Summary::parse(stdout).unwrap(),
            Summary {
                succeeded: 94310,
                failed: 6,
                data_bytes: 147125016
            }
        );
        assert!(Summary::parse("finished in 3.00s\n").is_err());
    }

    #[test]
    fn frames_an_echo_request() {
        // 1024 bytes: the length takes two varint bytes.
        let frame = grpc_frame(&"x".repeat(1024));
        assert_eq!(&frame[..8], &[0, 0, 0, 4, 3, 0x0a, 0x80, 0x08]);
        assert_eq!(frame.len(), 5 + 3 + 1024);
        assert_eq!(grpc_frame("hi"), [0, 0, 0, 0, 4, 0x0a, 2, b'h', b'i']);
    }
}

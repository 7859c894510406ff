//! A shared-memory peer killed with SIGKILL in the middle of a stream: the other
//! side reports UNAVAILABLE and leaks nothing (descriptors and memfd mappings
//! counted before and after, /dev/shm untouched), whichever side dies.
//!
//! One test in its own binary, so that no other test opens descriptors in this
//! process while they are counted.

mod common;

use common::{fds_and_shm_mappings, sinew, Serve};
use futures_util::StreamExt;
use sinew::{Channel, Code, Request};
use sinew_examples::echo::{echo_client::EchoClient, EchoRequest};
use std::io::{BufRead, BufReader, Write};
use std::process::Stdio;
use std::time::{Duration, Instant};

fn kill(pid: u32) {
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
}

/// Waits until `condition` holds; fails after `limit` with `what`.
async fn eventually(limit: Duration, what: &str, mut condition: impl FnMut() -> bool) {
    let start = Instant::now();
    while !condition() {
        assert!(start.elapsed() < limit, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_killed_mid_stream_is_reported_and_leaks_nothing() {
    // 1. The server dies: this process is the client.
    // (Counted before the server starts: its pipes to us are closed by the end.)
    let before = fds_and_shm_mappings("self");
    let dev_shm_before = dev_shm();
    let serve = Serve::start();
    {
        let address: sinew::transport::Address = serve.shm.parse().unwrap();
        let channel = Channel::builder(address).connect().await.unwrap();
        assert!(
            fds_and_shm_mappings("self").1 > before.1,
            "the region is mapped"
        );
        let client = EchoClient::new(channel);
        let mut request = Request::new(EchoRequest {
            message: "x".repeat(4096),
        });
        request
            .metadata_mut()
            .insert("x-repeat", "1000000")
            .unwrap();
        let mut stream = client
            .server_streaming_echo(request)
            .await
            .unwrap()
            .into_inner();
        for _ in 0..100 {
            stream.next().await.unwrap().unwrap();
        }
        kill(serve.pid());
        let status = loop {
            match tokio::time::timeout(Duration::from_secs(10), stream.next())
                .await
                .expect("the stream ends soon after the kill")
            {
                Some(Ok(_)) => continue, // what was already in the ring
                Some(Err(status)) => break status,
                None => panic!("the stream ended as if the server had finished"),
            }
        };
        assert_eq!(status.code(), Code::Unavailable, "{status}");
    }
    drop(serve);
    eventually(
        Duration::from_secs(10),
        "client descriptors and mappings back to where they were",
        || fds_and_shm_mappings("self") == before,
    )
    .await;

    // 2. The client dies: a `sinew call` process streaming into the server.
    let serve = Serve::start();
    let pid = serve.pid().to_string();
    let idle = fds_and_shm_mappings(&pid);
    let mut caller = sinew()
        .args([
            "call",
            &serve.shm,
            "grpc.examples.echo.Echo/BidirectionalStreamingEcho",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdin = caller.stdin.take().unwrap();
    let mut stdout = BufReader::new(caller.stdout.take().unwrap());
    for i in 0..20 {
        writeln!(stdin, r#"{{"message": "line {i}"}}"#).unwrap();
        let mut answer = String::new();
        stdout.read_line(&mut answer).unwrap();
        assert!(answer.contains(&format!("line {i}")), "{answer}");
    }
    let streaming = fds_and_shm_mappings(&pid);
    assert!(streaming.1 > idle.1, "the server maps the caller's region");
    kill(caller.id());
    let _ = caller.wait();
    eventually(
        Duration::from_secs(10),
        "server descriptors and mappings back to idle",
        || fds_and_shm_mappings(&pid) == idle,
    )
    .await;
    // And it still serves.
    let address: sinew::transport::Address = serve.shm.parse().unwrap();
    let client = EchoClient::new(Channel::builder(address).connect().await.unwrap());
    let reply = client
        .unary_echo(EchoRequest {
            message: "still here".into(),
        })
        .await
        .unwrap();
    assert_eq!(reply.into_inner().message, "still here");
    drop(client);
    drop(serve);
    // memfds have no name in any file system: nothing was ever put in /dev/shm.
    assert_eq!(dev_shm(), dev_shm_before, "/dev/shm is as it was");
}

/// The entries of /dev/shm (empty if there is none).
fn dev_shm() -> Vec<std::ffi::OsString> {
    let mut names: Vec<_> = std::fs::read_dir("/dev/shm")
        .map(|dir| dir.filter_map(|e| e.ok()).map(|e| e.file_name()).collect())
        .unwrap_or_default();
    names.sort();
    names
}

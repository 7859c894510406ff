//! The embedded gossip registry across OS processes: three `sinew serve`
//! members, a client that calls the echo service by name through the
//! cluster, one member SIGKILLed and one interrupted (it leaves, then
//! drains) under load, and one that joins.

mod common;

use common::Serve;
use sinew::cluster::name::connect_service;
use sinew::cluster::Balanced;
use sinew_examples::echo::{echo_client::EchoClient, EchoRequest};
use std::io::BufRead;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const ECHO: &str = "grpc.examples.echo.Echo";

/// `sinew serve` as a member of the cluster: gossiping on a free port, joined
/// through `seed` if given. Returns the server and its gossip address.
fn member(seed: Option<&str>) -> (Serve, String) {
    let mut flags = vec!["--gossip", "127.0.0.1:0"];
    if let Some(seed) = seed {
        flags.extend(["--join", seed]);
    }
    let mut serve = Serve::start_with(&flags);
    loop {
        let mut line = String::new();
        assert!(
            serve.stdout.read_line(&mut line).unwrap() > 0,
            "serve exited early"
        );
        if let Some((_, gossip)) = line.trim().split_once(", gossip on ") {
            return (serve, gossip.to_owned());
        }
    }
}

/// Waits until the channel's set is exactly the TCP addresses of `servers`,
/// all ready; how long it took.
async fn until_endpoints(channel: &Balanced, servers: &[&Serve]) -> Duration {
    let started = Instant::now();
    let mut wanted: Vec<String> = servers.iter().map(|serve| serve.tcp.clone()).collect();
    wanted.sort();
    loop {
        let reports = channel.endpoints();
        let mut ready: Vec<String> = reports
            .iter()
            .filter(|report| report.health == sinew::cluster::balance::Health::Ready)
            .map(|report| report.endpoint.address().to_string())
            .collect();
        ready.sort();
        if ready == wanted && reports.len() == wanted.len() {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "the set never became {wanted:?}: {reports:#?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn calls_to(channel: &Balanced, server: &Serve) -> u64 {
    channel
        .endpoints()
        .iter()
        .find(|report| report.endpoint.address().to_string() == server.tcp)
        .map_or(0, |report| report.calls)
}

/// Calls made under load and how they ended.
#[derive(Default)]
struct Load {
    ok: AtomicU64,
    failed: AtomicU64,
    failures: Mutex<Vec<String>>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_by_name_survive_members_killed_leaving_and_joining() {
    let (a, seed) = member(None);
    let (b, _) = member(Some(&seed));
    let (mut c, _) = member(Some(&seed));
    let channel = connect_service(&format!("gossip://{seed}"), ECHO)
        .await
        .unwrap();
    until_endpoints(&channel, &[&a, &b, &c]).await;

    // 16 callers, bounded in count and time.
    let load = Arc::new(Load::default());
    let stop = Arc::new(AtomicBool::new(false));
    let callers: Vec<_> = (0..16)
        .map(|_| {
            let client = EchoClient::new(channel.clone());
            let (load, stop) = (load.clone(), stop.clone());
            tokio::spawn(async move {
                let deadline = Instant::now() + Duration::from_secs(60);
                for _ in 0..1_000_000 {
                    if stop.load(Ordering::Relaxed) || Instant::now() > deadline {
                        break;
                    }
                    let request = EchoRequest {
                        message: "ping".to_owned(),
                    };
                    match client.unary_echo(request).await {
                        Ok(_) => load.ok.fetch_add(1, Ordering::Relaxed),
                        Err(status) => {
                            load.failures.lock().unwrap().push(status.to_string());
                            load.failed.fetch_add(1, Ordering::Relaxed)
                        }
                    };
                }
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(500)).await;
    for server in [&a, &b, &c] {
        assert!(
            calls_to(&channel, server) > 0,
            "{} got no calls",
            server.tcp
        );
    }

    // SIGKILL: only calls in flight on the killed member may fail, and it
    // leaves the set (its connection breaks at once; gossip declares it dead).
    let before = load.failed.load(Ordering::Relaxed);
    c.child.kill().unwrap();
    c.child.wait().unwrap();
    let killed = Instant::now();
    let gone = until_endpoints(&channel, &[&a, &b]).await;
    let ok_at_kill = load.ok.load(Ordering::Relaxed);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        load.ok.load(Ordering::Relaxed) > ok_at_kill,
        "calls stopped"
    );
    let failed_by_kill = load.failed.load(Ordering::Relaxed) - before;
    assert!(
        failed_by_kill <= 16,
        "{failed_by_kill} calls failed, more than were in flight: {:?}",
        load.failures.lock().unwrap()
    );

    // A member joins: it gets calls within a second or so.
    let (d, _) = member(Some(&seed));
    let joined = until_endpoints(&channel, &[&a, &b, &d]).await;
    let calls_before = calls_to(&channel, &d);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        calls_to(&channel, &d) > calls_before,
        "the new member gets no calls"
    );

    // SIGINT: the member leaves the cluster, then drains; no call fails.
    let before = load.failed.load(Ordering::Relaxed);
    let (status, out) = tokio::task::spawn_blocking(move || b.interrupt())
        .await
        .unwrap();
    assert!(status.success(), "{out}");
    until_endpoints(&channel, &[&a, &d]).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::Relaxed);
    for caller in callers {
        caller.await.unwrap();
    }
    assert_eq!(
        load.failed.load(Ordering::Relaxed) - before,
        0,
        "calls failed while a member left gracefully: {:?}",
        load.failures.lock().unwrap()
    );
    eprintln!(
        "{} calls ok, {} failed when a member was SIGKILLed; killed member out of the set in {:?} ({:?} after the kill), new member in after {joined:?}",
        load.ok.load(Ordering::Relaxed),
        failed_by_kill,
        gone,
        killed.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_service_name_lists_the_published_ones() {
    let (_a, seed) = member(None);
    let output = common::sinew()
        .args(["call", &format!("gossip://{seed}"), "no.Such/Method", "{}"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(
        stderr.contains("no.Such") && stderr.contains(ECHO),
        "{stderr}"
    );
    let members = common::sinew()
        .args(["members", &format!("gossip://{seed}"), "--wait", "600ms"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&members.stdout);
    assert!(members.status.success(), "{stdout}");
    assert!(stdout.contains("live") && stdout.contains(ECHO), "{stdout}");
}

//! The registries across OS processes, the embedded gossip one and etcd (a
//! real `etcd` started by the test): three `sinew serve` servers, a client
//! that calls the echo service by name, one server SIGKILLed and one
//! interrupted (it leaves the registry, then drains) under load, and one
//! that joins.

mod common;
#[path = "../../sinew-cluster/tests/support/etcd_cluster.rs"]
mod etcd_cluster;

use common::Serve;
use etcd_cluster::EtcdCluster;
use sinew::cluster::name::connect_service;
use sinew::cluster::Balanced;
use sinew_examples::echo::{echo_client::EchoClient, EchoRequest};
use std::io::BufRead;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const ECHO: &str = "grpc.examples.echo.Echo";

/// Where servers register and clients resolve.
enum Registry {
    /// Gossip, through the first server's gossip address once it runs.
    Gossip { seed: Option<String> },
    /// etcd, at this client address (`host:port`).
    Etcd {
        _cluster: EtcdCluster,
        address: String,
    },
}

impl Registry {
    /// `sinew serve` in the registry: gossiping on a free port (joined
    /// through the seed, or the seed itself), or registered in etcd with a
    /// 2 s lease.
    fn server(&mut self) -> Serve {
        match self {
            Registry::Gossip { seed } => {
                let mut flags = vec!["--gossip".to_owned(), "127.0.0.1:0".to_owned()];
                if let Some(seed) = seed {
                    flags.extend(["--join".to_owned(), seed.clone()]);
                }
                let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
                let mut serve = Serve::start_with(&flags);
                let gossip = until_line(&mut serve, ", gossip on ");
                seed.get_or_insert(gossip);
                serve
            }
            Registry::Etcd { address, .. } => {
                let register = format!("etcd://{address}");
                let mut serve = Serve::start_with(&["--register", &register, "--ttl", "2s"]);
                until_line(&mut serve, "registered ");
                serve
            }
        }
    }

    /// The name clients call the registry by.
    fn name(&self) -> String {
        match self {
            Registry::Gossip { seed } => format!("gossip://{}", seed.as_deref().unwrap()),
            Registry::Etcd { address, .. } => format!("etcd://{address}"),
        }
    }
}

/// Reads the server's output until a line containing `marker`; what follows
/// the marker.
fn until_line(serve: &mut Serve, marker: &str) -> String {
    loop {
        let mut line = String::new();
        assert!(
            serve.stdout.read_line(&mut line).unwrap() > 0,
            "serve exited early"
        );
        if let Some((_, rest)) = line.trim().split_once(marker) {
            return rest.to_owned();
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
async fn gossip_calls_by_name_survive_servers_killed_leaving_and_joining() {
    servers_killed_leaving_and_joining(Registry::Gossip { seed: None }).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_calls_by_name_survive_servers_killed_leaving_and_joining() {
    let cluster = EtcdCluster::start(1).await;
    let address = cluster.client_address(0);
    servers_killed_leaving_and_joining(Registry::Etcd {
        _cluster: cluster,
        address,
    })
    .await;
}

/// Whether the channel no longer sends calls to `server` (it is out of the
/// set, or its connection is gone).
fn no_calls_to(channel: &Balanced, server: &Serve) -> bool {
    channel.endpoints().iter().all(|report| {
        report.endpoint.address().to_string() != server.tcp
            || report.health != sinew::cluster::balance::Health::Ready
    })
}

async fn servers_killed_leaving_and_joining(mut registry: Registry) {
    let a = registry.server();
    let b = registry.server();
    let mut c = registry.server();
    let channel = connect_service(&registry.name(), ECHO).await.unwrap();
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

    // SIGKILL: only calls in flight on the killed server may fail; it gets
    // no calls as soon as its connection breaks, and leaves the set when
    // the registry notices (gossip declares it dead, its etcd lease expires).
    let before = load.failed.load(Ordering::Relaxed);
    c.child.kill().unwrap();
    c.child.wait().unwrap();
    let killed = Instant::now();
    while !no_calls_to(&channel, &c) {
        assert!(
            killed.elapsed() < Duration::from_secs(10),
            "the killed server still gets calls"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let no_calls = killed.elapsed();
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

    // A server joins: it gets calls within a second or so.
    let d = registry.server();
    let joined = until_endpoints(&channel, &[&a, &b, &d]).await;
    let calls_before = calls_to(&channel, &d);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        calls_to(&channel, &d) > calls_before,
        "the new member gets no calls"
    );

    // SIGINT: the server leaves the registry, then drains; no call fails.
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
        "{}: {} calls ok, {} failed when a server was SIGKILLed; no calls to it after {no_calls:?}, out of the set {:?} after the kill; new server in after {joined:?}",
        registry.name(),
        load.ok.load(Ordering::Relaxed),
        failed_by_kill,
        gone + no_calls,
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_service_name_lists_the_published_ones() {
    let mut gossip = Registry::Gossip { seed: None };
    let _a = gossip.server();
    let cluster = EtcdCluster::start(1).await;
    let address = cluster.client_address(0);
    let mut etcd = Registry::Etcd {
        _cluster: cluster,
        address,
    };
    let _b = etcd.server();
    for registry in [&gossip, &etcd] {
        unknown_service_and_members(registry);
    }
}

fn unknown_service_and_members(registry: &Registry) {
    let output = common::sinew()
        .args(["call", &registry.name(), "no.Such/Method", "{}"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(
        stderr.contains("no.Such") && stderr.contains(ECHO),
        "{stderr}"
    );
    let members = common::sinew()
        .args(["members", &registry.name(), "--wait", "600ms"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&members.stdout);
    assert!(members.status.success(), "{stdout}");
    assert!(
        stdout.contains(ECHO) && stdout.contains("ready"),
        "{stdout}"
    );
}

#[test]
fn a_service_config_published_to_the_cluster_reaches_callers_and_changes_live() {
    let dir = std::env::temp_dir().join(format!("sinew-gossip-config-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("service-config.json");
    let write = |timeout: &str| {
        // Written aside and renamed in, as operators should.
        let aside = dir.join("service-config.json.tmp");
        std::fs::write(
            &aside,
            format!(r#"{{"methodConfig": [{{"name": [{{"service": "{ECHO}"}}], "timeout": "{timeout}"}}]}}"#),
        )
        .unwrap();
        std::fs::rename(&aside, &path).unwrap();
    };
    write("0.05s");
    let config = path.to_str().unwrap();
    // Every call takes 300 ms on this server.
    let mut serve = Serve::start_with(&[
        "--gossip",
        "127.0.0.1:0",
        "--publish-service-config",
        config,
        "--fault",
        "delay=300ms",
    ]);
    let seed = until_line(&mut serve, ", gossip on ");
    until_line(&mut serve, "published the service config ");
    let call = || {
        common::sinew()
            .args([
                "call",
                &format!("gossip://{seed}"),
                &format!("{ECHO}/UnaryEcho"),
                r#"{"message": "hi"}"#,
            ])
            .output()
            .unwrap()
    };
    // The published 50 ms timeout ends the call.
    let output = call();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(stderr.contains("DEADLINE_EXCEEDED"), "{stderr}");
    // A new version of the file is published, and callers follow it.
    write("10s");
    until_line(&mut serve, "published the new service config ");
    let output = call();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("hi"), "{stdout}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// `sinew top etcd://...` (and `sinew dashboard`, which reads the same
/// way): the servers registered with an admin endpoint, each one's figures
/// fetched from the address in its records' metadata.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn servers_registered_in_etcd_with_an_admin_endpoint_show_in_sinew_top() {
    let cluster = EtcdCluster::start(1).await;
    let registry = format!("etcd://{}", cluster.client_address(0));
    let flags = [
        "--register",
        &registry,
        "--ttl",
        "2s",
        "--admin",
        "127.0.0.1:0",
    ];
    let mut servers = [Serve::start_with(&flags), Serve::start_with(&flags)];
    for server in &mut servers {
        until_line(server, "registered ");
    }
    for server in &servers {
        let output = common::sinew()
            .args([
                "call",
                &server.tcp,
                "grpc.examples.echo.Echo/UnaryEcho",
                r#"{"message":"hi"}"#,
            ])
            .output()
            .unwrap();
        assert!(output.status.success(), "{output:?}");
    }
    let output = common::sinew()
        .args(["top", &registry, "--once"])
        .output()
        .unwrap();
    let table = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{output:?}");
    for server in &servers {
        // Each one, named by its registered address: its server line, and
        // its echo row with the call made to it.
        let member = server.tcp.trim_start_matches("tcp://");
        assert!(
            table
                .lines()
                .any(|line| line.starts_with(&format!("server {member}: "))
                    && line.contains("refused: none")),
            "no server line for {member} in\n{table}"
        );
        assert!(
            table.lines().any(|line| line.starts_with(member)
                && line.contains("grpc.examples.echo.Echo/UnaryEcho")
                && line.trim_end().ends_with(" 1")),
            "no echo row of {member} in\n{table}"
        );
    }
}

//! `sinew demo`: a cluster on one machine, with nothing to set up.
//!
//! Four nodes, each a `sinew serve` process of this binary, form a cluster on
//! the embedded gossip registry; client tasks in this process call the echo
//! service *by name* (`gossip://SEED/grpc.examples.echo.Echo`) through one
//! balanced channel. Mid-run, one node after another:
//!
//! 1. is SIGKILLed (the leader): calls in flight on it fail (and, being idempotent, are
//!    tried again on another node), it gets no new call as soon as its
//!    connection breaks, and it leaves the set when gossip declares it dead;
//! 2. drains gracefully (SIGINT; the new leader): it resigns, leaves the registry, then finishes its
//!    calls; none fails;
//! 3. is made 20 ms slower (SIGUSR1, `serve --fault-latency`): the balancer
//!    (power of two choices over peak-EWMA latency) gives it a small share;
//! 4. joins: a fifth node, which gets calls within a round or two of gossip.
//!
//! The report shows calls per node over time, the calls that failed, and how
//! long the set took to converge after each event.
//!
//! Every node also stands in a leader election ([`super::demo_election`],
//! on the embedded shared-state store in this process): the node SIGKILLed
//! is the leader, and the one drained is the leader elected after it, so the
//! report shows a fail-over when a lease runs out and a hand-over when a
//! leader resigns, one leader at a time.
//!
//! Meanwhile every node works on the tasks of a work queue on a broker in
//! this process ([`super::demo_tasks`]): tasks the killed node was running
//! are completed by another after the ack wait, the drained node finishes
//! its own; the report counts them, and the tasks lost (none).
//!
//! With `--dashboard HOST:PORT`, every node serves its admin endpoint and the
//! demo serves the cluster's live dashboard there (as `sinew dashboard`),
//! with the demo's client as one more process: its balanced channel's view
//! of the nodes, as the events change it.
//!
//! With `--tls`, the same over mutual TLS: a CA made at start (rcgen) issues
//! each node and the client a certificate with a SPIFFE ID
//! (`spiffe://sinew-demo/node/node-1`, `spiffe://sinew-demo/client`), nodes
//! listen on `tls://` and require client certificates, and an authorization
//! policy lets only the demo's trust domain call.

use crate::error::CliError;
use crate::time::format_duration;
use hdrhistogram::Histogram;
use sinew::cluster::balance::Health;
use sinew::cluster::gossip::MEMBER_METADATA;
use sinew::cluster::Balanced;
use sinew::{Code, Request, Status};
use sinew_examples::echo::{echo_client::EchoClient, EchoRequest};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

#[derive(clap::Args, Debug)]
pub(crate) struct Args {
    /// How long to drive the workload (the four events happen at 20%, 40%,
    /// 60% and 80% of it).
    #[arg(short, long, value_name = "DURATION", default_value = "12s", value_parser = crate::time::parse_duration)]
    duration: Duration,
    /// Client tasks making calls at once.
    #[arg(short, long, default_value_t = 16)]
    concurrency: usize,
    /// Run the cluster over mutual TLS, on certificates made at start, with
    /// an authorization policy.
    #[arg(long)]
    tls: bool,
    /// Serve the cluster's live dashboard on this address (HTTP; port 0
    /// picks a free one, printed) while the demo runs: every node, and this
    /// client's view of them. Give a longer --duration to watch it.
    #[arg(long, value_name = "HOST:PORT")]
    dashboard: Option<std::net::SocketAddr>,
}

/// The demo's certificates and policy, in a directory removed at the end.
struct Pki {
    dir: std::path::PathBuf,
    ca: sinew::tls::dev::DevCa,
    client: sinew::tls::ClientTls,
}

/// The trust domain of the demo's SPIFFE IDs.
const TRUST_DOMAIN: &str = "spiffe://sinew-demo";

impl Pki {
    fn new() -> Result<Pki, CliError> {
        let failure =
            |e: &dyn std::fmt::Display| CliError::failure(format!("making certificates: {e}"));
        // A directory of its own, which nobody else can read or have made
        // first: it holds the nodes' private keys.
        let nonce = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |since| since.subsec_nanos());
        let dir =
            std::env::temp_dir().join(format!("sinew-demo-pki-{}-{nonce:08x}", std::process::id()));
        {
            use std::os::unix::fs::DirBuilderExt;
            std::fs::DirBuilder::new().mode(0o700).create(&dir)?;
        }
        let ca = sinew::tls::dev::DevCa::new("sinew demo CA").map_err(|e| failure(&e))?;
        sinew::tls::dev::write_atomically(
            &dir.join("ca.crt"),
            ca.certificate_pem().as_bytes(),
            0o644,
        )?;
        let client = ca
            .issue(&[&format!("{TRUST_DOMAIN}/client")])
            .map_err(|e| failure(&e))?;
        let client = sinew::tls::ClientTls::builder()
            .ca_pem(ca.certificate_pem())
            .identity_pem(client.chain_pem(), client.key_pem())
            .build()
            .map_err(|e| failure(&e))?;
        std::fs::write(
            dir.join("policy.toml"),
            format!("[[allow]]\nprincipals = [\"{TRUST_DOMAIN}/*\"]\n"),
        )?;
        Ok(Pki { dir, ca, client })
    }

    /// The `serve` arguments of node `name`: its certificate, the CA its
    /// clients' certificates must chain to, the policy.
    fn node_args(&self, name: &str) -> Result<Vec<String>, CliError> {
        let certificate = self
            .ca
            .issue(&["127.0.0.1", &format!("{TRUST_DOMAIN}/node/{name}")])
            .map_err(|e| CliError::failure(format!("making certificates: {e}")))?;
        let (cert, key) = certificate.write(&self.dir, name)?;
        let path = |p: &std::path::Path| p.display().to_string();
        Ok(vec![
            "--tls-cert".into(),
            path(&cert),
            "--tls-key".into(),
            path(&key),
            "--client-ca".into(),
            path(&self.dir.join("ca.crt")),
            "--policy".into(),
            path(&self.dir.join("policy.toml")),
        ])
    }
}

impl Drop for Pki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

const ECHO: &str = "grpc.examples.echo.Echo";
/// The nodes at the start; a fifth joins mid-run.
const NODES: usize = 4;
/// How much slower the slow node gets.
const SLOWER: Duration = Duration::from_millis(20);
/// How long the report waits for the set to converge after an event.
const CONVERGE_WITHIN: Duration = Duration::from_secs(5);

/// One `sinew serve` node.
struct Node {
    name: String,
    child: Child,
    /// Its TCP address, as published.
    address: String,
    /// Its gossip address.
    gossip: String,
}

impl Node {
    /// Starts `name`, joined through `seed` (or the first node), and waits
    /// until it publishes.
    /// With `admin`, it serves its admin endpoint on a free port (the
    /// cluster learns where).
    async fn start(
        name: &str,
        seed: Option<&str>,
        pki: Option<&Pki>,
        admin: bool,
        tasks: &str,
        election: &[String],
    ) -> Result<Node, CliError> {
        let exe = std::env::current_exe()?;
        let mut command = Command::new(exe);
        let listen = if pki.is_some() {
            "tls://127.0.0.1:0"
        } else {
            "tcp://127.0.0.1:0"
        };
        command
            .args(["serve", "--listen", listen, "--gossip", "127.0.0.1:0"])
            .args(["--cluster", "sinew-demo", "--name", name])
            .args(["--fault-latency", "20ms", "--drain-timeout", "2s"])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true);
        if let Some(seed) = seed {
            command.args(["--join", seed]);
        }
        if let Some(pki) = pki {
            command.args(pki.node_args(name)?);
        }
        if admin {
            command.args(["--admin", "127.0.0.1:0"]);
        }
        command
            .args(["--tasks", tasks, "--task-queue", super::demo_tasks::QUEUE])
            .args(["--task-time", super::demo_tasks::TASK_TIME])
            .args(["--task-concurrency", super::demo_tasks::TASK_CONCURRENCY])
            .args(election);
        let mut child = command
            .spawn()
            .map_err(|e| CliError::failure(format!("starting node {name}: {e}")))?;
        let stdout = child.stdout.take().expect("piped");
        let mut lines = BufReader::new(stdout).lines();
        let (mut address, mut gossip) = (None, None);
        while address.is_none() || gossip.is_none() {
            let line = tokio::time::timeout(Duration::from_secs(10), lines.next_line())
                .await
                .map_err(|_| CliError::failure(format!("node {name} did not start within 10s")))??
                .ok_or_else(|| CliError::failure(format!("node {name} exited at start")))?;
            if let Some(rest) = line.strip_prefix("published ") {
                address = rest.split(':').take(3).collect::<Vec<_>>().join(":").into();
            }
            if let Some((_, rest)) = line.split_once(", gossip on ") {
                gossip = Some(rest.to_owned());
            }
        }
        // Keep reading its output, so that the pipe never fills.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Ok(Node {
            name: name.to_owned(),
            child,
            address: address.expect("read"),
            gossip: gossip.expect("read"),
        })
    }

    fn signal(&self, signal: nix::sys::signal::Signal) {
        if let Some(pid) = self.child.id() {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), signal);
        }
    }
}

/// The index of the node named `leader`, unless spared (then, or with no
/// leader, the last node not spared).
fn leading(nodes: &[Node], leader: Option<String>, spared: &[usize]) -> usize {
    leader
        .and_then(|leader| nodes.iter().position(|node| node.name == leader))
        .filter(|index| !spared.contains(index))
        .unwrap_or_else(|| {
            (0..nodes.len())
                .rev()
                .find(|i| !spared.contains(i))
                .unwrap_or(0)
        })
}

/// The calls of the run and how they ended.
struct Tally {
    ok: AtomicU64,
    /// Calls that failed once and were tried again on another node.
    retried: AtomicU64,
    /// Calls that failed for good, by code.
    failed: Mutex<BTreeMap<&'static str, u64>>,
    stream_messages: AtomicU64,
    latency: Mutex<Histogram<u64>>,
}

/// What happened at one event, and how the set converged.
struct Event {
    at: Duration,
    what: String,
    /// Filled in when the set has converged (or not, within the wait).
    outcome: tokio::task::JoinHandle<String>,
}

pub(crate) async fn run(args: Args) -> Result<(), CliError> {
    let pki = if args.tls { Some(Pki::new()?) } else { None };
    let admin = args.dashboard.is_some();
    let tasks = super::demo_tasks::Tasks::start().await?;
    let elections = super::demo_election::Elections::start().await?;
    let mut nodes = Vec::new();
    for i in 1..=NODES {
        let seed = nodes.first().map(|node: &Node| node.gossip.clone());
        let node = Node::start(
            &format!("node-{i}"),
            seed.as_deref(),
            pki.as_ref(),
            admin,
            &tasks.address,
            &elections.node_args(),
        )
        .await?;
        nodes.push(node);
    }
    let seed = nodes[0].gossip.clone();
    for node in &nodes {
        println!(
            "{} serving at {}, gossip on {}",
            node.name, node.address, node.gossip
        );
    }
    let name = format!("gossip://{seed}/{ECHO}?cluster=sinew-demo");
    let mut builder = sinew::cluster::name::builder(&name, None)
        .await
        .map_err(|status| CliError::failure(format!("resolving {name}: {}", status.message())))?;
    if let Some(pki) = &pki {
        builder = builder.tls(pki.client.clone());
        println!(
            "mutual TLS: a CA made at start issued every node and this client a certificate with a SPIFFE ID ({TRUST_DOMAIN}/...); nodes allow only that trust domain"
        );
    }
    let channel = builder.build();
    let ready = tokio::time::timeout(CONVERGE_WITHIN, channel.until_ready(NODES)).await;
    if ready.is_err() {
        return Err(CliError::failure(
            "the cluster did not form: not every node was ready within 5s",
        ));
    }
    let Some(first_leader) = elections.until_leader(CONVERGE_WITHIN).await else {
        return Err(CliError::failure("no node was elected leader within 5s"));
    };
    println!("{first_leader} leads the election");
    let _dashboard = match args.dashboard {
        Some(address) => Some(serve_dashboard(address, &seed, &channel).await?),
        None => None,
    };
    println!(
        "{} client tasks calling {name} for {}: unary and server-streaming echo",
        args.concurrency,
        format_duration(args.duration)
    );

    let tally = Arc::new(Tally {
        ok: AtomicU64::new(0),
        retried: AtomicU64::new(0),
        failed: Mutex::new(BTreeMap::new()),
        stream_messages: AtomicU64::new(0),
        latency: Mutex::new(Histogram::new_with_bounds(1, 600_000_000, 3).expect("valid bounds")),
    });
    let started = Instant::now();
    let deadline = started + args.duration;
    let submitting = tasks.submit_until(deadline);
    let workers: Vec<_> = (0..args.concurrency.max(1))
        .map(|worker| {
            let (client, tally) = (EchoClient::new(channel.clone()), tally.clone());
            tokio::spawn(async move {
                let mut n = worker as u64;
                while Instant::now() < deadline {
                    one_call(&client, &tally, worker, n).await;
                    n += 1;
                }
            })
        })
        .collect();

    // Calls per node, sampled every tenth of the run.
    let sampler = {
        let channel = channel.clone();
        tokio::spawn(async move {
            let mut samples = vec![(Duration::ZERO, calls_by_node(&channel))];
            let step = args.duration / 10;
            for i in 1..=10 {
                tokio::time::sleep_until((started + step * i).into()).await;
                samples.push((started.elapsed(), calls_by_node(&channel)));
            }
            samples
        })
    };

    // The events, at 20%, 40%, 60% and 80% of the run.
    let mut events = Vec::new();
    let at = |fraction: f64| started + args.duration.mul_f64(fraction);
    // The leader (whoever it is then) is the node killed, and the next
    // leader the node drained; another node is slowed, and the fifth joins
    // through one still up.
    tokio::time::sleep_until(at(0.2).into()).await;
    let killed_index = leading(&nodes, elections.leader().await, &[]);
    {
        let node = &mut nodes[killed_index];
        let _ = node.child.start_kill();
        let killed_at = Instant::now();
        let calls = tokio::spawn(killed(channel.clone(), node.address.clone()));
        let hand_over = elections.hand_over(node.name.clone(), killed_at);
        events.push(Event {
            at: started.elapsed(),
            what: format!("{} (the leader) SIGKILLed", node.name),
            outcome: tokio::spawn(async move {
                let calls = calls.await.unwrap_or_default();
                let hand_over = hand_over.await.unwrap_or_default();
                format!("{calls}; election: {hand_over} (its lease ran out)")
            }),
        });
    }
    tokio::time::sleep_until(at(0.4).into()).await;
    let leader = elections.leader().await;
    let drained_index = leading(&nodes, leader.clone(), &[killed_index]);
    {
        let node = &nodes[drained_index];
        // With a short run, the killed leader's lease may not have run out
        // yet: then the node drained does not lead.
        let was_leading = leader.as_deref() == Some(node.name.as_str());
        let failed_before = failed(&tally);
        let drained_at = Instant::now();
        node.signal(nix::sys::signal::Signal::SIGINT);
        let calls = tokio::spawn(drained(
            channel.clone(),
            node.address.clone(),
            tally.clone(),
            failed_before,
        ));
        let hand_over = was_leading.then(|| elections.hand_over(node.name.clone(), drained_at));
        events.push(Event {
            at: started.elapsed(),
            what: if was_leading {
                format!("{} (the new leader) drained (SIGINT)", node.name)
            } else {
                format!("{} drained (SIGINT)", node.name)
            },
            outcome: tokio::spawn(async move {
                let calls = calls.await.unwrap_or_default();
                match hand_over {
                    Some(hand_over) => {
                        let hand_over = hand_over.await.unwrap_or_default();
                        format!("{calls}; election: {hand_over} (it resigned)")
                    }
                    None => calls,
                }
            }),
        });
    }
    tokio::time::sleep_until(at(0.6).into()).await;
    let slowed_index = (0..nodes.len())
        .find(|i| ![killed_index, drained_index].contains(i))
        .unwrap_or(2);
    {
        let node = &nodes[slowed_index];
        node.signal(nix::sys::signal::Signal::SIGUSR1);
        events.push(Event {
            at: started.elapsed(),
            what: format!("{} made {} slower", node.name, format_duration(SLOWER)),
            outcome: tokio::spawn(slowed(channel.clone(), node.address.clone(), deadline)),
        });
    }
    tokio::time::sleep_until(at(0.8).into()).await;
    {
        let joined_at = started.elapsed();
        let joining = Instant::now();
        let through = nodes[slowed_index].gossip.clone();
        let node = Node::start(
            "node-5",
            Some(&through),
            pki.as_ref(),
            admin,
            &tasks.address,
            &elections.node_args(),
        )
        .await?;
        let outcome = tokio::spawn(joined(channel.clone(), node.address.clone(), joining));
        nodes.push(node);
        events.push(Event {
            at: joined_at,
            what: "node-5 joined".to_owned(),
            outcome,
        });
    }

    for worker in workers {
        let _ = worker.await;
    }
    let elapsed = started.elapsed();
    // The last tasks' results (each waited for 10 s at most).
    let _ = submitting.await;
    let samples = sampler.await.unwrap_or_default();
    let mut outcomes = Vec::new();
    for event in events {
        let outcome = event
            .outcome
            .await
            .unwrap_or_else(|e| format!("not measured: {e}"));
        outcomes.push((event.at, event.what, outcome));
    }
    for node in &nodes {
        node.signal(nix::sys::signal::Signal::SIGINT);
    }
    for node in &mut nodes {
        let _ = tokio::time::timeout(Duration::from_secs(5), node.child.wait()).await;
    }
    print!("{}", report(&args, &tally, elapsed, &outcomes, &samples));
    print!("{}", elections.report(started));
    print!("{}", tasks.report());
    if tally.ok.load(Ordering::Relaxed) == 0 {
        return Err(CliError::failure("the demo made no successful call"));
    }
    if !tasks.all_completed() {
        return Err(CliError::failure("the demo lost tasks"));
    }
    Ok(())
}

/// The cluster's dashboard on `address`: every node's figures, and the
/// client's (`channel`'s view of the nodes) as the process `demo client`.
async fn serve_dashboard(
    address: std::net::SocketAddr,
    seed: &str,
    channel: &Balanced,
) -> Result<sinew::telemetry::AdminServer, CliError> {
    let telemetry = sinew::telemetry::Telemetry::new();
    telemetry.watch_balanced(channel);
    let directory =
        super::dashboard::Directory::of(&format!("gossip://{seed}?cluster=sinew-demo")).await?;
    let cluster = super::dashboard::Cluster::start(directory).with_local("demo client", telemetry);
    let server = sinew::telemetry::AdminServer::bind_dashboard(address, cluster)
        .await
        .map_err(|error| {
            CliError::failure(format!("cannot serve the dashboard on {address}: {error}"))
        })?;
    println!("dashboard on http://{}", server.local_addr());
    Ok(server)
}

/// One call of the mix (7 in 10 unary, the rest server-streaming, all
/// idempotent): tried once more when it failed with the node it was on
/// going away (`UNAVAILABLE`); the balancer sends the second try elsewhere.
async fn one_call(client: &EchoClient<Balanced>, tally: &Tally, worker: usize, n: u64) {
    let message = format!("worker {worker} call {n}");
    let started = Instant::now();
    let mut result = call(client, &message, n, tally).await;
    if matches!(&result, Err(status) if status.code() == Code::Unavailable) {
        tally.retried.fetch_add(1, Ordering::Relaxed);
        result = call(client, &message, n, tally).await;
    }
    match result {
        Ok(()) => {
            tally.ok.fetch_add(1, Ordering::Relaxed);
            lock(&tally.latency).saturating_record(started.elapsed().as_micros() as u64);
        }
        Err(status) => {
            *lock(&tally.failed)
                .entry(status.code().as_str())
                .or_default() += 1
        }
    }
}

async fn call(
    client: &EchoClient<Balanced>,
    message: &str,
    n: u64,
    tally: &Tally,
) -> Result<(), Status> {
    if n % 10 < 7 {
        let reply = client
            .unary_echo(EchoRequest {
                message: message.to_owned(),
            })
            .await?;
        if reply.get_ref().message != message {
            return Err(Status::data_loss("echo came back different"));
        }
        return Ok(());
    }
    let mut request = Request::new(EchoRequest {
        message: message.to_owned(),
    });
    request
        .metadata_mut()
        .insert("x-repeat", "5")
        .map_err(|e| Status::internal(e.to_string()))?;
    let mut stream = client.server_streaming_echo(request).await?.into_inner();
    while stream.message().await?.is_some() {
        tally.stream_messages.fetch_add(1, Ordering::Relaxed);
    }
    Ok(())
}

pub(super) fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

fn failed(tally: &Tally) -> u64 {
    lock(&tally.failed).values().sum()
}

/// Calls sent to each node so far, by node name.
fn calls_by_node(channel: &Balanced) -> BTreeMap<String, u64> {
    channel
        .endpoints()
        .into_iter()
        .map(|report| {
            let name = report
                .endpoint
                .metadata()
                .get(MEMBER_METADATA)
                .cloned()
                .unwrap_or_else(|| report.endpoint.address().to_string());
            (name, report.calls)
        })
        .collect()
}

/// Polls the channel's endpoints every 5 ms until `done` holds; how long it
/// took, or `None` if not within `within`.
async fn until(
    channel: &Balanced,
    within: Duration,
    done: impl Fn(&[sinew::cluster::balance::EndpointReport]) -> bool,
) -> Option<Duration> {
    let started = Instant::now();
    while started.elapsed() < within {
        if done(&channel.endpoints()) {
            return Some(started.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    None
}

fn report_of<'a>(
    reports: &'a [sinew::cluster::balance::EndpointReport],
    address: &str,
) -> Option<&'a sinew::cluster::balance::EndpointReport> {
    reports
        .iter()
        .find(|report| report.endpoint.address().to_string() == address)
}

fn took(duration: Option<Duration>) -> String {
    duration.map_or_else(
        || format!("not within {}", format_duration(CONVERGE_WITHIN)),
        |d| format!("after {}", format_duration(d)),
    )
}

async fn killed(channel: Balanced, address: String) -> String {
    let no_calls = until(&channel, CONVERGE_WITHIN, |reports| {
        report_of(reports, &address).is_none_or(|report| report.health != Health::Ready)
    })
    .await;
    let gone = until(&channel, CONVERGE_WITHIN, |reports| {
        report_of(reports, &address).is_none()
    })
    .await;
    format!(
        "no new calls {}, out of the set {} more (gossip declared it dead)",
        took(no_calls),
        took(gone)
    )
}

async fn drained(
    channel: Balanced,
    address: String,
    tally: Arc<Tally>,
    failed_before: u64,
) -> String {
    let gone = until(&channel, CONVERGE_WITHIN, |reports| {
        report_of(reports, &address).is_none()
    })
    .await;
    // Give its drain time to finish before counting.
    tokio::time::sleep(Duration::from_millis(300)).await;
    format!(
        "out of the set {}; {} calls failed meanwhile",
        took(gone),
        failed(&tally) - failed_before
    )
}

async fn slowed(channel: Balanced, address: String, deadline: Instant) -> String {
    // The share of calls it gets from a moment after the change to the end
    // of the run (or the next 2 s).
    tokio::time::sleep(Duration::from_millis(300)).await;
    let count = |channel: &Balanced| {
        let reports = channel.endpoints();
        let total: u64 = reports.iter().map(|r| r.calls).sum();
        let slow = report_of(&reports, &address).map_or(0, |r| r.calls);
        (slow, total)
    };
    let (slow_before, total_before) = count(&channel);
    let until = deadline.min(Instant::now() + Duration::from_secs(2));
    tokio::time::sleep_until(until.into()).await;
    let (slow_after, total_after) = count(&channel);
    let share = (slow_after - slow_before) as f64 / (total_after - total_before).max(1) as f64;
    let nodes = channel.endpoints().len().max(1);
    format!(
        "it got {:.1}% of the calls afterwards (round robin would give it {:.0}%)",
        share * 100.0,
        100.0 / nodes as f64
    )
}

async fn joined(channel: Balanced, address: String, joining: Instant) -> String {
    let first_call = until(&channel, CONVERGE_WITHIN, |reports| {
        report_of(reports, &address).is_some_and(|report| report.calls > 0)
    })
    .await;
    match first_call {
        Some(_) => format!(
            "its first call came {} after it was started",
            format_duration(joining.elapsed())
        ),
        None => format!(
            "no call within {} of its start",
            format_duration(CONVERGE_WITHIN)
        ),
    }
}

fn report(
    args: &Args,
    tally: &Tally,
    elapsed: Duration,
    events: &[(Duration, String, String)],
    samples: &[(Duration, BTreeMap<String, u64>)],
) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let ok = tally.ok.load(Ordering::Relaxed);
    let failed = lock(&tally.failed).clone();
    let failed_total: u64 = failed.values().sum();
    let _ = writeln!(out, "\nsinew demo report");
    let _ = writeln!(
        out,
        "  {NODES} nodes on the embedded gossip registry, a fifth joining; {} client tasks calling {ECHO} by name for {}",
        args.concurrency,
        format_duration(elapsed),
    );
    let _ = writeln!(
        out,
        "  {ok} calls ok ({:.0}/s), {} streamed messages; {} tried again on another node after the node they were on went away; {failed_total} failed{}",
        ok as f64 / elapsed.as_secs_f64(),
        tally.stream_messages.load(Ordering::Relaxed),
        tally.retried.load(Ordering::Relaxed),
        if failed.is_empty() {
            String::new()
        } else {
            format!(
                " ({})",
                failed
                    .iter()
                    .map(|(code, n)| format!("{code} {n}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        }
    );
    {
        let latency = lock(&tally.latency);
        let _ = writeln!(
            out,
            "  latency: p50 {} us, p99 {} us, p999 {} us",
            latency.value_at_quantile(0.5),
            latency.value_at_quantile(0.99),
            latency.value_at_quantile(0.999)
        );
    }
    let _ = writeln!(out, "  events:");
    for (at, what, outcome) in events {
        let _ = writeln!(out, "    {:>7}  {what}: {outcome}", format_duration(*at));
    }
    out.push_str(&calls_table(samples));
    out
}

/// Calls each node got in each tenth of the run.
fn calls_table(samples: &[(Duration, BTreeMap<String, u64>)]) -> String {
    use std::fmt::Write;
    let mut names: Vec<&String> = samples.iter().flat_map(|(_, calls)| calls.keys()).collect();
    names.sort();
    names.dedup();
    let mut out = String::from("  calls per node:\n");
    let _ = write!(out, "    {:>15}", "from - to");
    for name in &names {
        let _ = write!(out, " {name:>8}");
    }
    out.push('\n');
    // A node that left the set keeps its last count (it got no more calls).
    let mut last: BTreeMap<&String, u64> = BTreeMap::new();
    for pair in samples.windows(2) {
        let ((from, before), (to, after)) = (&pair[0], &pair[1]);
        let _ = write!(
            out,
            "    {:>15}",
            format!("{} - {}", format_duration(*from), format_duration(*to))
        );
        for name in &names {
            let start = before.get(*name).or(last.get(name)).copied().unwrap_or(0);
            let end = after.get(*name).copied().unwrap_or(start);
            last.insert(name, end);
            let _ = write!(out, " {:>8}", end.saturating_sub(start));
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_calls_table_counts_each_interval_and_nodes_that_come_and_go() {
        let at = |ms| Duration::from_millis(ms);
        let calls = |pairs: &[(&str, u64)]| {
            pairs
                .iter()
                .map(|(name, n)| (name.to_string(), *n))
                .collect::<BTreeMap<_, _>>()
        };
        let samples = vec![
            (at(0), calls(&[("node-1", 0), ("node-2", 0)])),
            (at(1000), calls(&[("node-1", 100), ("node-2", 90)])),
            // node-2 left the set; node-3 joined.
            (at(2000), calls(&[("node-1", 250), ("node-3", 20)])),
        ];
        let table = calls_table(&samples);
        let lines: Vec<&str> = table.lines().collect();
        assert!(
            lines[1].contains("node-1") && lines[1].contains("node-3"),
            "{table}"
        );
        let row = |i: usize| lines[i].split_whitespace().collect::<Vec<_>>();
        assert_eq!(row(2)[3..], ["100", "90", "0"], "{table}");
        assert_eq!(row(3)[3..], ["150", "0", "20"], "{table}");
    }
}

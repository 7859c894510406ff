//! `sinew dashboard`: a live web page for a whole cluster, found through its
//! registry: a gossip cluster (joined as an observer) or etcd.
//!
//! Serves the dashboard page (the one each `sinew serve --admin` serves for
//! itself) with every member: what each publishes, and the figures of each
//! member that serves an admin endpoint (`sinew serve --admin` tells the
//! registry where: a gossip key, or the etcd records' metadata), gathered from
//! their `/api/snapshot` every second (newest points; a member's whole
//! history once, when first seen), at most [`FETCHES`] at once, each within
//! [`FETCH_TIMEOUT`]; a member that does not answer is shown as
//! unreachable, never waited for. The dashboard keeps the history itself,
//! and a page gets the whole history of the busiest methods only.

use crate::error::CliError;
use bytes::Bytes;
use futures_util::future::BoxFuture;
use futures_util::StreamExt;
use http_body_util::{BodyExt, Empty, Limited};
use serde_json::{json, Value};
use sinew::cluster::gossip::Member;
use sinew::cluster::Endpoint;
use sinew::telemetry::admin::{AdminServer, DashboardSource};
use sinew::telemetry::timeline::{keep_history, Series, SeriesKey, HISTORY};
use sinew::transport::Address;
use std::collections::BTreeMap;
use std::io::Write;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Members whose figures are fetched at once.
pub(crate) const FETCHES: usize = 16;
/// How long a member may take to answer.
pub(crate) const FETCH_TIMEOUT: Duration = Duration::from_millis(800);
/// Largest snapshot read from a member.
const SNAPSHOT_LIMIT: usize = 16 * 1024 * 1024;
/// Series kept per member; a member that reports more (new method names
/// every second, say) cannot grow the dashboard's memory past it.
const SERIES_PER_MEMBER: usize = 2_000;

#[derive(clap::Args, Debug)]
#[command(
    after_help = "Example:\n  sinew serve --listen tcp://127.0.0.1:7001 --gossip 127.0.0.1:7946 --admin 127.0.0.1:9001\n  \
sinew dashboard gossip://127.0.0.1:7946 --listen 127.0.0.1:9100   # then open http://127.0.0.1:9100\n  \
sinew dashboard etcd://127.0.0.1:2379      # servers started with --register etcd://127.0.0.1:2379 --admin ..."
)]
pub(crate) struct Args {
    /// A member of the cluster, as gossip://HOST:PORT (more seeds after
    /// commas; ?cluster=NAME for a cluster other than sinew), or an etcd
    /// registry, as etcd://HOST:PORT (more members after commas;
    /// ?prefix=PREFIX for a key prefix other than /sinew/endpoints/).
    target: String,
    /// Where to serve the page (HTTP). Port 0 picks a free one; the address
    /// is printed.
    #[arg(long, value_name = "HOST:PORT", default_value = "127.0.0.1:9100")]
    listen: SocketAddr,
}

pub(crate) async fn run(args: Args) -> Result<(), CliError> {
    let directory = Directory::of(&args.target).await?;
    let server = AdminServer::bind_dashboard(args.listen, Cluster::start(directory))
        .await
        .map_err(|error| {
            CliError::failure(format!(
                "cannot serve the dashboard on {}: {error}",
                args.listen
            ))
        })?;
    println!("dashboard on http://{}", server.local_addr());
    println!("press Ctrl-C to stop");
    let _ = std::io::stdout().flush();
    let _ = tokio::signal::ctrl_c().await;
    server.shutdown().await;
    Ok(())
}

/// The cluster as the dashboard sees it: an observer member, and the
/// history the dashboard keeps of every member's methods. A task polls the
/// members every second for their newest points (a member's whole history
/// once, when first seen), so a page load costs the members nothing.
pub(crate) struct Cluster {
    directory: Arc<Directory>,
    store: Arc<Mutex<Store>>,
    /// This process's own figures, shown as one more process under a name
    /// (`sinew demo`'s client: its view of the nodes).
    local: Option<(String, sinew::telemetry::Telemetry)>,
}

/// What the poller gathered.
#[derive(Default)]
struct Store {
    polled: bool,
    members: Vec<Value>,
    /// Per member: its series (with up to `HISTORY` points) and recent calls.
    processes: BTreeMap<String, Process>,
}

#[derive(Default)]
struct Process {
    series: BTreeMap<SeriesKey, Series>,
    recent: Value,
    /// Its server's, clients', breakers' and limits' figures, and when
    /// it took them.
    components: Value,
    at: Value,
    /// Its whole history was fetched once.
    backfilled: bool,
}

impl Cluster {
    /// Starts following the cluster through `observer`.
    pub(crate) fn start(directory: Directory) -> Cluster {
        let directory = Arc::new(directory);
        let store = Arc::new(Mutex::new(Store::default()));
        let weak = Arc::downgrade(&store);
        let poller = directory.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(store) = weak.upgrade() else { return };
                poll(&poller, &store).await;
            }
        });
        Cluster {
            directory,
            store,
            local: None,
        }
    }

    /// Shows `telemetry`'s figures too, as a process named `name`.
    pub(crate) fn with_local(mut self, name: &str, telemetry: sinew::telemetry::Telemetry) -> Self {
        self.local = Some((name.to_owned(), telemetry));
        self
    }
}

/// Where the members are listed: a gossip cluster or an etcd registry.
pub(crate) enum Directory {
    /// Through an observer member.
    Gossip(Member),
    /// The endpoints registered under the registry's prefix.
    Etcd(sinew::cluster::etcd::Registry),
}

/// A member as the dashboard lists it.
struct Listed {
    name: String,
    endpoints: Vec<(Address, Vec<String>)>,
    zone: Option<String>,
    admin: Option<String>,
}

impl Directory {
    /// The directory at `target`: `gossip://...` or `etcd://...`.
    pub(crate) async fn of(target: &str) -> Result<Directory, CliError> {
        if target.starts_with("etcd://") {
            let parsed = sinew::cluster::name::etcd::Target::parse(target)
                .map_err(|status| CliError::usage(status.message().to_owned()))?;
            let registry = parsed
                .registry()
                .map_err(|status| CliError::usage(status.message().to_owned()))?;
            return Ok(Directory::Etcd(registry));
        }
        Ok(Directory::Gossip(super::members::observe(target).await?))
    }

    /// The live members; `None` when the registry could not be read.
    async fn members(&self) -> Option<Vec<Listed>> {
        match self {
            Directory::Gossip(observer) => Some(
                observer
                    .members()
                    .await
                    .into_iter()
                    .filter(|member| member.live && member.role != "observer")
                    .map(|member| Listed {
                        name: member.name,
                        endpoints: member.endpoints,
                        zone: member.zone,
                        admin: member.admin,
                    })
                    .collect(),
            ),
            Directory::Etcd(registry) => {
                let registered = registry.registered_endpoints().await.ok()?;
                Some(processes(registered))
            }
        }
    }
}

/// etcd's records grouped into processes: the addresses that name the same
/// admin endpoint are one process (named by its first address, without a
/// `tcp://`), each address without one a process of its own.
fn processes(registered: Vec<(Endpoint, Vec<String>)>) -> Vec<Listed> {
    let mut listed: Vec<Listed> = Vec::new();
    for (endpoint, services) in registered {
        let admin = endpoint
            .metadata()
            .get(sinew::cluster::ADMIN_METADATA)
            .cloned();
        let known = admin
            .as_ref()
            .and_then(|admin| listed.iter_mut().find(|p| p.admin.as_ref() == Some(admin)));
        match known {
            Some(process) => process
                .endpoints
                .push((endpoint.address().clone(), services)),
            None => listed.push(Listed {
                name: endpoint
                    .address()
                    .to_string()
                    .trim_start_matches("tcp://")
                    .to_owned(),
                zone: endpoint.zone().map(str::to_owned),
                endpoints: vec![(endpoint.address().clone(), services)],
                admin,
            }),
        }
    }
    listed
}

/// One round: the live members, and each one's newest points.
async fn poll(directory: &Directory, store: &Mutex<Store>) {
    let Some(members) = directory.members().await else {
        // The registry did not answer: the figures so far stay.
        return;
    };
    let wanted: Vec<(String, String, &'static str)> = {
        let store = lock(store);
        members
            .iter()
            .filter_map(|member| {
                let admin = member.admin.clone()?;
                let backfilled = store
                    .processes
                    .get(&member.name)
                    .is_some_and(|process| process.backfilled);
                let path = if backfilled {
                    "/api/snapshot?latest=1"
                } else {
                    "/api/snapshot"
                };
                Some((member.name.clone(), admin, path))
            })
            .collect()
    };
    // The futures made first: a closure inside the stream would make this
    // future's type too general for `tokio::spawn`.
    let fetches: Vec<_> = wanted
        .into_iter()
        .map(|(name, admin, path)| fetch_named(name, admin, path))
        .collect();
    let fetched: Vec<(String, Option<Value>)> = futures_util::stream::iter(fetches)
        .buffer_unordered(FETCHES)
        .collect()
        .await;
    let mut store = lock(store);
    let store = &mut *store;
    store.polled = true;
    for (name, snapshot) in &fetched {
        let Some(snapshot) = snapshot else { continue };
        let process = store.processes.entry(name.clone()).or_default();
        process.backfilled = true;
        process.recent = snapshot["recent"].clone();
        process.components = snapshot["components"].clone();
        process.at = snapshot["at"].clone();
        let series: Vec<Series> =
            serde_json::from_value(snapshot["series"].clone()).unwrap_or_default();
        for incoming in series {
            if !process.series.contains_key(&incoming.key)
                && process.series.len() >= SERIES_PER_MEMBER
            {
                continue;
            }
            let known = process
                .series
                .entry(incoming.key.clone())
                .or_insert_with(|| Series {
                    key: incoming.key.clone(),
                    in_flight: 0,
                    total: 0,
                    points: Vec::new(),
                });
            known.in_flight = incoming.in_flight;
            known.total = incoming.total;
            for point in incoming.points {
                if known.points.last().is_none_or(|last| point.at > last.at) {
                    known.points.push(point);
                }
            }
            let excess = known.points.len().saturating_sub(HISTORY);
            known.points.drain(..excess);
        }
    }
    // Members that left take their figures with them.
    store
        .processes
        .retain(|name, _| members.iter().any(|member| member.name == *name));
    store.members = members
        .iter()
        .map(|member| {
            let mut services: Vec<&String> = member
                .endpoints
                .iter()
                .flat_map(|(_, services)| services)
                .collect();
            services.sort();
            services.dedup();
            let reachable = member.admin.as_ref().map(|_| {
                fetched
                    .iter()
                    .any(|(name, snapshot)| *name == member.name && snapshot.is_some())
            });
            json!({
                "name": member.name,
                "endpoints": member.endpoints.iter().map(|(address, _)| address.to_string()).collect::<Vec<_>>(),
                "services": services,
                "zone": member.zone,
                "admin": member.admin,
                "reachable": reachable,
            })
        })
        .collect();
}

fn lock(store: &Mutex<Store>) -> std::sync::MutexGuard<'_, Store> {
    store.lock().unwrap_or_else(|poison| poison.into_inner())
}

impl DashboardSource for Cluster {
    fn snapshot(&self, history: usize) -> BoxFuture<'static, Vec<u8>> {
        let store = self.store.clone();
        let directory = self.directory.clone();
        let local = self.local.as_ref().map(|(name, telemetry)| {
            let mut own =
                serde_json::to_value(sinew::telemetry::admin::Snapshot::of(telemetry, history))
                    .unwrap_or_default();
            own["member"] = json!(name);
            own
        });
        Box::pin(async move {
            if !lock(&store).polled {
                poll(&directory, &store).await;
            }
            let store = lock(&store);
            // The busiest series cluster-wide keep their history.
            let all: Vec<(String, Series)> = store
                .processes
                .iter()
                .flat_map(|(name, process)| {
                    process
                        .series
                        .values()
                        .map(move |series| (name.clone(), series.clone()))
                })
                .collect();
            let (names, series): (Vec<String>, Vec<Series>) = all.into_iter().unzip();
            let series = keep_history(series, history);
            let mut processes: BTreeMap<&str, Vec<Series>> = BTreeMap::new();
            for (name, one) in names.iter().zip(series) {
                processes.entry(name).or_default().push(one);
            }
            let processes: Vec<Value> = store
                .processes
                .iter()
                .map(|(name, process)| {
                    json!({
                        "member": name,
                        "series": processes.remove(name.as_str()).unwrap_or_default(),
                        "recent": process.recent,
                        "components": process.components,
                        "at": process.at,
                    })
                })
                .chain(local)
                .collect();
            serde_json::to_vec(&json!({ "members": store.members, "processes": processes }))
                .unwrap_or_default()
        })
    }
}

async fn fetch_named(name: String, admin: String, path: &'static str) -> (String, Option<Value>) {
    let snapshot = fetch(&admin, path).await;
    (name, snapshot)
}

/// `GET admin + path` as JSON; `None` if the member does not answer well
/// within [`FETCH_TIMEOUT`].
pub(crate) async fn fetch(admin: &str, path: &str) -> Option<Value> {
    let authority = admin
        .strip_prefix("http://")?
        .trim_end_matches('/')
        .to_owned();
    let body = tokio::time::timeout(FETCH_TIMEOUT, async {
        let stream = tokio::net::TcpStream::connect(&authority).await.ok()?;
        let (mut sender, connection) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                .await
                .ok()?;
        tokio::spawn(connection);
        let request = http::Request::get(path)
            .header(http::header::HOST, &authority)
            .body(Empty::<Bytes>::new())
            .ok()?;
        let response = sender.send_request(request).await.ok()?;
        if !response.status().is_success() {
            return None;
        }
        Limited::new(response.into_body(), SNAPSHOT_LIMIT)
            .collect()
            .await
            .ok()
            .map(|collected| collected.to_bytes())
    })
    .await
    .ok()??;
    serde_json::from_slice(&body).ok()
}

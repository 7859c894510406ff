//! `sinew dashboard`: a live web page for a whole gossip cluster.
//!
//! Joins the cluster as an observer and serves the dashboard page (the one
//! each `sinew serve --admin` serves for itself) with every member: what
//! each publishes, and the figures of each member that serves an admin
//! endpoint (`sinew serve --admin` tells the cluster where), gathered from
//! their `/api/snapshot` every second, at most [`FETCHES`] at once, each
//! within [`FETCH_TIMEOUT`]; a member that does not answer is shown as
//! unreachable, never waited for.

use crate::error::{CliError, ExitCode};
use bytes::Bytes;
use futures_util::future::BoxFuture;
use futures_util::StreamExt;
use http_body_util::{BodyExt, Empty, Limited};
use serde_json::{json, Value};
use sinew::cluster::gossip::{Member, MemberReport};
use sinew::cluster::name::gossip::Target;
use sinew::telemetry::admin::{AdminServer, DashboardSource};
use std::io::Write;
use std::net::SocketAddr;
use std::time::Duration;

/// Members whose figures are fetched at once.
pub(crate) const FETCHES: usize = 16;
/// How long a member may take to answer.
pub(crate) const FETCH_TIMEOUT: Duration = Duration::from_millis(800);
/// Largest snapshot read from a member.
const SNAPSHOT_LIMIT: usize = 16 * 1024 * 1024;

#[derive(clap::Args, Debug)]
#[command(
    after_help = "Example:\n  sinew serve --listen tcp://127.0.0.1:7001 --gossip 127.0.0.1:7946 --admin 127.0.0.1:9001\n  \
sinew dashboard gossip://127.0.0.1:7946 --listen 127.0.0.1:9100   # then open http://127.0.0.1:9100"
)]
pub(crate) struct Args {
    /// A member of the cluster, as gossip://HOST:PORT (more seeds after
    /// commas; ?cluster=NAME for a cluster other than sinew).
    target: String,
    /// Where to serve the page (HTTP). Port 0 picks a free one; the address
    /// is printed.
    #[arg(long, value_name = "HOST:PORT", default_value = "127.0.0.1:9100")]
    listen: SocketAddr,
}

pub(crate) async fn run(args: Args) -> Result<(), CliError> {
    let target = Target::parse(&args.target)
        .map_err(|status| CliError::usage(status.message().to_owned()))?;
    let observer = target
        .observe()
        .await
        .map_err(|status| CliError::new(ExitCode::Unreachable, status.message().to_owned()))?;
    let server = AdminServer::bind_dashboard(args.listen, Cluster { observer })
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

/// The cluster as the dashboard sees it, through an observer member.
pub(crate) struct Cluster {
    pub(crate) observer: Member,
}

impl DashboardSource for Cluster {
    fn snapshot(&self, latest: bool) -> BoxFuture<'static, Vec<u8>> {
        let observer = self.observer.clone();
        Box::pin(async move {
            let members: Vec<MemberReport> = observer
                .members()
                .await
                .into_iter()
                .filter(|member| member.live && member.role != "observer")
                .collect();
            let path = if latest {
                "/api/snapshot?latest=1"
            } else {
                "/api/snapshot"
            };
            let admins: Vec<(String, String)> = members
                .iter()
                .filter_map(|member| Some((member.name.clone(), member.admin.clone()?)))
                .collect();
            let fetched: Vec<(String, Option<Value>)> = futures_util::stream::iter(admins)
                .map(|(name, admin)| fetch_named(name, admin, path))
                .buffer_unordered(FETCHES)
                .collect()
                .await;
            let members: Vec<Value> = members
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
            let processes: Vec<Value> = fetched
                .into_iter()
                .filter_map(|(name, snapshot)| {
                    let mut snapshot = snapshot?;
                    snapshot["member"] = Value::String(name);
                    Some(snapshot)
                })
                .collect();
            serde_json::to_vec(&json!({ "members": members, "processes": processes }))
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

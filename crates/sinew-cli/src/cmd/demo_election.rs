//! The leader election of `sinew demo`: a shared-state store in this
//! process (the embedded one, served as etcd's API on a free port), every
//! node standing in one election (`serve --elect`); the demo SIGKILLs the
//! leader and drains the next one, and reports who led when, and how long
//! each hand-over took (a killed leader's lease runs out first: within its
//! TTL and the store's expiry check; a drained one resigns at once).

use crate::error::CliError;
use crate::time::format_duration;
use sinew::state::embedded::Store;
use sinew::state::Election;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The election the nodes stand in.
const ELECTION: &str = "demo-leader";
/// The leaders' lease: how long a killed leader goes on leading.
pub(crate) const TTL: Duration = Duration::from_secs(2);

/// Leaders as the demo's observer saw them change.
type Changes = Arc<Mutex<Vec<(Instant, Option<String>)>>>;

pub(crate) struct Elections {
    address: String,
    server: sinew::rpc::server::ServerHandle,
    election: Election,
    changes: Changes,
    observer: tokio::task::JoinHandle<()>,
    /// Kept alive with the server.
    _store: Store,
}

impl Drop for Elections {
    fn drop(&mut self) {
        self.observer.abort();
        self.server.shutdown();
    }
}

impl Elections {
    pub(crate) async fn start() -> Result<Elections, CliError> {
        let failed = |what: &str, message: String| CliError::failure(format!("{what}: {message}"));
        let store = Store::in_memory()
            .map_err(|s| failed("the election's store", s.message().to_owned()))?;
        let server = store
            .serve_etcd_api(
                sinew::Server::builder().add_protocol(sinew_grpc::GrpcProtocol::default()),
            )
            .bind(["tcp://127.0.0.1:0"])
            .await
            .map_err(|e| failed("serving the election's store", e.to_string()))?;
        let address = server.local_addresses()[0]
            .to_string()
            .replacen("tcp://", "", 1);
        let handle = server.handle();
        tokio::spawn(server.serve());
        let etcd = sinew::cluster::etcd::Etcd::connect([address.as_str()])
            .map_err(|s| failed("the election's store", s.message().to_owned()))?;
        let election = Election::new(etcd, ELECTION).with_ttl(TTL);
        let changes: Changes = Arc::default();
        let observer = tokio::spawn({
            let (mut observer, changes) = (election.observe(), changes.clone());
            async move {
                loop {
                    match observer.next().await {
                        Ok(leader) => {
                            let name =
                                leader.map(|l| String::from_utf8_lossy(&l.value).into_owned());
                            super::demo::lock(&changes).push((Instant::now(), name));
                        }
                        Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                    }
                }
            }
        });
        Ok(Elections {
            address,
            server: handle,
            election,
            changes,
            observer,
            _store: store,
        })
    }

    /// The `serve` arguments that make a node stand.
    pub(crate) fn node_args(&self) -> Vec<String> {
        vec![
            "--elect".into(),
            ELECTION.into(),
            "--elect-store".into(),
            self.address.clone(),
            "--elect-ttl".into(),
            format!("{}s", TTL.as_secs()),
        ]
    }

    /// Who leads now (a linearizable read), by node name.
    pub(crate) async fn leader(&self) -> Option<String> {
        let leader = self.election.leader().await.ok()??;
        Some(String::from_utf8_lossy(&leader.value).into_owned())
    }

    /// Waits (up to `within`) until someone leads.
    pub(crate) async fn until_leader(&self, within: Duration) -> Option<String> {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if let Some(leader) = self.leader().await {
                return Some(leader);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        None
    }

    /// Waits for a leader other than `from` after `since`, and says who
    /// and how long it took.
    pub(crate) fn hand_over(
        &self,
        from: String,
        since: Instant,
    ) -> tokio::task::JoinHandle<String> {
        let changes = self.changes.clone();
        tokio::spawn(async move {
            let deadline = since + TTL + Duration::from_secs(5);
            while Instant::now() < deadline {
                let next = super::demo::lock(&changes)
                    .iter()
                    .find(|(at, leader)| {
                        *at >= since && leader.as_ref().is_some_and(|l| *l != from)
                    })
                    .cloned();
                if let Some((at, Some(leader))) = next {
                    return format!("{leader} leads {} later", format_duration(at - since));
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            format!("no new leader within {}", format_duration(deadline - since))
        })
    }

    /// The leaders over the run, one line each.
    pub(crate) fn report(&self, started: Instant) -> String {
        use std::fmt::Write;
        let mut out = format!(
            "  leader election ({ELECTION}, on the embedded store, leases of {}): one leader at a time, as the observer saw it:\n",
            format_duration(TTL)
        );
        for (at, leader) in super::demo::lock(&self.changes).iter() {
            let at = at.saturating_duration_since(started);
            let _ = writeln!(
                out,
                "    {:>7}  {}",
                format_duration(at),
                leader.as_deref().unwrap_or("(no leader)")
            );
        }
        out
    }
}

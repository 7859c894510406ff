//! Leases kept alive, and told lost in time: what locks and leaderships
//! stand on.
//!
//! A [`Lease`] is granted with a time to live and renewed every third of
//! it over one `LeaseKeepAlive` stream (opened again when it breaks). It is
//! **lost** at the earliest of: the store answering a renewal with no time
//! left (revoked, or expired while unreachable), and the local deadline
//! `sent + TTL - margin`, where `sent` is when the last renewal the store
//! answered was *sent* (the store renewed it no earlier than that, so it
//! cannot expire the lease before this deadline) and the margin (a tenth of
//! the TTL, at least 100 ms) covers clock drift. [`Lease::lost`] resolves
//! then, before anyone else can take what the lease held: work guarded by
//! it must stop when it does.
//!
//! Dropping a lease stops its renewals and revokes it (in a task of the
//! runtime, if one still runs: otherwise it expires after its TTL);
//! [`Lease::orphan`] stops the renewals only, as a killed process would.

use sinew_cluster::etcd::api::etcdserverpb::{
    lease_client::LeaseClient, LeaseGrantRequest, LeaseKeepAliveRequest, LeaseRevokeRequest,
};
use sinew_cluster::etcd::Etcd;
use sinew_rpc::{Request, Status};
use std::collections::VecDeque;
use std::time::Duration;
use tokio::time::Instant;

/// Why a lease (or what it held) was lost.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LostReason {
    /// The store said the lease is gone (revoked, or expired).
    Revoked,
    /// No renewal was answered in time: the store may expire it now.
    Expired,
    /// The key it held was deleted (by an operator, or another client).
    KeyDeleted,
    /// Given up by its holder (released, resigned, dropped).
    Released,
}

impl std::fmt::Display for LostReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            LostReason::Revoked => "the lease was revoked or expired",
            LostReason::Expired => "the lease could not be renewed in time",
            LostReason::KeyDeleted => "the key was deleted",
            LostReason::Released => "it was given up",
        })
    }
}

/// A signal that resolves once something is lost; clone it freely.
#[derive(Clone, Debug)]
pub struct Lost {
    receiver: tokio::sync::watch::Receiver<Option<LostReason>>,
}

impl Lost {
    /// Waits until it is lost, and says why.
    pub async fn wait(&mut self) -> LostReason {
        match self.receiver.wait_for(Option::is_some).await {
            Ok(reason) => reason.unwrap_or(LostReason::Released),
            // The sender is gone with its owner: given up.
            Err(_) => LostReason::Released,
        }
    }

    /// Lost already, and why.
    pub fn now(&self) -> Option<LostReason> {
        *self.receiver.borrow()
    }
}

/// Where a loss is told.
#[derive(Clone, Debug)]
pub(crate) struct Loss {
    sender: std::sync::Arc<tokio::sync::watch::Sender<Option<LostReason>>>,
}

impl Loss {
    pub(crate) fn new() -> Loss {
        Loss {
            sender: std::sync::Arc::new(tokio::sync::watch::channel(None).0),
        }
    }

    /// Tells `reason`, unless a loss was told already.
    pub(crate) fn tell(&self, reason: LostReason) {
        self.sender.send_if_modified(|current| {
            if current.is_none() {
                *current = Some(reason);
                true
            } else {
                false
            }
        });
    }

    pub(crate) fn lost(&self) -> Lost {
        Lost {
            receiver: self.sender.subscribe(),
        }
    }
}

/// A lease granted by the store and kept alive; see the module docs.
#[derive(Debug)]
pub struct Lease {
    etcd: Etcd,
    id: i64,
    ttl: Duration,
    loss: Loss,
    keeper: Option<tokio::task::JoinHandle<()>>,
}

/// How long before the computed expiry a lease counts as lost.
fn margin(ttl: Duration) -> Duration {
    (ttl / 10).max(Duration::from_millis(100))
}

impl Lease {
    /// Grants a lease of `ttl` (whole seconds, at least 1) and keeps it
    /// alive.
    pub async fn grant(etcd: &Etcd, ttl: Duration) -> Result<Lease, Status> {
        let seconds = ttl.as_secs().max(1) as i64;
        let sent = Instant::now();
        let granted = LeaseClient::new(etcd.channel().clone())
            .lease_grant(Request::new(LeaseGrantRequest {
                ttl: seconds,
                id: 0,
            }))
            .await?
            .into_inner();
        if !granted.error.is_empty() {
            return Err(Status::unavailable(format!(
                "the store granted no lease: {}",
                granted.error
            )));
        }
        let ttl = Duration::from_secs(granted.ttl.max(1) as u64);
        let loss = Loss::new();
        let keeper = tokio::spawn(keep_alive(
            etcd.clone(),
            granted.id,
            ttl,
            sent + ttl - margin(ttl),
            loss.clone(),
        ));
        Ok(Lease {
            etcd: etcd.clone(),
            id: granted.id,
            ttl,
            loss,
            keeper: Some(keeper),
        })
    }

    /// Its id in the store.
    pub fn id(&self) -> i64 {
        self.id
    }

    /// Its time to live.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// Resolves when it is lost (see the module docs).
    pub fn lost(&self) -> Lost {
        self.loss.lost()
    }

    pub(crate) fn loss(&self) -> &Loss {
        &self.loss
    }

    /// Stops renewing and revokes it: what it held goes at once.
    pub async fn revoke(mut self) -> Result<(), Status> {
        self.stop();
        self.loss.tell(LostReason::Released);
        LeaseClient::new(self.etcd.channel().clone())
            .lease_revoke(Request::new(LeaseRevokeRequest { id: self.id }))
            .await
            .map(|_| ())
    }

    /// Stops renewing without revoking, as a killed process would: it
    /// expires within its TTL.
    pub fn orphan(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        if let Some(keeper) = self.keeper.take() {
            keeper.abort();
        }
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        if let Some(keeper) = self.keeper.take() {
            keeper.abort();
            self.loss.tell(LostReason::Released);
            let (client, id) = (LeaseClient::new(self.etcd.channel().clone()), self.id);
            if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                runtime.spawn(async move {
                    let _ = client
                        .lease_revoke(Request::new(LeaseRevokeRequest { id }))
                        .await;
                });
            }
        }
    }
}

/// Renews `id` every third of `ttl` until it is lost; tells the loss.
async fn keep_alive(etcd: Etcd, id: i64, ttl: Duration, mut deadline: Instant, loss: Loss) {
    let client = LeaseClient::new(etcd.channel().clone());
    let period = (ttl / 3).max(Duration::from_millis(100));
    let mut retry = Duration::from_millis(100);
    loop {
        if Instant::now() >= deadline {
            return loss.tell(LostReason::Expired);
        }
        let (sender, receiver) = tokio::sync::mpsc::channel(1);
        // When each renewal in flight was sent, oldest first: the store
        // answers them in order on the stream.
        let mut sent: VecDeque<Instant> = VecDeque::new();
        sent.push_back(Instant::now());
        sender
            .try_send(LeaseKeepAliveRequest { id })
            .expect("a new channel has room");
        let requests = futures_util::stream::unfold(receiver, |mut receiver| async move {
            receiver.recv().await.map(|request| (request, receiver))
        });
        let opened = tokio::select! {
            opened = client.lease_keep_alive(Request::new(requests)) => opened,
            () = tokio::time::sleep_until(deadline) => return loss.tell(LostReason::Expired),
        };
        if let Ok(response) = opened {
            let mut responses = response.into_inner();
            let mut renew = tokio::time::interval_at(Instant::now() + period, period);
            renew.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = renew.tick() => {
                        // One renewal in flight at a time is enough.
                        if sent.is_empty() {
                            sent.push_back(Instant::now());
                            if sender.send(LeaseKeepAliveRequest { id }).await.is_err() {
                                break;
                            }
                        }
                    }
                    response = responses.message() => match response {
                        Ok(Some(response)) if response.ttl <= 0 => {
                            return loss.tell(LostReason::Revoked);
                        }
                        Ok(Some(response)) => {
                            retry = Duration::from_millis(100);
                            // An answer with no renewal of ours in flight
                            // says nothing of when we asked: ignored.
                            let Some(at) = sent.pop_front() else { continue };
                            let ttl = Duration::from_secs(response.ttl as u64);
                            deadline = deadline.max(at + ttl - margin(ttl));
                        }
                        Ok(None) | Err(_) => break,
                    },
                    () = tokio::time::sleep_until(deadline) => {
                        return loss.tell(LostReason::Expired);
                    }
                }
            }
        }
        tokio::select! {
            () = tokio::time::sleep(retry) => {}
            () = tokio::time::sleep_until(deadline) => return loss.tell(LostReason::Expired),
        }
        retry = (retry * 2).min(Duration::from_secs(1));
    }
}

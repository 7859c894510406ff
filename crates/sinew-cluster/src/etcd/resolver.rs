//! [`EtcdResolver`]: a service's endpoints as registered under an etcd
//! prefix, followed as it changes ([`PrefixFollower`]).

use super::follow::PrefixFollower;
use super::registry::parse_record;
use super::Etcd;
use crate::endpoint::Endpoint;
use crate::registry::{service_list, Record, Told};
use crate::resolve::{Resolve, Update, Updates};
use futures_util::StreamExt;
use sinew_rpc::Status;
use sinew_transport::Address;
use std::collections::BTreeMap;
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::sync::mpsc;

/// Resolves service names to the endpoints registered under a prefix of
/// etcd; made by [`Registry::resolver`](super::Registry::resolver).
///
/// Each stream starts with the current set (an [`Update::Reset`]) and sends
/// the whole set again whenever a registration of the service comes, goes
/// or changes. A name nothing registers is an error naming the services
/// that are registered; the stream goes on, and the endpoints come when a
/// server registers the service. While etcd cannot be reached the stream
/// says so once and keeps what it had.
#[derive(Clone, Debug)]
pub struct EtcdResolver {
    etcd: Etcd,
    prefix: String,
}

impl EtcdResolver {
    pub(super) fn new(etcd: Etcd, prefix: String) -> EtcdResolver {
        EtcdResolver { etcd, prefix }
    }
}

impl Resolve for EtcdResolver {
    fn resolve(&self, service: &str) -> Updates {
        let (sender, receiver) = mpsc::channel(8);
        let follow = Follow {
            snapshots: self.etcd.follow_prefix(self.prefix.as_bytes()),
            members: self.etcd.members().join(","),
            prefix: self.prefix.clone(),
            service: service.to_owned(),
            records: BTreeMap::new(),
            told: Told::default(),
            sender,
        };
        let task = tokio::spawn(follow.run());
        Box::pin(Following {
            receiver,
            task: task.abort_handle(),
        })
    }
}

/// The stream of one resolution; stops its task when dropped.
struct Following {
    receiver: mpsc::Receiver<Result<Update, Status>>,
    task: tokio::task::AbortHandle,
}

impl Drop for Following {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl futures_core::Stream for Following {
    type Item = Result<Update, Status>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.receiver.poll_recv(cx)
    }
}

/// One resolution's state, in its task.
struct Follow {
    /// The prefix's keys as they change.
    snapshots: PrefixFollower,
    /// The etcd members, for messages.
    members: String,
    prefix: String,
    service: String,
    /// Every record under the prefix, by address text.
    records: BTreeMap<String, (Address, Record)>,
    told: Told,
    sender: mpsc::Sender<Result<Update, Status>>,
}

impl Follow {
    /// Tells each snapshot's endpoints of the service (and each outage,
    /// once: the balancer keeps its set). Runs until the stream is dropped.
    async fn run(mut self) {
        while let Some(snapshot) = self.snapshots.next().await {
            let told = match snapshot {
                Ok(snapshot) => {
                    self.records = snapshot
                        .entries
                        .iter()
                        .filter_map(|(key, value)| parse_record(&self.prefix, key, value))
                        .map(|(address, record)| (address.to_string(), (address, record)))
                        .collect();
                    self.tell().await
                }
                Err(status) => self.sender.send(Err(status)).await.is_ok(),
            };
            if !told {
                return;
            }
        }
    }

    /// Sends the set if it changed, or says the service is unknown; false
    /// when the stream was dropped.
    async fn tell(&mut self) -> bool {
        let endpoints: Vec<Endpoint> = self
            .records
            .values()
            .filter(|(_, record)| record.services.contains(&self.service))
            .map(|(address, record)| record.endpoint(address.clone(), None))
            .collect();
        if let Some(update) = self.told.update(&endpoints) {
            return self.sender.send(Ok(update)).await.is_ok();
        }
        if self.told.say_unknown(&endpoints) {
            let known = service_list(
                self.records
                    .values()
                    .flat_map(|(_, record)| record.services.iter().map(String::as_str)),
            );
            let status = Status::not_found(format!(
                "nothing registered in etcd at {} under {} serves {}; services registered: {known}",
                self.members, self.prefix, self.service
            ));
            return self.sender.send(Err(status)).await.is_ok();
        }
        true
    }
}

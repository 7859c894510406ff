//! [`EtcdResolver`]: a service's endpoints as registered under an etcd
//! prefix, listed once and then followed by a watch.

use super::registry::{parse_address, parse_record, parse_records};
use super::{api, prefix_end, Etcd, FIRST_RETRY, LAST_RETRY};
use crate::endpoint::Endpoint;
use crate::registry::{service_list, Record, Told};
use crate::resolve::{Resolve, Update, Updates};
use api::etcdserverpb::watch_client::WatchClient;
use api::etcdserverpb::{watch_request, WatchCreateRequest, WatchRequest};
use api::mvccpb::event::EventType;
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
            etcd: self.etcd.clone(),
            prefix: self.prefix.clone(),
            service: service.to_owned(),
            records: BTreeMap::new(),
            revision: 0,
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

/// How a watch ended.
enum WatchEnd {
    /// The revision to resume from was compacted: list again.
    Compacted,
    /// The stream broke or etcd refused it: watch again from the last
    /// revision.
    Broken(Status),
}

/// One resolution's state, in its task.
struct Follow {
    etcd: Etcd,
    prefix: String,
    service: String,
    /// Every record under the prefix, as of `revision`, by address text.
    records: BTreeMap<String, (Address, Record)>,
    /// The store revision the records are at.
    revision: i64,
    told: Told,
    sender: mpsc::Sender<Result<Update, Status>>,
}

impl Follow {
    /// Lists, then watches; lists again after a compaction. Runs until the
    /// stream is dropped (the task is aborted, or a send fails).
    async fn run(mut self) {
        let mut retry = FIRST_RETRY;
        let mut outage_said = false;
        loop {
            match self.etcd.get_prefix(self.prefix.as_bytes()).await {
                Ok(listing) => {
                    self.records = parse_records(&self.prefix, &listing.kvs);
                    self.revision = listing.revision;
                    retry = FIRST_RETRY;
                    outage_said = false;
                }
                Err(status) => {
                    // Said once per outage; the balancer keeps its set.
                    if !outage_said && self.sender.send(Err(status)).await.is_err() {
                        return;
                    }
                    outage_said = true;
                    tokio::time::sleep(retry).await;
                    retry = (retry * 2).min(LAST_RETRY);
                    continue;
                }
            }
            if !self.tell().await {
                return;
            }
            loop {
                match self.watch().await {
                    None => return,
                    Some(WatchEnd::Compacted) => {
                        tracing::debug!(
                            service = %self.service,
                            revision = self.revision,
                            "etcd compacted the watched revision: listing again"
                        );
                        break;
                    }
                    Some(WatchEnd::Broken(status)) => {
                        tracing::debug!(service = %self.service, %status, "etcd watch broke: resuming");
                        tokio::time::sleep(retry).await;
                        retry = (retry * 2).min(LAST_RETRY);
                    }
                }
            }
        }
    }

    /// Follows the prefix from the revision after `self.revision`, telling
    /// each change. `None` when the stream was dropped.
    async fn watch(&mut self) -> Option<WatchEnd> {
        let create = WatchRequest {
            request_union: Some(watch_request::RequestUnion::CreateRequest(
                WatchCreateRequest {
                    key: self.prefix.as_bytes().to_vec(),
                    range_end: prefix_end(self.prefix.as_bytes()),
                    start_revision: self.revision + 1,
                    progress_notify: true,
                    ..Default::default()
                },
            )),
        };
        // The request side stays open: etcd ends a watch whose client stops
        // sending.
        let requests = futures_util::StreamExt::chain(
            futures_util::stream::iter([create]),
            futures_util::stream::pending(),
        );
        let client = WatchClient::new(self.etcd.channel().clone());
        let mut responses = tokio::select! {
            opened = client.watch(requests) => match opened {
                Ok(response) => response.into_inner(),
                Err(status) => return Some(WatchEnd::Broken(status)),
            },
            () = self.sender.closed() => return None,
        };
        loop {
            let response = tokio::select! {
                response = responses.message() => response,
                () = self.sender.closed() => return None,
            };
            let response = match response {
                Ok(Some(response)) => response,
                Ok(None) => {
                    return Some(WatchEnd::Broken(Status::unavailable(
                        "etcd ended the watch",
                    )))
                }
                Err(status) => return Some(WatchEnd::Broken(status)),
            };
            if response.canceled {
                if response.compact_revision > 0 {
                    return Some(WatchEnd::Compacted);
                }
                return Some(WatchEnd::Broken(Status::unavailable(format!(
                    "etcd cancelled the watch: {}",
                    response.cancel_reason
                ))));
            }
            for event in &response.events {
                let Some(kv) = &event.kv else { continue };
                match event.r#type() {
                    EventType::Put => match parse_record(&self.prefix, &kv.key, &kv.value) {
                        Some((address, record)) => {
                            self.records.insert(address.to_string(), (address, record));
                        }
                        // A key that no longer parses no longer registers.
                        None => {
                            if let Some(address) = parse_address(&self.prefix, &kv.key) {
                                self.records.remove(&address.to_string());
                            }
                        }
                    },
                    EventType::Delete => {
                        if let Some(address) = parse_address(&self.prefix, &kv.key) {
                            self.records.remove(&address.to_string());
                        }
                    }
                }
                self.revision = self.revision.max(kv.mod_revision);
            }
            if let Some(header) = &response.header {
                // A progress notification (no events) carries the revision
                // the watch has reached. A response with events may carry
                // the store's newer revision while a catching-up watch has
                // more events to send: only its events' revisions count.
                if response.events.is_empty() && !response.created && !response.fragment {
                    self.revision = self.revision.max(header.revision);
                }
            }
            if !response.events.is_empty() && !self.tell().await {
                return None;
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
                self.etcd.members().join(","),
                self.prefix,
                self.service
            ));
            return self.sender.send(Err(status)).await.is_ok();
        }
        true
    }
}

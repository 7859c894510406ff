//! [`PrefixFollower`]: everything under a prefix of etcd, kept current: the
//! keys are listed once, then followed by a watch from the next revision. A
//! broken watch resumes from the last revision seen (no change is missed
//! across a reconnect or an etcd member's restart); a watch whose revision
//! was compacted lists again; while etcd cannot be reached the follower says
//! so once and tries again, backing off. The endpoint resolver and the
//! service-config follower are built on it.

use super::{api, prefix_end, Etcd, FIRST_RETRY, LAST_RETRY};
use api::etcdserverpb::watch_client::WatchClient;
use api::etcdserverpb::{watch_request, WatchCreateRequest, WatchRequest};
use api::mvccpb::event::EventType;
use sinew_rpc::Status;
use std::collections::BTreeMap;
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::sync::mpsc;

/// The keys under a prefix and their values, as of a revision.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Snapshot {
    /// The store revision the snapshot is at.
    pub revision: i64,
    /// Every key under the prefix (whole keys), with its value.
    pub entries: BTreeMap<Vec<u8>, Vec<u8>>,
}

/// The snapshots of a prefix as it changes: the first once listed, then one
/// after each change; an error once per outage (the follower goes on).
/// Stops its task when dropped. Made by [`Etcd::follow_prefix`].
#[derive(Debug)]
pub struct PrefixFollower {
    receiver: mpsc::Receiver<Result<Snapshot, Status>>,
    task: tokio::task::AbortHandle,
}

impl Drop for PrefixFollower {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl futures_core::Stream for PrefixFollower {
    type Item = Result<Snapshot, Status>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.receiver.poll_recv(cx)
    }
}

impl Etcd {
    /// Follows every key under `prefix` (see [`PrefixFollower`]). Needs a
    /// tokio runtime.
    pub fn follow_prefix(&self, prefix: &[u8]) -> PrefixFollower {
        let (sender, receiver) = mpsc::channel(8);
        let follow = Follow {
            etcd: self.clone(),
            prefix: prefix.to_vec(),
            snapshot: Snapshot::default(),
            sender,
        };
        let task = tokio::spawn(follow.run());
        PrefixFollower {
            receiver,
            task: task.abort_handle(),
        }
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

/// One follower's state, in its task.
struct Follow {
    etcd: Etcd,
    prefix: Vec<u8>,
    snapshot: Snapshot,
    sender: mpsc::Sender<Result<Snapshot, Status>>,
}

impl Follow {
    /// Lists, then watches; lists again after a compaction. Runs until the
    /// follower is dropped (the task is aborted, or a send fails).
    async fn run(mut self) {
        let mut retry = FIRST_RETRY;
        let mut outage_said = false;
        loop {
            match self.etcd.get_prefix(&self.prefix).await {
                Ok(listing) => {
                    self.snapshot = Snapshot {
                        revision: listing.revision,
                        entries: listing
                            .kvs
                            .into_iter()
                            .map(|kv| (kv.key, kv.value))
                            .collect(),
                    };
                    retry = FIRST_RETRY;
                    outage_said = false;
                }
                Err(status) => {
                    // Said once per outage; the follower's reader keeps
                    // what it had.
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
                            prefix = %String::from_utf8_lossy(&self.prefix),
                            revision = self.snapshot.revision,
                            "etcd compacted the watched revision: listing again"
                        );
                        break;
                    }
                    Some(WatchEnd::Broken(status)) => {
                        tracing::debug!(
                            prefix = %String::from_utf8_lossy(&self.prefix),
                            %status,
                            "etcd watch broke: resuming"
                        );
                        tokio::time::sleep(retry).await;
                        retry = (retry * 2).min(LAST_RETRY);
                    }
                }
            }
        }
    }

    /// Follows the prefix from the revision after the snapshot's, telling
    /// each change. `None` when the follower was dropped.
    async fn watch(&mut self) -> Option<WatchEnd> {
        let create = WatchRequest {
            request_union: Some(watch_request::RequestUnion::CreateRequest(
                WatchCreateRequest {
                    key: self.prefix.clone(),
                    range_end: prefix_end(&self.prefix),
                    start_revision: self.snapshot.revision + 1,
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
                    EventType::Put => {
                        self.snapshot
                            .entries
                            .insert(kv.key.clone(), kv.value.clone());
                    }
                    EventType::Delete => {
                        self.snapshot.entries.remove(&kv.key);
                    }
                }
                self.snapshot.revision = self.snapshot.revision.max(kv.mod_revision);
            }
            if let Some(header) = &response.header {
                // A progress notification (no events) carries the revision
                // the watch has reached. A response with events may carry
                // the store's newer revision while a catching-up watch has
                // more events to send: only its events' revisions count.
                if response.events.is_empty() && !response.created && !response.fragment {
                    self.snapshot.revision = self.snapshot.revision.max(header.revision);
                }
            }
            if !response.events.is_empty() && !self.tell().await {
                return None;
            }
        }
    }

    /// Sends the snapshot; false when the follower was dropped.
    async fn tell(&mut self) -> bool {
        self.sender.send(Ok(self.snapshot.clone())).await.is_ok()
    }
}

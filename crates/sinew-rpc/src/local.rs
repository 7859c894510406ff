//! Local-endpoint discovery: how a client given a `tcp://` address learns that
//! the server runs on its own host, and moves to shared memory or a Unix socket.
//!
//! A server that listens on `shm://` or `unix://` addresses serves
//! `sinew.local.v1.Local/Endpoints` (unless turned off with
//! [`ServerBuilder::advertise_local`](crate::ServerBuilder::advertise_local)),
//! answering with its host's boot id, its process id and those addresses. A
//! channel built with [`ChannelBuilder::prefer_local`](crate::ChannelBuilder::prefer_local)
//! asks once, over TCP, and uses a local endpoint only when all of this holds:
//!
//! 1. the boot id equals its own (`/proc/sys/kernel/random/boot_id`): the same
//!    kernel, so the same host; a loopback address alone would not prove it
//!    (a container's port forwarding looks like loopback too);
//! 2. the advertised path can be connected to from here (another mount
//!    namespace, a container, does not see it; another user may be refused by
//!    the shared-memory handshake);
//! 3. the connected peer's process id, from `SO_PEERCRED`, is the one the
//!    server advertised: the path really leads to the process we asked, not to
//!    another one that happens to listen there (and a server in another pid
//!    namespace never matches).
//!
//! Otherwise the channel stays on TCP. A local endpoint that fails later makes
//! the channel fall back to TCP, and ask again at a later reconnect.

use crate::client::Channel;
use crate::request::{Request, Response};
use crate::status::Status;
use sinew_transport::Address;

/// Code generated from `proto/sinew/local/v1/local.proto`.
#[allow(missing_docs, unreachable_pub, clippy::all, rustdoc::all)]
pub mod v1 {
    include!(concat!(env!("OUT_DIR"), "/sinew.local.v1.rs"));
}

use v1::{EndpointsRequest, EndpointsResponse};

/// This host's boot id, if the kernel tells it.
pub(crate) fn boot_id() -> Option<String> {
    let text = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").ok()?;
    let id = text.trim();
    (!id.is_empty()).then(|| id.to_owned())
}

/// The addresses worth advertising, preferred first: shared memory, then Unix
/// sockets.
pub(crate) fn local_addresses(bound: &[Address]) -> Vec<Address> {
    let shm = bound.iter().filter(|a| matches!(a, Address::Shm(_)));
    let unix = bound.iter().filter(|a| matches!(a, Address::Unix(_)));
    shm.chain(unix).cloned().collect()
}

/// The `Local` service of a server.
#[derive(Debug)]
pub(crate) struct LocalEndpoints {
    response: EndpointsResponse,
}

impl LocalEndpoints {
    /// `None` when there is nothing to advertise (no local listener, or no boot
    /// id to prove the host by).
    pub(crate) fn new(bound: &[Address]) -> Option<LocalEndpoints> {
        let addresses = local_addresses(bound);
        if addresses.is_empty() {
            return None;
        }
        Some(LocalEndpoints {
            response: EndpointsResponse {
                boot_id: boot_id()?,
                pid: std::process::id(),
                addresses: addresses.iter().map(ToString::to_string).collect(),
            },
        })
    }
}

impl v1::local_server::Local for LocalEndpoints {
    async fn endpoints(
        &self,
        _request: Request<EndpointsRequest>,
    ) -> Result<Response<EndpointsResponse>, Status> {
        Ok(Response::new(self.response.clone()))
    }
}

/// A server's local endpoints, as a client may use them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct LocalRoute {
    /// Preferred first.
    pub(crate) addresses: Vec<Address>,
    /// The process every one of them must lead to.
    pub(crate) pid: u32,
}

/// What a server's answer allows: its local endpoints if it runs under our
/// kernel, none otherwise.
pub(crate) fn route_from(
    response: EndpointsResponse,
    our_boot_id: Option<&str>,
) -> Option<LocalRoute> {
    if our_boot_id? != response.boot_id || response.pid == 0 {
        return None;
    }
    let addresses: Vec<Address> = response
        .addresses
        .iter()
        .filter_map(|text| text.parse::<Address>().ok())
        .filter(Address::is_local_only)
        .collect();
    (!addresses.is_empty()).then_some(LocalRoute {
        addresses,
        pid: response.pid,
    })
}

/// Asks the server at `address` (over its own short-lived connection) for its
/// local endpoints. `None` on any failure: the caller stays on `address`.
pub(crate) async fn discover(address: &Address, channel: Channel) -> Option<LocalRoute> {
    let client = v1::local_client::LocalClient::new(channel);
    match client.endpoints(EndpointsRequest {}).await {
        Ok(response) => route_from(response.into_inner(), boot_id().as_deref()),
        Err(status) => {
            tracing::debug!(%address, %status, "no local endpoints advertised");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn response(boot_id: &str, pid: u32, addresses: &[&str]) -> EndpointsResponse {
        EndpointsResponse {
            boot_id: boot_id.into(),
            pid,
            addresses: addresses.iter().map(|a| a.to_string()).collect(),
        }
    }

    #[test]
    fn only_a_server_under_our_kernel_with_local_addresses_is_a_route() {
        let ours = Some("boot-a");
        let route = route_from(
            response("boot-a", 42, &["shm:///s.sock", "unix:///u.sock"]),
            ours,
        )
        .unwrap();
        assert_eq!(route.pid, 42);
        assert_eq!(
            route.addresses,
            vec![Address::shm("/s.sock"), Address::unix("/u.sock")]
        );
        // Another host (or boot), no boot id of our own, no pid.
        assert!(route_from(response("boot-b", 42, &["shm:///s.sock"]), ours).is_none());
        assert!(route_from(response("boot-a", 42, &["shm:///s.sock"]), None).is_none());
        assert!(route_from(response("boot-a", 0, &["shm:///s.sock"]), ours).is_none());
        // Malformed or remote addresses are not followed.
        assert!(route_from(
            response("boot-a", 42, &["tcp://10.0.0.1:80", "nonsense"]),
            ours
        )
        .is_none());
    }

    #[test]
    fn shared_memory_is_advertised_before_unix_sockets_and_tcp_not_at_all() {
        let bound = [
            Address::tcp("127.0.0.1", 1),
            Address::unix("/u.sock"),
            Address::shm("/s.sock"),
        ];
        assert_eq!(
            local_addresses(&bound),
            vec![Address::shm("/s.sock"), Address::unix("/u.sock")]
        );
        assert!(LocalEndpoints::new(&bound[..1]).is_none());
    }
}

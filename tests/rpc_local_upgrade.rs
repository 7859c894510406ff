//! A channel given a `tcp://` address moves to the server's shared-memory
//! endpoint when the server is on this host and the channel asks for it; and
//! stays on TCP whenever that cannot be proven (another host's boot id, an
//! endpoint that leads to another process, advertising turned off).

mod common;

use common::TestServer;
use sinew::rpc::local::v1::{local_server, EndpointsRequest, EndpointsResponse};
use sinew::transport::Address;
use sinew::{Channel, Request, Response, Status};
use sinew_examples::echo::{echo_client::EchoClient, EchoRequest};

async fn echo_works(channel: &Channel) {
    let reply = EchoClient::new(channel.clone())
        .unary_echo(EchoRequest {
            message: "hello".into(),
        })
        .await
        .unwrap();
    assert_eq!(reply.into_inner().message, "hello");
}

async fn prefer_local(address: &Address) -> Channel {
    Channel::builder(address.clone())
        .prefer_local(true)
        .connect()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tcp_channel_moves_to_shared_memory_when_the_server_is_local() {
    let server = TestServer::start().await;
    let channel = prefer_local(&server.tcp).await;
    assert_eq!(channel.local_address(), Some(server.shm.clone()));
    echo_works(&channel).await;

    // Without asking, a channel stays where it was sent.
    let plain = Channel::builder(server.tcp.clone())
        .connect()
        .await
        .unwrap();
    assert_eq!(plain.local_address(), None);
    echo_works(&plain).await;
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_does_not_advertise_keeps_its_clients_on_tcp() {
    let server = TestServer::start_with(|builder| builder.advertise_local(false)).await;
    let channel = prefer_local(&server.tcp).await;
    assert_eq!(channel.local_address(), None);
    echo_works(&channel).await;
    server.shutdown().await;
}

/// A `Local` service that says what the test wants it to.
struct Claims(EndpointsResponse);

impl local_server::Local for Claims {
    async fn endpoints(
        &self,
        _request: Request<EndpointsRequest>,
    ) -> Result<Response<EndpointsResponse>, Status> {
        Ok(Response::new(self.0.clone()))
    }
}

fn our_boot_id() -> String {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .unwrap()
        .trim()
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unproven_claims_of_being_local_are_not_followed() {
    // The real shared-memory endpoint of a real server, but claimed by a
    // "different" process, or from another host: the channel must not use it.
    let real = TestServer::start().await;
    let shm = real.shm.to_string();
    for (case, claims) in [
        (
            "another process",
            EndpointsResponse {
                boot_id: our_boot_id(),
                pid: std::process::id() + 1,
                addresses: vec![shm.clone()],
            },
        ),
        (
            "another host",
            EndpointsResponse {
                boot_id: "00000000-0000-0000-0000-000000000000".into(),
                pid: std::process::id(),
                addresses: vec![shm.clone()],
            },
        ),
        (
            "not a local address",
            EndpointsResponse {
                boot_id: our_boot_id(),
                pid: std::process::id(),
                addresses: vec!["tcp://10.1.2.3:4".into()],
            },
        ),
    ] {
        let claimant = TestServer::start_with(|builder| {
            builder
                .advertise_local(false)
                .add_service(local_server::LocalServer::new(Claims(claims)))
        })
        .await;
        let channel = prefer_local(&claimant.tcp).await;
        assert_eq!(channel.local_address(), None, "{case}");
        echo_works(&channel).await;
        claimant.shutdown().await;
    }
    // The honest claim, for contrast, is followed.
    let honest = TestServer::start_with(|builder| {
        builder
            .advertise_local(false)
            .add_service(local_server::LocalServer::new(Claims(EndpointsResponse {
                boot_id: our_boot_id(),
                pid: std::process::id(),
                addresses: vec![shm.clone()],
            })))
    })
    .await;
    let channel = prefer_local(&honest.tcp).await;
    assert_eq!(channel.local_address(), Some(real.shm.clone()));
    echo_works(&channel).await;
    honest.shutdown().await;
    real.shutdown().await;
}

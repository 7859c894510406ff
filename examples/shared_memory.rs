//! Shared memory between local processes, and a TCP client that moves to it by
//! itself.
//!
//! ```text
//! cargo run --release --example shared_memory
//! ```
//!
//! The server listens on TCP and on `shm://` (a control socket in a temporary
//! directory). One client is given the `shm://` address; another only the
//! `tcp://` one, with `prefer_local(true)`: it asks the server, proves the
//! server runs on this host (same boot id, and the endpoint's peer credentials
//! name the process that answered), and moves to shared memory. A third client
//! stays on TCP, for comparison. Each makes the same 1 KiB calls one after
//! another and reports its median round trip.

use sinew::{Channel, Server};
use sinew_examples::echo::{
    echo_client::EchoClient, echo_server::EchoServer, EchoRequest, EchoService,
};
use std::time::{Duration, Instant};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = std::env::temp_dir().join(format!("sinew-shm-example-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let server = Server::builder()
        .add_service(EchoServer::new(EchoService))
        .bind([
            "tcp://127.0.0.1:0".to_owned(),
            format!("shm://{}", dir.join("echo.sock").display()),
        ])
        .await?;
    let tcp = server.local_addresses()[0].clone();
    let shm = server.local_addresses()[1].clone();
    let handle = server.handle();
    let serving = tokio::spawn(server.serve());
    println!("echo service on {tcp} and {shm}");

    let direct = Channel::builder(shm.clone()).connect().await?;
    let upgraded = Channel::builder(tcp.clone())
        .prefer_local(true)
        .connect()
        .await?;
    let plain = Channel::builder(tcp.clone()).connect().await?;
    println!(
        "the prefer_local client given {tcp} uses {}",
        upgraded
            .local_address()
            .map_or("TCP (no proof the server is local)".to_owned(), |a| a
                .to_string())
    );

    for (name, channel) in [
        ("shm:// directly", direct),
        ("tcp:// with prefer_local", upgraded),
        ("tcp:// as given", plain),
    ] {
        let median = median_round_trip(EchoClient::new(channel)).await?;
        println!("{name:<26} median round trip of a 1 KiB echo: {median:?}");
    }

    handle.shutdown();
    serving.await?;
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

/// The median of 2,000 sequential 1 KiB echoes, after 200 to warm up.
async fn median_round_trip(client: EchoClient) -> Result<Duration, sinew::Status> {
    let message = "x".repeat(1024);
    let mut times = Vec::with_capacity(2_000);
    for round in 0..2_200 {
        let start = Instant::now();
        let reply = client
            .unary_echo(EchoRequest {
                message: message.clone(),
            })
            .await?;
        assert_eq!(reply.get_ref().message.len(), message.len());
        if round >= 200 {
            times.push(start.elapsed());
        }
    }
    times.sort();
    Ok(times[times.len() / 2])
}

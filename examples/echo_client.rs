//! Calls the echo server with every call kind.
//!
//! ```text
//! cargo run --example echo_server &
//! cargo run --example echo_client -- tcp://127.0.0.1:7000
//! ```

use futures_util::StreamExt;
use sinew::{Channel, Request};
use sinew_examples::echo::{echo_client::EchoClient, EchoRequest};

fn request(message: &str) -> EchoRequest {
    EchoRequest {
        message: message.into(),
    }
}

#[tokio::main]
async fn main() -> Result<(), sinew::Status> {
    let address = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "tcp://127.0.0.1:7000".into());
    let client = EchoClient::new(Channel::connect(&address).await?);

    let reply = client.unary_echo(request("hello")).await?;
    println!("unary: {}", reply.into_inner().message);

    let mut call = Request::new(request("tick"));
    call.metadata_mut()
        .insert("x-repeat", "3")
        .expect("valid metadata");
    let mut ticks = client.server_streaming_echo(call).await?.into_inner();
    while let Some(tick) = ticks.message().await? {
        println!("server streaming: {}", tick.message);
    }

    let words = futures_util::stream::iter(["one", "two", "three"].map(request));
    let joined = client.client_streaming_echo(words).await?;
    println!("client streaming: {:?}", joined.into_inner().message);

    let pings = futures_util::stream::iter((1..=3).map(|i| request(&format!("ping {i}"))));
    let mut pongs = client
        .bidirectional_streaming_echo(pings)
        .await?
        .into_inner();
    while let Some(pong) = pongs.next().await {
        println!("bidirectional: {}", pong?.message);
    }
    Ok(())
}

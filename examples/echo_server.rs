//! Serves gRPC's echo service on TCP and a Unix socket until Ctrl-C, then drains.
//!
//! ```text
//! cargo run --example echo_server -- tcp://127.0.0.1:7000 unix:///tmp/echo.sock
//! ```

use sinew::Server;
use sinew_examples::echo::{echo_server::EchoServer, EchoService};

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let mut addresses: Vec<String> = std::env::args().skip(1).collect();
    if addresses.is_empty() {
        addresses.push("tcp://127.0.0.1:7000".into());
    }
    let server = Server::builder()
        .add_service(EchoServer::new(EchoService))
        .bind(&addresses)
        .await?;
    for address in server.local_addresses() {
        println!("echo server listening on {address}");
    }
    let report = server
        .serve_with_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await;
    println!(
        "shut down: {} calls drained, {} cancelled",
        report.drained_calls, report.cancelled_calls
    );
    Ok(())
}

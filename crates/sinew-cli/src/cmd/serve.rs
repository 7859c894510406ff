//! `sinew serve`: the example services on any number of listeners, until Ctrl-C.

use crate::error::CliError;
use sinew::Server;
use sinew_examples::echo::{echo_server::EchoServer, EchoService};
use sinew_examples::kv::{key_value_server::KeyValueServer, KeyValueStore};
use std::io::Write;
use std::time::Duration;

/// Which example services to serve.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Example {
    /// grpc.examples.echo.Echo
    Echo,
    /// sinew.examples.kv.KeyValue
    Kv,
    /// Both.
    All,
}

#[derive(clap::Args, Debug)]
#[command(
    after_help = "Example:\n  sinew serve --listen tcp://127.0.0.1:7000 --listen unix:///tmp/sinew.sock --listen shm:///tmp/sinew-shm.sock"
)]
pub(crate) struct Args {
    /// Address to listen on: tcp://HOST:PORT, unix:///PATH or shm:///PATH (repeatable). Default:
    /// tcp://127.0.0.1:0, a free port, printed at start.
    #[arg(short, long = "listen", value_name = "ADDRESS")]
    listen: Vec<String>,
    /// Which example services to serve.
    #[arg(long, value_enum, default_value_t = Example::All)]
    example: Example,
    /// At shutdown, how long calls in flight may run before they are ended with
    /// UNAVAILABLE.
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = crate::time::parse_duration)]
    drain_timeout: Duration,
}

pub(crate) async fn run(args: Args) -> Result<(), CliError> {
    let mut addresses = args.listen;
    if addresses.is_empty() {
        addresses.push("tcp://127.0.0.1:0".to_owned());
    }
    for address in &addresses {
        crate::schema::parse_address(address)?;
    }
    // sinew's protocol and gRPC (HTTP/2) on every listener: any gRPC client or
    // tool can call these services too.
    let mut builder = Server::builder()
        .drain_timeout(args.drain_timeout)
        .add_protocol(sinew_grpc::GrpcProtocol::default());
    if matches!(args.example, Example::Echo | Example::All) {
        builder = builder.add_service(EchoServer::new(EchoService));
    }
    if matches!(args.example, Example::Kv | Example::All) {
        builder = builder.add_service(KeyValueServer::new(KeyValueStore::default()));
    }
    let server = builder
        .bind(&addresses)
        .await
        .map_err(|error| CliError::failure(error.to_string()))?;
    for address in server.local_addresses() {
        println!("listening on {address}");
    }
    println!("every address speaks sinew and gRPC (HTTP/2)");
    println!("press Ctrl-C to shut down gracefully");
    let _ = std::io::stdout().flush();
    let report = server.serve_with_shutdown(shutdown_signal()).await;
    println!(
        "shut down gracefully: {} calls drained, {} cancelled at the drain deadline, {} connections closed",
        report.drained_calls, report.cancelled_calls, report.connections
    );
    Ok(())
}

/// Ctrl-C (SIGINT) or SIGTERM.
async fn shutdown_signal() {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate => {}
    }
    eprintln!("shutting down: finishing the calls in flight...");
}

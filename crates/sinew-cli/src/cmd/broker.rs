//! `sinew broker`: a standalone broker, the embedded one served on sinew's
//! protocol (and gRPC on the same ports) for `sinew pub`, `sinew sub`,
//! `sinew queue` and any `Broker::connect`.

use crate::error::CliError;
use sinew::messaging::{Broker, FsyncPolicy};
use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

#[derive(clap::Args, Debug)]
pub(crate) struct Args {
    /// Where to listen: tcp://HOST:PORT, unix:///PATH or shm:///PATH
    /// (repeatable).
    #[arg(long = "listen", value_name = "ADDRESS", default_values_t = ["tcp://127.0.0.1:4223".to_owned()])]
    listen: Vec<String>,
    /// Keep work queues in this file (a redb database, created if missing);
    /// without it they are in memory and end with the process.
    #[arg(long, value_name = "FILE")]
    storage: Option<PathBuf>,
    /// When the store forces writes to disk: `always` (every transaction,
    /// before any producer is answered) or a duration such as 100ms (answered
    /// pushes of the last interval may be lost in a crash).
    #[arg(long, value_name = "always|DURATION", default_value = "always", value_parser = parse_fsync)]
    fsync: FsyncPolicy,
    /// The largest payload published or pushed, in bytes.
    #[arg(long, value_name = "BYTES", default_value_t = sinew::messaging::broker::DEFAULT_MAX_PAYLOAD)]
    max_payload: usize,
    /// Serve the admin endpoint on this address (HTTP: /metrics with the
    /// broker's and each work queue's figures, /healthz, /readyz, the
    /// dashboard's data).
    #[arg(long, value_name = "HOST:PORT")]
    admin: Option<std::net::SocketAddr>,
    /// At shutdown, how long subscriptions and workers (calls that last)
    /// may run before they are ended.
    #[arg(long, value_name = "DURATION", default_value = "1s", value_parser = crate::time::parse_duration)]
    drain_timeout: Duration,
}

fn parse_fsync(text: &str) -> Result<FsyncPolicy, String> {
    match text {
        "always" => Ok(FsyncPolicy::Always),
        other => crate::time::parse_duration(other).map(FsyncPolicy::Interval),
    }
}

pub(crate) async fn run(args: Args) -> Result<(), CliError> {
    let mut builder = Broker::builder()
        .max_payload(args.max_payload)
        .fsync(args.fsync);
    if let Some(path) = &args.storage {
        builder = builder.storage(path);
    }
    let broker = builder
        .build()
        .map_err(|error| CliError::failure(format!("cannot open the broker's store: {error}")))?;
    let telemetry = sinew::telemetry::Telemetry::new();
    // sinew's protocol and gRPC (HTTP/2) on every listener: any gRPC
    // client can use the broker too.
    let server = sinew::Server::builder()
        .drain_timeout(args.drain_timeout)
        .add_protocol(sinew_grpc::GrpcProtocol::default())
        .layer(telemetry.server_layer())
        .add_service(broker.service())
        .bind(&args.listen)
        .await
        .map_err(|error| CliError::failure(error.to_string()))?;
    telemetry.watch_server(&server.handle());
    telemetry.watch_broker("broker", &broker);

    use tokio::signal::unix::{signal, SignalKind};
    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut terminate = signal(SignalKind::terminate())?;
    for address in server.local_addresses() {
        println!("listening on {address}");
    }
    telemetry.readiness().set_ready();
    let admin = super::serve_admin(&telemetry, args.admin).await?;
    match &args.storage {
        Some(path) => println!("work queues stored in {}", path.display()),
        None => println!("work queues in memory (--storage FILE to keep them)"),
    }
    println!("press Ctrl-C to shut down gracefully");
    let _ = std::io::stdout().flush();
    let report = server
        .serve_with_shutdown(async move {
            tokio::select! {
                _ = interrupt.recv() => {}
                _ = terminate.recv() => {}
            }
        })
        .await;
    if let Some(admin) = admin {
        admin.shutdown().await;
    }
    println!(
        "shut down: {} calls drained, {} ended at the drain deadline",
        report.drained_calls, report.cancelled_calls
    );
    Ok(())
}

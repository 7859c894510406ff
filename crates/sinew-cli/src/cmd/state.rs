//! `sinew state`: the embedded shared-state store (one node, persisted in
//! redb, **not replicated**) served as etcd's v3 API, for development and
//! demos: `sinew kv`, `sinew lock`, `sinew elect`, `sinew::state` and
//! etcd's own clients use it as they use etcd.

use crate::error::CliError;
use sinew::state::embedded::Store;
use std::io::Write;
use std::path::PathBuf;

/// The address `sinew state` listens on, and the other commands reach,
/// unless told otherwise: etcd's client port.
pub(crate) const DEFAULT_STORE: &str = "127.0.0.1:2379";

#[derive(clap::Args, Debug)]
pub(crate) struct Args {
    /// Where to listen: tcp://HOST:PORT (repeatable).
    #[arg(long = "listen", value_name = "ADDRESS", default_values_t = [format!("tcp://{DEFAULT_STORE}")])]
    listen: Vec<String>,
    /// Keep the data in this file (a redb database, created if missing);
    /// without it the store is in memory and ends with the process (and its
    /// revisions, fencing tokens among them, start again from 1).
    #[arg(long, value_name = "FILE")]
    data: Option<PathBuf>,
}

pub(crate) async fn run(args: Args) -> Result<(), CliError> {
    let store = match &args.data {
        Some(path) => Store::open(path),
        None => Store::in_memory(),
    }
    .map_err(|status| CliError::failure(status.message().to_owned()))?;
    let server = store
        .serve_etcd_api(sinew::Server::builder().add_protocol(sinew_grpc::GrpcProtocol::default()))
        .bind(&args.listen)
        .await
        .map_err(|error| CliError::failure(error.to_string()))?;
    use tokio::signal::unix::{signal, SignalKind};
    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut terminate = signal(SignalKind::terminate())?;
    for address in server.local_addresses() {
        println!("listening on {address}");
    }
    match &args.data {
        Some(path) => println!("data in {} (revision {})", path.display(), store.revision()),
        None => println!("data in memory (--data FILE to keep it)"),
    }
    println!("one node, not replicated: for development; run etcd in production");
    let _ = std::io::stdout().flush();
    server
        .serve_with_shutdown(async move {
            tokio::select! {
                _ = interrupt.recv() => {}
                _ = terminate.recv() => {}
            }
        })
        .await;
    Ok(())
}

/// Where the store is: etcd members or a `sinew state`, as the commands
/// take it.
#[derive(clap::Args, Debug, Clone)]
pub(crate) struct StoreArgs {
    /// The store: etcd members' client addresses or a `sinew state`,
    /// comma-separated HOST:PORT.
    #[arg(long, env = "SINEW_STORE", value_name = "HOST:PORT,...", default_value = DEFAULT_STORE)]
    store: String,
}

impl StoreArgs {
    pub(crate) fn connect(&self) -> Result<sinew::cluster::etcd::Etcd, CliError> {
        sinew::cluster::etcd::Etcd::connect(self.store.split(',').map(str::trim))
            .map_err(|status| CliError::usage(status.message().to_owned()))
    }
}

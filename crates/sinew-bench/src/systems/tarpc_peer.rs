//! tarpc: its serde transport with bincode over TCP, one multiplexed connection.
//!
//! Fast configuration as documented: requests of a connection executed
//! concurrently (`execute(...).for_each(spawn)`), a length-delimited framed TCP
//! stream with `TCP_NODELAY`, a client `spawn`ed once and cloned per caller.

use super::RunningServer;
use crate::load::{drive, Caller, Cell, OverConnections, Plan, Runtimes, Stats};
use bytes::Bytes;
use futures_util::{Future, StreamExt};
use tarpc::server::{BaseChannel, Channel};
use tarpc::tokio_serde::formats::Bincode;
use tarpc::tokio_util::codec::{Framed, LengthDelimitedCodec};
use tarpc::{client, context};

/// The echo service, in tarpc's trait style.
#[tarpc::service]
trait Echo {
    /// Returns its argument.
    async fn unary_echo(message: String) -> String;
    /// Returns its argument (the `bytes` cells).
    async fn bytes_echo(data: Bytes) -> Bytes;
}

#[derive(Clone)]
struct EchoServer;

impl Echo for EchoServer {
    async fn unary_echo(self, _: context::Context, message: String) -> String {
        message
    }

    async fn bytes_echo(self, _: context::Context, data: Bytes) -> Bytes {
        data
    }
}

fn framed(stream: tokio::net::TcpStream) -> Framed<tokio::net::TcpStream, LengthDelimitedCodec> {
    let mut codec = LengthDelimitedCodec::new();
    codec.set_max_frame_length(16 << 20);
    Framed::new(stream, codec)
}

async fn spawn(future: impl Future<Output = ()> + Send + 'static) {
    tokio::spawn(future);
}

/// tarpc's client making the echo call of a cell: the string echo, or the
/// bytes echo of the `bytes` cells.
#[derive(Clone)]
enum TarpcCaller {
    Text { client: EchoClient, payload: String },
    Bytes { client: EchoClient, payload: Bytes },
}

impl Caller for TarpcCaller {
    async fn call(&self) -> anyhow::Result<()> {
        match self {
            TarpcCaller::Text { client, payload } => {
                let reply = client
                    .unary_echo(context::current(), payload.clone())
                    .await?;
                anyhow::ensure!(reply == *payload, "wrong echo");
            }
            TarpcCaller::Bytes { client, payload } => {
                let reply = client
                    .bytes_echo(context::current(), payload.clone())
                    .await?;
                anyhow::ensure!(reply == *payload, "wrong echo");
            }
        }
        Ok(())
    }
}

pub(crate) fn run(runtimes: &Runtimes, plan: &Plan, cell: Cell) -> anyhow::Result<Stats> {
    let server = start(runtimes)?;
    let callers = callers(runtimes, server.address, cell)?;
    let stats = drive(runtimes, plan, cell, callers);
    server.stop()?;
    Ok(stats)
}

/// tarpc's echo server on the server runtime.
pub(crate) fn start(runtimes: &Runtimes) -> anyhow::Result<RunningServer<'_>> {
    let listener = runtimes
        .server
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))?;
    let address = listener.local_addr()?;
    let serving = runtimes.server.spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let _ = stream.set_nodelay(true);
            let transport = tarpc::serde_transport::new(framed(stream), Bincode::default());
            tokio::spawn(
                BaseChannel::with_defaults(transport)
                    .execute(EchoServer.serve())
                    .for_each(spawn),
            );
        }
    });
    Ok(RunningServer::in_process(address, move || {
        serving.abort();
        Ok(())
    }))
}

/// tarpc's client for the server at `address`: the cell's connections,
/// each a client of its own.
pub(crate) fn callers(
    runtimes: &Runtimes,
    address: std::net::SocketAddr,
    cell: Cell,
) -> anyhow::Result<OverConnections<impl Caller>> {
    let callers = runtimes.client.block_on(async {
        let mut callers = Vec::with_capacity(cell.connections);
        for _ in 0..cell.connections {
            let stream = tokio::net::TcpStream::connect(address).await?;
            stream.set_nodelay(true)?;
            let transport = tarpc::serde_transport::new(framed(stream), Bincode::default());
            let client = EchoClient::new(client::Config::default(), transport).spawn();
            callers.push(if cell.bytes {
                TarpcCaller::Bytes {
                    client,
                    payload: super::payload_bytes(cell.payload),
                }
            } else {
                TarpcCaller::Text {
                    client,
                    payload: super::payload(cell.payload),
                }
            });
        }
        Ok::<_, anyhow::Error>(callers)
    })?;
    Ok(OverConnections::new(callers))
}

//! tarpc: its serde transport with bincode over TCP, one multiplexed connection.
//!
//! Fast configuration as documented: requests of a connection executed
//! concurrently (`execute(...).for_each(spawn)`), a length-delimited framed TCP
//! stream with `TCP_NODELAY`, a client `spawn`ed once and cloned per caller.

use super::RunningServer;
use crate::load::{drive, Caller, Cell, OverConnections, Plan, Runtimes, Stats};
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
}

#[derive(Clone)]
struct EchoServer;

impl Echo for EchoServer {
    async fn unary_echo(self, _: context::Context, message: String) -> String {
        message
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

#[derive(Clone)]
struct TarpcCaller {
    client: EchoClient,
    payload: String,
}

impl Caller for TarpcCaller {
    async fn call(&self) -> anyhow::Result<()> {
        let reply = self
            .client
            .unary_echo(context::current(), self.payload.clone())
            .await?;
        anyhow::ensure!(reply == self.payload, "wrong echo");
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
    let payload = super::payload(cell.payload);
    let callers = runtimes.client.block_on(async {
        let mut callers = Vec::with_capacity(cell.connections);
        for _ in 0..cell.connections {
            let stream = tokio::net::TcpStream::connect(address).await?;
            stream.set_nodelay(true)?;
            let transport = tarpc::serde_transport::new(framed(stream), Bincode::default());
            callers.push(TarpcCaller {
                client: EchoClient::new(client::Config::default(), transport).spawn(),
                payload: payload.clone(),
            });
        }
        Ok::<_, anyhow::Error>(callers)
    })?;
    Ok(OverConnections::new(callers))
}

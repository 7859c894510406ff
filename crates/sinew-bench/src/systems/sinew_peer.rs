//! sinew: the echo service of `sinew-examples`, over TCP, a Unix socket or
//! shared memory. The caller checks every byte of every echo, so the payload is
//! written and read on both sides.

use super::blob::sinew_blob::{
    blob_echo_client::BlobEchoClient, blob_echo_server::BlobEchoServer, Blob,
};
use super::blob::SinewBlobEcho;
use super::{RunningServer, System};
use crate::load::checked_echoes;
use crate::load::{
    drive, drive_streams, process_cpu, Caller, Cell, OverConnections, Plan, Runtimes, Stats,
    Streamer,
};
use crate::scratch::Scratch;
use bytes::Bytes;
use futures_util::stream::{BoxStream, StreamExt};
use sinew::rpc::ServerHandle;
use sinew::telemetry::client::ClientTelemetry;
use sinew::telemetry::Telemetry;
use sinew::Server;
use sinew_examples::echo::{
    echo_client::EchoClient, echo_server::EchoServer, EchoRequest, EchoService,
};
use std::time::Duration;

/// Which transport a sinew row runs over.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Transport {
    Tcp,
    /// TCP with TLS (certificates of [`super::tls::pki`]).
    Tls,
    Unix,
    Shm,
}

impl Transport {
    pub(crate) fn name(self) -> &'static str {
        self.system().name()
    }

    /// The row of sinew over this transport.
    pub(crate) fn system(self) -> System {
        match self {
            Transport::Tcp => System::SinewTcp,
            Transport::Tls => System::SinewTls,
            Transport::Unix => System::SinewUnix,
            Transport::Shm => System::SinewShm,
        }
    }
}

/// sinew's client making the echo call of a cell: the string echo of
/// sinew-examples, or the bytes echo of the `bytes` cells.
#[derive(Clone)]
enum SinewCaller {
    Text {
        client: EchoClient,
        payload: String,
    },
    Bytes {
        client: BlobEchoClient,
        payload: Bytes,
    },
    /// The string echo behind telemetry's client layer.
    Traced {
        client: EchoClient<ClientTelemetry<sinew::Channel>>,
        payload: String,
    },
}

impl SinewCaller {
    /// The caller of `cell`'s echo on `channel`.
    fn new(channel: sinew::Channel, cell: Cell) -> SinewCaller {
        if cell.bytes {
            SinewCaller::Bytes {
                client: BlobEchoClient::new(channel),
                payload: super::payload_bytes(cell.payload),
            }
        } else {
            SinewCaller::Text {
                client: EchoClient::new(channel),
                payload: super::payload(cell.payload),
            }
        }
    }
}

impl Caller for SinewCaller {
    async fn call(&self) -> anyhow::Result<()> {
        match self {
            SinewCaller::Text { client, payload } => {
                let reply = client
                    .unary_echo(EchoRequest {
                        message: payload.clone(),
                    })
                    .await?;
                anyhow::ensure!(reply.get_ref().message == *payload, "wrong echo");
            }
            SinewCaller::Traced { client, payload } => {
                let reply = client
                    .unary_echo(EchoRequest {
                        message: payload.clone(),
                    })
                    .await?;
                anyhow::ensure!(reply.get_ref().message == *payload, "wrong echo");
            }
            SinewCaller::Bytes { client, payload } => {
                let reply = client
                    .unary_echo(Blob {
                        data: payload.clone(),
                    })
                    .await?;
                anyhow::ensure!(reply.get_ref().data == *payload, "wrong echo");
            }
        }
        Ok(())
    }
}

/// A sinew server with both echo services: sinew-examples' string echo and
/// the blob echo of the `bytes` cells.
pub(crate) fn echo_server() -> sinew::rpc::ServerBuilder {
    Server::builder()
        .add_service(EchoServer::new(EchoService))
        .add_service(BlobEchoServer::new(SinewBlobEcho))
}

/// A running echo server and clients connected to it, each with its own
/// `Channel` (one connection).
struct Pair {
    channels: Vec<sinew::Channel>,
    handle: ServerHandle,
    serving: tokio::task::JoinHandle<sinew::rpc::ShutdownReport>,
    _dir: Scratch,
}

fn start(runtimes: &Runtimes, transport: Transport, connections: usize) -> anyhow::Result<Pair> {
    start_with(runtimes, transport, connections, None)
}

fn start_with(
    runtimes: &Runtimes,
    transport: Transport,
    connections: usize,
    telemetry: Option<&Telemetry>,
) -> anyhow::Result<Pair> {
    let dir = Scratch::new("sockets")?;
    let address = match transport {
        Transport::Tcp => "tcp://127.0.0.1:0".to_owned(),
        Transport::Tls => "tls://127.0.0.1:0".to_owned(),
        Transport::Unix => format!("unix://{}", dir.join("echo.sock").display()),
        Transport::Shm => format!("shm://{}", dir.join("echo-shm.sock").display()),
    };
    let (builder, client_tls) = match transport {
        Transport::Tls => {
            let pki = super::tls::pki();
            (
                echo_server().tls(pki.server.clone()),
                Some(pki.client.clone()),
            )
        }
        _ => (echo_server(), None),
    };
    let builder = match telemetry {
        Some(telemetry) => builder.layer(telemetry.server_layer()),
        None => builder,
    };
    let server = runtimes
        .server
        .block_on(async { builder.bind([address]).await })?;
    let bound = server.local_addresses()[0].clone();
    let handle = server.handle();
    let serving = runtimes.server.spawn(server.serve());
    let channels = runtimes.client.block_on(async {
        let mut channels = Vec::with_capacity(connections);
        for _ in 0..connections {
            let mut builder = sinew::Channel::builder(bound.clone());
            if let Some(tls) = &client_tls {
                builder = builder.tls(tls.clone());
            }
            channels.push(builder.connect().await?);
        }
        Ok::<_, sinew::Status>(channels)
    })?;
    Ok(Pair {
        channels,
        handle,
        serving,
        _dir: dir,
    })
}

impl Pair {
    fn stop(self, runtimes: &Runtimes) -> anyhow::Result<()> {
        drop(self.channels);
        self.handle.shutdown();
        runtimes.server.block_on(self.serving)?;
        Ok(())
    }
}

pub(crate) fn run(
    runtimes: &Runtimes,
    plan: &Plan,
    cell: Cell,
    transport: Transport,
) -> anyhow::Result<Stats> {
    let pair = start(runtimes, transport, cell.connections)?;
    let callers = pair
        .channels
        .iter()
        .map(|channel| SinewCaller::new(channel.clone(), cell))
        .collect();
    let stats = drive(runtimes, plan, cell, OverConnections::new(callers));
    pair.stop(runtimes)?;
    Ok(stats)
}

/// The `sinew-telemetry` row: sinew over TCP with telemetry's layers on
/// both sides (a span, trace context and metrics for every call; no
/// subscriber, new traces not sampled), against `sinew-tcp`.
pub(crate) fn run_telemetry(runtimes: &Runtimes, plan: &Plan, cell: Cell) -> anyhow::Result<Stats> {
    let telemetry = Telemetry::new();
    let pair = start_with(runtimes, Transport::Tcp, cell.connections, Some(&telemetry))?;
    let layer = telemetry.client_layer("bench");
    let callers = pair
        .channels
        .iter()
        .map(|channel| SinewCaller::Traced {
            client: EchoClient::new(tower::Layer::layer(&layer, channel.clone())),
            payload: super::payload(cell.payload),
        })
        .collect();
    let stats = drive(runtimes, plan, cell, OverConnections::new(callers));
    pair.stop(runtimes)?;
    Ok(stats)
}

/// sinew's client opening server streams of the echo.
#[derive(Clone)]
struct SinewStreamer {
    client: EchoClient,
    payload: String,
}

impl Streamer for SinewStreamer {
    async fn open(&self, repeat: u32) -> anyhow::Result<BoxStream<'static, anyhow::Result<()>>> {
        let mut request = sinew::Request::new(EchoRequest {
            message: self.payload.clone(),
        });
        request
            .metadata_mut()
            .insert("x-repeat", &repeat.to_string())?;
        let stream = self
            .client
            .server_streaming_echo(request)
            .await?
            .into_inner();
        let messages = stream.map(|item| Ok(item?.message));
        Ok(checked_echoes(messages, self.payload.clone()))
    }
}

/// A server-streaming cell over `transport`: one connection, the cell's
/// streams.
pub(crate) fn run_streams(
    runtimes: &Runtimes,
    plan: &Plan,
    cell: Cell,
    transport: Transport,
) -> anyhow::Result<Stats> {
    let pair = start(runtimes, transport, 1)?;
    let streamer = SinewStreamer {
        client: EchoClient::new(pair.channels[0].clone()),
        payload: super::payload(cell.payload),
    };
    let stats = drive_streams(runtimes, plan, cell, streamer, process_cpu);
    pair.stop(runtimes)?;
    Ok(stats)
}

/// sinew's echo server alone, over TCP, on the server runtime (for the
/// idle-connection cells, whose clients are in another process).
pub(crate) fn start_tcp(runtimes: &Runtimes) -> anyhow::Result<RunningServer<'_>> {
    serve_tcp(runtimes, echo_server())
}

/// Binds `builder`'s server to a free port on 127.0.0.1 and serves it on the
/// server runtime until stopped.
pub(crate) fn serve_tcp(
    runtimes: &Runtimes,
    builder: sinew::rpc::ServerBuilder,
) -> anyhow::Result<RunningServer<'_>> {
    let server = runtimes
        .server
        .block_on(builder.bind(["tcp://127.0.0.1:0"]))?;
    let sinew::transport::Address::Tcp { port, .. } = server.local_addresses()[0].clone() else {
        anyhow::bail!("the sinew server did not bind TCP");
    };
    let handle = server.handle();
    let serving = runtimes.server.spawn(server.serve());
    let address = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    Ok(RunningServer::in_process(address, move || {
        handle.shutdown();
        runtimes.server.block_on(serving)?;
        Ok(())
    }))
}

/// sinew's caller of `cell`'s echo over `channel` (any channel: one
/// server's, or a balanced one's).
pub(crate) fn caller(channel: sinew::Channel, cell: Cell) -> impl Caller {
    SinewCaller::new(channel, cell)
}

/// sinew's client for `cell` to the server at `address` over TCP: the
/// cell's connections, each a channel of its own.
pub(crate) fn tcp_callers(
    runtimes: &Runtimes,
    address: std::net::SocketAddr,
    cell: Cell,
) -> anyhow::Result<OverConnections<impl Caller>> {
    let callers = runtimes.client.block_on(async {
        let mut callers = Vec::with_capacity(cell.connections);
        for _ in 0..cell.connections {
            let channel = sinew::Channel::connect(&format!("tcp://{address}")).await?;
            callers.push(SinewCaller::new(channel, cell));
        }
        Ok::<_, sinew::Status>(callers)
    })?;
    Ok(OverConnections::new(callers))
}

/// CPU used by a connected pair that makes no call, as a percentage of one
/// core, over `quiet` (after one call and a moment to settle).
pub(crate) fn idle_cpu_percent(
    runtimes: &Runtimes,
    transport: Transport,
    quiet: Duration,
) -> anyhow::Result<f64> {
    let pair = start(runtimes, transport, 1)?;
    let caller = SinewCaller::new(
        pair.channels[0].clone(),
        Cell::closed(transport.system(), 1024, 1, 1),
    );
    runtimes.client.block_on(caller.call())?;
    // Past any spinning and the pool's background connecting.
    std::thread::sleep(Duration::from_millis(200));
    let before = process_cpu();
    std::thread::sleep(quiet);
    let used = process_cpu().saturating_sub(before);
    pair.stop(runtimes)?;
    Ok(100.0 * used.as_secs_f64() / quiet.as_secs_f64())
}

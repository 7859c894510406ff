//! tonic: gRPC over HTTP/2, generated from the same echo.proto, over TCP.
//!
//! Fast configuration as documented: one HTTP/2 connection multiplexing every call
//! (a cloned `Channel`), `TCP_NODELAY` on both sides. The `tonic` row runs
//! hyper's default HTTP/2 settings; `tonic-tuned` ([`Tuning::Sinew`]) matches
//! sinew's: 1 MiB stream and 8 MiB connection windows, 4 MiB frames.
//! `tonic-tls` is the `tonic` row over TLS (tonic's `tls-ring`: rustls with
//! ring, as sinew's TLS), with the certificates of the `sinew-tls` row.

use super::blob::tonic_blob::{
    blob_echo_client::BlobEchoClient, blob_echo_server::BlobEchoServer, Blob,
};
use super::blob::TonicBlobEcho;
use super::RunningServer;
use crate::load::checked_echoes;
use crate::load::{drive, Caller, Cell, OverConnections, Plan, Runtimes, Stats, Streamer};
use bytes::Bytes;
use futures_util::stream::{BoxStream, StreamExt};
use std::pin::Pin;
use tonic::transport::Channel;
use tonic::{Request, Response, Status};

#[allow(clippy::all, missing_docs, unreachable_pub)]
mod generated {
    tonic::include_proto!("grpc.examples.echo");
}

use generated::echo_client::EchoClient;
use generated::echo_server::{Echo, EchoServer};
use generated::{EchoRequest, EchoResponse};

type ResponseStream =
    Pin<Box<dyn futures_util::Stream<Item = Result<EchoResponse, Status>> + Send>>;

struct TonicEcho;

#[tonic::async_trait]
impl Echo for TonicEcho {
    async fn unary_echo(
        &self,
        request: Request<EchoRequest>,
    ) -> Result<Response<EchoResponse>, Status> {
        Ok(Response::new(EchoResponse {
            message: request.into_inner().message,
        }))
    }

    type ServerStreamingEchoStream = ResponseStream;
    /// The message back `x-repeat` times (metadata; 10 by default), as
    /// sinew-examples' echo service does.
    async fn server_streaming_echo(
        &self,
        request: Request<EchoRequest>,
    ) -> Result<Response<ResponseStream>, Status> {
        let repeat = match request.metadata().get("x-repeat") {
            None => 10,
            Some(value) => value
                .to_str()
                .ok()
                .and_then(|text| text.parse::<usize>().ok())
                .filter(|&n| n <= 1_000_000)
                .ok_or_else(|| Status::invalid_argument("x-repeat must be 0 to 1000000"))?,
        };
        let message = request.into_inner().message;
        let stream = futures_util::stream::iter(0..repeat).map(move |_| {
            Ok(EchoResponse {
                message: message.clone(),
            })
        });
        Ok(Response::new(Box::pin(stream) as ResponseStream))
    }

    async fn client_streaming_echo(
        &self,
        _: Request<tonic::Streaming<EchoRequest>>,
    ) -> Result<Response<EchoResponse>, Status> {
        Err(Status::unimplemented("not benchmarked"))
    }

    type BidirectionalStreamingEchoStream = ResponseStream;
    async fn bidirectional_streaming_echo(
        &self,
        _: Request<tonic::Streaming<EchoRequest>>,
    ) -> Result<Response<ResponseStream>, Status> {
        Err(Status::unimplemented("not benchmarked"))
    }
}

/// tonic's client making the echo call of a cell: the string echo, or the
/// bytes echo of the `bytes` cells.
#[derive(Clone)]
pub(crate) enum TonicCaller {
    Text {
        client: EchoClient<Channel>,
        payload: String,
    },
    Bytes {
        client: BlobEchoClient<Channel>,
        payload: Bytes,
    },
}

impl TonicCaller {
    /// The caller of `cell`'s echo on `channel`.
    pub(crate) fn new(channel: Channel, cell: Cell) -> TonicCaller {
        const LIMIT: usize = 8 << 20;
        if cell.bytes {
            TonicCaller::Bytes {
                client: BlobEchoClient::new(channel).max_decoding_message_size(LIMIT),
                payload: super::payload_bytes(cell.payload),
            }
        } else {
            TonicCaller::Text {
                client: EchoClient::new(channel).max_decoding_message_size(LIMIT),
                payload: super::payload(cell.payload),
            }
        }
    }
}

impl Caller for TonicCaller {
    async fn call(&self) -> anyhow::Result<()> {
        match self {
            TonicCaller::Text { client, payload } => {
                let reply = client
                    .clone()
                    .unary_echo(EchoRequest {
                        message: payload.clone(),
                    })
                    .await?;
                anyhow::ensure!(reply.get_ref().message == *payload, "wrong echo");
            }
            TonicCaller::Bytes { client, payload } => {
                let reply = client
                    .clone()
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

/// tonic's client opening server streams of the echo.
#[derive(Clone)]
pub(crate) struct TonicStreamer {
    client: EchoClient<Channel>,
    payload: String,
}

impl Streamer for TonicStreamer {
    async fn open(&self, repeat: u32) -> anyhow::Result<BoxStream<'static, anyhow::Result<()>>> {
        let mut client = self.client.clone();
        let mut request = Request::new(EchoRequest {
            message: self.payload.clone(),
        });
        request
            .metadata_mut()
            .insert("x-repeat", repeat.to_string().parse()?);
        let stream = client.server_streaming_echo(request).await?.into_inner();
        let messages = stream.map(|item| Ok(item?.message));
        Ok(checked_echoes(messages, self.payload.clone()))
    }
}

/// tonic's client, on one connection, streaming from the gRPC server at
/// `address`.
pub(crate) fn streamer(
    runtimes: &Runtimes,
    address: std::net::SocketAddr,
    payload: usize,
) -> anyhow::Result<TonicStreamer> {
    let cell = Cell::closed(crate::systems::System::Tonic, payload, 1, 1);
    let callers = caller(runtimes, address, cell)?;
    let TonicCaller::Text { client, payload } = callers.callers()[0].clone() else {
        unreachable!("a string cell has a string caller");
    };
    Ok(TonicStreamer { client, payload })
}

/// HTTP/2 settings of a tonic row.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Tuning {
    /// hyper's defaults, as a tonic user gets them.
    Default,
    /// sinew's flow-control windows and frame size.
    Sinew,
}

impl Tuning {
    const STREAM_WINDOW: u32 = 1 << 20;
    const CONNECTION_WINDOW: u32 = 8 << 20;
    const FRAME_SIZE: u32 = 4 << 20;
}

/// tonic's client, as configured for the `tonic` row, for a gRPC server at
/// `address`: the cell's connections, each a `Channel` of its own.
pub(crate) fn caller(
    runtimes: &Runtimes,
    address: std::net::SocketAddr,
    cell: Cell,
) -> anyhow::Result<OverConnections<TonicCaller>> {
    caller_tuned(runtimes, address, cell, Tuning::Default)
}

/// tonic's client with `tuning`.
pub(crate) fn caller_tuned(
    runtimes: &Runtimes,
    address: std::net::SocketAddr,
    cell: Cell,
    tuning: Tuning,
) -> anyhow::Result<OverConnections<TonicCaller>> {
    let callers = runtimes.client.block_on(async {
        let mut callers = Vec::with_capacity(cell.connections);
        for _ in 0..cell.connections {
            let mut endpoint =
                tonic::transport::Endpoint::from_shared(format!("http://{address}"))?
                    .tcp_nodelay(true);
            if tuning == Tuning::Sinew {
                endpoint = endpoint
                    .initial_stream_window_size(Tuning::STREAM_WINDOW)
                    .initial_connection_window_size(Tuning::CONNECTION_WINDOW)
                    .max_frame_size(Tuning::FRAME_SIZE);
            }
            callers.push(TonicCaller::new(endpoint.connect().await?, cell));
        }
        Ok::<_, anyhow::Error>(callers)
    })?;
    Ok(OverConnections::new(callers))
}

pub(crate) fn run(
    runtimes: &Runtimes,
    plan: &Plan,
    cell: Cell,
    tuning: Tuning,
) -> anyhow::Result<Stats> {
    let server = start_tuned(runtimes, tuning)?;
    let caller = caller_tuned(runtimes, server.address, cell, tuning)?;
    let stats = drive(runtimes, plan, cell, caller);
    server.stop()?;
    Ok(stats)
}

/// tonic's echo server on the server runtime (for this row, and for h2load).
pub(crate) fn start(runtimes: &Runtimes) -> anyhow::Result<RunningServer<'_>> {
    start_tuned(runtimes, Tuning::Default)
}

/// tonic's echo server with `tuning`.
pub(crate) fn start_tuned(
    runtimes: &Runtimes,
    tuning: Tuning,
) -> anyhow::Result<RunningServer<'_>> {
    start_with(runtimes, tuning, false)
}

/// The `tonic-tls` row: tonic's server and client over TLS.
pub(crate) fn run_tls(runtimes: &Runtimes, plan: &Plan, cell: Cell) -> anyhow::Result<Stats> {
    let server = start_with(runtimes, Tuning::Default, true)?;
    let pki = super::tls::pki();
    let address = server.address;
    let callers = runtimes.client.block_on(async {
        let mut callers = Vec::with_capacity(cell.connections);
        for _ in 0..cell.connections {
            let tls = tonic::transport::ClientTlsConfig::new()
                .ca_certificate(tonic::transport::Certificate::from_pem(&pki.ca_pem))
                .domain_name("localhost");
            let endpoint = tonic::transport::Endpoint::from_shared(format!("https://{address}"))?
                .tcp_nodelay(true)
                .tls_config(tls)?;
            callers.push(TonicCaller::new(endpoint.connect().await?, cell));
        }
        Ok::<_, anyhow::Error>(callers)
    })?;
    let stats = drive(runtimes, plan, cell, OverConnections::new(callers));
    server.stop()?;
    Ok(stats)
}

fn start_with(runtimes: &Runtimes, tuning: Tuning, tls: bool) -> anyhow::Result<RunningServer<'_>> {
    let tls = tls.then(|| {
        let pki = super::tls::pki();
        tonic::transport::ServerTlsConfig::new().identity(tonic::transport::Identity::from_pem(
            &pki.chain_pem,
            &pki.key_pem,
        ))
    });
    let listener = runtimes
        .server
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))?;
    let address = listener.local_addr()?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let serving = runtimes.server.spawn(async move {
        let incoming = futures_util::stream::unfold(listener, |listener| async move {
            let accepted = listener.accept().await.map(|(stream, _)| {
                let _ = stream.set_nodelay(true);
                stream
            });
            Some((accepted, listener))
        });
        let mut builder = tonic::transport::Server::builder().tcp_nodelay(true);
        if let Some(tls) = tls {
            builder = builder.tls_config(tls)?;
        }
        if tuning == Tuning::Sinew {
            builder = builder
                .initial_stream_window_size(Tuning::STREAM_WINDOW)
                .initial_connection_window_size(Tuning::CONNECTION_WINDOW)
                .max_frame_size(Tuning::FRAME_SIZE);
        }
        builder
            .add_service(EchoServer::new(TonicEcho).max_decoding_message_size(8 << 20))
            .add_service(BlobEchoServer::new(TonicBlobEcho).max_decoding_message_size(8 << 20))
            .serve_with_incoming_shutdown(incoming, async {
                let _ = stopped.await;
            })
            .await
    });
    Ok(RunningServer::in_process(address, move || {
        let _ = stop.send(());
        runtimes.server.block_on(serving)??;
        Ok(())
    }))
}

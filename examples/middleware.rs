//! Layers on both sides of a call: a client with a timeout, a concurrency
//! limit and a logging layer; a server with an authentication interceptor and
//! a layer that records every call's final status and duration.
//!
//! ```text
//! cargo run --example middleware
//! ```
//!
//! Both sides are tower services, so these are ordinary tower layers: the
//! client's work the same over every transport and over gRPC, and the
//! server's see every call whatever protocol carried it (here sinew's own and
//! gRPC, on one port), health and reflection included.

use sinew::rpc::call::{CallRequest, CallResponse, ResponseBody, ResponseFrame};
use sinew::rpc::server::{ServerCall, ServerStack};
use sinew::{Code, Request, Server, Status};
use sinew_examples::echo::{
    echo_client::EchoClient, echo_server::EchoServer, EchoRequest, EchoService,
};
use sinew_tests::testing::{testing_client::TestingClient, testing_server::TestingServer};
use sinew_tests::testing::{SleepRequest, TestingService};
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tower::{Layer, Service, ServiceBuilder};

/// The token the server wants in `authorization`.
const TOKEN: &str = "Bearer let-me-in";

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // The server: authentication first (the outermost layer), then a record
    // of every call that got past it.
    let records = Records::default();
    let server = Server::builder()
        .interceptor(
            |call: &mut ServerCall| match call.metadata().get("authorization") {
                Some(TOKEN) => Ok(()),
                _ => Err(Status::unauthenticated("missing or wrong token")),
            },
        )
        .layer(RecordLayer(records.clone()))
        .add_service(EchoServer::new(EchoService))
        .add_service(TestingServer::new(TestingService::default()))
        .add_protocol(sinew::grpc::GrpcProtocol::default())
        .bind(["tcp://127.0.0.1:0"])
        .await?;
    let address = server.local_addresses()[0].to_string();
    let handle = server.handle();
    let serving = tokio::spawn(server.serve());
    println!("server on {address} (sinew and gRPC)");

    // The client: a logging layer outermost (it sees what the caller sees),
    // then a timeout and a limit on calls in flight, around the channel.
    let channel = sinew::connect(&address).await?;
    let layered = ServiceBuilder::new()
        .layer(LogLayer)
        .timeout(Duration::from_millis(300))
        .concurrency_limit(16)
        .service(channel);
    let echo = EchoClient::new(layered.clone());

    let mut request = Request::new(EchoRequest {
        message: "hello".into(),
    });
    request.metadata_mut().insert("authorization", TOKEN)?;
    let reply = echo.unary_echo(request).await?;
    println!("echo: {}", reply.into_inner().message);

    // Without the token: refused before any handler runs, over both protocols.
    let refused = echo
        .unary_echo(EchoRequest {
            message: "no token".into(),
        })
        .await
        .unwrap_err();
    println!("without a token over sinew: {refused}");
    assert_eq!(refused.code(), Code::Unauthenticated);
    let grpc_address = address.replace("tcp://", "grpc://");
    let over_grpc = EchoClient::connect(&grpc_address).await?;
    let refused = over_grpc
        .unary_echo(EchoRequest {
            message: "no token".into(),
        })
        .await
        .unwrap_err();
    println!("without a token over gRPC:  {refused}");
    assert_eq!(refused.code(), Code::Unauthenticated);

    // A call slower than the client's 300 ms timeout layer: DEADLINE_EXCEEDED.
    let testing = TestingClient::new(layered);
    let mut slow = Request::new(SleepRequest { millis: 2_000 });
    slow.metadata_mut().insert("authorization", TOKEN)?;
    let late = testing.sleep(slow).await.unwrap_err();
    println!("a 2 s call through a 300 ms timeout layer: {late}");
    assert_eq!(late.code(), Code::DeadlineExceeded);

    handle.shutdown();
    serving.await?;
    println!("\nthe server's record (only calls that passed authentication):");
    for (path, code, took) in records.0.lock().unwrap().iter() {
        println!("  {path:<48} {code:<20} {took:?}");
    }
    Ok(())
}

// ---- Client side: a logging layer. ----

/// Logs every call's path, then its final status and duration, as the caller
/// sees them.
#[derive(Clone, Copy)]
struct LogLayer;

impl<S> Layer<S> for LogLayer {
    type Service = Log<S>;
    fn layer(&self, inner: S) -> Log<S> {
        Log { inner }
    }
}

#[derive(Clone)]
struct Log<S> {
    inner: S,
}

impl<S> Service<CallRequest> for Log<S>
where
    S: Service<CallRequest, Response = CallResponse>,
    S::Error: Into<sinew::rpc::call::BoxError>,
    S::Future: Send + 'static,
{
    type Response = CallResponse;
    type Error = Status;
    type Future = Pin<Box<dyn Future<Output = Result<CallResponse, Status>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Status>> {
        self.inner
            .poll_ready(cx)
            .map_err(|error| Status::from_error(error.into()))
    }

    fn call(&mut self, request: CallRequest) -> Self::Future {
        let path = request.path().to_string();
        let started = Instant::now();
        let response = self.inner.call(request);
        Box::pin(async move {
            match response.await {
                Err(error) => {
                    let status = Status::from_error(error.into());
                    println!(
                        "[client] {path} -> {} after {:?}",
                        status.code(),
                        started.elapsed()
                    );
                    Err(status)
                }
                Ok(response) => {
                    // The final status comes at the end of the body: watch for it.
                    let (headers, body, extensions) = response.into_parts();
                    let body =
                        ResponseBody::new(futures_util::StreamExt::inspect(body, move |frame| {
                            if let ResponseFrame::Status(status) = frame {
                                println!(
                                    "[client] {path} -> {} after {:?}",
                                    status.code(),
                                    started.elapsed()
                                );
                            }
                        }));
                    Ok(CallResponse::from_parts(headers, body, extensions))
                }
            }
        })
    }
}

// ---- Server side: a layer that records each call's status and duration. ----

/// What the server did: (path, final status code, duration) per call.
#[derive(Clone, Default)]
struct Records(Arc<Mutex<Vec<(String, Code, Duration)>>>);

struct RecordLayer(Records);

impl Layer<ServerStack> for RecordLayer {
    type Service = Record;
    fn layer(&self, inner: ServerStack) -> Record {
        Record {
            inner,
            records: self.0.clone(),
        }
    }
}

#[derive(Clone)]
struct Record {
    inner: ServerStack,
    records: Records,
}

impl Service<ServerCall> for Record {
    type Response = Status;
    type Error = Status;
    type Future = Pin<Box<dyn Future<Output = Result<Status, Status>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Status>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, call: ServerCall) -> Self::Future {
        let path = call.path().to_owned();
        let started = Instant::now();
        let outcome = self.inner.call(call);
        let records = self.records.clone();
        Box::pin(async move {
            // Ok: the status the call ended with (a handler's error too);
            // Err: a layer below failed the call. The record takes either.
            let outcome = outcome.await;
            let code = match &outcome {
                Ok(status) | Err(status) => status.code(),
            };
            records
                .0
                .lock()
                .unwrap()
                .push((path, code, started.elapsed()));
            outcome
        })
    }
}

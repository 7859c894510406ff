//! Layers around every call, against a real server: the order of server and
//! client layers, interceptors (over sinew's protocol and gRPC, for health and
//! reflection too), per-call extensions and the peer, the final status a layer
//! sees however a call ends, and tower's own layers used as server layers.

mod common;

use common::{eventually, sleep, TestServer};
use futures_util::future::BoxFuture;
use sinew::rpc::server::health::v1::{health_client::HealthClient, HealthCheckRequest};
use sinew::rpc::server::reflection::v1::{
    server_reflection_client::ServerReflectionClient, server_reflection_request::MessageRequest,
    ServerReflectionRequest,
};
use sinew::rpc::server::{MethodDescriptor, MethodKind, ServerCall, ServiceDescriptor};
use sinew::rpc::CallRequest;
use sinew::transport::Address;
use sinew::{Channel, Code, Request, Response, Status};
use sinew_tests::testing::{
    testing_client::TestingClient, Counters, FailRequest, MetadataList, SleepRequest,
};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

const SLEEP: &str = "/sinew.testing.Testing/Sleep";

/// Entries that layers (running in the server's tasks) push and a test reads.
type Log<T> = Arc<Mutex<Vec<T>>>;

/// Takes everything logged so far.
fn take<T>(log: &Log<T>) -> Vec<T> {
    std::mem::take(&mut *log.lock().unwrap())
}

fn logged<T>(log: &Log<T>) -> usize {
    log.lock().unwrap().len()
}

type Before = Arc<dyn Fn(&mut ServerCall) + Send + Sync>;
type After = Arc<dyn Fn(&str, &Status) + Send + Sync>;

/// A server layer that watches calls go by: `before` sees each call on its way
/// in (and may change it), `after` its path and the status it ended with,
/// whether the inner stack answered it (`Ok`) or failed it (`Err`).
#[derive(Clone)]
struct Observe {
    before: Before,
    after: After,
}

impl Observe {
    fn new(
        before: impl Fn(&mut ServerCall) + Send + Sync + 'static,
        after: impl Fn(&str, &Status) + Send + Sync + 'static,
    ) -> Observe {
        Observe {
            before: Arc::new(before),
            after: Arc::new(after),
        }
    }

    /// Logs `<name>-in` and `<name>-out`.
    fn named(name: &'static str, log: &Log<String>) -> Observe {
        let (way_in, way_out) = (log.clone(), log.clone());
        Observe::new(
            move |_| way_in.lock().unwrap().push(format!("{name}-in")),
            move |_, _| way_out.lock().unwrap().push(format!("{name}-out")),
        )
    }

    /// Logs every call's path and final status code.
    fn recording(log: &Log<(String, Code)>) -> Observe {
        let log = log.clone();
        Observe::new(
            |_| {},
            move |path, status| log.lock().unwrap().push((path.to_owned(), status.code())),
        )
    }
}

impl<S> tower::Layer<S> for Observe {
    type Service = Observed<S>;

    fn layer(&self, inner: S) -> Observed<S> {
        Observed {
            inner,
            hooks: self.clone(),
        }
    }
}

#[derive(Clone)]
struct Observed<S> {
    inner: S,
    hooks: Observe,
}

impl<S> tower::Service<ServerCall> for Observed<S>
where
    S: tower::Service<ServerCall, Response = Status, Error = Status>,
    S::Future: Send + 'static,
{
    type Response = Status;
    type Error = Status;
    type Future = BoxFuture<'static, Result<Status, Status>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Status>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut call: ServerCall) -> Self::Future {
        (self.hooks.before)(&mut call);
        let path = call.path().to_owned();
        let after = self.hooks.after.clone();
        let future = self.inner.call(call);
        Box::pin(async move {
            let result = future.await;
            let (Ok(status) | Err(status)) = &result;
            after(&path, status);
            result
        })
    }
}

/// A server with the gRPC bridge and `configure`'s layers, and a channel to it
/// over sinew's TCP and one over gRPC.
async fn server_and_channels(
    configure: impl FnOnce(sinew::rpc::ServerBuilder) -> sinew::rpc::ServerBuilder,
) -> (TestServer, [(&'static str, Channel); 2]) {
    let server = TestServer::start_with(|builder| {
        configure(builder.add_protocol(sinew_grpc::GrpcProtocol::default()))
    })
    .await;
    let channels = [
        ("sinew over TCP", server.channel(&server.tcp).await),
        ("gRPC", server.grpc_channel().await),
    ];
    (server, channels)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_layers_nest_in_the_order_added_the_first_outermost() {
    let log = Log::default();
    let (server, channels) = server_and_channels(|builder| {
        builder
            .layer(Observe::named("A", &log))
            .layer(Observe::named("B", &log))
    })
    .await;
    for (protocol, channel) in channels {
        TestingClient::new(channel)
            .sleep(sleep(0, None))
            .await
            .unwrap();
        // The way out ends once the status is sent, perhaps after the client
        // has its answer.
        eventually(Duration::from_secs(5), "both layers saw the end", || {
            logged(&log) >= 4
        })
        .await;
        assert_eq!(
            take(&log),
            ["A-in", "B-in", "B-out", "A-out"],
            "over {protocol}"
        );
    }
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_layers_run_outermost_first() {
    let (server, channels) = server_and_channels(|builder| builder).await;
    for (protocol, channel) in channels {
        let service = tower::ServiceBuilder::new()
            .map_request(|mut call: CallRequest| {
                call.metadata_mut().append("x-trace", "a").unwrap();
                call
            })
            .map_request(|mut call: CallRequest| {
                call.metadata_mut().append("x-trace", "b").unwrap();
                call
            })
            .service(channel);
        let seen = TestingClient::new(service)
            .metadata(())
            .await
            .unwrap()
            .into_inner();
        let traces: Vec<&[u8]> = seen
            .keys
            .iter()
            .zip(&seen.values)
            .filter(|(key, _)| *key == "x-trace")
            .map(|(_, value)| value.as_slice())
            .collect();
        assert_eq!(traces, [b"a", b"b"], "over {protocol}: {seen:?}");
    }
    server.shutdown().await;
}

/// The interceptor of the authentication tests.
fn require_bearer_secret(call: &mut ServerCall) -> Result<(), Status> {
    match call.metadata().get("authorization") {
        Some("Bearer secret") => Ok(()),
        _ => Err(Status::unauthenticated("a valid bearer token is required")),
    }
}

fn authorized<T>(message: T) -> Request<T> {
    let mut request = Request::new(message);
    request
        .metadata_mut()
        .insert("authorization", "Bearer secret")
        .unwrap();
    request
}

/// Lists services by reflection, with the token or without; the status if the
/// call fails, at its start or in its response stream.
async fn list_services(client: &ServerReflectionClient, with_token: bool) -> Result<(), Status> {
    let question = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let questions = futures_util::stream::iter([question]);
    let request = if with_token {
        authorized(questions)
    } else {
        Request::new(questions)
    };
    let mut answers = client.server_reflection_info(request).await?.into_inner();
    while answers.message().await?.is_some() {}
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interceptor_refuses_calls_without_a_token_over_every_protocol() {
    let (server, channels) =
        server_and_channels(|builder| builder.interceptor(require_bearer_secret)).await;
    let started = || Counters::get(&server.counters.sleeps_started);
    for (protocol, channel) in channels {
        let testing = TestingClient::new(channel.clone());
        let before = started();
        let refused = testing.sleep(sleep(0, None)).await.unwrap_err();
        assert_eq!(
            refused.code(),
            Code::Unauthenticated,
            "over {protocol}: {refused}"
        );
        assert!(
            refused.message().contains("bearer token"),
            "over {protocol}: {refused}"
        );
        assert_eq!(started(), before, "the handler never ran, over {protocol}");

        let mut wrong = sleep(0, None);
        wrong
            .metadata_mut()
            .insert("authorization", "Bearer guess")
            .unwrap();
        let refused = testing.sleep(wrong).await.unwrap_err();
        assert_eq!(refused.code(), Code::Unauthenticated, "over {protocol}");

        testing
            .sleep(authorized(SleepRequest { millis: 0 }))
            .await
            .unwrap();
        assert_eq!(started(), before + 1, "over {protocol}");

        // The services every server has go through the interceptor too.
        let health = HealthClient::new(channel.clone());
        let check = || HealthCheckRequest {
            service: String::new(),
        };
        let refused = health.check(check()).await.unwrap_err();
        assert_eq!(
            refused.code(),
            Code::Unauthenticated,
            "health over {protocol}: {refused}"
        );
        health.check(authorized(check())).await.unwrap();

        let reflection = ServerReflectionClient::new(channel.clone());
        let refused = list_services(&reflection, false).await.unwrap_err();
        assert_eq!(
            refused.code(),
            Code::Unauthenticated,
            "reflection over {protocol}: {refused}"
        );
        list_services(&reflection, true).await.unwrap();

        // Unknown methods too: refused before anyone finds out they are unknown.
        let unknown = sinew::Client::new(channel)
            .unary::<_, ()>("/sinew.testing.Testing/Nope", Request::new(()))
            .await
            .unwrap_err();
        assert_eq!(unknown.code(), Code::Unauthenticated, "over {protocol}");
    }
    server.shutdown().await;
}

/// What the interceptor of the extension tests learnt about a caller.
#[derive(Clone, Debug, PartialEq)]
struct Tenant(&'static str);

/// A hand-written service whose one method answers with what its handler
/// found in its request's extensions and peer (as a `MetadataList`).
struct Inspect;

static INSPECT_METHODS: [MethodDescriptor; 1] = [MethodDescriptor {
    name: "Inspect",
    path: "/sinew.tests.Inspect/Inspect",
    kind: MethodKind::Unary,
    input_type: "google.protobuf.Empty",
    output_type: "sinew.testing.MetadataList",
}];

static INSPECT: ServiceDescriptor = ServiceDescriptor {
    name: "sinew.tests.Inspect",
    methods: &INSPECT_METHODS,
    file_descriptor_set: &[],
};

impl sinew::rpc::Service for Inspect {
    fn descriptor(&self) -> &'static ServiceDescriptor {
        &INSPECT
    }

    fn call(&self, _method: usize, call: ServerCall) -> BoxFuture<'static, Status> {
        Box::pin(sinew::rpc::server::call::unary(
            call,
            |request: Request<()>| async move {
                let mut found = MetadataList::default();
                if let Some(Tenant(tenant)) = request.extensions().get::<Tenant>() {
                    found.keys.push("tenant".to_owned());
                    found.values.push(tenant.as_bytes().to_vec());
                }
                if let Some(address) = request.peer().and_then(|peer| peer.address()) {
                    found.keys.push("peer".to_owned());
                    found.values.push(address.to_string().into_bytes());
                }
                Ok(Response::new(found))
            },
        ))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interceptor_passes_extensions_to_inner_layers_and_the_handler() {
    type Seen = (Option<Tenant>, Option<sinew::rpc::server::Peer>);
    let seen: Log<Seen> = Log::default();
    let inner = seen.clone();
    let server = TestServer::start_with(|builder| {
        builder
            .add_protocol(sinew_grpc::GrpcProtocol::default())
            .add_service(Inspect)
            .interceptor(|call: &mut ServerCall| {
                call.extensions_mut().insert(Tenant("acme"));
                Ok(())
            })
            .layer(Observe::new(
                move |call| {
                    let tenant = call.extensions().get::<Tenant>().cloned();
                    inner.lock().unwrap().push((tenant, call.peer().cloned()));
                },
                |_, _| {},
            ))
    })
    .await;

    let channel = server.channel(&server.tcp).await;
    TestingClient::new(channel.clone())
        .sleep(sleep(0, None))
        .await
        .unwrap();
    let [(tenant, peer)] = <[Seen; 1]>::try_from(take(&seen)).unwrap();
    assert_eq!(tenant, Some(Tenant("acme")));
    let peer = peer.expect("a TCP call has a peer");
    match peer.address() {
        Some(Address::Tcp { .. }) => {
            let text = peer.address().unwrap().to_string();
            assert!(text.starts_with("tcp://127.0.0.1:"), "{text}");
        }
        other => panic!("a TCP peer has a TCP address, not {other:?}"),
    }

    // Over a Unix socket and shared memory the peer is this very process.
    for (transport, address) in [("Unix socket", &server.unix), ("shm", &server.shm)] {
        let channel = server.channel(address).await;
        TestingClient::new(channel)
            .sleep(sleep(0, None))
            .await
            .unwrap();
        let [(tenant, peer)] = <[Seen; 1]>::try_from(take(&seen)).unwrap();
        assert_eq!(tenant, Some(Tenant("acme")), "over {transport}");
        let peer = peer.unwrap_or_else(|| panic!("a call over {transport} has a peer"));
        assert_eq!(
            peer.process_id(),
            Some(std::process::id()),
            "over {transport}: {peer:?}"
        );
    }

    // Over gRPC, the peer is the TCP client of the HTTP/2 connection.
    TestingClient::new(server.grpc_channel().await)
        .sleep(sleep(0, None))
        .await
        .unwrap();
    let [(tenant, peer)] = <[Seen; 1]>::try_from(take(&seen)).unwrap();
    assert_eq!(tenant, Some(Tenant("acme")), "over gRPC");
    let peer = peer.expect("a gRPC call has a peer");
    assert!(
        matches!(peer.address(), Some(Address::Tcp { .. })),
        "over gRPC: {peer:?}"
    );

    // And the handler gets the extension and the peer in its request.
    let found = sinew::Client::new(channel)
        .unary::<_, MetadataList>("/sinew.tests.Inspect/Inspect", Request::new(()))
        .await
        .unwrap()
        .into_inner();
    let value = |key: &str| {
        found
            .keys
            .iter()
            .position(|k| k == key)
            .map(|i| String::from_utf8_lossy(&found.values[i]).into_owned())
    };
    assert_eq!(value("tenant").as_deref(), Some("acme"), "{found:?}");
    let peer = value("peer").expect("the handler sees the peer's address");
    assert!(peer.starts_with("tcp://127.0.0.1:"), "{peer}");
    server.shutdown().await;
}

/// Waits for the recording layer to log exactly one call, and returns it.
async fn one_recorded(log: &Log<(String, Code)>, what: &str) -> (String, Code) {
    eventually(Duration::from_secs(10), what, || logged(log) >= 1).await;
    let mut recorded = take(log);
    assert_eq!(recorded.len(), 1, "{what}: {recorded:?}");
    recorded.remove(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_layer_sees_the_final_status_however_the_call_ends() {
    let log = Log::default();
    let (server, channels) =
        server_and_channels(|builder| builder.layer(Observe::recording(&log))).await;
    let started = || Counters::get(&server.counters.sleeps_started);
    for (protocol, channel) in channels {
        let testing = TestingClient::new(channel.clone());
        let status = testing.panic(()).await.unwrap_err();
        assert_eq!(status.code(), Code::Internal, "over {protocol}: {status}");
        assert_eq!(
            one_recorded(&log, "the panic").await,
            ("/sinew.testing.Testing/Panic".to_owned(), Code::Internal),
            "over {protocol}"
        );

        let status = testing
            .sleep(sleep(5_000, Some(Duration::from_millis(50))))
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::DeadlineExceeded, "over {protocol}");
        // Whichever clock ran out first (the client's reset or the server's
        // own deadline), the layer sees the deadline.
        let (path, code) = one_recorded(&log, "the deadline").await;
        assert_eq!(path, SLEEP, "over {protocol}");
        assert_eq!(code, Code::DeadlineExceeded, "over {protocol}");

        let before = started();
        let cancelled = testing.clone();
        let call = tokio::spawn(async move { cancelled.sleep(sleep(30_000, None)).await });
        eventually(Duration::from_secs(5), "the sleep started", || {
            started() == before + 1
        })
        .await;
        call.abort();
        assert_eq!(
            one_recorded(&log, "the cancellation").await,
            (SLEEP.to_owned(), Code::Cancelled),
            "over {protocol}"
        );

        let path = "/sinew.testing.Testing/Nope";
        let status = sinew::Client::new(channel.clone())
            .unary::<_, ()>(path, Request::new(()))
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::Unimplemented, "over {protocol}");
        assert_eq!(
            one_recorded(&log, "the unknown method").await,
            (path.to_owned(), Code::Unimplemented),
            "over {protocol}"
        );

        let status = testing
            .fail(FailRequest {
                code: Code::NotFound as u32,
                message: "no such thing".to_owned(),
            })
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::NotFound, "over {protocol}");
        assert_eq!(
            one_recorded(&log, "the handler's error").await,
            ("/sinew.testing.Testing/Fail".to_owned(), Code::NotFound),
            "over {protocol}"
        );
    }
    server.shutdown().await;
}

/// The client's deadline and the server's race on every call (the client's
/// clock starts first): a sinew client's reset says DEADLINE_EXCEEDED, and a
/// gRPC client's reset (which says nothing) at the deadline counts as the
/// deadline too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_passing_deadline_is_recorded_as_deadline_exceeded() {
    let log = Log::default();
    let (server, channels) =
        server_and_channels(|builder| builder.layer(Observe::recording(&log))).await;
    let mut cancelled = Vec::new();
    for (protocol, channel) in channels {
        let testing = TestingClient::new(channel);
        let mut count = 0;
        for _ in 0..40 {
            let status = testing
                .sleep(sleep(5_000, Some(Duration::from_millis(50))))
                .await
                .unwrap_err();
            assert_eq!(status.code(), Code::DeadlineExceeded, "over {protocol}");
            let (_, code) = one_recorded(&log, "the deadline").await;
            if code != Code::DeadlineExceeded {
                assert_eq!(code, Code::Cancelled, "over {protocol}");
                count += 1;
            }
        }
        cancelled.push((protocol, count));
    }
    assert!(
        cancelled.iter().all(|&(_, count)| count == 0),
        "calls of 40 recorded CANCELLED: {cancelled:?}"
    );
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_layer_sees_the_drain_deadline_end_a_straggler_with_unavailable() {
    let log = Log::default();
    let (server, channels) = server_and_channels(|builder| {
        builder
            .drain_timeout(Duration::from_millis(200))
            .layer(Observe::recording(&log))
    })
    .await;
    let mut calls = Vec::new();
    for (protocol, channel) in channels {
        let testing = TestingClient::new(channel);
        calls.push((
            protocol,
            tokio::spawn(async move { testing.sleep(sleep(60_000, None)).await }),
        ));
    }
    eventually(Duration::from_secs(5), "both sleeps started", || {
        Counters::get(&server.counters.sleeps_started) == 2
    })
    .await;
    let report = server.shutdown().await;
    for (protocol, call) in calls {
        let status = call.await.unwrap().unwrap_err();
        assert_eq!(
            status.code(),
            Code::Unavailable,
            "over {protocol}: {status}"
        );
    }
    eventually(Duration::from_secs(5), "both stragglers recorded", || {
        logged(&log) >= 2
    })
    .await;
    assert_eq!(
        take(&log),
        [
            (SLEEP.to_owned(), Code::Unavailable),
            (SLEEP.to_owned(), Code::Unavailable)
        ],
        "{report:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_concurrency_limit_as_a_server_layer_serializes_calls() {
    let in_flight = Arc::new(AtomicUsize::new(0));
    let most = Arc::new(AtomicUsize::new(0));
    let (entered, left, highest) = (in_flight.clone(), in_flight.clone(), most.clone());
    let server = TestServer::start_with(|builder| {
        builder
            .layer(tower::limit::ConcurrencyLimitLayer::new(1))
            // Inside the limit: counts the calls that got past it.
            .layer(Observe::new(
                move |_| {
                    let now = entered.fetch_add(1, Ordering::SeqCst) + 1;
                    highest.fetch_max(now, Ordering::SeqCst);
                },
                move |_, _| {
                    left.fetch_sub(1, Ordering::SeqCst);
                },
            ))
    })
    .await;
    let testing = TestingClient::new(server.channel(&server.tcp).await);
    let (first, second) = tokio::join!(
        testing.sleep(sleep(200, None)),
        testing.sleep(sleep(200, None))
    );
    first.unwrap();
    second.unwrap();
    assert_eq!(Counters::get(&server.counters.sleeps_finished), 2);
    assert_eq!(
        most.load(Ordering::SeqCst),
        1,
        "the calls ran one at a time"
    );
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn load_shedding_over_a_concurrency_limit_refuses_with_a_status() {
    let server = TestServer::start_with(|builder| {
        builder
            .layer(tower::load_shed::LoadShedLayer::new())
            .layer(tower::limit::ConcurrencyLimitLayer::new(1))
    })
    .await;
    let started = || Counters::get(&server.counters.sleeps_started);
    let testing = TestingClient::new(server.channel(&server.tcp).await);
    let busy = testing.clone();
    let occupying = tokio::spawn(async move { busy.sleep(sleep(30_000, None)).await });
    eventually(Duration::from_secs(5), "the first call started", || {
        started() == 1
    })
    .await;

    let shed = testing.sleep(sleep(0, None)).await.unwrap_err();
    println!(
        "a shed call ends with {shed:?}; marked not processed: {}",
        shed.is_not_processed()
    );
    assert_ne!(shed.code(), Code::Ok);
    assert!(
        shed.is_not_processed(),
        "a call shed before any handler ran reaches the client refused: {shed:?}"
    );
    assert!(
        matches!(shed.code(), Code::Unavailable | Code::ResourceExhausted),
        "{shed:?}"
    );
    assert_eq!(started(), 1, "the shed call's handler never ran");

    // Once the first call is gone (cancelled), calls go through again.
    occupying.abort();
    let mut admitted = None;
    for _ in 0..200 {
        match testing.sleep(sleep(0, None)).await {
            Ok(response) => {
                admitted = Some(response);
                break;
            }
            Err(status) => assert_eq!(status.code(), shed.code(), "{status:?}"),
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(
        admitted.is_some(),
        "a call went through after the first ended"
    );
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timeout_as_a_server_layer_ends_the_call_and_cancels_the_handler() {
    let log = Log::default();
    let server = TestServer::start_with(|builder| {
        builder
            .layer(Observe::recording(&log))
            .layer(tower::timeout::TimeoutLayer::new(Duration::from_millis(
                100,
            )))
    })
    .await;
    let testing = TestingClient::new(server.channel(&server.tcp).await);
    let status = testing.sleep(sleep(30_000, None)).await.unwrap_err();
    assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");
    assert_eq!(
        one_recorded(&log, "the timed-out call").await,
        (SLEEP.to_owned(), Code::DeadlineExceeded)
    );
    eventually(Duration::from_secs(5), "the handler was cancelled", || {
        Counters::get(&server.counters.sleeps_cancelled) == 1
    })
    .await;
    server.shutdown().await;
}

/// A layer that asks for each call's message tally sees the messages both
/// ways, whatever the call's shape and protocol: a client stream in, one
/// answer out; one request in, a stream out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_layer_tallies_the_messages_of_streaming_calls_both_ways() {
    use sinew_tests::testing::{Chunk, FloodRequest};
    let tallies: Log<Arc<sinew::rpc::call::MessageTally>> = Log::default();
    let recorded = tallies.clone();
    let (server, channels) = server_and_channels(move |builder| {
        builder.layer(Observe::new(
            move |call| recorded.lock().unwrap().push(call.tally_messages()),
            |_, _| {},
        ))
    })
    .await;
    for (protocol, channel) in channels {
        let client = TestingClient::new(channel);
        let chunks: Vec<Chunk> = (0..3)
            .map(|index| Chunk {
                data: vec![7; 100],
                index,
            })
            .collect();
        let chunk_size = sinew::prost::Message::encoded_len(&chunks[1]) as u64;
        let summary = client
            .sink(futures_util::stream::iter(chunks))
            .await
            .unwrap()
            .into_inner();
        let summary_size = sinew::prost::Message::encoded_len(&summary) as u64;
        let mut flood = client
            .flood(FloodRequest { count: 4, size: 50 })
            .await
            .unwrap()
            .into_inner();
        let mut sent = 0;
        while let Some(chunk) = flood.message().await.unwrap() {
            sent += sinew::prost::Message::encoded_len(&chunk) as u64;
        }
        let taken = take(&tallies);
        assert_eq!(taken.len(), 2, "{protocol}");
        // The first chunk has index 0, which is not encoded: two bytes less.
        assert_eq!(
            taken[0].received(),
            (3, 3 * chunk_size - 2),
            "{protocol}: the client stream"
        );
        assert_eq!(taken[0].sent(), (1, summary_size), "{protocol}");
        let request_size =
            sinew::prost::Message::encoded_len(&FloodRequest { count: 4, size: 50 }) as u64;
        assert_eq!(taken[1].received(), (1, request_size), "{protocol}");
        assert_eq!(taken[1].sent(), (4, sent), "{protocol}: the server stream");
    }
    server.shutdown().await;
}

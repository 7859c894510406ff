//! A trace across three servers, over sinew's protocol and gRPC: every
//! call's span is recorded by a real `tracing` subscriber, and each span's
//! parent is the span that made the call, in one trace; what a handler logs
//! carries the trace id; each process's metrics count its calls.
//!
//! test client ──sinew──▶ A ──gRPC──▶ B ──sinew──▶ C

use sinew::telemetry::{Telemetry, TraceContext};
use sinew::{Channel, Code, Request, Response, Server, Status};
use sinew_examples::echo::echo_client::EchoClient;
use sinew_examples::echo::echo_server::EchoServer;
use sinew_examples::echo::{EchoRequest, EchoResponse, UnaryEcho, WithUnary};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use tower::Layer;
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Subscriber};
use tracing_subscriber::layer::Context;
use tracing_subscriber::prelude::*;
use tracing_subscriber::registry::LookupSpan;

/// A span as the subscriber saw it: its name and its fields' final values.
#[derive(Clone, Debug, Default)]
struct SeenSpan {
    name: String,
    fields: HashMap<String, String>,
}

impl SeenSpan {
    fn field(&self, name: &str) -> &str {
        self.fields.get(name).map(String::as_str).unwrap_or("")
    }
}

/// An event and the trace id of the span it was logged in.
#[derive(Clone, Debug)]
struct SeenEvent {
    message: String,
    trace_id: Option<String>,
}

#[derive(Default)]
struct Seen {
    spans: Mutex<Vec<SeenSpan>>,
    events: Mutex<Vec<SeenEvent>>,
}

struct Fields<'a>(&'a mut HashMap<String, String>);

impl Visit for Fields<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().to_owned(), value.to_owned());
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0.insert(
            field.name().to_owned(),
            format!("{value:?}").trim_matches('"').to_owned(),
        );
    }
}

/// Records spans (when they close) and events, as any subscriber would.
struct Recorder(Arc<Seen>);

impl<S: Subscriber + for<'a> LookupSpan<'a>> tracing_subscriber::Layer<S> for Recorder {
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let mut span = SeenSpan {
            name: attrs.metadata().name().to_owned(),
            fields: HashMap::new(),
        };
        attrs.record(&mut Fields(&mut span.fields));
        ctx.span(id).unwrap().extensions_mut().insert(span);
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, ctx: Context<'_, S>) {
        let span = ctx.span(id).unwrap();
        let mut extensions = span.extensions_mut();
        let seen = extensions.get_mut::<SeenSpan>().unwrap();
        values.record(&mut Fields(&mut seen.fields));
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        let mut fields = HashMap::new();
        event.record(&mut Fields(&mut fields));
        let trace_id = ctx.event_scope(event).and_then(|scope| {
            scope.into_iter().find_map(|span| {
                let extensions = span.extensions();
                let seen = extensions.get::<SeenSpan>()?;
                seen.fields.get("trace_id").cloned()
            })
        });
        self.0.events.lock().unwrap().push(SeenEvent {
            message: fields.remove("message").unwrap_or_default(),
            trace_id,
        });
    }

    fn on_close(&self, id: Id, ctx: Context<'_, S>) {
        let span = ctx.span(&id).unwrap();
        let seen = span.extensions_mut().remove::<SeenSpan>();
        if let Some(seen) = seen {
            self.0.spans.lock().unwrap().push(seen);
        }
    }
}

fn seen() -> &'static Arc<Seen> {
    static SEEN: OnceLock<Arc<Seen>> = OnceLock::new();
    SEEN.get_or_init(|| {
        let seen = Arc::new(Seen::default());
        tracing_subscriber::registry()
            .with(Recorder(seen.clone()))
            .init();
        seen
    })
}

type NextClient = EchoClient<sinew::telemetry::client::ClientTelemetry<Channel>>;

/// A server of the chain: calls the next one with a fresh request, or, the
/// last, logs an event and answers with its trace context.
#[derive(Clone)]
struct Hop {
    next: Option<NextClient>,
}

impl UnaryEcho for Hop {
    async fn unary_echo(
        &self,
        request: Request<EchoRequest>,
    ) -> Result<Response<EchoResponse>, Status> {
        if let Some(next) = &self.next {
            return next
                .unary_echo(EchoRequest {
                    message: request.into_inner().message,
                })
                .await;
        }
        tracing::info!("the last hop answers");
        let context = TraceContext::current().ok_or_else(|| Status::internal("no context"))?;
        Ok(Response::new(EchoResponse {
            message: format!(
                "{} {} {}",
                context.trace_id(),
                context.span_id(),
                context.baggage("tenant").unwrap_or_default()
            ),
        }))
    }
}

/// Serves `hop` (sinew and gRPC on one TCP port) with `telemetry`'s layer.
async fn serve(hop: Hop, telemetry: &Telemetry) -> String {
    let server = Server::builder()
        .layer(telemetry.server_layer())
        .add_service(EchoServer::new(WithUnary(hop)))
        .add_protocol(sinew::grpc::GrpcProtocol::default())
        .bind(["tcp://127.0.0.1:0"])
        .await
        .unwrap();
    let address = server.local_addresses()[0].to_string();
    tokio::spawn(server.serve());
    address
}

/// A client of `address` (sinew, or gRPC for `grpc://`) behind `telemetry`'s
/// client layer.
async fn client(address: &str, telemetry: &Telemetry) -> NextClient {
    let channel = sinew::connect(address).await.unwrap();
    EchoClient::new(telemetry.client_layer(address).layer(channel))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_trace_crosses_sinew_and_grpc_hops_with_parent_links_intact() {
    let seen = seen();
    let (a, b, c, caller) = (
        Telemetry::new(),
        Telemetry::new(),
        Telemetry::new(),
        Telemetry::new(),
    );
    let c_address = serve(Hop { next: None }, &c).await;
    let b_address = serve(
        Hop {
            next: Some(client(&c_address, &b).await),
        },
        &b,
    )
    .await;
    let b_grpc = b_address.replacen("tcp://", "grpc://", 1);
    let a_address = serve(
        Hop {
            next: Some(client(&b_grpc, &a).await),
        },
        &a,
    )
    .await;
    let client = client(&a_address, &caller).await;

    // The caller's own context: a sampled root with baggage.
    let root = TraceContext::new_root(true)
        .with_baggage("tenant=acme%20corp")
        .unwrap();
    let answer = root
        .clone()
        .scope(client.unary_echo(EchoRequest {
            message: "hello".into(),
        }))
        .await
        .unwrap()
        .into_inner()
        .message;
    let parts: Vec<&str> = answer.splitn(3, ' ').collect();
    assert_eq!(
        parts[0],
        root.trace_id().to_string(),
        "C's trace is the caller's"
    );
    assert_eq!(parts[2], "acme corp", "the baggage travelled to C");

    // The spans of this trace, as the subscriber recorded them.
    let trace = root.trace_id().to_string();
    let spans: Vec<SeenSpan> = seen
        .spans
        .lock()
        .unwrap()
        .iter()
        .filter(|span| span.field("trace_id") == trace)
        .cloned()
        .collect();
    let names: Vec<&str> = spans.iter().map(|span| span.name.as_str()).collect();
    assert_eq!(
        names.iter().filter(|name| **name == "rpc.server").count(),
        3,
        "{names:?}"
    );
    assert_eq!(
        names.iter().filter(|name| **name == "rpc.client").count(),
        3,
        "{names:?}"
    );
    let by_id: HashMap<&str, &SeenSpan> = spans
        .iter()
        .map(|span| (span.field("span_id"), span))
        .collect();
    // Walk from C's server span to the caller's root: server, client,
    // server, client, server, client, root.
    let mut span = by_id[parts[1]];
    let mut path = vec![(span.name.clone(), span.field("rpc.system.name").to_owned())];
    loop {
        let parent = span.field("parent_span_id");
        if parent == root.span_id().to_string() {
            break;
        }
        span = by_id
            .get(parent)
            .unwrap_or_else(|| panic!("no span {parent} in the trace: {spans:#?}"));
        path.push((span.name.clone(), span.field("rpc.system.name").to_owned()));
    }
    let path: Vec<(&str, &str)> = path.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
    assert_eq!(
        path,
        [
            ("rpc.server", "sinew"), // C
            ("rpc.client", "sinew"), // B -> C
            ("rpc.server", "grpc"),  // B, reached over gRPC
            ("rpc.client", "sinew"), // A -> B
            ("rpc.server", "sinew"), // A
            ("rpc.client", "sinew"), // caller -> A
        ]
    );
    // Every hop passed the same request on and the same answer back: each
    // span counts one message each way, of those sizes.
    let request_size = sinew::prost::Message::encoded_len(&EchoRequest {
        message: "hello".into(),
    });
    let response_size = sinew::prost::Message::encoded_len(&EchoResponse {
        message: answer.clone(),
    });
    for span in &spans {
        assert_eq!(
            span.field("rpc.method"),
            "grpc.examples.echo.Echo/UnaryEcho"
        );
        assert_eq!(span.field("rpc.response.status_code"), "OK", "{span:?}");
        assert_eq!(span.field("rpc.service"), "grpc.examples.echo.Echo");
        assert_eq!(
            span.field("rpc.request.size"),
            request_size.to_string(),
            "{span:?}"
        );
        assert_eq!(
            span.field("rpc.response.size"),
            response_size.to_string(),
            "{span:?}"
        );
        assert_eq!(span.field("rpc.request.messages"), "1", "{span:?}");
        assert_eq!(span.field("rpc.response.messages"), "1", "{span:?}");
    }
    let server_a = spans
        .iter()
        .find(|span| span.name == "rpc.server" && !span.field("parent_span_id").is_empty())
        .unwrap();
    assert!(server_a
        .field("network.peer.address")
        .starts_with("tcp://127.0.0.1:"));

    // What the last handler logged carries the trace id (the other test's
    // last hop logs the same line, in its own trace).
    let events = seen.events.lock().unwrap().clone();
    assert!(
        events
            .iter()
            .any(|event| event.message == "the last hop answers"
                && event.trace_id.as_deref() == Some(trace.as_str())),
        "{events:#?}"
    );

    // Each process counted its calls: A served one over sinew and made one
    // to B's gRPC address; B served one over gRPC.
    let text = a.metrics().encode();
    assert!(
        text.contains(
            "rpc_server_call_duration_seconds_count{rpc_system_name=\"sinew\",rpc_method=\"grpc.examples.echo.Echo/UnaryEcho\",rpc_response_status_code=\"OK\"} 1"
        ),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "grpc_client_call_duration_seconds_count{{grpc_method=\"grpc.examples.echo.Echo/UnaryEcho\",grpc_target=\"{b_grpc}\",grpc_status=\"OK\"}} 1"
        )),
        "{text}"
    );
    assert!(
        b.metrics().encode().contains(
            "rpc_server_call_started_total{rpc_system_name=\"grpc\",rpc_method=\"grpc.examples.echo.Echo/UnaryEcho\"} 1"
        )
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_without_a_caller_context_starts_a_trace_and_bad_headers_are_not_passed_on() {
    seen();
    let telemetry = Telemetry::new();
    let last = serve(Hop { next: None }, &telemetry).await;
    let channel = sinew::connect(&last).await.unwrap();
    // No telemetry on this client: the server starts the trace.
    let client = EchoClient::new(channel.clone());
    let answer = client
        .unary_echo(EchoRequest::default())
        .await
        .unwrap()
        .into_inner()
        .message;
    assert_eq!(answer.split(' ').count(), 3);

    // A malformed traceparent, as a buggy or hostile peer would send it:
    // the server starts a new trace and the call succeeds.
    let mut request = Request::new(EchoRequest::default());
    request
        .metadata_mut()
        .insert(
            "traceparent",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
        )
        .unwrap();
    let answer = client
        .unary_echo(request)
        .await
        .unwrap()
        .into_inner()
        .message;
    assert_ne!(
        answer.split(' ').next(),
        Some("00000000000000000000000000000000")
    );

    // A path no service offers is counted under _OTHER, however many.
    let raw = sinew::Client::new(channel);
    for index in 0..20 {
        let status = raw
            .unary::<(), ()>(format!("/scanner.Probe/Guess{index}"), Request::new(()))
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::Unimplemented);
    }
    let text = telemetry.metrics().encode();
    assert!(
        text.contains(
            "rpc_server_call_started_total{rpc_system_name=\"sinew\",rpc_method=\"_OTHER\"} 20"
        ),
        "{text}"
    );
    assert!(!text.contains("Guess"), "{text}");
    let recent = telemetry.recent_calls();
    assert_eq!(recent.len(), 20);
    assert_eq!(recent[0].code, Code::Unimplemented);
    assert_eq!(&*recent[0].method, "_OTHER");
}

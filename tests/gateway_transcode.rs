//! The gateway's JSON transcoding against a real sinew server (the example
//! library service, whose proto carries `google.api.http` rules), over real
//! sockets: every kind of rule, the JSON options, failures as HTTP
//! statuses, server streams as NDJSON and SSE, descriptors from `.proto`
//! files and from server reflection, gRPC and sinew's protocol behind, a
//! server that comes up after the gateway.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use serde_json::{json, Value};
use sinew::gateway::{config::Config, Gateway};
use sinew::Server;
use sinew_examples::library::LibraryService;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

fn library_proto() -> String {
    format!(
        "{}/crates/sinew-examples/proto/library.proto",
        env!("CARGO_MANIFEST_DIR")
    )
}

/// A library server (sample books on shelves/1) on a free port, sinew's
/// protocol and gRPC on it.
async fn library(port: u16) -> (String, sinew::rpc::server::ServerHandle) {
    let server = Server::builder()
        .add_protocol(sinew::grpc::GrpcProtocol::default())
        .add_service(LibraryService::with_sample_books().into_server())
        .bind([format!("tcp://127.0.0.1:{port}")])
        .await
        .expect("bind the library server");
    let address = server.local_addresses()[0].to_string();
    let handle = server.handle();
    tokio::spawn(server.serve());
    (address.replacen("tcp://", "", 1), handle)
}

/// A gateway running `config` (with `listen` left out) on a free port.
async fn gateway(config: &str) -> (SocketAddr, Gateway) {
    let config = Config::from_toml(config).expect("the test's configuration");
    let gateway = Gateway::with_connector(config, sinew::gateway_connector())
        .await
        .expect("the gateway starts");
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let serving = gateway.clone();
    tokio::spawn(async move { serving.serve(listener).await });
    (address, gateway)
}

/// The usual set-up: one service from the library's proto, on `/`.
fn config(address: &str, extra: &str) -> String {
    format!(
        r#"
        [services.library]
        address = "tcp://{address}"
        protos = ["{proto}"]
        {extra}
        [[routes]]
        path = "/"
        service = "library"
        timeout = "10s"
        "#,
        proto = library_proto(),
    )
}

struct Answer {
    status: u16,
    headers: http::HeaderMap,
    body: Bytes,
}

impl Answer {
    /// Asserts the status, showing the body when it is another.
    fn expect(&self, status: u16) {
        assert_eq!(
            self.status,
            status,
            "{}",
            String::from_utf8_lossy(&self.body)
        );
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }
}

/// One HTTP/1.1 request on a new connection.
async fn request(gateway: SocketAddr, method: &str, path: &str, body: Option<Value>) -> Answer {
    request_with(gateway, method, path, body, &[]).await
}

async fn request_with(
    gateway: SocketAddr,
    method: &str,
    path: &str,
    body: Option<Value>,
    headers: &[(&str, &str)],
) -> Answer {
    let stream = TcpStream::connect(gateway).await.unwrap();
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(connection);
    let body = body.map_or_else(Bytes::new, |body| Bytes::from(body.to_string()));
    let mut builder = http::Request::builder()
        .method(method)
        .uri(path)
        .header("host", "api.test");
    if !body.is_empty() {
        builder = builder.header("content-type", "application/json");
    }
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    let request = builder.body(Full::new(body)).unwrap();
    let response = tokio::time::timeout(Duration::from_secs(20), sender.send_request(request))
        .await
        .expect("an answer in time")
        .unwrap();
    let (parts, body) = response.into_parts();
    let body = body.collect().await.unwrap().to_bytes();
    Answer {
        status: parts.status.as_u16(),
        headers: parts.headers,
        body,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_kind_of_rule_is_transcoded() {
    let (server, handle) = library(0).await;
    let (gateway, _gateway) = gateway(&config(&server, "")).await;

    // Path template variable, the whole response; proto3 JSON (int64 as a
    // string, default values left out, lowerCamelCase names).
    let list = request(gateway, "GET", "/v1/shelves/1/books", None).await;
    list.expect(200);
    assert_eq!(list.headers["content-type"], "application/json");
    let books = list.json()["books"].as_array().unwrap().clone();
    assert_eq!(books.len(), 3);
    let first = books[0]["name"].as_str().unwrap().to_owned();
    let got = request(gateway, "GET", &format!("/v1/{first}"), None).await;
    assert_eq!(got.status, 200);
    assert_eq!(got.json(), books[0]);
    assert!(got.json()["createTime"].is_string());
    // An additional binding reaches the same method.
    let again = request(gateway, "GET", &format!("/v2/{first}"), None).await;
    assert_eq!(again.json(), books[0]);

    // Query parameters: scalars, an enum by name, paging.
    let page = request(gateway, "GET", "/v1/shelves/1/books?pageSize=2", None).await;
    let page = page.json();
    assert_eq!(page["books"].as_array().unwrap().len(), 2);
    let token = page["nextPageToken"].as_str().unwrap().to_owned();
    let rest = request(
        gateway,
        "GET",
        &format!("/v1/shelves/1/books?page_size=2&page_token={token}"),
        None,
    )
    .await;
    assert_eq!(rest.json()["books"].as_array().unwrap().len(), 1);
    let genre = books[0]["genre"].as_str().unwrap();
    let filtered = request(
        gateway,
        "GET",
        &format!("/v1/shelves/1/books?genre={genre}"),
        None,
    )
    .await;
    for book in filtered.json()["books"].as_array().unwrap() {
        assert_eq!(book["genre"], genre);
    }

    // body: "book", with a query parameter beside it.
    let created = request(
        gateway,
        "POST",
        "/v1/shelves/2/books?book_id=dune",
        Some(json!({"title": "Dune", "author": "Frank Herbert", "pages": 412, "tags": ["sf"]})),
    )
    .await;
    created.expect(200);
    let created = created.json();
    assert_eq!(created["name"], "shelves/2/books/dune");
    assert_eq!(created["pages"], "412");
    assert_eq!(created["tags"], json!(["sf"]));

    // A path variable inside the body's message (book.name), a FieldMask
    // from the query.
    let updated = request(
        gateway,
        "PATCH",
        "/v1/shelves/2/books/dune?updateMask=title",
        Some(json!({"title": "Dune (1965)", "author": "nobody"})),
    )
    .await;
    updated.expect(200);
    assert_eq!(updated.json()["title"], "Dune (1965)");
    assert_eq!(updated.json()["author"], "Frank Herbert");

    // body: "*" on a custom verb.
    let moved = request(
        gateway,
        "POST",
        "/v1/shelves/2/books/dune:move",
        Some(json!({"otherShelf": "shelves/3"})),
    )
    .await;
    moved.expect(200);
    assert_eq!(moved.json()["name"], "shelves/3/books/dune");

    // response_body: the title alone.
    let title = request(gateway, "GET", "/v1/shelves/3/books/dune/title", None).await;
    assert_eq!(title.status, 200);
    assert_eq!(title.json(), json!("Dune (1965)"));

    // A method without a rule, by its RPC path.
    let count = request(
        gateway,
        "POST",
        "/sinew.examples.library.Library/CountBooks",
        Some(json!({"parent": "shelves/1"})),
    )
    .await;
    count.expect(200);
    assert_eq!(count.json(), json!({"count": "3"}));

    // DELETE, and the empty message it answers.
    let deleted = request(gateway, "DELETE", "/v1/shelves/3/books/dune", None).await;
    assert_eq!((deleted.status, deleted.json()), (200, json!({})));
    let gone = request(gateway, "GET", "/v1/shelves/3/books/dune", None).await;
    assert_eq!(gone.status, 404);
    assert_eq!(gone.json()["code"], 5);
    handle.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_are_http_statuses_with_json_bodies() {
    let (server, handle) = library(0).await;
    let (gateway, _gateway) = gateway(&config(&server, "")).await;
    let check = |answer: Answer, status: u16, code: i64, words: &str| {
        answer.expect(status);
        let body = answer.json();
        assert_eq!(body["code"], code, "{body}");
        assert!(
            body["message"].as_str().unwrap().contains(words),
            "{words:?} not in {body}"
        );
        assert_eq!(body["details"], json!([]));
    };
    // The service's own statuses, as grpc-gateway maps them.
    check(
        request(gateway, "GET", "/v1/shelves/1/books/none", None).await,
        404,
        5,
        "",
    );
    let taken = request(
        gateway,
        "POST",
        "/v1/shelves/9/books?book_id=a",
        Some(json!({"title": "A"})),
    )
    .await;
    assert_eq!(taken.status, 200);
    check(
        request(
            gateway,
            "POST",
            "/v1/shelves/9/books?book_id=a",
            Some(json!({"title": "A"})),
        )
        .await,
        409,
        6,
        "",
    );
    check(
        request(gateway, "GET", "/v1/shelves/1/books?page_size=-1", None).await,
        400,
        3,
        "",
    );
    // What the gateway refuses before calling.
    check(
        request(gateway, "POST", "/v1/shelves/1/books:nothing", None).await,
        404,
        5,
        "no method",
    );
    check(
        request(gateway, "GET", "/v1/shelves/1/books?colour=red", None).await,
        400,
        3,
        "colour",
    );
    check(
        request(gateway, "GET", "/v1/shelves/1/books?pageSize=many", None).await,
        400,
        3,
        "many",
    );
    check(
        request(
            gateway,
            "POST",
            "/v1/shelves/1/books?book_id=x",
            Some(json!({"title": 5, "nope": true})),
        )
        .await,
        400,
        3,
        "body",
    );
    // An empty body is an empty message: the service itself finds its
    // parent missing.
    check(
        request(
            gateway,
            "POST",
            "/sinew.examples.library.Library/CountBooks",
            None,
        )
        .await,
        400,
        3,
        "parent",
    );
    // A body that is not a JSON object of the message never reaches it.
    let garbage = request_with(
        gateway,
        "POST",
        "/sinew.examples.library.Library/CountBooks",
        Some(Value::String("{not json".to_owned())),
        &[],
    )
    .await;
    check(garbage, 400, 3, "body");
    let not_allowed = request(gateway, "PUT", "/v1/shelves/1/books", None).await;
    assert_eq!(not_allowed.status, 405);
    assert_eq!(not_allowed.headers["allow"], "GET, POST");
    check(
        request(gateway, "GET", "/nowhere", None).await,
        404,
        5,
        "/nowhere",
    );
    // The service's body limit, below the server's.
    let (small, _small) = gateway_for(&config(&server, "max_body_bytes = 200")).await;
    let title = "t".repeat(300);
    let too_large = request(
        small,
        "POST",
        "/v1/shelves/1/books?book_id=big",
        Some(json!({ "title": title })),
    )
    .await;
    too_large.expect(413);
    let fits = request(
        small,
        "POST",
        "/v1/shelves/1/books?book_id=small",
        Some(json!({ "title": "t" })),
    )
    .await;
    fits.expect(200);
    handle.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_options_change_what_is_written() {
    let (server, handle) = library(0).await;
    let options = "emit_defaults = true\nint64_as_numbers = true\nproto_names = true\nenums_as_numbers = true";
    let (gateway, _gateway) = gateway(&config(&server, options)).await;
    let list = request(gateway, "GET", "/v1/shelves/1/books?page_size=1", None).await;
    let book = list.json()["books"][0].clone();
    assert!(book["pages"].is_number(), "{book}");
    assert!(book["create_time"].is_string(), "{book}");
    assert!(book["genre"].is_number(), "{book}");
    assert!(book.get("read").is_some(), "defaults are written: {book}");
    // Unknown fields are refused by default, and let through when asked.
    let lenient = config(&server, "ignore_unknown_fields = true");
    let (lenient, _lenient) = gateway_for(&lenient).await;
    let created = request(
        lenient,
        "POST",
        "/v1/shelves/5/books?book_id=x&colour=red",
        Some(json!({"title": "X", "nope": 1})),
    )
    .await;
    created.expect(200);
    handle.shutdown();
}

async fn gateway_for(config: &str) -> (SocketAddr, Gateway) {
    gateway(config).await
}

/// Reads one line of a streamed body.
async fn line(reader: &mut BufReader<TcpStream>) -> String {
    let mut line = String::new();
    tokio::time::timeout(Duration::from_secs(10), reader.read_line(&mut line))
        .await
        .expect("a line in time")
        .unwrap();
    line
}

/// Sends a request by hand and reads the head, for streamed answers.
async fn open_stream(gateway: SocketAddr, path: &str, accept: &str) -> BufReader<TcpStream> {
    let mut stream = TcpStream::connect(gateway).await.unwrap();
    let head = format!(
        "GET {path} HTTP/1.1\r\nHost: api.test\r\nAccept: {accept}\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let mut reader = BufReader::new(stream);
    let status = line(&mut reader).await;
    assert!(status.starts_with("HTTP/1.1 200"), "{status}");
    loop {
        let header = line(&mut reader).await;
        if header == "\r\n" {
            break;
        }
        if header.to_ascii_lowercase().starts_with("content-type") {
            assert!(header.contains(accept), "{header}");
        }
    }
    reader
}

/// The next chunk's payload of a chunked body.
async fn chunk_bytes(reader: &mut BufReader<TcpStream>) -> Vec<u8> {
    let size = line(reader).await;
    let size = usize::from_str_radix(size.trim(), 16).expect("a chunk size");
    let mut payload = vec![0; size + 2];
    reader.read_exact(&mut payload).await.unwrap();
    payload.truncate(size);
    payload
}

/// [`chunk_bytes`], as text.
async fn chunk(reader: &mut BufReader<TcpStream>) -> String {
    String::from_utf8(chunk_bytes(reader).await).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_streams_are_newline_delimited_json_or_server_sent_events() {
    let (server, handle) = library(0).await;
    let (gateway, _gateway) = gateway(&config(&server, "")).await;
    let mut ndjson =
        open_stream(gateway, "/v1/shelves/1/books:watch", "application/x-ndjson").await;
    let mut sse = open_stream(gateway, "/v1/shelves/1/books:watch", "text/event-stream").await;
    let mut seen = Vec::new();
    while seen.len() < 3 {
        for line in chunk(&mut ndjson).await.lines() {
            let value: Value = serde_json::from_str(line).unwrap();
            seen.push(value["result"]["name"].as_str().unwrap().to_owned());
        }
    }
    assert!(seen.iter().all(|name| name.starts_with("shelves/1/books/")));
    // A book created now comes down both streams.
    let created = request(
        gateway,
        "POST",
        "/v1/shelves/1/books?book_id=new",
        Some(json!({"title": "New"})),
    )
    .await;
    assert_eq!(created.status, 200);
    let mut found = false;
    for _ in 0..10 {
        if chunk(&mut ndjson).await.contains("shelves/1/books/new") {
            found = true;
            break;
        }
    }
    assert!(found, "the new book was streamed as NDJSON");
    let mut events = String::new();
    while !events.contains("shelves/1/books/new") {
        events.push_str(&chunk(&mut sse).await);
    }
    for event in events.split("\n\n").filter(|e| !e.is_empty()) {
        let data = event.strip_prefix("data: ").expect("data events");
        let book: Value = serde_json::from_str(data).unwrap();
        assert!(book["name"].is_string());
    }
    handle.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_routes_header_rewrites_become_metadata_and_grpc_web_can_be_off() {
    // A library server that writes down each call's metadata.
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let server = Server::builder()
        .interceptor({
            let seen = seen.clone();
            move |call: &mut sinew::rpc::server::ServerCall| {
                let entries = call
                    .metadata()
                    .iter()
                    .map(|(key, value)| format!("{key}={}", String::from_utf8_lossy(value)))
                    .collect::<Vec<_>>()
                    .join(" ");
                seen.lock().unwrap().push(entries);
                Ok(())
            }
        })
        .add_service(LibraryService::with_sample_books().into_server())
        .bind(["tcp://127.0.0.1:0"])
        .await
        .unwrap();
    let address = server.local_addresses()[0]
        .to_string()
        .replacen("tcp://", "", 1);
    let handle = server.handle();
    tokio::spawn(server.serve());
    let config = format!(
        "{}set_request_headers = {{ \"x-tenant\" = \"blue\", \"x-client\" = \"$remote_addr\" }}\n\
         remove_request_headers = [\"authorization\"]\n",
        config(&address, "grpc_web = false")
    );
    let (gateway, _gateway) = gateway(&config).await;
    let answer = request_with(
        gateway,
        "GET",
        "/v1/shelves/1/books/cosmos",
        None,
        &[
            ("authorization", "Bearer secret"),
            ("grpc-metadata-x-trace", "t1"),
        ],
    )
    .await;
    answer.expect(200);
    let entries = seen.lock().unwrap().last().cloned().unwrap();
    assert!(entries.contains("x-tenant=blue"), "{entries}");
    assert!(entries.contains("x-client=127.0.0.1"), "{entries}");
    assert!(entries.contains("x-trace=t1"), "{entries}");
    assert!(!entries.contains("secret"), "{entries}");
    // gRPC-Web is refused on this service, before any call.
    let calls = seen.lock().unwrap().len();
    let refused = grpc_web(
        gateway,
        "/sinew.examples.library.Library/GetBook",
        "application/grpc-web+proto",
        vec![0, 0, 0, 0, 0],
    )
    .await;
    assert_eq!(refused.status, 501, "{:?}", refused.body);
    assert_eq!(seen.lock().unwrap().len(), calls);
    handle.shutdown();
}

/// The status line of a streamed GET (the stream left unread).
async fn stream_status(gateway: SocketAddr, path: &str) -> (String, BufReader<TcpStream>) {
    let mut stream = TcpStream::connect(gateway).await.unwrap();
    let head = format!("GET {path} HTTP/1.1\r\nHost: api.test\r\nConnection: close\r\n\r\n");
    stream.write_all(head.as_bytes()).await.unwrap();
    let mut reader = BufReader::new(stream);
    (line(&mut reader).await, reader)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_are_bounded_per_service_and_quiet_events_kept_alive() {
    let (server, handle) = library(0).await;
    let config = config(&server, "max_streams = 1\nsse_keep_alive = \"1s\"");
    let (gateway, _gateway) = gateway(&config).await;
    let watch = "/v1/shelves/1/books:watch";
    let mut sse = open_stream(gateway, watch, "text/event-stream").await;
    // The books there, then, with nothing happening, a keep-alive comment.
    let mut events = String::new();
    while !events.contains(": keep-alive\n\n") {
        events.push_str(&chunk(&mut sse).await);
    }
    assert!(events.starts_with("data: "), "{events}");
    // The one slot is taken: another stream is refused, as JSON and as
    // gRPC-Web alike; a unary call is not a stream.
    let (refused, mut body) = stream_status(gateway, watch).await;
    assert!(refused.starts_with("HTTP/1.1 429"), "{refused}");
    let mut rest = String::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), body.read_to_string(&mut rest)).await;
    assert!(
        rest.contains("\"code\":8") && rest.contains("max_streams"),
        "{rest}"
    );
    request(gateway, "GET", "/v1/shelves/1/books/cosmos", None)
        .await
        .expect(200);
    // Gone, the stream gives its slot back (seen at its next keep-alive).
    drop(sse);
    let mut reopened = None;
    for _ in 0..50 {
        let (status, reader) = stream_status(gateway, watch).await;
        if status.starts_with("HTTP/1.1 200") {
            reopened = Some(reader);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(reopened.is_some(), "the slot came back");
    handle.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn descriptors_from_reflection_and_calls_over_grpc() {
    let (server, handle) = library(0).await;
    // No protos: the rules come from the server's reflection (their
    // google.api.http options kept), the calls go over gRPC.
    let config = format!(
        r#"
        [services.library]
        address = "grpc://{server}"
        services = ["sinew.examples.library.Library"]
        [[routes]]
        path = "/api/"
        rewrite_prefix = "/"
        service = "library"
        "#
    );
    let (gateway, _gateway) = gateway(&config).await;
    let list = request(gateway, "GET", "/api/v1/shelves/1/books", None).await;
    list.expect(200);
    assert_eq!(list.json()["books"].as_array().unwrap().len(), 3);
    let title = request(gateway, "GET", "/api/v1/shelves/1/books/none/title", None).await;
    assert_eq!(title.status, 404);
    handle.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_comes_up_after_the_gateway_is_reached_then() {
    // A port nobody listens on yet.
    let port = TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let (gateway, _gateway) = gateway(&config(&format!("127.0.0.1:{port}"), "")).await;
    let down = request(gateway, "GET", "/v1/shelves/1/books", None).await;
    down.expect(503);
    assert_eq!(down.json()["code"], 14);
    let (_, handle) = library(port).await;
    // A failed connect answers the requests of the next second at once;
    // after it, a request connects again.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let up = loop {
        let answer = request(gateway, "GET", "/v1/shelves/1/books", None).await;
        if answer.status != 503 || std::time::Instant::now() > deadline {
            break answer;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    up.expect(200);
    handle.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_without_reflection_or_protos_is_a_clear_start_error() {
    let port = TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let config = Config::from_toml(&format!(
        r#"
        [services.library]
        address = "tcp://127.0.0.1:{port}"
        [[routes]]
        service = "library"
        "#
    ))
    .unwrap();
    let error = Gateway::with_connector(config, sinew::gateway_connector())
        .await
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("service \"library\"") && error.contains("cannot reach"),
        "{error}"
    );
    // A proto that does not compile is named.
    let dir = std::env::temp_dir().join(format!("sinew-transcode-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let proto = dir.join("broken.proto");
    std::fs::write(&proto, "syntax = \"proto3\"; message {").unwrap();
    let config = Config::from_toml(&format!(
        r#"
        [services.library]
        address = "tcp://127.0.0.1:{port}"
        protos = ["{}"]
        [[routes]]
        service = "library"
        "#,
        proto.display()
    ))
    .unwrap();
    let error = Gateway::new(config).await.unwrap_err().to_string();
    assert!(error.contains("do not compile"), "{error}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// A gRPC-Web body: each message framed (flag 0, big-endian length).
fn grpc_web_frames(messages: &[&[u8]]) -> Vec<u8> {
    let mut body = Vec::new();
    for message in messages {
        body.push(0);
        body.extend_from_slice(&(message.len() as u32).to_be_bytes());
        body.extend_from_slice(message);
    }
    body
}

/// A gRPC-Web answer's messages and its trailer block.
fn grpc_web_answer(mut body: &[u8]) -> (Vec<Vec<u8>>, String) {
    let mut messages = Vec::new();
    let mut trailers = String::new();
    while !body.is_empty() {
        let flag = body[0];
        let len = u32::from_be_bytes([body[1], body[2], body[3], body[4]]) as usize;
        let payload = &body[5..5 + len];
        if flag & 0x80 != 0 {
            trailers = String::from_utf8(payload.to_vec()).unwrap();
        } else {
            messages.push(payload.to_vec());
        }
        body = &body[5 + len..];
    }
    (messages, trailers)
}

async fn grpc_web(gateway: SocketAddr, path: &str, content_type: &str, body: Vec<u8>) -> Answer {
    let stream = TcpStream::connect(gateway).await.unwrap();
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(connection);
    let request = http::Request::post(path)
        .header("host", "api.test")
        .header("content-type", content_type)
        .header("x-grpc-web", "1")
        .header("grpc-metadata-ignored", "x")
        .body(Full::new(Bytes::from(body)))
        .unwrap();
    let response = tokio::time::timeout(Duration::from_secs(20), sender.send_request(request))
        .await
        .expect("an answer in time")
        .unwrap();
    let (parts, body) = response.into_parts();
    Answer {
        status: parts.status.as_u16(),
        headers: parts.headers,
        body: body.collect().await.unwrap().to_bytes(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_web_calls_pass_through_in_binary_and_text() {
    use base64::Engine;
    use prost::Message;
    use sinew_examples::library::{Book, GetBookRequest};
    let (server, handle) = library(0).await;
    let (gateway, _gateway) = gateway(&config(&server, "method_paths = false")).await;
    let request = GetBookRequest {
        name: "shelves/1/books/cosmos".to_owned(),
    }
    .encode_to_vec();
    let path = "/sinew.examples.library.Library/GetBook";

    // Binary: the book, then grpc-status 0 in the trailer frame.
    let answer = grpc_web(
        gateway,
        path,
        "application/grpc-web+proto",
        grpc_web_frames(&[&request]),
    )
    .await;
    assert_eq!(answer.status, 200);
    assert_eq!(answer.headers["content-type"], "application/grpc-web+proto");
    let (messages, trailers) = grpc_web_answer(&answer.body);
    assert_eq!(messages.len(), 1);
    let book = Book::decode(messages[0].as_slice()).unwrap();
    assert_eq!(book.name, "shelves/1/books/cosmos");
    assert!(trailers.contains("grpc-status:0\r\n"), "{trailers:?}");

    // Text: the same, base64 both ways.
    let engine = &base64::engine::general_purpose::STANDARD;
    let body = engine.encode(grpc_web_frames(&[&request])).into_bytes();
    let answer = grpc_web(gateway, path, "application/grpc-web-text", body).await;
    assert_eq!(
        answer.headers["content-type"],
        "application/grpc-web-text+proto"
    );
    let mut decoded = Vec::new();
    // Each frame is encoded on its own: padded chunks one after another.
    let text = String::from_utf8(answer.body.to_vec()).unwrap();
    let mut rest = text.as_str();
    while !rest.is_empty() {
        let end = rest.find('=').map_or(rest.len(), |at| {
            at + rest[at..].chars().take_while(|&c| c == '=').count()
        });
        decoded.extend(engine.decode(&rest[..end]).unwrap());
        rest = &rest[end..];
    }
    let (messages, trailers) = grpc_web_answer(&decoded);
    assert_eq!(Book::decode(messages[0].as_slice()).unwrap(), book);
    assert!(trailers.contains("grpc-status:0"), "{trailers:?}");

    // The service's failure, in the trailer frame.
    let missing = GetBookRequest {
        name: "shelves/1/books/none".to_owned(),
    }
    .encode_to_vec();
    let answer = grpc_web(
        gateway,
        path,
        "application/grpc-web",
        grpc_web_frames(&[&missing]),
    )
    .await;
    let (messages, trailers) = grpc_web_answer(&answer.body);
    assert!(messages.is_empty());
    assert!(trailers.contains("grpc-status:5\r\n"), "{trailers:?}");

    // The gateway's own refusals, the same way: no such method, two
    // messages to a unary method, a frame cut short, a GET.
    for (path, body, code) in [
        (
            "/sinew.examples.library.Library/Nope",
            grpc_web_frames(&[&request]),
            12,
        ),
        ("/grpc.health.v1.Health/Check", grpc_web_frames(&[b""]), 12),
        (path, grpc_web_frames(&[&request, &request]), 3),
        (path, grpc_web_frames(&[&request])[..6].to_vec(), 3),
    ] {
        let answer = grpc_web(gateway, path, "application/grpc-web", body).await;
        assert_eq!(answer.status, 200);
        let (_, trailers) = grpc_web_answer(&answer.body);
        assert!(
            trailers.contains(&format!("grpc-status:{code}\r\n")),
            "{path}: {trailers:?}"
        );
    }

    // A server stream: the shelf's books come as they are read.
    let watch = sinew_examples::library::WatchShelfRequest {
        parent: "shelves/1".to_owned(),
    }
    .encode_to_vec();
    let mut stream = TcpStream::connect(gateway).await.unwrap();
    let body = grpc_web_frames(&[&watch]);
    let head = format!(
        "POST /sinew.examples.library.Library/WatchShelf HTTP/1.1\r\nHost: api.test\r\n\
         Content-Type: application/grpc-web+proto\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(&body).await.unwrap();
    let mut reader = BufReader::new(stream);
    let status = line(&mut reader).await;
    assert!(status.starts_with("HTTP/1.1 200"), "{status}");
    while line(&mut reader).await != "\r\n" {}
    let mut received = Vec::new();
    for _ in 0..20 {
        received.extend(chunk_bytes(&mut reader).await);
        if whole_frames(&received).len() >= 3 {
            break;
        }
    }
    let books: Vec<Book> = whole_frames(&received)
        .iter()
        .map(|frame| Book::decode(&frame[5..]).unwrap())
        .collect();
    assert_eq!(books.len(), 3, "the shelf's three books, no trailer yet");
    assert!(books
        .iter()
        .all(|book| book.name.starts_with("shelves/1/books/")));
    handle.shutdown();
}

/// The whole frames at the start of a streamed answer.
fn whole_frames(mut body: &[u8]) -> Vec<&[u8]> {
    let mut frames = Vec::new();
    while body.len() >= 5 {
        let len = u32::from_be_bytes([body[1], body[2], body[3], body[4]]) as usize;
        if body.len() < 5 + len {
            break;
        }
        frames.push(&body[..5 + len]);
        body = &body[5 + len..];
    }
    frames
}

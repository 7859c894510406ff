//! `sinew gateway` in front of `sinew serve`, called from a page in a real
//! browser (headless Chromium): the page, served through the gateway from
//! a plain HTTP upstream (so same origin, no CORS), reads the library's
//! books by JSON transcoding and by gRPC-Web, binary and text, encoding
//! and decoding the protobuf by hand in plain JavaScript; and gets a
//! missing book's NOT_FOUND both ways (HTTP 404 with a JSON code of 5, and
//! grpc-status 5 in the gRPC-Web trailer frame).

#[path = "common/browser.rs"]
mod browser;
mod common;

use common::{sinew, spawn_serve, Killed};
use std::io::{BufRead, BufReader, Read};
use std::process::Stdio;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The page: its script writes each result into a `data-` attribute of the
/// body, which the test reads over DevTools; any exception goes to
/// `data-error`.
const PAGE: &str = r#"<!doctype html>
<html><head><meta charset="utf-8"><title>sinew from a browser</title></head>
<body>
<script>
"use strict";
const utf8in = new TextEncoder(), utf8out = new TextDecoder("utf-8", { fatal: true });

function varint(value) {
  const bytes = [];
  while (value > 127) { bytes.push((value & 127) | 128); value >>>= 7; }
  bytes.push(value);
  return bytes;
}

// GetBookRequest { name = 1 }: key 0x0a (field 1, wire type 2), length, UTF-8.
function getBookRequest(name) {
  const bytes = utf8in.encode(name);
  return Uint8Array.from([0x0a, ...varint(bytes.length), ...bytes]);
}

// A gRPC-Web message frame: flag 0, big-endian 32-bit length, the message.
function frame(message) {
  const framed = new Uint8Array(5 + message.length);
  new DataView(framed.buffer).setUint32(1, message.length);
  framed.set(message, 5);
  return framed;
}

function frames(bytes) {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const all = [];
  for (let at = 0; at < bytes.length; ) {
    if (at + 5 > bytes.length) throw new Error("a frame header cut short at " + at);
    const length = view.getUint32(at + 1);
    if (at + 5 + length > bytes.length) throw new Error("a frame cut short at " + at);
    all.push({ flag: bytes[at], payload: bytes.subarray(at + 5, at + 5 + length) });
    at += 5 + length;
  }
  return all;
}

function readVarint(bytes, at) {
  let value = 0;
  for (let shift = 0; ; shift += 7) {
    if (at >= bytes.length || shift > 63) throw new Error("a varint cut short");
    const byte = bytes[at++];
    value += (byte & 127) * 2 ** shift;
    if (byte < 128) return [value, at];
  }
}

// The first length-delimited field `number` of `message`, as text; every
// other field skipped by its wire type.
function stringField(message, number) {
  for (let at = 0; at < message.length; ) {
    let key, length;
    [key, at] = readVarint(message, at);
    const wireType = key % 8, field = Math.floor(key / 8);
    if (wireType === 0) [, at] = readVarint(message, at);
    else if (wireType === 1) at += 8;
    else if (wireType === 5) at += 4;
    else if (wireType === 2) {
      [length, at] = readVarint(message, at);
      if (at + length > message.length) throw new Error("field " + field + " cut short");
      if (field === number) return utf8out.decode(message.subarray(at, at + length));
      at += length;
    } else throw new Error("wire type " + wireType + " of field " + field);
  }
  return undefined;
}

// The messages of a gRPC-Web answer and the grpc-status of its trailer frame.
function answer(bytes) {
  const all = frames(bytes);
  const trailers = all.filter(f => f.flag & 0x80);
  if (trailers.length !== 1 || all[all.length - 1] !== trailers[0])
    throw new Error("not one trailer frame at the end: " + all.map(f => f.flag));
  const lines = utf8out.decode(trailers[0].payload).split("\r\n");
  const status = lines.find(line => line.toLowerCase().startsWith("grpc-status:"));
  if (status === undefined) throw new Error("no grpc-status in " + JSON.stringify(lines));
  return {
    messages: all.filter(f => !(f.flag & 0x80)).map(f => f.payload),
    status: status.slice("grpc-status:".length).trim(),
  };
}

// Base64 as the gateway writes it: each frame encoded on its own, so
// padded chunks one after another.
function fromBase64(text) {
  const bytes = [];
  for (const chunk of text.match(/[^=]+=*/g) || [])
    for (const c of atob(chunk)) bytes.push(c.charCodeAt(0));
  return Uint8Array.from(bytes);
}

// Library/GetBook of `name` over gRPC-Web: "title|grpc-status".
async function getBook(name, text) {
  const body = frame(getBookRequest(name));
  const response = await fetch("/sinew.examples.library.Library/GetBook", {
    method: "POST",
    headers: {
      "content-type": text ? "application/grpc-web-text" : "application/grpc-web+proto",
      "x-grpc-web": "1",
    },
    body: text ? btoa(String.fromCharCode(...body)) : body,
  });
  if (response.status !== 200) throw new Error("gRPC-Web answered HTTP " + response.status);
  const bytes = text
    ? fromBase64(await response.text())
    : new Uint8Array(await response.arrayBuffer());
  const { messages, status } = answer(bytes);
  if (messages.length > 1) throw new Error(messages.length + " messages to a unary call");
  const title = messages.length === 1 ? stringField(messages[0], 2) : "";
  return title + "|" + status;
}

async function run() {
  const data = document.body.dataset;
  const json = await fetch("/v1/shelves/1/books/cosmos");
  if (json.status !== 200) throw new Error("JSON answered HTTP " + json.status);
  data.json = (await json.json()).title;
  data.grpcWeb = await getBook("shelves/1/books/spqr", false);
  data.grpcWebText = await getBook("shelves/1/books/dispossessed", true);
  data.grpcWebError = (await getBook("shelves/1/books/none", false)).split("|")[1];
  const missing = await fetch("/v1/shelves/1/books/none");
  data.jsonError = missing.status + "|" + (await missing.json()).code;
}

run().catch(error => { document.body.dataset.error = String(error && error.stack || error); });
</script>
</body></html>
"#;

/// A tiny HTTP/1.1 server on a free port: every request gets [`PAGE`], and
/// the connection closed.
async fn page_server() -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                // The request's head (its body, if any, is not read).
                let mut head = Vec::new();
                let mut chunk = [0u8; 4096];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match tokio::time::timeout(Duration::from_secs(10), stream.read(&mut chunk))
                        .await
                    {
                        Ok(Ok(read)) if read > 0 => head.extend_from_slice(&chunk[..read]),
                        _ => return,
                    }
                }
                let reply = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: text/html; charset=utf-8\r\n\
                     Content-Length: {}\r\nConnection: close\r\n\r\n{PAGE}",
                    PAGE.len()
                );
                let _ = stream.write_all(reply.as_bytes()).await;
                let _ = stream.shutdown().await;
            });
        }
    });
    address
}

/// `sinew gateway` on a free port with `config` (written to `dir`): the
/// child and its `http://HOST:PORT`.
fn gateway(dir: &std::path::Path, config: &str) -> (Killed, String) {
    let path = dir.join("gateway.toml");
    std::fs::write(&path, config).unwrap();
    let mut child = Killed(
        sinew()
            .args(["gateway", "--workers", "1", "--config"])
            .arg(&path)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let stdout = child.0.stdout.take().unwrap();
    let stderr = child.0.stderr.take().unwrap();
    let (lines, seen) = std::sync::mpsc::channel::<String>();
    // Both streams read to their end, so that the gateway never blocks on
    // a full pipe.
    for stream in [Box::new(stdout) as Box<dyn Read + Send>, Box::new(stderr)] {
        let lines = lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stream).lines().map_while(Result::ok) {
                let _ = lines.send(line);
            }
        });
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut said = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match seen.recv_timeout(left) {
            Ok(line) => match line.trim().strip_prefix("listening on ") {
                Some(url) => return (child, url.to_owned()),
                None => said.push(line),
            },
            Err(_) => panic!("sinew gateway did not start listening: {said:#?}"),
        }
    }
}

/// The sample library's title of `name`, from the service itself.
async fn title_of(name: &str) -> String {
    use sinew_examples::library::{library_server::Library, GetBookRequest, LibraryService};
    let library = LibraryService::with_sample_books();
    let request = sinew::Request::new(GetBookRequest {
        name: name.to_owned(),
    });
    let book = library.get_book(request).await.unwrap().into_inner();
    assert!(!book.title.is_empty(), "{name} has a title");
    book.title
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_page_calls_the_library_by_json_and_by_grpc_web() {
    let (serve, mut stdout, addresses) = spawn_serve(
        &["tcp://127.0.0.1:0".to_owned()],
        &["--example", "library"],
        Stdio::null(),
    );
    let _serve = Killed(serve);
    std::thread::spawn(move || std::io::copy(&mut stdout, &mut std::io::sink()));
    let page = page_server().await;
    let dir = tempfile::tempdir().unwrap();
    // No protos: the gateway reads the library's descriptors (and their
    // google.api.http rules) from the server's reflection.
    let config = format!(
        r#"
[server]
listen = ["127.0.0.1:0"]

[services.library]
address = "{library}"

[upstreams.page]
servers = [{{ address = "{page}" }}]

[[routes]]
path = "/v1/"
service = "library"

[[routes]]
path = "/sinew.examples.library.Library/"
service = "library"

[[routes]]
path = "/"
upstream = "page"
"#,
        library = addresses[0],
    );
    let (_gateway, url) = tokio::task::block_in_place(|| gateway(dir.path(), &config));

    let profile = browser::profile();
    let (browser, mut page) = browser::chromium(&profile, &format!("{url}/")).await;
    let keys = [
        "json",
        "grpcWeb",
        "grpcWebText",
        "grpcWebError",
        "jsonError",
    ];
    let deadline = Instant::now() + Duration::from_secs(30);
    let data = loop {
        let data = page
            .eval("document.body ? Object.assign({}, document.body.dataset) : null")
            .await;
        if let Some(error) = data.get("error") {
            panic!("the page's script failed: {}", error.as_str().unwrap_or(""));
        }
        if keys.iter().all(|key| data.get(key).is_some()) {
            break data;
        }
        if Instant::now() >= deadline {
            let at = page.eval("location.href").await;
            panic!("the page at {at} wrote only {data} in 30 s");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let text = |key: &str| data[key].as_str().unwrap_or_default().to_owned();

    assert_eq!(text("json"), title_of("shelves/1/books/cosmos").await);
    assert_eq!(
        text("grpcWeb"),
        format!("{}|0", title_of("shelves/1/books/spqr").await)
    );
    assert_eq!(
        text("grpcWebText"),
        format!("{}|0", title_of("shelves/1/books/dispossessed").await)
    );
    assert_eq!(text("grpcWebError"), "5", "NOT_FOUND in the trailer frame");
    assert_eq!(text("jsonError"), "404|5", "NOT_FOUND as HTTP and JSON");
    assert_eq!(data.as_object().map(|data| data.len()), Some(keys.len()));

    drop(page);
    drop(browser);
    let _ = std::fs::remove_dir_all(&profile);
}

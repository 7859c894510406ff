//! Bad and hostile clients: malformed requests, oversize headers and
//! bodies, slowloris, request smuggling. Each gets a clear 4xx or its
//! connection closed, within the configured bounds, and the gateway goes
//! on serving everyone else.

mod common;

use bytes::Bytes;
use common::{gateway, get, raw, servers, Client, Running, Upstream};
use http_body_util::Full;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

async fn strict_gateway(upstream: &Upstream) -> Running {
    gateway(&format!(
        r#"
        [server]
        max_header_bytes = 8192
        max_headers = 20
        max_body_bytes = 1000
        header_timeout = "1s"
        [upstreams.app]
        {}
        [[routes]]
        upstream = "app"
        "#,
        servers(&[upstream], "")
    ))
    .await
}

fn status_of(reply: &str) -> &str {
    reply.split(' ').nth(1).unwrap_or("")
}

/// The gateway still answers a plain request.
async fn unharmed(running: &Running) {
    let reply = get(running.address, "/after").await;
    assert_eq!(reply.status, 200, "{}", reply.body);
}

#[tokio::test]
async fn malformed_requests_get_400() {
    let upstream = Upstream::start("a").await;
    let running = strict_gateway(&upstream).await;
    let wait = Duration::from_secs(3);
    for bytes in [
        &b"GARBAGE\r\n\r\n"[..],
        b"GET / HTTP/1.1\r\nHost: x\r\nBad Header Name: 1\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello",
        b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n",
        b"GET / HTTP/9.1\r\nHost: x\r\n\r\n",
        b"\x00\x01\x02\x03\r\n\r\n",
    ] {
        let reply = raw(running.address, bytes, wait).await;
        assert!(
            reply.is_empty() || status_of(&reply).starts_with('4') || status_of(&reply) == "505",
            "{:?} -> {reply:?}",
            String::from_utf8_lossy(bytes)
        );
        assert!(!reply.contains("200 OK"), "{reply}");
    }
    assert_eq!(
        upstream.requests.load(Ordering::SeqCst),
        0,
        "none reached the upstream"
    );
    unharmed(&running).await;
}

#[tokio::test]
async fn oversize_headers_get_431_and_oversize_bodies_413() {
    let upstream = Upstream::start("a").await;
    let running = strict_gateway(&upstream).await;
    let wait = Duration::from_secs(3);
    let huge = format!(
        "GET / HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
        "a".repeat(20_000)
    );
    let reply = raw(running.address, huge.as_bytes(), wait).await;
    assert_eq!(status_of(&reply), "431", "{reply}");
    let many: String = (0..40).map(|n| format!("X-H{n}: v\r\n")).collect();
    let reply = raw(
        running.address,
        format!("GET / HTTP/1.1\r\nHost: x\r\n{many}\r\n").as_bytes(),
        wait,
    )
    .await;
    assert_eq!(status_of(&reply), "431", "{reply}");
    // A body announced over the limit: refused before it is read.
    let mut client = Client::connect(running.address).await;
    let reply = client
        .send(
            http::Request::post("/echo")
                .header("host", "x")
                .body(Full::new(Bytes::from(vec![b'x'; 5000])))
                .unwrap(),
        )
        .await;
    assert_eq!(reply.status, 413, "{}", reply.body);
    // A chunked body that grows past the limit.
    let mut chunked =
        String::from("POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n");
    for _ in 0..10 {
        chunked.push_str(&format!("c8\r\n{}\r\n", "y".repeat(200)));
    }
    chunked.push_str("0\r\n\r\n");
    let reply = raw(running.address, chunked.as_bytes(), wait).await;
    assert_eq!(status_of(&reply), "413", "{reply}");
    // Within the limit, chunked is fine.
    let small = "POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n5\r\nhello\r\n0\r\n\r\n";
    let reply = raw(running.address, small.as_bytes(), wait).await;
    assert_eq!(status_of(&reply), "200", "{reply}");
    assert!(reply.ends_with("hello"), "{reply}");
    unharmed(&running).await;
}

#[tokio::test]
async fn slowloris_clients_are_closed_after_the_header_timeout() {
    let upstream = Upstream::start("a").await;
    let running = strict_gateway(&upstream).await;
    // Many slow clients at once, each a byte at a time.
    let started = Instant::now();
    let slow: Vec<_> = (0..20)
        .map(|_| {
            let address = running.address;
            tokio::spawn(async move {
                let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
                stream
                    .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n")
                    .await
                    .unwrap();
                // Bounded: at most 40 bytes over 8 s.
                for _ in 0..40 {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    if stream.write_all(b"X").await.is_err() {
                        return true;
                    }
                    let mut buffer = [0u8; 256];
                    if let Ok(Ok(read)) =
                        tokio::time::timeout(Duration::from_millis(1), stream.read(&mut buffer))
                            .await
                    {
                        // Closed (0), or an error status before closing.
                        if read == 0 || buffer.starts_with(b"HTTP/1.1 4") {
                            return true;
                        }
                    }
                }
                false
            })
        })
        .collect();
    // Meanwhile, others are served.
    unharmed(&running).await;
    for task in slow {
        assert!(task.await.unwrap(), "a slow client was left open");
    }
    assert!(started.elapsed() < Duration::from_secs(7));
    // An idle kept-alive connection is closed after the timeout too.
    let mut stream = tokio::net::TcpStream::connect(running.address)
        .await
        .unwrap();
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut read = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut read)).await;
    assert!(closed.is_ok(), "the idle connection stayed open");
    assert!(String::from_utf8_lossy(&read).starts_with("HTTP/1.1 200"));
    unharmed(&running).await;
}

#[tokio::test]
async fn smuggled_requests_never_reach_an_upstream() {
    let upstream = Upstream::start("a").await;
    let running = strict_gateway(&upstream).await;
    let wait = Duration::from_secs(3);
    // CL.TE and TE.CL, alone or behind kept-alive requests: the conflicting
    // request gets a 400 and its connection is closed after it, so the
    // request hidden behind is never read as one; those before it are
    // answered as usual.
    let cl_te = "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 60\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n";
    let te_cl = "POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n5c\r\nGET /smuggled HTTP/1.1\r\nHost: x\r\nContent-Length: 15\r\n\r\nx=1\r\n0\r\n\r\n";
    let before = "GET /first HTTP/1.1\r\nHost: x\r\n\r\nPOST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n";
    for (attack, answered) in [
        (cl_te.to_owned(), 0),
        (te_cl.to_owned(), 0),
        (format!("{before}{cl_te}"), 2),
        (format!("{before}{te_cl}"), 2),
    ] {
        let reply = raw(running.address, attack.as_bytes(), wait).await;
        let statuses: Vec<&str> = reply
            .split("HTTP/1.1 ")
            .skip(1)
            .map(|answer| &answer[..3])
            .collect();
        let mut expected = vec!["200"; answered];
        expected.push("400");
        assert_eq!(statuses, expected, "{attack}\n->\n{reply}");
        assert!(
            reply.contains("both Content-Length and Transfer-Encoding"),
            "{reply}"
        );
    }
    // Conflicting codings, a malformed name: refused by hyper, closed.
    for attack in [
        "POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: identity\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n",
        "POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding : chunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n",
    ] {
        let reply = raw(running.address, attack.as_bytes(), wait).await;
        assert!(
            reply.matches("HTTP/1.1 ").count() <= 1,
            "one answer at most, for the first request: {reply}"
        );
    }
    // The upstream saw the kept-alive requests, never a conflicting one
    // or /smuggled.
    let probe = get(running.address, "/smuggled-check").await;
    assert_eq!(probe.status, 200);
    let served = upstream.requests.load(Ordering::SeqCst);
    assert_eq!(served, 5, "the two pairs before a conflict and the probe");
    unharmed(&running).await;
}

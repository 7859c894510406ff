//! The reverse proxy against real HTTP servers on loopback: forwarding,
//! balancing, retries, passive and active health, pools, reloads.

mod common;

use bytes::Bytes;
use common::{gateway, get, one_group, servers, Client, Upstream};
use http_body_util::Full;
use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::time::Duration;

fn count(replies: &[String]) -> HashMap<String, usize> {
    let mut counts = HashMap::new();
    for name in replies {
        *counts.entry(name.clone()).or_default() += 1;
    }
    counts
}

#[tokio::test]
async fn forwards_requests_and_rewrites_headers() {
    let a = Upstream::start("a").await;
    let running = gateway(&one_group(
        &[a.address],
        "",
        r#"
        path = "/api/"
        rewrite_prefix = "/v2/"
        set_request_headers = { "x-client" = "$remote_addr", "x-route" = "api" }
        remove_request_headers = ["x-secret"]
        set_response_headers = { "x-served-by" = "gateway" }
        remove_response_headers = ["x-upstream"]
        "#,
    ))
    .await;
    let mut client = Client::connect(running.address).await;
    let reply = client
        .send(
            http::Request::get("/api/items?page=2")
                .header("host", "shop.test:8080")
                .header("x-secret", "s3")
                .header("x-forwarded-for", "203.0.113.9")
                .header("connection", "keep-alive, x-hop")
                .header("x-hop", "must not pass")
                .header("x-request-id", "req-17")
                .body(Full::default())
                .unwrap(),
        )
        .await;
    assert_eq!(reply.status, 200);
    let body = &reply.body;
    assert!(body.starts_with("a GET /v2/items?page=2\n"), "{body}");
    assert!(
        body.contains("host: shop.test:8080\n"),
        "the Host is kept: {body}"
    );
    assert!(
        body.contains("x-forwarded-for: 203.0.113.9, 127.0.0.1\n"),
        "{body}"
    );
    assert!(body.contains("x-forwarded-proto: http\n"), "{body}");
    assert!(body.contains("x-request-id: req-17\n"), "{body}");
    assert!(body.contains("x-client: 127.0.0.1\n"), "{body}");
    assert!(body.contains("x-route: api\n"), "{body}");
    assert!(!body.contains("x-secret"), "{body}");
    assert!(!body.contains("x-hop"), "named by Connection: {body}");
    assert_eq!(reply.headers["x-served-by"], "gateway");
    assert_eq!(reply.headers["x-request-id"], "req-17");
    assert!(reply.headers.get("x-upstream").is_none());

    // A new id when the client sends none (or a broken one).
    let reply = client.get("/api/x").await;
    let id = reply.headers["x-request-id"].to_str().unwrap().to_owned();
    assert_eq!(id.len(), 32);
    assert!(reply.body.contains(&format!("x-request-id: {id}\n")));

    // A body goes through, and no route is a 404.
    let reply = client
        .send(
            http::Request::post("/api/x/../echo")
                .header("host", "shop.test")
                .body(Full::new(Bytes::from_static(b"hello")))
                .unwrap(),
        )
        .await;
    assert_eq!(reply.status, 200);
    let reply = client.get("/elsewhere").await;
    assert_eq!(reply.status, 404);
    assert!(reply.body.contains("no route"));
}

#[tokio::test]
async fn round_robin_follows_the_weights_and_kept_connections_are_reused() {
    let (a, b, c) = (
        Upstream::start("a").await,
        Upstream::start("b").await,
        Upstream::start("c").await,
    );
    let running = gateway(&format!(
        r#"
        [upstreams.app]
        servers = [
          {{ address = "{}", weight = 3 }},
          {{ address = "{}" }},
          {{ address = "{}", down = true }},
        ]
        [[routes]]
        upstream = "app"
        "#,
        a.address, b.address, c.address
    ))
    .await;
    let mut client = Client::connect(running.address).await;
    let mut seen = Vec::new();
    for _ in 0..40 {
        seen.push(client.get("/").await.upstream().to_owned());
    }
    let counts = count(&seen);
    assert_eq!(counts.get("a"), Some(&30), "{counts:?}");
    assert_eq!(counts.get("b"), Some(&10), "{counts:?}");
    assert_eq!(counts.get("c"), None, "a down server is never used");
    // One client, one request at a time: one connection to each server.
    assert_eq!(a.connections.load(Ordering::SeqCst), 1);
    assert_eq!(b.connections.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_dead_server_is_retried_past_and_taken_out() {
    let a = Upstream::start("a").await;
    // A port nothing listens on.
    let dead = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let dead_address = dead.local_addr().unwrap();
    drop(dead);
    let running = gateway(&format!(
        r#"
        [upstreams.app]
        balance = "round_robin"
        servers = [{{ address = "{}" }}, {{ address = "{dead_address}", max_fails = 1, fail_timeout = "60s" }}]
        [[routes]]
        upstream = "app"
        "#,
        a.address
    ))
    .await;
    let mut client = Client::connect(running.address).await;
    for _ in 0..10 {
        let reply = client.get("/").await;
        assert_eq!(reply.status, 200);
        assert_eq!(reply.upstream(), "a");
    }
    // A POST goes on after a failed connect, too: it never left.
    let reply = client
        .send(
            http::Request::post("/echo")
                .header("host", "x")
                .body(Full::new(Bytes::from_static(b"once")))
                .unwrap(),
        )
        .await;
    assert_eq!((reply.status, reply.body.as_str()), (200, "once"));
    let report = &running.gateway.upstreams()["app"];
    let dead = report.iter().find(|s| s.address == dead_address).unwrap();
    assert!(!dead.usable, "{report:?}");
    assert_eq!(dead.failures, 1, "taken out after one failure: {report:?}");
}

#[tokio::test]
async fn retries_follow_the_conditions_and_spare_non_idempotent_requests() {
    let (a, b) = (Upstream::start("a").await, Upstream::start("b").await);
    let running = gateway(&one_group(
        &[a.address, b.address],
        "max_fails = 0",
        r#"
        retry = { tries = 2, on = ["error", "timeout", "http_503"] }
        timeout = "300ms"
        "#,
    ))
    .await;
    let mut client = Client::connect(running.address).await;
    // Both answer 503: two tries, then the last answer as it came.
    let reply = client.get("/status/503").await;
    assert_eq!(reply.status, 503);
    assert_eq!(
        a.requests.load(Ordering::SeqCst) + b.requests.load(Ordering::SeqCst),
        2
    );
    // A 500 is not among the conditions: one try.
    let before = a.requests.load(Ordering::SeqCst) + b.requests.load(Ordering::SeqCst);
    assert_eq!(client.get("/status/500").await.status, 500);
    assert_eq!(
        a.requests.load(Ordering::SeqCst) + b.requests.load(Ordering::SeqCst),
        before + 1
    );
    // A server that closes without answering: the GET goes on (and fails
    // on both; a try on a kept connection is sent once more on a new one,
    // as an idle close crossing the request looks the same), the POST is
    // not sent again.
    let before = a.requests.load(Ordering::SeqCst) + b.requests.load(Ordering::SeqCst);
    assert_eq!(client.get("/close").await.status, 502);
    let sent = a.requests.load(Ordering::SeqCst) + b.requests.load(Ordering::SeqCst) - before;
    assert!((2..=4).contains(&sent), "sent {sent} times");
    let before = a.requests.load(Ordering::SeqCst) + b.requests.load(Ordering::SeqCst);
    let reply = client
        .send(
            http::Request::post("/close")
                .header("host", "x")
                .body(Full::new(Bytes::from_static(b"charge the card")))
                .unwrap(),
        )
        .await;
    assert_eq!(reply.status, 502);
    assert_eq!(
        a.requests.load(Ordering::SeqCst) + b.requests.load(Ordering::SeqCst),
        before + 1
    );
    // Too slow: 504 after both tries.
    let reply = client.get("/slow/2000").await;
    assert_eq!(reply.status, 504, "{}", reply.body);
}

#[tokio::test]
async fn backups_take_over_only_when_the_primaries_are_gone() {
    let (a, backup) = (Upstream::start("a").await, Upstream::start("backup").await);
    let running = gateway(&format!(
        r#"
        [upstreams.app]
        servers = [{{ address = "{}" }}, {{ address = "{}", backup = true }}]
        [[routes]]
        upstream = "app"
        "#,
        a.address, backup.address
    ))
    .await;
    for _ in 0..5 {
        assert_eq!(get(running.address, "/").await.upstream(), "a");
    }
    a.kill();
    for _ in 0..5 {
        let reply = get(running.address, "/").await;
        assert_eq!((reply.status, reply.upstream()), (200, "backup"));
    }
}

#[tokio::test]
async fn max_conns_bounds_the_requests_in_flight_to_a_server() {
    let a = Upstream::start("a").await;
    let running = gateway(&format!(
        r#"
        [upstreams.app]
        {}
        [[routes]]
        upstream = "app"
        "#,
        servers(&[&a], "max_conns = 2")
    ))
    .await;
    let address = running.address;
    let slow: Vec<_> = (0..2)
        .map(|_| tokio::spawn(async move { get(address, "/slow/800").await.status }))
        .collect();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let reply = get(address, "/").await;
    assert_eq!(reply.status, 503, "{}", reply.body);
    for task in slow {
        assert_eq!(task.await.unwrap(), 200);
    }
    assert_eq!(get(address, "/").await.status, 200);
}

#[tokio::test]
async fn active_health_checks_take_a_server_out_and_bring_it_back() {
    let (a, b) = (Upstream::start("a").await, Upstream::start("b").await);
    let running = gateway(&one_group(
        &[a.address, b.address],
        r#"
        [upstreams.app.health_check]
        path = "/healthz"
        interval = "50ms"
        timeout = "500ms"
        fails = 2
        passes = 2
        "#,
        "",
    ))
    .await;
    b.set_health(503);
    let out = async {
        while running.gateway.upstreams()["app"]
            .iter()
            .any(|server| server.healthy != (server.address == a.address))
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(10), out)
        .await
        .unwrap();
    let mut client = Client::connect(running.address).await;
    for _ in 0..10 {
        assert_eq!(client.get("/").await.upstream(), "a");
    }
    b.set_health(200);
    let back = async {
        while running.gateway.upstreams()["app"]
            .iter()
            .any(|server| !server.healthy)
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(10), back)
        .await
        .unwrap();
    let seen: Vec<String> = futures_util::future::join_all(
        (0..10).map(|_| async { get(running.address, "/").await.upstream().to_owned() }),
    )
    .await;
    assert!(seen.iter().any(|name| name == "b"), "{seen:?}");
}

#[tokio::test]
async fn hashing_keeps_a_key_on_one_server() {
    let (a, b, c) = (
        Upstream::start("a").await,
        Upstream::start("b").await,
        Upstream::start("c").await,
    );
    let running = gateway(&one_group(
        &[a.address, b.address, c.address],
        r#"
        balance = "hash"
        hash_key = "$arg_user"
        consistent = true
        "#,
        "",
    ))
    .await;
    let mut client = Client::connect(running.address).await;
    let mut owners = HashMap::new();
    for round in 0..3 {
        for user in 0..30 {
            let owner = client
                .get(&format!("/?user={user}"))
                .await
                .upstream()
                .to_owned();
            if round == 0 {
                owners.insert(user, owner);
            } else {
                assert_eq!(owners[&user], owner, "user {user} moved");
            }
        }
    }
    let spread = count(&owners.values().cloned().collect::<Vec<_>>());
    assert_eq!(spread.len(), 3, "{spread:?}");
}

#[tokio::test]
async fn h2c_clients_are_served() {
    let a = Upstream::start("a").await;
    let running = gateway(&one_group(&[a.address], "", "")).await;
    let stream = tokio::net::TcpStream::connect(running.address)
        .await
        .unwrap();
    let (mut sender, connection) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(stream),
    )
    .await
    .unwrap();
    tokio::spawn(connection);
    let replies = futures_util::future::join_all((0..8).map(|n| {
        let request = http::Request::get(format!("http://h2.test/item/{n}"))
            .body(Full::<Bytes>::default())
            .unwrap();
        sender.send_request(request)
    }))
    .await;
    for (n, reply) in replies.into_iter().enumerate() {
        let reply = reply.unwrap();
        assert_eq!(reply.status(), 200);
        let body = http_body_util::BodyExt::collect(reply.into_body())
            .await
            .unwrap()
            .to_bytes();
        let body = String::from_utf8_lossy(&body);
        assert!(body.starts_with(&format!("a GET /item/{n}\n")), "{body}");
        assert!(body.contains("host: h2.test\n"), "{body}");
    }
}

#[tokio::test]
async fn a_reload_under_load_fails_no_request() {
    let (a, b) = (Upstream::start("a").await, Upstream::start("b").await);
    let config = |upstream: &Upstream| one_group(&[upstream.address], "", "");
    let running = gateway(&config(&a)).await;
    let address = running.address;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let load: Vec<_> = (0..4)
        .map(|_| {
            let stop = stop.clone();
            tokio::spawn(async move {
                let mut client = Client::connect(address).await;
                let (mut ok, mut failed, mut names) = (0, 0, Vec::new());
                // Bounded in count and time.
                for _ in 0..5_000 {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let reply = client.get("/").await;
                    if reply.status == 200 {
                        ok += 1;
                    } else {
                        failed += 1;
                    }
                    names.push(reply.upstream().to_owned());
                }
                (ok, failed, names)
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(200)).await;
    for round in 0..6 {
        let target = if round % 2 == 0 { &b } else { &a };
        let next = sinew_gateway::Config::from_toml(&config(target)).unwrap();
        running.gateway.reload(next).await.unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // A refused configuration leaves the running one.
    let refused = sinew_gateway::Config {
        routes: vec![sinew_gateway::config::Route {
            upstream: "nowhere".into(),
            ..running.gateway.config().routes[0].clone()
        }],
        ..running.gateway.config()
    };
    assert!(running.gateway.reload(refused).await.is_err());
    tokio::time::sleep(Duration::from_millis(100)).await;
    stop.store(true, Ordering::SeqCst);
    let (mut ok, mut failed, mut names) = (0, 0, Vec::new());
    for task in load {
        let (o, f, n) = task.await.unwrap();
        ok += o;
        failed += f;
        names.extend(n);
    }
    assert_eq!(failed, 0, "{ok} ok");
    let counts = count(&names);
    assert!(
        counts.contains_key("a") && counts.contains_key("b"),
        "{counts:?}"
    );
    // The last reload went to a: the next request goes there.
    assert_eq!(get(address, "/").await.upstream(), "a");
}

#[tokio::test]
async fn a_group_can_be_a_name_resolved_as_it_changes() {
    let a = Upstream::start("a").await;
    // localhost resolves to 127.0.0.1 (and ::1, where nothing listens:
    // requests sent there go on to the other, and it is taken out).
    let running = gateway(&format!(
        r#"
        [upstreams.app]
        resolve = "dns:///localhost:{}"
        [[routes]]
        upstream = "app"
        "#,
        a.address.port()
    ))
    .await;
    let report = running.gateway.upstreams();
    assert!(
        report["app"]
            .iter()
            .any(|server| server.address == a.address),
        "{report:?}"
    );
    let mut client = Client::connect(running.address).await;
    for _ in 0..10 {
        let reply = client.get("/").await;
        assert_eq!(
            (reply.status, reply.upstream()),
            (200, "a"),
            "{}",
            reply.body
        );
    }
}

#[tokio::test]
async fn a_lone_server_is_not_refused_for_its_health() {
    let a = Upstream::start("a").await;
    let running = gateway(&one_group(
        &[a.address],
        "max_fails = 1\nfail_timeout = \"60s\"",
        "retry = { tries = 1 }",
    ))
    .await;
    let mut client = Client::connect(running.address).await;
    assert_eq!(client.get("/close").await.status, 502);
    assert!(!running.gateway.upstreams()["app"][0].usable);
    // Out by its health, but the group has no other: it is tried anyway
    // (as nginx does), not refused for the next 60 s.
    let reply = client.get("/").await;
    assert_eq!(
        (reply.status, reply.upstream()),
        (200, "a"),
        "{}",
        reply.body
    );
    assert!(
        running.gateway.upstreams()["app"][0].usable,
        "a success clears it"
    );
}

#[tokio::test]
async fn broken_or_stalled_upstream_answers_end_cleanly() {
    use common::raw_upstream;
    let wait = Duration::from_secs(5);
    // Another coding than chunked: refused (the client would get it
    // unlabelled), as is a length beside it.
    for reply in [
        &b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\nxyz"[..],
        b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd",
        b"HTTP/1.1 99 Odd\r\n\r\n",
        b"garbage\r\n\r\n",
    ] {
        let (address, _task) = raw_upstream(reply, Duration::from_millis(10)).await;
        let running = gateway(&one_group(&[address], "", "retry = { tries = 1 }")).await;
        let reply_text = common::raw(
            running.address,
            b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
            wait,
        )
        .await;
        assert!(reply_text.starts_with("HTTP/1.1 502"), "{reply_text}");
    }
    // A length and chunked together: chunked, the length dropped.
    let (address, _task) = raw_upstream(
        b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
        Duration::from_millis(10),
    )
    .await;
    let running = gateway(&one_group(&[address], "", "")).await;
    let reply = common::get(running.address, "/").await;
    assert_eq!((reply.status, reply.body.as_str()), (200, "abc"));
    // A body that stops coming: the client's response ends at the route's
    // timeout instead of hanging.
    let (address, _task) = raw_upstream(
        b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc",
        Duration::from_secs(30),
    )
    .await;
    let running = gateway(&one_group(&[address], "", "timeout = \"300ms\"")).await;
    let started = std::time::Instant::now();
    let reply_text = common::raw(
        running.address,
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
        Duration::from_secs(10),
    )
    .await;
    assert!(reply_text.starts_with("HTTP/1.1 200"), "{reply_text}");
    assert!(!reply_text.ends_with("abcdefghij"));
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "the stalled body was cut off"
    );
}

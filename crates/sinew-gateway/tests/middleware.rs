//! A route's middleware through a running gateway, to a real upstream:
//! CORS preflights, API keys, a rate limit, the response cache, and the
//! access log, together as one route stacks them.

mod common;

use bytes::Bytes;
use common::{gateway, one_group, Client, Upstream};
use http_body_util::Full;
use std::sync::atomic::Ordering;
use std::time::Duration;

fn request(method: &str, path: &str, headers: &[(&str, &str)]) -> http::Request<Full<Bytes>> {
    let mut request = http::Request::builder()
        .method(method)
        .uri(path)
        .header("host", "api.test");
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    request.body(Full::default()).unwrap()
}

#[tokio::test]
async fn cors_auth_rate_limit_and_cache_stack_on_one_route() {
    let upstream = Upstream::start("app").await;
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("access.log");
    let config = format!(
        "[server]\naccess_log = \"{}\"\naccess_log_format = \"json\"\n{}",
        log.display(),
        one_group(
            &[upstream.address],
            "",
            r#"
            cors = { allow_origins = ["https://app.example"] }
            auth = { api_keys = ["k1", "k2"] }
            rate_limit = { rate = 0.001, burst = 4, key = "$auth_subject" }
            cache = { ttl = "60s", key = "$auth_subject $request_uri" }
            "#,
        )
    );
    let running = gateway(&config).await;
    let mut client = Client::connect(running.address).await;

    // A preflight is answered by the gateway, before any key is asked for.
    let preflight = client
        .send(request(
            "OPTIONS",
            "/items",
            &[
                ("origin", "https://app.example"),
                ("access-control-request-method", "GET"),
                ("access-control-request-headers", "x-api-key"),
            ],
        ))
        .await;
    assert_eq!(preflight.status, 204);
    assert_eq!(
        preflight.headers["access-control-allow-origin"],
        "https://app.example"
    );
    assert_eq!(upstream.requests.load(Ordering::SeqCst), 0);

    // No key, a wrong key: 401, nothing reaches the upstream.
    for headers in [&[][..], &[("x-api-key", "nope")]] {
        let refused = client.send(request("GET", "/items", headers)).await;
        assert_eq!(refused.status, 401, "{headers:?}");
        assert_eq!(refused.headers["www-authenticate"], "Bearer");
    }
    assert_eq!(upstream.requests.load(Ordering::SeqCst), 0);

    // With a key: the first GET goes up, the second comes from the cache
    // (kept per caller: the key names $auth_subject); the browser's
    // request gets its CORS header.
    let first = client
        .send(request(
            "GET",
            "/items",
            &[("x-api-key", "k1"), ("origin", "https://app.example")],
        ))
        .await;
    assert_eq!(first.status, 200);
    assert_eq!(first.headers["x-cache"], "MISS");
    assert_eq!(
        first.headers["access-control-allow-origin"],
        "https://app.example"
    );
    let second = client
        .send(request("GET", "/items", &[("x-api-key", "k1")]))
        .await;
    assert_eq!(second.headers["x-cache"], "HIT");
    assert_eq!(second.body, first.body);
    assert_eq!(upstream.requests.load(Ordering::SeqCst), 1);

    // The limit is per key (who authenticated): k1 has used 2 of its 4.
    for _ in 0..2 {
        assert_eq!(
            client
                .send(request("GET", "/items", &[("x-api-key", "k1")]))
                .await
                .status,
            200
        );
    }
    let limited = client
        .send(request("GET", "/items", &[("x-api-key", "k1")]))
        .await;
    assert_eq!(limited.status, 429);
    assert!(
        limited.headers["retry-after"]
            .to_str()
            .unwrap()
            .parse::<u64>()
            .unwrap()
            >= 1
    );
    assert_eq!(
        client
            .send(request("GET", "/items", &[("x-api-key", "k2")]))
            .await
            .status,
        200
    );

    // Every request answered is in the access log, with its status.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let lines = loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|line| serde_json::from_str(line).unwrap())
            .collect();
        if lines.len() >= 9 || std::time::Instant::now() > deadline {
            break lines;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let statuses: Vec<u64> = lines
        .iter()
        .map(|line| line["status"].as_u64().unwrap())
        .collect();
    assert_eq!(statuses, vec![204, 401, 401, 200, 200, 200, 200, 429, 200]);
    assert!(lines
        .iter()
        .all(|line| line["uri"] == "/items" && line["remote_addr"] == "127.0.0.1"));
    assert!(lines[3]["request_id"]
        .as_str()
        .is_some_and(|id| !id.is_empty()));
}

#[tokio::test]
async fn bad_middleware_settings_are_refused_at_load() {
    for (route, expected) in [
        ("cors = { allow_origins = [] }", "allow_origins is empty"),
        ("auth = { }", "nobody could pass"),
        ("rate_limit = { rate = 0.0 }", "must be more than 0"),
        ("rate_limit = { key = \"$nope\" }", "$nope"),
        ("cache = { max_entries = 0 }", "must be more than 0"),
        ("cache = { ttl = \"soon\" }", "soon"),
    ] {
        let config = one_group(&["127.0.0.1:1".parse().unwrap()], "", route);
        let error = match sinew_gateway::Config::from_toml(&config) {
            Err(error) => error.to_string(),
            Ok(config) => sinew_gateway::Gateway::new(config)
                .await
                .unwrap_err()
                .to_string(),
        };
        assert!(error.contains(expected), "{route}: {error}");
    }
}

#[tokio::test]
async fn a_host_that_is_not_a_host_is_refused() {
    let upstream = Upstream::start("app").await;
    let running = gateway(&one_group(&[upstream.address], "", "")).await;
    let mut client = Client::connect(running.address).await;
    let refused = client
        .send(
            http::Request::get("/books/1")
                .header("host", "victim.test/v1/shelves")
                .body(Full::default())
                .unwrap(),
        )
        .await;
    assert_eq!(refused.status, 400);
    assert_eq!(upstream.requests.load(Ordering::SeqCst), 0);
    let fine = client
        .send(
            http::Request::get("/books/1")
                .header("host", "[::1]:8080")
                .body(Full::default())
                .unwrap(),
        )
        .await;
    assert_eq!(fine.status, 200);
}

#[tokio::test]
async fn other_spellings_of_a_guarded_path_meet_its_route() {
    let upstream = Upstream::start("app").await;
    let config = format!(
        "[upstreams.app]\nservers = [{{ address = \"{}\" }}]\n\
         [[routes]]\npath = \"/admin/\"\nupstream = \"app\"\nauth = {{ api_keys = [\"k\"] }}\n\
         [[routes]]\npath = \"/\"\nupstream = \"app\"\n",
        upstream.address
    );
    let running = gateway(&config).await;
    let mut client = Client::connect(running.address).await;
    for path in [
        "/admin/x",
        "//admin/x",
        "/%61dmin/x",
        "/./admin/x",
        "/public/../admin/x",
        "/%2e/admin//x",
    ] {
        let reply = client.send(request("GET", path, &[])).await;
        assert_eq!(reply.status, 401, "{path}: {}", reply.body);
    }
    assert_eq!(upstream.requests.load(Ordering::SeqCst), 0);
    // With the key, the upstream gets the path in its normal form.
    let reply = client
        .send(request(
            "GET",
            "/public/..//%61dmin/./x?q=%2e",
            &[("x-api-key", "k")],
        ))
        .await;
    assert_eq!(reply.status, 200);
    assert!(
        reply.body.starts_with("app GET /admin/x?q=%2e\n"),
        "{}",
        reply.body
    );
    for path in ["/../admin/x", "/a%zz", "/a%00"] {
        let reply = client.send(request("GET", path, &[])).await;
        assert_eq!(reply.status, 400, "{path}: {}", reply.body);
    }
    assert_eq!(upstream.requests.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn the_access_log_notes_clients_gone_and_follows_a_rotation() {
    use tokio::io::AsyncWriteExt;
    let upstream = Upstream::start("app").await;
    let dir = tempfile::tempdir().unwrap();
    let (log, rotated) = (
        dir.path().join("access.log"),
        dir.path().join("access.log.1"),
    );
    let config = format!(
        "[server]\naccess_log = \"{}\"\n{}",
        log.display(),
        one_group(&[upstream.address], "", "")
    );
    let running = gateway(&config).await;
    let lines = |path: &std::path::Path, count: usize| {
        let path = path.to_owned();
        async move {
            for _ in 0..200 {
                let text = std::fs::read_to_string(&path).unwrap_or_default();
                if text.lines().count() >= count {
                    return text;
                }
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
            panic!("{path:?} never had {count} lines");
        }
    };
    // A client that leaves before its (slow) answer: 499, as nginx logs it.
    let mut stream = tokio::net::TcpStream::connect(running.address)
        .await
        .unwrap();
    stream
        .write_all(b"GET /slow/3000 HTTP/1.1\r\nHost: api.test\r\n\r\n")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    drop(stream);
    let text = lines(&log, 1).await;
    assert!(
        text.contains("\"GET /slow/3000 HTTP/1.1\" 499 0 "),
        "{text}"
    );
    // logrotate renames the file and the gateway reloads: the next line
    // goes to a new file of the old name.
    std::fs::rename(&log, &rotated).unwrap();
    running
        .gateway
        .reload(sinew_gateway::Config::from_toml(&config).unwrap())
        .await
        .unwrap();
    let mut client = Client::connect(running.address).await;
    assert_eq!(client.get("/after").await.status, 200);
    let text = lines(&log, 1).await;
    assert!(text.contains("\"GET /after HTTP/1.1\" 200"), "{text}");
    assert_eq!(lines(&rotated, 1).await.lines().count(), 1);
}

#[tokio::test]
async fn a_reload_keeps_buckets_and_cached_answers_it_does_not_change() {
    let upstream = Upstream::start("app").await;
    let config = |burst: u32| {
        one_group(
            &[upstream.address],
            "",
            &format!(
                "rate_limit = {{ rate = 0.001, burst = {burst} }}\ncache = {{ ttl = \"60s\" }}\n"
            ),
        )
    };
    let running = gateway(&config(2)).await;
    let mut client = Client::connect(running.address).await;
    let cached = client.get("/page").await;
    assert_eq!(cached.headers["x-cache"], "MISS");
    assert_eq!(client.get("/other").await.status, 200);
    assert_eq!(client.get("/page").await.status, 429);
    let reload = |burst: u32| {
        let gateway = running.gateway.clone();
        let text = config(burst);
        async move {
            gateway
                .reload(sinew_gateway::Config::from_toml(&text).unwrap())
                .await
                .unwrap()
        }
    };
    // The same settings: the empty bucket stays empty.
    reload(2).await;
    let mut client = Client::connect(running.address).await;
    assert_eq!(client.get("/page").await.status, 429);
    // A new limit: new buckets; and the cache, unchanged, still answers.
    reload(3).await;
    let mut client = Client::connect(running.address).await;
    let again = client.get("/page").await;
    assert_eq!(again.status, 200);
    assert_eq!(again.headers["x-cache"], "HIT");
    assert_eq!(again.body, cached.body);
}

//! `sinew serve --admin`: the admin endpoint answers liveness and readiness,
//! and a real Prometheus (Debian's, started here on a free port with its data
//! in a temporary directory) scrapes `/metrics`; PromQL queries through its
//! HTTP API return the calls made, under the expected names and labels.

mod common;

use common::{sinew, spawn_serve, Killed};
use std::io::{BufRead, Read};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// `GET path` on `address`: the status code and the body.
fn get(address: SocketAddr, path: &str) -> (u16, String) {
    common::http_get(address, path)
        .unwrap_or_else(|| panic!("no HTTP answer to GET {path} from {address}"))
}

/// A free TCP port on 127.0.0.1 (bound, then released for a child to take).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Prometheus scraping `target` every second, its data in `dir`.
fn start_prometheus(target: SocketAddr, dir: &std::path::Path) -> (Killed, SocketAddr) {
    let config = dir.join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n\
             scrape_configs:\n  - job_name: sinew\n    static_configs:\n      - targets: ['{target}']\n"
        ),
    )
    .unwrap();
    let web = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let child = Command::new("prometheus")
        .arg(format!("--config.file={}", config.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.join("data").display()
        ))
        .arg(format!("--web.listen-address={web}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("prometheus (Debian's `prometheus` package; scripts/install-peers.sh installs it)");
    (Killed(child), web)
}

/// The result vector of a PromQL instant query, once it has at least
/// `wanted` series (Prometheus scrapes every second; 30 s at most).
fn query(prometheus: SocketAddr, promql: &str, wanted: usize) -> Vec<serde_json::Value> {
    let encoded: String = promql
        .bytes()
        .map(|byte| match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'_' | b'.' | b'-' => {
                (byte as char).to_string()
            }
            _ => format!("%{byte:02X}"),
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let answer = TcpStream::connect(prometheus)
            .ok()
            .map(|_| get(prometheus, &format!("/api/v1/query?query={encoded}")));
        if let Some((200, body)) = &answer {
            let json: serde_json::Value = serde_json::from_str(body).unwrap();
            assert_eq!(json["status"], "success", "{body}");
            let result = json["data"]["result"].as_array().unwrap().clone();
            if result.len() >= wanted {
                return result;
            }
        }
        assert!(
            Instant::now() < deadline,
            "PromQL {promql:?} did not return {wanted} series in 30 s: {answer:?}"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

#[test]
fn prometheus_scrapes_the_admin_endpoint_and_promql_finds_the_calls() {
    let dir = std::env::temp_dir().join(format!(
        "sinew-observability-{}-{}",
        std::process::id(),
        common::rand_suffix()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let (child, mut stdout, addresses) = spawn_serve(
        &["tcp://127.0.0.1:0".to_owned()],
        &["--admin", "127.0.0.1:0"],
        Stdio::null(),
    );
    let _serve = Killed(child);
    let admin: SocketAddr = {
        let mut line = String::new();
        loop {
            line.clear();
            assert!(stdout.read_line(&mut line).unwrap() > 0, "no admin line");
            if let Some(rest) = line.trim().strip_prefix("admin endpoint on http://") {
                break rest.split(' ').next().unwrap().parse().unwrap();
            }
        }
    };

    assert_eq!(get(admin, "/healthz"), (200, "ok\n".to_owned()));
    assert_eq!(get(admin, "/readyz"), (200, "ready\n".to_owned()));
    assert_eq!(get(admin, "/nothing-here").0, 404);

    // Three echoes over sinew, one over gRPC.
    for address in [&addresses[0], &addresses[0], &addresses[0]] {
        let output = sinew()
            .args([
                "call",
                address,
                "grpc.examples.echo.Echo/UnaryEcho",
                r#"{"message":"hi"}"#,
            ])
            .output()
            .unwrap();
        assert!(output.status.success(), "{output:?}");
    }
    let grpc = addresses[0].replacen("tcp://", "grpc://", 1);
    let output = sinew()
        .args([
            "call",
            &grpc,
            "grpc.examples.echo.Echo/UnaryEcho",
            r#"{"message":"hi"}"#,
        ])
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");

    let (status, text) = get(admin, "/metrics");
    assert_eq!(status, 200);
    assert!(
        text.contains("# TYPE rpc_server_call_duration_seconds histogram"),
        "{text}"
    );

    // The dashboard's data, and `sinew top` reading it.
    let (status, page) = get(admin, "/");
    assert_eq!(status, 200);
    assert!(page.contains("api/events"), "the dashboard page");
    let (status, snapshot) = get(admin, "/api/snapshot");
    assert_eq!(status, 200);
    let snapshot: serde_json::Value = serde_json::from_str(&snapshot).unwrap();
    assert_eq!(snapshot["ready"], true);
    let server = &snapshot["components"]["server"];
    assert!(server["calls_started"].as_u64().unwrap() >= 4, "{server}");
    assert!(server["received_bytes"].as_u64().unwrap() > 0, "{server}");
    assert!(snapshot["series"]
        .as_array()
        .unwrap()
        .iter()
        .any(
            |series| series["method"] == "grpc.examples.echo.Echo/UnaryEcho"
                && series["side"] == "server"
        ));
    let output = sinew()
        .args(["top", &format!("http://{admin}"), "--once"])
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    let table = String::from_utf8_lossy(&output.stdout);
    let row = table
        .lines()
        .find(|line| line.contains("grpc.examples.echo.Echo/UnaryEcho") && line.contains(" sinew "))
        .unwrap_or_else(|| panic!("no echo row in\n{table}"));
    assert!(
        row.trim_end().ends_with(" 3"),
        "three calls over sinew: {row}"
    );
    let server = table
        .lines()
        .find(|line| line.starts_with("server: "))
        .unwrap_or_else(|| panic!("no server line in\n{table}"));
    assert!(server.contains("refused: none"), "{server}");

    let (_prometheus, web) = start_prometheus(admin, &dir);
    let started = query(
        web,
        r#"rpc_server_call_started_total{rpc_method="grpc.examples.echo.Echo/UnaryEcho"}"#,
        2,
    );
    let mut by_system: Vec<(String, String)> = started
        .iter()
        .map(|series| {
            let labels = &series["metric"];
            assert_eq!(labels["job"], "sinew");
            assert_eq!(labels["instance"], admin.to_string());
            (
                labels["rpc_system_name"].as_str().unwrap().to_owned(),
                series["value"][1].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    by_system.sort();
    assert_eq!(
        by_system,
        [
            ("grpc".to_owned(), "1".to_owned()),
            ("sinew".to_owned(), "3".to_owned())
        ]
    );
    // The duration histogram, summed over protocols per status; a 99th
    // percentile PromQL computes from its buckets.
    let ok = query(
        web,
        r#"sum by (rpc_response_status_code) (rpc_server_call_duration_seconds_count{rpc_method="grpc.examples.echo.Echo/UnaryEcho"})"#,
        1,
    );
    assert_eq!(ok[0]["metric"]["rpc_response_status_code"], "OK");
    assert_eq!(ok[0]["value"][1], "4");
    let p99 = query(
        web,
        r#"histogram_quantile(0.99, sum by (le) (rpc_server_call_duration_seconds_bucket{rpc_method="grpc.examples.echo.Echo/UnaryEcho"}))"#,
        1,
    );
    let seconds: f64 = p99[0]["value"][1].as_str().unwrap().parse().unwrap();
    assert!(seconds > 0.0 && seconds < 100.0, "p99 {seconds}");
    // The server's own figures: connections (each `sinew call` made one),
    // bytes both ways, every refusal reason and limit as a series of its own.
    let value = |series: &serde_json::Value| -> f64 {
        series["value"][1].as_str().unwrap().parse().unwrap()
    };
    let accepted = query(web, "sinew_server_connections_accepted_total", 1);
    assert!(value(&accepted[0]) >= 4.0, "{accepted:?}");
    for moved in [
        "sinew_server_received_bytes_total > 0",
        "sinew_server_sent_bytes_total > 0",
    ] {
        query(web, moved, 1);
    }
    let refused = query(web, "sinew_server_connections_refused_total", 3);
    let mut reasons: Vec<&str> = refused
        .iter()
        .map(|series| series["metric"]["reason"].as_str().unwrap())
        .collect();
    reasons.sort();
    assert_eq!(reasons, ["address_limit", "connection_limit", "handshake"]);
    let limits = query(web, "sinew_server_limit_hits_total", 7);
    assert_eq!(limits.len(), 7, "{limits:?}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn with_sinew_log_a_failed_call_is_logged_with_its_trace_id() {
    let mut command = sinew();
    command
        .args(["serve", "--listen", "tcp://127.0.0.1:0"])
        .env("SINEW_LOG", "sinew_telemetry=debug")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = command.spawn().unwrap();
    let mut stdout = std::io::BufReader::new(child.stdout.take().unwrap());
    let stderr = child.stderr.take().unwrap();
    let serve = Killed(child);
    let mut line = String::new();
    let address = loop {
        line.clear();
        assert!(
            stdout.read_line(&mut line).unwrap() > 0,
            "no listening line"
        );
        if let Some(address) = line.trim().strip_prefix("listening on ") {
            break address.to_owned();
        }
    };
    // A key nobody put: NOT_FOUND, with a traceparent the caller chose.
    let output = sinew()
        .args([
            "call",
            &address,
            "sinew.examples.kv.KeyValue/Get",
            r#"{"key":"nobody-put-this"}"#,
            "-H",
            "traceparent=00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        ])
        .output()
        .unwrap();
    assert!(!output.status.success());
    drop(serve);
    let mut logs = String::new();
    std::io::BufReader::new(stderr)
        .read_to_string(&mut logs)
        .unwrap();
    let failed = logs
        .lines()
        .find(|line| line.contains("call failed"))
        .unwrap_or_else(|| panic!("no failed call in the logs:\n{logs}"));
    assert!(
        failed.contains("trace_id=4bf92f3577b34da6a3ce929d0e0e4736"),
        "{failed}"
    );
    assert!(failed.contains("NOT_FOUND"), "{failed}");
    assert!(
        failed.contains("sinew.examples.kv.KeyValue/Get"),
        "{failed}"
    );
}

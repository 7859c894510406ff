//! `sinew gateway` as a process, reached with curl: requests over HTTP/1.1
//! and h2c, a reload on SIGHUP (and a refused one that leaves the running
//! configuration), `--check`, and a stop on SIGTERM.

mod common;

use common::{sinew, Killed};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// A tiny HTTP/1.1 server on a thread: every request gets `name` back,
/// connections kept alive.
fn upstream(name: &'static str) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap().to_string();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            std::thread::spawn(move || {
                let mut buffer = Vec::new();
                let mut chunk = [0u8; 4096];
                loop {
                    while !buffer.windows(4).any(|w| w == b"\r\n\r\n") {
                        match stream.read(&mut chunk) {
                            Ok(0) | Err(_) => return,
                            Ok(read) => buffer.extend_from_slice(&chunk[..read]),
                        }
                    }
                    let end = buffer.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
                    buffer.drain(..end);
                    let reply = format!(
                        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nContent-Type: text/plain\r\n\r\n{name}",
                        name.len()
                    );
                    if stream.write_all(reply.as_bytes()).is_err() {
                        return;
                    }
                }
            });
        }
    });
    address
}

fn config(upstream: &str) -> String {
    format!(
        "[server]\nlisten = [\"127.0.0.1:0\"]\n\n[upstreams.app]\nservers = [{{ address = \"{upstream}\" }}]\n\n[[routes]]\nupstream = \"app\"\n"
    )
}

fn curl(args: &[&str]) -> String {
    let output = Command::new("curl")
        .args(["-sS", "--max-time", "5"])
        .args(args)
        .output()
        .expect("curl is installed (scripts/install-peers.sh)");
    assert!(
        output.status.success(),
        "curl {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn signal(process: &Killed, signal: nix::sys::signal::Signal) {
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(process.0.id() as i32), signal).unwrap();
}

#[test]
fn serves_reloads_on_sighup_and_stops_on_sigterm() {
    let (a, b) = (upstream("from-a"), upstream("from-b"));
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gateway.toml");
    std::fs::write(&path, config(&a)).unwrap();
    let mut child = Killed(
        sinew()
            .args([
                "gateway",
                "--workers",
                "1",
                "--admin",
                "127.0.0.1:0",
                "--config",
            ])
            .arg(&path)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let stdout = child.0.stdout.take().unwrap();
    let stderr = child.0.stderr.take().unwrap();
    let (lines, seen) = std::sync::mpsc::channel::<String>();
    for stream in [Box::new(stdout) as Box<dyn Read + Send>, Box::new(stderr)] {
        let lines = lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stream).lines().map_while(Result::ok) {
                let _ = lines.send(line);
            }
        });
    }
    let wait_for = |what: &str| -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match seen.recv_timeout(left) {
                Ok(line) if line.contains(what) => return line,
                Ok(_) => {}
                Err(_) => panic!("no line with {what:?} from sinew gateway"),
            }
        }
    };
    let listening = wait_for("listening on ");
    let url = listening
        .trim()
        .strip_prefix("listening on ")
        .unwrap()
        .to_owned();
    let admin = wait_for("admin endpoint on ");
    let admin = admin
        .trim()
        .strip_prefix("admin endpoint on ")
        .unwrap()
        .split(' ')
        .next()
        .unwrap()
        .to_owned();
    assert_eq!(curl(&[&url]), "from-a");
    assert_eq!(
        curl(&["--http2-prior-knowledge", &format!("{url}/h2")]),
        "from-a"
    );
    let headers = curl(&["-D", "-", "-o", "/dev/null", &url]);
    assert!(
        headers.to_ascii_lowercase().contains("x-request-id: "),
        "{headers}"
    );
    // Three requests went to a: the admin endpoint says so.
    let metrics = curl(&[&format!("{admin}/metrics")]);
    let series = format!(
        "sinew_gateway_upstream_requests_total{{gateway=\"gateway\",upstream=\"app\",server=\"{a}\"}} 3"
    );
    assert!(metrics.contains(&series), "{series} in\n{metrics}");
    assert!(metrics.contains("sinew_gateway_upstream_up{"), "{metrics}");
    // And per route: three 2xx responses, and the time they took.
    let route =
        "sinew_gateway_route_responses_total{gateway=\"gateway\",route=\"/\",code=\"2xx\"} 3";
    assert!(metrics.contains(route), "{route} in\n{metrics}");
    assert!(
        metrics.contains(
            "sinew_gateway_route_response_seconds_total{gateway=\"gateway\",route=\"/\"}"
        ),
        "{metrics}"
    );

    // SIGHUP with a new file: the next requests go to b.
    std::fs::write(&path, config(&b)).unwrap();
    signal(&child, nix::sys::signal::Signal::SIGHUP);
    wait_for("reloaded");
    assert_eq!(curl(&[&url]), "from-b");

    // A broken file is refused; b still serves.
    std::fs::write(&path, "[[routes]]\nupstream = \"nowhere\"\n").unwrap();
    signal(&child, nix::sys::signal::Signal::SIGHUP);
    let refused = wait_for("reload refused");
    assert!(refused.contains("not defined"), "{refused}");
    assert_eq!(curl(&[&url]), "from-b");

    signal(&child, nix::sys::signal::Signal::SIGTERM);
    wait_for("stopped");
    let status = child.0.wait().unwrap();
    assert!(status.success(), "{status:?}");
}

#[test]
fn check_says_whether_a_file_would_run() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.toml");
    std::fs::write(&good, config("127.0.0.1:9")).unwrap();
    let output = sinew()
        .args(["gateway", "--check", "--config"])
        .arg(&good)
        .output()
        .unwrap();
    assert!(output.status.success());
    assert!(String::from_utf8_lossy(&output.stdout)
        .contains("1 upstream groups, 0 services, 1 routes: ok"));
    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        "[upstreams.app]\nservers = [{ address = \"127.0.0.1:9\", wieght = 2 }]\n",
    )
    .unwrap();
    let output = sinew()
        .args(["gateway", "--check", "--config"])
        .arg(&bad)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let error = String::from_utf8_lossy(&output.stderr);
    assert!(error.contains("wieght"), "{error}");
}

#[test]
fn import_nginx_writes_a_configuration_that_runs() {
    let dir = tempfile::tempdir().unwrap();
    let nginx = dir.path().join("nginx.conf");
    std::fs::write(
        &nginx,
        r#"
events { worker_connections 1024; }
http {
    limit_req_zone $binary_remote_addr zone=api:10m rate=10r/s;
    upstream shop {
        server 10.0.0.1:8080 weight=3;
        server 10.0.0.2:8080 max_fails=3 fail_timeout=30s;
        server 10.0.0.3:8080 backup;
        keepalive 32;
    }
    server {
        listen 8080;
        location /api/ {
            limit_req zone=api burst=20;
            proxy_pass http://shop/;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header X-Real-IP $remote_addr;
            proxy_next_upstream error timeout http_503;
            proxy_next_upstream_tries 2;
            proxy_read_timeout 10s;
        }
    }
}
"#,
    )
    .unwrap();
    let toml = dir.path().join("gateway.toml");
    let output = sinew()
        .args(["gateway", "import-nginx"])
        .arg(&nginx)
        .arg("-o")
        .arg(&toml)
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    let notes = String::from_utf8_lossy(&output.stderr);
    assert!(
        notes.contains("limit_req"),
        "the rate limit is reported: {notes}"
    );
    let output = sinew()
        .args(["gateway", "--check", "--config"])
        .arg(&toml)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&output.stderr),
        std::fs::read_to_string(&toml).unwrap()
    );
    let written = std::fs::read_to_string(&toml).unwrap();
    for expected in ["10.0.0.1:8080", "backup = true", "http_503", "x-real-ip"] {
        assert!(
            written
                .to_ascii_lowercase()
                .contains(&expected.to_ascii_lowercase()),
            "{expected} in {written}"
        );
    }
    // Not nginx at all: a clear error with the line.
    std::fs::write(&nginx, "http {\n  upstream a {\n").unwrap();
    let output = sinew()
        .args(["gateway", "import-nginx"])
        .arg(&nginx)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
}

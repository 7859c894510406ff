//! The live dashboard in a real browser, Debian's Chromium, headless, driven
//! over the DevTools protocol: `sinew demo --dashboard` (its members, and
//! its client's view of them), and `sinew dashboard` for a gossip cluster of
//! `sinew serve --admin` members under load. The page loads, lists the
//! members, a calls-a-second chart shows non-zero values, the servers'
//! connections and the clients' endpoints show, and it updates within 2 s.
//! With `SINEW_SCREENSHOTS=DIR` the cluster test also saves a screenshot
//! there (how docs/dashboard.png is made).

#[path = "common/browser.rs"]
mod browser;
mod common;

use browser::{chromium, profile, Page};
use common::{sinew, spawn_serve, Killed};
use serde_json::{json, Value};
use std::io::BufRead;
use std::process::Stdio;
use std::time::Duration;

/// Reads `stdout` up to a line starting with `prefix`; the rest of it.
fn line_after(stdout: &mut impl BufRead, prefix: &str) -> String {
    let mut line = String::new();
    loop {
        line.clear();
        assert!(
            stdout.read_line(&mut line).unwrap() > 0,
            "no line starting {prefix:?}"
        );
        if let Some(rest) = line.trim().strip_prefix(prefix) {
            return rest.to_owned();
        }
    }
}

/// A `sinew serve` member named `name` (seeding from `join`, or the first)
/// with an admin endpoint, and more `flags`: the child and its gossip
/// address.
fn member(name: &str, join: Option<&str>, more: &[&str]) -> (Killed, String) {
    let mut flags = vec!["--name", name, "--admin", "127.0.0.1:0"];
    match join {
        Some(seed) => flags.extend(["--join", seed]),
        None => flags.extend(["--gossip", "127.0.0.1:0"]),
    }
    flags.extend(more);
    let (child, mut stdout, _) =
        spawn_serve(&["tcp://127.0.0.1:0".to_owned()], &flags, Stdio::null());
    let member = line_after(
        &mut stdout,
        &format!("member {name} of cluster sinew, gossip on "),
    );
    // Keep reading its output so that it never blocks on a full pipe.
    std::thread::spawn(move || std::io::copy(&mut stdout, &mut std::io::sink()));
    (Killed(child), member)
}

/// Live: the page counts the events it drew; two seconds apart, more.
async fn updates_within_2s(page: &mut Page) {
    let count = "Number(document.getElementById('updates').dataset.count)";
    let first = page.eval(count).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let second = page.eval(count).await;
    assert!(
        second.as_f64() > first.as_f64(),
        "no update within 2 s: {first} then {second}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_serves_a_dashboard_of_its_members_and_its_clients_view() {
    let mut demo = sinew()
        .args(["demo", "--dashboard", "127.0.0.1:0"])
        .args(["--duration", "40s", "-c", "4"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdout = std::io::BufReader::new(demo.stdout.take().unwrap());
    let _demo = Killed(demo);
    let url = line_after(&mut stdout, "dashboard on ");
    std::thread::spawn(move || std::io::copy(&mut stdout, &mut std::io::sink()));
    let profile = profile();
    let (_browser, mut page) = chromium(&profile, &url).await;

    page.wait_for(
        "the demo's four members",
        r#"["node-1", "node-2", "node-3", "node-4"].every(name =>
             document.querySelector(`tr.member[data-member="${name}"]`))"#,
    )
    .await;
    page.wait_for(
        "a non-zero calls-a-second chart",
        r#"[...document.querySelectorAll('.chart[data-method^="grpc.examples.echo.Echo/"]')].some(c => Number(c.dataset.qps) > 0)"#,
    )
    .await;
    // The client's balanced channel, as the process "demo client": every
    // node it calls (the events later change their health).
    page.wait_for(
        "the demo client's view of the nodes",
        r#"document.querySelectorAll('tr.endpoint[data-member="demo client"][data-target="grpc.examples.echo.Echo"]').length >= 4"#,
    )
    .await;
    page.wait_for(
        "the nodes' servers with connections",
        r#"[...document.querySelectorAll("tr.server")].filter(r => Number(r.dataset.connections) > 0).length >= 3"#,
    )
    .await;
    updates_within_2s(&mut page).await;
    drop(page);
    let _ = std::fs::remove_dir_all(&profile);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cluster_dashboard_lists_members_charts_calls_and_updates_live() {
    let (_first, gossip) = member("node-a", None, &[]);
    let seed = format!("gossip://{gossip}");
    // node-b forwards what it does not serve to the cluster's Echo members:
    // a balanced client, whose view of its endpoints the page shows.
    let upstream = format!("{seed}/grpc.examples.echo.Echo");
    let (_second, _) = member("node-b", Some(&gossip), &["--forward", &upstream]);
    // Load on the cluster for the whole test (bounded in time).
    let _load = Killed(
        sinew()
            .args([
                "bench",
                &seed,
                "grpc.examples.echo.Echo/UnaryEcho",
                r#"{"message":"x"}"#,
            ])
            .args(["--duration", "60s", "-c", "2"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let mut dashboard = sinew()
        .args(["dashboard", &seed, "--listen", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdout = std::io::BufReader::new(dashboard.stdout.take().unwrap());
    let _dashboard = Killed(dashboard);
    let url = line_after(&mut stdout, "dashboard on ");

    let profile = profile();
    let (_browser, mut page) = chromium(&profile, &url).await;

    page.wait_for(
        "both members",
        r#"[...document.querySelectorAll("tr.member")].map(r => r.dataset.member).sort().join() === "node-a,node-b""#,
    )
    .await;
    page.wait_for(
        "a non-zero calls-a-second chart",
        r#"[...document.querySelectorAll('.chart[data-method="grpc.examples.echo.Echo/UnaryEcho"]')].some(c => Number(c.dataset.qps) > 0)"#,
    )
    .await;
    updates_within_2s(&mut page).await;
    // The charts draw lines, and the methods table has both members' rows.
    let drawn = page
        .eval(r#"document.querySelector('.chart .qline').getAttribute('d').length > 10"#)
        .await;
    assert_eq!(drawn, Value::Bool(true));
    let rows = page
        .eval(r#"[...document.querySelectorAll('tr.method[data-method="grpc.examples.echo.Echo/UnaryEcho"]')].length"#)
        .await;
    assert_eq!(rows, json!(2));
    // Each member's server: connections open (the load's), bytes moving.
    page.wait_for(
        "both members' servers, with connections and traffic",
        r#"[...document.querySelectorAll("tr.server")].filter(r => Number(r.dataset.connections) > 0
             && Number(r.querySelector("td:nth-child(4)").textContent.replace(/,/g, "")) > 0).length === 2"#,
    )
    .await;
    // node-b's balanced client sees both members' endpoints, ready.
    page.wait_for(
        "node-b's view of its two endpoints",
        r#"[...document.querySelectorAll('tr.endpoint[data-member="node-b"][data-target="grpc.examples.echo.Echo"]')]
             .filter(r => r.dataset.health === "ready").length === 2"#,
    )
    .await;

    if let Ok(dir) = std::env::var("SINEW_SCREENSHOTS") {
        tokio::time::sleep(Duration::from_secs(20)).await;
        // The whole page, every table in.
        let height = page.eval("document.documentElement.scrollHeight").await;
        page.command(
            "Emulation.setDeviceMetricsOverride",
            json!({ "width": 1400, "height": height, "deviceScaleFactor": 1, "mobile": false }),
        )
        .await;
        let shot = page
            .command("Page.captureScreenshot", json!({ "format": "png" }))
            .await;
        use base64_decode::decode;
        let png = decode(shot["data"].as_str().unwrap());
        std::fs::write(std::path::Path::new(&dir).join("dashboard.png"), png).unwrap();
    }
    drop(page);
    let _ = std::fs::remove_dir_all(&profile);
}

/// Base64 (standard alphabet) to bytes, for the screenshot.
mod base64_decode {
    pub(super) fn decode(text: &str) -> Vec<u8> {
        let value = |c: u8| match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            _ => 63,
        };
        let bytes: Vec<u8> = text.bytes().filter(|&c| c != b'=').collect();
        let mut out = Vec::with_capacity(bytes.len() * 3 / 4);
        for chunk in bytes.chunks(4) {
            let mut buffer = 0u32;
            for (index, &c) in chunk.iter().enumerate() {
                buffer |= u32::from(value(c)) << (18 - 6 * index);
            }
            out.extend_from_slice(&buffer.to_be_bytes()[1..chunk.len()]);
        }
        out
    }
}

/// A cluster of `members` members with `methods` methods each, every
/// series with five minutes of points: what a large cluster's dashboard
/// loads.
struct Synthetic {
    members: usize,
    methods: usize,
}

impl sinew::telemetry::admin::DashboardSource for Synthetic {
    fn snapshot(&self, history: usize) -> futures_util::future::BoxFuture<'static, Vec<u8>> {
        use sinew::telemetry::timeline::{keep_history, Point, Series, SeriesKey};
        let (members, methods) = (self.members, self.methods);
        Box::pin(async move {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_millis() as u64;
            let member_list: Vec<Value> = (0..members)
                .map(|m| {
                    json!({
                        "name": format!("node-{m:03}"),
                        "endpoints": [format!("tcp://10.0.{}.{}:7000", m / 250, m % 250)],
                        "services": (0..methods).map(|s| format!("shop.v1.Service{s:02}")).collect::<Vec<_>>(),
                        "zone": format!("zone-{}", m % 3),
                        "admin": format!("http://10.0.{}.{}:9000", m / 250, m % 250),
                        "reachable": true,
                    })
                })
                .collect();
            // Every member's methods with five minutes of points; the
            // busiest `history` keep them all, as the cluster source does.
            let mut all = Vec::new();
            for m in 0..members {
                for i in 0..methods {
                    let points = (0..300u64)
                        .map(|p| Point {
                            at: now - 1000 * (299 - p),
                            qps: ((m + i + p as usize) % 50) as f64,
                            errors: 0.0,
                            p50_ms: 1.0,
                            p99_ms: 5.0,
                        })
                        .collect();
                    all.push(Series {
                        key: SeriesKey {
                            side: "server".into(),
                            peer: "sinew".into(),
                            method: format!("shop.v1.Service{i:02}/Method"),
                        },
                        in_flight: (i % 3) as u64,
                        total: 1000 * i as u64,
                        points,
                    });
                }
            }
            let all = keep_history(all, history);
            // Each member's server, and its client's view of ten of the
            // others; the first member's figures are malformed (what a
            // broken or hostile member could send), which must cost the
            // page nothing but that member's rows.
            let components = |m: usize| {
                if m == 0 {
                    return json!({
                        "server": null,
                        "clients": [null, 5, {
                            "target": "<b>shop</b>",
                            "endpoints": [null, { "address": "<img src=x onerror=alert(1)>", "health": "ready" }],
                        }],
                        "breakers": [null, { "name": 7, "circuits": "none" }],
                        "limits": "none",
                    });
                }
                json!({
                    "server": {
                        "connections": 10 + m, "open_streams": m % 7, "received_bytes": 1000 * m,
                        "sent_bytes": 2000 * m, "flow_control_stalls": 0,
                        "refused": { "connection_limit": 0, "address_limit": 0, "handshake": m % 2 },
                        "limit_hits": { "idle_timeout": 1 }, "connection_errors": {},
                    },
                    "clients": [{
                        "target": "shop.v1.Service00",
                        "endpoints": (1..=10).map(|e| json!({
                            "address": format!("tcp://10.0.0.{}:7000", (m + e) % members),
                            "health": if e == 1 { "failed" } else { "ready" },
                            "ejected": false, "serving": true, "in_flight": e, "calls": 100 * e,
                            "rtt_ms": 0.5 * e as f64,
                        })).collect::<Vec<_>>(),
                    }],
                    "breakers": [],
                    "limits": [],
                })
            };
            let processes: Vec<Value> = all
                .chunks(methods)
                .enumerate()
                .map(|(m, series)| {
                    json!({
                        "member": format!("node-{m:03}"), "series": series, "recent": [],
                        "components": components(m), "at": now,
                    })
                })
                .collect();
            serde_json::to_vec(&json!({ "members": member_list, "processes": processes })).unwrap()
        })
    }
}

/// 100 endpoints in the registry with 10 methods each (1,000 method series,
/// five minutes of history each): the page's first full render, measured in
/// the browser and printed (tests assert no timings; docs/benchmarks.md
/// quotes the figure).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_methods_over_a_hundred_endpoints_render() {
    let server = sinew::telemetry::admin::AdminServer::bind_dashboard(
        "127.0.0.1:0".parse().unwrap(),
        Synthetic {
            members: 100,
            methods: 10,
        },
    )
    .await
    .unwrap();
    let url = format!("http://{}/", server.local_addr());
    let profile = std::env::temp_dir().join(format!(
        "sinew-chromium-large-{}-{}",
        std::process::id(),
        common::rand_suffix()
    ));
    std::fs::create_dir_all(&profile).unwrap();
    let (_browser, mut page) = chromium(&profile, &url).await;
    page.wait_for(
        "100 members and 1,000 method rows",
        "document.querySelectorAll('tr.member').length === 100 && document.querySelectorAll('tr.method').length === 1000",
    )
    .await;
    // 99 servers and 990 endpoint rows of well-formed members; the
    // malformed member's one well-formed endpoint shown as text.
    page.wait_for(
        "99 server rows and 991 endpoint rows",
        "document.querySelectorAll('tr.server').length === 99 && document.querySelectorAll('tr.endpoint').length === 991",
    )
    .await;
    let shown = page
        .eval(
            r#"(() => { const row = document.querySelector('tr.endpoint[data-member="node-000"]');
                 return row.textContent.includes("<img src=x") && row.querySelector("img") === null
                     && row.textContent.includes("<b>shop</b>"); })()"#,
        )
        .await;
    assert_eq!(shown, Value::Bool(true), "member text shown as text");
    // From the start of navigation to the end of the first full render
    // (the snapshot fetched, parsed and drawn).
    let timing = page
        .eval(
            "JSON.stringify({render_ms: Number(document.getElementById('updates').dataset.renderMs), \
             loaded_ms: Number(document.getElementById('updates').dataset.firstRenderAt) - performance.timeOrigin})",
        )
        .await;
    println!(
        "dashboard, 100 endpoints x 10 methods: {}",
        timing.as_str().unwrap()
    );
    drop(page);
    server.shutdown().await;
    let _ = std::fs::remove_dir_all(&profile);
}

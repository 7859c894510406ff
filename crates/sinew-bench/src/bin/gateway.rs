//! `sinew-bench-gateway`: sinew's gateway against nginx (Debian's), side by
//! side, with wrk (Debian's) as the client.
//!
//! Both proxy to the same three upstreams (small HTTP/1.1 servers, each a
//! process of its own on one thread: this binary with `--upstream`), with
//! one worker each (nginx `worker_processes 1`; the gateway on a runtime of
//! one thread: this binary with `--gateway`) and kept-alive connections to
//! the upstreams on both (`keepalive 64`). Cells:
//!
//! * `rps-64`, `rps-256`: `wrk -t1 -cN --latency` for `--duration-ms`:
//!   requests a second and the 99th percentile latency;
//! * `kill`: a run of `--kill-duration-ms` during which one of the three
//!   upstreams is SIGKILLed a third of the way in; the errors wrk sees
//!   (non-2xx answers and socket errors). Both proxies run with
//!   `max_fails=1 fail_timeout=10s` and nginx's default
//!   `proxy_next_upstream error timeout`, the gateway with its default
//!   retries (error, timeout; three tries).
//!
//! Every cell runs `--runs` times, nginx and the gateway alternating, the
//! order flipped each round; the report gives medians with their spread
//! and ratios of medians.
//!
//! ```text
//! cargo run --release -p sinew-bench --bin sinew-bench-gateway -- --runs 5 --json docs/benchmarks/gateway.json
//! ```

use anyhow::Context as _;
use clap::Parser;
use serde_json::{json, Value};
use sinew_bench::cpu;
use sinew_bench::process::{free_port, require, wait_listening, Process};
use std::io::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

#[derive(Parser, Debug)]
#[command(
    name = "sinew-bench-gateway",
    about = "sinew's gateway against nginx, with wrk"
)]
struct Options {
    /// Runs of every cell.
    #[arg(long, default_value_t = 5)]
    runs: usize,
    /// Measured duration of a throughput run, in milliseconds.
    #[arg(long, default_value_t = 5000)]
    duration_ms: u64,
    /// Duration of a run with an upstream killed, in milliseconds.
    #[arg(long, default_value_t = 9000)]
    kill_duration_ms: u64,
    /// Bytes of every upstream answer's body.
    #[arg(long, default_value_t = 64)]
    body_bytes: usize,
    /// Write every figure and the ratios to this JSON file.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Serve as an upstream on this port (internal).
    #[arg(long)]
    upstream: Option<u16>,
    /// Run the gateway from this configuration file (internal).
    #[arg(long)]
    gateway: Option<PathBuf>,
}

fn main() -> anyhow::Result<()> {
    let options = Options::parse();
    if let Some(port) = options.upstream {
        return upstream(port, options.body_bytes);
    }
    if let Some(config) = &options.gateway {
        return gateway(config);
    }
    require("nginx")?;
    require("wrk")?;
    let dir = tempfile_dir()?;
    let mut samples: Vec<(String, &'static str, Value)> = Vec::new();
    for round in 0..options.runs {
        let order: [&'static str; 2] = if round % 2 == 0 {
            ["nginx", "sinew"]
        } else {
            ["sinew", "nginx"]
        };
        // Throughput: both proxies up over the same upstreams.
        let upstreams = Upstreams::start(options.body_bytes)?;
        let mut proxies = Vec::new();
        for &system in &order {
            proxies.push((system, Proxy::start(system, &upstreams.addresses, &dir)?));
        }
        for connections in [64, 256] {
            for (system, proxy) in &proxies {
                // A short warm-up fills the pools.
                wrk(proxy.address, connections, 1000)?;
                let figures = proxy.measure(connections, options.duration_ms)?;
                eprintln!("round {round} rps-{connections} {system}: {figures}");
                samples.push((format!("rps-{connections}"), system, figures));
            }
        }
        drop(proxies);
        drop(upstreams);
        // An upstream killed mid-run: fresh upstreams and proxy each.
        for &system in &order {
            let mut upstreams = Upstreams::start(options.body_bytes)?;
            let proxy = Proxy::start(system, &upstreams.addresses, &dir)?;
            wrk(proxy.address, 64, 1000)?;
            let address = proxy.address;
            let duration = options.kill_duration_ms;
            let run = std::thread::spawn(move || wrk(address, 64, duration));
            std::thread::sleep(Duration::from_millis(duration / 3));
            upstreams.kill(2);
            let figures = run.join().expect("the wrk thread")?;
            eprintln!("round {round} kill {system}: {figures}");
            samples.push(("kill".to_owned(), system, figures));
        }
    }
    let report = report(&samples);
    println!("{}", serde_json::to_string_pretty(&report["ratios"])?);
    if let Some(path) = &options.json {
        std::fs::write(path, serde_json::to_string_pretty(&report)?)?;
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

fn tempfile_dir() -> anyhow::Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!("sinew-bench-gateway-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

struct Upstreams {
    addresses: Vec<SocketAddr>,
    processes: Vec<Process>,
}

impl Upstreams {
    fn start(body_bytes: usize) -> anyhow::Result<Upstreams> {
        let me = std::env::current_exe()?;
        let mut addresses = Vec::new();
        let mut processes = Vec::new();
        for _ in 0..3 {
            let port = free_port()?;
            let process = Process::spawn(
                Command::new(&me)
                    .args([
                        "--upstream",
                        &port.to_string(),
                        "--body-bytes",
                        &body_bytes.to_string(),
                    ])
                    .stdout(Stdio::null()),
            )?;
            let address = SocketAddr::from(([127, 0, 0, 1], port));
            processes.push(process);
            wait_listening(address)?;
            addresses.push(address);
        }
        Ok(Upstreams {
            addresses,
            processes,
        })
    }

    /// SIGKILLs the upstream `index`.
    fn kill(&mut self, index: usize) {
        self.processes[index].kill();
    }
}

struct Proxy {
    address: SocketAddr,
    process: Process,
}

impl Proxy {
    fn start(system: &str, upstreams: &[SocketAddr], dir: &Path) -> anyhow::Result<Proxy> {
        let port = free_port()?;
        let address = SocketAddr::from(([127, 0, 0, 1], port));
        let process = match system {
            "nginx" => {
                let prefix = dir.join(format!("nginx-{port}"));
                std::fs::create_dir_all(&prefix)?;
                let servers: String = upstreams
                    .iter()
                    .map(|upstream| {
                        format!("    server {upstream} max_fails=1 fail_timeout=10s;\n")
                    })
                    .collect();
                let p = prefix.display();
                let conf = format!(
                    "daemon off;\nworker_processes 1;\npid {p}/nginx.pid;\nerror_log {p}/error.log error;\n\
                     events {{ worker_connections 4096; }}\n\
                     http {{\n  access_log off;\n  client_body_temp_path {p}/body;\n  proxy_temp_path {p}/proxy;\n\
                       fastcgi_temp_path {p}/fastcgi;\n  uwsgi_temp_path {p}/uwsgi;\n  scgi_temp_path {p}/scgi;\n\
                       upstream backends {{\n{servers}    keepalive 64;\n  }}\n\
                       server {{\n    listen {address};\n    location / {{\n      proxy_pass http://backends;\n\
                           proxy_http_version 1.1;\n      proxy_set_header Connection \"\";\n    }}\n  }}\n}}\n"
                );
                let path = prefix.join("nginx.conf");
                std::fs::write(&path, conf)?;
                Process::spawn(
                    Command::new("nginx")
                        .arg("-e")
                        .arg(prefix.join("error.log"))
                        .arg("-p")
                        .arg(&prefix)
                        .arg("-c")
                        .arg(&path)
                        .stdout(Stdio::null())
                        .stderr(Stdio::inherit()),
                )
                .context("start nginx")?
            }
            _ => {
                let servers: Vec<String> = upstreams
                    .iter()
                    .map(|upstream| format!("{{ address = \"{upstream}\" }}"))
                    .collect();
                let conf = format!(
                    "[server]\nlisten = [\"{address}\"]\n\n[upstreams.backends]\nbalance = \"round_robin\"\n\
                     servers = [{}]\nmax_fails = 1\nfail_timeout = \"10s\"\nkeepalive = 64\n\n\
                     [[routes]]\nupstream = \"backends\"\n",
                    servers.join(", ")
                );
                let path = dir.join(format!("gateway-{port}.toml"));
                std::fs::write(&path, conf)?;
                Process::spawn(
                    Command::new(std::env::current_exe()?)
                        .arg("--gateway")
                        .arg(&path)
                        .stdout(Stdio::null()),
                )?
            }
        };
        wait_listening(address)?;
        Ok(Proxy { address, process })
    }

    /// CPU time of the proxy's processes (nginx: its master and workers).
    fn cpu(&self) -> Duration {
        let pid = self.process.id();
        let children =
            std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).unwrap_or_default();
        std::iter::once(pid)
            .chain(
                children
                    .split_whitespace()
                    .filter_map(|child| child.parse().ok()),
            )
            .map(cpu::of_process)
            .sum()
    }

    /// A wrk run against it, with the proxy's CPU time per request.
    fn measure(&self, connections: usize, duration_ms: u64) -> anyhow::Result<Value> {
        let before = self.cpu();
        let mut figures = wrk(self.address, connections, duration_ms)?;
        let spent = self.cpu().saturating_sub(before);
        let requests = figures["requests"].as_f64().unwrap_or(0.0).max(1.0);
        figures["cpu_us_per_request"] = json!(spent.as_secs_f64() * 1e6 / requests);
        Ok(figures)
    }
}

/// One wrk run at `address`: requests a second, p99 latency (ms), errors.
fn wrk(address: SocketAddr, connections: usize, duration_ms: u64) -> anyhow::Result<Value> {
    let summary = sinew_bench::wrk::run(&format!("http://{address}/"), connections, duration_ms)?;
    Ok(json!({
        "rps": summary.rps,
        "p99_ms": summary.p99_ms,
        "errors": summary.errors(),
        "requests": summary.requests,
    }))
}

fn median(
    samples: &[(String, &'static str, Value)],
    cell: &str,
    system: &str,
    figure: &str,
) -> (f64, f64, f64) {
    let mut values: Vec<f64> = samples
        .iter()
        .filter(|(c, s, _)| c == cell && *s == system)
        .filter_map(|(_, _, figures)| figures[figure].as_f64())
        .collect();
    values.sort_by(f64::total_cmp);
    if values.is_empty() {
        return (f64::NAN, f64::NAN, f64::NAN);
    }
    (
        values[values.len() / 2],
        values[0],
        values[values.len() - 1],
    )
}

fn report(samples: &[(String, &'static str, Value)]) -> Value {
    let mut rows = Vec::new();
    let mut ratios = serde_json::Map::new();
    for cell in ["rps-64", "rps-256", "kill"] {
        let figures: &[&str] = if cell == "kill" {
            &["errors", "requests"]
        } else {
            &["rps", "p99_ms", "cpu_us_per_request"]
        };
        for figure in figures {
            let nginx = median(samples, cell, "nginx", figure);
            let sinew = median(samples, cell, "sinew", figure);
            println!(
                "{cell:8} {figure:8} nginx {:>10.2} [{:.2}..{:.2}]  sinew {:>10.2} [{:.2}..{:.2}]",
                nginx.0, nginx.1, nginx.2, sinew.0, sinew.1, sinew.2
            );
            rows.push(json!({
                "cell": cell, "figure": figure,
                "nginx": {"median": nginx.0, "min": nginx.1, "max": nginx.2},
                "sinew": {"median": sinew.0, "min": sinew.1, "max": sinew.2},
            }));
            if *figure != "requests" {
                ratios.insert(
                    format!("{cell} {figure} sinew/nginx"),
                    json!(sinew.0 / nginx.0),
                );
            }
        }
    }
    let _ = std::io::stdout().flush();
    json!({
        "tool": "sinew-bench-gateway",
        "rows": rows,
        "ratios": ratios,
        "samples": samples.iter().map(|(cell, system, figures)| json!({"cell": cell, "system": system, "figures": figures})).collect::<Vec<_>>(),
    })
}

/// `--upstream PORT`: a small HTTP/1.1 server on one thread.
fn upstream(port: u16, body_bytes: usize) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
        let body = bytes::Bytes::from(vec![b'x'; body_bytes]);
        loop {
            let (stream, _) = listener.accept().await?;
            let _ = stream.set_nodelay(true);
            let body = body.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |_request| {
                    let body = body.clone();
                    async move {
                        Ok::<_, std::convert::Infallible>(http::Response::new(
                            http_body_util::Full::new(body),
                        ))
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                    .await;
            });
        }
    })
}

/// `--gateway FILE`: sinew's gateway on a runtime of one thread.
fn gateway(config: &Path) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(config)?;
    let config = sinew::gateway::Config::from_toml(&text)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let gateway = sinew::gateway::Gateway::new(config).await?;
        gateway.run().await?;
        Ok(())
    })
}

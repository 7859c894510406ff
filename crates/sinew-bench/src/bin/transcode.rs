//! `sinew-bench-transcode`: JSON calls through sinew's gateway against gRPC
//! calls straight to the same service, side by side (issue 19's
//! transcoding target: the JSON side at 0.7x the gRPC side or better).
//!
//! One library server (the example `sinew.examples.library.Library` with
//! its sample books, sinew's protocol and gRPC on one port) and one gateway
//! (the library's `google.api.http` rules, the server reached over sinew's
//! protocol), each a process of its own on a runtime of one thread, as the
//! gateway and its upstreams in `sinew-bench-gateway` (this binary with
//! `--server` and `--gateway`). Cells, each over `--connections`
//! connections with one request in flight on each, for `--duration-ms`
//! after a warm-up run of `--warmup-ms`:
//!
//! * `json-h1`: `GET /v1/shelves/1/books/cosmos` at the gateway with wrk,
//!   kept-alive HTTP/1.1: the curl-style JSON call;
//! * `json-h2c`: the same GET at the gateway with h2load, over h2c;
//! * `grpc`: `GetBook { name: "shelves/1/books/cosmos" }` at the server's
//!   port with h2load, a gRPC-framed body.
//!
//! Every round starts a fresh server and gateway and checks one call of
//! each kind with curl (the cosmos book as JSON with status 200; HTTP/2
//! 200, `grpc-status: 0` and the book in the answer's message), then runs
//! the cells, the order rotated each round. Every run counts its failed
//! requests: wrk's non-2xx answers and socket errors; h2load's failed,
//! errored and timed-out requests, logged statuses other than 200, and,
//! since h2load reads no gRPC status, DATA bytes short of one full answer
//! per request (an error answer has no message). Figures: requests a
//! second, p99 latency, and CPU time per request of the server, the
//! gateway and the load generator. The report gives medians with their
//! spread, the ratios of medians and the spread of the per-round ratios.
//!
//! ```text
//! cargo run --release -p sinew-bench --bin sinew-bench-transcode -- --runs 5 --json docs/benchmarks/transcode.json
//! ```

use anyhow::{bail, ensure, Context as _};
use clap::Parser;
use serde_json::{json, Value};
use sinew::prost::Message as _;
use sinew_bench::cpu;
use sinew_bench::process::{free_port, require, wait_listening, Process};
use sinew_examples::library::{Book, GetBookRequest};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

#[derive(Parser, Debug)]
#[command(
    name = "sinew-bench-transcode",
    about = "JSON through sinew's gateway against gRPC straight to the service"
)]
struct Options {
    /// Rounds: every cell once in each.
    #[arg(long, default_value_t = 5)]
    runs: usize,
    /// Measured duration of every run, in milliseconds.
    #[arg(long, default_value_t = 10_000)]
    duration_ms: u64,
    /// Warm-up run before every measured run, in milliseconds.
    #[arg(long, default_value_t = 1000)]
    warmup_ms: u64,
    /// Connections of every run, one request in flight on each.
    #[arg(long, default_value_t = 64)]
    connections: usize,
    /// Write every figure and the ratios to this JSON file.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Serve the library on this port (internal).
    #[arg(long)]
    server: Option<u16>,
    /// Run the gateway from this configuration file (internal).
    #[arg(long)]
    gateway: Option<PathBuf>,
}

/// The book every call asks for.
const BOOK: &str = "shelves/1/books/cosmos";
/// Its JSON path at the gateway (the rule `get: "/v1/{name=shelves/*/books/*}"`).
const JSON_PATH: &str = "/v1/shelves/1/books/cosmos";
/// The gRPC method's path.
const GRPC_PATH: &str = "/sinew.examples.library.Library/GetBook";
/// The cells, in the order of the first round.
const CELLS: [&str; 3] = ["json-h1", "json-h2c", "grpc"];

fn main() -> anyhow::Result<()> {
    let options = Options::parse();
    if let Some(port) = options.server {
        return server(port);
    }
    if let Some(config) = &options.gateway {
        return gateway(config);
    }
    for program in ["wrk", "h2load", "curl"] {
        require(program)?;
    }
    let started = utc_now();
    let dir = std::env::temp_dir().join(format!("sinew-bench-transcode-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let result = rounds(&options, &dir);
    let _ = std::fs::remove_dir_all(&dir);
    let samples = result?;
    let report = report(&samples, &options, &started);
    println!("{}", report["markdown"].as_str().unwrap_or_default());
    if let Some(path) = &options.json {
        std::fs::write(path, serde_json::to_string_pretty(&report)?)?;
    }
    Ok(())
}

/// One sample: the round, the cell, its figures.
type Sample = (usize, &'static str, Value);

fn rounds(options: &Options, dir: &Path) -> anyhow::Result<Vec<Sample>> {
    let request = dir.join("get-book.grpc");
    std::fs::write(&request, grpc_frame(BOOK))?;
    let mut samples = Vec::new();
    for round in 0..options.runs {
        let setup = Setup::start(dir)?;
        let answers = setup.check(&request, dir)?;
        let mut order = CELLS;
        order.rotate_left(round % CELLS.len());
        for cell in order {
            let figures = setup.measure(cell, options, &request, &answers, dir)?;
            eprintln!("round {round} {cell}: {figures}");
            samples.push((round, cell, figures));
        }
    }
    Ok(samples)
}

/// A gRPC message frame holding `GetBookRequest { name }`: a flag byte (0,
/// not compressed), the length in 4 big-endian bytes, the protobuf.
fn grpc_frame(name: &str) -> Vec<u8> {
    let message = GetBookRequest {
        name: name.to_owned(),
    }
    .encode_to_vec();
    let mut frame = vec![0];
    frame.extend_from_slice(&(message.len() as u32).to_be_bytes());
    frame.extend_from_slice(&message);
    frame
}

/// The sizes of the answers of one good call of each kind, which every
/// measured answer must match.
struct Answers {
    json_bytes: u64,
    grpc_bytes: u64,
}

/// The library server and the gateway of one round.
struct Setup {
    server: Process,
    server_address: SocketAddr,
    gateway: Process,
    gateway_address: SocketAddr,
}

impl Setup {
    fn start(dir: &Path) -> anyhow::Result<Setup> {
        let me = std::env::current_exe()?;
        let port = free_port()?;
        let server_address = SocketAddr::from(([127, 0, 0, 1], port));
        let server = Process::spawn(
            Command::new(&me)
                .args(["--server", &port.to_string()])
                .stdout(Stdio::null()),
        )?;
        wait_listening(server_address)?;
        let port = free_port()?;
        let gateway_address = SocketAddr::from(([127, 0, 0, 1], port));
        let proto = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../sinew-examples/proto/library.proto"
        );
        let config = format!(
            "[server]\nlisten = [\"{gateway_address}\"]\n\n\
             [services.library]\naddress = \"tcp://{server_address}\"\nprotos = [\"{proto}\"]\n\n\
             [[routes]]\npath = \"/\"\nservice = \"library\"\n"
        );
        let path = dir.join(format!("gateway-{port}.toml"));
        std::fs::write(&path, config)?;
        let gateway = Process::spawn(
            Command::new(&me)
                .arg("--gateway")
                .arg(&path)
                .stdout(Stdio::null()),
        )?;
        wait_listening(gateway_address)?;
        Ok(Setup {
            server,
            server_address,
            gateway,
            gateway_address,
        })
    }

    /// One call of each kind with curl: both must answer the cosmos book.
    fn check(&self, request: &Path, dir: &Path) -> anyhow::Result<Answers> {
        let json = curl(&[
            "-w",
            "\n%{http_code}",
            &format!("http://{}{JSON_PATH}", self.gateway_address),
        ])?;
        let text = String::from_utf8_lossy(&json);
        let (body, status) = text.rsplit_once('\n').context("curl's status line")?;
        ensure!(status == "200", "the gateway answered {status}: {body}");
        let book: Value = serde_json::from_str(body).context("the gateway's answer is JSON")?;
        ensure!(
            book["name"] == BOOK,
            "the gateway answered another book: {body}"
        );

        let headers = dir.join("grpc-headers");
        let grpc = curl(&[
            "--http2-prior-knowledge",
            "-D",
            &headers.display().to_string(),
            "--data-binary",
            &format!("@{}", request.display()),
            "-H",
            "content-type: application/grpc",
            "-H",
            "te: trailers",
            &format!("http://{}{GRPC_PATH}", self.server_address),
        ])?;
        let headers = std::fs::read_to_string(&headers)?;
        ensure!(
            headers.starts_with("HTTP/2 200"),
            "the server answered the gRPC call with {headers}"
        );
        ensure!(
            headers
                .lines()
                .any(|line| line.trim().eq_ignore_ascii_case("grpc-status: 0")),
            "the gRPC call did not end with grpc-status 0: {headers}"
        );
        ensure!(
            grpc.len() > 5 && grpc[0] == 0,
            "the gRPC answer is not one uncompressed message"
        );
        let book = Book::decode(&grpc[5..]).context("the gRPC answer is a Book")?;
        ensure!(
            book.name == BOOK,
            "the server answered another book: {book:?}"
        );
        Ok(Answers {
            json_bytes: body.len() as u64,
            grpc_bytes: grpc.len() as u64,
        })
    }

    /// A warm-up run, then the measured run of `cell`, with the CPU time
    /// the server, the gateway and the load generator spent in it.
    fn measure(
        &self,
        cell: &str,
        options: &Options,
        request: &Path,
        answers: &Answers,
        dir: &Path,
    ) -> anyhow::Result<Value> {
        let json_url = format!("http://{}{JSON_PATH}", self.gateway_address);
        let grpc_url = format!("http://{}{GRPC_PATH}", self.server_address);
        let connections = options.connections;
        let run = |duration_ms: u64| -> anyhow::Result<Run> {
            match cell {
                "json-h1" => {
                    let summary = sinew_bench::wrk::run(&json_url, connections, duration_ms)?;
                    Ok(Run {
                        rps: summary.rps,
                        p99_ms: summary.p99_ms,
                        requests: summary.requests,
                        errors: summary.errors(),
                    })
                }
                "json-h2c" => h2load(
                    &json_url,
                    None,
                    connections,
                    duration_ms,
                    answers.json_bytes,
                    dir,
                ),
                "grpc" => h2load(
                    &grpc_url,
                    Some(request),
                    connections,
                    duration_ms,
                    answers.grpc_bytes,
                    dir,
                ),
                other => bail!("no cell {other}"),
            }
        };
        run(options.warmup_ms)?;
        let server = cpu::of_process(self.server.id());
        let gateway = cpu::of_process(self.gateway.id());
        let client = children_cpu();
        let measured = run(options.duration_ms)?;
        let per_request =
            |spent: Duration| spent.as_secs_f64() * 1e6 / measured.requests.max(1) as f64;
        Ok(json!({
            "rps": measured.rps,
            "p99_ms": measured.p99_ms,
            "requests": measured.requests,
            "errors": measured.errors,
            "server_cpu_us_per_request":
                per_request(cpu::of_process(self.server.id()).saturating_sub(server)),
            "gateway_cpu_us_per_request":
                per_request(cpu::of_process(self.gateway.id()).saturating_sub(gateway)),
            "client_cpu_us_per_request": per_request(children_cpu().saturating_sub(client)),
        }))
    }
}

/// CPU time (user + system) of this process's children that have ended
/// and been waited for: around a wrk or h2load run (the only child that
/// ends meanwhile), what the load generator spent.
fn children_cpu() -> Duration {
    use nix::sys::resource::{getrusage, UsageWho};
    getrusage(UsageWho::RUSAGE_CHILDREN).map_or(Duration::ZERO, |usage| {
        let time = |t: nix::sys::time::TimeVal| {
            Duration::from_secs(t.tv_sec() as u64) + Duration::from_micros(t.tv_usec() as u64)
        };
        time(usage.user_time()) + time(usage.system_time())
    })
}

/// curl `args`, silent but for errors: the body it received.
fn curl(args: &[&str]) -> anyhow::Result<Vec<u8>> {
    let output = Command::new("curl")
        .args(["-sS", "--max-time", "10"])
        .args(args)
        .output()
        .context("run curl")?;
    ensure!(
        output.status.success(),
        "curl {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(output.stdout)
}

/// The figures of one measured run.
struct Run {
    rps: f64,
    p99_ms: f64,
    requests: u64,
    errors: u64,
}

/// One h2load run: `connections` connections, one stream in flight on
/// each, one client thread; POSTing `body` as gRPC if given, else GETs.
/// Requests that failed: h2load's failed, errored and timed-out ones, every
/// logged status but 200, and as many as the DATA received falls short of
/// `answer_bytes` a request.
fn h2load(
    url: &str,
    body: Option<&Path>,
    connections: usize,
    duration_ms: u64,
    answer_bytes: u64,
    dir: &Path,
) -> anyhow::Result<Run> {
    let log = dir.join("h2load.log");
    let mut command = Command::new("h2load");
    command
        .args(["-c", &connections.to_string(), "-m", "1", "-t", "1"])
        .args(["-D", &format!("{duration_ms}ms")])
        .arg("--log-file")
        .arg(&log);
    if let Some(body) = body {
        command.arg("-d").arg(body).args([
            "-H",
            "content-type: application/grpc",
            "-H",
            "te: trailers",
        ]);
    }
    let output = command
        .arg(url)
        .stdin(Stdio::null())
        .output()
        .context("run h2load")?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    ensure!(
        output.status.success(),
        "h2load failed ({}): {stdout}{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    let summary = H2loadSummary::parse(&stdout)?;
    let mut latencies = Vec::with_capacity(summary.succeeded as usize);
    let mut bad_statuses = 0u64;
    for line in std::fs::read_to_string(&log)?.lines() {
        // start (µs since the epoch), HTTP status, µs until the response ended
        let mut fields = line.split('\t');
        let (Some(_), Some(status), Some(micros)) = (fields.next(), fields.next(), fields.next())
        else {
            bail!("h2load's log has a line it does not document: {line:?}");
        };
        match (status, micros.trim().parse::<u64>()) {
            ("200", Ok(micros)) => latencies.push(micros),
            _ => bad_statuses += 1,
        }
    }
    latencies.sort_unstable();
    let p99_ms = latencies
        .get((latencies.len() * 99 / 100).min(latencies.len().saturating_sub(1)))
        .map_or(f64::NAN, |&micros| micros as f64 / 1000.0);
    let short = (summary.succeeded * answer_bytes).saturating_sub(summary.data_bytes);
    Ok(Run {
        rps: summary.succeeded as f64 / summary.seconds,
        p99_ms,
        requests: summary.succeeded,
        errors: summary.failed + bad_statuses + short.div_ceil(answer_bytes.max(1)),
    })
}

/// What h2load's summary on stdout says.
#[derive(Debug, PartialEq)]
struct H2loadSummary {
    /// The run's length, from `finished in`.
    seconds: f64,
    succeeded: u64,
    /// Requests failed, errored or timed out.
    failed: u64,
    /// Bytes of DATA frames received.
    data_bytes: u64,
}

impl H2loadSummary {
    fn parse(stdout: &str) -> anyhow::Result<H2loadSummary> {
        let line = |prefix: &str| {
            stdout
                .lines()
                .find_map(|l| l.strip_prefix(prefix))
                .with_context(|| format!("h2load printed no `{prefix}` line: {stdout}"))
        };
        // "finished in 10.00s, 47158.00 req/s, 47.84MB/s"
        let finished = line("finished in ")?;
        let seconds = finished
            .split(',')
            .next()
            .and_then(|time| {
                let time = time.trim();
                match time.strip_suffix("ms") {
                    Some(ms) => ms.parse::<f64>().ok().map(|ms| ms / 1000.0),
                    None => time.strip_suffix('s')?.parse().ok(),
                }
            })
            .with_context(|| format!("no duration in h2load's `{finished}`"))?;
        // "requests: 94316 total, 94316 started, 94316 done, 94316 succeeded,
        //  0 failed, 0 errored, 0 timeout"
        let requests = line("requests: ")?;
        let count = |what: &str| -> anyhow::Result<u64> {
            requests
                .split(", ")
                .find_map(|item| item.strip_suffix(what)?.trim().parse().ok())
                .with_context(|| format!("no `{what}` count in h2load's `{requests}`"))
        };
        // "traffic: 95.67MB (100322221) total, 278.46KB (285138) headers
        //  (space savings 94.74%), 140.31MB (147125016) data"
        let traffic = line("traffic: ")?;
        let data_bytes = traffic
            .split(", ")
            .find_map(|item| {
                let item = item.strip_suffix(" data")?;
                let (_, exact) = item.split_once('(')?;
                exact.strip_suffix(')')?.parse().ok()
            })
            .with_context(|| format!("no data bytes in h2load's `{traffic}`"))?;
        ensure!(seconds > 0.0, "h2load ran for no time: {finished}");
        Ok(H2loadSummary {
            seconds,
            succeeded: count(" succeeded")?,
            failed: count(" failed")? + count(" errored")? + count(" timeout")?,
            data_bytes,
        })
    }
}

/// The values of `figure` over the runs of `cell`, sorted.
fn values(samples: &[Sample], cell: &str, figure: &str) -> Vec<f64> {
    let mut values: Vec<f64> = samples
        .iter()
        .filter(|(_, c, _)| *c == cell)
        .filter_map(|(_, _, figures)| figures[figure].as_f64())
        .collect();
    values.sort_by(f64::total_cmp);
    values
}

/// Median, min and max (NaN if there are none).
fn spread(mut values: Vec<f64>) -> (f64, f64, f64) {
    values.sort_by(f64::total_cmp);
    let (Some(&low), Some(&high)) = (values.first(), values.last()) else {
        return (f64::NAN, f64::NAN, f64::NAN);
    };
    let middle = values.len() / 2;
    let median = if values.len() % 2 == 1 {
        values[middle]
    } else {
        (values[middle - 1] + values[middle]) / 2.0
    };
    (median, low, high)
}

/// The ratio of `cell`'s requests a second to the gRPC cell's in each round.
fn round_ratios(samples: &[Sample], cell: &str) -> Vec<f64> {
    let rps = |round: usize, cell: &str| {
        samples
            .iter()
            .find(|(r, c, _)| *r == round && *c == cell)
            .and_then(|(_, _, figures)| figures["rps"].as_f64())
    };
    let rounds = samples
        .iter()
        .map(|(round, _, _)| *round)
        .max()
        .map_or(0, |r| r + 1);
    (0..rounds)
        .filter_map(|round| Some(rps(round, cell)? / rps(round, "grpc")?))
        .collect()
}

fn report(samples: &[Sample], options: &Options, started: &str) -> Value {
    let figures = [
        ("rps", "requests/s", 0),
        ("p99_ms", "p99 ms", 2),
        ("server_cpu_us_per_request", "server CPU µs/req", 1),
        ("gateway_cpu_us_per_request", "gateway CPU µs/req", 1),
        ("client_cpu_us_per_request", "client CPU µs/req", 1),
        ("errors", "failed requests", 0),
    ];
    let mut markdown = format!(
        "Run of {started} on {} cores; {} rounds, the cells of each in rotated order, a fresh server and gateway each; {} connections, one request in flight on each; {} ms warm-up, {} ms measured per run. Medians [min-max].\n\n",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        options.runs,
        options.connections,
        options.warmup_ms,
        options.duration_ms,
    );
    markdown.push_str("| cell |");
    for (_, title, _) in figures {
        markdown.push_str(&format!(" {title} |"));
    }
    markdown.push_str("\n|---|");
    markdown.push_str(&"---:|".repeat(figures.len()));
    markdown.push('\n');
    let mut rows = Vec::new();
    for cell in CELLS {
        markdown.push_str(&format!("| {cell} |"));
        let mut row = serde_json::Map::new();
        row.insert("cell".to_owned(), json!(cell));
        for (figure, _, decimals) in figures {
            let (median, low, high) = spread(values(samples, cell, figure));
            markdown.push_str(&format!(
                " {median:.decimals$} [{low:.decimals$}-{high:.decimals$}] |"
            ));
            row.insert(
                figure.to_owned(),
                json!({"median": median, "min": low, "max": high}),
            );
        }
        markdown.push('\n');
        rows.push(Value::Object(row));
    }
    let mut ratios = serde_json::Map::new();
    markdown
        .push_str("\n| ratio | of medians | per round [min-max] | target |\n|---|---:|---:|---|\n");
    for (cell, target) in [("json-h1", ">= 0.7"), ("json-h2c", "-")] {
        let name = format!("{cell} rps / grpc rps");
        let of_medians =
            spread(values(samples, cell, "rps")).0 / spread(values(samples, "grpc", "rps")).0;
        let (_, low, high) = spread(round_ratios(samples, cell));
        markdown.push_str(&format!(
            "| {name} | {of_medians:.2} | [{low:.2}-{high:.2}] | {target} |\n"
        ));
        ratios.insert(
            name,
            json!({"of_medians": of_medians, "per_round_min": low, "per_round_max": high}),
        );
    }
    json!({
        "tool": "sinew-bench-transcode",
        "started": started,
        "runs": options.runs,
        "connections": options.connections,
        "warmup_ms": options.warmup_ms,
        "duration_ms": options.duration_ms,
        "rows": rows,
        "ratios": ratios,
        "samples": samples
            .iter()
            .map(|(round, cell, figures)| json!({"round": round, "cell": cell, "figures": figures}))
            .collect::<Vec<_>>(),
        "markdown": markdown,
    })
}

fn utc_now() -> String {
    Command::new("date")
        .args(["-u", "+%Y-%m-%dT%H:%M:%SZ"])
        .output()
        .map(|output| String::from_utf8_lossy(&output.stdout).trim().to_owned())
        .unwrap_or_default()
}

/// `--server PORT`: the library, its sample books, sinew's protocol and
/// gRPC on one port, on a runtime of one thread.
fn server(port: u16) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let server = sinew::Server::builder()
            .add_protocol(sinew::grpc::GrpcProtocol::default())
            .add_service(sinew_examples::library::LibraryService::with_sample_books().into_server())
            .bind([format!("tcp://127.0.0.1:{port}")])
            .await?;
        server.serve().await;
        Ok(())
    })
}

/// `--gateway FILE`: sinew's gateway, every address `sinew::connect` takes
/// behind it, on a runtime of one thread.
fn gateway(config: &Path) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(config)?;
    let config = sinew::gateway::Config::from_toml(&text)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let gateway =
            sinew::gateway::Gateway::with_connector(config, sinew::gateway_connector()).await?;
        gateway.run().await?;
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_a_get_book_request() {
        let frame = grpc_frame("ab");
        // Field 1, length-delimited, 2 bytes.
        assert_eq!(frame, [0, 0, 0, 0, 4, 0x0a, 2, b'a', b'b']);
    }

    #[test]
    fn reads_h2loads_summary() {
        let stdout = "finished in 10.00s, 47158.00 req/s, 47.84MB/s\n\
            requests: 94316 total, 94316 started, 94316 done, 94310 succeeded, 4 failed, 1 errored, 1 timeout\n\
            status codes: 94316 2xx, 0 3xx, 0 4xx, 0 5xx\n\
            traffic: 95.67MB (100322221) total, 278.46KB (285138) headers (space savings 94.74%), 140.31MB (147125016) data\n";
        assert_eq!(
            H2loadSummary::parse(stdout).unwrap(),
            H2loadSummary {
                seconds: 10.0,
                succeeded: 94310,
                failed: 6,
                data_bytes: 147125016
            }
        );
        assert!(H2loadSummary::parse("finished in 3.00s\n").is_err());
    }

    #[test]
    fn spreads_and_per_round_ratios() {
        assert_eq!(spread(vec![3.0, 1.0, 2.0]), (2.0, 1.0, 3.0));
        assert_eq!(spread(vec![4.0, 1.0]), (2.5, 1.0, 4.0));
        assert!(spread(Vec::new()).0.is_nan());
        let samples = vec![
            (0, "grpc", json!({"rps": 100.0})),
            (0, "json-h1", json!({"rps": 80.0})),
            (1, "json-h1", json!({"rps": 60.0})),
            (1, "grpc", json!({"rps": 120.0})),
        ];
        assert_eq!(round_ratios(&samples, "json-h1"), [0.8, 0.5]);
    }
}

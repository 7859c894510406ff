//! `sinew top`: the dashboard's live figures in the terminal, for SSH
//! sessions (as `linkerd viz top`): each method's calls a second, errors,
//! p50 and p99, calls in flight, busiest first; each server's connections
//! and traffic, each balanced client's endpoints; and the latest failures;
//! redrawn every second. From one process's admin endpoint, or from every
//! member of a cluster (gossip, or registered in etcd).

use super::dashboard::{fetch, Cluster, Directory};
use crate::error::{CliError, ExitCode};
use serde_json::Value;
use sinew::telemetry::admin::DashboardSource;
use std::fmt::Write as _;
use std::io::Write;
use std::time::Duration;

#[derive(clap::Args, Debug)]
#[command(
    after_help = "Examples:\n  sinew top http://127.0.0.1:9000            # a server started with --admin 127.0.0.1:9000\n  \
sinew top gossip://127.0.0.1:7946          # every member of a cluster that serves an admin endpoint\n  \
sinew top etcd://127.0.0.1:2379            # every server registered in etcd with an admin endpoint\n  \
sinew top http://127.0.0.1:9000 --once     # one table, for scripts"
)]
pub(crate) struct Args {
    /// An admin endpoint (http://HOST:PORT, as `sinew serve --admin`
    /// serves), a member of a gossip cluster (gossip://HOST:PORT), or an
    /// etcd registry (etcd://HOST:PORT).
    target: String,
    /// Print one table (after a second of figures) and exit.
    #[arg(long)]
    once: bool,
    /// Rows shown at most (the busiest).
    #[arg(long, value_name = "N", default_value_t = 30)]
    rows: usize,
}

pub(crate) async fn run(args: Args) -> Result<(), CliError> {
    let source: Box<dyn Fn() -> futures_util::future::BoxFuture<'static, Option<Value>>> = if args
        .target
        .starts_with("gossip://")
        || args.target.starts_with("etcd://")
    {
        let directory = Directory::of(&args.target).await?;
        let cluster = std::sync::Arc::new(Cluster::start(directory));
        Box::new(move || {
            let cluster = cluster.clone();
            Box::pin(async move { serde_json::from_slice(&cluster.snapshot(0).await).ok() })
        })
    } else if args.target.starts_with("http://") {
        let admin = args.target.clone();
        Box::new(move || {
            let admin = admin.clone();
            Box::pin(async move { fetch(&admin, "/api/snapshot?latest=1").await })
        })
    } else {
        return Err(CliError::usage(format!(
            "{}: give an admin endpoint (http://HOST:PORT), a gossip member (gossip://HOST:PORT) or an etcd registry (etcd://HOST:PORT)",
            args.target
        )));
    };
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    // The first figures need a second of history on the other side.
    tick.tick().await;
    loop {
        tick.tick().await;
        let Some(snapshot) = source().await else {
            if args.once {
                return Err(CliError::new(
                    ExitCode::Unreachable,
                    format!("no answer from {}", args.target),
                ));
            }
            println!("\x1b[H\x1b[2Jno answer from {} (retrying)", args.target);
            let _ = std::io::stdout().flush();
            continue;
        };
        let table = render(&snapshot, args.rows);
        if args.once {
            print!("{table}");
            return Ok(());
        }
        // Home, clear, draw: one write, so the terminal does not flicker.
        println!("\x1b[H\x1b[2J{table}  (refreshed every second; Ctrl-C to quit)");
        let _ = std::io::stdout().flush();
    }
}

/// One row of the table.
struct Row {
    member: String,
    side: String,
    peer: String,
    method: String,
    qps: f64,
    errors: f64,
    p50: f64,
    p99: f64,
    in_flight: u64,
    total: u64,
}

/// The table of a snapshot (one process's, or a cluster's `processes`).
fn render(snapshot: &Value, limit: usize) -> String {
    let processes: Vec<&Value> = match snapshot.get("processes") {
        Some(Value::Array(processes)) => processes.iter().collect(),
        _ => vec![snapshot],
    };
    let mut rows = Vec::new();
    let mut recent = Vec::new();
    let mut parts = String::new();
    for process in &processes {
        let member = process["member"].as_str().unwrap_or("").to_owned();
        components(&mut parts, &member, &process["components"]);
        for series in process["series"].as_array().into_iter().flatten() {
            let point = series["points"]
                .as_array()
                .and_then(|points| points.last())
                .cloned()
                .unwrap_or(Value::Null);
            rows.push(Row {
                member: member.clone(),
                side: series["side"].as_str().unwrap_or("").to_owned(),
                peer: series["peer"].as_str().unwrap_or("").to_owned(),
                method: series["method"].as_str().unwrap_or("").to_owned(),
                qps: point["qps"].as_f64().unwrap_or(0.0),
                errors: point["errors"].as_f64().unwrap_or(0.0),
                p50: point["p50_ms"].as_f64().unwrap_or(0.0),
                p99: point["p99_ms"].as_f64().unwrap_or(0.0),
                in_flight: series["in_flight"].as_u64().unwrap_or(0),
                total: series["total"].as_u64().unwrap_or(0),
            });
        }
        for call in process["recent"].as_array().into_iter().flatten().take(5) {
            recent.push((member.clone(), call.clone()));
        }
    }
    rows.sort_by(|a, b| {
        b.qps
            .total_cmp(&a.qps)
            .then(b.total.cmp(&a.total))
            .then(a.method.cmp(&b.method))
    });
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<21} {:<6} {:<22} {:<48} {:>10} {:>7} {:>9} {:>9} {:>8} {:>10}",
        "MEMBER",
        "SIDE",
        "PROTOCOL/TARGET",
        "METHOD",
        "CALLS/S",
        "ERRORS",
        "P50 MS",
        "P99 MS",
        "IN FLIGHT",
        "TOTAL"
    );
    for row in rows.iter().take(limit) {
        let _ = writeln!(
            out,
            "{:<21} {:<6} {:<22} {:<48} {:>10.1} {:>6.1}% {:>9.2} {:>9.2} {:>8} {:>10}",
            cut(&row.member, 21),
            cut(&row.side, 6),
            cut(&row.peer, 22),
            cut(&row.method, 48),
            row.qps,
            row.errors * 100.0,
            row.p50,
            row.p99,
            row.in_flight,
            row.total
        );
    }
    if rows.len() > limit {
        let _ = writeln!(out, "... {} more", rows.len() - limit);
    }
    if !parts.is_empty() {
        let _ = write!(out, "\n{parts}");
    }
    recent.sort_by_key(|(_, call)| std::cmp::Reverse(call["ended"].as_u64().unwrap_or(0)));
    if !recent.is_empty() {
        let _ = writeln!(out, "\nrecent slow and failed calls:");
        for (member, call) in recent.iter().take(5) {
            let _ = writeln!(
                out,
                "  {} {} {} {} {:.1} ms trace {} {}",
                clean(member),
                clean(call["side"].as_str().unwrap_or("")),
                clean(call["method"].as_str().unwrap_or("")),
                clean(call["code"].as_str().unwrap_or("")),
                call["duration_ms"].as_f64().unwrap_or(0.0),
                clean(call["trace_id"].as_str().unwrap_or("")),
                cut(call["message"].as_str().unwrap_or(""), 200)
            );
        }
    }
    out
}

/// A process's server line and its balanced clients' endpoint lines.
fn components(out: &mut String, member: &str, components: &Value) {
    let count = |value: &Value| value.as_u64().unwrap_or(0);
    // The reasons with a non-zero count, as `name count, ...`.
    let nonzero = |map: &Value| {
        let listed: Vec<String> = map
            .as_object()
            .into_iter()
            .flatten()
            .filter(|(_, n)| count(n) > 0)
            .map(|(name, n)| format!("{} {}", clean(name), count(n)))
            .collect();
        if listed.is_empty() {
            "none".to_owned()
        } else {
            listed.join(", ")
        }
    };
    // "server node-a: ...", or "server: ..." for a single process.
    let whose = match member {
        "" => String::new(),
        name => format!(" {}", cut(name, 40)),
    };
    let server = &components["server"];
    if server.is_object() {
        let _ = writeln!(
            out,
            "server{whose}: {} connections, {} open streams, {} in, {} out, {} stalls; refused: {}; limits hit: {}",
            count(&server["connections"]),
            count(&server["open_streams"]),
            crate::size::format_bytes(count(&server["received_bytes"])),
            crate::size::format_bytes(count(&server["sent_bytes"])),
            count(&server["flow_control_stalls"]),
            nonzero(&server["refused"]),
            nonzero(&server["limit_hits"]),
        );
    }
    for client in components["clients"].as_array().into_iter().flatten() {
        for endpoint in client["endpoints"].as_array().into_iter().flatten() {
            let _ = writeln!(
                out,
                "client{whose} -> {} {}: {}{}, {} in flight, {} calls, {:.2} ms estimate",
                cut(client["target"].as_str().unwrap_or(""), 40),
                cut(endpoint["address"].as_str().unwrap_or(""), 40),
                clean(endpoint["health"].as_str().unwrap_or("")),
                if endpoint["ejected"] == Value::Bool(true) {
                    " (ejected)"
                } else {
                    ""
                },
                count(&endpoint["in_flight"]),
                count(&endpoint["calls"]),
                endpoint["rtt_ms"].as_f64().unwrap_or(0.0),
            );
        }
    }
}

/// At most `width` characters, the end marked when cut; control
/// characters (a member's text could carry terminal escapes) shown as `?`.
fn cut(text: &str, width: usize) -> String {
    let text = clean(text);
    if text.chars().count() <= width {
        return text;
    }
    let kept: String = text.chars().take(width.saturating_sub(1)).collect();
    format!("{kept}…")
}

/// `text` without control characters.
fn clean(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}

//! The table printed on stdout, the ratios the targets are stated in, and the
//! JSON. Every figure is the median of a cell's runs, shown with its spread;
//! every ratio is one of medians; a failed cell has no figures.

use crate::isolate::{OpenLoopBase, Outcome};
use crate::load::{Cell, Plan, BYTES_CONCURRENCY, SHAPE_PAYLOAD};
use crate::sample::{Figure, Spread};
use crate::systems::System;
use serde_json::{json, Map, Value};

pub(crate) struct Summary {
    plan: Plan,
    /// Runs per cell, and the seed of the run order.
    runs: usize,
    seed: u64,
    outcomes: Vec<Outcome>,
    /// Where the open-loop rates came from.
    open_loop_base: Option<OpenLoopBase>,
    /// CPU of a connected but quiet pair, % of one core, per sinew transport.
    idle_cpu: Vec<(System, f64)>,
}

/// One ratio the issues state a target for: sinew's figure over a peer's, in one cell.
struct Ratio {
    key: &'static str,
    what: &'static str,
    target: &'static str,
    value: Option<f64>,
}

impl Summary {
    pub(crate) fn new(
        plan: &Plan,
        runs: usize,
        seed: u64,
        outcomes: Vec<Outcome>,
        open_loop_base: Option<OpenLoopBase>,
        idle_cpu: Vec<(System, f64)>,
    ) -> Summary {
        Summary {
            plan: plan.clone(),
            runs,
            seed,
            outcomes,
            open_loop_base,
            idle_cpu,
        }
    }

    pub(crate) fn any_failed(&self) -> bool {
        self.outcomes.iter().any(Outcome::failed)
    }

    /// The runs of a cell that did not fail; `None` for a failed or missing cell.
    fn find(&self, cell: Cell) -> Option<&Outcome> {
        self.outcomes.iter().find(|o| o.cell == cell && !o.failed())
    }

    /// The median of `figure` in a cell.
    fn median_of(&self, cell: Cell, figure: Figure) -> Option<f64> {
        Spread::of(figure, &self.find(cell)?.samples).map(|s| s.median)
    }

    fn median(
        &self,
        (system, concurrency): (System, usize),
        payload: usize,
        figure: Figure,
    ) -> Option<f64> {
        self.median_of(Cell::closed(system, payload, concurrency, 1), figure)
    }

    fn ratio(&self, a: (System, usize), b: (System, usize), figure: Figure) -> Option<f64> {
        self.ratio_at(1024, a, b, figure)
    }

    fn ratio_at(
        &self,
        payload: usize,
        a: (System, usize),
        b: (System, usize),
        figure: Figure,
    ) -> Option<f64> {
        let x = self.median(a, payload, figure)?;
        let y = self.median(b, payload, figure)?;
        (y > 0.0).then(|| x / y)
    }

    /// Max over min of a cell's QPS across its runs: how much a user's
    /// throughput varies from one run to the next.
    fn qps_spread(&self, system: System, payload: usize, concurrency: usize) -> Option<f64> {
        let outcome = self.find(Cell::closed(system, payload, concurrency, 1))?;
        let spread = Spread::of(Figure::Qps, &outcome.samples)?;
        (spread.min > 0.0).then(|| spread.max / spread.min)
    }

    /// sinew-tcp's QPS over the best framework peer's (tonic, tarpc, Volo,
    /// grpc-go, Go net/rpc; whichever ran) in a many-client shape.
    fn vs_best_peer(&self, connections: usize, each: usize) -> Option<f64> {
        self.sinew_vs_best_peer(|system| {
            Cell::closed(system, SHAPE_PAYLOAD, connections * each, connections)
        })
    }

    /// sinew-tcp's QPS over the best framework peer's in the `bytes` cells
    /// of `payload` bytes.
    fn bytes_vs_best_peer(&self, payload: usize) -> Option<f64> {
        self.sinew_vs_best_peer(|system| Cell::bytes(system, payload, BYTES_CONCURRENCY))
    }

    /// sinew-tcp's median QPS over the best framework peer's, in the cell
    /// `cell_of` gives for each system.
    fn sinew_vs_best_peer(&self, cell_of: impl Fn(System) -> Cell) -> Option<f64> {
        let qps = |system| self.median_of(cell_of(system), Figure::Qps);
        let ours = qps(System::SinewTcp)?;
        let best = System::FRAMEWORK_PEERS
            .into_iter()
            .filter_map(qps)
            .reduce(f64::max)?;
        (best > 0.0).then(|| ours / best)
    }

    /// One h2load row's QPS over another's, in an h2load shape.
    fn h2load_ratio(
        &self,
        a: System,
        b: System,
        (connections, each): (usize, usize),
    ) -> Option<f64> {
        let qps = |system| {
            self.median_of(
                Cell::closed(system, SHAPE_PAYLOAD, connections * each, connections),
                Figure::Qps,
            )
        };
        let (x, y) = (qps(a)?, qps(b)?);
        (y > 0.0).then(|| x / y)
    }

    /// sinew-tcp's p99 over tonic's in the open loop at `fraction` of the
    /// rate tonic sustains there (both at the same rate).
    fn open_loop_p99(&self, fraction: f64) -> Option<f64> {
        let rate = self.open_loop_base.as_ref()?.rate(fraction)?;
        let p99 = |system| self.median_of(Cell::open(system, SHAPE_PAYLOAD, rate), Figure::P99);
        let (ours, tonic) = (p99(System::SinewTcp)?, p99(System::Tonic)?);
        (tonic > 0.0).then(|| ours / tonic)
    }

    /// A balancing row's median `figure` in its one cell.
    fn balanced_figure(&self, system: System, figure: Figure) -> Option<f64> {
        self.median_of(
            Cell::closed(system, SHAPE_PAYLOAD, crate::load::BALANCED_CONCURRENCY, 1),
            figure,
        )
    }

    /// The share of a balancing row's calls that succeeded, over every run
    /// (failed ones included: a run with a failed call is a failed cell,
    /// but this is the figure that says how many).
    fn success_rate(&self, system: System) -> Option<f64> {
        let cell = Cell::closed(system, SHAPE_PAYLOAD, crate::load::BALANCED_CONCURRENCY, 1);
        let outcome = self.outcomes.iter().find(|o| o.cell == cell)?;
        let (calls, errors) = outcome
            .samples
            .iter()
            .fold((0u64, 0u64), |(c, e), s| (c + s.calls, e + s.errors));
        (calls + errors > 0).then(|| calls as f64 / (calls + errors) as f64)
    }

    /// The median server RSS per idle connection of `system`, in bytes.
    fn idle_rss(&self, system: System) -> Option<f64> {
        let outcome = self
            .outcomes
            .iter()
            .find(|o| o.cell.system == system && o.cell.is_idle() && !o.failed())?;
        Spread::of(Figure::RssPerConnection, &outcome.samples).map(|s| s.median)
    }

    /// Messages per second of `a` over `b`, server streaming, `streams`
    /// streams of 1 KiB messages.
    fn stream_ratio(&self, a: System, b: System, streams: usize) -> Option<f64> {
        let rate =
            |system| self.median_of(Cell::stream(system, SHAPE_PAYLOAD, streams), Figure::Qps);
        let (x, y) = (rate(a)?, rate(b)?);
        (y > 0.0).then(|| x / y)
    }

    fn ratios(&self) -> Vec<Ratio> {
        use System::*;
        let (qps, p50, p99) = (Figure::Qps, Figure::P50, Figure::P99);
        vec![
            Ratio {
                key: "qps_vs_tonic",
                what: "sinew-tcp / tonic QPS, 1 KiB c=64",
                target: ">= 2.5",
                value: self.ratio((SinewTcp, 64), (Tonic, 64), qps),
            },
            Ratio {
                key: "qps_vs_tarpc",
                what: "sinew-tcp / tarpc QPS, 1 KiB c=64",
                target: ">= 1.5",
                value: self.ratio((SinewTcp, 64), (Tarpc, 64), qps),
            },
            Ratio {
                key: "qps_vs_volo",
                what: "sinew-tcp / volo QPS, 1 KiB c=64",
                target: ">= 1.2",
                value: self.ratio((SinewTcp, 64), (Volo, 64), qps),
            },
            Ratio {
                key: "qps_vs_tonic_tuned",
                what: "sinew-tcp / tonic-tuned (sinew's windows and frame size) QPS, 1 KiB c=64",
                target: ">= 2.5",
                value: self.ratio((SinewTcp, 64), (TonicTuned, 64), qps),
            },
            Ratio {
                key: "qps_vs_volo_mux",
                what: "sinew-tcp / volo-mux (one multiplexed connection) QPS, 1 KiB c=64",
                target: ">= 1.2",
                value: self.ratio((SinewTcp, 64), (VoloMux, 64), qps),
            },
            Ratio {
                key: "p99_vs_tonic",
                what: "sinew-tcp / tonic p99, 1 KiB c=64",
                target: "<= 1",
                value: self.ratio((SinewTcp, 64), (Tonic, 64), p99),
            },
            Ratio {
                key: "p99_vs_tarpc",
                what: "sinew-tcp / tarpc p99, 1 KiB c=64",
                target: "<= 1",
                value: self.ratio((SinewTcp, 64), (Tarpc, 64), p99),
            },
            Ratio {
                key: "p99_vs_volo",
                what: "sinew-tcp / volo p99, 1 KiB c=64",
                target: "<= 1",
                value: self.ratio((SinewTcp, 64), (Volo, 64), p99),
            },
            Ratio {
                key: "p50_vs_raw_pingpong",
                what: "sinew-tcp / raw ping-pong p50, 1 KiB c=1",
                target: "<= 1.3",
                value: self.ratio((SinewTcp, 1), (RawPingPong, 1), p50),
            },
            Ratio {
                key: "qps_vs_raw_pipelined",
                what: "sinew-tcp / raw pipelined QPS, 1 KiB c=64",
                target: ">= 0.6",
                value: self.ratio((SinewTcp, 64), (RawPipelined, 64), qps),
            },
            Ratio {
                key: "qps_spread_tcp",
                what: "sinew-tcp max / min QPS over the runs, 1 KiB c=64",
                target: "<= 1.5",
                value: self.qps_spread(SinewTcp, 1024, 64),
            },
            Ratio {
                key: "uds_p50_vs_tcp_p50",
                what: "sinew-unix / sinew-tcp p50, 1 KiB c=1",
                target: "< 1",
                value: self.ratio((SinewUnix, 1), (SinewTcp, 1), p50),
            },
            Ratio {
                key: "balanced_vs_single",
                what: "sinew-balanced (3 servers) / sinew-tcp (1 server) QPS, 1 KiB c=64",
                target: ">= 0.9",
                value: self.ratio((SinewBalanced, 64), (SinewTcp, 64), qps),
            },
            Ratio {
                key: "balanced_slow_share",
                what: "share of calls to the server 20 ms slower, sinew-balanced-slow (a figure)",
                target: "<= 0.05",
                value: self.balanced_figure(SinewBalancedSlow, Figure::SlowShare),
            },
            Ratio {
                key: "tonic_balanced_slow_share",
                what: "share of calls to the server 20 ms slower, tonic-balanced-slow (a figure)",
                target: "-",
                value: self.balanced_figure(TonicBalancedSlow, Figure::SlowShare),
            },
            Ratio {
                key: "balanced_slow_p99_vs_healthy",
                what: "sinew-balanced-slow / sinew-balanced p99, 1 KiB c=64",
                target: "<= 1.5",
                value: self.ratio((SinewBalancedSlow, 64), (SinewBalanced, 64), p99),
            },
            Ratio {
                key: "balanced_slow_p99_vs_tonic",
                what: "sinew-balanced-slow / tonic-balanced-slow p99, 1 KiB c=64",
                target: "< 1",
                value: self.ratio((SinewBalancedSlow, 64), (TonicBalancedSlow, 64), p99),
            },
            Ratio {
                key: "hedge_p99_vs_unhedged",
                what: "sinew-hedge-on / sinew-hedge-off p99, 1 of 3 servers delays 5% of calls by 50 ms",
                target: "<= 0.3",
                value: self.ratio((SinewHedgeOn, 64), (SinewHedgeOff, 64), p99),
            },
            Ratio {
                key: "hedge_extra_load",
                what: "extra attempts per call with hedging, sinew-hedge-on (a figure)",
                target: "<= 0.1",
                value: self
                    .balanced_figure(SinewHedgeOn, Figure::AttemptsPerCall)
                    .map(|attempts| attempts - 1.0),
            },
            Ratio {
                key: "failing_attempts_per_call",
                what: "attempts per call, 1 of 3 servers failing every call, retries with throttling (a figure)",
                target: "<= 1.2",
                value: self.balanced_figure(SinewFailing, Figure::AttemptsPerCall),
            },
            Ratio {
                key: "failing_success_rate",
                what: "calls that succeeded, same (a figure, every run)",
                target: ">= 0.999",
                value: self.success_rate(SinewFailing),
            },
            Ratio {
                key: "stack_vs_bare",
                what: "sinew-stack (service config, breaker, balanced channel) / sinew-tcp QPS, 1 KiB c=64",
                target: ">= 0.85",
                value: self.ratio((SinewStack, 64), (SinewTcp, 64), qps),
            },
            Ratio {
                key: "overload_goodput_limited",
                what: "goodput / capacity, open loop at 3x capacity, adaptive limit (a figure)",
                target: ">= 0.9",
                value: self.balanced_figure(SinewOverloadLimited, Figure::GoodputShare),
            },
            Ratio {
                key: "overload_goodput_unlimited",
                what: "goodput / capacity, open loop at 3x capacity, no limit (a figure)",
                target: "-",
                value: self.balanced_figure(SinewOverload, Figure::GoodputShare),
            },
            Ratio {
                key: "overload_p99_vs_unloaded",
                what: "p99 of the calls admitted at 3x capacity / unloaded p99, adaptive limit",
                target: "<= 3",
                value: self
                    .balanced_figure(SinewOverloadLimited, Figure::P99)
                    .zip(self.balanced_figure(SinewOverloadLimited, Figure::UnloadedP99))
                    .and_then(|(p99, unloaded)| (unloaded > 0.0).then(|| p99 / unloaded)),
            },
            Ratio {
                key: "tls_vs_tcp_qps_64",
                what: "sinew-tls / sinew-tcp QPS, 1 KiB c=64",
                target: ">= 0.8",
                value: self.ratio((SinewTls, 64), (SinewTcp, 64), qps),
            },
            Ratio {
                key: "tls_vs_tcp_p50_64",
                what: "sinew-tls / sinew-tcp p50, 1 KiB c=64",
                target: "<= 1.2",
                value: self.ratio((SinewTls, 64), (SinewTcp, 64), p50),
            },
            Ratio {
                key: "tls_vs_tcp_qps_1",
                what: "sinew-tls / sinew-tcp QPS, 1 KiB c=1",
                target: ">= 0.8",
                value: self.ratio((SinewTls, 1), (SinewTcp, 1), qps),
            },
            Ratio {
                key: "tls_vs_tcp_p50_1",
                what: "sinew-tls / sinew-tcp p50, 1 KiB c=1",
                target: "<= 1.2",
                value: self.ratio((SinewTls, 1), (SinewTcp, 1), p50),
            },
            Ratio {
                key: "tls_vs_tonic_tls",
                what: "sinew-tls / tonic-tls QPS, 1 KiB c=64",
                target: ">= 2",
                value: self.ratio((SinewTls, 64), (TonicTls, 64), qps),
            },
            Ratio {
                key: "tls_full_handshakes_per_core",
                what: "full TLS handshakes (each with its connection and a call) per CPU-second, client and server sides both counted (a figure)",
                target: "-",
                value: self
                    .balanced_figure(SinewTlsHandshake, Figure::CpuPerCall)
                    .and_then(|us| (us > 0.0).then(|| 1e6 / us)),
            },
            Ratio {
                key: "telemetry_vs_bare",
                what: "sinew-telemetry (spans, trace context, metrics on both sides; sampling off) / sinew-tcp QPS, 1 KiB c=64",
                target: ">= 0.9",
                value: self.ratio((SinewTelemetry, 64), (SinewTcp, 64), qps),
            },
            Ratio {
                key: "grpc_path_vs_tonic",
                what: "sinew-grpc / tonic QPS, 1 KiB c=64 (same client)",
                target: ">= 0.9",
                value: self.ratio((SinewGrpc, 64), (Tonic, 64), qps),
            },
            Ratio {
                key: "qps_vs_best_peer_256x1",
                what: "sinew-tcp / best peer QPS, 1 KiB, 256 connections x 1 call",
                target: ">= 1.2",
                value: self.vs_best_peer(256, 1),
            },
            Ratio {
                key: "qps_vs_best_peer_16x16",
                what: "sinew-tcp / best peer QPS, 1 KiB, 16 connections x 16 calls",
                target: ">= 1.2",
                value: self.vs_best_peer(16, 16),
            },
            Ratio {
                key: "grpc_path_vs_grpc_go",
                what: "sinew-grpc / grpc-go QPS, 1 KiB c=64 (tonic's client for both)",
                target: ">= 1.2",
                value: self.ratio((SinewGrpc, 64), (GrpcGo, 64), qps),
            },
            Ratio {
                key: "h2load_grpc_path_vs_grpc_go_1x64",
                what: "sinew-grpc / grpc-go QPS, h2load, 1 KiB, 1 connection x 64 streams",
                target: ">= 1.2",
                value: self.h2load_ratio(H2loadSinewGrpc, H2loadGrpcGo, (1, 64)),
            },
            Ratio {
                key: "h2load_grpc_path_vs_grpc_go_64x1",
                what: "sinew-grpc / grpc-go QPS, h2load, 1 KiB, 64 connections x 1 stream",
                target: ">= 1.2",
                value: self.h2load_ratio(H2loadSinewGrpc, H2loadGrpcGo, (64, 1)),
            },
            Ratio {
                key: "h2load_grpc_path_vs_tonic_1x64",
                what: "sinew-grpc / tonic QPS, h2load, 1 KiB, 1 connection x 64 streams",
                target: ">= 1",
                value: self.h2load_ratio(H2loadSinewGrpc, H2loadTonic, (1, 64)),
            },
            Ratio {
                key: "h2load_grpc_path_vs_tonic_64x1",
                what: "sinew-grpc / tonic QPS, h2load, 1 KiB, 64 connections x 1 stream",
                target: ">= 1",
                value: self.h2load_ratio(H2loadSinewGrpc, H2loadTonic, (64, 1)),
            },
            Ratio {
                key: "open_p99_vs_tonic_80",
                what: "sinew-tcp / tonic p99, open loop at 80% of the rate tonic sustains, 1 KiB",
                target: "<= 0.5",
                value: self.open_loop_p99(0.8),
            },
            Ratio {
                key: "open_p99_vs_tonic_50",
                what: "sinew-tcp / tonic p99, open loop at 50% of the rate tonic sustains, 1 KiB",
                target: "<= 0.5",
                value: self.open_loop_p99(0.5),
            },
            Ratio {
                key: "idle_rss_vs_grpc_go",
                what: "sinew-tcp / grpc-go server RSS per idle connection (each after one call)",
                target: "<= 1",
                value: self
                    .idle_rss(SinewTcp)
                    .zip(self.idle_rss(GrpcGo))
                    .and_then(|(ours, go)| (go > 0.0).then(|| ours / go)),
            },
            Ratio {
                key: "idle_rss_kib",
                what: "sinew-tcp server RSS per idle connection, KiB (a figure, not a ratio)",
                target: "<= 32",
                value: self.idle_rss(SinewTcp).map(|bytes| bytes / 1024.0),
            },
            Ratio {
                key: "stream_vs_tonic_64",
                what: "sinew-tcp / tonic messages per second, 64 server streams of 1 KiB",
                target: ">= 1",
                value: self.stream_ratio(SinewTcp, Tonic, 64),
            },
            Ratio {
                key: "stream_vs_tonic_1",
                what: "sinew-tcp / tonic messages per second, 1 server stream of 1 KiB",
                target: ">= 1",
                value: self.stream_ratio(SinewTcp, Tonic, 1),
            },
            Ratio {
                key: "grpc_path_stream_vs_tonic_64",
                what: "sinew-grpc / tonic messages per second, 64 server streams (tonic's client)",
                target: ">= 1",
                value: self.stream_ratio(SinewGrpc, Tonic, 64),
            },
            Ratio {
                key: "grpc_path_stream_vs_grpc_go_64",
                what:
                    "sinew-grpc / grpc-go messages per second, 64 server streams (tonic's client)",
                target: ">= 1.2",
                value: self.stream_ratio(SinewGrpc, GrpcGo, 64),
            },
            Ratio {
                key: "bytes_qps_vs_best_peer_1k",
                what: "sinew-tcp / best peer QPS, bytes payload, 1 KiB c=64",
                target: ">= 1",
                value: self.bytes_vs_best_peer(1024),
            },
            Ratio {
                key: "bytes_qps_vs_best_peer_64k",
                what: "sinew-tcp / best peer QPS, bytes payload, 64 KiB c=64",
                target: ">= 1",
                value: self.bytes_vs_best_peer(65536),
            },
            Ratio {
                key: "qps_vs_go_netrpc",
                what: "sinew-tcp / Go net/rpc QPS, 1 KiB c=64 (each its own client)",
                target: ">= 3",
                value: self.ratio((SinewTcp, 64), (GoNetRpc, 64), qps),
            },
            Ratio {
                key: "qps_vs_go_netrpc_c1",
                what: "sinew-tcp / Go net/rpc QPS, 1 KiB c=1 (each its own client)",
                target: ">= 1.3",
                value: self.ratio((SinewTcp, 1), (GoNetRpc, 1), qps),
            },
            Ratio {
                key: "shm_vs_uds_p50_1k",
                what: "sinew-shm / sinew-unix p50, 1 KiB c=1",
                target: "<= 0.6",
                value: self.ratio((SinewShm, 1), (SinewUnix, 1), p50),
            },
            Ratio {
                key: "shm_vs_uds_p50_64k",
                what: "sinew-shm / sinew-unix p50, 64 KiB c=1",
                target: "<= 0.35",
                value: self.ratio_at(65536, (SinewShm, 1), (SinewUnix, 1), p50),
            },
            Ratio {
                key: "shm_vs_uds_qps_1m",
                what: "sinew-shm / sinew-unix QPS, 1 MiB c=64",
                target: ">= 4",
                value: self.ratio_at(1 << 20, (SinewShm, 64), (SinewUnix, 64), qps),
            },
        ]
    }

    pub(crate) fn table(&self) -> String {
        let mut out = String::new();
        out.push_str(&format!(
            "\n{} run(s) per cell, each in a fresh process, rounds in random order (seed {}); medians [min-max]\n",
            self.runs, self.seed
        ));
        out.push_str(&format!(
            "{:<17} {:>7} {:>8} {:>5} {:>25} {:>9} {:>9} {:>9} {:>11}  {}\n",
            "system",
            "payload",
            "c / rate",
            "k",
            "qps",
            "p50 us",
            "p99 us",
            "p999 us",
            "cpu us/call",
            "status"
        ));
        out.push_str(&"-".repeat(116));
        out.push('\n');
        for outcome in &self.outcomes {
            let cell = outcome.cell;
            let median =
                |figure| Spread::of(figure, &outcome.samples).map_or(f64::NAN, |s| s.median);
            let qps = Spread::of(Figure::Qps, &outcome.samples).map_or("-".to_owned(), |s| {
                format!("{:.0} [{:.0}-{:.0}]", s.median, s.min, s.max)
            });
            if cell.is_idle() {
                let rss = Spread::of(Figure::RssPerConnection, &outcome.samples)
                    .map_or("-".to_owned(), |s| {
                        format!("{:.0} [{:.0}-{:.0}]", s.median, s.min, s.max)
                    });
                out.push_str(&format!(
                    "{:<17} {:>7} {:>8} {:>5}   idle: server RSS per connection {rss} bytes  {}\n",
                    cell.system.name(),
                    cell.payload,
                    "idle",
                    cell.connections,
                    status(outcome)
                ));
                continue;
            }
            // Calls in flight (closed loop), or calls per second (open loop).
            let load = if cell.rate > 0 {
                format!("{}/s", cell.rate)
            } else if cell.streaming {
                format!("{} str", cell.concurrency)
            } else {
                cell.concurrency.to_string()
            };
            // A `bytes` cell is named `SYSTEM bytes` (at most 17 characters).
            let name = if cell.bytes {
                format!("{} bytes", cell.system.name())
            } else {
                cell.system.name().to_owned()
            };
            out.push_str(&format!(
                "{:<17} {:>7} {:>8} {:>5} {:>25} {:>9.1} {:>9.1} {:>9.1} {:>11.1}  {}\n",
                name,
                cell.payload,
                load,
                cell.connections,
                qps,
                median(Figure::P50),
                median(Figure::P99),
                median(Figure::P999),
                median(Figure::CpuPerCall),
                status(outcome)
            ));
        }
        out
    }

    pub(crate) fn ratios_text(&self) -> String {
        let mut out = String::from("ratios (target in brackets):\n");
        for ratio in self.ratios() {
            let value = ratio
                .value
                .map_or("n/a (cell not run, or failed)".to_owned(), |v| {
                    format!("{v:.2}")
                });
            out.push_str(&format!(
                "  {:<22} {:>8}  [{}]  {}\n",
                ratio.key, value, ratio.target, ratio.what
            ));
        }
        if let Some(base) = &self.open_loop_base {
            let probes: Vec<String> = base
                .probes
                .iter()
                .map(|(rate, probe)| match probe {
                    Some((qps, p99)) => format!("{rate}/s: {qps:.0}/s p99 {p99:.0} us"),
                    None => format!("{rate}/s: failed"),
                })
                .collect();
            out.push_str(&format!(
                "open-loop base: tonic sustained {} (closed-loop {:.0} QPS; p99 bound {:.0} us; {})\n",
                base.sustained
                    .map_or("no rate tried".to_owned(), |rate| format!("{rate}/s")),
                base.closed_qps,
                base.p99_bound_us,
                probes.join(", ")
            ));
        }
        if !self.idle_cpu.is_empty() {
            out.push_str("idle CPU of a connected, quiet pair (target ~0%):\n");
            for (system, percent) in &self.idle_cpu {
                out.push_str(&format!("  {:<22} {percent:>7.2}%\n", system.name()));
            }
        }
        out
    }

    pub(crate) fn json(&self) -> Value {
        let results: Vec<Value> = self.outcomes.iter().map(outcome_json).collect();
        let (mut ratios, mut targets, mut meanings) = (Map::new(), Map::new(), Map::new());
        for ratio in self.ratios() {
            let key = ratio.key.to_owned();
            ratios.insert(key.clone(), ratio.value.map_or(Value::Null, Value::from));
            targets.insert(key.clone(), Value::from(ratio.target));
            meanings.insert(key, Value::from(ratio.what));
        }
        json!({
            "date_utc": utc_now(),
            "cores": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
            "plan": {
                "runs": self.runs,
                "seed": self.seed,
                "isolation": "each run of each cell in a fresh process; cells of a round in random order",
                "warmup_ms": self.plan.warmup.as_millis() as u64,
                "duration_ms": self.plan.duration.as_millis() as u64,
                "server_threads": self.plan.server_threads,
                "client_threads": self.plan.client_threads,
                "payloads": self.plan.payloads,
                "local_payloads": self.plan.local_payloads,
                "concurrency": self.plan.concurrency,
                "connections": self.plan.connections,
                "shapes": self.plan.shapes,
                "open_loop": self.plan.open_loop,
                "bytes_payloads": self.plan.bytes_payloads,
                "streams": self.plan.streams,
                "idle_connections": self.plan.idle_connections,
            },
            "open_loop_base": self.open_loop_base.as_ref().map(|base| json!({
                "tonic_closed_qps": base.closed_qps,
                "p99_bound_us": base.p99_bound_us,
                "sustained_rate": base.sustained,
                "probes": base.probes.iter().map(|(rate, probe)| json!({
                    "rate": rate,
                    "qps": probe.map(|(qps, _)| qps),
                    "p99_us": probe.map(|(_, p99)| p99),
                    "failed": probe.is_none(),
                })).collect::<Vec<_>>(),
            })),
            "results": results,
            "ratios": ratios,
            "ratio_targets": targets,
            "ratio_meanings": meanings,
            "idle_cpu_percent": self
                .idle_cpu
                .iter()
                .map(|(system, percent)| (system.name().to_owned(), Value::from(*percent)))
                .collect::<Map<String, Value>>(),
        })
    }
}

/// A cell's status in the table: `ok`, or why it failed.
fn status(outcome: &Outcome) -> String {
    if !outcome.failures.is_empty() {
        return format!("FAILED ({} run(s) did not finish)", outcome.failures.len());
    }
    let failed_calls: u64 = outcome.samples.iter().map(|s| s.errors).sum();
    if outcome.failed() {
        let first = outcome
            .samples
            .iter()
            .find_map(|s| s.first_error.as_deref());
        return match first {
            Some(why) => format!("FAILED ({failed_calls} failed call(s); the first: {why})"),
            None => format!("FAILED ({failed_calls} failed call(s))"),
        };
    }
    "ok".to_owned()
}

/// A cell in the JSON: every run, and for a cell that did not fail, the median
/// and spread of every figure.
fn outcome_json(outcome: &Outcome) -> Value {
    let cell = outcome.cell;
    let mut value = json!({
        "system": cell.system.name(),
        "payload_bytes": cell.payload,
        "concurrency": cell.concurrency,
        "connections": cell.connections,
        "rate": cell.rate,
        "streaming": cell.streaming,
        "bytes": cell.bytes,
        "failed": outcome.failed(),
        "failures": outcome.failures,
        "runs": outcome.samples,
    });
    if !outcome.failed() {
        let mut median = Map::new();
        let mut spread = Map::new();
        for figure in Figure::ALL {
            if let Some(s) = Spread::of(figure, &outcome.samples) {
                median.insert(figure.key().to_owned(), Value::from(s.median));
                spread.insert(
                    figure.key().to_owned(),
                    json!({ "min": s.min, "max": s.max, "q1": s.q1, "q3": s.q3, "iqr": s.iqr() }),
                );
            }
        }
        value["median"] = Value::Object(median);
        value["spread"] = Value::Object(spread);
    }
    value
}

/// The current UTC time as `YYYY-MM-DDTHH:MM:SSZ`, without a date crate.
fn utc_now() -> String {
    let seconds = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    let (days, rest) = (seconds.div_euclid(86_400), seconds.rem_euclid(86_400));
    // Civil-from-days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rest / 3600,
        rest % 3600 / 60,
        rest % 60
    )
}

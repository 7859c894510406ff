//! Repetition and isolation: every cell of the plan runs `runs` times, each
//! time in a fresh process (this binary re-executed with `--in-process` and
//! that one cell), and every round runs the cells in a new random order.
//!
//! A fresh process per cell keeps one system's allocator history, leftover
//! connections and thread states out of the next system's figures; the random
//! order spreads each system's runs over the whole session, so a noisy minute
//! on a shared machine lands on different systems in different rounds rather
//! than on one. A child that exits non-zero, prints no figures or runs past its
//! time limit is a failed run, and a cell with any failed run or any failed
//! call is marked failed (see [`Outcome::failed`]), never averaged.

use crate::load::{Cell, Plan, SHAPE_PAYLOAD};
use crate::sample::Sample;
use crate::sample::{Figure, Spread};
use crate::scratch::Scratch;
use crate::systems::System;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Every run of one cell.
#[derive(Debug, Clone)]
pub(crate) struct Outcome {
    pub(crate) cell: Cell,
    /// The figures of the runs that finished, in the order they ran.
    pub(crate) samples: Vec<Sample>,
    /// Why runs did not finish: a child's exit status and the end of its stderr.
    pub(crate) failures: Vec<String>,
}

impl Outcome {
    /// A cell is failed if any run of it did not finish or any call failed.
    pub(crate) fn failed(&self) -> bool {
        !self.failures.is_empty() || self.samples.iter().any(|s| !s.is_clean())
    }
}

/// How long a child may take beyond its phases before it is killed: process
/// start, server set-up, the load generator's own 5 s watchdog, and tear-down.
const CHILD_SLACK: Duration = Duration::from_secs(30);

/// The base of the open-loop rates: the highest rate at which tonic keeps up
/// in the open loop, found by [`OpenLoopBase::search`].
#[derive(Debug, Clone)]
pub(crate) struct OpenLoopBase {
    /// tonic's median closed-loop QPS at 1 KiB c=64 (where the search starts).
    pub(crate) closed_qps: f64,
    /// The p99 bound a sustained rate must keep: [`P99_SLACK`] times tonic's
    /// median closed-loop p99 at 1 KiB c=64, in µs.
    pub(crate) p99_bound_us: f64,
    /// Every rate tried, in order, with tonic's QPS and p99 there (`None`:
    /// the run failed).
    pub(crate) probes: Vec<(u32, Option<(f64, f64)>)>,
    /// The first rate tonic sustained (`None`: none of the probes).
    pub(crate) sustained: Option<u32>,
}

/// A sustained open-loop rate keeps p99 within this many times tonic's p99
/// with 64 calls in flight: a backlog that grows over the phase makes it far
/// larger (seconds), a rate that is kept leaves it near it.
const P99_SLACK: f64 = 4.0;
/// Each probe that tonic does not sustain lowers the rate by this factor.
const PROBE_STEP: f64 = 0.85;
/// Probes at most (0.85^11: down to a sixth of the closed-loop QPS; eight,
/// down to a quarter, left tonic with no sustained rate in a noisy run of
/// 2026-12-01, p99 44 ms at 19.4k/s against a bound of 6.5 ms).
const PROBES: usize = 12;

impl OpenLoopBase {
    /// Searches the highest rate at which tonic (the slowest framework peer
    /// at 1 KiB c=64, and the one the open-loop target compares with) keeps
    /// up in the open loop: from its closed-loop QPS down by [`PROBE_STEP`],
    /// one run per rate, until a run has every call answered, answered at
    /// 99% of the rate or more, and p99 within [`P99_SLACK`] times tonic's
    /// closed-loop p99. The open loop costs a client more per call than the
    /// closed loop (every call its own task, started at its time from an
    /// idle runtime), so its sustained rate is below the closed-loop QPS;
    /// fractions of the latter left tonic with no figure at all. `None` if
    /// tonic's closed-loop cell did not run or failed.
    fn search(exe: &Path, scratch: &Scratch, plan: &Plan, outcomes: &[Outcome]) -> Option<Self> {
        let tonic = Cell::closed(System::Tonic, SHAPE_PAYLOAD, 64, 1);
        let outcome = outcomes.iter().find(|o| o.cell == tonic && !o.failed())?;
        let closed_qps = Spread::of(Figure::Qps, &outcome.samples)?.median;
        let p99_bound_us = P99_SLACK * Spread::of(Figure::P99, &outcome.samples)?.median;
        let mut base = OpenLoopBase {
            closed_qps,
            p99_bound_us,
            probes: Vec::new(),
            sustained: None,
        };
        let mut rate = closed_qps;
        for _ in 0..PROBES {
            let at = rate.round().max(1.0) as u32;
            eprint!("open-loop base: tonic at {at}/s ... ");
            let probe = run_child(
                exe,
                scratch,
                plan,
                Cell::open(System::Tonic, SHAPE_PAYLOAD, at),
            )
            .ok()
            .filter(Sample::is_clean)
            .map(|sample| (sample.qps, sample.p99_us));
            base.probes.push((at, probe));
            match probe {
                Some((qps, p99)) if qps >= 0.99 * f64::from(at) && p99 <= p99_bound_us => {
                    eprintln!("kept up (p99 {p99:.0} us)");
                    base.sustained = Some(at);
                    break;
                }
                Some((qps, p99)) => eprintln!("fell behind ({qps:.0}/s, p99 {p99:.0} us)"),
                None => eprintln!("failed"),
            }
            rate *= PROBE_STEP;
        }
        Some(base)
    }

    /// The open-loop rate at `fraction` of the sustained rate.
    pub(crate) fn rate(&self, fraction: f64) -> Option<u32> {
        let rate = (f64::from(self.sustained?) * fraction).round();
        (rate >= 1.0).then_some(rate as u32)
    }
}

/// Runs every cell of `plan` `runs` times, each in its own process, rounds in
/// random orders drawn from `seed`. Then, if the plan asks for them, the
/// open-loop cells the same way, at fractions of the rate tonic sustains in
/// the open loop ([`OpenLoopBase`]).
pub(crate) fn run(
    plan: &Plan,
    runs: usize,
    seed: u64,
) -> anyhow::Result<(Vec<Outcome>, Option<OpenLoopBase>)> {
    let exe = std::env::current_exe()?;
    let scratch = Scratch::new("runs")?;
    let mut random = SplitMix64(seed);
    let mut outcomes = Outcome::new_for(plan.cells());
    let mut rounds = |outcomes: &mut [Outcome]| {
        for round in 1..=runs {
            let mut order: Vec<usize> = (0..outcomes.len()).collect();
            random.shuffle(&mut order);
            for index in order {
                run_once(&exe, &scratch, plan, &mut outcomes[index], (round, runs));
            }
        }
    };
    rounds(&mut outcomes);
    if plan.open_loop.is_empty() {
        return Ok((outcomes, None));
    }
    let base = OpenLoopBase::search(&exe, &scratch, plan, &outcomes);
    let rates: Vec<u32> = plan
        .open_loop
        .iter()
        .filter_map(|&fraction| base.as_ref()?.rate(fraction))
        .collect();
    if rates.len() < plan.open_loop.len() {
        eprintln!(
            "open-loop cells skipped: their rates are fractions of the rate tonic sustains \
             in the open loop, and {}",
            if base.is_none() {
                "tonic's 1 KiB c=64 cell did not run or failed"
            } else {
                "tonic kept up at none of the rates tried"
            }
        );
        return Ok((outcomes, base));
    }
    let mut open = Vec::new();
    for rate in rates {
        open.extend(Outcome::new_for(plan.open_cells(rate, &[SHAPE_PAYLOAD])));
    }
    rounds(&mut open);
    outcomes.extend(open);
    Ok((outcomes, base))
}

impl Outcome {
    fn new_for(cells: Vec<Cell>) -> Vec<Outcome> {
        cells
            .into_iter()
            .map(|cell| Outcome {
                cell,
                samples: Vec::new(),
                failures: Vec::new(),
            })
            .collect()
    }
}

/// One run of `outcome`'s cell in a child, its progress line, and its sample
/// or failure added to the outcome.
fn run_once(
    exe: &Path,
    scratch: &Scratch,
    plan: &Plan,
    outcome: &mut Outcome,
    (round, runs): (usize, usize),
) {
    let cell = outcome.cell;
    eprint!("run {round}/{runs}  {} ... ", cell.label());
    match run_child(exe, scratch, plan, cell) {
        Ok(sample) => {
            eprintln!(
                "{:>10.0} qps  p50 {:>8.1} us  p99 {:>8.1} us{}",
                sample.qps,
                sample.p50_us,
                sample.p99_us,
                if sample.errors > 0 {
                    format!(
                        "  ({} failed calls; the first: {})",
                        sample.errors,
                        sample.first_error.as_deref().unwrap_or("no reason given")
                    )
                } else {
                    String::new()
                }
            );
            outcome.samples.push(sample);
        }
        Err(failure) => {
            eprintln!("FAILED: {failure}");
            outcome.failures.push(format!("run {round}: {failure}"));
        }
    }
}

/// Runs `cell` once in a child process and reads its figures.
fn run_child(exe: &Path, scratch: &Scratch, plan: &Plan, cell: Cell) -> Result<Sample, String> {
    let stdout_path = scratch.join("stdout");
    let stderr_path = scratch.join("stderr");
    let file = |path: &Path| std::fs::File::create(path).map_err(|e| e.to_string());
    let mut child = Command::new(exe)
        .arg("--in-process")
        .args(["--cell", &cell.to_arg()])
        .args(["--warmup-ms", &plan.warmup.as_millis().to_string()])
        .args(["--duration-ms", &plan.duration.as_millis().to_string()])
        .args(["--server-threads", &plan.server_threads.to_string()])
        .args(["--client-threads", &plan.client_threads.to_string()])
        .stdin(Stdio::null())
        .stdout(file(&stdout_path)?)
        .stderr(file(&stderr_path)?)
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", exe.display()))?;
    let limit = plan.warmup + plan.duration + CHILD_SLACK;
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().map_err(|e| e.to_string())? {
            break status;
        }
        if started.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!("still running after {limit:?}; killed"));
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let stdout = std::fs::read_to_string(&stdout_path).unwrap_or_default();
    if !status.success() {
        let stderr = std::fs::read_to_string(&stderr_path).unwrap_or_default();
        let tail: Vec<&str> = stderr.lines().rev().take(5).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        return Err(format!("{status}: {}", tail.join(" | ")));
    }
    stdout
        .lines()
        .filter_map(|line| serde_json::from_str::<Sample>(line).ok())
        .find(|sample| sample.is_of(cell))
        .ok_or_else(|| "the child printed no figures for its cell".to_owned())
}

/// A small seeded generator (SplitMix64) for the run order: reproducible from
/// the seed the report records, and no dependency for a shuffle.
struct SplitMix64(u64);

impl SplitMix64 {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Fisher-Yates.
    fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            let j = (self.next() % (i as u64 + 1)) as usize;
            items.swap(i, j);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outcome(errors: &[u64], failures: usize) -> Outcome {
        let cell = Cell::closed(System::SinewTcp, 1024, 64, 1);
        let sample = |errors| Sample {
            calls: 100,
            errors,
            seconds: 1.0,
            qps: 100.0,
            p50_us: 1.0,
            ..Sample::empty(cell)
        };
        Outcome {
            cell,
            samples: errors.iter().map(|&e| sample(e)).collect(),
            failures: (0..failures).map(|i| format!("run {i}: killed")).collect(),
        }
    }

    #[test]
    fn one_failed_call_or_one_unfinished_run_fails_the_cell() {
        assert!(!outcome(&[0, 0, 0], 0).failed());
        assert!(outcome(&[0, 1, 0], 0).failed());
        assert!(outcome(&[0, 0], 1).failed());
        assert!(outcome(&[], 3).failed());
    }

    #[test]
    fn shuffles_are_permutations_reproducible_from_the_seed() {
        let shuffled = |seed| {
            let mut items: Vec<u32> = (0..50).collect();
            SplitMix64(seed).shuffle(&mut items);
            items
        };
        let a = shuffled(7);
        assert_eq!(a, shuffled(7));
        assert_ne!(a, shuffled(8));
        assert_ne!(a, (0..50).collect::<Vec<_>>());
        let mut sorted = a.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, (0..50).collect::<Vec<_>>());
    }
}

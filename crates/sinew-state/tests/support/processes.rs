//! What tests that run this test binary again as worker processes share:
//! one clock for every process, a log file each, the worker's runtime and
//! its start (`#[path]`-included).

#![allow(dead_code)]

use std::process::{Child, Command, Stdio};

/// Nanoseconds of CLOCK_MONOTONIC: one clock shared by every process.
pub(crate) fn now() -> u64 {
    let time = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC).unwrap();
    time.tv_sec() as u64 * 1_000_000_000 + time.tv_nsec() as u64
}

/// The file a worker appends its lines to.
pub(crate) fn log(file: &str) -> std::fs::File {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(file)
        .unwrap()
}

/// Runs a worker's body on a runtime of one thread.
pub(crate) fn run(body: impl std::future::Future<Output = ()>) {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(body)
}

/// This test binary again, running only the (ignored) test `worker` with
/// `variable` set to `settings`.
pub(crate) fn spawn(worker: &str, variable: &str, settings: String) -> Child {
    Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            worker,
            "--ignored",
            "--nocapture",
            "--test-threads",
            "1",
        ])
        .env(variable, settings)
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap()
}

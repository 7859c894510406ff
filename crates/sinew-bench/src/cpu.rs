//! CPU time of a process by its id (a peer server a cell started, or this
//! one), read from `/proc`; shared by the benchmark binaries.

use std::time::Duration;

/// CPU time (user + system) of process `pid`, from `/proc/PID/stat`.
pub fn of_process(pid: u32) -> Duration {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return Duration::ZERO;
    };
    // The fields after the command name, which is in parentheses and may hold spaces.
    let Some(rest) = stat.rfind(')').map(|i| &stat[i + 1..]) else {
        return Duration::ZERO;
    };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<u64>().ok())
            .unwrap_or(0)
    };
    // utime and stime, in clock ticks (100 per second on Linux).
    Duration::from_millis((ticks(11) + ticks(12)) * 10)
}

//! Counters split in shards, one per thread (modulo the shard count), so
//! that threads counting the same method at once do not fight over one
//! cache line: each call adds to its thread's shard, and a read adds the
//! shards up.
//!
//! Every call updates a few counters of its method on both sides; with one
//! atomic per counter, two cores serving calls of one method pass the
//! line back and forth on every addition, which costs more than the rest
//! of the bookkeeping. Shards are padded to 128 bytes (two cache lines,
//! as adjacent-line prefetchers pair them); a thread takes its shard once,
//! round robin, and there are twice as many shards as CPUs (rounded up to
//! a power of two, at least 2, at most 16), so that the runtime's worker
//! threads rarely share one. A latency histogram takes 384 bytes per shard
//! (6 KiB at most), a small one (retries) or a counter 128.

use std::cell::Cell;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::OnceLock;

/// Counters per 128-byte line.
const PER_LINE: usize = 16;

/// Sixteen counters on a line pair of their own.
#[derive(Debug)]
#[repr(align(128))]
struct Line([AtomicU64; PER_LINE]);

impl Default for Line {
    fn default() -> Self {
        Line(std::array::from_fn(|_| AtomicU64::new(0)))
    }
}

/// A fixed number of counters, each split in shards: each shard is the
/// lines that hold them all.
#[derive(Debug)]
pub(crate) struct Cells {
    lines: Box<[Line]>,
    /// Lines per shard.
    stride: usize,
    /// Shards, a power of two.
    shards: usize,
}

impl Cells {
    /// `count` counters at zero.
    pub(crate) fn new(count: usize) -> Cells {
        let stride = count.div_ceil(PER_LINE).max(1);
        let shards = shard_count();
        Cells {
            lines: (0..stride * shards).map(|_| Line::default()).collect(),
            stride,
            shards,
        }
    }

    /// Adds `value` to counter `cell`, in this thread's shard.
    #[inline]
    pub(crate) fn add(&self, cell: usize, value: u64) {
        // (A power of two of shards: a mask, not a division.)
        let shard = this_thread() & (self.shards - 1);
        let line = &self.lines[shard * self.stride + cell / PER_LINE];
        line.0[cell % PER_LINE].fetch_add(value, Ordering::Relaxed);
    }

    /// Counter `cell`, every shard added up.
    pub(crate) fn get(&self, cell: usize) -> u64 {
        (0..self.shards)
            .map(|shard| {
                let line = &self.lines[shard * self.stride + cell / PER_LINE];
                line.0[cell % PER_LINE].load(Ordering::Relaxed)
            })
            .fold(0, u64::wrapping_add)
    }
}

/// One counter's shard, on lines of its own.
#[derive(Debug, Default)]
#[repr(align(128))]
struct Padded(AtomicU64);

/// A single counter split in shards.
#[derive(Debug)]
pub(crate) struct Counter {
    shards: Box<[Padded]>,
}

impl Default for Counter {
    fn default() -> Self {
        Counter {
            shards: (0..shard_count()).map(|_| Padded::default()).collect(),
        }
    }
}

impl Counter {
    /// Adds one, in this thread's shard.
    #[inline]
    pub(crate) fn increment(&self) {
        let shard = &self.shards[this_thread() & (self.shards.len() - 1)];
        shard.0.fetch_add(1, Ordering::Relaxed);
    }

    /// The count, every shard added up.
    pub(crate) fn get(&self) -> u64 {
        self.shards
            .iter()
            .map(|shard| shard.0.load(Ordering::Relaxed))
            .fold(0, u64::wrapping_add)
    }
}

/// How many shards a counter has: twice the CPUs, rounded up to a power
/// of two, 2 to 16.
fn shard_count() -> usize {
    static COUNT: OnceLock<usize> = OnceLock::new();
    *COUNT.get_or_init(|| {
        let cpus = std::thread::available_parallelism().map_or(1, usize::from);
        (2 * cpus).next_power_of_two().clamp(2, 16)
    })
}

/// This thread's number, given the first time it counts (round robin).
#[inline]
fn this_thread() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static NUMBER: Cell<usize> = const { Cell::new(usize::MAX) };
    }
    NUMBER.with(|number| {
        let mine = number.get();
        if mine != usize::MAX {
            return mine;
        }
        let mine = NEXT.fetch_add(1, Ordering::Relaxed);
        number.set(mine);
        mine
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn threads_count_in_their_shards_and_reads_add_them_up() {
        let counter = std::sync::Arc::new(Counter::default());
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let counter = counter.clone();
                std::thread::spawn(move || {
                    for _ in 0..1005 {
                        counter.increment();
                    }
                })
            })
            .collect();
        for thread in threads {
            thread.join().unwrap();
        }
        assert_eq!(counter.get(), 8 * 1005);
        // Several shards were written (eight threads, at least two shards).
        let written = counter
            .shards
            .iter()
            .filter(|shard| shard.0.load(Ordering::Relaxed) > 0)
            .count();
        assert!(written >= 2, "{written}");
    }
}

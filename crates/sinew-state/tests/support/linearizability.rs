//! A linearizability checker for histories of one register (a counter
//! updated by compare-and-swap), in the manner of Wing & Gong and
//! Porcupine: a depth-first search for an order of the operations that
//! respects real time (an operation that returned before another was
//! invoked comes first) and the register's sequential behaviour, with the
//! states already explored remembered.
//!
//! Operations whose outcome is unknown (a write that timed out, a process
//! killed while waiting) have no return time: they may take effect at any
//! point after their invocation, or never. (`#[path]`-included.)

#![allow(dead_code)]

use std::collections::HashSet;

/// What an operation did, as its client saw it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    /// Read the value (`None`: the key was absent).
    Read(Option<i64>),
    /// Set the value unconditionally.
    Write(i64),
    /// Set `to` if the value was `from`; `Some(won)`, or `None` when the
    /// outcome is unknown.
    Cas {
        from: i64,
        to: i64,
        won: Option<bool>,
    },
}

/// One operation: when it was invoked and (if it was) when it returned,
/// on one clock shared by every client (CLOCK_MONOTONIC).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Op {
    pub(crate) call: u64,
    pub(crate) ret: Option<u64>,
    pub(crate) kind: Kind,
}

/// The register's step: the value after `kind` from `value`, if `kind`
/// can happen there.
fn step(value: Option<i64>, kind: Kind) -> Option<Option<i64>> {
    match kind {
        Kind::Read(seen) => (seen == value).then_some(value),
        Kind::Write(new) => Some(Some(new)),
        Kind::Cas { from, to, won } => match (won, value == Some(from)) {
            (Some(true), true) | (None, true) => Some(Some(to)),
            (Some(false), false) => Some(value),
            _ => None,
        },
    }
}

/// Whether `history`, starting from `initial`, is linearizable.
pub(crate) fn linearizable(initial: Option<i64>, history: &[Op]) -> bool {
    /// One level of the search (iterative: histories are thousands of
    /// operations deep).
    struct Frame {
        value: Option<i64>,
        /// The operation placed to reach this level.
        placed: Option<usize>,
        /// The next operation to try placing after it.
        next: usize,
        /// The earliest return among the operations not yet placed.
        deadline: u64,
    }
    let words = history.len().div_ceil(64);
    let mut done = vec![0u64; words];
    let mut seen: HashSet<(Vec<u64>, Option<i64>)> = HashSet::new();
    let enter = |done: &[u64], value: Option<i64>, seen: &mut HashSet<(Vec<u64>, Option<i64>)>| {
        // Every operation that returned is placed: the rest (unknown
        // outcomes) may never have taken effect.
        let deadline = (0..history.len())
            .filter(|&i| !is_done(done, i))
            .filter_map(|i| history[i].ret)
            .min();
        match deadline {
            None => Err(true),
            Some(_) if !seen.insert((done.to_vec(), value)) => Err(false),
            Some(deadline) => Ok(deadline),
        }
    };
    let mut frames = match enter(&done, initial, &mut seen) {
        Err(result) => return result,
        Ok(deadline) => vec![Frame {
            value: initial,
            placed: None,
            next: 0,
            deadline,
        }],
    };
    while let Some(frame) = frames.last_mut() {
        // The next candidate: not placed, invoked before every unplaced
        // operation's return (none of those had to come first), possible
        // from this value.
        let candidate = (frame.next..history.len()).find_map(|index| {
            let op = &history[index];
            if is_done(&done, index) || op.call > frame.deadline {
                return None;
            }
            step(frame.value, op.kind).map(|next| (index, next))
        });
        let Some((index, next)) = candidate else {
            if let Some(placed) = frames.pop().and_then(|frame| frame.placed) {
                done[placed / 64] &= !(1 << (placed % 64));
            }
            continue;
        };
        frame.next = index + 1;
        done[index / 64] |= 1 << (index % 64);
        match enter(&done, next, &mut seen) {
            Err(true) => return true,
            Err(false) => done[index / 64] &= !(1 << (index % 64)),
            Ok(deadline) => frames.push(Frame {
                value: next,
                placed: Some(index),
                next: 0,
                deadline,
            }),
        }
    }
    false
}

fn is_done(done: &[u64], index: usize) -> bool {
    done[index / 64] & (1 << (index % 64)) != 0
}

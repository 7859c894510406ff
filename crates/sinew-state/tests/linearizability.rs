//! The linearizability checker the CAS-counter test relies on, against
//! histories known to be linearizable and known not to be.

#[path = "support/linearizability.rs"]
mod linearizability;

use linearizability::{linearizable, Kind, Op};

fn op(call: u64, ret: u64, kind: Kind) -> Op {
    Op {
        call,
        ret: Some(ret),
        kind,
    }
}

fn cas(from: i64, to: i64, won: bool) -> Kind {
    Kind::Cas {
        from,
        to,
        won: Some(won),
    }
}

#[test]
fn linearizable_histories_pass() {
    // Sequential increments with reads.
    let sequential = [
        op(0, 1, Kind::Read(Some(0))),
        op(2, 3, cas(0, 1, true)),
        op(4, 5, Kind::Read(Some(1))),
        op(6, 7, cas(1, 2, true)),
    ];
    assert!(linearizable(Some(0), &sequential));
    // Two clients race on the same CAS: one wins, one loses, in either
    // order of their calls.
    let race = [
        op(0, 10, Kind::Read(Some(0))),
        op(1, 9, Kind::Read(Some(0))),
        op(11, 20, cas(0, 1, true)),
        op(12, 19, cas(0, 1, false)),
        op(21, 22, Kind::Read(Some(1))),
    ];
    assert!(linearizable(Some(0), &race));
    // A read concurrent with a write may see either value.
    let overlapping = [
        op(0, 10, Kind::Write(5)),
        op(1, 2, Kind::Read(Some(0))),
        op(3, 4, Kind::Read(Some(5))),
    ];
    assert!(linearizable(Some(0), &overlapping));
    // An unknown outcome that took effect, and one that did not.
    let unknown = [
        Op {
            call: 0,
            ret: None,
            kind: Kind::Cas {
                from: 0,
                to: 1,
                won: None,
            },
        },
        op(5, 6, Kind::Read(Some(1))),
        Op {
            call: 7,
            ret: None,
            kind: Kind::Cas {
                from: 1,
                to: 2,
                won: None,
            },
        },
        op(8, 9, Kind::Read(Some(1))),
    ];
    assert!(linearizable(Some(0), &unknown));
    // The empty history, and an absent key read as absent.
    assert!(linearizable(None, &[]));
    assert!(linearizable(None, &[op(0, 1, Kind::Read(None))]));
}

#[test]
fn histories_that_are_not_linearizable_fail() {
    // A stale read: after the increment returned, a later read sees 0.
    let stale = [op(0, 1, cas(0, 1, true)), op(2, 3, Kind::Read(Some(0)))];
    assert!(!linearizable(Some(0), &stale));
    // Two winners of the same CAS (a lost update).
    let lost_update = [op(0, 5, cas(0, 1, true)), op(1, 6, cas(0, 1, true))];
    assert!(!linearizable(Some(0), &lost_update));
    // A CAS that lost although the value was what it expected, with
    // nothing concurrent to change it.
    let wrongly_lost = [op(0, 1, cas(0, 1, false))];
    assert!(!linearizable(Some(0), &wrongly_lost));
    // A read of a value never written.
    let phantom = [op(0, 1, Kind::Read(Some(7)))];
    assert!(!linearizable(Some(0), &phantom));
    // Reads going back in time: 1 then 0, sequentially, after one write.
    let back = [
        op(0, 10, Kind::Write(1)),
        op(1, 2, Kind::Read(Some(1))),
        op(3, 4, Kind::Read(Some(0))),
    ];
    assert!(!linearizable(Some(0), &back));
    // An acknowledged increment whose effect is missing at the end.
    let missing = [
        op(0, 1, cas(0, 1, true)),
        op(2, 3, cas(1, 2, true)),
        op(4, 5, Kind::Read(Some(1))),
    ];
    assert!(!linearizable(Some(0), &missing));
    // An unknown outcome cannot explain a value it would not write.
    let unexplained = [
        Op {
            call: 0,
            ret: None,
            kind: Kind::Cas {
                from: 0,
                to: 1,
                won: None,
            },
        },
        op(5, 6, Kind::Read(Some(2))),
    ];
    assert!(!linearizable(Some(0), &unexplained));
}

#[test]
fn long_concurrent_histories_are_checked_quickly() {
    // Four clients read-then-CAS 200 times each, interleaved as a real run
    // interleaves them, one winner a round (the counter's value is the
    // round's number): linearizable by construction.
    let mut history = Vec::new();
    for round in 0..200u64 {
        let value = round as i64;
        for client in 0..4u64 {
            let start = round * 30 + client;
            history.push(op(start, start + 10, Kind::Read(Some(value))));
            let won = client == round % 4;
            history.push(op(start + 11, start + 20, cas(value, value + 1, won)));
        }
    }
    let started = std::time::Instant::now();
    assert!(linearizable(Some(0), &history));
    assert!(started.elapsed() < std::time::Duration::from_secs(20));
    // One stale read in the middle breaks it.
    history[801].kind = Kind::Read(Some(0));
    assert!(!linearizable(Some(0), &history));
}

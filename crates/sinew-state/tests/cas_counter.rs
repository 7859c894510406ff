//! A counter incremented by compare-and-swap from several worker processes
//! against a real 3-member etcd cluster, while the etcd leader is SIGKILLed
//! (and restarted) and a worker is SIGKILLed mid-run: the final value
//! equals the acknowledged increments (plus at most the increments whose
//! outcome no one learned), and the whole history of reads and CASes is
//! checked for linearizability.
//!
//! Workers are this test binary run again with `SINEW_CAS_WORKER` set: each
//! appends an `invoke` line before every operation and a `return` line
//! after, stamped with CLOCK_MONOTONIC (one clock for every process), so a
//! killed worker's last operation is seen as invoked and never returned.

#[path = "../../sinew-cluster/tests/support/etcd_cluster.rs"]
mod etcd_cluster;

#[path = "support/processes.rs"]
mod processes;

#[path = "support/linearizability.rs"]
mod linearizability;

use linearizability::{linearizable, Kind, Op};
use processes::now;
use sinew_cluster::etcd::Etcd;
use sinew_state::{outcome_unknown, Expect, Kv, Swap};
use std::collections::HashMap;
use std::io::Write;
use std::process::Child;
use std::time::Duration;

const KEY: &str = "/test/counter";

/// The worker process (not a test of its own): read-then-CAS increments
/// until its deadline, each operation's invocation and return appended to
/// its file.
#[test]
#[ignore = "a worker process of the CAS-counter test, run by it"]
fn worker() {
    let settings = std::env::var("SINEW_CAS_WORKER").expect("run by the CAS-counter test");
    let [members, file, millis]: [&str; 3] = settings
        .splitn(3, ';')
        .collect::<Vec<_>>()
        .try_into()
        .unwrap();
    processes::run(async {
        let kv = Kv::new(Etcd::connect(members.split(',')).unwrap());
        let mut log = processes::log(file);
        let deadline = std::time::Instant::now() + Duration::from_millis(millis.parse().unwrap());
        let mut id = 0u64;
        while std::time::Instant::now() < deadline && id < 2000 {
            id += 1;
            writeln!(log, "invoke {id} read {}", now()).unwrap();
            let value = match tokio::time::timeout(Duration::from_secs(3), kv.get(KEY)).await {
                Ok(Ok(Some(kv))) => String::from_utf8(kv.value).unwrap().parse::<i64>().unwrap(),
                // A read that failed changed nothing: left out.
                _ => {
                    writeln!(log, "failed {id}").unwrap();
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            writeln!(log, "return {id} {} {value}", now()).unwrap();
            id += 1;
            writeln!(log, "invoke {id} cas {} {value} {}", now(), value + 1).unwrap();
            let swapped = tokio::time::timeout(
                Duration::from_secs(3),
                kv.compare_and_swap(
                    KEY,
                    Expect::Value(value.to_string().into_bytes()),
                    (value + 1).to_string(),
                ),
            )
            .await;
            match swapped {
                Ok(Ok(Swap::Swapped { .. })) => writeln!(log, "return {id} {} won", now()).unwrap(),
                Ok(Ok(Swap::Conflict { .. })) => {
                    writeln!(log, "return {id} {} lost", now()).unwrap()
                }
                // Timed out, or the store unreachable mid-write: it may have
                // been applied. No return line: unknown.
                Ok(Err(status)) if outcome_unknown(&status) => {
                    tokio::time::sleep(Duration::from_millis(50)).await
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
                // Refused before applying: nothing happened.
                Ok(Err(_)) => writeln!(log, "failed {id}").unwrap(),
            }
        }
    });
}

fn spawn_worker(members: &str, file: &std::path::Path, millis: u64) -> Child {
    processes::spawn(
        "worker",
        "SINEW_CAS_WORKER",
        format!("{members};{};{millis}", file.display()),
    )
}

/// Reads a worker's file: its operations, and the CASes it won.
fn read_history(file: &std::path::Path) -> (Vec<Op>, usize) {
    let text = std::fs::read_to_string(file).unwrap_or_default();
    let mut invoked: HashMap<u64, (u64, Kind)> = HashMap::new();
    let mut ops = Vec::new();
    let mut won = 0;
    for line in text.lines() {
        let words: Vec<&str> = line.split(' ').collect();
        match words.as_slice() {
            ["invoke", id, "read", at] => {
                invoked.insert(id.parse().unwrap(), (at.parse().unwrap(), Kind::Read(None)));
            }
            ["invoke", id, "cas", at, from, to] => {
                let kind = Kind::Cas {
                    from: from.parse().unwrap(),
                    to: to.parse().unwrap(),
                    won: None,
                };
                invoked.insert(id.parse().unwrap(), (at.parse().unwrap(), kind));
            }
            ["failed", id] => {
                invoked.remove(&id.parse::<u64>().unwrap());
            }
            ["return", id, at, outcome] => {
                let (call, kind) = invoked.remove(&id.parse::<u64>().unwrap()).unwrap();
                let kind = match (kind, *outcome) {
                    (Kind::Cas { from, to, .. }, "won") => {
                        won += 1;
                        Kind::Cas {
                            from,
                            to,
                            won: Some(true),
                        }
                    }
                    (Kind::Cas { from, to, .. }, "lost") => Kind::Cas {
                        from,
                        to,
                        won: Some(false),
                    },
                    (Kind::Read(_), value) => Kind::Read(Some(value.parse().unwrap())),
                    (kind, outcome) => panic!("{kind:?} {outcome}"),
                };
                ops.push(Op {
                    call,
                    ret: Some(at.parse().unwrap()),
                    kind,
                });
            }
            // A line cut short by a SIGKILL.
            _ => {}
        }
    }
    // Invoked, never returned: unknown outcomes (reads among them change
    // nothing and are left out).
    for (_, (call, kind)) in invoked {
        if let Kind::Cas { .. } = kind {
            ops.push(Op {
                call,
                ret: None,
                kind,
            });
        }
    }
    (ops, won)
}

/// The member that leads the etcd cluster now.
async fn leader(cluster: &etcd_cluster::EtcdCluster, members: usize) -> Option<usize> {
    use sinew_cluster::etcd::api::etcdserverpb::{
        maintenance_client::MaintenanceClient, StatusRequest,
    };
    for i in 0..members {
        let etcd = Etcd::connect([cluster.client_address(i)]).unwrap();
        let status = tokio::time::timeout(
            Duration::from_secs(2),
            MaintenanceClient::new(etcd.channel().clone())
                .status(sinew_rpc::Request::new(StatusRequest {})),
        )
        .await;
        if let Ok(Ok(status)) = status {
            let status = status.into_inner();
            if status
                .header
                .is_some_and(|header| header.member_id == status.leader)
            {
                return Some(i);
            }
        }
    }
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cas_increments_are_never_lost_and_the_history_is_linearizable() {
    let mut cluster = etcd_cluster::EtcdCluster::start(3).await;
    let members = cluster.client_addresses().join(",");
    let kv = Kv::new(Etcd::connect(cluster.client_addresses()).unwrap());
    kv.put(KEY, "0").await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let files: Vec<_> = (0..3)
        .map(|i| dir.path().join(format!("worker-{i}")))
        .collect();
    let mut workers: Vec<Child> = files
        .iter()
        .map(|file| spawn_worker(&members, file, 8000))
        .collect();

    // Two seconds in, the etcd leader is SIGKILLed; restarted two seconds
    // later. A worker is SIGKILLed five seconds in.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let killed = leader(&cluster, 3).await.expect("a leader");
    cluster.kill_member(killed);
    tokio::time::sleep(Duration::from_secs(2)).await;
    cluster.start_member(killed);
    tokio::time::sleep(Duration::from_secs(1)).await;
    workers[0].kill().unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    for worker in &mut workers {
        loop {
            if worker.try_wait().unwrap().is_some() {
                break;
            }
            assert!(std::time::Instant::now() < deadline, "a worker did not end");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    // The final value, read linearizably.
    let mut last = None;
    for _ in 0..100 {
        let call = now();
        if let Ok(Some(kv)) = kv.get(KEY).await {
            let value: i64 = String::from_utf8(kv.value).unwrap().parse().unwrap();
            last = Some((call, now(), value));
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (call, ret, last) = last.expect("the counter is readable");
    let mut history = Vec::new();
    let (mut won, mut unknown) = (0, 0);
    for file in &files {
        let (ops, file_won) = read_history(file);
        won += file_won;
        unknown += ops.iter().filter(|op| op.ret.is_none()).count();
        history.extend(ops);
    }
    println!(
        "counter {last}: {won} acknowledged increments, {unknown} of unknown outcome, {} operations",
        history.len()
    );
    assert!(won > 20, "the workers made progress: {won}");
    assert!(
        (won as i64) <= last && last <= (won + unknown) as i64,
        "final {last}, acknowledged {won}, unknown {unknown}"
    );
    history.push(Op {
        call,
        ret: Some(ret),
        kind: Kind::Read(Some(last)),
    });
    assert!(
        linearizable(Some(0), &history),
        "the history is not linearizable"
    );
}

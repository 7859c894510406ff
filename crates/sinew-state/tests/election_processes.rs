//! Leader election across real processes on a real 3-member etcd: candidate
//! processes campaign again and again, act while leading (stamping each
//! moment they act with CLOCK_MONOTONIC), resign after a while or stop when
//! told their leadership is lost; the leader is SIGKILLed three times. No
//! two leaders ever act at once (their acting stamps never interleave), and
//! each SIGKILLed leader is replaced within its lease's TTL and a second.
//!
//! Candidates are this test binary run again with `SINEW_CANDIDATE` set.

#[path = "../../sinew-cluster/tests/support/etcd_cluster.rs"]
mod etcd_cluster;

use sinew_cluster::etcd::Etcd;
use sinew_state::Election;
use std::io::Write;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

const TTL: Duration = Duration::from_secs(1);

fn now() -> u64 {
    let time = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC).unwrap();
    time.tv_sec() as u64 * 1_000_000_000 + time.tv_nsec() as u64
}

/// The candidate process (not a test of its own).
#[test]
#[ignore = "a candidate process of the election test, run by it"]
fn candidate() {
    let settings = std::env::var("SINEW_CANDIDATE").expect("run by the election test");
    let [members, file]: [&str; 2] = settings
        .splitn(2, ';')
        .collect::<Vec<_>>()
        .try_into()
        .unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let election =
            Election::new(Etcd::connect(members.split(',')).unwrap(), "processes").with_ttl(TTL);
        let mut log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(file)
            .unwrap();
        let me = std::process::id().to_string();
        loop {
            let Ok(leadership) = election.campaign(me.clone()).await else {
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            };
            let term = leadership.fencing_token().0;
            let mut lost = leadership.lost();
            // Act for a while (0.3-1.2 s), stamping each act, unless lost.
            let until =
                tokio::time::Instant::now() + Duration::from_millis(300 + fastrand::u64(..900));
            let mut tick = tokio::time::interval(Duration::from_millis(20));
            loop {
                tokio::select! {
                    _ = tick.tick() => {
                        if tokio::time::Instant::now() >= until {
                            break;
                        }
                        writeln!(log, "act {term} {}", now()).unwrap();
                    }
                    _ = lost.wait() => break,
                }
            }
            let _ = leadership.resign().await;
            tokio::time::sleep(Duration::from_millis(fastrand::u64(..200))).await;
        }
    });
}

fn spawn_candidate(members: &str, file: &std::path::Path) -> Child {
    Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "candidate",
            "--ignored",
            "--nocapture",
            "--test-threads",
            "1",
        ])
        .env("SINEW_CANDIDATE", format!("{members};{}", file.display()))
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap()
}

/// Every term's acting stamps, by term.
fn terms(files: &[std::path::PathBuf]) -> Vec<(i64, u64, u64)> {
    let mut terms = std::collections::BTreeMap::<i64, (u64, u64)>::new();
    for file in files {
        for line in std::fs::read_to_string(file).unwrap_or_default().lines() {
            let words: Vec<&str> = line.split(' ').collect();
            let ["act", term, at] = words.as_slice() else {
                continue;
            };
            let (Ok(term), Ok(at)) = (term.parse::<i64>(), at.parse::<u64>()) else {
                continue;
            };
            let entry = terms.entry(term).or_insert((at, at));
            entry.0 = entry.0.min(at);
            entry.1 = entry.1.max(at);
        }
    }
    terms
        .into_iter()
        .map(|(term, (first, last))| (term, first, last))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_leader_acts_at_a_time_and_a_killed_one_is_replaced_in_time() {
    let cluster = etcd_cluster::EtcdCluster::start(3).await;
    let members = cluster.client_addresses().join(",");
    let election = Election::new(
        Etcd::connect(cluster.client_addresses()).unwrap(),
        "processes",
    );
    let dir = tempfile::tempdir().unwrap();
    let mut files = Vec::new();
    let mut candidates: Vec<Child> = Vec::new();
    for i in 0..3 {
        let file = dir.path().join(format!("candidate-{i}"));
        candidates.push(spawn_candidate(&members, &file));
        files.push(file);
    }
    let mut kills = Vec::new();
    for round in 0..3 {
        tokio::time::sleep(Duration::from_millis(1500)).await;
        // The leader now: SIGKILLed, and a new candidate started.
        let Some(leader) = election.leader().await.unwrap() else {
            continue;
        };
        let pid: u32 = String::from_utf8(leader.value).unwrap().parse().unwrap();
        if let Some(child) = candidates.iter_mut().find(|child| child.id() == pid) {
            child.kill().unwrap();
            let _ = child.wait();
            kills.push((now(), leader.term.0));
        }
        let file = dir.path().join(format!("candidate-{}", 3 + round));
        candidates.push(spawn_candidate(&members, &file));
        files.push(file);
    }
    tokio::time::sleep(Duration::from_millis(2500)).await;
    for child in &mut candidates {
        let _ = child.kill();
        let _ = child.wait();
    }

    let terms = terms(&files);
    println!("{} terms, {} leaders killed", terms.len(), kills.len());
    assert!(terms.len() >= 5, "leadership changed hands: {terms:?}");
    assert_eq!(kills.len(), 3, "three leaders killed");
    // Terms in order, none acting while another does.
    for pair in terms.windows(2) {
        let ((a, _, a_last), (b, b_first, _)) = (pair[0], pair[1]);
        assert!(
            a_last < b_first,
            "term {a} acted until {a_last}, term {b} from {b_first}: two leaders at once"
        );
    }
    // Each killed leader replaced within the TTL and a second.
    for (killed_at, term) in kills {
        let next = terms
            .iter()
            .find(|(later, _, _)| *later > term)
            .unwrap_or_else(|| panic!("no leader after term {term}"));
        let took = Duration::from_nanos(next.1.saturating_sub(killed_at));
        assert!(
            took <= TTL + Duration::from_secs(1),
            "term {term} killed, next acting after {took:?}"
        );
    }
}

//! Locks and leader election across real processes on a real 3-member
//! etcd: contender processes take the lock (or campaign) again and again,
//! act while holding it (stamping each moment they act, with the fencing
//! token or term, by CLOCK_MONOTONIC), let go after a while or stop when
//! told it is lost; the holder is SIGKILLed three times. No two holders
//! ever act at once (their acting stamps never interleave, and tokens rise
//! with time), and each SIGKILLed holder is replaced within its lease's TTL
//! and a second.
//!
//! Contenders are this test binary run again with `SINEW_CONTENDER` set.

#[path = "../../sinew-cluster/tests/support/etcd_cluster.rs"]
mod etcd_cluster;

#[path = "support/processes.rs"]
mod processes;

use processes::now;
use sinew_cluster::etcd::Etcd;
use sinew_state::{Election, Kv, Lock};
use std::io::Write;
use std::process::Child;
use std::time::Duration;

const TTL: Duration = Duration::from_secs(1);

/// What contenders hold.
const LOCK: &str = "contended";
const ELECTION: &str = "processes";

/// A lock held or an election led.
enum Held {
    Lock(sinew_state::LockGuard),
    Leader(sinew_state::Leadership),
}

impl Held {
    fn token_and_lost(&self) -> (i64, sinew_state::Lost) {
        match self {
            Held::Lock(guard) => (guard.fencing_token().0, guard.lost()),
            Held::Leader(leadership) => (leadership.fencing_token().0, leadership.lost()),
        }
    }

    async fn release(self) {
        let _ = match self {
            Held::Lock(guard) => guard.release().await,
            Held::Leader(leadership) => leadership.resign().await,
        };
    }
}

/// The contender process (not a test of its own).
#[test]
#[ignore = "a contender process of the lock and election tests, run by them"]
fn contender() {
    let settings = std::env::var("SINEW_CONTENDER").expect("run by the contender tests");
    let [mode, members, file]: [&str; 3] = settings
        .splitn(3, ';')
        .collect::<Vec<_>>()
        .try_into()
        .unwrap();
    processes::run(async {
        let etcd = Etcd::connect(members.split(',')).unwrap();
        let election = Election::new(etcd.clone(), ELECTION).with_ttl(TTL);
        let lock = Lock::new(etcd, LOCK).with_ttl(TTL);
        let mut log = processes::log(file);
        let me = std::process::id().to_string();
        loop {
            let held = if mode == "lock" {
                lock.acquire().await.map(Held::Lock)
            } else {
                election.campaign(me.clone()).await.map(Held::Leader)
            };
            let Ok(held) = held else {
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            };
            let (token, mut lost) = held.token_and_lost();
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
                        writeln!(log, "act {token} {}", now()).unwrap();
                    }
                    _ = lost.wait() => break,
                }
            }
            held.release().await;
            tokio::time::sleep(Duration::from_millis(fastrand::u64(..200))).await;
        }
    });
}

fn spawn_contender(mode: &str, members: &str, file: &std::path::Path) -> Child {
    processes::spawn(
        "contender",
        "SINEW_CONTENDER",
        format!("{mode};{members};{}", file.display()),
    )
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

/// The token of whoever holds now: the create revision of the first key
/// under the lock's or the election's prefix.
async fn holder_token(kv: &Kv, mode: &str) -> Option<i64> {
    let prefix = match mode {
        "lock" => format!("/sinew/locks/{LOCK}/"),
        _ => format!("/sinew/elections/{ELECTION}/"),
    };
    let (kvs, _) = kv.list(prefix).await.ok()?;
    kvs.iter().map(|kv| kv.create_revision).min()
}

/// Which contender acted with `token`, by its log (it stamps its first act
/// at once; a few tries allow for that).
async fn acting_with(files: &[std::path::PathBuf], token: i64) -> Option<usize> {
    let needle = format!("act {token} ");
    for _ in 0..20 {
        if let Some(index) = files
            .iter()
            .position(|file| std::fs::read_to_string(file).is_ok_and(|text| text.contains(&needle)))
        {
            return Some(index);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    None
}

/// Contenders in `mode` (`lock` or `elect`), the holder killed three times;
/// checked as the module docs say.
async fn contend(mode: &str) {
    let cluster = etcd_cluster::EtcdCluster::start(3).await;
    let members = cluster.client_addresses().join(",");
    let kv = Kv::new(Etcd::connect(cluster.client_addresses()).unwrap());
    let dir = tempfile::tempdir().unwrap();
    let mut files = Vec::new();
    let mut contenders: Vec<Child> = Vec::new();
    for i in 0..3 {
        let file = dir.path().join(format!("contender-{i}"));
        contenders.push(spawn_contender(mode, &members, &file));
        files.push(file);
    }
    let mut kills = Vec::new();
    for round in 0..3 {
        tokio::time::sleep(Duration::from_millis(1500)).await;
        // Whoever holds now: SIGKILLed, and a new contender started.
        let Some(token) = holder_token(&kv, mode).await else {
            continue;
        };
        if let Some(index) = acting_with(&files, token).await {
            contenders[index].kill().unwrap();
            let _ = contenders[index].wait();
            kills.push((now(), token));
        }
        let file = dir.path().join(format!("contender-{}", 3 + round));
        contenders.push(spawn_contender(mode, &members, &file));
        files.push(file);
    }
    tokio::time::sleep(Duration::from_millis(2500)).await;
    for child in &mut contenders {
        let _ = child.kill();
        let _ = child.wait();
    }

    let terms = terms(&files);
    println!("{mode}: {} holders, {} killed", terms.len(), kills.len());
    assert!(terms.len() >= 5, "held by turns: {terms:?}");
    assert!(kills.len() >= 2, "holders killed: {kills:?}");
    // In token order, none acting while another does: tokens rise with time.
    for pair in terms.windows(2) {
        let ((a, _, a_last), (b, b_first, _)) = (pair[0], pair[1]);
        assert!(
            a_last < b_first,
            "token {a} acted until {a_last}, token {b} from {b_first}: two holders at once"
        );
    }
    // Each killed holder replaced within the TTL and a second.
    for (killed_at, token) in kills {
        let next = terms
            .iter()
            .find(|(later, _, _)| *later > token)
            .unwrap_or_else(|| panic!("no holder after token {token}"));
        let took = Duration::from_nanos(next.1.saturating_sub(killed_at));
        assert!(
            took <= TTL + Duration::from_secs(1),
            "token {token} killed, next acting after {took:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_lock_holder_acts_at_a_time_and_a_killed_one_frees_the_lock_in_time() {
    contend("lock").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_leader_acts_at_a_time_and_a_killed_one_is_replaced_in_time() {
    contend("elect").await;
}

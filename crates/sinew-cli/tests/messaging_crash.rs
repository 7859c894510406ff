//! The broker and its workers as real processes, killed: `sinew broker`
//! SIGKILLed while producers push and a worker acks (after a restart on the
//! same file, no push it answered is lost, no job it acked comes back, the
//! rest are delivered again); a `sinew queue work` SIGKILLed mid-job (the
//! job goes to another worker after the ack wait, and is completed once);
//! bad input sent to the broker's service (clear errors, the broker
//! unharmed).

mod common;

use common::{sinew, Killed};
use sinew::messaging::{Broker, Job, QueueConfig};
use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// `sinew broker` on a free port with `flags`: the process and its address.
fn start_broker(flags: &[&str]) -> (Killed, String) {
    let mut child = Killed(
        sinew()
            .args(["broker", "--listen", "tcp://127.0.0.1:0"])
            .args(flags)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start sinew broker"),
    );
    let mut stdout = BufReader::new(child.0.stdout.take().unwrap());
    let mut line = String::new();
    loop {
        line.clear();
        assert!(
            stdout.read_line(&mut line).unwrap() > 0,
            "broker exited early"
        );
        if let Some(address) = line.trim().strip_prefix("listening on ") {
            let address = address.to_owned();
            // The rest of its output, read so that it never blocks on a
            // full pipe.
            std::thread::spawn(move || for _ in stdout.lines() {});
            return (child, address);
        }
    }
}

fn kill(process: &Killed) {
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(process.0.id() as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
}

fn storage_flag(path: &Path) -> String {
    path.display().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_broker_loses_no_answered_push_and_redelivers_what_was_not_acked() {
    let dir = tempfile::tempdir().unwrap();
    let file = storage_flag(&dir.path().join("broker.redb"));
    let (mut broker_process, address) = start_broker(&["--storage", &file]);
    let broker = Broker::connect(&address).await.unwrap();
    let config = QueueConfig::default().ack_wait(Duration::from_secs(60));
    let queue = broker.work_queue("orders", config.clone()).await.unwrap();

    // Four producers push numbered jobs until the broker dies under them;
    // a worker acks what it gets. Each side records what it was told.
    let answered = Arc::new(Mutex::new(BTreeSet::new()));
    let acked = Arc::new(Mutex::new(BTreeSet::new()));
    // Acks sent whose answer never came: stored or not, nobody knows.
    let unsure = Arc::new(Mutex::new(BTreeSet::new()));
    let mut producers = Vec::new();
    for producer in 0..4u64 {
        let queue = queue.clone();
        let answered = answered.clone();
        producers.push(tokio::spawn(async move {
            for n in 0..100_000u64 {
                let number = producer * 1_000_000 + n;
                let job = Job::new(number.to_string()).id(format!("order-{number}"));
                match queue.push(job).await {
                    Ok(_) => {
                        answered.lock().unwrap().insert(number);
                    }
                    Err(_) => return,
                }
            }
        }));
    }
    let worker = {
        let queue = queue.clone();
        let acked = acked.clone();
        let unsure = unsure.clone();
        tokio::spawn(async move {
            let Ok(mut worker) = queue.pull(16).await else {
                return;
            };
            while let Some(job) = worker.next_job().await {
                let number: u64 = std::str::from_utf8(job.payload()).unwrap().parse().unwrap();
                if job.ack().await.is_ok() {
                    acked.lock().unwrap().insert(number);
                } else {
                    unsure.lock().unwrap().insert(number);
                }
            }
        })
    };
    // Kill it once a few hundred pushes were answered.
    let started = Instant::now();
    while answered.lock().unwrap().len() < 300 {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "pushes answered"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    kill(&broker_process);
    let _ = broker_process.0.wait();
    for producer in producers {
        tokio::time::timeout(Duration::from_secs(30), producer)
            .await
            .expect("producers see the broker gone")
            .unwrap();
    }
    let _ = tokio::time::timeout(Duration::from_secs(30), worker).await;
    let answered = answered.lock().unwrap().clone();
    let acked = acked.lock().unwrap().clone();
    let unsure = unsure.lock().unwrap().clone();
    assert!(acked.is_subset(&answered));

    // Restarted on the same file: every answered push not acked is
    // delivered, no acked one is.
    let (_restarted, address) = start_broker(&["--storage", &file]);
    let broker = Broker::connect(&address).await.unwrap();
    let queue = broker.open_queue("orders").await.unwrap();
    assert_eq!(queue.config(), &config);
    let stats = queue.stats().await.unwrap();
    let mut worker = queue.pull(64).await.unwrap();
    let mut delivered = BTreeSet::new();
    for _ in 0..stats.pending {
        let job = tokio::time::timeout(Duration::from_secs(10), worker.next_job())
            .await
            .expect("a job in time")
            .expect("the worker goes on");
        let number: u64 = std::str::from_utf8(job.payload()).unwrap().parse().unwrap();
        assert!(delivered.insert(number), "job {number} delivered twice");
        job.ack().await.unwrap();
    }
    let lost: Vec<_> = answered
        .difference(&acked)
        .filter(|n| !delivered.contains(n) && !unsure.contains(n))
        .collect();
    assert!(lost.is_empty(), "answered, not acked, and lost: {lost:?}");
    let back: Vec<_> = acked.intersection(&delivered).collect();
    assert!(back.is_empty(), "acked, and delivered again: {back:?}");
    // Pushes the broker stored but could not answer are delivered too:
    // at least once, never lost.
    assert!(delivered.len() >= answered.len() - acked.len() - unsure.len());
    eprintln!(
        "answered {} pushes, {} acked before the kill ({} acks unanswered), {} delivered after the restart",
        answered.len(),
        acked.len(),
        unsure.len(),
        delivered.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_killed_mid_job_has_its_job_completed_once_by_another() {
    let (_broker_process, address) = start_broker(&[]);
    let broker = Broker::connect(&address).await.unwrap();
    let config = QueueConfig::default().ack_wait(Duration::from_millis(800));
    let queue = broker.work_queue("thumbnails", config).await.unwrap();
    queue.push(Job::new("photo-1").id("photo-1")).await.unwrap();

    let mut doomed = sinew()
        .args(["queue", "work", &address, "thumbnails", "--work", "1m"])
        .stdout(Stdio::piped())
        .spawn()
        .expect("start sinew queue work");
    let mut stdout = BufReader::new(doomed.stdout.take().unwrap());
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    assert!(line.starts_with("job 1 (delivery 1): photo-1"), "{line}");
    let doomed = Killed(doomed);
    kill(&doomed);

    let mut worker = queue.pull(1).await.unwrap();
    let job = tokio::time::timeout(Duration::from_secs(10), worker.next_job())
        .await
        .expect("delivered again after the ack wait")
        .unwrap();
    assert_eq!(
        (job.payload().as_ref(), job.attempt()),
        (&b"photo-1"[..], 2)
    );
    job.ack().await.unwrap();
    // The producer retries (its answer lost, say): the id drops it.
    assert!(
        queue
            .push(Job::new("photo-1").id("photo-1"))
            .await
            .unwrap()
            .duplicate
    );
    assert!(
        tokio::time::timeout(Duration::from_millis(300), worker.next_job())
            .await
            .is_err()
    );
    let stats = queue.stats().await.unwrap();
    assert_eq!((stats.acked, stats.redelivered, stats.pending), (1, 1, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_to_the_broker_service_gets_clear_errors_and_harms_nothing() {
    let (_broker_process, address) = start_broker(&["--max-payload", "64"]);
    // Through `sinew call` (JSON over the reflected schema), past the
    // remote client's own checks, to the broker's.
    for (method, json, expected) in [
        (
            "Request",
            r#"{"message": {"subject": "a..b"}, "timeoutMs": "100"}"#,
            "empty token",
        ),
        (
            "Request",
            r#"{"message": {"subject": "a.b", "headers": [{"name": "bad name", "value": "v"}]}}"#,
            "invalid header",
        ),
        ("Push", r#"{"queue": "no such queue"}"#, "invalid subject"),
        ("Push", r#"{"queue": "missing"}"#, "no work queue missing"),
        ("Declare", r#"{"queue": "big", "config": {}}"#, ""),
        (
            "Push",
            &format!(r#"{{"queue": "big", "payload": "{}"}}"#, "QUFB".repeat(30)),
            "over the broker's limit of 64",
        ),
        (
            "Settle",
            r#"{"queue": "big", "sequence": "9", "attempt": 1}"#,
            "no longer leased",
        ),
    ] {
        let output = sinew()
            .args([
                "call",
                &address,
                &format!("sinew.messaging.v1.Broker/{method}"),
                json,
            ])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        if expected.is_empty() {
            assert!(output.status.success(), "{method} {json}: {stderr}");
        } else {
            assert!(!output.status.success(), "{method} {json} was accepted");
            assert!(stderr.contains(expected), "{method} {json}: {stderr}");
        }
    }
    // Unharmed: a message still goes from `sinew pub` to `sinew sub`.
    let mut subscriber = sinew()
        .args(["sub", &address, "greetings.>", "--count", "1"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(subscriber.stdout.take().unwrap());
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    assert_eq!(line.trim(), "subscribed to greetings.>");
    let published = sinew()
        .args(["pub", &address, "greetings.en", "hello", "-H", "lang=en"])
        .output()
        .unwrap();
    assert!(published.status.success());
    line.clear();
    stdout.read_line(&mut line).unwrap();
    assert_eq!(line.trim(), "greetings.en lang=en: hello");
    assert!(subscriber.wait().unwrap().success());
    let refused = sinew()
        .args(["pub", &address, "greetings.*", "hello"])
        .output()
        .unwrap();
    assert_eq!(refused.status.code(), Some(2));
    let stats = sinew().args(["queue", "stats", &address]).output().unwrap();
    let stats = String::from_utf8_lossy(&stats.stdout);
    assert!(stats.contains("published 1"), "{stats}");
    // The broker service over gRPC too (the same port): sinew call through
    // the gRPC bridge.
    let grpc = address.replace("tcp://", "grpc://");
    let info = sinew()
        .args(["call", &grpc, "sinew.messaging.v1.Broker/Info", "{}"])
        .output()
        .unwrap();
    let info = String::from_utf8_lossy(&info.stdout);
    assert!(info.contains("\"maxPayload\": \"64\""), "{info}");
}

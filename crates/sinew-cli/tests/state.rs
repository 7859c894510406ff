//! `sinew state`, `sinew kv`, `sinew lock` and `sinew elect` as real
//! processes: keys written and read back (and after a restart of the store
//! on its file), a missing key's exit code, a watch printing changes, commands run under a lock one at
//! a time with their fencing tokens rising, a SIGKILLed holder's lock free
//! within its TTL, and a SIGKILLed leader replaced within its TTL and a
//! second.

mod common;

use common::{sinew, Killed};
use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::time::{Duration, Instant};

/// `sinew state` on a free port with its data in `file`: the process and
/// its HOST:PORT.
fn start_state(file: &std::path::Path) -> (Killed, String) {
    let mut child = Killed(
        sinew()
            .args(["state", "--listen", "tcp://127.0.0.1:0", "--data"])
            .arg(file)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start sinew state"),
    );
    let mut stdout = BufReader::new(child.0.stdout.take().unwrap());
    let mut line = String::new();
    loop {
        line.clear();
        assert!(
            stdout.read_line(&mut line).unwrap() > 0,
            "sinew state exited early"
        );
        if let Some(address) = line.trim().strip_prefix("listening on tcp://") {
            let address = address.to_owned();
            std::thread::spawn(move || for _ in stdout.lines() {});
            return (child, address);
        }
    }
}

/// `sinew ARGS` against the store at `store`: its exit success and stdout.
fn run(store: &str, args: &[&str]) -> (bool, String) {
    let output = sinew()
        .args(args)
        .env("SINEW_STORE", store)
        .stderr(Stdio::inherit())
        .output()
        .expect("run sinew");
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
    )
}

#[test]
fn keys_locks_and_elections_from_the_command_line() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("state.redb");
    let (state, store) = start_state(&data);

    assert_eq!(
        run(&store, &["kv", "put", "app/color", "blue"]),
        (true, "revision 1\n".into())
    );
    assert!(run(&store, &["kv", "put", "app/size", "9"]).0);
    assert_eq!(
        run(&store, &["kv", "get", "app/color"]),
        (true, "blue\n".into())
    );
    assert_eq!(
        run(&store, &["kv", "get", "--prefix", "app/"]),
        (true, "app/color=blue\napp/size=9\n".into())
    );
    let (found, _) = run(&store, &["kv", "get", "app/missing"]);
    assert!(!found, "a missing key fails");

    // A watch prints what is there, then each change.
    let mut watch = Killed(
        sinew()
            .args(["kv", "watch", "app/"])
            .env("SINEW_STORE", &store)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let mut watched = BufReader::new(watch.0.stdout.take().unwrap());
    let mut read_line = || {
        let mut line = String::new();
        watched.read_line(&mut line).unwrap();
        line
    };
    assert_eq!(read_line(), "app/color=blue\n");
    assert_eq!(read_line(), "app/size=9\n");
    assert!(read_line().starts_with("(revision 2; watching)"));
    run(&store, &["kv", "put", "app/size", "10"]);
    assert_eq!(read_line(), "put app/size=10\n");
    run(&store, &["kv", "delete", "app/size"]);
    assert_eq!(read_line(), "delete app/size\n");
    drop(watch);

    // Two commands under one lock run one after the other, each with a
    // fencing token above the one before.
    let log = dir.path().join("log");
    let script = format!(
        "echo \"start $SINEW_FENCING_TOKEN\" >> {0}; sleep 0.3; echo \"end $SINEW_FENCING_TOKEN\" >> {0}",
        log.display()
    );
    let holders: Vec<std::process::Child> = (0..2)
        .map(|_| {
            sinew()
                .args(["lock", "job", "--", "sh", "-c", &script])
                .env("SINEW_STORE", &store)
                .stderr(Stdio::null())
                .spawn()
                .unwrap()
        })
        .collect();
    for mut holder in holders {
        assert!(holder.wait().unwrap().success());
    }
    let lines: Vec<String> = std::fs::read_to_string(&log)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect();
    assert_eq!(lines.len(), 4, "{lines:?}");
    let token = |line: &str| line.split(' ').nth(1).unwrap().parse::<i64>().unwrap();
    assert!(
        lines[0].starts_with("start") && lines[1].starts_with("end"),
        "{lines:?}"
    );
    assert!(
        lines[2].starts_with("start") && lines[3].starts_with("end"),
        "{lines:?}"
    );
    assert_eq!(token(&lines[0]), token(&lines[1]));
    assert!(token(&lines[2]) > token(&lines[0]), "{lines:?}");

    // A holder SIGKILLed: the lock is free again within its TTL (2 s).
    let mut holder = Killed(
        sinew()
            .args(["lock", "--ttl", "2s", "job", "--", "sleep", "5"])
            .env("SINEW_STORE", &store)
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let mut stderr = BufReader::new(holder.0.stderr.take().unwrap());
    let mut line = String::new();
    stderr.read_line(&mut line).unwrap();
    assert!(line.starts_with("holding lock job"), "{line}");
    let killed = Instant::now();
    drop(holder);
    let (taken, _) = run(&store, &["lock", "job", "--", "true"]);
    assert!(taken);
    assert!(
        killed.elapsed() < Duration::from_secs(4),
        "{:?}",
        killed.elapsed()
    );

    // An election: a leads; b waits; a is SIGKILLed and b leads within the
    // TTL (2 s) and a second.
    let elect = |value: &str| {
        let mut child = Killed(
            sinew()
                .args(["elect", "primary", value, "--ttl", "2s"])
                .env("SINEW_STORE", &store)
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .spawn()
                .unwrap(),
        );
        let (sender, lines) = std::sync::mpsc::channel::<String>();
        let stdout = BufReader::new(child.0.stdout.take().unwrap());
        std::thread::spawn(move || {
            for line in stdout.lines().map_while(Result::ok) {
                let _ = sender.send(line);
            }
        });
        (child, lines)
    };
    let until_leading = |lines: &std::sync::mpsc::Receiver<String>, within: Duration| {
        let deadline = Instant::now() + within;
        while let Ok(line) = lines.recv_timeout(deadline.saturating_duration_since(Instant::now()))
        {
            if line.starts_with("leading") {
                return Some(line);
            }
        }
        None
    };
    let (a, a_lines) = elect("node-a");
    assert!(until_leading(&a_lines, Duration::from_secs(10)).is_some());
    let (_b, b_lines) = elect("node-b");
    assert!(
        until_leading(&b_lines, Duration::from_millis(500)).is_none(),
        "b waits"
    );
    let (_, observed) = run(
        &store,
        &["kv", "get", "--prefix", "/sinew/elections/primary/"],
    );
    assert_eq!(observed.lines().count(), 2, "two candidates: {observed}");
    let killed = Instant::now();
    drop(a);
    let line = until_leading(&b_lines, Duration::from_secs(10)).expect("b leads");
    let failover = killed.elapsed();
    assert!(line.contains("node-b"), "{line}");
    assert!(
        failover < Duration::from_secs(3),
        "fail-over took {failover:?}"
    );

    // The store restarted on its file: the keys are there.
    drop(state);
    let (_state, store) = start_state(&data);
    assert_eq!(
        run(&store, &["kv", "get", "app/color"]),
        (true, "blue\n".into())
    );
}

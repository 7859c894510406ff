//! Durable work queues on both backends: push and pull with a limit in
//! flight, ack, nak with a delay, in-progress, term, the ack wait, the
//! dead-letter queue, idempotency ids, ordering per key, the queue's
//! bounds; and on the embedded one, jobs kept across a restart of the
//! store.

mod common;

use common::{broker, Backend, WAIT};
use sinew_messaging::work::{DEAD_LETTER_DELIVERIES, DEAD_LETTER_FROM};
use sinew_messaging::{Broker, Delivery, Error, Job, QueueConfig, Worker};
use std::time::Duration;

on_every_backend!(
    a_job_is_delivered_acked_and_counted,
    a_second_push_with_the_same_id_is_dropped,
    a_worker_holds_at_most_its_limit_of_jobs,
    a_nak_delivers_again_after_its_delay,
    a_lease_that_runs_out_delivers_again_and_the_late_ack_is_refused,
    in_progress_keeps_the_lease,
    the_last_delivery_moves_the_job_to_the_dead_letter_queue,
    a_keys_jobs_go_one_at_a_time_in_order,
    a_full_queue_refuses_pushes,
    a_full_dead_letter_queue_holds_the_job_back_until_it_has_room,
    a_terminated_job_is_gone,
    bad_names_and_unknown_queues_are_refused,
);

/// Whether the backend counts settlements (acks, terms, dead letters,
/// duplicates): JetStream keeps no such counters.
fn counts(backend: Backend) -> bool {
    backend != Backend::Nats
}

async fn next(worker: &mut Worker) -> Delivery {
    tokio::time::timeout(WAIT, worker.next_job())
        .await
        .expect("a job in time")
        .expect("the worker goes on")
}

async fn nothing_within(worker: &mut Worker, wait: Duration) -> bool {
    tokio::time::timeout(wait, worker.next_job()).await.is_err()
}

async fn a_job_is_delivered_acked_and_counted(backend: Backend) {
    let broker = broker(backend).await;
    let queue = broker
        .work_queue("emails", QueueConfig::default())
        .await
        .unwrap();
    assert_eq!(queue.config().get_ack_wait(), Duration::from_secs(30));
    let pushed = queue
        .push(Job::new("hello").header("to", "ada"))
        .await
        .unwrap();
    assert!(!pushed.duplicate);
    let mut worker = queue.pull(4).await.unwrap();
    let job = next(&mut worker).await;
    assert_eq!((job.sequence(), job.attempt()), (pushed.sequence, 1));
    assert_eq!(job.payload(), "hello");
    assert_eq!(job.header("to"), Some("ada"));
    let stats = queue.stats().await.unwrap();
    assert_eq!((stats.pending, stats.in_flight), (0, 1));
    job.ack().await.unwrap();
    let stats = queue.stats().await.unwrap();
    assert_eq!((stats.pushed, stats.in_flight, stats.bytes), (1, 0, 0));
    if counts(backend) {
        assert_eq!((stats.acked, stats.workers), (1, 1));
    }
    // Opened by name, it has the settings it was made with.
    let opened = broker.open_queue("emails").await.unwrap();
    assert_eq!(opened.config(), queue.config());
    let missing = broker.open_queue("nobody").await.unwrap_err();
    assert!(matches!(missing, Error::UnknownQueue(_)), "{missing}");
    let all = broker.stats().await.unwrap();
    assert_eq!(all.queues.len(), 1);
    assert_eq!(all.queues[0].queue, "emails");
}

async fn a_second_push_with_the_same_id_is_dropped(backend: Backend) {
    let broker = broker(backend).await;
    let queue = broker
        .work_queue("orders", QueueConfig::default())
        .await
        .unwrap();
    let first = queue.push(Job::new("a").id("order-17")).await.unwrap();
    let again = queue.push(Job::new("a").id("order-17")).await.unwrap();
    assert!(again.duplicate);
    assert_eq!(again.sequence, first.sequence);
    let other = queue.push(Job::new("b").id("order-18")).await.unwrap();
    assert!(!other.duplicate);
    let stats = queue.stats().await.unwrap();
    assert_eq!((stats.pending, stats.pushed), (2, 2));
    if counts(backend) {
        assert_eq!(stats.duplicates, 1);
    }
    // After the window, the same id is a new job.
    let short = broker
        .work_queue(
            "retries",
            // (JetStream's shortest window is 100 ms.)
            QueueConfig::default().duplicate_window(Duration::from_millis(150)),
        )
        .await
        .unwrap();
    short.push(Job::new("x").id("same")).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !short
            .push(Job::new("x").id("same"))
            .await
            .unwrap()
            .duplicate
    );
}

async fn a_worker_holds_at_most_its_limit_of_jobs(backend: Backend) {
    let broker = broker(backend).await;
    let queue = broker
        .work_queue("resize", QueueConfig::default())
        .await
        .unwrap();
    for n in 0..5 {
        queue.push(Job::new(n.to_string())).await.unwrap();
    }
    let mut worker = queue.pull(2).await.unwrap();
    let first = next(&mut worker).await;
    let second = next(&mut worker).await;
    assert_eq!(
        (first.payload().as_ref(), second.payload().as_ref()),
        (&b"0"[..], &b"1"[..])
    );
    assert!(nothing_within(&mut worker, Duration::from_millis(100)).await);
    // A second worker takes what the first has no room for.
    let mut helper = queue.pull(10).await.unwrap();
    let mut helped = Vec::new();
    for _ in 0..3 {
        helped.push(next(&mut helper).await);
    }
    first.ack().await.unwrap();
    assert!(nothing_within(&mut worker, Duration::from_millis(100)).await);
    for job in helped {
        job.ack().await.unwrap();
    }
    second.ack().await.unwrap();
    let stats = queue.stats().await.unwrap();
    assert_eq!((stats.pending, stats.in_flight), (0, 0));
    if counts(backend) {
        assert_eq!(stats.acked, 5);
    }
}

async fn a_nak_delivers_again_after_its_delay(backend: Backend) {
    let broker = broker(backend).await;
    let queue = broker
        .work_queue("flaky", QueueConfig::default())
        .await
        .unwrap();
    queue.push(Job::new("try me")).await.unwrap();
    let mut worker = queue.pull(1).await.unwrap();
    let job = next(&mut worker).await;
    let started = tokio::time::Instant::now();
    job.nak(Duration::from_millis(200)).await.unwrap();
    if counts(backend) {
        assert_eq!(queue.stats().await.unwrap().delayed, 1);
    }
    let again = next(&mut worker).await;
    assert!(started.elapsed() >= Duration::from_millis(200));
    assert_eq!(again.attempt(), 2);
    // A nak without a delay is at once.
    again.nak(Duration::ZERO).await.unwrap();
    let third = next(&mut worker).await;
    assert_eq!(third.attempt(), 3);
    third.ack().await.unwrap();
    if counts(backend) {
        let stats = queue.stats().await.unwrap();
        assert_eq!((stats.redelivered, stats.acked), (2, 1));
    }
}

async fn a_lease_that_runs_out_delivers_again_and_the_late_ack_is_refused(backend: Backend) {
    let broker = broker(backend).await;
    let config = QueueConfig::default().ack_wait(Duration::from_millis(150));
    let queue = broker.work_queue("slow", config).await.unwrap();
    queue.push(Job::new("x").id("x-1")).await.unwrap();
    let mut stuck = queue.pull(1).await.unwrap();
    let held = next(&mut stuck).await;
    // The lease runs out; the job goes out again (here, to the same
    // worker, which has room again).
    let again = next(&mut stuck).await;
    assert_eq!((again.sequence(), again.attempt()), (held.sequence(), 2));
    assert_eq!(again.id(), Some("x-1"));
    if counts(backend) {
        // (JetStream takes a late ack of an earlier delivery as an ack.)
        let late = held.ack().await.unwrap_err();
        assert!(
            matches!(late, Error::LeaseLost { attempt: 1, .. }),
            "{late}"
        );
    }
    again.ack().await.unwrap();
    let stats = queue.stats().await.unwrap();
    assert_eq!((stats.pending, stats.in_flight), (0, 0));
}

async fn in_progress_keeps_the_lease(backend: Backend) {
    let broker = broker(backend).await;
    let config = QueueConfig::default().ack_wait(Duration::from_millis(300));
    let queue = broker.work_queue("long", config).await.unwrap();
    queue.push(Job::new("x")).await.unwrap();
    let mut worker = queue.pull(5).await.unwrap();
    let job = next(&mut worker).await;
    for _ in 0..4 {
        tokio::time::sleep(Duration::from_millis(150)).await;
        job.in_progress().await.unwrap();
    }
    // 600 ms after the delivery, twice the ack wait: still the one lease.
    assert!(nothing_within(&mut worker, Duration::from_millis(100)).await);
    job.ack().await.unwrap();
    let stats = queue.stats().await.unwrap();
    assert_eq!((stats.redelivered, stats.pending), (0, 0));
}

async fn the_last_delivery_moves_the_job_to_the_dead_letter_queue(backend: Backend) {
    let broker = broker(backend).await;
    let config = QueueConfig::default()
        .max_deliveries(2)
        .ack_wait(Duration::from_millis(100));
    let queue = broker.work_queue("payments", config).await.unwrap();
    queue
        .push(Job::new("poison").header("customer", "7"))
        .await
        .unwrap();
    let mut worker = queue.pull(1).await.unwrap();
    next(&mut worker).await.nak(Duration::ZERO).await.unwrap();
    // The second and last delivery's lease runs out.
    let last = next(&mut worker).await;
    assert_eq!(last.attempt(), 2);
    drop(last);
    let dead = broker
        .work_queue(
            "payments.dead",
            QueueConfig::default().unlimited_deliveries(),
        )
        .await
        .unwrap();
    let mut inspector = dead.pull(1).await.unwrap();
    let job = next(&mut inspector).await;
    assert_eq!(job.payload(), "poison");
    assert_eq!(job.header("customer"), Some("7"));
    assert_eq!(job.header(DEAD_LETTER_FROM), Some("payments"));
    assert_eq!(job.header(DEAD_LETTER_DELIVERIES), Some("2"));
    job.ack().await.unwrap();
    let stats = queue.stats().await.unwrap();
    assert_eq!((stats.pending, stats.in_flight), (0, 0));
    if counts(backend) {
        assert_eq!(stats.dead_lettered, 1);
    }
    assert!(nothing_within(&mut worker, Duration::from_millis(150)).await);
}

async fn a_keys_jobs_go_one_at_a_time_in_order(backend: Backend) {
    let broker = broker(backend).await;
    let queue = broker
        .work_queue("accounts", QueueConfig::default())
        .await
        .unwrap();
    if backend == Backend::Nats {
        let refused = queue.push(Job::new("x").key("ada")).await.unwrap_err();
        assert!(matches!(refused, Error::Unsupported(_)), "{refused}");
        return;
    }
    for (key, n) in [("ada", 1), ("bob", 1), ("ada", 2), ("ada", 3), ("bob", 2)] {
        queue
            .push(Job::new(format!("{key}-{n}")).key(key))
            .await
            .unwrap();
    }
    let mut worker = queue.pull(10).await.unwrap();
    let a1 = next(&mut worker).await;
    let b1 = next(&mut worker).await;
    assert_eq!(
        (a1.payload().as_ref(), b1.payload().as_ref()),
        (&b"ada-1"[..], &b"bob-1"[..])
    );
    assert_eq!(a1.key(), Some("ada"));
    // Room for ten, but each key has one out.
    assert!(nothing_within(&mut worker, Duration::from_millis(100)).await);
    a1.nak(Duration::ZERO).await.unwrap();
    let again = next(&mut worker).await;
    assert_eq!(
        (again.payload().as_ref(), again.attempt()),
        (&b"ada-1"[..], 2)
    );
    again.ack().await.unwrap();
    assert_eq!(next(&mut worker).await.payload(), "ada-2");
    b1.ack().await.unwrap();
    assert_eq!(next(&mut worker).await.payload(), "bob-2");
}

async fn a_full_queue_refuses_pushes(backend: Backend) {
    let broker = broker(backend).await;
    let queue = broker
        .work_queue("small", QueueConfig::default().max_jobs(2).max_bytes(1000))
        .await
        .unwrap();
    queue.push(Job::new("1")).await.unwrap();
    queue.push(Job::new("2")).await.unwrap();
    let full = queue.push(Job::new("3")).await.unwrap_err();
    assert!(matches!(full, Error::QueueFull { .. }), "{full}");
    assert!(full.is_transient());
    let mut worker = queue.pull(1).await.unwrap();
    next(&mut worker).await.ack().await.unwrap();
    queue.push(Job::new("3")).await.unwrap();
    let bytes = broker
        .work_queue("tiny", QueueConfig::default().max_bytes(10))
        .await
        .unwrap();
    let full = bytes.push(Job::new(vec![0u8; 11])).await.unwrap_err();
    assert!(matches!(full, Error::QueueFull { .. }), "{full}");
}

async fn a_full_dead_letter_queue_holds_the_job_back_until_it_has_room(backend: Backend) {
    let broker = broker(backend).await;
    let dead = broker
        .work_queue(
            "invoices.dead",
            QueueConfig::default().unlimited_deliveries().max_jobs(1),
        )
        .await
        .unwrap();
    dead.push(Job::new("already dead")).await.unwrap();
    let queue = broker
        .work_queue("invoices", QueueConfig::default().max_deliveries(1))
        .await
        .unwrap();
    queue.push(Job::new("poison")).await.unwrap();
    let mut worker = queue.pull(1).await.unwrap();
    next(&mut worker).await.nak(Duration::ZERO).await.unwrap();
    // No room in the dead letters: the job waits, delivered to no one.
    assert!(nothing_within(&mut worker, Duration::from_millis(300)).await);
    let mut inspector = dead.pull(1).await.unwrap();
    let first = next(&mut inspector).await;
    assert_eq!(first.payload(), "already dead");
    first.ack().await.unwrap();
    // Room: the job moves (on NATS, when it comes back, a second later).
    let moved = tokio::time::timeout(Duration::from_secs(10), inspector.next_job())
        .await
        .expect("moved once there is room")
        .unwrap();
    assert_eq!(moved.payload(), "poison");
    assert_eq!(moved.header(DEAD_LETTER_FROM), Some("invoices"));
    moved.ack().await.unwrap();
    let stats = queue.stats().await.unwrap();
    assert_eq!((stats.pending, stats.in_flight), (0, 0));
}

async fn a_terminated_job_is_gone(backend: Backend) {
    let broker = broker(backend).await;
    let config = QueueConfig::default().ack_wait(Duration::from_millis(50));
    let queue = broker.work_queue("hopeless", config).await.unwrap();
    queue.push(Job::new("x")).await.unwrap();
    let mut worker = queue.pull(1).await.unwrap();
    next(&mut worker).await.term().await.unwrap();
    assert!(nothing_within(&mut worker, Duration::from_millis(150)).await);
    let stats = queue.stats().await.unwrap();
    assert_eq!((stats.pending, stats.in_flight), (0, 0));
    if counts(backend) {
        assert_eq!((stats.terminated, stats.dead_lettered), (1, 0));
    }
}

async fn bad_names_and_unknown_queues_are_refused(backend: Backend) {
    let broker = broker(backend).await;
    for name in ["", "a..b", "a b", "jobs.*"] {
        let error = broker
            .work_queue(name, QueueConfig::default())
            .await
            .unwrap_err();
        assert!(matches!(error, Error::Subject(_)), "{name:?}: {error}");
    }
    let queue = broker
        .work_queue("fine", QueueConfig::default())
        .await
        .unwrap();
    for job in [
        Job::new("x").id(""),
        Job::new("x").key("a\nb"),
        Job::new("x").id("x".repeat(257)),
        Job::new("x").header("bad name", "v"),
    ] {
        let error = queue.push(job).await.unwrap_err();
        assert!(matches!(error, Error::InvalidHeader { .. }), "{error}");
    }
    let big = queue
        .push(Job::new(vec![0u8; broker.max_payload() + 1]))
        .await
        .unwrap_err();
    assert!(matches!(big, Error::PayloadTooLarge { .. }), "{big}");
    queue.push(Job::new("still fine")).await.unwrap();
}

/// Opens the broker at `path`, waiting for the previous one's store to
/// let go of the file.
async fn reopen(path: &std::path::Path) -> Broker {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        match Broker::builder().storage(path).build() {
            Ok(broker) => return broker,
            Err(error) if tokio::time::Instant::now() < deadline => {
                let _ = error;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(error) => panic!("reopening: {error}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stored_jobs_ids_and_delivery_counts_outlive_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("broker.redb");
    {
        let broker = reopen(&path).await;
        let config = QueueConfig::default().max_deliveries(3);
        let queue = broker.work_queue("durable", config).await.unwrap();
        queue.push(Job::new("one").id("id-1")).await.unwrap();
        queue.push(Job::new("two").key("k")).await.unwrap();
        queue.push(Job::new("three").key("k")).await.unwrap();
        let mut worker = queue.pull(1).await.unwrap();
        // Delivered, never settled: the restart delivers it again.
        let job = next(&mut worker).await;
        assert_eq!((job.payload().as_ref(), job.attempt()), (&b"one"[..], 1));
    }
    let broker = reopen(&path).await;
    let queue = broker
        .work_queue("durable", QueueConfig::default().max_deliveries(3))
        .await
        .unwrap();
    let stats = queue.stats().await.unwrap();
    assert_eq!((stats.pending, stats.in_flight), (3, 0));
    // The id is still known; the sequence goes on.
    let again = queue.push(Job::new("one").id("id-1")).await.unwrap();
    assert!(again.duplicate);
    let four = queue.push(Job::new("four")).await.unwrap();
    assert_eq!(four.sequence, 4);
    let mut worker = queue.pull(10).await.unwrap();
    let mut seen = Vec::new();
    for _ in 0..3 {
        let job = next(&mut worker).await;
        seen.push((
            String::from_utf8(job.payload().to_vec()).unwrap(),
            job.attempt(),
        ));
        job.ack().await.unwrap();
    }
    assert_eq!(seen[0], ("one".to_owned(), 2), "its first delivery counted");
    let next_one = next(&mut worker).await;
    seen.push((
        String::from_utf8(next_one.payload().to_vec()).unwrap(),
        next_one.attempt(),
    ));
    seen.sort();
    assert_eq!(
        seen,
        [
            ("four".to_owned(), 1),
            ("one".to_owned(), 2),
            ("three".to_owned(), 1),
            ("two".to_owned(), 1)
        ]
    );
}

on_every_backend!(
    tasks_run_on_workers_and_their_results_come_back,
    a_task_that_keeps_failing_reports_its_failure_once,
);

async fn tasks_run_on_workers_and_their_results_come_back(backend: Backend) {
    use sinew_messaging::TaskQueue;
    let broker = broker(backend).await;
    let tasks = TaskQueue::new(&broker, "thumbnails", QueueConfig::default())
        .await
        .unwrap();
    // Two workers (on other machines, in production), each running two
    // tasks at a time.
    let mut workers = Vec::new();
    for worker in 0..2 {
        let tasks = tasks.clone();
        workers.push(tokio::spawn(async move {
            tasks
                .serve(2, move |task| async move {
                    let size = task.payload().len();
                    Ok(format!("worker {worker}: {size} bytes").into())
                })
                .await
        }));
    }
    let mut pending = Vec::new();
    for n in 0..20 {
        pending.push(
            tasks
                .submit(Job::new(vec![0u8; n]).id(format!("photo-{n}")))
                .await
                .unwrap(),
        );
    }
    let mut by_worker = [0, 0];
    for (n, task) in pending.into_iter().enumerate() {
        assert_eq!(task.id(), format!("photo-{n}"));
        let result = task.result(WAIT).await.unwrap();
        let text = String::from_utf8(result.to_vec()).unwrap();
        assert!(text.ends_with(&format!(": {n} bytes")), "{text}");
        by_worker[usize::from(text.starts_with("worker 1"))] += 1;
    }
    assert_eq!(by_worker[0] + by_worker[1], 20);
    // A task submitted again with the same id runs once: the second
    // submission is dropped, and its result never comes.
    let again = tasks.submit(Job::new("x").id("photo-3")).await.unwrap();
    let error = again.result(Duration::from_millis(300)).await.unwrap_err();
    assert!(
        matches!(error, sinew_messaging::TaskError::TimedOut(_)),
        "{error}"
    );
    for worker in workers {
        worker.abort();
    }
}

async fn a_task_that_keeps_failing_reports_its_failure_once(backend: Backend) {
    use sinew_messaging::{TaskError, TaskQueue};
    let broker = broker(backend).await;
    let config = QueueConfig::default().max_deliveries(3);
    let tasks = TaskQueue::new(&broker, "flaky", config).await.unwrap();
    let attempts = std::sync::Arc::new(std::sync::atomic::AtomicU32::new(0));
    let seen = attempts.clone();
    let worker = {
        let tasks = tasks.clone();
        tokio::spawn(async move {
            tasks
                .serve(1, move |task| {
                    let seen = seen.clone();
                    async move {
                        seen.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                        if task.payload() == "fine" {
                            Ok("done".into())
                        } else {
                            Err(format!("attempt {} failed", task.attempt()))
                        }
                    }
                })
                .await
        })
    };
    let error = tasks.run(Job::new("doomed"), WAIT).await.unwrap_err();
    match error {
        TaskError::Failed(message) => assert_eq!(message, "attempt 3 failed"),
        other => panic!("{other}"),
    }
    assert_eq!(attempts.load(std::sync::atomic::Ordering::SeqCst), 3);
    // The queue goes on.
    assert_eq!(tasks.run(Job::new("fine"), WAIT).await.unwrap(), "done");
    // The failed task is in the dead letters (moved there just after its
    // failure was published).
    let deadline = tokio::time::Instant::now() + WAIT;
    let dead = loop {
        match broker.open_queue("flaky.dead").await {
            Ok(dead) => break dead,
            Err(Error::UnknownQueue(_)) if tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(error) => panic!("{error}"),
        }
    };
    eventually_pending(&dead, 1).await;
    worker.abort();
}

async fn eventually_pending(queue: &sinew_messaging::WorkQueue, jobs: u64) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while queue.stats().await.unwrap().pending != jobs {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{jobs} jobs pending"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

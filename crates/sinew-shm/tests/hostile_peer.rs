//! A peer process that scribbles over the shared memory: we fail the
//! connection with a clear error, never crash, and keep serving others.
//!
//! The peer is this test binary run again as a child process (with
//! `SINEW_SHM_HOSTILE_PATH` set): it connects normally, then overwrites, in its
//! mapping of the region, either the ring indices (with values that point
//! outside the ring) or the slab rings (a descriptor of a slab that does not
//! exist, a completion for a slab it was never sent), as a buggy or malicious
//! process could.

use sinew_shm::{connect, ShmListener, ShmOptions};
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixListener;

const PATH_VARIABLE: &str = "SINEW_SHM_HOSTILE_PATH";
/// What the child corrupts: "rings" or "slabs".
const MODE_VARIABLE: &str = "SINEW_SHM_HOSTILE_MODE";
/// Offsets in the region (see region.rs and ring.rs): ring 0 (client to
/// server) has its control block at 0 with `tail` first; ring 1's is at 2048,
/// with `head` 128 bytes in.
const RING0_TAIL: usize = 0;
const RING1_HEAD: usize = 2048 + 128;
/// Slab control blocks (slab.rs): direction 0's at 4096, direction 1's at 6144;
/// in each, `desc_tail` at 0, `done_tail` at 256, the descriptors (24 bytes:
/// position u64, slab u32, len u32, generation u32) at 512, the completions
/// (u64) at 1280.
const SLABS0: usize = 4096;
const SLABS1: usize = 6144;

/// Start address of this process's mapping of a sinew region.
fn region_address() -> usize {
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
    let line = maps
        .lines()
        .find(|line| line.contains("memfd:sinew-shm"))
        .expect("the region is mapped");
    let start = line.split('-').next().unwrap();
    usize::from_str_radix(start, 16).unwrap()
}

/// The child's part: runs only when started by the parent test.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_child_process() {
    let Ok(path) = std::env::var(PATH_VARIABLE) else {
        return; // run as an ordinary test: nothing to do
    };
    let mut stream = connect(path.as_ref(), &ShmOptions::default())
        .await
        .unwrap();
    stream.write_all(b"ping").await.unwrap();
    // Wait for the parent to have read it, then corrupt both rings.
    let mut line = String::new();
    std::io::stdin().read_line(&mut line).unwrap();
    let base = region_address();
    let store = |offset: usize, value: u64| {
        // SAFETY: every offset used is an 8-byte-aligned u64 (or a pair of u32)
        // inside this process's live mapping of the region (the stream still
        // holds it).
        unsafe { (*((base + offset) as *const AtomicU64)).store(value, Ordering::SeqCst) }
    };
    if std::env::var(MODE_VARIABLE).as_deref() == Ok("slabs") {
        // Our direction: "after the 4 bytes of ping, slab 1000" (there are 8).
        store(SLABS0 + 512, 4);
        store(SLABS0 + 512 + 8, 1 << 32 | 1000); // len 1, slab 1000
        store(SLABS0, 1);
        // The server's direction: "done with slab 0, generation 1", never sent.
        store(SLABS1 + 1280, 1);
        store(SLABS1 + 256, 1);
    } else {
        store(RING0_TAIL, u64::MAX / 3);
        store(RING1_HEAD, 1 << 40);
    }
    println!("corrupted");
    // Stay alive (and connected) until the parent is done with us.
    std::io::stdin().read_line(&mut line).unwrap();
    drop(stream);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_indices_from_another_process_fail_the_connection_not_us() {
    if std::env::var(PATH_VARIABLE).is_ok() {
        return; // this is the child
    }
    hostile_peer("rings").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_slab_descriptors_and_completions_fail_the_connection_not_us() {
    if std::env::var(PATH_VARIABLE).is_ok() {
        return; // this is the child
    }
    hostile_peer("slabs").await;
}

/// Serves a child that corrupts the region (`mode`: see [`MODE_VARIABLE`]),
/// checks that reading and writing fail with `InvalidData`, then that a good
/// client is still served.
async fn hostile_peer(mode: &str) {
    let dir = std::env::temp_dir().join(format!("sinew-shm-hostile-{mode}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("control.sock");
    let listener = ShmListener::new(
        UnixListener::bind(&path).unwrap(),
        path.clone(),
        ShmOptions::default(),
    );
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "hostile_child_process",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(PATH_VARIABLE, &path)
        .env(MODE_VARIABLE, mode)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut child_in = child.stdin.take().unwrap();
    let mut child_out = BufReader::new(child.stdout.take().unwrap());

    let server = tokio::time::timeout(Duration::from_secs(10), listener.accept())
        .await
        .unwrap()
        .unwrap();
    let (mut read, mut write) = server.into_split();
    let mut ping = [0u8; 4];
    read.read_exact(&mut ping).await.unwrap();
    assert_eq!(&ping, b"ping");
    writeln!(child_in).unwrap();
    let mut line = String::new();
    loop {
        line.clear();
        assert!(child_out.read_line(&mut line).unwrap() > 0, "child died");
        // (libtest prints the test's name on the same line.)
        if line.trim_end().ends_with("corrupted") {
            break;
        }
    }

    // Reading: the peer's tail is outside the ring, or its descriptor names a
    // slab that does not exist. Refused before any copy.
    let mut buf = [0u8; 64];
    let error = read.read(&mut buf).await.unwrap_err();
    assert_eq!(error.kind(), std::io::ErrorKind::InvalidData, "{error}");
    let expected = match mode {
        "slabs" => "outside the slab area",
        _ => "outside the ring",
    };
    assert!(error.to_string().contains(expected), "{error}");
    // Writing: the peer's head claims bytes we never wrote, or it gave back a
    // slab we never sent (noticed when we next look for free slabs). Refused.
    if mode == "slabs" {
        let pool = write.slab_pool().unwrap();
        assert!(pool.alloc(1).is_none(), "a broken pool hands out nothing");
    }
    let error = write.write_all(b"pong").await.unwrap_err();
    assert_eq!(error.kind(), std::io::ErrorKind::InvalidData, "{error}");

    // We are still here, and a well-behaved client still gets through.
    writeln!(child_in).unwrap();
    assert!(child.wait().unwrap().success(), "the child exits cleanly");
    let mut good = connect(&path, &ShmOptions::default()).await.unwrap();
    let accepted = tokio::time::timeout(Duration::from_secs(10), listener.accept())
        .await
        .unwrap()
        .unwrap();
    good.write_all(b"fine").await.unwrap();
    let (mut read, _) = accepted.into_split();
    let mut fine = [0u8; 4];
    read.read_exact(&mut fine).await.unwrap();
    assert_eq!(&fine, b"fine");
    let _ = std::fs::remove_dir_all(&dir);
}

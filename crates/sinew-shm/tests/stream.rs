//! A shared-memory connection in one process: handshake, bytes both ways
//! through rings smaller than the messages, orderly close, refused handshakes.

use sinew_shm::{connect, ShmListener, ShmOptions, ShmStream};
use std::path::PathBuf;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};

struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        let dir = std::env::temp_dir().join(format!("sinew-shm-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn small_rings() -> ShmOptions {
    ShmOptions {
        ring_capacity: 64 * 1024,
        ..ShmOptions::default()
    }
}

async fn pair(dir: &TempDir, options: ShmOptions) -> (ShmListener, ShmStream, ShmStream) {
    let path = dir.0.join("control.sock");
    let _ = std::fs::remove_file(&path);
    let listener = ShmListener::new(
        UnixListener::bind(&path).unwrap(),
        path.clone(),
        options.clone(),
    );
    let client = connect(&path, &options).await.unwrap();
    let server = tokio::time::timeout(Duration::from_secs(5), listener.accept())
        .await
        .unwrap()
        .unwrap();
    (listener, client, server)
}

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bytes_larger_than_the_ring_pass_both_ways_whole() {
    let dir = TempDir::new("bytes");
    let (_listener, client, server) = pair(&dir, small_rings()).await;
    assert_eq!(client.ring_capacity(), 64 * 1024);
    // 5 MiB each way at once: 80 times the ring, so both writers must wait for
    // room and both readers for data, concurrently.
    let up = pattern(5 << 20, 1);
    let down = pattern(5 << 20, 2);
    let (mut client_read, mut client_write) = client.into_split();
    let (mut server_read, mut server_write) = server.into_split();
    let sent_up = {
        let up = up.clone();
        tokio::spawn(async move {
            client_write.write_all(&up).await.unwrap();
            client_write.shutdown().await.unwrap();
        })
    };
    let sent_down = {
        let down = down.clone();
        tokio::spawn(async move {
            server_write.write_all(&down).await.unwrap();
            drop(server_write); // dropping closes too
        })
    };
    let received_up = tokio::spawn(async move {
        let mut all = Vec::new();
        server_read.read_to_end(&mut all).await.unwrap();
        all
    });
    let mut received_down = Vec::new();
    client_read.read_to_end(&mut received_down).await.unwrap();
    sent_up.await.unwrap();
    sent_down.await.unwrap();
    assert!(
        received_up.await.unwrap() == up,
        "client -> server bytes differ"
    );
    assert!(received_down == down, "server -> client bytes differ");
}

/// Sends `count` length-prefixed messages of 1 B to `max` bytes from the
/// client to the server: each prefix through the ring, each body through slabs
/// when enough are free, else through the ring. The reader starts after
/// `reader_delay`. Checks every message; returns how many bodies went through
/// slabs and through the ring.
async fn slab_exchange(
    options: ShmOptions,
    count: usize,
    max: usize,
    reader_delay: Duration,
) -> (usize, usize) {
    let dir = TempDir::new(&format!("slabs-{count}-{max}"));
    let slab_count = options.slab_count as usize;
    let (_listener, client, server) = pair(&dir, options).await;
    let (mut server_read, _server_write) = server.into_split();
    let (_client_read, mut client_write) = client.into_split();
    let pool = client_write.slab_pool().expect("slabs were asked for");
    let mut seed = 0x2545_f491_u32;
    let messages: Vec<Vec<u8>> = (0..count)
        .map(|i| {
            seed ^= seed << 13;
            seed ^= seed >> 17;
            seed ^= seed << 5;
            pattern(1 + (seed as usize % max), i as u8)
        })
        .collect();
    let expected = messages.clone();
    let writer = tokio::spawn(async move {
        let (mut via_slabs, mut via_ring) = (0, 0);
        for message in &messages {
            client_write
                .write_all(&(message.len() as u32).to_le_bytes())
                .await
                .unwrap();
            match pool.alloc(message.len()) {
                Some(mut buf) => {
                    bytes::BufMut::put_slice(&mut buf, message);
                    client_write.send_slab(buf).unwrap();
                    via_slabs += 1;
                }
                None => {
                    client_write.write_all(message).await.unwrap();
                    via_ring += 1;
                }
            }
        }
        client_write.shutdown().await.unwrap();
        (via_slabs, via_ring, pool)
    });
    tokio::time::sleep(reader_delay).await;
    for (i, message) in expected.iter().enumerate() {
        let len = server_read.read_u32_le().await.unwrap() as usize;
        assert_eq!(len, message.len(), "length of message {i}");
        let mut body = vec![0u8; len];
        server_read.read_exact(&mut body).await.unwrap();
        assert!(body == *message, "message {i} differs");
    }
    let mut rest = Vec::new();
    server_read.read_to_end(&mut rest).await.unwrap();
    assert!(rest.is_empty(), "nothing after the last message");
    let (via_slabs, via_ring, pool) = writer.await.unwrap();
    assert_eq!(pool.free_slabs(), slab_count, "every slab given back");
    (via_slabs, via_ring)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slab_messages_keep_their_place_and_exhausted_slabs_fall_back_to_the_ring() {
    let options = ShmOptions {
        slab_size: 16 * 1024,
        slab_count: 4,
        ..small_rings()
    };
    // The reader starts late: the slabs run out and the ring fills, so the
    // writer must wait (backpressure); nothing may be lost or reordered.
    let (via_slabs, via_ring) =
        slab_exchange(options.clone(), 300, 100 * 1024, Duration::from_millis(200)).await;
    assert!(via_slabs > 0 && via_ring > 0, "{via_slabs} / {via_ring}");
    // Reader and writer at once, small messages: descriptors are published
    // while the reader is reading the ring bytes around them.
    let (via_slabs, via_ring) = slab_exchange(options, 20_000, 300, Duration::ZERO).await;
    assert!(via_slabs > 0, "{via_slabs} / {via_ring}");

    // Slabs can be turned off.
    let dir = TempDir::new("no-slabs");
    let options = ShmOptions {
        slab_count: 0,
        ..small_rings()
    };
    let (_listener, client, _server) = pair(&dir, options).await;
    assert!(client.slab_pool().is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_goes_away_is_noticed_by_both_halves() {
    // (A peer killed outright is tested across processes, in the workspace's
    // tests/shm_processes.rs; here the peer drops its end.)
    let dir = TempDir::new("gone");
    let (_listener, mut client, server) = pair(&dir, small_rings()).await;
    let (mut server_read, mut server_write) = server.into_split();
    client.write_all(b"last words").await.unwrap();
    drop(client);
    let mut buf = [0u8; 10];
    server_read.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"last words", "bytes sent before the close are read");
    let n = tokio::time::timeout(Duration::from_secs(5), server_read.read(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(n, 0, "then the end of the stream");
    // Writing to a peer that is gone fails, rather than filling a ring nobody
    // reads.
    let big = vec![0u8; 1 << 20];
    let error = tokio::time::timeout(Duration::from_secs(5), server_write.write_all(&big))
        .await
        .unwrap()
        .unwrap_err();
    assert_eq!(error.kind(), std::io::ErrorKind::ConnectionReset, "{error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_hellos_are_refused_with_a_reason_and_the_listener_goes_on() {
    let dir = TempDir::new("refuse");
    let path = dir.0.join("control.sock");
    let options = ShmOptions {
        handshake_timeout: Duration::from_millis(300),
        ..small_rings()
    };
    let listener = ShmListener::new(
        UnixListener::bind(&path).unwrap(),
        path.clone(),
        options.clone(),
    );

    // Garbage instead of a hello: the server says why and hangs up.
    let mut garbage = UnixStream::connect(&path).await.unwrap();
    garbage.write_all(&[0xAB; 32]).await.unwrap();
    assert_eq!(garbage.read_u8().await.unwrap(), 1, "refused");
    let len = garbage.read_u16_le().await.unwrap();
    let mut reason = vec![0u8; len as usize];
    garbage.read_exact(&mut reason).await.unwrap();
    let reason = String::from_utf8(reason).unwrap();
    assert!(
        reason.contains("not a sinew shared-memory hello"),
        "{reason}"
    );

    // Well-formed hellos: without their descriptors, with too many slabs, with
    // a region length that does not match, from an older version.
    let hello = |version: u32, slab_count: u16, slab_shift: u8, len: u64| {
        let mut hello = [0u8; 32];
        hello[..8].copy_from_slice(b"SINEWSHM");
        hello[8..12].copy_from_slice(&version.to_le_bytes());
        hello[12..14].copy_from_slice(&slab_count.to_le_bytes());
        hello[14] = slab_shift;
        hello[16..24].copy_from_slice(&65536u64.to_le_bytes());
        hello[24..32].copy_from_slice(&len.to_le_bytes());
        hello
    };
    let rings_only = 8192 + 2 * 65536;
    for (hello, expected) in [
        (hello(2, 0, 0, rings_only), "expected 5 descriptors"),
        (
            hello(2, 2, 12, rings_only + 4 * 4096),
            "expected 5 descriptors",
        ),
        (hello(2, 33, 12, rings_only + 66 * 4096), "slabs must be"),
        (hello(2, 1, 11, rings_only + 2 * 2048), "slabs must be"),
        (hello(2, 1, 70, rings_only), "malformed slab fields"),
        (hello(2, 2, 12, rings_only), "does not match"),
        (hello(1, 0, 0, rings_only), "version 1"),
    ] {
        let mut bare = UnixStream::connect(&path).await.unwrap();
        bare.write_all(&hello).await.unwrap();
        assert_eq!(bare.read_u8().await.unwrap(), 1);
        let len = bare.read_u16_le().await.unwrap();
        let mut reason = vec![0u8; len as usize];
        bare.read_exact(&mut reason).await.unwrap();
        let reason = String::from_utf8(reason).unwrap();
        assert!(reason.contains(expected), "{reason}");
    }

    // A client that says nothing is dropped at the handshake timeout.
    let mut silent = UnixStream::connect(&path).await.unwrap();
    let mut byte = [0u8; 1];
    let n = tokio::time::timeout(Duration::from_secs(5), silent.read(&mut byte))
        .await
        .unwrap()
        .unwrap_or(0);
    assert_eq!(n, 0, "hung up on");

    // None of that reached `accept`, and a real client still gets through.
    let client = connect(&path, &options).await.unwrap();
    let server = tokio::time::timeout(Duration::from_secs(5), listener.accept())
        .await
        .unwrap()
        .unwrap();
    let (_, mut write) = client.into_split();
    let (mut read, _) = server.into_split();
    write.write_all(b"hello").await.unwrap();
    let mut buf = [0u8; 5];
    read.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"hello");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ring_gauge_sees_unread_bytes_from_both_ends_and_outlives_nothing() {
    let dir = TempDir::new("gauge");
    let (_listener, client, server) = pair(&dir, small_rings()).await;
    let (_client_read, mut client_write) = client.into_split();
    let (mut server_read, server_write) = server.into_split();
    let writer_gauge = client_write.ring_gauge();
    let reader_gauge = server_write.ring_gauge();
    assert_eq!(writer_gauge.capacity(), Some(64 * 1024));
    assert_eq!(writer_gauge.used(), Some((0, 0)));
    // Written, not read: the writer's outbound ring is the reader's inbound.
    client_write.write_all(&pattern(1000, 3)).await.unwrap();
    assert_eq!(writer_gauge.used(), Some((1000, 0)));
    assert_eq!(reader_gauge.used(), Some((0, 1000)));
    let mut read = vec![0; 1000];
    server_read.read_exact(&mut read).await.unwrap();
    assert_eq!(read, pattern(1000, 3));
    assert_eq!(reader_gauge.used(), Some((0, 0)));
    // The gauge does not keep the memory: once both halves of every side
    // are gone, it reads nothing.
    drop((client_write, _client_read, server_read, server_write));
    assert_eq!(writer_gauge.used(), None);
    assert_eq!(writer_gauge.capacity(), None);
}

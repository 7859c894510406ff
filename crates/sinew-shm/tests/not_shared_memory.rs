//! A client pointed at a Unix socket that is not a shared-memory control socket
//! (a sinew `unix://` listener, a gRPC server, anything else) says so, instead
//! of failing on the bytes it did not expect ("early eof").
//!
//! The "servers" here are plain Unix listeners that read the hello and answer
//! what those other servers would.

use sinew_shm::{connect, ShmOptions};
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixListener;

/// The start of what a sinew listener sends a peer whose preface it refuses:
/// its own preface (sinew-wire's `preface::MAGIC`, version 1, no settings),
/// then a GOAWAY.
const SINEW_PREFACE: [u8; 12] = [0x89, b'S', b'I', b'N', b'E', b'W', b'\r', b'\n', 0, 1, 0, 0];
/// An HTTP/2 server's first frame: an empty SETTINGS frame, whose first byte
/// is 0 like a shared-memory server's "accepted".
const HTTP2_SETTINGS: [u8; 9] = [0, 0, 0, 4, 0, 0, 0, 0, 0];

struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        let dir =
            std::env::temp_dir().join(format!("sinew-shm-not-shm-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Connects a shared-memory client to a plain Unix listener that reads the
/// 32-byte hello, writes `answer` in one piece and hangs up; returns the
/// client's error message.
async fn error_from_a_server_answering(tag: &str, answer: &'static [u8]) -> (PathBuf, String) {
    let dir = TempDir::new(tag);
    let path = dir.0.join("not-shm.sock");
    let listener = UnixListener::bind(&path).unwrap();
    let server = tokio::spawn(async move {
        let (mut socket, _) = listener.accept().await.unwrap();
        let mut hello = [0u8; 32];
        socket.read_exact(&mut hello).await.unwrap();
        assert_eq!(&hello[..8], b"SINEWSHM", "the client sent its hello");
        if !answer.is_empty() {
            socket.write_all(answer).await.unwrap();
        }
        // Hang up a moment later, as a refusing sinew listener does once its
        // GOAWAY is out.
        tokio::time::sleep(Duration::from_millis(50)).await;
    });
    let options = ShmOptions {
        handshake_timeout: Duration::from_secs(5),
        ..ShmOptions::default()
    };
    let error = tokio::time::timeout(Duration::from_secs(10), connect(&path, &options))
        .await
        .expect("the client gives up within its handshake timeout")
        .expect_err("a plain Unix listener is no shared-memory server");
    server.await.unwrap();
    assert_eq!(
        error.kind(),
        if answer.is_empty() {
            std::io::ErrorKind::ConnectionRefused
        } else {
            std::io::ErrorKind::InvalidData
        },
        "{error}"
    );
    (path, error.to_string())
}

fn shows(path: &Path) -> String {
    path.display().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sinew_unix_listener_is_named_as_such_and_the_right_address_suggested() {
    let (path, message) = error_from_a_server_answering("sinew", &SINEW_PREFACE).await;
    assert_eq!(
        message,
        format!(
            "{} is not a shared-memory endpoint (it answered like a sinew unix:// listener; use unix://{})",
            shows(&path),
            shows(&path)
        )
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http2_server_is_not_taken_for_a_shared_memory_one() {
    let (path, message) = error_from_a_server_answering("http2", &HTTP2_SETTINGS).await;
    assert!(
        message.starts_with(&format!(
            "{} is not a shared-memory endpoint (it answered with more than",
            shows(&path)
        )),
        "{message}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn any_other_answer_is_named_by_its_first_byte() {
    let (path, message) =
        error_from_a_server_answering("text", b"HTTP/1.1 400 Bad Request\r\n\r\n").await;
    assert_eq!(
        message,
        format!(
            "{} is not a shared-memory endpoint (it answered 0x48, where a shared-memory server answers 0 or 1)",
            shows(&path)
        )
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_hangs_up_unanswered_is_reported_as_such() {
    let (path, message) = error_from_a_server_answering("silent", b"").await;
    assert!(
        message.starts_with(&format!(
            "{} hung up without answering the shared-memory hello: it is not a shared-memory endpoint",
            shows(&path)
        )),
        "{message}"
    );
}

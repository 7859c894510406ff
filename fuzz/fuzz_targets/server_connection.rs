//! Fuzzes a whole server connection: the client's preface, then arbitrary
//! bytes, into a real server (the example services, in-process), and checks
//! what comes back.
//!
//! Properties: the server never panics and never hangs on its input (the
//! connection ends, or goes quiet, within the time given); everything it
//! sends is its preface followed by well-formed frames, whatever it was sent.

#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use sinew_examples::echo::{echo_server::EchoServer, EchoService};
use sinew_examples::kv::{key_value_server::KeyValueServer, KeyValueStore};
use sinew_rpc::server::LocalConnector;
use sinew_wire::{FrameDecoder, Preface, Settings};
use std::sync::LazyLock;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

static RUNTIME: LazyLock<tokio::runtime::Runtime> = LazyLock::new(|| {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
});

static SERVER: LazyLock<LocalConnector> = LazyLock::new(|| {
    let _guard = RUNTIME.enter();
    sinew_rpc::Server::builder()
        .add_service(EchoServer::new(EchoService))
        .add_service(KeyValueServer::new(KeyValueStore::default()))
        // Small limits, so that inputs of a few KiB reach them.
        .max_frame_size(16 * 1024)
        .max_header_list_size(1024)
        .max_concurrent_streams(8)
        .request_timeout(Duration::from_millis(20))
        .frame_timeout(Duration::from_millis(20))
        .into_local_connector()
});

fuzz_target!(|data: &[u8]| {
    let server = &*SERVER;
    RUNTIME.block_on(async {
        let mut connection = server.connect();
        let mut input = BytesMut::new();
        Preface::new(Settings::default()).encode(&mut input);
        input.extend_from_slice(data);
        // The server may close before taking it all.
        let _ = connection.write_all(&input).await;
        // Read what the server answers; once it has been quiet for a moment,
        // close our side, and read on until it closes too.
        let mut output = Vec::new();
        let _ = tokio::time::timeout(Duration::from_millis(200), async {
            let mut chunk = [0u8; 16 * 1024];
            let mut closed = false;
            loop {
                let quiet = Duration::from_millis(5);
                match tokio::time::timeout(quiet, connection.read(&mut chunk)).await {
                    Ok(Ok(0)) | Ok(Err(_)) => break,
                    Ok(Ok(n)) => output.extend_from_slice(&chunk[..n]),
                    Err(_) if !closed => {
                        let _ = connection.shutdown().await;
                        closed = true;
                    }
                    Err(_) => {}
                }
            }
        })
        .await;
        let mut output = BytesMut::from(&output[..]);
        if output.is_empty() {
            return;
        }
        let preface = Preface::decode(&mut output)
            .expect("the server's preface is well formed")
            .expect("the server's preface comes whole before anything else");
        let decoder = FrameDecoder::new(preface.settings.max_frame_size.max(16 << 20));
        loop {
            match decoder.decode(&mut output) {
                Ok(Some(_)) => {}
                // A frame cut by the time limit is fine; garbage is not.
                Ok(None) => break,
                Err(error) => panic!("the server sent a malformed frame: {error}"),
            }
        }
    });
});

//! Fuzzes the gRPC message framing of the bridge: arbitrary body bytes, cut
//! into arbitrary chunks, through `MessageDecoder`.
//!
//! Properties: never panics; never yields a message larger than the limit
//! (compressed or not); what it buffers never exceeds what it was given; an
//! uncompressed message framed again by `encode_message` decodes the same.

#![no_main]

use libfuzzer_sys::fuzz_target;
use sinew_grpc::framing::{encode_message, Encoding, MessageDecoder};

const LIMIT: usize = 64 * 1024;

fuzz_target!(|data: &[u8]| {
    let Some((&selector, body)) = data.split_first() else {
        return;
    };
    let encoding = if selector & 1 == 0 {
        Encoding::Identity
    } else {
        Encoding::Gzip
    };
    let chunk = usize::from(selector >> 1).max(1);
    let mut decoder = MessageDecoder::new(encoding, LIMIT);
    let mut given = 0;
    'chunks: for piece in body.chunks(chunk) {
        decoder.push(piece);
        given += piece.len();
        assert!(decoder.buffered() <= given);
        loop {
            match decoder.next_message() {
                Ok(Some(message)) => {
                    assert!(message.len() <= LIMIT);
                    let framed = encode_message(&message, Encoding::Identity);
                    let mut again = MessageDecoder::new(Encoding::Identity, LIMIT);
                    again.push(&framed);
                    assert_eq!(again.next_message().unwrap().as_deref(), Some(&message[..]));
                }
                Ok(None) => break,
                Err(_) => break 'chunks,
            }
        }
    }
});

//! Fuzzes the preface and frame decoders with arbitrary bytes.
//!
//! Properties: decoding never panics, never reads past its input, and every
//! frame it accepts re-encodes to bytes that decode to the same frame.

#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use sinew_wire::{FrameDecoder, Preface};

fuzz_target!(|data: &[u8]| {
    // The first byte picks a small or large frame limit, to reach both paths.
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    let max_frame_size = if selector & 1 == 0 { 16 * 1024 } else { 4 * 1024 * 1024 };
    let decoder = FrameDecoder::new(max_frame_size);

    // Preface first when the input starts like one, as on a real connection.
    let mut buf = BytesMut::from(rest);
    if selector & 2 != 0 {
        match Preface::decode(&mut buf) {
            Ok(Some(preface)) => {
                let mut again = BytesMut::new();
                preface.encode(&mut again);
                assert_eq!(Preface::decode(&mut again), Ok(Some(preface)));
            }
            Ok(None) | Err(_) => return,
        }
    }
    loop {
        let before = buf.len();
        match decoder.decode(&mut buf) {
            Ok(Some(frame)) => {
                assert!(buf.len() < before, "a decoded frame consumes bytes");
                let mut encoded = BytesMut::new();
                frame.encode(&mut encoded);
                let again = FrameDecoder::new(u32::MAX)
                    .decode(&mut encoded)
                    .expect("re-encoded frame decodes")
                    .expect("re-encoded frame is whole");
                assert_eq!(again, frame);
                assert!(encoded.is_empty());
            }
            Ok(None) => {
                assert_eq!(buf.len(), before, "an incomplete frame consumes nothing");
                break;
            }
            Err(_) => break,
        }
    }
});

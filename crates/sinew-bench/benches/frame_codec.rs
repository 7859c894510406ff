//! Criterion micro-benchmark of sinew-wire: encode then decode one 1 KiB unary
//! call (HEADERS + DATA with END_STREAM) and its response (DATA + TRAILERS), the
//! frames a unary call costs on the wire.
//!
//! `cargo bench -p sinew-bench --bench frame_codec`

#![allow(missing_docs)]

use bytes::BytesMut;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use sinew_wire::{encode, Code, FrameDecoder, MetadataMap};
use std::hint::black_box;
use std::time::Duration;

fn unary_call_round_trip(c: &mut Criterion) {
    let payload = vec![b'x'; 1024];
    let metadata = MetadataMap::new();
    let decoder = FrameDecoder::new(4 << 20);
    let mut buf = BytesMut::with_capacity(8192);
    let mut group = c.benchmark_group("frame_codec");
    group.throughput(Throughput::Elements(1));
    group.bench_function("encode+decode 1 KiB unary call", |b| {
        b.iter(|| {
            encode::headers(
                &mut buf,
                7,
                false,
                Some(Duration::from_millis(250)),
                "/grpc.examples.echo.Echo/UnaryEcho",
                &metadata,
            );
            encode::data(&mut buf, 7, true, black_box(&payload));
            encode::data(&mut buf, 7, false, black_box(&payload));
            encode::trailers(&mut buf, 7, Code::Ok, "", b"", &metadata);
            let mut frames = 0;
            while let Some(frame) = decoder.decode(&mut buf).expect("valid frames") {
                black_box(frame);
                frames += 1;
            }
            assert_eq!(frames, 4);
        })
    });
    group.finish();
}

criterion_group!(benches, unary_call_round_trip);
criterion_main!(benches);

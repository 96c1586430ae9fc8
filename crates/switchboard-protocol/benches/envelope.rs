//! Encoding and decoding the backplane envelope that every published
//! message travels in: an `Invocation` carrying two 100-byte frames (one per
//! hub protocol), as switchboard publishes for a typical send.
//!
//! `cargo bench -p switchboard-protocol`

use std::hint::black_box;

use bytes::Bytes;
use criterion::{Criterion, Throughput, criterion_main};
use switchboard_protocol::{
    Body, DEFAULT_MAX_ENVELOPE_SIZE, Envelope, Invocation, SerializedMessage, decode, encode,
};

/// The envelope of one invocation with a JSON and a MessagePack frame.
fn invocation() -> Envelope {
    let frame = |protocol: &str, byte: u8| SerializedMessage {
        protocol: protocol.to_owned(),
        payload: Bytes::from(vec![byte; 100]),
    };
    Envelope {
        body: Some(Body::Invocation(Invocation {
            messages: vec![frame("json", b'j'), frame("messagepack", b'm')],
            ..Default::default()
        })),
    }
}

fn envelope(c: &mut Criterion) {
    let envelope = invocation();
    let bytes = encode(&envelope);
    let mut group = c.benchmark_group("envelope");
    group.throughput(Throughput::Bytes(bytes.len() as u64));
    group.bench_function("encode invocation, 2 x 100 B", |b| {
        b.iter(|| encode(black_box(&envelope)));
    });
    group.bench_function("decode invocation, 2 x 100 B", |b| {
        // Decoding slices the input: cloning `Bytes` is a reference count.
        b.iter(|| decode(black_box(bytes.clone()), DEFAULT_MAX_ENVELOPE_SIZE));
    });
    group.finish();
}

// criterion's macro defines an undocumented public function.
#[allow(missing_docs)]
mod group {
    criterion::criterion_group!(benches, super::envelope);
}
criterion_main!(group::benches);

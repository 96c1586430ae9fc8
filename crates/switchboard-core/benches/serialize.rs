//! Pre-serializing an invocation, the work a send does once before fan-out:
//! `message("alice", <64-byte text>)` for JSON, for MessagePack, and for
//! both (what `HubContext` does by default).
//!
//! `cargo bench -p switchboard-core`

use std::hint::black_box;

use criterion::{Criterion, criterion_main};
use switchboard_core::SerializedMessage;
use switchboard_core::protocol::Protocol;

/// A 64-byte chat line.
const TEXT: &str = "a 64-byte text message, as a chat client would send it, padded..";

fn serialize(c: &mut Criterion) {
    assert_eq!(TEXT.len(), 64);
    let arguments = ("alice", TEXT);
    let mut group = c.benchmark_group("serialize invocation");
    for (name, protocols) in [
        ("json + messagepack", &Protocol::ALL[..]),
        ("json", &[Protocol::Json][..]),
        ("messagepack", &[Protocol::MessagePack][..]),
    ] {
        group.bench_function(name, |b| {
            b.iter(|| {
                SerializedMessage::invocation(
                    black_box(protocols),
                    "message",
                    black_box(&arguments),
                )
            });
        });
    }
    group.finish();
}

// criterion's macro defines an undocumented public function.
#[allow(missing_docs)]
mod group {
    criterion::criterion_group!(benches, super::serialize);
}
criterion_main!(group::benches);

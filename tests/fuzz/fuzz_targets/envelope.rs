//! Fuzzes the backplane envelope decoder.
//!
//! Whatever `decode` accepts must survive `encode_body` and `decode` unchanged, and its payloads
//! must be slices of the received buffer, as the crate documents.

#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use switchboard_protocol::{Body, DecodeError, Outcome, decode, encode_body};

/// The size limit decoded with: small, so that the fuzzer also reaches `TooLarge`.
const MAX_ENVELOPE_SIZE: usize = 8192;

fuzz_target!(|data: &[u8]| {
    let received = Bytes::copy_from_slice(data);
    let body = match decode(received.clone(), MAX_ENVELOPE_SIZE) {
        Ok(body) => body,
        Err(DecodeError::TooLarge { size, limit }) => {
            assert!(
                size == data.len() && size > limit,
                "TooLarge for a payload within the limit"
            );
            return;
        }
        Err(_) => return,
    };
    assert!(
        data.len() <= MAX_ENVELOPE_SIZE,
        "a payload over the limit was decoded"
    );

    let range = received.as_ptr_range();
    for payload in payloads(&body) {
        if !payload.is_empty() {
            assert!(
                range.contains(&payload.as_ptr()),
                "a decoded payload was copied out of the received buffer"
            );
        }
    }

    // No size limit for the second decode: the size check was made on the way in.
    let wire = encode_body(body.clone());
    match decode(wire, usize::MAX) {
        Ok(again) => assert_eq!(again, body, "a body changed on its way through encode_body"),
        Err(e) => panic!("an encoded body did not decode: {e}\n{body:?}"),
    }
});

/// The `bytes` fields of a body.
fn payloads(body: &Body) -> Vec<&Bytes> {
    match body {
        Body::Invocation(invocation) => invocation.messages.iter().map(|m| &m.payload).collect(),
        Body::ClientResult(result) => match &result.outcome {
            Some(Outcome::Value(message)) => vec![&message.payload],
            _ => Vec::new(),
        },
        _ => Vec::new(),
    }
}

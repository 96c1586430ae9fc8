//! The checks behind the hub protocol fuzz targets, shared by `hub_json` and `hub_msgpack`.
//!
//! One input is read the way a server reads a connection, three times over:
//!
//! 1. as hub messages from the first byte, all of it in the buffer at once;
//! 2. the same bytes arriving in chunks, which must give the same messages and end the same way;
//! 3. as a handshake request followed by hub messages, as a connection opens.
//!
//! Every message parsed is written back with [`Protocol::write_message`] and parsed again, and
//! each payload value is deserialized as a [`serde_json::Value`], which must not panic.

use bytes::BytesMut;
use switchboard_core::protocol::{
    HubMessage, Outcome, Protocol, RECORD_SEPARATOR, RawValue, parse_handshake,
};

/// The message size limit the targets parse with: small enough that the fuzzer reaches
/// `MessageTooLarge` with inputs of a few kilobytes.
pub const MAX_MESSAGE_SIZE: usize = 4096;

/// Runs every check on `data` for `protocol`; panics on a violation.
pub fn check_hub_input(protocol: Protocol, data: &[u8]) {
    let whole = Reader::read_all(protocol, data);
    let chunked = Reader::read_in_chunks(protocol, data);
    assert_eq!(
        whole.messages, chunked.messages,
        "reading the input in chunks gave other messages than reading it at once"
    );
    assert_eq!(
        whole.failed, chunked.failed,
        "reading the input in chunks ended otherwise than reading it at once"
    );

    let mut buf = BytesMut::from(data);
    if let Ok(Some(_request)) = parse_handshake(&mut buf, MAX_MESSAGE_SIZE) {
        // Only the handshake record, through its first separator, is taken from the buffer.
        let consumed = data.len() - buf.len();
        assert_eq!(
            data.iter().position(|&b| b == RECORD_SEPARATOR),
            consumed.checked_sub(1),
            "the handshake took other bytes than its record"
        );
        let mut reader = Reader::new(protocol);
        reader.buf = buf;
        reader.drain();
    }
}

/// A connection's receive buffer and what has been parsed from it.
#[derive(Debug)]
struct Reader {
    protocol: Protocol,
    buf: BytesMut,
    messages: Vec<HubMessage>,
    /// Set once the parser returned an error; nothing more is parsed after it.
    failed: bool,
}

impl Reader {
    fn new(protocol: Protocol) -> Reader {
        Reader {
            protocol,
            buf: BytesMut::new(),
            messages: Vec::new(),
            failed: false,
        }
    }

    fn read_all(protocol: Protocol, data: &[u8]) -> Reader {
        let mut reader = Reader::new(protocol);
        reader.buf.extend_from_slice(data);
        reader.drain();
        reader
    }

    /// Feeds `data` in chunks of a size picked from its first byte, parsing after each.
    fn read_in_chunks(protocol: Protocol, data: &[u8]) -> Reader {
        let chunk_size = 1 + usize::from(data.first().copied().unwrap_or(0) % 64);
        let mut reader = Reader::new(protocol);
        for chunk in data.chunks(chunk_size) {
            if reader.failed {
                break;
            }
            reader.buf.extend_from_slice(chunk);
            reader.drain();
        }
        reader
    }

    /// Parses messages until the buffer holds no complete one or the parser fails.
    fn drain(&mut self) {
        while !self.failed {
            let before = self.buf.len();
            match self.protocol.parse_message(&mut self.buf, MAX_MESSAGE_SIZE) {
                Ok(Some(message)) => {
                    assert!(
                        self.buf.len() < before,
                        "a message was parsed without consuming input"
                    );
                    check_message(self.protocol, &message);
                    self.messages.push(message);
                }
                Ok(None) => {
                    assert_eq!(
                        self.buf.len(),
                        before,
                        "an incomplete message consumed input"
                    );
                    return;
                }
                Err(_) => self.failed = true,
            }
        }
    }
}

/// Writes `message` back, parses it again, and deserializes its payload values.
fn check_message(protocol: Protocol, message: &HubMessage) {
    let frame = match protocol.write_message(message) {
        Ok(frame) => frame,
        Err(e) => panic!("a parsed message could not be written: {e}\n{message:?}"),
    };
    // No size limit here: the written frame may be a little longer than the input was (a
    // MessagePack invocation without stream ids is written with an empty array of them).
    let mut buf = BytesMut::from(&frame[..]);
    let again = match protocol.parse_message(&mut buf, usize::MAX) {
        Ok(Some(again)) => again,
        other => panic!("a written message did not parse back: {other:?}\n{message:?}"),
    };
    assert!(buf.is_empty(), "a written frame held more than one message");
    // An exact round trip: what the writers leave out (headers, a `null` invocation id, absent
    // optional fields, elements a newer MessagePack version appends) is not part of the
    // `HubMessage`, and payload values are kept and written byte for byte.
    assert_eq!(
        &again, message,
        "a message changed on its way through the writer"
    );

    for value in payload_values(message) {
        // The outcome does not matter (a JSON value may hold a lone surrogate, a MessagePack
        // map may have keys that are not strings); a panic or a stack overflow would.
        let _ = value.deserialize::<serde_json::Value>();
    }
}

/// The still-encoded values a message carries.
fn payload_values(message: &HubMessage) -> Vec<&RawValue> {
    match message {
        HubMessage::Invocation(invocation) | HubMessage::StreamInvocation(invocation) => {
            invocation.arguments.iter().collect()
        }
        HubMessage::StreamItem { item, .. } => vec![item],
        HubMessage::Completion(completion) => match &completion.outcome {
            Outcome::Value(value) => vec![value],
            _ => Vec::new(),
        },
        _ => Vec::new(),
    }
}

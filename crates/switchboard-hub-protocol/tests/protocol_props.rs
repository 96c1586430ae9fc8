//! Property tests of the hub protocols: arbitrary input never panics the
//! parsers, and every message written can be parsed back unchanged.

#![allow(clippy::unwrap_used)]

use bytes::{BufMut, BytesMut};
use proptest::prelude::*;
use serde_json::Value;
use switchboard_hub_protocol::{
    Completion, HubMessage, Invocation, Outcome, Protocol, ProtocolError, RECORD_SEPARATOR,
    RawValue, parse_handshake,
};

/// Parses messages until the buffer is exhausted, incomplete or rejected,
/// checking that every parsed message consumed input.
fn drain(protocol: Protocol, bytes: &[u8], max: usize) {
    let mut buf = BytesMut::from(bytes);
    loop {
        let before = buf.len();
        match protocol.parse_message(&mut buf, max) {
            Ok(Some(_)) => assert!(buf.len() < before, "a parsed message consumed nothing"),
            Ok(None) => {
                assert_eq!(buf.len(), before, "an incomplete message was consumed");
                break;
            }
            Err(_) => break,
        }
    }
}

fn protocol() -> impl Strategy<Value = Protocol> {
    prop_oneof![Just(Protocol::Json), Just(Protocol::MessagePack)]
}

fn varint(mut value: usize) -> Vec<u8> {
    let mut out = Vec::new();
    while value >= 0x80 {
        out.push((value & 0x7f) as u8 | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
    out
}

/// JSON values, nested a few levels.
fn value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        // Eighths are exact in binary, so they survive serde_json's default
        // (fast, not bit-exact) float parsing.
        (-1_000_000_000i64..1_000_000_000).prop_map(|n| Value::from(n as f64 / 8.0)),
        ".{0,12}".prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 32, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(".{0,6}", inner, 0..6)
                .prop_map(|map| Value::Object(map.into_iter().collect())),
        ]
    })
}

fn text() -> impl Strategy<Value = String> {
    // Mostly short; some with the characters JSON must escape.
    prop_oneof![
        "[a-zA-Z0-9_-]{0,12}",
        ".{0,24}",
        "[\"\\\\\\x00-\\x1f\\x7f\\u{1e}é😀]{0,8}",
    ]
}

fn invocation(protocol: Protocol) -> impl Strategy<Value = Invocation> {
    (
        prop::option::of(text()),
        text(),
        prop::collection::vec(value(), 0..5),
        prop::collection::vec(text(), 0..3),
    )
        .prop_map(move |(id, target, args, streams)| Invocation {
            invocation_id: id,
            target,
            arguments: args
                .iter()
                .map(|v| protocol.encode_value(v).unwrap())
                .collect(),
            stream_ids: streams,
        })
}

/// A message of any kind, with values encoded in `protocol`.
fn message(protocol: Protocol) -> impl Strategy<Value = HubMessage> {
    let encode = move |v: &Value| protocol.encode_value(v).unwrap();
    let outcome = prop_oneof![
        Just(Outcome::Void),
        value().prop_map(move |v| Outcome::Value(encode(&v))),
        text().prop_map(Outcome::Error),
    ];
    prop_oneof![
        invocation(protocol).prop_map(HubMessage::Invocation),
        (invocation(protocol), text()).prop_map(|(mut inv, id)| {
            inv.invocation_id = Some(id);
            HubMessage::StreamInvocation(inv)
        }),
        (text(), value()).prop_map(move |(id, item)| HubMessage::StreamItem {
            invocation_id: id,
            item: encode(&item),
        }),
        (text(), outcome).prop_map(|(id, outcome)| HubMessage::Completion(Completion {
            invocation_id: id,
            outcome,
        })),
        text().prop_map(|id| HubMessage::CancelInvocation { invocation_id: id }),
        Just(HubMessage::Ping),
        (prop::option::of(text()), any::<bool>()).prop_map(|(error, allow_reconnect)| {
            HubMessage::Close {
                error,
                allow_reconnect,
            }
        }),
    ]
}

fn any_message() -> impl Strategy<Value = (Protocol, HubMessage)> {
    protocol().prop_flat_map(|p| message(p).prop_map(move |m| (p, m)))
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 512,
        // Integration tests have no lib.rs next to them to persist failures by.
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn arbitrary_bytes_never_panic(
        protocol in protocol(),
        bytes in prop::collection::vec(any::<u8>(), 0..512),
        max in 0usize..1024,
    ) {
        drain(protocol, &bytes, max);
        let mut terminated = bytes.clone();
        terminated.push(RECORD_SEPARATOR);
        drain(protocol, &terminated, max);
        let _ = parse_handshake(&mut BytesMut::from(&bytes[..]), max);
        let _ = parse_handshake(&mut BytesMut::from(&terminated[..]), max);
    }

    #[test]
    fn arbitrary_msgpack_bodies_never_panic(
        bytes in prop::collection::vec(any::<u8>(), 0..512),
    ) {
        let mut framed = varint(bytes.len());
        framed.extend_from_slice(&bytes);
        drain(Protocol::MessagePack, &framed, 1 << 16);
        // Bodies that at least start like a message.
        for head in [&[0x96, 0x01, 0x80][..], &[0x95, 0x03, 0x80, 0xa1, 0x31, 0x03], &[0x93, 0x07]] {
            let mut body = head.to_vec();
            body.extend_from_slice(&bytes);
            let mut framed = varint(body.len());
            framed.extend_from_slice(&body);
            drain(Protocol::MessagePack, &framed, 1 << 16);
        }
    }

    #[test]
    fn mutated_messages_never_panic(
        (protocol, message) in any_message(),
        edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>(), 0u8..3), 1..4),
    ) {
        let mut bytes = protocol.write_message(&message).unwrap().to_vec();
        for (at, byte, kind) in edits {
            if bytes.is_empty() {
                break;
            }
            let i = at.index(bytes.len());
            match kind {
                0 => bytes[i] = byte,
                1 => bytes.insert(i, byte),
                _ => {
                    bytes.remove(i);
                }
            }
        }
        drain(protocol, &bytes, 1 << 16);
        if let Ok(Some(HubMessage::Invocation(inv))) =
            protocol.parse_message(&mut BytesMut::from(&bytes[..]), 1 << 16)
        {
            for argument in inv.arguments {
                let _ = argument.deserialize::<Value>();
            }
        }
    }

    #[test]
    fn written_messages_parse_back_unchanged((protocol, message) in any_message()) {
        let bytes = protocol.write_message(&message).unwrap();
        // Two copies, to check the first ends exactly where it should.
        let mut buf = BytesMut::from(&bytes[..]);
        buf.extend_from_slice(&bytes);
        prop_assert_eq!(protocol.parse_message(&mut buf, 1 << 20).unwrap(), Some(message.clone()));
        prop_assert_eq!(protocol.parse_message(&mut buf, 1 << 20).unwrap(), Some(message));
        prop_assert!(buf.is_empty());
    }

    #[test]
    fn split_messages_parse_once_complete(
        (protocol, message) in any_message(),
        cut in any::<prop::sample::Index>(),
    ) {
        let bytes = protocol.write_message(&message).unwrap();
        let cut = cut.index(bytes.len());
        let mut buf = BytesMut::from(&bytes[..cut]);
        prop_assert_eq!(protocol.parse_message(&mut buf, 1 << 20).unwrap(), None);
        buf.put_slice(&bytes[cut..]);
        prop_assert_eq!(protocol.parse_message(&mut buf, 1 << 20).unwrap(), Some(message));
    }

    #[test]
    fn typed_writers_agree_with_write_message(
        protocol in protocol(),
        id in prop::option::of(text()),
        target in text(),
        args in prop::collection::vec(value(), 0..5),
        item in value(),
    ) {
        let encode = |v: &Value| protocol.encode_value(v).unwrap();
        let invocation = HubMessage::Invocation(Invocation {
            invocation_id: id.clone(),
            target: target.clone(),
            arguments: args.iter().map(encode).collect(),
            stream_ids: Vec::new(),
        });
        prop_assert_eq!(
            protocol.write_invocation(id.as_deref(), &target, &args).unwrap(),
            protocol.write_message(&invocation).unwrap()
        );
        prop_assert_eq!(
            protocol.write_stream_item(&target, &item).unwrap(),
            protocol.write_message(&HubMessage::StreamItem {
                invocation_id: target.clone(),
                item: encode(&item),
            }).unwrap()
        );
        let completion = |outcome| HubMessage::Completion(Completion {
            invocation_id: target.clone(),
            outcome,
        });
        prop_assert_eq!(
            protocol.write_completion_value(&target, &item).unwrap(),
            protocol.write_message(&completion(Outcome::Value(encode(&item)))).unwrap()
        );
        prop_assert_eq!(
            protocol.write_completion_void(&target),
            protocol.write_message(&completion(Outcome::Void)).unwrap()
        );
        prop_assert_eq!(
            protocol.write_completion_error(&target, &target),
            protocol.write_message(&completion(Outcome::Error(target.clone()))).unwrap()
        );
    }

    #[test]
    fn values_survive_a_trip_through_a_message((protocol, item) in (protocol(), value())) {
        let bytes = protocol.write_stream_item("1", &item).unwrap();
        let parsed = protocol.parse_message(&mut BytesMut::from(&bytes[..]), 1 << 20).unwrap();
        let Some(HubMessage::StreamItem { item: raw, .. }) = parsed else {
            panic!("expected a stream item, got {parsed:?}");
        };
        prop_assert_eq!(raw.protocol(), protocol);
        prop_assert_eq!(raw.deserialize::<Value>().unwrap(), item);
    }

    #[test]
    fn json_strings_are_escaped_like_serde_json(error in text()) {
        let expected = format!(
            "{{\"type\":3,\"invocationId\":\"1\",\"error\":{}}}\u{1e}",
            serde_json::to_string(&error).unwrap()
        );
        prop_assert_eq!(
            &Protocol::Json.write_completion_error("1", &error)[..],
            expected.as_bytes()
        );
    }
}

#[test]
fn the_other_protocols_values_are_refused() {
    for protocol in Protocol::ALL {
        let other = Protocol::ALL.into_iter().find(|p| *p != protocol).unwrap();
        let item = other.encode_value(&1).unwrap();
        let message = HubMessage::StreamItem {
            invocation_id: "1".into(),
            item: RawValue::new(other, item.bytes().clone()),
        };
        assert!(matches!(
            protocol.write_message(&message),
            Err(ProtocolError::ProtocolMismatch { expected, found }) if expected == protocol && found == other
        ));
    }
}

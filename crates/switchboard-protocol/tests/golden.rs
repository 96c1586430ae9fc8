//! Golden fixtures: the exact bytes of one envelope of each body kind, kept in
//! `tests/fixtures/`.
//!
//! Each test below (a) decodes its fixture and checks every field against the
//! documented value, and (b) encodes that value and checks the result is byte
//! for byte the fixture. A change to the schema or to the encoder that alters
//! the wire fails here; servers of different versions share one backplane, so
//! such a change must be deliberate and follow the compatibility rules of the
//! crate documentation.
//!
//! The fields are read by destructuring without `..`, so a field added to the
//! schema stops this file from compiling until the new field is checked here
//! too, with a fixture that sets it.
//!
//! After a deliberate wire change, or to add a fixture, write the fixtures
//! from the values below with
//!
//! ```text
//! SWITCHBOARD_BLESS=1 cargo test -p switchboard-protocol --test golden
//! ```
//!
//! and commit the new `.bin` files along with the change. Without the
//! variable the fixtures are only read.

#![allow(clippy::unwrap_used)]

use std::path::PathBuf;

use bytes::Bytes;
use switchboard_protocol::{
    Ack, Action, Body, CancelInvocation, ClientResult, DEFAULT_MAX_ENVELOPE_SIZE, Failure,
    GroupCommand, Invocation, Outcome, SerializedMessage, decode, encode_body,
};

/// A JSON hub protocol invocation record, with its 0x1E terminator.
const JSON_RECORD: &[u8] = b"{\"type\":1,\"target\":\"message\",\"arguments\":[\"hi\"]}\x1e";

/// The same invocation as a MessagePack record: its varint length (16), then
/// `[1, {}, nil, "message", ["hi"]]`.
const MSGPACK_RECORD: &[u8] = &[
    0x10, 0x95, 0x01, 0x80, 0xc0, 0xa7, b'm', b'e', b's', b's', b'a', b'g', b'e', 0x91, 0xa2, b'h',
    b'i',
];

/// Checks `expected` against the fixture `file` both ways and returns the
/// decoded fixture; writes the fixture first when `SWITCHBOARD_BLESS=1`.
fn golden(file: &str, expected: Body) -> Body {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(file);
    let encoded = encode_body(expected.clone());
    if std::env::var_os("SWITCHBOARD_BLESS").is_some_and(|v| v == "1") {
        std::fs::write(&path, &encoded).unwrap();
    }
    let fixture = std::fs::read(&path).unwrap_or_else(|e| {
        panic!(
            "cannot read {}: {e}; write it with SWITCHBOARD_BLESS=1",
            path.display()
        )
    });
    assert_eq!(
        encoded[..],
        fixture[..],
        "encoding the expected value of {file} no longer gives the fixture's bytes"
    );
    let decoded = decode(Bytes::from(fixture), DEFAULT_MAX_ENVELOPE_SIZE).unwrap();
    assert_eq!(decoded, expected);
    decoded
}

/// `invocation.bin`: an invocation that waits for a client result, with the
/// message [`JSON_RECORD`] for `json` and [`MSGPACK_RECORD`] for
/// `messagepack`, excluding connections `conn-1` and `conn-2`, with
/// invocation id `inv-42` answered to server `server-a`.
#[test]
fn invocation() {
    let expected = Invocation {
        messages: vec![
            SerializedMessage {
                protocol: "json".into(),
                payload: Bytes::from_static(JSON_RECORD),
            },
            SerializedMessage {
                protocol: "messagepack".into(),
                payload: Bytes::from_static(MSGPACK_RECORD),
            },
        ],
        excluded_connection_ids: vec!["conn-1".into(), "conn-2".into()],
        invocation_id: "inv-42".into(),
        reply_server: "server-a".into(),
        // Written before the field existed; as every server of that version
        // still sends it.
        result_timeout_ms: 0,
    };
    let Body::Invocation(Invocation {
        messages,
        excluded_connection_ids,
        invocation_id,
        reply_server,
        result_timeout_ms,
    }) = golden("invocation.bin", Body::Invocation(expected))
    else {
        panic!("invocation.bin is not an invocation");
    };
    let [json, msgpack] = &messages[..] else {
        panic!("expected two messages, got {messages:?}");
    };
    let SerializedMessage { protocol, payload } = json;
    assert_eq!(protocol, "json");
    assert_eq!(payload, JSON_RECORD);
    let SerializedMessage { protocol, payload } = msgpack;
    assert_eq!(protocol, "messagepack");
    assert_eq!(payload, MSGPACK_RECORD);
    assert_eq!(excluded_connection_ids, ["conn-1", "conn-2"]);
    assert_eq!(invocation_id, "inv-42");
    assert_eq!(reply_server, "server-a");
    assert_eq!(result_timeout_ms, 0);
}

/// `invocation_timeout.bin`: invocation `inv-44` of the JSON record
/// [`JSON_RECORD`] only, answered to server `server-b`, whose caller waits
/// 30 000 ms for the result.
#[test]
fn invocation_timeout() {
    let expected = Invocation {
        messages: vec![SerializedMessage {
            protocol: "json".into(),
            payload: Bytes::from_static(JSON_RECORD),
        }],
        excluded_connection_ids: vec![],
        invocation_id: "inv-44".into(),
        reply_server: "server-b".into(),
        result_timeout_ms: 30_000,
    };
    let Body::Invocation(Invocation {
        messages,
        excluded_connection_ids,
        invocation_id,
        reply_server,
        result_timeout_ms,
    }) = golden("invocation_timeout.bin", Body::Invocation(expected))
    else {
        panic!("invocation_timeout.bin is not an invocation");
    };
    assert_eq!(messages.len(), 1);
    assert!(excluded_connection_ids.is_empty());
    assert_eq!(invocation_id, "inv-44");
    assert_eq!(reply_server, "server-b");
    assert_eq!(result_timeout_ms, 30_000);
}

/// `cancel_invocation.bin`: the caller of invocation `inv-44` on connection
/// `conn-1` gave up.
#[test]
fn cancel_invocation() {
    let expected = CancelInvocation {
        invocation_id: "inv-44".into(),
        connection_id: "conn-1".into(),
    };
    let Body::CancelInvocation(CancelInvocation {
        invocation_id,
        connection_id,
    }) = golden("cancel_invocation.bin", Body::CancelInvocation(expected))
    else {
        panic!("cancel_invocation.bin is not a cancel");
    };
    assert_eq!(invocation_id, "inv-44");
    assert_eq!(connection_id, "conn-1");
}

/// `group_command.bin`: command 7 from server `server-a`, removing connection
/// `conn-1` from group `room:1`.
#[test]
fn group_command() {
    let expected = GroupCommand {
        id: 7,
        server: "server-a".into(),
        action: Action::Remove.into(),
        group: "room:1".into(),
        connection_id: "conn-1".into(),
    };
    let Body::GroupCommand(GroupCommand {
        id,
        server,
        action,
        group,
        connection_id,
    }) = golden("group_command.bin", Body::GroupCommand(expected))
    else {
        panic!("group_command.bin is not a group command");
    };
    assert_eq!(id, 7);
    assert_eq!(server, "server-a");
    assert_eq!(Action::try_from(action), Ok(Action::Remove));
    assert_eq!(group, "room:1");
    assert_eq!(connection_id, "conn-1");
}

/// `ack.bin`: a successful acknowledgement of command 7 (no error field).
#[test]
fn ack() {
    let expected = Ack {
        id: 7,
        error: None,
        failure: Failure::Unspecified.into(),
    };
    let Body::Ack(Ack { id, error, failure }) = golden("ack.bin", Body::Ack(expected)) else {
        panic!("ack.bin is not an ack");
    };
    assert_eq!(id, 7);
    assert_eq!(error, None);
    assert_eq!(Failure::try_from(failure), Ok(Failure::Unspecified));
}

/// `ack_error.bin`: command 8 failed with `connection conn-9 not found`,
/// without a failure kind (as servers sent it before the field existed).
#[test]
fn ack_error() {
    let expected = Ack {
        id: 8,
        error: Some("connection conn-9 not found".into()),
        failure: Failure::Unspecified.into(),
    };
    let Body::Ack(Ack { id, error, failure }) = golden("ack_error.bin", Body::Ack(expected)) else {
        panic!("ack_error.bin is not an ack");
    };
    assert_eq!(id, 8);
    assert_eq!(error.as_deref(), Some("connection conn-9 not found"));
    assert_eq!(Failure::try_from(failure), Ok(Failure::Unspecified));
}

/// `ack_overloaded.bin`: command 9 was refused because the owner had too
/// many commands waiting, with the text `too many group commands waiting`.
#[test]
fn ack_overloaded() {
    let expected = Ack {
        id: 9,
        error: Some("too many group commands waiting".into()),
        failure: Failure::Overloaded.into(),
    };
    let Body::Ack(Ack { id, error, failure }) = golden("ack_overloaded.bin", Body::Ack(expected))
    else {
        panic!("ack_overloaded.bin is not an ack");
    };
    assert_eq!(id, 9);
    assert_eq!(error.as_deref(), Some("too many group commands waiting"));
    assert_eq!(Failure::try_from(failure), Ok(Failure::Overloaded));
}

/// `client_result.bin`: the answer to invocation `inv-42`, the JSON value
/// `{"ok":true}`.
#[test]
fn client_result() {
    let expected = ClientResult {
        invocation_id: "inv-42".into(),
        outcome: Some(Outcome::Value(SerializedMessage {
            protocol: "json".into(),
            payload: Bytes::from_static(b"{\"ok\":true}"),
        })),
    };
    let Body::ClientResult(ClientResult {
        invocation_id,
        outcome,
    }) = golden("client_result.bin", Body::ClientResult(expected))
    else {
        panic!("client_result.bin is not a client result");
    };
    assert_eq!(invocation_id, "inv-42");
    let Some(Outcome::Value(SerializedMessage { protocol, payload })) = outcome else {
        panic!("expected a value, got {outcome:?}");
    };
    assert_eq!(protocol, "json");
    assert_eq!(payload, &b"{\"ok\":true}"[..]);
}

/// `client_result_error.bin`: invocation `inv-43` failed with
/// `connection closed`.
#[test]
fn client_result_error() {
    let expected = ClientResult {
        invocation_id: "inv-43".into(),
        outcome: Some(Outcome::Error("connection closed".into())),
    };
    let Body::ClientResult(ClientResult {
        invocation_id,
        outcome,
    }) = golden("client_result_error.bin", Body::ClientResult(expected))
    else {
        panic!("client_result_error.bin is not a client result");
    };
    assert_eq!(invocation_id, "inv-43");
    assert_eq!(outcome, Some(Outcome::Error("connection closed".into())));
}

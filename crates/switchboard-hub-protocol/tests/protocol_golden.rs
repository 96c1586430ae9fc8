//! Golden wire tests: fixed hub messages, written with the public API, must
//! match the committed bytes in `tests/fixtures/hub/` exactly, and those
//! bytes must parse back into the same messages. Any change to what goes on
//! the wire fails here.
//!
//! To regenerate the fixtures after an intended wire change, run
//!
//! ```text
//! SWITCHBOARD_BLESS=1 cargo test -p switchboard-hub-protocol --test protocol_golden
//! ```
//!
//! and review the diff of `tests/fixtures/hub/` before committing it.

#![allow(clippy::unwrap_used)]

use std::path::PathBuf;

use bytes::{Bytes, BytesMut};
use switchboard_hub_protocol::{
    Completion, HandshakeRequest, HubMessage, Invocation, Outcome, Protocol, parse_handshake,
    write_handshake_response,
};

/// One fixture: its file name, the bytes the API writes today, and what
/// parsing the fixture must give (`None` for what servers only write).
struct Case {
    name: &'static str,
    written: Bytes,
    parsed: Option<HubMessage>,
}

fn fixture_path(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/hub")
        .join(name)
}

fn blessing() -> bool {
    std::env::var_os("SWITCHBOARD_BLESS").is_some_and(|v| v == "1")
}

/// Compares `written` with the fixture, or rewrites the fixture when blessing.
fn check_bytes(name: &str, written: &[u8]) -> Vec<u8> {
    let path = fixture_path(name);
    if blessing() {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, written).unwrap();
    }
    let fixture = std::fs::read(&path).unwrap_or_else(|e| {
        panic!(
            "cannot read {}: {e}; run with SWITCHBOARD_BLESS=1 to create it",
            path.display()
        )
    });
    assert_eq!(
        fixture, written,
        "{name}: the written bytes differ from the fixture\n fixture: {:02x?}\n written: {:02x?}",
        fixture, written
    );
    fixture
}

fn value(protocol: Protocol, value: &impl serde::Serialize) -> switchboard_hub_protocol::RawValue {
    protocol.encode_value(value).unwrap()
}

fn completion(id: &str, outcome: Outcome) -> HubMessage {
    HubMessage::Completion(Completion {
        invocation_id: id.to_owned(),
        outcome,
    })
}

/// The same messages for both protocols, with the ids and texts of the
/// specification's examples.
fn cases(protocol: Protocol) -> Vec<Case> {
    let p = protocol;
    let id = "123";
    let invocation = |id: Option<&str>, args: Vec<switchboard_hub_protocol::RawValue>| Invocation {
        invocation_id: id.map(str::to_owned),
        target: "Send".to_owned(),
        arguments: args,
        stream_ids: Vec::new(),
    };
    let send_args = || vec![value(p, &42), value(p, &"Test Message")];
    vec![
        Case {
            name: "invocation",
            written: p
                .write_invocation(Some(id), "Send", &(42, "Test Message"))
                .unwrap(),
            parsed: Some(HubMessage::Invocation(invocation(Some(id), send_args()))),
        },
        Case {
            name: "invocation_non_blocking",
            written: p
                .write_invocation(None, "Send", &(42, "Test Message"))
                .unwrap(),
            parsed: Some(HubMessage::Invocation(invocation(None, send_args()))),
        },
        Case {
            name: "invocation_stream_ids",
            written: p
                .write_message(&HubMessage::Invocation(Invocation {
                    stream_ids: vec!["1".to_owned()],
                    ..invocation(Some(id), vec![value(p, &42)])
                }))
                .unwrap(),
            parsed: Some(HubMessage::Invocation(Invocation {
                stream_ids: vec!["1".to_owned()],
                ..invocation(Some(id), vec![value(p, &42)])
            })),
        },
        Case {
            name: "stream_invocation",
            written: p
                .write_message(&HubMessage::StreamInvocation(invocation(
                    Some(id),
                    send_args(),
                )))
                .unwrap(),
            parsed: Some(HubMessage::StreamInvocation(invocation(
                Some(id),
                send_args(),
            ))),
        },
        Case {
            name: "stream_item",
            written: p.write_stream_item(id, &42).unwrap(),
            parsed: Some(HubMessage::StreamItem {
                invocation_id: id.to_owned(),
                item: value(p, &42),
            }),
        },
        Case {
            name: "completion_value",
            written: p.write_completion_value(id, &42).unwrap(),
            parsed: Some(completion(id, Outcome::Value(value(p, &42)))),
        },
        Case {
            name: "completion_void",
            written: p.write_completion_void(id),
            parsed: Some(completion(id, Outcome::Void)),
        },
        Case {
            name: "completion_error",
            written: p.write_completion_error(id, "It didn't work!"),
            parsed: Some(completion(id, Outcome::Error("It didn't work!".to_owned()))),
        },
        Case {
            name: "cancel_invocation",
            written: p
                .write_message(&HubMessage::CancelInvocation {
                    invocation_id: id.to_owned(),
                })
                .unwrap(),
            parsed: Some(HubMessage::CancelInvocation {
                invocation_id: id.to_owned(),
            }),
        },
        Case {
            name: "ping",
            written: p.write_ping(),
            parsed: Some(HubMessage::Ping),
        },
        Case {
            name: "close",
            written: p.write_close(None, false),
            parsed: Some(HubMessage::Close {
                error: None,
                allow_reconnect: false,
            }),
        },
        Case {
            name: "close_error_reconnect",
            written: p.write_close(Some("Connection closed because of an error!"), true),
            parsed: Some(HubMessage::Close {
                error: Some("Connection closed because of an error!".to_owned()),
                allow_reconnect: true,
            }),
        },
    ]
}

#[test]
fn hub_messages_match_their_fixtures() {
    for protocol in Protocol::ALL {
        let prefix = match protocol {
            Protocol::Json => "json",
            Protocol::MessagePack => "msgpack",
        };
        for case in cases(protocol) {
            let name = format!("{prefix}_{}.bin", case.name);
            let fixture = check_bytes(&name, &case.written);
            let Some(expected) = case.parsed else {
                continue;
            };
            // Both the typed writer and write_message produce the fixture.
            assert_eq!(
                &protocol.write_message(&expected).unwrap()[..],
                &fixture[..],
                "{name}: write_message"
            );
            let mut buf = BytesMut::from(&fixture[..]);
            assert_eq!(
                protocol.parse_message(&mut buf, 1 << 16).unwrap(),
                Some(expected),
                "{name}: parsing the fixture"
            );
            assert!(buf.is_empty(), "{name}: bytes left after parsing");
        }
    }
}

#[test]
fn handshake_responses_match_their_fixtures() {
    check_bytes("handshake_response_ok.bin", &write_handshake_response(None));
    check_bytes(
        "handshake_response_error.bin",
        &write_handshake_response(Some("Requested protocol 'messagepack' is not available.")),
    );
}

#[test]
fn handshake_requests_parse() {
    let request = check_bytes(
        "handshake_request.bin",
        b"{\"protocol\":\"messagepack\",\"version\":1}\x1e",
    );
    let mut buf = BytesMut::from(&request[..]);
    assert_eq!(
        parse_handshake(&mut buf, 1024).unwrap(),
        Some(HandshakeRequest {
            protocol: "messagepack".to_owned(),
            version: 1,
        })
    );
    assert!(buf.is_empty());
}

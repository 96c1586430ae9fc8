//! The wire format switchboard servers exchange over the Redis backplane:
//! every payload published on a backplane channel is one protobuf
//! [`Envelope`] whose [`Body`] is an [`Invocation`] to deliver, a
//! [`GroupCommand`] for the server owning a connection, its [`Ack`], or a
//! [`ClientResult`] on its way back to the server that asked for it. This
//! crate holds the types generated from
//! `proto/switchboard/backplane/v1/backplane.proto`, and [`encode`] and
//! [`decode`] with a size limit and the checks protobuf cannot express. It
//! does no I/O.
//!
//! ```
//! use bytes::Bytes;
//! use switchboard_protocol::{
//!     Body, DEFAULT_MAX_ENVELOPE_SIZE, Invocation, SerializedMessage, decode, encode_body,
//! };
//!
//! # fn main() -> Result<(), switchboard_protocol::DecodeError> {
//! let invocation = Invocation {
//!     messages: vec![SerializedMessage {
//!         protocol: "json".into(),
//!         payload: Bytes::from_static(b"{\"type\":1,\"target\":\"message\",\"arguments\":[\"hi\"]}\x1e"),
//!     }],
//!     excluded_connection_ids: vec!["conn-7".into()],
//!     ..Invocation::default()
//! };
//! let wire = encode_body(Body::Invocation(invocation.clone()));
//!
//! // On the receiving server:
//! match decode(wire, DEFAULT_MAX_ENVELOPE_SIZE)? {
//!     Body::Invocation(received) => assert_eq!(received, invocation),
//!     other => panic!("unexpected body {other:?}"),
//! }
//! # Ok(())
//! # }
//! ```
//!
//! # How it works
//!
//! One decoder serves every channel: whatever channel a payload arrived on,
//! [`decode`] returns the [`Body`] for the caller to dispatch on. Payload
//! fields are [`bytes::Bytes`], and [`decode`] takes the received `Bytes`, so
//! a decoded [`SerializedMessage::payload`] is a slice of the received buffer
//! rather than a copy; forwarding it to many connections is a reference-count
//! increment each.
//!
//! # Compatibility
//!
//! The schema evolves without a flag day, under three rules:
//!
//! - field numbers are never reused, and fields are only ever added;
//! - a receiver tolerates any field it does not know (protobuf skips them);
//! - a new kind of body is a new field of the `Envelope.body` oneof. A server
//!   that does not know it yet sees an envelope without a body, which
//!   [`decode`] reports as [`DecodeError::UnknownBody`] so that the caller
//!   counts it and drops it.
//!
//! The bytes of each body kind are pinned by golden fixtures in this crate's
//! tests, so an accidental change of the wire fails the tests.
//!
//! # Errors
//!
//! [`decode`] never panics on untrusted input. It returns a [`DecodeError`]
//! for a payload over the size limit, bytes that are not a valid envelope, an
//! envelope whose body this version does not know, and a body that parses
//! but breaks a rule of the schema (such as a group command that neither adds
//! nor removes). [`encode`] cannot fail.

use bytes::Bytes;
use prost::Message as _;

#[allow(missing_docs)]
mod generated {
    include!(concat!(env!("OUT_DIR"), "/switchboard.backplane.v1.rs"));
}

pub use generated::ack::Failure;
pub use generated::client_result::Outcome;
pub use generated::envelope::Body;
pub use generated::group_command::Action;
pub use generated::presence_query::Subject;
pub use generated::{
    Ack, CancelInvocation, ClientResult, Envelope, GroupCommand, Invocation, PresenceQuery,
    PresenceReply, SerializedMessage, ack, client_result, envelope, group_command, presence_query,
};

/// The default largest envelope [`decode`] accepts: 4 MiB.
///
/// SignalR limits what a client may send to 32 KiB by default, but messages
/// sent from server code have no such limit, and an [`Invocation`] carries
/// one copy of the message per hub protocol. 4 MiB leaves room for both while
/// keeping one oversized publish, which every subscribed server receives and
/// holds in memory, from hurting the whole cluster.
pub const DEFAULT_MAX_ENVELOPE_SIZE: usize = 4 * 1024 * 1024;

/// Why a backplane payload could not be decoded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// The payload is larger than the limit given to [`decode`]; it was not
    /// parsed.
    #[error("envelope of {size} bytes exceeds the limit of {limit} bytes")]
    TooLarge {
        /// The payload's size in bytes.
        size: usize,
        /// The limit in bytes.
        limit: usize,
    },
    /// The payload is not a valid protobuf `Envelope`: truncated, or not
    /// protobuf at all.
    #[error("malformed envelope")]
    Malformed {
        /// What the protobuf decoder found wrong.
        source: Box<dyn std::error::Error + Send + Sync + 'static>,
    },
    /// The envelope has no body this version knows: it is empty, or was sent
    /// by a newer server with a kind of body added since.
    #[error("envelope has no body this version knows")]
    UnknownBody,
    /// The body parsed but breaks a rule of the schema.
    #[error("invalid {body}: {reason}")]
    Invalid {
        /// The kind of body: `"invocation"`, `"group command"`, ...
        body: &'static str,
        /// The rule it breaks.
        reason: &'static str,
    },
}

/// Encodes `envelope` into a buffer of exactly its encoded length.
pub fn encode(envelope: &Envelope) -> Bytes {
    // `encode_to_vec` sizes the vector with `encoded_len` and cannot fail,
    // and turning a full vector into `Bytes` does not copy it.
    Bytes::from(envelope.encode_to_vec())
}

/// Encodes an envelope carrying `body`.
pub fn encode_body(body: Body) -> Bytes {
    encode(&Envelope { body: Some(body) })
}

/// Decodes a payload received from the backplane, checking it against the
/// schema's rules, and returns its body.
///
/// `max_size` bounds the payload before any parsing starts; use
/// [`DEFAULT_MAX_ENVELOPE_SIZE`] unless configured otherwise. The `Bytes`
/// fields of the result share `bytes`' buffer.
///
/// # Errors
///
/// - [`DecodeError::TooLarge`] if `bytes` is longer than `max_size`;
/// - [`DecodeError::Malformed`] if it is not a valid protobuf `Envelope`;
/// - [`DecodeError::UnknownBody`] if the envelope has no body this version
///   knows (an empty payload is such an envelope);
/// - [`DecodeError::Invalid`] if the body breaks a rule of the schema:
///   an [`Invocation`] with only one of `invocation_id` and `reply_server`;
///   a [`GroupCommand`] whose action is neither add nor remove, or without a
///   sender `server`; a [`ClientResult`] without an `invocation_id` or
///   without an outcome; a [`PresenceQuery`] whose subject is neither a
///   user nor a group, or without a sender `server`; a [`PresenceReply`]
///   with more connection ids than its count.
pub fn decode(bytes: Bytes, max_size: usize) -> Result<Body, DecodeError> {
    if bytes.len() > max_size {
        return Err(DecodeError::TooLarge {
            size: bytes.len(),
            limit: max_size,
        });
    }
    let envelope = Envelope::decode(bytes).map_err(|e| DecodeError::Malformed {
        source: Box::new(e),
    })?;
    let body = envelope.body.ok_or(DecodeError::UnknownBody)?;
    validate(&body)?;
    Ok(body)
}

/// Checks what protobuf's own decoding cannot.
fn validate(body: &Body) -> Result<(), DecodeError> {
    let invalid = |body, reason| Err(DecodeError::Invalid { body, reason });
    match body {
        Body::Invocation(invocation) => {
            match (
                invocation.invocation_id.is_empty(),
                invocation.reply_server.is_empty(),
            ) {
                (false, true) => invalid("invocation", "invocation_id without reply_server"),
                (true, false) => invalid("invocation", "reply_server without invocation_id"),
                _ => Ok(()),
            }
        }
        Body::GroupCommand(command) => {
            if !matches!(
                Action::try_from(command.action),
                Ok(Action::Add | Action::Remove)
            ) {
                invalid("group command", "action is neither add nor remove")
            } else if command.server.is_empty() {
                invalid("group command", "server is empty")
            } else {
                Ok(())
            }
        }
        Body::Ack(_) => Ok(()),
        Body::CancelInvocation(cancel) => {
            if cancel.invocation_id.is_empty() {
                invalid("invocation cancel", "invocation_id is empty")
            } else {
                Ok(())
            }
        }
        Body::ClientResult(result) => {
            if result.invocation_id.is_empty() {
                invalid("client result", "invocation_id is empty")
            } else if result.outcome.is_none() {
                invalid("client result", "it has no outcome")
            } else {
                Ok(())
            }
        }
        Body::PresenceQuery(query) => {
            if !matches!(
                Subject::try_from(query.subject),
                Ok(Subject::User | Subject::Group)
            ) {
                invalid("presence query", "subject is neither user nor group")
            } else if query.server.is_empty() {
                invalid("presence query", "server is empty")
            } else {
                Ok(())
            }
        }
        Body::PresenceReply(reply) => {
            if (reply.connection_ids.len() as u64) > reply.count {
                invalid("presence reply", "more connection ids than its count")
            } else {
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use proptest::prelude::*;

    fn invocation() -> Invocation {
        Invocation {
            messages: vec![
                SerializedMessage {
                    protocol: "json".into(),
                    payload: Bytes::from_static(b"{\"type\":1}\x1e"),
                },
                SerializedMessage {
                    protocol: "messagepack".into(),
                    payload: Bytes::from_static(&[0x03, 0x91, 0x01, 0xc0]),
                },
            ],
            excluded_connection_ids: vec!["a".into(), "b".into()],
            invocation_id: "inv-1".into(),
            reply_server: "srv-a".into(),
            result_timeout_ms: 30_000,
        }
    }

    fn group_command(action: Action) -> GroupCommand {
        GroupCommand {
            id: 42,
            server: "srv-a".into(),
            action: action.into(),
            group: "room".into(),
            connection_id: "conn-1".into(),
        }
    }

    fn every_body() -> Vec<Body> {
        vec![
            Body::Invocation(invocation()),
            Body::Invocation(Invocation::default()),
            Body::GroupCommand(group_command(Action::Add)),
            Body::GroupCommand(group_command(Action::Remove)),
            Body::Ack(Ack {
                id: 7,
                error: None,
                failure: 0,
            }),
            Body::Ack(Ack {
                id: 7,
                error: Some(String::new()),
                failure: Failure::Rejected.into(),
            }),
            Body::Ack(Ack {
                id: u64::MAX,
                error: Some("no such connection".into()),
                failure: Failure::ConnectionNotFound.into(),
            }),
            Body::CancelInvocation(CancelInvocation {
                invocation_id: "inv-1".into(),
                connection_id: "conn-1".into(),
            }),
            Body::ClientResult(ClientResult {
                invocation_id: "inv-1".into(),
                outcome: Some(Outcome::Value(SerializedMessage {
                    protocol: "json".into(),
                    payload: Bytes::from_static(b"42"),
                })),
            }),
            Body::ClientResult(ClientResult {
                invocation_id: "inv-1".into(),
                outcome: Some(Outcome::Value(SerializedMessage::default())),
            }),
            Body::ClientResult(ClientResult {
                invocation_id: "inv-1".into(),
                outcome: Some(Outcome::Error("connection closed".into())),
            }),
            Body::PresenceQuery(presence_query(Subject::User)),
            Body::PresenceQuery(presence_query(Subject::Group)),
            Body::PresenceReply(PresenceReply {
                id: 9,
                connection_ids: vec!["conn-1".into(), "conn-2".into()],
                count: 5,
            }),
            Body::PresenceReply(PresenceReply::default()),
        ]
    }

    #[test]
    fn every_body_round_trips() {
        for body in every_body() {
            let wire = encode_body(body.clone());
            assert_eq!(decode(wire, DEFAULT_MAX_ENVELOPE_SIZE).unwrap(), body);
        }
    }

    #[test]
    fn encode_is_exactly_sized() {
        for body in every_body() {
            let envelope = Envelope { body: Some(body) };
            let wire = encode(&envelope);
            assert_eq!(wire.len(), envelope.encoded_len());
            assert_eq!(wire, encode_body(envelope.body.unwrap()));
        }
    }

    #[test]
    fn payloads_share_the_received_buffer() {
        let wire = encode_body(Body::Invocation(invocation()));
        let range = wire.as_ptr_range();
        let Body::Invocation(received) = decode(wire.clone(), usize::MAX).unwrap() else {
            panic!("not an invocation");
        };
        for message in &received.messages {
            assert!(range.contains(&message.payload.as_ptr()));
        }
    }

    #[test]
    fn size_limit_is_checked() {
        let wire = encode_body(Body::Invocation(invocation()));
        let size = wire.len();
        assert!(decode(wire.clone(), size).is_ok());
        match decode(wire, size - 1) {
            Err(DecodeError::TooLarge { size: s, limit }) => {
                assert_eq!((s, limit), (size, size - 1));
            }
            other => panic!("expected TooLarge, got {other:?}"),
        }
    }

    #[test]
    fn size_limit_applies_before_parsing() {
        let garbage = Bytes::from(vec![0xff; 64]);
        assert!(matches!(
            decode(garbage.clone(), 63),
            Err(DecodeError::TooLarge {
                size: 64,
                limit: 63
            })
        ));
        assert!(matches!(
            decode(garbage, 64),
            Err(DecodeError::Malformed { .. })
        ));
    }

    #[test]
    fn truncated_envelopes_are_malformed() {
        for body in every_body() {
            let wire = encode_body(body);
            for len in 1..wire.len() {
                let result = decode(wire.slice(..len), DEFAULT_MAX_ENVELOPE_SIZE);
                assert!(
                    matches!(result, Err(DecodeError::Malformed { .. })),
                    "{len} of {} bytes: {result:?}",
                    wire.len()
                );
            }
        }
    }

    #[test]
    fn empty_payload_has_no_body() {
        assert!(matches!(
            decode(Bytes::new(), DEFAULT_MAX_ENVELOPE_SIZE),
            Err(DecodeError::UnknownBody)
        ));
    }

    #[test]
    fn body_from_a_newer_sender_is_unknown() {
        // Field 15 of Envelope, length-delimited, holding one byte: what a
        // newer server would send for a body kind added after this version.
        let wire = Bytes::from_static(&[0x7a, 0x01, 0x00]);
        assert!(matches!(
            decode(wire, DEFAULT_MAX_ENVELOPE_SIZE),
            Err(DecodeError::UnknownBody)
        ));
    }

    #[test]
    fn unknown_fields_are_tolerated() {
        let ack = Ack {
            id: 3,
            error: None,
            failure: 0,
        };
        let mut wire = encode_body(Body::Ack(ack.clone())).to_vec();
        // Field 9 of Envelope as a varint, then field 15 as a string.
        wire.extend_from_slice(&[0x48, 0x01, 0x7a, 0x02, b'h', b'i']);
        let body = decode(Bytes::from(wire), DEFAULT_MAX_ENVELOPE_SIZE).unwrap();
        assert_eq!(body, Body::Ack(ack));
    }

    fn invalid_reason(body: Body) -> &'static str {
        match decode(encode_body(body), DEFAULT_MAX_ENVELOPE_SIZE) {
            Err(DecodeError::Invalid { reason, .. }) => reason,
            other => panic!("expected Invalid, got {other:?}"),
        }
    }

    #[test]
    fn group_command_needs_a_known_action() {
        let mut command = group_command(Action::Add);
        command.action = Action::Unspecified.into();
        assert_eq!(
            invalid_reason(Body::GroupCommand(command.clone())),
            "action is neither add nor remove"
        );
        command.action = 3;
        assert_eq!(
            invalid_reason(Body::GroupCommand(command)),
            "action is neither add nor remove"
        );
    }

    #[test]
    fn group_command_needs_a_server() {
        let mut command = group_command(Action::Remove);
        command.server.clear();
        assert_eq!(
            invalid_reason(Body::GroupCommand(command)),
            "server is empty"
        );
    }

    fn presence_query(subject: Subject) -> PresenceQuery {
        PresenceQuery {
            id: 9,
            server: "srv-a".into(),
            subject: subject.into(),
            name: "room".into(),
            limit: 100,
        }
    }

    #[test]
    fn presence_query_needs_a_subject_and_a_server() {
        let mut query = presence_query(Subject::Unspecified);
        assert_eq!(
            invalid_reason(Body::PresenceQuery(query.clone())),
            "subject is neither user nor group"
        );
        query.subject = Subject::Group.into();
        query.server.clear();
        assert_eq!(
            invalid_reason(Body::PresenceQuery(query)),
            "server is empty"
        );
    }

    #[test]
    fn presence_reply_lists_no_more_than_its_count() {
        let reply = PresenceReply {
            id: 1,
            connection_ids: vec!["a".into(), "b".into()],
            count: 1,
        };
        assert_eq!(
            invalid_reason(Body::PresenceReply(reply)),
            "more connection ids than its count"
        );
    }

    #[test]
    fn client_result_needs_an_outcome_and_an_id() {
        let result = ClientResult {
            invocation_id: "inv-1".into(),
            outcome: None,
        };
        assert_eq!(
            invalid_reason(Body::ClientResult(result)),
            "it has no outcome"
        );
        let result = ClientResult {
            invocation_id: String::new(),
            outcome: Some(Outcome::Error("x".into())),
        };
        assert_eq!(
            invalid_reason(Body::ClientResult(result)),
            "invocation_id is empty"
        );
    }

    #[test]
    fn invocation_id_and_reply_server_come_together() {
        let mut only_id = invocation();
        only_id.reply_server.clear();
        assert_eq!(
            invalid_reason(Body::Invocation(only_id)),
            "invocation_id without reply_server"
        );
        let mut only_server = invocation();
        only_server.invocation_id.clear();
        assert_eq!(
            invalid_reason(Body::Invocation(only_server)),
            "reply_server without invocation_id"
        );
    }

    #[test]
    fn errors_say_what_happened() {
        let err = decode(Bytes::from_static(&[0x0a]), 100).unwrap_err();
        assert_eq!(err.to_string(), "malformed envelope");
        assert!(std::error::Error::source(&err).is_some());
        let err = decode(Bytes::from_static(&[0; 10]), 4).unwrap_err();
        assert_eq!(
            err.to_string(),
            "envelope of 10 bytes exceeds the limit of 4 bytes"
        );
        let err = invalid_reason(Body::GroupCommand(GroupCommand::default()));
        assert_eq!(err, "action is neither add nor remove");
    }

    fn serialized_message() -> impl Strategy<Value = SerializedMessage> {
        (
            any::<String>(),
            proptest::collection::vec(any::<u8>(), 0..256),
        )
            .prop_map(|(protocol, payload)| SerializedMessage {
                protocol,
                payload: Bytes::from(payload),
            })
    }

    fn arbitrary_invocation() -> impl Strategy<Value = Invocation> {
        (
            proptest::collection::vec(serialized_message(), 0..4),
            proptest::collection::vec(any::<String>(), 0..8),
            proptest::option::of((".+", ".+", any::<u64>())),
        )
            .prop_map(|(messages, excluded_connection_ids, reply)| {
                let (invocation_id, reply_server, result_timeout_ms) = reply.unwrap_or_default();
                Invocation {
                    messages,
                    excluded_connection_ids,
                    invocation_id,
                    reply_server,
                    result_timeout_ms,
                }
            })
    }

    proptest! {
        #[test]
        fn decode_never_panics(input in proptest::collection::vec(any::<u8>(), 0..4096)) {
            let _ = decode(Bytes::from(input), DEFAULT_MAX_ENVELOPE_SIZE);
        }

        #[test]
        fn decode_never_panics_on_mutated_envelopes(
            index in any::<prop::sample::Index>(),
            byte in any::<u8>(),
            cut in any::<prop::sample::Index>(),
        ) {
            let mut wire = encode_body(Body::Invocation(invocation())).to_vec();
            let i = index.index(wire.len());
            wire[i] = byte;
            wire.truncate(cut.index(wire.len() + 1));
            let _ = decode(Bytes::from(wire), DEFAULT_MAX_ENVELOPE_SIZE);
        }

        #[test]
        fn invocations_round_trip(invocation in arbitrary_invocation()) {
            let wire = encode_body(Body::Invocation(invocation.clone()));
            prop_assert_eq!(
                decode(wire, DEFAULT_MAX_ENVELOPE_SIZE).unwrap(),
                Body::Invocation(invocation)
            );
        }
    }
}

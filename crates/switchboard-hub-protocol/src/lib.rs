//! The SignalR hub protocols spoken with clients: the handshake, JSON and
//! MessagePack. No I/O: bytes in, messages out, and back.
//!
//! This is the client side of switchboard's wire (the protocol between
//! servers is the protobuf envelope of `switchboard-backplane`'s
//! `switchboard-protocol` crate, a different thing). `switchboard-core`
//! re-exports it as `switchboard_core::protocol`; a Rust SignalR client can
//! use it alone.
//!
//! ```
//! use bytes::BytesMut;
//! use switchboard_hub_protocol::{HubMessage, Protocol};
//!
//! let mut buf = BytesMut::from(&b"{\"type\":6}\x1e"[..]);
//! let message = Protocol::Json.parse_message(&mut buf, 1 << 20).unwrap();
//! assert!(matches!(message, Some(HubMessage::Ping)));
//! assert!(buf.is_empty());
//! ```
//!
//! A [`Protocol`] frames and parses the seven hub message kinds (Invocation,
//! StreamItem, Completion, StreamInvocation, CancelInvocation, Ping, Close)
//! exactly as the SignalR hub protocol specifies:
//!
//! - `json`: each message is a UTF-8 JSON object followed by the record
//!   separator `0x1E`; sent in WebSocket text frames.
//! - `messagepack`: each message is a MessagePack array preceded by its length
//!   as a base-128 varint (at most 5 bytes); sent in binary frames.
//!
//! Values inside messages (arguments, stream items, results) stay encoded as
//! [`RawValue`]s until the hub method that receives them knows their Rust
//! type, so a frame is parsed once and each argument is deserialized straight
//! into its target type.

mod handshake;
mod json;
mod msgpack;

use bytes::{Bytes, BytesMut};
use serde::{Serialize, de::DeserializeOwned};

pub use handshake::{HandshakeRequest, parse_handshake, write_handshake_response};

/// The record separator that ends every JSON hub message and the handshake.
pub const RECORD_SEPARATOR: u8 = 0x1e;

/// The newest hub protocol version switchboard speaks, for both encodings.
///
/// A handshake asking for this version or an older one is accepted (as in
/// ASP.NET Core, whose protocols support every version up to their own):
/// some clients, such as Python's `signalrcore`, ask for version 0.
/// Version 2 adds the Ack and Sequence messages of stateful reconnect.
pub const PROTOCOL_VERSION: u32 = 2;

/// The first hub protocol version with stateful reconnect (Ack, Sequence).
pub const STATEFUL_RECONNECT_VERSION: u32 = 2;

/// Whether a handshake asking for hub protocol `version` is accepted.
pub fn is_version_supported(version: u32) -> bool {
    version <= PROTOCOL_VERSION
}

/// A SignalR hub protocol: how hub messages are encoded for one connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Protocol {
    /// `json`: JSON objects terminated by `0x1E`, carried in text frames.
    Json,
    /// `messagepack`: varint-length-prefixed MessagePack arrays, carried in
    /// binary frames.
    MessagePack,
}

impl Protocol {
    /// Every protocol switchboard implements.
    pub const ALL: [Protocol; 2] = [Protocol::Json, Protocol::MessagePack];

    /// The name a client asks for in the handshake.
    pub fn name(self) -> &'static str {
        match self {
            Protocol::Json => "json",
            Protocol::MessagePack => "messagepack",
        }
    }

    /// Looks a protocol up by its handshake name.
    pub fn from_name(name: &str) -> Option<Protocol> {
        Protocol::ALL.into_iter().find(|p| p.name() == name)
    }

    /// Whether frames of this protocol are binary (otherwise UTF-8 text).
    pub fn is_binary(self) -> bool {
        matches!(self, Protocol::MessagePack)
    }

    /// Parses one complete message from the front of `buf`.
    ///
    /// On success the message's bytes are removed from `buf`. Returns
    /// `Ok(None)` when `buf` does not yet hold a complete message (wait for
    /// more input). A message, or an incomplete prefix, longer than
    /// `max_message_size` is [`ProtocolError::MessageTooLarge`]; the limit
    /// counts the message itself, not its `0x1E` separator or its length
    /// prefix, and a MessagePack length prefix announcing more is refused
    /// before the body arrives. After an error the connection should be
    /// closed: the stream is out of sync.
    pub fn parse_message(
        self,
        buf: &mut BytesMut,
        max_message_size: usize,
    ) -> Result<Option<HubMessage>, ProtocolError> {
        match self {
            Protocol::Json => json::parse_message(buf, max_message_size),
            Protocol::MessagePack => msgpack::parse_message(buf, max_message_size),
        }
    }

    /// Encodes any hub message, framed (with its separator or length prefix).
    ///
    /// Raw values inside `message` must be of this protocol, or
    /// [`ProtocolError::ProtocolMismatch`] is returned.
    pub fn write_message(self, message: &HubMessage) -> Result<Bytes, ProtocolError> {
        match self {
            Protocol::Json => json::write_message(message),
            Protocol::MessagePack => msgpack::write_message(message),
        }
    }

    /// Encodes an Invocation of client method `target`, framed.
    ///
    /// `arguments` must serialize as a sequence (a tuple, array, `Vec` or
    /// slice); anything else is [`ProtocolError::ArgumentsNotASequence`].
    /// `invocation_id` is set only when a result is expected back.
    pub fn write_invocation<A>(
        self,
        invocation_id: Option<&str>,
        target: &str,
        arguments: &A,
    ) -> Result<Bytes, ProtocolError>
    where
        A: Serialize + ?Sized,
    {
        match self {
            Protocol::Json => json::write_invocation(invocation_id, target, arguments),
            Protocol::MessagePack => msgpack::write_invocation(invocation_id, target, arguments),
        }
    }

    /// Encodes a StreamItem carrying `item`, framed.
    pub fn write_stream_item<T>(self, invocation_id: &str, item: &T) -> Result<Bytes, ProtocolError>
    where
        T: Serialize + ?Sized,
    {
        match self {
            Protocol::Json => json::write_stream_item(invocation_id, item),
            Protocol::MessagePack => msgpack::write_stream_item(invocation_id, item),
        }
    }

    /// Encodes a Completion carrying a result value, framed.
    pub fn write_completion_value<T>(
        self,
        invocation_id: &str,
        value: &T,
    ) -> Result<Bytes, ProtocolError>
    where
        T: Serialize + ?Sized,
    {
        match self {
            Protocol::Json => json::write_completion_value(invocation_id, value),
            Protocol::MessagePack => msgpack::write_completion_value(invocation_id, value),
        }
    }

    /// Encodes a Completion without a result (a `void` method), framed.
    pub fn write_completion_void(self, invocation_id: &str) -> Bytes {
        match self {
            Protocol::Json => json::write_completion_void(invocation_id),
            Protocol::MessagePack => msgpack::write_completion_void(invocation_id),
        }
    }

    /// Encodes a Completion carrying an error message, framed.
    pub fn write_completion_error(self, invocation_id: &str, error: &str) -> Bytes {
        match self {
            Protocol::Json => json::write_completion_error(invocation_id, error),
            Protocol::MessagePack => msgpack::write_completion_error(invocation_id, error),
        }
    }

    /// Encodes a Ping, framed.
    pub fn write_ping(self) -> Bytes {
        match self {
            Protocol::Json => json::write_ping(),
            Protocol::MessagePack => msgpack::write_ping(),
        }
    }

    /// Encodes an Ack (stateful reconnect), framed: every trackable message
    /// up to `sequence_id` has been received.
    pub fn write_ack(self, sequence_id: u64) -> Bytes {
        match self {
            Protocol::Json => json::write_sequence_message(8, sequence_id),
            Protocol::MessagePack => msgpack::write_sequence_message(8, sequence_id),
        }
    }

    /// Encodes a Sequence (stateful reconnect), framed: the next trackable
    /// message sent has `sequence_id`.
    pub fn write_sequence(self, sequence_id: u64) -> Bytes {
        match self {
            Protocol::Json => json::write_sequence_message(9, sequence_id),
            Protocol::MessagePack => msgpack::write_sequence_message(9, sequence_id),
        }
    }

    /// Encodes a Close, framed, with an optional error and whether clients
    /// with automatic reconnect enabled should reconnect.
    pub fn write_close(self, error: Option<&str>, allow_reconnect: bool) -> Bytes {
        match self {
            Protocol::Json => json::write_close(error, allow_reconnect),
            Protocol::MessagePack => msgpack::write_close(error, allow_reconnect),
        }
    }

    /// Encodes one value (no message framing) in this protocol: a JSON text
    /// or a single MessagePack value.
    pub fn encode_value<T>(self, value: &T) -> Result<RawValue, ProtocolError>
    where
        T: Serialize + ?Sized,
    {
        let bytes = match self {
            Protocol::Json => json::encode_value(value)?,
            Protocol::MessagePack => msgpack::encode_value(value)?,
        };
        Ok(RawValue {
            protocol: self,
            bytes,
        })
    }
}

impl std::fmt::Display for Protocol {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// One value as it arrived (an argument, a stream item, a result), still in
/// its protocol's encoding: JSON text or one MessagePack value.
///
/// Cloning is cheap: the bytes are shared with the frame they came from.
#[derive(Clone, PartialEq, Eq)]
pub struct RawValue {
    protocol: Protocol,
    bytes: Bytes,
}

impl RawValue {
    /// Wraps bytes that hold exactly one value encoded in `protocol`.
    ///
    /// The bytes are not checked here; [`RawValue::deserialize`] reports a
    /// malformed value.
    pub fn new(protocol: Protocol, bytes: Bytes) -> RawValue {
        RawValue { protocol, bytes }
    }

    /// The protocol the value is encoded in.
    pub fn protocol(&self) -> Protocol {
        self.protocol
    }

    /// The encoded value.
    pub fn bytes(&self) -> &Bytes {
        &self.bytes
    }

    /// Deserializes the value into `T`.
    ///
    /// A value of the wrong shape is [`ProtocolError::InvalidValue`], with
    /// the deserializer's explanation.
    pub fn deserialize<T: DeserializeOwned>(&self) -> Result<T, ProtocolError> {
        match self.protocol {
            Protocol::Json => json::decode_value(&self.bytes),
            Protocol::MessagePack => msgpack::decode_value(&self.bytes),
        }
    }
}

impl std::fmt::Debug for RawValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut s = f.debug_struct("RawValue");
        s.field("protocol", &self.protocol);
        match self.protocol {
            Protocol::Json => s.field("json", &String::from_utf8_lossy(&self.bytes)),
            Protocol::MessagePack => s.field("len", &self.bytes.len()),
        };
        s.finish()
    }
}

/// A decoded hub message, as exchanged between a client and the server.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum HubMessage {
    /// Type 1: call a method; a response is expected when `invocation_id` is set.
    Invocation(Invocation),
    /// Type 2: one item of a stream.
    StreamItem {
        /// The invocation the item belongs to.
        invocation_id: String,
        /// The item.
        item: RawValue,
    },
    /// Type 3: the end of an invocation, with its result or error.
    Completion(Completion),
    /// Type 4: call a method that answers with a stream of items.
    StreamInvocation(Invocation),
    /// Type 5: stop a running invocation or stream.
    CancelInvocation {
        /// The invocation to cancel.
        invocation_id: String,
    },
    /// Type 6: keep-alive.
    Ping,
    /// Type 7: the sender is closing the connection.
    Close {
        /// Why, when the close is caused by an error.
        error: Option<String>,
        /// Whether a client with automatic reconnect should reconnect.
        allow_reconnect: bool,
    },
    /// Type 8 (protocol version 2, stateful reconnect): the sender has
    /// received every trackable message up to and including `sequence_id`.
    Ack {
        /// The highest sequence id received.
        sequence_id: u64,
    },
    /// Type 9 (protocol version 2, stateful reconnect): sent first after a
    /// reconnect; the next trackable message the sender sends has this id.
    Sequence {
        /// The id of the sender's next trackable message.
        sequence_id: u64,
    },
}

impl HubMessage {
    /// Whether the message takes part in stateful reconnect's sequence
    /// numbering: Invocation, StreamItem, Completion, StreamInvocation and
    /// CancelInvocation are numbered and replayed; Ping, Close, Ack and
    /// Sequence are not.
    pub fn is_trackable(&self) -> bool {
        matches!(
            self,
            HubMessage::Invocation(_)
                | HubMessage::StreamItem { .. }
                | HubMessage::Completion(_)
                | HubMessage::StreamInvocation(_)
                | HubMessage::CancelInvocation { .. }
        )
    }
}

/// The body of an Invocation or StreamInvocation message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invocation {
    /// Set when the caller expects a Completion (always set for streams).
    pub invocation_id: Option<String>,
    /// The method to call.
    pub target: String,
    /// The arguments, still encoded.
    pub arguments: Vec<RawValue>,
    /// Ids of streams the caller uploads to this invocation.
    pub stream_ids: Vec<String>,
}

/// The body of a Completion message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Completion {
    /// The invocation this completes.
    pub invocation_id: String,
    /// How it ended.
    pub outcome: Outcome,
}

/// How an invocation ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// It returned nothing.
    Void,
    /// It returned this value.
    Value(RawValue),
    /// It failed with this message.
    Error(String),
}

/// Why a hub message could not be parsed or written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProtocolError {
    /// The message, or the part received so far, is longer than allowed.
    #[error("message of {size} bytes exceeds the limit of {limit} bytes")]
    MessageTooLarge {
        /// The size seen (at least).
        size: usize,
        /// The configured limit.
        limit: usize,
    },
    /// The bytes are not a well-formed message of the protocol.
    #[error("malformed {protocol} message: {reason}")]
    Malformed {
        /// The protocol being parsed.
        protocol: Protocol,
        /// What was wrong.
        reason: String,
    },
    /// A required field is missing or has the wrong type.
    #[error("{protocol} message of type {message_type} has a missing or invalid '{field}' field")]
    InvalidField {
        /// The protocol being parsed.
        protocol: Protocol,
        /// The message type number.
        message_type: u64,
        /// The offending field.
        field: &'static str,
    },
    /// The message type is not one this server understands.
    #[error("unknown hub message type {0}")]
    UnknownMessageType(u64),
    /// A value could not be converted into the requested type.
    #[error("invalid value: {0}")]
    InvalidValue(String),
    /// A value could not be serialized.
    #[error("could not serialize value: {0}")]
    Serialize(String),
    /// Invocation arguments did not serialize as a sequence.
    #[error("invocation arguments must serialize as a sequence (a tuple, array or Vec)")]
    ArgumentsNotASequence,
    /// A raw value of one protocol was given to the other protocol's writer.
    #[error("a {found} value cannot be written in a {expected} message")]
    ProtocolMismatch {
        /// The protocol of the writer.
        expected: Protocol,
        /// The protocol of the value.
        found: Protocol,
    },
    /// The handshake request was not valid.
    #[error("invalid handshake: {0}")]
    InvalidHandshake(String),
}

//! The `json` hub protocol: one UTF-8 JSON object per message, each followed
//! by the record separator `0x1E`.
//!
//! Parsing borrows every value straight from the record: each property is
//! first captured as a borrowed [`serde_json::value::RawValue`], then the
//! envelope fields (type, ids, target) are decoded and the payload values
//! (arguments, item, result) become [`RawValue`]s that are slices of the
//! record's [`Bytes`], never copies.
//!
//! Writing appends directly into one buffer: property names are constants,
//! strings are escaped in place and payload values are serialized with
//! `serde_json::to_writer`.

use std::fmt;

use bytes::{Bytes, BytesMut};
use serde::Serialize;
use serde::de::{self, DeserializeOwned, DeserializeSeed, IgnoredAny, MapAccess, Visitor};
use serde_json::value::RawValue as JsonRaw;

use super::{
    Completion, HubMessage, Invocation, Outcome, Protocol, ProtocolError, RECORD_SEPARATOR,
    RawValue,
};

const PROTOCOL: Protocol = Protocol::Json;

// ---------------------------------------------------------------------------
// Records and objects (shared with the handshake)
// ---------------------------------------------------------------------------

/// Splits the first `0x1E`-terminated record off the front of `buf`.
///
/// Returns the record without its separator, `Ok(None)` when no separator has
/// arrived yet, or [`ProtocolError::MessageTooLarge`] when the record (not
/// counting its separator) is, or is already known to be, longer than `max`.
pub(super) fn split_record(buf: &mut BytesMut, max: usize) -> Result<Option<Bytes>, ProtocolError> {
    // A record of at most `max` bytes has its separator within the first
    // `max + 1` bytes; looking further would only waste time.
    let window = buf.len().min(max.saturating_add(1));
    match buf[..window].iter().position(|&b| b == RECORD_SEPARATOR) {
        Some(end) => Ok(Some(buf.split_to(end + 1).freeze().slice(..end))),
        None if buf.len() > max => Err(ProtocolError::MessageTooLarge {
            size: buf.len(),
            limit: max,
        }),
        None => Ok(None),
    }
}

/// Parses `text` as exactly one JSON object (surrounding whitespace allowed)
/// and captures the raw value of each property named in `names`, in that
/// order; other properties are skipped. A repeated property is an error.
pub(super) fn object_properties<'a, const N: usize>(
    text: &'a str,
    names: &'static [&'static str; N],
) -> Result<[Option<&'a JsonRaw>; N], serde_json::Error> {
    let mut de = serde_json::Deserializer::from_str(text);
    let values = PropertiesSeed { names }.deserialize(&mut de)?;
    de.end()?;
    Ok(values)
}

/// Captures the properties listed in `names` of one JSON object.
struct PropertiesSeed<const N: usize> {
    names: &'static [&'static str; N],
}

impl<'de, const N: usize> DeserializeSeed<'de> for PropertiesSeed<N> {
    type Value = [Option<&'de JsonRaw>; N];

    fn deserialize<D: de::Deserializer<'de>>(
        self,
        deserializer: D,
    ) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_map(self)
    }
}

impl<'de, const N: usize> Visitor<'de> for PropertiesSeed<N> {
    type Value = [Option<&'de JsonRaw>; N];

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<M: MapAccess<'de>>(self, mut map: M) -> Result<Self::Value, M::Error> {
        let mut values = [None; N];
        while let Some(index) = map.next_key_seed(PropertyName { names: self.names })? {
            match index {
                Some(i) if i < N => {
                    if values[i].is_some() {
                        let name = self.names[i];
                        return Err(de::Error::custom(format_args!(
                            "duplicate property '{name}'"
                        )));
                    }
                    values[i] = Some(map.next_value::<&'de JsonRaw>()?);
                }
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(values)
    }
}

/// Resolves a property name to its index in a list of known names, without
/// allocating (escaped names are compared after unescaping).
struct PropertyName<const N: usize> {
    names: &'static [&'static str; N],
}

impl<'de, const N: usize> DeserializeSeed<'de> for PropertyName<N> {
    type Value = Option<usize>;

    fn deserialize<D: de::Deserializer<'de>>(
        self,
        deserializer: D,
    ) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_identifier(self)
    }
}

impl<const N: usize> Visitor<'_> for PropertyName<N> {
    type Value = Option<usize>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a property name")
    }

    fn visit_str<E: de::Error>(self, name: &str) -> Result<Self::Value, E> {
        Ok(self.names.iter().position(|known| *known == name))
    }
}

/// Appends `value` as a JSON string literal, escaped exactly as `serde_json`
/// escapes strings (short escapes where JSON has them, `\u00XX` for other
/// control characters, everything else verbatim).
pub(super) fn push_str(out: &mut Vec<u8>, value: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.reserve(value.len() + 2);
    out.push(b'"');
    let bytes = value.as_bytes();
    let mut clean_from = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let escape: &[u8] = match b {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0x08 => b"\\b",
            0x0c => b"\\f",
            0x00..=0x1f => b"",
            _ => continue,
        };
        out.extend_from_slice(&bytes[clean_from..i]);
        if escape.is_empty() {
            out.extend_from_slice(b"\\u00");
            out.push(HEX[usize::from(b >> 4)]);
            out.push(HEX[usize::from(b & 0x0f)]);
        } else {
            out.extend_from_slice(escape);
        }
        clean_from = i + 1;
    }
    out.extend_from_slice(&bytes[clean_from..]);
    out.push(b'"');
}

// ---------------------------------------------------------------------------
// Parsing
// ---------------------------------------------------------------------------

/// The hub message properties this protocol knows, in the order of the
/// index constants below.
const PROPERTIES: [&str; 11] = [
    "type",
    "invocationId",
    "target",
    "arguments",
    "streamIds",
    "headers",
    "item",
    "result",
    "error",
    "allowReconnect",
    "sequenceId",
];
const TYPE: usize = 0;
const INVOCATION_ID: usize = 1;
const TARGET: usize = 2;
const ARGUMENTS: usize = 3;
const STREAM_IDS: usize = 4;
const HEADERS: usize = 5;
const ITEM: usize = 6;
const RESULT: usize = 7;
const ERROR: usize = 8;
const ALLOW_RECONNECT: usize = 9;
const SEQUENCE_ID: usize = 10;

fn malformed(reason: impl Into<String>) -> ProtocolError {
    ProtocolError::Malformed {
        protocol: PROTOCOL,
        reason: reason.into(),
    }
}

/// Parses one message from the front of `buf`; see [`Protocol::parse_message`].
pub(super) fn parse_message(
    buf: &mut BytesMut,
    max: usize,
) -> Result<Option<HubMessage>, ProtocolError> {
    match split_record(buf, max)? {
        Some(record) => parse_record(&record).map(Some),
        None => Ok(None),
    }
}

/// Parses one record (without its separator).
fn parse_record(record: &Bytes) -> Result<HubMessage, ProtocolError> {
    let text = std::str::from_utf8(record)
        .map_err(|e| malformed(format!("the message is not valid UTF-8: {e}")))?;
    if text.trim_ascii().is_empty() {
        return Err(malformed("empty message"));
    }
    let props = object_properties(text, &PROPERTIES).map_err(|e| malformed(e.to_string()))?;
    let message_type = match props[TYPE] {
        Some(raw) => serde_json::from_str::<u64>(raw.get())
            .map_err(|_| malformed("the 'type' property must be a non-negative integer"))?,
        None => return Err(malformed("the 'type' property is missing")),
    };
    let fields = Fields {
        record,
        props,
        message_type,
    };
    fields.check_headers()?;
    let message = match message_type {
        1 => HubMessage::Invocation(fields.invocation(false)?),
        2 => HubMessage::StreamItem {
            invocation_id: fields.required_string(INVOCATION_ID)?,
            item: fields.required_value(ITEM)?,
        },
        3 => HubMessage::Completion(fields.completion()?),
        4 => HubMessage::StreamInvocation(fields.invocation(true)?),
        5 => HubMessage::CancelInvocation {
            invocation_id: fields.required_string(INVOCATION_ID)?,
        },
        6 => HubMessage::Ping,
        7 => HubMessage::Close {
            error: fields.optional_string(ERROR)?,
            allow_reconnect: fields.optional::<bool>(ALLOW_RECONNECT)?.unwrap_or(false),
        },
        8 => HubMessage::Ack {
            sequence_id: fields.required::<u64>(SEQUENCE_ID)?,
        },
        9 => HubMessage::Sequence {
            sequence_id: fields.required::<u64>(SEQUENCE_ID)?,
        },
        other => return Err(ProtocolError::UnknownMessageType(other)),
    };
    Ok(message)
}

/// The properties of one record, with what is needed to decode them.
struct Fields<'a> {
    record: &'a Bytes,
    props: [Option<&'a JsonRaw>; PROPERTIES.len()],
    message_type: u64,
}

impl<'a> Fields<'a> {
    fn invalid(&self, index: usize) -> ProtocolError {
        ProtocolError::InvalidField {
            protocol: PROTOCOL,
            message_type: self.message_type,
            field: PROPERTIES[index],
        }
    }

    /// The raw property, which must be present (`null` counts as present).
    fn required_raw(&self, index: usize) -> Result<&'a JsonRaw, ProtocolError> {
        self.props[index].ok_or_else(|| self.invalid(index))
    }

    /// Decodes a property that must be present and not `null`.
    fn required<T: serde::Deserialize<'a>>(&self, index: usize) -> Result<T, ProtocolError> {
        serde_json::from_str(self.required_raw(index)?.get()).map_err(|_| self.invalid(index))
    }

    /// Decodes an optional property; `null` is the same as absent.
    fn optional<T: serde::Deserialize<'a>>(
        &self,
        index: usize,
    ) -> Result<Option<T>, ProtocolError> {
        match self.props[index] {
            Some(raw) => {
                serde_json::from_str::<Option<T>>(raw.get()).map_err(|_| self.invalid(index))
            }
            None => Ok(None),
        }
    }

    fn required_string(&self, index: usize) -> Result<String, ProtocolError> {
        self.required(index)
    }

    fn optional_string(&self, index: usize) -> Result<Option<String>, ProtocolError> {
        self.optional(index)
    }

    /// A payload value that must be present (it may be `null`).
    fn required_value(&self, index: usize) -> Result<RawValue, ProtocolError> {
        Ok(self.value(self.required_raw(index)?))
    }

    /// The record slice holding `raw`, which was borrowed from the record.
    fn value(&self, raw: &JsonRaw) -> RawValue {
        let text = raw.get();
        let start = (text.as_ptr() as usize).wrapping_sub(self.record.as_ptr() as usize);
        let end = start.wrapping_add(text.len());
        let bytes = if start <= end && end <= self.record.len() {
            self.record.slice(start..end)
        } else {
            // Unreachable: `raw` always borrows from the record. Copying keeps
            // the value correct should that ever change.
            Bytes::copy_from_slice(text.as_bytes())
        };
        RawValue::new(PROTOCOL, bytes)
    }

    /// Headers carry nothing switchboard interprets, but their shape is
    /// still checked: an object of strings.
    fn check_headers(&self) -> Result<(), ProtocolError> {
        self.optional::<Headers>(HEADERS).map(drop)
    }

    fn invocation(&self, stream: bool) -> Result<Invocation, ProtocolError> {
        let invocation_id = if stream {
            Some(self.required_string(INVOCATION_ID)?)
        } else {
            self.optional_string(INVOCATION_ID)?
        };
        let target = self.required_string(TARGET)?;
        let arguments = self
            .required::<Vec<&'a JsonRaw>>(ARGUMENTS)?
            .into_iter()
            .map(|raw| self.value(raw))
            .collect();
        let stream_ids = self
            .optional::<Vec<String>>(STREAM_IDS)?
            .unwrap_or_default();
        Ok(Invocation {
            invocation_id,
            target,
            arguments,
            stream_ids,
        })
    }

    fn completion(&self) -> Result<Completion, ProtocolError> {
        let invocation_id = self.required_string(INVOCATION_ID)?;
        let error = self.optional_string(ERROR)?;
        let outcome = match (error, self.props[RESULT]) {
            (Some(_), Some(_)) => {
                return Err(malformed(
                    "a completion cannot carry both a 'result' and an 'error'",
                ));
            }
            (Some(error), None) => Outcome::Error(error),
            (None, Some(result)) => Outcome::Value(self.value(result)),
            (None, None) => Outcome::Void,
        };
        Ok(Completion {
            invocation_id,
            outcome,
        })
    }
}

/// Accepts a JSON object whose values are all strings, and keeps nothing.
struct Headers;

impl<'de> serde::Deserialize<'de> for Headers {
    fn deserialize<D: de::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_map(Headers)
    }
}

impl<'de> Visitor<'de> for Headers {
    type Value = Headers;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an object of strings")
    }

    fn visit_map<M: MapAccess<'de>>(self, mut map: M) -> Result<Headers, M::Error> {
        while map.next_entry::<AnyString, AnyString>()?.is_some() {}
        Ok(Headers)
    }
}

/// Accepts any JSON string (escaped or not) and keeps nothing.
struct AnyString;

impl<'de> serde::Deserialize<'de> for AnyString {
    fn deserialize<D: de::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_str(AnyString)
    }
}

impl Visitor<'_> for AnyString {
    type Value = AnyString;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string")
    }

    fn visit_str<E: de::Error>(self, _: &str) -> Result<AnyString, E> {
        Ok(AnyString)
    }
}

// ---------------------------------------------------------------------------
// Writing
// ---------------------------------------------------------------------------

/// Starts a message object: `{"type":N`.
fn begin(message_type: u8) -> Vec<u8> {
    let mut out = Vec::with_capacity(128);
    out.extend_from_slice(b"{\"type\":");
    out.push(b'0' + message_type);
    out
}

/// Appends `,"name":`.
fn key(out: &mut Vec<u8>, name: &str) {
    out.extend_from_slice(b",\"");
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b"\":");
}

fn string_property(out: &mut Vec<u8>, name: &str, value: &str) {
    key(out, name);
    push_str(out, value);
}

/// Closes the object and appends the record separator.
fn finish(mut out: Vec<u8>) -> Bytes {
    out.push(b'}');
    out.push(RECORD_SEPARATOR);
    Bytes::from(out)
}

fn serialize_into<T: Serialize + ?Sized>(
    out: &mut Vec<u8>,
    value: &T,
) -> Result<(), ProtocolError> {
    serde_json::to_writer(out, value).map_err(|e| ProtocolError::Serialize(e.to_string()))
}

/// Appends a raw value verbatim, if it is JSON.
fn raw_into(out: &mut Vec<u8>, value: &RawValue) -> Result<(), ProtocolError> {
    if value.protocol() != PROTOCOL {
        return Err(ProtocolError::ProtocolMismatch {
            expected: PROTOCOL,
            found: value.protocol(),
        });
    }
    out.extend_from_slice(value.bytes());
    Ok(())
}

/// Encodes any hub message; see [`Protocol::write_message`].
pub(super) fn write_message(message: &HubMessage) -> Result<Bytes, ProtocolError> {
    let out = match message {
        HubMessage::Invocation(invocation) => write_invocation_message(1, invocation)?,
        HubMessage::StreamInvocation(invocation) => {
            if invocation.invocation_id.is_none() {
                return Err(ProtocolError::InvalidField {
                    protocol: PROTOCOL,
                    message_type: 4,
                    field: "invocationId",
                });
            }
            write_invocation_message(4, invocation)?
        }
        HubMessage::StreamItem {
            invocation_id,
            item,
        } => {
            let mut out = begin(2);
            string_property(&mut out, "invocationId", invocation_id);
            key(&mut out, "item");
            raw_into(&mut out, item)?;
            out
        }
        HubMessage::Completion(completion) => {
            let mut out = begin(3);
            string_property(&mut out, "invocationId", &completion.invocation_id);
            match &completion.outcome {
                Outcome::Void => {}
                Outcome::Value(value) => {
                    key(&mut out, "result");
                    raw_into(&mut out, value)?;
                }
                Outcome::Error(error) => string_property(&mut out, "error", error),
            }
            out
        }
        HubMessage::CancelInvocation { invocation_id } => {
            let mut out = begin(5);
            string_property(&mut out, "invocationId", invocation_id);
            out
        }
        HubMessage::Ping => return Ok(write_ping()),
        HubMessage::Close {
            error,
            allow_reconnect,
        } => return Ok(write_close(error.as_deref(), *allow_reconnect)),
        HubMessage::Ack { sequence_id } => return Ok(write_sequence_message(8, *sequence_id)),
        HubMessage::Sequence { sequence_id } => {
            return Ok(write_sequence_message(9, *sequence_id));
        }
    };
    Ok(finish(out))
}

fn write_invocation_message(
    message_type: u8,
    invocation: &Invocation,
) -> Result<Vec<u8>, ProtocolError> {
    let mut out = begin(message_type);
    if let Some(id) = &invocation.invocation_id {
        string_property(&mut out, "invocationId", id);
    }
    string_property(&mut out, "target", &invocation.target);
    key(&mut out, "arguments");
    out.push(b'[');
    for (i, argument) in invocation.arguments.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        raw_into(&mut out, argument)?;
    }
    out.push(b']');
    if !invocation.stream_ids.is_empty() {
        key(&mut out, "streamIds");
        out.push(b'[');
        for (i, id) in invocation.stream_ids.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            push_str(&mut out, id);
        }
        out.push(b']');
    }
    Ok(out)
}

/// Encodes an Invocation; see [`Protocol::write_invocation`].
pub(super) fn write_invocation<A: Serialize + ?Sized>(
    invocation_id: Option<&str>,
    target: &str,
    arguments: &A,
) -> Result<Bytes, ProtocolError> {
    let mut out = begin(1);
    if let Some(id) = invocation_id {
        string_property(&mut out, "invocationId", id);
    }
    string_property(&mut out, "target", target);
    key(&mut out, "arguments");
    let start = out.len();
    serialize_into(&mut out, arguments)?;
    if out.get(start) != Some(&b'[') {
        return Err(ProtocolError::ArgumentsNotASequence);
    }
    Ok(finish(out))
}

/// Encodes a StreamItem; see [`Protocol::write_stream_item`].
pub(super) fn write_stream_item<T: Serialize + ?Sized>(
    invocation_id: &str,
    item: &T,
) -> Result<Bytes, ProtocolError> {
    let mut out = begin(2);
    string_property(&mut out, "invocationId", invocation_id);
    key(&mut out, "item");
    serialize_into(&mut out, item)?;
    Ok(finish(out))
}

/// Encodes a Completion with a result; see [`Protocol::write_completion_value`].
pub(super) fn write_completion_value<T: Serialize + ?Sized>(
    invocation_id: &str,
    value: &T,
) -> Result<Bytes, ProtocolError> {
    let mut out = begin(3);
    string_property(&mut out, "invocationId", invocation_id);
    key(&mut out, "result");
    serialize_into(&mut out, value)?;
    Ok(finish(out))
}

/// Encodes a Completion without a result: neither `result` nor `error`.
pub(super) fn write_completion_void(invocation_id: &str) -> Bytes {
    let mut out = begin(3);
    string_property(&mut out, "invocationId", invocation_id);
    finish(out)
}

/// Encodes a Completion with an error.
pub(super) fn write_completion_error(invocation_id: &str, error: &str) -> Bytes {
    let mut out = begin(3);
    string_property(&mut out, "invocationId", invocation_id);
    string_property(&mut out, "error", error);
    finish(out)
}

/// Encodes `{"type":6}`.
pub(super) fn write_ping() -> Bytes {
    Bytes::from_static(b"{\"type\":6}\x1e")
}

/// Encodes an Ack (type 8) or a Sequence (type 9): `{"type":8,"sequenceId":n}`.
pub(super) fn write_sequence_message(message_type: u8, sequence_id: u64) -> Bytes {
    let mut out = begin(message_type);
    key(&mut out, "sequenceId");
    out.extend_from_slice(sequence_id.to_string().as_bytes());
    finish(out)
}

/// Encodes a Close: `error` only when set, `allowReconnect` only when true.
pub(super) fn write_close(error: Option<&str>, allow_reconnect: bool) -> Bytes {
    let mut out = begin(7);
    if let Some(error) = error {
        string_property(&mut out, "error", error);
    }
    if allow_reconnect {
        key(&mut out, "allowReconnect");
        out.extend_from_slice(b"true");
    }
    finish(out)
}

/// Encodes one value as compact JSON text.
pub(super) fn encode_value<T: Serialize + ?Sized>(value: &T) -> Result<Bytes, ProtocolError> {
    let mut out = Vec::with_capacity(64);
    serialize_into(&mut out, value)?;
    Ok(Bytes::from(out))
}

/// Decodes one JSON value into `T`.
pub(super) fn decode_value<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ProtocolError> {
    serde_json::from_slice(bytes).map_err(|e| ProtocolError::InvalidValue(e.to_string()))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use bytes::BufMut;
    use serde::Deserialize;

    use super::*;

    const MAX: usize = 1 << 20;

    /// Parses one record given without its separator; checks it is consumed.
    fn parse(text: &str) -> Result<HubMessage, ProtocolError> {
        let mut buf = BytesMut::from(text.as_bytes());
        buf.put_u8(RECORD_SEPARATOR);
        let message = parse_message(&mut buf, MAX)?.expect("a complete record");
        assert!(buf.is_empty(), "the record was not fully consumed");
        Ok(message)
    }

    fn raw(json: &str) -> RawValue {
        RawValue::new(Protocol::Json, Bytes::copy_from_slice(json.as_bytes()))
    }

    fn invocation(id: Option<&str>, target: &str, args: &[&str], streams: &[&str]) -> Invocation {
        Invocation {
            invocation_id: id.map(str::to_owned),
            target: target.to_owned(),
            arguments: args.iter().map(|a| raw(a)).collect(),
            stream_ids: streams.iter().map(|s| (*s).to_owned()).collect(),
        }
    }

    fn completion(id: &str, outcome: Outcome) -> HubMessage {
        HubMessage::Completion(Completion {
            invocation_id: id.to_owned(),
            outcome,
        })
    }

    fn assert_invalid_field(result: Result<HubMessage, ProtocolError>, ty: u64, name: &str) {
        match result {
            Err(ProtocolError::InvalidField {
                protocol: Protocol::Json,
                message_type,
                field,
            }) if message_type == ty && field == name => {}
            other => panic!("expected invalid field {name} of type {ty}, got {other:?}"),
        }
    }

    fn assert_malformed(result: Result<HubMessage, ProtocolError>) {
        match result {
            Err(ProtocolError::Malformed {
                protocol: Protocol::Json,
                ..
            }) => {}
            other => panic!("expected malformed, got {other:?}"),
        }
    }

    #[test]
    fn parses_the_spec_invocation_examples() {
        let blocking = r#"{
            "type": 1,
            "invocationId": "123",
            "target": "Send",
            "arguments": [
                42,
                "Test Message"
            ]
        }"#;
        assert_eq!(
            parse(blocking).unwrap(),
            HubMessage::Invocation(invocation(
                Some("123"),
                "Send",
                &["42", "\"Test Message\""],
                &[]
            ))
        );
        let non_blocking = r#"{"type": 1, "target": "Send", "arguments": [42, "Test Message"]}"#;
        assert_eq!(
            parse(non_blocking).unwrap(),
            HubMessage::Invocation(invocation(None, "Send", &["42", "\"Test Message\""], &[]))
        );
        let with_streams = r#"{"type": 1, "invocationId": "123", "target": "Send",
            "arguments": [42], "streamIds": ["1"]}"#;
        assert_eq!(
            parse(with_streams).unwrap(),
            HubMessage::Invocation(invocation(Some("123"), "Send", &["42"], &["1"]))
        );
        let with_headers = r#"{"type": 1, "headers": {"Foo": "Bar"}, "invocationId": "123",
            "target": "Send", "arguments": [42, "Test Message"]}"#;
        assert_eq!(
            parse(with_headers).unwrap(),
            HubMessage::Invocation(invocation(
                Some("123"),
                "Send",
                &["42", "\"Test Message\""],
                &[]
            ))
        );
    }

    #[test]
    fn parses_the_spec_examples_of_the_other_kinds() {
        let stream = r#"{"type": 4, "invocationId": "123", "target": "Send", "arguments": [42, "Test Message"]}"#;
        assert_eq!(
            parse(stream).unwrap(),
            HubMessage::StreamInvocation(invocation(
                Some("123"),
                "Send",
                &["42", "\"Test Message\""],
                &[]
            ))
        );
        assert_eq!(
            parse(r#"{"type": 2, "invocationId": "123", "item": 42}"#).unwrap(),
            HubMessage::StreamItem {
                invocation_id: "123".into(),
                item: raw("42")
            }
        );
        assert_eq!(
            parse(r#"{"type": 3, "invocationId": "123"}"#).unwrap(),
            completion("123", Outcome::Void)
        );
        assert_eq!(
            parse(r#"{"type": 3, "invocationId": "123", "result": 42}"#).unwrap(),
            completion("123", Outcome::Value(raw("42")))
        );
        assert_eq!(
            parse(r#"{"type": 3, "invocationId": "123", "error": "It didn't work!"}"#).unwrap(),
            completion("123", Outcome::Error("It didn't work!".into()))
        );
        assert_eq!(
            parse(r#"{"type": 5, "invocationId": "123"}"#).unwrap(),
            HubMessage::CancelInvocation {
                invocation_id: "123".into()
            }
        );
        assert_eq!(parse(r#"{"type": 6}"#).unwrap(), HubMessage::Ping);
        assert_eq!(
            parse(r#"{"type": 7}"#).unwrap(),
            HubMessage::Close {
                error: None,
                allow_reconnect: false
            }
        );
        assert_eq!(
            parse(r#"{"type": 7, "error": "Connection closed because of an error!"}"#).unwrap(),
            HubMessage::Close {
                error: Some("Connection closed because of an error!".into()),
                allow_reconnect: false
            }
        );
        assert_eq!(
            parse(r#"{"type": 7, "error": "Connection closed because of an error!", "allowReconnect": true}"#)
                .unwrap(),
            HubMessage::Close {
                error: Some("Connection closed because of an error!".into()),
                allow_reconnect: true
            }
        );
    }

    #[test]
    fn a_completion_with_result_and_error_is_a_protocol_error() {
        assert_malformed(parse(
            r#"{"type": 3, "invocationId": "123", "result": 42, "error": "It didn't work!"}"#,
        ));
        // `null` counts as present for the result.
        assert_malformed(parse(
            r#"{"type": 3, "invocationId": "1", "result": null, "error": "e"}"#,
        ));
    }

    #[test]
    fn a_null_result_is_a_value_and_an_absent_one_is_void() {
        assert_eq!(
            parse(r#"{"type":3,"invocationId":"1","result":null}"#).unwrap(),
            completion("1", Outcome::Value(raw("null")))
        );
        assert_eq!(
            parse(r#"{"type":3,"invocationId":"1","error":null}"#).unwrap(),
            completion("1", Outcome::Void)
        );
        assert_eq!(
            parse(r#"{"type":2,"invocationId":"1","item":null}"#).unwrap(),
            HubMessage::StreamItem {
                invocation_id: "1".into(),
                item: raw("null")
            }
        );
    }

    #[test]
    fn property_order_escapes_and_unknown_properties_do_not_matter() {
        let text = r#"{"arguments":[{"a":[1,2]}],"future":{"x":[1,{"y":2}]},"t\u0061rget":"go\n","type":1}"#;
        assert_eq!(
            parse(text).unwrap(),
            HubMessage::Invocation(invocation(None, "go\n", &[r#"{"a":[1,2]}"#], &[]))
        );
        // A null optional id is the same as none.
        assert_eq!(
            parse(r#"{"type":1,"invocationId":null,"target":"t","arguments":[]}"#).unwrap(),
            HubMessage::Invocation(invocation(None, "t", &[], &[]))
        );
    }

    #[test]
    fn rejects_bad_envelopes() {
        assert_malformed(parse(""));
        assert_malformed(parse("  \n"));
        assert_malformed(parse("[1]"));
        assert_malformed(parse("42"));
        assert_malformed(parse(r#""type""#));
        assert_malformed(parse(r#"{"target":"x"}"#));
        assert_malformed(parse(r#"{"type":"1"}"#));
        assert_malformed(parse(r#"{"type":-1}"#));
        assert_malformed(parse(r#"{"type":1.5}"#));
        assert_malformed(parse(r#"{"type":6} x"#));
        assert_malformed(parse(r#"{"type":6}{"type":6}"#));
        assert_malformed(parse(r#"{"type":6"#));
        assert_malformed(parse(r#"{"type":6,"type":6}"#));
        let mut buf = BytesMut::from(&b"{\"type\":6,\"x\":\"\xff\"}\x1e"[..]);
        assert_malformed(parse_message(&mut buf, MAX).map(|m| m.unwrap()));
    }

    #[test]
    fn parses_the_spec_ack_and_sequence_examples() {
        assert_eq!(
            parse(r#"{"type": 8, "sequenceId": 1394}"#).unwrap(),
            HubMessage::Ack { sequence_id: 1394 }
        );
        assert_eq!(
            parse(r#"{"type": 9, "sequenceId": 1234}"#).unwrap(),
            HubMessage::Sequence { sequence_id: 1234 }
        );
        assert_invalid_field(parse(r#"{"type":8}"#), 8, "sequenceId");
        assert_invalid_field(parse(r#"{"type":9,"sequenceId":-1}"#), 9, "sequenceId");
        assert_invalid_field(parse(r#"{"type":9,"sequenceId":"1"}"#), 9, "sequenceId");
    }

    #[test]
    fn unknown_types_are_reported_with_their_number() {
        for ty in [0u64, 10, 42] {
            match parse(&format!(r#"{{"type":{ty},"sequenceId":1}}"#)) {
                Err(ProtocolError::UnknownMessageType(n)) => assert_eq!(n, ty),
                other => panic!("type {ty}: {other:?}"),
            }
        }
    }

    #[test]
    fn rejects_missing_or_mistyped_fields() {
        assert_invalid_field(parse(r#"{"type":1,"arguments":[]}"#), 1, "target");
        assert_invalid_field(
            parse(r#"{"type":1,"target":7,"arguments":[]}"#),
            1,
            "target",
        );
        assert_invalid_field(parse(r#"{"type":1,"target":"t"}"#), 1, "arguments");
        assert_invalid_field(
            parse(r#"{"type":1,"target":"t","arguments":{}}"#),
            1,
            "arguments",
        );
        assert_invalid_field(
            parse(r#"{"type":1,"target":"t","arguments":null}"#),
            1,
            "arguments",
        );
        assert_invalid_field(
            parse(r#"{"type":1,"invocationId":1,"target":"t","arguments":[]}"#),
            1,
            "invocationId",
        );
        assert_invalid_field(
            parse(r#"{"type":1,"target":"t","arguments":[],"streamIds":[1]}"#),
            1,
            "streamIds",
        );
        assert_invalid_field(
            parse(r#"{"type":1,"target":"t","arguments":[],"headers":{"a":1}}"#),
            1,
            "headers",
        );
        assert_invalid_field(
            parse(r#"{"type":1,"target":"t","arguments":[],"headers":[]}"#),
            1,
            "headers",
        );
        assert_invalid_field(parse(r#"{"type":2,"item":1}"#), 2, "invocationId");
        assert_invalid_field(parse(r#"{"type":2,"invocationId":"1"}"#), 2, "item");
        assert_invalid_field(parse(r#"{"type":3}"#), 3, "invocationId");
        assert_invalid_field(
            parse(r#"{"type":3,"invocationId":null}"#),
            3,
            "invocationId",
        );
        assert_invalid_field(
            parse(r#"{"type":3,"invocationId":"1","error":5}"#),
            3,
            "error",
        );
        assert_invalid_field(
            parse(r#"{"type":4,"target":"t","arguments":[]}"#),
            4,
            "invocationId",
        );
        assert_invalid_field(parse(r#"{"type":5}"#), 5, "invocationId");
        assert_invalid_field(parse(r#"{"type":7,"error":false}"#), 7, "error");
        assert_invalid_field(
            parse(r#"{"type":7,"allowReconnect":"yes"}"#),
            7,
            "allowReconnect",
        );
    }

    fn every_kind() -> Vec<HubMessage> {
        vec![
            HubMessage::Invocation(invocation(None, "send", &[r#"{"a":1}"#, "[1,2]"], &[])),
            HubMessage::Invocation(invocation(Some("1"), "up\"load", &[], &["s1", "s2"])),
            HubMessage::StreamInvocation(invocation(Some("2"), "stream", &["5"], &[])),
            HubMessage::StreamItem {
                invocation_id: "2".into(),
                item: raw("\"é\\u0000\""),
            },
            completion("1", Outcome::Void),
            completion("1", Outcome::Value(raw("null"))),
            completion("1", Outcome::Error("boom\n".into())),
            HubMessage::CancelInvocation {
                invocation_id: "2".into(),
            },
            HubMessage::Ping,
            HubMessage::Close {
                error: None,
                allow_reconnect: false,
            },
            HubMessage::Close {
                error: Some("bye".into()),
                allow_reconnect: true,
            },
            HubMessage::Ack { sequence_id: 1394 },
            HubMessage::Sequence {
                sequence_id: u64::MAX,
            },
        ]
    }

    #[test]
    fn every_kind_round_trips() {
        for message in every_kind() {
            let bytes = write_message(&message).unwrap();
            assert_eq!(bytes.last(), Some(&RECORD_SEPARATOR));
            let mut buf = BytesMut::from(&bytes[..]);
            assert_eq!(parse_message(&mut buf, MAX).unwrap(), Some(message));
            assert!(buf.is_empty());
        }
    }

    #[test]
    fn parses_several_records_from_one_buffer() {
        let messages = every_kind();
        let mut buf = BytesMut::new();
        for message in &messages {
            buf.extend_from_slice(&write_message(message).unwrap());
        }
        for message in messages {
            assert_eq!(parse_message(&mut buf, MAX).unwrap(), Some(message));
        }
        assert_eq!(parse_message(&mut buf, MAX).unwrap(), None);
        assert!(buf.is_empty());
    }

    #[test]
    fn waits_for_the_rest_of_a_split_record() {
        let bytes = write_invocation(Some("7"), "send", &("hello", 1)).unwrap();
        for cut in 0..bytes.len() {
            let mut buf = BytesMut::from(&bytes[..cut]);
            assert_eq!(parse_message(&mut buf, MAX).unwrap(), None);
            assert_eq!(buf.len(), cut, "an incomplete record must stay buffered");
            buf.extend_from_slice(&bytes[cut..]);
            assert!(parse_message(&mut buf, MAX).unwrap().is_some());
            assert!(buf.is_empty());
        }
    }

    #[test]
    fn enforces_the_size_limit() {
        let record = br#"{"type":6}"#; // 10 bytes
        // Exactly at the limit (separator not counted): accepted.
        let mut buf = BytesMut::from(&record[..]);
        buf.put_u8(RECORD_SEPARATOR);
        assert_eq!(parse_message(&mut buf, 10).unwrap(), Some(HubMessage::Ping));
        // One byte over, with the separator present.
        let mut buf = BytesMut::from(&record[..]);
        buf.put_u8(RECORD_SEPARATOR);
        assert!(matches!(
            parse_message(&mut buf, 9),
            Err(ProtocolError::MessageTooLarge { limit: 9, .. })
        ));
        // No separator yet, but already more than the limit.
        let mut buf = BytesMut::from(&record[..]);
        assert!(matches!(
            parse_message(&mut buf, 9),
            Err(ProtocolError::MessageTooLarge { size: 10, limit: 9 })
        ));
        // No separator yet, within the limit: wait.
        let mut buf = BytesMut::from(&record[..]);
        assert_eq!(parse_message(&mut buf, 10).unwrap(), None);
        // A big record after a small one: the small one still parses.
        let mut buf = BytesMut::from(&b"{\"type\":6}\x1e"[..]);
        buf.extend_from_slice(&[b' '; 64]);
        assert_eq!(parse_message(&mut buf, 10).unwrap(), Some(HubMessage::Ping));
        assert!(parse_message(&mut buf, 10).is_err());
    }

    #[test]
    fn typed_writers_produce_exact_bytes() {
        assert_eq!(
            &write_invocation(None, "message", &("a", 1)).unwrap()[..],
            b"{\"type\":1,\"target\":\"message\",\"arguments\":[\"a\",1]}\x1e"
        );
        assert_eq!(
            &write_invocation(Some("123"), "Send", &[42]).unwrap()[..],
            b"{\"type\":1,\"invocationId\":\"123\",\"target\":\"Send\",\"arguments\":[42]}\x1e"
        );
        assert!(matches!(
            write_invocation(None, "none", &()),
            Err(ProtocolError::ArgumentsNotASequence)
        ));
        assert_eq!(
            &write_stream_item("123", &42).unwrap()[..],
            b"{\"type\":2,\"invocationId\":\"123\",\"item\":42}\x1e"
        );
        assert_eq!(
            &write_completion_value("123", &Some(vec![1, 2])).unwrap()[..],
            b"{\"type\":3,\"invocationId\":\"123\",\"result\":[1,2]}\x1e"
        );
        assert_eq!(
            &write_completion_value("123", &None::<u8>).unwrap()[..],
            b"{\"type\":3,\"invocationId\":\"123\",\"result\":null}\x1e"
        );
        assert_eq!(
            &write_completion_void("123")[..],
            b"{\"type\":3,\"invocationId\":\"123\"}\x1e"
        );
        assert_eq!(
            &write_completion_error("123", "It didn't \"work\"\n")[..],
            b"{\"type\":3,\"invocationId\":\"123\",\"error\":\"It didn't \\\"work\\\"\\n\"}\x1e"
        );
        assert_eq!(&write_ping()[..], b"{\"type\":6}\x1e");
        assert_eq!(&write_close(None, false)[..], b"{\"type\":7}\x1e");
        assert_eq!(
            &write_close(None, true)[..],
            b"{\"type\":7,\"allowReconnect\":true}\x1e"
        );
        assert_eq!(
            &write_close(Some("bye"), true)[..],
            b"{\"type\":7,\"error\":\"bye\",\"allowReconnect\":true}\x1e"
        );
    }

    #[test]
    fn write_message_matches_the_typed_writers() {
        let message = HubMessage::Invocation(invocation(None, "message", &["\"a\"", "1"], &[]));
        assert_eq!(
            write_message(&message).unwrap(),
            write_invocation(None, "message", &("a", 1)).unwrap()
        );
        assert_eq!(
            write_message(&completion("9", Outcome::Error("x".into()))).unwrap(),
            write_completion_error("9", "x")
        );
        assert_eq!(
            write_message(&completion("9", Outcome::Value(raw("[1]")))).unwrap(),
            write_completion_value("9", &[1]).unwrap()
        );
    }

    #[test]
    fn arguments_must_be_a_sequence() {
        #[derive(Serialize)]
        struct Args {
            a: u8,
        }
        for result in [
            write_invocation(None, "t", &Args { a: 1 }),
            write_invocation(None, "t", &1),
            write_invocation(None, "t", "text"),
            write_invocation(None, "t", &std::collections::BTreeMap::<u8, u8>::new()),
        ] {
            assert!(matches!(result, Err(ProtocolError::ArgumentsNotASequence)));
        }
        assert!(write_invocation(None, "t", &Vec::<u8>::new()).is_ok());
        assert!(write_invocation(None, "t", &[1u8, 2][..]).is_ok());
    }

    #[test]
    fn raw_values_of_the_other_protocol_are_refused() {
        let msgpack = RawValue::new(Protocol::MessagePack, Bytes::from_static(&[0x2a]));
        let message = HubMessage::StreamItem {
            invocation_id: "1".into(),
            item: msgpack,
        };
        assert!(matches!(
            write_message(&message),
            Err(ProtocolError::ProtocolMismatch {
                expected: Protocol::Json,
                found: Protocol::MessagePack
            })
        ));
    }

    #[test]
    fn writing_a_stream_invocation_requires_an_id() {
        let message = HubMessage::StreamInvocation(invocation(None, "s", &[], &[]));
        assert!(matches!(
            write_message(&message),
            Err(ProtocolError::InvalidField {
                field: "invocationId",
                ..
            })
        ));
    }

    #[test]
    fn raw_values_are_slices_of_the_frame() {
        let mut buf = BytesMut::from(
            &b"{\"type\":1,\"target\":\"t\",\"arguments\":[ {\"a\" : 1} , \"x\"]}\x1e{\"type\":3,\"invocationId\":\"1\",\"result\":[true]}\x1e"[..],
        );
        let frame = buf.as_ptr() as usize..buf.as_ptr() as usize + buf.len();
        let inside = |value: &RawValue| {
            let start = value.bytes().as_ptr() as usize;
            frame.contains(&start) && start + value.bytes().len() <= frame.end
        };
        let Some(HubMessage::Invocation(inv)) = parse_message(&mut buf, MAX).unwrap() else {
            panic!("expected an invocation");
        };
        assert_eq!(&inv.arguments[0].bytes()[..], b"{\"a\" : 1}");
        assert_eq!(&inv.arguments[1].bytes()[..], b"\"x\"");
        assert!(inv.arguments.iter().all(inside));
        let Some(HubMessage::Completion(Completion {
            outcome: Outcome::Value(result),
            ..
        })) = parse_message(&mut buf, MAX).unwrap()
        else {
            panic!("expected a completion with a value");
        };
        assert_eq!(&result.bytes()[..], b"[true]");
        assert!(inside(&result));
    }

    #[test]
    fn deep_nesting_does_not_overflow_the_stack() {
        let depth = 100_000;
        let nested = format!("{}{}", "[".repeat(depth), "]".repeat(depth));
        // As the whole record: rejected by the recursion limit.
        assert_malformed(parse(&nested));
        // Inside an argument: skipped without recursion, then refused when
        // decoded into a type.
        let record = format!(r#"{{"type":1,"target":"t","arguments":[{nested}]}}"#);
        let Ok(HubMessage::Invocation(inv)) = parse(&record) else {
            panic!("a deeply nested argument should be skipped");
        };
        assert_eq!(inv.arguments[0].bytes().len(), 2 * depth);
        assert!(matches!(
            decode_value::<serde_json::Value>(inv.arguments[0].bytes()),
            Err(ProtocolError::InvalidValue(_))
        ));
        // Unbalanced nesting is an error too.
        assert!(parse(&"[".repeat(depth)).is_err());
    }

    #[test]
    fn values_encode_and_decode() {
        #[derive(Debug, Serialize, Deserialize, PartialEq)]
        struct Point {
            x: i32,
            y: i32,
        }
        let bytes = encode_value(&Point { x: 1, y: -2 }).unwrap();
        assert_eq!(&bytes[..], br#"{"x":1,"y":-2}"#);
        assert_eq!(
            decode_value::<Point>(&bytes).unwrap(),
            Point { x: 1, y: -2 }
        );
        match decode_value::<i32>(br#""x""#) {
            Err(ProtocolError::InvalidValue(message)) => {
                assert!(
                    message.contains("invalid type: string \"x\", expected i32"),
                    "{message}"
                );
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn strings_are_escaped_like_serde_json() {
        let samples = [
            "",
            "plain",
            "quote\" backslash\\ slash/",
            "\u{0}\u{1}\u{8}\u{9}\u{a}\u{b}\u{c}\u{d}\u{1e}\u{1f}\u{7f}",
            "é ü 😀 \u{2028}",
        ];
        for sample in samples {
            let mut out = Vec::new();
            push_str(&mut out, sample);
            assert_eq!(
                String::from_utf8(out).unwrap(),
                serde_json::to_string(sample).unwrap()
            );
        }
    }
}

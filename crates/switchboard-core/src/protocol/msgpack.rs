//! The `messagepack` hub protocol: one MessagePack array per message, each
//! preceded by its length as a base-128 varint.
//!
//! Parsing reads the envelope fields (type, headers, ids, target) by their
//! markers and finds where each payload value (argument, item, result) ends
//! with [`value_end`], an iterative scan that never recurses, so deeply
//! nested input cannot exhaust the stack. Payload values become
//! [`RawValue`]s that are slices of the frame's [`Bytes`], never copies.
//!
//! Writing reserves room for the longest length prefix in front of the body,
//! encodes the body after it, then writes the prefix right before the body
//! and returns the frame as a slice of that one buffer.

use bytes::{Bytes, BytesMut};
use rmp::Marker;
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::{Completion, HubMessage, Invocation, Outcome, Protocol, ProtocolError, RawValue};

const PROTOCOL: Protocol = Protocol::MessagePack;

/// The largest body a length prefix may announce (2 GiB - 1).
const MAX_BODY: usize = 0x7fff_ffff;

/// The longest length prefix: 5 groups of 7 bits hold 31 bits.
const MAX_PREFIX: usize = 5;

/// Strings written by the infallible writers are cut to this many bytes, so
/// that a frame holding two of them always stays under [`MAX_BODY`].
const MAX_TEXT: usize = 1 << 29;

const NIL: u8 = 0xc0;
const TRUE: u8 = 0xc3;
const EMPTY_MAP: u8 = 0x80;
const EMPTY_ARRAY: u8 = 0x90;

fn malformed(reason: impl Into<String>) -> ProtocolError {
    ProtocolError::Malformed {
        protocol: PROTOCOL,
        reason: reason.into(),
    }
}

// ---------------------------------------------------------------------------
// Framing
// ---------------------------------------------------------------------------

/// Reads the length prefix at the front of `buf`.
///
/// Returns `(body length, prefix length)`, or `Ok(None)` when the prefix is
/// not complete yet. A prefix already known to announce more than `max`
/// bytes is [`ProtocolError::MessageTooLarge`] at once.
fn read_length_prefix(buf: &[u8], max: usize) -> Result<Option<(usize, usize)>, ProtocolError> {
    let mut value: u64 = 0;
    for (i, &byte) in buf.iter().take(MAX_PREFIX).enumerate() {
        value |= u64::from(byte & 0x7f) << (7 * i);
        let last = byte & 0x80 == 0;
        if value > MAX_BODY as u64 || (i + 1 == MAX_PREFIX && !last) {
            return Err(malformed(
                "the length prefix is longer than 5 bytes or exceeds 2^31-1",
            ));
        }
        // `value` only grows with further bytes: it is a lower bound already.
        let size = usize::try_from(value).unwrap_or(usize::MAX);
        if size > max {
            return Err(ProtocolError::MessageTooLarge { size, limit: max });
        }
        if last {
            return Ok(Some((size, i + 1)));
        }
    }
    Ok(None)
}

/// Appends `value` as a varint length prefix.
fn push_varint(out: &mut Vec<u8>, mut value: u32) {
    while value >= 0x80 {
        out.push((value & 0x7f) as u8 | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

/// Starts a frame: room for the longest prefix, then the body.
fn begin() -> Vec<u8> {
    let mut out = Vec::with_capacity(128);
    out.resize(MAX_PREFIX, 0);
    out
}

/// Writes the length prefix just before the body and returns the frame.
///
/// The body must be at most [`MAX_BODY`] bytes (see [`finish_checked`]).
fn finish(mut out: Vec<u8>) -> Bytes {
    let body_len = out.len().saturating_sub(MAX_PREFIX);
    let mut prefix = Vec::with_capacity(MAX_PREFIX);
    push_varint(&mut prefix, u32::try_from(body_len).unwrap_or(u32::MAX));
    let start = MAX_PREFIX.saturating_sub(prefix.len());
    out[start..MAX_PREFIX].copy_from_slice(&prefix);
    Bytes::from(out).slice(start..)
}

/// [`finish`], for bodies whose size depends on the caller's input.
fn finish_checked(out: Vec<u8>) -> Result<Bytes, ProtocolError> {
    let body_len = out.len().saturating_sub(MAX_PREFIX);
    if body_len > MAX_BODY {
        return Err(ProtocolError::MessageTooLarge {
            size: body_len,
            limit: MAX_BODY,
        });
    }
    Ok(finish(out))
}

// ---------------------------------------------------------------------------
// Skipping values
// ---------------------------------------------------------------------------

/// Why reading a MessagePack item failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    /// The data ends inside the item.
    Truncated,
    /// The item has the wrong type, or uses the reserved marker `0xc1`.
    Unexpected,
}

/// Reads a big-endian unsigned integer of `n` (1, 2, 4 or 8) bytes at `pos`.
fn be_uint(data: &[u8], pos: usize, n: usize) -> Result<u64, Fault> {
    let bytes = data
        .get(pos..pos.saturating_add(n))
        .ok_or(Fault::Truncated)?;
    Ok(bytes.iter().fold(0, |acc, &b| (acc << 8) | u64::from(b)))
}

/// Returns the offset just past the one value that starts at `start`.
///
/// Iterative: a counter of values still to skip replaces recursion, so the
/// nesting depth of the input does not matter.
fn value_end(data: &[u8], start: usize) -> Result<usize, Fault> {
    let mut pos = start;
    // Values still to skip, including the elements of open arrays and maps.
    let mut pending: u64 = 1;
    while pending > 0 {
        pending -= 1;
        let marker = *data.get(pos).ok_or(Fault::Truncated)?;
        pos += 1;
        // Bytes of payload that follow the marker (and its length field).
        let payload: u64 = match Marker::from_u8(marker) {
            Marker::FixPos(_) | Marker::FixNeg(_) | Marker::Null => 0,
            Marker::True | Marker::False => 0,
            Marker::Reserved => return Err(Fault::Unexpected),
            Marker::U8 | Marker::I8 => 1,
            Marker::U16 | Marker::I16 => 2,
            Marker::U32 | Marker::I32 | Marker::F32 => 4,
            Marker::U64 | Marker::I64 | Marker::F64 => 8,
            Marker::FixStr(n) => u64::from(n),
            Marker::Str8 | Marker::Bin8 => sized(data, &mut pos, 1)?,
            Marker::Str16 | Marker::Bin16 => sized(data, &mut pos, 2)?,
            Marker::Str32 | Marker::Bin32 => sized(data, &mut pos, 4)?,
            // Extensions: a type byte, then the data.
            Marker::FixExt1 => 2,
            Marker::FixExt2 => 3,
            Marker::FixExt4 => 5,
            Marker::FixExt8 => 9,
            Marker::FixExt16 => 17,
            Marker::Ext8 => sized(data, &mut pos, 1)? + 1,
            Marker::Ext16 => sized(data, &mut pos, 2)? + 1,
            Marker::Ext32 => sized(data, &mut pos, 4)? + 1,
            Marker::FixArray(n) => {
                pending += u64::from(n);
                0
            }
            Marker::Array16 => {
                pending += sized(data, &mut pos, 2)?;
                0
            }
            Marker::Array32 => {
                pending += sized(data, &mut pos, 4)?;
                0
            }
            Marker::FixMap(n) => {
                pending += 2 * u64::from(n);
                0
            }
            Marker::Map16 => {
                pending += 2 * sized(data, &mut pos, 2)?;
                0
            }
            Marker::Map32 => {
                pending += 2 * sized(data, &mut pos, 4)?;
                0
            }
        };
        let remaining = data.len().saturating_sub(pos) as u64;
        // Every pending value takes at least one more byte.
        if payload > remaining || pending > remaining - payload {
            return Err(Fault::Truncated);
        }
        pos += payload as usize;
    }
    Ok(pos)
}

/// Reads a length field of `n` bytes at `*pos` and moves past it.
fn sized(data: &[u8], pos: &mut usize, n: usize) -> Result<u64, Fault> {
    let value = be_uint(data, *pos, n)?;
    *pos += n;
    Ok(value)
}

// ---------------------------------------------------------------------------
// Parsing
// ---------------------------------------------------------------------------

/// Parses one message from the front of `buf`; see [`Protocol::parse_message`].
pub(super) fn parse_message(
    buf: &mut BytesMut,
    max: usize,
) -> Result<Option<HubMessage>, ProtocolError> {
    let Some((body_len, prefix_len)) = read_length_prefix(buf, max)? else {
        return Ok(None);
    };
    if buf.len() - prefix_len < body_len {
        return Ok(None);
    }
    let frame = buf.split_to(prefix_len + body_len).freeze();
    parse_body(&frame.slice(prefix_len..)).map(Some)
}

/// A cursor over one message body that knows how many array elements the
/// message declared and how many have been read.
struct Body<'a> {
    bytes: &'a Bytes,
    pos: usize,
    message_type: u64,
    declared: u64,
    read: u64,
}

fn parse_body(bytes: &Bytes) -> Result<HubMessage, ProtocolError> {
    if bytes.is_empty() {
        return Err(malformed("empty message"));
    }
    let mut body = Body {
        bytes,
        pos: 0,
        message_type: 0,
        declared: 0,
        read: 0,
    };
    body.declared = body
        .array_len()
        .map_err(|_| malformed("a message must be a MessagePack array"))?;
    if body.declared == 0 {
        return Err(malformed("the message array is empty (no message type)"));
    }
    body.read = 1;
    body.message_type = body
        .uint()
        .map_err(|_| malformed("the message type must be a non-negative integer"))?;
    let message = match body.message_type {
        1 => HubMessage::Invocation(body.invocation(false)?),
        2 => {
            body.headers()?;
            let invocation_id = body.string("invocationId")?;
            let item = body.value("item")?;
            HubMessage::StreamItem {
                invocation_id,
                item,
            }
        }
        3 => HubMessage::Completion(body.completion()?),
        4 => HubMessage::StreamInvocation(body.invocation(true)?),
        5 => {
            body.headers()?;
            HubMessage::CancelInvocation {
                invocation_id: body.string("invocationId")?,
            }
        }
        6 => HubMessage::Ping,
        7 => {
            let error = body.optional_string("error")?;
            let allow_reconnect = if body.has_more() {
                body.element("allowReconnect")?;
                match body.marker() {
                    Ok(TRUE) => true,
                    Ok(0xc2 | NIL) => false,
                    other => return Err(body.fault(other.map(drop), "allowReconnect")),
                }
            } else {
                false
            };
            HubMessage::Close {
                error,
                allow_reconnect,
            }
        }
        other => return Err(ProtocolError::UnknownMessageType(other)),
    };
    body.finish()?;
    Ok(message)
}

impl Body<'_> {
    fn data(&self) -> &[u8] {
        self.bytes
    }

    fn invalid(&self, field: &'static str) -> ProtocolError {
        ProtocolError::InvalidField {
            protocol: PROTOCOL,
            message_type: self.message_type,
            field,
        }
    }

    /// Turns a read failure of `field` into the error to report.
    fn fault(&self, result: Result<(), Fault>, field: &'static str) -> ProtocolError {
        match result {
            Err(Fault::Truncated) => malformed(format!("the message ends inside '{field}'")),
            _ => self.invalid(field),
        }
    }

    fn has_more(&self) -> bool {
        self.read < self.declared
    }

    /// Claims the next element of the message array for `field`.
    fn element(&mut self, field: &'static str) -> Result<(), ProtocolError> {
        if !self.has_more() {
            return Err(self.invalid(field));
        }
        self.read += 1;
        Ok(())
    }

    fn marker(&mut self) -> Result<u8, Fault> {
        let byte = *self.data().get(self.pos).ok_or(Fault::Truncated)?;
        self.pos += 1;
        Ok(byte)
    }

    fn sized(&mut self, n: usize) -> Result<u64, Fault> {
        let mut pos = self.pos;
        let value = sized(self.data(), &mut pos, n)?;
        self.pos = pos;
        Ok(value)
    }

    fn array_len(&mut self) -> Result<u64, Fault> {
        match Marker::from_u8(self.marker()?) {
            Marker::FixArray(n) => Ok(u64::from(n)),
            Marker::Array16 => self.sized(2),
            Marker::Array32 => self.sized(4),
            _ => Err(Fault::Unexpected),
        }
    }

    fn map_len(&mut self) -> Result<u64, Fault> {
        match Marker::from_u8(self.marker()?) {
            Marker::FixMap(n) => Ok(u64::from(n)),
            Marker::Map16 => self.sized(2),
            Marker::Map32 => self.sized(4),
            _ => Err(Fault::Unexpected),
        }
    }

    /// A non-negative integer in any integer encoding.
    fn uint(&mut self) -> Result<u64, Fault> {
        let marker = Marker::from_u8(self.marker()?);
        let (signed, n) = match marker {
            Marker::FixPos(n) => return Ok(u64::from(n)),
            Marker::U8 => (false, 1),
            Marker::U16 => (false, 2),
            Marker::U32 => (false, 4),
            Marker::U64 => (false, 8),
            Marker::I8 => (true, 1),
            Marker::I16 => (true, 2),
            Marker::I32 => (true, 4),
            Marker::I64 => (true, 8),
            _ => return Err(Fault::Unexpected),
        };
        let value = self.sized(n)?;
        // A signed integer is non-negative when its top bit is clear.
        if signed && value >> (8 * n - 1) != 0 {
            return Err(Fault::Unexpected);
        }
        Ok(value)
    }

    /// A string, or `None` for nil.
    fn nullable_str(&mut self) -> Result<Option<&str>, Fault> {
        let len = match Marker::from_u8(self.marker()?) {
            Marker::Null => return Ok(None),
            Marker::FixStr(n) => u64::from(n),
            Marker::Str8 => self.sized(1)?,
            Marker::Str16 => self.sized(2)?,
            Marker::Str32 => self.sized(4)?,
            _ => return Err(Fault::Unexpected),
        };
        let len = usize::try_from(len).map_err(|_| Fault::Truncated)?;
        let end = self.pos.checked_add(len).ok_or(Fault::Truncated)?;
        let bytes = self.bytes.get(self.pos..end).ok_or(Fault::Truncated)?;
        self.pos = end;
        std::str::from_utf8(bytes)
            .map(Some)
            .map_err(|_| Fault::Unexpected)
    }

    fn str(&mut self) -> Result<&str, Fault> {
        self.nullable_str()?.ok_or(Fault::Unexpected)
    }

    /// The next element: a string.
    fn string(&mut self, field: &'static str) -> Result<String, ProtocolError> {
        self.element(field)?;
        match self.str() {
            Ok(s) => Ok(s.to_owned()),
            Err(fault) => Err(self.fault(Err(fault), field)),
        }
    }

    /// The next element: a string or nil.
    fn optional_string(&mut self, field: &'static str) -> Result<Option<String>, ProtocolError> {
        self.element(field)?;
        match self.nullable_str() {
            Ok(s) => Ok(s.map(str::to_owned)),
            Err(fault) => Err(self.fault(Err(fault), field)),
        }
    }

    /// The next element: a value of any type, kept encoded.
    fn value(&mut self, field: &'static str) -> Result<RawValue, ProtocolError> {
        self.element(field)?;
        self.raw(field)
    }

    /// The value at the cursor, as a slice of the body.
    fn raw(&mut self, field: &'static str) -> Result<RawValue, ProtocolError> {
        let start = self.pos;
        let end = value_end(self.data(), start).map_err(|f| self.fault(Err(f), field))?;
        self.pos = end;
        Ok(RawValue::new(PROTOCOL, self.bytes.slice(start..end)))
    }

    /// The next element: the headers, a map of strings to strings, checked
    /// and dropped (no header means anything to switchboard).
    fn headers(&mut self) -> Result<(), ProtocolError> {
        self.element("headers")?;
        let check = |body: &mut Self| -> Result<(), Fault> {
            let entries = body.map_len()?;
            for _ in 0..entries {
                body.str()?;
                body.str()?;
            }
            Ok(())
        };
        check(self).map_err(|f| self.fault(Err(f), "headers"))
    }

    fn invocation(&mut self, stream: bool) -> Result<Invocation, ProtocolError> {
        self.headers()?;
        let invocation_id = if stream {
            Some(self.string("invocationId")?)
        } else {
            self.optional_string("invocationId")?
        };
        let target = self.string("target")?;

        self.element("arguments")?;
        let count = self
            .array_len()
            .map_err(|f| self.fault(Err(f), "arguments"))?;
        // Never trust a declared count for an allocation: each argument
        // takes at least one byte.
        let room = self.bytes.len().saturating_sub(self.pos);
        let mut arguments = Vec::with_capacity(usize::try_from(count).unwrap_or(0).min(room));
        for _ in 0..count {
            arguments.push(self.raw("arguments")?);
        }

        // Older clients send no stream ids at all.
        let mut stream_ids = Vec::new();
        if self.has_more() {
            self.element("streamIds")?;
            let read_ids = |body: &mut Self, ids: &mut Vec<String>| -> Result<(), Fault> {
                let count = body.array_len()?;
                for _ in 0..count {
                    ids.push(body.str()?.to_owned());
                }
                Ok(())
            };
            read_ids(self, &mut stream_ids).map_err(|f| self.fault(Err(f), "streamIds"))?;
        }
        Ok(Invocation {
            invocation_id,
            target,
            arguments,
            stream_ids,
        })
    }

    fn completion(&mut self) -> Result<Completion, ProtocolError> {
        self.headers()?;
        let invocation_id = self.string("invocationId")?;
        self.element("resultKind")?;
        let kind = self.uint().map_err(|f| self.fault(Err(f), "resultKind"))?;
        let outcome = match kind {
            1 => Outcome::Error(self.string("error")?),
            2 => Outcome::Void,
            3 => Outcome::Value(self.value("result")?),
            _ => return Err(self.invalid("resultKind")),
        };
        Ok(Completion {
            invocation_id,
            outcome,
        })
    }

    /// Skips elements added by newer protocol versions, then checks that the
    /// array was the whole body.
    fn finish(&mut self) -> Result<(), ProtocolError> {
        while self.has_more() {
            self.read += 1;
            self.pos = value_end(self.data(), self.pos)
                .map_err(|_| malformed("the message ends inside its array"))?;
        }
        if self.pos != self.bytes.len() {
            return Err(malformed("unexpected bytes after the message array"));
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------
// Writing
// ---------------------------------------------------------------------------

/// Appends an array header in its shortest form.
fn push_array_header(out: &mut Vec<u8>, len: u32) {
    if len <= 15 {
        out.push(0x90 | len as u8);
    } else if let Ok(v) = u16::try_from(len) {
        out.push(0xdc);
        out.extend_from_slice(&v.to_be_bytes());
    } else {
        out.push(0xdd);
        out.extend_from_slice(&len.to_be_bytes());
    }
}

/// Appends a string header in its shortest form.
fn push_str_header(out: &mut Vec<u8>, len: u32) {
    if len <= 31 {
        out.push(0xa0 | len as u8);
    } else if let Ok(v) = u8::try_from(len) {
        out.extend_from_slice(&[0xd9, v]);
    } else if let Ok(v) = u16::try_from(len) {
        out.push(0xda);
        out.extend_from_slice(&v.to_be_bytes());
    } else {
        out.push(0xdb);
        out.extend_from_slice(&len.to_be_bytes());
    }
}

fn push_array_len(out: &mut Vec<u8>, len: usize) -> Result<(), ProtocolError> {
    let len = u32::try_from(len).map_err(|_| too_large(len))?;
    push_array_header(out, len);
    Ok(())
}

fn push_str(out: &mut Vec<u8>, value: &str) -> Result<(), ProtocolError> {
    let len = u32::try_from(value.len()).map_err(|_| too_large(value.len()))?;
    push_str_header(out, len);
    out.extend_from_slice(value.as_bytes());
    Ok(())
}

/// Appends a string cut to [`MAX_TEXT`] bytes (at a character boundary),
/// for the writers that cannot fail.
fn push_text(out: &mut Vec<u8>, value: &str) {
    let mut end = value.len().min(MAX_TEXT);
    while !value.is_char_boundary(end) {
        end -= 1;
    }
    let value = &value[..end];
    // At most MAX_TEXT bytes: the length fits in a u32.
    push_str_header(out, value.len() as u32);
    out.extend_from_slice(value.as_bytes());
}

fn too_large(size: usize) -> ProtocolError {
    ProtocolError::MessageTooLarge {
        size,
        limit: MAX_BODY,
    }
}

fn serialize_into<T: Serialize + ?Sized>(
    out: &mut Vec<u8>,
    value: &T,
) -> Result<(), ProtocolError> {
    // Structs as maps: the SignalR MessagePack clients read objects by name.
    let mut serializer = rmp_serde::Serializer::new(out).with_struct_map();
    value
        .serialize(&mut serializer)
        .map_err(|e| ProtocolError::Serialize(e.to_string()))
}

/// Appends a raw value verbatim, if it is MessagePack.
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

/// Starts a message array of `len` elements with its type and empty headers.
fn begin_message(len: u8, message_type: u8) -> Vec<u8> {
    let mut out = begin();
    out.extend_from_slice(&[0x90 | len, message_type, EMPTY_MAP]);
    out
}

/// Encodes any hub message; see [`Protocol::write_message`].
pub(super) fn write_message(message: &HubMessage) -> Result<Bytes, ProtocolError> {
    let out = match message {
        HubMessage::Invocation(invocation) => write_invocation_message(1, invocation)?,
        HubMessage::StreamInvocation(invocation) => write_invocation_message(4, invocation)?,
        HubMessage::StreamItem {
            invocation_id,
            item,
        } => {
            let mut out = begin_message(4, 2);
            push_str(&mut out, invocation_id)?;
            raw_into(&mut out, item)?;
            out
        }
        HubMessage::Completion(completion) => {
            let mut out;
            match &completion.outcome {
                Outcome::Void => {
                    out = begin_message(4, 3);
                    push_str(&mut out, &completion.invocation_id)?;
                    out.push(2);
                }
                Outcome::Error(error) => {
                    out = begin_message(5, 3);
                    push_str(&mut out, &completion.invocation_id)?;
                    out.push(1);
                    push_str(&mut out, error)?;
                }
                Outcome::Value(value) => {
                    out = begin_message(5, 3);
                    push_str(&mut out, &completion.invocation_id)?;
                    out.push(3);
                    raw_into(&mut out, value)?;
                }
            }
            out
        }
        HubMessage::CancelInvocation { invocation_id } => {
            let mut out = begin_message(3, 5);
            push_str(&mut out, invocation_id)?;
            out
        }
        HubMessage::Ping => return Ok(write_ping()),
        HubMessage::Close {
            error,
            allow_reconnect,
        } => return Ok(write_close(error.as_deref(), *allow_reconnect)),
    };
    finish_checked(out)
}

fn write_invocation_message(
    message_type: u8,
    invocation: &Invocation,
) -> Result<Vec<u8>, ProtocolError> {
    let mut out = begin_message(6, message_type);
    match &invocation.invocation_id {
        Some(id) => push_str(&mut out, id)?,
        None if message_type == 4 => {
            return Err(ProtocolError::InvalidField {
                protocol: PROTOCOL,
                message_type: 4,
                field: "invocationId",
            });
        }
        None => out.push(NIL),
    }
    push_str(&mut out, &invocation.target)?;
    push_array_len(&mut out, invocation.arguments.len())?;
    for argument in &invocation.arguments {
        raw_into(&mut out, argument)?;
    }
    push_array_len(&mut out, invocation.stream_ids.len())?;
    for id in &invocation.stream_ids {
        push_str(&mut out, id)?;
    }
    Ok(out)
}

/// Encodes an Invocation; see [`Protocol::write_invocation`].
pub(super) fn write_invocation<A: Serialize + ?Sized>(
    invocation_id: Option<&str>,
    target: &str,
    arguments: &A,
) -> Result<Bytes, ProtocolError> {
    let mut out = begin_message(6, 1);
    match invocation_id {
        Some(id) => push_str(&mut out, id)?,
        None => out.push(NIL),
    }
    push_str(&mut out, target)?;
    let start = out.len();
    serialize_into(&mut out, arguments)?;
    if !matches!(out.get(start), Some(0x90..=0x9f | 0xdc | 0xdd)) {
        return Err(ProtocolError::ArgumentsNotASequence);
    }
    out.push(EMPTY_ARRAY);
    finish_checked(out)
}

/// Encodes a StreamItem; see [`Protocol::write_stream_item`].
pub(super) fn write_stream_item<T: Serialize + ?Sized>(
    invocation_id: &str,
    item: &T,
) -> Result<Bytes, ProtocolError> {
    let mut out = begin_message(4, 2);
    push_str(&mut out, invocation_id)?;
    serialize_into(&mut out, item)?;
    finish_checked(out)
}

/// Encodes a Completion with ResultKind 3 and the value.
pub(super) fn write_completion_value<T: Serialize + ?Sized>(
    invocation_id: &str,
    value: &T,
) -> Result<Bytes, ProtocolError> {
    let mut out = begin_message(5, 3);
    push_str(&mut out, invocation_id)?;
    out.push(3);
    serialize_into(&mut out, value)?;
    finish_checked(out)
}

/// Encodes a Completion with ResultKind 2 (void).
///
/// An id longer than 512 MiB is cut (see [`MAX_TEXT`]).
pub(super) fn write_completion_void(invocation_id: &str) -> Bytes {
    let mut out = begin_message(4, 3);
    push_text(&mut out, invocation_id);
    out.push(2);
    finish(out)
}

/// Encodes a Completion with ResultKind 1 and the error message.
///
/// Strings longer than 512 MiB are cut (see [`MAX_TEXT`]).
pub(super) fn write_completion_error(invocation_id: &str, error: &str) -> Bytes {
    let mut out = begin_message(5, 3);
    push_text(&mut out, invocation_id);
    out.push(1);
    push_text(&mut out, error);
    finish(out)
}

/// Encodes a Ping: always exactly `0x91 0x06`, framed.
pub(super) fn write_ping() -> Bytes {
    Bytes::from_static(&[0x02, 0x91, 0x06])
}

/// Encodes a Close: `[7, error|nil]`, plus `true` when reconnecting is
/// allowed. An error longer than 512 MiB is cut (see [`MAX_TEXT`]).
pub(super) fn write_close(error: Option<&str>, allow_reconnect: bool) -> Bytes {
    let mut out = begin();
    out.extend_from_slice(&[if allow_reconnect { 0x93 } else { 0x92 }, 7]);
    match error {
        Some(error) => push_text(&mut out, error),
        None => out.push(NIL),
    }
    if allow_reconnect {
        out.push(TRUE);
    }
    finish(out)
}

/// Encodes one value as MessagePack, structs as maps.
pub(super) fn encode_value<T: Serialize + ?Sized>(value: &T) -> Result<Bytes, ProtocolError> {
    let mut out = Vec::with_capacity(64);
    serialize_into(&mut out, value)?;
    Ok(Bytes::from(out))
}

/// Decodes one MessagePack value into `T`.
pub(super) fn decode_value<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ProtocolError> {
    rmp_serde::from_slice(bytes).map_err(|e| ProtocolError::InvalidValue(e.to_string()))
}

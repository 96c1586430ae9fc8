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
const FALSE: u8 = 0xc2;
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

/// Encodes `value` as a varint into `out`; returns how many bytes it took.
fn encode_varint(mut value: u32, out: &mut [u8; MAX_PREFIX]) -> usize {
    let mut len = 0;
    for slot in out.iter_mut() {
        len += 1;
        if value < 0x80 {
            *slot = value as u8;
            break;
        }
        *slot = (value & 0x7f) as u8 | 0x80;
        value >>= 7;
    }
    len
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
    let mut prefix = [0; MAX_PREFIX];
    let len = encode_varint(u32::try_from(body_len).unwrap_or(u32::MAX), &mut prefix);
    let start = MAX_PREFIX - len;
    out[start..MAX_PREFIX].copy_from_slice(&prefix[..len]);
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
                    Ok(FALSE | NIL) => false,
                    Ok(_) => return Err(body.invalid("allowReconnect")),
                    Err(fault) => return Err(body.fault(fault, "allowReconnect")),
                }
            } else {
                false
            };
            HubMessage::Close {
                error,
                allow_reconnect,
            }
        }
        8 => HubMessage::Ack {
            sequence_id: body.sequence_id()?,
        },
        9 => HubMessage::Sequence {
            sequence_id: body.sequence_id()?,
        },
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
    fn fault(&self, fault: Fault, field: &'static str) -> ProtocolError {
        match fault {
            Fault::Truncated => malformed(format!("the message ends inside '{field}'")),
            Fault::Unexpected => self.invalid(field),
        }
    }

    /// The sequence id of an Ack or a Sequence: any unsigned integer.
    fn sequence_id(&mut self) -> Result<u64, ProtocolError> {
        self.element("sequenceId")?;
        self.uint().map_err(|fault| self.fault(fault, "sequenceId"))
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
            Err(fault) => Err(self.fault(fault, field)),
        }
    }

    /// The next element: a string or nil.
    fn optional_string(&mut self, field: &'static str) -> Result<Option<String>, ProtocolError> {
        self.element(field)?;
        match self.nullable_str() {
            Ok(s) => Ok(s.map(str::to_owned)),
            Err(fault) => Err(self.fault(fault, field)),
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
        let end = value_end(self.data(), start).map_err(|f| self.fault(f, field))?;
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
        check(self).map_err(|f| self.fault(f, "headers"))
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
        let count = self.array_len().map_err(|f| self.fault(f, "arguments"))?;
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
            read_ids(self, &mut stream_ids).map_err(|f| self.fault(f, "streamIds"))?;
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
        let kind = self.uint().map_err(|f| self.fault(f, "resultKind"))?;
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
        HubMessage::Ack { sequence_id } => return Ok(write_sequence_message(8, *sequence_id)),
        HubMessage::Sequence { sequence_id } => {
            return Ok(write_sequence_message(9, *sequence_id));
        }
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

/// Encodes an Ack (`[8, sequenceId]`) or a Sequence (`[9, sequenceId]`).
pub(super) fn write_sequence_message(message_type: u8, sequence_id: u64) -> Bytes {
    let mut out = begin();
    out.extend_from_slice(&[0x92, message_type]);
    // Infallible: the buffer is a Vec.
    let _ = rmp::encode::write_uint(&mut out, sequence_id);
    finish(out)
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

/// How deeply arrays and maps may nest in a decoded value: serde_json's
/// limit. `rmp_serde`'s own default (1024) lets hostile input exhaust a
/// 2 MiB thread stack before it is reached, at least in debug builds.
const MAX_DECODE_DEPTH: usize = 128;

/// Decodes one MessagePack value into `T`.
pub(super) fn decode_value<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ProtocolError> {
    let mut deserializer = rmp_serde::Deserializer::from_read_ref(bytes);
    deserializer.set_max_depth(MAX_DECODE_DEPTH);
    T::deserialize(&mut deserializer).map_err(|e| ProtocolError::InvalidValue(e.to_string()))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use serde::Deserialize;

    use super::*;

    const MAX: usize = 1 << 20;

    /// Bytes written as in the specification: `0x96 0x01 ...`.
    fn hex(text: &str) -> Vec<u8> {
        text.split_whitespace()
            .map(|b| u8::from_str_radix(b.trim_start_matches("0x"), 16).unwrap())
            .collect()
    }

    fn framed(body: &[u8]) -> BytesMut {
        let mut prefix = [0; MAX_PREFIX];
        let len = encode_varint(u32::try_from(body.len()).unwrap(), &mut prefix);
        let mut out = prefix[..len].to_vec();
        out.extend_from_slice(body);
        BytesMut::from(&out[..])
    }

    /// Parses one message body (framed here); checks it is consumed.
    fn parse(body: &[u8]) -> Result<HubMessage, ProtocolError> {
        let mut buf = framed(body);
        let message = parse_message(&mut buf, MAX)?.expect("a complete message");
        assert!(buf.is_empty(), "the message was not fully consumed");
        Ok(message)
    }

    fn raw(bytes: &[u8]) -> RawValue {
        RawValue::new(Protocol::MessagePack, Bytes::copy_from_slice(bytes))
    }

    fn invocation(id: Option<&str>, target: &str, args: &[&[u8]], streams: &[&str]) -> Invocation {
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
                protocol: Protocol::MessagePack,
                message_type,
                field,
            }) if message_type == ty && field == name => {}
            other => panic!("expected invalid field {name} of type {ty}, got {other:?}"),
        }
    }

    fn assert_malformed(result: Result<HubMessage, ProtocolError>) {
        match result {
            Err(ProtocolError::Malformed {
                protocol: Protocol::MessagePack,
                ..
            }) => {}
            other => panic!("expected malformed, got {other:?}"),
        }
    }

    const SPEC_INVOCATION: &str =
        "0x96 0x01 0x80 0xa3 0x78 0x79 0x7a 0xa6 0x6d 0x65 0x74 0x68 0x6f 0x64 0x91 0x2a 0x90";
    const SPEC_NON_BLOCKING: &str =
        "0x96 0x01 0x80 0xc0 0xa6 0x6d 0x65 0x74 0x68 0x6f 0x64 0x91 0x2a 0x90";
    const SPEC_STREAM_INVOCATION: &str =
        "0x96 0x04 0x80 0xa3 0x78 0x79 0x7a 0xa6 0x6d 0x65 0x74 0x68 0x6f 0x64 0x91 0x2a 0x90";
    const SPEC_STREAM_ITEM: &str = "0x94 0x02 0x80 0xa3 0x78 0x79 0x7a 0x2a";
    const SPEC_COMPLETION_ERROR: &str =
        "0x95 0x03 0x80 0xa3 0x78 0x79 0x7a 0x01 0xa5 0x45 0x72 0x72 0x6f 0x72";
    const SPEC_COMPLETION_VOID: &str = "0x94 0x03 0x80 0xa3 0x78 0x79 0x7a 0x02";
    const SPEC_COMPLETION_VALUE: &str = "0x95 0x03 0x80 0xa3 0x78 0x79 0x7a 0x03 0x2a";
    const SPEC_CANCEL: &str = "0x93 0x05 0x80 0xa3 0x78 0x79 0x7a";
    const SPEC_PING: &str = "0x91 0x06";
    const SPEC_CLOSE: &str = "0x92 0x07 0xa3 0x78 0x79 0x7a";
    const SPEC_CLOSE_RECONNECT: &str = "0x93 0x07 0xa3 0x78 0x79 0x7a 0xc3";
    const SPEC_HEADERS: &str = "0x96 0x01 0x82 0xa1 0x78 0xa1 0x79 0xa1 0x7a 0xa1 0x7a 0xa3 0x78 0x79 0x7a 0xa6 0x6d 0x65 0x74 0x68 0x6f 0x64 0x91 0x2a 0x90";

    #[test]
    fn parses_the_spec_examples() {
        let cases = [
            (
                SPEC_INVOCATION,
                HubMessage::Invocation(invocation(Some("xyz"), "method", &[&[0x2a]], &[])),
            ),
            (
                SPEC_NON_BLOCKING,
                HubMessage::Invocation(invocation(None, "method", &[&[0x2a]], &[])),
            ),
            (
                SPEC_HEADERS,
                HubMessage::Invocation(invocation(Some("xyz"), "method", &[&[0x2a]], &[])),
            ),
            (
                SPEC_STREAM_INVOCATION,
                HubMessage::StreamInvocation(invocation(Some("xyz"), "method", &[&[0x2a]], &[])),
            ),
            (
                SPEC_STREAM_ITEM,
                HubMessage::StreamItem {
                    invocation_id: "xyz".into(),
                    item: raw(&[0x2a]),
                },
            ),
            (
                SPEC_COMPLETION_ERROR,
                completion("xyz", Outcome::Error("Error".into())),
            ),
            (SPEC_COMPLETION_VOID, completion("xyz", Outcome::Void)),
            (
                SPEC_COMPLETION_VALUE,
                completion("xyz", Outcome::Value(raw(&[0x2a]))),
            ),
            (
                SPEC_CANCEL,
                HubMessage::CancelInvocation {
                    invocation_id: "xyz".into(),
                },
            ),
            (SPEC_PING, HubMessage::Ping),
            (
                SPEC_CLOSE,
                HubMessage::Close {
                    error: Some("xyz".into()),
                    allow_reconnect: false,
                },
            ),
            (
                SPEC_CLOSE_RECONNECT,
                HubMessage::Close {
                    error: Some("xyz".into()),
                    allow_reconnect: true,
                },
            ),
        ];
        for (body, expected) in cases {
            assert_eq!(parse(&hex(body)).unwrap(), expected, "{body}");
        }
    }

    #[test]
    fn accepts_older_and_newer_shapes() {
        // No StreamIds (older clients).
        let five = hex("0x95 0x01 0x80 0xc0 0xa1 0x74 0x92 0x01 0xa1 0x78");
        assert_eq!(
            parse(&five).unwrap(),
            HubMessage::Invocation(invocation(None, "t", &[&[0x01], &[0xa1, 0x78]], &[]))
        );
        // Stream ids, and a type written in a wider integer format.
        let streams = hex("0x96 0xcc 0x01 0x80 0xa1 0x31 0xa1 0x74 0x90 0x92 0xa1 0x61 0xa1 0x62");
        assert_eq!(
            parse(&streams).unwrap(),
            HubMessage::Invocation(invocation(Some("1"), "t", &[], &["a", "b"]))
        );
        // Extra trailing elements from a newer version are skipped.
        let extra = hex("0x95 0x05 0x80 0xa1 0x31 0x81 0xa1 0x6b 0x92 0x01 0x02 0xc0");
        assert_eq!(
            parse(&extra).unwrap(),
            HubMessage::CancelInvocation {
                invocation_id: "1".into()
            }
        );
        // A nil close error and a false or nil allowReconnect.
        for body in [
            "0x92 0x07 0xc0",
            "0x93 0x07 0xc0 0xc2",
            "0x93 0x07 0xc0 0xc0",
        ] {
            assert_eq!(
                parse(&hex(body)).unwrap(),
                HubMessage::Close {
                    error: None,
                    allow_reconnect: false
                }
            );
        }
    }

    #[test]
    fn rejects_bad_envelopes() {
        assert_malformed(parse(&[]));
        assert_malformed(parse(&hex("0x90")));
        assert_malformed(parse(&hex("0x81 0x01 0x01")));
        assert_malformed(parse(&hex("0x06")));
        assert_malformed(parse(&hex("0x91 0xa1 0x31")));
        assert_malformed(parse(&hex("0x91 0xff")));
        assert_malformed(parse(&hex("0x91 0xd0 0xff")));
        // Trailing bytes after the array.
        assert_malformed(parse(&hex("0x91 0x06 0x06")));
        // The array declares more elements than the body holds.
        assert_malformed(parse(&hex("0x96 0x01 0x80 0xc0 0xa1 0x74")));
        assert_malformed(parse(&hex("0x93 0x05 0x80 0xa3 0x78")));
        assert_malformed(parse(&hex("0x92 0x06 0x91")));
        // The reserved marker inside an argument.
        assert_invalid_field(
            parse(&hex("0x96 0x01 0x80 0xc0 0xa1 0x74 0x91 0xc1 0x90")),
            1,
            "arguments",
        );
    }

    #[test]
    fn parses_the_spec_ack_and_sequence_examples() {
        assert_eq!(
            parse(&hex("0x92 0x08 0xcc 0x24")).unwrap(),
            HubMessage::Ack { sequence_id: 36 }
        );
        assert_eq!(
            parse(&hex("0x92 0x09 0xcc 0x13")).unwrap(),
            HubMessage::Sequence { sequence_id: 19 }
        );
        assert_eq!(
            parse(&hex("0x92 0x08 0x05")).unwrap(),
            HubMessage::Ack { sequence_id: 5 }
        );
        assert!(matches!(
            parse(&hex("0x91 0x08")),
            Err(ProtocolError::InvalidField {
                field: "sequenceId",
                ..
            })
        ));
        assert!(matches!(
            parse(&hex("0x92 0x09 0xa1 0x31")),
            Err(ProtocolError::InvalidField {
                field: "sequenceId",
                ..
            })
        ));
    }

    #[test]
    fn unknown_types_are_reported_with_their_number() {
        assert!(matches!(
            parse(&hex("0x92 0x0a 0xcc 0x24")),
            Err(ProtocolError::UnknownMessageType(10))
        ));
        assert!(matches!(
            parse(&hex("0x91 0x00")),
            Err(ProtocolError::UnknownMessageType(0))
        ));
        assert!(matches!(
            parse(&hex("0x91 0xcd 0x01 0x00")),
            Err(ProtocolError::UnknownMessageType(256))
        ));
    }

    #[test]
    fn rejects_missing_or_mistyped_fields() {
        assert_invalid_field(parse(&hex("0x91 0x01")), 1, "headers");
        assert_invalid_field(parse(&hex("0x92 0x01 0x90")), 1, "headers");
        assert_invalid_field(parse(&hex("0x92 0x01 0x81 0xa1 0x78 0x01")), 1, "headers");
        assert_invalid_field(parse(&hex("0x92 0x01 0x80")), 1, "invocationId");
        assert_invalid_field(parse(&hex("0x93 0x01 0x80 0x01")), 1, "invocationId");
        assert_invalid_field(parse(&hex("0x93 0x01 0x80 0xc0")), 1, "target");
        assert_invalid_field(parse(&hex("0x94 0x01 0x80 0xc0 0xc0")), 1, "target");
        assert_invalid_field(parse(&hex("0x94 0x01 0x80 0xc0 0xa1 0x74")), 1, "arguments");
        assert_invalid_field(
            parse(&hex("0x95 0x01 0x80 0xc0 0xa1 0x74 0x80")),
            1,
            "arguments",
        );
        assert_invalid_field(
            parse(&hex("0x96 0x01 0x80 0xc0 0xa1 0x74 0x90 0x91 0x01")),
            1,
            "streamIds",
        );
        assert_invalid_field(
            parse(&hex("0x96 0x04 0x80 0xc0 0xa1 0x74 0x90 0x90")),
            4,
            "invocationId",
        );
        assert_invalid_field(parse(&hex("0x93 0x02 0x80 0xa1 0x31")), 2, "item");
        assert_invalid_field(parse(&hex("0x93 0x03 0x80 0xa1 0x31")), 3, "resultKind");
        assert_invalid_field(
            parse(&hex("0x94 0x03 0x80 0xa1 0x31 0x04")),
            3,
            "resultKind",
        );
        assert_invalid_field(parse(&hex("0x94 0x03 0x80 0xa1 0x31 0x03")), 3, "result");
        assert_invalid_field(parse(&hex("0x94 0x03 0x80 0xa1 0x31 0x01")), 3, "error");
        assert_invalid_field(
            parse(&hex("0x95 0x03 0x80 0xa1 0x31 0x01 0x01")),
            3,
            "error",
        );
        assert_invalid_field(parse(&hex("0x93 0x05 0x80 0xc0")), 5, "invocationId");
        assert_invalid_field(parse(&hex("0x91 0x07")), 7, "error");
        assert_invalid_field(parse(&hex("0x93 0x07 0xc0 0x01")), 7, "allowReconnect");
        // Invalid UTF-8 in a string.
        assert_invalid_field(parse(&hex("0x93 0x05 0x80 0xa1 0xff")), 5, "invocationId");
    }

    #[test]
    fn reads_length_prefixes() {
        // The spec's examples: 0x35 = 53, 0x80 0x29 = 5248.
        assert_eq!(
            read_length_prefix(&[0x35], usize::MAX).unwrap(),
            Some((53, 1))
        );
        assert_eq!(
            read_length_prefix(&[0x80, 0x29], usize::MAX).unwrap(),
            Some((5248, 2))
        );
        assert_eq!(
            read_length_prefix(&[0xff, 0xff, 0xff, 0xff, 0x07], usize::MAX).unwrap(),
            Some((0x7fff_ffff, 5))
        );
        assert_eq!(read_length_prefix(&[0x80, 0x80], usize::MAX).unwrap(), None);
        for bad in [
            &[0xff, 0xff, 0xff, 0xff, 0x08][..],
            &[0x80, 0x80, 0x80, 0x80, 0x80],
            &[0x80, 0x80, 0x80, 0x80, 0x80, 0x01],
        ] {
            assert!(matches!(
                read_length_prefix(bad, usize::MAX),
                Err(ProtocolError::Malformed { .. })
            ));
        }
        for value in [0u32, 1, 127, 128, 16_383, 16_384, 0x7fff_ffff] {
            let mut out = [0; MAX_PREFIX];
            let len = encode_varint(value, &mut out);
            assert_eq!(
                read_length_prefix(&out[..len], usize::MAX).unwrap(),
                Some((value as usize, len))
            );
        }
    }

    #[test]
    fn a_declared_length_over_the_limit_fails_before_the_body_arrives() {
        let mut buf = BytesMut::from(&[0x80, 0x29][..]);
        assert!(matches!(
            parse_message(&mut buf, 5000),
            Err(ProtocolError::MessageTooLarge {
                size: 5248,
                limit: 5000
            })
        ));
        // Known from the first byte of the prefix already.
        let mut buf = BytesMut::from(&[0xff][..]);
        assert!(matches!(
            parse_message(&mut buf, 100),
            Err(ProtocolError::MessageTooLarge { .. })
        ));
        // At the limit (the prefix is not counted): accepted.
        let mut buf = framed(&hex(SPEC_COMPLETION_VOID));
        assert!(parse_message(&mut buf, 8).unwrap().is_some());
        let mut buf = framed(&hex(SPEC_COMPLETION_VOID));
        assert!(matches!(
            parse_message(&mut buf, 7),
            Err(ProtocolError::MessageTooLarge { size: 8, limit: 7 })
        ));
    }

    #[test]
    fn an_empty_body_is_malformed() {
        let mut buf = BytesMut::from(&[0x00][..]);
        assert_malformed(parse_message(&mut buf, MAX).map(|m| m.unwrap()));
    }

    fn every_kind() -> Vec<HubMessage> {
        let long = "x".repeat(300);
        vec![
            HubMessage::Invocation(invocation(
                None,
                "send",
                &[&[0x81, 0xa1, 0x61, 0x01], &[0xc0]],
                &[],
            )),
            HubMessage::Invocation(invocation(Some("1"), &long, &[], &["s1", "s2"])),
            HubMessage::StreamInvocation(invocation(Some("2"), "stream", &[&[0x05]], &[])),
            HubMessage::StreamItem {
                invocation_id: "2".into(),
                item: raw(&[0xcb, 0, 0, 0, 0, 0, 0, 0, 0]),
            },
            completion("1", Outcome::Void),
            completion("1", Outcome::Value(raw(&[0xc0]))),
            completion("1", Outcome::Error(long.clone())),
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
            HubMessage::Ack { sequence_id: 36 },
            HubMessage::Sequence {
                sequence_id: u64::MAX,
            },
        ]
    }

    #[test]
    fn every_kind_round_trips() {
        for message in every_kind() {
            let bytes = write_message(&message).unwrap();
            let mut buf = BytesMut::from(&bytes[..]);
            assert_eq!(parse_message(&mut buf, MAX).unwrap(), Some(message));
            assert!(buf.is_empty());
        }
    }

    #[test]
    fn parses_several_messages_from_one_buffer() {
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
    fn waits_for_the_rest_of_a_split_message() {
        // Long enough for a two-byte prefix, so cuts fall inside it too.
        let bytes = write_invocation(Some("7"), "send", &("x".repeat(200), 1)).unwrap();
        assert_eq!(bytes[1] & 0x80, 0);
        assert_ne!(bytes[0] & 0x80, 0);
        for cut in 0..bytes.len() {
            let mut buf = BytesMut::from(&bytes[..cut]);
            assert_eq!(parse_message(&mut buf, MAX).unwrap(), None);
            assert_eq!(buf.len(), cut, "an incomplete message must stay buffered");
            buf.extend_from_slice(&bytes[cut..]);
            assert!(parse_message(&mut buf, MAX).unwrap().is_some());
            assert!(buf.is_empty());
        }
    }

    #[test]
    fn typed_writers_produce_the_spec_bytes() {
        let expect = |bytes: Bytes, body: &str| {
            assert_eq!(&bytes[..], &framed(&hex(body))[..], "{body}");
        };
        expect(
            write_invocation(Some("xyz"), "method", &(42,)).unwrap(),
            SPEC_INVOCATION,
        );
        expect(
            write_invocation(None, "method", &[42]).unwrap(),
            SPEC_NON_BLOCKING,
        );
        expect(write_stream_item("xyz", &42).unwrap(), SPEC_STREAM_ITEM);
        expect(
            write_completion_error("xyz", "Error"),
            SPEC_COMPLETION_ERROR,
        );
        expect(write_completion_void("xyz"), SPEC_COMPLETION_VOID);
        expect(
            write_completion_value("xyz", &42).unwrap(),
            SPEC_COMPLETION_VALUE,
        );
        expect(write_ping(), SPEC_PING);
        expect(write_close(Some("xyz"), false), SPEC_CLOSE);
        expect(write_close(Some("xyz"), true), SPEC_CLOSE_RECONNECT);
        expect(write_close(None, false), "0x92 0x07 0xc0");
        expect(
            write_message(&HubMessage::StreamInvocation(invocation(
                Some("xyz"),
                "method",
                &[&[0x2a]],
                &[],
            )))
            .unwrap(),
            SPEC_STREAM_INVOCATION,
        );
        expect(
            write_message(&HubMessage::CancelInvocation {
                invocation_id: "xyz".into(),
            })
            .unwrap(),
            SPEC_CANCEL,
        );
    }

    #[test]
    fn writes_the_shortest_string_and_array_headers() {
        let cases: [(usize, &[u8]); 6] = [
            (31, &[0xbf]),
            (32, &[0xd9, 32]),
            (255, &[0xd9, 255]),
            (256, &[0xda, 1, 0]),
            (65_535, &[0xda, 0xff, 0xff]),
            (65_536, &[0xdb, 0, 1, 0, 0]),
        ];
        for (len, header) in cases {
            let mut out = Vec::new();
            push_str(&mut out, &"a".repeat(len)).unwrap();
            assert_eq!(&out[..header.len()], header, "string of {len}");
            assert_eq!(out.len(), header.len() + len);
        }
        let cases: [(usize, &[u8]); 4] = [
            (15, &[0x9f]),
            (16, &[0xdc, 0, 16]),
            (65_535, &[0xdc, 0xff, 0xff]),
            (65_536, &[0xdd, 0, 1, 0, 0]),
        ];
        for (len, header) in cases {
            let mut out = Vec::new();
            push_array_len(&mut out, len).unwrap();
            assert_eq!(&out[..], header, "array of {len}");
        }
    }

    #[test]
    fn long_messages_get_a_longer_prefix() {
        let item = "y".repeat(20_000);
        let bytes = write_stream_item("1", &item).unwrap();
        let (len, prefix) = read_length_prefix(&bytes, usize::MAX).unwrap().unwrap();
        assert_eq!(prefix, 3);
        assert_eq!(len + prefix, bytes.len());
        let mut buf = BytesMut::from(&bytes[..]);
        let Some(HubMessage::StreamItem { item: raw_item, .. }) =
            parse_message(&mut buf, MAX).unwrap()
        else {
            panic!("expected a stream item");
        };
        assert_eq!(raw_item.deserialize::<String>().unwrap(), item);
    }

    #[test]
    fn structs_are_written_as_maps() {
        #[derive(Debug, Serialize, Deserialize, PartialEq)]
        struct Point {
            x: i32,
            y: i32,
        }
        let point = Point { x: 1, y: -2 };
        let bytes = encode_value(&point).unwrap();
        assert_eq!(&bytes[..], &hex("0x82 0xa1 0x78 0x01 0xa1 0x79 0xfe")[..]);
        assert_eq!(decode_value::<Point>(&bytes).unwrap(), point);
        // The same inside an invocation's arguments.
        let bytes = write_invocation(None, "p", &[&point]).unwrap();
        let mut buf = BytesMut::from(&bytes[..]);
        let Some(HubMessage::Invocation(inv)) = parse_message(&mut buf, MAX).unwrap() else {
            panic!("expected an invocation");
        };
        assert_eq!(inv.arguments[0].bytes()[0], 0x82);
        assert_eq!(inv.arguments[0].deserialize::<Point>().unwrap(), point);
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
            write_invocation(None, "t", &()),
        ] {
            assert!(matches!(result, Err(ProtocolError::ArgumentsNotASequence)));
        }
        assert!(write_invocation(None, "t", &Vec::<u8>::new()).is_ok());
        assert!(write_invocation(None, "t", &vec![0u8; 70_000]).is_ok());
    }

    #[test]
    fn raw_values_of_the_other_protocol_are_refused() {
        let json = RawValue::new(Protocol::Json, Bytes::from_static(b"42"));
        let message = completion("1", Outcome::Value(json));
        assert!(matches!(
            write_message(&message),
            Err(ProtocolError::ProtocolMismatch {
                expected: Protocol::MessagePack,
                found: Protocol::Json
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
        let mut buf = framed(&hex(SPEC_HEADERS));
        buf.extend_from_slice(&framed(&hex(SPEC_COMPLETION_VALUE)));
        let frame = buf.as_ptr() as usize..buf.as_ptr() as usize + buf.len();
        let inside = |value: &RawValue| {
            let start = value.bytes().as_ptr() as usize;
            frame.contains(&start) && start + value.bytes().len() <= frame.end
        };
        let Some(HubMessage::Invocation(inv)) = parse_message(&mut buf, MAX).unwrap() else {
            panic!("expected an invocation");
        };
        assert!(inside(&inv.arguments[0]));
        let Some(HubMessage::Completion(Completion {
            outcome: Outcome::Value(result),
            ..
        })) = parse_message(&mut buf, MAX).unwrap()
        else {
            panic!("expected a completion with a value");
        };
        assert!(inside(&result));
    }

    #[test]
    fn finds_the_end_of_every_kind_of_value() {
        let samples: Vec<Vec<u8>> = vec![
            hex("0x00"),
            hex("0xff"),
            hex("0xc0"),
            hex("0xc2"),
            hex("0xcc 0x01"),
            hex("0xcd 0x01 0x02"),
            hex("0xce 0 0 0 1"),
            hex("0xcf 0 0 0 0 0 0 0 1"),
            hex("0xd0 0x80"),
            hex("0xd1 0 1"),
            hex("0xd2 0 0 0 1"),
            hex("0xd3 0 0 0 0 0 0 0 1"),
            hex("0xca 0 0 0 0"),
            hex("0xcb 0 0 0 0 0 0 0 0"),
            hex("0xa2 0x61 0x62"),
            hex("0xd9 0x01 0x61"),
            hex("0xda 0x00 0x01 0x61"),
            hex("0xdb 0 0 0 1 0x61"),
            hex("0xc4 0x02 0x01 0x02"),
            hex("0xc5 0x00 0x01 0x01"),
            hex("0xc6 0 0 0 1 0x01"),
            hex("0xd4 0x01 0x01"),
            hex("0xd5 0x01 0x01 0x02"),
            hex("0xd6 0x01 1 2 3 4"),
            hex("0xd7 0x01 1 2 3 4 5 6 7 8"),
            hex("0xd8 0x01 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16"),
            hex("0xc7 0x02 0x01 0x01 0x02"),
            hex("0xc8 0x00 0x01 0x01 0x01"),
            hex("0xc9 0 0 0 1 0x01 0x01"),
            hex("0x92 0x01 0x92 0x02 0x90"),
            hex("0xdc 0x00 0x02 0x01 0x02"),
            hex("0xdd 0 0 0 1 0x01"),
            hex("0x82 0xa1 0x61 0x01 0xa1 0x62 0x80"),
            hex("0xde 0x00 0x01 0x01 0x02"),
            hex("0xdf 0 0 0 1 0x01 0x91 0xc0"),
        ];
        for sample in samples {
            assert_eq!(value_end(&sample, 0), Ok(sample.len()), "{sample:02x?}");
            let mut padded = sample.clone();
            padded.extend_from_slice(&[0x01, 0x02]);
            assert_eq!(value_end(&padded, 0), Ok(sample.len()), "{sample:02x?}");
            for cut in 0..sample.len() {
                assert_eq!(
                    value_end(&sample[..cut], 0),
                    Err(Fault::Truncated),
                    "{sample:02x?} cut at {cut}"
                );
            }
        }
        assert_eq!(value_end(&[0xc1], 0), Err(Fault::Unexpected));
    }

    #[test]
    fn huge_declared_counts_fail_fast() {
        // 4 billion arguments declared, none present.
        let body = hex("0x96 0x01 0x80 0xc0 0xa1 0x74 0xdd 0xff 0xff 0xff 0xff");
        assert_malformed(parse(&body));
        assert_eq!(
            value_end(&hex("0xdf 0xff 0xff 0xff 0xff"), 0),
            Err(Fault::Truncated)
        );
        assert_eq!(
            value_end(&hex("0xdb 0xff 0xff 0xff 0xff 0x61"), 0),
            Err(Fault::Truncated)
        );
    }

    #[test]
    fn deep_nesting_does_not_overflow_the_stack() {
        let depth = 100_000;
        // As the whole message: an array whose first element is not a type.
        let mut nested = vec![0x91; depth];
        nested.push(0x90);
        assert_malformed(parse(&nested));
        // Inside an argument: skipped without recursion, then refused when
        // decoded into a type.
        let mut body = hex("0x96 0x01 0x80 0xc0 0xa1 0x74 0x91");
        body.extend_from_slice(&nested);
        body.push(0x90);
        let Ok(HubMessage::Invocation(inv)) = parse(&body) else {
            panic!("a deeply nested argument should be skipped");
        };
        assert_eq!(inv.arguments[0].bytes().len(), depth + 1);
        assert!(matches!(
            decode_value::<serde_json::Value>(inv.arguments[0].bytes()),
            Err(ProtocolError::InvalidValue(_))
        ));
        // Unterminated nesting is an error too.
        let mut body = hex("0x96 0x01 0x80 0xc0 0xa1 0x74 0x91");
        body.extend_from_slice(&vec![0x91; depth]);
        assert_malformed(parse(&body));
    }

    #[test]
    fn decode_errors_explain_themselves() {
        match decode_value::<i32>(&hex("0xa1 0x78")) {
            Err(ProtocolError::InvalidValue(message)) => {
                assert!(message.contains("marker FixStr"), "{message}");
            }
            other => panic!("unexpected {other:?}"),
        }
    }
}

//! The handshake that opens every connection: one JSON object followed by
//! `0x1E` in each direction, whichever hub protocol is chosen.

use bytes::{Bytes, BytesMut};

use super::json::{object_properties, push_str, split_record};
use super::{ProtocolError, RECORD_SEPARATOR};

/// The first message a client sends: which hub protocol it wants.
///
/// Parsed as sent; the caller decides whether it supports the protocol
/// (see [`Protocol::from_name`](super::Protocol::from_name)) and the version
/// (see [`PROTOCOL_VERSION`](super::PROTOCOL_VERSION)), and answers with
/// [`write_handshake_response`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HandshakeRequest {
    /// The requested protocol name, such as `json` or `messagepack`.
    pub protocol: String,
    /// The requested protocol version (1 for every SignalR client today).
    pub version: u32,
}

const PROPERTIES: [&str; 2] = ["protocol", "version"];

fn invalid(reason: impl Into<String>) -> ProtocolError {
    ProtocolError::InvalidHandshake(reason.into())
}

/// Parses the handshake request at the front of `buf`.
///
/// Only the handshake record (through its `0x1E`) is removed from `buf`:
/// whatever follows it, such as a first hub message sent in the same frame,
/// stays there. Returns `Ok(None)` until the whole record has arrived. A
/// record longer than `max_size` bytes (not counting the separator) is
/// [`ProtocolError::MessageTooLarge`]; anything but a JSON object with a
/// string `protocol` and an integer `version` is
/// [`ProtocolError::InvalidHandshake`]. Other properties are ignored.
pub fn parse_handshake(
    buf: &mut BytesMut,
    max_size: usize,
) -> Result<Option<HandshakeRequest>, ProtocolError> {
    let Some(record) = split_record(buf, max_size)? else {
        return Ok(None);
    };
    let text = std::str::from_utf8(&record)
        .map_err(|_| invalid("the handshake request is not valid UTF-8"))?;
    if text.trim_ascii().is_empty() {
        return Err(invalid("the handshake request is empty"));
    }
    let [protocol, version] = object_properties(text, &PROPERTIES)
        .map_err(|e| invalid(format!("the handshake request is not a JSON object: {e}")))?;
    let protocol = protocol.ok_or_else(|| invalid("the 'protocol' property is missing"))?;
    let protocol = serde_json::from_str::<String>(protocol.get())
        .map_err(|_| invalid("the 'protocol' property must be a string"))?;
    let version = version.ok_or_else(|| invalid("the 'version' property is missing"))?;
    let version = serde_json::from_str::<u32>(version.get())
        .map_err(|_| invalid("the 'version' property must be a non-negative integer"))?;
    Ok(Some(HandshakeRequest { protocol, version }))
}

/// Encodes the server's answer to a handshake: `{}` on success, or
/// `{"error":"..."}` when the requested protocol cannot be used; followed by
/// `0x1E`.
pub fn write_handshake_response(error: Option<&str>) -> Bytes {
    match error {
        None => Bytes::from_static(b"{}\x1e"),
        Some(error) => {
            let mut out = Vec::with_capacity(error.len() + 16);
            out.extend_from_slice(b"{\"error\":");
            push_str(&mut out, error);
            out.push(b'}');
            out.push(RECORD_SEPARATOR);
            Bytes::from(out)
        }
    }
}

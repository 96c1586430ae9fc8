//! The handshake that opens every connection: one JSON object followed by
//! `0x1E` in each direction, whichever hub protocol is chosen.

use bytes::{Bytes, BytesMut};

use super::json::{object_properties, push_str, split_record};
use super::{ProtocolError, RECORD_SEPARATOR};

/// The first message a client sends: which hub protocol it wants.
///
/// Parsed as sent; the caller decides whether it supports the protocol
/// (see [`Protocol::from_name`](super::Protocol::from_name)) and the version
/// (see [`is_version_supported`](super::is_version_supported)), and answers with
/// [`write_handshake_response`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HandshakeRequest {
    /// The requested protocol name, such as `json` or `messagepack`.
    pub protocol: String,
    /// The requested protocol version (1 for the official clients; some
    /// independent ones ask for 0).
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

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn request(protocol: &str, version: u32) -> HandshakeRequest {
        HandshakeRequest {
            protocol: protocol.to_owned(),
            version,
        }
    }

    fn parse(bytes: &[u8]) -> Result<Option<HandshakeRequest>, ProtocolError> {
        parse_handshake(&mut BytesMut::from(bytes), 1024)
    }

    fn assert_invalid(bytes: &[u8], reason_part: &str) {
        match parse(bytes) {
            Err(ProtocolError::InvalidHandshake(reason)) => {
                assert!(
                    reason.contains(reason_part),
                    "{reason:?} lacks {reason_part:?}"
                );
            }
            other => panic!("expected an invalid handshake, got {other:?}"),
        }
    }

    #[test]
    fn parses_a_request() {
        assert_eq!(
            parse(b"{\"protocol\":\"json\",\"version\":1}\x1e").unwrap(),
            Some(request("json", 1))
        );
        let pretty = b"{\n    \"protocol\": \"messagepack\",\n    \"version\": 1\n}\x1e";
        assert_eq!(parse(pretty).unwrap(), Some(request("messagepack", 1)));
        // Other properties are ignored; names and versions are not judged here.
        assert_eq!(
            parse(b"{\"version\":2,\"minorVersion\":0,\"protocol\":\"xml\"}\x1e").unwrap(),
            Some(request("xml", 2))
        );
    }

    #[test]
    fn consumes_only_the_handshake() {
        let mut buf =
            BytesMut::from(&b"{\"protocol\":\"json\",\"version\":1}\x1e{\"type\":6}\x1e"[..]);
        assert_eq!(
            parse_handshake(&mut buf, 1024).unwrap(),
            Some(request("json", 1))
        );
        assert_eq!(&buf[..], b"{\"type\":6}\x1e");
    }

    #[test]
    fn waits_for_the_separator() {
        let full = b"{\"protocol\":\"json\",\"version\":1}\x1e";
        let mut buf = BytesMut::from(&full[..10]);
        assert_eq!(parse_handshake(&mut buf, 1024).unwrap(), None);
        assert_eq!(buf.len(), 10);
        buf.extend_from_slice(&full[10..]);
        assert_eq!(
            parse_handshake(&mut buf, 1024).unwrap(),
            Some(request("json", 1))
        );
        assert!(buf.is_empty());
    }

    #[test]
    fn enforces_the_size_limit() {
        let full = b"{\"protocol\":\"json\",\"version\":1}\x1e";
        let limit = full.len() - 2;
        assert!(matches!(
            parse_handshake(&mut BytesMut::from(&full[..]), limit),
            Err(ProtocolError::MessageTooLarge { .. })
        ));
        assert!(matches!(
            parse_handshake(&mut BytesMut::from(&full[..limit + 1]), limit),
            Err(ProtocolError::MessageTooLarge { .. })
        ));
        assert!(parse_handshake(&mut BytesMut::from(&full[..]), limit + 1).is_ok());
    }

    #[test]
    fn rejects_bad_requests() {
        assert_invalid(b"\x1e", "empty");
        assert_invalid(
            b"{\"protocol\":\"json\",\"version\":1\x1e",
            "not a JSON object",
        );
        assert_invalid(b"[\"json\",1]\x1e", "not a JSON object");
        assert_invalid(
            b"{\"protocol\":\"json\",\"version\":1} x\x1e",
            "not a JSON object",
        );
        assert_invalid(b"{\"protocol\":\"\xff\",\"version\":1}\x1e", "UTF-8");
        assert_invalid(b"{\"version\":1}\x1e", "'protocol' property is missing");
        assert_invalid(
            b"{\"protocol\":1,\"version\":1}\x1e",
            "'protocol' property must be",
        );
        assert_invalid(
            b"{\"protocol\":null,\"version\":1}\x1e",
            "'protocol' property must be",
        );
        assert_invalid(
            b"{\"protocol\":\"json\"}\x1e",
            "'version' property is missing",
        );
        for version in ["\"1\"", "-1", "1.5", "4294967296", "null"] {
            let text = format!("{{\"protocol\":\"json\",\"version\":{version}}}\x1e");
            assert_invalid(text.as_bytes(), "'version' property must be");
        }
    }

    #[test]
    fn writes_responses() {
        assert_eq!(&write_handshake_response(None)[..], b"{}\x1e");
        assert_eq!(
            &write_handshake_response(Some("Requested protocol 'x\"y' is not available."))[..],
            b"{\"error\":\"Requested protocol 'x\\\"y' is not available.\"}\x1e"
        );
    }
}

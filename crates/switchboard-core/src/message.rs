use bytes::Bytes;
use serde::Serialize;

use crate::protocol::{Protocol, ProtocolError};

/// A hub message serialized once per hub protocol, ready for fan-out.
///
/// Every connection receives the frame for its own protocol as a `Bytes`
/// clone: a reference-count increment, never a copy or a re-encoding. The
/// backplane forwards the same frames to other servers byte for byte.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct SerializedMessage {
    /// Indexed by [`protocol_index`]; `None` where the sender did not encode
    /// that protocol.
    frames: [Option<Bytes>; 2],
}

fn protocol_index(protocol: Protocol) -> usize {
    match protocol {
        Protocol::Json => 0,
        Protocol::MessagePack => 1,
    }
}

impl SerializedMessage {
    /// An empty message; add frames with [`SerializedMessage::insert`].
    pub fn new() -> SerializedMessage {
        SerializedMessage::default()
    }

    /// Serializes an invocation of client method `target` once for each of
    /// `protocols`.
    ///
    /// `arguments` must serialize as a sequence (a tuple, array or `Vec`).
    ///
    /// ```
    /// use switchboard_core::{SerializedMessage, protocol::Protocol};
    ///
    /// let message = SerializedMessage::invocation(&Protocol::ALL, "message", &("alice", "hi"))?;
    /// assert_eq!(
    ///     &message.get(Protocol::Json).unwrap()[..],
    ///     b"{\"type\":1,\"target\":\"message\",\"arguments\":[\"alice\",\"hi\"]}\x1e"
    /// );
    /// # Ok::<(), switchboard_core::protocol::ProtocolError>(())
    /// ```
    pub fn invocation<A>(
        protocols: &[Protocol],
        target: &str,
        arguments: &A,
    ) -> Result<SerializedMessage, ProtocolError>
    where
        A: Serialize + ?Sized,
    {
        Self::invocation_with_id(protocols, None, target, arguments)
    }

    /// Like [`SerializedMessage::invocation`], with an invocation id: the
    /// client answers with a Completion carrying it (a client result).
    pub fn invocation_with_id<A>(
        protocols: &[Protocol],
        invocation_id: Option<&str>,
        target: &str,
        arguments: &A,
    ) -> Result<SerializedMessage, ProtocolError>
    where
        A: Serialize + ?Sized,
    {
        let mut message = SerializedMessage::new();
        for &protocol in protocols {
            message.insert(
                protocol,
                protocol.write_invocation(invocation_id, target, arguments)?,
            );
        }
        Ok(message)
    }

    /// Sets the frame for `protocol`.
    pub fn insert(&mut self, protocol: Protocol, frame: Bytes) {
        self.frames[protocol_index(protocol)] = Some(frame);
    }

    /// The frame for `protocol`, if the sender encoded it.
    pub fn get(&self, protocol: Protocol) -> Option<&Bytes> {
        self.frames[protocol_index(protocol)].as_ref()
    }

    /// Every encoded frame with its protocol.
    pub fn iter(&self) -> impl Iterator<Item = (Protocol, &Bytes)> + '_ {
        Protocol::ALL
            .into_iter()
            .filter_map(|p| self.get(p).map(|frame| (p, frame)))
    }

    /// Whether no protocol is encoded.
    pub fn is_empty(&self) -> bool {
        self.frames.iter().all(Option::is_none)
    }

    /// The size of the largest frame, for size limits.
    pub fn max_frame_len(&self) -> usize {
        self.frames
            .iter()
            .flatten()
            .map(Bytes::len)
            .max()
            .unwrap_or(0)
    }
}

impl std::fmt::Debug for SerializedMessage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut list = f.debug_map();
        for (protocol, frame) in self.iter() {
            list.entry(&protocol.name(), &frame.len());
        }
        list.finish()
    }
}

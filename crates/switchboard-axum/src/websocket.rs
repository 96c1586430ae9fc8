//! The WebSockets transport: a SignalR session over one upgraded socket.

use std::future::Future;
use std::sync::Arc;

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket};
use bytes::Bytes;
use futures::stream::{SplitSink, SplitStream};
use futures::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite;

use crate::router::Shared;
use crate::session::{self, Accepted, ClientSink, ClientStream, Payload, ReadError, Transport};
use crate::stateful::Handoff;

/// WebSocket close code 1000: normal closure.
const NORMAL_CLOSURE: u16 = 1000;

/// The largest WebSocket message (and frame) accepted, for a hub message
/// limit of `max_message_size`: room for a few records per message, as
/// clients may batch, while bounding what one read can allocate.
pub(crate) fn message_limit(max_message_size: usize) -> usize {
    max_message_size.saturating_mul(4).max(64 * 1024)
}

/// The session's view of one socket.
pub(crate) type SocketTransport = Transport<Reader, Writer>;

/// Splits a socket into the session's two halves.
pub(crate) fn transport(websocket: WebSocket) -> SocketTransport {
    let (sink, stream) = websocket.split();
    Transport {
        stream: Reader(stream),
        sink: Writer(sink),
    }
}

/// Serves one upgraded socket until its connection ends.
///
/// A connection that negotiated stateful reconnect is registered under its
/// token for as long as it lives, so that the client's next socket with
/// the token reaches it (see [`reattach`]); when it ends, a socket that
/// arrived too late is closed.
///
/// A plain function around the async part: the socket is split here, so
/// that the connection's future (which keeps its arguments for its whole
/// life) holds the two small halves, not the whole socket.
pub(crate) fn run(
    shared: Arc<Shared>,
    websocket: WebSocket,
    accepted: Accepted,
) -> impl Future<Output = ()> + Send {
    serve(shared, transport(websocket), accepted)
}

async fn serve(shared: Arc<Shared>, socket: SocketTransport, accepted: Accepted) {
    let token = accepted
        .live
        .as_ref()
        .filter(|_| accepted.stateful)
        .map(|live| live.token().to_owned());
    let Some(token) = token else {
        session::run(shared, socket, accepted, None).await;
        return;
    };
    let handoff = Handoff::new();
    let registered = shared
        .resumable
        .insert(&token, accepted.user.clone(), handoff.clone());
    session::run(shared.clone(), socket, accepted, Some(handoff.clone())).await;
    if let Some(mut late) = handoff.close() {
        late.sink.finish().await;
    }
    drop(registered);
}

/// Hands a client's new socket to its stateful connection; closes the
/// socket if the connection ended meanwhile, and an older socket that
/// waited in its place.
pub(crate) fn reattach(
    handoff: Arc<Handoff<SocketTransport>>,
    websocket: WebSocket,
) -> impl Future<Output = ()> + Send {
    hand_over(handoff, transport(websocket))
}

async fn hand_over(handoff: Arc<Handoff<SocketTransport>>, socket: SocketTransport) {
    let mut refused = match handoff.put(socket) {
        Ok(None) => return,
        Ok(Some(replaced)) => replaced,
        Err(gone) => {
            tracing::debug!("a reconnecting socket found its connection gone");
            gone
        }
    };
    refused.sink.finish().await;
}

/// Whether a read error means the socket is gone (it may come back, for a
/// stateful connection) rather than that the client sent something the
/// socket refuses.
fn is_lost(error: axum::Error) -> ReadError {
    let reason = error.to_string();
    match error.into_inner().downcast::<tungstenite::Error>() {
        Ok(e) => match *e {
            tungstenite::Error::Capacity(_)
            | tungstenite::Error::Utf8(_)
            | tungstenite::Error::AttackAttempt => ReadError::refused(reason),
            tungstenite::Error::Protocol(
                tungstenite::error::ProtocolError::ResetWithoutClosingHandshake,
            ) => ReadError::lost(reason),
            tungstenite::Error::Protocol(_) => ReadError::refused(reason),
            _ => ReadError::lost(reason),
        },
        Err(_) => ReadError::lost(reason),
    }
}

/// The socket's reading half.
pub(crate) struct Reader(SplitStream<WebSocket>);

impl ClientStream for Reader {
    async fn next(&mut self) -> Option<Result<Payload, ReadError>> {
        loop {
            return match self.0.next().await? {
                Err(e) => Some(Err(is_lost(e))),
                Ok(Message::Close(_)) => None,
                Ok(Message::Text(text)) => Some(Ok(Payload {
                    bytes: Bytes::from(text),
                    binary: false,
                })),
                Ok(Message::Binary(bytes)) => Some(Ok(Payload {
                    bytes,
                    binary: true,
                })),
                // Answered by the WebSocket layer itself.
                Ok(Message::Ping(_) | Message::Pong(_)) => continue,
            };
        }
    }
}

/// The socket's writing half.
pub(crate) struct Writer(SplitSink<WebSocket, Message>);

impl ClientSink for Writer {
    async fn send(&mut self, frames: Bytes, binary: bool) -> Result<(), String> {
        let message = if binary {
            Message::Binary(frames)
        } else {
            text_message(frames)
        };
        self.0.send(message).await.map_err(|e| e.to_string())
    }

    async fn finish(&mut self) {
        let _ = self.0.send(close_frame()).await;
    }
}

/// Frames of text protocols go in text messages.
fn text_message(bytes: Bytes) -> Message {
    // The clone is a reference-count increment, kept for the fallback.
    match Utf8Bytes::try_from(bytes.clone()) {
        Ok(text) => Message::Text(text),
        // Text protocol frames are UTF-8 by construction; should one not
        // be, the client still gets its bytes.
        Err(e) => {
            tracing::warn!(error = %e, "a text frame is not UTF-8; sending it as binary");
            Message::Binary(bytes)
        }
    }
}

fn close_frame() -> Message {
    Message::Close(Some(CloseFrame {
        code: NORMAL_CLOSURE,
        reason: Utf8Bytes::from_static(""),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The size of the future `f` returns, without calling it.
    fn future_size<A, B, C, R>(_: impl Fn(A, B, C) -> R) -> usize {
        std::mem::size_of::<R>()
    }

    /// Every idle WebSocket connection holds this future (it is most of
    /// switchboard's share of bench B9's memory per connection), so it must
    /// not grow unnoticed: box what is large and rare instead.
    #[test]
    fn the_connection_future_stays_within_its_budget() {
        let size = future_size(serve);
        assert!(
            size <= 3_584,
            "a WebSocket connection's future takes {size} bytes"
        );
    }
}

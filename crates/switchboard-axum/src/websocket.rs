//! The WebSockets transport: a SignalR session over one upgraded socket.

use std::sync::Arc;

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket};
use bytes::Bytes;
use futures::stream::{SplitSink, SplitStream};
use futures::{SinkExt, StreamExt};

use crate::router::Shared;
use crate::session::{self, Accepted, ClientSink, ClientStream, Payload};

/// WebSocket close code 1000: normal closure.
const NORMAL_CLOSURE: u16 = 1000;

/// The largest WebSocket message (and frame) accepted, for a hub message
/// limit of `max_message_size`: room for a few records per message, as
/// clients may batch, while bounding what one read can allocate.
pub(crate) fn message_limit(max_message_size: usize) -> usize {
    max_message_size.saturating_mul(4).max(64 * 1024)
}

/// Serves one upgraded socket until it closes.
pub(crate) async fn run(shared: Arc<Shared>, websocket: WebSocket, accepted: Accepted) {
    let (sink, stream) = websocket.split();
    session::run(shared, Reader(stream), Writer(sink), accepted).await;
}

/// The socket's reading half.
struct Reader(SplitStream<WebSocket>);

impl ClientStream for Reader {
    async fn next(&mut self) -> Option<Result<Payload, String>> {
        loop {
            return match self.0.next().await? {
                Err(e) => Some(Err(e.to_string())),
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
struct Writer(SplitSink<WebSocket, Message>);

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

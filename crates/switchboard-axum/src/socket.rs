//! One WebSocket connection: handshake, then a reader and a writer.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket};
use bytes::{Bytes, BytesMut};
use futures::stream::{SplitSink, SplitStream};
use futures::{SinkExt, StreamExt};
use switchboard_core::protocol::{
    HubMessage, Protocol, ProtocolError, is_version_supported, parse_handshake,
    write_handshake_response,
};
use switchboard_core::{
    Connection, ConnectionId, ConnectionOptions, ConnectionReceiver, HubSession,
};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::router::Shared;
use crate::tokens::LiveGuard;

/// The error sent when a client has been silent for the client timeout.
const CLIENT_TIMEOUT_ERROR: &str =
    "Server timeout elapsed without receiving a message from the client.";

/// At most this many queued frames are written in one WebSocket message.
const MAX_BATCH_FRAMES: usize = 64;

/// A batch stops growing once it holds this many bytes.
const MAX_BATCH_BYTES: usize = 64 * 1024;

/// How long a leaving client gets to take our close frame, and a client
/// the server closes gets to take the Close message.
const STOP_GRACE: Duration = Duration::from_secs(1);

/// WebSocket close code 1000: normal closure.
const NORMAL_CLOSURE: u16 = 1000;

/// The largest WebSocket message (and frame) accepted, for a hub message
/// limit of `max_message_size`: room for a few records per message, as
/// clients may batch, while bounding what one read can allocate.
pub(crate) fn websocket_message_limit(max_message_size: usize) -> usize {
    max_message_size.saturating_mul(4).max(64 * 1024)
}

/// A socket that passed the HTTP checks.
#[derive(Debug)]
pub(crate) struct Accepted {
    /// The id the connection gets.
    pub(crate) connection_id: ConnectionId,
    /// The authenticated user.
    pub(crate) user: Option<String>,
    /// Keeps the connection token in use while the socket lives.
    pub(crate) live: Option<LiveGuard>,
}

/// Serves one upgraded socket until it closes.
pub(crate) async fn run(shared: Arc<Shared>, mut websocket: WebSocket, accepted: Accepted) {
    let Accepted {
        connection_id,
        user,
        live,
    } = accepted;
    let options = &shared.options;
    let mut buf = BytesMut::new();
    let Some(protocol) = handshake(&shared, &mut websocket, &mut buf, &connection_id).await else {
        return;
    };

    let mut connection_options = ConnectionOptions::new(protocol)
        .queue_capacity(options.queue_capacity)
        .slow_consumer(options.slow_consumer);
    connection_options.user = user;
    let (connection, receiver) = Connection::with_id(connection_id.clone(), connection_options);
    let session = match shared.hub.connect(connection.clone()).await {
        Ok(session) => session,
        Err(e) => {
            tracing::warn!(%connection_id, error = %e, "cannot register the connection");
            let response = write_handshake_response(Some(
                "An unexpected error occurred during connection handshake.",
            ));
            let _ = send_timed(
                &mut websocket,
                frame_message(protocol, response),
                options.client_timeout,
            )
            .await;
            let _ = send_timed(&mut websocket, close_frame(), options.client_timeout).await;
            return;
        }
    };
    let response = frame_message(protocol, write_handshake_response(None));
    if send_timed(&mut websocket, response, options.client_timeout)
        .await
        .is_err()
    {
        tracing::debug!(%connection_id, "the handshake response could not be sent");
        connection.close("the handshake response could not be sent");
        session.close(None).await;
        return;
    }
    tracing::debug!(%connection_id, %protocol, user = connection.user(), "connected");

    let (sink, stream) = websocket.split();
    let state = SocketState {
        connection: connection.clone(),
        protocol,
        stop_writer: CancellationToken::new(),
        allow_reconnect: AtomicBool::new(true),
    };
    let reader = async {
        let end = read_loop(&shared, &state, stream, buf, &session).await;
        match &end {
            End::Quiet | End::ClientClose(_) => state.stop_writer.cancel(),
            End::ServerClose => {}
            End::Error {
                reason,
                allow_reconnect,
            } => {
                state
                    .allow_reconnect
                    .store(*allow_reconnect, Ordering::Relaxed);
                connection.close(reason.clone());
            }
            End::Transport { reason } => {
                state.allow_reconnect.store(false, Ordering::Relaxed);
                connection.close(reason.clone());
            }
        }
        end
    };
    let writer = write_loop(&shared, &state, sink, receiver);
    let (end, ()) = tokio::join!(reader, writer);

    let error = match end {
        End::Quiet => {
            tracing::debug!(%connection_id, "the client went away");
            None
        }
        End::ClientClose(error) => {
            tracing::debug!(%connection_id, error = error.as_deref(), "the client closed the connection");
            error
        }
        End::ServerClose => {
            let reason = connection.close_reason();
            tracing::info!(%connection_id, reason = reason.as_deref(), "connection closed by the server");
            reason
        }
        End::Transport { reason } => {
            tracing::debug!(%connection_id, %reason, "the WebSocket failed");
            Some(reason)
        }
        End::Error { reason, .. } => {
            tracing::info!(%connection_id, %reason, "connection closed with an error");
            Some(reason)
        }
    };
    // Deliveries from now on are dropped at once rather than queued.
    connection.close("the connection has ended");
    session.close(error).await;
    drop(live);
}

/// What the reader and the writer share.
#[derive(Debug)]
struct SocketState {
    /// The connection; closing it ends the reader and makes the writer send
    /// a Close message.
    connection: Connection,
    /// The hub protocol agreed in the handshake.
    protocol: Protocol,
    /// Cancelled when the client has gone: the writer stops without
    /// sending anything more.
    stop_writer: CancellationToken,
    /// What the Close message tells clients with automatic reconnect:
    /// transient server-side closes allow it, protocol errors do not.
    allow_reconnect: AtomicBool,
}

/// Reads the handshake request and answers errors; returns the agreed
/// protocol, or `None` when the socket must be dropped. Bytes after the
/// handshake record stay in `buf`.
async fn handshake(
    shared: &Shared,
    websocket: &mut WebSocket,
    buf: &mut BytesMut,
    connection_id: &ConnectionId,
) -> Option<Protocol> {
    let options = &shared.options;
    let deadline = Instant::now() + options.handshake_timeout;
    // Errors are answered in the kind of frame the request came in.
    let mut binary = false;
    loop {
        let request = match parse_handshake(buf, options.max_message_size) {
            Ok(Some(request)) => request,
            Ok(None) => {
                match tokio::time::timeout_at(deadline, websocket.recv()).await {
                    Err(_) => {
                        tracing::debug!(%connection_id, "handshake timed out");
                        let _ = send_timed(websocket, close_frame(), options.client_timeout).await;
                        return None;
                    }
                    Ok(None | Some(Ok(Message::Close(_)))) => {
                        tracing::debug!(%connection_id, "the client left during the handshake");
                        return None;
                    }
                    Ok(Some(Err(e))) => {
                        tracing::debug!(%connection_id, error = %e, "WebSocket error during the handshake");
                        return None;
                    }
                    Ok(Some(Ok(Message::Text(text)))) => {
                        binary = false;
                        buf.extend_from_slice(text.as_bytes());
                    }
                    Ok(Some(Ok(Message::Binary(bytes)))) => {
                        binary = true;
                        buf.extend_from_slice(&bytes);
                    }
                    Ok(Some(Ok(Message::Ping(_) | Message::Pong(_)))) => {}
                }
                continue;
            }
            Err(e) => {
                tracing::debug!(%connection_id, error = %e, "invalid handshake");
                let error = match e {
                    ProtocolError::InvalidHandshake(reason) => {
                        format!("Invalid handshake: {reason}")
                    }
                    other => format!("Invalid handshake: {other}"),
                };
                refuse(shared, websocket, binary, &error).await;
                return None;
            }
        };
        let Some(protocol) = Protocol::from_name(&request.protocol)
            .filter(|p| shared.hub.options().protocols.contains(p))
        else {
            let error = format!("The protocol '{}' is not supported.", request.protocol);
            tracing::debug!(%connection_id, %error, "handshake refused");
            refuse(shared, websocket, binary, &error).await;
            return None;
        };
        if !is_version_supported(request.version) {
            let error = format!(
                "The server does not support version {} of the '{}' protocol.",
                request.version, request.protocol
            );
            tracing::debug!(%connection_id, %error, "handshake refused");
            refuse(shared, websocket, binary, &error).await;
            return None;
        }
        return Some(protocol);
    }
}

/// Answers a handshake with an error, then closes the socket.
async fn refuse(shared: &Shared, websocket: &mut WebSocket, binary: bool, error: &str) {
    let response = write_handshake_response(Some(error));
    let message = if binary {
        Message::Binary(response)
    } else {
        text_message(response)
    };
    let timeout = shared.options.client_timeout;
    if send_timed(websocket, message, timeout).await.is_ok() {
        let _ = send_timed(websocket, close_frame(), timeout).await;
    }
}

/// How the reader ended.
#[derive(Debug)]
enum End {
    /// The socket closed or failed without a word from the client.
    Quiet,
    /// The client sent a Close message, with its error if any.
    ClientClose(Option<String>),
    /// The server closed the connection (the writer says why).
    ServerClose,
    /// The WebSocket failed: usually the client vanished without a close
    /// frame, or sent a WebSocket message over the limit. A Close message
    /// is still attempted, for the latter.
    Transport {
        /// Sent in the Close message if the socket still takes it.
        reason: String,
    },
    /// The client broke the protocol or timed out.
    Error {
        /// Sent in the Close message.
        reason: String,
        /// Sent in the Close message.
        allow_reconnect: bool,
    },
}

fn protocol_error(e: &ProtocolError) -> End {
    End::Error {
        reason: format!("Connection closed with an error: {e}."),
        allow_reconnect: false,
    }
}

/// Parses everything the client sends and hands it to the session.
async fn read_loop(
    shared: &Shared,
    state: &SocketState,
    mut stream: SplitStream<WebSocket>,
    mut buf: BytesMut,
    session: &HubSession,
) -> End {
    let options = &shared.options;
    let connection = &state.connection;
    loop {
        loop {
            let message = match state
                .protocol
                .parse_message(&mut buf, options.max_message_size)
            {
                Ok(Some(message)) => message,
                Ok(None) => break,
                Err(e) => return protocol_error(&e),
            };
            match message {
                HubMessage::Ping => {}
                HubMessage::Close { error, .. } => return End::ClientClose(error),
                other => {
                    tokio::select! {
                        () = session.handle(other) => {}
                        () = connection.closed() => return End::ServerClose,
                    }
                }
            }
        }
        // Only the time spent waiting for the client counts towards the
        // client timeout: while the session holds the reader back (too many
        // invocations running), the client is not to blame.
        let next = tokio::select! {
            () = connection.closed() => return End::ServerClose,
            next = tokio::time::timeout(options.client_timeout, stream.next()) => next,
        };
        match next {
            Err(_) => {
                return End::Error {
                    reason: CLIENT_TIMEOUT_ERROR.to_owned(),
                    allow_reconnect: true,
                };
            }
            Ok(None | Some(Ok(Message::Close(_)))) => return End::Quiet,
            Ok(Some(Err(e))) => {
                return End::Transport {
                    reason: format!("Connection closed with an error: {e}."),
                };
            }
            // Frames of either kind are accepted whatever the protocol:
            // the bytes are what counts, and some clients differ.
            Ok(Some(Ok(Message::Text(text)))) => buf.extend_from_slice(text.as_bytes()),
            Ok(Some(Ok(Message::Binary(bytes)))) => buf.extend_from_slice(&bytes),
            Ok(Some(Ok(Message::Ping(_) | Message::Pong(_)))) => {}
        }
    }
}

/// What the writer does next.
enum Next {
    Frame(Bytes),
    KeepAlive,
    Closed,
    Stop,
}

/// Writes the connection's queued frames, keep-alive Pings, and finally the
/// Close message when the server closes the connection.
///
/// Once the server closes the connection, everything still to write (the
/// frames queued before the close, in order, then the Close message and
/// the close frame) gets [`STOP_GRACE`] in all, counted from the moment
/// the writer sees the close; a write already under way when the close
/// comes goes on within that grace. A client that does not take it all by
/// then (a stalled reader, a client too slow for the slow-consumer policy)
/// is not waited for.
async fn write_loop(
    shared: &Shared,
    state: &SocketState,
    mut sink: SplitSink<WebSocket, Message>,
    mut receiver: ConnectionReceiver,
) {
    let options = &shared.options;
    let connection = &state.connection;
    let protocol = state.protocol;
    let mut last_sent = Instant::now();
    // When the rest must be written by, once the server has closed.
    let mut closing: Option<Instant> = None;
    loop {
        let next = tokio::select! {
            biased;
            () = state.stop_writer.cancelled() => Next::Stop,
            frame = receiver.recv() => match frame {
                Some(frame) => Next::Frame(frame),
                None => Next::Closed,
            },
            () = tokio::time::sleep_until(last_sent + options.keep_alive_interval) => Next::KeepAlive,
        };
        let message = match next {
            Next::Stop => {
                // The client is leaving: answer with a close frame if the
                // socket still takes one, without waiting long.
                let _ = tokio::time::timeout(STOP_GRACE, sink.send(close_frame())).await;
                return;
            }
            Next::Frame(first) => frame_message(protocol, batch(first, &mut receiver)),
            Next::KeepAlive => frame_message(protocol, protocol.write_ping()),
            Next::Closed => {
                let deadline = *closing.get_or_insert_with(|| Instant::now() + STOP_GRACE);
                let reason = connection.close_reason();
                let allow_reconnect = state.allow_reconnect.load(Ordering::Relaxed);
                let close = protocol.write_close(reason.as_deref(), allow_reconnect);
                if send_until(state, &mut sink, frame_message(protocol, close), deadline).await {
                    let _ = send_until(state, &mut sink, close_frame(), deadline).await;
                }
                return;
            }
        };
        let sent = match closing {
            Some(deadline) => send_until(state, &mut sink, message, deadline).await,
            None => {
                let send = send_until(
                    state,
                    &mut sink,
                    message,
                    Instant::now() + options.client_timeout,
                );
                let mut send = std::pin::pin!(send);
                tokio::select! {
                    biased;
                    sent = &mut send => sent,
                    // The server closed the connection during the write (a
                    // client too slow for the slow-consumer policy has a
                    // full socket): the write gets the grace, not the
                    // client timeout.
                    () = connection.closed() => {
                        let deadline = Instant::now() + STOP_GRACE;
                        closing = Some(deadline);
                        tokio::time::timeout_at(deadline, send).await.unwrap_or(false)
                    }
                }
            }
        };
        if !sent {
            connection.close("the connection's socket failed");
            return;
        }
        last_sent = Instant::now();
    }
}

/// Joins `first` with the frames queued right behind it, so a burst costs
/// one WebSocket message instead of many; SignalR framing keeps the records
/// apart.
fn batch(first: Bytes, receiver: &mut ConnectionReceiver) -> Bytes {
    if first.len() >= MAX_BATCH_BYTES {
        return first;
    }
    let Some(second) = receiver.try_recv() else {
        return first;
    };
    let mut joined = BytesMut::with_capacity(first.len() + second.len());
    joined.extend_from_slice(&first);
    joined.extend_from_slice(&second);
    for _ in 2..MAX_BATCH_FRAMES {
        if joined.len() >= MAX_BATCH_BYTES {
            break;
        }
        match receiver.try_recv() {
            Some(frame) => joined.extend_from_slice(&frame),
            None => break,
        }
    }
    joined.freeze()
}

/// Sends one message unless the writer is told to stop or the client does
/// not take it by `deadline`; `false` if it was not sent.
async fn send_until(
    state: &SocketState,
    sink: &mut SplitSink<WebSocket, Message>,
    message: Message,
    deadline: Instant,
) -> bool {
    let connection_id = state.connection.id();
    tokio::select! {
        () = state.stop_writer.cancelled() => false,
        sent = tokio::time::timeout_at(deadline, sink.send(message)) => match sent {
            Ok(Ok(())) => true,
            Ok(Err(e)) => {
                tracing::debug!(%connection_id, error = %e, "WebSocket write failed");
                false
            }
            Err(_) => {
                tracing::info!(%connection_id, "the client did not accept a write in time");
                false
            }
        },
    }
}

/// Sends on the whole socket (before it is split), within `timeout`.
async fn send_timed(
    websocket: &mut WebSocket,
    message: Message,
    timeout: Duration,
) -> Result<(), ()> {
    match tokio::time::timeout(timeout, websocket.send(message)).await {
        Ok(Ok(())) => Ok(()),
        _ => Err(()),
    }
}

/// Frames of text protocols go in text messages, the others in binary.
fn frame_message(protocol: Protocol, bytes: Bytes) -> Message {
    if protocol.is_binary() {
        Message::Binary(bytes)
    } else {
        text_message(bytes)
    }
}

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

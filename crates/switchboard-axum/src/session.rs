//! One connection's session, whatever carries it: the handshake, then a
//! reader and a writer, with keep-alive Pings, the client timeout, the
//! message size limit, the slow-consumer policy and the Close message.
//!
//! A transport supplies two halves: a [`ClientStream`] that reads what the
//! client sends, and a [`ClientSink`] that writes a batch of frames (and
//! finally ends the transport). Everything else lives here, once.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use bytes::{Bytes, BytesMut};
use switchboard_core::protocol::{
    HubMessage, Protocol, ProtocolError, is_version_supported, parse_handshake,
    write_handshake_response,
};
use switchboard_core::{
    Connection, ConnectionId, ConnectionOptions, ConnectionReceiver, HubSession,
};
use tokio::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

use crate::router::Shared;
use crate::tokens::LiveGuard;

/// The error sent when a client has been silent for the client timeout.
const CLIENT_TIMEOUT_ERROR: &str =
    "Server timeout elapsed without receiving a message from the client.";

/// How much of the queue one transport write takes.
#[derive(Debug, Clone, Copy)]
pub(crate) struct BatchLimits {
    /// At most this many queued frames.
    pub(crate) frames: usize,
    /// The batch stops growing once it holds this many bytes.
    pub(crate) bytes: usize,
}

impl BatchLimits {
    /// For transports that stream: a burst becomes a few large writes.
    pub(crate) const STREAMING: BatchLimits = BatchLimits {
        frames: 64,
        bytes: 64 * 1024,
    };
}

/// How long a leaving client gets to take the transport's last word, and a
/// client the server closes gets to take the Close message.
pub(crate) const STOP_GRACE: Duration = Duration::from_secs(1);

/// What a client sent, as its transport read it.
#[derive(Debug)]
pub(crate) struct Payload {
    /// The bytes: hub protocol records, possibly several, possibly part of
    /// one.
    pub(crate) bytes: Bytes,
    /// Whether they came as binary (a WebSocket binary message); the
    /// handshake's error answer is sent the same way.
    pub(crate) binary: bool,
}

/// The client-to-server half of a transport.
pub(crate) trait ClientStream: Send {
    /// The next payload. `None` when the client left without a word (the
    /// transport closed); `Some(Err(reason))` when the transport failed.
    fn next(&mut self) -> impl Future<Output = Option<Result<Payload, String>>> + Send;
}

/// The server-to-client half of a transport.
pub(crate) trait ClientSink: Send {
    /// Writes one batch of frames (`binary`: of a binary hub protocol, or
    /// the answer to a binary handshake). Returns once the transport took
    /// it; the session bounds the wait.
    fn send(
        &mut self,
        frames: Bytes,
        binary: bool,
    ) -> impl Future<Output = Result<(), String>> + Send;

    /// Ends the transport: the WebSocket close frame, the end of an event
    /// stream, the last poll. Called at most once, with nothing sent after.
    fn finish(&mut self) -> impl Future<Output = ()> + Send;

    /// Whether the transport carries binary frames (Server-Sent Events
    /// carry text only, so binary hub protocols are refused on them).
    fn carries_binary(&self) -> bool {
        true
    }

    /// How much of the queue one [`send`](Self::send) may carry.
    fn batch_limits(&self) -> BatchLimits {
        BatchLimits::STREAMING
    }

    /// Waits until a [`send`](Self::send) would be taken at once (a poll is
    /// waiting, say), so that the batch formed then holds everything queued
    /// meanwhile. The session bounds the wait.
    fn ready(&mut self) -> impl Future<Output = ()> + Send {
        async {}
    }

    /// How long everything still to write after the server closed the
    /// connection (queued frames, the Close message, the end) may take.
    fn close_grace(&self) -> Duration {
        STOP_GRACE
    }
}

/// A connection that passed the HTTP checks.
#[derive(Debug)]
pub(crate) struct Accepted {
    /// The id the connection gets.
    pub(crate) connection_id: ConnectionId,
    /// The authenticated user.
    pub(crate) user: Option<String>,
    /// Keeps the connection token in use while the connection lives.
    pub(crate) live: Option<LiveGuard>,
}

/// Serves one connection over `stream` and `sink` until it ends.
pub(crate) async fn run<S: ClientStream, K: ClientSink>(
    shared: Arc<Shared>,
    mut stream: S,
    mut sink: K,
    accepted: Accepted,
) {
    let Accepted {
        connection_id,
        user,
        live,
    } = accepted;
    let options = &shared.options;
    let mut buf = BytesMut::new();
    let Some(protocol) = handshake(&shared, &mut stream, &mut sink, &mut buf, &connection_id).await
    else {
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
            let sent = send_timed(
                &mut sink,
                response,
                protocol.is_binary(),
                options.client_timeout,
            );
            if sent.await.is_ok() {
                finish_timed(&mut sink, options.client_timeout).await;
            }
            return;
        }
    };
    let response = write_handshake_response(None);
    if send_timed(
        &mut sink,
        response,
        protocol.is_binary(),
        options.client_timeout,
    )
    .await
    .is_err()
    {
        tracing::debug!(%connection_id, "the handshake response could not be sent");
        connection.close("the handshake response could not be sent");
        session.close(None).await;
        return;
    }
    tracing::debug!(%connection_id, %protocol, user = connection.user(), "connected");

    let state = SessionState {
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
            tracing::debug!(%connection_id, %reason, "the transport failed");
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
struct SessionState {
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
/// protocol, or `None` when the connection must be dropped. Bytes after the
/// handshake record stay in `buf`.
async fn handshake<S: ClientStream, K: ClientSink>(
    shared: &Shared,
    stream: &mut S,
    sink: &mut K,
    buf: &mut BytesMut,
    connection_id: &ConnectionId,
) -> Option<Protocol> {
    let options = &shared.options;
    let deadline = Instant::now() + options.handshake_timeout;
    // Errors are answered in the kind of payload the request came in.
    let mut binary = false;
    let request = loop {
        match parse_handshake(buf, options.max_message_size) {
            Ok(Some(request)) => break request,
            Ok(None) => {}
            Err(e) => {
                tracing::debug!(%connection_id, error = %e, "invalid handshake");
                let error = match e {
                    ProtocolError::InvalidHandshake(reason) => {
                        format!("Invalid handshake: {reason}")
                    }
                    other => format!("Invalid handshake: {other}"),
                };
                refuse(shared, sink, binary, &error).await;
                return None;
            }
        }
        match tokio::time::timeout_at(deadline, stream.next()).await {
            Err(_) => {
                tracing::debug!(%connection_id, "handshake timed out");
                finish_timed(sink, options.client_timeout).await;
                return None;
            }
            Ok(None) => {
                tracing::debug!(%connection_id, "the client left during the handshake");
                return None;
            }
            Ok(Some(Err(reason))) => {
                tracing::debug!(%connection_id, %reason, "transport error during the handshake");
                return None;
            }
            Ok(Some(Ok(payload))) => {
                binary = payload.binary;
                buf.extend_from_slice(&payload.bytes);
            }
        }
    };
    let Some(protocol) = Protocol::from_name(&request.protocol)
        .filter(|p| shared.hub.options().protocols.contains(p))
    else {
        let error = format!("The protocol '{}' is not supported.", request.protocol);
        tracing::debug!(%connection_id, %error, "handshake refused");
        refuse(shared, sink, binary, &error).await;
        return None;
    };
    if protocol.is_binary() && !sink.carries_binary() {
        let error = format!(
            "The '{}' protocol is binary, and this transport carries text only.",
            request.protocol
        );
        tracing::debug!(%connection_id, %error, "handshake refused");
        refuse(shared, sink, binary, &error).await;
        return None;
    }
    if !is_version_supported(request.version) {
        let error = format!(
            "The server does not support version {} of the '{}' protocol.",
            request.version, request.protocol
        );
        tracing::debug!(%connection_id, %error, "handshake refused");
        refuse(shared, sink, binary, &error).await;
        return None;
    }
    Some(protocol)
}

/// Answers a handshake with an error, then ends the transport.
async fn refuse<K: ClientSink>(shared: &Shared, sink: &mut K, binary: bool, error: &str) {
    let response = write_handshake_response(Some(error));
    let timeout = shared.options.client_timeout;
    if send_timed(sink, response, binary, timeout).await.is_ok() {
        finish_timed(sink, timeout).await;
    }
}

/// How the reader ended.
#[derive(Debug)]
enum End {
    /// The transport closed or failed without a word from the client.
    Quiet,
    /// The client sent a Close message, with its error if any.
    ClientClose(Option<String>),
    /// The server closed the connection (the writer says why).
    ServerClose,
    /// The transport failed: usually the client vanished without closing,
    /// or sent a message over the transport's limit. A Close message is
    /// still attempted, for the latter.
    Transport {
        /// Sent in the Close message if the transport still takes it.
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
async fn read_loop<S: ClientStream>(
    shared: &Shared,
    state: &SessionState,
    mut stream: S,
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
            Ok(None) => return End::Quiet,
            Ok(Some(Err(e))) => {
                return End::Transport {
                    reason: format!("Connection closed with an error: {e}."),
                };
            }
            // Payloads of either kind are accepted whatever the protocol:
            // the bytes are what counts, and some clients differ.
            Ok(Some(Ok(payload))) => buf.extend_from_slice(&payload.bytes),
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
/// the transport's end) gets the sink's close grace ([`STOP_GRACE`] unless
/// the transport says otherwise) in all, counted from the moment
/// the writer sees the close; a write already under way when the close
/// comes goes on within that grace. A client that does not take it all by
/// then (a stalled reader, a client too slow for the slow-consumer policy)
/// is not waited for.
async fn write_loop<K: ClientSink>(
    shared: &Shared,
    state: &SessionState,
    mut sink: K,
    mut receiver: ConnectionReceiver,
) {
    let options = &shared.options;
    let connection = &state.connection;
    let protocol = state.protocol;
    let binary = protocol.is_binary();
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
        let frames = match next {
            Next::Stop => {
                // The client is leaving: end the transport if it still
                // takes that, without waiting long.
                let _ = tokio::time::timeout(STOP_GRACE, sink.finish()).await;
                return;
            }
            Next::Frame(first) => {
                let deadline = closing.unwrap_or_else(|| Instant::now() + options.client_timeout);
                tokio::select! {
                    _ = tokio::time::timeout_at(deadline, sink.ready()) => {}
                    // Closing: the write below gets the grace.
                    () = connection.closed(), if closing.is_none() => {}
                }
                batch(first, &mut receiver, sink.batch_limits())
            }
            Next::KeepAlive => protocol.write_ping(),
            Next::Closed => {
                let deadline = *closing.get_or_insert_with(|| Instant::now() + sink.close_grace());
                let reason = connection.close_reason();
                let allow_reconnect = state.allow_reconnect.load(Ordering::Relaxed);
                let close = protocol.write_close(reason.as_deref(), allow_reconnect);
                if send_until(state, &mut sink, close, binary, deadline).await {
                    tokio::select! {
                        () = state.stop_writer.cancelled() => {}
                        _ = tokio::time::timeout_at(deadline, sink.finish()) => {}
                    }
                }
                return;
            }
        };
        let sent = match closing {
            Some(deadline) => send_until(state, &mut sink, frames, binary, deadline).await,
            None => {
                let grace = sink.close_grace();
                let send = send_until(
                    state,
                    &mut sink,
                    frames,
                    binary,
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
                        let deadline = Instant::now() + grace;
                        closing = Some(deadline);
                        tokio::time::timeout_at(deadline, send).await.unwrap_or(false)
                    }
                }
            }
        };
        if !sent {
            connection.close("the connection's transport failed");
            return;
        }
        last_sent = Instant::now();
    }
}

/// Joins `first` with the frames queued right behind it, so a burst costs
/// one transport write instead of many; SignalR framing keeps the records
/// apart.
fn batch(first: Bytes, receiver: &mut ConnectionReceiver, limits: BatchLimits) -> Bytes {
    if first.len() >= limits.bytes || limits.frames < 2 {
        return first;
    }
    let Some(second) = receiver.try_recv() else {
        return first;
    };
    let mut joined = BytesMut::with_capacity(first.len() + second.len());
    joined.extend_from_slice(&first);
    joined.extend_from_slice(&second);
    for _ in 2..limits.frames {
        if joined.len() >= limits.bytes {
            break;
        }
        match receiver.try_recv() {
            Some(frame) => joined.extend_from_slice(&frame),
            None => break,
        }
    }
    joined.freeze()
}

/// Sends one batch unless the writer is told to stop or the client does
/// not take it by `deadline`; `false` if it was not sent.
async fn send_until<K: ClientSink>(
    state: &SessionState,
    sink: &mut K,
    frames: Bytes,
    binary: bool,
    deadline: Instant,
) -> bool {
    let connection_id = state.connection.id();
    tokio::select! {
        () = state.stop_writer.cancelled() => false,
        sent = tokio::time::timeout_at(deadline, sink.send(frames, binary)) => match sent {
            Ok(Ok(())) => true,
            Ok(Err(e)) => {
                tracing::debug!(%connection_id, error = %e, "a write to the client failed");
                false
            }
            Err(_) => {
                tracing::info!(%connection_id, "the client did not accept a write in time");
                false
            }
        },
    }
}

/// Sends one batch within `timeout` (before the reader and writer start).
async fn send_timed<K: ClientSink>(
    sink: &mut K,
    frames: Bytes,
    binary: bool,
    timeout: Duration,
) -> Result<(), ()> {
    match tokio::time::timeout(timeout, sink.send(frames, binary)).await {
        Ok(Ok(())) => Ok(()),
        _ => Err(()),
    }
}

/// Ends the transport within `timeout`.
async fn finish_timed<K: ClientSink>(sink: &mut K, timeout: Duration) {
    let _ = tokio::time::timeout(timeout, sink.finish()).await;
}

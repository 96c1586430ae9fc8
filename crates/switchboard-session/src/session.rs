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
use futures::future::BoxFuture;
use switchboard_core::protocol::{
    HubMessage, Protocol, ProtocolError, STATEFUL_RECONNECT_VERSION, is_version_supported,
    parse_handshake, write_handshake_response,
};
use switchboard_core::{
    Connection, ConnectionId, ConnectionOptions, ConnectionReceiver, HubSession,
};
use tokio::time::{Duration, Instant};
use tracing::Instrument;

use crate::flag::Flag;
use crate::sessions::{DRAIN_REASON, Sessions};
use crate::stateful::{Handoff, Inbound, Replay};

/// The error sent when a client has been silent for the client timeout.
const CLIENT_TIMEOUT_ERROR: &str =
    "Server timeout elapsed without receiving a message from the client.";

/// How long a stateful connection waits, after a message from the client,
/// before acknowledging it: the Acks of a burst are one.
const ACK_DELAY: Duration = Duration::from_millis(250);

/// How much of the queue one transport write takes.
#[derive(Debug, Clone, Copy)]
pub struct BatchLimits {
    /// At most this many queued frames.
    pub frames: usize,
    /// The batch stops growing once it holds this many bytes.
    pub bytes: usize,
}

impl BatchLimits {
    /// For transports that stream: a burst becomes a few large writes.
    pub const STREAMING: BatchLimits = BatchLimits {
        frames: 64,
        bytes: 64 * 1024,
    };
}

/// How long a leaving client gets to take the transport's last word, and a
/// client the server closes gets to take the Close message.
pub const STOP_GRACE: Duration = Duration::from_secs(1);

/// What a client sent, as its transport read it.
#[derive(Debug)]
pub struct Payload {
    /// The bytes: hub protocol records, possibly several, possibly part of
    /// one.
    pub bytes: Bytes,
    /// Whether they came as binary (a WebSocket binary message); the
    /// handshake's error answer is sent the same way.
    pub binary: bool,
}

/// Why a transport stopped reading.
#[derive(Debug)]
pub struct ReadError {
    /// What happened, for the log and the Close message.
    pub reason: String,
    /// Whether the transport was lost (the socket dropped without a close)
    /// rather than refused what the client sent (a message over its limit,
    /// bad framing): a lost transport of a stateful connection waits for
    /// the client to reconnect.
    pub lost: bool,
}

impl ReadError {
    /// The transport is gone.
    pub fn lost(reason: impl Into<String>) -> ReadError {
        ReadError {
            reason: reason.into(),
            lost: true,
        }
    }

    /// The transport refused what the client sent.
    pub fn refused(reason: impl Into<String>) -> ReadError {
        ReadError {
            reason: reason.into(),
            lost: false,
        }
    }
}

/// The client-to-server half of a transport.
pub trait ClientStream: Send {
    /// The next payload. `None` when the client left without a word (the
    /// transport closed); `Some(Err(_))` when the transport failed.
    fn next(&mut self) -> impl Future<Output = Option<Result<Payload, ReadError>>> + Send;
}

/// The server-to-client half of a transport.
pub trait ClientSink: Send {
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

    /// The transport's name, for the `transport` label of the connection
    /// metrics (a fixed set: `websockets`, `server_sent_events`,
    /// `long_polling`, `in_memory`, ...).
    fn transport_name(&self) -> &'static str {
        "unknown"
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

/// A connection that its transport let in (authenticated, its token
/// checked), about to begin its handshake.
#[derive(Debug)]
pub struct Accepted<G = ()> {
    /// The id the connection gets.
    pub connection_id: ConnectionId,
    /// The authenticated user.
    pub user: Option<String>,
    /// Held while the connection lives, dropped when it ends (a transport
    /// keeps its connection token in use with it, say).
    pub guard: G,
    /// Whether the transport agreed to stateful reconnect (the handshake
    /// must still ask for hub protocol version 2).
    pub stateful: bool,
}

impl Accepted {
    /// A connection with a fresh id, for `user`, without stateful
    /// reconnect.
    pub fn new(user: Option<String>) -> Accepted {
        Accepted {
            connection_id: ConnectionId::random(),
            user,
            guard: (),
            stateful: false,
        }
    }
}

/// A transport's two halves.
#[derive(Debug)]
pub struct Transport<S, K> {
    /// What the client sends.
    pub stream: S,
    /// Where the server writes.
    pub sink: K,
}

/// Serves one connection over `transport` until it ends.
///
/// `reattach`, for a connection that negotiated stateful reconnect, brings
/// the transports a client opens later with the same token: when the
/// handshake makes the connection stateful, a lost transport is waited for
/// (up to the reconnect window) and replaced, and a new one arriving while
/// the old one seems alive takes its place (the client knows best).
///
/// The session runs in a `connection` span (at debug level, so that an
/// idle connection costs nothing with the usual `info` filter) with the
/// connection id, whether it has a user, the transport and, once the
/// handshake is done, the protocol.
pub fn run<S: ClientStream, K: ClientSink, G: Send>(
    shared: Arc<Sessions>,
    transport: Transport<S, K>,
    accepted: Accepted<G>,
    reattach: Option<Arc<Handoff<Transport<S, K>>>>,
) -> impl Future<Output = ()> + Send {
    let span = tracing::debug_span!(
        "connection",
        connection_id = %accepted.connection_id,
        user = accepted.user.is_some(),
        transport = transport.sink.transport_name(),
        protocol = tracing::field::Empty,
    );
    serve(shared, transport, accepted, reattach).instrument(span)
}

async fn serve<S: ClientStream, K: ClientSink, G: Send>(
    shared: Arc<Sessions>,
    transport: Transport<S, K>,
    accepted: Accepted<G>,
    reattach: Option<Arc<Handoff<Transport<S, K>>>>,
) {
    let Accepted {
        connection_id,
        user,
        guard,
        stateful,
    } = accepted;
    let options = &shared.options;
    let Transport {
        mut stream,
        mut sink,
    } = transport;
    // Counted from the start, so that a drain waits for (or sees) every
    // session its endpoint let in.
    let open = shared.enter();
    if shared.draining.is_raised() {
        return;
    }
    let mut buf = BytesMut::new();
    let Some((protocol, version)) =
        handshake(&shared, &mut stream, &mut sink, &mut buf, &connection_id).await
    else {
        return;
    };
    let reattach = match reattach {
        Some(handoff) if stateful && version >= STATEFUL_RECONNECT_VERSION => Some(handoff),
        // Not stateful after all: a socket presenting the token is refused.
        Some(handoff) => {
            if let Some(mut late) = handoff.close() {
                late.sink.finish().await;
            }
            None
        }
        None => None,
    };

    let mut connection_options = ConnectionOptions::new(protocol)
        .queue_capacity(options.queue_capacity)
        .slow_consumer(options.slow_consumer);
    connection_options.user = user;
    let (connection, mut receiver) = Connection::with_id(connection_id.clone(), connection_options);
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
    // Boxed: only stateful connections have one, and every connection's
    // future would otherwise carry its room.
    let replay = reattach
        .is_some()
        .then(|| Box::new(Replay::new(options.stateful_reconnect_buffer_size)));
    tracing::Span::current().record("protocol", protocol.name());
    tracing::debug!(%connection_id, %protocol, user = connection.user(), stateful = replay.is_some(), "connected");
    let _counted = OpenGauge::new(sink.transport_name(), protocol);

    let mut transport = Transport { stream, sink };
    // For a transport that replaces a lost one: the Sequence and the
    // frames to replay.
    let mut resume: Option<(u64, Vec<Bytes>)> = None;
    let end = loop {
        let state = SessionState {
            connection: connection.clone(),
            protocol,
            stop_writer: Flag::default(),
            lost: Flag::default(),
            allow_reconnect: AtomicBool::new(true),
            replay: replay.as_deref(),
        };
        let mut replaced = None;
        let Transport { stream, sink } = transport;
        let reader = async {
            let end = read_loop(
                &shared,
                &state,
                stream,
                buf,
                &session,
                reattach.as_deref(),
                &mut replaced,
            )
            .await;
            match &end {
                End::Quiet | End::ClientClose(_) | End::Replaced => state.stop_writer.raise(),
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
                // Kept for the client to come back.
                End::Transport { lost: true, .. } if state.replay.is_some() => {
                    state.stop_writer.raise();
                }
                End::Transport { reason, .. } => {
                    state.allow_reconnect.store(false, Ordering::Relaxed);
                    connection.close(reason.clone());
                }
            }
            end
        };
        let writer = write_loop(&shared, &state, sink, &mut receiver, resume.take());
        let (end, ()) = tokio::join!(reader, writer);
        buf = BytesMut::new();
        let next = match end {
            End::Replaced => {
                tracing::debug!(%connection_id, "a new transport took the connection over");
                replaced
            }
            End::Transport { reason, lost: true } if !connection.is_closed() => {
                match reattach.as_deref() {
                    None => break End::Transport { reason, lost: true },
                    Some(handoff) => {
                        let window = options.stateful_reconnect_window;
                        tracing::debug!(%connection_id, %reason, ?window, "the transport dropped; waiting for the client to reconnect");
                        tokio::select! {
                            next = handoff.take() => Some(next),
                            () = connection.closed() => break End::ServerClose,
                            () = shared.draining.raised() => {
                                connection.close(DRAIN_REASON);
                                break End::ServerClose;
                            }
                            () = tokio::time::sleep(window) => break End::Error {
                                reason: not_back_in(window),
                                allow_reconnect: true,
                            },
                        }
                    }
                }
            }
            other => break other,
        };
        match (next, &replay) {
            (Some(next), Some(replay)) => {
                tracing::debug!(%connection_id, "the client reconnected");
                resume = Some(replay.resume());
                transport = next;
            }
            // Unreachable: only a stateful connection gets another transport.
            _ => break End::Quiet,
        }
    };

    // No transport is taken from now on.
    if let Some(mut late) = reattach.as_deref().and_then(Handoff::close) {
        late.sink.finish().await;
    }
    let error = match end {
        End::Quiet | End::Replaced => {
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
        End::Transport { reason, .. } => {
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
    drop(open);
    drop(guard);
}

/// Counts a connection in `switchboard_connections` while it lives.
struct OpenGauge(metrics::Gauge);

impl OpenGauge {
    fn new(transport: &'static str, protocol: Protocol) -> OpenGauge {
        let gauge = metrics::gauge!(
            switchboard_core::metrics::CONNECTIONS,
            "transport" => transport,
            "protocol" => protocol.name(),
        );
        gauge.increment(1.0);
        OpenGauge(gauge)
    }
}

impl Drop for OpenGauge {
    fn drop(&mut self) {
        self.0.decrement(1.0);
    }
}

/// What the reader and the writer of one transport share.
#[derive(Debug)]
struct SessionState<'a> {
    /// The connection; closing it ends the reader and makes the writer send
    /// a Close message.
    connection: Connection,
    /// The hub protocol agreed in the handshake.
    protocol: Protocol,
    /// Cancelled when the client has gone: the writer stops without
    /// sending anything more.
    stop_writer: Flag,
    /// Cancelled by the writer of a stateful connection when a write
    /// fails: the reader ends as for a lost transport.
    lost: Flag,
    /// What the Close message tells clients with automatic reconnect:
    /// transient server-side closes allow it, protocol errors do not.
    allow_reconnect: AtomicBool,
    /// The sequence state of a stateful-reconnect connection.
    replay: Option<&'a Replay>,
}

/// Reads the handshake request and answers errors; returns the agreed
/// protocol and the hub protocol version asked for, or `None` when the
/// connection must be dropped. Bytes after the handshake record stay in
/// `buf`.
async fn handshake<S: ClientStream, K: ClientSink>(
    shared: &Sessions,
    stream: &mut S,
    sink: &mut K,
    buf: &mut BytesMut,
    connection_id: &ConnectionId,
) -> Option<(Protocol, u32)> {
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
        let next = tokio::select! {
            next = tokio::time::timeout_at(deadline, stream.next()) => next,
            () = shared.draining.raised() => {
                tracing::debug!(%connection_id, "the endpoint drains: handshake abandoned");
                return None;
            }
        };
        match next {
            Err(_) => {
                tracing::debug!(%connection_id, "handshake timed out");
                finish_timed(sink, options.client_timeout).await;
                return None;
            }
            Ok(None) => {
                tracing::debug!(%connection_id, "the client left during the handshake");
                return None;
            }
            Ok(Some(Err(e))) => {
                tracing::debug!(%connection_id, reason = %e.reason, "transport error during the handshake");
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
    Some((protocol, request.version))
}

/// Answers a handshake with an error, then ends the transport.
async fn refuse<K: ClientSink>(shared: &Sessions, sink: &mut K, binary: bool, error: &str) {
    let response = write_handshake_response(Some(error));
    let timeout = shared.options.client_timeout;
    if send_timed(sink, response, binary, timeout).await.is_ok() {
        finish_timed(sink, timeout).await;
    }
}

/// How the reader ended.
#[derive(Debug)]
enum End {
    /// The transport closed without a word from the client.
    Quiet,
    /// The client sent a Close message, with its error if any.
    ClientClose(Option<String>),
    /// The server closed the connection (the writer says why).
    ServerClose,
    /// The transport failed: usually the client vanished without closing
    /// (`lost`), or sent a message over the transport's limit. A Close
    /// message is still attempted, unless a stateful connection waits for
    /// its client to reconnect.
    Transport {
        /// Sent in the Close message if the transport still takes it.
        reason: String,
        /// Whether the transport was lost rather than refused a message.
        lost: bool,
    },
    /// The client broke the protocol or timed out.
    Error {
        /// Sent in the Close message.
        reason: String,
        /// Sent in the Close message.
        allow_reconnect: bool,
    },
    /// The client opened a new transport for the connection, which takes
    /// this one's place.
    Replaced,
}

fn protocol_error(e: &dyn std::fmt::Display) -> End {
    End::Error {
        reason: format!("Connection closed with an error: {e}."),
        allow_reconnect: false,
    }
}

/// Waits for a transport that replaces the current one; never completes
/// without `reattach`.
async fn next_transport<S, K>(reattach: Option<&Handoff<Transport<S, K>>>) -> Transport<S, K> {
    match reattach {
        Some(handoff) => handoff.take().await,
        None => std::future::pending().await,
    }
}

/// Why a stateful connection ended when its client did not come back.
fn not_back_in(window: Duration) -> String {
    format!(
        "The client did not reconnect within {} ms.",
        window.as_millis()
    )
}

/// Parses everything the client sends and hands it to the session.
async fn read_loop<S: ClientStream, K>(
    shared: &Sessions,
    state: &SessionState<'_>,
    mut stream: S,
    buf: BytesMut,
    session: &HubSession,
    reattach: Option<&Handoff<Transport<S, K>>>,
    replaced: &mut Option<Transport<S, K>>,
) -> End {
    let options = &shared.options;
    let connection = &state.connection;
    let draining = &shared.draining;
    let mut input = Input::new(buf);
    // Once the endpoint drains: completes when the connection's invocations
    // are done, or the drain's grace is over. Boxed, and only then made.
    let mut drain: Option<BoxFuture<'_, ()>> = None;
    loop {
        loop {
            let message = match state
                .protocol
                .parse_message(&mut input.buf, options.max_message_size)
            {
                Ok(Some(message)) => message,
                Ok(None) => break,
                Err(e) => return protocol_error(&e),
            };
            match message {
                HubMessage::Ping => {}
                HubMessage::Close { error, .. } => return End::ClientClose(error),
                HubMessage::Ack { sequence_id } => {
                    if let Some(replay) = state.replay
                        && let Err(e) = replay.ack(sequence_id)
                    {
                        return protocol_error(&e);
                    }
                }
                HubMessage::Sequence { sequence_id } => {
                    if let Some(replay) = state.replay
                        && let Err(e) = replay.sequence(sequence_id)
                    {
                        return protocol_error(&e);
                    }
                }
                other => {
                    if let Some(replay) = state.replay
                        && other.is_trackable()
                        && replay.inbound() == Inbound::Skip
                    {
                        continue;
                    }
                    // Draining: nothing new starts; answers, stream items
                    // and cancellations still reach what runs.
                    if drain.is_some() && refuse_while_draining(state, &other) {
                        continue;
                    }
                    // Only the connection's end interrupts the hand-over
                    // (an upload stream's item may wait for room): a
                    // message numbered for stateful reconnect is handled
                    // whole, or the connection is gone. A replaced
                    // transport is seen right after; a lost one bounds the
                    // wait by the reconnect window, as if the client were
                    // away, and a drain by its grace.
                    // Boxed: the hand-over's future is large, and would
                    // otherwise sit in every idle connection's reader.
                    let mut handled = Box::pin(session.handle(other));
                    let bound = tokio::select! {
                        () = &mut handled => None,
                        () = connection.closed() => return End::ServerClose,
                        () = state.lost.raised() => Some((options.stateful_reconnect_window, false)),
                        () = draining.raised(), if drain.is_none() => {
                            Some((shared.grace(), true))
                        }
                    };
                    if let Some((bound, drained)) = bound {
                        tokio::select! {
                            () = handled => {}
                            () = connection.closed() => return End::ServerClose,
                            () = tokio::time::sleep(bound) => {
                                if drained {
                                    connection.close(DRAIN_REASON);
                                    return End::ServerClose;
                                }
                                return End::Error {
                                    reason: not_back_in(bound),
                                    allow_reconnect: true,
                                };
                            }
                        }
                        if !drained {
                            return lost_by_writer();
                        }
                    }
                }
            }
        }
        input.settle();
        if drain.is_none() && draining.is_raised() {
            drain = Some(until_idle(shared, session));
        }
        // Only the time spent waiting for the client counts towards the
        // client timeout: while the session holds the reader back (too many
        // invocations running), the client is not to blame.
        let next = tokio::select! {
            () = connection.closed() => return End::ServerClose,
            () = draining.raised(), if drain.is_none() => {
                drain = Some(until_idle(shared, session));
                continue;
            }
            Some(()) = futures::future::OptionFuture::from(drain.as_mut()), if drain.is_some() => {
                // What the client invoked is done (or out of time): it is
                // told to reconnect, to another server.
                connection.close(DRAIN_REASON);
                return End::ServerClose;
            }
            () = state.lost.raised() => return lost_by_writer(),
            transport = next_transport(reattach) => {
                *replaced = Some(transport);
                return End::Replaced;
            }
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
                    reason: format!("Connection closed with an error: {}.", e.reason),
                    lost: e.lost,
                };
            }
            // Payloads of either kind are accepted whatever the protocol:
            // the bytes are what counts, and some clients differ.
            Ok(Some(Ok(payload))) => input.extend(&payload.bytes),
        }
    }
}

/// Completes when the connection's invocations are done, or after the
/// drain's grace (what still runs is then cancelled when the session
/// closes).
fn until_idle<'a>(shared: &Sessions, session: &'a HubSession) -> BoxFuture<'a, ()> {
    let grace = shared.grace();
    let connection_id = session.connection().id().clone();
    Box::pin(async move {
        if tokio::time::timeout(grace, session.idle()).await.is_err() {
            tracing::info!(%connection_id, ?grace, "invocations still running after the drain's grace are cancelled");
        }
    })
}

/// During a drain, answers a new Invocation or StreamInvocation with an
/// error instead of running it; `true` if `message` was one.
fn refuse_while_draining(state: &SessionState<'_>, message: &HubMessage) -> bool {
    let invocation = match message {
        HubMessage::Invocation(invocation) | HubMessage::StreamInvocation(invocation) => invocation,
        _ => return false,
    };
    if let Some(id) = &invocation.invocation_id {
        let refusal = state.protocol.write_completion_error(id, DRAIN_REASON);
        let _ = state.connection.send_frame(refusal);
    }
    true
}

/// What the client sent that is not parsed yet.
///
/// A large message grows the buffer, and the parsed message keeps sharing
/// its allocation; so once a buffer that held more than [`KEEP_INPUT`] is
/// empty again, it lets go of that allocation, or one large message would
/// keep the connection's buffer large for good.
#[derive(Debug)]
struct Input {
    buf: BytesMut,
    large: bool,
}

/// Beyond this many bytes the input buffer is released once empty.
const KEEP_INPUT: usize = 64 * 1024;

impl Input {
    fn new(buf: BytesMut) -> Input {
        let large = buf.len() > KEEP_INPUT;
        Input { buf, large }
    }

    fn extend(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
        self.large |= self.buf.len() > KEEP_INPUT;
    }

    /// Called when everything complete has been parsed.
    fn settle(&mut self) {
        if self.large && self.buf.is_empty() {
            self.buf = BytesMut::new();
            self.large = false;
        }
    }
}

/// How the reader ends when the writer of a stateful connection failed.
fn lost_by_writer() -> End {
    End::Transport {
        reason: "the connection's transport failed".to_owned(),
        lost: true,
    }
}

/// What the writer does next.
enum Next {
    Frame(Bytes),
    KeepAlive,
    Closed,
    Stop,
    /// Look again: an Ack may have made room, the connection may be
    /// closing.
    Again,
    /// The client sent something that waits for an Ack.
    AckDue,
    /// Time to send the Ack.
    Ack,
}

/// Completes when `replay` may have room again; never without one.
async fn room(replay: Option<&Replay>) {
    match replay {
        Some(replay) => replay.room().await,
        None => std::future::pending().await,
    }
}

/// Completes when the client sent something to acknowledge; never without
/// a replay.
async fn ack_due(replay: Option<&Replay>) {
    match replay {
        Some(replay) => replay.ack_due().await,
        None => std::future::pending().await,
    }
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
///
/// On a stateful connection every frame is kept until the client
/// acknowledges it (the writer takes nothing from the queue while the
/// replay buffer is full), Acks go out [`ACK_DELAY`] after what they
/// acknowledge, and a transport that replaces a lost one first gets the
/// Sequence and the frames to replay (`resume`). A failed write ends the
/// transport, not the connection.
async fn write_loop<K: ClientSink>(
    shared: &Sessions,
    state: &SessionState<'_>,
    mut sink: K,
    receiver: &mut ConnectionReceiver,
    resume: Option<(u64, Vec<Bytes>)>,
) {
    let options = &shared.options;
    let connection = &state.connection;
    let protocol = state.protocol;
    let binary = protocol.is_binary();
    let replay = state.replay;
    if let Some((sequence, frames)) = resume
        // Boxed: rare, and its future would sit in every writer.
        && !Box::pin(write_replay(state, &mut sink, sequence, frames, options.client_timeout)).await
    {
        return failed(state);
    }
    let queue_depth = metrics::histogram!(switchboard_core::metrics::OUTBOUND_QUEUE_DEPTH);
    let mut last_sent = Instant::now();
    // When the rest must be written by, once the server has closed.
    let mut closing: Option<Instant> = None;
    // When the pending Ack goes out.
    let mut ack_at: Option<Instant> = None;
    // One timer for the pending Ack and the keep-alive, re-armed only when
    // the next of them comes earlier than it is set for, or once it has
    // fired: a write moves the keep-alive later without touching the timer,
    // which then fires early once per interval and is set again.
    let timer = tokio::time::sleep_until(last_sent + options.keep_alive_interval);
    tokio::pin!(timer);
    let mut timer_at = last_sent + options.keep_alive_interval;
    loop {
        let keep_alive_at = last_sent + options.keep_alive_interval;
        let due = ack_at.map_or(keep_alive_at, |at| at.min(keep_alive_at));
        if due < timer_at || timer.is_elapsed() {
            timer.as_mut().reset(due);
            timer_at = due;
        }
        // A full replay buffer holds the queue back, until the connection
        // closes: then what is queued still goes out.
        let full = replay.is_some_and(Replay::is_full) && !connection.is_closed();
        let next = tokio::select! {
            biased;
            () = state.stop_writer.raised() => Next::Stop,
            frame = receiver.recv(), if !full => match frame {
                Some(frame) => Next::Frame(frame),
                None => Next::Closed,
            },
            () = room(replay), if full => Next::Again,
            () = connection.closed(), if full => Next::Again,
            () = ack_due(replay), if ack_at.is_none() => Next::AckDue,
            () = &mut timer => {
                let now = Instant::now();
                match ack_at {
                    Some(at) if at <= now => Next::Ack,
                    _ if last_sent + options.keep_alive_interval <= now => Next::KeepAlive,
                    // Set for a keep-alive that a write has moved on.
                    _ => Next::Again,
                }
            },
        };
        let frames = match next {
            Next::Stop => {
                // The client is leaving: end the transport if it still
                // takes that, without waiting long.
                let _ = tokio::time::timeout(STOP_GRACE, sink.finish()).await;
                return;
            }
            Next::Again => continue,
            Next::AckDue => {
                ack_at = Some(Instant::now() + ACK_DELAY);
                continue;
            }
            Next::Ack => {
                ack_at = None;
                match replay.and_then(Replay::take_ack) {
                    Some(sequence_id) => protocol.write_ack(sequence_id),
                    None => continue,
                }
            }
            Next::Frame(first) => {
                queue_depth.record((1 + receiver.queued()) as f64);
                let deadline = closing.unwrap_or_else(|| Instant::now() + options.client_timeout);
                tokio::select! {
                    _ = tokio::time::timeout_at(deadline, sink.ready()) => {}
                    // Closing: the write below gets the grace.
                    () = connection.closed(), if closing.is_none() => {}
                }
                batch(first, receiver, sink.batch_limits(), replay)
            }
            Next::KeepAlive => protocol.write_ping(),
            Next::Closed => {
                let deadline = *closing.get_or_insert_with(|| Instant::now() + sink.close_grace());
                let reason = connection.close_reason();
                let allow_reconnect = state.allow_reconnect.load(Ordering::Relaxed);
                let close = protocol.write_close(reason.as_deref(), allow_reconnect);
                if send_until(state, &mut sink, close, binary, deadline).await {
                    tokio::select! {
                        () = state.stop_writer.raised() => {}
                        _ = tokio::time::timeout_at(deadline, sink.finish()) => {}
                    }
                }
                return;
            }
        };
        // The server closing the connection during the write (a client too
        // slow for the slow-consumer policy has a full socket) cuts the
        // write to the grace, from the client timeout.
        let sent = match closing {
            Some(deadline) => send_until(state, &mut sink, frames, binary, deadline).await,
            None => {
                let grace = sink.close_grace();
                let deadline = Instant::now() + options.client_timeout;
                let (sent, closed_at) =
                    send_or_grace(state, &mut sink, frames, binary, deadline, grace).await;
                closing = closed_at;
                sent
            }
        };
        if !sent {
            return failed(state);
        }
        last_sent = Instant::now();
    }
}

/// A write failed: a stateful connection loses its transport (the reader
/// ends and the client may reconnect); any other connection closes.
fn failed(state: &SessionState<'_>) {
    if state.stop_writer.is_raised() {
        return;
    }
    if state.replay.is_some() && !state.connection.is_closed() {
        state.lost.raise();
    } else {
        state.connection.close("the connection's transport failed");
    }
}

/// Writes the Sequence and the frames the client has not acknowledged, in
/// batches; `false` if the transport did not take them.
async fn write_replay<K: ClientSink>(
    state: &SessionState<'_>,
    sink: &mut K,
    sequence: u64,
    frames: Vec<Bytes>,
    timeout: Duration,
) -> bool {
    let binary = state.protocol.is_binary();
    let limits = sink.batch_limits();
    let mut batch = BytesMut::from(&state.protocol.write_sequence(sequence)[..]);
    let mut count = 1;
    for frame in frames {
        if count >= limits.frames || batch.len() >= limits.bytes {
            let full = std::mem::take(&mut batch).freeze();
            if !send_until(state, sink, full, binary, Instant::now() + timeout).await {
                return false;
            }
            count = 0;
        }
        batch.extend_from_slice(&frame);
        count += 1;
    }
    send_until(
        state,
        sink,
        batch.freeze(),
        binary,
        Instant::now() + timeout,
    )
    .await
}

/// Joins `first` with the frames queued right behind it, so a burst costs
/// one transport write instead of many; SignalR framing keeps the records
/// apart. Each frame is one hub message: a stateful connection's `replay`
/// records each (and the batch stops growing when the buffer is full).
fn batch(
    first: Bytes,
    receiver: &mut ConnectionReceiver,
    limits: BatchLimits,
    replay: Option<&Replay>,
) -> Bytes {
    let more = |receiver: &mut ConnectionReceiver| {
        if replay.is_some_and(Replay::is_full) {
            return None;
        }
        let frame = receiver.try_recv()?;
        if let Some(replay) = replay {
            replay.record(&frame);
        }
        Some(frame)
    };
    if let Some(replay) = replay {
        replay.record(&first);
    }
    if first.len() >= limits.bytes || limits.frames < 2 {
        return first;
    }
    let Some(second) = more(receiver) else {
        return first;
    };
    let mut joined = BytesMut::with_capacity(first.len() + second.len());
    joined.extend_from_slice(&first);
    joined.extend_from_slice(&second);
    for _ in 2..limits.frames {
        if joined.len() >= limits.bytes {
            break;
        }
        match more(receiver) {
            Some(frame) => joined.extend_from_slice(&frame),
            None => break,
        }
    }
    joined.freeze()
}

/// Sends one batch unless the writer is told to stop or the client does
/// not take it by `deadline`; `false` if it was not sent.
async fn send_until<K: ClientSink>(
    state: &SessionState<'_>,
    sink: &mut K,
    frames: Bytes,
    binary: bool,
    deadline: Instant,
) -> bool {
    let never = Duration::MAX;
    let (sent, _) = send_within(state, sink, frames, binary, deadline, None, never).await;
    sent
}

/// [`send_until`], cut to `grace` from the moment the connection closes
/// during the write; also returns the deadline so set, if it was.
async fn send_or_grace<K: ClientSink>(
    state: &SessionState<'_>,
    sink: &mut K,
    frames: Bytes,
    binary: bool,
    deadline: Instant,
    grace: Duration,
) -> (bool, Option<Instant>) {
    let connection = Some(&state.connection);
    send_within(state, sink, frames, binary, deadline, connection, grace).await
}

/// One write with one timer: `deadline`, moved to `grace` from the close
/// of `watch` if that comes first.
async fn send_within<K: ClientSink>(
    state: &SessionState<'_>,
    sink: &mut K,
    frames: Bytes,
    binary: bool,
    deadline: Instant,
    mut watch: Option<&Connection>,
    grace: Duration,
) -> (bool, Option<Instant>) {
    let connection_id = state.connection.id();
    let send = sink.send(frames, binary);
    let mut send = std::pin::pin!(send);
    let timer = tokio::time::sleep_until(deadline);
    let mut timer = std::pin::pin!(timer);
    let mut closing = None;
    loop {
        tokio::select! {
            biased;
            () = state.stop_writer.raised() => return (false, closing),
            sent = &mut send => {
                if let Err(e) = &sent {
                    tracing::debug!(%connection_id, error = %e, "a write to the client failed");
                }
                return (sent.is_ok(), closing);
            }
            () = &mut timer => {
                tracing::info!(%connection_id, "the client did not accept a write in time");
                return (false, closing);
            }
            () = async { if let Some(c) = watch { c.closed().await } }, if watch.is_some() => {
                watch = None;
                let cut = Instant::now() + grace;
                closing = Some(cut);
                if cut < timer.deadline() {
                    timer.as_mut().reset(cut);
                }
            }
        }
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// Parses one message out of `input`.
    fn parse_one(protocol: Protocol, input: &mut Input) -> bool {
        let parsed = protocol.parse_message(&mut input.buf, usize::MAX);
        parsed.unwrap().is_some()
    }

    #[test]
    fn the_input_buffer_lets_go_of_a_large_message_once_parsed() {
        let protocol = Protocol::Json;
        let small = protocol.write_ping();
        let large = protocol
            .write_invocation(None, "send", &("x".repeat(1 << 20),))
            .unwrap();
        let mut input = Input::new(BytesMut::new());
        input.extend(&small);
        assert!(parse_one(protocol, &mut input));
        input.settle();
        assert!(!input.large);

        input.extend(&large[..1000]);
        input.extend(&large[1000..]);
        assert!(parse_one(protocol, &mut input));
        input.settle();
        let held = input.buf.capacity();
        assert_eq!(held, 0, "the large allocation is still held");
        // It works on as before.
        input.extend(&small);
        assert!(parse_one(protocol, &mut input));
        assert!(input.buf.capacity() < 64 * 1024);
    }
}

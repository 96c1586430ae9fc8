//! The two HTTP transports, Server-Sent Events and long polling: a
//! connection that outlives its requests.
//!
//! Both take the client's messages from `POST {path}?id=`; they differ in
//! how the server's frames reach the client: one long `text/event-stream`
//! response, or one poll after another. A connection lives in the
//! [`HttpConnections`] table, under its connection token, from the request
//! that opens it until its session ends.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use axum::body::Body;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::{BufMut, Bytes, BytesMut};
use parking_lot::Mutex;
use tokio::sync::{Notify, mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use switchboard_session::{
    self as session, BatchLimits, ClientSink, ClientStream, Payload, ReadError, Transport,
};

use crate::router::{Accepted, Refusal, Shared, plain};

/// How many POSTed payloads may wait for the session's reader; a POST
/// beyond that waits (the client's send is back-pressured).
const INBOUND_CAPACITY: usize = 8;

/// How long a long-polling client has, once the server closed its
/// connection, to poll for the Close message: a poll is a round trip, and
/// the client may be between two.
const POLL_CLOSE_GRACE: Duration = Duration::from_secs(5);

/// How long a connection that ended stays known, so that its client's next
/// poll gets 204 (ended) rather than 404, and a POST 404.
const LINGER: Duration = Duration::from_secs(5);

/// A poll's answer stops growing once it holds this many bytes (the
/// connection's queue is bounded in frames; this bounds it in bytes).
const MAX_POLL_BYTES: usize = 8 * 1024 * 1024;

/// How many SSE events may wait for the response body to take them.
const EVENT_CAPACITY: usize = 4;

/// Which HTTP transport a connection uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    ServerSentEvents,
    LongPolling,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::ServerSentEvents => "ServerSentEvents",
            Kind::LongPolling => "LongPolling",
        }
    }
}

/// The open HTTP-transport connections, by connection token.
#[derive(Default)]
pub(crate) struct HttpConnections {
    map: Mutex<HashMap<String, Arc<HttpConnection>>>,
}

/// Tokens are secrets: `Debug` shows how many connections are open, never
/// their tokens.
impl std::fmt::Debug for HttpConnections {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpConnections")
            .field("open", &self.map.lock().len())
            .finish()
    }
}

/// One open SSE or long-polling connection.
#[derive(Debug)]
pub(crate) struct HttpConnection {
    kind: Kind,
    /// The user the connection was opened by; every request of the
    /// connection must authenticate as the same.
    user: Option<String>,
    /// POSTed payloads, to the session's reader.
    inbound: mpsc::Sender<Bytes>,
    /// Set while a POST is being taken in: a second one at the same time is
    /// refused with 409.
    posting: AtomicBool,
    /// Cancelled when the connection ends, whoever ends it (DELETE, the
    /// client gone, the session over).
    ended: CancellationToken,
    /// Long polling: the poll waiting for frames.
    poll: Mutex<Option<Poll>>,
    /// Long polling: told when a poll arrives.
    poll_arrived: Notify,
    /// Long polling: numbers the polls, so a poll that times out removes
    /// itself and not a newer one.
    next_poll: AtomicU64,
}

/// A waiting poll.
#[derive(Debug)]
struct Poll {
    id: u64,
    answer: oneshot::Sender<Answer>,
}

/// How a poll ends.
#[derive(Debug)]
enum Answer {
    /// Frames for the client: 200 with them.
    Frames(Bytes),
    /// A newer poll took its place, or the connection ended: 204.
    Done,
}

impl HttpConnections {
    fn get(&self, token: &str) -> Option<Arc<HttpConnection>> {
        self.map.lock().get(token).cloned()
    }

    /// Whether `token` names an open connection.
    pub(crate) fn contains(&self, token: &str) -> bool {
        self.map.lock().contains_key(token)
    }

    fn remove(&self, token: &str) {
        self.map.lock().remove(token);
    }
}

/// Opens a connection of `kind` for a claimed token and starts its session;
/// returns the response to the opening request.
pub(crate) fn open(shared: Arc<Shared>, kind: Kind, token: String, accepted: Accepted) -> Response {
    let (inbound, inbound_rx) = mpsc::channel(INBOUND_CAPACITY);
    let connection = Arc::new(HttpConnection {
        kind,
        user: accepted.user.clone(),
        inbound,
        posting: AtomicBool::new(false),
        ended: CancellationToken::new(),
        poll: Mutex::new(None),
        poll_arrived: Notify::new(),
        next_poll: AtomicU64::new(0),
    });
    shared
        .http
        .map
        .lock()
        .insert(token.clone(), connection.clone());
    let stream = Inbound {
        receiver: inbound_rx,
        ended: connection.ended.clone(),
    };
    let serving = Serving {
        shared: shared.clone(),
        connection: connection.clone(),
        token,
        stream,
        accepted,
    };
    match kind {
        Kind::ServerSentEvents => {
            let (events, events_rx) = mpsc::channel(EVENT_CAPACITY);
            tokio::spawn(serving.run(EventSink {
                events,
                ended: connection.ended.clone(),
            }));
            event_stream(events_rx, connection.ended.clone())
        }
        Kind::LongPolling => {
            tokio::spawn(serving.run(PollSink {
                connection: connection.clone(),
            }));
            // The first poll returns at once: the client sends its
            // handshake only after it.
            StatusCode::OK.into_response()
        }
    }
}

/// A connection's session, about to start.
struct Serving {
    shared: Arc<Shared>,
    connection: Arc<HttpConnection>,
    token: String,
    stream: Inbound,
    accepted: Accepted,
}

impl Serving {
    /// Runs the session on `sink`, then forgets the connection.
    async fn run<K: ClientSink>(self, sink: K) {
        let transport = Transport {
            stream: self.stream,
            sink,
        };
        // Stateful reconnect is a WebSockets matter: the official clients
        // reconnect only those.
        session::run::<Inbound, K, _>(self.shared.sessions.clone(), transport, self.accepted, None)
            .await;
        self.connection.ended.cancel();
        tokio::time::sleep(LINGER).await;
        self.shared.http.remove(&self.token);
    }
}

/// The `text/event-stream` response carrying `events` until the connection
/// ends. Dropping the body (the client went away) ends the connection.
fn event_stream(events: mpsc::Receiver<Bytes>, ended: CancellationToken) -> Response {
    let guard = ended.clone().drop_guard();
    let body = futures::stream::unfold(
        (events, ended, guard),
        |(mut events, ended, guard)| async move {
            let next = tokio::select! {
                biased;
                event = events.recv() => event,
                () = ended.cancelled() => None,
            };
            next.map(|event| {
                (
                    Ok::<_, std::convert::Infallible>(event),
                    (events, ended, guard),
                )
            })
        },
    );
    let mut response = Body::from_stream(body).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    // Neither caches nor proxies may hold events back or transform them.
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("no-cache, no-transform"),
    );
    headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
    response
}

/// `GET {path}?id=` on an open connection, asking for `kind`: a poll;
/// 400 for the other transport's connection, 409 for a second event
/// stream.
pub(crate) async fn get(shared: &Shared, connection: Arc<HttpConnection>, kind: Kind) -> Response {
    match (connection.kind, kind) {
        (Kind::LongPolling, Kind::LongPolling) => poll(shared, connection).await,
        (Kind::ServerSentEvents, Kind::ServerSentEvents) => plain(
            StatusCode::CONFLICT,
            "The connection has an event stream already.",
        ),
        (Kind::ServerSentEvents, Kind::LongPolling) => plain(
            StatusCode::BAD_REQUEST,
            "The connection does not use long polling.",
        ),
        (Kind::LongPolling, Kind::ServerSentEvents) => plain(
            StatusCode::BAD_REQUEST,
            "The connection does not use Server-Sent Events.",
        ),
    }
}

/// One poll of a long-polling connection.
async fn poll(shared: &Shared, connection: Arc<HttpConnection>) -> Response {
    if connection.ended.is_cancelled() {
        return StatusCode::NO_CONTENT.into_response();
    }
    let (answer, answered) = oneshot::channel();
    let id = connection.next_poll.fetch_add(1, Ordering::Relaxed);
    let replaced = connection.poll.lock().replace(Poll { id, answer });
    if let Some(old) = replaced {
        let _ = old.answer.send(Answer::Done);
    }
    connection.poll_arrived.notify_one();
    let timeout = shared.options.long_poll_timeout;
    let mut answered = answered;
    let waited = tokio::select! {
        biased;
        answer = tokio::time::timeout(timeout, &mut answered) => answer,
        // The connection ended without answering this poll (it came as
        // the session ended).
        () = connection.ended.cancelled() => Ok(Ok(Answer::Done)),
    };
    let answer = match waited {
        Ok(answer) => answer.ok(),
        Err(_) => {
            // Nothing came: take this poll out of the slot, so the writer
            // can no longer pick it; should the writer have picked it just
            // before, its frames are in the channel already.
            {
                let mut poll = connection.poll.lock();
                if poll.as_ref().is_some_and(|p| p.id == id) {
                    *poll = None;
                }
            }
            // Closed first, so that a writer that took this poll just
            // before is told it is gone (and keeps its frames for the
            // next poll) unless it has sent already.
            answered.close();
            match answered.try_recv() {
                Ok(answer) => Some(answer),
                // An empty 200, and the client polls again.
                Err(_) => return StatusCode::OK.into_response(),
            }
        }
    };
    match answer {
        Some(Answer::Frames(frames)) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "application/octet-stream")],
            frames,
        )
            .into_response(),
        Some(Answer::Done) | None => StatusCode::NO_CONTENT.into_response(),
    }
}

/// The largest POST body accepted: the clients join the messages they have
/// queued into one POST, so this is well above one message's limit (each
/// record is still held to `max_message_size` by the session's parser).
pub(crate) fn post_limit(max_message_size: usize) -> usize {
    max_message_size.saturating_mul(64).max(1024 * 1024)
}

/// Clears a connection's "a POST is being taken in" flag, however the POST
/// ends (its future may be dropped half-way).
struct Posting<'a>(&'a AtomicBool);

impl Drop for Posting<'_> {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Release);
    }
}

/// `POST {path}?id=`: the client's messages.
pub(crate) async fn post(
    shared: &Shared,
    connection: Arc<HttpConnection>,
    content_length: Option<u64>,
    body: Body,
) -> Response {
    if connection.ended.is_cancelled() {
        return plain(StatusCode::NOT_FOUND, "No Connection with that ID");
    }
    if connection.posting.swap(true, Ordering::AcqRel) {
        return plain(
            StatusCode::CONFLICT,
            "Another message is being sent on this connection.",
        );
    }
    let _posting = Posting(&connection.posting);
    let limit = post_limit(shared.options.max_message_size);
    if content_length.is_some_and(|length| length > limit as u64) {
        // Any answer but 409 ends the connection for the client: so it
        // does here.
        connection.ended.cancel();
        return plain(
            StatusCode::PAYLOAD_TOO_LARGE,
            "The message is larger than the server accepts.",
        );
    }
    let bytes = match axum::body::to_bytes(body, limit).await {
        Ok(bytes) => bytes,
        Err(_) => {
            connection.ended.cancel();
            return plain(
                StatusCode::BAD_REQUEST,
                "The message body could not be read, or is larger than the server accepts.",
            );
        }
    };
    tokio::select! {
        biased;
        () = connection.ended.cancelled() => plain(StatusCode::NOT_FOUND, "No Connection with that ID"),
        sent = connection.inbound.send(bytes) => match sent {
            Ok(()) => StatusCode::OK.into_response(),
            Err(_) => plain(StatusCode::NOT_FOUND, "No Connection with that ID"),
        },
    }
}

/// `DELETE {path}?id=`: the client ends the connection.
pub(crate) fn delete(connection: &HttpConnection) -> Response {
    connection.ended.cancel();
    plain(StatusCode::ACCEPTED, "")
}

/// Looks up the open connection of `token` for a request that authenticated
/// as `user`: 404 if there is none, 403 if it belongs to another user.
pub(crate) fn find(
    shared: &Shared,
    token: &str,
    user: Option<&str>,
) -> Result<Option<Arc<HttpConnection>>, Refusal> {
    let Some(connection) = shared.http.get(token) else {
        return Ok(None);
    };
    if connection.user.as_deref() != user {
        tracing::debug!(
            transport = connection.kind.name(),
            "request refused: the connection belongs to another user"
        );
        return Err((
            StatusCode::FORBIDDEN,
            "The connection was negotiated by another user",
        ));
    }
    Ok(Some(connection))
}

/// The POSTed payloads, as the session reads them.
struct Inbound {
    receiver: mpsc::Receiver<Bytes>,
    ended: CancellationToken,
}

impl ClientStream for Inbound {
    async fn next(&mut self) -> Option<Result<Payload, ReadError>> {
        tokio::select! {
            biased;
            bytes = self.receiver.recv() => bytes.map(|bytes| Ok(Payload { bytes, binary: false })),
            () = self.ended.cancelled() => None,
        }
    }
}

/// Writes batches as SSE events into the response body.
struct EventSink {
    events: mpsc::Sender<Bytes>,
    ended: CancellationToken,
}

impl ClientSink for EventSink {
    async fn send(&mut self, frames: Bytes, _binary: bool) -> Result<(), String> {
        let event = sse_event(&frames);
        tokio::select! {
            sent = self.events.send(event) => sent.map_err(|_| "the event stream has closed".to_owned()),
            () = self.ended.cancelled() => Err("the event stream has closed".to_owned()),
        }
    }

    async fn finish(&mut self) {
        self.ended.cancel();
    }

    fn transport_name(&self) -> &'static str {
        "server_sent_events"
    }

    fn carries_binary(&self) -> bool {
        false
    }
}

/// One SSE event carrying `frames`: each line of it in a `data:` field,
/// then the blank line that ends the event.
fn sse_event(frames: &[u8]) -> Bytes {
    let mut event = BytesMut::with_capacity(frames.len() + 16);
    for line in frames.split(|b| *b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        event.put_slice(b"data: ");
        event.put_slice(line);
        event.put_slice(b"\r\n");
    }
    event.put_slice(b"\r\n");
    event.freeze()
}

/// Hands batches to polls.
struct PollSink {
    connection: Arc<HttpConnection>,
}

impl ClientSink for PollSink {
    fn transport_name(&self) -> &'static str {
        "long_polling"
    }

    async fn send(&mut self, mut frames: Bytes, _binary: bool) -> Result<(), String> {
        let connection = &self.connection;
        loop {
            let arrived = connection.poll_arrived.notified();
            let waiting = connection.poll.lock().take();
            match waiting {
                Some(poll) => match poll.answer.send(Answer::Frames(frames)) {
                    Ok(()) => return Ok(()),
                    // That poll has just ended (timed out, or its client
                    // left): the frames wait for the next one.
                    Err(Answer::Frames(back)) => frames = back,
                    Err(Answer::Done) => return Ok(()),
                },
                None => {
                    tokio::select! {
                        () = arrived => {}
                        () = connection.ended.cancelled() => return Err("the connection has ended".to_owned()),
                    }
                }
            }
        }
    }

    async fn finish(&mut self) {
        self.connection.ended.cancel();
        if let Some(poll) = self.connection.poll.lock().take() {
            let _ = poll.answer.send(Answer::Done);
        }
    }

    /// A poll takes every frame queued (each poll is a round trip).
    fn batch_limits(&self) -> BatchLimits {
        BatchLimits {
            frames: usize::MAX,
            bytes: MAX_POLL_BYTES,
        }
    }

    async fn ready(&mut self) {
        let connection = &self.connection;
        loop {
            let arrived = connection.poll_arrived.notified();
            if connection.poll.lock().is_some() || connection.ended.is_cancelled() {
                return;
            }
            tokio::select! {
                () = arrived => {}
                () = connection.ended.cancelled() => return,
            }
        }
    }

    fn close_grace(&self) -> Duration {
        POLL_CLOSE_GRACE
    }
}

/// Whether requests of `kind` may run: the transport is switched on.
pub(crate) fn enabled(shared: &Shared, kind: Kind) -> bool {
    match kind {
        Kind::ServerSentEvents => shared.options.server_sent_events,
        Kind::LongPolling => shared.options.long_polling,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_line_of_a_frame_is_a_data_field() {
        assert_eq!(
            &sse_event(b"{\"type\":6}\x1e")[..],
            b"data: {\"type\":6}\x1e\r\n\r\n"
        );
        assert_eq!(
            &sse_event(b"one\ntwo\r\nthree")[..],
            b"data: one\r\ndata: two\r\ndata: three\r\n\r\n"
        );
    }
}

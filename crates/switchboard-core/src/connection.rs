use std::fmt;
use std::sync::Arc;

use bytes::Bytes;

use crate::ConnectionId;
use crate::message::SerializedMessage;
use crate::outbound::{Outbound, Push};
use crate::protocol::Protocol;

/// The default number of frames a connection's outbound queue holds.
pub const DEFAULT_QUEUE_CAPACITY: usize = 1024;

/// What happens when a message arrives for a connection whose outbound queue
/// is full (the client reads more slowly than messages are sent to it).
///
/// Fan-out never waits for one connection: whatever the policy, the sender
/// moves on to the next connection at once.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum SlowConsumerPolicy {
    /// Close the connection with a reason (the client can reconnect and
    /// resynchronise). The default: a client that cannot keep up would
    /// otherwise silently miss messages.
    #[default]
    Close,
    /// Drop the message for this connection only and keep it open.
    DropMessage,
}

/// Settings for a new [`Connection`].
#[derive(Debug, Clone)]
pub struct ConnectionOptions {
    /// The connection's hub protocol.
    pub protocol: Protocol,
    /// The authenticated user, if any.
    pub user: Option<String>,
    /// Outbound queue capacity in frames (at least 1).
    pub queue_capacity: usize,
    /// What to do when the queue is full.
    pub slow_consumer: SlowConsumerPolicy,
}

impl ConnectionOptions {
    /// Options for a connection speaking `protocol`, with defaults otherwise.
    pub fn new(protocol: Protocol) -> ConnectionOptions {
        ConnectionOptions {
            protocol,
            user: None,
            queue_capacity: DEFAULT_QUEUE_CAPACITY,
            slow_consumer: SlowConsumerPolicy::default(),
        }
    }

    /// Sets the user.
    pub fn user(mut self, user: impl Into<String>) -> Self {
        self.user = Some(user.into());
        self
    }

    /// Sets the outbound queue capacity.
    pub fn queue_capacity(mut self, capacity: usize) -> Self {
        self.queue_capacity = capacity;
        self
    }

    /// Sets the slow-consumer policy.
    pub fn slow_consumer(mut self, policy: SlowConsumerPolicy) -> Self {
        self.slow_consumer = policy;
        self
    }
}

/// The result of handing one frame to a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    /// The frame is in the connection's outbound queue.
    Queued,
    /// The queue was full; the frame was dropped (policy `DropMessage`).
    DroppedFull,
    /// The queue was full; the connection is now closing (policy `Close`).
    ClosedSlow,
    /// The connection is closed or its reader is gone; the frame was dropped.
    Closed,
    /// The message has no frame for this connection's protocol.
    NoFrame,
}

/// One client connection as the lifetime manager sees it.
///
/// A cheap-to-clone handle: an id, an optional user, the connection's hub
/// protocol, the sending half of a bounded outbound queue and a close
/// signal. The transport adapter owns the matching [`ConnectionReceiver`]
/// and writes queued frames to the socket.
#[derive(Clone)]
pub struct Connection {
    inner: Arc<Inner>,
}

/// `repr(C)`: what a delivery reads (the protocol, then the queue's hot
/// fields) comes first, so fan-out touches at most two cache lines of each
/// connection.
#[repr(C)]
struct Inner {
    /// Which frame of a [`SerializedMessage`] this connection receives.
    protocol: Protocol,
    /// Applied by `send_frame` when the queue is full.
    slow_consumer: SlowConsumerPolicy,
    /// The bounded outbound queue (a client that stops reading costs at
    /// most `capacity` frames), the close signal the transport watches, and
    /// the close reason; inline, so that fan-out touches one allocation per
    /// connection (see `outbound.rs`).
    outbound: Outbound,
    /// The user this connection belongs to; `send_user` reaches it.
    user: Option<Arc<str>>,
    /// Unique across servers; the key of every index the managers keep.
    id: ConnectionId,
}

impl Connection {
    /// Creates a connection with a new random id.
    pub fn new(options: ConnectionOptions) -> (Connection, ConnectionReceiver) {
        Connection::with_id(ConnectionId::random(), options)
    }

    /// Creates a connection with the given id (for transports that assign
    /// their own ids; they must be unique and unguessable).
    pub fn with_id(
        id: ConnectionId,
        options: ConnectionOptions,
    ) -> (Connection, ConnectionReceiver) {
        let connection = Connection {
            inner: Arc::new(Inner {
                id,
                user: options.user.map(Arc::from),
                protocol: options.protocol,
                outbound: Outbound::new(options.queue_capacity),
                slow_consumer: options.slow_consumer,
            }),
        };
        let receiver = ConnectionReceiver {
            connection: connection.clone(),
        };
        (connection, receiver)
    }

    /// The connection's id.
    pub fn id(&self) -> &ConnectionId {
        &self.inner.id
    }

    /// The connection's user, if it has one.
    pub fn user(&self) -> Option<&str> {
        self.inner.user.as_deref()
    }

    /// The connection's hub protocol.
    pub fn protocol(&self) -> Protocol {
        self.inner.protocol
    }

    /// Queues the frame of `message` that matches this connection's protocol.
    ///
    /// Never waits: a full queue is handled by the slow-consumer policy.
    pub fn deliver(&self, message: &SerializedMessage) -> Delivery {
        match message.get(self.inner.protocol) {
            Some(frame) => self.send_frame(frame.clone()),
            None => Delivery::NoFrame,
        }
    }

    /// Queues one already-framed message for this connection.
    ///
    /// `frame` must be exactly one Invocation, StreamItem, Completion,
    /// StreamInvocation or CancelInvocation in the connection's protocol:
    /// transports number the frames of the queue one by one for stateful
    /// reconnect (Pings and Close messages are the transport's own).
    ///
    /// Never waits: a full queue is handled by the slow-consumer policy.
    pub fn send_frame(&self, frame: Bytes) -> Delivery {
        match self.inner.outbound.try_push(frame) {
            Push::Queued => Delivery::Queued,
            Push::Closed => Delivery::Closed,
            Push::Full => match self.inner.slow_consumer {
                SlowConsumerPolicy::DropMessage => Delivery::DroppedFull,
                SlowConsumerPolicy::Close => {
                    if self.close("the client is not reading its messages fast enough") {
                        tracing::warn!(connection_id = %self.inner.id, "closing slow connection: outbound queue full");
                    }
                    Delivery::ClosedSlow
                }
            },
        }
    }

    /// Queues one already-framed message, waiting for room in the queue
    /// instead of applying the slow-consumer policy.
    ///
    /// For a producer that feeds this one connection and can slow down with
    /// it, such as a streaming hub method. It waits while half the queue's
    /// capacity is taken, so the other half stays free for what cannot wait
    /// (fan-out, replies): a long stream to a slow client never gets that
    /// client closed as a slow consumer by a broadcast. Returns
    /// [`Delivery::Closed`] as soon as the connection closes, even while
    /// waiting.
    pub async fn send_frame_waiting(&self, frame: Bytes) -> Delivery {
        if self.inner.outbound.push_waiting(frame).await {
            Delivery::Queued
        } else {
            Delivery::Closed
        }
    }

    /// Asks the transport to close the connection, recording `reason` (sent
    /// to the client in the Close message). Returns `false` if it was
    /// already closing, in which case the first reason is kept.
    pub fn close(&self, reason: impl Into<String>) -> bool {
        self.inner.outbound.close(reason.into())
    }

    /// Whether the connection has been asked to close.
    pub fn is_closed(&self) -> bool {
        self.inner.outbound.is_closed()
    }

    /// Completes when the connection has been asked to close.
    pub async fn closed(&self) {
        self.inner.outbound.closed().await;
    }

    /// Why the server closed the connection, if it did.
    pub fn close_reason(&self) -> Option<String> {
        self.inner.outbound.close_reason()
    }

    /// Whether two handles are the same connection.
    pub fn ptr_eq(&self, other: &Connection) -> bool {
        Arc::ptr_eq(&self.inner, &other.inner)
    }
}

impl fmt::Debug for Connection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Connection")
            .field("id", &self.inner.id)
            .field("user", &self.inner.user)
            .field("protocol", &self.inner.protocol)
            .field("closed", &self.inner.outbound.is_closed())
            .finish()
    }
}

/// The receiving half of a connection's outbound queue, owned by the
/// transport adapter, which writes each frame to the client.
///
/// Dropping it drops what is queued; later sends report
/// [`Delivery::Closed`].
#[derive(Debug)]
pub struct ConnectionReceiver {
    connection: Connection,
}

impl ConnectionReceiver {
    /// The next frame to write; `None` once the connection is closed and the
    /// queue is drained of what was sent before the close.
    pub async fn recv(&mut self) -> Option<Bytes> {
        let outbound = &self.connection.inner.outbound;
        std::future::poll_fn(|cx| outbound.poll_pop(cx)).await
    }

    /// A frame if one is queued right now.
    pub fn try_recv(&mut self) -> Option<Bytes> {
        self.connection.inner.outbound.try_pop()
    }

    /// How many frames are queued now.
    pub fn queued(&self) -> usize {
        self.connection.inner.outbound.len()
    }

    /// The connection this receiver belongs to.
    pub fn connection(&self) -> &Connection {
        &self.connection
    }
}

impl Drop for ConnectionReceiver {
    fn drop(&mut self) {
        self.connection.inner.outbound.receiver_dropped();
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn frame(s: &'static str) -> Bytes {
        Bytes::from_static(s.as_bytes())
    }

    #[tokio::test]
    async fn frames_arrive_in_order() {
        let (conn, mut rx) = Connection::new(ConnectionOptions::new(Protocol::Json));
        assert_eq!(conn.send_frame(frame("a")), Delivery::Queued);
        assert_eq!(conn.send_frame(frame("b")), Delivery::Queued);
        assert_eq!(rx.recv().await.unwrap(), frame("a"));
        assert_eq!(rx.recv().await.unwrap(), frame("b"));
    }

    #[tokio::test]
    async fn full_queue_closes_by_default() {
        let (conn, mut rx) =
            Connection::new(ConnectionOptions::new(Protocol::Json).queue_capacity(1));
        assert_eq!(conn.send_frame(frame("a")), Delivery::Queued);
        assert_eq!(conn.send_frame(frame("b")), Delivery::ClosedSlow);
        assert!(conn.is_closed());
        assert!(conn.close_reason().unwrap().contains("not reading"));
        assert_eq!(conn.send_frame(frame("c")), Delivery::Closed);
        // What was queued before the close is still handed out, then the end.
        assert_eq!(rx.recv().await.unwrap(), frame("a"));
        assert!(rx.recv().await.is_none());
    }

    #[tokio::test]
    async fn full_queue_drops_with_drop_policy() {
        let (conn, mut rx) = Connection::new(
            ConnectionOptions::new(Protocol::Json)
                .queue_capacity(1)
                .slow_consumer(SlowConsumerPolicy::DropMessage),
        );
        assert_eq!(conn.send_frame(frame("a")), Delivery::Queued);
        assert_eq!(conn.send_frame(frame("b")), Delivery::DroppedFull);
        assert!(!conn.is_closed());
        assert_eq!(rx.recv().await.unwrap(), frame("a"));
        assert_eq!(conn.send_frame(frame("c")), Delivery::Queued);
        assert_eq!(rx.recv().await.unwrap(), frame("c"));
    }

    #[tokio::test]
    async fn waiting_send_waits_for_room_instead_of_closing() {
        let (conn, mut rx) =
            Connection::new(ConnectionOptions::new(Protocol::Json).queue_capacity(1));
        assert_eq!(conn.send_frame(frame("a")), Delivery::Queued);
        let waiting = tokio::spawn({
            let conn = conn.clone();
            async move { conn.send_frame_waiting(frame("b")).await }
        });
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished());
        assert_eq!(rx.recv().await.unwrap(), frame("a"));
        assert_eq!(waiting.await.unwrap(), Delivery::Queued);
        assert_eq!(rx.recv().await.unwrap(), frame("b"));
        assert!(!conn.is_closed());
    }

    #[tokio::test]
    async fn waiting_send_ends_when_the_connection_closes() {
        let (conn, _rx) = Connection::new(ConnectionOptions::new(Protocol::Json).queue_capacity(1));
        assert_eq!(conn.send_frame(frame("a")), Delivery::Queued);
        let waiting = tokio::spawn({
            let conn = conn.clone();
            async move { conn.send_frame_waiting(frame("b")).await }
        });
        tokio::task::yield_now().await;
        conn.close("bye");
        assert_eq!(waiting.await.unwrap(), Delivery::Closed);
    }

    #[test]
    fn dropped_receiver_reports_closed() {
        let (conn, rx) = Connection::new(ConnectionOptions::new(Protocol::Json));
        drop(rx);
        assert_eq!(conn.send_frame(frame("a")), Delivery::Closed);
    }

    #[test]
    fn first_close_reason_wins() {
        let (conn, _rx) = Connection::new(ConnectionOptions::new(Protocol::Json));
        assert!(conn.close("first"));
        assert!(!conn.close("second"));
        assert_eq!(conn.close_reason().as_deref(), Some("first"));
    }
}

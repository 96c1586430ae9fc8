//! The seam between the scale-out engine and a backplane: what a driver
//! does, and what it reports.
//!
//! A driver moves opaque payloads between servers on named channels, and
//! nothing else. It does not know what a group or a connection is, and it
//! never has to remember what it is subscribed to: after any reconnect the
//! engine subscribes again to everything it needs, from its own state.

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::BoxStream;
use switchboard_core::Result;

/// A backplane as the [scale-out engine](crate::ScaleOutManager) uses it:
/// publish on a channel, subscribe and unsubscribe in batches, and a
/// stream of what arrives.
///
/// Implementations: [`LoopbackDriver`](crate::LoopbackDriver) (in-process,
/// for tests), and the Redis drivers of `switchboard-redis` (one node, or a
/// Redis Cluster with sharded pub/sub).
///
/// Every method must return within a bounded time: while the backplane is
/// unreachable, fail with
/// [`Error::BackplaneUnavailable`](switchboard_core::Error::BackplaneUnavailable)
/// rather than wait for it to come back.
#[async_trait]
pub trait BackplaneDriver: Send + Sync + 'static {
    /// Publishes `payload` on `channel`.
    ///
    /// `Ok(Some(n))` when the driver knows how many subscribers received
    /// the message, exactly: `Some(0)` tells the engine that no server
    /// listens on the channel (a connection that exists nowhere).
    /// `Ok(None)` when the driver cannot know; the engine then waits for an
    /// answer instead.
    async fn publish(&self, channel: String, payload: Bytes) -> Result<Option<u64>>;

    /// Subscribes to `channels` (already subscribed ones are no error), and
    /// returns once every message published on them from now on will be
    /// delivered: the subscription is live, not merely sent.
    async fn subscribe(&self, channels: Vec<String>) -> Result<()>;

    /// Unsubscribes from `channels` (ones not subscribed are no error).
    async fn unsubscribe(&self, channels: Vec<String>) -> Result<()>;

    /// What arrives from the backplane: messages on subscribed channels,
    /// and changes of the link.
    ///
    /// The engine calls this once, before its first
    /// [`subscribe`](Self::subscribe), and is the stream's only consumer.
    /// A stream taken later may be empty.
    fn events(&self) -> DriverEvents;

    /// Whether the backplane is reachable now. The engine retries failed
    /// subscription changes only while it is.
    fn is_connected(&self) -> bool;

    /// Closes the driver's connections and ends its tasks. Later calls fail
    /// with `BackplaneUnavailable`.
    async fn shutdown(&self);
}

/// The stream of a driver's [`DriverEvent`]s.
pub type DriverEvents = BoxStream<'static, DriverEvent>;

/// Something a driver reports to the engine.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum DriverEvent {
    /// A message on a subscribed channel. The channel name is UTF-8 bytes,
    /// as the backplane delivered it; the engine checks both name and
    /// payload, and counts and drops what it cannot use.
    Message {
        /// The channel it was published on.
        channel: Bytes,
        /// The payload as published.
        payload: Bytes,
    },
    /// Messages were lost because the engine fell behind the driver's
    /// buffer; how many.
    Lagged(u64),
    /// The link to the backplane is up again (or up for the first time).
    /// Subscriptions made before may be gone: the engine subscribes again
    /// to every channel it needs.
    Connected,
    /// The link to the backplane is down; sends fail until
    /// [`Connected`](DriverEvent::Connected).
    Disconnected,
    /// The backplane may have ended some subscriptions by itself without
    /// saying which (on a Redis Cluster: slots moved, or a replica took
    /// over). The engine subscribes again to every channel it needs, as
    /// after [`Connected`](DriverEvent::Connected).
    Resubscribe,
    /// The backplane ended these subscriptions by itself. The engine
    /// subscribes again to those it still needs.
    SubscriptionsLost(Vec<String>),
}

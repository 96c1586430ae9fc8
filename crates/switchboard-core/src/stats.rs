use std::sync::atomic::{AtomicU64, Ordering};

use crate::connection::Delivery;

/// Counters a lifetime manager keeps, as read by
/// [`HubLifetimeManager::stats`](crate::HubLifetimeManager::stats).
///
/// Counters only grow; the fields marked as gauges go up and down.
/// Backplane counters stay zero for managers without a backplane.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ManagerStats {
    /// Connections currently registered on this server.
    pub connections: usize,
    /// Frames put into connection queues.
    pub delivered: u64,
    /// Frames dropped because a queue was full (policy `DropMessage`).
    pub dropped_full: u64,
    /// Connections closed because their queue was full (policy `Close`).
    pub closed_slow: u64,
    /// Frames dropped because the connection was already closed.
    pub dropped_closed: u64,
    /// Frames dropped because the message had no encoding for the
    /// connection's protocol.
    pub dropped_no_frame: u64,
    /// Messages published on the backplane.
    pub backplane_published: u64,
    /// Messages received from the backplane and accepted.
    pub backplane_received: u64,
    /// Messages received from the backplane that could not be decoded
    /// (garbage, truncated, unknown kind, wrong kind for the channel).
    pub backplane_malformed: u64,
    /// Messages received from the backplane over the size limit.
    pub backplane_oversize: u64,
    /// Messages the backplane client dropped before we could read them.
    pub backplane_lagged: u64,
    /// Publishes that failed (backplane unavailable or erroring).
    pub backplane_publish_errors: u64,
    /// Sends to every connection (`send_all`, `send_all_except`) made on
    /// this server.
    pub sends_all: u64,
    /// Sends to a group made on this server, one per group addressed.
    pub sends_group: u64,
    /// Sends to a user made on this server, one per user addressed.
    pub sends_user: u64,
    /// Sends to a connection made on this server, one per connection
    /// addressed.
    pub sends_connection: u64,
    /// Client-result invocations started on this server that gave up
    /// waiting because their timeout passed.
    pub client_result_timeouts: u64,
    /// Times the backplane link came back after it was lost.
    pub backplane_reconnects: u64,
    /// Times every subscription this server needs was made again: once on
    /// connecting, then after each reconnect, a cluster's slots moving, or
    /// failed changes.
    pub backplane_resyncs: u64,
    /// Backplane channels this server needs subscribed now (a gauge).
    pub backplane_subscriptions: usize,
    /// Client-result invocations started on this server that wait for
    /// their answer now (a gauge).
    pub pending_client_results: usize,
    /// Client-result invocations of this server's connections, started on
    /// other servers, whose answer this server must forward (a gauge). It
    /// returns to zero as the clients answer, disconnect, or the callers
    /// give up.
    pub forwarded_client_results: usize,
}

/// What a send addresses, as counted in [`ManagerStats`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum SendKind {
    /// Every connection.
    All,
    /// The members of a group.
    Group,
    /// The connections of a user.
    User,
    /// One connection.
    Connection,
}

/// Delivery counters, updated without locks from fan-out.
#[derive(Debug, Default)]
pub(crate) struct DeliveryCounters {
    delivered: AtomicU64,
    dropped_full: AtomicU64,
    closed_slow: AtomicU64,
    dropped_closed: AtomicU64,
    dropped_no_frame: AtomicU64,
    sends: [AtomicU64; 4],
    client_result_timeouts: AtomicU64,
}

impl DeliveryCounters {
    pub(crate) fn record(&self, delivery: Delivery) {
        let counter = match delivery {
            Delivery::Queued => &self.delivered,
            Delivery::DroppedFull => &self.dropped_full,
            Delivery::ClosedSlow => &self.closed_slow,
            Delivery::Closed => &self.dropped_closed,
            Delivery::NoFrame => &self.dropped_no_frame,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn add_delivered(&self, n: u64) {
        if n > 0 {
            self.delivered.fetch_add(n, Ordering::Relaxed);
        }
    }

    pub(crate) fn count_sends(&self, kind: SendKind, n: usize) {
        self.sends[kind as usize].fetch_add(n as u64, Ordering::Relaxed);
    }

    pub(crate) fn count_client_result_timeout(&self) {
        self.client_result_timeouts.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn fill(&self, stats: &mut ManagerStats) {
        let sends = |kind: SendKind| self.sends[kind as usize].load(Ordering::Relaxed);
        stats.sends_all = sends(SendKind::All);
        stats.sends_group = sends(SendKind::Group);
        stats.sends_user = sends(SendKind::User);
        stats.sends_connection = sends(SendKind::Connection);
        stats.client_result_timeouts = self.client_result_timeouts.load(Ordering::Relaxed);
        stats.delivered = self.delivered.load(Ordering::Relaxed);
        stats.dropped_full = self.dropped_full.load(Ordering::Relaxed);
        stats.closed_slow = self.closed_slow.load(Ordering::Relaxed);
        stats.dropped_closed = self.dropped_closed.load(Ordering::Relaxed);
        stats.dropped_no_frame = self.dropped_no_frame.load(Ordering::Relaxed);
    }
}

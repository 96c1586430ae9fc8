//! A graceful drain of an endpoint's connections, for a deploy.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

use crate::flag::Flag;
use crate::router::Shared;

/// The reason every connection is closed with during a drain.
pub(crate) const DRAIN_REASON: &str = "The server is shutting down.";

/// The connections of one endpoint, and whether it drains.
#[derive(Debug, Default)]
pub(crate) struct Connections {
    /// Raised when the drain begins: negotiate and new connections get
    /// 503, and every session closes once its invocations are done.
    pub(crate) draining: Flag,
    /// What [`Endpoint::drain`] gives each connection's invocations.
    grace: parking_lot::Mutex<Duration>,
    /// Sessions registered with the hub and not yet closed.
    open: AtomicUsize,
    /// Told when one of them ends.
    left: Notify,
}

impl Connections {
    /// Counts a session until the guard drops.
    pub(crate) fn enter(self: &Arc<Self>) -> Open {
        self.open.fetch_add(1, Ordering::SeqCst);
        Open(self.clone())
    }

    pub(crate) fn open(&self) -> usize {
        self.open.load(Ordering::SeqCst)
    }

    /// The grace of the drain under way.
    pub(crate) fn grace(&self) -> Duration {
        *self.grace.lock()
    }
}

/// One open session, counted in [`Connections`].
#[derive(Debug)]
pub(crate) struct Open(Arc<Connections>);

impl Drop for Open {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::SeqCst);
        self.0.left.notify_waiters();
    }
}

/// How a [`Endpoint::drain`] goes.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct DrainOptions {
    /// How long running invocations of a connection may go on before it is
    /// closed (they are then cancelled). Default: 5 s.
    pub grace: Duration,
    /// How long the drain takes at most, from its start until it returns.
    /// Default: 10 s.
    pub timeout: Duration,
}

impl Default for DrainOptions {
    fn default() -> Self {
        DrainOptions {
            grace: Duration::from_secs(5),
            timeout: Duration::from_secs(10),
        }
    }
}

/// What a drain did.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct DrainReport {
    /// Connections open when the drain began.
    pub connections: usize,
    /// Connections still open when it gave up (0 when all closed in time).
    pub remaining: usize,
    /// How long it took.
    pub elapsed: Duration,
}

/// A handle on a SignalR endpoint made by [`endpoint`](crate::endpoint):
/// its connection count and its graceful drain.
#[derive(Debug, Clone)]
pub struct Endpoint {
    shared: Arc<Shared>,
}

impl Endpoint {
    pub(crate) fn new(shared: Arc<Shared>) -> Endpoint {
        Endpoint { shared }
    }

    /// How many connections are open (registered with the hub).
    pub fn connections(&self) -> usize {
        self.shared.connections.open()
    }

    /// Whether a drain has begun.
    pub fn is_draining(&self) -> bool {
        self.shared.connections.draining.is_raised()
    }

    /// Drains the endpoint, for a deploy: from now on negotiate and new
    /// connections are answered `503 Service Unavailable` (the official
    /// clients try again, and a load balancer sends them elsewhere); every
    /// connection finishes what its client invoked (for up to
    /// [`DrainOptions::grace`], then the rest is cancelled) and is closed
    /// with a Close message that allows reconnecting, so clients with
    /// automatic reconnect reconnect at once, to another server; the hub's
    /// disconnect hook runs for each and they leave their groups on every
    /// server. Returns once every connection is closed, or after
    /// [`DrainOptions::timeout`].
    ///
    /// A stateful-reconnect connection is closed too: its client reconnects
    /// as a new connection elsewhere, and what it had not acknowledged is
    /// lost with this server.
    ///
    /// Stop the lifetime manager (for example
    /// `RedisHubLifetimeManager::shutdown`) after this returns.
    pub async fn drain(&self, options: DrainOptions) -> DrainReport {
        let started = Instant::now();
        let connections = &self.shared.connections;
        let at_start = connections.open();
        tracing::info!(connections = at_start, "draining the endpoint");
        *connections.grace.lock() = options.grace;
        connections.draining.raise();
        let all_left = async {
            loop {
                let left = connections.left.notified();
                let mut left = std::pin::pin!(left);
                left.as_mut().enable();
                if connections.open() == 0 {
                    return;
                }
                left.await;
            }
        };
        // `timeout` saturates: any length, however large, is fine.
        let _ = tokio::time::timeout(options.timeout, all_left).await;
        let report = DrainReport {
            connections: at_start,
            remaining: connections.open(),
            elapsed: started.elapsed(),
        };
        if report.remaining == 0 {
            tracing::info!(
                drained = report.connections,
                elapsed_ms = report.elapsed.as_millis() as u64,
                "endpoint drained"
            );
        } else {
            tracing::warn!(
                drained = report.connections - report.remaining.min(report.connections),
                remaining = report.remaining,
                elapsed_ms = report.elapsed.as_millis() as u64,
                "drain timed out with connections still open"
            );
        }
        report
    }
}

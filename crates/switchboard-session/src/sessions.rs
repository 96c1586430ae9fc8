//! What the sessions of one endpoint share: the hub, the options, how many
//! are open, and the graceful drain.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use switchboard_core::{Hub, SlowConsumerPolicy};
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::flag::Flag;

/// The reason every connection is closed with during a drain.
pub const DRAIN_REASON: &str = "The server is shutting down.";

/// Longer durations are cut to this: a year is "never" for a connection,
/// and deadlines computed from it cannot overflow.
const LONGEST: Duration = Duration::from_secs(365 * 24 * 60 * 60);

/// How every session of an endpoint behaves: timeouts, limits, the
/// outbound queue, stateful reconnect. The defaults are ASP.NET Core
/// SignalR's.
#[derive(Debug, Clone)]
pub struct SessionOptions {
    pub(crate) keep_alive_interval: Duration,
    pub(crate) client_timeout: Duration,
    pub(crate) handshake_timeout: Duration,
    pub(crate) max_message_size: usize,
    pub(crate) queue_capacity: usize,
    pub(crate) slow_consumer: SlowConsumerPolicy,
    pub(crate) stateful_reconnect_buffer_size: usize,
    pub(crate) stateful_reconnect_window: Duration,
}

impl Default for SessionOptions {
    fn default() -> Self {
        SessionOptions {
            keep_alive_interval: Duration::from_secs(15),
            client_timeout: Duration::from_secs(30),
            handshake_timeout: Duration::from_secs(15),
            max_message_size: 32 * 1024,
            queue_capacity: switchboard_core::DEFAULT_QUEUE_CAPACITY,
            slow_consumer: SlowConsumerPolicy::default(),
            stateful_reconnect_buffer_size: 100_000,
            stateful_reconnect_window: Duration::from_secs(15),
        }
    }
}

impl SessionOptions {
    /// How often the server sends a Ping when it has sent nothing else.
    /// Default: 15 s.
    pub fn keep_alive_interval(mut self, interval: Duration) -> Self {
        self.keep_alive_interval = interval.min(LONGEST);
        self
    }

    /// How long the server waits for anything from the client before it
    /// closes the connection. Default: 30 s.
    pub fn client_timeout(mut self, timeout: Duration) -> Self {
        self.client_timeout = timeout.min(LONGEST);
        self
    }

    /// How long the client has to complete the handshake. Default: 15 s.
    pub fn handshake_timeout(mut self, timeout: Duration) -> Self {
        self.handshake_timeout = timeout.min(LONGEST);
        self
    }

    /// The largest hub message accepted from a client, in bytes.
    /// Default: 32 KiB.
    pub fn max_message_size(mut self, size: usize) -> Self {
        self.max_message_size = size;
        self
    }

    /// How many frames may wait in a connection's outbound queue.
    pub fn queue_capacity(mut self, capacity: usize) -> Self {
        self.queue_capacity = capacity;
        self
    }

    /// What happens when a connection's queue is full.
    pub fn slow_consumer(mut self, policy: SlowConsumerPolicy) -> Self {
        self.slow_consumer = policy;
        self
    }

    /// How many bytes a stateful-reconnect connection keeps unacknowledged
    /// before it sends nothing more until an Ack. Default: 100,000.
    pub fn stateful_reconnect_buffer_size(mut self, size: usize) -> Self {
        self.stateful_reconnect_buffer_size = size;
        self
    }

    /// How long a stateful-reconnect connection whose transport dropped
    /// waits for its client. Default: 15 s.
    pub fn stateful_reconnect_window(mut self, window: Duration) -> Self {
        self.stateful_reconnect_window = window.min(LONGEST);
        self
    }
}

/// The sessions of one endpoint: the hub they are handed to, their
/// options, how many are open, and their graceful drain. A transport
/// adapter makes one per endpoint and passes it to every
/// [`run`](crate::run).
pub struct Sessions {
    pub(crate) hub: Hub,
    pub(crate) options: SessionOptions,
    /// Raised when the drain begins: new sessions end at once, and every
    /// session closes once its invocations are done.
    pub(crate) draining: Flag,
    /// What [`drain`](Sessions::drain) gives each connection's invocations.
    grace: parking_lot::Mutex<Duration>,
    /// Sessions begun and not yet ended.
    open: AtomicUsize,
    /// Told when one of them ends.
    left: Notify,
}

impl fmt::Debug for Sessions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sessions")
            .field("options", &self.options)
            .field("open", &self.open())
            .field("draining", &self.is_draining())
            .finish_non_exhaustive()
    }
}

impl Sessions {
    /// Sessions for `hub` with `options`.
    pub fn new(hub: Hub, options: SessionOptions) -> Arc<Sessions> {
        Arc::new(Sessions {
            hub,
            options,
            draining: Flag::default(),
            grace: parking_lot::Mutex::new(Duration::ZERO),
            open: AtomicUsize::new(0),
            left: Notify::new(),
        })
    }

    /// The hub.
    pub fn hub(&self) -> &Hub {
        &self.hub
    }

    /// The options.
    pub fn options(&self) -> &SessionOptions {
        &self.options
    }

    /// How many sessions are open (from their start to their end).
    pub fn open(&self) -> usize {
        self.open.load(Ordering::SeqCst)
    }

    /// Whether a drain has begun.
    pub fn is_draining(&self) -> bool {
        self.draining.is_raised()
    }

    /// Counts a session until the guard drops.
    pub(crate) fn enter(self: &Arc<Self>) -> Open {
        self.open.fetch_add(1, Ordering::SeqCst);
        Open(self.clone())
    }

    /// The grace of the drain under way.
    pub(crate) fn grace(&self) -> Duration {
        *self.grace.lock()
    }

    /// Drains the sessions: a session that begins from now on ends at once;
    /// every open one finishes what its client invoked (for up to
    /// [`DrainOptions::grace`], then the rest is cancelled) and is closed
    /// with a Close message that allows reconnecting. Returns once every
    /// session has ended, or after [`DrainOptions::timeout`].
    pub async fn drain(&self, options: DrainOptions) -> DrainReport {
        let started = Instant::now();
        let at_start = self.open();
        tracing::info!(connections = at_start, "draining the endpoint");
        *self.grace.lock() = options.grace;
        self.draining.raise();
        let all_left = async {
            loop {
                let left = self.left.notified();
                let mut left = std::pin::pin!(left);
                left.as_mut().enable();
                if self.open() == 0 {
                    return;
                }
                left.await;
            }
        };
        // `timeout` saturates: any length, however large, is fine.
        let _ = tokio::time::timeout(options.timeout, all_left).await;
        let report = DrainReport {
            connections: at_start,
            remaining: self.open(),
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

/// One open session, counted in [`Sessions`].
#[derive(Debug)]
pub(crate) struct Open(Arc<Sessions>);

impl Drop for Open {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::SeqCst);
        self.0.left.notify_waiters();
    }
}

/// How a drain goes.
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

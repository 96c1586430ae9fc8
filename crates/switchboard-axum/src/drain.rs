//! The handle on an endpoint: its connection count and its graceful drain.

use std::sync::Arc;

use switchboard_session::{DrainOptions, DrainReport};

use crate::router::Shared;

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
        self.shared.sessions.open()
    }

    /// Whether a drain has begun.
    pub fn is_draining(&self) -> bool {
        self.shared.sessions.is_draining()
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
        self.shared.sessions.drain(options).await
    }
}

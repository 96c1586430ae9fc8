//! Whether a lifetime manager can serve: for load balancers and operators.

use std::time::Duration;

/// A lifetime manager's health, as read by
/// [`HubLifetimeManager::health`](crate::HubLifetimeManager::health).
///
/// A manager without a backplane (one process) is always serving.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Health {
    /// Whether the backplane is reachable now: messages to other servers
    /// can be sent. Always `true` without a backplane.
    pub backplane_connected: bool,
    /// How long ago the last publish on the backplane succeeded; `None`
    /// before the first one, and without a backplane.
    pub since_last_publish: Option<Duration>,
    /// Subscription changes queued and not yet applied (a gauge): a
    /// backplane that keeps many waiting is slow or away.
    pub pending_subscriptions: usize,
    /// Messages the backplane client dropped before they were read, since
    /// the start (the same count as
    /// [`ManagerStats::backplane_lagged`](crate::ManagerStats::backplane_lagged)).
    pub backplane_lagged: u64,
}

impl Health {
    /// The health of a manager without a backplane: serving.
    pub fn local() -> Health {
        Health {
            backplane_connected: true,
            since_last_publish: None,
            pending_subscriptions: 0,
            backplane_lagged: 0,
        }
    }

    /// Whether the server should be given connections: the backplane, if
    /// any, is reachable.
    pub fn is_serving(&self) -> bool {
        self.backplane_connected
    }
}

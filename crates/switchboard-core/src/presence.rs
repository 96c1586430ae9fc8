//! Presence: which connections a user or a group has, on every server.
//!
//! A presence query is answered by the servers that hold the subject's
//! connections, at the moment they answer. It is a snapshot: a connection
//! may open or close the instant after. How a lifetime manager finds the
//! servers, and how long it waits for them, is its own (see
//! [`HubLifetimeManager::user_connections`](crate::HubLifetimeManager::user_connections)).

use crate::ConnectionId;

/// The most connection ids a presence query returns, whatever limit it is
/// given: the counts stay exact beyond it. Ten thousand ids of 22
/// characters fit easily in one backplane message.
pub const MAX_PRESENCE_LIMIT: usize = 10_000;

/// The answer to a presence query: some of the subject's connections and
/// how many there are.
///
/// ```
/// # use switchboard_core::Presence;
/// let presence = Presence::default();
/// assert!(presence.is_complete());
/// assert_eq!(presence.count, 0);
/// assert!(!presence.is_truncated());
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Presence {
    /// Connections of the user or group, at most the query's limit (and
    /// [`MAX_PRESENCE_LIMIT`]), in no particular order.
    pub connections: Vec<ConnectionId>,
    /// How many connections the user or group has, on the servers that
    /// answered: exact, whatever the limit.
    pub count: u64,
    /// How many servers holding some of them did not answer in time (a
    /// server that froze or lost its network). Zero when every one
    /// answered: the answer is then complete.
    pub unanswered: u64,
}

impl Presence {
    /// Whether every server holding some of the connections answered.
    pub fn is_complete(&self) -> bool {
        self.unanswered == 0
    }

    /// Whether there are more connections than [`connections`](Self::connections)
    /// lists (the limit cut the list).
    pub fn is_truncated(&self) -> bool {
        (self.connections.len() as u64) < self.count
    }

    /// Adds one server's answer: `count` connections, of which `ids` (keeps
    /// at most `limit` ids in all).
    pub fn add(&mut self, ids: impl IntoIterator<Item = ConnectionId>, count: u64, limit: usize) {
        let room = limit.saturating_sub(self.connections.len());
        self.connections.extend(ids.into_iter().take(room));
        self.count = self.count.saturating_add(count);
    }
}

/// `limit` as presence queries apply it: at most [`MAX_PRESENCE_LIMIT`].
pub fn clamp_limit(limit: usize) -> usize {
    limit.min(MAX_PRESENCE_LIMIT)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(names: &[&str]) -> Vec<ConnectionId> {
        names.iter().map(|n| ConnectionId::from(*n)).collect()
    }

    #[test]
    fn answers_add_up_and_the_list_stays_within_the_limit() {
        let mut presence = Presence::default();
        presence.add(ids(&["a", "b"]), 2, 3);
        presence.add(ids(&["c", "d"]), 4, 3);
        assert_eq!(presence.connections, ids(&["a", "b", "c"]));
        assert_eq!(presence.count, 6);
        assert!(presence.is_truncated());
        assert!(presence.is_complete());
    }

    #[test]
    fn a_zero_limit_counts_only() {
        let mut presence = Presence::default();
        presence.add(ids(&["a"]), 1, 0);
        assert!(presence.connections.is_empty());
        assert_eq!(presence.count, 1);
    }

    #[test]
    fn limits_are_clamped() {
        assert_eq!(clamp_limit(usize::MAX), MAX_PRESENCE_LIMIT);
        assert_eq!(clamp_limit(5), 5);
    }
}

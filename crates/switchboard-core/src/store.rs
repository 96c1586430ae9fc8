use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use parking_lot::RwLock;

use crate::ConnectionId;
use crate::connection::{Connection, Delivery};
use crate::error::{Error, Result};
use crate::message::SerializedMessage;
use crate::presence::{Presence, clamp_limit};
use crate::stats::{DeliveryCounters, ManagerStats, SendKind};

/// The connections, groups and users held by one server, and fan-out to them.
///
/// Every lifetime manager keeps one: the in-memory manager delivers
/// everything from it; a backplane delivers what arrives from other servers
/// through it and uses the membership changes it reports (a group's first
/// member, a user's last connection) to subscribe and unsubscribe.
///
/// # Locking
///
/// All indexes sit behind one `parking_lot::RwLock`, so that a connection,
/// its groups and its user change together and fan-out never sees half a
/// disconnect. Critical sections are short and never `.await`: fan-out only
/// calls [`Connection::deliver`], a non-blocking `try_send` of a
/// reference-counted frame, so it is done under the read lock instead of
/// first cloning thousands of handles out of it. Writers (connect,
/// disconnect, group changes) touch a few map entries.
#[derive(Debug, Default)]
pub struct ConnectionStore {
    state: RwLock<State>,
    counters: DeliveryCounters,
}

#[derive(Debug, Default)]
struct State {
    /// Every local connection, with the groups it is in (so that disconnect
    /// finds them without scanning every group).
    connections: HashMap<ConnectionId, Member>,
    /// Group name -> its local members.
    groups: HashMap<Arc<str>, HashMap<ConnectionId, Connection>>,
    /// User id -> that user's local connections.
    users: HashMap<Arc<str>, HashMap<ConnectionId, Connection>>,
}

#[derive(Debug)]
struct Member {
    connection: Connection,
    groups: HashSet<Arc<str>>,
}

/// What [`ConnectionStore::insert`] changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Inserted {
    /// The connection's user had no other local connection.
    pub first_of_user: bool,
}

/// What [`ConnectionStore::remove`] changed.
#[derive(Debug)]
pub struct Removed {
    /// The connection that was removed.
    pub connection: Connection,
    /// Groups that lost their last local member.
    pub emptied_groups: Vec<Arc<str>>,
    /// The connection was its user's last local one.
    pub last_of_user: bool,
}

/// What a group membership change did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Membership {
    /// The membership actually changed (false: it was already so).
    pub changed: bool,
    /// For an add, the group had no local member before; for a remove, it has
    /// none left.
    pub group_transition: bool,
}

impl ConnectionStore {
    /// An empty store.
    pub fn new() -> ConnectionStore {
        ConnectionStore::default()
    }

    /// Registers a connection. Fails if its id is already registered.
    pub fn insert(&self, connection: Connection) -> Result<Inserted> {
        let mut state = self.state.write();
        if state.connections.contains_key(connection.id().as_str()) {
            return Err(Error::DuplicateConnection {
                connection_id: connection.id().to_string(),
            });
        }
        let mut first_of_user = false;
        if let Some(user) = connection.user() {
            let members = state.users.entry(Arc::from(user)).or_default();
            first_of_user = members.is_empty();
            members.insert(connection.id().clone(), connection.clone());
        }
        state.connections.insert(
            connection.id().clone(),
            Member {
                connection,
                groups: HashSet::new(),
            },
        );
        Ok(Inserted { first_of_user })
    }

    /// Unregisters a connection and removes it from its groups and user.
    pub fn remove(&self, connection_id: &str) -> Option<Removed> {
        let mut state = self.state.write();
        let member = state.connections.remove(connection_id)?;
        let emptied_groups = member
            .groups
            .into_iter()
            .filter(|group| leave(&mut state.groups, group, connection_id))
            .collect();
        let last_of_user = member
            .connection
            .user()
            .is_some_and(|user| leave(&mut state.users, user, connection_id));
        Some(Removed {
            connection: member.connection,
            emptied_groups,
            last_of_user,
        })
    }

    /// The local connection with this id.
    pub fn get(&self, connection_id: &str) -> Option<Connection> {
        self.state
            .read()
            .connections
            .get(connection_id)
            .map(|m| m.connection.clone())
    }

    /// Whether a connection with this id is local.
    pub fn contains(&self, connection_id: &str) -> bool {
        self.state.read().connections.contains_key(connection_id)
    }

    /// The number of local connections.
    pub fn len(&self) -> usize {
        self.state.read().connections.len()
    }

    /// Whether there is no local connection.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The number of local members of a group.
    pub fn group_len(&self, group: &str) -> usize {
        self.state.read().groups.get(group).map_or(0, HashMap::len)
    }

    /// The number of local connections of a user.
    pub fn user_len(&self, user: &str) -> usize {
        self.state.read().users.get(user).map_or(0, |c| c.len())
    }

    /// How many groups have a local member.
    pub fn group_count(&self) -> usize {
        self.state.read().groups.len()
    }

    /// How many users have a local connection.
    pub fn user_count(&self) -> usize {
        self.state.read().users.len()
    }

    /// Counts `n` sends of `kind` made on this server (see
    /// [`ManagerStats::sends_all`] and the fields after it).
    pub fn count_sends(&self, kind: SendKind, n: usize) {
        self.counters.count_sends(kind, n);
    }

    /// Counts a client-result invocation that timed out, when `result` is
    /// that timeout; returns `result`.
    pub fn count_client_result<T>(&self, result: Result<T>) -> Result<T> {
        if matches!(result, Err(Error::ClientResultTimeout { .. })) {
            self.counters.count_client_result_timeout();
        }
        result
    }

    /// Every group with at least one local member.
    pub fn group_names(&self) -> Vec<Arc<str>> {
        self.state.read().groups.keys().cloned().collect()
    }

    /// Every user with at least one local connection.
    pub fn user_names(&self) -> Vec<Arc<str>> {
        self.state.read().users.keys().cloned().collect()
    }

    /// A user's local connections: at most `limit` ids, and how many
    /// there are.
    pub fn user_presence(&self, user: &str, limit: usize) -> Presence {
        presence_of(self.state.read().users.get(user), limit)
    }

    /// A group's local members: at most `limit` ids, and how many there
    /// are.
    pub fn group_presence(&self, group: &str, limit: usize) -> Presence {
        presence_of(self.state.read().groups.get(group), limit)
    }

    /// Every local connection id.
    pub fn connection_ids(&self) -> Vec<ConnectionId> {
        self.state.read().connections.keys().cloned().collect()
    }

    /// Adds a local connection to a group (a no-op if it is already in it).
    pub fn add_to_group(&self, connection_id: &str, group: &str) -> Result<Membership> {
        let mut state = self.state.write();
        let state = &mut *state;
        let member = state
            .connections
            .get_mut(connection_id)
            .ok_or_else(|| not_found(connection_id))?;
        if member.groups.contains(group) {
            return Ok(Membership {
                changed: false,
                group_transition: false,
            });
        }
        let group: Arc<str> = Arc::from(group);
        member.groups.insert(group.clone());
        let members = state.groups.entry(group).or_default();
        let first = members.is_empty();
        members.insert(member.connection.id().clone(), member.connection.clone());
        Ok(Membership {
            changed: true,
            group_transition: first,
        })
    }

    /// Removes a local connection from a group (a no-op if it is not in it).
    pub fn remove_from_group(&self, connection_id: &str, group: &str) -> Result<Membership> {
        let mut state = self.state.write();
        let state = &mut *state;
        let member = state
            .connections
            .get_mut(connection_id)
            .ok_or_else(|| not_found(connection_id))?;
        if !member.groups.remove(group) {
            return Ok(Membership {
                changed: false,
                group_transition: false,
            });
        }
        Ok(Membership {
            changed: true,
            group_transition: leave(&mut state.groups, group, connection_id),
        })
    }

    /// Delivers to every local connection not in `excluded`; returns how
    /// many were queued.
    pub fn deliver_all<S: AsRef<str>>(&self, message: &SerializedMessage, excluded: &[S]) -> usize {
        let state = self.state.read();
        self.fan_out(
            state.connections.values().map(|m| &m.connection),
            message,
            excluded,
        )
    }

    /// Delivers to one local connection; `false` if it is not local.
    pub fn deliver_connection(&self, connection_id: &str, message: &SerializedMessage) -> bool {
        let state = self.state.read();
        match state.connections.get(connection_id) {
            Some(member) => {
                self.counters.record(member.connection.deliver(message));
                true
            }
            None => false,
        }
    }

    /// Delivers to the local members of a group not in `excluded`.
    pub fn deliver_group<S: AsRef<str>>(
        &self,
        group: &str,
        message: &SerializedMessage,
        excluded: &[S],
    ) -> usize {
        let state = self.state.read();
        match state.groups.get(group) {
            Some(members) => self.fan_out(members.values(), message, excluded),
            None => 0,
        }
    }

    /// Delivers to the local connections of a user.
    pub fn deliver_user(&self, user: &str, message: &SerializedMessage) -> usize {
        let state = self.state.read();
        match state.users.get(user) {
            Some(members) => self.fan_out(members.values(), message, &[] as &[&str]),
            None => 0,
        }
    }

    fn fan_out<'a, S: AsRef<str>>(
        &self,
        connections: impl Iterator<Item = &'a Connection>,
        message: &SerializedMessage,
        excluded: &[S],
    ) -> usize {
        // A few exclusions are scanned; many are hashed once per send.
        let excluded_set: Option<HashSet<&str>> =
            (excluded.len() > 8).then(|| excluded.iter().map(AsRef::as_ref).collect());
        let is_excluded = |id: &str| match &excluded_set {
            Some(set) => set.contains(id),
            None => excluded.iter().any(|e| e.as_ref() == id),
        };
        let mut queued = 0u64;
        for connection in connections {
            if !excluded.is_empty() && is_excluded(connection.id()) {
                continue;
            }
            match connection.deliver(message) {
                // Counted in bulk below: one atomic add per fan-out.
                Delivery::Queued => queued += 1,
                other => self.counters.record(other),
            }
        }
        self.counters.add_delivered(queued);
        queued as usize
    }

    /// Records the outcome of a delivery made outside the store (e.g. a
    /// frame sent straight to a connection).
    pub fn record(&self, delivery: Delivery) {
        self.counters.record(delivery);
    }

    /// Fills the delivery counters and the connection count into `stats`.
    pub fn fill_stats(&self, stats: &mut ManagerStats) {
        stats.connections = self.len();
        self.counters.fill(stats);
    }
}

/// Removes a connection from one entry of a group or user index, dropping
/// the entry when it empties; `true` if it did (the last local member left).
fn leave(
    index: &mut HashMap<Arc<str>, HashMap<ConnectionId, Connection>>,
    key: &str,
    connection_id: &str,
) -> bool {
    let Some(members) = index.get_mut(key) else {
        return false;
    };
    members.remove(connection_id);
    if members.is_empty() {
        index.remove(key);
        return true;
    }
    false
}

fn not_found(connection_id: &str) -> Error {
    Error::ConnectionNotFound {
        connection_id: connection_id.to_owned(),
    }
}

/// Up to `limit` ids of `members`, and their number.
fn presence_of(members: Option<&HashMap<ConnectionId, Connection>>, limit: usize) -> Presence {
    let mut presence = Presence::default();
    if let Some(members) = members {
        presence.add(
            members.keys().cloned(),
            members.len() as u64,
            clamp_limit(limit),
        );
    }
    presence
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::connection::ConnectionOptions;
    use crate::protocol::Protocol;

    fn connect(
        store: &ConnectionStore,
        user: Option<&str>,
    ) -> (Connection, crate::ConnectionReceiver) {
        let mut options = ConnectionOptions::new(Protocol::Json);
        if let Some(user) = user {
            options = options.user(user);
        }
        let (connection, rx) = Connection::new(options);
        store.insert(connection.clone()).unwrap();
        (connection, rx)
    }

    fn message() -> SerializedMessage {
        SerializedMessage::invocation(&Protocol::ALL, "m", &(1,)).unwrap()
    }

    #[test]
    fn exclusions_short_and_long_lists() {
        let store = ConnectionStore::new();
        let clients: Vec<_> = (0..20).map(|_| connect(&store, None)).collect();
        let ids: Vec<ConnectionId> = clients.iter().map(|(c, _)| c.id().clone()).collect();
        // A short list is scanned, a long one hashed: same answer.
        assert_eq!(store.deliver_all(&message(), &ids[..3]), 17);
        assert_eq!(store.deliver_all(&message(), &ids[..12]), 8);
        for (i, (_, rx)) in clients.into_iter().enumerate() {
            let mut rx = rx;
            let expected = match i {
                0..3 => 0,
                3..12 => 1,
                _ => 2,
            };
            let mut got = 0;
            while rx.try_recv().is_some() {
                got += 1;
            }
            assert_eq!(got, expected, "connection {i}");
        }
    }

    #[test]
    fn membership_transitions_are_reported() {
        let store = ConnectionStore::new();
        let (a, _ra) = connect(&store, Some("u"));
        let (b, _rb) = connect(&store, Some("u"));
        let first = store.add_to_group(a.id(), "g").unwrap();
        assert!(first.changed && first.group_transition);
        let second = store.add_to_group(b.id(), "g").unwrap();
        assert!(second.changed && !second.group_transition);
        let again = store.add_to_group(b.id(), "g").unwrap();
        assert!(!again.changed);
        assert!(
            !store
                .remove_from_group(a.id(), "g")
                .unwrap()
                .group_transition
        );
        let removed = store.remove(b.id()).unwrap();
        assert_eq!(removed.emptied_groups, vec![Arc::<str>::from("g")]);
        assert!(!removed.last_of_user);
        assert!(store.remove(a.id()).unwrap().last_of_user);
        assert!(store.is_empty());
        assert!(store.group_names().is_empty() && store.user_names().is_empty());
    }
}

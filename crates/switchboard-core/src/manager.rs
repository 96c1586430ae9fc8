use async_trait::async_trait;

use crate::ConnectionId;
use crate::connection::Connection;
use crate::error::Result;
use crate::health::Health;
use crate::message::SerializedMessage;
use crate::pending::{ClientResponse, InvokeOptions};
use crate::presence::Presence;
use crate::protocol::Completion;
use crate::stats::ManagerStats;

/// Who a send addresses: the `send_*` methods of [`HubLifetimeManager`] as
/// one value.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Recipients {
    /// Every connection.
    All,
    /// Every connection but these.
    AllExcept(Vec<ConnectionId>),
    /// One connection.
    Connection(ConnectionId),
    /// Several connections.
    Connections(Vec<ConnectionId>),
    /// The members of a group.
    Group(String),
    /// The members of several groups.
    Groups(Vec<String>),
    /// The members of a group but these connections.
    GroupExcept(String, Vec<ConnectionId>),
    /// Every connection of a user.
    User(String),
    /// Every connection of several users.
    Users(Vec<String>),
}

impl Recipients {
    /// Sends `message` to these recipients through the matching `send_*`
    /// method of `manager`, which returns once the send is confirmed.
    pub async fn send_confirmed<M: HubLifetimeManager + ?Sized>(
        &self,
        manager: &M,
        message: &SerializedMessage,
    ) -> Result<()> {
        match self {
            Recipients::All => manager.send_all(message).await,
            Recipients::AllExcept(excluded) => manager.send_all_except(message, excluded).await,
            Recipients::Connection(id) => manager.send_connection(id, message).await,
            Recipients::Connections(ids) => manager.send_connections(ids, message).await,
            Recipients::Group(group) => manager.send_group(group, message).await,
            Recipients::Groups(groups) => manager.send_groups(groups, message).await,
            Recipients::GroupExcept(group, excluded) => {
                manager.send_group_except(group, message, excluded).await
            }
            Recipients::User(user) => manager.send_user(user, message).await,
            Recipients::Users(users) => manager.send_users(users, message).await,
        }
    }
}

/// Tracks the connections of one hub and delivers messages to them, on this
/// server or, for a backplane, on whichever server holds them.
///
/// The operations are those of ASP.NET Core SignalR's `HubLifetimeManager`.
/// Transport adapters and the hub dispatcher hold it as
/// `Arc<dyn HubLifetimeManager>`, so the in-memory manager and a backplane
/// are interchangeable.
///
/// Messages arrive pre-serialized ([`SerializedMessage`]): one frame per hub
/// protocol, encoded once by the sender and shared by every recipient.
///
/// Sends to a connection, group or user that does not exist succeed and
/// deliver nothing, as in SignalR. Sends never wait for a slow connection:
/// each connection's queue is bounded and its slow-consumer policy decides.
///
/// Messages of one kind from one server reach a connection in order. A
/// backplane may deliver a send to a connection it holds itself at once,
/// and others through its backplane, so a direct message can overtake an
/// earlier group message (as in SignalR); see the backplane's
/// documentation.
#[async_trait]
pub trait HubLifetimeManager: Send + Sync + std::fmt::Debug + 'static {
    /// Registers a new connection (and its user). It receives messages once
    /// this returns.
    async fn on_connected(&self, connection: Connection) -> Result<()>;

    /// Unregisters a connection: removes it from its groups and user, and
    /// fails the client-result invocations still waiting on it with
    /// "disconnected". Unknown ids are ignored.
    async fn on_disconnected(&self, connection_id: &str) -> Result<()>;

    /// Sends to every connection.
    async fn send_all(&self, message: &SerializedMessage) -> Result<()>;

    /// Sends to every connection but the excluded ones.
    async fn send_all_except(
        &self,
        message: &SerializedMessage,
        excluded: &[ConnectionId],
    ) -> Result<()>;

    /// Sends to one connection.
    async fn send_connection(&self, connection_id: &str, message: &SerializedMessage)
    -> Result<()>;

    /// Sends to each of several connections.
    async fn send_connections(
        &self,
        connection_ids: &[ConnectionId],
        message: &SerializedMessage,
    ) -> Result<()>;

    /// Sends to the members of a group.
    async fn send_group(&self, group: &str, message: &SerializedMessage) -> Result<()>;

    /// Sends to the members of several groups (a connection in two of them
    /// receives the message twice, as in SignalR).
    async fn send_groups(&self, groups: &[String], message: &SerializedMessage) -> Result<()>;

    /// Sends to the members of a group but the excluded ones.
    async fn send_group_except(
        &self,
        group: &str,
        message: &SerializedMessage,
        excluded: &[ConnectionId],
    ) -> Result<()>;

    /// Sends to every connection of a user.
    async fn send_user(&self, user: &str, message: &SerializedMessage) -> Result<()>;

    /// Sends to every connection of several users.
    async fn send_users(&self, users: &[String], message: &SerializedMessage) -> Result<()>;

    /// Sends to `recipients` like the matching `send_*` method, but may
    /// return as soon as the message is queued for the backplane, before the
    /// backplane confirmed it.
    ///
    /// The hub uses this for the sends of non-blocking invocations (the
    /// client asked for no answer), so that one connection's consecutive
    /// invocations do not each wait for a backplane round trip. Queued sends
    /// keep their order with every other send of this server. A queued send
    /// that fails later is counted and logged; while the backplane is not
    /// answering, the manager waits for confirmation again and reports the
    /// failure here.
    ///
    /// The default waits, as the `send_*` methods do.
    async fn send_queued(
        &self,
        recipients: &Recipients,
        message: &SerializedMessage,
    ) -> Result<()> {
        recipients.send_confirmed(self, message).await
    }

    /// Adds a connection, wherever it is, to a group. Adding twice is a
    /// no-op. A connection that exists nowhere is
    /// [`Error::ConnectionNotFound`](crate::Error::ConnectionNotFound).
    async fn add_to_group(&self, connection_id: &str, group: &str) -> Result<()>;

    /// Removes a connection, wherever it is, from a group. Removing a
    /// connection that is not a member succeeds; a connection that exists
    /// nowhere is [`Error::ConnectionNotFound`](crate::Error::ConnectionNotFound).
    async fn remove_from_group(&self, connection_id: &str, group: &str) -> Result<()>;

    /// Sends `message`, an invocation carrying `invocation_id`, to one
    /// connection and waits for the client's Completion (a client result).
    ///
    /// Fails at once with
    /// [`Error::ConnectionNotFound`](crate::Error::ConnectionNotFound) when
    /// no server holds the connection; with
    /// [`Error::ConnectionDisconnected`](crate::Error::ConnectionDisconnected)
    /// when it closes before answering; with
    /// [`Error::ClientError`](crate::Error::ClientError) when the client
    /// answers with an error; and per `options` on timeout or cancellation.
    async fn invoke_connection(
        &self,
        connection_id: &str,
        invocation_id: &str,
        message: &SerializedMessage,
        options: InvokeOptions,
    ) -> Result<ClientResponse>;

    /// Hands in a Completion that `connection_id` sent for a client-result
    /// invocation. A completion for an unknown invocation, or from another
    /// connection than the one invoked, is an error and changes nothing.
    async fn set_connection_result(
        &self,
        connection_id: &str,
        completion: Completion,
    ) -> Result<()>;

    /// The connections of `user` on every server: at most `limit` ids
    /// (and at most [`MAX_PRESENCE_LIMIT`](crate::MAX_PRESENCE_LIMIT)), and
    /// how many there are. A limit of 0 counts only.
    ///
    /// A backplane asks the servers holding the user's connections and
    /// waits for their answers for a bounded time; servers that did not
    /// answer by then are counted in [`Presence::unanswered`]. A server
    /// that dies leaves presence as soon as the backplane drops its
    /// connections; see the backplane's documentation for the bound.
    async fn user_connections(&self, user: &str, limit: usize) -> Result<Presence>;

    /// The members of `group` on every server: at most `limit` ids (and at
    /// most [`MAX_PRESENCE_LIMIT`](crate::MAX_PRESENCE_LIMIT)), and how many
    /// there are. A limit of 0 counts only. Answered as
    /// [`user_connections`](Self::user_connections) is.
    async fn group_members(&self, group: &str, limit: usize) -> Result<Presence>;

    /// Whether `user` has a connection on any server.
    ///
    /// Fails with [`Error::PresenceUnknown`](crate::Error::PresenceUnknown)
    /// when no server that answered holds one but some did not answer.
    async fn is_user_online(&self, user: &str) -> Result<bool> {
        let presence = self.user_connections(user, 0).await?;
        if presence.count == 0 && !presence.is_complete() {
            return Err(crate::Error::PresenceUnknown {
                unanswered: presence.unanswered,
            });
        }
        Ok(presence.count > 0)
    }

    /// The connection with this id, if it is held by this server.
    fn local_connection(&self, connection_id: &str) -> Option<Connection>;

    /// The manager's counters.
    fn stats(&self) -> ManagerStats;

    /// Whether the manager can serve now (its backplane is reachable), for
    /// a health endpoint. Managers without a backplane are always serving.
    fn health(&self) -> Health {
        Health::local()
    }
}

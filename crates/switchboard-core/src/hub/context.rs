use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio_util::sync::CancellationToken;

use crate::ConnectionId;
use crate::connection::Connection;
use crate::error::Result;
use crate::manager::{HubLifetimeManager, Recipients};
use crate::message::SerializedMessage;
use crate::pending::{InvocationIds, InvokeOptions};
use crate::presence::Presence;
use crate::protocol::Protocol;

/// The default time a client has to answer a client-result invocation.
pub const DEFAULT_CLIENT_RESULT_TIMEOUT: Duration = Duration::from_secs(30);

/// Sends to the connections of a hub, from hub methods or from any
/// background task.
///
/// A cheap-to-clone handle over the hub's lifetime manager. Messages are
/// serialized once per hub protocol and handed to the manager, which
/// delivers them on whichever server holds the connections.
///
/// ```
/// use std::sync::Arc;
/// use switchboard_core::{HubContext, InMemoryHubLifetimeManager};
///
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// let hub = HubContext::new(Arc::new(InMemoryHubLifetimeManager::new()));
/// // From a timer, a queue consumer, an HTTP handler...
/// hub.group("dashboard").send("tick", (42,)).await?;
/// hub.user("alice").send("notify", ("build finished",)).await?;
/// # Ok::<(), switchboard_core::Error>(())
/// # }).unwrap();
/// ```
#[derive(Debug, Clone)]
pub struct HubContext {
    inner: Arc<Inner>,
    /// Whether sends may return once queued for the backplane (see
    /// [`HubLifetimeManager::send_queued`]): set for the calls of
    /// non-blocking invocations only.
    queued: bool,
}

#[derive(Debug)]
struct Inner {
    /// Where messages go.
    manager: Arc<dyn HubLifetimeManager>,
    /// The protocols each message is serialized for: every protocol a
    /// connection on any server may speak.
    protocols: Vec<Protocol>,
    /// Ids for client-result invocations started here.
    invocation_ids: InvocationIds,
    /// Applied to client-result invocations that do not set their own.
    client_result_timeout: Option<Duration>,
}

impl HubContext {
    /// A context over `manager`, serializing for every protocol, with the
    /// default client-result timeout.
    pub fn new(manager: Arc<dyn HubLifetimeManager>) -> HubContext {
        HubContext::with_options(
            manager,
            Protocol::ALL.to_vec(),
            Some(DEFAULT_CLIENT_RESULT_TIMEOUT),
        )
    }

    pub(crate) fn with_options(
        manager: Arc<dyn HubLifetimeManager>,
        protocols: Vec<Protocol>,
        client_result_timeout: Option<Duration>,
    ) -> HubContext {
        HubContext {
            inner: Arc::new(Inner {
                manager,
                protocols,
                invocation_ids: InvocationIds::new(),
                client_result_timeout,
            }),
            queued: false,
        }
    }

    /// This context, sending the way a non-blocking invocation does when
    /// `queued`: a send may return once queued for the backplane, in order,
    /// before the backplane confirmed it (see
    /// [`HubLifetimeManager::send_queued`]).
    pub(crate) fn with_queued_sends(&self, queued: bool) -> HubContext {
        HubContext {
            inner: self.inner.clone(),
            queued,
        }
    }

    /// This context with sends that wait for the backplane's confirmation,
    /// and report its failure, even in a non-blocking invocation.
    ///
    /// In the calls of non-blocking invocations (the client asked for no
    /// answer) a send made in a burst returns once it is queued for the
    /// backplane, so that
    /// consecutive invocations do not each wait for a round trip; a failure
    /// found later is counted and logged. A method that must know whether
    /// its send reached the backplane sends through this context.
    pub fn confirmed(&self) -> HubContext {
        self.with_queued_sends(false)
    }

    /// The lifetime manager messages go through.
    pub fn manager(&self) -> &Arc<dyn HubLifetimeManager> {
        &self.inner.manager
    }

    /// The protocols messages are serialized for.
    pub fn protocols(&self) -> &[Protocol] {
        &self.inner.protocols
    }

    /// Every connection.
    pub fn all(&self) -> Clients {
        self.clients_for(Recipients::All)
    }

    /// Every connection but the excluded ones.
    pub fn all_except<I, S>(&self, excluded: I) -> Clients
    where
        I: IntoIterator<Item = S>,
        S: Into<ConnectionId>,
    {
        self.clients_for(Recipients::AllExcept(ids(excluded)))
    }

    /// One connection, which can also be asked for a result.
    pub fn client(&self, connection_id: impl Into<ConnectionId>) -> Client {
        Client {
            context: self.clone(),
            connection_id: connection_id.into(),
        }
    }

    /// Several connections.
    pub fn clients<I, S>(&self, connection_ids: I) -> Clients
    where
        I: IntoIterator<Item = S>,
        S: Into<ConnectionId>,
    {
        self.clients_for(Recipients::Connections(ids(connection_ids)))
    }

    /// The members of a group.
    pub fn group(&self, group: impl Into<String>) -> Clients {
        self.clients_for(Recipients::Group(group.into()))
    }

    /// The members of several groups.
    pub fn groups<I, S>(&self, groups: I) -> Clients
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.clients_for(Recipients::Groups(
            groups.into_iter().map(Into::into).collect(),
        ))
    }

    /// The members of a group but the excluded connections.
    pub fn group_except<I, S>(&self, group: impl Into<String>, excluded: I) -> Clients
    where
        I: IntoIterator<Item = S>,
        S: Into<ConnectionId>,
    {
        self.clients_for(Recipients::GroupExcept(group.into(), ids(excluded)))
    }

    /// Every connection of a user.
    pub fn user(&self, user: impl Into<String>) -> Clients {
        self.clients_for(Recipients::User(user.into()))
    }

    /// Every connection of several users.
    pub fn users<I, S>(&self, users: I) -> Clients
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.clients_for(Recipients::Users(
            users.into_iter().map(Into::into).collect(),
        ))
    }

    /// Adds a connection, on whichever server, to a group.
    pub async fn add_to_group(&self, connection_id: &str, group: &str) -> Result<()> {
        self.inner.manager.add_to_group(connection_id, group).await
    }

    /// Removes a connection, on whichever server, from a group.
    pub async fn remove_from_group(&self, connection_id: &str, group: &str) -> Result<()> {
        self.inner
            .manager
            .remove_from_group(connection_id, group)
            .await
    }

    /// Whether a user has a connection on any server (see
    /// [`HubLifetimeManager::is_user_online`]).
    pub async fn is_user_online(&self, user: &str) -> Result<bool> {
        self.inner.manager.is_user_online(user).await
    }

    /// A user's connections on every server: at most `limit` ids, and how
    /// many there are (see [`HubLifetimeManager::user_connections`]).
    pub async fn user_connections(&self, user: &str, limit: usize) -> Result<Presence> {
        self.inner.manager.user_connections(user, limit).await
    }

    /// A group's members on every server: at most `limit` ids, and how
    /// many there are; a limit of 0 only counts them (see
    /// [`HubLifetimeManager::group_members`]).
    pub async fn group_members(&self, group: &str, limit: usize) -> Result<Presence> {
        self.inner.manager.group_members(group, limit).await
    }

    fn clients_for(&self, target: Recipients) -> Clients {
        Clients {
            context: self.clone(),
            target,
        }
    }

    async fn send_to(&self, recipients: &Recipients, message: &SerializedMessage) -> Result<()> {
        let manager = &*self.inner.manager;
        if self.queued {
            manager.send_queued(recipients, message).await
        } else {
            recipients.send_confirmed(manager, message).await
        }
    }

    fn serialize<A: Serialize>(&self, method: &str, arguments: &A) -> Result<SerializedMessage> {
        Ok(SerializedMessage::invocation(
            &self.inner.protocols,
            method,
            arguments,
        )?)
    }
}

fn ids<I, S>(ids: I) -> Vec<ConnectionId>
where
    I: IntoIterator<Item = S>,
    S: Into<ConnectionId>,
{
    ids.into_iter().map(Into::into).collect()
}

/// A set of connections to send to; made by [`HubContext`] or
/// [`CallContext`](crate::CallContext).
#[derive(Debug, Clone)]
pub struct Clients {
    context: HubContext,
    target: Recipients,
}

impl Clients {
    /// Invokes client method `method` with `arguments` (a tuple, array or
    /// `Vec`; one element per argument) on every addressed connection.
    ///
    /// Returns once the message is queued locally or published on the
    /// backplane; it does not wait for clients to read it.
    pub async fn send<A: Serialize>(&self, method: &str, arguments: A) -> Result<()> {
        let message = self.context.serialize(method, &arguments)?;
        self.send_serialized(&message).await
    }

    /// Sends an already serialized message.
    pub async fn send_serialized(&self, message: &SerializedMessage) -> Result<()> {
        self.context.send_to(&self.target, message).await
    }
}

/// One connection: send to it, or invoke a method on it and wait for the
/// client's result.
#[derive(Debug, Clone)]
pub struct Client {
    context: HubContext,
    connection_id: ConnectionId,
}

impl Client {
    /// The connection's id.
    pub fn id(&self) -> &ConnectionId {
        &self.connection_id
    }

    /// Invokes client method `method` on the connection without waiting for
    /// an answer.
    pub async fn send<A: Serialize>(&self, method: &str, arguments: A) -> Result<()> {
        let message = self.context.serialize(method, &arguments)?;
        self.context
            .send_to(
                &Recipients::Connection(self.connection_id.clone()),
                &message,
            )
            .await
    }

    /// Invokes client method `method` and waits for the client's result,
    /// converted into `T`, within the hub's client-result timeout.
    pub async fn invoke<T, A>(&self, method: &str, arguments: A) -> Result<T>
    where
        T: DeserializeOwned,
        A: Serialize,
    {
        let options = InvokeOptions {
            timeout: self.context.inner.client_result_timeout,
            cancel: None,
        };
        self.invoke_with(method, arguments, options).await
    }

    /// Like [`Client::invoke`] with explicit timeout and cancellation.
    pub async fn invoke_with<T, A>(
        &self,
        method: &str,
        arguments: A,
        options: InvokeOptions,
    ) -> Result<T>
    where
        T: DeserializeOwned,
        A: Serialize,
    {
        let invocation_id = self.context.inner.invocation_ids.next_id();
        let message = SerializedMessage::invocation_with_id(
            &self.context.inner.protocols,
            Some(&invocation_id),
            method,
            &arguments,
        )?;
        let response = self
            .context
            .inner
            .manager
            .invoke_connection(&self.connection_id, &invocation_id, &message, options)
            .await?;
        response.deserialize()
    }
}

/// What a hub method knows about its call: the calling connection, and the
/// whole hub through [`HubContext`] (which it dereferences to).
#[derive(Debug, Clone)]
pub struct CallContext {
    hub: HubContext,
    connection: Connection,
    /// Cancelled when the call should stop early; see
    /// [`CallContext::cancellation`].
    cancel: CancellationToken,
}

impl CallContext {
    pub(crate) fn new(
        hub: HubContext,
        connection: Connection,
        cancel: CancellationToken,
    ) -> CallContext {
        CallContext {
            hub,
            connection,
            cancel,
        }
    }

    /// Cancelled when the calling connection closes, and, for this call,
    /// when the client sends a CancelInvocation for it.
    ///
    /// A streaming method is stopped (its stream dropped) when this fires.
    /// A unary method is never stopped midway, as in SignalR: it runs to
    /// completion, and can watch this token to give up early when its
    /// caller is gone.
    ///
    /// ```
    /// use switchboard_core::{CallContext, HubError};
    ///
    /// async fn long_report(ctx: CallContext) -> Result<u64, HubError> {
    ///     let mut rows = 0;
    ///     while rows < 1_000_000 {
    ///         if ctx.is_cancelled() {
    ///             return Err(HubError::new("the caller went away"));
    ///         }
    ///         rows += 1;
    ///     }
    ///     Ok(rows)
    /// }
    /// ```
    pub fn cancellation(&self) -> &CancellationToken {
        &self.cancel
    }

    /// Whether [`CallContext::cancellation`] has fired.
    pub fn is_cancelled(&self) -> bool {
        self.cancel.is_cancelled()
    }

    /// Completes when [`CallContext::cancellation`] fires.
    pub async fn cancelled(&self) {
        self.cancel.cancelled().await;
    }

    /// This call's context, with sends that may return once queued for
    /// the backplane when `queued`.
    pub(crate) fn with_queued_sends(mut self, queued: bool) -> CallContext {
        self.hub = self.hub.with_queued_sends(queued);
        self
    }

    /// The hub.
    pub fn hub(&self) -> &HubContext {
        &self.hub
    }

    /// The calling connection.
    pub fn connection(&self) -> &Connection {
        &self.connection
    }

    /// The calling connection's id.
    pub fn connection_id(&self) -> &ConnectionId {
        self.connection.id()
    }

    /// The calling connection's user, if any.
    pub fn user(&self) -> Option<&str> {
        self.connection.user()
    }

    /// The calling connection.
    pub fn caller(&self) -> Client {
        self.hub.client(self.connection.id().clone())
    }

    /// Every connection but the caller.
    pub fn others(&self) -> Clients {
        self.hub.all_except([self.connection.id().clone()])
    }

    /// The members of a group but the caller.
    pub fn others_in_group(&self, group: impl Into<String>) -> Clients {
        self.hub.group_except(group, [self.connection.id().clone()])
    }

    /// Adds the caller to a group.
    pub async fn join(&self, group: &str) -> Result<()> {
        self.hub.add_to_group(self.connection.id(), group).await
    }

    /// Removes the caller from a group.
    pub async fn leave(&self, group: &str) -> Result<()> {
        self.hub
            .remove_from_group(self.connection.id(), group)
            .await
    }
}

impl std::ops::Deref for CallContext {
    type Target = HubContext;
    fn deref(&self) -> &HubContext {
        &self.hub
    }
}

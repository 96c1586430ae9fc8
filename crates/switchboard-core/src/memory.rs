use std::sync::Arc;

use async_trait::async_trait;
use tokio::sync::oneshot;

use crate::ConnectionId;
use crate::connection::Connection;
use crate::error::{Error, Result};
use crate::manager::HubLifetimeManager;
use crate::message::SerializedMessage;
use crate::pending::{
    ClientResponse, InvokeOptions, PendingInvocations, ResultSender, outcome_to_result,
    wait_for_response,
};
use crate::presence::Presence;
use crate::protocol::Completion;
use crate::stats::{ManagerStats, SendKind};
use crate::store::ConnectionStore;

/// The lifetime manager for a single process: every connection is local.
///
/// The default when an application runs as one server; swap in a backplane
/// manager to run several. A cheap-to-clone handle.
///
/// ```
/// use std::sync::Arc;
/// use switchboard_core::{
///     Connection, ConnectionOptions, HubLifetimeManager, InMemoryHubLifetimeManager,
///     SerializedMessage, protocol::Protocol,
/// };
///
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// let manager: Arc<dyn HubLifetimeManager> = Arc::new(InMemoryHubLifetimeManager::new());
/// let (connection, mut outbound) = Connection::new(ConnectionOptions::new(Protocol::Json));
/// manager.on_connected(connection.clone()).await?;
/// manager.add_to_group(connection.id(), "room-1").await?;
///
/// let message = SerializedMessage::invocation(&Protocol::ALL, "message", &("bot", "hello"))?;
/// manager.send_group("room-1", &message).await?;
/// let frame = outbound.recv().await.unwrap();
/// assert!(frame.starts_with(b"{\"type\":1,\"target\":\"message\""));
/// # Ok::<(), switchboard_core::Error>(())
/// # }).unwrap();
/// ```
#[derive(Debug, Clone, Default)]
pub struct InMemoryHubLifetimeManager {
    inner: Arc<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    /// Connections, groups, users and fan-out.
    store: ConnectionStore,
    /// Client-result invocations waiting for their Completion.
    pending: PendingInvocations<ResultSender>,
}

impl InMemoryHubLifetimeManager {
    /// A manager with no connections.
    pub fn new() -> InMemoryHubLifetimeManager {
        InMemoryHubLifetimeManager::default()
    }

    /// The local connection store.
    pub fn store(&self) -> &ConnectionStore {
        &self.inner.store
    }
}

#[async_trait]
impl HubLifetimeManager for InMemoryHubLifetimeManager {
    async fn on_connected(&self, connection: Connection) -> Result<()> {
        self.inner.store.insert(connection)?;
        Ok(())
    }

    async fn on_disconnected(&self, connection_id: &str) -> Result<()> {
        self.inner.store.remove(connection_id);
        for (_, waiter) in self.inner.pending.take_connection(connection_id) {
            // The caller may have given up already; nothing to do then.
            let _ = waiter.send(Err(Error::ConnectionDisconnected {
                connection_id: connection_id.to_owned(),
            }));
        }
        Ok(())
    }

    async fn send_all(&self, message: &SerializedMessage) -> Result<()> {
        self.inner.store.count_sends(SendKind::All, 1);
        self.inner.store.deliver_all(message, &[] as &[&str]);
        Ok(())
    }

    async fn send_all_except(
        &self,
        message: &SerializedMessage,
        excluded: &[ConnectionId],
    ) -> Result<()> {
        self.inner.store.count_sends(SendKind::All, 1);
        self.inner.store.deliver_all(message, excluded);
        Ok(())
    }

    async fn send_connection(
        &self,
        connection_id: &str,
        message: &SerializedMessage,
    ) -> Result<()> {
        self.inner.store.count_sends(SendKind::Connection, 1);
        self.inner.store.deliver_connection(connection_id, message);
        Ok(())
    }

    async fn send_connections(
        &self,
        connection_ids: &[ConnectionId],
        message: &SerializedMessage,
    ) -> Result<()> {
        self.inner
            .store
            .count_sends(SendKind::Connection, connection_ids.len());
        for id in connection_ids {
            self.inner.store.deliver_connection(id, message);
        }
        Ok(())
    }

    async fn send_group(&self, group: &str, message: &SerializedMessage) -> Result<()> {
        self.inner.store.count_sends(SendKind::Group, 1);
        self.inner
            .store
            .deliver_group(group, message, &[] as &[&str]);
        Ok(())
    }

    async fn send_groups(&self, groups: &[String], message: &SerializedMessage) -> Result<()> {
        self.inner.store.count_sends(SendKind::Group, groups.len());
        for group in groups {
            self.inner
                .store
                .deliver_group(group, message, &[] as &[&str]);
        }
        Ok(())
    }

    async fn send_group_except(
        &self,
        group: &str,
        message: &SerializedMessage,
        excluded: &[ConnectionId],
    ) -> Result<()> {
        self.inner.store.count_sends(SendKind::Group, 1);
        self.inner.store.deliver_group(group, message, excluded);
        Ok(())
    }

    async fn send_user(&self, user: &str, message: &SerializedMessage) -> Result<()> {
        self.inner.store.count_sends(SendKind::User, 1);
        self.inner.store.deliver_user(user, message);
        Ok(())
    }

    async fn send_users(&self, users: &[String], message: &SerializedMessage) -> Result<()> {
        self.inner.store.count_sends(SendKind::User, users.len());
        for user in users {
            self.inner.store.deliver_user(user, message);
        }
        Ok(())
    }

    async fn add_to_group(&self, connection_id: &str, group: &str) -> Result<()> {
        self.inner.store.add_to_group(connection_id, group)?;
        Ok(())
    }

    async fn remove_from_group(&self, connection_id: &str, group: &str) -> Result<()> {
        self.inner.store.remove_from_group(connection_id, group)?;
        Ok(())
    }

    async fn invoke_connection(
        &self,
        connection_id: &str,
        invocation_id: &str,
        message: &SerializedMessage,
        options: InvokeOptions,
    ) -> Result<ClientResponse> {
        let (tx, rx) = oneshot::channel();
        // Recorded before the connection is looked up: a disconnect that
        // removes the connection after the look-up then finds the entry
        // and fails it; one before the look-up makes the look-up fail.
        self.inner
            .pending
            .insert(invocation_id, ConnectionId::from(connection_id), tx)?;
        let _cleanup = self.inner.pending.remove_on_drop(invocation_id);
        let Some(connection) = self.inner.store.get(connection_id) else {
            return Err(Error::ConnectionNotFound {
                connection_id: connection_id.to_owned(),
            });
        };
        self.inner.store.record(connection.deliver(message));
        let response = wait_for_response(rx, connection_id, &options).await;
        self.inner.store.count_client_result(response)
    }

    async fn set_connection_result(
        &self,
        connection_id: &str,
        completion: Completion,
    ) -> Result<()> {
        let waiter = self
            .inner
            .pending
            .take(&completion.invocation_id, connection_id)?;
        // The caller may have given up in the meantime; the answer is dropped.
        let _ = waiter.send(outcome_to_result(completion.outcome));
        Ok(())
    }

    async fn user_connections(&self, user: &str, limit: usize) -> Result<Presence> {
        Ok(self.inner.store.user_presence(user, limit))
    }

    async fn group_members(&self, group: &str, limit: usize) -> Result<Presence> {
        Ok(self.inner.store.group_presence(group, limit))
    }

    fn local_connection(&self, connection_id: &str) -> Option<Connection> {
        self.inner.store.get(connection_id)
    }

    fn stats(&self) -> ManagerStats {
        let mut stats = ManagerStats::default();
        self.inner.store.fill_stats(&mut stats);
        stats.pending_client_results = self.inner.pending.len();
        stats
    }
}

//! The driver for one Redis server (or a primary with replicas behind one
//! address): PUBLISH, SUBSCRIBE and UNSUBSCRIBE.

use bytes::Bytes;
use fred::interfaces::{ClientLike, PubsubInterface};
use switchboard_backplane::DriverEvents;
use switchboard_core::Result;

use crate::client::{Clients, unavailable};
use crate::options::RedisOptions;

/// One Redis node as a backplane.
pub(crate) struct NodeDriver {
    clients: Clients,
}

impl NodeDriver {
    pub(crate) async fn connect(options: &RedisOptions) -> Result<NodeDriver> {
        Ok(NodeDriver {
            clients: Clients::connect(options, false).await?,
        })
    }

    pub(crate) async fn publish(&self, channel: String, payload: Bytes) -> Result<Option<u64>> {
        // The count of subscribed clients that received it: with one node,
        // exactly the servers listening on the channel.
        self.clients.publish(channel, payload, false).await
    }

    pub(crate) async fn subscribe(&self, channels: Vec<String>) -> Result<()> {
        self.change(true, channels).await
    }

    pub(crate) async fn unsubscribe(&self, channels: Vec<String>) -> Result<()> {
        self.change(false, channels).await
    }

    /// SUBSCRIBEs (`subscribe`) or UNSUBSCRIBEs `channels`, then waits for
    /// a PING sent after it on the subscriber connection.
    ///
    /// fred completes SUBSCRIBE and UNSUBSCRIBE as soon as they are written
    /// (their confirmations arrive out of band), so a subscription is not
    /// yet active when `subscribe` returns, and a message published right
    /// after could be missed. Redis answers the commands of one connection
    /// in order, and PING is allowed in subscribed mode: its answer proves
    /// the subscription changes before it are in effect.
    async fn change(&self, subscribe: bool, channels: Vec<String>) -> Result<()> {
        let clients = &self.clients;
        clients.check_subscriber()?;
        let client = clients.subscriber.with_options(&clients.command_options);
        let (command, sent) = if subscribe {
            ("SUBSCRIBE", client.subscribe(channels).await)
        } else {
            ("UNSUBSCRIBE", client.unsubscribe(channels).await)
        };
        sent.map_err(|e| unavailable(format!("{command} failed: {e}"), Some(e)))?;
        clients
            .barrier(std::slice::from_ref(&clients.command_options))
            .await
    }

    pub(crate) fn events(&self) -> DriverEvents {
        self.clients.events()
    }

    pub(crate) fn is_connected(&self) -> bool {
        self.clients.is_connected()
    }

    pub(crate) async fn shutdown(&self) {
        self.clients.shutdown().await;
    }
}

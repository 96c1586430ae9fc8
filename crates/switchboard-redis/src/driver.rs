//! [`RedisDriver`]: the backplane driver the URL asks for.

use std::fmt;

use async_trait::async_trait;
use bytes::Bytes;
use switchboard_backplane::{BackplaneDriver, DriverConfig, DriverEvents, ScaleOutOptions};
use switchboard_core::Result;

use crate::client::is_cluster_url;
use crate::cluster::ClusterDriver;
use crate::node::NodeDriver;
use crate::options::RedisOptions;

/// The Redis [`BackplaneDriver`]: one node (`redis://`, `rediss://`) with
/// PUBLISH / SUBSCRIBE, or a Redis Cluster (`redis-cluster://`,
/// `rediss-cluster://`) with sharded pub/sub: SPUBLISH / SSUBSCRIBE.
///
/// Made by [`RedisHubLifetimeManager::connect`](crate::RedisHubLifetimeManager),
/// or by [`RedisDriver::connect`] to start the engine yourself.
pub struct RedisDriver {
    kind: Kind,
}

enum Kind {
    Node(NodeDriver),
    Cluster(ClusterDriver),
}

impl fmt::Debug for RedisDriver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self.kind {
            Kind::Node(_) => "node",
            Kind::Cluster(_) => "cluster",
        };
        f.debug_struct("RedisDriver")
            .field("kind", &kind)
            .field("connected", &self.is_connected())
            .finish()
    }
}

impl RedisDriver {
    /// Connects to the Redis the options' URL names.
    ///
    /// Fails with `InvalidConfig` for a URL that is not one of the accepted
    /// forms, and with `BackplaneUnavailable` when Redis cannot be reached
    /// within the connect timeout (logging one error line).
    pub async fn connect(options: &RedisOptions) -> Result<RedisDriver> {
        let kind = if is_cluster_url(&options.url)? {
            Kind::Cluster(ClusterDriver::connect(options).await?)
        } else {
            Kind::Node(NodeDriver::connect(options).await?)
        };
        Ok(RedisDriver { kind })
    }

    /// Whether this driver runs on a Redis Cluster.
    pub fn is_cluster(&self) -> bool {
        matches!(self.kind, Kind::Cluster(_))
    }
}

#[async_trait]
impl BackplaneDriver for RedisDriver {
    async fn publish(&self, channel: String, payload: Bytes) -> Result<Option<u64>> {
        match &self.kind {
            Kind::Node(node) => node.publish(channel, payload).await,
            Kind::Cluster(cluster) => cluster.publish(channel, payload).await,
        }
    }

    async fn subscribe(&self, channels: Vec<String>) -> Result<()> {
        match &self.kind {
            Kind::Node(node) => node.subscribe(channels).await,
            Kind::Cluster(cluster) => cluster.subscribe(channels).await,
        }
    }

    async fn unsubscribe(&self, channels: Vec<String>) -> Result<()> {
        match &self.kind {
            Kind::Node(node) => node.unsubscribe(channels).await,
            Kind::Cluster(cluster) => cluster.unsubscribe(channels).await,
        }
    }

    fn events(&self) -> DriverEvents {
        match &self.kind {
            Kind::Node(node) => node.events(),
            Kind::Cluster(cluster) => cluster.events(),
        }
    }

    fn is_connected(&self) -> bool {
        match &self.kind {
            Kind::Node(node) => node.is_connected(),
            Kind::Cluster(cluster) => cluster.is_connected(),
        }
    }

    async fn shutdown(&self) {
        match &self.kind {
            Kind::Node(node) => node.shutdown().await,
            Kind::Cluster(cluster) => cluster.shutdown().await,
        }
    }
}

#[async_trait]
impl DriverConfig for RedisOptions {
    type Driver = RedisDriver;

    fn scale_out(&self) -> &ScaleOutOptions {
        &self.scale_out
    }

    async fn connect(self) -> Result<RedisDriver> {
        RedisDriver::connect(&self).await
    }
}

//! Sending to a hub's connections from a process that hosts none.

use std::ops::Deref;
use std::sync::Arc;

use switchboard_core::{HubContext, Result};

use crate::{RedisHubLifetimeManager, RedisOptions};

/// Sends to the connections of a hub, wherever they are, from a process
/// that hosts none: a worker, a cron job, an HTTP service that is not the
/// SignalR server.
///
/// It connects to the hub's Redis like a server does, as an
/// [emitter](crate::ScaleOutOptions::emitter): it does not listen on the
/// broadcast channel, so none of the hub's traffic reaches it. It derefs to
/// a [`HubContext`]: `all`, `group`, `user`, `client` and the rest, group
/// changes of any connection, client results.
///
/// ```no_run
/// use switchboard_redis::{Emitter, RedisOptions};
///
/// # async fn run() -> switchboard_core::Result<()> {
/// let emitter = Emitter::connect(RedisOptions::new("redis://127.0.0.1:6379").hub("chat")).await?;
/// emitter.user("alice").send("message", ("system", "your export is ready")).await?;
/// emitter.group("ops").send("message", ("system", "nightly job done")).await?;
/// emitter.shutdown().await;
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct Emitter {
    manager: Arc<RedisHubLifetimeManager>,
    context: HubContext,
}

impl Emitter {
    /// Connects to the Redis (or Redis Cluster) of `options`, for the hub
    /// it names (the same prefix and hub as the servers').
    pub async fn connect(options: RedisOptions) -> Result<Emitter> {
        let manager = Arc::new(RedisHubLifetimeManager::connect(options.emitter(true)).await?);
        let context = HubContext::new(manager.clone());
        Ok(Emitter { manager, context })
    }

    /// What sends.
    pub fn context(&self) -> &HubContext {
        &self.context
    }

    /// Disconnects from Redis: calls still waiting fail.
    pub async fn shutdown(&self) {
        self.manager.shutdown().await;
    }
}

impl Deref for Emitter {
    type Target = HubContext;

    fn deref(&self) -> &HubContext {
        &self.context
    }
}

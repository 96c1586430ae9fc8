//! The Redis backplane for switchboard: run one hub as many server
//! processes, and every message still reaches every connection it
//! addresses, whichever process holds it.
//!
//! [`RedisHubLifetimeManager`] implements
//! [`HubLifetimeManager`](switchboard_core::HubLifetimeManager) over Redis
//! pub/sub with the semantics of ASP.NET Core SignalR's
//! `RedisHubLifetimeManager`. Swap it in for the in-memory manager; hub code
//! does not change. It is the scale-out engine of `switchboard-backplane`
//! (everything that is not Redis: envelopes, membership, acknowledgements,
//! client results, restoring subscriptions) on a [`RedisDriver`], which
//! speaks to one Redis node or to a Redis Cluster.
//!
//! ```no_run
//! use std::sync::Arc;
//! use switchboard_core::{CallContext, Hub};
//! use switchboard_redis::{RedisHubLifetimeManager, RedisOptions};
//!
//! # async fn run() -> Result<(), switchboard_core::Error> {
//! let manager = RedisHubLifetimeManager::connect(
//!     RedisOptions::new("redis://127.0.0.1:6379").prefix("myapp:").hub("chat"),
//! )
//! .await?;
//! let hub = Hub::builder()
//!     .method("Broadcast", |ctx: CallContext, (text,): (String,)| async move {
//!         // Reaches the connections of every server on this Redis.
//!         ctx.all().send("message", (text,)).await?;
//!         Ok(())
//!     })
//!     .build(Arc::new(manager));
//! # let _ = hub; Ok(()) }
//! ```
//!
//! # URLs
//!
//! | URL | what |
//! |---|---|
//! | `redis://[user:password@]host[:port][/db]` | one node: PUBLISH / SUBSCRIBE |
//! | `rediss://...` | the same over TLS |
//! | `redis-cluster://[user:password@]host:port?node=host2:port2&node=host3:port3` | a Redis Cluster: SPUBLISH / SSUBSCRIBE |
//! | `rediss-cluster://...` | the same over TLS |
//!
//! A cluster URL names one or more nodes to start from; the rest are found
//! from the cluster's slot map. Name several, so that one node being down
//! at startup does not matter.
//!
//! # How it works
//!
//! Each server keeps two Redis connections (on a cluster: two per primary):
//! one publishes, one subscribes (a connection in subscribe mode cannot
//! publish). Every payload is one protobuf `Envelope`; the channels and how
//! a message travels are described in `switchboard-backplane`.
//!
//! On one node, SUBSCRIBE is completed by fred as soon as it is written, so
//! each batch of subscription changes is followed by a PING on the
//! subscriber connection: its answer proves the changes are in effect
//! before `add_to_group` (or `on_connected`) returns. PUBLISH answers how
//! many subscribers received a message: exactly the servers listening.
//!
//! # Redis Cluster
//!
//! Classic PUBLISH on a cluster is forwarded to every node, so every node
//! carries every message and adding shards adds nothing. On a cluster
//! every channel is a *shard channel* instead (Redis 7): SPUBLISH goes to
//! the primary that owns the channel's hash slot, which delivers to the
//! servers subscribed there, and no other node sees it. Connection, group
//! and user channels spread over the slots, so the pub/sub work divides
//! over the shards.
//!
//! - **Receiver counts.** SPUBLISH counts the subscribers on the node that
//!   ran it, and every server subscribes to a channel on the primary that
//!   owns its slot, so the count is exact, as on one node: a group change
//!   or client-result call for a connection that exists nowhere still fails
//!   at once with `ConnectionNotFound`. While a slot moves or a replica
//!   takes over, the count can read 0 for the moment it takes the owner to
//!   subscribe on the new node (about a second), and such a call fails
//!   with `ConnectionNotFound` although the connection exists.
//! - **Live subscriptions.** Each SSUBSCRIBE names one channel and returns
//!   once the owning node confirmed it: the "live" guarantee of
//!   `add_to_group` holds per node. (One channel per command is also
//!   required by fred 10.1, which pairs the extra confirmations of a
//!   multi-channel SSUBSCRIBE with the commands after it.) SUNSUBSCRIBE is
//!   followed by a PING to each node involved.
//! - **Slots that move, failover.** When a slot leaves a node, Redis ends
//!   its subscriptions there. The driver reads the slot layout every
//!   second, and when it changed, or a node connection was made again (a
//!   restart, a promoted replica), every subscription the server needs is
//!   made again from its local state (SSUBSCRIBE is idempotent). Measured:
//!   delivery back 0.8 s after a live slot migration, 2.2 s after the start
//!   of a 2,000-slot `redis-cli --cluster reshard`, 0.3 s after a killed
//!   master came back.
//! - **Fixed channels.** The `all` channel lives on one slot, so every
//!   broadcast is carried by one shard's primary (which delivers it to
//!   every server); the other shards carry none of it. Each server's ack
//!   and return channels live on one slot each, spread over the shards by
//!   server name.
//! - **A primary that is down.** fred 10.1 serves all nodes of a cluster
//!   from one task, and while it reconnects to a node it sends nothing to
//!   any node: sends fail with `BackplaneUnavailable` (within the publish
//!   timeout) until the node is back or a replica has taken over. Give
//!   each primary a replica, so that failover bounds the outage (about
//!   twice the cluster's `cluster-node-timeout`).
//!
//! # Ordering
//!
//! Sends from one server that go through Redis reach each connection in
//! the order they were made (on a cluster: per channel; messages to
//! different channels of one connection, a group and a broadcast say, may
//! come from different shards). A send to a connection held by the sending
//! server is delivered at once, without Redis, so it can overtake a group,
//! user or broadcast message sent earlier. This is SignalR's behaviour too.
//!
//! # When Redis goes away
//!
//! - [`RedisHubLifetimeManager::connect`] fails after at most
//!   [`RedisOptions::connect_timeout`] with `BackplaneUnavailable`, logging
//!   one error line.
//! - While Redis is unreachable, sends fail at once with
//!   `BackplaneUnavailable` (at most [`RedisOptions::publish_timeout`] when
//!   Redis is stalled rather than gone); they never hang. Sends to local
//!   connections keep working.
//! - Local state is kept: connections can still connect and disconnect,
//!   join and leave groups.
//! - A connection that dies without a word (a NAT table or a load balancer
//!   that drops it without a reset) is found by a heartbeat: each
//!   connection is sent a PING every [`RedisOptions::heartbeat_interval`],
//!   and one that leaves a command unanswered for
//!   [`RedisOptions::unresponsive_timeout`] is closed and replaced. With
//!   the defaults, delivery resumes within 10 s (about 7 s measured).
//! - The client reconnects by itself (exponential backoff up to
//!   [`RedisOptions::reconnect_max_delay`]). On reconnect every
//!   subscription this server needs (all, its connections, groups, users,
//!   ack and return) is restored from its local state, and delivery resumes
//!   without any action by the application. Messages published while a
//!   server was disconnected are not replayed (Redis pub/sub keeps nothing).
//!
//! # Garbage and limits
//!
//! Anything on the hub's channels that is not a valid envelope of the kind
//! the channel carries (random bytes, truncated envelopes, a group command
//! on a group channel, envelopes over [`RedisOptions::max_envelope_size`])
//! is dropped and counted in
//! [`ManagerStats`](switchboard_core::ManagerStats) (`backplane_malformed`,
//! `backplane_oversize`), with a rate-limited warning; valid traffic keeps
//! flowing. If the dispatcher falls behind by more than
//! [`RedisOptions::message_capacity`] messages, the oldest are lost and
//! counted as `backplane_lagged`.
//!
//! # Feature flags
//!
//! None. TLS (`rediss://`, `rediss-cluster://`) uses rustls with the
//! system's trusted roots, or [`RedisOptions::tls_root_certificates`].
//!
//! # Errors
//!
//! Operations return [`switchboard_core::Error`]: `BackplaneUnavailable`
//! (Redis unreachable or stalled), `ConnectionNotFound`, `AckTimeout`,
//! `MessageTooLarge`, `InvalidName` / `InvalidConfig` (bad prefix, hub or
//! URL). Redis client errors are wrapped as sources, never exposed in
//! signatures.

mod client;
mod cluster;
mod driver;
mod emitter;
mod link;
mod node;
mod options;

pub use driver::RedisDriver;
pub use emitter::Emitter;
pub use options::RedisOptions;
pub use switchboard_backplane::ScaleOutOptions;

/// A [`HubLifetimeManager`](switchboard_core::HubLifetimeManager) that spans
/// every server connected to one Redis (or one Redis Cluster): the
/// scale-out engine of `switchboard-backplane` on a [`RedisDriver`].
///
/// Made with `RedisHubLifetimeManager::connect(RedisOptions::new(url))`; see
/// the [crate documentation](crate).
pub type RedisHubLifetimeManager = switchboard_backplane::ScaleOutManager<RedisDriver>;

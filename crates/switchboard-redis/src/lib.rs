//! The Redis backplane for switchboard: run one hub as many server
//! processes, and every message still reaches every connection it
//! addresses, whichever process holds it.
//!
//! [`RedisHubLifetimeManager`] implements
//! [`HubLifetimeManager`](switchboard_core::HubLifetimeManager) over Redis
//! pub/sub with the semantics of ASP.NET Core SignalR's
//! `RedisHubLifetimeManager`. Swap it in for the in-memory manager; hub code
//! does not change.
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
//! # How it works
//!
//! Each server keeps two Redis connections: one publishes, one subscribes
//! (a connection in subscribe mode cannot publish). Every payload is one
//! protobuf `Envelope` (see `switchboard-protocol`). Channel names:
//!
//! | kind | channel | subscribed by |
//! |---|---|---|
//! | all | `{prefix}{hub}:all` | every server |
//! | connection | `{prefix}{hub}:connection:{id}` | the server holding the connection |
//! | group | `{prefix}{hub}:group:{name}` | servers with a local member (reference-counted) |
//! | user | `{prefix}{hub}:user:{id}` | servers with a local connection of the user (reference-counted) |
//! | ack | `{prefix}{hub}:internal:ack:{server}` | that server |
//! | return | `{prefix}{hub}:internal:return:{server}` | that server (client results) |
//!
//! Names are literal: a group called `*` or `a?b` is just a name
//! (switchboard never uses pattern subscriptions), and the kind segment
//! after the hub keeps kinds apart (`group:user:x` is a group).
//!
//! How a group message travels from server A to a member on server B:
//!
//! 1. Hub code on A calls `ctx.group("room").send("message", args)`.
//! 2. The invocation is serialized once per hub protocol (JSON, MessagePack).
//! 3. A publishes one envelope on `{prefix}{hub}:group:room`.
//! 4. B subscribed to that channel when its first local member joined
//!    (SUBSCRIBE on the first member, UNSUBSCRIBE after the last). B's one
//!    dispatcher task decodes the envelope and queues the frame matching
//!    each local member's protocol: a reference-counted clone, no copy.
//! 5. Each connection's writer sends its frames; a member that does not
//!    keep up is handled by its slow-consumer policy without delaying the
//!    others.
//!
//! Sending to a connection held by this server never touches Redis.
//! Everything else is one PUBLISH per target channel (pipelined).
//! `*_except` sends carry the excluded ids and receivers skip them.
//!
//! Group changes for a connection held by another server are published on
//! that connection's own channel: PUBLISH answers how many servers
//! received it, so a connection that exists nowhere fails at once with
//! `ConnectionNotFound` instead of waiting for a timeout; the owner applies
//! the change and always acknowledges on the sender's ack channel (bounded
//! by [`RedisOptions::ack_timeout`]). The owner applies changes for
//! different connections concurrently and those of one connection in the
//! order they arrived; past [`RedisOptions::max_pending_group_commands`]
//! waiting changes it refuses more at once, and the sender gets
//! `GroupCommandRejected` instead of an `AckTimeout`.
//!
//! Client results across servers work the same way: the invocation goes to
//! the connection's channel carrying the caller's server name and timeout;
//! the owner forwards the client's Completion to the caller's return
//! channel, or "disconnected" if the connection closes first. A caller that
//! gives up (timeout, cancellation, dropped future) tells the owner, which
//! forgets the call; should that message be lost, the owner forgets the
//! call a few seconds after the caller's timeout anyway.
//!
//! Subscription changes are queued in the order the membership changes
//! were made and sent by one task, batched; each batch is confirmed with a
//! PING on the subscriber connection before the change is reported done, so
//! a message published right after `add_to_group` returns is never missed:
//! not for the group's first local member, whose join starts the
//! subscription, nor for any later one, whose join waits for it too.
//!
//! # Ordering
//!
//! Sends from one server that go through Redis (to all, groups, users, and
//! connections held elsewhere) reach each connection in the order they were
//! made. A send to a connection held by the sending server is delivered at
//! once, without Redis, so it can reach that connection before a group,
//! user or broadcast message sent earlier, which makes the round trip. This
//! is SignalR's behaviour too. Messages from different servers have no
//! order between them.
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
//! None. TLS (`rediss://`) uses rustls with the system's trusted roots.
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
mod link;
mod node;
mod options;

pub use driver::RedisDriver;
pub use options::RedisOptions;
pub use switchboard_backplane::ScaleOutOptions;

/// A [`HubLifetimeManager`](switchboard_core::HubLifetimeManager) that spans
/// every server connected to one Redis (or one Redis Cluster): the
/// scale-out engine of `switchboard-backplane` on a [`RedisDriver`].
///
/// Made with `RedisHubLifetimeManager::connect(RedisOptions::new(url))`; see
/// the [crate documentation](crate).
pub type RedisHubLifetimeManager = switchboard_backplane::ScaleOutManager<RedisDriver>;

//! The scale-out engine of switchboard: run one hub as many server
//! processes, and every message still reaches every connection it
//! addresses, whichever process holds it.
//!
//! [`ScaleOutManager`] implements
//! [`HubLifetimeManager`](switchboard_core::HubLifetimeManager) with the
//! semantics of ASP.NET Core SignalR's Redis backplane, over any
//! [`BackplaneDriver`]: a small trait that publishes on named channels,
//! subscribes and unsubscribes in batches, and streams what arrives.
//! Everything else lives here, written once for every driver: the
//! envelopes, local membership and reference-counted subscriptions, the
//! ordered subscription queue and its "live" barrier, group commands and
//! their acknowledgements, client results across servers, and restoring
//! every subscription from local state after a reconnect.
//!
//! Drivers:
//!
//! - [`LoopbackDriver`], here: in-process, for tests and experiments. Every
//!   multi-server scenario runs on it under plain `cargo test`.
//! - `switchboard-redis`: one Redis node (PUBLISH / SUBSCRIBE), or a Redis
//!   Cluster with sharded pub/sub (SPUBLISH / SSUBSCRIBE).
//!
//! ```
//! use std::sync::Arc;
//! use switchboard_backplane::{LoopbackBus, ScaleOutManager, ScaleOutOptions};
//! use switchboard_core::{CallContext, Hub};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), switchboard_core::Error> {
//! let bus = LoopbackBus::new();
//! let manager = ScaleOutManager::start(bus.driver(), ScaleOutOptions::new().hub("chat")).await?;
//! let hub = Hub::builder()
//!     .method("Broadcast", |ctx: CallContext, (text,): (String,)| async move {
//!         // Reaches the connections of every server on the bus.
//!         ctx.all().send("message", (text,)).await?;
//!         Ok(())
//!     })
//!     .build(Arc::new(manager));
//! # let _ = hub; Ok(()) }
//! ```
//!
//! # How it works
//!
//! Every payload is one protobuf `Envelope` (see `switchboard-protocol`).
//! Channel names (see `switchboard-channels`):
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
//! Names are literal: a group called `*` or `a?b` is just a name (no
//! driver uses pattern subscriptions), and the kind segment after the hub
//! keeps kinds apart (`group:user:x` is a group).
//!
//! How a group message travels from server A to a member on server B:
//!
//! 1. Hub code on A calls `ctx.group("room").send("message", args)`.
//! 2. The invocation is serialized once per hub protocol (JSON, MessagePack).
//! 3. A publishes one envelope on `{prefix}{hub}:group:room`.
//! 4. B subscribed to that channel when its first local member joined
//!    (and unsubscribes after the last). B's one dispatcher task decodes
//!    the envelope and queues the frame matching each local member's
//!    protocol: a reference-counted clone, no copy.
//! 5. Each connection's writer sends its frames; a member that does not
//!    keep up is handled by its slow-consumer policy without delaying the
//!    others.
//!
//! Sending to a connection held by this server never touches the
//! backplane. Everything else is one publish per target channel
//! (concurrent). `*_except` sends carry the excluded ids and receivers skip
//! them.
//!
//! Group changes for a connection held by another server are published on
//! that connection's own channel. When the driver reports how many servers
//! received it (both Redis drivers do, exactly), a connection that exists
//! nowhere fails at once with `ConnectionNotFound` instead of waiting for a
//! timeout; the owner applies the change and always acknowledges on the
//! sender's ack channel (bounded by [`ScaleOutOptions::ack_timeout`]). The
//! owner applies changes for different connections concurrently and those
//! of one connection in the order they arrived; past
//! [`ScaleOutOptions::max_pending_group_commands`] waiting changes it
//! refuses more at once, and the sender gets `GroupCommandRejected` instead
//! of an `AckTimeout`.
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
//! were made and handed to the driver by one task, batched. The driver
//! reports a batch done only once it is live, so a message published right
//! after `add_to_group` returns is never missed: not for the group's first
//! local member, whose join starts the subscription, nor for any later one,
//! whose join waits for it too.
//!
//! # Presence
//!
//! `user_connections`, `group_members` and `is_user_online` ask the servers
//! that hold the subject's connections, and nobody else: the query goes
//! out on the user's or group's channel, which exactly those servers are
//! subscribed to, and the driver's receiver count says how many answers to
//! wait for. Each answers on the asker's ack channel with at most the
//! query's limit of ids (at most
//! [`MAX_PRESENCE_LIMIT`](switchboard_core::MAX_PRESENCE_LIMIT)) and its
//! exact count, so memory and message size stay bounded for any group. A
//! subject no server holds is answered at once (a receiver count of 0).
//!
//! Nothing is written anywhere when connections connect, join or leave: the
//! servers' own state is the registry, and the backplane's subscriptions
//! say which servers to ask. The alternative, a registry of
//! connections in Redis with per-server leases, would add a write to every
//! connect, join and leave, renew every server's lease, and still need
//! leases to expire before a dead server's connections left it. Measured
//! (`cargo xtask bench --only B10`, BENCHMARKS.md), a query for a group of
//! 1,000 members on three servers takes 1.5 times the registry's own read
//! at the median (SMEMBERS of the same 1,000 ids: two round trips through
//! Redis against one) and the same at p99. Presence is asked far less
//! often than connections come and go, so the reads pay and the writes
//! stay free.
//!
//! When a server dies, its connections leave presence as soon as the
//! backplane drops its subscriptions: for a process that ends (killed or
//! crashed), at once, since the kernel closes its sockets and Redis ends
//! its subscriptions. A server that stops answering while its connections
//! to Redis stay open (a frozen process, a network partition) is counted
//! in [`Presence::unanswered`](switchboard_core::Presence::unanswered)
//! after [`ScaleOutOptions::presence_timeout`] (default 3 s), and only
//! until Redis drops its connections (its `tcp-keepalive`, 300 s by
//! default; lower it to shorten that window). `is_user_online` fails with
//! `PresenceUnknown` rather than say "offline" when a server did not
//! answer and none that did holds the user. On a Redis Cluster, a slot that
//! is moving can read no receivers for a moment, and a query then answers
//! empty.
//!
//! # Ordering
//!
//! Sends from one server that go through the backplane (to all, groups,
//! users, and connections held elsewhere) reach each connection in the
//! order they were made, on drivers that keep the order of one publisher
//! (both Redis drivers do, per channel on a cluster). A send to a
//! connection held by the sending server is delivered at once, without the
//! backplane, so it can reach that connection before a group, user or
//! broadcast message sent earlier, which makes the round trip. This is
//! SignalR's behaviour too. Messages from different servers have no order
//! between them.
//!
//! # Sends that do not wait: non-blocking invocations
//!
//! A send returns once the backplane answered its publish, and reports a
//! failure. The exception is a send made by a hub method for a
//! non-blocking invocation, whose client asked for no answer
//! ([`HubLifetimeManager::send_queued`](switchboard_core::HubLifetimeManager::send_queued)):
//! it returns once its publish is queued, when it is part of a burst (it
//! follows the last such send within 500 µs, or publishes are queued or
//! under way). One task hands queued publishes to the driver in queue
//! order, up to 256 unanswered at once, so a connection invoking a
//! broadcast in a loop is not held to one invocation per Redis round trip,
//! and the driver writes many publishes per system call. A lone send
//! publishes and waits as any other: its wait delays no send behind it,
//! and handing it to the queue's task would cost a task wake-up (measured
//! in bench B8 at 1,000 messages/s: 0.97x socketioxide's CPU per message
//! on the sending server, against 1.17x when every such send went through
//! the queue). A send that waits for its answer while queued publishes are still
//! waiting for the driver goes behind them, so one server's sends keep
//! their order whichever way they were made.
//!
//! Failures still surface. A queued publish that fails is counted in
//! `backplane_publish_errors` and logged, and from then on (as after any
//! failed publish), until a publish succeeds again, sends wait for their
//! answers and report failures as
//! every other send does. The same holds while publishes are under way and
//! none was answered for 500 ms (a stalled backplane), while the driver
//! reports the link down, and while 8,192 publishes wait in the queue. A
//! queued publish that waited 2 s for the driver is dropped and counted
//! rather than delivered late, and a send waiting behind the queue fails
//! after those 2 s. On [`ScaleOutManager::shutdown`], what is queued is
//! published first (for at most 2 s). A method that must know its send
//! reached the backplane sends through
//! [`HubContext::confirmed`](switchboard_core::HubContext::confirmed).
//!
//! # When the backplane goes away
//!
//! Sends fail at once (or within the driver's publish timeout) with
//! `BackplaneUnavailable`; they never hang, and sends to local connections
//! keep working. Local state is kept: connections can still connect and
//! disconnect, join and leave groups. When the driver reports the link up
//! again ([`DriverEvent::Connected`]), every subscription this server needs
//! (all, its connections, groups, users, ack and return) is restored from
//! its local state, and delivery resumes without any action by the
//! application. A failed subscription change is retried the same way.
//!
//! # Garbage and limits
//!
//! Anything on the hub's channels that is not a valid envelope of the kind
//! the channel carries (random bytes, truncated envelopes, a group command
//! on a group channel, envelopes over [`ScaleOutOptions::max_envelope_size`])
//! is dropped and counted in
//! [`ManagerStats`](switchboard_core::ManagerStats) (`backplane_malformed`,
//! `backplane_oversize`), with a rate-limited warning; valid traffic keeps
//! flowing. Messages the driver lost because the dispatcher fell behind are
//! counted as `backplane_lagged`.
//!
//! # Writing a driver
//!
//! Implement [`BackplaneDriver`]; see its documentation for what each
//! method must guarantee. A driver keeps no subscription state for the
//! engine's sake: on [`DriverEvent::Connected`] the engine subscribes again
//! to everything it needs.

mod commands;
mod driver;
mod engine;
mod loopback;
mod options;
mod outgoing;
mod presence;
mod subscriptions;

pub use driver::{BackplaneDriver, DriverEvent, DriverEvents};
pub use engine::{DriverConfig, ScaleOutManager};
pub use loopback::{LoopbackBus, LoopbackDriver};
pub use options::{DEFAULT_PRESENCE_TIMEOUT, ScaleOutOptions};

//! The core of switchboard: connections, groups and users of a real-time
//! hub, the [`HubLifetimeManager`] contract that delivers messages to them,
//! its in-memory implementation for a single process, and the [`Hub`]
//! dispatcher that turns client invocations into calls of typed async Rust
//! functions. The SignalR hub protocols (JSON and MessagePack) it speaks are
//! the `switchboard-hub-protocol` crate, re-exported as [`protocol`].
//!
//! This crate does no network I/O. A transport adapter (such as
//! `switchboard-axum`) accepts clients and feeds their messages to a
//! [`HubSession`]; a backplane (such as `switchboard-redis`) implements
//! [`HubLifetimeManager`] across several processes. Application code only
//! sees [`Hub`], [`CallContext`] and [`HubContext`], so it runs unchanged
//! on one process or many.
//!
//! ```
//! use std::sync::Arc;
//! use switchboard_core::{
//!     CallContext, Connection, ConnectionOptions, Hub, HubError, InMemoryHubLifetimeManager,
//!     protocol::{HubMessage, Invocation, Protocol},
//! };
//!
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! let hub = Hub::builder()
//!     .method("Join", |ctx: CallContext, (room,): (String,)| async move {
//!         ctx.join(&room).await?;
//!         ctx.group(room).send("joined", (ctx.connection_id().as_str(),)).await?;
//!         Ok(())
//!     })
//!     .build(Arc::new(InMemoryHubLifetimeManager::new()));
//!
//! // What a transport adapter does for each client:
//! let (connection, mut outbound) = Connection::new(ConnectionOptions::new(Protocol::Json));
//! let session = hub.connect(connection).await?;
//! let arguments = vec![Protocol::Json.encode_value("lobby")?];
//! session
//!     .handle(HubMessage::Invocation(Invocation {
//!         invocation_id: Some("1".into()),
//!         target: "Join".into(),
//!         arguments,
//!         stream_ids: vec![],
//!     }))
//!     .await;
//!
//! // The group message, then the Completion of the call.
//! let frame = outbound.recv().await.unwrap();
//! assert!(frame.starts_with(b"{\"type\":1,\"target\":\"joined\""));
//! let frame = outbound.recv().await.unwrap();
//! assert_eq!(&frame[..], b"{\"type\":3,\"invocationId\":\"1\"}\x1e");
//! session.close(None).await;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! # }).unwrap();
//! ```
//!
//! # How it works
//!
//! - A [`Connection`] is an id (128 random bits), an optional user, a hub
//!   protocol and a bounded outbound queue of framed messages. The transport
//!   owns the receiving end ([`ConnectionReceiver`]) and writes to the socket.
//! - Sending serializes an invocation once per hub protocol into a
//!   [`SerializedMessage`]; fan-out hands every recipient a reference-counted
//!   clone of the same bytes. No per-connection encoding, no copy.
//! - Fan-out never waits: each delivery is a `try_send`. When a queue is
//!   full the connection's [`SlowConsumerPolicy`] applies (by default the
//!   connection is closed with a reason and counted in [`ManagerStats`]).
//! - [`ConnectionStore`] holds one server's connections, groups and users;
//!   every manager builds on it. [`PendingInvocations`] tracks client-result
//!   invocations until the client's Completion arrives.
//! - [`Hub`] maps method names to handlers whose arguments are a tuple of
//!   `serde` types ([`FromArguments`]). Bad invocations (unknown method,
//!   wrong arity or types) are answered with a Completion error, never a
//!   panic. Streaming methods, cancellation and client results are supported.
//!
//! # Feature flags
//!
//! None: the crate always includes both hub protocols.
//!
//! # Errors
//!
//! Lifetime-manager operations return [`Error`], a `#[non_exhaustive]` enum
//! that says what happened and to what (`ConnectionNotFound`, `AckTimeout`,
//! `BackplaneUnavailable`...). Hub methods return [`HubError`], whose text
//! is sent to the calling client; every [`Error`] converts into one.

/// The SignalR hub protocols: the `switchboard-hub-protocol` crate.
pub use switchboard_hub_protocol as protocol;

mod connection;
mod error;
mod health;
mod hub;
mod id;
mod manager;
mod memory;
mod message;
pub mod metrics;
mod outbound;
mod pending;
mod presence;
mod stats;
mod store;

pub use connection::{
    Connection, ConnectionOptions, ConnectionReceiver, DEFAULT_QUEUE_CAPACITY, Delivery,
    SlowConsumerPolicy,
};
pub use error::{BoxError, Error, Result};
pub use health::Health;
pub use hub::{
    ArgumentError, Arguments, CallContext, Client, Clients, DEFAULT_CLIENT_RESULT_TIMEOUT,
    DEFAULT_MAX_QUEUED_INVOCATIONS, DEFAULT_MAX_STREAMS_PER_CONNECTION,
    DEFAULT_MAX_UPLOAD_STREAMS_PER_CONNECTION, DEFAULT_STREAM_BUFFER_CAPACITY, FromArguments, Hub,
    HubArgument, HubBuilder, HubContext, HubError, HubOptions, HubSession, HubStats, UploadStream,
};
pub use id::{ConnectionId, random_token};
pub use manager::{HubLifetimeManager, Recipients};
pub use memory::InMemoryHubLifetimeManager;
pub use message::SerializedMessage;
pub use pending::{
    ClientResponse, InvocationIds, InvokeOptions, PendingInvocations, RemoveOnDrop, ResultSender,
    outcome_to_result, wait_for_response,
};
pub use presence::{MAX_PRESENCE_LIMIT, Presence, clamp_limit};
pub use stats::{ManagerStats, SendKind};
pub use store::{ConnectionStore, Inserted, Membership, Removed};

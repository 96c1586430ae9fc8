//! One SignalR connection's session, whatever carries it, for switchboard's
//! transport adapters.
//!
//! A transport adapter (WebSockets, Server-Sent Events and long polling in
//! `switchboard-axum`; an in-memory pipe in `switchboard-testing`) supplies
//! two halves: a [`ClientStream`] that reads what the client sends, and a
//! [`ClientSink`] that writes a batch of frames and finally ends the
//! transport. [`run`] does everything else, once for every adapter:
//!
//! - the hub protocol handshake (JSON or MessagePack, versions 0 to 2),
//!   within the handshake timeout;
//! - registering the connection with the [`Hub`](switchboard_core::Hub)
//!   and handing it every message the client sends;
//! - the writer: it drains the connection's bounded queue, joining what is
//!   queued into batches, and applies the slow-consumer policy;
//! - keep-alive Pings, the client timeout, the message size limit;
//! - the Close message (with its error and whether the client may
//!   reconnect) and the transport's end;
//! - stateful reconnect (hub protocol version 2): numbered messages, Acks,
//!   a bounded replay buffer, and a new transport taking a lost one's place
//!   ([`Handoff`]);
//! - the graceful drain of an endpoint's sessions ([`Sessions::drain`]).
//!
//! ```
//! use std::sync::Arc;
//! use switchboard_core::{Hub, InMemoryHubLifetimeManager};
//! use switchboard_session::{SessionOptions, Sessions};
//!
//! let hub = Hub::builder().build(Arc::new(InMemoryHubLifetimeManager::new()));
//! let sessions = Sessions::new(hub, SessionOptions::default());
//! assert_eq!(sessions.open(), 0);
//! // For each connection: switchboard_session::run(sessions.clone(),
//! // Transport { stream, sink }, Accepted::new(user), None).await
//! ```

mod flag;
mod session;
mod sessions;
mod stateful;

pub use session::{
    Accepted, BatchLimits, ClientSink, ClientStream, Payload, ReadError, STOP_GRACE, Transport, run,
};
pub use sessions::{DRAIN_REASON, DrainOptions, DrainReport, SessionOptions, Sessions};
pub use stateful::{Found, Handoff, Registered, Resumable};

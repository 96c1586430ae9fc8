//! SignalR on [axum] for switchboard: mount a
//! [`Hub`](switchboard_core::Hub) at a path and the official SignalR
//! clients (`@microsoft/signalr` for JavaScript, the .NET and Java clients)
//! connect to it unchanged, over WebSockets, Server-Sent Events or long
//! polling, with the JSON or the MessagePack hub protocol. This crate is
//! only the transport: the hub, its methods and the lifetime manager (in
//! memory, or the Redis backplane of `switchboard-redis` to run several
//! servers) come from `switchboard-core`.
//!
//! ```no_run
//! use std::sync::Arc;
//! use switchboard_axum::{SignalROptions, router};
//! use switchboard_core::{CallContext, Hub, HubError, InMemoryHubLifetimeManager};
//!
//! #[tokio::main]
//! async fn main() -> std::io::Result<()> {
//!     let hub = Hub::builder()
//!         .method("Broadcast", |ctx: CallContext, (text,): (String,)| async move {
//!             let from = ctx.user().unwrap_or(ctx.connection_id()).to_owned();
//!             ctx.all().send("message", (from, text)).await?;
//!             Ok::<_, HubError>(())
//!         })
//!         .build(Arc::new(InMemoryHubLifetimeManager::new()));
//!
//!     let app = axum::Router::new()
//!         .route("/", axum::routing::get(|| async { "hello" }))
//!         .merge(router("/hubs/chat", hub, SignalROptions::default()));
//!
//!     let listener = tokio::net::TcpListener::bind("127.0.0.1:5000").await?;
//!     axum::serve(listener, app).await
//! }
//! ```
//!
//! # How it works
//!
//! [`router`] adds two routes, following SignalR's transport protocol:
//!
//! - `POST {path}/negotiate?negotiateVersion=1` answers with a new
//!   connection id, a separate secret connection token and the transports
//!   offered, in the order clients try them: WebSockets (Text and Binary),
//!   Server-Sent Events (Text) and long polling (Text and Binary); each can
//!   be switched off ([`SignalROptions::websockets`],
//!   [`SignalROptions::server_sent_events`],
//!   [`SignalROptions::long_polling`]). Without `negotiateVersion`
//!   (version 0) there is no token and the id plays its part. Tokens not
//!   used within the token lifetime expire.
//! - `{path}?id={token}` is the connection:
//!   - a WebSocket upgrade opens the WebSocket (without `id`, the clients'
//!     `skipNegotiation`, it gets a fresh connection id);
//!   - `GET` with `Accept: text/event-stream` opens the event stream: each
//!     batch of frames is one event, its lines in `data:` fields, sent with
//!     headers that keep proxies from buffering or transforming it; it ends
//!     when the connection does, and the connection ends when the client
//!     drops it;
//!   - any other `GET` is a long poll: the first returns at once, later
//!     ones return every queued frame (200), an empty 200 after the poll
//!     timeout, or 204 when a newer poll replaced them or the connection
//!     ended;
//!   - `POST` carries the client's messages on the two HTTP transports (409
//!     while another POST of the connection is being taken in, 413 over
//!     the size limit), and `DELETE` ends a connection.
//!
//!   An unknown, expired or finished token is `404 Not Found`, a token in
//!   use by another connection `409 Conflict`, a request for another
//!   transport than the connection's `400 Bad Request`, and a token is good
//!   for one connection only. Every request of a connection must
//!   authenticate as the user who negotiated it (`403` otherwise). Other
//!   query parameters are ignored here (your authenticator may read them).
//!
//! Whatever the transport, one session serves the connection. The client
//! first sends the handshake (JSON and `0x1E`, whatever the protocol);
//! `json` and `messagepack` versions 0 to 2 are accepted (`messagepack` not over
//! Server-Sent Events, which carry text only), anything else is answered
//! with an error and the connection is closed. The
//! connection is then registered with the hub's lifetime manager and runs
//! two loops. The reader parses the client's messages and hands them to the
//! hub session, which runs invocations with back-pressure: while a client
//! has as many invocations running as the hub allows, its socket is not
//! read. The writer takes the frames queued for the connection (by hub
//! methods on this server or, through the backplane, on any other), joins
//! bursts into one transport write (one WebSocket message, one event, one
//! poll's answer), and sends a Ping when it has been quiet for the
//! keep-alive interval. On WebSockets frames go out as text messages for
//! `json` and binary messages for `messagepack`; incoming text and binary
//! messages are both accepted for either protocol, since only the bytes
//! matter. A long-polling client that stops polling is closed when the
//! writer has waited the client timeout for a poll; one that stops sending
//! (the official clients send a Ping every 15 s) by the client timeout.
//!
//! Whoever ends the connection, the session is closed exactly once: the
//! connection leaves its groups and the hub's disconnect hook runs. When the
//! server ends it (a protocol error, the client timeout, the slow-consumer
//! policy) the client first gets a Close message saying why; protocol errors
//! tell clients not to reconnect, timeouts and slow-consumer closes allow
//! it. A client that closes its socket or sends a Close message leaves
//! quietly.
//!
//! # Stateful reconnect
//!
//! A client that negotiates with `useStatefulReconnect=true` (the official
//! clients' `withStatefulReconnect()`) is answered
//! `"useStatefulReconnect": true` (unless
//! [`SignalROptions::stateful_reconnect`] is off; a client that did not ask
//! never is), and a WebSocket connection whose handshake then asks for hub
//! protocol version 2 survives a dropped socket:
//!
//! - Each side numbers its Invocations, StreamItems, Completions,
//!   StreamInvocations and CancelInvocations from 1 and acknowledges what
//!   it received (`Ack`, type 8; the server a quarter of a second after
//!   what it acknowledges). The server keeps what it sent until the client
//!   acknowledges it, up to
//!   [`stateful_reconnect_buffer_size`](SignalROptions::stateful_reconnect_buffer_size)
//!   bytes; then it sends nothing more until an Ack, and what waits piles
//!   up in the connection's bounded queue.
//! - A socket that drops (no close frame; a clean WebSocket close or a
//!   Close message ends the connection as usual) leaves the connection
//!   registered, with its groups and user, for the
//!   [reconnect window](SignalROptions::stateful_reconnect_window).
//!   Messages sent to it meanwhile wait in its queue.
//! - The client's next WebSocket with the same `id` (the same user) resumes
//!   it, without a handshake: the server sends a `Sequence` (type 9) with
//!   the id of its oldest unacknowledged message, replays from there, and
//!   drops the client's messages until the client's own `Sequence`, then
//!   the ones it already had. A new socket also takes over a connection
//!   whose old socket still seems alive (the old one is closed).
//! - Past the window the connection ends as any other; its token is then
//!   unknown (`404`).
//!
//! A Sequence or an Ack that does not fit what was sent or received is a
//! protocol error. Server-Sent Events and long polling are never stateful
//! (the official clients reconnect only WebSockets).
//!
//! # Authentication
//!
//! Give [`SignalROptions::authenticator`] an [`Authenticator`]: it sees the
//! head of every negotiate and connection request (the WebSocket, the
//! event stream, every poll, POST and DELETE) and returns the user id, no
//! user (anonymous), or an [`AuthRejection`] answered with `401`. The user
//! becomes the connection's user (`send_user` reaches all its connections).
//! A token negotiated by one user is refused (`403`) on a socket that
//! authenticates as another. Without an authenticator every client is
//! anonymous.
//!
//! # CORS
//!
//! Browsers on another origin need CORS headers on the negotiate request.
//! This crate sets none: wrap the router in your own layer, for example
//! `tower_http::cors::CorsLayer` with the allowed origins and
//! `allow_credentials(true)` (the JavaScript client sends credentials by
//! default), as you would for any other route. WebSocket requests are not
//! subject to CORS; check the `Origin` header in your authenticator if it
//! matters.
//!
//! # Limits
//!
//! See [`SignalROptions`] for the defaults.
//!
//! - A client message (and the handshake) larger than the maximum message
//!   size closes the connection with a Close message naming the limit; so
//!   does an unfinished message already longer than that. One WebSocket
//!   message may carry several hub messages, up to four times the limit
//!   (at least 64 KiB).
//! - A client that sends nothing for the client timeout is closed; so is
//!   one that does not accept a write within it. The handshake must arrive
//!   within the handshake timeout.
//! - Each connection's outbound queue is bounded; when it is full the
//!   slow-consumer policy closes the connection (default) or drops the
//!   message for it, and other connections never wait.
//! - Pending connection tokens are bounded in number and lifetime.
//! - Nothing a client sends makes the server panic; every early close is
//!   logged with the connection id (`tracing`, debug or info level).

mod auth;
mod drain;
mod frames;
mod health;
mod http;
mod options;
mod router;
mod serve;
mod tokens;
mod upgrade;
mod websocket;

pub use auth::{AuthRejection, Authenticator};
pub use drain::Endpoint;
pub use health::health;
pub use options::SignalROptions;
pub use router::{endpoint, router};
pub use serve::{ServeOptions, ServeStats, ServeStatsHandle, Server};
pub use switchboard_session::{DrainOptions, DrainReport};

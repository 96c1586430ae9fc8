//! Serving an application with the defaults a real-time server needs:
//! `TCP_NODELAY`, a header read timeout, connection caps, and an accept
//! loop that survives running out of file descriptors.
//!
//! `axum::serve` leaves Nagle's algorithm on (small frames wait for the
//! previous one's ACK: milliseconds of latency per message), sets no header
//! timeout (a client that never finishes its request holds a socket
//! forever) and no cap. [`Server`] runs the same axum [`Router`] over
//! HTTP/1.1 with ASP.NET Core Kestrel's defaults instead.
//!
//! # With a server of your own
//!
//! An application that keeps `axum::serve` or its own hyper loop gets the
//! same behaviour setting by setting:
//!
//! - `TCP_NODELAY`: `set_nodelay(true)` on each accepted `TcpStream`; with
//!   `axum::serve`, `listener.tap_io(|tcp| { let _ = tcp.set_nodelay(true); })`
//!   (`axum::serve::ListenerExt`).
//! - The header timeout: hyper's `http1::Builder` with
//!   `.timer(hyper_util::rt::TokioTimer::new())` and
//!   `.header_read_timeout(..)`. Without a timer hyper ignores the timeout,
//!   which is why `axum::serve` has none.
//! - The caps: a `tokio::sync::Semaphore` permit per accepted socket, kept
//!   inside the socket's IO type: hyper hands that IO to the WebSocket on
//!   an upgrade, so the permit lives as long as the connection. Answer 503
//!   when none is left.
//! - Accept errors (`EMFILE`, `ENFILE`): pause briefly and accept again;
//!   never end the accept loop on them.

use std::convert::Infallible;
use std::fmt;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{Request, Response, StatusCode, header};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use parking_lot::Mutex;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt;

use switchboard_session::DrainOptions;

use crate::drain::Endpoint;

/// The answer to a connection over [`ServeOptions::max_connections`].
const OVER_CAPACITY: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\n\
content-type: text/plain\r\ncontent-length: 32\r\nconnection: close\r\n\r\n\
The server is at its connections";

/// How long HTTP connections get, at shutdown, to finish what they write.
const SHUTDOWN_WAIT: Duration = Duration::from_secs(2);

/// How long a refused connection gets to take the 503.
const REFUSE_TIMEOUT: Duration = Duration::from_secs(1);

/// The shortest and longest pause after a failed accept.
const ACCEPT_BACKOFF: (Duration, Duration) = (Duration::from_millis(5), Duration::from_secs(1));

/// How often a failing accept loop logs.
const ACCEPT_LOG_INTERVAL: Duration = Duration::from_secs(10);

/// Settings of a [`Server`]. The defaults are Kestrel's where it has one.
///
/// ```
/// use std::time::Duration;
/// use switchboard_axum::ServeOptions;
///
/// let options = ServeOptions::default()
///     .header_read_timeout(Duration::from_secs(10))
///     .max_connections(50_000)
///     .max_upgraded_connections(40_000);
/// # let _ = options;
/// ```
#[derive(Debug, Clone)]
pub struct ServeOptions {
    nodelay: bool,
    header_read_timeout: Option<Duration>,
    max_connections: Option<usize>,
    max_upgraded_connections: Option<usize>,
}

impl Default for ServeOptions {
    fn default() -> Self {
        ServeOptions {
            nodelay: true,
            header_read_timeout: Some(Duration::from_secs(30)),
            max_connections: None,
            max_upgraded_connections: None,
        }
    }
}

impl ServeOptions {
    /// Whether accepted sockets get `TCP_NODELAY` (Nagle's algorithm off),
    /// so that each frame goes out at once. Default: on, as in Kestrel.
    pub fn nodelay(mut self, nodelay: bool) -> Self {
        self.nodelay = nodelay;
        self
    }

    /// How long a client has to send a request's headers, counted from the
    /// moment the connection waits for them: a connection that sends a
    /// partial request, or nothing at all (also an idle keep-alive
    /// connection between requests), is closed after it. WebSockets and
    /// other upgraded connections are not affected once upgraded. `None`:
    /// no limit. Default: 30 s, as Kestrel's `RequestHeadersTimeout`.
    pub fn header_read_timeout(mut self, timeout: impl Into<Option<Duration>>) -> Self {
        self.header_read_timeout = timeout.into();
        self
    }

    /// The most TCP connections served at once, upgraded ones included;
    /// beyond it a new connection is answered `503 Service Unavailable` and
    /// closed (counted in [`ServeStats::refused_connections`]), and those
    /// already open are unaffected. Default: no limit, as Kestrel's
    /// `MaxConcurrentConnections`.
    pub fn max_connections(mut self, max: usize) -> Self {
        self.max_connections = Some(max);
        self
    }

    /// The most upgraded connections (WebSockets) at once; beyond it an
    /// upgrade request is answered `503 Service Unavailable` (counted in
    /// [`ServeStats::refused_upgrades`]) while other requests are served.
    /// Default: no limit, as Kestrel's `MaxConcurrentUpgradedConnections`.
    pub fn max_upgraded_connections(mut self, max: usize) -> Self {
        self.max_upgraded_connections = Some(max);
        self
    }
}

/// Counters of a [`Server`]; they only grow.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ServeStats {
    /// TCP connections accepted and served.
    pub accepted: u64,
    /// Connections refused with 503: over [`ServeOptions::max_connections`].
    pub refused_connections: u64,
    /// Upgrade requests refused with 503: over
    /// [`ServeOptions::max_upgraded_connections`].
    pub refused_upgrades: u64,
    /// Failed accepts (such as running out of file descriptors); the server
    /// pauses briefly and accepts again.
    pub accept_errors: u64,
}

#[derive(Debug, Default)]
struct Counters {
    accepted: AtomicU64,
    refused_connections: AtomicU64,
    refused_upgrades: AtomicU64,
    accept_errors: AtomicU64,
}

/// An HTTP/1.1 server for an axum [`Router`] (a SignalR endpoint from
/// [`router`](crate::router) merged with the application's routes), with
/// [`ServeOptions`].
///
/// Requests carry the peer's address as axum's `ConnectInfo<SocketAddr>`.
/// HTTP/2 is not served (SignalR's transports need HTTP/1.1 only); put a
/// proxy in front for TLS and HTTP/2.
///
/// ```no_run
/// use switchboard_axum::{ServeOptions, Server};
///
/// # async fn run(app: axum::Router) -> std::io::Result<()> {
/// let listener = tokio::net::TcpListener::bind("0.0.0.0:5000").await?;
/// Server::new(listener, app, ServeOptions::default())
///     .run_until(async { let _ = tokio::signal::ctrl_c().await; })
///     .await
/// # }
/// ```
pub struct Server {
    listener: TcpListener,
    app: Router,
    options: ServeOptions,
    counters: Arc<Counters>,
    drains: Vec<(Endpoint, DrainOptions)>,
}

impl fmt::Debug for Server {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Server")
            .field("local_addr", &self.listener.local_addr().ok())
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

/// A handle on a [`Server`]'s counters, usable while it runs.
#[derive(Debug, Clone)]
pub struct ServeStatsHandle(Arc<Counters>);

impl ServeStatsHandle {
    /// The counters now.
    pub fn get(&self) -> ServeStats {
        let c = &self.0;
        ServeStats {
            accepted: c.accepted.load(Ordering::Relaxed),
            refused_connections: c.refused_connections.load(Ordering::Relaxed),
            refused_upgrades: c.refused_upgrades.load(Ordering::Relaxed),
            accept_errors: c.accept_errors.load(Ordering::Relaxed),
        }
    }
}

impl Server {
    /// A server for `app` on `listener`.
    pub fn new(listener: TcpListener, app: Router, options: ServeOptions) -> Server {
        Server {
            listener,
            app,
            options,
            counters: Arc::default(),
            drains: Vec::new(),
        }
    }

    /// Drains `endpoint` (see [`Endpoint::drain`]) when the server shuts
    /// down, after it stops accepting and before
    /// [`run_until`](Self::run_until) returns.
    pub fn drain(mut self, endpoint: Endpoint, options: DrainOptions) -> Server {
        self.drains.push((endpoint, options));
        self
    }

    /// The server's counters (a handle that stays valid while it runs).
    pub fn stats(&self) -> ServeStatsHandle {
        ServeStatsHandle(self.counters.clone())
    }

    /// Serves until the process ends.
    pub async fn run(self) -> io::Result<()> {
        self.run_until(std::future::pending()).await
    }

    /// Serves until `shutdown` completes; then stops accepting (the port
    /// closes), drains the endpoints given to [`drain`](Self::drain) (all
    /// at once, each bounded by its [`DrainOptions::timeout`]), tells HTTP
    /// connections between requests to close and gives those under way up
    /// to 2 s more to finish what they write, and returns. Upgraded
    /// connections of endpoints not drained are not waited for.
    pub async fn run_until(self, shutdown: impl Future<Output = ()> + Send) -> io::Result<()> {
        let Server {
            listener,
            app,
            options,
            counters,
            drains,
        } = self;
        let connections = options
            .max_connections
            .map(|max| Arc::new(Semaphore::new(max)));
        let upgraded = options
            .max_upgraded_connections
            .map(|max| Arc::new(Semaphore::new(max)));
        let stopping = CancellationToken::new();
        let tasks = TaskTracker::new();
        let mut backoff = ACCEPT_BACKOFF.0;
        let mut last_logged: Option<tokio::time::Instant> = None;
        let mut shutdown = std::pin::pin!(shutdown);
        loop {
            let accepted = tokio::select! {
                () = &mut shutdown => break,
                accepted = listener.accept() => accepted,
            };
            let (stream, peer) = match accepted {
                Ok(accepted) => {
                    backoff = ACCEPT_BACKOFF.0;
                    accepted
                }
                Err(e) => {
                    let errors = counters.accept_errors.fetch_add(1, Ordering::Relaxed) + 1;
                    if !is_out_of_resources(&e) {
                        // One connection failed (reset before it was
                        // taken): the next may be fine.
                        tracing::debug!(error = %e, "accepting a connection failed");
                        continue;
                    }
                    // Out of file descriptors or memory: pause, then try
                    // again.
                    let now = tokio::time::Instant::now();
                    if last_logged.is_none_or(|at| now - at >= ACCEPT_LOG_INTERVAL) {
                        last_logged = Some(now);
                        tracing::warn!(error = %e, errors, "accepting a connection failed; retrying");
                    }
                    tokio::select! {
                        () = &mut shutdown => break,
                        () = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(ACCEPT_BACKOFF.1);
                    continue;
                }
            };
            let permit = match &connections {
                None => None,
                Some(semaphore) => match semaphore.clone().try_acquire_owned() {
                    Ok(permit) => Some(permit),
                    Err(_) => {
                        counters.refused_connections.fetch_add(1, Ordering::Relaxed);
                        tracing::debug!(%peer, "connection refused: at max_connections");
                        tokio::spawn(refuse(stream));
                        continue;
                    }
                },
            };
            counters.accepted.fetch_add(1, Ordering::Relaxed);
            prepare(&stream, &options);
            let connection = Connection {
                app: app.clone(),
                peer,
                upgraded: upgraded.clone(),
                counters: counters.clone(),
                header_read_timeout: options.header_read_timeout,
                stopping: stopping.clone(),
            };
            tasks.spawn(connection.serve(stream, permit));
        }
        drop(listener);
        let reports = futures::future::join_all(
            drains
                .iter()
                .map(|(endpoint, options)| endpoint.drain(options.clone())),
        )
        .await;
        drop(reports);
        // HTTP connections finish what they are writing (the drained
        // connections' last poll answers and event streams), briefly.
        stopping.cancel();
        tasks.close();
        let _ = tokio::time::timeout(SHUTDOWN_WAIT, tasks.wait()).await;
        Ok(())
    }
}

/// Whether an accept failed for want of descriptors or memory (pausing
/// helps), rather than for one connection.
fn is_out_of_resources(error: &io::Error) -> bool {
    // EMFILE, ENFILE, ENOBUFS, ENOMEM on Linux; anything unknown counts.
    match error.raw_os_error() {
        Some(code) => [24, 23, 105, 12].contains(&code),
        None => !matches!(
            error.kind(),
            io::ErrorKind::ConnectionAborted | io::ErrorKind::ConnectionReset
        ),
    }
}

/// Sets the socket options of an accepted connection.
fn prepare(stream: &TcpStream, options: &ServeOptions) {
    if options.nodelay
        && let Err(e) = stream.set_nodelay(true)
    {
        tracing::debug!(error = %e, "cannot set TCP_NODELAY");
    }
}

/// Answers a connection over the cap with 503, then closes it.
async fn refuse(mut stream: TcpStream) {
    let _ = tokio::time::timeout(REFUSE_TIMEOUT, async {
        stream.write_all(OVER_CAPACITY).await?;
        stream.shutdown().await?;
        // Read what the client sent until it closes: closing with unread
        // bytes would reset the connection, and the client might lose the
        // 503.
        let mut sink = [0u8; 1024];
        while stream.read(&mut sink).await? > 0 {}
        Ok::<_, io::Error>(())
    })
    .await;
}

/// One accepted connection, about to be served.
struct Connection {
    app: Router,
    peer: SocketAddr,
    upgraded: Option<Arc<Semaphore>>,
    counters: Arc<Counters>,
    header_read_timeout: Option<Duration>,
    stopping: CancellationToken,
}

impl Connection {
    async fn serve(self, stream: TcpStream, permit: Option<OwnedSemaphorePermit>) {
        // The permits live in the socket: an upgraded connection keeps
        // them until the WebSocket (which owns the socket) is dropped.
        let held = Arc::new(Mutex::new(Held {
            _connection: permit,
            upgrade: None,
        }));
        let io = TokioIo::new(Counted {
            stream,
            _held: held.clone(),
        });
        let Connection {
            app,
            peer,
            upgraded,
            counters,
            header_read_timeout,
            stopping,
        } = self;
        let service = hyper::service::service_fn(move |mut request: Request<Incoming>| {
            request.extensions_mut().insert(ConnectInfo(peer));
            let app = app.clone();
            let upgraded = upgraded.clone();
            let counters = counters.clone();
            let held = held.clone();
            async move {
                let mut upgrade_permit = None;
                if let Some(semaphore) = &upgraded
                    && is_upgrade(&request)
                {
                    match semaphore.clone().try_acquire_owned() {
                        Ok(permit) => upgrade_permit = Some(permit),
                        Err(_) => {
                            counters.refused_upgrades.fetch_add(1, Ordering::Relaxed);
                            tracing::debug!(%peer, "upgrade refused: at max_upgraded_connections");
                            return Ok::<_, Infallible>(unavailable());
                        }
                    }
                }
                let response = app.oneshot(request.map(Body::new)).await?;
                if response.status() == StatusCode::SWITCHING_PROTOCOLS && upgrade_permit.is_some()
                {
                    held.lock().upgrade = upgrade_permit;
                }
                Ok(response)
            }
        });
        let mut builder = http1::Builder::new();
        // hyper adds the timeout to the clock: one too large for that is none.
        let header_read_timeout = header_read_timeout
            .filter(|timeout| std::time::Instant::now().checked_add(*timeout).is_some());
        builder
            .timer(TokioTimer::new())
            .header_read_timeout(header_read_timeout)
            .keep_alive(true);
        let connection = builder.serve_connection(io, service).with_upgrades();
        let mut connection = std::pin::pin!(connection);
        let served = tokio::select! {
            served = connection.as_mut() => served,
            () = stopping.cancelled() => {
                connection.as_mut().graceful_shutdown();
                connection.await
            }
        };
        if let Err(e) = served {
            tracing::debug!(%peer, error = %e, "HTTP connection ended with an error");
        }
    }
}

/// The permits a connection holds.
struct Held {
    _connection: Option<OwnedSemaphorePermit>,
    upgrade: Option<OwnedSemaphorePermit>,
}

/// Whether a request asks to upgrade the connection to a WebSocket.
fn is_upgrade(request: &Request<Incoming>) -> bool {
    request
        .headers()
        .get_all(header::UPGRADE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.to_ascii_lowercase().contains("websocket"))
}

fn unavailable() -> Response<Body> {
    let mut response = Response::new(Body::from("The server is at its upgraded connections"));
    *response.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
    response
}

/// A socket that holds its connection's permits until dropped.
struct Counted {
    stream: TcpStream,
    _held: Arc<Mutex<Held>>,
}

impl AsyncRead for Counted {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for Counted {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[tokio::test]
    async fn accepted_sockets_get_nodelay_unless_switched_off() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        for nodelay in [true, false] {
            let _client = TcpStream::connect(addr).await.unwrap();
            let (stream, _) = listener.accept().await.unwrap();
            assert!(!stream.nodelay().unwrap());
            prepare(&stream, &ServeOptions::default().nodelay(nodelay));
            assert_eq!(stream.nodelay().unwrap(), nodelay);
        }
    }
}

//! The HTTP endpoints: negotiate, and the connection endpoint of every
//! transport (the WebSocket upgrade, the event stream, polls, POSTs and
//! DELETE).

use std::sync::Arc;

use axum::Router;
use axum::extract::{Query, Request, State};
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Serialize;
use switchboard_core::{ConnectionId, Hub, random_token};
use switchboard_session::{Found, Resumable, Sessions};

use crate::drain::Endpoint;
use crate::http::{self, HttpConnections, Kind};
use crate::options::SignalROptions;
use crate::tokens::{Claim, LiveGuard, Tokens};
use crate::upgrade::WebSocketUpgrade;
use crate::websocket::{self, SocketTransport};

/// The newest negotiate protocol version this server speaks.
const NEGOTIATE_VERSION: u32 = 1;

/// A connection the HTTP checks let in; it keeps its connection token in
/// use while it lives.
pub(crate) type Accepted = switchboard_session::Accepted<Option<LiveGuard>>;

/// Everything the endpoints of one hub share.
#[derive(Debug)]
pub(crate) struct Shared {
    /// Timeouts, limits, authentication.
    pub(crate) options: SignalROptions,
    /// Connection tokens between negotiate and the socket.
    tokens: Tokens,
    /// Open Server-Sent Events and long-polling connections.
    pub(crate) http: HttpConnections,
    /// WebSocket connections with stateful reconnect, for their client's
    /// next socket.
    pub(crate) resumable: Resumable<SocketTransport>,
    /// The hub, the sessions' options, how many are open, and the drain.
    pub(crate) sessions: Arc<Sessions>,
}

/// The routes of a SignalR endpoint for `hub` at `path`:
/// `POST {path}/negotiate`, and `{path}` for every transport (the
/// WebSocket upgrade, the event stream, polls, POST and DELETE).
///
/// `path` is normalised: a missing leading `/` is added and trailing `/`s
/// are removed (`"/"` and `""` mount at the root). Merge the result into
/// your application's router; wrap it in your own layers (CORS, tracing,
/// compression) as usual.
///
/// # Panics
///
/// If `path` is not a valid axum route (for example it contains `{`).
///
/// ```
/// use std::sync::Arc;
/// use switchboard_axum::{SignalROptions, router};
/// use switchboard_core::{Hub, InMemoryHubLifetimeManager};
///
/// let hub = Hub::builder().build(Arc::new(InMemoryHubLifetimeManager::new()));
/// let app: axum::Router = router("/hubs/chat", hub, SignalROptions::default());
/// # let _ = app;
/// ```
pub fn router(path: &str, hub: Hub, options: SignalROptions) -> Router {
    endpoint(path, hub, options).0
}

/// [`router`], and the [`Endpoint`] handle that drains its connections
/// for a graceful shutdown.
///
/// ```no_run
/// use std::sync::Arc;
/// use switchboard_axum::{DrainOptions, ServeOptions, Server, SignalROptions, endpoint};
/// use switchboard_core::{Hub, InMemoryHubLifetimeManager};
///
/// # async fn run() -> std::io::Result<()> {
/// let hub = Hub::builder().build(Arc::new(InMemoryHubLifetimeManager::new()));
/// let (app, chat) = endpoint("/hubs/chat", hub, SignalROptions::default());
/// let listener = tokio::net::TcpListener::bind("0.0.0.0:5000").await?;
/// Server::new(listener, app, ServeOptions::default())
///     .drain(chat, DrainOptions::default())
///     .run_until(async { let _ = tokio::signal::ctrl_c().await; })
///     .await
/// # }
/// ```
pub fn endpoint(path: &str, hub: Hub, options: SignalROptions) -> (Router, Endpoint) {
    let base = path.trim_end_matches('/');
    let base = if base.is_empty() || base.starts_with('/') {
        base.to_owned()
    } else {
        format!("/{base}")
    };
    let socket_route = if base.is_empty() { "/" } else { base.as_str() };
    let shared = Arc::new(Shared {
        tokens: Tokens::new(options.token_lifetime, options.max_pending_tokens),
        http: HttpConnections::default(),
        resumable: Resumable::default(),
        sessions: Sessions::new(hub, options.session_options()),
        options,
    });
    let endpoint = Endpoint::new(shared.clone());
    let router = Router::new()
        .route(&format!("{base}/negotiate"), post(negotiate))
        .route(
            socket_route,
            get(connect).connect(connect).post(send).delete(end),
        )
        .with_state(shared);
    (router, endpoint)
}

/// The answer to a new negotiation or connection during a drain.
fn draining() -> Response {
    plain(
        StatusCode::SERVICE_UNAVAILABLE,
        "The server is shutting down.",
    )
}

/// The body of a successful negotiate response.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct NegotiateResponse<'a> {
    negotiate_version: u32,
    connection_id: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    connection_token: Option<&'a str>,
    available_transports: Vec<Transport>,
    /// Only ever `true`, and only when the client asked: the official
    /// clients refuse a server that offers it unasked.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    use_stateful_reconnect: bool,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Transport {
    transport: &'static str,
    transfer_formats: &'static [&'static str],
}

/// The transports this endpoint offers, in the order clients try them.
fn transports(options: &SignalROptions) -> Vec<Transport> {
    let mut offered = Vec::with_capacity(3);
    if options.websockets {
        offered.push(Transport {
            transport: "WebSockets",
            transfer_formats: &["Text", "Binary"],
        });
    }
    if options.server_sent_events {
        offered.push(Transport {
            transport: "ServerSentEvents",
            transfer_formats: &["Text"],
        });
    }
    if options.long_polling {
        offered.push(Transport {
            transport: "LongPolling",
            transfer_formats: &["Text", "Binary"],
        });
    }
    offered
}

/// A negotiate failure, in the shape the clients read: `{"error": "..."}`.
fn negotiate_error(status: StatusCode, message: &str) -> Response {
    json_response(status, &serde_json::json!({ "error": message }))
}

fn json_response<T: Serialize>(status: StatusCode, body: &T) -> Response {
    match serde_json::to_vec(body) {
        Ok(bytes) => (status, [(header::CONTENT_TYPE, "application/json")], bytes).into_response(),
        Err(e) => {
            tracing::error!(error = %e, "cannot serialize a negotiate response");
            StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
    }
}

/// The query parameters of a request, in order; `None` if the query string
/// cannot be decoded.
fn query_params(parts: &Parts) -> Option<Vec<(String, String)>> {
    Query::<Vec<(String, String)>>::try_from_uri(&parts.uri)
        .ok()
        .map(|Query(params)| params)
}

fn param<'a>(params: &'a [(String, String)], name: &str) -> Option<&'a str> {
    params
        .iter()
        .find(|(key, _)| key == name)
        .map(|(_, value)| value.as_str())
}

async fn authenticate(shared: &Shared, parts: &Parts) -> Result<Option<String>, Response> {
    let Some(authenticator) = &shared.options.authenticator else {
        return Ok(None);
    };
    authenticator.authenticate(parts).await.map_err(|rejection| {
        // The path only: the query may carry an access token and the
        // connection token, which never reach a log.
        tracing::debug!(path = parts.uri.path(), status = %rejection.status(), reason = rejection.message(), "request refused by the authenticator");
        rejection.into_response()
    })
}

/// `POST {path}/negotiate`: hands out a connection id and token.
async fn negotiate(State(shared): State<Arc<Shared>>, request: Request) -> Response {
    if shared.sessions.is_draining() {
        return draining();
    }
    let (parts, _body) = request.into_parts();
    let user = match authenticate(&shared, &parts).await {
        Ok(user) => user,
        Err(response) => return response,
    };
    let Some(params) = query_params(&parts) else {
        return negotiate_error(StatusCode::BAD_REQUEST, "The query string is invalid.");
    };
    let version = match param(&params, "negotiateVersion") {
        None => 0,
        Some(text) => match text.parse::<u32>() {
            Ok(requested) => requested.min(NEGOTIATE_VERSION),
            Err(_) => {
                return negotiate_error(
                    StatusCode::BAD_REQUEST,
                    &format!("The client requested an invalid protocol version '{text}'"),
                );
            }
        },
    };
    // Not with version 0: its token is the public connection id, and a
    // stateful connection can be taken over by whoever presents it.
    let stateful = version >= 1
        && shared.options.stateful_reconnect
        && param(&params, "useStatefulReconnect").is_some_and(|v| v.eq_ignore_ascii_case("true"));
    let connection_id = ConnectionId::random();
    // Version 1 separates the secret token (used on the socket) from the
    // public id (used by other clients to address this one); version 0
    // uses the id for both.
    let token = (version >= 1).then(random_token);
    let key = token.clone().unwrap_or_else(|| connection_id.to_string());
    let body = NegotiateResponse {
        negotiate_version: version,
        connection_id: &connection_id,
        connection_token: token.as_deref(),
        available_transports: transports(&shared.options),
        use_stateful_reconnect: stateful,
    };
    let response = json_response(StatusCode::OK, &body);
    tracing::debug!(%connection_id, version, stateful, "negotiated");
    shared.tokens.insert(key, connection_id, user, stateful);
    response
}

/// Which transport a `GET {path}` asks for.
fn requested_transport(parts: &Parts) -> Option<Kind> {
    let header_has = |name: header::HeaderName, value: &str| {
        parts
            .headers
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .any(|v| v.to_ascii_lowercase().contains(value))
    };
    if header_has(header::UPGRADE, "websocket") || parts.method == axum::http::Method::CONNECT {
        None
    } else if header_has(header::ACCEPT, "text/event-stream") {
        Some(Kind::ServerSentEvents)
    } else {
        Some(Kind::LongPolling)
    }
}

/// A plain-text response.
pub(crate) fn plain(status: StatusCode, body: &'static str) -> Response {
    (status, body).into_response()
}

/// A refused request: its status and the text of the answer.
pub(crate) type Refusal = (StatusCode, &'static str);

/// The `id` of a request, or why it is refused.
fn required_id(parts: &Parts) -> Result<String, Refusal> {
    let Some(params) = query_params(parts) else {
        return Err((StatusCode::BAD_REQUEST, "The query string is invalid."));
    };
    param(&params, "id")
        .map(str::to_owned)
        .ok_or((StatusCode::BAD_REQUEST, "Connection ID required"))
}

/// Claims a negotiated token for a new connection.
fn claim(shared: &Shared, token: &str, user: Option<String>) -> Result<Accepted, Refusal> {
    match shared.tokens.claim(token, user.as_deref()) {
        Claim::Granted(pending, guard) => Ok(Accepted {
            connection_id: pending.connection_id,
            user,
            guard: Some(guard),
            stateful: pending.stateful,
        }),
        Claim::Unknown => {
            tracing::debug!("connection refused: unknown connection token");
            Err((StatusCode::NOT_FOUND, "No Connection with that ID"))
        }
        Claim::InUse => {
            tracing::debug!("connection refused: connection token already in use");
            Err((
                StatusCode::CONFLICT,
                "Connection ID is already in use by another connection",
            ))
        }
        Claim::OtherUser => {
            tracing::debug!("connection refused: connection token of another user");
            Err((
                StatusCode::FORBIDDEN,
                "The connection was negotiated by another user",
            ))
        }
    }
}

/// `GET {path}`: the WebSocket (with `?id={token}` after negotiate, or
/// without `id` when the client skips negotiation), the event stream, or a
/// poll.
async fn connect(State(shared): State<Arc<Shared>>, request: Request) -> Response {
    let (parts, _body) = request.into_parts();
    if parts.method == axum::http::Method::HEAD {
        // A HEAD would open a connection or take a poll, and lose its body.
        return plain(StatusCode::METHOD_NOT_ALLOWED, "");
    }
    let user = match authenticate(&shared, &parts).await {
        Ok(user) => user,
        Err(response) => return response,
    };
    let Some(kind) = requested_transport(&parts) else {
        return connect_websocket(shared, parts, user).await;
    };
    let token = match required_id(&parts) {
        Ok(token) => token,
        Err(refusal) => return refusal.into_response(),
    };
    match http::find(&shared, &token, user.as_deref()) {
        Err(refusal) => return refusal.into_response(),
        Ok(Some(connection)) => return http::get(&shared, connection, kind).await,
        Ok(None) => {}
    }
    if !http::enabled(&shared, kind) {
        return plain(
            StatusCode::BAD_REQUEST,
            "The transport is not enabled on this endpoint.",
        );
    }
    if shared.sessions.is_draining() {
        return draining();
    }
    match claim(&shared, &token, user) {
        Ok(accepted) => http::open(shared, kind, token, accepted),
        Err(refusal) => refusal.into_response(),
    }
}

/// `POST {path}?id=`: a client's messages on an SSE or long-polling
/// connection.
async fn send(State(shared): State<Arc<Shared>>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    match http_connection(&shared, &parts).await {
        Ok(connection) => {
            let content_length = parts
                .headers
                .get(header::CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse().ok());
            http::post(&shared, connection, content_length, body).await
        }
        Err(response) => response,
    }
}

/// `DELETE {path}?id=`: the client ends its SSE or long-polling connection.
async fn end(State(shared): State<Arc<Shared>>, request: Request) -> Response {
    let (parts, _body) = request.into_parts();
    match http_connection(&shared, &parts).await {
        Ok(connection) => http::delete(&connection),
        Err(response) => response,
    }
}

/// The open HTTP-transport connection a POST or DELETE names.
async fn http_connection(
    shared: &Shared,
    parts: &Parts,
) -> Result<Arc<http::HttpConnection>, Response> {
    let user = authenticate(shared, parts).await?;
    let token = required_id(parts).map_err(IntoResponse::into_response)?;
    http::find(shared, &token, user.as_deref())
        .map_err(IntoResponse::into_response)?
        .ok_or_else(|| plain(StatusCode::NOT_FOUND, "No Connection with that ID"))
}

/// The WebSocket upgrade.
async fn connect_websocket(
    shared: Arc<Shared>,
    mut parts: Parts,
    user: Option<String>,
) -> Response {
    if !shared.options.websockets {
        return plain(
            StatusCode::BAD_REQUEST,
            "The transport is not enabled on this endpoint.",
        );
    }
    if shared.sessions.is_draining() {
        return draining();
    }
    let upgrade = match WebSocketUpgrade::from_parts(&mut parts) {
        Ok(upgrade) => upgrade,
        Err(refusal) => return refusal.into_response(),
    };
    let Some(params) = query_params(&parts) else {
        return (StatusCode::BAD_REQUEST, "The query string is invalid.").into_response();
    };
    let accepted = match param(&params, "id") {
        None => Accepted {
            connection_id: ConnectionId::random(),
            user,
            guard: None,
            stateful: false,
        },
        Some(token) if shared.http.contains(token) => {
            return plain(
                StatusCode::BAD_REQUEST,
                "The connection does not use WebSockets.",
            );
        }
        Some(token) => match shared.resumable.find(token, user.as_deref()) {
            // The client of a stateful connection, back with a new socket.
            Found::Connection(handoff) => {
                let limit = websocket::message_limit(shared.options.max_message_size);
                return upgrade.on_upgrade(
                    |error| tracing::debug!(%error, "WebSocket upgrade of a reconnect failed"),
                    move |io| websocket::reattach(handoff, io, limit),
                );
            }
            Found::OtherUser => {
                tracing::debug!("reconnect refused: connection token of another user");
                return plain(
                    StatusCode::FORBIDDEN,
                    "The connection was negotiated by another user",
                );
            }
            Found::None => match claim(&shared, token, user) {
                Ok(accepted) => accepted,
                Err(refusal) => return refusal.into_response(),
            },
        },
    };
    let failed_id = accepted.connection_id.clone();
    upgrade.on_upgrade(
        move |error| tracing::debug!(connection_id = %failed_id, %error, "WebSocket upgrade failed"),
        move |io| websocket::run(shared, io, accepted),
    )
}

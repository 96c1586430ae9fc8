//! The two HTTP endpoints: negotiate and the WebSocket upgrade.

use std::sync::Arc;

use axum::Router;
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{FromRequestParts, Query, Request, State};
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Serialize;
use switchboard_core::{ConnectionId, Hub, random_token};

use crate::options::SignalROptions;
use crate::session::Accepted;
use crate::tokens::{Claim, Tokens};
use crate::websocket;

/// The newest negotiate protocol version this server speaks.
const NEGOTIATE_VERSION: u32 = 1;

/// Everything the endpoints of one hub share.
#[derive(Debug)]
pub(crate) struct Shared {
    /// The hub every connection is handed to.
    pub(crate) hub: Hub,
    /// Timeouts, limits, authentication.
    pub(crate) options: SignalROptions,
    /// Connection tokens between negotiate and the socket.
    tokens: Tokens,
}

/// The routes of a SignalR endpoint for `hub` at `path`:
/// `POST {path}/negotiate` and `GET {path}` (the WebSocket).
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
    let base = path.trim_end_matches('/');
    let base = if base.is_empty() || base.starts_with('/') {
        base.to_owned()
    } else {
        format!("/{base}")
    };
    let socket_route = if base.is_empty() { "/" } else { base.as_str() };
    let shared = Arc::new(Shared {
        tokens: Tokens::new(options.token_lifetime, options.max_pending_tokens),
        hub,
        options,
    });
    Router::new()
        .route(&format!("{base}/negotiate"), post(negotiate))
        .route(socket_route, get(connect).connect(connect))
        .with_state(shared)
}

/// The body of a successful negotiate response.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct NegotiateResponse<'a> {
    negotiate_version: u32,
    connection_id: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    connection_token: Option<&'a str>,
    available_transports: [Transport; 1],
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Transport {
    transport: &'static str,
    transfer_formats: [&'static str; 2],
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
        available_transports: [Transport {
            transport: "WebSockets",
            transfer_formats: ["Text", "Binary"],
        }],
    };
    let response = json_response(StatusCode::OK, &body);
    tracing::debug!(%connection_id, version, "negotiated");
    shared.tokens.insert(key, connection_id, user);
    response
}

/// `GET {path}`: the WebSocket, with `?id={token}` after negotiate or
/// without `id` when the client skips negotiation.
async fn connect(State(shared): State<Arc<Shared>>, request: Request) -> Response {
    let (mut parts, _body) = request.into_parts();
    let user = match authenticate(&shared, &parts).await {
        Ok(user) => user,
        Err(response) => return response,
    };
    let upgrade = match WebSocketUpgrade::from_request_parts(&mut parts, &()).await {
        Ok(upgrade) => upgrade,
        Err(rejection) => return rejection.into_response(),
    };
    let Some(params) = query_params(&parts) else {
        return (StatusCode::BAD_REQUEST, "The query string is invalid.").into_response();
    };
    let (connection_id, live) = match param(&params, "id") {
        None => (ConnectionId::random(), None),
        Some(token) => match shared.tokens.claim(token, user.as_deref()) {
            Claim::Granted(pending, guard) => (pending.connection_id, Some(guard)),
            Claim::Unknown => {
                tracing::debug!("WebSocket refused: unknown connection token");
                return (StatusCode::NOT_FOUND, "No Connection with that ID").into_response();
            }
            Claim::InUse => {
                tracing::debug!("WebSocket refused: connection token already in use");
                return (
                    StatusCode::CONFLICT,
                    "Connection ID is already in use by another WebSocket",
                )
                    .into_response();
            }
            Claim::OtherUser => {
                tracing::debug!("WebSocket refused: connection token of another user");
                return (
                    StatusCode::FORBIDDEN,
                    "The connection was negotiated by another user",
                )
                    .into_response();
            }
        },
    };
    let limit = websocket::message_limit(shared.options.max_message_size);
    let failed_id = connection_id.clone();
    upgrade
        .max_message_size(limit)
        .max_frame_size(limit)
        .on_failed_upgrade(move |error| {
            tracing::debug!(connection_id = %failed_id, %error, "WebSocket upgrade failed");
        })
        .on_upgrade(move |websocket| {
            websocket::run(
                shared,
                websocket,
                Accepted {
                    connection_id,
                    user,
                    live,
                },
            )
        })
}

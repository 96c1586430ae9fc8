use std::fmt;

use async_trait::async_trait;
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};

/// Decides who a request comes from, or refuses it.
///
/// Runs on every negotiate request and on every WebSocket request, before
/// anything else happens. Return `Ok(Some(user))` for an authenticated user
/// (hub methods see it as the caller's user, and `send_user` reaches it),
/// `Ok(None)` for an anonymous client, or `Err` to refuse the request with
/// `401 Unauthorized` (or `403 Forbidden`, see [`AuthRejection::forbidden`]).
///
/// Browsers cannot set headers on WebSocket requests: the official SignalR
/// clients send a bearer token as the `access_token` query parameter there,
/// so an authenticator that reads the `Authorization` header should also
/// read that parameter.
///
/// Closures `Fn(&Parts) -> Result<Option<String>, AuthRejection>` are
/// authenticators too:
///
/// ```
/// use axum::http::request::Parts;
/// use switchboard_axum::{AuthRejection, SignalROptions};
///
/// let options = SignalROptions::default().authenticator(|request: &Parts| {
///     match request.headers.get("x-api-key").and_then(|v| v.to_str().ok()) {
///         Some("secret") => Ok(Some("service".to_owned())),
///         Some(_) => Err(AuthRejection::new("invalid API key")),
///         None => Ok(None),
///     }
/// });
/// # let _ = options;
/// ```
#[async_trait]
pub trait Authenticator: Send + Sync + 'static {
    /// Authenticates one request from its head (the body is never read).
    async fn authenticate(&self, request: &Parts) -> Result<Option<String>, AuthRejection>;
}

#[async_trait]
impl<F> Authenticator for F
where
    F: Fn(&Parts) -> Result<Option<String>, AuthRejection> + Send + Sync + 'static,
{
    async fn authenticate(&self, request: &Parts) -> Result<Option<String>, AuthRejection> {
        self(request)
    }
}

/// Why an [`Authenticator`] refused a request; answered with its status and
/// a short plain-text body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthRejection {
    status: StatusCode,
    message: String,
}

impl AuthRejection {
    /// Refuses with `401 Unauthorized` and `message` as the body. Keep the
    /// message short and free of secrets: the client sees it.
    pub fn new(message: impl Into<String>) -> AuthRejection {
        AuthRejection {
            status: StatusCode::UNAUTHORIZED,
            message: message.into(),
        }
    }

    /// Refuses with `403 Forbidden`: the client is known but not allowed.
    pub fn forbidden(message: impl Into<String>) -> AuthRejection {
        AuthRejection {
            status: StatusCode::FORBIDDEN,
            message: message.into(),
        }
    }

    /// The HTTP status of the answer.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The message sent to the client.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for AuthRejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.status, self.message)
    }
}

impl std::error::Error for AuthRejection {}

impl IntoResponse for AuthRejection {
    fn into_response(self) -> Response {
        (self.status, self.message).into_response()
    }
}

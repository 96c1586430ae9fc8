//! Signed tokens: `POST /token` issues one, an axum middleware checks it on
//! every request to the hub and hands the hub the user it names.
//!
//! The tokens are JWTs signed with HMAC-SHA256 under a secret every server
//! of the dashboard shares, so a token issued by one server is good on all
//! of them. Browsers cannot set headers on a WebSocket, so the token may
//! come as the `access_token` query parameter too (what the SignalR clients
//! send); `Authorization: Bearer` is checked first.

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Json;
use axum::extract::{Query, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use switchboard_axum::AuthRejection;

/// Who issues the tokens, checked on the way back.
const ISSUER: &str = "switchboard-dashboard";
/// How long a token is good for.
pub(crate) const TOKEN_LIFETIME: Duration = Duration::from_secs(60 * 60);
/// Longest accepted user name.
const MAX_USER_LEN: usize = 64;

/// What a token says.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub(crate) struct Claims {
    /// The user.
    pub(crate) sub: String,
    /// The issuer, [`ISSUER`].
    iss: String,
    /// Expiry, in seconds since the Unix epoch.
    exp: u64,
}

/// The signing secret, kept out of logs and `Debug` output.
#[derive(Clone)]
pub(crate) struct Keys {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
}

impl fmt::Debug for Keys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Keys(<secret>)")
    }
}

impl Keys {
    /// Keys from a shared secret (at least 32 bytes).
    pub(crate) fn new(secret: &[u8]) -> Result<Keys, String> {
        if secret.len() < 32 {
            return Err(format!(
                "the token secret must be at least 32 bytes, not {}",
                secret.len()
            ));
        }
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_issuer(&[ISSUER]);
        validation.set_required_spec_claims(&["exp", "iss", "sub"]);
        // Expiry is checked to the second.
        validation.leeway = 0;
        Ok(Keys {
            encoding: EncodingKey::from_secret(secret),
            decoding: DecodingKey::from_secret(secret),
            validation,
        })
    }

    /// A token for `user`, good for `lifetime`.
    pub(crate) fn issue(&self, user: &str, lifetime: Duration) -> Result<String, String> {
        let claims = Claims {
            sub: user.to_owned(),
            iss: ISSUER.to_owned(),
            exp: unix_now().saturating_add(lifetime.as_secs()),
        };
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
            .map_err(|e| format!("cannot sign a token: {e}"))
    }

    /// The claims of a valid token: signed with this secret, by this
    /// issuer, not expired.
    pub(crate) fn verify(&self, token: &str) -> Result<Claims, String> {
        jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation)
            .map(|data| data.claims)
            .map_err(|e| e.to_string())
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// What `POST /token` takes.
#[derive(Debug, Deserialize)]
pub(crate) struct TokenRequest {
    user: String,
}

/// What `POST /token` answers.
#[derive(Debug, Serialize)]
pub(crate) struct TokenResponse {
    token: String,
    expires_in: u64,
}

/// `POST /token {"user": "alice"}`: a token for that user.
///
/// A demonstration: it asks for no password. A real application issues
/// tokens after its own login, or takes them from an identity provider.
pub(crate) async fn issue_token(
    State(keys): State<Keys>,
    Json(request): Json<TokenRequest>,
) -> Response {
    let user = request.user.trim();
    if user.is_empty() || user.chars().count() > MAX_USER_LEN {
        let message = format!("the user name must be 1 to {MAX_USER_LEN} characters");
        return (StatusCode::BAD_REQUEST, message).into_response();
    }
    match keys.issue(user, TOKEN_LIFETIME) {
        Ok(token) => Json(TokenResponse {
            token,
            expires_in: TOKEN_LIFETIME.as_secs(),
        })
        .into_response(),
        Err(e) => {
            tracing::error!("{e}");
            StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
    }
}

/// The token of a request: `Authorization: Bearer ...`, else the
/// `access_token` query parameter.
fn token_of(parts: &Parts) -> Option<String> {
    if let Some(value) = parts.headers.get(header::AUTHORIZATION) {
        let value = value.to_str().ok()?;
        let (scheme, token) = value.split_once(' ')?;
        return scheme
            .eq_ignore_ascii_case("bearer")
            .then(|| token.trim().to_owned());
    }
    let Query(params) = Query::<Vec<(String, String)>>::try_from_uri(&parts.uri).ok()?;
    params
        .into_iter()
        .find(|(key, _)| key == "access_token")
        .map(|(_, token)| token)
}

/// The middleware in front of the hub: a request without a valid token is
/// answered 401 and never reaches it; one with a token carries its
/// [`Claims`] on to the hub's authenticator.
pub(crate) async fn require_token(
    State(keys): State<Keys>,
    request: Request,
    next: Next,
) -> Response {
    let (mut parts, body) = request.into_parts();
    let verified = token_of(&parts)
        .ok_or_else(|| "no token".to_owned())
        .and_then(|token| keys.verify(&token));
    match verified {
        Ok(claims) => {
            parts.extensions.insert(claims);
            next.run(Request::from_parts(parts, body)).await
        }
        Err(why) => {
            tracing::debug!(path = %parts.uri.path(), %why, "refused a request without a valid token");
            let mut response =
                (StatusCode::UNAUTHORIZED, "a valid token is required\n").into_response();
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer error=\"invalid_token\""),
            );
            response
        }
    }
}

/// The hub's authenticator: the user the middleware found in the token.
pub(crate) fn token_user(request: &Parts) -> Result<Option<String>, AuthRejection> {
    match request.extensions.get::<Claims>() {
        Some(claims) => Ok(Some(claims.sub.clone())),
        // Only reachable if the middleware were not mounted.
        None => Err(AuthRejection::new("a valid token is required")),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";

    fn parts(uri: &str, authorization: Option<&str>) -> Parts {
        let mut request = axum::http::Request::builder().uri(uri);
        if let Some(value) = authorization {
            request = request.header(header::AUTHORIZATION, value);
        }
        request.body(()).unwrap().into_parts().0
    }

    #[test]
    fn a_token_is_good_on_every_server_with_the_secret() {
        let token = Keys::new(SECRET)
            .unwrap()
            .issue("alice", TOKEN_LIFETIME)
            .unwrap();
        let other_server = Keys::new(SECRET).unwrap();
        assert_eq!(other_server.verify(&token).unwrap().sub, "alice");
    }

    #[test]
    fn forged_expired_and_foreign_tokens_are_refused() {
        let keys = Keys::new(SECRET).unwrap();
        let forged = Keys::new(b"another secret, also thirty-two bytes")
            .unwrap()
            .issue("alice", TOKEN_LIFETIME)
            .unwrap();
        assert!(keys.verify(&forged).is_err());

        let claims = Claims {
            sub: "alice".into(),
            iss: ISSUER.into(),
            exp: unix_now() - 10,
        };
        let expired =
            jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &keys.encoding).unwrap();
        assert!(keys.verify(&expired).unwrap_err().contains("Expired"));

        let claims = Claims {
            sub: "alice".into(),
            iss: "someone else".into(),
            exp: unix_now() + 60,
        };
        let foreign =
            jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &keys.encoding).unwrap();
        assert!(keys.verify(&foreign).is_err());
        assert!(keys.verify("not a token").is_err());
        // "none" is not an algorithm the keys accept.
        let unsigned = format!("eyJhbGciOiJub25lIn0.{}.", forged.split('.').nth(1).unwrap());
        assert!(keys.verify(&unsigned).is_err());
    }

    #[test]
    fn short_secrets_are_refused() {
        assert!(Keys::new(b"short").is_err());
    }

    #[test]
    fn the_token_comes_from_the_header_or_the_query() {
        assert_eq!(
            token_of(&parts("/hubs/dashboard", Some("Bearer abc"))),
            Some("abc".into())
        );
        assert_eq!(
            token_of(&parts("/hubs/dashboard?id=1&access_token=xyz", None)),
            Some("xyz".into())
        );
        assert_eq!(token_of(&parts("/hubs/dashboard", Some("Basic abc"))), None);
        assert_eq!(token_of(&parts("/hubs/dashboard", None)), None);
    }

    #[test]
    fn the_secret_stays_out_of_debug_output() {
        let keys = Keys::new(SECRET).unwrap();
        assert_eq!(format!("{keys:?}"), "Keys(<secret>)");
    }
}

//! The WebSocket opening handshake (RFC 6455 section 4.2) over HTTP/1.1.

use std::future::Future;

use axum::body::Body;
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use sha1::{Digest, Sha1};

/// The upgraded connection.
pub(crate) type UpgradedIo = TokioIo<hyper::upgrade::Upgraded>;

/// The GUID the accept key is made with.
const KEY_GUID: &[u8] = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// A request that asks for a WebSocket, checked.
pub(crate) struct WebSocketUpgrade {
    on_upgrade: OnUpgrade,
    accept: HeaderValue,
}

impl WebSocketUpgrade {
    /// Checks the request's handshake headers; the answer to send instead
    /// if they do not ask for a WebSocket as RFC 6455 says.
    pub(crate) fn from_parts(parts: &mut Parts) -> Result<WebSocketUpgrade, Refusal> {
        if parts.method != Method::GET {
            return Err(refuse(
                StatusCode::METHOD_NOT_ALLOWED,
                "A WebSocket handshake must be a GET request.",
            ));
        }
        let headers = &parts.headers;
        if !has_token(headers, header::CONNECTION, "upgrade") {
            return Err(refuse(
                StatusCode::BAD_REQUEST,
                "The Connection header does not include 'upgrade'.",
            ));
        }
        if !has_token(headers, header::UPGRADE, "websocket") {
            return Err(refuse(
                StatusCode::BAD_REQUEST,
                "The Upgrade header does not include 'websocket'.",
            ));
        }
        if headers
            .get(header::SEC_WEBSOCKET_VERSION)
            .is_none_or(|version| version.as_bytes() != b"13")
        {
            return Err(Refusal {
                offer_version: true,
                ..refuse(
                    StatusCode::UPGRADE_REQUIRED,
                    "Only version 13 of the WebSocket protocol is served.",
                )
            });
        }
        let Some(key) = headers
            .get(header::SEC_WEBSOCKET_KEY)
            .filter(|key| is_valid_key(key.as_bytes()))
        else {
            return Err(refuse(
                StatusCode::BAD_REQUEST,
                "The Sec-WebSocket-Key header is missing or invalid.",
            ));
        };
        let accept = accept_key(key.as_bytes());
        let Some(on_upgrade) = parts.extensions.remove::<OnUpgrade>() else {
            return Err(refuse(
                StatusCode::UPGRADE_REQUIRED,
                "This connection cannot be upgraded to a WebSocket.",
            ));
        };
        Ok(WebSocketUpgrade { on_upgrade, accept })
    }

    /// The 101 answer; once hyper hands the connection over, `serve` runs
    /// with it in a task of its own (`failed` if the upgrade fails).
    pub(crate) fn on_upgrade<F, Fut>(
        self,
        failed: impl FnOnce(hyper::Error) + Send + 'static,
        serve: F,
    ) -> Response
    where
        F: FnOnce(UpgradedIo) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let WebSocketUpgrade { on_upgrade, accept } = self;
        tokio::spawn(async move {
            match on_upgrade.await {
                Ok(upgraded) => serve(TokioIo::new(upgraded)).await,
                Err(error) => failed(error),
            }
        });
        let mut response = Response::new(Body::empty());
        *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
        let headers = response.headers_mut();
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        headers.insert(header::SEC_WEBSOCKET_ACCEPT, accept);
        response
    }
}

/// Why a request is not a WebSocket handshake this server takes.
#[derive(Debug)]
pub(crate) struct Refusal {
    status: StatusCode,
    reason: &'static str,
    /// Names the version this server speaks (RFC 6455 section 4.4).
    offer_version: bool,
}

fn refuse(status: StatusCode, reason: &'static str) -> Refusal {
    Refusal {
        status,
        reason,
        offer_version: false,
    }
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        let mut response = (self.status, self.reason).into_response();
        if self.offer_version {
            response.headers_mut().insert(
                header::SEC_WEBSOCKET_VERSION,
                HeaderValue::from_static("13"),
            );
        }
        response
    }
}

/// Whether header `name` lists `token` (comma-separated, any case).
fn has_token(headers: &HeaderMap, name: header::HeaderName, token: &str) -> bool {
    headers.get_all(name).iter().any(|value| {
        value.to_str().is_ok_and(|value| {
            value
                .split(',')
                .any(|item| item.trim().eq_ignore_ascii_case(token))
        })
    })
}

/// A key is 16 bytes in base64: 24 characters.
fn is_valid_key(key: &[u8]) -> bool {
    base64::engine::general_purpose::STANDARD
        .decode(key)
        .is_ok_and(|bytes| bytes.len() == 16)
}

/// `Sec-WebSocket-Accept` for `key`.
fn accept_key(key: &[u8]) -> HeaderValue {
    let mut sha1 = Sha1::new();
    sha1.update(key);
    sha1.update(KEY_GUID);
    let accept = base64::engine::general_purpose::STANDARD.encode(sha1.finalize());
    HeaderValue::from_str(&accept).expect("base64 is a valid header value")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_accept_key_is_the_one_rfc_6455_gives() {
        assert_eq!(
            accept_key(b"dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
        assert!(is_valid_key(b"dGhlIHNhbXBsZSBub25jZQ=="));
        assert!(!is_valid_key(b"short"));
        assert!(!is_valid_key(b"not base64 at all, not at all"));
    }

    #[test]
    fn tokens_are_found_in_lists_in_any_case() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, Upgrade"),
        );
        assert!(has_token(&headers, header::CONNECTION, "upgrade"));
        assert!(!has_token(&headers, header::UPGRADE, "websocket"));
    }
}

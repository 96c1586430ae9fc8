//! The HTTP side: negotiate, connection tokens, authentication.

#![allow(clippy::unwrap_used, missing_docs)]

mod common;

use std::time::Duration;

use common::TestServer;
use serde_json::json;
use switchboard_axum::SignalROptions;

#[tokio::test]
async fn negotiate_v1_returns_a_token_distinct_from_the_id() {
    let server = TestServer::default().await;
    let body = server.negotiate("?negotiateVersion=1").await;
    assert_eq!(body["negotiateVersion"], 1);
    let id = body["connectionId"].as_str().unwrap();
    let token = body["connectionToken"].as_str().unwrap();
    assert!(!id.is_empty() && !token.is_empty());
    assert_ne!(id, token);
    assert_eq!(
        body["availableTransports"],
        json!([
            { "transport": "WebSockets", "transferFormats": ["Text", "Binary"] },
            { "transport": "ServerSentEvents", "transferFormats": ["Text"] },
            { "transport": "LongPolling", "transferFormats": ["Text", "Binary"] },
        ])
    );
    // Each negotiate hands out new values.
    let again = server.negotiate("?negotiateVersion=1").await;
    assert_ne!(again["connectionId"], body["connectionId"]);
    assert_ne!(again["connectionToken"], body["connectionToken"]);
}

#[tokio::test]
async fn negotiate_v0_returns_no_token() {
    let server = TestServer::default().await;
    for query in ["", "?negotiateVersion=0"] {
        let body = server.negotiate(query).await;
        assert_eq!(body["negotiateVersion"], 0, "{body}");
        assert!(body["connectionId"].is_string(), "{body}");
        assert!(body.get("connectionToken").is_none(), "{body}");
    }
}

#[tokio::test]
async fn negotiate_answers_newer_versions_with_its_own() {
    let server = TestServer::default().await;
    let body = server.negotiate("?negotiateVersion=7").await;
    assert_eq!(body["negotiateVersion"], 1);
    assert!(body["connectionToken"].is_string());

    let (status, body) = server
        .http("POST", "/hub/negotiate?negotiateVersion=abc")
        .await;
    assert_eq!(status, 400);
    assert!(body.contains("error"), "{body}");
}

#[tokio::test]
async fn the_socket_takes_the_negotiated_id() {
    let server = TestServer::default().await;
    let body = server.negotiate("?negotiateVersion=1").await;
    let token = body["connectionToken"].as_str().unwrap();
    let mut client = server.connect(&format!("?id={token}")).await;
    client.handshake_ok("json").await;
    let id = client.invoke("WhoAmI", json!([])).await;
    let completion = client.completion(&id).await;
    assert_eq!(completion["result"]["connectionId"], body["connectionId"]);
    assert_eq!(completion["result"]["user"], json!(null));
}

#[tokio::test]
async fn the_id_is_not_accepted_as_a_token() {
    let server = TestServer::default().await;
    let body = server.negotiate("?negotiateVersion=1").await;
    let id = body["connectionId"].as_str().unwrap();
    assert_eq!(
        server.try_connect(&format!("?id={id}")).await.err(),
        Some(404)
    );
}

#[tokio::test]
async fn v0_connection_id_opens_the_socket() {
    let server = TestServer::default().await;
    let body = server.negotiate("").await;
    let id = body["connectionId"].as_str().unwrap();
    let mut client = server.connect(&format!("?id={id}")).await;
    client.handshake_ok("json").await;
    let call = client.invoke("WhoAmI", json!([])).await;
    assert_eq!(client.completion(&call).await["result"]["connectionId"], id);
}

#[tokio::test]
async fn socket_with_unknown_token_is_404() {
    let server = TestServer::default().await;
    assert_eq!(server.try_connect("?id=nope").await.err(), Some(404));
    assert_eq!(server.try_connect("?id=").await.err(), Some(404));
    server.assert_healthy().await;
}

#[tokio::test]
async fn second_socket_on_a_token_in_use_is_409() {
    let server = TestServer::default().await;
    let body = server.negotiate("?negotiateVersion=1").await;
    let token = body["connectionToken"].as_str().unwrap();
    let mut first = server.connect(&format!("?id={token}")).await;
    assert_eq!(
        server.try_connect(&format!("?id={token}")).await.err(),
        Some(409)
    );
    // The first socket is unaffected.
    first.handshake_ok("json").await;
    let id = first.invoke("Echo", json!(["still here"])).await;
    assert_eq!(first.completion(&id).await["result"], "still here");
    first.close().await;

    // Once its socket has closed, the token is gone.
    server.wait_for_disconnects(1).await;
    tokio::time::timeout(common::WAIT, async {
        while server.try_connect(&format!("?id={token}")).await.err() != Some(404) {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("the used token should be gone");
}

#[tokio::test]
async fn unused_tokens_expire() {
    let server = TestServer::start(
        SignalROptions::default().negotiate_token_lifetime(Duration::from_millis(50)),
    )
    .await;
    let body = server.negotiate("?negotiateVersion=1").await;
    let token = body["connectionToken"].as_str().unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(
        server.try_connect(&format!("?id={token}")).await.err(),
        Some(404)
    );
}

#[tokio::test]
async fn pending_tokens_are_bounded() {
    let server = TestServer::start(SignalROptions::default().max_pending_tokens(2)).await;
    let oldest = server.negotiate("?negotiateVersion=1").await;
    server.negotiate("?negotiateVersion=1").await;
    let newest = server.negotiate("?negotiateVersion=1").await;
    let token = |body: &serde_json::Value| body["connectionToken"].as_str().unwrap().to_owned();
    assert_eq!(
        server
            .try_connect(&format!("?id={}", token(&oldest)))
            .await
            .err(),
        Some(404)
    );
    assert!(
        server
            .try_connect(&format!("?id={}", token(&newest)))
            .await
            .is_ok()
    );
}

#[tokio::test]
async fn skip_negotiation_gets_a_fresh_connection() {
    let server = TestServer::default().await;
    let mut a = server.json_client().await;
    let mut b = server.json_client().await;
    let call = a.invoke("WhoAmI", json!([])).await;
    let a_id = a.completion(&call).await["result"]["connectionId"].clone();
    let call = b.invoke("WhoAmI", json!([])).await;
    let b_id = b.completion(&call).await["result"]["connectionId"].clone();
    assert!(a_id.is_string() && b_id.is_string());
    assert_ne!(a_id, b_id);
}

#[tokio::test]
async fn authenticator_rejection_is_401_at_negotiate_and_socket() {
    let server =
        TestServer::start(SignalROptions::default().authenticator(common::query_user)).await;
    let (status, body) = server
        .http("POST", "/hub/negotiate?user=mallory&negotiateVersion=1")
        .await;
    assert_eq!(status, 401);
    assert_eq!(body, "go away");
    assert_eq!(server.try_connect("?user=mallory").await.err(), Some(401));

    // A token negotiated by someone else does not let mallory in either.
    let body = server.negotiate("?user=alice&negotiateVersion=1").await;
    let token = body["connectionToken"].as_str().unwrap();
    assert_eq!(
        server
            .try_connect(&format!("?user=mallory&id={token}"))
            .await
            .err(),
        Some(401)
    );
    server.assert_healthy().await;
}

#[tokio::test]
async fn the_authenticated_user_reaches_the_hub() {
    let server =
        TestServer::start(SignalROptions::default().authenticator(common::query_user)).await;
    // With negotiation, the hub URL's query is kept beside the id.
    let body = server.negotiate("?user=alice&negotiateVersion=1").await;
    let token = body["connectionToken"].as_str().unwrap();
    let mut client = server.connect(&format!("?user=alice&id={token}")).await;
    client.handshake_ok("json").await;
    let call = client.invoke("WhoAmI", json!([])).await;
    let who = client.completion(&call).await["result"].clone();
    assert_eq!(
        who,
        json!({ "connectionId": body["connectionId"], "user": "alice" })
    );

    // Without negotiation too.
    let mut client = server.connect("?user=bob").await;
    client.handshake_ok("json").await;
    let call = client.invoke("WhoAmI", json!([])).await;
    assert_eq!(client.completion(&call).await["result"]["user"], "bob");
}

#[tokio::test]
async fn a_token_of_another_user_is_403_and_stays_valid() {
    let server =
        TestServer::start(SignalROptions::default().authenticator(common::query_user)).await;
    let body = server.negotiate("?user=alice&negotiateVersion=1").await;
    let token = body["connectionToken"].as_str().unwrap();
    assert_eq!(
        server
            .try_connect(&format!("?user=bob&id={token}"))
            .await
            .err(),
        Some(403)
    );
    assert_eq!(
        server.try_connect(&format!("?id={token}")).await.err(),
        Some(403)
    );
    let mut client = server.connect(&format!("?user=alice&id={token}")).await;
    client.handshake_ok("json").await;
}

#[tokio::test]
async fn plain_requests_are_refused() {
    let server = TestServer::default().await;
    // A GET without upgrade headers is not a WebSocket.
    let (status, _) = server.http("GET", "/hub").await;
    assert!((400..500).contains(&status), "{status}");
    // Negotiate is POST only.
    let (status, _) = server.http("GET", "/hub/negotiate").await;
    assert_eq!(status, 405);
    // Other paths are not ours.
    let (status, _) = server.http("POST", "/other/negotiate").await;
    assert_eq!(status, 404);
    assert_eq!(server.try_connect_path("/other").await.err(), Some(404));
    server.assert_healthy().await;
}

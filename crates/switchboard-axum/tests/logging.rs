//! What reaches the log: never an access token or a connection token, and
//! no flood of warnings a client can provoke.

#![allow(clippy::unwrap_used, missing_docs)]

mod common;

use axum::http::request::Parts;
use common::TestServer;
use switchboard_axum::{AuthRejection, SignalROptions};
use switchboard_tests::logs::CapturedLogs;

const ACCESS_TOKEN: &str = "hunter2-access-token";

/// Accepts only requests carrying the right access token, as a bearer
/// token authenticator would.
fn bearer(request: &Parts) -> Result<Option<String>, AuthRejection> {
    let query = request.uri.query().unwrap_or_default();
    if query.contains(&format!("access_token={ACCESS_TOKEN}")) {
        Ok(Some("alice".to_owned()))
    } else {
        Err(AuthRejection::new("bad token"))
    }
}

// A current-thread runtime: the server's tasks log on the capturing thread.
#[tokio::test]
async fn tokens_in_urls_never_reach_the_log() {
    let (logs, _guard) = CapturedLogs::start();
    let server = TestServer::start(SignalROptions::default().authenticator(bearer)).await;

    // Refused: a wrong access token and a stolen connection token in the URL.
    let (status, _) = server
        .http(
            "POST",
            "/hub/negotiate?negotiateVersion=1&access_token=wrong-access-token",
        )
        .await;
    assert_eq!(status, 401);
    let body = server
        .negotiate(&format!("?negotiateVersion=1&access_token={ACCESS_TOKEN}"))
        .await;
    let token = body["connectionToken"].as_str().unwrap().to_owned();
    assert_eq!(
        server
            .try_connect(&format!("?id={token}&access_token=wrong-access-token"))
            .await
            .err(),
        Some(401)
    );

    // Accepted, then refused for reuse while in use, then unknown.
    let mut client = server
        .connect(&format!("?id={token}&access_token={ACCESS_TOKEN}"))
        .await;
    client.handshake_ok("json").await;
    assert_eq!(
        server
            .try_connect(&format!("?id={token}&access_token={ACCESS_TOKEN}"))
            .await
            .err(),
        Some(409)
    );
    client.close().await;
    server.wait_for_disconnects(1).await;
    let unknown = "an-unknown-connection-token";
    assert_eq!(
        server
            .try_connect(&format!("?id={unknown}&access_token={ACCESS_TOKEN}"))
            .await
            .err(),
        Some(404)
    );

    let text = logs.text();
    assert!(
        text.contains("request refused by the authenticator"),
        "the refusals were not logged at all:\n{text}"
    );
    for secret in [ACCESS_TOKEN, "wrong-access-token", &token, unknown] {
        logs.assert_absent(secret);
    }
}

/// A client sending bogus Completions by the thousand costs a warning per
/// 1024, not one each.
#[tokio::test]
async fn bogus_completions_do_not_flood_the_warn_log() {
    let (logs, _guard) = CapturedLogs::start();
    let server = TestServer::default().await;
    let mut client = server.json_client().await;
    let mut frame = String::new();
    for i in 0..3000 {
        frame.push_str(&format!(
            "{{\"type\":3,\"invocationId\":\"bogus-{i}\",\"result\":1}}{}",
            common::RS
        ));
        if i % 100 == 99 {
            client.send_text(&frame).await;
            frame.clear();
        }
    }
    // Once this is answered, every completion before it was handled.
    let id = client.invoke("Echo", serde_json::json!(["done"])).await;
    assert_eq!(client.completion(&id).await["result"], "done");
    let warnings = logs
        .text()
        .lines()
        .filter(|line| line.contains("WARN") && line.contains("completion refused"))
        .count();
    assert!(
        (1..=3).contains(&warnings),
        "{warnings} warnings for 3000 bogus completions"
    );
}

// A current-thread runtime: the session's and the hub's tasks log on the
// capturing thread.
#[tokio::test]
async fn connections_and_invocations_run_in_spans_with_their_fields() {
    use std::sync::Arc;

    use switchboard_core::{CallContext, Hub, HubError, InMemoryHubLifetimeManager};
    use switchboard_testing::TestClient;

    let (logs, _guard) = CapturedLogs::start();
    let hub = Hub::builder()
        .method(
            "Shout",
            |_ctx: CallContext, (text,): (String,)| async move {
                tracing::info!(%text, "inside the method");
                Ok::<_, HubError>(())
            },
        )
        .build(Arc::new(InMemoryHubLifetimeManager::new()));
    let mut client = TestClient::builder(&hub)
        .user("alice")
        .connect()
        .await
        .unwrap();
    client.invoke::<()>("Shout", ("hey",)).await.unwrap();
    let id = client.id().to_string();
    client.close().await.unwrap();

    let text = logs.text();
    let connected = text
        .lines()
        .find(|line| line.contains("connected"))
        .unwrap_or_else(|| panic!("no `connected` event:\n{text}"));
    for field in [
        format!("connection{{connection_id={id}"),
        "user=true".to_owned(),
        "transport=\"in_memory\"".to_owned(),
        "protocol=\"json\"".to_owned(),
    ] {
        assert!(
            connected.contains(&field),
            "{field} missing from: {connected}"
        );
    }
    let inside = text
        .lines()
        .find(|line| line.contains("inside the method"))
        .unwrap_or_else(|| panic!("no event from the method:\n{text}"));
    for field in [
        format!("invocation{{connection_id={id}"),
        "method=Shout".to_owned(),
        "invocation_id=\"1\"".to_owned(),
    ] {
        assert!(inside.contains(&field), "{field} missing from: {inside}");
    }
}

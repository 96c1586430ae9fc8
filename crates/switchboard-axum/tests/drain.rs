//! A graceful drain: Close messages that allow reconnecting, 503 for new
//! clients, invocations that finish within the grace (and one that does
//! not), and a bounded end.

#![allow(clippy::unwrap_used, missing_docs)]

mod common;

use std::time::Duration;

use common::{TestServer, WAIT};
use serde_json::json;
use switchboard_axum::{DrainOptions, SignalROptions};

fn drain_options(grace_ms: u64) -> DrainOptions {
    let mut options = DrainOptions::default();
    options.grace = Duration::from_millis(grace_ms);
    options.timeout = WAIT;
    options
}

#[tokio::test]
async fn a_drain_tells_every_client_to_reconnect_and_refuses_new_ones() {
    let (server, endpoint) = TestServer::with_endpoint(SignalROptions::default()).await;
    let mut clients = Vec::new();
    for _ in 0..5 {
        clients.push(server.json_client().await);
    }
    assert_eq!(endpoint.connections(), 5);
    let drain = tokio::spawn({
        let endpoint = endpoint.clone();
        async move { endpoint.drain(drain_options(1_000)).await }
    });
    for client in &mut clients {
        let close = client.close_message().await;
        assert_eq!(close["error"], "The server is shutting down.");
        assert_eq!(close["allowReconnect"], true, "{close}");
    }
    let report = tokio::time::timeout(WAIT, drain).await.unwrap().unwrap();
    assert_eq!((report.connections, report.remaining), (5, 0));
    assert!(endpoint.is_draining());
    assert_eq!(server.wait_for_disconnects(5).await.len(), 5);
    assert_eq!(server.hub.manager().stats().connections, 0);
    // New clients are sent elsewhere.
    let (status, _) = server
        .http("POST", "/hub/negotiate?negotiateVersion=1")
        .await;
    assert_eq!(status, 503);
    assert_eq!(server.try_connect("").await.err(), Some(503));
}

#[tokio::test]
async fn a_running_invocation_finishes_within_the_grace_and_a_longer_one_is_cut_off() {
    let (server, endpoint) = TestServer::with_endpoint(SignalROptions::default()).await;
    let mut quick = server.json_client().await;
    let mut slow = server.json_client().await;
    let quick_id = quick.invoke("Nap", json!([300])).await;
    let slow_id = slow.invoke("Nap", json!([60_000])).await;
    // Both invocations are running before the drain starts.
    for client in [&mut quick, &mut slow] {
        let started = client.record().await.unwrap();
        assert_eq!(started["target"], "napping", "{started}");
    }
    let report = endpoint.drain(drain_options(2_000)).await;
    assert_eq!(report.remaining, 0);
    assert!(report.elapsed < WAIT, "{report:?}");
    // The quick one answered before its connection closed.
    assert_eq!(quick.completion(&quick_id).await["result"], 300);
    assert_eq!(quick.close_message().await["allowReconnect"], true);
    // The slow one was cut off at the grace: no Completion, a Close.
    loop {
        let record = slow.record().await.expect("closed without a Close message");
        match record["type"].as_u64() {
            Some(6) => {}
            Some(7) => break,
            _ => panic!("unexpected {record} (the slow invocation {slow_id} should not answer)"),
        }
    }
}

#[tokio::test]
async fn during_the_grace_the_client_is_still_read_and_new_invocations_are_refused() {
    let (server, endpoint) = TestServer::with_endpoint(SignalROptions::default()).await;
    let mut client = server.json_client().await;
    // A hub method waiting for the client's own answer.
    let ask = client.invoke("Ask", json!(["ready?"])).await;
    let question = client.record().await.unwrap();
    assert_eq!(question["target"], "ask", "{question}");
    let drain = tokio::spawn({
        let endpoint = endpoint.clone();
        // A grace far longer than the test waits: the drain must end
        // because the method is done, not because the grace ran out.
        let mut options = drain_options(600_000);
        options.timeout = Duration::from_secs(1_200);
        async move { endpoint.drain(options).await }
    });
    while !endpoint.is_draining() {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // Nothing new starts...
    let refused = client.invoke("Add", json!([1, 2])).await;
    let completion = client.completion(&refused).await;
    assert_eq!(completion["error"], "The server is shutting down.");
    // ...but the answer still reaches the method that waits for it.
    client
        .send_json(json!({
            "type": 3, "invocationId": question["invocationId"], "result": "yes",
        }))
        .await;
    assert_eq!(client.completion(&ask).await["result"], "yes");
    assert_eq!(client.close_message().await["allowReconnect"], true);
    let report = tokio::time::timeout(WAIT, drain).await.unwrap().unwrap();
    assert_eq!(report.remaining, 0);
}

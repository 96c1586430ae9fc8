//! Stateful reconnect on the wire, with a raw WebSocket client: negotiate,
//! the version 2 handshake, Acks, the Sequence and replay after a dropped
//! socket, duplicates from the client dropped, the replay buffer's bound,
//! and the reconnect window.

#![allow(clippy::unwrap_used, missing_docs)]

mod common;

use std::time::Duration;

use common::{Client, RS, TestServer, WAIT};
use serde_json::{Value, json};
use switchboard_axum::SignalROptions;
use switchboard_core::protocol::{HubMessage, Invocation, Outcome, Protocol};

/// Negotiates with stateful reconnect; returns the connection id and token.
async fn negotiate(server: &TestServer) -> (String, String) {
    let body = server
        .negotiate("?negotiateVersion=1&useStatefulReconnect=true")
        .await;
    assert_eq!(body["useStatefulReconnect"], true, "{body}");
    (
        body["connectionId"].as_str().unwrap().to_owned(),
        body["connectionToken"].as_str().unwrap().to_owned(),
    )
}

/// Opens the connection of `token` with a version 2 handshake.
async fn open(server: &TestServer, token: &str, protocol: Protocol) -> Client {
    let mut client = server.connect(&format!("?id={token}")).await;
    let response = client.handshake_version(protocol.name(), 2).await;
    assert_eq!(response, Some(json!({})));
    client
}

/// The next message that is not a Ping.
async fn next(client: &mut Client) -> HubMessage {
    loop {
        match client.message().await.expect("the socket closed") {
            HubMessage::Ping => {}
            other => return other,
        }
    }
}

/// The next message that is neither a Ping nor an Ack.
async fn next_trackable(client: &mut Client) -> HubMessage {
    loop {
        match next(client).await {
            HubMessage::Ack { .. } => {}
            other => return other,
        }
    }
}

fn invocation(id: &str, target: &str, arguments: Vec<Value>, protocol: Protocol) -> HubMessage {
    HubMessage::Invocation(Invocation {
        invocation_id: Some(id.to_owned()),
        target: target.to_owned(),
        arguments: arguments
            .iter()
            .map(|a| protocol.encode_value(a).unwrap())
            .collect(),
        stream_ids: vec![],
    })
}

fn completion_value(message: &HubMessage) -> (String, Value) {
    match message {
        HubMessage::Completion(c) => match &c.outcome {
            Outcome::Value(v) => (c.invocation_id.clone(), v.deserialize().unwrap()),
            other => panic!("expected a value, got {other:?}"),
        },
        other => panic!("expected a completion, got {other:?}"),
    }
}

/// The text argument of a `notified` invocation.
fn notified(message: &HubMessage) -> String {
    match message {
        HubMessage::Invocation(i) if i.target == "notified" => {
            i.arguments[0].deserialize().unwrap()
        }
        other => panic!("expected a notification, got {other:?}"),
    }
}

async fn notify(server: &TestServer, connection_id: &str, text: &str) {
    server
        .hub
        .context()
        .client(connection_id.to_owned())
        .send("notified", (text,))
        .await
        .unwrap();
}

#[tokio::test]
async fn negotiate_offers_stateful_reconnect_only_when_asked_and_allowed() {
    let server = TestServer::default().await;
    let plain = server.negotiate("?negotiateVersion=1").await;
    assert!(plain.get("useStatefulReconnect").is_none(), "{plain}");
    negotiate(&server).await;
    // Version 0 has no secret token (the public id stands in), so no
    // stateful connection that a stranger could take over.
    let v0 = server.negotiate("?useStatefulReconnect=true").await;
    assert!(v0.get("useStatefulReconnect").is_none(), "{v0}");

    let off = TestServer::start(SignalROptions::default().stateful_reconnect(false)).await;
    let body = off
        .negotiate("?negotiateVersion=1&useStatefulReconnect=true")
        .await;
    assert!(body.get("useStatefulReconnect").is_none(), "{body}");
}

#[tokio::test]
async fn a_dropped_socket_resumes_the_connection_and_both_sides_replay() {
    for protocol in Protocol::ALL {
        let server = TestServer::default().await;
        let (connection_id, token) = negotiate(&server).await;
        let mut client = open(&server, &token, protocol).await;

        // Client message 1, server message 1.
        client
            .send_message(&invocation("w", "WhoAmI", vec![], protocol))
            .await;
        let (_, who) = completion_value(&next_trackable(&mut client).await);
        assert_eq!(who["connectionId"], connection_id.as_str());
        // The server acknowledges the client's message.
        assert_eq!(next(&mut client).await, HubMessage::Ack { sequence_id: 1 });

        // The socket drops without a close frame; messages keep coming.
        drop(client);
        for i in 0..5 {
            notify(&server, &connection_id, &format!("gap {i}")).await;
        }

        // The client comes back with its token, no handshake.
        let mut client = server.connect(&format!("?id={token}")).await;
        client.set_protocol(protocol);
        // Nothing was acknowledged by the client: replay from message 1.
        assert_eq!(
            next(&mut client).await,
            HubMessage::Sequence { sequence_id: 1 }
        );
        let (id, _) = completion_value(&next(&mut client).await);
        assert_eq!(id, "w");
        for i in 0..5 {
            assert_eq!(notified(&next(&mut client).await), format!("gap {i}"));
        }

        // The client replays its message 1 (it never saw the server's
        // Ack), which the server drops, then sends message 2.
        client
            .send_message(&HubMessage::Sequence { sequence_id: 1 })
            .await;
        client
            .send_message(&invocation("w", "WhoAmI", vec![], protocol))
            .await;
        client
            .send_message(&invocation("a", "Add", vec![json!(40), json!(2)], protocol))
            .await;
        let (id, sum) = completion_value(&next_trackable(&mut client).await);
        assert_eq!((id.as_str(), sum), ("a", json!(42)), "{protocol}");

        // Acknowledging releases the server's buffer: the next reconnect
        // replays only what came after.
        client
            .send_message(&HubMessage::Ack { sequence_id: 7 })
            .await;
        notify(&server, &connection_id, "after").await;
        assert_eq!(notified(&next_trackable(&mut client).await), "after");
        drop(client);
        let mut client = server.connect(&format!("?id={token}")).await;
        client.set_protocol(protocol);
        assert_eq!(
            next(&mut client).await,
            HubMessage::Sequence { sequence_id: 8 }
        );
        assert_eq!(notified(&next(&mut client).await), "after");
        client
            .send_message(&HubMessage::Sequence { sequence_id: 3 })
            .await;
        client
            .send_message(&invocation("b", "Add", vec![json!(1), json!(2)], protocol))
            .await;
        let (id, sum) = completion_value(&next_trackable(&mut client).await);
        assert_eq!((id.as_str(), sum), ("b", json!(3)));
        assert!(server.disconnects.lock().is_empty(), "the connection ended");
    }
}

#[tokio::test]
async fn messages_before_the_clients_sequence_are_ignored_after_a_reconnect() {
    let server = TestServer::default().await;
    let (_, token) = negotiate(&server).await;
    let client = open(&server, &token, Protocol::Json).await;
    drop(client);
    let mut client = server.connect(&format!("?id={token}")).await;
    assert_eq!(
        next(&mut client).await,
        HubMessage::Sequence { sequence_id: 1 }
    );
    // Not yet numbered: dropped.
    let skipped = client.invoke("Add", json!([1, 1])).await;
    client
        .send_message(&HubMessage::Sequence { sequence_id: 1 })
        .await;
    let id = client.invoke("Add", json!([2, 2])).await;
    let completion = client.completion(&id).await;
    assert_eq!(completion["result"], 4);
    assert_ne!(skipped, id);
}

#[tokio::test]
async fn a_new_socket_takes_over_a_connection_whose_socket_seems_alive() {
    let server = TestServer::default().await;
    let (connection_id, token) = negotiate(&server).await;
    let mut first = open(&server, &token, Protocol::Json).await;
    notify(&server, &connection_id, "one").await;
    assert_eq!(notified(&next(&mut first).await), "one");

    let mut second = server.connect(&format!("?id={token}")).await;
    assert_eq!(
        next(&mut second).await,
        HubMessage::Sequence { sequence_id: 1 }
    );
    assert_eq!(notified(&next(&mut second).await), "one");
    // The old socket is closed by the server.
    first.closed().await;
    second
        .send_message(&HubMessage::Sequence { sequence_id: 1 })
        .await;
    let id = second.invoke("Add", json!([20, 22])).await;
    assert_eq!(second.completion(&id).await["result"], 42);
}

#[tokio::test]
async fn the_replay_buffer_holds_back_what_the_client_has_not_acknowledged() {
    let server =
        TestServer::start(SignalROptions::default().stateful_reconnect_buffer_size(1_000)).await;
    let (connection_id, token) = negotiate(&server).await;
    let mut client = open(&server, &token, Protocol::Json).await;
    let text = "x".repeat(100);
    for _ in 0..30 {
        notify(&server, &connection_id, &text).await;
    }
    // Each message is over 100 bytes: the 1 000-byte buffer holds at most
    // ten of them, plus the one that crosses the limit.
    // The first arrives however slow the machine; then the rest that come
    // unacknowledged, until a quiet half second.
    match tokio::time::timeout(WAIT, next_trackable(&mut client)).await {
        Ok(HubMessage::Invocation(_)) => {}
        other => panic!("expected a message, got {other:?}"),
    }
    let mut received = 1u64;
    loop {
        let more = tokio::time::timeout(Duration::from_millis(500), client.message()).await;
        match more {
            Ok(Some(HubMessage::Invocation(_))) => received += 1,
            Ok(Some(HubMessage::Ping)) => {}
            Ok(other) => panic!("unexpected {other:?}"),
            Err(_) => break,
        }
    }
    assert!(
        (1..=10).contains(&received),
        "{received} messages arrived unacknowledged"
    );
    // Every Ack lets more through, until all thirty have arrived.
    while received < 30 {
        client
            .send_message(&HubMessage::Ack {
                sequence_id: received,
            })
            .await;
        match tokio::time::timeout(WAIT, next_trackable(&mut client)).await {
            Ok(HubMessage::Invocation(_)) => received += 1,
            other => panic!("expected a message after the Ack, got {other:?}"),
        }
    }
    assert!(server.disconnects.lock().is_empty());
}

#[tokio::test]
async fn past_the_reconnect_window_the_connection_is_disconnected() {
    let window = Duration::from_millis(300);
    let server =
        TestServer::start(SignalROptions::default().stateful_reconnect_window(window)).await;
    let (connection_id, token) = negotiate(&server).await;
    let client = open(&server, &token, Protocol::Json).await;
    drop(client);
    let disconnects = server.wait_for_disconnects(1).await;
    assert_eq!(
        disconnects[0].as_deref(),
        Some("The client did not reconnect within 300 ms.")
    );
    // Gone everywhere: the token no longer opens anything, and the id is
    // unknown to the lifetime manager.
    assert_eq!(
        server.try_connect(&format!("?id={token}")).await.err(),
        Some(404)
    );
    assert_eq!(server.hub.manager().stats().connections, 0);
    let joined = server.hub.manager().add_to_group(&connection_id, "g").await;
    assert!(joined.is_err(), "{joined:?}");
}

#[tokio::test]
async fn a_version_1_handshake_or_an_unasked_negotiate_is_not_stateful() {
    let server = TestServer::default().await;
    // Negotiated, but the handshake asks for version 1.
    let (_, token) = negotiate(&server).await;
    let mut client = server.connect(&format!("?id={token}")).await;
    client.handshake_ok("json").await;
    let id = client.invoke("Add", json!([1, 2])).await;
    client.completion(&id).await;
    drop(client);
    server.wait_for_disconnects(1).await;

    // Version 2 without asking in negotiate.
    let body = server.negotiate("?negotiateVersion=1").await;
    let token = body["connectionToken"].as_str().unwrap();
    let mut client = server.connect(&format!("?id={token}")).await;
    assert_eq!(client.handshake_version("json", 2).await, Some(json!({})));
    let id = client.invoke("Add", json!([1, 2])).await;
    client.completion(&id).await;
    // No Ack comes on a connection that is not stateful.
    let quiet = tokio::time::timeout(Duration::from_millis(600), client.record()).await;
    match quiet {
        Err(_) => {}
        Ok(Some(record)) => assert_eq!(record["type"], 6, "{record}"),
        Ok(None) => panic!("closed"),
    }
    drop(client);
    server.wait_for_disconnects(2).await;
}

#[tokio::test]
async fn acks_and_sequences_that_break_the_rules_close_the_connection() {
    let server = TestServer::default().await;
    for (message, error) in [
        (
            r#"{"type":8,"sequenceId":5}"#,
            "the client acknowledged message 5, but only 0 were sent",
        ),
        (
            r#"{"type":9,"sequenceId":7}"#,
            "Sequence ID 7 is greater than the 0 messages received",
        ),
        (
            r#"{"type":9,"sequenceId":0}"#,
            "Sequence ID 0 is invalid: sequence ids start at 1",
        ),
    ] {
        let (_, token) = negotiate(&server).await;
        let mut client = open(&server, &token, Protocol::Json).await;
        client.send_text(&format!("{message}{RS}")).await;
        let close = client.close_message().await;
        assert_eq!(
            close["error"],
            format!("Connection closed with an error: {error}.")
        );
    }
    server.assert_healthy().await;
}

//! The socket side: handshake, framing, bad input, MessagePack.

#![allow(clippy::unwrap_used, missing_docs)]

mod common;

use std::time::Duration;

use common::{Frame, RS, TestServer};
use serde_json::json;
use switchboard_axum::SignalROptions;
use switchboard_core::protocol::{HubMessage, Outcome, Protocol};

fn small_limits() -> SignalROptions {
    SignalROptions::default().max_message_size(1024)
}

#[tokio::test]
async fn json_handshake_succeeds() {
    let server = TestServer::default().await;
    let mut client = server.connect("").await;
    client
        .send_text(&format!("{{\"protocol\":\"json\",\"version\":1}}{RS}"))
        .await;
    match client.frame().await {
        Frame::Text(text) => assert_eq!(text, format!("{{}}{RS}")),
        other => panic!("expected a text handshake response, got {other:?}"),
    }
}

#[tokio::test]
async fn messagepack_handshake_succeeds() {
    let server = TestServer::default().await;
    let mut client = server.connect("").await;
    // The JavaScript client sends the handshake of a binary protocol in a
    // text frame; the response comes in the connection's binary format.
    client
        .send_text(&format!(
            "{{\"protocol\":\"messagepack\",\"version\":1}}{RS}"
        ))
        .await;
    match client.frame().await {
        Frame::Binary(bytes) => assert_eq!(bytes, b"{}\x1e"),
        other => panic!("expected a binary handshake response, got {other:?}"),
    }
}

#[tokio::test]
async fn handshake_in_pieces_with_a_message_behind_it() {
    let server = TestServer::default().await;
    let mut client = server.connect("").await;
    client.send_binary(b"{\"protocol\":").await;
    client
        .send_binary(
            format!("\"json\",\"version\":1}}{RS}{{\"type\":1,\"invocationId\":\"a\",\"target\":\"Add\",\"arguments\":[1,2]}}{RS}")
                .as_bytes(),
        )
        .await;
    assert_eq!(client.record().await, Some(json!({})));
    assert_eq!(client.completion("a").await["result"], 3);
}

#[tokio::test]
async fn unknown_protocol_is_refused() {
    let server = TestServer::default().await;
    let mut client = server.connect("").await;
    let response = client.handshake("xml").await.unwrap();
    assert_eq!(
        response,
        json!({ "error": "The protocol 'xml' is not supported." })
    );
    client.closed().await;
    server.assert_healthy().await;
}

#[tokio::test]
async fn unsupported_version_is_refused() {
    let server = TestServer::default().await;
    let mut client = server.connect("").await;
    client
        .send_text(&format!("{{\"protocol\":\"json\",\"version\":3}}{RS}"))
        .await;
    let response = client.record().await.unwrap();
    assert_eq!(
        response,
        json!({ "error": "The server does not support version 3 of the 'json' protocol." })
    );
    client.closed().await;
    server.assert_healthy().await;
}

/// Versions up to the server's own are accepted, as ASP.NET Core does:
/// Python's `signalrcore`, for one, asks for version 0.
#[tokio::test]
async fn older_and_current_versions_are_accepted() {
    let server = TestServer::default().await;
    for version in [0, 1, 2] {
        let mut client = server.connect("").await;
        client
            .send_text(&format!(
                "{{\"protocol\":\"json\",\"version\":{version}}}{RS}"
            ))
            .await;
        assert_eq!(client.record().await, Some(json!({})), "json v{version}");
        let id = client.invoke("Add", json!([version, 1])).await;
        assert_eq!(client.completion(&id).await["result"], version + 1);

        let mut client = server.connect("").await;
        client
            .send_text(&format!(
                "{{\"protocol\":\"messagepack\",\"version\":{version}}}{RS}"
            ))
            .await;
        match client.frame().await {
            Frame::Binary(bytes) => assert_eq!(bytes, b"{}\x1e", "messagepack v{version}"),
            other => panic!("expected a binary handshake response, got {other:?}"),
        }
    }
    server.assert_healthy().await;
}

#[tokio::test]
async fn newer_messagepack_version_is_refused() {
    let server = TestServer::default().await;
    let mut client = server.connect("").await;
    client
        .send_text(&format!(
            "{{\"protocol\":\"messagepack\",\"version\":3}}{RS}"
        ))
        .await;
    let response = client.record().await.unwrap();
    assert_eq!(
        response,
        json!({ "error": "The server does not support version 3 of the 'messagepack' protocol." })
    );
    client.closed().await;
}

#[tokio::test]
async fn malformed_handshake_closes_the_socket() {
    let server = TestServer::default().await;
    for bad in ["not json", "{\"protocol\":\"json\"}", "[1,2]", ""] {
        let mut client = server.connect("").await;
        client.send_text(&format!("{bad}{RS}")).await;
        let response = client.record().await.unwrap();
        assert!(response["error"].is_string(), "{bad:?}: {response}");
        assert!(client.record().await.is_none(), "{bad:?}: still open");
    }
    server.assert_healthy().await;
    // No session was ever opened by them.
    assert_eq!(server.wait_for_disconnects(1).await.len(), 1);
}

#[tokio::test]
async fn oversized_handshake_closes_the_socket() {
    let server = TestServer::start(small_limits()).await;
    let mut client = server.connect("").await;
    client.send_text(&"{".repeat(2000)).await;
    let response = client.record().await.unwrap();
    assert!(
        response["error"].as_str().unwrap().contains("limit"),
        "{response}"
    );
    assert!(client.record().await.is_none());
    server.assert_healthy().await;
}

#[tokio::test]
async fn handshake_timeout_closes_the_socket() {
    let server =
        TestServer::start(SignalROptions::default().handshake_timeout(Duration::from_millis(100)))
            .await;
    let mut client = server.connect("").await;
    let started = std::time::Instant::now();
    assert!(matches!(client.frame().await, Frame::Closed));
    assert!(started.elapsed() < common::WAIT);
    server.assert_healthy().await;
}

#[tokio::test]
async fn invalid_json_gets_a_close_error() {
    let server = TestServer::default().await;
    let mut client = server.json_client().await;
    client
        .send_text(&format!("{{\"type\":1,\"target\":{RS}"))
        .await;
    let close = client.close_message().await;
    let error = close["error"].as_str().unwrap();
    assert!(
        error.starts_with("Connection closed with an error"),
        "{error}"
    );
    // Protocol errors do not invite a reconnect (an absent flag is false).
    assert_ne!(close["allowReconnect"], json!(true), "{close}");
    // The session was closed with that error.
    let disconnects = server.wait_for_disconnects(1).await;
    assert_eq!(disconnects[0].as_deref(), Some(error));
    server.assert_healthy().await;
}

#[tokio::test]
async fn missing_separator_beyond_the_limit_closes() {
    let server = TestServer::start(small_limits()).await;
    // In one frame.
    let mut client = server.json_client().await;
    client.send_text(&"x".repeat(1500)).await;
    let close = client.close_message().await;
    assert!(close["error"].as_str().unwrap().contains("1024"), "{close}");
    // Or a record that keeps growing over several frames.
    let mut client = server.json_client().await;
    client
        .send_text(&format!(
            "{{\"type\":1,\"target\":\"Echo\",\"arguments\":[\"{}",
            "y".repeat(600)
        ))
        .await;
    client.send_text(&"y".repeat(600)).await;
    let close = client.close_message().await;
    assert!(
        close["error"].as_str().unwrap().contains("limit"),
        "{close}"
    );
    server.assert_healthy().await;
}

#[tokio::test]
async fn oversized_message_names_the_limit() {
    let server = TestServer::start(small_limits()).await;
    let mut client = server.json_client().await;
    let big = "z".repeat(2000);
    client
        .send_json(json!({ "type": 1, "invocationId": "1", "target": "Echo", "arguments": [big] }))
        .await;
    let close = client.close_message().await;
    let error = close["error"].as_str().unwrap();
    assert!(error.contains("exceeds the limit of 1024 bytes"), "{error}");
    server.assert_healthy().await;
}

#[tokio::test]
async fn a_message_at_the_limit_is_accepted() {
    let server = TestServer::start(small_limits()).await;
    let mut client = server.json_client().await;
    let prefix = r#"{"type":1,"invocationId":"1","target":"Echo","arguments":[""#;
    let suffix = r#""]}"#;
    let text = "a".repeat(1024 - prefix.len() - suffix.len());
    let record = format!("{prefix}{text}{suffix}");
    assert_eq!(record.len(), 1024);
    client.send_text(&format!("{record}{RS}")).await;
    assert_eq!(client.completion("1").await["result"], text.as_str());
}

#[tokio::test]
async fn unknown_message_type_gets_a_close_error() {
    let server = TestServer::default().await;
    let mut client = server.json_client().await;
    client.send_json(json!({ "type": 99 })).await;
    let close = client.close_message().await;
    assert!(close["error"].as_str().unwrap().contains("99"), "{close}");
    server.assert_healthy().await;
}

#[tokio::test]
async fn unknown_method_gets_a_completion_error() {
    let server = TestServer::default().await;
    let mut client = server.json_client().await;
    let id = client.invoke("Nope", json!([])).await;
    let completion = client.completion(&id).await;
    assert!(
        completion["error"].as_str().unwrap().contains("Nope"),
        "{completion}"
    );
    // The connection stays open.
    let id = client.invoke("Add", json!([1, 1])).await;
    assert_eq!(client.completion(&id).await["result"], 2);
}

#[tokio::test]
async fn wrong_arguments_get_a_completion_error() {
    let server = TestServer::default().await;
    let mut client = server.json_client().await;
    let id = client.invoke("Add", json!(["one", 2])).await;
    assert!(client.completion(&id).await["error"].is_string());
    let id = client.invoke("Add", json!([1])).await;
    assert!(client.completion(&id).await["error"].is_string());
    let id = client.invoke("Add", json!([1, 2])).await;
    assert_eq!(client.completion(&id).await["result"], 3);
}

#[tokio::test]
async fn non_blocking_invocation_gets_no_completion() {
    let server = TestServer::default().await;
    let mut client = server.json_client().await;
    client
        .send_json(json!({ "type": 1, "target": "Notify", "arguments": ["hi"] }))
        .await;
    // A failing non-blocking invocation is not answered either.
    client
        .send_json(json!({ "type": 1, "target": "Nope", "arguments": [] }))
        .await;
    let id = client.invoke("Echo", json!(["after"])).await;
    // Invocations of one connection run in order: the notification, then
    // the Echo's completion, and nothing else.
    let notified = client.record().await.unwrap();
    assert_eq!(notified["target"], "notified", "{notified}");
    assert_eq!(notified["arguments"], json!(["hi"]));
    assert_eq!(client.completion(&id).await["result"], "after");
}

#[tokio::test]
async fn several_records_in_one_frame() {
    let server = TestServer::default().await;
    let mut client = server.json_client().await;
    let mut frame = String::new();
    for i in 0..5 {
        frame.push_str(&format!(
            "{{\"type\":1,\"invocationId\":\"m{i}\",\"target\":\"Add\",\"arguments\":[{i},100]}}{RS}"
        ));
    }
    frame.push_str(&format!("{{\"type\":6}}{RS}"));
    client.send_text(&frame).await;
    for i in 0..5 {
        assert_eq!(client.completion(&format!("m{i}")).await["result"], 100 + i);
    }
}

#[tokio::test]
async fn one_record_split_across_two_frames() {
    let server = TestServer::default().await;
    let mut client = server.json_client().await;
    let record = format!(
        "{{\"type\":1,\"invocationId\":\"s\",\"target\":\"Echo\",\"arguments\":[\"split\"]}}{RS}"
    );
    let (a, b) = record.split_at(20);
    client.send_text(a).await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    client.send_text(b).await;
    assert_eq!(client.completion("s").await["result"], "split");
}

#[tokio::test]
async fn client_close_message_ends_quietly() {
    let server = TestServer::default().await;
    let mut client = server.json_client().await;
    client.send_json(json!({ "type": 7 })).await;
    client.closed().await;
    assert_eq!(server.wait_for_disconnects(1).await, vec![None]);
    // A socket closed without a word ends the same way.
    let client = server.json_client().await;
    client.close().await;
    assert_eq!(server.wait_for_disconnects(2).await, vec![None, None]);
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(server.disconnects.lock().len(), 2, "a session closed twice");
    server.assert_healthy().await;
}

/// Encodes `[1, {}, id, target, [a, b], []]`, an Invocation, by hand.
fn msgpack_add(id: &str, a: u8, b: u8) -> Vec<u8> {
    assert!(id.len() < 32 && a < 128 && b < 128);
    let mut body = vec![0x96, 0x01, 0x80, 0xa0 | id.len() as u8];
    body.extend_from_slice(id.as_bytes());
    body.extend_from_slice(&[0xa3, b'A', b'd', b'd', 0x92, a, b, 0x90]);
    let mut framed = vec![body.len() as u8];
    framed.extend_from_slice(&body);
    framed
}

#[tokio::test]
async fn messagepack_invocation_round_trip() {
    let server = TestServer::default().await;
    let mut client = server.connect("").await;
    client.handshake_ok("messagepack").await;
    // Two invocations and a Ping ([6]) in one binary frame.
    let mut frame = msgpack_add("7", 2, 3);
    frame.extend_from_slice(&msgpack_add("8", 40, 2));
    frame.extend_from_slice(&[0x02, 0x91, 0x06]);
    client.send_binary(&frame).await;

    let mut results = Vec::new();
    while results.len() < 2 {
        let bytes = match client.frame().await {
            Frame::Binary(bytes) => bytes,
            other => panic!("expected a binary frame, got {other:?}"),
        };
        let mut buf = bytes::BytesMut::from(&bytes[..]);
        while !buf.is_empty() {
            // Each message starts with its length as a varint (one byte here).
            let len = buf[0] as usize;
            assert!(
                len < 128 && buf.len() > len,
                "bad length prefix in {bytes:?}"
            );
            match Protocol::MessagePack
                .parse_message(&mut buf, 1 << 20)
                .unwrap()
            {
                Some(HubMessage::Completion(completion)) => {
                    let Outcome::Value(value) = completion.outcome else {
                        panic!("expected a result");
                    };
                    results.push((
                        completion.invocation_id,
                        value.deserialize::<i64>().unwrap(),
                    ));
                }
                other => panic!("expected a completion, got {other:?}"),
            }
        }
    }
    assert_eq!(results, vec![("7".to_owned(), 5), ("8".to_owned(), 42)]);
}

#[tokio::test]
async fn messagepack_garbage_gets_a_close_error() {
    let server = TestServer::default().await;
    let mut client = server.connect("").await;
    client.handshake_ok("messagepack").await;
    client.send_binary(&[0x02, 0xc1, 0xc1]).await;
    let close = loop {
        match client.message().await {
            Some(HubMessage::Close { error, .. }) => break error,
            Some(HubMessage::Ping) => {}
            other => panic!("expected a Close message, got {other:?}"),
        }
    };
    assert!(
        close
            .unwrap()
            .starts_with("Connection closed with an error")
    );
    assert!(client.message().await.is_none());
    server.assert_healthy().await;
}

#[tokio::test]
async fn websocket_message_over_the_frame_limit_closes() {
    // With a 1 KiB message limit, one WebSocket message may carry 64 KiB.
    let server = TestServer::start(small_limits()).await;
    let mut client = server.json_client().await;
    client
        .send_text(&format!("{}{RS}", " ".repeat(100_000)))
        .await;
    let close = client.close_message().await;
    let error = close["error"].as_str().unwrap();
    assert!(error.contains("too long"), "{error}");
    server.assert_healthy().await;
}

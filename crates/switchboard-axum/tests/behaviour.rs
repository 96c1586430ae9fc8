//! Timeouts, keep-alive, back-pressure, streams and client results.

#![allow(clippy::unwrap_used, missing_docs)]

mod common;

use std::time::Duration;

use common::{RS, TestServer, WAIT};
use futures::SinkExt;
use serde_json::{Value, json};
use switchboard_axum::SignalROptions;
use tokio_tungstenite::tungstenite::Message;

#[tokio::test]
async fn silent_client_is_closed_after_the_client_timeout() {
    let server =
        TestServer::start(SignalROptions::default().client_timeout(Duration::from_millis(300)))
            .await;
    let mut client = server.json_client().await;
    let close = client.close_message().await;
    assert_eq!(
        close["error"],
        "Server timeout elapsed without receiving a message from the client."
    );
    assert_eq!(close["allowReconnect"], json!(true));
    server.assert_healthy().await;
}

#[tokio::test]
async fn any_frame_keeps_a_client_alive() {
    let server =
        TestServer::start(SignalROptions::default().client_timeout(Duration::from_millis(300)))
            .await;
    let mut client = server.json_client().await;
    // Well past the timeout, with a Ping record, a WebSocket ping and a
    // fragment of a record in turn.
    for i in 0..12 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        match i % 3 {
            0 => client.send_json(json!({ "type": 6 })).await,
            1 => client
                .ws
                .send(Message::Ping(Vec::new().into()))
                .await
                .unwrap(),
            _ => client.send_text(" ").await,
        }
    }
    let id = client.invoke("Echo", json!(["alive"])).await;
    assert_eq!(client.completion(&id).await["result"], "alive");
}

#[tokio::test]
async fn keep_alive_ping_arrives() {
    let server = TestServer::start(
        SignalROptions::default().keep_alive_interval(Duration::from_millis(100)),
    )
    .await;
    let mut client = server.json_client().await;
    for _ in 0..2 {
        let started = std::time::Instant::now();
        assert_eq!(client.record().await, Some(json!({ "type": 6 })));
        assert!(started.elapsed() < WAIT);
    }
}

#[tokio::test]
async fn invocation_flood_does_not_disturb_other_clients() {
    let server = TestServer::start(SignalROptions::default().queue_capacity(64)).await;
    let mut flooder = server.json_client().await;
    let flood = tokio::spawn(async move {
        // 10 000 invocations in batches of 100 records, never reading.
        for batch in 0..100 {
            let mut frame = String::new();
            for i in 0..100 {
                frame.push_str(&format!(
                    "{{\"type\":1,\"invocationId\":\"f{batch}-{i}\",\"target\":\"Echo\",\"arguments\":[\"{}\"]}}{RS}",
                    "f".repeat(200)
                ));
            }
            let sent = tokio::time::timeout(WAIT, flooder.ws.send(Message::text(frame))).await;
            if !matches!(sent, Ok(Ok(()))) {
                // The server closed it (slow consumer) or stopped reading.
                break;
            }
        }
        flooder
    });

    let mut other = server.json_client().await;
    for i in 0..20 {
        let id = other.invoke("Add", json!([i, 1])).await;
        assert_eq!(other.completion(&id).await["result"], i + 1);
    }
    let flooder = tokio::time::timeout(WAIT * 2, flood)
        .await
        .unwrap()
        .unwrap();
    drop(flooder);
    server.assert_healthy().await;
}

#[tokio::test]
async fn slow_consumer_is_closed_with_a_reason() {
    let server = TestServer::start(
        SignalROptions::default()
            .queue_capacity(4)
            .client_timeout(Duration::from_secs(20)),
    )
    .await;
    let mut slow = server.json_client().await;
    // 500 messages of 64 KiB: far more than the socket buffers and the queue.
    slow.send_json(json!({ "type": 1, "target": "Flood", "arguments": [500, 65536] }))
        .await;
    // Not reading for a while lets the queue overflow.
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let mut items = 0;
    let close = loop {
        let record = slow.record().await.expect("closed without a Close message");
        match record["type"].as_u64() {
            Some(1) => items += 1,
            Some(7) => break record,
            _ => {}
        }
    };
    assert!(
        items < 500,
        "every message arrived: the queue never overflowed"
    );
    let error = close["error"].as_str().unwrap();
    assert!(error.contains("not reading"), "{error}");
    assert!(slow.record().await.is_none());
    let disconnects = server.wait_for_disconnects(1).await;
    assert!(disconnects[0].as_deref().unwrap().contains("not reading"));
    server.assert_healthy().await;
}

#[tokio::test]
async fn stream_yields_items_then_completion() {
    let server = TestServer::default().await;
    let mut client = server.json_client().await;
    client
        .send_json(json!({ "type": 4, "invocationId": "c", "target": "Count", "arguments": [3] }))
        .await;
    for expected in 1..=3 {
        let item = client.record().await.unwrap();
        assert_eq!(
            item,
            json!({ "type": 2, "invocationId": "c", "item": expected })
        );
    }
    let completion = client.completion("c").await;
    assert!(completion.get("error").is_none() && completion.get("result").is_none());
}

#[tokio::test]
async fn cancel_invocation_stops_a_stream() {
    let server = TestServer::default().await;
    let mut client = server.json_client().await;
    client
        .send_json(json!({ "type": 4, "invocationId": "f", "target": "Forever", "arguments": [] }))
        .await;
    for _ in 0..2 {
        assert_eq!(client.record().await.unwrap()["type"], 2);
    }
    client
        .send_json(json!({ "type": 5, "invocationId": "f" }))
        .await;
    // Items already on their way may arrive, then the completion.
    loop {
        let record = client.record().await.unwrap();
        if record["type"] == 3 {
            assert_eq!(record["invocationId"], "f");
            break;
        }
        assert_eq!(record["type"], 2, "{record}");
    }
    // Nothing more of the stream.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let id = client.invoke("Echo", json!(["done"])).await;
    assert_eq!(client.completion(&id).await["result"], "done");
}

#[tokio::test]
async fn client_result_round_trip() {
    let server = TestServer::default().await;
    let mut client = server.json_client().await;
    let call = client.invoke("Ask", json!(["what is 6*7?"])).await;
    let ask: Value = client.record().await.unwrap();
    assert_eq!(ask["type"], 1);
    assert_eq!(ask["target"], "ask");
    assert_eq!(ask["arguments"], json!(["what is 6*7?"]));
    let ask_id = ask["invocationId"].as_str().unwrap().to_owned();
    client
        .send_json(json!({ "type": 3, "invocationId": ask_id, "result": "42" }))
        .await;
    assert_eq!(client.completion(&call).await["result"], "42");

    // A client error reaches the caller as an error.
    let call = client.invoke("Ask", json!(["and now?"])).await;
    let ask = client.record().await.unwrap();
    client
        .send_json(json!({ "type": 3, "invocationId": ask["invocationId"], "error": "no idea" }))
        .await;
    let completion = client.completion(&call).await;
    assert!(
        completion["error"].as_str().unwrap().contains("no idea"),
        "{completion}"
    );
}

#[tokio::test]
async fn stray_completion_is_ignored() {
    let server = TestServer::default().await;
    let mut client = server.json_client().await;
    // A stray completion is refused by the manager but does not end the
    // connection.
    client
        .send_json(json!({ "type": 3, "invocationId": "nobody", "result": 1 }))
        .await;
    let id = client.invoke("Echo", json!(["fine"])).await;
    assert_eq!(client.completion(&id).await["result"], "fine");
}

#[tokio::test]
async fn an_answer_is_read_while_an_invocation_waits_for_its_slot() {
    let server = TestServer::default().await;
    let mut client = server.json_client().await;
    // `Ask` holds the connection's only invocation slot until this client
    // answers; `Add`, sent before the answer, waits for the slot.
    let ask_call = client.invoke("Ask", json!(["ready?"])).await;
    let add_call = client.invoke("Add", json!([1, 2])).await;
    let ask = client.record().await.unwrap();
    assert_eq!(ask["target"], "ask", "{ask}");
    client
        .send_json(json!({ "type": 3, "invocationId": ask["invocationId"], "result": "yes" }))
        .await;
    assert_eq!(client.completion(&ask_call).await["result"], "yes");
    assert_eq!(client.completion(&add_call).await["result"], 3);
}

#[tokio::test]
async fn frames_sent_before_a_server_close_arrive_before_the_close_message() {
    let server = TestServer::default().await;
    for round in 0..100 {
        let mut client = server.json_client().await;
        client
            .send_json(
                json!({ "type": 1, "target": "Kick", "arguments": [format!("bye {round}")] }),
            )
            .await;
        let bye = client.record().await.expect("the message before the close");
        assert_eq!(bye["target"], "bye", "round {round}: {bye}");
        assert_eq!(bye["arguments"], json!([format!("bye {round}")]));
        let close = client.close_message().await;
        assert_eq!(close["error"], "kicked", "round {round}: {close}");
    }
    server.assert_healthy().await;
}

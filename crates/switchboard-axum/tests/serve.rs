//! `Server`: the header read timeout, the connection caps, and the peer
//! address; with real sockets.

#![allow(clippy::unwrap_used, missing_docs)]

mod common;

use std::time::Duration;

use common::{TestServer, WAIT};
use serde_json::json;
use switchboard_axum::{ServeOptions, SignalROptions};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Reads until the server closes the socket; what it sent.
async fn read_until_closed(stream: &mut TcpStream) -> String {
    let mut response = Vec::new();
    tokio::time::timeout(WAIT, stream.read_to_end(&mut response))
        .await
        .expect("the server kept the connection open")
        .unwrap_or_default();
    String::from_utf8_lossy(&response).into_owned()
}

/// Waits until `condition` holds.
async fn until(what: &str, mut condition: impl AsyncFnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !condition().await {
        assert!(tokio::time::Instant::now() < deadline, "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_half_sent_request_and_a_silent_connection_are_closed_after_the_header_timeout() {
    let serve = ServeOptions::default().header_read_timeout(Duration::from_millis(300));
    let (server, _) = TestServer::serve(SignalROptions::default(), serve).await;
    let mut half = TcpStream::connect(server.addr).await.unwrap();
    half.write_all(b"GET /hub HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let mut silent = TcpStream::connect(server.addr).await.unwrap();
    read_until_closed(&mut half).await;
    read_until_closed(&mut silent).await;
    // A client that sends its request in time is served, and its upgraded
    // socket outlives the header timeout.
    let mut client = server.json_client().await;
    tokio::time::sleep(Duration::from_millis(600)).await;
    let id = client.invoke("Add", json!([2, 3])).await;
    assert_eq!(client.completion(&id).await["result"], 5);
}

#[tokio::test]
async fn past_the_connection_cap_new_clients_get_503_and_open_ones_go_on() {
    let serve = ServeOptions::default().max_connections(2);
    let (server, stats) = TestServer::serve(SignalROptions::default(), serve).await;
    let mut first = server.json_client().await;
    let second = server.json_client().await;

    let mut refused = TcpStream::connect(server.addr).await.unwrap();
    let answer = read_until_closed(&mut refused).await;
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    assert_eq!(stats.get().refused_connections, 1);

    let id = first.invoke("Add", json!([1, 1])).await;
    assert_eq!(first.completion(&id).await["result"], 2);
    // A closed connection frees its place.
    second.close().await;
    until("a place to free up", async || {
        let mut probe = TcpStream::connect(server.addr).await.unwrap();
        probe
            .write_all(b"POST /hub/negotiate HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        read_until_closed(&mut probe).await.starts_with("HTTP/1.1 200")
    })
    .await;
    assert!(stats.get().accepted >= 3);
}

#[tokio::test]
async fn past_the_upgrade_cap_websockets_get_503_and_other_requests_are_served() {
    let serve = ServeOptions::default().max_upgraded_connections(1);
    let (server, stats) = TestServer::serve(SignalROptions::default(), serve).await;
    let first = server.json_client().await;
    assert_eq!(server.try_connect("").await.err(), Some(503));
    assert_eq!(stats.get().refused_upgrades, 1);
    let (status, _) = server.http("POST", "/hub/negotiate").await;
    assert_eq!(status, 200);
    first.close().await;
    until("the upgraded place to free up", async || {
        server.try_connect("").await.is_ok()
    })
    .await;
}

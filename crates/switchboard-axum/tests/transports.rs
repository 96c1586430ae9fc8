//! Server-Sent Events and long polling, spoken by hand: the clear status
//! code for every request a transport must refuse, and connections whose
//! clients vanish are closed and forgotten.

#![allow(clippy::unwrap_used, missing_docs)]

mod common;

use std::time::Duration;

use common::TestServer;
use switchboard_axum::SignalROptions;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const HANDSHAKE: &[u8] = b"{\"protocol\":\"json\",\"version\":1}\x1e";
const EVENT_STREAM: (&str, &str) = ("Accept", "text/event-stream");

/// A negotiated connection token.
async fn token(server: &TestServer) -> String {
    let body = server.negotiate("?negotiateVersion=1").await;
    body["connectionToken"].as_str().unwrap().to_owned()
}

/// Opens an event stream for `token` and reads until its headers and
/// `want` have arrived; returns the socket (to keep or drop) and what was
/// read.
async fn event_stream(server: &TestServer, token: &str, want: &str) -> (TcpStream, String) {
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    let request = format!(
        "GET /hub?id={token} HTTP/1.1\r\nHost: {}\r\nAccept: text/event-stream\r\n\r\n",
        server.addr
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let text = read_until(&mut stream, want).await;
    (stream, text)
}

/// Reads from `stream` until `want` has arrived (or panics after 10 s).
async fn read_until(stream: &mut TcpStream, want: &str) -> String {
    let mut seen = Vec::new();
    let mut chunk = [0; 4096];
    tokio::time::timeout(Duration::from_secs(10), async {
        while !String::from_utf8_lossy(&seen).contains(want) {
            let n = stream.read(&mut chunk).await.unwrap();
            assert!(
                n > 0,
                "the stream ended: {}",
                String::from_utf8_lossy(&seen)
            );
            seen.extend_from_slice(&chunk[..n]);
        }
    })
    .await
    .unwrap_or_else(|_| panic!("no {want:?} in {:?}", String::from_utf8_lossy(&seen)));
    String::from_utf8_lossy(&seen).into_owned()
}

/// A long-polling connection past its handshake; returns its token.
async fn token_of_open_connection(server: &TestServer) -> String {
    let token = token(server).await;
    let path = format!("/hub?id={token}");
    assert_eq!(server.http("GET", &path).await.0, 200);
    assert_eq!(server.http_with("POST", &path, &[], HANDSHAKE).await.0, 200);
    assert_eq!(server.http("GET", &path).await.0, 200);
    token
}

/// Waits until the hub's manager holds `n` connections.
async fn wait_for_connections(server: &TestServer, n: usize) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let now = server.hub.manager().stats().connections;
        if now == n {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{now} connections, expected {n}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_polling_refuses_bad_requests_with_clear_statuses() {
    let server = TestServer::default().await;
    // No id, an unknown id.
    assert_eq!(server.http("GET", "/hub").await.0, 400);
    assert_eq!(server.http("POST", "/hub").await.0, 400);
    assert_eq!(server.http("GET", "/hub?id=nope").await.0, 404);
    assert_eq!(server.http("POST", "/hub?id=nope").await.0, 404);
    assert_eq!(server.http("DELETE", "/hub?id=nope").await.0, 404);

    // A connection: the first poll returns at once, the handshake goes in
    // a POST, and its answer comes in the next poll.
    let token = token(&server).await;
    assert_eq!(
        server.http("GET", &format!("/hub?id={token}")).await,
        (200, String::new())
    );
    let path = format!("/hub?id={token}");
    assert_eq!(server.http_with("POST", &path, &[], HANDSHAKE).await.0, 200);
    let (status, body) = server.http("GET", &path).await;
    assert_eq!((status, body.as_str()), (200, "{}\x1e"));
    wait_for_connections(&server, 1).await;

    // The same id asked for with another transport.
    assert_eq!(
        server.http_with("GET", &path, &[EVENT_STREAM], b"").await.0,
        400
    );
    assert_eq!(
        server.try_connect(&format!("?id={token}")).await.err(),
        Some(400)
    );

    // A POST over the size limit is refused on its Content-Length, and
    // ends the connection (the client treats any answer but 409 so).
    let other = token_of_open_connection(&server).await;
    let other_path = format!("/hub?id={other}");
    let mut big = TcpStream::connect(server.addr).await.unwrap();
    let head = format!(
        "POST {other_path} HTTP/1.1\r\nHost: {}\r\nContent-Length: 100000000\r\nConnection: close\r\n\r\n",
        server.addr
    );
    big.write_all(head.as_bytes()).await.unwrap();
    let answer = read_until(&mut big, "\r\n\r\n").await;
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert_eq!(
        server
            .http_with("POST", &other_path, &[], b"{\"type\":6}\x1e")
            .await
            .0,
        404
    );

    // A second POST while one is being taken in: 409.
    let mut slow = TcpStream::connect(server.addr).await.unwrap();
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: {}\r\nContent-Length: 100\r\n\r\n{{",
        server.addr
    );
    slow.write_all(head.as_bytes()).await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (status, _) = server
            .http_with("POST", &path, &[], b"{\"type\":6}\x1e")
            .await;
        if status == 409 {
            break;
        }
        // The slow POST may not have reached the server yet.
        assert_eq!(status, 200);
        assert!(tokio::time::Instant::now() < deadline, "no 409");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    drop(slow);

    // DELETE ends it; a later POST or poll finds nothing.
    assert_eq!(server.http("DELETE", &path).await.0, 202);
    let (status, _) = server
        .http_with("POST", &path, &[], b"{\"type\":6}\x1e")
        .await;
    assert!(status == 404, "POST after DELETE: {status}");
    wait_for_connections(&server, 0).await;
    assert_eq!(server.http("GET", &path).await.0, 204, "poll after DELETE");
    server.assert_healthy().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_newer_poll_replaces_the_waiting_one() {
    let server = TestServer::default().await;
    let token = token(&server).await;
    let path = format!("/hub?id={token}");
    assert_eq!(server.http("GET", &path).await.0, 200);
    assert_eq!(server.http_with("POST", &path, &[], HANDSHAKE).await.0, 200);
    assert_eq!(server.http("GET", &path).await, (200, "{}\x1e".to_owned()));
    // A poll that waits (nothing to send), then a second one: one of the
    // two replaces the other, which ends with 204.
    let mut first = tokio::spawn({
        let addr = server.addr;
        let path = path.clone();
        async move { raw_get(addr, &path).await }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut second = tokio::spawn({
        let addr = server.addr;
        let path = path.clone();
        async move { raw_get(addr, &path).await }
    });
    // Whichever arrived first is replaced: 204, while the other waits.
    let (replaced, waiting) = tokio::select! {
        status = &mut first => (status.unwrap(), second),
        status = &mut second => (status.unwrap(), first),
    };
    assert_eq!(replaced, 204, "the replaced poll");
    // The waiting one is answered by the server's next frame: the
    // completion of this invocation.
    let invoke = b"{\"type\":1,\"invocationId\":\"1\",\"target\":\"Add\",\"arguments\":[1,2]}\x1e";
    assert_eq!(server.http_with("POST", &path, &[], invoke).await.0, 200);
    assert_eq!(waiting.await.unwrap(), 200);
}

/// A GET whose status is all that matters.
async fn raw_get(addr: std::net::SocketAddr, path: &str) -> u16 {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    tokio::time::timeout(Duration::from_secs(30), stream.read_to_end(&mut response))
        .await
        .unwrap()
        .unwrap();
    String::from_utf8_lossy(&response)[9..12].parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_polls_once_then_vanishes_is_closed_and_forgotten() {
    // Long enough for the test's own requests on a loaded machine; the
    // session must end within it (plus the grace) once they stop.
    let client_timeout = Duration::from_secs(3);
    let server = TestServer::start(
        SignalROptions::default()
            .keep_alive_interval(Duration::from_millis(200))
            .client_timeout(client_timeout)
            .long_poll_timeout(Duration::from_millis(500)),
    )
    .await;
    let token = token(&server).await;
    let path = format!("/hub?id={token}");
    assert_eq!(server.http("GET", &path).await.0, 200);
    assert_eq!(server.http_with("POST", &path, &[], HANDSHAKE).await.0, 200);
    assert_eq!(server.http("GET", &path).await.0, 200);
    wait_for_connections(&server, 1).await;
    // Nothing more from the client: no poll, no message. The server gives
    // up after the client timeout, and the Close message waits its grace
    // for a poll that never comes.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while server.disconnects.lock().is_empty() {
        assert!(tokio::time::Instant::now() < deadline, "never closed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let closed = server.disconnects.lock().clone();
    assert!(closed[0].is_some(), "closed with a reason: {closed:?}");
    wait_for_connections(&server, 0).await;
    // Its client would be told the connection ended, then it is forgotten.
    assert_eq!(server.http("GET", &path).await.0, 204);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while server.http("GET", &path).await.0 != 404 {
        assert!(tokio::time::Instant::now() < deadline, "never forgotten");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_sent_events_carry_frames_and_end_with_their_stream() {
    let server = TestServer::default().await;
    assert_eq!(
        server
            .http_with("GET", "/hub", &[EVENT_STREAM], b"")
            .await
            .0,
        400
    );
    assert_eq!(
        server
            .http_with("GET", "/hub?id=nope", &[EVENT_STREAM], b"")
            .await
            .0,
        404
    );
    let token = token(&server).await;
    let path = format!("/hub?id={token}");
    let (mut stream, head) = event_stream(&server, &token, "\r\n\r\n").await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: text/event-stream"),
        "{head}"
    );
    assert!(
        head.to_ascii_lowercase().contains("x-accel-buffering: no"),
        "{head}"
    );
    assert_eq!(server.http_with("POST", &path, &[], HANDSHAKE).await.0, 200);
    read_until(&mut stream, "data: {}\x1e\r\n\r\n").await;
    // A second stream, a poll on this id: refused.
    assert_eq!(
        server.http_with("GET", &path, &[EVENT_STREAM], b"").await.0,
        409
    );
    assert_eq!(server.http("GET", &path).await.0, 400);
    // An invocation's completion comes as an event.
    let invoke = b"{\"type\":1,\"invocationId\":\"7\",\"target\":\"Add\",\"arguments\":[40,2]}\x1e";
    assert_eq!(server.http_with("POST", &path, &[], invoke).await.0, 200);
    read_until(&mut stream, "\"result\":42").await;
    wait_for_connections(&server, 1).await;
    // The client drops the stream: the connection ends.
    drop(stream);
    server.wait_for_disconnects(1).await;
    wait_for_connections(&server, 0).await;
    assert_eq!(server.http_with("POST", &path, &[], invoke).await.0, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_binary_protocol_over_server_sent_events_is_refused() {
    let server = TestServer::default().await;
    let token = token(&server).await;
    let path = format!("/hub?id={token}");
    let (mut stream, _) = event_stream(&server, &token, "\r\n\r\n").await;
    let handshake = b"{\"protocol\":\"messagepack\",\"version\":1}\x1e";
    assert_eq!(server.http_with("POST", &path, &[], handshake).await.0, 200);
    // The answer, then the end of the stream (the chunked body's last
    // chunk), and the connection with it.
    let text = read_until(&mut stream, "\r\n0\r\n\r\n").await;
    assert!(text.contains("carries text only"), "{text}");
    assert!(text.contains("\"error\""), "{text}");
    assert_eq!(server.http_with("POST", &path, &[], HANDSHAKE).await.0, 404);
    assert_eq!(server.hub.manager().stats().connections, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn switched_off_transports_are_neither_offered_nor_served() {
    let server = TestServer::start(
        SignalROptions::default()
            .websockets(false)
            .server_sent_events(false),
    )
    .await;
    let body = server.negotiate("?negotiateVersion=1").await;
    assert_eq!(
        body["availableTransports"],
        serde_json::json!([{ "transport": "LongPolling", "transferFormats": ["Text", "Binary"] }])
    );
    let token = body["connectionToken"].as_str().unwrap().to_owned();
    assert_eq!(
        server.try_connect(&format!("?id={token}")).await.err(),
        Some(400)
    );
    let path = format!("/hub?id={token}");
    assert_eq!(
        server.http_with("GET", &path, &[EVENT_STREAM], b"").await.0,
        400
    );
    assert_eq!(server.http("GET", &path).await.0, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_request_of_a_connection_must_come_from_its_user() {
    let server =
        TestServer::start(SignalROptions::default().authenticator(common::query_user)).await;
    let body = server.negotiate("?user=alice&negotiateVersion=1").await;
    let token = body["connectionToken"].as_str().unwrap().to_owned();
    // Opening it as another user, or as nobody: refused, the token kept.
    assert_eq!(
        server
            .http("GET", &format!("/hub?user=bob&id={token}"))
            .await
            .0,
        403
    );
    assert_eq!(server.http("GET", &format!("/hub?id={token}")).await.0, 403);
    let alice = format!("/hub?user=alice&id={token}");
    assert_eq!(server.http("GET", &alice).await.0, 200);
    // Once open, the same for every poll, POST and DELETE.
    for path in [
        format!("/hub?user=bob&id={token}"),
        format!("/hub?id={token}"),
    ] {
        assert_eq!(server.http("GET", &path).await.0, 403);
        assert_eq!(server.http_with("POST", &path, &[], HANDSHAKE).await.0, 403);
        assert_eq!(server.http("DELETE", &path).await.0, 403);
    }
    // Alice's own requests work.
    assert_eq!(
        server.http_with("POST", &alice, &[], HANDSHAKE).await.0,
        200
    );
    assert_eq!(server.http("GET", &alice).await, (200, "{}\x1e".to_owned()));
    // An authenticator's refusal is 401 on every request of the transports.
    assert_eq!(
        server
            .http("GET", &format!("/hub?user=mallory&id={token}"))
            .await
            .0,
        401
    );
    assert_eq!(
        server
            .http_with(
                "POST",
                &format!("/hub?user=mallory&id={token}"),
                &[],
                HANDSHAKE
            )
            .await
            .0,
        401
    );
}

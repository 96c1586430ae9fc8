//! Server-Sent Events and long polling, spoken by hand: the clear status
//! code for every request a transport must refuse, and connections whose
//! clients vanish are closed and forgotten.

#![allow(clippy::unwrap_used, missing_docs)]

mod common;

use std::time::Duration;

use common::{RS, TestServer};
use serde_json::{Value, json};
use switchboard_axum::SignalROptions;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

const HANDSHAKE: &[u8] = b"{\"protocol\":\"json\",\"version\":1}\x1e";
const PING: &[u8] = b"{\"type\":6}\x1e";
const EVENT_STREAM: (&str, &str) = ("Accept", "text/event-stream");

/// How much later than its timers a loaded machine may let the server act.
const SLACK: Duration = Duration::from_secs(10);

/// A keep-alive interval no test outlasts: no Ping comes unasked.
const NO_PINGS: Duration = Duration::from_secs(3600);

/// A negotiated connection: its public id and its token.
async fn negotiated(server: &TestServer) -> (String, String) {
    let body = server.negotiate("?negotiateVersion=1").await;
    let id = body["connectionId"].as_str().unwrap().to_owned();
    (id, body["connectionToken"].as_str().unwrap().to_owned())
}

/// A negotiated connection token.
async fn token(server: &TestServer) -> String {
    negotiated(server).await.1
}

/// Negotiates; returns the transports offered and the connection token.
async fn offered(server: &TestServer) -> (Value, String) {
    let body = server.negotiate("?negotiateVersion=1").await;
    let token = body["connectionToken"].as_str().unwrap().to_owned();
    (body["availableTransports"].clone(), token)
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

/// The value of header `name` in the response head `head`.
fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.split("\r\n")
        .skip(1)
        .take_while(|line| !line.is_empty())
        .find_map(|line| {
            let (key, value) = line.split_once(':')?;
            key.trim().eq_ignore_ascii_case(name).then(|| value.trim())
        })
}

/// The two HTTP transports.
#[derive(Debug, Clone, Copy)]
enum HttpTransport {
    LongPolling,
    ServerSentEvents,
}

/// A connection of an HTTP transport, past its handshake.
struct Open {
    /// Its public id.
    id: String,
    /// Where its requests go: `/hub?id={token}`.
    path: String,
    /// The event stream of a Server-Sent Events connection, held open: the
    /// connection ends with it.
    stream: Option<TcpStream>,
}

impl HttpTransport {
    /// Opens a connection and completes its handshake: the answer came in
    /// a poll, or as the event stream's first event.
    async fn open(self, server: &TestServer) -> Open {
        let (id, token) = negotiated(server).await;
        let path = format!("/hub?id={token}");
        let stream = match self {
            HttpTransport::LongPolling => {
                assert_eq!(server.http("GET", &path).await, (200, String::new()));
                assert_eq!(server.http_with("POST", &path, &[], HANDSHAKE).await.0, 200);
                assert_eq!(server.http("GET", &path).await, (200, "{}\x1e".to_owned()));
                None
            }
            HttpTransport::ServerSentEvents => {
                let (mut stream, head) = event_stream(server, &token, "\r\n\r\n").await;
                assert!(head.starts_with("HTTP/1.1 200"), "{head}");
                assert_eq!(server.http_with("POST", &path, &[], HANDSHAKE).await.0, 200);
                read_until(&mut stream, "data: {}\x1e\r\n\r\n").await;
                Some(stream)
            }
        };
        Open { id, path, stream }
    }
}

/// Refuses what no connection of `transport` may take, each with its
/// status: a POST over the size limit (413, on a connection of its own,
/// which it ends), a second POST to `path` while one is being taken in
/// (409), and a POST to `path` after the DELETE that ends it (404).
async fn refuses_bad_posts(server: &TestServer, transport: HttpTransport, path: &str) {
    // A POST over the size limit is refused on its Content-Length, and
    // ends the connection (the client treats any answer but 409 so).
    let other = transport.open(server).await;
    let mut big = TcpStream::connect(server.addr).await.unwrap();
    let head = format!(
        "POST {} HTTP/1.1\r\nHost: {}\r\nContent-Length: 100000000\r\nConnection: close\r\n\r\n",
        other.path, server.addr
    );
    big.write_all(head.as_bytes()).await.unwrap();
    let answer = read_until(&mut big, "\r\n\r\n").await;
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert_eq!(
        server.http_with("POST", &other.path, &[], PING).await.0,
        404
    );

    // A second POST while one is being taken in: 409.
    let mut slow = slow_post(server, path).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (status, _) = server.http_with("POST", path, &[], PING).await;
        if status == 409 {
            break;
        }
        // The slow POST may not have reached the server yet; or it came
        // while this one was taken in, and was refused: then it is sent
        // again.
        assert_eq!(status, 200);
        let mut byte = [0];
        if slow.try_read(&mut byte).is_ok() {
            slow = slow_post(server, path).await;
        }
        assert!(Instant::now() < deadline, "no 409");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The slow POST, once whole, is taken: the connection is still open.
    slow.write_all(&PING[1..]).await.unwrap();
    let answer = read_until(&mut slow, "\r\n\r\n").await;
    assert!(
        answer.starts_with("HTTP/1.1 200"),
        "the slow POST: {answer}"
    );

    // DELETE ends it; a later POST finds nothing.
    assert_eq!(server.http("DELETE", path).await.0, 202);
    let (status, _) = server.http_with("POST", path, &[], PING).await;
    assert_eq!(status, 404, "POST after DELETE");
}

/// A POST of a Ping to `path` that sends the first byte of its body only,
/// and so is being taken in until the rest comes.
async fn slow_post(server: &TestServer, path: &str) -> TcpStream {
    let mut slow = TcpStream::connect(server.addr).await.unwrap();
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: {}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        server.addr,
        PING.len()
    );
    slow.write_all(head.as_bytes()).await.unwrap();
    slow.write_all(&PING[..1]).await.unwrap();
    slow
}

/// Waits until the hub's manager holds `n` connections.
async fn wait_for_connections(server: &TestServer, n: usize) {
    connections_by(server, n, Instant::now() + Duration::from_secs(15)).await;
}

/// Waits until the hub's manager holds `n` connections; fails at
/// `deadline`.
async fn connections_by(server: &TestServer, n: usize, deadline: Instant) {
    loop {
        let now = server.hub.manager().stats().connections;
        if now == n {
            return;
        }
        assert!(Instant::now() < deadline, "{now} connections, expected {n}");
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

    // 413, 409, and 404 once DELETE has ended it; a later poll finds
    // nothing either.
    refuses_bad_posts(&server, HttpTransport::LongPolling, &path).await;
    wait_for_connections(&server, 0).await;
    assert_eq!(server.http("GET", &path).await.0, 204, "poll after DELETE");
    server.assert_healthy().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_sent_events_refuse_bad_posts_with_clear_statuses() {
    let server = TestServer::default().await;
    let mut open = HttpTransport::ServerSentEvents.open(&server).await;
    wait_for_connections(&server, 1).await;
    refuses_bad_posts(&server, HttpTransport::ServerSentEvents, &open.path).await;
    // The DELETE ended the event stream too (the chunked body's last
    // chunk; what came before it has been read), and the connection with
    // it.
    read_until(open.stream.as_mut().unwrap(), "0\r\n\r\n").await;
    wait_for_connections(&server, 0).await;
    server.assert_healthy().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poll_with_nothing_to_send_is_answered_empty_after_the_poll_timeout() {
    let poll_timeout = Duration::from_millis(300);
    let server = TestServer::start(
        SignalROptions::default()
            .long_poll_timeout(poll_timeout)
            .keep_alive_interval(NO_PINGS),
    )
    .await;
    let open = HttpTransport::LongPolling.open(&server).await;
    let asked = Instant::now();
    let (status, body) = server.http("GET", &open.path).await;
    let waited = asked.elapsed();
    assert_eq!((status, body.as_str()), (200, ""), "the idle poll");
    assert!(waited >= poll_timeout, "answered after {waited:?}");
    // The connection lives on: an invocation's completion comes in one
    // of the next polls.
    let invoke = b"{\"type\":1,\"invocationId\":\"1\",\"target\":\"Add\",\"arguments\":[1,2]}\x1e";
    assert_eq!(
        server.http_with("POST", &open.path, &[], invoke).await.0,
        200
    );
    let deadline = Instant::now() + SLACK;
    loop {
        let (status, body) = server.http("GET", &open.path).await;
        assert_eq!(status, 200, "a poll: {body:?}");
        if !body.is_empty() {
            assert!(body.contains("\"result\":3"), "{body:?}");
            break;
        }
        assert!(Instant::now() < deadline, "no completion");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_poll_takes_every_frame_queued_since_the_last() {
    let server = TestServer::start(SignalROptions::default().keep_alive_interval(NO_PINGS)).await;
    let open = HttpTransport::LongPolling.open(&server).await;
    // No poll is waiting: the messages wait in the connection's queue.
    let client = server.hub.context().client(open.id.as_str());
    for i in 0..5 {
        client.send("queued", (i,)).await.unwrap();
    }
    let (status, body) = server.http("GET", &open.path).await;
    assert_eq!(status, 200, "{body:?}");
    let records: Vec<Value> = body
        .split_terminator(RS)
        .map(|record| serde_json::from_str(record).unwrap())
        .collect();
    let expected: Vec<Value> = (0..5)
        .map(|i| json!({ "type": 1, "target": "queued", "arguments": [i] }))
        .collect();
    assert_eq!(records, expected, "{body:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_newer_poll_replaces_the_waiting_one() {
    let server = TestServer::default().await;
    let path = HttpTransport::LongPolling.open(&server).await.path;
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
    let poll_timeout = Duration::from_millis(500);
    let keep_alive = Duration::from_millis(200);
    let server = TestServer::start(
        SignalROptions::default()
            .keep_alive_interval(keep_alive)
            .client_timeout(client_timeout)
            .long_poll_timeout(poll_timeout),
    )
    .await;
    // The client timeout cannot start before this.
    let opening = Instant::now();
    let path = HttpTransport::LongPolling.open(&server).await.path;
    let polled = Instant::now();
    wait_for_connections(&server, 1).await;
    // Nothing more from the client: no poll, no message. The server waits
    // for it: the reader for a message, the keep-alive Ping for a poll,
    // each up to the client timeout, which starts once the connection is
    // open. So it is still there after the poll timeout and a keep-alive
    // interval have passed; checked only when the check is known to have
    // come before the client timeout could have run out.
    tokio::time::sleep(poll_timeout + keep_alive).await;
    let seen = (
        server.hub.manager().stats().connections,
        server.disconnects.lock().len(),
    );
    if opening.elapsed() < client_timeout {
        assert_eq!(seen, (1, 0), "closed before the client timeout");
    }
    // Then the server gives up (a Close message would wait a grace of its
    // own for a poll that never comes): the connection is closed and
    // unregistered within the client timeout and a poll's length of the
    // last poll, with room for a loaded machine.
    let deadline = polled + client_timeout + poll_timeout + SLACK;
    while server.disconnects.lock().is_empty() {
        assert!(
            Instant::now() < deadline,
            "not closed {:?} after the last poll",
            polled.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    connections_by(&server, 0, deadline).await;
    let closed = server.disconnects.lock().clone();
    assert!(closed[0].is_some(), "closed with a reason: {closed:?}");
    // Its client would be told the connection ended, then it is forgotten.
    assert_eq!(server.http("GET", &path).await.0, 204);
    let deadline = Instant::now() + Duration::from_secs(60);
    while server.http("GET", &path).await.0 != 404 {
        assert!(Instant::now() < deadline, "never forgotten");
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
    // No cache may keep the events back.
    let cache_control = header(&head, "cache-control").unwrap_or_default();
    assert!(
        cache_control
            .split(',')
            .any(|directive| directive.trim().eq_ignore_ascii_case("no-cache")),
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
async fn an_idle_event_stream_gets_the_keep_alive_ping() {
    let server = TestServer::start(
        SignalROptions::default().keep_alive_interval(Duration::from_millis(200)),
    )
    .await;
    let mut open = HttpTransport::ServerSentEvents.open(&server).await;
    // Nothing to send: a Ping comes as an event after the keep-alive
    // interval (waited for far longer, for a loaded machine).
    read_until(
        open.stream.as_mut().unwrap(),
        "data: {\"type\":6}\x1e\r\n\r\n",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn switched_off_transports_are_neither_offered_nor_served() {
    let server = TestServer::start(
        SignalROptions::default()
            .websockets(false)
            .server_sent_events(false),
    )
    .await;
    let (transports, token) = offered(&server).await;
    assert_eq!(
        transports,
        json!([{ "transport": "LongPolling", "transferFormats": ["Text", "Binary"] }])
    );
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
async fn switched_off_long_polling_is_neither_offered_nor_served() {
    let server = TestServer::start(SignalROptions::default().long_polling(false)).await;
    let (transports, token) = offered(&server).await;
    assert_eq!(
        transports,
        json!([
            { "transport": "WebSockets", "transferFormats": ["Text", "Binary"] },
            { "transport": "ServerSentEvents", "transferFormats": ["Text"] },
        ])
    );
    // A poll on the negotiated id: refused, the token kept for a
    // transport that is on.
    let path = format!("/hub?id={token}");
    let (status, body) = server.http("GET", &path).await;
    assert_eq!(status, 400, "a poll: {body}");
    let (_stream, head) = event_stream(&server, &token, "\r\n\r\n").await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
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

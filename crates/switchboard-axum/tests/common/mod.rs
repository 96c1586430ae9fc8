//! A test server (the router on 127.0.0.1:0 over the in-memory manager)
//! and a raw WebSocket client that speaks just enough of the protocols.

#![allow(dead_code, clippy::unwrap_used, missing_docs, unreachable_pub)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::http::request::Parts;
use bytes::BytesMut;
use futures::{SinkExt, StreamExt};
use parking_lot::Mutex;
use serde_json::{Value, json};
use switchboard_axum::{AuthRejection, SignalROptions, router};
use switchboard_core::protocol::{HubMessage, Protocol};
use switchboard_core::{CallContext, Hub, HubError, InMemoryHubLifetimeManager, InvokeOptions};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream, connect_async};

/// The generous bound on any single wait in these tests.
pub const WAIT: Duration = Duration::from_secs(10);

/// The record separator.
pub const RS: char = '\u{1e}';

/// The hub every test server mounts at `/hub`.
fn test_hub(disconnects: Arc<Mutex<Vec<Option<String>>>>) -> Hub {
    Hub::builder()
        .method("Add", |_ctx, (a, b): (i64, i64)| async move {
            Ok::<_, HubError>(a + b)
        })
        .method("Echo", |_ctx, (text,): (String,)| async move {
            Ok::<_, HubError>(text)
        })
        .method(
            "Notify",
            |ctx: CallContext, (text,): (String,)| async move {
                ctx.caller().send("notified", (text,)).await?;
                Ok(())
            },
        )
        .method("WhoAmI", |ctx: CallContext, ()| async move {
            Ok::<_, HubError>(json!({
                "connectionId": ctx.connection_id().as_str(),
                "user": ctx.user(),
            }))
        })
        .method(
            "Ask",
            |ctx: CallContext, (question,): (String,)| async move {
                let answer = ctx
                    .caller()
                    .invoke_with::<String, _>(
                        "ask",
                        (question,),
                        InvokeOptions::timeout(Duration::from_secs(5)),
                    )
                    .await?;
                Ok::<_, HubError>(answer)
            },
        )
        .method(
            "Flood",
            |ctx: CallContext, (count, size): (usize, usize)| async move {
                let payload = "x".repeat(size);
                for i in 0..count {
                    ctx.caller().send("item", (i, &payload)).await?;
                }
                Ok(())
            },
        )
        // Tells the caller it has started, then sleeps.
        .method("Nap", |ctx: CallContext, (ms,): (u64,)| async move {
            ctx.caller().send("napping", (ms,)).await?;
            tokio::time::sleep(Duration::from_millis(ms)).await;
            Ok::<_, HubError>(ms)
        })
        .method("Kick", |ctx: CallContext, (text,): (String,)| async move {
            ctx.caller().send("bye", (text,)).await?;
            ctx.connection().close("kicked");
            Ok(())
        })
        .method(
            "Sum",
            |_ctx, (mut numbers,): (switchboard_core::UploadStream<i64>,)| async move {
                let mut sum = 0;
                while let Some(n) = numbers.next().await {
                    sum += n?;
                }
                Ok::<_, HubError>(sum)
            },
        )
        .stream("Count", |_ctx, (n,): (u32,)| async move {
            Ok(futures::stream::iter((1..=n).map(Ok::<_, HubError>)))
        })
        .stream("Forever", |_ctx, ()| async move {
            Ok(futures::stream::unfold(0u64, |i| async move {
                tokio::time::sleep(Duration::from_millis(10)).await;
                Some((Ok::<_, HubError>(i), i + 1))
            }))
        })
        .on_disconnected(move |_ctx, error| {
            let disconnects = disconnects.clone();
            async move { disconnects.lock().push(error) }
        })
        .build(Arc::new(InMemoryHubLifetimeManager::new()))
}

/// An authenticator for tests: the `user` query parameter is the user,
/// except `mallory`, who is refused.
pub fn query_user(request: &Parts) -> Result<Option<String>, AuthRejection> {
    let query = request.uri.query().unwrap_or_default();
    let user = query
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .find(|(key, _)| *key == "user")
        .map(|(_, value)| value.to_owned());
    match user.as_deref() {
        Some("mallory") => Err(AuthRejection::new("go away")),
        _ => Ok(user),
    }
}

/// A running test server; stops when dropped.
pub struct TestServer {
    pub addr: SocketAddr,
    /// The hub it serves.
    pub hub: switchboard_core::Hub,
    /// The error each closed session reported, in order.
    pub disconnects: Arc<Mutex<Vec<Option<String>>>>,
    task: JoinHandle<()>,
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl TestServer {
    /// Serves the test hub at `/hub` with `options`.
    pub async fn start(options: SignalROptions) -> TestServer {
        let disconnects = Arc::new(Mutex::new(Vec::new()));
        let hub = test_hub(disconnects.clone());
        let app = router("/hub", hub.clone(), options);
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        TestServer {
            addr,
            hub,
            disconnects,
            task,
        }
    }

    /// Serves with the default options.
    /// Serves the test hub with `switchboard_axum::Server` and
    /// `serve_options`; returns the server's counters too.
    pub async fn serve(
        options: SignalROptions,
        serve_options: switchboard_axum::ServeOptions,
    ) -> (TestServer, switchboard_axum::ServeStatsHandle) {
        let disconnects = Arc::new(Mutex::new(Vec::new()));
        let hub = test_hub(disconnects.clone());
        let app = router("/hub", hub.clone(), options);
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = switchboard_axum::Server::new(listener, app, serve_options);
        let stats = server.stats();
        let task = tokio::spawn(async move {
            server.run().await.unwrap();
        });
        let server = TestServer {
            addr,
            hub,
            disconnects,
            task,
        };
        (server, stats)
    }

    /// Serves the test hub with `options`; returns the endpoint's handle
    /// too (for a drain).
    pub async fn with_endpoint(
        options: SignalROptions,
    ) -> (TestServer, switchboard_axum::Endpoint) {
        let disconnects = Arc::new(Mutex::new(Vec::new()));
        let hub = test_hub(disconnects.clone());
        let (app, endpoint) = switchboard_axum::endpoint("/hub", hub.clone(), options);
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        let server = TestServer {
            addr,
            hub,
            disconnects,
            task,
        };
        (server, endpoint)
    }

    pub async fn default() -> TestServer {
        TestServer::start(SignalROptions::default()).await
    }

    /// A raw HTTP/1.1 request; returns the status and the body.
    pub async fn http(&self, method: &str, path: &str) -> (u16, String) {
        self.http_with(method, path, &[], b"").await
    }

    /// A raw HTTP/1.1 request with `headers` and `body`; returns the
    /// status and the body.
    pub async fn http_with(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> (u16, String) {
        let mut stream = TcpStream::connect(self.addr).await.unwrap();
        let mut request = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nContent-Length: {}\r\nConnection: close\r\n",
            self.addr,
            body.len()
        );
        for (name, value) in headers {
            request.push_str(&format!("{name}: {value}\r\n"));
        }
        request.push_str("\r\n");
        stream.write_all(request.as_bytes()).await.unwrap();
        stream.write_all(body).await.unwrap();
        let mut response = Vec::new();
        tokio::time::timeout(WAIT, stream.read_to_end(&mut response))
            .await
            .expect("the HTTP response took too long")
            .unwrap();
        let text = String::from_utf8(response).unwrap();
        let status = text[9..12].parse().unwrap();
        let body = text
            .split_once("\r\n\r\n")
            .map(|(_, body)| body.to_owned())
            .unwrap_or_default();
        (status, body)
    }

    /// `POST /hub/negotiate{query}`, expecting 200 and a JSON body.
    pub async fn negotiate(&self, query: &str) -> Value {
        let (status, body) = self.http("POST", &format!("/hub/negotiate{query}")).await;
        assert_eq!(status, 200, "negotiate failed: {body}");
        serde_json::from_str(&body).unwrap()
    }

    /// Opens a WebSocket at `/hub{query}`; `Err(status)` when refused.
    pub async fn try_connect(&self, query: &str) -> Result<Client, u16> {
        self.try_connect_path(&format!("/hub{query}")).await
    }

    /// Opens a WebSocket at `path_and_query`; `Err(status)` when refused.
    pub async fn try_connect_path(&self, path_and_query: &str) -> Result<Client, u16> {
        let url = format!("ws://{}{path_and_query}", self.addr);
        match tokio::time::timeout(WAIT, connect_async(url))
            .await
            .expect("the WebSocket request took too long")
        {
            Ok((ws, _)) => Ok(Client {
                ws,
                buf: BytesMut::new(),
                protocol: Protocol::Json,
            }),
            Err(tungstenite::Error::Http(response)) => Err(response.status().as_u16()),
            Err(e) => panic!("WebSocket connect failed: {e}"),
        }
    }

    /// Opens a WebSocket that must be accepted.
    pub async fn connect(&self, query: &str) -> Client {
        match self.try_connect(query).await {
            Ok(client) => client,
            Err(status) => panic!("WebSocket refused with {status}"),
        }
    }

    /// A WebSocket (without negotiation) past a successful JSON handshake.
    pub async fn json_client(&self) -> Client {
        let mut client = self.connect("").await;
        client.handshake_ok("json").await;
        client
    }

    /// Asserts that a new, well-behaved client gets answers.
    pub async fn assert_healthy(&self) {
        let mut client = self.json_client().await;
        let id = client.invoke("Add", json!([40, 2])).await;
        let completion = client.completion(&id).await;
        assert_eq!(completion["result"], 42, "{completion}");
        client.close().await;
    }

    /// Waits until `n` sessions have been closed.
    pub async fn wait_for_disconnects(&self, n: usize) -> Vec<Option<String>> {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let seen = self.disconnects.lock().clone();
            if seen.len() >= n {
                return seen;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "only {} of {n} sessions closed",
                seen.len()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

/// What the server sent next.
#[derive(Debug)]
pub enum Frame {
    Text(String),
    Binary(Vec<u8>),
    /// A WebSocket close frame, the end of the stream, or a reset.
    Closed,
}

/// A raw client: whole WebSocket messages, or hub records parsed from them.
pub struct Client {
    pub ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
    buf: BytesMut,
    protocol: Protocol,
}

impl Client {
    pub async fn send_text(&mut self, text: &str) {
        self.ws.send(Message::text(text)).await.unwrap();
    }

    pub async fn send_binary(&mut self, bytes: &[u8]) {
        self.ws.send(Message::binary(bytes.to_vec())).await.unwrap();
    }

    /// Sends one JSON record (the separator is added).
    pub async fn send_json(&mut self, value: Value) {
        self.send_text(&format!("{value}{RS}")).await;
    }

    /// The next data frame, or `Closed`.
    pub async fn frame(&mut self) -> Frame {
        loop {
            let next = tokio::time::timeout(WAIT, self.ws.next())
                .await
                .expect("nothing arrived in time");
            match next {
                Some(Ok(Message::Text(text))) => return Frame::Text(text.as_str().to_owned()),
                Some(Ok(Message::Binary(bytes))) => return Frame::Binary(bytes.to_vec()),
                Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => {}
                Some(Ok(Message::Close(_)) | Err(_)) | None => return Frame::Closed,
            }
        }
    }

    /// Fills the record buffer with one more frame; `false` once closed.
    async fn read_more(&mut self) -> bool {
        match self.frame().await {
            Frame::Text(text) => self.buf.extend_from_slice(text.as_bytes()),
            Frame::Binary(bytes) => self.buf.extend_from_slice(&bytes),
            Frame::Closed => return false,
        }
        true
    }

    /// The next JSON record, or `None` once the socket is closed.
    pub async fn record(&mut self) -> Option<Value> {
        loop {
            if let Some(end) = self.buf.iter().position(|&b| b == RS as u8) {
                let record = self.buf.split_to(end + 1);
                return Some(serde_json::from_slice(&record[..end]).unwrap());
            }
            if !self.read_more().await {
                return None;
            }
        }
    }

    /// The next hub message in the client's protocol, or `None` once closed.
    pub async fn message(&mut self) -> Option<HubMessage> {
        loop {
            if let Some(message) = self.protocol.parse_message(&mut self.buf, 1 << 24).unwrap() {
                return Some(message);
            }
            if !self.read_more().await {
                return None;
            }
        }
    }

    /// Sends the handshake for `protocol` and returns the response record.
    pub async fn handshake(&mut self, protocol: &str) -> Option<Value> {
        self.handshake_version(protocol, 1).await
    }

    /// Sends the handshake for `protocol` at hub protocol `version` and
    /// returns the response record.
    pub async fn handshake_version(&mut self, protocol: &str, version: u32) -> Option<Value> {
        self.send_text(&format!(
            "{{\"protocol\":\"{protocol}\",\"version\":{version}}}{RS}"
        ))
        .await;
        let response = self.record().await;
        if let Some(p) = Protocol::from_name(protocol) {
            self.protocol = p;
        }
        response
    }

    /// Speaks `protocol` from now on (for a socket that resumes a
    /// connection, without a handshake).
    pub fn set_protocol(&mut self, protocol: Protocol) {
        self.protocol = protocol;
    }

    /// Sends one hub message in the client's protocol.
    pub async fn send_message(&mut self, message: &HubMessage) {
        let frame = self.protocol.write_message(message).unwrap();
        if self.protocol.is_binary() {
            self.send_binary(&frame).await;
        } else {
            self.send_text(std::str::from_utf8(&frame).unwrap()).await;
        }
    }

    pub async fn handshake_ok(&mut self, protocol: &str) {
        let response = self.handshake(protocol).await;
        assert_eq!(response, Some(json!({})));
    }

    /// Invokes `target` with an invocation id; returns the id.
    pub async fn invoke(&mut self, target: &str, arguments: Value) -> String {
        let id = next_id();
        self.send_json(json!({
            "type": 1, "invocationId": id, "target": target, "arguments": arguments,
        }))
        .await;
        id
    }

    /// Reads records until the Completion of `id` (Pings skipped; anything
    /// else fails the test).
    pub async fn completion(&mut self, id: &str) -> Value {
        loop {
            let record = self.record().await.expect("closed before the completion");
            match record["type"].as_u64() {
                Some(6) => {}
                Some(3) if record["invocationId"] == id => return record,
                _ => panic!("expected the completion of {id}, got {record}"),
            }
        }
    }

    /// Reads records until a Close message, which it returns; then the
    /// socket must close.
    pub async fn close_message(&mut self) -> Value {
        loop {
            let record = self.record().await.expect("closed without a Close message");
            if record["type"] == 7 {
                assert!(
                    self.record().await.is_none(),
                    "data after the Close message"
                );
                return record;
            }
        }
    }

    /// Reads until the socket closes, ignoring what arrives.
    pub async fn closed(&mut self) {
        while !matches!(self.frame().await, Frame::Closed) {}
    }

    /// Closes the socket.
    pub async fn close(mut self) {
        let _ = self.ws.close(None).await;
    }
}

/// A fresh invocation id.
fn next_id() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(1);
    NEXT.fetch_add(1, Ordering::Relaxed).to_string()
}

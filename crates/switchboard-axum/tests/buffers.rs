//! Memory does not ratchet up: once one large message has passed each way
//! over a WebSocket connection, the idle connection holds about what it held
//! before, not buffers the size of that message.
//!
//! The heap is measured by this test binary's own allocator, which counts
//! the bytes allocated and not yet freed (the process's RSS would not show a
//! freed buffer: allocators keep freed memory). The client is a few lines of
//! raw WebSocket over TCP with one fixed buffer, so that only the server's
//! holdings change.

#![allow(clippy::unwrap_used, missing_docs)]

mod common;

use std::alloc::System;
use std::time::{Duration, Instant};

use cap::Cap;

use common::{RS, TestServer, WAIT};
use switchboard_axum::SignalROptions;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};

/// Counts live heap bytes.
#[global_allocator]
static HEAP: Cap<System> = Cap::new(System, usize::MAX);

fn live() -> isize {
    HEAP.allocated() as isize
}

/// The size of the message sent each way.
const LARGE: usize = 2 * 1024 * 1024;
/// What the idle connection may hold beyond what it held before: far less
/// than one large message.
const ALLOWED_GROWTH: isize = 256 * 1024;

/// A minimal WebSocket client: one read buffer, allocated once.
struct RawClient {
    stream: TcpStream,
    buf: Vec<u8>,
    /// Bytes of `buf` read but not yet taken.
    filled: usize,
}

impl RawClient {
    async fn connect(server: &TestServer) -> RawClient {
        let mut stream = TcpStream::connect(server.addr).await.unwrap();
        let request = format!(
            "GET /hub HTTP/1.1\r\nHost: {}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
             Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
            server.addr
        );
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut client = RawClient {
            stream,
            buf: vec![0; 64 * 1024],
            filled: 0,
        };
        let head = client.read_until(b"\r\n\r\n").await;
        assert!(
            head.starts_with(b"HTTP/1.1 101"),
            "{}",
            String::from_utf8_lossy(&head)
        );
        client
    }

    /// Reads until `marker`; returns what came before it, and drops it from
    /// the buffer. Only for short things (the HTTP head).
    async fn read_until(&mut self, marker: &[u8]) -> Vec<u8> {
        loop {
            if let Some(at) = self.buf[..self.filled]
                .windows(marker.len())
                .position(|w| w == marker)
            {
                let head = self.buf[..at].to_vec();
                self.take(at + marker.len());
                return head;
            }
            self.fill().await;
        }
    }

    fn take(&mut self, n: usize) {
        self.buf.copy_within(n..self.filled, 0);
        self.filled -= n;
    }

    async fn fill(&mut self) {
        assert!(self.filled < self.buf.len(), "the client's buffer is full");
        let n = tokio::time::timeout(WAIT, self.stream.read(&mut self.buf[self.filled..]))
            .await
            .expect("the server answers")
            .unwrap();
        assert!(n > 0, "the server closed the connection");
        self.filled += n;
    }

    /// Sends `payload` as one masked text frame (formatted by tungstenite,
    /// into a buffer dropped at once).
    async fn send_text(&mut self, payload: &[u8]) {
        let mut frame = Frame::message(payload.to_vec(), OpCode::Data(Data::Text), true);
        frame.header_mut().mask = Some([0x11, 0x22, 0x33, 0x44]);
        let mut bytes = Vec::new();
        frame.format(&mut bytes).unwrap();
        self.stream.write_all(&bytes).await.unwrap();
    }

    /// Reads server frames until their payloads hold `records` complete
    /// JSON records; returns how many payload bytes came.
    async fn read_records(&mut self, records: usize) -> usize {
        let (mut seen, mut total) = (0, 0);
        while seen < records {
            while self.filled < 2 {
                self.fill().await;
            }
            let (len, head) = match self.buf[1] & 0x7F {
                126 => {
                    while self.filled < 4 {
                        self.fill().await;
                    }
                    (
                        usize::from(u16::from_be_bytes([self.buf[2], self.buf[3]])),
                        4,
                    )
                }
                127 => {
                    while self.filled < 10 {
                        self.fill().await;
                    }
                    (
                        u64::from_be_bytes(self.buf[2..10].try_into().unwrap()) as usize,
                        10,
                    )
                }
                len => (usize::from(len), 2),
            };
            assert_eq!(self.buf[1] & 0x80, 0, "server frames are not masked");
            self.take(head);
            let mut left = len;
            while left > 0 {
                if self.filled == 0 {
                    self.fill().await;
                }
                let n = left.min(self.filled);
                seen += self.buf[..n].iter().filter(|&&b| b == RS as u8).count();
                self.take(n);
                left -= n;
            }
            total += len;
        }
        total
    }

    /// Invokes Echo with `text`; waits for its Completion.
    async fn echo(&mut self, id: u32, text: &str) -> usize {
        let invocation = format!(
            "{{\"type\":1,\"invocationId\":\"{id}\",\"target\":\"Echo\",\"arguments\":[\"{text}\"]}}{RS}"
        );
        self.send_text(invocation.as_bytes()).await;
        self.read_records(1).await
    }
}

/// Waits until the heap has come back to within `ALLOWED_GROWTH` of
/// `before`; the growth seen last if it never does.
async fn settles_near(before: isize) -> Result<isize, isize> {
    let started = Instant::now();
    loop {
        let growth = live() - before;
        if growth <= ALLOWED_GROWTH {
            return Ok(growth);
        }
        if started.elapsed() > WAIT {
            return Err(growth);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_connection_lets_go_of_a_large_message_each_way() {
    let options = SignalROptions::default().max_message_size(4 * LARGE);
    let server = TestServer::start(options).await;
    let mut client = RawClient::connect(&server).await;
    client
        .send_text(format!("{{\"protocol\":\"json\",\"version\":1}}{RS}").as_bytes())
        .await;
    client.read_records(1).await;
    // Warmed up: the first invocation allocates what every later one reuses.
    client.echo(1, "small").await;
    client.echo(2, "small").await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let before = live();

    let large = "x".repeat(LARGE);
    let received = client.echo(3, &large).await;
    assert!(
        received > LARGE,
        "the large answer came back ({received} bytes)"
    );
    drop(large);
    // A small exchange after it, as on a connection that goes on.
    client.echo(4, "small").await;

    match settles_near(before).await {
        Ok(growth) => println!("heap growth after a {LARGE}-byte message each way: {growth} bytes"),
        Err(growth) => panic!(
            "the idle connection still holds {growth} more bytes than before a {LARGE}-byte message each way"
        ),
    }
    server.assert_healthy().await;
}

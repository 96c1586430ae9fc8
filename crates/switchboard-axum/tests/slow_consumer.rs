//! One WebSocket client stops reading while 100 others read: the others'
//! delivery rate stays within 10% of a run without the stalled client, the
//! stalled one is closed by the slow-consumer policy (the default), and the
//! server's memory stays bounded.
//!
//! The rate check compares runs of the same test against each other, never
//! against a fixed speed: many short runs with and without a stalled
//! client, in pairs run back to back (in alternating order, so warm-up and
//! background load weigh on both sides alike), and the totals compared.

#![allow(clippy::unwrap_used, missing_docs)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures::{SinkExt, StreamExt};
use switchboard_axum::{SignalROptions, router};
use switchboard_core::{Hub, HubLifetimeManager, InMemoryHubLifetimeManager};
use tokio::net::TcpSocket;
use tokio_tungstenite::tungstenite::Message;

const READERS: usize = 100;
const MESSAGES: u64 = 300;
const PAIRS: usize = 40;
const BATCH: u64 = 25;
const QUEUE: usize = 64;

/// Serves `hub` with small socket buffers, so a client that stops reading
/// backs up into its connection queue after a few dozen messages rather
/// than after megabytes of kernel buffering.
async fn serve(hub: Hub) -> SocketAddr {
    let socket = TcpSocket::new_v4().unwrap();
    socket.set_send_buffer_size(16 * 1024).unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let listener = socket.listen(1024).unwrap();
    let addr = listener.local_addr().unwrap();
    let app = router("/hub", hub, SignalROptions::default().queue_capacity(QUEUE));
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr
}

type Ws = tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>;

async fn connect(addr: SocketAddr, receive_buffer: Option<u32>) -> Ws {
    let socket = TcpSocket::new_v4().unwrap();
    if let Some(size) = receive_buffer {
        socket.set_recv_buffer_size(size).unwrap();
    }
    let stream = socket.connect(addr).await.unwrap();
    let (mut ws, _) = tokio_tungstenite::client_async(format!("ws://{addr}/hub"), stream)
        .await
        .unwrap();
    ws.send(Message::text("{\"protocol\":\"json\",\"version\":1}\u{1e}"))
        .await
        .unwrap();
    match ws.next().await {
        Some(Ok(Message::Text(text))) => assert_eq!(text.as_str(), "{}\u{1e}"),
        other => panic!("handshake failed: {other:?}"),
    }
    ws
}

/// How often a reader sends a Ping record, as the official clients do
/// (every 15 s by default), so that the server's client timeout (30 s)
/// never closes a reader however long the test runs.
const CLIENT_KEEP_ALIVE: Duration = Duration::from_secs(5);

/// A reader counting the invocations it receives, and keeping itself alive.
fn spawn_reader(mut ws: Ws, received: Arc<AtomicU64>) {
    tokio::spawn(async move {
        let mut keep_alive = tokio::time::interval(CLIENT_KEEP_ALIVE);
        loop {
            let message = tokio::select! {
                message = ws.next() => message,
                _ = keep_alive.tick() => {
                    if ws.send(Message::text("{\"type\":6}\u{1e}")).await.is_err() {
                        return;
                    }
                    continue;
                }
            };
            let Some(Ok(message)) = message else { return };
            if let Message::Text(text) = message {
                let n = text
                    .as_str()
                    .split('\u{1e}')
                    .filter(|record| record.starts_with("{\"type\":1"))
                    .count();
                received.fetch_add(n as u64, Ordering::Relaxed);
            }
        }
    });
}

fn resident_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

/// Sends `MESSAGES` to everyone, `BATCH` at a time, each batch once every
/// reader has the previous one; returns how long that took.
async fn run(hub: &Hub, counters: &[Arc<AtomicU64>]) -> Duration {
    let payload = "p".repeat(1024);
    let start: Vec<u64> = counters.iter().map(|c| c.load(Ordering::Relaxed)).collect();
    let started = Instant::now();
    let mut sent = 0;
    while sent < MESSAGES {
        for _ in 0..BATCH {
            hub.context()
                .all()
                .send("m", (sent, &payload))
                .await
                .unwrap();
            sent += 1;
        }
        let deadline = Instant::now() + Duration::from_secs(20);
        while counters
            .iter()
            .zip(&start)
            .any(|(c, s)| c.load(Ordering::Relaxed) - s < sent)
        {
            assert!(Instant::now() < deadline, "readers stopped receiving");
            tokio::time::sleep(Duration::from_micros(200)).await;
        }
    }
    started.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_client_does_not_slow_the_others() {
    let manager = Arc::new(InMemoryHubLifetimeManager::new());
    let hub = Hub::builder().build(manager.clone());
    let addr = serve(hub.clone()).await;

    let mut counters = Vec::new();
    for _ in 0..READERS {
        let received = Arc::new(AtomicU64::new(0));
        spawn_reader(connect(addr, None).await, received.clone());
        counters.push(received);
    }
    // Warm up, then measure.
    run(&hub, &counters).await;
    let memory_before = resident_kib();

    let (mut without, mut with) = (Duration::ZERO, Duration::ZERO);
    let mut ratios = Vec::new();
    let mut stalled_clients = Vec::new();
    for round in 0..PAIRS {
        let (mut pair_without, mut pair_with) = (Duration::ZERO, Duration::ZERO);
        // Alternate the order (ABBA...) so warm-up favours neither side.
        for stalled in [round % 2 == 1, round % 2 == 0] {
            if !stalled {
                pair_without = run(&hub, &counters).await;
                continue;
            }
            // A client that completes the handshake, then never reads again.
            let closed_before = manager.stats().closed_slow;
            stalled_clients.push(connect(addr, Some(4096)).await);
            pair_with = run(&hub, &counters).await;
            // The policy closed it (the default: close with a reason, counted).
            let deadline = Instant::now() + Duration::from_secs(10);
            while manager.stats().closed_slow == closed_before {
                assert!(
                    Instant::now() < deadline,
                    "the stalled client was never closed: {:?}",
                    manager.stats()
                );
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
        without += pair_without;
        with += pair_with;
        // Same work on both sides: the ratio of rates is the ratio of times.
        ratios.push(pair_without.as_secs_f64() / pair_with.as_secs_f64());
    }
    let memory_after = resident_kib();
    ratios.sort_by(f64::total_cmp);
    let deliveries = (PAIRS as u64 * MESSAGES * READERS as u64) as f64;
    let (without, with) = (
        deliveries / without.as_secs_f64(),
        deliveries / with.as_secs_f64(),
    );
    println!(
        "deliveries/s to {READERS} readers: {without:.0} without a stalled client, {with:.0} with one ({:.1}%)",
        100.0 * with / without
    );
    println!(
        "resident memory: {memory_before} KiB before, {memory_after} KiB after {PAIRS} stalled clients"
    );
    println!("per-pair rate with / without, sorted: {ratios:.2?}");
    assert!(
        with >= 0.9 * without,
        "the readers slowed down by more than 10%: {with:.0} vs {without:.0} deliveries/s"
    );
    assert_eq!(manager.stats().closed_slow, PAIRS as u64);
    // Closed connections are unregistered once their socket is given up.
    let deadline = Instant::now() + Duration::from_secs(10);
    while manager.stats().connections != READERS {
        assert!(
            Instant::now() < deadline,
            "stalled connections linger: {:?}",
            manager.stats()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Each stalled client could cost at most its queue and socket buffers.
    assert!(
        memory_after < memory_before + 32 * 1024,
        "memory grew from {memory_before} KiB to {memory_after} KiB"
    );
    drop(stalled_clients);
}

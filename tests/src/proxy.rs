//! A TCP proxy in front of Redis, for faults a Redis process alone cannot
//! show: a link that goes silent without a reset (a NAT table or a load
//! balancer that forgot the connection), and a slow link.
//!
//! A server pointed at [`FaultyLink::url`] reaches Redis through the proxy;
//! every connection it opens is forwarded both ways, each chunk after the
//! current delay ([`FaultyLink::set_delay`]); what Redis pushes to a
//! subscriber connection (one that has sent a SUBSCRIBE) can be held back
//! on its own ([`FaultyLink::set_subscriber_delay`]).
//! [`FaultyLink::silence_existing`] makes the connections open at that
//! moment forward nothing more, in either direction, while their sockets
//! stay open (no FIN, no RST); connections opened later are forwarded as
//! usual, as after a real NAT timeout.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use parking_lot::Mutex;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// The proxy; stops, closing every forwarded connection, when dropped.
#[derive(Debug)]
pub struct FaultyLink {
    addr: SocketAddr,
    state: Arc<State>,
}

#[derive(Debug)]
struct State {
    /// How long each chunk is held before it is passed on.
    delay: Mutex<Duration>,
    /// How much longer a chunk from Redis to a subscriber connection is held.
    subscriber_delay: Mutex<Duration>,
    /// Connections accepted before this count was raised are silent.
    silenced_before: AtomicU64,
    /// How many connections were accepted.
    accepted: AtomicU64,
    /// Ends the accept loop and every forwarding task.
    stop: CancellationToken,
}

impl FaultyLink {
    /// A proxy on a free loopback port forwarding to `target`.
    pub async fn start(target: SocketAddr) -> FaultyLink {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(State {
            delay: Mutex::new(Duration::ZERO),
            subscriber_delay: Mutex::new(Duration::ZERO),
            silenced_before: AtomicU64::new(0),
            accepted: AtomicU64::new(0),
            stop: CancellationToken::new(),
        });
        tokio::spawn(accept(listener, target, state.clone()));
        FaultyLink { addr, state }
    }

    /// A proxy in front of the Redis at `redis://host:port`.
    pub async fn in_front_of(redis_url: &str) -> FaultyLink {
        let host_port = redis_url
            .trim_start_matches("redis://")
            .split('/')
            .next()
            .unwrap();
        let target = tokio::net::lookup_host(host_port)
            .await
            .unwrap()
            .next()
            .unwrap();
        FaultyLink::start(target).await
    }

    /// The URL to give a server instead of Redis's own.
    pub fn url(&self) -> String {
        format!("redis://{}", self.addr)
    }

    /// Holds every chunk, in both directions, for `delay` from now on.
    pub fn set_delay(&self, delay: Duration) {
        *self.state.delay.lock() = delay;
    }

    /// Holds what Redis sends to subscriber connections (published
    /// messages, subscription confirmations) for `delay` more, from now on.
    pub fn set_subscriber_delay(&self, delay: Duration) {
        *self.state.subscriber_delay.lock() = delay;
    }

    /// Every connection open now forwards nothing more, and stays open.
    pub fn silence_existing(&self) {
        let accepted = self.state.accepted.load(Ordering::SeqCst);
        self.state.silenced_before.store(accepted, Ordering::SeqCst);
    }

    /// How many connections the proxy has accepted.
    pub fn connections(&self) -> u64 {
        self.state.accepted.load(Ordering::SeqCst)
    }
}

impl Drop for FaultyLink {
    fn drop(&mut self) {
        self.state.stop.cancel();
    }
}

async fn accept(listener: TcpListener, target: SocketAddr, state: Arc<State>) {
    loop {
        let client = tokio::select! {
            () = state.stop.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok((client, _)) => client,
                Err(_) => continue,
            },
        };
        let number = state.accepted.fetch_add(1, Ordering::SeqCst);
        let Ok(server) = TcpStream::connect(target).await else {
            continue;
        };
        let _ = client.set_nodelay(true);
        let _ = server.set_nodelay(true);
        let (client_read, client_write) = client.into_split();
        let (server_read, server_write) = server.into_split();
        let subscriber = Arc::new(AtomicBool::new(false));
        for (from, to, direction) in [
            (client_read, server_write, Direction::ToRedis),
            (server_read, client_write, Direction::FromRedis),
        ] {
            let connection = Connection {
                number,
                direction,
                subscriber: subscriber.clone(),
            };
            tokio::spawn(forward(from, to, connection, state.clone()));
        }
    }
}

/// Which way a forwarding task copies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Direction {
    ToRedis,
    FromRedis,
}

/// One direction of one forwarded connection.
#[derive(Debug)]
struct Connection {
    /// Its place in the accept order.
    number: u64,
    direction: Direction,
    /// Set once the client has sent a SUBSCRIBE on it; shared by both
    /// directions.
    subscriber: Arc<AtomicBool>,
}

/// Forwards one direction of one connection until either side closes, the
/// connection is silenced (then reads are swallowed, so the sender never
/// learns), or the proxy stops.
async fn forward(
    mut from: OwnedReadHalf,
    mut to: OwnedWriteHalf,
    connection: Connection,
    state: Arc<State>,
) {
    let number = connection.number;
    let stop = state.stop.clone();
    // Chunks with the time they may be written, so that the delay is a
    // latency and not a throttle.
    let (tx, mut rx) = mpsc::unbounded_channel::<(Instant, Vec<u8>)>();
    let writer = {
        let state = state.clone();
        async move {
            while let Some((due, chunk)) = rx.recv().await {
                tokio::time::sleep_until(due).await;
                if number < state.silenced_before.load(Ordering::SeqCst) {
                    continue;
                }
                if to.write_all(&chunk).await.is_err() {
                    return;
                }
            }
        }
    };
    let reader = async move {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = match from.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            if number < state.silenced_before.load(Ordering::SeqCst) {
                continue;
            }
            let chunk = &buf[..n];
            let mut delay = *state.delay.lock();
            match connection.direction {
                Direction::ToRedis => {
                    if chunk
                        .windows(9)
                        .any(|w| w.eq_ignore_ascii_case(b"SUBSCRIBE"))
                    {
                        connection.subscriber.store(true, Ordering::SeqCst);
                    }
                }
                Direction::FromRedis => {
                    if connection.subscriber.load(Ordering::SeqCst) {
                        delay += *state.subscriber_delay.lock();
                    }
                }
            }
            if tx.send((Instant::now() + delay, chunk.to_vec())).is_err() {
                return;
            }
        }
    };
    tokio::select! {
        () = stop.cancelled() => {}
        ((), ()) = async { tokio::join!(reader, writer) } => {}
    }
}

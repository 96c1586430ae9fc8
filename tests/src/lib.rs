//! Cross-crate scenarios for switchboard.
//!
//! [`conformance`] holds the behaviour every lifetime manager must show,
//! written once, generic over a [`Backend`] that makes manager instances
//! ("servers"); `tests/conformance.rs` runs the bodies against each manager.
//! [`TestClient`] plays a client: a registered connection whose outbound
//! queue the test reads.

#![allow(clippy::unwrap_used, missing_docs)]

pub mod bench;
pub mod conformance;
pub mod logs;
pub mod node;
pub mod proxy;
pub mod redis_cluster;
pub mod redis_process;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::BytesMut;
use serde_json::Value;
use switchboard_core::protocol::{Completion, HubMessage, Outcome, Protocol};
use switchboard_core::{
    Connection, ConnectionId, ConnectionOptions, ConnectionReceiver, HubLifetimeManager,
};

/// How long a test waits for a message that must arrive.
pub const ARRIVAL_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a test waits to be confident that nothing arrives.
pub const SILENCE: Duration = Duration::from_millis(300);

/// Makes lifetime-manager instances for the conformance bodies.
///
/// Every instance made by one backend belongs to the same cluster: a
/// message sent on one reaches connections on the others.
#[async_trait]
pub trait Backend: Send + Sync {
    /// A new server in the cluster.
    async fn server(&self) -> Arc<dyn HubLifetimeManager>;

    /// Waits until changes made on one server are visible to the others
    /// (subscriptions propagated). The in-memory backend has nothing to wait for.
    async fn settle(&self) {}
}

/// The in-memory manager: one server.
#[derive(Debug, Default)]
pub struct MemoryBackend;

#[async_trait]
impl Backend for MemoryBackend {
    async fn server(&self) -> Arc<dyn HubLifetimeManager> {
        Arc::new(switchboard_core::InMemoryHubLifetimeManager::new())
    }
}

/// Scale-out managers on one in-process [`LoopbackBus`]: every server of
/// the backend shares the bus, and no Redis is needed.
///
/// [`LoopbackBus`]: switchboard_backplane::LoopbackBus
#[derive(Debug, Default)]
pub struct LoopbackBackend {
    bus: switchboard_backplane::LoopbackBus,
}

impl LoopbackBackend {
    pub fn new() -> LoopbackBackend {
        init_logging();
        LoopbackBackend::default()
    }

    /// The bus the servers share.
    pub fn bus(&self) -> &switchboard_backplane::LoopbackBus {
        &self.bus
    }

    /// A new server on the bus.
    pub async fn connect(
        &self,
    ) -> switchboard_backplane::ScaleOutManager<switchboard_backplane::LoopbackDriver> {
        switchboard_backplane::ScaleOutManager::start(
            self.bus.driver(),
            switchboard_backplane::ScaleOutOptions::new().hub("test"),
        )
        .await
        .unwrap()
    }
}

#[async_trait]
impl Backend for LoopbackBackend {
    async fn server(&self) -> Arc<dyn HubLifetimeManager> {
        Arc::new(self.connect().await)
    }
}

/// An invocation a test client received.
#[derive(Debug, Clone, PartialEq)]
pub struct Received {
    pub target: String,
    pub arguments: Vec<Value>,
    pub invocation_id: Option<String>,
}

/// A connection registered with a manager, with its outbound queue.
#[derive(Debug)]
pub struct TestClient {
    pub connection: Connection,
    pub outbound: ConnectionReceiver,
}

impl TestClient {
    /// A JSON connection without a user, registered on `manager`.
    pub async fn connect(manager: &Arc<dyn HubLifetimeManager>) -> TestClient {
        Self::connect_with(manager, ConnectionOptions::new(Protocol::Json)).await
    }

    /// A JSON connection of `user`, registered on `manager`.
    pub async fn connect_user(manager: &Arc<dyn HubLifetimeManager>, user: &str) -> TestClient {
        Self::connect_with(manager, ConnectionOptions::new(Protocol::Json).user(user)).await
    }

    /// A connection with the given options, registered on `manager`.
    pub async fn connect_with(
        manager: &Arc<dyn HubLifetimeManager>,
        options: ConnectionOptions,
    ) -> TestClient {
        let (connection, outbound) = Connection::new(options);
        manager.on_connected(connection.clone()).await.unwrap();
        TestClient {
            connection,
            outbound,
        }
    }

    pub fn id(&self) -> &ConnectionId {
        self.connection.id()
    }

    pub fn protocol(&self) -> Protocol {
        self.connection.protocol()
    }

    /// The next raw frame, or a panic after [`ARRIVAL_TIMEOUT`].
    pub async fn recv_frame(&mut self) -> bytes::Bytes {
        match tokio::time::timeout(ARRIVAL_TIMEOUT, self.outbound.recv()).await {
            Ok(Some(frame)) => frame,
            Ok(None) => panic!(
                "connection {} closed while a message was expected",
                self.id()
            ),
            Err(_) => panic!(
                "no message reached connection {} within {ARRIVAL_TIMEOUT:?}",
                self.id()
            ),
        }
    }

    /// The next message, decoded, which must be an invocation.
    pub async fn recv(&mut self) -> Received {
        let frame = self.recv_frame().await;
        let mut buf = BytesMut::from(&frame[..]);
        let message = self
            .protocol()
            .parse_message(&mut buf, usize::MAX)
            .unwrap()
            .expect("a complete frame");
        assert!(buf.is_empty(), "one frame holds exactly one message");
        match message {
            HubMessage::Invocation(invocation) => Received {
                target: invocation.target,
                arguments: invocation
                    .arguments
                    .iter()
                    .map(|a| a.deserialize::<Value>().unwrap())
                    .collect(),
                invocation_id: invocation.invocation_id,
            },
            other => panic!("expected an invocation, got {other:?}"),
        }
    }

    /// Discards every frame queued right now.
    pub fn drain(&mut self) {
        while self.outbound.try_recv().is_some() {}
    }

    /// The next invocation whose first argument equals `marker`, skipping
    /// others; `None` if none arrives within `wait`.
    pub async fn recv_marked(&mut self, marker: &str, wait: Duration) -> Option<Received> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let frame = tokio::time::timeout_at(deadline, self.outbound.recv())
                .await
                .ok()??;
            let mut buf = BytesMut::from(&frame[..]);
            if let Ok(Some(HubMessage::Invocation(invocation))) =
                self.protocol().parse_message(&mut buf, usize::MAX)
            {
                let arguments: Vec<Value> = invocation
                    .arguments
                    .iter()
                    .filter_map(|a| a.deserialize::<Value>().ok())
                    .collect();
                if arguments.first().and_then(Value::as_str) == Some(marker) {
                    return Some(Received {
                        target: invocation.target,
                        arguments,
                        invocation_id: invocation.invocation_id,
                    });
                }
            }
        }
    }

    /// Sends a fresh marker (`{what}-{attempt}`) with `send` until this
    /// client receives one; returns how long that took. Panics after
    /// `limit`. For waiting out a fault: sends may fail meanwhile.
    pub async fn until_delivered<F, Fut>(
        &mut self,
        what: &str,
        limit: Duration,
        send: F,
    ) -> Duration
    where
        F: Fn(String) -> Fut,
        Fut: std::future::Future<Output = switchboard_core::Result<()>>,
    {
        let started = std::time::Instant::now();
        let mut attempt = 0;
        while started.elapsed() < limit {
            attempt += 1;
            let marker = format!("{what}-{attempt}");
            if send(marker.clone()).await.is_ok()
                && self
                    .recv_marked(&marker, Duration::from_millis(250))
                    .await
                    .is_some()
            {
                return started.elapsed();
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("{what}: no delivery to {} within {limit:?}", self.id());
    }

    /// Asserts that no message arrives within [`SILENCE`].
    pub async fn assert_nothing(&mut self) {
        if let Ok(Some(frame)) = tokio::time::timeout(SILENCE, self.outbound.recv()).await {
            panic!(
                "connection {} received an unexpected message: {}",
                self.id(),
                String::from_utf8_lossy(&frame)
            );
        }
    }

    /// Answers a client-result invocation with a value.
    pub fn completion<T: serde::Serialize>(&self, invocation_id: &str, value: &T) -> Completion {
        Completion {
            invocation_id: invocation_id.to_owned(),
            outcome: Outcome::Value(self.protocol().encode_value(value).unwrap()),
        }
    }

    /// Answers a client-result invocation with an error.
    pub fn error_completion(&self, invocation_id: &str, error: &str) -> Completion {
        Completion {
            invocation_id: invocation_id.to_owned(),
            outcome: Outcome::Error(error.to_owned()),
        }
    }
}

/// A JSON-and-MessagePack invocation of `target` with `arguments`.
pub fn message<A: serde::Serialize>(
    target: &str,
    arguments: A,
) -> switchboard_core::SerializedMessage {
    switchboard_core::SerializedMessage::invocation(&Protocol::ALL, target, &arguments).unwrap()
}

/// Runs `future`, failing the test if it takes longer than [`ARRIVAL_TIMEOUT`].
pub async fn within<F: std::future::Future>(future: F) -> F::Output {
    tokio::time::timeout(ARRIVAL_TIMEOUT, future)
        .await
        .expect("the operation did not finish in time")
}

/// The Redis URL handed to the tests by `cargo xtask test`.
pub fn redis_url() -> String {
    std::env::var("SWITCHBOARD_REDIS_URL").unwrap_or_else(|_| {
        panic!(
            "SWITCHBOARD_REDIS_URL is not set: run the Redis tests with `cargo xtask test`, \
             or start a server with `cargo xtask redis` and export the URL it prints"
        )
    })
}

/// Redis managers on the server from [`redis_url`]. Each backend uses a hub
/// name of its own, so tests running at the same time never see each
/// other's messages.
#[derive(Debug)]
pub struct RedisBackend {
    url: String,
    hub: String,
}

impl RedisBackend {
    pub fn new() -> RedisBackend {
        RedisBackend::with_url(redis_url())
    }

    /// Redis managers on the local Redis Cluster from
    /// [`redis_cluster::redis_cluster_url`].
    pub fn cluster() -> RedisBackend {
        RedisBackend::with_url(redis_cluster::redis_cluster_url())
    }

    pub fn with_url(url: String) -> RedisBackend {
        init_logging();
        RedisBackend {
            url,
            hub: format!("test-{}", switchboard_core::random_token()),
        }
    }

    pub fn options(&self) -> switchboard_redis::RedisOptions {
        self.options_at(&self.url)
    }

    /// The options of this backend's servers, but reaching Redis at `url`
    /// (through a [`proxy::FaultyLink`], say).
    pub fn options_at(&self, url: &str) -> switchboard_redis::RedisOptions {
        switchboard_redis::RedisOptions::new(url)
            .prefix("switchboard-test:")
            .hub(&self.hub)
    }

    /// A server of this backend that reaches Redis at `url`.
    pub async fn connect_at(&self, url: &str) -> switchboard_redis::RedisHubLifetimeManager {
        switchboard_redis::RedisHubLifetimeManager::connect(self.options_at(url))
            .await
            .unwrap()
    }

    /// The URL of the Redis this backend uses.
    pub fn url(&self) -> &str {
        &self.url
    }

    pub async fn connect(&self) -> switchboard_redis::RedisHubLifetimeManager {
        switchboard_redis::RedisHubLifetimeManager::connect(self.options())
            .await
            .unwrap()
    }
}

impl Default for RedisBackend {
    fn default() -> Self {
        RedisBackend::new()
    }
}

#[async_trait]
impl Backend for RedisBackend {
    async fn server(&self) -> Arc<dyn HubLifetimeManager> {
        Arc::new(self.connect().await)
    }
}

/// Sends switchboard's logs to the test output (shown for failing tests),
/// at the level in `RUST_LOG` (default: warnings).
pub fn init_logging() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_test_writer()
        .try_init();
}

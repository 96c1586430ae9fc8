//! fred clients as every Redis driver sets them up: from the URL, with TLS,
//! timeouts, reconnection, heartbeats and link tracking.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use fred::clients::{Client, SubscriberClient};
use fred::interfaces::{ClientLike, EventInterface, PubsubInterface};
use fred::types::config::{Config, Options, ReconnectPolicy, TcpConfig, UnresponsiveConfig};
use fred::types::{Builder, Message};
use futures::StreamExt;
use parking_lot::Mutex;
use switchboard_backplane::{DriverEvent, DriverEvents};
use switchboard_core::{Error, Result};
use tokio::sync::broadcast;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::link;
use crate::options::{RedisOptions, redacted};

/// The URL schemes accepted, and whether each names a cluster.
const SCHEMES: [(&str, bool); 4] = [
    ("redis://", false),
    ("rediss://", false),
    ("redis-cluster://", true),
    ("rediss-cluster://", true),
];

/// Whether `url` names a Redis Cluster; an error for a scheme that is none
/// of ours.
pub(crate) fn is_cluster_url(url: &str) -> Result<bool> {
    SCHEMES
        .iter()
        .find(|(scheme, _)| url.starts_with(scheme))
        .map(|(_, cluster)| *cluster)
        .ok_or_else(|| Error::InvalidConfig {
            reason: format!(
                "Redis URL '{}' must start with redis://, rediss://, redis-cluster:// or rediss-cluster://",
                redacted(url)
            ),
        })
}

pub(crate) fn unavailable(reason: impl Into<String>, source: Option<fred::error::Error>) -> Error {
    Error::BackplaneUnavailable {
        reason: reason.into(),
        source: source.map(|e| Box::new(e) as switchboard_core::BoxError),
    }
}

/// The two connected clients of a driver and what keeps them healthy.
pub(crate) struct Clients {
    /// Publishes (a connection in subscribe mode cannot).
    pub(crate) publisher: Client,
    /// Subscribes.
    pub(crate) subscriber: SubscriberClient,
    /// Fail fast while disconnected, bounded wait: for every command the
    /// driver sends.
    pub(crate) command_options: Options,
    /// Whether the publishing connection is believed up: cleared the moment
    /// fred reports the connection lost, set again when it reconnects. fred
    /// still says "connected" for a moment after the socket dies; this flag
    /// lets sends fail at once instead of waiting out the publish timeout.
    /// An answered heartbeat also sets it.
    pub(crate) publisher_up: Arc<AtomicBool>,
    /// Cancelled on shutdown: the tasks below end.
    shutdown: CancellationToken,
    /// Connection tasks, heartbeats, the publisher's watcher.
    tasks: Mutex<Vec<JoinHandle<()>>>,
    /// Set once the clients have been told to quit.
    closed: AtomicBool,
}

impl Clients {
    /// Builds both clients from the options, connects them within the
    /// connect timeout, and starts their heartbeats (`cluster`: one PING
    /// to each primary).
    pub(crate) async fn connect(options: &RedisOptions, cluster: bool) -> Result<Clients> {
        let mut config = Config::from_url(&options.url).map_err(|e| Error::InvalidConfig {
            reason: format!("Redis URL: {e}"),
        })?;
        config.fail_fast = true;
        if let Some(pem) = &options.tls_roots_pem {
            if !options.url.starts_with("rediss") {
                return Err(Error::InvalidConfig {
                    reason: "TLS root certificates are set but the URL is not rediss:// or rediss-cluster://".to_owned(),
                });
            }
            config.tls = Some(tls_config(pem)?);
        }
        let max_delay = u32::try_from(options.reconnect_max_delay.as_millis()).unwrap_or(u32::MAX);
        let mut builder = Builder::from_config(config);
        builder
            // fred reconnects only when told to: retry forever, backing off.
            .set_policy(ReconnectPolicy::new_exponential(
                0,
                50,
                max_delay.max(50),
                2,
            ))
            .with_performance_config(|perf| {
                perf.broadcast_channel_capacity = options.message_capacity;
            })
            .with_connection_config(|conn| {
                conn.connection_timeout = options.connect_timeout;
                conn.internal_command_timeout = options.connect_timeout;
                // A command (the heartbeat's PING, at the least) left
                // unanswered this long means the connection is dead: fred
                // closes it and reconnects.
                conn.unresponsive = UnresponsiveConfig {
                    max_timeout: Some(options.unresponsive_timeout),
                    interval: (options.unresponsive_timeout / 4)
                        .clamp(Duration::from_millis(10), Duration::from_secs(1)),
                };
                conn.tcp = TcpConfig {
                    nodelay: Some(true),
                    // For the kernel to notice a peer that vanished while
                    // the connection is idle at the TCP level.
                    keepalive: Some(
                        socket2::TcpKeepalive::new()
                            .with_time(Duration::from_secs(15))
                            .with_interval(Duration::from_secs(5)),
                    ),
                    ..TcpConfig::default()
                };
            });
        let build_error = |e: fred::error::Error| Error::InvalidConfig {
            reason: format!("Redis client: {e}"),
        };
        let publisher = builder.build().map_err(build_error)?;
        let subscriber = builder.build_subscriber_client().map_err(build_error)?;

        let mut tasks = vec![start_client(&publisher, options).await?];
        match start_client(&subscriber, options).await {
            Ok(task) => tasks.push(task),
            Err(e) => {
                let _ = tokio::time::timeout(Duration::from_secs(1), publisher.quit()).await;
                return Err(e);
            }
        }
        let clients = Clients {
            publisher,
            subscriber,
            command_options: Options {
                fail_fast: true,
                timeout: Some(options.publish_timeout),
                ..Options::default()
            },
            publisher_up: Arc::new(AtomicBool::new(true)),
            shutdown: CancellationToken::new(),
            tasks: Mutex::new(tasks),
            closed: AtomicBool::new(false),
        };
        clients.start_health(options, cluster);
        Ok(clients)
    }

    /// Starts the publisher's watcher and both heartbeats.
    fn start_health(&self, options: &RedisOptions, per_node: bool) {
        let mut tasks = self.tasks.lock();
        tasks.push(tokio::spawn({
            let up = self.publisher_up.clone();
            let errors = self.publisher.error_rx();
            let reconnects = self.publisher.reconnect_rx();
            let shutdown = self.shutdown.clone();
            async move {
                link::watch_link(&up, errors, reconnects, shutdown, |now_up| {
                    if now_up {
                        tracing::info!("Redis connection restored");
                    } else {
                        tracing::warn!("lost the Redis connection; sends fail until it is back");
                    }
                })
                .await;
            }
        }));
        tasks.push(tokio::spawn({
            let up = self.publisher_up.clone();
            link::heartbeat(
                self.publisher.clone(),
                "publisher",
                per_node,
                options.heartbeat_interval,
                options.unresponsive_timeout,
                self.shutdown.clone(),
                move |answered| {
                    // An answered PING proves the publisher is up, whatever
                    // the last event said.
                    if answered {
                        up.store(true, Ordering::Relaxed);
                    }
                },
            )
        }));
        tasks.push(tokio::spawn(link::heartbeat(
            self.subscriber.clone(),
            "subscriber",
            per_node,
            options.heartbeat_interval,
            options.unresponsive_timeout,
            self.shutdown.clone(),
            |_| {},
        )));
    }

    /// Runs `task` until shutdown, ended with the clients.
    pub(crate) fn spawn<F, Fut>(&self, task: F)
    where
        F: FnOnce(CancellationToken) -> Fut,
        Fut: std::future::Future<Output = ()> + Send + 'static,
    {
        let handle = tokio::spawn(task(self.shutdown.clone()));
        self.tasks.lock().push(handle);
    }

    /// PUBLISHes (or SPUBLISHes, `sharded`) `payload` on `channel`; returns
    /// Redis's count of the subscribers that received it.
    pub(crate) async fn publish(
        &self,
        channel: String,
        payload: Bytes,
        sharded: bool,
    ) -> Result<Option<u64>> {
        self.check_publisher()?;
        let client = self.publisher.with_options(&self.command_options);
        // fred's publish futures are several kilobytes. Boxed here, the
        // futures of the engine's send methods stay small.
        let sent: std::pin::Pin<Box<dyn Future<Output = _> + Send + '_>> = if sharded {
            Box::pin(client.spublish::<i64, _, _>(channel, payload))
        } else {
            Box::pin(client.publish::<i64, _, _>(channel, payload))
        };
        let receivers = sent.await.map_err(|e| {
            let command = if sharded { "SPUBLISH" } else { "PUBLISH" };
            unavailable(format!("{command} failed: {e}"), Some(e))
        })?;
        Ok(Some(u64::try_from(receivers).unwrap_or(0)))
    }

    /// PINGs the subscriber with each of `targets` (the command options, or
    /// one per cluster node): once answered, the subscription changes sent
    /// before on those connections are in effect.
    pub(crate) async fn barrier(&self, targets: &[Options]) -> Result<()> {
        for result in link::ping_each(&self.subscriber, targets).await {
            result.map_err(|e| {
                unavailable(
                    format!("PING after a subscription change failed: {e}"),
                    Some(e),
                )
            })?;
        }
        Ok(())
    }

    /// Fails fast while the publishing connection is down.
    pub(crate) fn check_publisher(&self) -> Result<()> {
        if self.publisher_up.load(Ordering::Relaxed) && self.publisher.is_connected() {
            Ok(())
        } else {
            Err(unavailable("not connected to Redis", None))
        }
    }

    /// Fails fast while the subscribing connection is down.
    pub(crate) fn check_subscriber(&self) -> Result<()> {
        if self.subscriber.is_connected() {
            Ok(())
        } else {
            Err(unavailable("not connected to Redis", None))
        }
    }

    /// Whether both connections are up.
    pub(crate) fn is_connected(&self) -> bool {
        self.publisher.is_connected() && self.subscriber.is_connected()
    }

    /// The subscriber's messages and link changes, as driver events.
    pub(crate) fn events(&self) -> DriverEvents {
        self.events_with(futures::stream::empty().boxed())
    }

    /// [`events`](Self::events), and those of `more`.
    pub(crate) fn events_with(&self, more: DriverEvents) -> DriverEvents {
        let messages = stream_of(
            self.subscriber.message_rx(),
            |message| Some(message_event(message)),
            DriverEvent::Lagged,
        );
        let connected = stream_of(
            self.subscriber.reconnect_rx(),
            |_| Some(DriverEvent::Connected),
            |_| DriverEvent::Connected,
        );
        let disconnected = stream_of(
            self.subscriber.error_rx(),
            |_| Some(DriverEvent::Disconnected),
            |_| DriverEvent::Disconnected,
        );
        Box::pin(futures::stream::select(
            messages,
            futures::stream::select_all([connected, disconnected, more]),
        ))
    }

    /// Ends the tasks and quits both clients (once).
    pub(crate) async fn shutdown(&self) {
        self.shutdown.cancel();
        if !self.closed.swap(true, Ordering::AcqRel) {
            let _ = tokio::time::timeout(Duration::from_secs(1), self.subscriber.quit()).await;
            let _ = tokio::time::timeout(Duration::from_secs(1), self.publisher.quit()).await;
        }
        for task in self.tasks.lock().drain(..) {
            task.abort();
        }
    }
}

impl Drop for Clients {
    fn drop(&mut self) {
        self.shutdown.cancel();
        for task in self.tasks.get_mut().drain(..) {
            task.abort();
        }
        if self.closed.swap(true, Ordering::AcqRel) {
            return;
        }
        let publisher = self.publisher.clone();
        let subscriber = self.subscriber.clone();
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            handle.spawn(async move {
                let _ = tokio::time::timeout(Duration::from_secs(1), subscriber.quit()).await;
                let _ = tokio::time::timeout(Duration::from_secs(1), publisher.quit()).await;
            });
        }
    }
}

/// A broadcast receiver as a stream of driver events: `item` maps what
/// arrives (`None` skips it), `lagged` what was lost. Ends when the
/// sender is gone. Allocates nothing per item.
pub(crate) fn stream_of<T: Clone + Send + 'static>(
    receiver: broadcast::Receiver<T>,
    item: fn(T) -> Option<DriverEvent>,
    lagged: fn(u64) -> DriverEvent,
) -> DriverEvents {
    futures::stream::unfold(receiver, move |mut receiver| async move {
        loop {
            let event = match receiver.recv().await {
                Ok(value) => match item(value) {
                    Some(event) => event,
                    None => continue,
                },
                Err(broadcast::error::RecvError::Lagged(n)) => lagged(n),
                Err(broadcast::error::RecvError::Closed) => return None,
            };
            return Some((event, receiver));
        }
    })
    .boxed()
}

/// A fred message as the engine takes it: the channel's bytes and the
/// payload (empty when fred delivered something other than bytes, which
/// the engine then counts as malformed).
fn message_event(message: Message) -> DriverEvent {
    DriverEvent::Message {
        channel: message.channel.into_inner(),
        payload: message.value.into_bytes().unwrap_or_default(),
    }
}

/// A TLS configuration that trusts exactly the CA certificates in `pem`.
fn tls_config(pem: &[u8]) -> Result<fred::types::config::TlsConfig> {
    use rustls_pki_types::CertificateDer;
    use rustls_pki_types::pem::PemObject;

    let invalid = |reason: String| Error::InvalidConfig { reason };
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(pem) {
        let cert = cert.map_err(|e| invalid(format!("TLS root certificates: {e}")))?;
        roots
            .add(cert)
            .map_err(|e| invalid(format!("TLS root certificate: {e}")))?;
    }
    if roots.is_empty() {
        return Err(invalid(
            "no certificate in the TLS root certificates".to_owned(),
        ));
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let client = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| invalid(format!("TLS: {e}")))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(fred::types::config::TlsConnector::from(client).into())
}

/// Connects one client within the connect timeout; returns a task that
/// logs how its connection ends.
async fn start_client<C: ClientLike>(client: &C, options: &RedisOptions) -> Result<JoinHandle<()>> {
    match tokio::time::timeout(options.connect_timeout, client.init()).await {
        Ok(Ok(handle)) => Ok(tokio::spawn(async move {
            if let Ok(Err(e)) = handle.await {
                tracing::debug!(error = %e, "Redis connection task ended");
            }
        })),
        Ok(Err(e)) => {
            tracing::error!(url = %redacted(&options.url), error = %e, "cannot connect to Redis");
            Err(unavailable(
                format!("cannot connect to Redis: {e}"),
                Some(e),
            ))
        }
        Err(_) => {
            tracing::error!(url = %redacted(&options.url), timeout = ?options.connect_timeout, "cannot connect to Redis: timed out");
            let _ = tokio::time::timeout(Duration::from_millis(100), client.quit()).await;
            Err(unavailable(
                format!(
                    "cannot connect to Redis within {:?}",
                    options.connect_timeout
                ),
                None,
            ))
        }
    }
}

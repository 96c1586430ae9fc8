use std::fmt;
use std::time::Duration;

use switchboard_backplane::ScaleOutOptions;

/// Settings of a [`RedisHubLifetimeManager`](crate::RedisHubLifetimeManager).
///
/// ```
/// use std::time::Duration;
/// use switchboard_redis::RedisOptions;
///
/// let options = RedisOptions::new("redis://127.0.0.1:6379")
///     .prefix("myapp:")
///     .hub("chat")
///     .ack_timeout(Duration::from_secs(5));
/// assert_eq!(options.hub_name(), "chat");
/// ```
///
/// `Debug` never shows the password of the URL.
#[derive(Clone)]
pub struct RedisOptions {
    pub(crate) url: String,
    pub(crate) scale_out: ScaleOutOptions,
    pub(crate) publish_timeout: Duration,
    pub(crate) connect_timeout: Duration,
    pub(crate) reconnect_max_delay: Duration,
    pub(crate) message_capacity: usize,
    pub(crate) tls_roots_pem: Option<Vec<u8>>,
    pub(crate) heartbeat_interval: Duration,
    pub(crate) unresponsive_timeout: Duration,
}

impl RedisOptions {
    /// Options for the Redis at `url`: one node,
    /// `redis://[user:password@]host[:port][/db]` (`rediss://...` for TLS),
    /// or a Redis Cluster,
    /// `redis-cluster://[user:password@]host:port?node=host2:port2&node=host3:port3`
    /// (`rediss-cluster://...` for TLS). See the [crate documentation](crate#urls).
    pub fn new(url: impl Into<String>) -> RedisOptions {
        RedisOptions {
            url: url.into(),
            scale_out: ScaleOutOptions::new(),
            publish_timeout: Duration::from_millis(750),
            connect_timeout: Duration::from_secs(5),
            reconnect_max_delay: Duration::from_secs(2),
            message_capacity: 16 * 1024,
            tls_roots_pem: None,
            heartbeat_interval: Duration::from_secs(2),
            unresponsive_timeout: Duration::from_secs(5),
        }
    }

    /// Prepended to every channel name, so several applications can share
    /// one Redis: see [`ScaleOutOptions::prefix`]. Default: empty.
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.scale_out = self.scale_out.prefix(prefix);
        self
    }

    /// The hub's name: see [`ScaleOutOptions::hub`]. Default: `hub`.
    pub fn hub(mut self, hub: impl Into<String>) -> Self {
        self.scale_out = self.scale_out.hub(hub);
        self
    }

    /// Connects as an emitter: see [`ScaleOutOptions::emitter`]. Use
    /// [`Emitter::connect`](crate::Emitter::connect) for the usual case.
    pub fn emitter(mut self, emitter: bool) -> Self {
        self.scale_out = self.scale_out.emitter(emitter);
        self
    }

    /// The hub's name as configured.
    pub fn hub_name(&self) -> &str {
        self.scale_out.hub_name()
    }

    /// This server's name on the backplane: see
    /// [`ScaleOutOptions::server_name`].
    pub fn server_name(mut self, name: impl Into<String>) -> Self {
        self.scale_out = self.scale_out.server_name(name);
        self
    }

    /// See [`ScaleOutOptions::ack_timeout`]. Default: 10 s.
    pub fn ack_timeout(mut self, timeout: Duration) -> Self {
        self.scale_out = self.scale_out.ack_timeout(timeout);
        self
    }

    /// See [`ScaleOutOptions::presence_timeout`]. Default: 3 s.
    pub fn presence_timeout(mut self, timeout: Duration) -> Self {
        self.scale_out = self.scale_out.presence_timeout(timeout);
        self
    }

    /// The longest a publish may take before it fails with
    /// `BackplaneUnavailable` (for example while Redis is stalled). Also
    /// bounds each subscription change. Default: 750 ms, so a send during an
    /// outage returns within a second.
    pub fn publish_timeout(mut self, timeout: Duration) -> Self {
        self.publish_timeout = timeout;
        self
    }

    /// How long [`connect`](crate::RedisHubLifetimeManager::connect) tries to
    /// reach Redis before failing. Default: 5 s.
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// The longest pause between reconnect attempts after Redis goes away
    /// (attempts start at 50 ms and back off). Default: 2 s.
    pub fn reconnect_max_delay(mut self, delay: Duration) -> Self {
        self.reconnect_max_delay = delay;
        self
    }

    /// How many received messages may wait for the dispatcher before the
    /// oldest are dropped (counted as `backplane_lagged`). Default: 16384.
    pub fn message_capacity(mut self, capacity: usize) -> Self {
        self.message_capacity = capacity.max(16);
        self
    }

    /// See [`ScaleOutOptions::max_envelope_size`]. Default: 4 MiB.
    pub fn max_envelope_size(mut self, size: usize) -> Self {
        self.scale_out = self.scale_out.max_envelope_size(size);
        self
    }

    /// How often each Redis connection is sent a PING, so that one that
    /// died without a word (a NAT or load balancer that dropped it without
    /// a reset) is noticed. Default: 2 s.
    pub fn heartbeat_interval(mut self, interval: Duration) -> Self {
        self.heartbeat_interval = interval.max(Duration::from_millis(10));
        self
    }

    /// How long a Redis connection may leave a command (a heartbeat PING at
    /// the least) unanswered before it is treated as dead: closed,
    /// reconnected, and its subscriptions restored. With the defaults
    /// (heartbeat every 2 s, 5 s here) a silently dead connection is
    /// replaced within about 8 s, and delivery resumes within 10 s.
    /// Default: 5 s.
    pub fn unresponsive_timeout(mut self, timeout: Duration) -> Self {
        self.unresponsive_timeout = timeout.max(Duration::from_millis(10));
        self
    }

    /// See [`ScaleOutOptions::max_pending_group_commands`]. Default: 10 000.
    pub fn max_pending_group_commands(mut self, max: usize) -> Self {
        self.scale_out = self.scale_out.max_pending_group_commands(max);
        self
    }

    /// For `rediss://` URLs: trust the CA certificates in this PEM data
    /// instead of the system's trusted roots (for a private CA or a
    /// self-signed server). A server certificate that chains to neither is
    /// refused at connect with a TLS error.
    pub fn tls_root_certificates(mut self, pem: impl Into<Vec<u8>>) -> Self {
        self.tls_roots_pem = Some(pem.into());
        self
    }
}

impl fmt::Debug for RedisOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisOptions")
            .field("url", &redacted(&self.url))
            .field("scale_out", &self.scale_out)
            .field("publish_timeout", &self.publish_timeout)
            .field("connect_timeout", &self.connect_timeout)
            .field("reconnect_max_delay", &self.reconnect_max_delay)
            .field("message_capacity", &self.message_capacity)
            .field(
                "tls_root_certificates",
                &self.tls_roots_pem.as_ref().map(|pem| pem.len()),
            )
            .field("heartbeat_interval", &self.heartbeat_interval)
            .field("unresponsive_timeout", &self.unresponsive_timeout)
            .finish()
    }
}

/// `url` with the credentials before its `@` replaced by `***`, for logs,
/// errors and `Debug`.
pub(crate) fn redacted(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            format!("{}://***@{}", &url[..scheme], &url[at + 1..])
        }
        _ => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_hides_the_password() {
        for url in [
            "redis://switchboard:s3cret@127.0.0.1:6379/0",
            "rediss://:s3cret@redis.example:6380",
            "redis://user:pa@ss:s3cret@host",
        ] {
            let shown = format!("{:?}", RedisOptions::new(url));
            assert!(!shown.contains("s3cret"), "{shown}");
            assert!(shown.contains("***@"), "{shown}");
        }
        assert_eq!(redacted("redis://127.0.0.1:6379"), "redis://127.0.0.1:6379");
    }
}

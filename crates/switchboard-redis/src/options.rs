use std::fmt;
use std::time::Duration;

use switchboard_protocol::DEFAULT_MAX_ENVELOPE_SIZE;

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
    pub(crate) prefix: String,
    pub(crate) hub: String,
    pub(crate) server_name: Option<String>,
    pub(crate) ack_timeout: Duration,
    pub(crate) publish_timeout: Duration,
    pub(crate) connect_timeout: Duration,
    pub(crate) reconnect_max_delay: Duration,
    pub(crate) message_capacity: usize,
    pub(crate) max_envelope_size: usize,
    pub(crate) tls_roots_pem: Option<Vec<u8>>,
    pub(crate) heartbeat_interval: Duration,
    pub(crate) unresponsive_timeout: Duration,
    pub(crate) max_pending_group_commands: usize,
}

impl RedisOptions {
    /// Options for the Redis server at `url`:
    /// `redis://[user:password@]host[:port][/db]`, or `rediss://...` for TLS.
    pub fn new(url: impl Into<String>) -> RedisOptions {
        RedisOptions {
            url: url.into(),
            prefix: String::new(),
            hub: "hub".to_owned(),
            server_name: None,
            ack_timeout: Duration::from_secs(10),
            publish_timeout: Duration::from_millis(750),
            connect_timeout: Duration::from_secs(5),
            reconnect_max_delay: Duration::from_secs(2),
            message_capacity: 16 * 1024,
            max_envelope_size: DEFAULT_MAX_ENVELOPE_SIZE,
            tls_roots_pem: None,
            heartbeat_interval: Duration::from_secs(2),
            unresponsive_timeout: Duration::from_secs(5),
            max_pending_group_commands: 10_000,
        }
    }

    /// Prepended to every channel name, so several applications can share
    /// one Redis. May contain `:`; not `*`, `?`, `[`, `]`, `\` or spaces.
    /// Default: empty.
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// The hub's name; servers of one hub must use the same. No `:`.
    /// Default: `hub`.
    pub fn hub(mut self, hub: impl Into<String>) -> Self {
        self.hub = hub.into();
        self
    }

    /// The hub's name as configured.
    pub fn hub_name(&self) -> &str {
        &self.hub
    }

    /// This server's name on the backplane (its ack and return channels).
    /// Default: the host name and a random suffix. Must be unique among the
    /// servers of a hub.
    pub fn server_name(mut self, name: impl Into<String>) -> Self {
        self.server_name = Some(name.into());
        self
    }

    /// How long a remote group change waits for the owning server's
    /// acknowledgement. Default: 10 s.
    pub fn ack_timeout(mut self, timeout: Duration) -> Self {
        self.ack_timeout = timeout;
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

    /// The largest envelope sent or accepted, in bytes. Larger sends fail
    /// with `MessageTooLarge`; larger arrivals are dropped and counted.
    /// Default: 4 MiB.
    pub fn max_envelope_size(mut self, size: usize) -> Self {
        self.max_envelope_size = size;
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

    /// How many group changes from other servers may wait to be applied on
    /// this server (they run concurrently across connections, in order per
    /// connection). Beyond this a change is refused at once: its sender gets
    /// `GroupCommandRejected` rather than waiting for its acknowledgement
    /// timeout. Default: 10 000.
    pub fn max_pending_group_commands(mut self, max: usize) -> Self {
        self.max_pending_group_commands = max.max(1);
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
            .field("prefix", &self.prefix)
            .field("hub", &self.hub)
            .field("server_name", &self.server_name)
            .field("ack_timeout", &self.ack_timeout)
            .field("publish_timeout", &self.publish_timeout)
            .field("connect_timeout", &self.connect_timeout)
            .field("reconnect_max_delay", &self.reconnect_max_delay)
            .field("message_capacity", &self.message_capacity)
            .field("max_envelope_size", &self.max_envelope_size)
            .field(
                "tls_root_certificates",
                &self.tls_roots_pem.as_ref().map(|pem| pem.len()),
            )
            .field("heartbeat_interval", &self.heartbeat_interval)
            .field("unresponsive_timeout", &self.unresponsive_timeout)
            .field(
                "max_pending_group_commands",
                &self.max_pending_group_commands,
            )
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

use std::time::Duration;

use switchboard_channels::Channels;
use switchboard_core::{Error, Result};
use switchboard_protocol::DEFAULT_MAX_ENVELOPE_SIZE;

/// How long a presence query waits for answers by default.
pub const DEFAULT_PRESENCE_TIMEOUT: Duration = Duration::from_secs(3);

/// Settings of the [scale-out engine](crate::ScaleOutManager), whatever the
/// driver.
///
/// ```
/// use std::time::Duration;
/// use switchboard_backplane::ScaleOutOptions;
///
/// let options = ScaleOutOptions::new()
///     .prefix("myapp:")
///     .hub("chat")
///     .ack_timeout(Duration::from_secs(5));
/// assert_eq!(options.hub_name(), "chat");
/// ```
#[derive(Debug, Clone)]
pub struct ScaleOutOptions {
    pub(crate) prefix: String,
    pub(crate) hub: String,
    pub(crate) server_name: Option<String>,
    pub(crate) ack_timeout: Duration,
    pub(crate) presence_timeout: Duration,
    pub(crate) max_envelope_size: usize,
    pub(crate) max_pending_group_commands: usize,
    pub(crate) emitter: bool,
}

impl Default for ScaleOutOptions {
    fn default() -> Self {
        ScaleOutOptions::new()
    }
}

impl ScaleOutOptions {
    /// The defaults: no prefix, hub `hub`, a generated server name.
    pub fn new() -> ScaleOutOptions {
        ScaleOutOptions {
            prefix: String::new(),
            hub: "hub".to_owned(),
            server_name: None,
            ack_timeout: Duration::from_secs(10),
            presence_timeout: DEFAULT_PRESENCE_TIMEOUT,
            max_envelope_size: DEFAULT_MAX_ENVELOPE_SIZE,
            max_pending_group_commands: 10_000,
            emitter: false,
        }
    }

    /// An emitter: a process that sends to the hub's connections (all,
    /// groups, users, connections, group changes, client results) but hosts
    /// none. It does not subscribe to the broadcast channel every server
    /// listens on, so the hub's traffic never reaches it; only its own
    /// acknowledgement and return channels, which carry nothing unless it
    /// asks. Registering a connection with it is an error. Default: off.
    pub fn emitter(mut self, emitter: bool) -> Self {
        self.emitter = emitter;
        self
    }

    /// Prepended to every channel name, so several applications can share
    /// one backplane. May contain `:`; not `*`, `?`, `[`, `]`, `\` or
    /// spaces. Default: empty.
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

    /// How long a presence query (`user_connections`, `group_members`,
    /// `is_user_online`) waits for the servers that hold the subject's
    /// connections. Servers that did not answer by then are reported in
    /// [`Presence::unanswered`](switchboard_core::Presence::unanswered).
    /// Only a server that is alive to the backplane but does not answer (a
    /// frozen process, a lost network) makes a query wait this long.
    /// Default: 3 s.
    pub fn presence_timeout(mut self, timeout: Duration) -> Self {
        self.presence_timeout = timeout;
        self
    }

    /// The largest envelope sent or accepted, in bytes. Larger sends fail
    /// with `MessageTooLarge`; larger arrivals are dropped and counted.
    /// Default: 4 MiB.
    pub fn max_envelope_size(mut self, size: usize) -> Self {
        self.max_envelope_size = size;
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

    /// Checks the names: the channel naming of this prefix and hub, and the
    /// server name (the given one, or a generated one).
    pub fn validate(&self) -> Result<(Channels, String)> {
        let channels = Channels::new(&self.prefix, &self.hub).map_err(|e| Error::InvalidName {
            kind: "channel prefix or hub",
            name: format!("{}{}", self.prefix, self.hub),
            reason: e.to_string(),
        })?;
        let server_name = self.server_name.clone().unwrap_or_else(default_server_name);
        switchboard_channels::validate_server_name(&server_name).map_err(|e| {
            Error::InvalidName {
                kind: "server",
                name: server_name.clone(),
                reason: e.to_string(),
            }
        })?;
        Ok((channels, server_name))
    }
}

/// The host name (what of it is safe in a channel name) and a random
/// suffix.
fn default_server_name() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_default();
    let host: String = host
        .trim()
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_'))
        .take(64)
        .collect();
    let host = if host.is_empty() {
        "server".to_owned()
    } else {
        host
    };
    let mut suffix = switchboard_core::random_token();
    suffix.truncate(12);
    format!("{host}_{suffix}")
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn bad_names_are_refused_before_anything_connects() {
        assert!(matches!(
            ScaleOutOptions::new().hub("a:b").validate(),
            Err(Error::InvalidName { .. })
        ));
        assert!(matches!(
            ScaleOutOptions::new().prefix("app*").validate(),
            Err(Error::InvalidName { .. })
        ));
        assert!(matches!(
            ScaleOutOptions::new().server_name("a b").validate(),
            Err(Error::InvalidName { kind: "server", .. })
        ));
        let (channels, server) = ScaleOutOptions::new().hub("chat").validate().unwrap();
        assert_eq!(channels.hub(), "chat");
        assert!(!server.is_empty());
    }
}

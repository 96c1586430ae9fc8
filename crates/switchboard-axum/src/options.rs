use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use switchboard_core::{DEFAULT_QUEUE_CAPACITY, SlowConsumerPolicy};
use switchboard_session::SessionOptions;

use crate::auth::Authenticator;

/// The longest any timeout or interval is taken to be (a year): longer
/// ones are cut to it, so that adding one to the clock never overflows.
const MAX_WAIT: Duration = Duration::from_secs(365 * 24 * 3600);

/// Settings of a SignalR endpoint: timeouts, limits and authentication.
///
/// Every setting has a default matching ASP.NET Core SignalR where it has
/// one; change only what you need.
///
/// ```
/// use std::time::Duration;
/// use switchboard_axum::SignalROptions;
///
/// let options = SignalROptions::default()
///     .keep_alive_interval(Duration::from_secs(10))
///     .client_timeout(Duration::from_secs(20))
///     .max_message_size(64 * 1024);
/// # let _ = options;
/// ```
#[derive(Clone)]
pub struct SignalROptions {
    pub(crate) keep_alive_interval: Duration,
    pub(crate) client_timeout: Duration,
    pub(crate) handshake_timeout: Duration,
    pub(crate) max_message_size: usize,
    pub(crate) queue_capacity: usize,
    pub(crate) slow_consumer: SlowConsumerPolicy,
    pub(crate) token_lifetime: Duration,
    pub(crate) max_pending_tokens: usize,
    pub(crate) authenticator: Option<Arc<dyn Authenticator>>,
    pub(crate) websockets: bool,
    pub(crate) server_sent_events: bool,
    pub(crate) long_polling: bool,
    pub(crate) long_poll_timeout: Duration,
    pub(crate) stateful_reconnect: bool,
    pub(crate) stateful_reconnect_buffer_size: usize,
    pub(crate) stateful_reconnect_window: Duration,
}

impl Default for SignalROptions {
    fn default() -> Self {
        SignalROptions {
            keep_alive_interval: Duration::from_secs(15),
            client_timeout: Duration::from_secs(30),
            handshake_timeout: Duration::from_secs(15),
            max_message_size: 32 * 1024,
            queue_capacity: DEFAULT_QUEUE_CAPACITY,
            slow_consumer: SlowConsumerPolicy::default(),
            token_lifetime: Duration::from_secs(60),
            max_pending_tokens: 100_000,
            authenticator: None,
            websockets: true,
            server_sent_events: true,
            long_polling: true,
            long_poll_timeout: Duration::from_secs(90),
            stateful_reconnect: true,
            stateful_reconnect_buffer_size: 100_000,
            stateful_reconnect_window: Duration::from_secs(15),
        }
    }
}

impl SignalROptions {
    /// What every session of the endpoint is given.
    pub(crate) fn session_options(&self) -> SessionOptions {
        SessionOptions::default()
            .keep_alive_interval(self.keep_alive_interval)
            .client_timeout(self.client_timeout)
            .handshake_timeout(self.handshake_timeout)
            .max_message_size(self.max_message_size)
            .queue_capacity(self.queue_capacity)
            .slow_consumer(self.slow_consumer)
            .stateful_reconnect_buffer_size(self.stateful_reconnect_buffer_size)
            .stateful_reconnect_window(self.stateful_reconnect_window)
    }
}

impl fmt::Debug for SignalROptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SignalROptions")
            .field("keep_alive_interval", &self.keep_alive_interval)
            .field("client_timeout", &self.client_timeout)
            .field("handshake_timeout", &self.handshake_timeout)
            .field("max_message_size", &self.max_message_size)
            .field("queue_capacity", &self.queue_capacity)
            .field("slow_consumer", &self.slow_consumer)
            .field("token_lifetime", &self.token_lifetime)
            .field("max_pending_tokens", &self.max_pending_tokens)
            .field("authenticator", &self.authenticator.is_some())
            .field("websockets", &self.websockets)
            .field("server_sent_events", &self.server_sent_events)
            .field("long_polling", &self.long_polling)
            .field("long_poll_timeout", &self.long_poll_timeout)
            .field("stateful_reconnect", &self.stateful_reconnect)
            .field(
                "stateful_reconnect_buffer_size",
                &self.stateful_reconnect_buffer_size,
            )
            .field("stateful_reconnect_window", &self.stateful_reconnect_window)
            .finish()
    }
}

impl SignalROptions {
    /// Options with every default; the same as `SignalROptions::default()`.
    pub fn new() -> SignalROptions {
        SignalROptions::default()
    }

    /// How long the server may send nothing before it sends a Ping, so the
    /// client knows it is alive. Default: 15 s. Keep it well below the
    /// clients' server timeout (30 s in the official clients).
    pub fn keep_alive_interval(mut self, interval: Duration) -> Self {
        self.keep_alive_interval = interval.clamp(Duration::from_millis(1), MAX_WAIT);
        self
    }

    /// How long a client may send nothing (no message, no Ping, no frame of
    /// any kind) before the server closes it with the error "Server timeout
    /// elapsed without receiving a message from the client.". Also the
    /// longest the server waits for the client to accept a write. Default:
    /// 30 s, twice the official clients' keep-alive interval.
    pub fn client_timeout(mut self, timeout: Duration) -> Self {
        self.client_timeout = timeout.clamp(Duration::from_millis(1), MAX_WAIT);
        self
    }

    /// How long a client has to complete the handshake after the WebSocket
    /// opens. Default: 15 s.
    pub fn handshake_timeout(mut self, timeout: Duration) -> Self {
        self.handshake_timeout = timeout.clamp(Duration::from_millis(1), MAX_WAIT);
        self
    }

    /// The largest hub message (and handshake) a client may send, in bytes,
    /// not counting its separator or length prefix. A larger message, or an
    /// unfinished one that already exceeds it, closes the connection with a
    /// Close message that says so. Default: 32 KiB, as in SignalR.
    pub fn max_message_size(mut self, size: usize) -> Self {
        self.max_message_size = size.max(1);
        self
    }

    /// How many frames each connection's outbound queue holds (at least 1).
    /// Default: [`DEFAULT_QUEUE_CAPACITY`].
    pub fn queue_capacity(mut self, capacity: usize) -> Self {
        self.queue_capacity = capacity.max(1);
        self
    }

    /// What happens when a connection's outbound queue is full. Default:
    /// [`SlowConsumerPolicy::Close`].
    pub fn slow_consumer(mut self, policy: SlowConsumerPolicy) -> Self {
        self.slow_consumer = policy;
        self
    }

    /// How long a connection token handed out by negotiate stays valid if
    /// no WebSocket uses it. Default: 60 s.
    pub fn negotiate_token_lifetime(mut self, lifetime: Duration) -> Self {
        self.token_lifetime = lifetime.min(MAX_WAIT);
        self
    }

    /// How many unused connection tokens are kept at most (at least 1);
    /// beyond that the oldest are forgotten. Default: 100 000.
    pub fn max_pending_tokens(mut self, max: usize) -> Self {
        self.max_pending_tokens = max.max(1);
        self
    }

    /// Authenticates every negotiate and WebSocket request; see
    /// [`Authenticator`]. Default: none, every client is anonymous.
    pub fn authenticator(mut self, authenticator: impl Authenticator) -> Self {
        self.authenticator = Some(Arc::new(authenticator));
        self
    }

    /// Whether clients may connect over WebSockets. Default: on.
    pub fn websockets(mut self, enabled: bool) -> Self {
        self.websockets = enabled;
        self
    }

    /// Whether clients may connect over Server-Sent Events (text hub
    /// protocols only). Default: on.
    pub fn server_sent_events(mut self, enabled: bool) -> Self {
        self.server_sent_events = enabled;
        self
    }

    /// Whether clients may connect over long polling. Default: on.
    pub fn long_polling(mut self, enabled: bool) -> Self {
        self.long_polling = enabled;
        self
    }

    /// How long a long poll waits for frames before it is answered empty
    /// (and the client polls again). Default: 90 s, as ASP.NET Core. The
    /// keep-alive Ping ends an idle poll sooner.
    pub fn long_poll_timeout(mut self, timeout: Duration) -> Self {
        self.long_poll_timeout = timeout.clamp(Duration::from_millis(1), MAX_WAIT);
        self
    }

    /// Whether clients that ask for it (`withStatefulReconnect()` in the
    /// official clients) get stateful reconnect: their WebSocket connection
    /// survives a dropped socket. Both sides number their messages, keep
    /// what the other has not acknowledged, and when the client reconnects
    /// with the same connection token within the
    /// [reconnect window](Self::stateful_reconnect_window) each side replays
    /// what the other missed, so no message is lost or doubled. While the
    /// socket is away the connection keeps its id, its groups and its user,
    /// and messages sent to it wait in its queue (bounded as always by
    /// [`queue_capacity`](Self::queue_capacity) and the
    /// [slow-consumer policy](Self::slow_consumer)). Clients that do not
    /// ask, and the Server-Sent Events and long-polling transports, are
    /// served as before. Default: on.
    pub fn stateful_reconnect(mut self, enabled: bool) -> Self {
        self.stateful_reconnect = enabled;
        self
    }

    /// The most bytes of sent messages a stateful-reconnect connection
    /// keeps until the client acknowledges them. When it holds that much,
    /// the server sends the connection nothing more until an Ack frees
    /// room; meanwhile its queue fills, and a client that stops
    /// acknowledging is in the end closed by the slow-consumer policy.
    /// Default: 100 000, as ASP.NET Core's `StatefulReconnectBufferSize`.
    pub fn stateful_reconnect_buffer_size(mut self, bytes: usize) -> Self {
        self.stateful_reconnect_buffer_size = bytes.max(1);
        self
    }

    /// How long a stateful-reconnect connection whose socket dropped waits
    /// for its client to reconnect; after that it is disconnected as any
    /// other (the hub's disconnect hook runs, it leaves its groups).
    /// Default: 15 s, as ASP.NET Core's `DisconnectTimeout`.
    pub fn stateful_reconnect_window(mut self, window: Duration) -> Self {
        self.stateful_reconnect_window = window.min(MAX_WAIT);
        self
    }
}

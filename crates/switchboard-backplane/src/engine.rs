//! The scale-out engine: everything a hub spread over many servers needs
//! that is not the backplane itself.

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;
use parking_lot::Mutex;
use switchboard_channels::{ChannelKind, Channels};
use switchboard_core::protocol::{Completion, Outcome, Protocol, RawValue};
use switchboard_core::{
    ClientResponse, Connection, ConnectionId, ConnectionStore, Error, Health, HubLifetimeManager,
    InvokeOptions, ManagerStats, PendingInvocations, Presence, Recipients, Result, ResultSender,
    SendKind, SerializedMessage, clamp_limit, outcome_to_result, wait_for_response,
};
use switchboard_protocol as wire;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::commands::{CommandQueue, Submitted};
use crate::driver::{BackplaneDriver, DriverEvent, DriverEvents};
use crate::options::ScaleOutOptions;
use crate::outgoing::{Outgoing, Publish};
use crate::presence::{Gatherings, MAX_ANSWERING};
use crate::subscriptions::{Op, Subscriptions, applied};

/// The most client-result calls of local connections, started on other
/// servers, held at once; a call beyond that is answered with an error.
const MAX_FORWARDED_RESULTS: usize = 100_000;

/// How long past its caller's timeout a forwarded client-result call is
/// kept: the caller's cancellation normally arrives first; this bounds the
/// call when that message is lost.
const FORWARD_MARGIN: Duration = Duration::from_secs(5);

/// How often the maintenance task looks for subscriptions to restore and
/// forwarded calls to expire.
const MAINTENANCE_TICK: Duration = Duration::from_millis(500);

/// A [`HubLifetimeManager`] that spans every server on one backplane,
/// whatever carries it: the driver `D`.
///
/// See the [crate documentation](crate) for how it works. A cheap-to-clone
/// handle; call [`ScaleOutManager::shutdown`] to stop its background tasks
/// and close the driver.
pub struct ScaleOutManager<D: BackplaneDriver> {
    inner: Arc<Inner<D>>,
}

impl<D: BackplaneDriver> Clone for ScaleOutManager<D> {
    fn clone(&self) -> Self {
        ScaleOutManager {
            inner: self.inner.clone(),
        }
    }
}

/// A driver's settings, from which it connects: lets
/// [`ScaleOutManager::connect`] validate the engine's settings, connect the
/// driver and start the engine in one call.
#[async_trait]
pub trait DriverConfig: Send + Sized {
    /// The driver these settings make.
    type Driver: BackplaneDriver;

    /// The engine's settings carried along.
    fn scale_out(&self) -> &ScaleOutOptions;

    /// Connects the driver.
    async fn connect(self) -> Result<Self::Driver>;
}

struct Inner<D: BackplaneDriver> {
    /// Unique per server: the suffix of this server's ack and return channels.
    server_name: String,
    /// Channel names for this prefix and hub.
    channels: Channels,
    /// Timeouts and limits.
    options: ScaleOutOptions,
    /// Carries every message between servers.
    driver: Arc<D>,
    /// The local connections, groups and users.
    store: ConnectionStore,
    /// Held while a membership change is made in `store` and its
    /// subscription op is queued, so ops reach the driver in the order of
    /// the changes. Never held across `.await`.
    membership: Mutex<()>,
    /// The ordered subscription queue.
    subscriptions: Subscriptions,
    /// Client-result invocations started on this server, by invocation id.
    results: PendingInvocations<ResultSender>,
    /// Client-result invocations of local connections started on other
    /// servers: where to send the answer, and until when. Bounded by
    /// [`MAX_FORWARDED_RESULTS`]; entries leave when the client answers,
    /// disconnects, the caller cancels, or they expire.
    forwarded: PendingInvocations<Forwarded>,
    /// Remote group commands waiting for their Ack: id -> the owner's answer.
    acks: Mutex<HashMap<u64, oneshot::Sender<wire::Ack>>>,
    /// The next group command or presence query id.
    next_ack: AtomicU64,
    /// Presence queries asked here, gathering their answers.
    presence: Gatherings,
    /// Presence queries from other servers being answered now (bounded by
    /// [`MAX_ANSWERING`]).
    answering: AtomicUsize,
    /// Group commands from other servers being applied: concurrently across
    /// connections, in order per connection, bounded.
    commands: CommandQueue,
    /// Publishes of non-blocking invocations' sends, in order, not waited
    /// for.
    outgoing: Outgoing,
    /// Backplane counters.
    counters: Counters,
    /// Cancelled by `shutdown`: background tasks end.
    shutdown: CancellationToken,
    /// The background tasks, ended on shutdown.
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

/// Whether a send waits for the backplane's answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// It returns once the backplane answered, and reports a failure.
    Confirmed,
    /// It may return once queued (see [`crate::outgoing`]).
    Queued,
}

/// Who an invocation goes to, as the engine sends it.
#[derive(Debug, Clone, Copy)]
enum To<'a> {
    /// Every connection but the excluded ones.
    All(&'a [ConnectionId]),
    Connection(&'a str),
    Connections(&'a [ConnectionId]),
    /// A group's members but the excluded ones.
    Group(&'a str, &'a [ConnectionId]),
    Groups(&'a [String]),
    User(&'a str),
    Users(&'a [String]),
}

/// A client-result call of a local connection, started on another server.
#[derive(Debug)]
struct Forwarded {
    /// The server whose return channel gets the answer.
    reply_server: String,
    /// When to forget the call if nobody ends it first; `None` when the
    /// caller set no timeout.
    expires: Option<Instant>,
}

#[derive(Debug, Default)]
struct Counters {
    published: AtomicU64,
    received: AtomicU64,
    malformed: AtomicU64,
    oversize: AtomicU64,
    lagged: AtomicU64,
    publish_errors: AtomicU64,
    /// `Connected` events that followed a `Disconnected` one.
    reconnects: AtomicU64,
    /// Set by `Disconnected`, cleared by the `Connected` that follows.
    link_lost: std::sync::atomic::AtomicBool,
    /// Peer requests refused for a full queue or table (rate-limits their
    /// warnings).
    refused: AtomicU64,
    /// Client results that could not be forwarded (rate-limits their
    /// warnings).
    unforwarded: AtomicU64,
    /// When the last publish succeeded: nanoseconds since `started`, plus
    /// one (0: never).
    last_publish: AtomicU64,
    /// What `last_publish` counts from.
    started: Option<Instant>,
}

impl Counters {
    fn new() -> Counters {
        Counters {
            started: Some(Instant::now()),
            ..Counters::default()
        }
    }

    fn published_now(&self) {
        if let Some(started) = self.started {
            let since = u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX - 1);
            self.last_publish.store(since + 1, Ordering::Relaxed);
        }
    }

    fn since_last_publish(&self) -> Option<Duration> {
        let at = self.last_publish.load(Ordering::Relaxed).checked_sub(1)?;
        let started = self.started?;
        Some(started.elapsed().saturating_sub(Duration::from_nanos(at)))
    }
}

fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

/// The channels a server listens on whatever its connections: the
/// broadcast channel (not for an emitter, which hosts no connections) and
/// its own acknowledgement and return channels.
fn fixed_channels(channels: &Channels, server_name: &str, emitter: bool) -> Vec<String> {
    let mut fixed = Vec::with_capacity(3);
    if !emitter {
        fixed.push(channels.all());
    }
    fixed.push(channels.ack(server_name));
    fixed.push(channels.client_return(server_name));
    fixed
}

impl<D: BackplaneDriver> fmt::Debug for ScaleOutManager<D> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ScaleOutManager")
            .field("driver", &std::any::type_name::<D>())
            .field("server_name", &self.inner.server_name)
            .field("hub", &self.inner.channels.hub())
            .field("connections", &self.inner.store.len())
            .finish()
    }
}

impl<D: BackplaneDriver> ScaleOutManager<D> {
    /// Validates the engine's settings, connects the driver, and starts the
    /// engine on it.
    ///
    /// Fails with [`Error::InvalidName`] or [`Error::InvalidConfig`] for
    /// bad settings (before connecting anything), and with the driver's
    /// error (usually [`Error::BackplaneUnavailable`]) when it cannot
    /// connect.
    pub async fn connect<C: DriverConfig<Driver = D>>(config: C) -> Result<ScaleOutManager<D>> {
        let options = config.scale_out().clone();
        options.validate()?;
        let driver = config.connect().await?;
        ScaleOutManager::start(driver, options).await
    }

    /// Starts the engine on a connected driver: subscribes to the channels
    /// every server listens on, then serves.
    ///
    /// Fails with [`Error::InvalidName`] for bad names, and with
    /// [`Error::BackplaneUnavailable`] when those subscriptions cannot be
    /// made (the driver is shut down then).
    pub async fn start(driver: D, options: ScaleOutOptions) -> Result<ScaleOutManager<D>> {
        let (channels, server_name) = match options.validate() {
            Ok(names) => names,
            Err(e) => {
                driver.shutdown().await;
                return Err(e);
            }
        };
        let driver = Arc::new(driver);
        // Taken before any subscription, so nothing published after one is
        // live can be missed.
        let events = driver.events();
        let (subscriptions, worker) = Subscriptions::start(driver.clone());
        // The channels every server always listens on. They go through the
        // same ordered queue as every other subscription and are restored
        // with the rest after a reconnect.
        let fixed = fixed_channels(&channels, &server_name, options.emitter);
        if !applied(vec![subscriptions.queue(Op::Resync(fixed))]).await {
            worker.abort();
            driver.shutdown().await;
            return Err(Error::BackplaneUnavailable {
                reason: "cannot subscribe to the hub's channels".to_owned(),
                source: None,
            });
        }
        let commands = CommandQueue::new(options.max_pending_group_commands);
        let mut publisher = None;
        let inner = Arc::new_cyclic(|weak: &Weak<Inner<D>>| {
            let weak = weak.clone();
            let publish: Publish = Arc::new(move |channel, envelope| {
                let inner = weak.upgrade();
                Box::pin(async move {
                    match inner {
                        Some(inner) => inner.publish_now(channel, envelope).await,
                        None => Err(Error::Shutdown),
                    }
                })
            });
            let (outgoing, task) = Outgoing::start(publish);
            publisher = Some(tokio::spawn(task));
            Inner {
                server_name,
                channels,
                options,
                driver,
                store: ConnectionStore::new(),
                membership: Mutex::new(()),
                subscriptions,
                results: PendingInvocations::new(),
                forwarded: PendingInvocations::new(),
                acks: Mutex::new(HashMap::new()),
                next_ack: AtomicU64::new(1),
                presence: Gatherings::default(),
                answering: AtomicUsize::new(0),
                commands,
                outgoing,
                counters: Counters::new(),
                shutdown: CancellationToken::new(),
                tasks: Mutex::new(Vec::new()),
            }
        });
        let weak = Arc::downgrade(&inner);
        let tasks = vec![
            worker,
            publisher.expect("made by new_cyclic"),
            tokio::spawn(pump(weak.clone(), events, inner.shutdown.clone())),
            tokio::spawn(maintain(weak, inner.shutdown.clone())),
        ];
        inner.tasks.lock().extend(tasks);
        tracing::info!(server = %inner.server_name, hub = %inner.channels.hub(), "joined the backplane");
        Ok(ScaleOutManager { inner })
    }

    /// This server's name on the backplane.
    pub fn server_name(&self) -> &str {
        &self.inner.server_name
    }

    /// The channel names this manager uses.
    pub fn channels(&self) -> &Channels {
        &self.inner.channels
    }

    /// The local connection store.
    pub fn store(&self) -> &ConnectionStore {
        &self.inner.store
    }

    /// The driver this engine runs on.
    pub fn driver(&self) -> &D {
        &self.inner.driver
    }

    /// Whether the backplane is reachable right now.
    pub fn is_connected(&self) -> bool {
        self.inner.driver.is_connected()
    }

    /// Stops the background tasks, fails pending client results with
    /// [`Error::Shutdown`], and shuts the driver down.
    pub async fn shutdown(&self) {
        let inner = &self.inner;
        // Sends that returned once queued are published first.
        inner.outgoing.flush().await;
        inner.shutdown.cancel();
        for (_, waiter) in inner.results.drain() {
            let _ = waiter.send(Err(Error::Shutdown));
        }
        inner.driver.shutdown().await;
        for task in inner.tasks.lock().drain(..) {
            task.abort();
        }
    }
}

impl<D: BackplaneDriver> Drop for Inner<D> {
    fn drop(&mut self) {
        self.shutdown.cancel();
        for task in self.tasks.get_mut().drain(..) {
            task.abort();
        }
        let driver = self.driver.clone();
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            handle.spawn(async move { driver.shutdown().await });
        }
    }
}

fn to_wire_messages(message: &SerializedMessage) -> Vec<wire::SerializedMessage> {
    message
        .iter()
        .map(|(protocol, frame)| wire::SerializedMessage {
            protocol: protocol.name().to_owned(),
            payload: frame.clone(),
        })
        .collect()
}

fn from_wire_messages(messages: Vec<wire::SerializedMessage>) -> SerializedMessage {
    let mut message = SerializedMessage::new();
    for m in messages {
        if let Some(protocol) = Protocol::from_name(&m.protocol) {
            message.insert(protocol, m.payload);
        }
    }
    message
}

fn invocation_envelope(message: &SerializedMessage, excluded: &[ConnectionId]) -> Bytes {
    wire::encode_body(wire::Body::Invocation(wire::Invocation {
        messages: to_wire_messages(message),
        excluded_connection_ids: excluded.iter().map(|id| id.to_string()).collect(),
        ..wire::Invocation::default()
    }))
}

/// A client-result invocation for another server: the answer goes to
/// `reply_server`, whose caller waits at most `timeout`.
fn result_invocation_envelope(
    message: &SerializedMessage,
    invocation_id: &str,
    reply_server: &str,
    timeout: Option<Duration>,
) -> Bytes {
    wire::encode_body(wire::Body::Invocation(wire::Invocation {
        messages: to_wire_messages(message),
        excluded_connection_ids: Vec::new(),
        invocation_id: invocation_id.to_owned(),
        reply_server: reply_server.to_owned(),
        result_timeout_ms: timeout.map_or(0, |t| {
            u64::try_from(t.as_millis()).unwrap_or(u64::MAX).max(1)
        }),
    }))
}

impl<D: BackplaneDriver> Inner<D> {
    /// Publishes one envelope and waits for the answer; returns how many
    /// servers received it, when the driver knows.
    async fn publish(&self, channel: String, envelope: Bytes) -> Result<Option<u64>> {
        self.check_size(&envelope)?;
        if self.outgoing.has_waiting() {
            // Behind the queued publishes, so it cannot overtake them.
            self.outgoing.publish_behind(channel, envelope).await
        } else {
            self.publish_now(channel, envelope).await
        }
    }

    /// Publishes one envelope without waiting for the answer, in a burst of
    /// sends and while the publish queue is healthy; else as
    /// [`Inner::publish`].
    async fn publish_queued(&self, channel: String, envelope: Bytes) -> Result<()> {
        self.check_size(&envelope)?;
        let result = if self.outgoing.in_burst() {
            match self
                .outgoing
                .try_queue(self.driver.is_connected(), channel, envelope)
            {
                Ok(()) => Ok(()),
                Err((channel, envelope)) => self.publish(channel, envelope).await.map(drop),
            }
        } else {
            self.publish(channel, envelope).await.map(drop)
        };
        self.outgoing.sent();
        result
    }

    fn check_size(&self, envelope: &Bytes) -> Result<()> {
        if envelope.len() > self.options.max_envelope_size {
            return Err(Error::MessageTooLarge {
                size: envelope.len(),
                limit: self.options.max_envelope_size,
            });
        }
        Ok(())
    }

    /// Hands one envelope to the driver now, and counts the outcome.
    async fn publish_now(&self, channel: String, envelope: Bytes) -> Result<Option<u64>> {
        let started = Instant::now();
        let published = self.driver.publish(channel, envelope).await;
        metrics::histogram!(switchboard_core::metrics::BACKPLANE_PUBLISH_DURATION)
            .record(started.elapsed().as_secs_f64());
        match published {
            Ok(receivers) => {
                bump(&self.counters.published);
                self.counters.published_now();
                self.outgoing.note_success();
                Ok(receivers)
            }
            Err(e) => {
                bump(&self.counters.publish_errors);
                self.outgoing.note_failure();
                Err(e)
            }
        }
    }

    async fn publish_invocation(
        &self,
        channel: String,
        message: &SerializedMessage,
        excluded: &[ConnectionId],
        mode: Mode,
    ) -> Result<()> {
        let envelope = invocation_envelope(message, excluded);
        match mode {
            Mode::Confirmed => self.publish(channel, envelope).await.map(drop),
            Mode::Queued => self.publish_queued(channel, envelope).await,
        }
    }

    /// Publishes the same invocation on several channels, pipelined.
    async fn publish_many(
        &self,
        channels: Vec<String>,
        message: &SerializedMessage,
        mode: Mode,
    ) -> Result<()> {
        let envelope = invocation_envelope(message, &[]);
        if mode == Mode::Queued {
            for channel in channels {
                self.publish_queued(channel, envelope.clone()).await?;
            }
            return Ok(());
        }
        let sends = channels
            .into_iter()
            .map(|channel| self.publish(channel, envelope.clone()));
        for result in futures::future::join_all(sends).await {
            result?;
        }
        Ok(())
    }

    /// Sends an invocation to `to`: at once to connections held here,
    /// through the backplane for the rest.
    async fn send_to(&self, to: To<'_>, message: &SerializedMessage, mode: Mode) -> Result<()> {
        match to {
            To::All(excluded) => {
                self.store.count_sends(SendKind::All, 1);
                self.publish_invocation(self.channels.all(), message, excluded, mode)
                    .await
            }
            To::Connection(connection_id) => {
                self.store.count_sends(SendKind::Connection, 1);
                // A local connection is served directly: no round trip
                // through the backplane.
                if self.store.deliver_connection(connection_id, message) {
                    return Ok(());
                }
                self.publish_invocation(self.channels.connection(connection_id), message, &[], mode)
                    .await
            }
            To::Connections(connection_ids) => {
                self.store
                    .count_sends(SendKind::Connection, connection_ids.len());
                let remote: Vec<String> = connection_ids
                    .iter()
                    .filter(|id| !self.store.deliver_connection(id, message))
                    .map(|id| self.channels.connection(id))
                    .collect();
                if remote.is_empty() {
                    return Ok(());
                }
                self.publish_many(remote, message, mode).await
            }
            To::Group(group, excluded) => {
                self.store.count_sends(SendKind::Group, 1);
                self.publish_invocation(self.channels.group(group), message, excluded, mode)
                    .await
            }
            To::Groups(groups) => {
                self.store.count_sends(SendKind::Group, groups.len());
                let channels = groups.iter().map(|g| self.channels.group(g)).collect();
                self.publish_many(channels, message, mode).await
            }
            To::User(user) => {
                self.store.count_sends(SendKind::User, 1);
                self.publish_invocation(self.channels.user(user), message, &[], mode)
                    .await
            }
            To::Users(users) => {
                self.store.count_sends(SendKind::User, users.len());
                let channels = users.iter().map(|u| self.channels.user(u)).collect();
                self.publish_many(channels, message, mode).await
            }
        }
    }

    /// Adds a local connection to a group, subscribing on the first member.
    /// `None` if the connection is not local.
    async fn add_local(&self, connection_id: &str, group: &str) -> Option<Result<()>> {
        let wait = {
            let _order = self.membership.lock();
            match self.store.add_to_group(connection_id, group) {
                Ok(change) if change.group_transition => Some(
                    self.subscriptions
                        .queue(Op::Subscribe(self.channels.group(group))),
                ),
                // Another member came first; the subscription it started
                // may still be on its way to the backplane: this join, too, returns
                // only once it is live.
                Ok(_) => self
                    .subscriptions
                    .busy()
                    .then(|| self.subscriptions.queue(Op::Barrier)),
                Err(Error::ConnectionNotFound { .. }) => return None,
                Err(e) => return Some(Err(e)),
            }
        };
        if let Some(wait) = wait {
            if !applied(vec![wait]).await {
                tracing::warn!(
                    group,
                    "group subscription pending until the backplane answers"
                );
            }
        }
        Some(Ok(()))
    }

    /// Removes a local connection from a group, unsubscribing after the last
    /// member. `None` if the connection is not local.
    async fn remove_local(&self, connection_id: &str, group: &str) -> Option<Result<()>> {
        let wait = {
            let _order = self.membership.lock();
            match self.store.remove_from_group(connection_id, group) {
                Ok(change) => change.group_transition.then(|| {
                    self.subscriptions
                        .queue(Op::Unsubscribe(self.channels.group(group)))
                }),
                Err(Error::ConnectionNotFound { .. }) => return None,
                Err(e) => return Some(Err(e)),
            }
        };
        if let Some(wait) = wait {
            applied(vec![wait]).await;
        }
        Some(Ok(()))
    }

    /// Asks the server holding `connection_id` to change its groups and
    /// waits for the acknowledgement.
    async fn group_command(
        &self,
        connection_id: &str,
        group: &str,
        action: wire::Action,
    ) -> Result<()> {
        let id = self.next_ack.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        self.acks.lock().insert(id, tx);
        let _cleanup = AckGuard {
            acks: &self.acks,
            id,
        };
        let envelope = wire::encode_body(wire::Body::GroupCommand(wire::GroupCommand {
            id,
            server: self.server_name.clone(),
            action: action as i32,
            group: group.to_owned(),
            connection_id: connection_id.to_owned(),
        }));
        let receivers = self
            .publish(self.channels.connection(connection_id), envelope)
            .await?;
        let adding = action == wire::Action::Add;
        if receivers == Some(0) {
            // No server holds the connection.
            return Err(Error::ConnectionNotFound {
                connection_id: connection_id.to_owned(),
            });
        }
        match tokio::time::timeout(self.options.ack_timeout, rx).await {
            Ok(Ok(ack)) => ack_result(ack, adding, connection_id),
            Ok(Err(_)) => Err(Error::Shutdown),
            Err(_) => Err(Error::AckTimeout {
                action: if adding { "add" } else { "remove" },
                connection_id: connection_id.to_owned(),
                group: group.to_owned(),
                timeout: self.options.ack_timeout,
            }),
        }
    }

    /// Asks the servers holding connections of a user or group for them:
    /// the query goes out on its channel, so exactly those servers receive
    /// it, and the receiver count says how many answers to wait for.
    async fn query_presence(
        &self,
        subject: wire::Subject,
        name: &str,
        limit: usize,
    ) -> Result<Presence> {
        let limit = clamp_limit(limit);
        let channel = match subject {
            wire::Subject::Group => self.channels.group(name),
            _ => self.channels.user(name),
        };
        let id = self.next_ack.fetch_add(1, Ordering::Relaxed);
        let finished = self.presence.start(id, limit);
        let _forget = ForgetOnDrop {
            gatherings: &self.presence,
            id,
        };
        let envelope = wire::encode_body(wire::Body::PresenceQuery(wire::PresenceQuery {
            id,
            server: self.server_name.clone(),
            subject: subject.into(),
            name: name.to_owned(),
            limit: u32::try_from(limit).unwrap_or(u32::MAX),
        }));
        match self.publish(channel, envelope).await? {
            // No server holds any.
            Some(0) => {}
            Some(receivers) => {
                self.presence.expect(id, receivers);
                let _ = tokio::time::timeout(self.options.presence_timeout, finished).await;
            }
            // The driver cannot say how many servers received it: what
            // arrives in the time allowed is the answer.
            None => tokio::time::sleep(self.options.presence_timeout).await,
        }
        Ok(self.presence.finish(id))
    }

    /// Answers another server's presence query with this server's part,
    /// from a task of its own; refused (no answer, counted) when too many
    /// are being answered.
    fn answer_presence(self: &Arc<Self>, query: wire::PresenceQuery, presence: Presence) {
        if self.answering.fetch_add(1, Ordering::AcqRel) >= MAX_ANSWERING {
            self.answering.fetch_sub(1, Ordering::AcqRel);
            bump(&self.counters.refused);
            rate_limited_warn(&self.counters.refused, || {
                tracing::warn!(
                    limit = MAX_ANSWERING,
                    "too many presence queries from other servers; leaving some unanswered (warned once per 1024)"
                );
            });
            return;
        }
        let inner = self.clone();
        tokio::spawn(async move {
            let envelope = wire::encode_body(wire::Body::PresenceReply(wire::PresenceReply {
                id: query.id,
                connection_ids: presence
                    .connections
                    .iter()
                    .map(|id| id.to_string())
                    .collect(),
                count: presence.count,
            }));
            if let Err(e) = inner
                .publish(inner.channels.ack(&query.server), envelope)
                .await
            {
                tracing::debug!(error = %e, server = %query.server, "could not answer a presence query");
            }
            inner.answering.fetch_sub(1, Ordering::AcqRel);
        });
    }

    /// Sends a client-result answer to the server waiting for it.
    async fn send_result(&self, reply_server: &str, invocation_id: &str, outcome: wire::Outcome) {
        let envelope = wire::encode_body(wire::Body::ClientResult(wire::ClientResult {
            invocation_id: invocation_id.to_owned(),
            outcome: Some(outcome),
        }));
        if let Err(e) = self
            .publish(self.channels.client_return(reply_server), envelope)
            .await
        {
            bump(&self.counters.unforwarded);
            rate_limited_warn(&self.counters.unforwarded, || {
                tracing::warn!(%invocation_id, reply_server, error = %e, "could not forward a client result (warned once per 1024)");
            });
        }
    }

    /// Sends client-result answers from a task of their own, so that
    /// nothing that drops the caller's future (a connection's reader that
    /// ends) can lose them between taking the call and publishing.
    fn spawn_results(self: &Arc<Self>, answers: Vec<(String, String, wire::Outcome)>) {
        if answers.is_empty() {
            return;
        }
        let inner = self.clone();
        tokio::spawn(async move {
            let sends = answers
                .iter()
                .map(|(reply_server, invocation_id, outcome)| {
                    inner.send_result(reply_server, invocation_id, outcome.clone())
                });
            futures::future::join_all(sends).await;
        });
    }

    /// Tells the server holding `connection_id` that the caller of
    /// `invocation_id` gave up, from a task of its own. Called from `Drop`,
    /// so possibly outside a runtime (one shutting down): then nothing is
    /// sent, and the owner forgets the call when it expires.
    fn spawn_cancel(self: &Arc<Self>, connection_id: &str, invocation_id: &str) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let inner = self.clone();
        let channel = self.channels.connection(connection_id);
        let envelope = wire::encode_body(wire::Body::CancelInvocation(wire::CancelInvocation {
            invocation_id: invocation_id.to_owned(),
            connection_id: connection_id.to_owned(),
        }));
        runtime.spawn(async move {
            if let Err(e) = inner.publish(channel, envelope).await {
                // The owner forgets the call when it expires.
                tracing::debug!(error = %e, "could not tell the owner that a client-result call was given up");
            }
        });
    }

    /// Forgets forwarded client-result calls past their expiry.
    fn expire_forwarded(&self) {
        let now = Instant::now();
        let expired = self
            .forwarded
            .take_where(|call| call.expires.is_some_and(|at| at <= now));
        if !expired.is_empty() {
            tracing::debug!(
                expired = expired.len(),
                "forgot client-result calls whose callers stopped waiting"
            );
        }
    }

    /// Every channel this server must be subscribed to now.
    fn wanted_channels(&self) -> Vec<String> {
        let mut wanted = fixed_channels(&self.channels, &self.server_name, self.options.emitter);
        wanted.extend(
            self.store
                .connection_ids()
                .iter()
                .map(|id| self.channels.connection(id)),
        );
        wanted.extend(
            self.store
                .group_names()
                .iter()
                .map(|g| self.channels.group(g)),
        );
        wanted.extend(
            self.store
                .user_names()
                .iter()
                .map(|u| self.channels.user(u)),
        );
        wanted
    }

    /// Queues a subscription of every wanted channel (one at a time: see
    /// [`Subscriptions::queue_full_resync`]).
    fn resync(&self) {
        let _order = self.membership.lock();
        self.subscriptions
            .queue_full_resync(|| self.wanted_channels());
    }

    /// Subscribes again to those of `channels` this server still needs:
    /// the backplane dropped them.
    fn restore(&self, channels: Vec<String>) {
        let _order = self.membership.lock();
        let wanted: Vec<String> = channels
            .into_iter()
            .filter(|name| self.still_wanted(name))
            .collect();
        if wanted.is_empty() {
            return;
        }
        tracing::info!(
            channels = wanted.len(),
            "the backplane dropped subscriptions; subscribing again"
        );
        self.subscriptions.queue_detached(Op::Resync(wanted));
    }

    /// Whether this server needs a subscription to `channel` now. Called
    /// under the membership lock.
    fn still_wanted(&self, channel: &str) -> bool {
        match self.channels.parse(channel) {
            // An emitter never listens on the broadcast channel.
            Some(ChannelKind::All) => !self.options.emitter,
            Some(ChannelKind::Ack(server) | ChannelKind::Return(server)) => {
                server == self.server_name
            }
            Some(ChannelKind::Connection(id)) => self.store.contains(id),
            Some(ChannelKind::Group(group)) => self.store.group_len(group) > 0,
            Some(ChannelKind::User(user)) => self.store.user_len(user) > 0,
            _ => false,
        }
    }

    /// Handles one message from the backplane.
    fn on_message(self: &Arc<Self>, channel: &[u8], payload: Bytes) {
        let Some(kind) = std::str::from_utf8(channel)
            .ok()
            .and_then(|name| self.channels.parse(name))
        else {
            bump(&self.counters.malformed);
            return;
        };
        let body = match wire::decode(payload, self.options.max_envelope_size) {
            Ok(body) => body,
            Err(wire::DecodeError::TooLarge { size, limit }) => {
                bump(&self.counters.oversize);
                rate_limited_warn(
                    &self.counters.oversize,
                    || tracing::warn!(channel = %String::from_utf8_lossy(channel), size, limit, "dropped an oversized backplane message"),
                );
                return;
            }
            Err(e) => {
                bump(&self.counters.malformed);
                rate_limited_warn(
                    &self.counters.malformed,
                    || tracing::warn!(channel = %String::from_utf8_lossy(channel), error = %e, "dropped a malformed backplane message"),
                );
                return;
            }
        };
        let accepted = match (kind, body) {
            (ChannelKind::All, wire::Body::Invocation(inv)) => {
                let excluded = inv.excluded_connection_ids;
                self.store
                    .deliver_all(&from_wire_messages(inv.messages), &excluded);
                true
            }
            (ChannelKind::Group(group), wire::Body::Invocation(inv)) => {
                let excluded = inv.excluded_connection_ids;
                self.store
                    .deliver_group(group, &from_wire_messages(inv.messages), &excluded);
                true
            }
            (ChannelKind::User(user), wire::Body::Invocation(inv)) => {
                self.store
                    .deliver_user(user, &from_wire_messages(inv.messages));
                true
            }
            (ChannelKind::Connection(id), wire::Body::Invocation(inv)) => {
                self.on_connection_invocation(id, inv);
                true
            }
            (ChannelKind::Connection(id), wire::Body::GroupCommand(command))
                if command.connection_id == id =>
            {
                self.on_group_command(command);
                true
            }
            (ChannelKind::Connection(id), wire::Body::CancelInvocation(cancel))
                if cancel.connection_id == id =>
            {
                // Gone already if the client answered or disconnected.
                let _ = self.forwarded.take(&cancel.invocation_id, id);
                true
            }
            (ChannelKind::Ack(server), wire::Body::Ack(ack)) if server == self.server_name => {
                if let Some(waiter) = self.acks.lock().remove(&ack.id) {
                    let _ = waiter.send(ack);
                }
                true
            }
            (ChannelKind::Return(server), wire::Body::ClientResult(result))
                if server == self.server_name =>
            {
                self.on_client_result(result);
                true
            }
            (ChannelKind::User(user), wire::Body::PresenceQuery(query))
                if query.subject() == wire::Subject::User && query.name == user =>
            {
                let presence = self.store.user_presence(user, query.limit as usize);
                self.answer_presence(query, presence);
                true
            }
            (ChannelKind::Group(group), wire::Body::PresenceQuery(query))
                if query.subject() == wire::Subject::Group && query.name == group =>
            {
                let presence = self.store.group_presence(group, query.limit as usize);
                self.answer_presence(query, presence);
                true
            }
            (ChannelKind::Ack(server), wire::Body::PresenceReply(reply))
                if server == self.server_name =>
            {
                self.presence.answer(reply);
                true
            }
            _ => false,
        };
        if accepted {
            bump(&self.counters.received);
        } else {
            bump(&self.counters.malformed);
            rate_limited_warn(
                &self.counters.malformed,
                || tracing::warn!(channel = %String::from_utf8_lossy(channel), "dropped a backplane message of the wrong kind for its channel"),
            );
        }
    }

    fn on_connection_invocation(self: &Arc<Self>, connection_id: &str, inv: wire::Invocation) {
        let message = from_wire_messages(inv.messages);
        if inv.invocation_id.is_empty() {
            self.store.deliver_connection(connection_id, &message);
            return;
        }
        // A client-result invocation started on another server.
        if self.forwarded.len() >= MAX_FORWARDED_RESULTS {
            bump(&self.counters.refused);
            rate_limited_warn(&self.counters.refused, || {
                tracing::warn!(
                    "too many client-result calls from other servers are pending; refusing more (warned once per 1024)"
                );
            });
            self.spawn_results(vec![(
                inv.reply_server,
                inv.invocation_id,
                wire::Outcome::Error(
                    "The server holding the connection has too many client results pending."
                        .to_owned(),
                ),
            )]);
            return;
        }
        let expires = (inv.result_timeout_ms > 0).then(|| {
            Instant::now() + Duration::from_millis(inv.result_timeout_ms) + FORWARD_MARGIN
        });
        let call = Forwarded {
            reply_server: inv.reply_server.clone(),
            expires,
        };
        // Recorded before the connection is looked up: a disconnect that
        // removes the connection after the look-up then finds the call and
        // answers it; one before makes the look-up fail, and the call is
        // answered here. Exactly one of the two takes it.
        if let Err(e) =
            self.forwarded
                .insert(&inv.invocation_id, ConnectionId::from(connection_id), call)
        {
            bump(&self.counters.refused);
            rate_limited_warn(&self.counters.refused, || {
                tracing::warn!(error = %e, "ignoring a client-result invocation (warned once per 1024)");
            });
            return;
        }
        match self.store.get(connection_id) {
            Some(connection) => self.store.record(connection.deliver(&message)),
            None => {
                if self.forwarded.remove(&inv.invocation_id).is_some() {
                    self.spawn_results(vec![(
                        inv.reply_server,
                        inv.invocation_id,
                        wire::Outcome::Disconnected(connection_id.to_owned()),
                    )]);
                }
            }
        }
    }

    /// Takes a group command from another server: applied at once, after
    /// the ones before it for the same connection, or refused when too many
    /// are held.
    fn on_group_command(self: &Arc<Self>, command: wire::GroupCommand) {
        match self.commands.submit(command) {
            Submitted::Run(command) => {
                let inner = self.clone();
                tokio::spawn(async move {
                    let connection_id = command.connection_id.clone();
                    let mut next = Some(command);
                    while let Some(command) = next {
                        inner.apply_command(command).await;
                        next = inner.commands.next(&connection_id);
                    }
                });
            }
            Submitted::Queued => {}
            Submitted::Overloaded(command) => {
                bump(&self.counters.refused);
                rate_limited_warn(&self.counters.refused, || {
                    tracing::warn!(
                        limit = self.options.max_pending_group_commands,
                        "too many group commands from other servers are waiting; refusing more (warned once per 1024)"
                    );
                });
                let inner = self.clone();
                tokio::spawn(async move {
                    let error = format!(
                        "the server holding connection '{}' has {} group changes waiting; try again later",
                        command.connection_id, inner.options.max_pending_group_commands
                    );
                    inner
                        .acknowledge(&command, Some((wire::Failure::Overloaded, error)))
                        .await;
                });
            }
        }
    }

    /// Applies one group command from another server and acknowledges it.
    async fn apply_command(&self, command: wire::GroupCommand) {
        let result = match command.action() {
            wire::Action::Add => self.add_local(&command.connection_id, &command.group).await,
            wire::Action::Remove => self
                .remove_local(&command.connection_id, &command.group)
                .await
                .or(Some(Ok(()))),
            wire::Action::Unspecified => Some(Err(Error::InvalidConfig {
                reason: "group command without an action".to_owned(),
            })),
        };
        let failure = match result {
            Some(Ok(())) => None,
            None => Some((
                wire::Failure::ConnectionNotFound,
                format!("Connection '{}' does not exist.", command.connection_id),
            )),
            Some(Err(e)) => Some((wire::Failure::Rejected, e.to_string())),
        };
        self.acknowledge(&command, failure).await;
    }

    /// Answers a group command on its sender's ack channel.
    async fn acknowledge(
        &self,
        command: &wire::GroupCommand,
        failure: Option<(wire::Failure, String)>,
    ) {
        let (failure, error) = match failure {
            Some((failure, error)) => (failure, Some(error)),
            None => (wire::Failure::Unspecified, None),
        };
        let envelope = wire::encode_body(wire::Body::Ack(wire::Ack {
            id: command.id,
            error,
            failure: failure.into(),
        }));
        if let Err(e) = self
            .publish(self.channels.ack(&command.server), envelope)
            .await
        {
            tracing::warn!(error = %e, server = %command.server, "could not acknowledge a group command");
        }
    }

    fn on_client_result(&self, result: wire::ClientResult) {
        let Some(waiter) = self.results.remove(&result.invocation_id) else {
            // The caller gave up already (timeout, cancellation).
            return;
        };
        let outcome = match result.outcome {
            Some(wire::Outcome::Value(value)) if value.payload.is_empty() => {
                Ok(ClientResponse::new(None))
            }
            Some(wire::Outcome::Value(value)) => match Protocol::from_name(&value.protocol) {
                Some(protocol) => Ok(ClientResponse::new(Some(RawValue::new(
                    protocol,
                    value.payload,
                )))),
                None => Err(Error::InvalidResult {
                    reason: format!("unknown hub protocol '{}'", value.protocol),
                }),
            },
            Some(wire::Outcome::Error(message)) => Err(Error::ClientError { message }),
            Some(wire::Outcome::Disconnected(connection_id)) => {
                Err(Error::ConnectionDisconnected { connection_id })
            }
            None => Err(Error::InvalidResult {
                reason: "the answer carried no outcome".to_owned(),
            }),
        };
        let _ = waiter.send(outcome);
    }
}

/// The sender's result for the owner's answer to a group command.
fn ack_result(ack: wire::Ack, adding: bool, connection_id: &str) -> Result<()> {
    let failure = ack.failure();
    let Some(reason) = ack.error else {
        return Ok(());
    };
    let not_found = Error::ConnectionNotFound {
        connection_id: connection_id.to_owned(),
    };
    match failure {
        wire::Failure::ConnectionNotFound => Err(not_found),
        wire::Failure::Overloaded | wire::Failure::Rejected => {
            Err(Error::GroupCommandRejected { reason })
        }
        // A server of an earlier version: an add fails only for a
        // connection it does not hold.
        wire::Failure::Unspecified if adding => Err(not_found),
        wire::Failure::Unspecified => Err(Error::GroupCommandRejected { reason }),
    }
}

/// Logs at most once per 1024 occurrences of a counter, so garbage cannot
/// flood the log.
fn rate_limited_warn(counter: &AtomicU64, log: impl FnOnce()) {
    if counter.load(Ordering::Relaxed) % 1024 == 1 {
        log();
    }
}

/// Tells the owner of a connection to forget a client-result call when the
/// caller stops waiting without an answer.
struct GiveUpOnDrop<'a, D: BackplaneDriver> {
    inner: &'a Arc<Inner<D>>,
    connection_id: &'a str,
    invocation_id: &'a str,
    /// Whether the call ended without an answer from the owner.
    armed: bool,
}

impl<D: BackplaneDriver> Drop for GiveUpOnDrop<'_, D> {
    fn drop(&mut self) {
        if self.armed {
            self.inner
                .spawn_cancel(self.connection_id, self.invocation_id);
        }
    }
}

/// Forgets a presence query when its caller stops waiting.
struct ForgetOnDrop<'a> {
    gatherings: &'a Gatherings,
    id: u64,
}

impl Drop for ForgetOnDrop<'_> {
    fn drop(&mut self) {
        self.gatherings.forget(self.id);
    }
}

/// Removes a pending group-command ack when the caller stops waiting.
struct AckGuard<'a> {
    acks: &'a Mutex<HashMap<u64, oneshot::Sender<wire::Ack>>>,
    id: u64,
}

impl Drop for AckGuard<'_> {
    fn drop(&mut self) {
        self.acks.lock().remove(&self.id);
    }
}

/// Drains the driver's events and dispatches them: the single consumer
/// of the driver's stream.
async fn pump<D: BackplaneDriver>(
    inner: Weak<Inner<D>>,
    mut events: DriverEvents,
    shutdown: CancellationToken,
) {
    loop {
        let event = tokio::select! {
            () = shutdown.cancelled() => break,
            event = events.next() => event,
        };
        let (Some(event), Some(inner)) = (event, inner.upgrade()) else {
            break;
        };
        match event {
            DriverEvent::Message { channel, payload } => inner.on_message(&channel, payload),
            DriverEvent::Lagged(n) => {
                inner.counters.lagged.fetch_add(n, Ordering::Relaxed);
                tracing::warn!(
                    lost = n,
                    "the backplane dispatcher fell behind; messages were lost"
                );
            }
            DriverEvent::Connected => {
                if inner.counters.link_lost.swap(false, Ordering::Relaxed) {
                    bump(&inner.counters.reconnects);
                }
                tracing::info!(server = %inner.server_name, "connected to the backplane; restoring subscriptions");
                inner
                    .subscriptions
                    .needs_resync
                    .store(false, Ordering::Relaxed);
                inner.resync();
            }
            DriverEvent::Resubscribe => {
                tracing::info!(server = %inner.server_name, "the backplane may have dropped subscriptions; restoring them");
                inner.resync();
            }
            DriverEvent::Disconnected => {
                inner.counters.link_lost.store(true, Ordering::Relaxed);
                tracing::debug!(server = %inner.server_name, "the backplane link is down");
            }
            DriverEvent::SubscriptionsLost(channels) => inner.restore(channels),
        }
    }
}

/// Re-subscribes after failed subscription changes, and forgets forwarded
/// client-result calls past their expiry.
async fn maintain<D: BackplaneDriver>(inner: Weak<Inner<D>>, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(MAINTENANCE_TICK);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => break,
            _ = tick.tick() => {}
        };
        let Some(inner) = inner.upgrade() else { break };
        if inner.driver.is_connected()
            && inner
                .subscriptions
                .needs_resync
                .swap(false, Ordering::Relaxed)
        {
            inner.resync();
        }
        inner.expire_forwarded();
    }
}

#[async_trait]
impl<D: BackplaneDriver> HubLifetimeManager for ScaleOutManager<D> {
    async fn on_connected(&self, connection: Connection) -> Result<()> {
        if self.inner.options.emitter {
            return Err(Error::InvalidConfig {
                reason: "an emitter hosts no connections: run a server for them".to_owned(),
            });
        }
        let inner = &self.inner;
        let waits = {
            let _order = inner.membership.lock();
            let inserted = inner.store.insert(connection.clone())?;
            let mut waits = vec![
                inner
                    .subscriptions
                    .queue(Op::Subscribe(inner.channels.connection(connection.id()))),
            ];
            if let (true, Some(user)) = (inserted.first_of_user, connection.user()) {
                waits.push(
                    inner
                        .subscriptions
                        .queue(Op::Subscribe(inner.channels.user(user))),
                );
            }
            waits
        };
        if !applied(waits).await {
            tracing::warn!(connection_id = %connection.id(), "backplane unavailable: the connection is served locally and subscribed when the backplane returns");
        }
        Ok(())
    }

    async fn on_disconnected(&self, connection_id: &str) -> Result<()> {
        let inner = &self.inner;
        let waits = {
            let _order = inner.membership.lock();
            match inner.store.remove(connection_id) {
                Some(removed) => {
                    let mut waits = vec![
                        inner
                            .subscriptions
                            .queue(Op::Unsubscribe(inner.channels.connection(connection_id))),
                    ];
                    for group in &removed.emptied_groups {
                        waits.push(
                            inner
                                .subscriptions
                                .queue(Op::Unsubscribe(inner.channels.group(group))),
                        );
                    }
                    if let (true, Some(user)) = (removed.last_of_user, removed.connection.user()) {
                        waits.push(
                            inner
                                .subscriptions
                                .queue(Op::Unsubscribe(inner.channels.user(user))),
                        );
                    }
                    waits
                }
                None => Vec::new(),
            }
        };
        for (_, waiter) in inner.results.take_connection(connection_id) {
            let _ = waiter.send(Err(Error::ConnectionDisconnected {
                connection_id: connection_id.to_owned(),
            }));
        }
        let answers = inner
            .forwarded
            .take_connection(connection_id)
            .into_iter()
            .map(|(invocation_id, call)| {
                (
                    call.reply_server,
                    invocation_id,
                    wire::Outcome::Disconnected(connection_id.to_owned()),
                )
            })
            .collect();
        inner.spawn_results(answers);
        applied(waits).await;
        Ok(())
    }

    async fn send_all(&self, message: &SerializedMessage) -> Result<()> {
        self.inner
            .send_to(To::All(&[]), message, Mode::Confirmed)
            .await
    }

    async fn send_all_except(
        &self,
        message: &SerializedMessage,
        excluded: &[ConnectionId],
    ) -> Result<()> {
        self.inner
            .send_to(To::All(excluded), message, Mode::Confirmed)
            .await
    }

    async fn send_connection(
        &self,
        connection_id: &str,
        message: &SerializedMessage,
    ) -> Result<()> {
        self.inner
            .send_to(To::Connection(connection_id), message, Mode::Confirmed)
            .await
    }

    async fn send_connections(
        &self,
        connection_ids: &[ConnectionId],
        message: &SerializedMessage,
    ) -> Result<()> {
        self.inner
            .send_to(To::Connections(connection_ids), message, Mode::Confirmed)
            .await
    }

    async fn send_group(&self, group: &str, message: &SerializedMessage) -> Result<()> {
        self.inner
            .send_to(To::Group(group, &[]), message, Mode::Confirmed)
            .await
    }

    async fn send_groups(&self, groups: &[String], message: &SerializedMessage) -> Result<()> {
        self.inner
            .send_to(To::Groups(groups), message, Mode::Confirmed)
            .await
    }

    async fn send_group_except(
        &self,
        group: &str,
        message: &SerializedMessage,
        excluded: &[ConnectionId],
    ) -> Result<()> {
        self.inner
            .send_to(To::Group(group, excluded), message, Mode::Confirmed)
            .await
    }

    async fn send_user(&self, user: &str, message: &SerializedMessage) -> Result<()> {
        self.inner
            .send_to(To::User(user), message, Mode::Confirmed)
            .await
    }

    async fn send_users(&self, users: &[String], message: &SerializedMessage) -> Result<()> {
        self.inner
            .send_to(To::Users(users), message, Mode::Confirmed)
            .await
    }

    async fn send_queued(
        &self,
        recipients: &Recipients,
        message: &SerializedMessage,
    ) -> Result<()> {
        let to = match recipients {
            Recipients::All => To::All(&[]),
            Recipients::AllExcept(excluded) => To::All(excluded),
            Recipients::Connection(id) => To::Connection(id),
            Recipients::Connections(ids) => To::Connections(ids),
            Recipients::Group(group) => To::Group(group, &[]),
            Recipients::Groups(groups) => To::Groups(groups),
            Recipients::GroupExcept(group, excluded) => To::Group(group, excluded),
            Recipients::User(user) => To::User(user),
            Recipients::Users(users) => To::Users(users),
            // A kind added later: sent as its confirmed method sends it.
            other => return other.send_confirmed(self, message).await,
        };
        self.inner.send_to(to, message, Mode::Queued).await
    }

    async fn add_to_group(&self, connection_id: &str, group: &str) -> Result<()> {
        match self.inner.add_local(connection_id, group).await {
            Some(result) => result,
            None => {
                self.inner
                    .group_command(connection_id, group, wire::Action::Add)
                    .await
            }
        }
    }

    async fn remove_from_group(&self, connection_id: &str, group: &str) -> Result<()> {
        match self.inner.remove_local(connection_id, group).await {
            Some(result) => result,
            None => {
                self.inner
                    .group_command(connection_id, group, wire::Action::Remove)
                    .await
            }
        }
    }

    async fn invoke_connection(
        &self,
        connection_id: &str,
        invocation_id: &str,
        message: &SerializedMessage,
        options: InvokeOptions,
    ) -> Result<ClientResponse> {
        let inner = &self.inner;
        let (tx, rx) = oneshot::channel();
        // Recorded before the connection is looked up, so a local
        // disconnect racing with the call always finds and fails it.
        inner
            .results
            .insert(invocation_id, ConnectionId::from(connection_id), tx)?;
        let _cleanup = inner.results.remove_on_drop(invocation_id);
        if let Some(connection) = inner.store.get(connection_id) {
            inner.store.record(connection.deliver(message));
            let response = wait_for_response(rx, connection_id, &options).await;
            return inner.store.count_client_result(response);
        }
        let envelope =
            result_invocation_envelope(message, invocation_id, &inner.server_name, options.timeout);
        let receivers = inner
            .publish(inner.channels.connection(connection_id), envelope)
            .await?;
        if receivers == Some(0) {
            return Err(Error::ConnectionNotFound {
                connection_id: connection_id.to_owned(),
            });
        }
        // From here on the owner holds the call: if this caller gives up
        // (timeout, cancellation, or its future is dropped), the owner is
        // told to forget it.
        let mut give_up = GiveUpOnDrop {
            inner,
            connection_id,
            invocation_id,
            armed: true,
        };
        let result = wait_for_response(rx, connection_id, &options).await;
        give_up.armed = matches!(
            result,
            Err(Error::ClientResultTimeout { .. } | Error::Canceled)
        );
        inner.store.count_client_result(result)
    }

    async fn set_connection_result(
        &self,
        connection_id: &str,
        completion: Completion,
    ) -> Result<()> {
        let inner = &self.inner;
        let Completion {
            invocation_id,
            outcome,
        } = completion;
        // Started on this server?
        match inner.results.take(&invocation_id, connection_id) {
            Ok(waiter) => {
                let _ = waiter.send(outcome_to_result(outcome));
                return Ok(());
            }
            Err(Error::UnknownInvocation { .. }) => {}
            Err(e) => return Err(e),
        }
        // Started on another server: forward the answer there.
        let call = inner.forwarded.take(&invocation_id, connection_id)?;
        let outcome = match outcome {
            Outcome::Void => wire::Outcome::Value(wire::SerializedMessage::default()),
            Outcome::Value(value) => wire::Outcome::Value(wire::SerializedMessage {
                protocol: value.protocol().name().to_owned(),
                payload: value.bytes().clone(),
            }),
            Outcome::Error(message) => wire::Outcome::Error(message),
        };
        inner.spawn_results(vec![(call.reply_server, invocation_id, outcome)]);
        Ok(())
    }

    async fn user_connections(&self, user: &str, limit: usize) -> Result<Presence> {
        self.inner
            .query_presence(wire::Subject::User, user, limit)
            .await
    }

    async fn group_members(&self, group: &str, limit: usize) -> Result<Presence> {
        self.inner
            .query_presence(wire::Subject::Group, group, limit)
            .await
    }

    fn local_connection(&self, connection_id: &str) -> Option<Connection> {
        self.inner.store.get(connection_id)
    }

    fn stats(&self) -> ManagerStats {
        let mut stats = ManagerStats::default();
        self.inner.store.fill_stats(&mut stats);
        let c = &self.inner.counters;
        stats.backplane_published = c.published.load(Ordering::Relaxed);
        stats.backplane_received = c.received.load(Ordering::Relaxed);
        stats.backplane_malformed = c.malformed.load(Ordering::Relaxed);
        stats.backplane_oversize = c.oversize.load(Ordering::Relaxed);
        stats.backplane_lagged = c.lagged.load(Ordering::Relaxed);
        stats.backplane_publish_errors =
            c.publish_errors.load(Ordering::Relaxed) + self.inner.outgoing.expired();
        stats.backplane_reconnects = c.reconnects.load(Ordering::Relaxed);
        stats.backplane_resyncs = self.inner.subscriptions.resyncs();
        let store = &self.inner.store;
        stats.backplane_subscriptions = fixed_channels(
            &self.inner.channels,
            &self.inner.server_name,
            self.inner.options.emitter,
        )
        .len()
            + stats.connections
            + store.group_count()
            + store.user_count();
        stats.pending_client_results = self.inner.results.len();
        stats.forwarded_client_results = self.inner.forwarded.len();
        stats
    }

    fn health(&self) -> Health {
        let mut health = Health::local();
        health.backplane_connected = self.inner.driver.is_connected();
        health.since_last_publish = self.inner.counters.since_last_publish();
        health.pending_subscriptions = self.inner.subscriptions.pending();
        health.backplane_lagged = self.inner.counters.lagged.load(Ordering::Relaxed);
        health
    }
}

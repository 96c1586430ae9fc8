use std::any::Any;
use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::panic::AssertUnwindSafe;
use std::pin::pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use bytes::Bytes;
use futures::future::BoxFuture;
use futures::{FutureExt, StreamExt};
use parking_lot::Mutex;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::upload::Uploads;
use super::{ArgumentError, Arguments, CallContext, Hub, HubError, Method, Reply};
use crate::connection::{Connection, Delivery};
use crate::error::Result;
use crate::metrics;
use crate::protocol::{Completion, HubMessage, Invocation, Outcome, Protocol, RawValue};

/// One connected client of a [`Hub`]: the transport adapter feeds it the
/// messages it decodes, and closes it when the client goes away.
///
/// # How invocations run
///
/// - A unary invocation runs as a task once one of the connection's
///   [`max_parallel_invocations`](super::HubOptions::max_parallel_invocations)
///   slots is free; until then it waits in a short queue, in arrival order
///   ([`max_queued_invocations`](super::HubOptions::max_queued_invocations)).
///   [`HubSession::handle`] returns at once while there is room in the
///   queue, so the client's Completions (answers to client-result calls),
///   CancelInvocations and Pings behind a waiting invocation are handled
///   without delay; only a full queue makes `handle` wait, which pauses the
///   connection's reader and pushes back on a client that floods.
/// - A unary method is never stopped midway: when the client disconnects
///   (or cancels it), its [`CallContext::cancellation`] token fires and the
///   method runs on to its end; its Completion is sent if the connection is
///   still open.
/// - A streaming invocation starts at once, up to
///   [`max_streams_per_connection`](super::HubOptions::max_streams_per_connection)
///   at a time (more are refused with an error Completion), and stops when
///   the client cancels it or disconnects. Its items wait for the client to
///   keep up (see [`Connection::send_frame_waiting`]).
/// - An invocation with `streamIds` opens one [`UploadStream`](super::UploadStream)
///   per id and starts at once, outside the invocation slots (the
///   per-connection bound on open upload streams bounds such invocations);
///   the client's
///   StreamItems go to it in order, through a buffer of
///   [`stream_buffer_capacity`](super::HubOptions::stream_buffer_capacity)
///   items, and [`HubSession::handle`] waits while that buffer is full. A
///   Completion with a stream's id ends that stream. Items and Completions
///   for no open stream are dropped and counted (a Completion then counts
///   as a refused client result).
/// - A method, stream or hook that panics is answered with the error
///   Completion "An unexpected error occurred invoking '…' on the server.",
///   its invocation id is freed, the panic is logged and counted in
///   [`HubStats::panics`](super::HubStats::panics); the connection goes on.
pub struct HubSession {
    hub: Hub,
    connection: Connection,
    state: Arc<SessionState>,
}

/// What a session shares with the tasks running its invocations.
struct SessionState {
    /// Invocation ids in use (running or queued invocations and streams),
    /// with the token that cancels each, so that a CancelInvocation finds
    /// it and a reused id is refused. Its own `Arc`, held by each
    /// [`Tracked`] guard, so that a queued invocation never keeps the
    /// state it is queued in alive.
    running: Arc<Mutex<HashMap<String, CancellationToken>>>,
    /// Free invocation slots and the invocations waiting for one. One lock
    /// for both, so an invocation is never queued while a slot is free.
    slots: Mutex<Slots>,
    /// Notified when a slot frees or the queue shrinks.
    room: Notify,
    /// How many streams run now, bounded by
    /// [`HubOptions::max_streams_per_connection`](super::HubOptions).
    streams: AtomicUsize,
    /// Cancelled when the session closes: streams stop, unary methods see
    /// their token fire, queued invocations are dropped unstarted.
    closed: CancellationToken,
    /// The client-to-server streams open now.
    uploads: Uploads,
}

/// The invocation slots of one connection.
struct Slots {
    /// Slots not taken by a running invocation. Never above zero while
    /// `queue` holds anything: a freed slot goes to the queue's head first.
    free: usize,
    /// Invocations waiting for a slot, oldest first.
    queue: VecDeque<Ready>,
}

/// A unary invocation bound to its arguments, ready to run.
struct Ready {
    /// The method's name, for errors and logs.
    target: String,
    /// Where the Completion goes; `None` for a non-blocking invocation.
    invocation_id: Option<String>,
    /// The method's future.
    future: BoxFuture<'static, Reply>,
    /// Keeps the invocation id in use until the invocation ends.
    tracked: Option<Tracked>,
}

/// Holds an invocation id in [`SessionState::running`] until dropped.
struct Tracked {
    running: Arc<Mutex<HashMap<String, CancellationToken>>>,
    id: String,
}

impl Drop for Tracked {
    fn drop(&mut self) {
        self.running.lock().remove(&self.id);
    }
}

/// Holds one of the connection's stream slots until dropped.
struct StreamSlot(Arc<SessionState>);

impl Drop for StreamSlot {
    fn drop(&mut self) {
        self.0.streams.fetch_sub(1, Ordering::Relaxed);
    }
}

impl fmt::Debug for HubSession {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (free, queued) = {
            let slots = self.state.slots.lock();
            (slots.free, slots.queue.len())
        };
        f.debug_struct("HubSession")
            .field("connection", &self.connection)
            .field("running", &self.state.running.lock().len())
            .field("free_slots", &free)
            .field("queued", &queued)
            .field("streams", &self.state.streams.load(Ordering::Relaxed))
            .finish()
    }
}

/// The error text a client gets when the method it invoked panicked (the
/// wording of SignalR without detailed errors: the panic's own message
/// stays in the server's log).
/// The `kind` and `outcome` labels of the invocation metrics.
const UNARY: &str = "unary";
const STREAM: &str = "stream";
const OK: &str = "ok";
const ERROR: &str = "error";
const PANIC: &str = "panic";
const REFUSED: &str = "refused";
const CANCELLED: &str = "cancelled";

fn unexpected_error(target: &str) -> String {
    format!("An unexpected error occurred invoking '{target}' on the server.")
}

impl Hub {
    /// Registers `connection` with the lifetime manager, runs the hub's
    /// connect hook, and returns the session that dispatches its messages.
    ///
    /// A connect hook that panics closes the connection with an error (the
    /// session is still returned, for the transport to wind down).
    pub async fn connect(&self, connection: Connection) -> Result<HubSession> {
        self.manager().on_connected(connection.clone()).await?;
        let options = &self.inner.options;
        let session = HubSession {
            hub: self.clone(),
            state: Arc::new(SessionState {
                running: Arc::new(Mutex::new(HashMap::new())),
                slots: Mutex::new(Slots {
                    free: options.max_parallel_invocations.max(1),
                    queue: VecDeque::new(),
                }),
                room: Notify::new(),
                streams: AtomicUsize::new(0),
                closed: CancellationToken::new(),
                uploads: Uploads::new(
                    options.max_upload_streams_per_connection,
                    options.stream_buffer_capacity,
                ),
            }),
            connection,
        };
        if let Some(hook) = &self.inner.on_connected {
            let ctx = session.call_context(session.state.closed.child_token());
            if !self
                .run_hook("on_connected", &session.connection, || hook(ctx, None))
                .await
            {
                session
                    .connection
                    .close("An unexpected error occurred in the connect hook.");
            }
        }
        Ok(session)
    }

    /// Runs a connect or disconnect hook, catching a panic; `false` if it
    /// panicked.
    async fn run_hook(
        &self,
        name: &str,
        connection: &Connection,
        hook: impl FnOnce() -> BoxFuture<'static, ()>,
    ) -> bool {
        let future = match std::panic::catch_unwind(AssertUnwindSafe(hook)) {
            Ok(future) => future,
            Err(panic) => {
                self.record_panic(name, connection, panic.as_ref());
                return false;
            }
        };
        match AssertUnwindSafe(future).catch_unwind().await {
            Ok(()) => true,
            Err(panic) => {
                self.record_panic(name, connection, panic.as_ref());
                false
            }
        }
    }

    /// Counts and logs a panic in hub code.
    fn record_panic(&self, what: &str, connection: &Connection, panic: &(dyn Any + Send)) {
        self.inner.counters.panics.fetch_add(1, Ordering::Relaxed);
        let message = panic
            .downcast_ref::<&str>()
            .copied()
            .or_else(|| panic.downcast_ref::<String>().map(String::as_str))
            .unwrap_or("(a non-text panic payload)");
        tracing::error!(connection_id = %connection.id(), method = what, panic = message, "hub code panicked");
    }
}

impl HubSession {
    /// The session's connection.
    pub fn connection(&self) -> &Connection {
        &self.connection
    }

    /// The hub.
    pub fn hub(&self) -> &Hub {
        &self.hub
    }

    /// Whether no invocation or stream of the connection is running or
    /// waiting for a slot.
    pub fn is_idle(&self) -> bool {
        let slots_free = {
            let slots = self.state.slots.lock();
            slots.queue.is_empty()
                && slots.free >= self.hub.inner.options.max_parallel_invocations.max(1)
        };
        slots_free && self.state.running.lock().is_empty()
    }

    /// Completes once [`is_idle`](Self::is_idle): for a graceful shutdown
    /// that lets what runs finish (bound it with a timeout). It looks
    /// every 10 ms.
    pub async fn idle(&self) {
        while !self.is_idle() {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    }

    /// Dispatches one message from the client.
    ///
    /// Errors in the client's requests (unknown method, wrong arguments,
    /// a method that fails) are answered with a Completion error when the
    /// invocation has an id, and logged otherwise; they never fail the
    /// session. Ping and Close are the transport's business and ignored
    /// here. Returns at once, except for an invocation arriving while the
    /// connection's queue of waiting invocations is full (see the type's
    /// documentation); cancel-safe.
    pub async fn handle(&self, message: HubMessage) {
        match message {
            HubMessage::Invocation(invocation) => self.invoke(invocation).await,
            HubMessage::StreamInvocation(invocation) => self.start_stream(invocation),
            HubMessage::Completion(completion) => self.complete(completion).await,
            HubMessage::CancelInvocation { invocation_id } => {
                if let Some(token) = self.state.running.lock().get(&invocation_id) {
                    token.cancel();
                }
            }
            HubMessage::StreamItem {
                invocation_id,
                item,
            } => {
                if !self.state.uploads.item(&invocation_id, item).await {
                    self.drop_stream_item(&invocation_id);
                }
            }
            HubMessage::Ping | HubMessage::Close { .. } => {}
            // A kind this version does not serve (the hub protocol may
            // gain kinds); the transport has parsed it, so it is logged.
            _ => {
                tracing::debug!(connection_id = %self.connection.id(), "ignoring a hub message this server does not serve");
            }
        }
    }

    /// Stops the streams, drops the invocations still waiting for a slot,
    /// fires the running methods' cancellation tokens, unregisters the
    /// connection from the lifetime manager, and runs the hub's disconnect
    /// hook with `error`.
    pub async fn close(self, error: Option<String>) {
        self.state.closed.cancel();
        self.state.uploads.close_all();
        let unstarted = std::mem::take(&mut self.state.slots.lock().queue);
        // Dropped outside the lock: the futures may hold anything.
        drop(unstarted);
        if let Err(e) = self
            .hub
            .manager()
            .on_disconnected(self.connection.id())
            .await
        {
            tracing::warn!(connection_id = %self.connection.id(), error = %e, "unregistering the connection failed");
        }
        if let Some(hook) = &self.hub.inner.on_disconnected {
            let ctx = self.call_context(self.state.closed.clone());
            self.hub
                .run_hook("on_disconnected", &self.connection, || hook(ctx, error))
                .await;
        }
    }

    fn call_context(&self, cancel: CancellationToken) -> CallContext {
        CallContext::new(self.hub.context().clone(), self.connection.clone(), cancel)
    }

    fn protocol(&self) -> Protocol {
        self.connection.protocol()
    }

    fn reply(&self, frame: Bytes) {
        match self.connection.send_frame(frame) {
            Delivery::Queued => {}
            other => {
                tracing::debug!(connection_id = %self.connection.id(), outcome = ?other, "reply not queued")
            }
        }
    }

    fn reply_error(&self, invocation_id: Option<&str>, error: &str) {
        match invocation_id {
            Some(id) => self.reply(self.protocol().write_completion_error(id, error)),
            None => {
                tracing::debug!(connection_id = %self.connection.id(), error, "failed non-blocking invocation")
            }
        }
    }

    /// Takes an invocation id and makes the token that cancels it. Without
    /// an id, only the token. `None` if the id is already in use (a protocol
    /// error by the client), which is answered here.
    fn track(&self, invocation_id: Option<&str>) -> Option<(CancellationToken, Option<Tracked>)> {
        let token = self.state.closed.child_token();
        let Some(id) = invocation_id else {
            return Some((token, None));
        };
        let mut running = self.state.running.lock();
        if running.contains_key(id) {
            drop(running);
            self.reply_error(
                invocation_id,
                &format!("Invocation ID '{id}' is already in use."),
            );
            return None;
        }
        running.insert(id.to_owned(), token.clone());
        let tracked = Tracked {
            running: self.state.running.clone(),
            id: id.to_owned(),
        };
        Some((token, Some(tracked)))
    }

    /// Calls a method's binder (argument conversion, then the application's
    /// function, which returns the future), catching a panic in it.
    fn bind<F>(
        &self,
        target: &str,
        bind: impl FnOnce() -> std::result::Result<F, ArgumentError>,
    ) -> std::result::Result<F, String> {
        match std::panic::catch_unwind(AssertUnwindSafe(bind)) {
            Ok(Ok(future)) => Ok(future),
            Ok(Err(e)) => Err(format!("Failed to invoke '{target}': {e}")),
            Err(panic) => {
                self.hub
                    .record_panic(target, &self.connection, panic.as_ref());
                Err(unexpected_error(target))
            }
        }
    }

    async fn invoke(&self, invocation: Invocation) {
        let Invocation {
            invocation_id,
            target,
            arguments,
            stream_ids,
        } = invocation;
        let id = invocation_id.as_deref();
        let method = match self.hub.inner.methods.get(&target) {
            None => {
                metrics::invocation(metrics::UNKNOWN_METHOD, UNARY, REFUSED, None);
                return self.reply_error(id, &format!("Unknown hub method '{target}'"));
            }
            Some(Method::Stream(_)) => {
                metrics::invocation(&target, UNARY, REFUSED, None);
                return self.reply_error(
                    id,
                    &format!("The client attempted to invoke the streaming '{target}' method with a non-streaming invocation."),
                );
            }
            Some(Method::Unary(method)) => method,
        };
        let Some((token, tracked)) = self.track(id) else {
            return;
        };
        // A non-blocking invocation's client waits for no answer: its sends
        // may return once queued for the backplane (in order), so the next
        // invocation need not wait for a backplane round trip.
        let ctx = self
            .call_context(token.clone())
            .with_queued_sends(id.is_none());
        let future = match self.bind(&target, || {
            let mut arguments =
                Arguments::new(&arguments, &stream_ids, Some(&self.state.uploads), &token);
            method(ctx, &mut arguments)
        }) {
            Ok(future) => future,
            Err(error) => {
                metrics::invocation(&target, UNARY, REFUSED, None);
                return self.reply_error(id, &error);
            }
        };
        let ready = Ready {
            target,
            invocation_id,
            future,
            tracked,
        };
        if stream_ids.is_empty() {
            self.enqueue(ready).await;
        } else {
            // An invocation fed by upload streams runs at once, outside the
            // slots (as in ASP.NET Core; the upload streams bound how many):
            // queued behind another invocation, its items would fill their
            // buffers and stop the reader, and with it whatever the running
            // invocation waits for.
            let hub = self.hub.clone();
            let connection = self.connection.clone();
            tokio::spawn(async move { run_unary(&hub, &connection, ready).await });
        }
    }

    /// Starts `ready` if a slot is free, else queues it; waits only while
    /// the queue is full. Dropping the future drops the invocation.
    async fn enqueue(&self, ready: Ready) {
        let limit = self.hub.inner.options.max_queued_invocations;
        loop {
            let mut room = pin!(self.state.room.notified());
            // Registered before the slots are looked at, so room made after
            // the look is not missed.
            room.as_mut().enable();
            if self.state.closed.is_cancelled() {
                return;
            }
            {
                let mut slots = self.state.slots.lock();
                if slots.free > 0 {
                    slots.free -= 1;
                    drop(slots);
                    tokio::spawn(run_invocations(
                        self.hub.clone(),
                        self.connection.clone(),
                        self.state.clone(),
                        ready,
                    ));
                    return;
                }
                if slots.queue.len() < limit {
                    slots.queue.push_back(ready);
                    return;
                }
            }
            tokio::select! {
                () = room => {}
                () = self.state.closed.cancelled() => return,
            }
        }
    }

    fn start_stream(&self, invocation: Invocation) {
        let Invocation {
            invocation_id,
            target,
            arguments,
            stream_ids,
        } = invocation;
        // The parser guarantees an id on stream invocations; be defensive.
        let Some(id) = invocation_id else { return };
        let method = match self.hub.inner.methods.get(&target) {
            None => {
                metrics::invocation(metrics::UNKNOWN_METHOD, STREAM, REFUSED, None);
                return self.reply_error(Some(&id), &format!("Unknown hub method '{target}'"));
            }
            Some(Method::Unary(_)) => {
                metrics::invocation(&target, STREAM, REFUSED, None);
                return self.reply_error(
                    Some(&id),
                    &format!("The client attempted to invoke the non-streaming '{target}' method with a streaming invocation."),
                );
            }
            Some(Method::Stream(method)) => method,
        };
        let Some((token, tracked)) = self.track(Some(&id)) else {
            return;
        };
        let limit = self.hub.inner.options.max_streams_per_connection.max(1);
        if self.state.streams.fetch_add(1, Ordering::Relaxed) >= limit {
            self.state.streams.fetch_sub(1, Ordering::Relaxed);
            metrics::invocation(&target, STREAM, REFUSED, None);
            return self.reply_error(
                Some(&id),
                &format!("The connection already has {limit} streams running, the most allowed."),
            );
        }
        let slot = StreamSlot(self.state.clone());
        let ctx = self.call_context(token.clone());
        let future = match self.bind(&target, || {
            let mut arguments =
                Arguments::new(&arguments, &stream_ids, Some(&self.state.uploads), &token);
            method(ctx, &mut arguments)
        }) {
            Ok(future) => future,
            Err(error) => {
                metrics::invocation(&target, STREAM, REFUSED, None);
                return self.reply_error(Some(&id), &error);
            }
        };
        let hub = self.hub.clone();
        let connection = self.connection.clone();
        tokio::spawn(async move {
            let protocol = connection.protocol();
            let started = Instant::now();
            let span = tracing::debug_span!(
                "stream",
                connection_id = %connection.id(),
                method = %target,
                invocation_id = %id,
            );
            let run = AssertUnwindSafe(run_stream(&connection, &id, future).instrument(span))
                .catch_unwind();
            let (outcome, how) = tokio::select! {
                outcome = run => match outcome {
                    Ok(Outcome::Error(error)) => (Outcome::Error(error), ERROR),
                    Ok(outcome) => (outcome, OK),
                    Err(panic) => {
                        hub.record_panic(&target, &connection, panic.as_ref());
                        (Outcome::Error(unexpected_error(&target)), PANIC)
                    }
                },
                // Cancelled by the client (or the session closed): end
                // quietly, as a completion without error.
                () = token.cancelled() => (Outcome::Void, CANCELLED),
            };
            metrics::invocation(&target, STREAM, how, Some(started.elapsed()));
            drop(slot);
            drop(tracked);
            if !connection.is_closed() {
                let frame = match outcome {
                    Outcome::Error(error) => protocol.write_completion_error(&id, &error),
                    _ => protocol.write_completion_void(&id),
                };
                let _ = connection.send_frame(frame);
            }
        });
    }

    /// Counts and logs a stream item for no open upload stream.
    fn drop_stream_item(&self, stream_id: &str) {
        let (dropped, warn) = count_sampled(&self.hub.inner.counters.dropped_stream_items);
        if warn {
            tracing::warn!(connection_id = %self.connection.id(), stream_id, dropped, "stream item for no open upload stream dropped (warned once per 1024)");
        } else {
            tracing::debug!(connection_id = %self.connection.id(), stream_id, "stream item for no open upload stream dropped");
        }
    }

    async fn complete(&self, completion: Completion) {
        // The end of one of the client's upload streams, or else the
        // answer to a client-result call.
        let error = match &completion.outcome {
            Outcome::Error(error) => Some(error.clone()),
            Outcome::Void | Outcome::Value(_) => None,
        };
        if self
            .state
            .uploads
            .complete(&completion.invocation_id, error)
            .await
        {
            return;
        }
        let invocation_id = completion.invocation_id.clone();
        if let Err(e) = self
            .hub
            .manager()
            .set_connection_result(self.connection.id(), completion)
            .await
        {
            let (refused, warn) = count_sampled(&self.hub.inner.counters.refused_completions);
            if warn {
                tracing::warn!(connection_id = %self.connection.id(), %invocation_id, error = %e, refused, "completion refused (warned once per 1024)");
            } else {
                tracing::debug!(connection_id = %self.connection.id(), %invocation_id, error = %e, "completion refused");
            }
        }
    }
}

/// Counts one more bad message from a client; returns the new count and
/// whether to warn about it. A client can send any number of them: the
/// first of every 1024 is a warning, the rest stay at debug.
fn count_sampled(counter: &std::sync::atomic::AtomicU64) -> (u64, bool) {
    let count = counter.fetch_add(1, Ordering::Relaxed) + 1;
    (count, count % 1024 == 1)
}

impl Drop for HubSession {
    fn drop(&mut self) {
        // A session dropped without `close` still stops its streams and
        // lets go of what it queued.
        self.state.closed.cancel();
        let unstarted = std::mem::take(&mut self.state.slots.lock().queue);
        drop(unstarted);
    }
}

/// Runs `first`, then whatever waits in the queue, in order, on the one
/// slot `first` holds; frees the slot when the queue is empty.
async fn run_invocations(hub: Hub, connection: Connection, state: Arc<SessionState>, first: Ready) {
    let mut next = Some(first);
    while let Some(ready) = next {
        run_unary(&hub, &connection, ready).await;
        next = {
            let mut slots = state.slots.lock();
            let next = slots.queue.pop_front();
            if next.is_none() {
                slots.free += 1;
            }
            next
        };
        state.room.notify_waiters();
    }
}

/// Runs one unary method to its end and sends its Completion.
async fn run_unary(hub: &Hub, connection: &Connection, ready: Ready) {
    let Ready {
        target,
        invocation_id,
        future,
        tracked,
    } = ready;
    let started = Instant::now();
    let span = tracing::debug_span!(
        "invocation",
        connection_id = %connection.id(),
        method = %target,
        invocation_id = invocation_id.as_deref(),
    );
    let (reply, how) = match AssertUnwindSafe(future.instrument(span))
        .catch_unwind()
        .await
    {
        Ok(Ok(reply)) => (Ok(reply), OK),
        Ok(Err(e)) => (Err(e), ERROR),
        Err(panic) => {
            hub.record_panic(&target, connection, panic.as_ref());
            (Err(HubError::new(unexpected_error(&target))), PANIC)
        }
    };
    metrics::invocation(&target, UNARY, how, Some(started.elapsed()));
    // The id is free again before the client learns the call is over.
    drop(tracked);
    match invocation_id {
        Some(id) => {
            let _ = connection.send_frame(completion_frame(connection.protocol(), &id, reply));
        }
        None => {
            if let Err(e) = reply {
                tracing::debug!(connection_id = %connection.id(), method = %target, error = %e, "failed non-blocking invocation");
            }
        }
    }
}

/// Runs a stream to its end, queueing each item; returns how it ended.
async fn run_stream(
    connection: &Connection,
    id: &str,
    future: BoxFuture<
        'static,
        std::result::Result<futures::stream::BoxStream<'static, Reply>, HubError>,
    >,
) -> Outcome {
    let mut items = match future.await {
        Ok(items) => items,
        Err(e) => return Outcome::Error(e.message().to_owned()),
    };
    let protocol = connection.protocol();
    while let Some(item) = items.next().await {
        let value = match item {
            Ok(Some(value)) => value,
            Ok(None) => continue,
            Err(e) => return Outcome::Error(e.message().to_owned()),
        };
        let frame = match protocol.write_message(&HubMessage::StreamItem {
            invocation_id: id.to_owned(),
            item: value,
        }) {
            Ok(frame) => frame,
            Err(e) => return Outcome::Error(format!("A stream item could not be written: {e}")),
        };
        // A stream produces for this one client: it waits for the client
        // to keep up rather than overflowing its queue, and leaves part of
        // the queue free for everything else sent to the connection.
        match connection.send_frame_waiting(frame).await {
            Delivery::Queued => {}
            // The connection is going away: stop producing.
            _ => return Outcome::Void,
        }
    }
    Outcome::Void
}

fn completion_frame(protocol: Protocol, id: &str, reply: Reply) -> Bytes {
    match reply {
        Ok(None) => protocol.write_completion_void(id),
        Ok(Some(value)) => write_value_completion(protocol, id, value),
        Err(e) => protocol.write_completion_error(id, e.message()),
    }
}

fn write_value_completion(protocol: Protocol, id: &str, value: RawValue) -> Bytes {
    let message = HubMessage::Completion(Completion {
        invocation_id: id.to_owned(),
        outcome: Outcome::Value(value),
    });
    match protocol.write_message(&message) {
        Ok(frame) => frame,
        Err(e) => {
            protocol.write_completion_error(id, &format!("The result could not be written: {e}"))
        }
    }
}

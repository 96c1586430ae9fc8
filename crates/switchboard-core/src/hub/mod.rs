//! The hub: application methods by name, and the dispatcher that calls them.

mod args;
mod context;
mod session;
mod upload;

use std::any::TypeId;
use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures::future::BoxFuture;
use futures::stream::{BoxStream, Stream, StreamExt};
use serde::Serialize;

pub use args::{ArgumentError, Arguments, FromArguments, HubArgument};
pub use context::{CallContext, Client, Clients, DEFAULT_CLIENT_RESULT_TIMEOUT, HubContext};
pub use session::HubSession;
pub use upload::UploadStream;

use crate::error::Error;
use crate::manager::HubLifetimeManager;
use crate::protocol::{Protocol, RawValue};

/// The error a hub method returns; its message is sent to the caller in the
/// Completion.
///
/// Any [`Error`] converts into one, so `?` works on lifetime-manager calls
/// inside hub methods; the client then sees the error's text (for example
/// "Connection 'x' does not exist."). Write messages meant for clients: they
/// are shown verbatim.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HubError {
    message: String,
}

impl HubError {
    /// An error with a message for the client.
    pub fn new(message: impl Into<String>) -> HubError {
        HubError {
            message: message.into(),
        }
    }

    /// The message sent to the client.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for HubError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for HubError {}

impl From<Error> for HubError {
    fn from(error: Error) -> Self {
        HubError::new(error.to_string())
    }
}

impl From<String> for HubError {
    fn from(message: String) -> Self {
        HubError::new(message)
    }
}

impl From<&str> for HubError {
    fn from(message: &str) -> Self {
        HubError::new(message)
    }
}

/// What a unary method produced, encoded in the caller's protocol.
type Reply = Result<Option<RawValue>, HubError>;
/// A unary method with its arguments bound, ready to run.
type UnaryFn = Arc<
    dyn Fn(CallContext, &mut Arguments<'_>) -> Result<BoxFuture<'static, Reply>, ArgumentError>
        + Send
        + Sync,
>;
/// A streaming method with its arguments bound.
type StreamFn = Arc<
    dyn Fn(
            CallContext,
            &mut Arguments<'_>,
        )
            -> Result<BoxFuture<'static, Result<BoxStream<'static, Reply>, HubError>>, ArgumentError>
        + Send
        + Sync,
>;
/// A connect or disconnect hook.
type HookFn = Arc<dyn Fn(CallContext, Option<String>) -> BoxFuture<'static, ()> + Send + Sync>;

#[derive(Clone)]
enum Method {
    Unary(UnaryFn),
    Stream(StreamFn),
}

/// Settings of a hub.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct HubOptions {
    /// Protocols every message is serialized for. Default: all.
    pub protocols: Vec<Protocol>,
    /// Default timeout of client-result invocations. Default: 30 s.
    pub client_result_timeout: Option<Duration>,
    /// How many invocations of one connection run at once. Default: 1, as
    /// in SignalR: a connection's invocations run one after the other, in
    /// the order they arrived.
    pub max_parallel_invocations: usize,
    /// How many further invocations of one connection may wait, in order,
    /// for a free slot. While they wait the connection's reader goes on, so
    /// the client's answers to client-result calls, its Pings and its
    /// cancellations are never held behind them (a hub method may wait for
    /// a result from its own caller). Only when this many are waiting does
    /// the reader pause, which pushes back on a client that floods.
    /// Default: 32.
    pub max_queued_invocations: usize,
    /// How many streaming invocations one connection may run at once. A
    /// stream invocation beyond this is answered with an error Completion.
    /// Default: 32.
    pub max_streams_per_connection: usize,
    /// How many client-to-server streams ([`UploadStream`] arguments) one
    /// connection may have open at once; an invocation that would open
    /// more is answered with an error Completion. Default: 32.
    pub max_upload_streams_per_connection: usize,
    /// How many items of one upload stream may wait for its method to take
    /// them; a client that sends more waits. Default: 10, as ASP.NET Core's
    /// `StreamBufferCapacity`.
    pub stream_buffer_capacity: usize,
}

/// The default of [`HubOptions::max_upload_streams_per_connection`].
pub const DEFAULT_MAX_UPLOAD_STREAMS_PER_CONNECTION: usize = 32;

/// The default of [`HubOptions::stream_buffer_capacity`].
pub const DEFAULT_STREAM_BUFFER_CAPACITY: usize = 10;

/// The default of [`HubOptions::max_queued_invocations`].
pub const DEFAULT_MAX_QUEUED_INVOCATIONS: usize = 32;

/// The default of [`HubOptions::max_streams_per_connection`].
pub const DEFAULT_MAX_STREAMS_PER_CONNECTION: usize = 32;

impl Default for HubOptions {
    fn default() -> Self {
        HubOptions {
            protocols: Protocol::ALL.to_vec(),
            client_result_timeout: Some(DEFAULT_CLIENT_RESULT_TIMEOUT),
            max_parallel_invocations: 1,
            max_queued_invocations: DEFAULT_MAX_QUEUED_INVOCATIONS,
            max_streams_per_connection: DEFAULT_MAX_STREAMS_PER_CONNECTION,
            max_upload_streams_per_connection: DEFAULT_MAX_UPLOAD_STREAMS_PER_CONNECTION,
            stream_buffer_capacity: DEFAULT_STREAM_BUFFER_CAPACITY,
        }
    }
}

/// Counters of a [`Hub`], read with [`Hub::stats`]. They only grow.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct HubStats {
    /// Hub methods, streams and hooks that panicked. A panicking method is
    /// answered with an error Completion and its invocation id is freed; the
    /// connection and the server go on.
    pub panics: u64,
    /// Completions from clients that were refused (unknown invocation id,
    /// or an invocation of another connection).
    pub refused_completions: u64,
    /// Stream items from clients that were dropped: their stream id names
    /// no open upload stream (never opened, already completed, or its
    /// method has returned).
    pub dropped_stream_items: u64,
}

/// The counters behind [`HubStats`].
#[derive(Debug, Default)]
struct HubCounters {
    panics: AtomicU64,
    refused_completions: AtomicU64,
    dropped_stream_items: AtomicU64,
}

/// A hub: named methods that clients invoke, over a lifetime manager.
///
/// Built once with [`Hub::builder`], then shared by a transport adapter,
/// which calls [`Hub::connect`] for each client and feeds the decoded
/// messages to the returned [`HubSession`]. Cheap to clone.
///
/// ```
/// use std::sync::Arc;
/// use switchboard_core::{CallContext, Hub, HubError, InMemoryHubLifetimeManager};
///
/// let hub = Hub::builder()
///     .method("Broadcast", |ctx: CallContext, (text,): (String,)| async move {
///         let from = ctx.user().unwrap_or(ctx.connection_id()).to_owned();
///         ctx.all().send("message", (from, text)).await?;
///         Ok(())
///     })
///     .method("Add", |_ctx, (a, b): (i64, i64)| async move { Ok::<_, HubError>(a + b) })
///     .build(Arc::new(InMemoryHubLifetimeManager::new()));
/// assert!(hub.has_method("Broadcast"));
/// ```
#[derive(Clone)]
pub struct Hub {
    inner: Arc<HubInner>,
}

struct HubInner {
    /// Method name -> handler; fixed once built, so lookups take no lock.
    methods: HashMap<String, Method>,
    /// Runs after a connection is registered.
    on_connected: Option<HookFn>,
    /// Runs after a connection is unregistered.
    on_disconnected: Option<HookFn>,
    /// Sends to connections.
    context: HubContext,
    /// Settings.
    options: HubOptions,
    /// What went wrong in hub code and client requests, counted.
    counters: HubCounters,
}

impl fmt::Debug for Hub {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut names: Vec<&str> = self.inner.methods.keys().map(String::as_str).collect();
        names.sort_unstable();
        f.debug_struct("Hub")
            .field("methods", &names)
            .field("options", &self.inner.options)
            .finish()
    }
}

impl Hub {
    /// Starts building a hub.
    pub fn builder() -> HubBuilder {
        HubBuilder {
            methods: HashMap::new(),
            on_connected: None,
            on_disconnected: None,
            options: HubOptions::default(),
        }
    }

    /// The context to send from outside hub methods.
    pub fn context(&self) -> &HubContext {
        &self.inner.context
    }

    /// The lifetime manager.
    pub fn manager(&self) -> &Arc<dyn HubLifetimeManager> {
        self.inner.context.manager()
    }

    /// The hub's settings.
    pub fn options(&self) -> &HubOptions {
        &self.inner.options
    }

    /// Whether a method of that name is registered.
    pub fn has_method(&self, name: &str) -> bool {
        self.inner.methods.contains_key(name)
    }

    /// The hub's counters.
    pub fn stats(&self) -> HubStats {
        let c = &self.inner.counters;
        HubStats {
            panics: c.panics.load(Ordering::Relaxed),
            refused_completions: c.refused_completions.load(Ordering::Relaxed),
            dropped_stream_items: c.dropped_stream_items.load(Ordering::Relaxed),
        }
    }
}

/// Builds a [`Hub`]; see there for an example.
pub struct HubBuilder {
    methods: HashMap<String, Method>,
    on_connected: Option<HookFn>,
    on_disconnected: Option<HookFn>,
    options: HubOptions,
}

impl fmt::Debug for HubBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HubBuilder")
            .field("methods", &self.methods.len())
            .field("options", &self.options)
            .finish()
    }
}

impl HubBuilder {
    /// Registers a method. `handler` receives the call context and the
    /// arguments as a tuple of `Deserialize` types and [`UploadStream`]s
    /// (see [`FromArguments`]), and returns a value (`()` for none) or a
    /// [`HubError`] for the caller.
    ///
    /// A later registration under the same name replaces the earlier one.
    pub fn method<A, R, F, Fut>(mut self, name: impl Into<String>, handler: F) -> Self
    where
        A: FromArguments,
        R: Serialize + Send + 'static,
        F: Fn(CallContext, A) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<R, HubError>> + Send + 'static,
    {
        let is_void = TypeId::of::<R>() == TypeId::of::<()>();
        let unary: UnaryFn = Arc::new(move |ctx: CallContext, raw: &mut Arguments<'_>| {
            let arguments = A::from_arguments(raw)?;
            let protocol = ctx.connection().protocol();
            let future = handler(ctx, arguments);
            Ok(Box::pin(async move {
                let value = future.await?;
                if is_void {
                    return Ok(None);
                }
                protocol
                    .encode_value(&value)
                    .map(Some)
                    .map_err(|e| HubError::new(format!("The result could not be serialized: {e}")))
            }) as BoxFuture<'static, Reply>)
        });
        self.methods.insert(name.into(), Method::Unary(unary));
        self
    }

    /// Registers a streaming method: `handler` returns a stream of items (or
    /// an error before the first item), each sent to the caller as a
    /// StreamItem, then a Completion. The caller can cancel the stream.
    pub fn stream<A, T, F, Fut, S>(mut self, name: impl Into<String>, handler: F) -> Self
    where
        A: FromArguments,
        T: Serialize + Send + 'static,
        F: Fn(CallContext, A) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<S, HubError>> + Send + 'static,
        S: Stream<Item = Result<T, HubError>> + Send + 'static,
    {
        let streaming: StreamFn = Arc::new(move |ctx: CallContext, raw: &mut Arguments<'_>| {
            let arguments = A::from_arguments(raw)?;
            let protocol = ctx.connection().protocol();
            let future = handler(ctx, arguments);
            Ok(Box::pin(async move {
                let stream = future.await?;
                let items = stream.map(move |item| {
                    let item = item?;
                    protocol.encode_value(&item).map(Some).map_err(|e| {
                        HubError::new(format!("A stream item could not be serialized: {e}"))
                    })
                });
                Ok(items.boxed())
            }) as BoxFuture<'static, _>)
        });
        self.methods.insert(name.into(), Method::Stream(streaming));
        self
    }

    /// Runs `hook` after each connection is registered (for example to add
    /// it to groups).
    pub fn on_connected<F, Fut>(mut self, hook: F) -> Self
    where
        F: Fn(CallContext) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        self.on_connected = Some(Arc::new(move |ctx, _| Box::pin(hook(ctx))));
        self
    }

    /// Runs `hook` after each connection is unregistered, with the error
    /// that closed it, if any.
    pub fn on_disconnected<F, Fut>(mut self, hook: F) -> Self
    where
        F: Fn(CallContext, Option<String>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        self.on_disconnected = Some(Arc::new(move |ctx, error| Box::pin(hook(ctx, error))));
        self
    }

    /// Replaces the hub's settings.
    pub fn options(mut self, options: HubOptions) -> Self {
        self.options = options;
        self
    }

    /// Sets the protocols every message is serialized for.
    pub fn protocols(mut self, protocols: impl Into<Vec<Protocol>>) -> Self {
        self.options.protocols = protocols.into();
        self
    }

    /// Sets the default client-result timeout (`None`: no timeout).
    pub fn client_result_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.options.client_result_timeout = timeout;
        self
    }

    /// Sets how many invocations of one connection run at once (at least 1).
    pub fn max_parallel_invocations(mut self, n: usize) -> Self {
        self.options.max_parallel_invocations = n.max(1);
        self
    }

    /// Sets how many invocations of one connection may wait for a slot
    /// before its reader pauses (see [`HubOptions::max_queued_invocations`]).
    pub fn max_queued_invocations(mut self, n: usize) -> Self {
        self.options.max_queued_invocations = n;
        self
    }

    /// Sets how many streams one connection may run at once (at least 1).
    pub fn max_streams_per_connection(mut self, n: usize) -> Self {
        self.options.max_streams_per_connection = n.max(1);
        self
    }

    /// Sets how many upload streams one connection may have open at once
    /// (at least 1).
    pub fn max_upload_streams_per_connection(mut self, n: usize) -> Self {
        self.options.max_upload_streams_per_connection = n.max(1);
        self
    }

    /// Sets how many items of one upload stream may wait for its method
    /// (at least 1).
    pub fn stream_buffer_capacity(mut self, n: usize) -> Self {
        self.options.stream_buffer_capacity = n.max(1);
        self
    }

    /// Builds the hub over `manager`.
    pub fn build(self, manager: Arc<dyn HubLifetimeManager>) -> Hub {
        let context = HubContext::with_options(
            manager,
            self.options.protocols.clone(),
            self.options.client_result_timeout,
        );
        Hub {
            inner: Arc::new(HubInner {
                methods: self.methods,
                on_connected: self.on_connected,
                on_disconnected: self.on_disconnected,
                context,
                options: self.options,
                counters: HubCounters::default(),
            }),
        }
    }
}

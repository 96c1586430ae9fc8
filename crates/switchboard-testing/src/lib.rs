//! Test your hubs with a SignalR client, in memory: no HTTP server, no
//! socket, no hand-written wire format.
//!
//! [`TestClient`] is a transport adapter of its own: it runs a connection
//! through the same session as a real socket (`switchboard-session`: the
//! handshake, the bounded queue and its writer, keep-alive, the Close
//! message) and really encodes and decodes every frame with the hub
//! protocol codecs (JSON or MessagePack). Only the socket is replaced, by
//! an in-memory pipe. It works with every lifetime manager: connect clients
//! to two hubs on two Redis managers and they reach each other as clients of
//! two servers do.
//!
//! ```
//! # use std::sync::Arc;
//! # use switchboard_core::{CallContext, Hub, HubError, InMemoryHubLifetimeManager};
//! use switchboard_testing::TestClient;
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), switchboard_testing::TestError> {
//! # let hub = Hub::builder()
//! #     .method("Join", |ctx: CallContext, (group,): (String,)| async move {
//! #         ctx.join(&group).await?;
//! #         Ok::<_, HubError>(())
//! #     })
//! #     .method("SendGroup", |ctx: CallContext, (group, text): (String, String)| async move {
//! #         ctx.group(group).send("message", (text,)).await?;
//! #         Ok::<_, HubError>(())
//! #     })
//! #     .build(Arc::new(InMemoryHubLifetimeManager::new()));
//!
//! let mut alice = TestClient::connect(&hub).await?;
//! let mut bob = TestClient::connect(&hub).await?;
//! alice.invoke::<()>("Join", ("room",)).await?;
//! bob.invoke::<()>("SendGroup", ("room", "hello")).await?;
//! let (text,): (String,) = alice.on("message").await?;
//! assert_eq!(text, "hello");
//! # Ok(())
//! # }
//! ```
//!
//! Client results (the server invoking a client method and waiting for
//! its answer) are answered by handlers registered with
//! [`TestClient::answer`], at once, whatever the test is waiting for.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use parking_lot::Mutex;
use serde::Serialize;
use serde::de::DeserializeOwned;
use switchboard_core::protocol::{
    Completion, HubMessage, Invocation, Outcome, Protocol, ProtocolError, RECORD_SEPARATOR,
    RawValue,
};
use switchboard_core::{ConnectionId, Hub};
use switchboard_session::{
    Accepted, ClientSink, ClientStream, Payload, ReadError, SessionOptions, Sessions, Transport,
};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// How long a call waits for the server by default.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// How often the client sends a Ping, as the official clients do.
const PING_EVERY: Duration = Duration::from_secs(15);

/// What went wrong in a test client's call.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TestError {
    /// The server refused the handshake.
    #[error("the server refused the handshake: {0}")]
    Handshake(String),
    /// The invocation failed on the server: the error of its Completion.
    #[error("the invocation failed: {0}")]
    Hub(String),
    /// Nothing came within the client's timeout.
    #[error("waited {waited:?} for {what}")]
    Timeout {
        /// How long.
        waited: Duration,
        /// For what.
        what: String,
    },
    /// The server closed the connection (with its Close message's error).
    #[error("the server closed the connection{}", .error.as_deref().map(|e| format!(": {e}")).unwrap_or_default())]
    Closed {
        /// The error the Close message carried.
        error: Option<String>,
    },
    /// A value could not be encoded, or what came is not of the type asked
    /// for.
    #[error("{0}")]
    Codec(String),
}

/// A client-result handler: the arguments of an invocation in, the
/// Completion to send back out.
type Handler = Arc<dyn Fn(Protocol, &str, &[RawValue]) -> Bytes + Send + Sync>;

/// The handlers of one client, by method.
type Handlers = Arc<Mutex<HashMap<String, Handler>>>;

/// What the pump tells the client.
enum Event {
    Handshake(Result<(), String>),
    Message(HubMessage),
    /// The server's frames could not be parsed.
    Broken(String),
}

/// An invocation of a client method by the server.
#[derive(Debug, Clone)]
pub struct ClientInvocation {
    /// The client method.
    pub target: String,
    arguments: Vec<RawValue>,
    protocol: Protocol,
}

impl ClientInvocation {
    /// The arguments, as a tuple: `let (from, text): (String, String) =
    /// invocation.arguments()?`.
    pub fn arguments<A: DeserializeOwned>(&self) -> Result<A, TestError> {
        decode_arguments(self.protocol, &self.arguments)
    }
}

/// How a [`TestClient`] connects.
#[derive(Debug, Clone)]
pub struct TestClientBuilder {
    hub: Hub,
    sessions: Option<Arc<Sessions>>,
    user: Option<String>,
    protocol: Protocol,
    timeout: Duration,
}

impl TestClientBuilder {
    /// Connects as `user` (what an authenticator would have said).
    pub fn user(mut self, user: impl Into<String>) -> Self {
        self.user = Some(user.into());
        self
    }

    /// Speaks `protocol` (JSON by default).
    pub fn protocol(mut self, protocol: Protocol) -> Self {
        self.protocol = protocol;
        self
    }

    /// How long each call waits for the server. Default:
    /// [`DEFAULT_TIMEOUT`].
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Runs the connection among `sessions` (to share their options, their
    /// count and their drain) instead of a set of its own with the default
    /// options. `sessions` must be of the same hub.
    pub fn sessions(mut self, sessions: Arc<Sessions>) -> Self {
        self.sessions = Some(sessions);
        self
    }

    /// Connects: the handshake is done when this returns, and the
    /// connection is registered with the hub.
    pub async fn connect(self) -> Result<TestClient, TestError> {
        let sessions = self
            .sessions
            .unwrap_or_else(|| Sessions::new(self.hub.clone(), SessionOptions::default()));
        let id = ConnectionId::random();
        let (to_server, from_client) = mpsc::channel(64);
        let (to_client, from_server) = mpsc::channel(64);
        let (events, mut events_rx) = mpsc::unbounded_channel();
        let handlers: Handlers = Arc::default();
        let accepted = Accepted {
            connection_id: id.clone(),
            user: self.user,
            guard: (),
            stateful: false,
        };
        let transport = Transport {
            stream: PipeStream(from_client),
            sink: PipeSink(to_client),
        };
        let session = tokio::spawn(switchboard_session::run(
            sessions, transport, accepted, None,
        ));
        let pump = tokio::spawn(pump(
            self.protocol,
            from_server,
            to_server.downgrade(),
            events,
            handlers.clone(),
        ));
        let request = format!(
            "{{\"protocol\":\"{}\",\"version\":1}}\u{1e}",
            self.protocol.name()
        );
        let handshake = Payload {
            bytes: Bytes::from(request),
            binary: false,
        };
        let waited = self.timeout;
        let answer = tokio::time::timeout(waited, async {
            to_server.send(handshake).await.ok()?;
            events_rx.recv().await
        })
        .await;
        let timeout = || TestError::Timeout {
            waited,
            what: "the handshake response".to_owned(),
        };
        match answer.map_err(|_| timeout())? {
            Some(Event::Handshake(Ok(()))) => Ok(TestClient {
                id,
                protocol: self.protocol,
                timeout: self.timeout,
                to_server,
                events: events_rx,
                queued: VecDeque::new(),
                closed: None,
                next_invocation: 0,
                handlers,
                session,
                pump,
            }),
            Some(Event::Handshake(Err(error)) | Event::Broken(error)) => {
                Err(TestError::Handshake(error))
            }
            Some(Event::Message(_)) | None => Err(TestError::Handshake(
                "the connection ended before the handshake was answered".to_owned(),
            )),
        }
    }
}

/// A SignalR client of a hub, in memory. See the [crate documentation](crate).
///
/// Every call waits at most the client's timeout ([`DEFAULT_TIMEOUT`]
/// unless [`TestClientBuilder::timeout`] says otherwise). Messages the
/// server sends while a call waits for something else are kept for
/// [`on`](TestClient::on) and [`next_message`](TestClient::next_message).
/// Dropping the client drops its connection as a vanished client would.
pub struct TestClient {
    id: ConnectionId,
    protocol: Protocol,
    timeout: Duration,
    to_server: mpsc::Sender<Payload>,
    events: mpsc::UnboundedReceiver<Event>,
    /// Server-to-client invocations taken while waiting for something else.
    queued: VecDeque<ClientInvocation>,
    /// The Close message's error, once the server closed.
    closed: Option<Option<String>>,
    next_invocation: u64,
    handlers: Handlers,
    session: JoinHandle<()>,
    pump: JoinHandle<()>,
}

impl std::fmt::Debug for TestClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestClient")
            .field("id", &self.id)
            .field("protocol", &self.protocol)
            .field("closed", &self.closed)
            .finish_non_exhaustive()
    }
}

impl Drop for TestClient {
    fn drop(&mut self) {
        self.pump.abort();
    }
}

impl TestClient {
    /// Connects to `hub` with JSON, without a user.
    pub async fn connect(hub: &Hub) -> Result<TestClient, TestError> {
        TestClient::builder(hub).connect().await
    }

    /// A client to configure before it connects.
    pub fn builder(hub: &Hub) -> TestClientBuilder {
        TestClientBuilder {
            hub: hub.clone(),
            sessions: None,
            user: None,
            protocol: Protocol::Json,
            timeout: DEFAULT_TIMEOUT,
        }
    }

    /// The connection's id, as the hub knows it.
    pub fn id(&self) -> &ConnectionId {
        &self.id
    }

    /// Invokes hub method `method` with `arguments` (a tuple) and waits for
    /// its result: `()` for a method without one. A method that fails is
    /// [`TestError::Hub`] with its error.
    pub async fn invoke<T: DeserializeOwned>(
        &mut self,
        method: &str,
        arguments: impl Serialize,
    ) -> Result<T, TestError> {
        let id = self.invocation_id();
        let invocation = invocation(self.protocol, Some(&id), method, &arguments)?;
        self.send_message(&HubMessage::Invocation(invocation))
            .await?;
        self.result(&id).await
    }

    /// Invokes hub method `method` without waiting for anything (the
    /// client's `send`): the server answers nothing.
    pub async fn send(&mut self, method: &str, arguments: impl Serialize) -> Result<(), TestError> {
        let frame = write_invocation(self.protocol, None, method, &arguments)?;
        self.write(frame).await
    }

    /// Invokes streaming hub method `method` and collects its items until
    /// the stream completes.
    pub async fn stream<T: DeserializeOwned>(
        &mut self,
        method: &str,
        arguments: impl Serialize,
    ) -> Result<Vec<T>, TestError> {
        let id = self.invocation_id();
        let invocation = invocation(self.protocol, Some(&id), method, &arguments)?;
        self.send_message(&HubMessage::StreamInvocation(invocation))
            .await?;
        let mut items = Vec::new();
        loop {
            match self.next_for(&id).await? {
                Reply::Item(item) => items.push(item.deserialize().map_err(codec)?),
                Reply::Done(Outcome::Error(error)) => return Err(TestError::Hub(error)),
                Reply::Done(_) => return Ok(items),
            }
        }
    }

    /// Invokes hub method `method` with `arguments` followed by one
    /// client-to-server stream of `items` (the method's `UploadStream`
    /// argument), sent item by item and then completed; waits for the
    /// method's result.
    pub async fn invoke_with_upload<T, I>(
        &mut self,
        method: &str,
        arguments: impl Serialize,
        items: impl IntoIterator<Item = I>,
    ) -> Result<T, TestError>
    where
        T: DeserializeOwned,
        I: Serialize,
    {
        let id = self.invocation_id();
        let stream_id = self.invocation_id();
        let mut invocation = invocation(self.protocol, Some(&id), method, &arguments)?;
        invocation.stream_ids.push(stream_id.clone());
        self.send_message(&HubMessage::Invocation(invocation))
            .await?;
        for item in items {
            let frame = self
                .protocol
                .write_stream_item(&stream_id, &item)
                .map_err(codec)?;
            self.write(frame).await?;
        }
        let end = self.protocol.write_completion_void(&stream_id);
        self.write(end).await?;
        self.result(&id).await
    }

    /// The next invocation of client method `method` by the server, with
    /// its arguments as a tuple. Invocations of other methods that arrive
    /// meanwhile are kept for later.
    pub async fn on<A: DeserializeOwned>(&mut self, method: &str) -> Result<A, TestError> {
        if let Some(at) = self.queued.iter().position(|i| i.target == method) {
            let invocation = self.queued.remove(at).expect("the position is valid");
            return invocation.arguments();
        }
        let what = format!("an invocation of '{method}'");
        loop {
            let invocation = self.next_invocation(&what).await?;
            if invocation.target == method {
                return invocation.arguments();
            }
            self.queued.push_back(invocation);
        }
    }

    /// The next invocation of any client method by the server.
    pub async fn next_message(&mut self) -> Result<ClientInvocation, TestError> {
        if let Some(invocation) = self.queued.pop_front() {
            return Ok(invocation);
        }
        self.next_invocation("an invocation of a client method")
            .await
    }

    /// Answers the server's invocations of client method `method` (client
    /// results) with `answer(arguments)`, from now on, whatever the test
    /// waits for meanwhile. Invocations of methods without a handler that
    /// expect a result are answered with an error, as the official clients
    /// do.
    pub fn answer<A, R, F>(&self, method: &str, answer: F)
    where
        A: DeserializeOwned,
        R: Serialize,
        F: Fn(A) -> R + Send + Sync + 'static,
    {
        let handler: Handler = Arc::new(move |protocol, id, arguments| {
            let written = decode_arguments::<A>(protocol, arguments).and_then(|arguments| {
                protocol
                    .write_completion_value(id, &answer(arguments))
                    .map_err(codec)
            });
            match written {
                Ok(frame) => frame,
                Err(e) => protocol.write_completion_error(id, &e.to_string()),
            }
        });
        self.handlers.lock().insert(method.to_owned(), handler);
    }

    /// Sends a Close message and waits for the server to end the
    /// connection (its disconnect hook has run when this returns).
    pub async fn close(mut self) -> Result<(), TestError> {
        let frame = self.protocol.write_close(None, false);
        self.write(frame).await?;
        let session = &mut self.session;
        match tokio::time::timeout(self.timeout, session).await {
            Ok(_) => Ok(()),
            Err(_) => Err(TestError::Timeout {
                waited: self.timeout,
                what: "the server to end the connection".to_owned(),
            }),
        }
    }

    /// Waits until the server closes the connection; the error of its
    /// Close message.
    pub async fn closed(&mut self) -> Result<Option<String>, TestError> {
        loop {
            match self.next_event("the server to close the connection").await {
                Err(TestError::Closed { error }) => return Ok(error),
                Err(e) => return Err(e),
                Ok(HubMessage::Invocation(invocation)) => {
                    self.queued.push_back(self.client_invocation(invocation));
                }
                Ok(_) => {}
            }
        }
    }

    fn invocation_id(&mut self) -> String {
        self.next_invocation += 1;
        self.next_invocation.to_string()
    }

    fn client_invocation(&self, invocation: Invocation) -> ClientInvocation {
        ClientInvocation {
            target: invocation.target,
            arguments: invocation.arguments,
            protocol: self.protocol,
        }
    }

    async fn send_message(&mut self, message: &HubMessage) -> Result<(), TestError> {
        let frame = self.protocol.write_message(message).map_err(codec)?;
        self.write(frame).await
    }

    async fn write(&mut self, bytes: Bytes) -> Result<(), TestError> {
        if let Some(error) = &self.closed {
            return Err(TestError::Closed {
                error: error.clone(),
            });
        }
        let payload = Payload {
            bytes,
            binary: self.protocol.is_binary(),
        };
        match tokio::time::timeout(self.timeout, self.to_server.send(payload)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err(TestError::Closed { error: None }),
            Err(_) => Err(TestError::Timeout {
                waited: self.timeout,
                what: "the server to take a message".to_owned(),
            }),
        }
    }

    /// The result of invocation `id`.
    async fn result<T: DeserializeOwned>(&mut self, id: &str) -> Result<T, TestError> {
        loop {
            match self.next_for(id).await? {
                Reply::Item(_) => {}
                Reply::Done(Outcome::Value(value)) => return value.deserialize().map_err(codec),
                Reply::Done(Outcome::Void) => {
                    let null = self.protocol.encode_value(&()).map_err(codec)?;
                    return null.deserialize().map_err(codec);
                }
                Reply::Done(Outcome::Error(error)) => return Err(TestError::Hub(error)),
            }
        }
    }

    /// The next stream item or the Completion of invocation `id`; other
    /// messages are kept or dropped.
    async fn next_for(&mut self, id: &str) -> Result<Reply, TestError> {
        let what = format!("the answer to invocation {id}");
        loop {
            match self.next_event(&what).await? {
                HubMessage::Completion(Completion {
                    invocation_id,
                    outcome,
                }) if invocation_id == id => return Ok(Reply::Done(outcome)),
                HubMessage::StreamItem {
                    invocation_id,
                    item,
                } if invocation_id == id => return Ok(Reply::Item(item)),
                HubMessage::Invocation(invocation) => {
                    self.queued.push_back(self.client_invocation(invocation));
                }
                _ => {}
            }
        }
    }

    async fn next_invocation(&mut self, what: &str) -> Result<ClientInvocation, TestError> {
        loop {
            if let HubMessage::Invocation(invocation) = self.next_event(what).await? {
                return Ok(self.client_invocation(invocation));
            }
        }
    }

    /// The next message from the server; a Close ends the client.
    async fn next_event(&mut self, what: &str) -> Result<HubMessage, TestError> {
        if let Some(error) = &self.closed {
            return Err(TestError::Closed {
                error: error.clone(),
            });
        }
        let event = match tokio::time::timeout(self.timeout, self.events.recv()).await {
            Ok(event) => event,
            Err(_) => {
                return Err(TestError::Timeout {
                    waited: self.timeout,
                    what: what.to_owned(),
                });
            }
        };
        match event {
            Some(Event::Message(HubMessage::Close { error, .. })) => {
                self.closed = Some(error.clone());
                Err(TestError::Closed { error })
            }
            Some(Event::Message(message)) => Ok(message),
            Some(Event::Broken(error)) => {
                self.closed = Some(Some(error.clone()));
                Err(TestError::Codec(error))
            }
            Some(Event::Handshake(_)) | None => {
                self.closed = Some(None);
                Err(TestError::Closed { error: None })
            }
        }
    }
}

/// A stream item or the end of an invocation.
enum Reply {
    Item(RawValue),
    Done(Outcome),
}

fn codec(e: impl std::fmt::Display) -> TestError {
    TestError::Codec(e.to_string())
}

/// An Invocation of `method` with `arguments` (a tuple), its arguments
/// encoded as the server will read them.
fn invocation(
    protocol: Protocol,
    id: Option<&str>,
    method: &str,
    arguments: &impl Serialize,
) -> Result<Invocation, TestError> {
    // Written and read back: the codec splits the tuple into arguments.
    let frame = write_invocation(protocol, id, method, arguments)?;
    let mut buf = BytesMut::from(&frame[..]);
    match protocol.parse_message(&mut buf, usize::MAX) {
        Ok(Some(HubMessage::Invocation(invocation))) => Ok(invocation),
        Ok(_) => Err(TestError::Codec(
            "an invocation did not read back".to_owned(),
        )),
        Err(e) => Err(codec(e)),
    }
}

/// An Invocation frame; `()` stands for no arguments.
fn write_invocation(
    protocol: Protocol,
    id: Option<&str>,
    method: &str,
    arguments: &impl Serialize,
) -> Result<Bytes, TestError> {
    match protocol.write_invocation(id, method, arguments) {
        Err(ProtocolError::ArgumentsNotASequence) if is_unit(protocol, arguments) => protocol
            .write_invocation(id, method, &[(); 0])
            .map_err(codec),
        written => written.map_err(codec),
    }
}

/// Whether `value` serializes as `()` does.
fn is_unit(protocol: Protocol, value: &impl Serialize) -> bool {
    match (protocol.encode_value(value), protocol.encode_value(&())) {
        (Ok(value), Ok(unit)) => value == unit,
        _ => false,
    }
}

/// Decodes encoded arguments as one tuple, by joining them into one array
/// of the protocol.
fn decode_arguments<A: DeserializeOwned>(
    protocol: Protocol,
    arguments: &[RawValue],
) -> Result<A, TestError> {
    let mut array = Vec::new();
    match protocol {
        Protocol::Json => {
            array.push(b'[');
            for (i, argument) in arguments.iter().enumerate() {
                if i > 0 {
                    array.push(b',');
                }
                array.extend_from_slice(argument.bytes());
            }
            array.push(b']');
        }
        Protocol::MessagePack => {
            let len = arguments.len();
            if len < 16 {
                array.push(0x90 | len as u8);
            } else {
                array.push(0xdc);
                array.extend_from_slice(&(len as u16).to_be_bytes());
            }
            for argument in arguments {
                array.extend_from_slice(argument.bytes());
            }
        }
    }
    RawValue::new(protocol, Bytes::from(array))
        .deserialize()
        .map_err(codec)
}

/// Reads what the session writes: the handshake answer, then hub
/// messages; answers Pings with nothing, client-result invocations with
/// their handler's answer, and sends a Ping now and then.
async fn pump(
    protocol: Protocol,
    mut from_server: mpsc::Receiver<Bytes>,
    to_server: mpsc::WeakSender<Payload>,
    events: mpsc::UnboundedSender<Event>,
    handlers: Handlers,
) {
    let mut input = BytesMut::new();
    let mut handshaken = false;
    let mut ping = tokio::time::interval(PING_EVERY);
    ping.tick().await;
    let binary = protocol.is_binary();
    let send = |bytes: Bytes| {
        let to_server = to_server.clone();
        async move {
            if let Some(to_server) = to_server.upgrade() {
                let _ = to_server.send(Payload { bytes, binary }).await;
            }
        }
    };
    loop {
        let batch = tokio::select! {
            batch = from_server.recv() => batch,
            _ = ping.tick() => {
                send(protocol.write_ping()).await;
                continue;
            }
        };
        let Some(batch) = batch else {
            return;
        };
        input.extend_from_slice(&batch);
        if !handshaken {
            let Some(end) = input.iter().position(|&b| b == RECORD_SEPARATOR) else {
                continue;
            };
            let answer = input.split_to(end + 1);
            handshaken = true;
            let _ = events.send(Event::Handshake(handshake_answer(&answer[..end])));
        }
        loop {
            let message = match protocol.parse_message(&mut input, usize::MAX) {
                Ok(Some(message)) => message,
                Ok(None) => break,
                Err(e) => {
                    let _ = events.send(Event::Broken(format!(
                        "the server sent what the {protocol} protocol cannot read: {e}"
                    )));
                    return;
                }
            };
            match message {
                HubMessage::Ping => {}
                HubMessage::Invocation(Invocation {
                    invocation_id: Some(id),
                    target,
                    arguments,
                    ..
                }) => {
                    let handler = handlers.lock().get(&target).cloned();
                    let answer = match handler {
                        Some(handler) => handler(protocol, &id, &arguments),
                        None => {
                            protocol.write_completion_error(&id, "Client didn't provide a result.")
                        }
                    };
                    send(answer).await;
                }
                other => {
                    let _ = events.send(Event::Message(other));
                }
            }
        }
    }
}

/// The handshake answer's error, if any.
fn handshake_answer(answer: &[u8]) -> Result<(), String> {
    match serde_json::from_slice::<serde_json::Value>(answer) {
        Ok(answer) => match answer.get("error").and_then(serde_json::Value::as_str) {
            None => Ok(()),
            Some(error) => Err(error.to_owned()),
        },
        Err(e) => Err(format!("the handshake answer is not JSON: {e}")),
    }
}

/// The session's view of what the client writes.
struct PipeStream(mpsc::Receiver<Payload>);

impl ClientStream for PipeStream {
    async fn next(&mut self) -> Option<Result<Payload, ReadError>> {
        self.0.recv().await.map(Ok)
    }
}

/// Where the session writes.
struct PipeSink(mpsc::Sender<Bytes>);

impl ClientSink for PipeSink {
    fn transport_name(&self) -> &'static str {
        "in_memory"
    }

    async fn send(&mut self, frames: Bytes, _binary: bool) -> Result<(), String> {
        self.0
            .send(frames)
            .await
            .map_err(|_| "the test client is gone".to_owned())
    }

    async fn finish(&mut self) {}
}

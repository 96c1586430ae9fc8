use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;
use futures::StreamExt;
use parking_lot::Mutex;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use super::{CallContext, Hub, Method, Reply};
use crate::connection::{Connection, Delivery};
use crate::error::Result;
use crate::protocol::{Completion, HubMessage, Invocation, Outcome, Protocol, RawValue};

/// One connected client of a [`Hub`]: the transport adapter feeds it the
/// messages it decodes, and closes it when the client goes away.
///
/// Invocations run as tasks, at most
/// [`HubOptions::max_parallel_invocations`](super::HubOptions) at once per
/// connection; [`HubSession::handle`] waits for a free slot, which pauses
/// the connection's reader (back-pressure on a client that floods). Replies
/// go into the connection's outbound queue.
#[derive(Debug)]
pub struct HubSession {
    hub: Hub,
    connection: Connection,
    /// Running invocations and streams by invocation id, so that a
    /// CancelInvocation finds them.
    running: Arc<Mutex<HashMap<String, CancellationToken>>>,
    /// Slots for concurrently running invocations.
    permits: Arc<Semaphore>,
    /// Cancelled when the session closes: every running invocation stops.
    closed: CancellationToken,
}

impl Hub {
    /// Registers `connection` with the lifetime manager, runs the hub's
    /// connect hook, and returns the session that dispatches its messages.
    pub async fn connect(&self, connection: Connection) -> Result<HubSession> {
        self.manager().on_connected(connection.clone()).await?;
        if let Some(hook) = &self.inner.on_connected {
            hook(
                CallContext::new(self.context().clone(), connection.clone()),
                None,
            )
            .await;
        }
        Ok(HubSession {
            hub: self.clone(),
            permits: Arc::new(Semaphore::new(
                self.inner.options.max_parallel_invocations.max(1),
            )),
            connection,
            running: Arc::new(Mutex::new(HashMap::new())),
            closed: CancellationToken::new(),
        })
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

    /// Dispatches one message from the client.
    ///
    /// Errors in the client's requests (unknown method, wrong arguments,
    /// a method that fails) are answered with a Completion error when the
    /// invocation has an id, and logged otherwise; they never fail the
    /// session. Ping and Close are the transport's business and ignored
    /// here.
    pub async fn handle(&self, message: HubMessage) {
        match message {
            HubMessage::Invocation(invocation) => self.invoke(invocation).await,
            HubMessage::StreamInvocation(invocation) => self.start_stream(invocation),
            HubMessage::Completion(completion) => self.complete(completion).await,
            HubMessage::CancelInvocation { invocation_id } => {
                if let Some(token) = self.running.lock().get(&invocation_id) {
                    token.cancel();
                }
            }
            HubMessage::StreamItem { invocation_id, .. } => {
                tracing::debug!(connection_id = %self.connection.id(), %invocation_id, "ignoring a stream item: client-to-server streams are not supported");
            }
            HubMessage::Ping | HubMessage::Close { .. } => {}
        }
    }

    /// Stops the running invocations, unregisters the connection from the
    /// lifetime manager, and runs the hub's disconnect hook with `error`.
    pub async fn close(self, error: Option<String>) {
        self.closed.cancel();
        if let Err(e) = self
            .hub
            .manager()
            .on_disconnected(self.connection.id())
            .await
        {
            tracing::warn!(connection_id = %self.connection.id(), error = %e, "unregistering the connection failed");
        }
        if let Some(hook) = &self.hub.inner.on_disconnected {
            hook(self.call_context(), error).await;
        }
    }

    fn call_context(&self) -> CallContext {
        CallContext::new(self.hub.context().clone(), self.connection.clone())
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

    /// Registers a running invocation so that it can be cancelled; `None`
    /// if the id is already running (a protocol error by the client).
    fn track(&self, invocation_id: Option<&str>) -> Option<CancellationToken> {
        let token = self.closed.child_token();
        if let Some(id) = invocation_id {
            let mut running = self.running.lock();
            if running.contains_key(id) {
                return None;
            }
            running.insert(id.to_owned(), token.clone());
        }
        Some(token)
    }

    async fn invoke(&self, invocation: Invocation) {
        let Invocation {
            invocation_id,
            target,
            arguments,
            stream_ids,
        } = invocation;
        let id = invocation_id.as_deref();
        if !stream_ids.is_empty() {
            return self.reply_error(id, "Client-to-server streaming is not supported.");
        }
        let method = match self.hub.inner.methods.get(&target) {
            None => return self.reply_error(id, &format!("Unknown hub method '{target}'")),
            Some(Method::Stream(_)) => {
                return self.reply_error(
                    id,
                    &format!("The client attempted to invoke the streaming '{target}' method with a non-streaming invocation."),
                );
            }
            Some(Method::Unary(method)) => method,
        };
        let future = match method(self.call_context(), &arguments) {
            Ok(future) => future,
            Err(e) => return self.reply_error(id, &format!("Failed to invoke '{target}': {e}")),
        };
        let Ok(permit) = self.permits.clone().acquire_owned().await else {
            return;
        };
        let Some(token) = self.track(id) else {
            return self.reply_error(
                id,
                &format!(
                    "Invocation ID '{}' is already in use.",
                    id.unwrap_or_default()
                ),
            );
        };
        let connection = self.connection.clone();
        let running = self.running.clone();
        let closed = self.closed.clone();
        tokio::spawn(async move {
            let reply: Option<Reply> = tokio::select! {
                reply = future => Some(reply),
                () = token.cancelled() => if closed.is_cancelled() {
                    None
                } else {
                    Some(Err("Invocation canceled by the client.".into()))
                },
            };
            drop(permit);
            let Some(id) = invocation_id else { return };
            running.lock().remove(&id);
            if let Some(reply) = reply {
                let frame = completion_frame(connection.protocol(), &id, reply);
                let _ = connection.send_frame(frame);
            }
        });
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
        if !stream_ids.is_empty() {
            return self.reply_error(Some(&id), "Client-to-server streaming is not supported.");
        }
        let method = match self.hub.inner.methods.get(&target) {
            None => return self.reply_error(Some(&id), &format!("Unknown hub method '{target}'")),
            Some(Method::Unary(_)) => {
                return self.reply_error(
                    Some(&id),
                    &format!("The client attempted to invoke the non-streaming '{target}' method with a streaming invocation."),
                );
            }
            Some(Method::Stream(method)) => method,
        };
        let future = match method(self.call_context(), &arguments) {
            Ok(future) => future,
            Err(e) => {
                return self.reply_error(Some(&id), &format!("Failed to invoke '{target}': {e}"));
            }
        };
        let Some(token) = self.track(Some(&id)) else {
            return self.reply_error(
                Some(&id),
                &format!("Invocation ID '{id}' is already in use."),
            );
        };
        let connection = self.connection.clone();
        let running = self.running.clone();
        tokio::spawn(async move {
            let protocol = connection.protocol();
            let outcome = tokio::select! {
                outcome = run_stream(&connection, &id, future) => outcome,
                // Cancelled by the client (or the session closed): end
                // quietly, as a completion without error.
                () = token.cancelled() => Outcome::Void,
            };
            running.lock().remove(&id);
            if !connection.is_closed() {
                let frame = match outcome {
                    Outcome::Error(error) => protocol.write_completion_error(&id, &error),
                    _ => protocol.write_completion_void(&id),
                };
                let _ = connection.send_frame(frame);
            }
        });
    }

    async fn complete(&self, completion: Completion) {
        let invocation_id = completion.invocation_id.clone();
        if let Err(e) = self
            .hub
            .manager()
            .set_connection_result(self.connection.id(), completion)
            .await
        {
            tracing::warn!(connection_id = %self.connection.id(), %invocation_id, error = %e, "completion refused");
        }
    }
}

/// Runs a stream to its end, queueing each item; returns how it ended.
async fn run_stream(
    connection: &Connection,
    id: &str,
    future: futures::future::BoxFuture<
        'static,
        Result<futures::stream::BoxStream<'static, Reply>, super::HubError>,
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
        // to keep up rather than overflowing its queue.
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

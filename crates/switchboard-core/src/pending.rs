use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use parking_lot::Mutex;
use serde::de::DeserializeOwned;
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

use crate::ConnectionId;
use crate::error::{Error, Result};
use crate::protocol::{Outcome, RawValue};

/// How long to wait for a client result, and how to give up early.
#[derive(Debug, Clone, Default)]
pub struct InvokeOptions {
    /// Give up with [`Error::ClientResultTimeout`] after this long; `None`
    /// waits until the client answers, disconnects or the call is cancelled.
    pub timeout: Option<Duration>,
    /// Give up with [`Error::Canceled`] when this token is cancelled.
    /// Dropping the returned future also gives up, silently.
    pub cancel: Option<CancellationToken>,
}

impl InvokeOptions {
    /// Options with a timeout.
    pub fn timeout(timeout: Duration) -> InvokeOptions {
        InvokeOptions {
            timeout: Some(timeout),
            cancel: None,
        }
    }

    /// Adds a cancellation token.
    pub fn with_cancel(mut self, cancel: CancellationToken) -> InvokeOptions {
        self.cancel = Some(cancel);
        self
    }
}

/// A client's successful answer to an invocation that expected a result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientResponse {
    value: Option<RawValue>,
}

impl ClientResponse {
    /// A response carrying `value` (`None`: the client returned nothing).
    pub fn new(value: Option<RawValue>) -> ClientResponse {
        ClientResponse { value }
    }

    /// The value, still in the client's protocol encoding.
    pub fn raw(&self) -> Option<&RawValue> {
        self.value.as_ref()
    }

    /// Converts the value into `T`. A client that returned nothing reads as
    /// `null` (so `()` and `Option<_>` accept it).
    ///
    /// A value of the wrong type is [`Error::InvalidResult`].
    pub fn deserialize<T: DeserializeOwned>(&self) -> Result<T> {
        let result = match &self.value {
            Some(raw) => raw.deserialize(),
            None => serde_json::from_str("null")
                .map_err(|e| crate::protocol::ProtocolError::InvalidValue(e.to_string())),
        };
        result.map_err(|e| Error::InvalidResult {
            reason: e.to_string(),
        })
    }
}

/// Turns a client's Completion outcome into the caller's result.
pub fn outcome_to_result(outcome: Outcome) -> Result<ClientResponse> {
    match outcome {
        Outcome::Void => Ok(ClientResponse::new(None)),
        Outcome::Value(value) => Ok(ClientResponse::new(Some(value))),
        Outcome::Error(message) => Err(Error::ClientError { message }),
    }
}

/// The sending side of a local wait for a client result.
pub type ResultSender = oneshot::Sender<Result<ClientResponse>>;

/// Invocations waiting for a client's Completion, by invocation id.
///
/// Each entry remembers the connection that was invoked, so that a
/// completion from another connection is refused and a disconnect fails
/// exactly that connection's invocations. `W` is what the manager needs to
/// deliver the answer: a local channel, or where to forward it.
#[derive(Debug)]
pub struct PendingInvocations<W> {
    entries: Mutex<HashMap<String, (ConnectionId, W)>>,
}

impl<W> Default for PendingInvocations<W> {
    fn default() -> Self {
        PendingInvocations {
            entries: Mutex::new(HashMap::new()),
        }
    }
}

impl<W> PendingInvocations<W> {
    /// An empty table.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records an invocation of `connection_id`. Fails if the id is in use.
    pub fn insert(
        &self,
        invocation_id: &str,
        connection_id: ConnectionId,
        waiter: W,
    ) -> Result<()> {
        let mut entries = self.entries.lock();
        if entries.contains_key(invocation_id) {
            return Err(Error::DuplicateInvocation {
                invocation_id: invocation_id.to_owned(),
            });
        }
        entries.insert(invocation_id.to_owned(), (connection_id, waiter));
        Ok(())
    }

    /// Takes the waiter of an invocation completed by `connection_id`.
    ///
    /// An unknown id is [`Error::UnknownInvocation`]; a completion from
    /// another connection is [`Error::WrongConnection`] and leaves the entry
    /// in place for the right connection.
    pub fn take(&self, invocation_id: &str, connection_id: &str) -> Result<W> {
        let mut entries = self.entries.lock();
        match entries.get(invocation_id) {
            None => Err(Error::UnknownInvocation {
                invocation_id: invocation_id.to_owned(),
            }),
            Some((owner, _)) if owner.as_str() != connection_id => Err(Error::WrongConnection {
                invocation_id: invocation_id.to_owned(),
                connection_id: connection_id.to_owned(),
            }),
            Some(_) => entries
                .remove(invocation_id)
                .map(|(_, waiter)| waiter)
                .ok_or_else(|| Error::UnknownInvocation {
                    invocation_id: invocation_id.to_owned(),
                }),
        }
    }

    /// Removes an invocation whatever its connection (timeout, cancel).
    pub fn remove(&self, invocation_id: &str) -> Option<W> {
        self.entries.lock().remove(invocation_id).map(|(_, w)| w)
    }

    /// Removes and returns every invocation of a connection.
    pub fn take_connection(&self, connection_id: &str) -> Vec<(String, W)> {
        self.take_matching(|owner, _| owner.as_str() == connection_id)
    }

    /// Removes and returns every invocation whose waiter matches.
    pub fn take_where(&self, mut matches: impl FnMut(&W) -> bool) -> Vec<(String, W)> {
        self.take_matching(|_, waiter| matches(waiter))
    }

    fn take_matching(
        &self,
        mut matches: impl FnMut(&ConnectionId, &W) -> bool,
    ) -> Vec<(String, W)> {
        let mut entries = self.entries.lock();
        let ids: Vec<String> = entries
            .iter()
            .filter(|(_, (owner, waiter))| matches(owner, waiter))
            .map(|(id, _)| id.clone())
            .collect();
        ids.into_iter()
            .filter_map(|id| entries.remove(&id).map(|(_, w)| (id, w)))
            .collect()
    }

    /// Removes and returns every invocation.
    pub fn drain(&self) -> Vec<(String, W)> {
        self.entries
            .lock()
            .drain()
            .map(|(id, (_, w))| (id, w))
            .collect()
    }

    /// The number of pending invocations.
    pub fn len(&self) -> usize {
        self.entries.lock().len()
    }

    /// Whether nothing is pending.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// A guard that removes `invocation_id` when dropped, so that a caller
    /// that gives up (timeout, cancellation, dropped future) leaves nothing
    /// behind.
    pub fn remove_on_drop<'a>(&'a self, invocation_id: &'a str) -> RemoveOnDrop<'a, W> {
        RemoveOnDrop {
            pending: self,
            invocation_id,
        }
    }
}

/// Removes a pending invocation when dropped; see
/// [`PendingInvocations::remove_on_drop`].
#[derive(Debug)]
pub struct RemoveOnDrop<'a, W> {
    pending: &'a PendingInvocations<W>,
    invocation_id: &'a str,
}

impl<W> Drop for RemoveOnDrop<'_, W> {
    fn drop(&mut self) {
        self.pending.remove(self.invocation_id);
    }
}

/// Waits for a client result on `rx`, honouring the timeout and the
/// cancellation token in `options`.
pub async fn wait_for_response(
    rx: oneshot::Receiver<Result<ClientResponse>>,
    connection_id: &str,
    options: &InvokeOptions,
) -> Result<ClientResponse> {
    let cancelled = async {
        match &options.cancel {
            Some(token) => token.cancelled().await,
            None => std::future::pending().await,
        }
    };
    let deadline = async {
        match options.timeout {
            Some(timeout) => tokio::time::sleep(timeout).await,
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        result = rx => match result {
            Ok(result) => result,
            // The sender was dropped without an answer: the manager went away.
            Err(_) => Err(Error::Shutdown),
        },
        () = cancelled => Err(Error::Canceled),
        () = deadline => Err(Error::ClientResultTimeout {
            connection_id: connection_id.to_owned(),
            timeout: options.timeout.unwrap_or_default(),
        }),
    }
}

/// Generates invocation ids for client results: a random per-generator
/// prefix and a counter, so ids from different servers never collide.
#[derive(Debug)]
pub struct InvocationIds {
    prefix: String,
    next: AtomicU64,
}

impl Default for InvocationIds {
    fn default() -> Self {
        InvocationIds::new()
    }
}

impl InvocationIds {
    /// A generator with a fresh random prefix.
    pub fn new() -> InvocationIds {
        let mut prefix = crate::id::random_token();
        prefix.truncate(12);
        InvocationIds {
            prefix,
            next: AtomicU64::new(1),
        }
    }

    /// The next id.
    pub fn next_id(&self) -> String {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        format!("{}.{n}", self.prefix)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn wrong_connection_leaves_entry() {
        let pending = PendingInvocations::new();
        pending.insert("1", ConnectionId::from("a"), 7).unwrap();
        assert!(matches!(
            pending.take("1", "b"),
            Err(Error::WrongConnection { .. })
        ));
        assert_eq!(pending.take("1", "a").unwrap(), 7);
        assert!(matches!(
            pending.take("1", "a"),
            Err(Error::UnknownInvocation { .. })
        ));
    }

    #[test]
    fn duplicate_ids_refused() {
        let pending = PendingInvocations::new();
        pending.insert("1", ConnectionId::from("a"), ()).unwrap();
        assert!(matches!(
            pending.insert("1", ConnectionId::from("b"), ()),
            Err(Error::DuplicateInvocation { .. })
        ));
    }

    #[test]
    fn take_connection_only_takes_that_connection() {
        let pending = PendingInvocations::new();
        pending.insert("1", ConnectionId::from("a"), 1).unwrap();
        pending.insert("2", ConnectionId::from("b"), 2).unwrap();
        pending.insert("3", ConnectionId::from("a"), 3).unwrap();
        let mut taken: Vec<_> = pending
            .take_connection("a")
            .into_iter()
            .map(|(_, w)| w)
            .collect();
        taken.sort();
        assert_eq!(taken, vec![1, 3]);
        assert_eq!(pending.len(), 1);
    }

    #[test]
    fn guard_removes() {
        let pending = PendingInvocations::new();
        pending.insert("1", ConnectionId::from("a"), 1).unwrap();
        drop(pending.remove_on_drop("1"));
        assert!(pending.is_empty());
    }

    #[test]
    fn ids_from_two_generators_differ() {
        let a = InvocationIds::new();
        let b = InvocationIds::new();
        assert_ne!(a.next_id(), b.next_id());
        assert_ne!(a.next_id(), a.next_id());
    }
}

//! Client-to-server streams: the items a client uploads to an invocation
//! that named them in its `streamIds`.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures::Stream;
use parking_lot::Mutex;
use serde::de::DeserializeOwned;
use tokio::sync::mpsc;
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};

use super::HubError;
use crate::protocol::{ProtocolError, RawValue};

/// What the session hands an upload stream.
enum Item {
    /// One item, still encoded.
    Value(RawValue),
    /// The client's Completion, with its error if it carried one.
    End(Option<String>),
}

/// The error an upload stream ends with when its invocation is cancelled
/// or its connection closes before the client completed it.
const CANCELLED: &str = "The upload stream was cancelled before the client completed it.";

/// The upload streams of one connection, by stream id.
pub(crate) struct Uploads {
    open: Arc<Mutex<Open>>,
    /// How many may be open at once.
    limit: usize,
    /// How many items of one stream may wait for the method to take them.
    capacity: usize,
}

#[derive(Default)]
struct Open {
    streams: HashMap<String, Entry>,
    /// Numbers the streams, so that a stream's end removes its own entry
    /// and not a newer one under a reused id.
    next: u64,
}

struct Entry {
    number: u64,
    items: mpsc::Sender<Item>,
}

/// Why an upload stream could not be opened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum OpenError {
    /// The stream id is already open on this connection.
    InUse(String),
    /// The connection has `limit` upload streams open already.
    TooMany(usize),
}

impl Uploads {
    pub(crate) fn new(limit: usize, capacity: usize) -> Uploads {
        Uploads {
            open: Arc::new(Mutex::new(Open::default())),
            limit: limit.max(1),
            capacity: capacity.max(1),
        }
    }

    /// Opens stream `id` for an invocation whose cancellation is `cancel`.
    pub(crate) fn open<T>(
        &self,
        id: &str,
        cancel: CancellationToken,
    ) -> Result<UploadStream<T>, OpenError> {
        let (sender, items) = mpsc::channel(self.capacity);
        let number = {
            let mut open = self.open.lock();
            if open.streams.contains_key(id) {
                return Err(OpenError::InUse(id.to_owned()));
            }
            if open.streams.len() >= self.limit {
                return Err(OpenError::TooMany(self.limit));
            }
            open.next += 1;
            let number = open.next;
            open.streams.insert(
                id.to_owned(),
                Entry {
                    number,
                    items: sender,
                },
            );
            number
        };
        Ok(UploadStream {
            items,
            cancelled: Box::pin(cancel.cancelled_owned()),
            ended: false,
            registration: Registration {
                open: self.open.clone(),
                id: id.to_owned(),
                number,
            },
            _item: PhantomData,
        })
    }

    /// Hands `item` to stream `id`, waiting while its buffer is full;
    /// `false` if no such stream is open (never opened, completed, or its
    /// method has ended).
    pub(crate) async fn item(&self, id: &str, item: RawValue) -> bool {
        let Some(sender) = self.sender(id) else {
            return false;
        };
        // A failed send: the method dropped the stream meanwhile.
        sender.send(Item::Value(item)).await.is_ok()
    }

    /// Ends stream `id` as the client's Completion says (`error` if it
    /// carried one); `false` if no such stream is open.
    pub(crate) async fn complete(&self, id: &str, error: Option<String>) -> bool {
        let Some(entry) = self.open.lock().streams.remove(id) else {
            return false;
        };
        // Behind the items already buffered; a stream its method dropped
        // meanwhile refuses it, which is fine.
        let _ = entry.items.send(Item::End(error)).await;
        true
    }

    /// Cuts every stream off (the connection is closing): each one's method
    /// gets the items already buffered, then the cancellation error.
    pub(crate) fn close_all(&self) {
        let streams = std::mem::take(&mut self.open.lock().streams);
        drop(streams);
    }

    fn sender(&self, id: &str) -> Option<mpsc::Sender<Item>> {
        self.open.lock().streams.get(id).map(|e| e.items.clone())
    }
}

impl fmt::Debug for Uploads {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Uploads")
            .field("open", &self.open.lock().streams.len())
            .field("limit", &self.limit)
            .field("capacity", &self.capacity)
            .finish()
    }
}

/// Removes a stream's entry when the stream is dropped.
struct Registration {
    open: Arc<Mutex<Open>>,
    id: String,
    number: u64,
}

impl Drop for Registration {
    fn drop(&mut self) {
        let mut open = self.open.lock();
        if open.streams.get(&self.id).map(|e| e.number) == Some(self.number) {
            open.streams.remove(&self.id);
        }
    }
}

/// A stream a client uploads to a hub method: a method argument of this
/// type receives the items of one of the invocation's `streamIds`, each
/// deserialized as `T`, in the order the client sent them.
///
/// It may stand in any position of a method's arguments; the others are
/// read from the invocation's `arguments` in order, the streams from its
/// `streamIds` in order. Items wait in a small buffer
/// ([`HubOptions::stream_buffer_capacity`](super::HubOptions::stream_buffer_capacity),
/// 10 by default); a client that sends faster than the method takes them
/// waits (its connection's messages are read no further until there is
/// room), it never loses an item.
///
/// The stream ends (`None`) when the client completes it. It yields an
/// `Err` and then ends when the client completes it with an error, when an
/// item is not a `T`, or when the invocation is cancelled or the connection
/// closes before the client completed it. Dropping it (or returning from
/// the method) closes it: later items from the client are dropped and
/// counted in [`HubStats::dropped_stream_items`](super::HubStats::dropped_stream_items).
///
/// ```
/// use std::sync::Arc;
/// use futures::StreamExt;
/// use switchboard_core::{CallContext, Hub, HubError, InMemoryHubLifetimeManager, UploadStream};
///
/// let hub = Hub::builder()
///     .method("Sum", |_ctx: CallContext, (mut numbers,): (UploadStream<i64>,)| async move {
///         let mut sum = 0;
///         while let Some(n) = numbers.next().await {
///             sum += n?;
///         }
///         Ok::<_, HubError>(sum)
///     })
///     .build(Arc::new(InMemoryHubLifetimeManager::new()));
/// assert!(hub.has_method("Sum"));
/// ```
pub struct UploadStream<T> {
    items: mpsc::Receiver<Item>,
    cancelled: Pin<Box<WaitForCancellationFutureOwned>>,
    ended: bool,
    registration: Registration,
    _item: PhantomData<fn() -> T>,
}

impl<T> fmt::Debug for UploadStream<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UploadStream")
            .field("stream_id", &self.registration.id)
            .field("ended", &self.ended)
            .finish()
    }
}

impl<T> UploadStream<T> {
    /// The stream id the client chose.
    pub fn stream_id(&self) -> &str {
        &self.registration.id
    }

    fn end(&mut self, error: String) -> Poll<Option<Result<T, HubError>>> {
        self.ended = true;
        self.items.close();
        Poll::Ready(Some(Err(HubError::new(error))))
    }
}

impl<T: DeserializeOwned> Stream for UploadStream<T> {
    type Item = Result<T, HubError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.ended {
            return Poll::Ready(None);
        }
        match self.items.poll_recv(cx) {
            Poll::Ready(Some(Item::Value(raw))) => match raw.deserialize::<T>() {
                Ok(item) => Poll::Ready(Some(Ok(item))),
                Err(e) => {
                    let reason = match e {
                        ProtocolError::InvalidValue(reason) => reason,
                        other => other.to_string(),
                    };
                    let id = self.registration.id.clone();
                    self.end(format!("An item of stream '{id}' is invalid: {reason}"))
                }
            },
            Poll::Ready(Some(Item::End(Some(error)))) => self.end(error),
            Poll::Ready(Some(Item::End(None))) => {
                self.ended = true;
                self.items.close();
                Poll::Ready(None)
            }
            // Cut off without the client's Completion: the connection closed.
            Poll::Ready(None) => self.end(CANCELLED.to_owned()),
            Poll::Pending => match self.cancelled.as_mut().poll(cx) {
                Poll::Ready(()) => self.end(CANCELLED.to_owned()),
                Poll::Pending => Poll::Pending,
            },
        }
    }
}

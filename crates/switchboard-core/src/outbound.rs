//! A connection's outbound queue and close signal, in one small allocation.
//!
//! Fan-out hands one frame to thousands of connections in a row, and most
//! of them have an empty queue (their writer keeps up). Each delivery should
//! therefore touch as little memory as possible: here the queue's state, the
//! close flag and the oldest frame live inline in the connection's own
//! allocation, so queuing into an empty queue writes one or two cache lines
//! and allocates nothing. A separate buffer is allocated only once a second
//! frame waits. An idle connection costs no buffer at all.
//!
//! (A tokio `mpsc` channel allocates its channel state and a first block of
//! 32 slots per connection, and a `CancellationToken` a tree node behind a
//! mutex: about 1.5 KiB per connection, and several cache misses per
//! delivery.)

use std::collections::VecDeque;
use std::pin::pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, Waker};

use bytes::Bytes;
use parking_lot::Mutex;
use tokio::sync::Notify;

/// The outcome of [`Outbound::try_push`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Push {
    /// The frame is queued.
    Queued,
    /// The queue holds `capacity` frames; the frame was not queued.
    Full,
    /// The connection is closed or its receiver is gone; the frame was dropped.
    Closed,
}

/// The shared state between a connection's senders and its one receiver.
///
/// `repr(C)` keeps the fields a delivery into an empty queue touches (the
/// close flag, the lock, `head`, the receiver's waker) together at the
/// start, within two cache lines.
#[repr(C)]
pub(crate) struct Outbound {
    /// Set, under the `state` lock, once the connection must close; read
    /// without the lock by `is_closed`.
    closed: AtomicBool,
    /// Frames and waiters. Held for a few instructions at a time, never
    /// across `.await`; a `parking_lot` mutex because uncontended it is one
    /// atomic operation each way and one byte of space.
    state: Mutex<State>,
    /// Wakes tasks in [`Outbound::closed`] when the connection closes, and
    /// tasks in [`Outbound::push_waiting`] when room is made or it closes.
    signal: Notify,
    /// At most this many frames wait (at least 1); producers that wait
    /// for room stop at half of it (see [`Outbound::waiting_limit`]).
    capacity: usize,
}

/// Hot fields first (see [`Outbound`]).
#[repr(C)]
struct State {
    /// The oldest queued frame, inline; `None` exactly when the queue is empty.
    head: Option<Bytes>,
    /// The receiver's waker while it waits for a frame.
    receiver: Option<Waker>,
    /// The receiver was dropped: nobody will read, so nothing is queued.
    receiver_gone: bool,
    /// The frames after `head`, oldest first. Allocates only when a second
    /// frame waits.
    rest: VecDeque<Bytes>,
    /// How many `push_waiting` calls wait for room: only then does taking a
    /// frame notify.
    waiting_senders: usize,
    /// Why the server closed the connection, for the Close message.
    close_reason: Option<String>,
}

impl State {
    fn len(&self) -> usize {
        usize::from(self.head.is_some()) + self.rest.len()
    }

    /// Whether at least `n` frames wait (`n` is at least 1); an empty
    /// queue is judged without reading `rest`.
    fn holds(&self, n: usize) -> bool {
        self.head.is_some() && 1 + self.rest.len() >= n
    }

    fn push(&mut self, frame: Bytes) {
        if self.head.is_none() {
            self.head = Some(frame);
        } else {
            self.rest.push_back(frame);
        }
    }

    fn pop(&mut self) -> Option<Bytes> {
        let frame = self.head.take()?;
        self.head = self.rest.pop_front();
        Some(frame)
    }
}

impl Outbound {
    /// An empty, open queue for at most `capacity` frames (at least 1).
    pub(crate) fn new(capacity: usize) -> Outbound {
        Outbound {
            closed: AtomicBool::new(false),
            state: Mutex::new(State {
                head: None,
                receiver: None,
                receiver_gone: false,
                rest: VecDeque::new(),
                waiting_senders: 0,
                close_reason: None,
            }),
            signal: Notify::new(),
            capacity: capacity.max(1),
        }
    }

    /// Queues `frame` if there is room; never waits.
    pub(crate) fn try_push(&self, frame: Bytes) -> Push {
        let receiver = {
            let mut state = self.state.lock();
            if self.closed.load(Ordering::Relaxed) || state.receiver_gone {
                return Push::Closed;
            }
            if state.holds(self.capacity) {
                return Push::Full;
            }
            state.push(frame);
            state.receiver.take()
        };
        // Woken outside the lock, so the receiver does not wake into it.
        if let Some(receiver) = receiver {
            receiver.wake();
        }
        Push::Queued
    }

    /// Queues `frame` once fewer than [`Outbound::waiting_limit`] frames
    /// wait, so a producer that waits (a stream) never takes the room that
    /// fan-out and replies, which cannot wait, need. `false` if the
    /// connection closes (or its receiver goes) first; the frame is then
    /// dropped. Cancel-safe: dropping the future leaves nothing behind.
    pub(crate) async fn push_waiting(&self, frame: Bytes) -> bool {
        let limit = self.waiting_limit();
        let mut frame = Some(frame);
        loop {
            let mut notified = pin!(self.signal.notified());
            // Registered before the state is checked, so a notification sent
            // after the check is not missed.
            notified.as_mut().enable();
            let receiver = {
                let mut state = self.state.lock();
                if self.closed.load(Ordering::Relaxed) || state.receiver_gone {
                    return false;
                }
                if !state.holds(limit) {
                    if let Some(frame) = frame.take() {
                        state.push(frame);
                    }
                    Some(state.receiver.take())
                } else {
                    state.waiting_senders += 1;
                    None
                }
            };
            match receiver {
                Some(receiver) => {
                    if let Some(receiver) = receiver {
                        receiver.wake();
                    }
                    return true;
                }
                None => {
                    let _waiting = WaitingSender(self);
                    notified.await;
                }
            }
        }
    }

    /// How many queued frames make [`Outbound::push_waiting`] wait: half
    /// the capacity (at least 1). The other half stays free for frames that
    /// cannot wait, so a long stream to a slow reader never makes a
    /// broadcast or a reply overflow the queue.
    pub(crate) fn waiting_limit(&self) -> usize {
        (self.capacity / 2).max(1)
    }

    /// Takes the oldest frame: `Ready(None)` once the connection is closed
    /// and the queue empty; `Pending` (waking `cx` later) otherwise.
    pub(crate) fn poll_pop(&self, cx: &mut Context<'_>) -> Poll<Option<Bytes>> {
        let (frame, notify) = {
            let mut state = self.state.lock();
            match state.pop() {
                Some(frame) => (frame, state.waiting_senders > 0),
                None if self.closed.load(Ordering::Relaxed) => return Poll::Ready(None),
                None => {
                    match &mut state.receiver {
                        Some(waker) if waker.will_wake(cx.waker()) => {}
                        slot => *slot = Some(cx.waker().clone()),
                    }
                    return Poll::Pending;
                }
            }
        };
        if notify {
            self.signal.notify_waiters();
        }
        Poll::Ready(Some(frame))
    }

    /// How many frames are queued now.
    pub(crate) fn len(&self) -> usize {
        self.state.lock().len()
    }

    /// Takes the oldest frame if one is queued.
    pub(crate) fn try_pop(&self) -> Option<Bytes> {
        let (frame, notify) = {
            let mut state = self.state.lock();
            let frame = state.pop()?;
            (frame, state.waiting_senders > 0)
        };
        if notify {
            self.signal.notify_waiters();
        }
        Some(frame)
    }

    /// The receiver is gone: drops what is queued and refuses more.
    pub(crate) fn receiver_dropped(&self) {
        let (frames, notify) = {
            let mut state = self.state.lock();
            state.receiver_gone = true;
            state.receiver = None;
            let frames = (state.head.take(), std::mem::take(&mut state.rest));
            (frames, state.waiting_senders > 0)
        };
        // Frames are freed outside the lock.
        drop(frames);
        if notify {
            self.signal.notify_waiters();
        }
    }

    /// Marks the connection closed with `reason`; `false` if it already was
    /// (the first reason is kept).
    pub(crate) fn close(&self, reason: String) -> bool {
        let receiver = {
            let mut state = self.state.lock();
            if self.closed.load(Ordering::Relaxed) {
                return false;
            }
            state.close_reason = Some(reason);
            self.closed.store(true, Ordering::Release);
            state.receiver.take()
        };
        if let Some(receiver) = receiver {
            receiver.wake();
        }
        self.signal.notify_waiters();
        true
    }

    /// Whether the connection has been asked to close.
    pub(crate) fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// Completes once the connection has been asked to close.
    pub(crate) async fn closed(&self) {
        loop {
            let mut notified = pin!(self.signal.notified());
            notified.as_mut().enable();
            if self.is_closed() {
                return;
            }
            notified.await;
        }
    }

    /// Why the server closed the connection, if it did.
    pub(crate) fn close_reason(&self) -> Option<String> {
        self.state.lock().close_reason.clone()
    }
}

/// Counts a `push_waiting` call as waiting for room until dropped, also
/// when its future is dropped mid-wait.
struct WaitingSender<'a>(&'a Outbound);

impl Drop for WaitingSender<'_> {
    fn drop(&mut self) {
        self.0.state.lock().waiting_senders -= 1;
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::sync::Arc;

    fn frame(s: &'static str) -> Bytes {
        Bytes::from_static(s.as_bytes())
    }

    fn pop_now(queue: &Outbound) -> Poll<Option<Bytes>> {
        let waker = futures::task::noop_waker();
        queue.poll_pop(&mut Context::from_waker(&waker))
    }

    #[test]
    fn frames_come_out_in_order_across_the_inline_slot() {
        let queue = Outbound::new(3);
        assert_eq!(queue.try_push(frame("a")), Push::Queued);
        assert_eq!(queue.try_push(frame("b")), Push::Queued);
        assert_eq!(queue.try_pop(), Some(frame("a")));
        assert_eq!(queue.try_push(frame("c")), Push::Queued);
        assert_eq!(queue.try_push(frame("d")), Push::Queued);
        assert_eq!(queue.try_push(frame("e")), Push::Full);
        assert_eq!(queue.try_pop(), Some(frame("b")));
        assert_eq!(queue.try_pop(), Some(frame("c")));
        assert_eq!(queue.try_pop(), Some(frame("d")));
        assert_eq!(queue.try_pop(), None);
        assert!(pop_now(&queue).is_pending());
    }

    #[tokio::test]
    async fn a_waiting_push_leaves_half_the_queue_to_pushes_that_cannot_wait() {
        let queue = Arc::new(Outbound::new(4));
        assert!(queue.push_waiting(frame("s1")).await);
        assert!(queue.push_waiting(frame("s2")).await);
        // Half full: the next waiting push waits...
        let third = tokio::spawn({
            let queue = queue.clone();
            async move { queue.push_waiting(frame("s3")).await }
        });
        tokio::task::yield_now().await;
        assert!(!third.is_finished());
        // ...while pushes that cannot wait still find room.
        assert_eq!(queue.try_push(frame("a")), Push::Queued);
        assert_eq!(queue.try_push(frame("b")), Push::Queued);
        assert_eq!(queue.try_push(frame("c")), Push::Full);
        for expected in ["s1", "s2", "a"] {
            assert_eq!(queue.try_pop(), Some(frame(expected)));
        }
        // One frame left: below the limit, so the waiting push goes in.
        assert!(third.await.unwrap());
        assert_eq!(queue.try_pop(), Some(frame("b")));
        assert_eq!(queue.try_pop(), Some(frame("s3")));
    }

    #[test]
    fn close_lets_the_receiver_drain_then_ends() {
        let queue = Outbound::new(4);
        queue.try_push(frame("a"));
        assert!(queue.close("bye".to_owned()));
        assert!(!queue.close("again".to_owned()));
        assert_eq!(queue.close_reason().as_deref(), Some("bye"));
        assert_eq!(queue.try_push(frame("b")), Push::Closed);
        assert_eq!(pop_now(&queue), Poll::Ready(Some(frame("a"))));
        assert_eq!(pop_now(&queue), Poll::Ready(None));
    }

    #[test]
    fn a_gone_receiver_refuses_frames_and_frees_the_queue() {
        let queue = Outbound::new(4);
        queue.try_push(frame("a"));
        queue.try_push(frame("b"));
        queue.receiver_dropped();
        assert_eq!(queue.try_push(frame("c")), Push::Closed);
        assert_eq!(queue.state.lock().len(), 0);
        assert!(!queue.is_closed());
    }

    #[tokio::test]
    async fn a_waiting_receiver_is_woken_by_a_push_and_by_close() {
        let queue = Arc::new(Outbound::new(4));
        let receiver = tokio::spawn({
            let queue = queue.clone();
            async move {
                let first = std::future::poll_fn(|cx| queue.poll_pop(cx)).await;
                let second = std::future::poll_fn(|cx| queue.poll_pop(cx)).await;
                (first, second)
            }
        });
        tokio::task::yield_now().await;
        queue.try_push(frame("a"));
        tokio::task::yield_now().await;
        queue.close("bye".to_owned());
        assert_eq!(receiver.await.unwrap(), (Some(frame("a")), None));
    }

    #[tokio::test]
    async fn a_cancelled_waiting_push_stops_counting_as_waiting() {
        let queue = Outbound::new(1);
        queue.try_push(frame("a"));
        let wait = tokio::time::timeout(
            std::time::Duration::from_millis(10),
            queue.push_waiting(frame("b")),
        );
        assert!(wait.await.is_err());
        assert_eq!(queue.state.lock().waiting_senders, 0);
        assert_eq!(queue.try_pop(), Some(frame("a")));
        assert_eq!(queue.try_pop(), None);
    }
}

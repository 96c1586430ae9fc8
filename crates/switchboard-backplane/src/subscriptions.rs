//! Ordered subscribe / unsubscribe through the driver.
//!
//! Membership changes (a group's first local member, a user's last local
//! connection...) are turned into subscription commands while the change
//! is made, under one lock, and queued here in that order. One worker sends
//! them in order, batching runs of the same command into one driver call.
//! Without the single ordered queue, a quick leave-then-join could reach
//! the backplane as subscribe-then-unsubscribe and leave a group with a
//! local member unsubscribed.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

use tokio::sync::{mpsc, oneshot};

use crate::driver::BackplaneDriver;

/// How many channels go into one driver call when re-subscribing everything.
const RESYNC_CHUNK: usize = 4096;

/// One queued subscription change.
#[derive(Debug)]
pub(crate) enum Op {
    Subscribe(String),
    Unsubscribe(String),
    /// Subscribe to these channels again (after a reconnect or a failed
    /// command): idempotent on the backplane.
    Resync(Vec<String>),
    /// [`Resync`](Op::Resync) of every channel the server needs, queued by
    /// [`Subscriptions::queue_full_resync`]: at most one waits at a time.
    FullResync(Vec<String>),
    /// Sends nothing: done once every op queued before it is done. A group's
    /// second member waits on one, so that its join, too, returns only once
    /// the subscription its first member started is live.
    Barrier,
}

/// A queued op and who waits for it.
#[derive(Debug)]
pub(crate) struct Request {
    pub(crate) op: Op,
    pub(crate) done: Option<oneshot::Sender<bool>>,
}

/// The sending side of the queue, held by the manager.
#[derive(Debug, Clone)]
pub(crate) struct Subscriptions {
    tx: mpsc::UnboundedSender<Request>,
    /// Set when a command could not be applied (backplane unreachable); the
    /// maintenance task then re-subscribes everything once it answers.
    pub(crate) needs_resync: Arc<AtomicBool>,
    /// Ops queued and not yet done: raised when one is queued, lowered by
    /// the worker once it has reported the op done. Zero means every op
    /// queued so far is done.
    in_flight: Arc<AtomicUsize>,
    /// Set while a [`Op::FullResync`] waits in the queue (cleared when the
    /// worker starts it): reconnects and layout changes in a burst queue
    /// one, not one each.
    full_resync_queued: Arc<AtomicBool>,
    /// Full resyncs the worker has started.
    resyncs: Arc<AtomicU64>,
}

impl Subscriptions {
    /// Starts the worker; it ends when every `Subscriptions` is dropped.
    pub(crate) fn start<D: BackplaneDriver>(
        driver: Arc<D>,
    ) -> (Subscriptions, tokio::task::JoinHandle<()>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let needs_resync = Arc::new(AtomicBool::new(false));
        let in_flight = Arc::new(AtomicUsize::new(0));
        let full_resync_queued = Arc::new(AtomicBool::new(false));
        let resyncs = Arc::new(AtomicU64::new(0));
        let worker = tokio::spawn(run(
            driver,
            rx,
            needs_resync.clone(),
            in_flight.clone(),
            full_resync_queued.clone(),
            resyncs.clone(),
        ));
        let subscriptions = Subscriptions {
            tx,
            needs_resync,
            in_flight,
            full_resync_queued,
            resyncs,
        };
        (subscriptions, worker)
    }

    /// Whether some queued op is not done yet. Read under the manager's
    /// membership lock, `false` means every subscription change made so far
    /// has been applied (or has failed and awaits a resync).
    pub(crate) fn busy(&self) -> bool {
        self.in_flight.load(Ordering::Acquire) > 0
    }

    /// How many full resyncs have started.
    pub(crate) fn resyncs(&self) -> u64 {
        self.resyncs.load(Ordering::Relaxed)
    }

    /// How many queued ops are not done yet.
    pub(crate) fn pending(&self) -> usize {
        self.in_flight.load(Ordering::Acquire)
    }

    /// Queues `op`; the receiver tells whether the backplane applied it.
    ///
    /// Must be called while holding the manager's membership lock, so that
    /// ops are queued in the order the changes were made.
    pub(crate) fn queue(&self, op: Op) -> oneshot::Receiver<bool> {
        let (done, rx) = oneshot::channel();
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        if self
            .tx
            .send(Request {
                op,
                done: Some(done),
            })
            .is_err()
        {
            // The worker is gone (shutdown); the receiver reports failure.
            self.in_flight.fetch_sub(1, Ordering::AcqRel);
            self.needs_resync.store(true, Ordering::Relaxed);
        }
        rx
    }

    /// Queues a resubscription of every channel `wanted` lists, unless one
    /// waits in the queue already: that one, started later, is as good (the
    /// changes made since were queued behind it). `wanted` is called only
    /// when one is queued. Call under the membership lock.
    pub(crate) fn queue_full_resync(&self, wanted: impl FnOnce() -> Vec<String>) {
        if self.full_resync_queued.swap(true, Ordering::AcqRel) {
            return;
        }
        self.queue_detached(Op::FullResync(wanted()));
    }

    /// Queues `op` with nobody waiting.
    pub(crate) fn queue_detached(&self, op: Op) {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        if self.tx.send(Request { op, done: None }).is_err() {
            self.in_flight.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

/// Waits for queued ops; `true` if the backplane applied all of them.
pub(crate) async fn applied(receivers: Vec<oneshot::Receiver<bool>>) -> bool {
    let mut ok = true;
    for rx in receivers {
        ok &= rx.await.unwrap_or(false);
    }
    ok
}

async fn resync<D: BackplaneDriver>(driver: &D, channels: &[String]) -> bool {
    if !driver.is_connected() {
        return false;
    }
    for chunk in channels.chunks(RESYNC_CHUNK) {
        if let Err(e) = driver.subscribe(chunk.to_vec()).await {
            tracing::warn!(error = %e, "re-subscribing failed; will retry");
            return false;
        }
    }
    tracing::debug!(channels = channels.len(), "re-subscribed");
    true
}

impl Op {
    fn kind(&self) -> Option<Kind> {
        match self {
            Op::Subscribe(_) => Some(Kind::Subscribe),
            Op::Unsubscribe(_) => Some(Kind::Unsubscribe),
            Op::Resync(_) | Op::FullResync(_) | Op::Barrier => None,
        }
    }
}

/// Reports one op done and counts it out of [`Subscriptions::in_flight`],
/// in that order: a waiter that sees the count at zero knows its op was
/// reported.
fn finish(in_flight: &AtomicUsize, done: Option<oneshot::Sender<bool>>, ok: bool) {
    if let Some(done) = done {
        let _ = done.send(ok);
    }
    in_flight.fetch_sub(1, Ordering::AcqRel);
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Subscribe,
    Unsubscribe,
}

async fn run<D: BackplaneDriver>(
    driver: Arc<D>,
    mut rx: mpsc::UnboundedReceiver<Request>,
    needs_resync: Arc<AtomicBool>,
    in_flight: Arc<AtomicUsize>,
    full_resync_queued: Arc<AtomicBool>,
    resyncs: Arc<AtomicU64>,
) {
    let mut batch: Vec<Request> = Vec::with_capacity(256);
    while rx.recv_many(&mut batch, 1024).await > 0 {
        let mut requests = batch.drain(..).peekable();
        while let Some(first) = requests.next() {
            let is_full = matches!(first.op, Op::FullResync(_));
            let (kind, channel) = match first.op {
                Op::Subscribe(channel) => (Kind::Subscribe, channel),
                Op::Unsubscribe(channel) => (Kind::Unsubscribe, channel),
                Op::Resync(channels) | Op::FullResync(channels) => {
                    if is_full {
                        // Anything that happens from now on queues another.
                        full_resync_queued.store(false, Ordering::Release);
                        resyncs.fetch_add(1, Ordering::Relaxed);
                        tracing::debug!(
                            channels = channels.len(),
                            "subscribing again to every channel"
                        );
                    }
                    let ok = resync(&*driver, &channels).await;
                    if !ok {
                        needs_resync.store(true, Ordering::Relaxed);
                    }
                    finish(&in_flight, first.done, ok);
                    continue;
                }
                Op::Barrier => {
                    // Every op before it was handled above, in order.
                    finish(&in_flight, first.done, true);
                    continue;
                }
            };
            let mut channels = vec![channel];
            let mut waiters = vec![first.done];
            // Gather the run of ops of the same kind that follows.
            while let Some(next) = requests.next_if(|r| r.op.kind() == Some(kind)) {
                if let Op::Subscribe(c) | Op::Unsubscribe(c) = next.op {
                    channels.push(c);
                }
                waiters.push(next.done);
            }
            let result = match kind {
                Kind::Subscribe => driver.subscribe(channels).await,
                Kind::Unsubscribe => driver.unsubscribe(channels).await,
            };
            if let Err(e) = &result {
                tracing::warn!(error = %e, ?kind, "subscription change failed; will re-subscribe when the backplane answers");
            }
            let ok = result.is_ok();
            if !ok && kind == Kind::Subscribe {
                needs_resync.store(true, Ordering::Relaxed);
            }
            for done in waiters {
                finish(&in_flight, done, ok);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::loopback::LoopbackBus;

    /// A burst of resync requests while one waits queues one, not one each;
    /// once the worker has started it, the next request queues another.
    #[tokio::test(flavor = "current_thread")]
    async fn full_resyncs_in_a_burst_are_queued_once() {
        let bus = LoopbackBus::new();
        let (subscriptions, _worker) = Subscriptions::start(Arc::new(bus.driver()));
        let listed = AtomicUsize::new(0);
        let wanted = || {
            listed.fetch_add(1, Ordering::Relaxed);
            vec!["a".to_owned(), "b".to_owned()]
        };
        // The worker has not run yet (one thread, no await so far).
        for _ in 0..100 {
            subscriptions.queue_full_resync(wanted);
        }
        assert_eq!(listed.load(Ordering::Relaxed), 1);
        // Once it has been handled, a new request queues a new one.
        assert!(applied(vec![subscriptions.queue(Op::Barrier)]).await);
        assert_eq!(bus.subscribers("a"), 1);
        subscriptions.queue_full_resync(wanted);
        assert_eq!(listed.load(Ordering::Relaxed), 2);
    }
}

//! Ordered SUBSCRIBE / UNSUBSCRIBE on the subscriber connection.
//!
//! Membership changes (a group's first local member, a user's last local
//! connection...) are turned into subscription commands while the change
//! is made, under one lock, and queued here in that order. One worker sends
//! them in order, batching runs of the same command into one multi-channel
//! SUBSCRIBE or UNSUBSCRIBE. Without the single ordered queue, a quick
//! leave-then-join could reach Redis as SUBSCRIBE-then-UNSUBSCRIBE and
//! leave a group with a local member unsubscribed.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use fred::clients::SubscriberClient;
use fred::interfaces::{ClientLike, PubsubInterface};
use fred::types::config::Options;
use tokio::sync::{mpsc, oneshot};

/// How many channels go into one SUBSCRIBE when re-subscribing everything.
const RESYNC_CHUNK: usize = 4096;

/// One queued subscription change.
#[derive(Debug)]
pub(crate) enum Op {
    Subscribe(String),
    Unsubscribe(String),
    /// Subscribe to every channel the server needs (after a reconnect or a
    /// failed command): idempotent on the Redis side.
    Resync(Vec<String>),
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
    /// Set when a command could not be applied (Redis unreachable); the
    /// maintenance task then re-subscribes everything once Redis answers.
    pub(crate) needs_resync: Arc<AtomicBool>,
    /// Ops queued and not yet done: raised when one is queued, lowered by
    /// the worker once it has reported the op done. Zero means every op
    /// queued so far is done.
    in_flight: Arc<AtomicUsize>,
}

impl Subscriptions {
    /// Starts the worker; it ends when every `Subscriptions` is dropped.
    pub(crate) fn start(
        subscriber: SubscriberClient,
        timeout: Duration,
    ) -> (Subscriptions, tokio::task::JoinHandle<()>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let needs_resync = Arc::new(AtomicBool::new(false));
        let in_flight = Arc::new(AtomicUsize::new(0));
        let worker = tokio::spawn(run(
            subscriber,
            rx,
            needs_resync.clone(),
            in_flight.clone(),
            timeout,
        ));
        let subscriptions = Subscriptions {
            tx,
            needs_resync,
            in_flight,
        };
        (subscriptions, worker)
    }

    /// Whether some queued op is not done yet. Read under the manager's
    /// membership lock, `false` means every subscription change made so far
    /// has been applied (or has failed and awaits a resync).
    pub(crate) fn busy(&self) -> bool {
        self.in_flight.load(Ordering::Acquire) > 0
    }

    /// Queues `op`; the receiver tells whether Redis applied it.
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

    /// Queues `op` with nobody waiting.
    pub(crate) fn queue_detached(&self, op: Op) {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        if self.tx.send(Request { op, done: None }).is_err() {
            self.in_flight.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

/// Waits for queued ops; `true` if Redis applied all of them.
pub(crate) async fn applied(receivers: Vec<oneshot::Receiver<bool>>) -> bool {
    let mut ok = true;
    for rx in receivers {
        ok &= rx.await.unwrap_or(false);
    }
    ok
}

async fn resync(
    subscriber: &SubscriberClient,
    client: &fred::clients::WithOptions<SubscriberClient>,
    channels: &[String],
) -> bool {
    if !subscriber.is_connected() {
        return false;
    }
    for chunk in channels.chunks(RESYNC_CHUNK) {
        if let Err(e) = client.subscribe(chunk.to_vec()).await {
            tracing::warn!(error = %e, "re-subscribing failed; will retry");
            return false;
        }
    }
    if let Err(e) = barrier(client).await {
        tracing::warn!(error = %e, "re-subscribing failed; will retry");
        return false;
    }
    tracing::debug!(channels = channels.len(), "re-subscribed");
    true
}

/// Waits until Redis has processed every command sent before it on the
/// subscriber connection.
///
/// fred completes SUBSCRIBE and UNSUBSCRIBE as soon as they are written
/// (their confirmations arrive out of band), so a subscription is not yet
/// active when `subscribe` returns, and a message published right after
/// could be missed. Redis answers commands of one connection in order, and
/// PING is allowed in subscribed mode: its answer proves the subscription
/// changes before it are in effect.
async fn barrier(
    client: &fred::clients::WithOptions<SubscriberClient>,
) -> Result<(), fred::error::Error> {
    client.ping::<fred::types::Value>(None).await.map(drop)
}

impl Op {
    fn kind(&self) -> Option<Kind> {
        match self {
            Op::Subscribe(_) => Some(Kind::Subscribe),
            Op::Unsubscribe(_) => Some(Kind::Unsubscribe),
            Op::Resync(_) | Op::Barrier => None,
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

async fn run(
    subscriber: SubscriberClient,
    mut rx: mpsc::UnboundedReceiver<Request>,
    needs_resync: Arc<AtomicBool>,
    in_flight: Arc<AtomicUsize>,
    timeout: Duration,
) {
    let options = Options {
        fail_fast: true,
        timeout: Some(timeout),
        ..Options::default()
    };
    let client = subscriber.with_options(&options);
    let mut batch: Vec<Request> = Vec::with_capacity(256);
    while rx.recv_many(&mut batch, 1024).await > 0 {
        let mut requests = batch.drain(..).peekable();
        while let Some(first) = requests.next() {
            let (kind, channel) = match first.op {
                Op::Subscribe(channel) => (Kind::Subscribe, channel),
                Op::Unsubscribe(channel) => (Kind::Unsubscribe, channel),
                Op::Resync(channels) => {
                    let ok = resync(&subscriber, &client, &channels).await;
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
            let ok = if subscriber.is_connected() {
                let result = match kind {
                    Kind::Subscribe => client.subscribe(channels).await,
                    Kind::Unsubscribe => client.unsubscribe(channels).await,
                };
                let result = match result {
                    Ok(()) => barrier(&client).await,
                    Err(e) => Err(e),
                };
                if let Err(e) = &result {
                    tracing::warn!(error = %e, ?kind, "subscription change failed; will re-subscribe when Redis answers");
                }
                result.is_ok()
            } else {
                false
            };
            if !ok && kind == Kind::Subscribe {
                needs_resync.store(true, Ordering::Relaxed);
            }
            for done in waiters {
                finish(&in_flight, done, ok);
            }
        }
    }
}

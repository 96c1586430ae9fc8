//! The ordered publish queue: publishes that a send does not wait for.
//!
//! A send of a non-blocking invocation
//! ([`HubLifetimeManager::send_queued`](switchboard_core::HubLifetimeManager::send_queued))
//! hands its publish to this queue and returns. One task hands the queued
//! publishes to the driver in queue order, with up to [`MAX_IN_FLIGHT`]
//! unanswered at once, so a connection invoking in a loop is no longer held
//! to one invocation per backplane round trip, and the driver can write
//! many publishes at once.
//!
//! Failures are not lost: a queued publish that fails is counted (with every
//! other publish error) and logged. The queue takes new publishes only while
//! it is healthy: the driver is connected, no queued publish failed since the
//! last one that succeeded, the publishes under way are moving (one was
//! answered within [`STALLED`]), and there is room. Otherwise the send waits
//! for its own answer, as every other send does, and reports the failure.
//!
//! Order: a send that waits for its answer while queued publishes are still
//! waiting for the driver goes through the queue too (behind them), so one
//! sender's publishes reach the driver in the order they were made.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use tokio::time::Instant;

use bytes::Bytes;
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use switchboard_core::{Error, Result};
use tokio::sync::{mpsc, oneshot};

/// The most queued publishes handed to the driver and not yet answered.
pub(crate) const MAX_IN_FLIGHT: usize = 256;
/// The most publishes waiting for the driver; beyond that, sends wait for
/// their own answer.
pub(crate) const QUEUE_CAPACITY: usize = 8192;
/// Publishes under way with none answered for this long: the backplane is
/// not answering, and sends wait for their answers again.
pub(crate) const STALLED: Duration = Duration::from_millis(500);
/// The longest a publish waits in the queue for the driver: a send waiting
/// behind queued publishes fails after this, and a queued publish not yet
/// handed to the driver by then is failed (and counted) instead of
/// published late.
pub(crate) const WAIT_BEHIND: Duration = Duration::from_secs(2);
/// Sends closer together than this are a burst, and queued; a send that
/// follows the last one later than this, while nothing is queued or under
/// way, publishes and waits for its answer instead.
pub(crate) const BURST_GAP: Duration = Duration::from_micros(500);
/// How long shutdown waits for the queued publishes.
pub(crate) const FLUSH: Duration = Duration::from_secs(2);

/// What publishes one envelope: the engine's publish, with its counters.
pub(crate) type Publish = Arc<
    dyn Fn(String, Bytes) -> Pin<Box<dyn Future<Output = Result<Option<u64>>> + Send>>
        + Send
        + Sync,
>;

/// One publish in the queue.
struct Item {
    channel: String,
    payload: Bytes,
    /// Where its answer goes, for a send that waits for it.
    answer: Option<oneshot::Sender<Result<Option<u64>>>>,
    /// When it was queued: one that waited [`WAIT_BEHIND`] for the driver
    /// is failed instead of published late.
    queued_at: Instant,
}

/// The queue's state, shared by senders and the task.
#[derive(Debug)]
struct State {
    /// Publishes in the queue, not yet handed to the driver.
    waiting: AtomicUsize,
    /// Publishes handed to the driver, not yet answered.
    in_flight: AtomicUsize,
    /// A queued publish failed and none succeeded since.
    failing: AtomicBool,
    /// When a publish was last answered, or the queue last went from idle
    /// to busy: nanoseconds since `epoch`.
    progress: AtomicU64,
    /// Queued publishes that failed (rate-limits their warnings).
    failed: AtomicU64,
    /// Queued publishes nobody waited for, dropped after waiting
    /// [`WAIT_BEHIND`] for the driver.
    expired: AtomicU64,
    /// When a send that could be queued last returned: nanoseconds since
    /// `epoch`, plus one (0: never).
    last_send: AtomicU64,
    epoch: Instant,
}

impl State {
    fn now(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    fn busy(&self) -> bool {
        self.waiting.load(Ordering::Acquire) > 0 || self.in_flight.load(Ordering::Acquire) > 0
    }

    fn moving(&self) -> bool {
        let since = self
            .now()
            .saturating_sub(self.progress.load(Ordering::Relaxed));
        !self.busy() || Duration::from_nanos(since) < STALLED
    }
}

/// The sending side of the queue.
pub(crate) struct Outgoing {
    queue: mpsc::Sender<Item>,
    state: Arc<State>,
}

impl Outgoing {
    /// The queue and the task that empties it into `publish`; the task ends
    /// once the queue is dropped and what is under way is answered.
    pub(crate) fn start(publish: Publish) -> (Outgoing, impl Future<Output = ()> + Send + 'static) {
        let (queue, items) = mpsc::channel(QUEUE_CAPACITY);
        let state = Arc::new(State {
            waiting: AtomicUsize::new(0),
            in_flight: AtomicUsize::new(0),
            failing: AtomicBool::new(false),
            progress: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            expired: AtomicU64::new(0),
            last_send: AtomicU64::new(0),
            epoch: Instant::now(),
        });
        let task = run(publish, items, state.clone());
        (Outgoing { queue, state }, task)
    }

    /// Whether publishes are waiting in the queue for the driver. A send
    /// that waits for its answer may go to the driver directly only when
    /// none are.
    pub(crate) fn has_waiting(&self) -> bool {
        self.state.waiting.load(Ordering::Acquire) > 0
    }

    /// Whether a send that may be queued should be: while publishes are
    /// queued or under way, or when it comes within [`BURST_GAP`] of the
    /// last such send. A lone send publishes and waits for its answer
    /// instead: the wait delays no send behind it, and handing the publish
    /// to the queue's task would cost a task wake-up for nothing.
    pub(crate) fn in_burst(&self) -> bool {
        let state = &self.state;
        if state.busy() {
            return true;
        }
        let last = state.last_send.load(Ordering::Relaxed);
        last != 0 && Duration::from_nanos(state.now().saturating_sub(last - 1)) < BURST_GAP
    }

    /// Records that a send that could be queued returns now.
    pub(crate) fn sent(&self) {
        let state = &self.state;
        state
            .last_send
            .store(state.now().saturating_add(1), Ordering::Relaxed);
    }

    /// Records that a publish made directly (not through the queue)
    /// failed: sends wait for their answers until one succeeds.
    pub(crate) fn note_failure(&self) {
        self.state.failing.store(true, Ordering::Relaxed);
    }

    /// Records that a publish made directly (not through the queue)
    /// succeeded: the backplane answers again, and sends may be queued.
    pub(crate) fn note_success(&self) {
        if self.state.failing.load(Ordering::Relaxed) {
            self.state.failing.store(false, Ordering::Relaxed);
        }
    }

    /// Queued publishes nobody waited for that were dropped, never handed
    /// to the driver: counted with the publish errors.
    pub(crate) fn expired(&self) -> u64 {
        self.state.expired.load(Ordering::Relaxed)
    }

    /// Queues a publish nobody waits for, if the queue is healthy (see the
    /// module documentation). Gives the publish back when it is not.
    pub(crate) fn try_queue(
        &self,
        connected: bool,
        channel: String,
        payload: Bytes,
    ) -> std::result::Result<(), (String, Bytes)> {
        let state = &self.state;
        if !connected || state.failing.load(Ordering::Relaxed) || !state.moving() {
            return Err((channel, payload));
        }
        self.push(Item {
            channel,
            payload,
            answer: None,
            queued_at: Instant::now(),
        })
        .map_err(|item| (item.channel, item.payload))
    }

    /// Queues a publish behind those waiting, and waits for its answer, at
    /// most [`WAIT_BEHIND`] before the driver takes it.
    pub(crate) async fn publish_behind(
        &self,
        channel: String,
        payload: Bytes,
    ) -> Result<Option<u64>> {
        let (answer, answered) = oneshot::channel();
        let item = Item {
            channel,
            payload,
            answer: Some(answer),
            queued_at: Instant::now(),
        };
        let deadline = tokio::time::Instant::now() + WAIT_BEHIND;
        if let Err(item) = self.push(item) {
            // Full: wait for room, within the same bound.
            let reserved = tokio::time::timeout_at(deadline, self.queue.reserve()).await;
            match reserved {
                Ok(Ok(permit)) => {
                    self.enter();
                    permit.send(item);
                }
                Ok(Err(_)) => return Err(Error::Shutdown),
                Err(_) => return Err(behind()),
            }
        }
        match tokio::time::timeout_at(deadline, answered).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(Error::Shutdown),
            // Dropping the receiver tells the task to skip the publish if
            // it has not taken it yet.
            Err(_) => Err(behind()),
        }
    }

    fn push(&self, item: Item) -> std::result::Result<(), Item> {
        match self.queue.try_reserve() {
            Ok(permit) => {
                self.enter();
                permit.send(item);
                Ok(())
            }
            Err(_) => Err(item),
        }
    }

    /// Counts one more waiting publish; an idle queue starts its progress
    /// clock now.
    fn enter(&self) {
        let state = &self.state;
        if state.waiting.fetch_add(1, Ordering::AcqRel) == 0
            && state.in_flight.load(Ordering::Acquire) == 0
        {
            state.progress.store(state.now(), Ordering::Relaxed);
        }
    }

    /// Waits until the queue is empty and nothing is under way, at most
    /// [`FLUSH`].
    pub(crate) async fn flush(&self) {
        let deadline = Instant::now() + FLUSH;
        while self.state.busy() && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
}

fn behind() -> Error {
    Error::BackplaneUnavailable {
        reason: format!(
            "no answer from the backplane within {WAIT_BEHIND:?} of queueing the publish"
        ),
        source: None,
    }
}

/// Hands queued publishes to the driver in order, [`MAX_IN_FLIGHT`] at
/// most, and routes their answers.
async fn run(publish: Publish, mut items: mpsc::Receiver<Item>, state: Arc<State>) {
    let mut in_flight = FuturesUnordered::new();
    loop {
        tokio::select! {
            biased;
            Some(()) = in_flight.next(), if !in_flight.is_empty() => {}
            item = items.recv(), if in_flight.len() < MAX_IN_FLIGHT => {
                let Some(mut item) = item else { break };
                loop {
                    if let Some(future) = start(&publish, &state, item) {
                        in_flight.push(future);
                    }
                    if in_flight.len() >= MAX_IN_FLIGHT {
                        break;
                    }
                    match items.try_recv() {
                        Ok(next) => item = next,
                        Err(_) => break,
                    }
                }
            }
        }
    }
    // The engine is gone: finish what is under way.
    while in_flight.next().await.is_some() {}
}

/// Starts one publish. The driver takes it on the future's first poll
/// (`FuturesUnordered` polls new futures in the order they were pushed), and
/// only then does it stop counting as waiting, so a send that checks
/// [`Outgoing::has_waiting`] cannot overtake it. `None` for a publish whose
/// sender gave up waiting.
fn start(
    publish: &Publish,
    state: &Arc<State>,
    item: Item,
) -> Option<Pin<Box<dyn Future<Output = ()> + Send>>> {
    if item.answer.as_ref().is_some_and(oneshot::Sender::is_closed) {
        state.waiting.fetch_sub(1, Ordering::AcqRel);
        return None;
    }
    if item.queued_at.elapsed() >= WAIT_BEHIND {
        state.waiting.fetch_sub(1, Ordering::AcqRel);
        state.failing.store(true, Ordering::Relaxed);
        let error = behind();
        match item.answer {
            Some(answer) => drop(answer.send(Err(error))),
            None => {
                let expired = state.expired.fetch_add(1, Ordering::Relaxed) + 1;
                if expired % 1024 == 1 {
                    tracing::warn!(
                        expired,
                        "a queued publish waited {WAIT_BEHIND:?} for the backplane and was dropped (warned once per 1024)"
                    );
                }
            }
        }
        return None;
    }
    if state.in_flight.fetch_add(1, Ordering::AcqRel) == 0 {
        state.progress.store(state.now(), Ordering::Relaxed);
    }
    let mut published = publish(item.channel, item.payload);
    let state = state.clone();
    let answer = item.answer;
    Some(Box::pin(async move {
        let first = futures::poll!(published.as_mut());
        state.waiting.fetch_sub(1, Ordering::AcqRel);
        let result = match first {
            std::task::Poll::Ready(result) => result,
            std::task::Poll::Pending => published.await,
        };
        state.progress.store(state.now(), Ordering::Relaxed);
        state.in_flight.fetch_sub(1, Ordering::AcqRel);
        match &result {
            Ok(_) => state.failing.store(false, Ordering::Relaxed),
            Err(e) => {
                state.failing.store(true, Ordering::Relaxed);
                // A waiting sender gets the error itself; one that did not
                // wait learns of it here.
                if answer.is_none() {
                    let failed = state.failed.fetch_add(1, Ordering::Relaxed) + 1;
                    if failed % 1024 == 1 {
                        tracing::warn!(error = %e, failed, "a queued publish failed; sends wait for the backplane's answer until one succeeds (warned once per 1024)");
                    } else {
                        tracing::debug!(error = %e, "a queued publish failed");
                    }
                }
            }
        }
        if let Some(answer) = answer {
            let _ = answer.send(result);
        }
    }))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use parking_lot::Mutex;

    /// A publish that records the channels in the order it was handed them,
    /// and answers after `delay` with `fail` deciding the outcome.
    fn recording(delay: Duration, fail: Arc<AtomicBool>) -> (Publish, Arc<Mutex<Vec<String>>>) {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let publish: Publish = {
            let seen = seen.clone();
            Arc::new(move |channel, _payload| {
                let seen = seen.clone();
                let fail = fail.clone();
                Box::pin(async move {
                    seen.lock().push(channel);
                    tokio::time::sleep(delay).await;
                    if fail.load(Ordering::Relaxed) {
                        Err(Error::BackplaneUnavailable {
                            reason: "down".to_owned(),
                            source: None,
                        })
                    } else {
                        Ok(Some(1))
                    }
                })
            })
        };
        (publish, seen)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn publishes_reach_the_driver_in_queue_order() {
        let (publish, seen) = recording(Duration::from_millis(1), Arc::default());
        let (outgoing, task) = Outgoing::start(publish);
        tokio::spawn(task);
        for i in 0..2_000 {
            if i % 10 == 9 {
                // One that waits goes behind those queued before it.
                outgoing
                    .publish_behind(i.to_string(), Bytes::new())
                    .await
                    .unwrap();
            } else {
                outgoing
                    .try_queue(true, i.to_string(), Bytes::new())
                    .unwrap();
            }
        }
        outgoing.flush().await;
        let expected: Vec<String> = (0..2_000).map(|i: i32| i.to_string()).collect();
        assert_eq!(*seen.lock(), expected);
        assert!(!outgoing.state.busy());
    }

    #[tokio::test]
    async fn a_failed_publish_stops_queueing_until_one_succeeds() {
        let fail = Arc::new(AtomicBool::new(true));
        let (publish, _seen) = recording(Duration::ZERO, fail.clone());
        let (outgoing, task) = Outgoing::start(publish);
        tokio::spawn(task);
        assert!(outgoing.try_queue(true, "a".into(), Bytes::new()).is_ok());
        outgoing.flush().await;
        // Its failure is known now: the next one is handed back, to wait.
        assert!(outgoing.try_queue(true, "b".into(), Bytes::new()).is_err());
        assert!(
            outgoing
                .publish_behind("c".into(), Bytes::new())
                .await
                .is_err()
        );
        fail.store(false, Ordering::Relaxed);
        assert_eq!(
            outgoing
                .publish_behind("d".into(), Bytes::new())
                .await
                .unwrap(),
            Some(1)
        );
        assert!(outgoing.try_queue(true, "e".into(), Bytes::new()).is_ok());
        // A driver that says it is down is not queued for either.
        assert!(outgoing.try_queue(false, "f".into(), Bytes::new()).is_err());
    }

    #[tokio::test(start_paused = true)]
    async fn a_stalled_queue_stops_queueing_and_drops_what_waited_too_long() {
        // Publishes answered only after 3 s: a stall.
        let (publish, seen) = recording(Duration::from_secs(3), Arc::default());
        let (outgoing, task) = Outgoing::start(publish);
        tokio::spawn(task);
        for i in 0..MAX_IN_FLIGHT + 10 {
            outgoing
                .try_queue(true, i.to_string(), Bytes::new())
                .unwrap();
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
        assert_eq!(seen.lock().len(), MAX_IN_FLIGHT, "the rest wait for room");
        tokio::time::sleep(STALLED).await;
        assert!(
            outgoing
                .try_queue(true, "late".into(), Bytes::new())
                .is_err(),
            "nothing answered for {STALLED:?}: sends must wait again"
        );
        let waited = outgoing.publish_behind("behind".into(), Bytes::new()).await;
        assert!(matches!(waited, Err(Error::BackplaneUnavailable { .. })));
        // At 3 s the stalled publishes are answered; the ten that waited
        // longer than WAIT_BEHIND for the driver are dropped and counted,
        // and the one whose sender gave up is skipped.
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert_eq!(outgoing.expired(), 10);
        assert_eq!(seen.lock().len(), MAX_IN_FLIGHT);
        assert!(!outgoing.state.busy());
        // Until a publish succeeds again, sends wait.
        assert!(
            outgoing
                .try_queue(true, "again".into(), Bytes::new())
                .is_err()
        );
        outgoing.note_success();
        assert!(
            outgoing
                .try_queue(true, "again".into(), Bytes::new())
                .is_ok()
        );
    }
}

//! The health of the Redis connections: whether the publishing connection
//! is up, and the heartbeat that finds a connection that died silently.
//!
//! fred reports a lost connection and a restored one on two separate event
//! channels. [`watch_link`] is their one consumer: each time it wakes it
//! drains both channels and derives the state from everything that
//! arrived, so the order in which it happens to read the two channels
//! cannot leave a healthy connection marked down.
//!
//! A connection can also die without any event: a NAT table or a load
//! balancer drops it without a reset, and the socket stays open but
//! carries nothing. [`heartbeat`] sends a PING on each connection every
//! interval (on a cluster, one to each primary); fred's unresponsive check
//! then finds a PING left unanswered, closes the connection and reconnects
//! (and the engine subscribes again from its local state).

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use fred::interfaces::{ClientLike, ClusterInterface};
use fred::types::config::Options;
use tokio::sync::broadcast::{self, error::RecvError, error::TryRecvError};
use tokio_util::sync::CancellationToken;

/// What fred reported since the watcher last looked.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct LinkEvents {
    /// Errors that ended (or failed to restore) the connection.
    pub(crate) errors: u64,
    /// Successful reconnections.
    pub(crate) reconnects: u64,
    /// An event channel closed: the client is gone.
    pub(crate) closed: bool,
}

impl LinkEvents {
    /// Whether the connection is up after these events, given whether it
    /// was before.
    ///
    /// Within one batch the relative order of errors and reconnections is
    /// unknown. fred reports a reconnection only after the error that ended
    /// the connection before it, and after every error it tries again and
    /// reports how that went (another error, or a reconnection). So a batch
    /// with a reconnection means up: if an error in it came after the
    /// reconnection, fred's next report corrects the state within one
    /// reconnection attempt. A batch of errors alone means down.
    pub(crate) fn apply(self, was_up: bool) -> bool {
        if self.reconnects > 0 {
            true
        } else if self.errors > 0 {
            false
        } else {
            was_up
        }
    }
}

/// Waits for the next event on either channel, then takes every other
/// event already queued on both.
pub(crate) async fn next_events<E: Clone, R: Clone>(
    errors: &mut broadcast::Receiver<E>,
    reconnects: &mut broadcast::Receiver<R>,
) -> LinkEvents {
    let mut events = LinkEvents::default();
    tokio::select! {
        received = errors.recv() => match received {
            Ok(_) => events.errors += 1,
            Err(RecvError::Lagged(n)) => events.errors += n,
            Err(RecvError::Closed) => events.closed = true,
        },
        received = reconnects.recv() => match received {
            Ok(_) => events.reconnects += 1,
            Err(RecvError::Lagged(n)) => events.reconnects += n,
            Err(RecvError::Closed) => events.closed = true,
        },
    }
    loop {
        match errors.try_recv() {
            Ok(_) => events.errors += 1,
            Err(TryRecvError::Lagged(n)) => events.errors += n,
            Err(TryRecvError::Empty) => break,
            Err(TryRecvError::Closed) => {
                events.closed = true;
                break;
            }
        }
    }
    loop {
        match reconnects.try_recv() {
            Ok(_) => events.reconnects += 1,
            Err(TryRecvError::Lagged(n)) => events.reconnects += n,
            Err(TryRecvError::Empty) => break,
            Err(TryRecvError::Closed) => {
                events.closed = true;
                break;
            }
        }
    }
    events
}

/// Keeps `up` in step with fred's reports until `shutdown` or until the
/// client is gone; `changed` is called with the new state on each change.
pub(crate) async fn watch_link<E: Clone, R: Clone>(
    up: &AtomicBool,
    mut errors: broadcast::Receiver<E>,
    mut reconnects: broadcast::Receiver<R>,
    shutdown: CancellationToken,
    changed: impl Fn(bool),
) {
    loop {
        let events = tokio::select! {
            () = shutdown.cancelled() => return,
            events = next_events(&mut errors, &mut reconnects) => events,
        };
        let was = up.load(Ordering::Relaxed);
        let now = events.apply(was);
        up.store(now, Ordering::Relaxed);
        if now != was {
            changed(now);
        }
        if events.closed {
            return;
        }
    }
}

/// PINGs `client` every `interval` while it is connected (on a cluster,
/// `per_node`: each primary, on the connection the client keeps to it), so
/// that a connection that died silently has a command waiting on it: fred
/// treats a connection that leaves a command unanswered for its
/// unresponsive timeout (`unresponsive`, set in the client's configuration)
/// as dead, closes it, reconnects and sends the PING again. `answered` is
/// told whether each round of PINGs was answered. Should fred not have
/// acted by twice that timeout (a backstop; it always has in tests), the
/// client is reconnected here.
pub(crate) async fn heartbeat<C: ClientLike + ClusterInterface>(
    client: C,
    which: &'static str,
    per_node: bool,
    interval: Duration,
    unresponsive: Duration,
    shutdown: CancellationToken,
    answered: impl Fn(bool),
) {
    let backstop = unresponsive * 2 + Duration::from_secs(1);
    let options = Options {
        fail_fast: true,
        timeout: Some(backstop),
        ..Options::default()
    };
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(interval) => {}
        }
        if !client.is_connected() {
            // fred is reconnecting already.
            continue;
        }
        let targets = if per_node {
            targets(&client, &options)
        } else {
            vec![options.clone()]
        };
        let pings = ping_each(&client, &targets);
        // fred's own timeout ends each PING; the outer one is a backstop.
        let stuck = match tokio::time::timeout(backstop + Duration::from_secs(1), pings).await {
            Ok(results) if results.iter().all(Result::is_ok) => {
                answered(true);
                continue;
            }
            // A connection failed under its PING: fred has already closed
            // it and is reconnecting. One that timed out is stuck.
            Ok(results) => results.iter().any(|result| match result {
                Ok(_) => false,
                Err(e) if *e.kind() == fred::error::ErrorKind::Timeout => true,
                Err(e) => {
                    tracing::debug!(connection = which, error = %e, "a heartbeat failed");
                    false
                }
            }),
            Err(_) => true,
        };
        answered(false);
        if stuck && client.is_connected() && !shutdown.is_cancelled() {
            tracing::warn!(
                connection = which,
                timeout = ?backstop,
                "Redis did not answer a heartbeat in time; reconnecting"
            );
            let reconnect = client.force_reconnection();
            if tokio::time::timeout(unresponsive, reconnect).await.is_err() {
                tracing::debug!(connection = which, "forcing a reconnection took too long");
            }
        }
    }
}

/// PINGs `client` once with each of `targets` (on a cluster, each naming
/// the node or slot to go to), all at once; the results in that order.
pub(crate) async fn ping_each<C: ClientLike>(
    client: &C,
    targets: &[Options],
) -> Vec<Result<fred::types::Value, fred::error::Error>> {
    let clients: Vec<_> = targets
        .iter()
        .map(|target| client.with_options(target))
        .collect();
    futures::future::join_all(clients.iter().map(|client| client.ping(None))).await
}

/// `options`, sent to cluster node `node`.
pub(crate) fn on_node(options: &Options, node: fred::types::config::Server) -> Options {
    Options {
        cluster_node: Some(node),
        ..options.clone()
    }
}

/// One set of command options per primary of the cluster, as the client
/// knows them (the plain options when it knows none yet).
fn targets<C: ClusterInterface>(client: &C, options: &Options) -> Vec<Options> {
    let nodes = client
        .cached_cluster_state()
        .map(|state| state.unique_primary_nodes())
        .unwrap_or_default();
    if nodes.is_empty() {
        return vec![options.clone()];
    }
    nodes
        .into_iter()
        .map(|node| on_node(options, node))
        .collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::sync::Arc;

    #[test]
    fn a_reconnect_in_a_batch_means_up() {
        let batch = |errors, reconnects| LinkEvents {
            errors,
            reconnects,
            closed: false,
        };
        assert!(batch(1, 1).apply(false));
        assert!(batch(3, 1).apply(true));
        assert!(!batch(2, 0).apply(true));
        assert!(batch(0, 1).apply(false));
        assert!(batch(0, 0).apply(true));
        assert!(!batch(0, 0).apply(false));
    }

    /// An error and then the reconnection that follows it, both queued
    /// before the watcher gets to run: the link must end up, every time.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_error_then_a_reconnect_before_the_watcher_runs_leaves_the_link_up() {
        for round in 0..200 {
            let (error_tx, errors) = broadcast::channel::<&str>(16);
            let (reconnect_tx, reconnects) = broadcast::channel::<&str>(16);
            error_tx.send("connection reset").unwrap();
            reconnect_tx.send("127.0.0.1:6379").unwrap();
            let up = Arc::new(AtomicBool::new(true));
            let shutdown = CancellationToken::new();
            let watcher = tokio::spawn({
                let (up, shutdown) = (up.clone(), shutdown.clone());
                async move { watch_link(&up, errors, reconnects, shutdown, |_| {}).await }
            });
            // Until the watcher has taken both events.
            while !error_tx.is_empty() || !reconnect_tx.is_empty() {
                tokio::task::yield_now().await;
            }
            // And has applied them: no event is left to change the state.
            tokio::time::sleep(Duration::from_millis(5)).await;
            assert!(
                up.load(Ordering::Relaxed),
                "round {round}: the link was left down"
            );
            shutdown.cancel();
            watcher.await.unwrap();
        }
    }

    #[tokio::test]
    async fn errors_alone_take_the_link_down_and_a_closed_client_ends_the_watch() {
        let (error_tx, errors) = broadcast::channel::<&str>(16);
        let (reconnect_tx, reconnects) = broadcast::channel::<&str>(16);
        error_tx.send("gone").unwrap();
        error_tx.send("still gone").unwrap();
        drop(error_tx);
        drop(reconnect_tx);
        let up = AtomicBool::new(true);
        let changes = parking_lot::Mutex::new(Vec::new());
        watch_link(&up, errors, reconnects, CancellationToken::new(), |now| {
            changes.lock().push(now)
        })
        .await;
        assert!(!up.load(Ordering::Relaxed));
        assert_eq!(*changes.lock(), [false]);
    }
}

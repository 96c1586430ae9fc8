//! The driver for a Redis Cluster: sharded pub/sub (SPUBLISH, SSUBSCRIBE,
//! SUNSUBSCRIBE), so that pub/sub grows with the shards.
//!
//! Classic PUBLISH on a cluster is forwarded to every node, so every node
//! carries every message. A shard channel lives on the shard that owns its
//! hash slot: SPUBLISH goes to that shard's primary, which delivers to the
//! subscribers connected to it, and nowhere else.
//!
//! What this driver does about what changes on a cluster:
//!
//! - **Receiver counts.** SPUBLISH counts the subscribers on the node that
//!   ran it. Every subscriber here subscribes on the primary that owns the
//!   channel's slot, the node SPUBLISH runs on, so the count is exact, as
//!   on one node. While a slot moves or a replica takes over it can read 0
//!   for a moment (until the subscriber has subscribed on the new owner).
//! - **Live subscriptions.** Each SSUBSCRIBE names one channel and is
//!   answered by the node that owns it: its answer proves the subscription
//!   is live on the right node, per node, with no separate barrier. (fred
//!   10.1 pairs a multi-channel SSUBSCRIBE's confirmations with the
//!   commands that follow it, so one channel per command is also required
//!   for correctness.) SUNSUBSCRIBE is not confirmed by fred; a PING to
//!   each node involved follows it.
//! - **Slots that move, failover.** Redis drops the subscriptions of a slot
//!   that leaves a node, with a push that fred 10.1 does not report. So the
//!   driver polls the cluster's slot layout every second; when it changed,
//!   or a node connection was re-made, the engine subscribes again to
//!   everything it needs (SSUBSCRIBE is idempotent).

use std::time::Duration;

use bytes::Bytes;
use fred::clients::SubscriberClient;
use fred::interfaces::{ClientLike, ClusterInterface, PubsubInterface};
use fred::types::ClusterHash;
use fred::types::config::{Options, Server};
use switchboard_backplane::{DriverEvent, DriverEvents};
use switchboard_core::Result;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

use crate::client::{Clients, stream_of, unavailable};
use crate::link::on_node;
use crate::options::RedisOptions;

/// How often the slot layout is read, to find slots that moved.
const LAYOUT_POLL: Duration = Duration::from_secs(1);

/// A Redis Cluster as a backplane.
pub(crate) struct ClusterDriver {
    clients: Clients,
    /// Told when the slot layout changed.
    moved: broadcast::Sender<()>,
}

impl ClusterDriver {
    pub(crate) async fn connect(options: &RedisOptions) -> Result<ClusterDriver> {
        let clients = Clients::connect(options, true).await?;
        let (moved, _) = broadcast::channel(4);
        let subscriber = clients.subscriber.clone();
        let sender = moved.clone();
        clients.spawn(move |shutdown| watch_layout(subscriber, sender, shutdown));
        Ok(ClusterDriver { clients, moved })
    }

    pub(crate) async fn publish(&self, channel: String, payload: Bytes) -> Result<Option<u64>> {
        // Exact: see the module documentation.
        self.clients.publish(channel, payload, true).await
    }

    pub(crate) async fn subscribe(&self, channels: Vec<String>) -> Result<()> {
        let clients = &self.clients;
        clients.check_subscriber()?;
        let client = clients.subscriber.with_options(&clients.command_options);
        // One channel per SSUBSCRIBE, all at once: each is answered by the
        // node that owns the channel, once the subscription is live there.
        let subscribing = channels
            .into_iter()
            .map(|channel| client.ssubscribe(channel));
        for result in futures::future::join_all(subscribing).await {
            result.map_err(|e| unavailable(format!("SSUBSCRIBE failed: {e}"), Some(e)))?;
        }
        Ok(())
    }

    pub(crate) async fn unsubscribe(&self, channels: Vec<String>) -> Result<()> {
        if channels.is_empty() {
            // An SUNSUBSCRIBE without channels goes to every node, and fred
            // waits for answers Redis never sends.
            return Ok(());
        }
        let clients = &self.clients;
        clients.check_subscriber()?;
        let client = clients.subscriber.with_options(&clients.command_options);
        let mut slots: Vec<u16> = channels
            .iter()
            .map(|channel| fred::util::redis_keyslot(channel.as_bytes()))
            .collect();
        for channel in channels {
            client
                .sunsubscribe(channel)
                .await
                .map_err(|e| unavailable(format!("SUNSUBSCRIBE failed: {e}"), Some(e)))?;
        }
        slots.sort_unstable();
        slots.dedup();
        clients
            .barrier(&barrier_targets(
                &clients.subscriber,
                &clients.command_options,
                &slots,
            ))
            .await
    }

    pub(crate) fn events(&self) -> DriverEvents {
        let moved = stream_of(
            self.moved.subscribe(),
            |()| Some(DriverEvent::Resubscribe),
            |_| DriverEvent::Resubscribe,
        );
        self.clients.events_with(moved)
    }

    pub(crate) fn is_connected(&self) -> bool {
        self.clients.is_connected()
    }

    pub(crate) async fn shutdown(&self) {
        self.clients.shutdown().await;
    }
}

/// Where the PINGs go that follow an SUNSUBSCRIBE of channels in `slots`:
/// each node that owns one of them, once (the slot itself when its owner
/// is not known).
fn barrier_targets(
    subscriber: &SubscriberClient,
    options: &Options,
    slots: &[u16],
) -> Vec<Options> {
    let mut targets: Vec<Options> = Vec::new();
    let state = subscriber.cached_cluster_state();
    let mut nodes: Vec<Server> = Vec::new();
    for slot in slots {
        match state.as_ref().and_then(|state| state.get_server(*slot)) {
            Some(node) => nodes.push(node.clone()),
            // No owner known (the map is being refreshed): the PING goes
            // where the slot's commands go.
            None => targets.push(Options {
                cluster_hash: Some(ClusterHash::Custom(*slot)),
                ..options.clone()
            }),
        }
    }
    nodes.sort_unstable();
    nodes.dedup();
    targets.extend(nodes.into_iter().map(|node| on_node(options, node)));
    targets
}

/// The slot ranges and their primaries, as the subscriber routes them.
fn layout(subscriber: &SubscriberClient) -> Vec<(u16, u16, Server)> {
    subscriber
        .cached_cluster_state()
        .map(|state| {
            state
                .slots()
                .iter()
                .map(|range| (range.start, range.end, range.primary.clone()))
                .collect()
        })
        .unwrap_or_default()
}

/// Reads the cluster's slot layout every [`LAYOUT_POLL`], and tells `moved`
/// when it changed: the subscriptions of a slot that moved are gone from
/// its old owner, and must be made again on the new one.
async fn watch_layout(
    subscriber: SubscriberClient,
    moved: broadcast::Sender<()>,
    shutdown: CancellationToken,
) {
    let mut known = layout(&subscriber);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(LAYOUT_POLL) => {}
        }
        if !subscriber.is_connected() {
            // fred is reconnecting, and reads the layout when it is back;
            // the reconnection itself makes the engine subscribe again.
            continue;
        }
        match tokio::time::timeout(LAYOUT_POLL * 5, subscriber.sync_cluster()).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                tracing::debug!(error = %e, "could not read the cluster's slot layout");
                continue;
            }
            Err(_) => {
                tracing::debug!("reading the cluster's slot layout timed out");
                continue;
            }
        }
        let now = layout(&subscriber);
        if now != known {
            tracing::info!(
                ranges = now.len(),
                "the cluster's slot layout changed; subscribing again"
            );
            known = now;
            let _ = moved.send(());
        }
    }
}

//! An in-process backplane: several engines in one process, as if each
//! were a server on its own, without any network.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use async_trait::async_trait;
use bytes::Bytes;
use parking_lot::{Mutex, RwLock};
use switchboard_core::{Error, Result};
use tokio::sync::broadcast;

use crate::driver::{BackplaneDriver, DriverEvent, DriverEvents};

/// How many events wait for a driver's engine before the oldest are lost
/// (reported as [`DriverEvent::Lagged`]).
const EVENT_CAPACITY: usize = 16 * 1024;

/// The shared medium of [`LoopbackDriver`]s: what one publishes reaches the
/// others subscribed to the channel, in the order it was published.
///
/// For tests and single-process experiments: it runs every multi-server
/// scenario without Redis, and its receiver counts are exact.
///
/// ```
/// use switchboard_backplane::{LoopbackBus, ScaleOutManager, ScaleOutOptions};
///
/// # async fn run() -> Result<(), switchboard_core::Error> {
/// let bus = LoopbackBus::new();
/// let options = ScaleOutOptions::new().hub("chat");
/// let server_a = ScaleOutManager::start(bus.driver(), options.clone()).await?;
/// let server_b = ScaleOutManager::start(bus.driver(), options).await?;
/// # let _ = (server_a, server_b); Ok(()) }
/// ```
#[derive(Clone, Default)]
pub struct LoopbackBus {
    shared: Arc<Shared>,
}

#[derive(Default)]
struct Shared {
    /// Channel -> the drivers subscribed to it.
    channels: RwLock<HashMap<String, Vec<Arc<Endpoint>>>>,
    /// The next driver's id.
    next_id: AtomicU64,
}

/// One driver's place on the bus.
struct Endpoint {
    id: u64,
    events: broadcast::Sender<DriverEvent>,
}

impl fmt::Debug for LoopbackBus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LoopbackBus")
            .field("channels", &self.shared.channels.read().len())
            .finish()
    }
}

impl LoopbackBus {
    /// An empty bus.
    pub fn new() -> LoopbackBus {
        LoopbackBus::default()
    }

    /// A new driver on this bus: one more server.
    pub fn driver(&self) -> LoopbackDriver {
        let (events, receiver) = broadcast::channel(EVENT_CAPACITY);
        let id = self.shared.next_id.fetch_add(1, Ordering::Relaxed);
        LoopbackDriver {
            bus: self.shared.clone(),
            endpoint: Arc::new(Endpoint { id, events }),
            subscribed: Mutex::new(HashSet::new()),
            receiver: Mutex::new(Some(receiver)),
            connected: AtomicBool::new(true),
            closed: AtomicBool::new(false),
        }
    }

    /// How many drivers are subscribed to `channel`.
    pub fn subscribers(&self, channel: &str) -> usize {
        self.shared.channels.read().get(channel).map_or(0, Vec::len)
    }
}

/// A [`BackplaneDriver`] on a [`LoopbackBus`].
///
/// [`set_connected`](LoopbackDriver::set_connected) takes it off the bus
/// and back, as a Redis outage would: meanwhile sends fail with
/// `BackplaneUnavailable`, and on return its subscriptions are gone until
/// the engine restores them.
pub struct LoopbackDriver {
    bus: Arc<Shared>,
    endpoint: Arc<Endpoint>,
    /// The channels this driver is subscribed to.
    subscribed: Mutex<HashSet<String>>,
    /// Handed to the engine by `events`.
    receiver: Mutex<Option<broadcast::Receiver<DriverEvent>>>,
    connected: AtomicBool,
    closed: AtomicBool,
}

impl fmt::Debug for LoopbackDriver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LoopbackDriver")
            .field("id", &self.endpoint.id)
            .field("subscribed", &self.subscribed.lock().len())
            .field("connected", &self.is_connected())
            .finish()
    }
}

impl LoopbackDriver {
    fn check_up(&self) -> Result<()> {
        if self.is_connected() {
            Ok(())
        } else {
            Err(Error::BackplaneUnavailable {
                reason: if self.closed.load(Ordering::Relaxed) {
                    "the loopback driver is shut down".to_owned()
                } else {
                    "the loopback driver is disconnected".to_owned()
                },
                source: None,
            })
        }
    }

    /// Takes this driver off the bus (`false`), dropping every subscription
    /// it has, or puts it back (`true`). The engine is told either way, as
    /// by a real driver.
    pub fn set_connected(&self, connected: bool) {
        if self.closed.load(Ordering::Relaxed)
            || self.connected.swap(connected, Ordering::AcqRel) == connected
        {
            return;
        }
        if connected {
            let _ = self.endpoint.events.send(DriverEvent::Connected);
        } else {
            self.leave_all();
            let _ = self.endpoint.events.send(DriverEvent::Disconnected);
        }
    }

    /// Drops this driver's subscriptions to `channels` without its engine
    /// asking, and tells the engine which, as a backplane that moves
    /// channels between its nodes would.
    pub fn drop_subscriptions(&self, channels: Vec<String>) {
        self.leave(&channels);
        let _ = self
            .endpoint
            .events
            .send(DriverEvent::SubscriptionsLost(channels));
    }

    fn leave(&self, channels: &[String]) {
        let mut subscribed = self.subscribed.lock();
        let mut bus = self.bus.channels.write();
        for channel in channels {
            if subscribed.remove(channel) {
                if let Some(endpoints) = bus.get_mut(channel) {
                    endpoints.retain(|e| e.id != self.endpoint.id);
                    if endpoints.is_empty() {
                        bus.remove(channel);
                    }
                }
            }
        }
    }

    fn leave_all(&self) {
        let channels: Vec<String> = self.subscribed.lock().iter().cloned().collect();
        self.leave(&channels);
    }
}

impl Drop for LoopbackDriver {
    fn drop(&mut self) {
        self.leave_all();
    }
}

#[async_trait]
impl BackplaneDriver for LoopbackDriver {
    async fn publish(&self, channel: String, payload: Bytes) -> Result<Option<u64>> {
        self.check_up()?;
        let bus = self.bus.channels.read();
        let Some(endpoints) = bus.get(&channel) else {
            return Ok(Some(0));
        };
        let channel = Bytes::from(channel);
        for endpoint in endpoints {
            // A full queue loses its oldest events; the receiver is told.
            let _ = endpoint.events.send(DriverEvent::Message {
                channel: channel.clone(),
                payload: payload.clone(),
            });
        }
        Ok(Some(endpoints.len() as u64))
    }

    async fn subscribe(&self, channels: Vec<String>) -> Result<()> {
        self.check_up()?;
        let mut subscribed = self.subscribed.lock();
        let mut bus = self.bus.channels.write();
        for channel in channels {
            if subscribed.insert(channel.clone()) {
                bus.entry(channel).or_default().push(self.endpoint.clone());
            }
        }
        Ok(())
    }

    async fn unsubscribe(&self, channels: Vec<String>) -> Result<()> {
        self.check_up()?;
        self.leave(&channels);
        Ok(())
    }

    fn events(&self) -> DriverEvents {
        let receiver = self.receiver.lock().take();
        Box::pin(futures::stream::unfold(receiver, |receiver| async move {
            let mut receiver = receiver?;
            let event = match receiver.recv().await {
                Ok(event) => event,
                Err(broadcast::error::RecvError::Lagged(n)) => DriverEvent::Lagged(n),
                Err(broadcast::error::RecvError::Closed) => return None,
            };
            Some((event, Some(receiver)))
        }))
    }

    fn is_connected(&self) -> bool {
        self.connected.load(Ordering::Relaxed)
    }

    async fn shutdown(&self) {
        self.closed.store(true, Ordering::Relaxed);
        self.connected.store(false, Ordering::Relaxed);
        self.leave_all();
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use futures::StreamExt;

    #[tokio::test]
    async fn messages_reach_subscribers_only_and_counts_are_exact() {
        let bus = LoopbackBus::new();
        let (a, b) = (bus.driver(), bus.driver());
        let mut events = b.events();
        b.subscribe(vec!["x".into()]).await.unwrap();
        assert_eq!(
            a.publish("x".into(), Bytes::from_static(b"hi"))
                .await
                .unwrap(),
            Some(1)
        );
        assert_eq!(a.publish("y".into(), Bytes::new()).await.unwrap(), Some(0));
        match events.next().await.unwrap() {
            DriverEvent::Message { channel, payload } => {
                assert_eq!(&channel[..], b"x");
                assert_eq!(&payload[..], b"hi");
            }
            other => panic!("unexpected {other:?}"),
        }
        b.unsubscribe(vec!["x".into()]).await.unwrap();
        assert_eq!(bus.subscribers("x"), 0);
    }

    #[tokio::test]
    async fn a_disconnected_driver_fails_fast_and_loses_its_subscriptions() {
        let bus = LoopbackBus::new();
        let (a, b) = (bus.driver(), bus.driver());
        let mut events = b.events();
        b.subscribe(vec!["x".into()]).await.unwrap();
        b.set_connected(false);
        assert!(matches!(
            b.publish("x".into(), Bytes::new()).await,
            Err(Error::BackplaneUnavailable { .. })
        ));
        assert_eq!(a.publish("x".into(), Bytes::new()).await.unwrap(), Some(0));
        b.set_connected(true);
        assert!(matches!(
            events.next().await,
            Some(DriverEvent::Disconnected)
        ));
        assert!(matches!(events.next().await, Some(DriverEvent::Connected)));
        // A second stream is empty: the first is the engine's.
        assert!(b.events().next().await.is_none());
    }
}

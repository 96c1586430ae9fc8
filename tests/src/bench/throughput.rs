//! B1: `send_all` throughput from server A to 10 connections on server B.
//!
//! A keeps [`WINDOW`] sends in flight for a fixed time; B's connections are
//! drained by one task each. The figure is messages per second *received at
//! B*, from the first send to the last delivery. The baseline publishes a
//! payload as large as switchboard's envelope with the same window, and one
//! raw subscriber counts.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use fred::bytes_utils::Str;
use fred::interfaces::{EventInterface, PubsubInterface};
use serde_json::json;
use switchboard_core::protocol::Protocol;
use switchboard_core::{Connection, ConnectionOptions, HubLifetimeManager, SerializedMessage};
use tokio::sync::broadcast::error::RecvError;

use super::report::{Row, Target, Unit};
use super::{
    Arrivals, BenchResult, PREFIX, Settings, envelope_len, filler, hub_name, manager, median,
    now_ns, rate, raw, saturate,
};

/// Sends in flight at once, on both sides.
pub const WINDOW: usize = 256;
/// Connections on server B.
pub const CONNECTIONS: u64 = 10;
/// The JSON text argument's length.
pub const TEXT_LEN: usize = 64;
/// How long the receiving side may stay silent before the rest counts as lost.
const STALL: Duration = Duration::from_secs(3);

/// What one side measured.
#[derive(Debug, Clone, Copy)]
struct Outcome {
    /// Messages received at the receiving server per second.
    messages_per_s: f64,
    /// Frames put into connection queues per second (baseline: = messages).
    deliveries_per_s: f64,
    sent: u64,
    failed_sends: u64,
    received: u64,
    lagged: u64,
}

/// Runs B1.
pub async fn run(settings: &Settings) -> BenchResult<Vec<Row>> {
    let duration = Duration::from_secs(settings.pick(2, 4));
    let rounds = settings.pick(1, 3);
    let text = filler(TEXT_LEN);
    let message = SerializedMessage::invocation(&Protocol::ALL, "message", &(text.as_str(),))?;
    let payload_len = envelope_len(&message);

    let mut baseline = Vec::new();
    let mut switchboard = Vec::new();
    for _ in 0..rounds {
        baseline.push(raw_run(&settings.redis_url, payload_len, duration).await?);
        switchboard.push(switchboard_run(&settings.redis_url, &message, duration).await?);
    }
    let med = |v: &[Outcome], f: fn(&Outcome) -> f64| median(&v.iter().map(f).collect::<Vec<_>>());
    let details = json!({
        "rounds": rounds,
        "seconds_per_round": duration.as_secs(),
        "window": WINDOW,
        "connections_on_b": CONNECTIONS,
        "envelope_bytes": payload_len,
        "switchboard": switchboard.iter().map(outcome_json).collect::<Vec<_>>(),
        "baseline": baseline.iter().map(outcome_json).collect::<Vec<_>>(),
    });
    let lost: u64 = switchboard
        .iter()
        .map(|o| o.sent.saturating_sub(o.received))
        .sum();
    let lost_base: u64 = baseline
        .iter()
        .map(|o| o.sent.saturating_sub(o.received))
        .sum();
    let mut note = format!(
        "{WINDOW} sends in flight, envelope {payload_len} B, median of {rounds} x {} s",
        duration.as_secs()
    );
    if lost + lost_base > 0 {
        note.push_str(&format!(
            "; not received: switchboard {lost}, baseline {lost_base}"
        ));
    }
    let scenario = "send_all A->B, 10 conns";
    Ok(vec![
        Row::new(
            "B1",
            scenario,
            "messages/s at B",
            Unit::PerSecond,
            med(&switchboard, |o| o.messages_per_s),
            med(&baseline, |o| o.messages_per_s),
            Target::RatioAtLeast(0.8),
        )
        .note(note)
        .details(details),
        Row::new(
            "B1",
            scenario,
            "deliveries/s at B",
            Unit::PerSecond,
            med(&switchboard, |o| o.deliveries_per_s),
            None,
            Target::None,
        ),
    ])
}

fn outcome_json(o: &Outcome) -> serde_json::Value {
    json!({
        "messages_per_s": o.messages_per_s,
        "deliveries_per_s": o.deliveries_per_s,
        "sent": o.sent,
        "failed_sends": o.failed_sends,
        "received": o.received,
        "lagged": o.lagged,
    })
}

/// Raw fred: one publisher, one subscriber, one channel.
async fn raw_run(url: &str, payload_len: usize, duration: Duration) -> BenchResult<Outcome> {
    let channel = format!("{PREFIX}{}:all", hub_name("b1-raw"));
    let subscriber = raw::subscriber(url).await?;
    let arrivals = Arc::new(Arrivals::default());
    let lagged = Arc::new(AtomicU64::new(0));
    let mut messages = subscriber.message_rx();
    let reader = {
        let arrivals = arrivals.clone();
        let lagged = lagged.clone();
        tokio::spawn(async move {
            loop {
                match messages.recv().await {
                    // Counted per batch, like the switchboard side.
                    Ok(_) => {
                        let mut n = 1;
                        while messages.try_recv().is_ok() {
                            n += 1;
                        }
                        arrivals.add(n);
                    }
                    Err(RecvError::Lagged(n)) => {
                        lagged.fetch_add(n, Ordering::Relaxed);
                    }
                    Err(RecvError::Closed) => break,
                }
            }
        })
    };
    subscriber.subscribe(channel.as_str()).await?;
    raw::barrier(&subscriber).await?;
    let publisher = raw::publisher(url).await?;
    let payload = Bytes::from(filler(payload_len));
    let channel = Str::from(channel);

    let start = now_ns();
    let (sent, failed_sends) = saturate(duration, WINDOW, || {
        let publisher = publisher.clone();
        let channel = channel.clone();
        let payload = payload.clone();
        async move {
            publisher
                .publish::<i64, _, _>(channel, payload)
                .await
                .is_ok()
        }
    })
    .await;
    let received = arrivals.wait_for(sent, STALL).await;
    let elapsed = arrivals.last_ns().saturating_sub(start);
    reader.abort();
    raw::close(&publisher).await;
    raw::close(&subscriber).await;
    Ok(Outcome {
        messages_per_s: rate(received, elapsed),
        deliveries_per_s: rate(received, elapsed),
        sent,
        failed_sends,
        received,
        lagged: lagged.load(Ordering::Relaxed),
    })
}

/// switchboard: two Redis managers, 10 draining connections on B.
async fn switchboard_run(
    url: &str,
    message: &SerializedMessage,
    duration: Duration,
) -> BenchResult<Outcome> {
    let hub = hub_name("b1");
    let a = manager(url, &hub).await?;
    let b = manager(url, &hub).await?;
    let deliveries = Arc::new(Arrivals::default());
    let mut drains = Vec::new();
    for _ in 0..CONNECTIONS {
        let (connection, mut outbound) = Connection::new(ConnectionOptions::new(Protocol::Json));
        b.on_connected(connection).await?;
        let deliveries = deliveries.clone();
        drains.push(tokio::spawn(async move {
            // Counted per batch of what is queued when the task wakes, so
            // that the shared counter costs little per frame.
            while outbound.recv().await.is_some() {
                let mut n = 1;
                while outbound.try_recv().is_some() {
                    n += 1;
                }
                deliveries.add(n);
            }
        }));
    }
    let before = b.stats();

    let start = now_ns();
    let (sent, failed_sends) = saturate(duration, WINDOW, || {
        let a = a.clone();
        let message = message.clone();
        async move { a.send_all(&message).await.is_ok() }
    })
    .await;
    let delivered = deliveries.wait_for(sent * CONNECTIONS, STALL).await;
    let elapsed = deliveries.last_ns().saturating_sub(start);
    let after = b.stats();
    for drain in drains {
        drain.abort();
    }
    a.shutdown().await;
    b.shutdown().await;
    if after.closed_slow > before.closed_slow {
        return Err(format!(
            "{} connections on B were closed as slow consumers",
            after.closed_slow - before.closed_slow
        )
        .into());
    }
    let received = after.backplane_received - before.backplane_received;
    Ok(Outcome {
        messages_per_s: rate(received, elapsed),
        deliveries_per_s: rate(delivered, elapsed),
        sent,
        failed_sends,
        received,
        lagged: after.backplane_lagged - before.backplane_lagged,
    })
}

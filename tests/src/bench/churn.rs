//! B4: 20,000 connections connect, then disconnect, on the Redis manager,
//! [`WINDOW`] at a time.
//!
//! `on_connected` returns once the connection's channel is subscribed (the
//! manager waits for Redis to confirm); `on_disconnected` once it is
//! unsubscribed. The baseline SUBSCRIBEs, then UNSUBSCRIBEs, the same 20,000
//! channel names on a raw fred subscriber with the same window, each phase
//! ending with a PING so that every change is in effect when the clock stops.

use std::time::Duration;

use fred::interfaces::PubsubInterface;
use serde_json::json;
use switchboard_core::protocol::Protocol;
use switchboard_core::{Connection, ConnectionOptions, ConnectionReceiver, HubLifetimeManager};

use super::report::{Row, Target, Unit};
use super::{BenchResult, PREFIX, Settings, hub_name, manager, median, raw, windowed};

/// Connections per phase.
pub const CONNECTIONS: usize = 20_000;
/// Operations in flight at once.
pub const WINDOW: usize = 512;

/// Connects and disconnects per second in one round.
#[derive(Debug, Clone, Copy)]
struct Rates {
    connects: f64,
    disconnects: f64,
}

/// Runs B4.
pub async fn run(settings: &Settings) -> BenchResult<Vec<Row>> {
    let rounds = settings.pick(1, 3);
    let mut baseline = Vec::new();
    let mut switchboard = Vec::new();
    for _ in 0..rounds {
        baseline.push(raw_run(&settings.redis_url).await?);
        switchboard.push(switchboard_run(&settings.redis_url).await?);
    }
    let med = |v: &[Rates], f: fn(&Rates) -> f64| median(&v.iter().map(f).collect::<Vec<_>>());
    let details = json!({
        "connections": CONNECTIONS,
        "window": WINDOW,
        "rounds": rounds,
        "switchboard": switchboard.iter().map(|r| json!({"connects_per_s": r.connects, "disconnects_per_s": r.disconnects})).collect::<Vec<_>>(),
        "baseline": baseline.iter().map(|r| json!({"subscribes_per_s": r.connects, "unsubscribes_per_s": r.disconnects})).collect::<Vec<_>>(),
    });
    let scenario = "20k connect/disconnect";
    Ok(vec![
        Row::new(
            "B4",
            scenario,
            "connects/s",
            Unit::PerSecond,
            med(&switchboard, |r| r.connects),
            med(&baseline, |r| r.connects),
            Target::AtLeast(20_000.0),
        )
        .note(format!(
            "{WINDOW} in flight, median of {rounds}; baseline = raw SUBSCRIBE/UNSUBSCRIBE of \
             the same channels, then PING"
        ))
        .details(details),
        Row::new(
            "B4",
            scenario,
            "disconnects/s",
            Unit::PerSecond,
            med(&switchboard, |r| r.disconnects),
            med(&baseline, |r| r.disconnects),
            Target::AtLeast(20_000.0),
        ),
    ])
}

/// How many channels have subscribers on the server.
fn pubsub_channels(url: &str) -> BenchResult<u64> {
    let info = raw::info(url, "stats")?;
    raw::info_field(&info, "pubsub_channels")
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| "INFO stats has no pubsub_channels".into())
}

fn per_s(count: usize, elapsed: Duration) -> f64 {
    count as f64 / elapsed.as_secs_f64()
}

async fn raw_run(url: &str) -> BenchResult<Rates> {
    let hub = hub_name("b4-raw");
    let channels: Vec<String> = (0..CONNECTIONS)
        .map(|_| {
            format!(
                "{PREFIX}{hub}:connection:{}",
                switchboard_core::random_token()
            )
        })
        .collect();
    let subscriber = raw::subscriber(url).await?;

    let started = std::time::Instant::now();
    let (subscribed, _) = windowed(CONNECTIONS, WINDOW, |i| {
        let subscriber = subscriber.clone();
        let channel = channels[i].clone();
        async move { subscriber.subscribe(channel).await.is_ok() }
    })
    .await;
    raw::barrier(&subscriber).await?;
    let connect = started.elapsed();

    let started = std::time::Instant::now();
    let (unsubscribed, _) = windowed(CONNECTIONS, WINDOW, |i| {
        let subscriber = subscriber.clone();
        let channel = channels[i].clone();
        async move { subscriber.unsubscribe(channel).await.is_ok() }
    })
    .await;
    raw::barrier(&subscriber).await?;
    let disconnect = started.elapsed();
    raw::close(&subscriber).await;
    if subscribed != CONNECTIONS || unsubscribed != CONNECTIONS {
        return Err(format!(
            "raw: {subscribed} subscribes and {unsubscribed} unsubscribes of {CONNECTIONS} succeeded"
        )
        .into());
    }
    Ok(Rates {
        connects: per_s(CONNECTIONS, connect),
        disconnects: per_s(CONNECTIONS, disconnect),
    })
}

async fn switchboard_run(url: &str) -> BenchResult<Rates> {
    let hub = hub_name("b4");
    let manager = manager(url, &hub).await?;
    // Made beforehand: creating a connection is the transport's work.
    let connections: Vec<(Connection, ConnectionReceiver)> = (0..CONNECTIONS)
        .map(|_| Connection::new(ConnectionOptions::new(Protocol::Json)))
        .collect();

    let (connected, connect) = windowed(CONNECTIONS, WINDOW, |i| {
        let manager = manager.clone();
        let connection = connections[i].0.clone();
        async move { manager.on_connected(connection).await.is_ok() }
    })
    .await;
    let registered = manager.store().len();
    let subscribed = pubsub_channels(url)?;

    let (disconnected, disconnect) = windowed(CONNECTIONS, WINDOW, |i| {
        let manager = manager.clone();
        let id = connections[i].0.id().clone();
        async move { manager.on_disconnected(&id).await.is_ok() }
    })
    .await;
    let left = manager.store().len();
    let still_subscribed = pubsub_channels(url)?;
    manager.shutdown().await;
    // Proof that the work was done in Redis, not only in memory.
    if subscribed < CONNECTIONS as u64 || still_subscribed >= CONNECTIONS as u64 {
        return Err(format!(
            "Redis had {subscribed} channels after connecting and {still_subscribed} after \
             disconnecting {CONNECTIONS} connections"
        )
        .into());
    }
    if connected != CONNECTIONS
        || registered != CONNECTIONS
        || disconnected != CONNECTIONS
        || left != 0
    {
        return Err(format!(
            "switchboard: {connected} connects ({registered} registered), {disconnected} \
             disconnects ({left} left) of {CONNECTIONS}"
        )
        .into());
    }
    Ok(Rates {
        connects: per_s(CONNECTIONS, connect),
        disconnects: per_s(CONNECTIONS, disconnect),
    })
}

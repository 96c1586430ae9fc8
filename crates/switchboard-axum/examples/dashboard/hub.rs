//! The dashboard hub, and the task that pushes a sample of this server's
//! figures to every watcher, on every server, once per interval.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;
use switchboard_core::{CallContext, Hub, HubContext, HubLifetimeManager};

/// The group of connections watching the dashboard.
pub(crate) const WATCHERS: &str = "dashboard";

/// What `Watch` returns.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct Watching {
    user: Option<String>,
    connection_id: String,
}

/// The dashboard hub.
///
/// | method | arguments | effect | returns |
/// |---|---|---|---|
/// | `Watch` | | the caller receives `sample(sample)` from every server | `{"user", "connectionId"}` |
/// | `Unwatch` | | it stops | nothing |
///
/// A sample is `{"server", "at", "connections", "watchers", "deliveredPerSecond"}`:
/// the server's name, when (milliseconds since the Unix epoch), its open
/// connections, the watchers on all servers, and the frames it delivered
/// per second since its last sample.
pub(crate) fn dashboard_hub(manager: Arc<dyn HubLifetimeManager>) -> Hub {
    Hub::builder()
        .method("Watch", |ctx: CallContext, (): ()| async move {
            ctx.join(WATCHERS).await?;
            Ok(Watching {
                user: ctx.user().map(str::to_owned),
                connection_id: ctx.connection_id().to_string(),
            })
        })
        .method("Unwatch", |ctx: CallContext, (): ()| async move {
            ctx.leave(WATCHERS).await?;
            Ok(())
        })
        .build(manager)
}

/// One server's figures at one moment.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct Sample<'a> {
    server: &'a str,
    at: u64,
    connections: usize,
    /// Watchers on every server (presence), when they could be counted.
    watchers: Option<u64>,
    delivered_per_second: f64,
}

/// Sends this server's sample to the watchers every `interval`, until the
/// process ends. Sends that fail (Redis away) are logged and skipped.
pub(crate) async fn push_samples(context: HubContext, server: String, interval: Duration) {
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let manager = context.manager().clone();
    let mut last = (tokio::time::Instant::now(), manager.stats().delivered);
    loop {
        tick.tick().await;
        let stats = manager.stats();
        let now = tokio::time::Instant::now();
        let seconds = now.duration_since(last.0).as_secs_f64().max(1e-3);
        let delivered_per_second = stats.delivered.saturating_sub(last.1) as f64 / seconds;
        last = (now, stats.delivered);
        let watchers = match context.group_members(WATCHERS, 0).await {
            Ok(presence) if presence.is_complete() => Some(presence.count),
            Ok(_) => None,
            Err(e) => {
                tracing::debug!(error = %e, "cannot count the watchers");
                None
            }
        };
        let sample = Sample {
            server: &server,
            at: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64),
            connections: stats.connections,
            watchers,
            delivered_per_second,
        };
        if let Err(e) = context.group(WATCHERS).send("sample", (sample,)).await {
            tracing::warn!(error = %e, "could not push a sample");
        }
    }
}

//! B5: resident memory per idle connection on the Redis manager.
//!
//! Measured in a child process of its own (this binary, run with `--child`),
//! so that heap freed by earlier scenarios cannot absorb the growth. The
//! child connects a warm-up batch, waits, reads VmRSS from
//! /proc/self/status and Redis' `used_memory`, connects N more connections
//! (keeping each `Connection` and its `ConnectionReceiver`, as a transport
//! would), waits again and reads both again. Per connection = growth / N,
//! with nothing subtracted.
//!
//! The baseline child does the least a Redis-backed server must: one raw
//! fred subscriber SUBSCRIBEd to N channels named like switchboard's.

use std::time::Duration;

use fred::interfaces::PubsubInterface;
use serde_json::{Value, json};
use switchboard_core::protocol::Protocol;
use switchboard_core::{Connection, ConnectionOptions, ConnectionReceiver, HubLifetimeManager};

use super::report::{Row, Target, Unit};
use super::{BenchResult, PREFIX, Settings, hub_name, manager, proc_status_bytes, raw, windowed};

/// Connections made and kept before the first reading.
const WARMUP: usize = 1_000;
/// Operations in flight while connecting.
const WINDOW: usize = 512;
/// The pause before each reading, for background work to finish.
const SETTLE: Duration = Duration::from_millis(1500);

/// One child's readings.
#[derive(Debug, Clone, Copy)]
struct Readings {
    count: u64,
    rss_before: u64,
    rss_after: u64,
    redis_before: u64,
    redis_after: u64,
}

impl Readings {
    fn rss_per(&self) -> f64 {
        self.rss_after.saturating_sub(self.rss_before) as f64 / self.count as f64
    }

    fn redis_per(&self) -> f64 {
        self.redis_after.saturating_sub(self.redis_before) as f64 / self.count as f64
    }

    fn to_json(self) -> Value {
        json!({
            "count": self.count,
            "rss_before": self.rss_before,
            "rss_after": self.rss_after,
            "redis_used_memory_before": self.redis_before,
            "redis_used_memory_after": self.redis_after,
        })
    }

    fn from_json(value: &Value) -> Option<Readings> {
        let field = |name: &str| value.get(name).and_then(Value::as_u64);
        Some(Readings {
            count: field("count")?,
            rss_before: field("rss_before")?,
            rss_after: field("rss_after")?,
            redis_before: field("redis_used_memory_before")?,
            redis_after: field("redis_used_memory_after")?,
        })
    }
}

/// Runs B5 (in two child processes).
pub async fn run(settings: &Settings) -> BenchResult<Vec<Row>> {
    let count = settings.pick(20_000, 100_000);
    let switchboard = child(settings, "switchboard", count).await?;
    let baseline = child(settings, "raw", count).await?;
    let details = json!({
        "connections": count,
        "warmup_connections": WARMUP,
        "switchboard": switchboard.to_json(),
        "baseline": baseline.to_json(),
    });
    let scenario = format!("{}k idle connections", count / 1000);
    Ok(vec![
        Row::new(
            "B5",
            &scenario,
            "RSS per connection",
            Unit::Bytes,
            Some(switchboard.rss_per()),
            Some(baseline.rss_per()),
            Target::AtMost(1024.0),
        )
        .note(
            "VmRSS growth / N in a fresh process; baseline = raw fred subscriber with N \
             channels (lower is better)",
        )
        .details(details),
        Row::new(
            "B5",
            &scenario,
            "Redis used_memory per conn",
            Unit::Bytes,
            Some(switchboard.redis_per()),
            Some(baseline.redis_per()),
            Target::None,
        ),
    ])
}

/// Runs this binary as a B5 child and reads its result line.
async fn child(settings: &Settings, kind: &str, count: usize) -> BenchResult<Readings> {
    let output = tokio::process::Command::new(&settings.self_exe)
        .args(["--child", &format!("b5-{kind}"), "--redis"])
        .arg(&settings.redis_url)
        .args(["--count", &count.to_string()])
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::inherit())
        .output()
        .await?;
    if !output.status.success() {
        return Err(format!("the B5 {kind} child failed ({})", output.status).into());
    }
    let stdout = String::from_utf8_lossy(&output.stdout);
    let line = stdout.lines().last().unwrap_or_default();
    serde_json::from_str(line)
        .ok()
        .as_ref()
        .and_then(Readings::from_json)
        .ok_or_else(|| format!("the B5 {kind} child printed {line:?}").into())
}

/// The child's side: `kind` is `b5-switchboard` or `b5-raw`. Prints one
/// JSON line.
pub fn child_main(kind: &str, url: &str, count: usize) -> BenchResult<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let readings = runtime.block_on(async {
        match kind {
            "b5-switchboard" => switchboard_child(url, count).await,
            "b5-raw" => raw_child(url, count).await,
            other => Err(format!("unknown child kind {other}").into()),
        }
    })?;
    println!("{}", readings.to_json());
    Ok(())
}

async fn switchboard_child(url: &str, count: usize) -> BenchResult<Readings> {
    let manager = manager(url, &hub_name("b5")).await?;
    let mut held: Vec<(Connection, ConnectionReceiver)> = Vec::new();
    let connect = async |n: usize, held: &mut Vec<(Connection, ConnectionReceiver)>| {
        let batch: Vec<(Connection, ConnectionReceiver)> = (0..n)
            .map(|_| Connection::new(ConnectionOptions::new(Protocol::Json)))
            .collect();
        let (ok, _) = windowed(n, WINDOW, |i| {
            let manager = manager.clone();
            let connection = batch[i].0.clone();
            async move { manager.on_connected(connection).await.is_ok() }
        })
        .await;
        held.extend(batch);
        ok
    };
    connect(WARMUP, &mut held).await;
    tokio::time::sleep(SETTLE).await;
    let (rss_before, redis_before) = (proc_status_bytes("self", "VmRSS")?, raw::used_memory(url)?);
    let connected = connect(count, &mut held).await;
    tokio::time::sleep(SETTLE).await;
    let (rss_after, redis_after) = (proc_status_bytes("self", "VmRSS")?, raw::used_memory(url)?);
    if connected != count || manager.store().len() != WARMUP + count {
        return Err(format!("only {connected} of {count} connections registered").into());
    }
    drop(held);
    manager.shutdown().await;
    Ok(Readings {
        count: count as u64,
        rss_before,
        rss_after,
        redis_before,
        redis_after,
    })
}

async fn raw_child(url: &str, count: usize) -> BenchResult<Readings> {
    let hub = hub_name("b5-raw");
    let subscriber = raw::subscriber(url).await?;
    let subscribe = async |n: usize| {
        let (ok, _) = windowed(n, WINDOW, |_| {
            let subscriber = subscriber.clone();
            let channel = format!(
                "{PREFIX}{hub}:connection:{}",
                switchboard_core::random_token()
            );
            async move { subscriber.subscribe(channel).await.is_ok() }
        })
        .await;
        raw::barrier(&subscriber).await.map(|()| ok)
    };
    subscribe(WARMUP).await?;
    tokio::time::sleep(SETTLE).await;
    let (rss_before, redis_before) = (proc_status_bytes("self", "VmRSS")?, raw::used_memory(url)?);
    let subscribed = subscribe(count).await?;
    tokio::time::sleep(SETTLE).await;
    let (rss_after, redis_after) = (proc_status_bytes("self", "VmRSS")?, raw::used_memory(url)?);
    if subscribed != count {
        return Err(format!("only {subscribed} of {count} channels subscribed").into());
    }
    raw::close(&subscriber).await;
    Ok(Readings {
        count: count as u64,
        rss_before,
        rss_after,
        redis_before,
        redis_after,
    })
}

//! The scenarios of `cargo xtask bench`: switchboard measured against raw
//! Redis pub/sub in the same run.
//!
//! Every scenario (B1..B6) runs a *baseline* first: plain fred clients doing
//! the same Redis work with no switchboard code in between (same payload
//! size, same in-flight window). The figure that matters is the ratio of the
//! two, because this machine runs other work at the same time and absolute
//! numbers move from run to run. B7 compares switchboard with itself: the
//! same workload on one Redis node (its baseline) and on a 3-master Redis
//! Cluster, in the same run. B8 compares switchboard with another real-time
//! server: B6's chat workload on socketioxide (socket.io) with its Redis
//! adapter, the baseline, beside the chat example. B9 (connection density)
//! uses no Redis: its baseline is a bare axum WebSocket server (`bare-ws`).
//!
//! The binary `switchboard-bench` parses the command line, runs the selected
//! scenarios on one multi-threaded tokio runtime and prints a [`report`].
//! B5 (memory per connection) runs in child processes of the same binary, so
//! that heap left behind by the other scenarios cannot hide its growth.

pub mod chat;
pub mod churn;
pub mod density;
pub mod fanout;
pub mod http_clients;
pub mod latency;
pub mod memory;
pub mod peer;
pub mod presence;
pub mod raw;
pub mod report;
pub mod shards;
pub mod throughput;

use std::future::Future;
use std::path::PathBuf;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures::StreamExt;
use futures::stream::FuturesUnordered;
use switchboard_core::SerializedMessage;
use switchboard_protocol as wire;
use switchboard_redis::{RedisHubLifetimeManager, RedisOptions};

/// Errors of the bench harness: reported, never panicked on.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
/// A bench result.
pub type BenchResult<T> = Result<T, BoxError>;

/// The channel prefix of every manager the bench creates.
pub const PREFIX: &str = "bench:";

/// What the command line asked for.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The Redis server every scenario uses.
    pub redis_url: String,
    /// Shorter runs (the whole bench in well under two minutes).
    pub quick: bool,
    /// Scenario ids to run (upper case); `None` = all.
    pub only: Option<Vec<String>>,
    /// The chat example for B6, B8 and B9, or why there is none.
    pub chat: Chat,
    /// B8's socketioxide server (`tests/peer`), or why there is none.
    pub peer: Peer,
    /// The Redis Cluster for B7, or why there is none.
    pub cluster: Cluster,
    /// This program, re-run as a child for B5.
    pub self_exe: PathBuf,
}

impl Settings {
    /// Whether scenario `id` was selected.
    pub fn selected(&self, id: &str) -> bool {
        self.only
            .as_ref()
            .is_none_or(|only| only.iter().any(|o| o.eq_ignore_ascii_case(id)))
    }

    /// `quick` in quick mode, `full` otherwise.
    pub fn pick<T>(&self, quick: T, full: T) -> T {
        if self.quick { quick } else { full }
    }
}

/// The chat server binary of B6.
#[derive(Debug, Clone)]
pub enum Chat {
    /// Built: run this.
    Binary(PathBuf),
    /// Not available; the text says why.
    Missing(String),
}

/// The socketioxide server of B8 (package `switchboard-peer`, `tests/peer`).
#[derive(Debug, Clone)]
pub enum Peer {
    /// Built: run this.
    Binary(PathBuf),
    /// Not available; the text says why.
    Missing(String),
}

/// The Redis Cluster of B7.
#[derive(Debug, Clone)]
pub enum Cluster {
    /// Running: its `redis-cluster://` URL.
    Url(String),
    /// Not available; the text says why.
    Missing(String),
}

/// The process-wide monotonic clock every timestamp is read from, so that a
/// time written by a sender can be compared with a time read by a receiver.
pub fn clock() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

/// Nanoseconds since [`clock`]'s epoch.
pub fn now_ns() -> u64 {
    u64::try_from(clock().elapsed().as_nanos()).unwrap_or(u64::MAX)
}

/// A fresh hub name for one scenario, so runs never see each other's messages.
pub fn hub_name(scenario: &str) -> String {
    let mut token = switchboard_core::random_token();
    token.truncate(10);
    format!("{scenario}-{token}")
}

/// A Redis manager on `hub`, with default options but the bench prefix.
pub async fn manager(url: &str, hub: &str) -> BenchResult<RedisHubLifetimeManager> {
    Ok(RedisHubLifetimeManager::connect(RedisOptions::new(url).prefix(PREFIX).hub(hub)).await?)
}

/// `len` bytes of printable text that contain no JSON escapes and none of
/// the markers the scenarios search for.
pub fn filler(len: usize) -> String {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrsuvwxyz0123456789 ";
    (0..len)
        .map(|i| ALPHABET[i % ALPHABET.len()] as char)
        .collect()
}

/// The marker that precedes a timestamp embedded in a message.
pub const STAMP: &[u8] = b"ts:";
/// The number of digits of an embedded timestamp.
pub const STAMP_DIGITS: usize = 16;

/// A text of exactly `len` bytes (at least the stamp's length) starting with
/// the timestamp `ns`.
pub fn stamped(ns: u64, len: usize) -> String {
    let mut text = format!("ts:{ns:0width$}", width = STAMP_DIGITS);
    let stamp_len = text.len();
    text.push_str(&filler(len.saturating_sub(stamp_len)));
    text
}

/// Reads the timestamp written by [`stamped`] anywhere in `bytes`.
pub fn read_stamp(bytes: &[u8]) -> Option<u64> {
    let at = bytes.windows(STAMP.len()).position(|w| w == STAMP)?;
    let digits = bytes.get(at + STAMP.len()..at + STAMP.len() + STAMP_DIGITS)?;
    digits.iter().try_fold(0u64, |n, &d| {
        d.is_ascii_digit().then(|| n * 10 + u64::from(d - b'0'))
    })
}

/// The value at quantile `q` (0..=1) of sorted samples (nearest rank).
pub fn quantile(sorted: &[u64], q: f64) -> Option<u64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

/// The median of some measurements.
pub fn median(values: &[f64]) -> Option<f64> {
    let mut sorted: Vec<f64> = values.iter().copied().filter(|v| v.is_finite()).collect();
    if sorted.is_empty() {
        return None;
    }
    sorted.sort_by(f64::total_cmp);
    let mid = sorted.len() / 2;
    Some(if sorted.len() % 2 == 0 {
        (sorted[mid - 1] + sorted[mid]) / 2.0
    } else {
        sorted[mid]
    })
}

/// Runs `op(i)` for every `i` in `0..count`, at most `window` at a time,
/// all driven by the calling task. Returns how many returned `true` and the
/// time it took.
pub async fn windowed<F, Fut>(count: usize, window: usize, mut op: F) -> (usize, Duration)
where
    F: FnMut(usize) -> Fut,
    Fut: Future<Output = bool>,
{
    let started = Instant::now();
    let mut inflight = FuturesUnordered::new();
    let mut ok = 0;
    for i in 0..count {
        if inflight.len() >= window {
            ok += usize::from(inflight.next().await.unwrap_or(false));
        }
        inflight.push(op(i));
    }
    while let Some(done) = inflight.next().await {
        ok += usize::from(done);
    }
    (ok, started.elapsed())
}

/// Keeps `window` operations in flight for `duration`, then lets the last
/// ones finish. Returns (succeeded, failed).
pub async fn saturate<F, Fut>(duration: Duration, window: usize, mut op: F) -> (u64, u64)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + duration;
    let mut inflight = FuturesUnordered::new();
    let (mut ok, mut failed) = (0u64, 0u64);
    let mut tally = |done: Option<bool>| match done {
        Some(true) => ok += 1,
        Some(false) => failed += 1,
        None => {}
    };
    while Instant::now() < deadline {
        while inflight.len() >= window {
            tally(inflight.next().await);
        }
        inflight.push(op());
    }
    while let Some(done) = inflight.next().await {
        tally(Some(done));
    }
    (ok, failed)
}

/// Calls `start(i)` for every `i` in `0..count`, the `i`-th at `i * interval`
/// after the first, from a thread of its own (a sleeping thread keeps a
/// steadier pace than the runtime's millisecond timer). `start` should only
/// spawn the real work. Late calls catch up at once, so the average rate
/// holds.
pub async fn pace<F>(count: usize, interval: Duration, mut start: F) -> BenchResult<()>
where
    F: FnMut(usize) + Send + 'static,
{
    let pacer = std::thread::spawn(move || {
        let first = Instant::now();
        for i in 0..count {
            let due = first + interval.saturating_mul(u32::try_from(i).unwrap_or(u32::MAX));
            let now = Instant::now();
            if due > now {
                std::thread::sleep(due - now);
            }
            start(i);
        }
    });
    tokio::task::spawn_blocking(move || pacer.join())
        .await?
        .map_err(|_| "the pacing thread panicked")?;
    Ok(())
}

/// A counter of received items that also remembers when the last one came.
#[derive(Debug, Default)]
pub struct Arrivals {
    count: AtomicU64,
    last_ns: AtomicU64,
}

impl Arrivals {
    /// Counts `n` items that arrived now.
    pub fn add(&self, n: u64) {
        self.count.fetch_add(n, Ordering::Relaxed);
        self.last_ns.fetch_max(now_ns(), Ordering::Relaxed);
    }

    /// How many arrived so far.
    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    /// When the last one arrived ([`now_ns`] time).
    pub fn last_ns(&self) -> u64 {
        self.last_ns.load(Ordering::Relaxed)
    }

    /// Waits until `expected` items arrived, or nothing arrived for `stall`.
    /// Returns the count reached.
    pub async fn wait_for(&self, expected: u64, stall: Duration) -> u64 {
        let mut seen = self.count();
        let mut changed = Instant::now();
        while seen < expected {
            tokio::time::sleep(Duration::from_millis(2)).await;
            let now = self.count();
            if now != seen {
                seen = now;
                changed = Instant::now();
            } else if changed.elapsed() >= stall {
                break;
            }
        }
        seen
    }
}

/// The size of the envelope switchboard publishes for `message` (an
/// invocation without exclusions): the baseline publishes as many bytes.
pub fn envelope_len(message: &SerializedMessage) -> usize {
    let messages = message
        .iter()
        .map(|(protocol, frame)| wire::SerializedMessage {
            protocol: protocol.name().to_owned(),
            payload: frame.clone(),
        })
        .collect();
    wire::encode_body(wire::Body::Invocation(wire::Invocation {
        messages,
        ..Default::default()
    }))
    .len()
}

/// A size field of `/proc/<process>/status` (`VmRSS`, `VmHWM`, ...), in
/// bytes; `process` is a pid or `self`.
pub fn proc_status_bytes(process: impl std::fmt::Display, field: &str) -> BenchResult<u64> {
    let status = std::fs::read_to_string(format!("/proc/{process}/status"))?;
    let kib = status
        .lines()
        .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse::<u64>().ok())
        .ok_or_else(|| format!("no {field} in /proc/{process}/status"))?;
    Ok(kib * 1024)
}
/// Per-second rate of `count` items over `ns` nanoseconds.
pub fn rate(count: u64, ns: u64) -> f64 {
    if ns == 0 {
        return 0.0;
    }
    count as f64 * 1e9 / ns as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamps_round_trip_inside_json() {
        let text = stamped(1_234_567, 64);
        assert_eq!(text.len(), 64);
        let frame = format!("{{\"type\":1,\"target\":\"message\",\"arguments\":[\"{text}\"]}}");
        assert_eq!(read_stamp(frame.as_bytes()), Some(1_234_567));
        assert_eq!(read_stamp(b"no stamp here"), None);
    }

    #[test]
    fn quantiles_use_nearest_rank() {
        let samples: Vec<u64> = (1..=100).collect();
        assert_eq!(quantile(&samples, 0.5), Some(50));
        assert_eq!(quantile(&samples, 0.99), Some(99));
        assert_eq!(quantile(&samples, 0.999), Some(100));
        assert_eq!(quantile(&[], 0.5), None);
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), Some(2.5));
    }
}

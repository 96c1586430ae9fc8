//! B2: latency of `send_connection` from server A to a connection on B at a
//! fixed 5,000 messages per second.
//!
//! Each message carries the time it was sent (read from the process-wide
//! monotonic clock just before the send call) in its text argument; the task
//! reading the connection's queue subtracts it from the time the frame came
//! out. The baseline does the same with a raw publisher and subscriber:
//! publish call to message received.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use fred::bytes_utils::Str;
use fred::interfaces::{EventInterface, PubsubInterface};
use serde_json::json;
use switchboard_core::protocol::Protocol;
use switchboard_core::{
    Connection, ConnectionOptions, HubContext, HubLifetimeManager, SerializedMessage,
};
use tokio::sync::broadcast::error::RecvError;
use tokio::task::JoinHandle;

use super::report::{Row, Target, Unit};
use super::{
    BenchResult, PREFIX, Settings, envelope_len, hub_name, manager, now_ns, pace, quantile, raw,
    read_stamp, stamped,
};

/// Messages per second.
pub const RATE: u32 = 5_000;
/// The JSON text argument's length (it starts with the timestamp).
const TEXT_LEN: usize = 64;
/// How long the receiver waits for a message before the rest count as lost.
const STALL: Duration = Duration::from_secs(3);

/// Latency samples in nanoseconds (sorted) and how many messages were sent.
#[derive(Debug)]
struct Samples {
    sorted: Vec<u64>,
    sent: usize,
}

impl Samples {
    fn q(&self, q: f64) -> Option<f64> {
        quantile(&self.sorted, q).map(|v| v as f64)
    }
}

/// Runs B2.
pub async fn run(settings: &Settings) -> BenchResult<Vec<Row>> {
    let seconds = settings.pick(3, 10);
    let interval = Duration::from_secs(1) / RATE;
    let count = (RATE * seconds) as usize;
    // The first half second warms connections and caches up; not recorded.
    let warmup = (RATE / 2) as usize;
    let sample =
        SerializedMessage::invocation(&Protocol::ALL, "message", &(stamped(0, TEXT_LEN),))?;
    let payload_len = envelope_len(&sample);

    let baseline = raw_run(&settings.redis_url, payload_len, warmup, count, interval).await?;
    let switchboard = switchboard_run(&settings.redis_url, warmup, count, interval).await?;

    let lost = |s: &Samples| s.sent.saturating_sub(s.sorted.len());
    let details = json!({
        "rate_per_s": RATE,
        "seconds": seconds,
        "warmup_messages": warmup,
        "envelope_bytes": payload_len,
        "switchboard": { "recorded": switchboard.sorted.len(), "lost": lost(&switchboard),
            "p50_ns": switchboard.q(0.5), "p99_ns": switchboard.q(0.99), "p999_ns": switchboard.q(0.999),
            "max_ns": switchboard.sorted.last() },
        "baseline": { "recorded": baseline.sorted.len(), "lost": lost(&baseline),
            "p50_ns": baseline.q(0.5), "p99_ns": baseline.q(0.99), "p999_ns": baseline.q(0.999),
            "max_ns": baseline.sorted.last() },
    });
    let mut note = format!(
        "{RATE} msg/s for {seconds} s, {} samples; send call -> frame out of the queue",
        switchboard.sorted.len()
    );
    if lost(&switchboard) + lost(&baseline) > 0 {
        note.push_str(&format!(
            "; lost: switchboard {}, baseline {}",
            lost(&switchboard),
            lost(&baseline)
        ));
    }
    let scenario = "send_connection A->B @5k/s";
    Ok(vec![
        Row::new(
            "B2",
            scenario,
            "latency p50",
            Unit::Nanos,
            switchboard.q(0.5),
            baseline.q(0.5),
            Target::PlusAtMost(50_000.0),
        )
        .note(note)
        .details(details),
        Row::new(
            "B2",
            scenario,
            "latency p99",
            Unit::Nanos,
            switchboard.q(0.99),
            baseline.q(0.99),
            Target::PlusAtMost(200_000.0),
        ),
        Row::new(
            "B2",
            scenario,
            "latency p999",
            Unit::Nanos,
            switchboard.q(0.999),
            baseline.q(0.999),
            Target::None,
        ),
    ])
}

/// Latency samples of the messages after the first `warmup`.
struct Recorder {
    samples: Vec<u64>,
    seen: usize,
    warmup: usize,
}

impl Recorder {
    fn new(total: usize, warmup: usize) -> Recorder {
        Recorder {
            samples: Vec::with_capacity(total),
            seen: 0,
            warmup,
        }
    }

    /// Records a message received at `now` that was sent at `stamp`.
    fn record(&mut self, now: u64, stamp: Option<u64>) {
        self.seen += 1;
        if let (true, Some(sent)) = (self.seen > self.warmup, stamp) {
            self.samples.push(now.saturating_sub(sent));
        }
    }

    fn finish(mut self) -> Vec<u64> {
        self.samples.sort_unstable();
        self.samples
    }
}

async fn raw_run(
    url: &str,
    payload_len: usize,
    warmup: usize,
    count: usize,
    interval: Duration,
) -> BenchResult<Samples> {
    let channel = format!("{PREFIX}{}:connection:x", hub_name("b2-raw"));
    let subscriber = raw::subscriber(url).await?;
    let mut messages = subscriber.message_rx();
    subscriber.subscribe(channel.as_str()).await?;
    raw::barrier(&subscriber).await?;
    let publisher = raw::publisher(url).await?;
    let channel = Str::from(channel);
    let total = warmup + count;

    let receiver: JoinHandle<Vec<u64>> = tokio::spawn(async move {
        let mut recorder = Recorder::new(total, warmup);
        while recorder.seen < total {
            match tokio::time::timeout(STALL, messages.recv()).await {
                Ok(Ok(message)) => {
                    let now = now_ns();
                    recorder.record(now, message.value.as_bytes().and_then(read_stamp));
                }
                Ok(Err(RecvError::Lagged(_))) => {}
                Ok(Err(RecvError::Closed)) | Err(_) => break,
            }
        }
        recorder.finish()
    });
    let handle = tokio::runtime::Handle::current();
    let sender = publisher.clone();
    pace(total, interval, move |_| {
        let publisher = sender.clone();
        let channel = channel.clone();
        handle.spawn(async move {
            let payload = Bytes::from(stamped(now_ns(), payload_len));
            let _ = publisher.publish::<i64, _, _>(channel, payload).await;
        });
    })
    .await?;
    let sorted = receiver.await?;
    raw::close(&publisher).await;
    raw::close(&subscriber).await;
    Ok(Samples {
        sorted,
        sent: count,
    })
}

async fn switchboard_run(
    url: &str,
    warmup: usize,
    count: usize,
    interval: Duration,
) -> BenchResult<Samples> {
    let hub = hub_name("b2");
    let a = manager(url, &hub).await?;
    let b = manager(url, &hub).await?;
    let (connection, mut outbound) = Connection::new(ConnectionOptions::new(Protocol::Json));
    let target = connection.id().clone();
    b.on_connected(connection).await?;
    let context = HubContext::new(Arc::new(a.clone()));
    let total = warmup + count;

    let receiver: JoinHandle<Vec<u64>> = tokio::spawn(async move {
        let mut recorder = Recorder::new(total, warmup);
        while recorder.seen < total {
            match tokio::time::timeout(STALL, outbound.recv()).await {
                Ok(Some(frame)) => {
                    let now = now_ns();
                    recorder.record(now, read_stamp(&frame));
                }
                Ok(None) | Err(_) => break,
            }
        }
        recorder.finish()
    });
    let handle = tokio::runtime::Handle::current();
    pace(total, interval, move |_| {
        let client = context.client(target.clone());
        handle.spawn(async move {
            let text = stamped(now_ns(), TEXT_LEN);
            let _ = client.send("message", (text,)).await;
        });
    })
    .await?;
    let sorted = receiver.await?;
    a.shutdown().await;
    b.shutdown().await;
    Ok(Samples {
        sorted,
        sent: count,
    })
}

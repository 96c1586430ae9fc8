//! B3: one `send_group` from server A to a group of 10,000 connections on
//! server B, repeated.
//!
//! Each repetition times the send call until B's `delivered` counter has
//! grown by 10,000, i.e. every member's queue holds the frame. Nothing reads
//! the queues meanwhile (a reader task per connection would measure tokio's
//! scheduler instead). Between repetitions the bench drains every queue and
//! checks that all 10,000 frames share one allocation: the message is never
//! copied or re-encoded per connection.
//!
//! The baseline is the raw publish-to-receive time of a message as large as
//! switchboard's envelope; its figure is "10,000 / that time", the rate if
//! fan-out cost nothing.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use fred::bytes_utils::Str;
use fred::interfaces::{EventInterface, PubsubInterface};
use serde_json::json;
use switchboard_core::protocol::Protocol;
use switchboard_core::{
    Connection, ConnectionOptions, ConnectionReceiver, HubLifetimeManager, SerializedMessage,
};
use switchboard_redis::RedisHubLifetimeManager;

use super::report::{Row, Target, Unit};
use super::{
    BenchResult, PREFIX, Settings, envelope_len, filler, hub_name, manager, median, now_ns, raw,
    windowed,
};

/// Members of the group.
pub const MEMBERS: usize = 10_000;
/// The group's name.
const GROUP: &str = "big-room";
/// The JSON text argument's length.
const TEXT_LEN: usize = 64;
/// The longest one repetition may take before the bench gives up.
const GIVE_UP: Duration = Duration::from_secs(10);

/// Runs B3.
pub async fn run(settings: &Settings) -> BenchResult<Vec<Row>> {
    let repetitions = settings.pick(30, 100);
    let message =
        SerializedMessage::invocation(&Protocol::ALL, "message", &(filler(TEXT_LEN).as_str(),))?;
    let payload_len = envelope_len(&message);

    let raw_ns = raw_run(&settings.redis_url, payload_len, repetitions).await?;
    let run = switchboard_run(&settings.redis_url, &message, repetitions).await?;

    let per_s = |ns: f64| MEMBERS as f64 * 1e9 / ns;
    let sw_ns = median(&run.send_ns).unwrap_or(f64::NAN);
    let fan_ns = median(&run.fan_out_ns).unwrap_or(f64::NAN);
    let base_ns = median(&raw_ns).unwrap_or(f64::NAN);
    let details = json!({
        "members": MEMBERS,
        "repetitions": repetitions,
        "envelope_bytes": payload_len,
        "send_to_all_queued_ns": { "median": sw_ns,
            "min": run.send_ns.iter().copied().fold(f64::INFINITY, f64::min),
            "max": run.send_ns.iter().copied().fold(0.0, f64::max) },
        "fan_out_only_ns": { "median": fan_ns },
        "raw_publish_to_receive_ns": { "median": base_ns },
        "same_allocation_everywhere": run.shared,
        "missing_frames": run.missing,
    });
    let shared_note = if run.shared && run.missing == 0 {
        format!(
            "every one of {MEMBERS} queues got the same Bytes allocation in all {repetitions} repetitions"
        )
    } else {
        format!(
            "FAILED: frames shared one allocation: {}; frames missing: {}",
            run.shared, run.missing
        )
    };
    let scenario = "send_group A->B, 10k members";
    let mut main = Row::new(
        "B3",
        scenario,
        "deliveries/s (send -> all queued)",
        Unit::PerSecond,
        Some(per_s(sw_ns)),
        Some(per_s(base_ns)),
        Target::AtLeast(5_000_000.0),
    )
    .note(format!(
        "median of {repetitions}: {:.0} us from send to 10k queued, raw pub->sub {:.0} us \
         (baseline = 10k / raw time); {shared_note}",
        sw_ns / 1e3,
        base_ns / 1e3
    ))
    .details(details);
    if !(run.shared && run.missing == 0) {
        // A copy per connection fails the scenario whatever the speed.
        main.switchboard = None;
    }
    Ok(vec![
        main,
        Row::new(
            "B3",
            scenario,
            "fan-out only (deliver_group on B)",
            Unit::PerSecond,
            Some(per_s(fan_ns)),
            None,
            Target::None,
        )
        .note("B's ConnectionStore::deliver_group called directly: the part of B3 after Redis"),
    ])
}

/// Raw publish-to-receive times, in nanoseconds.
async fn raw_run(url: &str, payload_len: usize, repetitions: usize) -> BenchResult<Vec<f64>> {
    let channel = format!("{PREFIX}{}:group:{GROUP}", hub_name("b3-raw"));
    let subscriber = raw::subscriber(url).await?;
    let received = Arc::new(AtomicU64::new(0));
    let mut messages = subscriber.message_rx();
    let reader = {
        let received = received.clone();
        tokio::spawn(async move {
            while messages.recv().await.is_ok() {
                received.fetch_add(1, Ordering::Release);
            }
        })
    };
    subscriber.subscribe(channel.as_str()).await?;
    raw::barrier(&subscriber).await?;
    let publisher = raw::publisher(url).await?;
    let payload = Bytes::from(filler(payload_len));
    let channel = Str::from(channel);

    let mut times = Vec::with_capacity(repetitions);
    for i in 0..=repetitions {
        let start = now_ns();
        publisher
            .publish::<i64, _, _>(channel.clone(), payload.clone())
            .await?;
        let target = i as u64 + 1;
        let counter = received.clone();
        wait_until(move || counter.load(Ordering::Acquire) >= target).await?;
        // The first round warms up.
        if i > 0 {
            times.push((now_ns() - start) as f64);
        }
    }
    reader.abort();
    raw::close(&publisher).await;
    raw::close(&subscriber).await;
    Ok(times)
}

/// Spins (yielding the CPU) on another thread until `done` holds. The
/// runtime's timer is too coarse for sub-millisecond waits, and a spinning
/// task would keep a worker from the tasks being measured.
async fn wait_until<F>(done: F) -> BenchResult<()>
where
    F: Fn() -> bool + Send + 'static,
{
    tokio::task::spawn_blocking(move || {
        let started = Instant::now();
        while !done() {
            if started.elapsed() > GIVE_UP {
                return Err("a repetition did not complete in time");
            }
            std::thread::yield_now();
        }
        Ok(())
    })
    .await??;
    Ok(())
}

/// What the switchboard side measured.
struct Run {
    send_ns: Vec<f64>,
    fan_out_ns: Vec<f64>,
    shared: bool,
    missing: usize,
}

async fn switchboard_run(
    url: &str,
    message: &SerializedMessage,
    repetitions: usize,
) -> BenchResult<Run> {
    let hub = hub_name("b3");
    let a = manager(url, &hub).await?;
    let b = manager(url, &hub).await?;
    // Large enough to hold every frame of one repetition and the next.
    let options = ConnectionOptions::new(Protocol::Json).queue_capacity(16);
    let connections: Vec<(Connection, ConnectionReceiver)> = (0..MEMBERS)
        .map(|_| Connection::new(options.clone()))
        .collect();
    let (joined, _) = windowed(MEMBERS, 512, |i| {
        let b = b.clone();
        let connection = connections[i].0.clone();
        async move {
            let id = connection.id().clone();
            b.on_connected(connection).await.is_ok() && b.add_to_group(&id, GROUP).await.is_ok()
        }
    })
    .await;
    if joined != MEMBERS {
        return Err(format!("only {joined} of {MEMBERS} connections joined the group").into());
    }
    let mut receivers: Vec<ConnectionReceiver> = connections.into_iter().map(|(_, r)| r).collect();

    let mut run = Run {
        send_ns: Vec::with_capacity(repetitions),
        fan_out_ns: Vec::with_capacity(repetitions),
        shared: true,
        missing: 0,
    };
    for i in 0..=repetitions {
        let target = b.stats().delivered + MEMBERS as u64;
        let start = now_ns();
        a.send_group(GROUP, message).await?;
        let observer = b.clone();
        wait_until(move || observer.stats().delivered >= target).await?;
        let elapsed = (now_ns() - start) as f64;
        let (shared, missing) = drain(&mut receivers);
        // The first round warms up.
        if i > 0 {
            run.send_ns.push(elapsed);
            run.shared &= shared;
            run.missing += missing;
        }
    }
    // The same fan-out, called directly: what B does after Redis.
    for _ in 0..repetitions {
        let start = Instant::now();
        let queued = b.store().deliver_group(GROUP, message, &[] as &[&str]);
        run.fan_out_ns.push(start.elapsed().as_nanos() as f64);
        let (shared, missing) = drain(&mut receivers);
        run.shared &= shared;
        run.missing += missing + MEMBERS.saturating_sub(queued);
    }
    shutdown(&a, &b).await;
    Ok(run)
}

/// Empties every queue. Returns whether each held exactly one frame, all
/// the same allocation, and how many queues held none.
fn drain(receivers: &mut [ConnectionReceiver]) -> (bool, usize) {
    let mut first: Option<*const u8> = None;
    let mut shared = true;
    let mut missing = 0;
    for receiver in receivers {
        match receiver.try_recv() {
            Some(frame) => {
                let at = frame.as_ptr();
                shared &= *first.get_or_insert(at) == at;
                // More than one frame means a repetition leaked into the next.
                while receiver.try_recv().is_some() {
                    shared = false;
                }
            }
            None => missing += 1,
        }
    }
    (shared, missing)
}

async fn shutdown(a: &RedisHubLifetimeManager, b: &RedisHubLifetimeManager) {
    a.shutdown().await;
    b.shutdown().await;
}

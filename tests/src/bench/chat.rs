//! B6: the chat example end to end. Two chat servers (processes) on one
//! Redis; 50 WebSocket clients on server B speaking the JSON hub protocol;
//! one sender on server A invoking `Broadcast(text)`, which every client
//! receives as `message(from, text)`.
//!
//! Two phases: the sender writes invocations as fast as its socket takes
//! them (deliveries per second at B's clients), then at a fixed 1,000 per
//! second with the send time in the text (latency from the sender's write to
//! the client's read). The baseline does the same on raw Redis: one
//! publisher, 50 subscriber connections on one channel. The switchboard
//! side runs three times: B's clients on WebSockets, on Server-Sent Events,
//! and on long polling (the sender stays on WebSockets).

use std::path::Path;
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use fred::bytes_utils::Str;
use fred::interfaces::{EventInterface, PubsubInterface};
use futures::{SinkExt, StreamExt};
use serde_json::json;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::broadcast::error::RecvError;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;

use super::http_clients;
use super::report::{Row, Target, Unit};
use super::{
    Arrivals, BenchResult, Chat, PREFIX, Settings, hub_name, median, now_ns, pace, quantile, raw,
    read_stamp, stamped, windowed,
};

/// WebSocket clients on server B.
pub const CLIENTS: usize = 50;
/// Messages per second in the latency phase.
pub const RATE: u32 = 1_000;
/// The text argument's length (it starts with the timestamp).
pub(crate) const TEXT_LEN: usize = 64;
/// Every chat server's connections may queue a whole burst. The sender's
/// invocations are not held to one per Redis round trip, so on this 2-core
/// machine the burst can outrun a reader (a long-polling client between
/// two polls above all), and with the default queue of 1,024 frames the
/// server closes it as a slow consumer, which ends the run's measurement.
const QUEUE_ARGS: &[&str] = &["--queue-capacity", "16384"];
/// The hub's path on the chat server.
const HUB_PATH: &str = "/hubs/chat";
/// How long a chat server has to print its address.
const STARTUP: Duration = Duration::from_secs(30);
/// How long the receivers may stay silent before the rest counts as lost.
pub(crate) const STALL: Duration = Duration::from_secs(3);
/// The record separator that ends every JSON hub protocol message.
pub(crate) const RS: char = '\u{1e}';
const SCENARIO: &str = "chat: 2 servers, 50 ws clients";
const NODELAY_SCENARIO: &str = "chat: 2 servers, 50 ws clients, TCP_NODELAY on (pairs)";
const NAGLE_SCENARIO: &str = "chat: 2 servers, 50 ws clients, TCP_NODELAY off (pairs)";

/// The transport of B's clients.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Receivers {
    WebSockets,
    ServerSentEvents,
    LongPolling,
}

impl Receivers {
    const ALL: [Receivers; 3] = [
        Receivers::WebSockets,
        Receivers::ServerSentEvents,
        Receivers::LongPolling,
    ];

    fn scenario(self) -> &'static str {
        match self {
            Receivers::WebSockets => SCENARIO,
            Receivers::ServerSentEvents => "chat: 2 servers, 50 SSE clients",
            Receivers::LongPolling => "chat: 2 servers, 50 long-polling clients",
        }
    }
}

/// What the receiving side shares.
#[derive(Debug, Default)]
pub(crate) struct Shared {
    pub(crate) arrivals: Arrivals,
    pub(crate) recording: AtomicBool,
    samples: Mutex<Vec<u64>>,
}

impl Shared {
    /// Counts one received message, and its latency when recording.
    pub(crate) fn received(&self, now: u64, stamp: Option<u64>) {
        self.arrivals.add(1);
        if let (true, Some(sent)) = (self.recording.load(Ordering::Relaxed), stamp) {
            if let Ok(mut samples) = self.samples.lock() {
                samples.push(now.saturating_sub(sent));
            }
        }
    }

    pub(crate) fn take_samples(&self) -> Vec<u64> {
        let mut samples = self
            .samples
            .lock()
            .map(|mut s| std::mem::take(&mut *s))
            .unwrap_or_default();
        samples.sort_unstable();
        samples
    }
}

/// One side's figures.
#[derive(Debug, Default)]
struct Outcome {
    deliveries_per_s: f64,
    sent: u64,
    delivered: u64,
    latency: Vec<u64>,
    latency_sent: u64,
}

impl Outcome {
    /// Several runs as one: every latency sample, the counts summed, the
    /// median rate.
    fn merge(runs: Vec<Outcome>) -> Outcome {
        let rates: Vec<f64> = runs.iter().map(|o| o.deliveries_per_s).collect();
        let mut merged = Outcome {
            deliveries_per_s: median(&rates).unwrap_or(0.0),
            ..Outcome::default()
        };
        for run in runs {
            merged.sent += run.sent;
            merged.delivered += run.delivered;
            merged.latency_sent += run.latency_sent;
            merged.latency.extend(run.latency);
        }
        merged.latency.sort_unstable();
        merged
    }
}

/// Runs B6.
pub async fn run(settings: &Settings) -> BenchResult<Vec<Row>> {
    let binary = match &settings.chat {
        Chat::Binary(binary) => binary.clone(),
        Chat::Missing(why) => return Ok(vec![Row::skipped("B6", SCENARIO, why.clone())]),
    };
    let burst = settings.pick(2_000, 10_000);
    let seconds = settings.pick(3, 10);
    let baseline = raw_run(&settings.redis_url, burst, seconds).await?;
    let mut rows = Vec::new();
    for receivers in Receivers::ALL {
        let switchboard =
            chat_run(&binary, &settings.redis_url, burst, seconds, receivers, &[]).await?;
        rows.extend(rows_of(
            receivers.scenario(),
            receivers,
            &switchboard,
            &baseline,
            burst,
            seconds,
        ));
    }
    // TCP_NODELAY on (switchboard's `Server`) against off (as
    // `axum::serve` leaves it), in interleaved pairs: latency on a shared
    // machine moves from run to run more than the difference.
    let receivers = Receivers::WebSockets;
    let (mut on, mut off) = (Vec::new(), Vec::new());
    for _ in 0..settings.pick(1, 3) {
        for (args, runs) in [(&[][..], &mut on), (&["--no-nodelay"][..], &mut off)] {
            runs.push(
                chat_run(
                    &binary,
                    &settings.redis_url,
                    burst,
                    seconds,
                    receivers,
                    args,
                )
                .await?,
            );
        }
    }
    for (scenario, runs) in [(NODELAY_SCENARIO, on), (NAGLE_SCENARIO, off)] {
        let merged = Outcome::merge(runs);
        rows.extend(rows_of(
            scenario, receivers, &merged, &baseline, burst, seconds,
        ));
    }
    Ok(rows)
}

/// The rows of one switchboard run against the baseline.
fn rows_of(
    scenario: &'static str,
    receivers: Receivers,
    switchboard: &Outcome,
    baseline: &Outcome,
    burst: u64,
    seconds: u32,
) -> Vec<Row> {
    let q = |o: &Outcome, q: f64| quantile(&o.latency, q).map(|v| v as f64);
    let lost = |o: &Outcome| {
        (o.sent * CLIENTS as u64).saturating_sub(o.delivered)
            + (o.latency_sent * CLIENTS as u64).saturating_sub(o.latency.len() as u64)
    };
    let details = json!({
        "clients": CLIENTS,
        "receivers": format!("{receivers:?}"),
        "burst_messages": burst,
        "latency_rate_per_s": RATE,
        "latency_seconds": seconds,
        "switchboard": { "sent": switchboard.sent, "delivered": switchboard.delivered,
            "latency_samples": switchboard.latency.len(), "lost": lost(switchboard) },
        "baseline": { "sent": baseline.sent, "delivered": baseline.delivered,
            "latency_samples": baseline.latency.len(), "lost": lost(baseline) },
    });
    let mut note = format!(
        "{burst} Broadcasts as fast as the socket takes them, then {RATE}/s for {seconds} s; \
         baseline = raw publisher + {CLIENTS} raw subscriber connections"
    );
    if lost(switchboard) + lost(baseline) > 0 {
        note.push_str(&format!(
            "; not delivered: switchboard {}, baseline {}",
            lost(switchboard),
            lost(baseline)
        ));
    }
    vec![
        Row::new(
            "B6",
            scenario,
            "deliveries/s at B's clients",
            Unit::PerSecond,
            Some(switchboard.deliveries_per_s),
            Some(baseline.deliveries_per_s),
            Target::None,
        )
        .note(note)
        .details(details),
        Row::new(
            "B6",
            scenario,
            "latency p50 @1k/s",
            Unit::Nanos,
            q(switchboard, 0.5),
            q(baseline, 0.5),
            Target::None,
        ),
        Row::new(
            "B6",
            scenario,
            "latency p99 @1k/s",
            Unit::Nanos,
            q(switchboard, 0.99),
            q(baseline, 0.99),
            Target::None,
        ),
    ]
}

/// A server process (the chat example, B8's socketioxide peer, or B9's
/// `bare-ws`), killed when dropped.
pub(crate) struct ChatServer {
    child: Child,
    /// `host:port`.
    address: String,
}

impl ChatServer {
    pub(crate) async fn start(
        binary: &Path,
        redis_url: &str,
        extra: &[&str],
    ) -> BenchResult<ChatServer> {
        let mut args = vec!["--port", "0", "--redis", redis_url];
        args.extend_from_slice(extra);
        ChatServer::spawn(binary, &args).await
    }

    /// Starts `binary` with `args` and waits until it prints
    /// `listening on http://<address>`.
    pub(crate) async fn spawn(binary: &Path, args: &[&str]) -> BenchResult<ChatServer> {
        ChatServer::spawn_with_stdin(binary, args, Stdio::null()).await
    }

    /// [`ChatServer::spawn`], with `stdin` as the child's standard input (a
    /// pipe stays open as long as the process is ours).
    pub(crate) async fn spawn_with_stdin(
        binary: &Path,
        args: &[&str],
        stdin: Stdio,
    ) -> BenchResult<ChatServer> {
        let name = binary.file_name().map_or_else(
            || binary.display().to_string(),
            |n| n.to_string_lossy().into_owned(),
        );
        let mut child = Command::new(binary)
            .args(args)
            .env("RUST_LOG", "warn")
            // Only an explicit --redis scales out (B9 wants the in-memory manager).
            .env_remove("SWITCHBOARD_REDIS_URL")
            .stdin(stdin)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", binary.display()))?;
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| format!("{name} has no stdout"))?;
        let mut lines = BufReader::new(stdout).lines();
        let address = tokio::time::timeout(STARTUP, async {
            while let Some(line) = lines.next_line().await? {
                if let Some((_, rest)) = line.split_once("listening on http://") {
                    let address = rest.split(['/', ' ']).next().unwrap_or(rest);
                    return Ok(address.to_owned());
                }
            }
            Err::<String, std::io::Error>(std::io::ErrorKind::UnexpectedEof.into())
        })
        .await
        .map_err(|_| format!("{name} did not print its address within {STARTUP:?}"))?
        .map_err(|e| format!("{name} exited before listening: {e}"))?;
        // Keep reading so the server never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Ok(ChatServer { child, address })
    }

    /// `host:port`.
    pub(crate) fn address(&self) -> &str {
        &self.address
    }

    /// The process id, while the process runs.
    pub(crate) fn pid(&self) -> Option<u32> {
        self.child.id()
    }
}

pub(crate) type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Connects a client (skipping negotiation) and completes the handshake.
/// Nagle's algorithm is off on the client's side, as browsers and Node's
/// `ws` have it.
pub(crate) async fn connect(address: &str) -> BenchResult<Socket> {
    let url = format!("ws://{address}{HUB_PATH}");
    let (mut socket, _) = tokio_tungstenite::connect_async_with_config(url, None, true).await?;
    handshake(&mut socket).await?;
    Ok(socket)
}

/// Sends the JSON hub protocol handshake on `socket` and waits for the
/// server's answer.
pub(crate) async fn handshake<S>(
    socket: &mut tokio_tungstenite::WebSocketStream<S>,
) -> BenchResult<()>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    socket
        .send(Message::text(format!(
            "{{\"protocol\":\"json\",\"version\":1}}{RS}"
        )))
        .await?;
    loop {
        match socket.next().await {
            Some(Ok(Message::Text(text))) => {
                // The first record answers the handshake.
                match text.as_str().split(RS).find(|r| !r.is_empty()) {
                    Some("{}") => return Ok(()),
                    Some(record) => return Err(format!("handshake refused: {record}").into()),
                    None => {}
                }
            }
            Some(Ok(_)) => {}
            Some(Err(e)) => return Err(e.into()),
            None => return Err("the server closed during the handshake".into()),
        }
    }
}

/// Reads a client's messages until the socket closes, counting every
/// `message` invocation.
fn read_client<S>(mut stream: S, shared: Arc<Shared>) -> JoinHandle<()>
where
    S: futures::Stream<Item = Result<Message, tokio_tungstenite::tungstenite::Error>>
        + Unpin
        + Send
        + 'static,
{
    tokio::spawn(async move {
        while let Some(Ok(message)) = stream.next().await {
            let now = now_ns();
            let Message::Text(text) = message else {
                continue;
            };
            for record in text.as_str().split(RS) {
                if record.contains("\"target\":\"message\"") {
                    shared.received(now, read_stamp(record.as_bytes()));
                }
            }
        }
    })
}

/// Whether a JSON record is a `message` invocation.
fn find_target(record: &[u8]) -> bool {
    const TARGET: &[u8] = b"\"target\":\"message\"";
    record.windows(TARGET.len()).any(|w| w == TARGET)
}

/// A `Broadcast(text)` invocation, framed.
pub(crate) fn broadcast(text: &str) -> Message {
    Message::text(format!(
        "{{\"type\":1,\"target\":\"Broadcast\",\"arguments\":[\"{text}\"]}}{RS}"
    ))
}

async fn chat_run(
    binary: &Path,
    url: &str,
    burst: u64,
    seconds: u32,
    receivers: Receivers,
    server_args: &[&str],
) -> BenchResult<Outcome> {
    let server_args: Vec<&str> = QUEUE_ARGS.iter().chain(server_args).copied().collect();
    let server_a = ChatServer::start(binary, url, &server_args).await?;
    let server_b = ChatServer::start(binary, url, &server_args).await?;
    let shared = Arc::new(Shared::default());
    let mut readers = Vec::new();
    let on_record: http_clients::OnRecord = {
        let shared = shared.clone();
        Arc::new(move |now, record| {
            if find_target(record) {
                shared.received(now, read_stamp(record));
            }
        })
    };
    for _ in 0..CLIENTS {
        let address = &server_b.address;
        readers.push(match receivers {
            Receivers::WebSockets => {
                let (_sink, stream) = connect(address).await?.split();
                read_client(stream, shared.clone())
            }
            Receivers::ServerSentEvents => {
                http_clients::event_stream_client(address, on_record.clone(), None).await?
            }
            Receivers::LongPolling => {
                http_clients::long_polling_client(address, on_record.clone(), None).await?
            }
        });
    }
    let (mut sink, stream) = connect(&server_a.address).await?.split();
    // The sender receives its own broadcasts too; they must be read.
    readers.push(read_client(stream, Arc::new(Shared::default())));
    // Let both servers' subscriptions settle before the clock starts.
    tokio::time::sleep(Duration::from_millis(300)).await;

    let mut outcome = Outcome::default();
    let start = now_ns();
    let text = stamped(0, TEXT_LEN);
    for _ in 0..burst {
        sink.feed(broadcast(&text)).await?;
    }
    sink.flush().await?;
    outcome.sent = burst;
    let expected = burst * CLIENTS as u64;
    outcome.delivered = shared.arrivals.wait_for(expected, STALL).await;
    outcome.deliveries_per_s = super::rate(
        outcome.delivered,
        shared.arrivals.last_ns().saturating_sub(start),
    );

    // Latency phase: the pacer asks a writer task for each send.
    let before = shared.arrivals.count();
    shared.recording.store(true, Ordering::Relaxed);
    let count = (RATE * seconds) as usize;
    let (ticks, mut tick_rx) = tokio::sync::mpsc::unbounded_channel::<()>();
    let writer = tokio::spawn(async move {
        while tick_rx.recv().await.is_some() {
            if sink
                .send(broadcast(&stamped(now_ns(), TEXT_LEN)))
                .await
                .is_err()
            {
                break;
            }
        }
        sink
    });
    pace(count, Duration::from_secs(1) / RATE, move |_| {
        let _ = ticks.send(());
    })
    .await?;
    let mut sink = writer.await?;
    shared
        .arrivals
        .wait_for(before + count as u64 * CLIENTS as u64, STALL)
        .await;
    shared.recording.store(false, Ordering::Relaxed);
    outcome.latency = shared.take_samples();
    outcome.latency_sent = count as u64;

    let _ = sink.close().await;
    for reader in readers {
        reader.abort();
    }
    drop((server_a, server_b));
    Ok(outcome)
}

async fn raw_run(url: &str, burst: u64, seconds: u32) -> BenchResult<Outcome> {
    let channel = format!("{PREFIX}{}:all", hub_name("b6-raw"));
    let shared = Arc::new(Shared::default());
    let mut subscribers = Vec::new();
    let mut readers = Vec::new();
    for _ in 0..CLIENTS {
        let subscriber = raw::subscriber(url).await?;
        let mut messages = subscriber.message_rx();
        let shared = shared.clone();
        readers.push(tokio::spawn(async move {
            loop {
                match messages.recv().await {
                    Ok(message) => {
                        let now = now_ns();
                        shared.received(now, message.value.as_bytes().and_then(read_stamp));
                    }
                    Err(RecvError::Lagged(_)) => {}
                    Err(RecvError::Closed) => break,
                }
            }
        }));
        subscriber.subscribe(channel.as_str()).await?;
        raw::barrier(&subscriber).await?;
        subscribers.push(subscriber);
    }
    let publisher = raw::publisher(url).await?;
    let channel = Str::from(channel);
    // The size of what the chat server publishes is not known from here;
    // the invocation as the client sends it is close.
    let payload_len = broadcast(&stamped(0, TEXT_LEN)).len();

    let mut outcome = Outcome::default();
    let start = now_ns();
    let payload = Bytes::from(stamped(0, payload_len));
    let (sent, _) = windowed(burst as usize, 256, |_| {
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
    let sent = sent as u64;
    outcome.sent = sent;
    outcome.delivered = shared.arrivals.wait_for(sent * CLIENTS as u64, STALL).await;
    outcome.deliveries_per_s = super::rate(
        outcome.delivered,
        shared.arrivals.last_ns().saturating_sub(start),
    );

    let before = shared.arrivals.count();
    shared.recording.store(true, Ordering::Relaxed);
    let count = (RATE * seconds) as usize;
    let handle = tokio::runtime::Handle::current();
    let sender = publisher.clone();
    let paced_channel = channel.clone();
    pace(count, Duration::from_secs(1) / RATE, move |_| {
        let publisher = sender.clone();
        let channel = paced_channel.clone();
        handle.spawn(async move {
            let payload = Bytes::from(stamped(now_ns(), payload_len));
            let _ = publisher.publish::<i64, _, _>(channel, payload).await;
        });
    })
    .await?;
    shared
        .arrivals
        .wait_for(before + count as u64 * CLIENTS as u64, STALL)
        .await;
    shared.recording.store(false, Ordering::Relaxed);
    outcome.latency = shared.take_samples();
    outcome.latency_sent = count as u64;

    for reader in readers {
        reader.abort();
    }
    raw::close(&publisher).await;
    for subscriber in &subscribers {
        raw::close(subscriber).await;
    }
    Ok(outcome)
}

//! B8: the peer row. B6's chat workload on two servers of another real-time
//! stack, socketioxide (socket.io v4) with socketioxide-redis's fred driver
//! (`tests/peer`), beside the same workload on two switchboard chat example
//! processes, in the same run. The socketioxide side is the baseline column.
//!
//! Both sides: 50 WebSocket clients on server B, one sender on server A
//! broadcasting to every socket of both servers through one Redis. The
//! switchboard clients speak the JSON hub protocol exactly as B6's WebSocket
//! row (`Broadcast(text)` in, `message(from, text)` out); the socket.io
//! clients are a minimal engine.io v4 / socket.io v4 client written here
//! (`42["broadcast",text]` in, `42["message",from,text]` out, every engine.io
//! ping answered). The phases are B6's: a burst written as fast as the
//! sender's socket takes it, then 1,000 broadcasts a second with the send
//! time in the text.
//!
//! Around each phase the bench reads the CPU time (utime + stime from
//! `/proc/<pid>/stat`, 10 ms ticks) of both servers and Redis's own
//! (`INFO cpu`), and after both the servers' peak RSS (`VmHWM`). Each figure
//! is the median of three runs per side (one with `--quick`), the sides
//! interleaved so that a change in the machine's load hits both.

use std::path::Path;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures::stream::{SplitSink, SplitStream};
use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio::time::{Instant, MissedTickBehavior};
use tokio_tungstenite::tungstenite::Message;

use super::chat::{self, CLIENTS, ChatServer, RATE, RS, STALL, Shared, Socket, TEXT_LEN};
use super::report::{Row, Target, Unit};
use super::{
    BenchResult, Chat, Peer, Settings, density, hub_name, median, now_ns, pace, proc_status_bytes,
    quantile, read_stamp, shards, stamped,
};

const ID: &str = "B8";
const SCENARIO: &str = "peer row: chat, 2 servers, 50 ws clients";
/// How long a client has to connect and finish its handshake.
const CONNECT: Duration = Duration::from_secs(10);
/// How often a SignalR client sends a Ping record (the official clients'
/// default), so that the server's 30 s client timeout never fires.
const KEEPALIVE: Duration = Duration::from_secs(15);
/// The JSON hub protocol's Ping record.
const PING_RECORD: &str = "{\"type\":6}\u{1e}";
/// Let both servers' subscriptions settle before the clock starts (as B6).
const SETTLE: Duration = Duration::from_millis(300);

/// Which servers a run uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stack {
    /// The chat example, JSON hub protocol.
    Switchboard,
    /// `switchboard-peer`, socket.io v4.
    Socketioxide,
}

impl Stack {
    fn name(self) -> &'static str {
        match self {
            Stack::Switchboard => "switchboard",
            Stack::Socketioxide => "socketioxide",
        }
    }

    /// The broadcast of `text`, framed for this stack.
    fn broadcast(self, text: &str) -> Message {
        match self {
            Stack::Switchboard => chat::broadcast(text),
            Stack::Socketioxide => Message::text(format!("42[\"broadcast\",\"{text}\"]")),
        }
    }

    /// Connects a client to `address` and completes the handshake, within
    /// [`CONNECT`].
    async fn connect(self, address: &str) -> BenchResult<Socket> {
        let connecting = async {
            match self {
                Stack::Switchboard => chat::connect(address).await,
                Stack::Socketioxide => connect_socketio(address).await,
            }
        };
        tokio::time::timeout(CONNECT, connecting)
            .await
            .map_err(|_| {
                format!(
                    "a {} client did not connect to {address} within {CONNECT:?}",
                    self.name()
                )
            })?
    }

    /// Reads one text frame: calls `on_message` with every `message`
    /// delivery in it and says what else the frame asks for.
    fn scan(self, text: &str, mut on_message: impl FnMut(&str)) -> Incoming {
        match self {
            Stack::Switchboard => {
                for record in text.split(RS) {
                    if record.contains("\"target\":\"message\"") {
                        on_message(record);
                    }
                }
                Incoming::Nothing
            }
            Stack::Socketioxide => match packet(text) {
                Packet::Event(payload) => {
                    if payload.starts_with("[\"message\"") {
                        on_message(payload);
                    }
                    Incoming::Nothing
                }
                Packet::Ping(data) => Incoming::Reply(Message::text(format!("3{data}"))),
                Packet::Closed => Incoming::Closed,
                // Open, connect answers, acks, noops, binary events: not
                // part of this workload; skipped.
                _ => Incoming::Nothing,
            },
        }
    }
}

/// What a received frame asks the client to do.
#[derive(Debug)]
enum Incoming {
    Nothing,
    /// Write this (an engine.io pong).
    Reply(Message),
    /// The server closed the connection.
    Closed,
}

/// An engine.io v4 packet over WebSocket (one packet per frame), and the
/// socket.io v4 packet inside an engine.io message.
#[derive(Debug, PartialEq, Eq)]
enum Packet<'a> {
    /// `0{...}`: engine.io open.
    Open,
    /// `2...`: engine.io ping, with its data (echoed in the pong).
    Ping(&'a str),
    /// `1` (engine.io close) or `41` (socket.io disconnect).
    Closed,
    /// `40...`: socket.io connected to the default namespace.
    Connected,
    /// `44...`: socket.io connect refused.
    ConnectError,
    /// `42[...]`: a socket.io event, its JSON array.
    Event(&'a str),
    /// Anything else.
    Other,
}

/// Classifies one engine.io text frame.
fn packet(text: &str) -> Packet<'_> {
    let mut chars = text.chars();
    match (chars.next(), chars.next()) {
        (Some('0'), _) => Packet::Open,
        (Some('1'), _) => Packet::Closed,
        (Some('2'), _) => Packet::Ping(&text[1..]),
        (Some('4'), Some('0')) => Packet::Connected,
        (Some('4'), Some('1')) => Packet::Closed,
        (Some('4'), Some('2')) => Packet::Event(&text[2..]),
        (Some('4'), Some('4')) => Packet::ConnectError,
        _ => Packet::Other,
    }
}

/// Opens a socket.io v4 connection to the default namespace over a WebSocket
/// (no long-polling first): the engine.io open packet, `40`, the server's
/// `40{...}`. Pings that come meanwhile are answered; other packets skipped.
async fn connect_socketio(address: &str) -> BenchResult<Socket> {
    let url = format!("ws://{address}/socket.io/?EIO=4&transport=websocket");
    // Nagle off on the client's side, as for B6's clients.
    let (mut socket, _) = tokio_tungstenite::connect_async_with_config(url, None, true).await?;
    let mut opened = false;
    loop {
        let text = match socket.next().await {
            Some(Ok(Message::Text(text))) => text,
            Some(Ok(Message::Close(_))) | None => {
                return Err("the socket.io server closed during the handshake".into());
            }
            Some(Ok(_)) => continue,
            Some(Err(e)) => return Err(e.into()),
        };
        match packet(text.as_str()) {
            Packet::Open if !opened => {
                opened = true;
                socket.send(Message::text("40")).await?;
            }
            Packet::Ping(data) => socket.send(Message::text(format!("3{data}"))).await?,
            Packet::Connected if opened => return Ok(socket),
            Packet::ConnectError => {
                return Err(format!("socket.io connect refused: {}", text.as_str()).into());
            }
            Packet::Closed => return Err("the socket.io server closed during the handshake".into()),
            _ => {}
        }
    }
}

/// A timer for SignalR keep-alive Pings, first due one period from now.
fn keepalive() -> tokio::time::Interval {
    let mut timer = tokio::time::interval_at(Instant::now() + KEEPALIVE, KEEPALIVE);
    timer.set_missed_tick_behavior(MissedTickBehavior::Delay);
    timer
}

/// One of B's clients: counts every `message` (and its latency while
/// recording) until the socket closes, then counts itself in `closed`;
/// answers pings, sends keep-alives.
fn receive(
    stack: Stack,
    mut socket: Socket,
    shared: Arc<Shared>,
    closed: Arc<AtomicU64>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut keepalive = keepalive();
        loop {
            tokio::select! {
                message = socket.next() => {
                    let Some(Ok(message)) = message else { break };
                    let now = now_ns();
                    let Message::Text(text) = message else { continue };
                    let incoming = stack.scan(text.as_str(), |m| {
                        shared.received(now, read_stamp(m.as_bytes()));
                    });
                    match incoming {
                        Incoming::Nothing => {}
                        Incoming::Reply(reply) => {
                            if socket.send(reply).await.is_err() {
                                break;
                            }
                        }
                        Incoming::Closed => break,
                    }
                }
                _ = keepalive.tick(), if stack == Stack::Switchboard => {
                    if socket.send(Message::text(PING_RECORD)).await.is_err() {
                        break;
                    }
                }
            }
        }
        // Only a socket the server closed (or broke) gets here: the bench
        // aborts the others at the end of a run.
        closed.fetch_add(1, Ordering::Relaxed);
    })
}

/// What the sender's writer task is asked to write.
#[derive(Debug)]
enum Command {
    /// `count` copies of `frame`, fed as fast as the socket takes them and
    /// flushed once; `done` gets the time the flush completed.
    Burst {
        frame: Message,
        count: u64,
        done: oneshot::Sender<u64>,
    },
    /// One broadcast stamped with the time just before it is written.
    Stamped,
}

/// The sender on server A: a writer task owns the socket's sink, a reader
/// task counts the sender's own copies of its broadcasts (both stacks send
/// them to the sender too) and hands engine.io pings to the writer.
struct Sender {
    commands: mpsc::UnboundedSender<Command>,
    writer: JoinHandle<BenchResult<()>>,
    reader: JoinHandle<()>,
    echoes: Arc<Shared>,
}

impl Sender {
    fn start(stack: Stack, socket: Socket) -> Sender {
        let (sink, stream) = socket.split();
        let (commands, command_rx) = mpsc::unbounded_channel();
        let (replies, reply_rx) = mpsc::unbounded_channel();
        let echoes = Arc::new(Shared::default());
        let reader = tokio::spawn(read_echoes(stack, stream, echoes.clone(), replies));
        let writer = tokio::spawn(write(stack, sink, command_rx, reply_rx));
        Sender {
            commands,
            writer,
            reader,
            echoes,
        }
    }

    /// Hands a command to the writer; an error if the writer has stopped.
    fn send(&self, command: Command) -> BenchResult<()> {
        self.commands
            .send(command)
            .map_err(|_| "the sender's connection to server A failed".into())
    }

    /// Stops both tasks; the writer's error, if it failed.
    async fn close(self) -> BenchResult<()> {
        drop(self.commands);
        let written = tokio::time::timeout(Duration::from_secs(5), self.writer).await;
        self.reader.abort();
        match written {
            Ok(result) => result?,
            Err(_) => Err("the sender's writer did not stop within 5 s".into()),
        }
    }
}

async fn read_echoes(
    stack: Stack,
    mut stream: SplitStream<Socket>,
    echoes: Arc<Shared>,
    replies: mpsc::UnboundedSender<Message>,
) {
    while let Some(Ok(message)) = stream.next().await {
        let Message::Text(text) = message else {
            continue;
        };
        match stack.scan(text.as_str(), |_| echoes.arrivals.add(1)) {
            Incoming::Nothing => {}
            Incoming::Reply(reply) => {
                if replies.send(reply).is_err() {
                    break;
                }
            }
            Incoming::Closed => break,
        }
    }
}

async fn write(
    stack: Stack,
    mut sink: SplitSink<Socket, Message>,
    mut commands: mpsc::UnboundedReceiver<Command>,
    mut replies: mpsc::UnboundedReceiver<Message>,
) -> BenchResult<()> {
    let mut keepalive = keepalive();
    loop {
        tokio::select! {
            command = commands.recv() => match command {
                None => break,
                Some(Command::Burst { frame, count, done }) => {
                    for _ in 0..count {
                        sink.feed(frame.clone()).await?;
                    }
                    sink.flush().await?;
                    let _ = done.send(now_ns());
                }
                Some(Command::Stamped) => {
                    sink.send(stack.broadcast(&stamped(now_ns(), TEXT_LEN))).await?;
                }
            },
            Some(reply) = replies.recv() => sink.send(reply).await?,
            _ = keepalive.tick(), if stack == Stack::Switchboard => {
                sink.send(Message::text(PING_RECORD)).await?;
            }
        }
    }
    let _ = sink.close().await;
    Ok(())
}

/// CPU seconds used so far by server A, server B and Redis.
#[derive(Debug, Clone, Copy)]
struct Usage {
    a: f64,
    b: f64,
    redis: f64,
}

impl Usage {
    async fn read(pid_a: u32, pid_b: u32, redis_url: &str) -> BenchResult<Usage> {
        let url = redis_url.to_owned();
        let redis = tokio::task::spawn_blocking(move || shards::cpu_seconds(&url)).await??;
        Ok(Usage {
            a: density::cpu_seconds(pid_a)?,
            b: density::cpu_seconds(pid_b)?,
            redis,
        })
    }

    /// What was used between `self` and `later`.
    fn until(self, later: Usage) -> Usage {
        Usage {
            a: later.a - self.a,
            b: later.b - self.b,
            redis: later.redis - self.redis,
        }
    }
}

/// Nanoseconds of CPU per item, if there were items.
fn per(seconds: f64, items: u64) -> Option<f64> {
    (items > 0).then(|| seconds * 1e9 / items as f64)
}

/// One run's figures. CPU figures are nanoseconds per delivery (B) or per
/// broadcast (A, Redis).
#[derive(Debug, Default)]
struct Run {
    burst_sent: u64,
    burst_delivered: u64,
    burst_echoes: u64,
    deliveries_per_s: f64,
    /// `None` when the sender's connection failed before the burst was out.
    sender_burst_ns: Option<f64>,
    steady_sent: u64,
    steady_delivered: u64,
    steady_echoes: u64,
    latency_samples: usize,
    p50: Option<f64>,
    p99: Option<f64>,
    b_burst: Option<f64>,
    b_steady: Option<f64>,
    a_burst: Option<f64>,
    a_steady: Option<f64>,
    redis_burst: Option<f64>,
    redis_steady: Option<f64>,
    rss_a: Option<f64>,
    rss_b: Option<f64>,
    /// B's clients whose connection the server closed during the run.
    clients_closed: u64,
    /// Why the sender's connection to A failed, if it did.
    sender_error: Option<String>,
}

impl Run {
    /// Deliveries to B's clients that never came, burst and steady phase.
    fn lost(&self) -> (u64, u64) {
        let clients = CLIENTS as u64;
        (
            (self.burst_sent * clients).saturating_sub(self.burst_delivered),
            (self.steady_sent * clients).saturating_sub(self.steady_delivered),
        )
    }

    /// The sender's own copies that never came back from server A.
    fn echoes_lost(&self) -> u64 {
        self.burst_sent.saturating_sub(self.burst_echoes)
            + self.steady_sent.saturating_sub(self.steady_echoes)
    }

    fn to_json(&self) -> Value {
        let (burst_lost, steady_lost) = self.lost();
        json!({
            "burst_sent": self.burst_sent,
            "burst_delivered": self.burst_delivered,
            "burst_lost": burst_lost,
            "steady_sent": self.steady_sent,
            "steady_delivered": self.steady_delivered,
            "steady_lost": steady_lost,
            "sender_echoes_lost": self.echoes_lost(),
            "latency_samples": self.latency_samples,
            "deliveries_per_s": self.deliveries_per_s,
            "sender_burst_ns": self.sender_burst_ns,
            "latency_p50_ns": self.p50,
            "latency_p99_ns": self.p99,
            "b_cpu_ns_per_delivery_burst": self.b_burst,
            "b_cpu_ns_per_delivery_steady": self.b_steady,
            "a_cpu_ns_per_message_burst": self.a_burst,
            "a_cpu_ns_per_message_steady": self.a_steady,
            "redis_cpu_ns_per_message_burst": self.redis_burst,
            "redis_cpu_ns_per_message_steady": self.redis_steady,
            "peak_rss_a_bytes": self.rss_a,
            "peak_rss_b_bytes": self.rss_b,
            "clients_closed": self.clients_closed,
            "sender_error": self.sender_error,
        })
    }
}

/// Runs B8.
pub async fn run(settings: &Settings) -> BenchResult<Vec<Row>> {
    let chat = match &settings.chat {
        Chat::Binary(binary) => binary.clone(),
        Chat::Missing(why) => return Ok(vec![Row::skipped(ID, SCENARIO, why.clone())]),
    };
    let peer = match &settings.peer {
        Peer::Binary(binary) => binary.clone(),
        Peer::Missing(why) => return Ok(vec![Row::skipped(ID, SCENARIO, why.clone())]),
    };
    // Long enough phases for 10 ms CPU ticks: a 20,000-broadcast burst is
    // 1M deliveries at B, the steady phase 500,000.
    let burst = settings.pick(10_000, 20_000);
    let seconds = settings.pick(5, 10);
    let runs = settings.pick(1, 3);
    let (mut switchboard, mut socketioxide) = (Vec::new(), Vec::new());
    for round in 1..=runs {
        for (stack, binary, results) in [
            (Stack::Switchboard, &chat, &mut switchboard),
            (Stack::Socketioxide, &peer, &mut socketioxide),
        ] {
            let run = run_once(stack, binary, &settings.redis_url, burst, seconds)
                .await
                .map_err(|e| format!("{} run {round} of {runs}: {e}", stack.name()))?;
            results.push(run);
        }
    }
    Ok(rows(&switchboard, &socketioxide, burst, seconds))
}

/// The chat example's arguments in B8: queues as deep as the peer's.
const SWITCHBOARD_ARGS: &[&str] = &["--queue-capacity", "65536"];

/// Starts server A and B of `stack`.
async fn servers(stack: Stack, binary: &Path, url: &str) -> BenchResult<(ChatServer, ChatServer)> {
    match stack {
        // Each connection may queue as many frames as socketioxide's
        // per-socket buffer holds (`--socket-buffer`, 65,536 in tests/peer):
        // with the default 1,024, the sender's own copies of its burst can
        // outrun its connection on A, which then closes it as a slow
        // consumer.
        Stack::Switchboard => Ok((
            ChatServer::start(binary, url, SWITCHBOARD_ARGS).await?,
            ChatServer::start(binary, url, SWITCHBOARD_ARGS).await?,
        )),
        Stack::Socketioxide => {
            // A prefix of the run's own: these two servers hear only each other.
            let prefix = hub_name("b8-peer");
            let args = [
                "--listen",
                "127.0.0.1:0",
                "--redis",
                url,
                "--prefix",
                prefix.as_str(),
                "--stop-on-stdin-close",
            ];
            Ok((
                ChatServer::spawn_with_stdin(binary, &args, Stdio::piped()).await?,
                ChatServer::spawn_with_stdin(binary, &args, Stdio::piped()).await?,
            ))
        }
    }
}

async fn run_once(
    stack: Stack,
    binary: &Path,
    url: &str,
    burst: u64,
    seconds: u32,
) -> BenchResult<Run> {
    let (server_a, server_b) = servers(stack, binary, url).await?;
    let pid = |server: &ChatServer, which: &str| {
        server
            .pid()
            .ok_or_else(|| format!("{} server {which} is not running", stack.name()))
    };
    let (pid_a, pid_b) = (pid(&server_a, "A")?, pid(&server_b, "B")?);
    let shared = Arc::new(Shared::default());
    let closed = Arc::new(AtomicU64::new(0));
    let mut receivers = Vec::with_capacity(CLIENTS);
    for _ in 0..CLIENTS {
        let socket = stack.connect(server_b.address()).await?;
        receivers.push(receive(stack, socket, shared.clone(), closed.clone()));
    }
    let sender = Sender::start(stack, stack.connect(server_a.address()).await?);
    tokio::time::sleep(SETTLE).await;
    let clients = CLIENTS as u64;
    let mut run = Run::default();

    // Burst.
    let before = Usage::read(pid_a, pid_b, url).await?;
    let start = now_ns();
    let (done, flushed) = oneshot::channel();
    sender.send(Command::Burst {
        frame: stack.broadcast(&stamped(0, TEXT_LEN)),
        count: burst,
        done,
    })?;
    // If the sender's connection fails, the run goes on: what did not
    // arrive counts as lost, and the writer's error is reported with it.
    let flushed = flushed.await.ok();
    run.burst_sent = burst;
    run.sender_burst_ns = flushed.map(|at| at.saturating_sub(start) as f64);
    run.burst_delivered = shared.arrivals.wait_for(burst * clients, STALL).await;
    run.deliveries_per_s = super::rate(
        run.burst_delivered,
        shared.arrivals.last_ns().saturating_sub(start),
    );
    run.burst_echoes = sender.echoes.arrivals.wait_for(burst, STALL).await;
    let used = before.until(Usage::read(pid_a, pid_b, url).await?);
    run.b_burst = per(used.b, run.burst_delivered);
    run.a_burst = per(used.a, burst);
    run.redis_burst = per(used.redis, burst);

    // Steady: 1,000 broadcasts a second, each stamped as it is written.
    let count = u64::from(RATE * seconds);
    let delivered_before = shared.arrivals.count();
    let echoes_before = sender.echoes.arrivals.count();
    let before = Usage::read(pid_a, pid_b, url).await?;
    shared.recording.store(true, Ordering::Relaxed);
    let commands = sender.commands.clone();
    pace(count as usize, Duration::from_secs(1) / RATE, move |_| {
        let _ = commands.send(Command::Stamped);
    })
    .await?;
    run.steady_sent = count;
    run.steady_delivered = shared
        .arrivals
        .wait_for(delivered_before + count * clients, STALL)
        .await
        - delivered_before;
    run.steady_echoes = sender
        .echoes
        .arrivals
        .wait_for(echoes_before + count, STALL)
        .await
        - echoes_before;
    shared.recording.store(false, Ordering::Relaxed);
    let used = before.until(Usage::read(pid_a, pid_b, url).await?);
    run.b_steady = per(used.b, run.steady_delivered);
    run.a_steady = per(used.a, count);
    run.redis_steady = per(used.redis, count);
    let samples = shared.take_samples();
    run.latency_samples = samples.len();
    run.p50 = quantile(&samples, 0.5).map(|v| v as f64);
    run.p99 = quantile(&samples, 0.99).map(|v| v as f64);

    run.rss_a = proc_status_bytes(pid_a, "VmHWM").ok().map(|b| b as f64);
    run.rss_b = proc_status_bytes(pid_b, "VmHWM").ok().map(|b| b as f64);
    run.clients_closed = closed.load(Ordering::Relaxed);
    run.sender_error = sender.close().await.err().map(|e| e.to_string());
    for receiver in receivers {
        receiver.abort();
    }
    drop((server_a, server_b));
    Ok(run)
}

/// The rows: switchboard's medians against socketioxide's.
fn rows(switchboard: &[Run], socketioxide: &[Run], burst: u64, seconds: u32) -> Vec<Row> {
    let med = |runs: &[Run], figure: &dyn Fn(&Run) -> Option<f64>| {
        median(&runs.iter().filter_map(figure).collect::<Vec<_>>())
    };
    let lost = |runs: &[Run]| {
        runs.iter().fold((0, 0, 0), |(b, s, e), run| {
            let (burst, steady) = run.lost();
            (b + burst, s + steady, e + run.echoes_lost())
        })
    };
    let runs = match switchboard.len() {
        1 => "1 run per side".to_owned(),
        n => format!("median of {n} runs per side, interleaved"),
    };
    let mut note = format!(
        "{burst} broadcasts as fast as the socket takes them, then {RATE}/s for {seconds} s; \
         {runs}; baseline = socketioxide 0.18 + socketioxide-redis 0.4 (fred driver), \
         {CLIENTS} socket.io v4 clients"
    );
    for (name, runs) in [("switchboard", switchboard), ("socketioxide", socketioxide)] {
        let (burst_lost, steady_lost, echoes_lost) = lost(runs);
        if burst_lost + steady_lost + echoes_lost > 0 {
            note.push_str(&format!(
                "; {name} did not deliver {burst_lost} (burst) + {steady_lost} (1k/s) to B's \
                 clients and {echoes_lost} to the sender"
            ));
        }
        let closed: u64 = runs.iter().map(|r| r.clients_closed).sum();
        if closed > 0 {
            note.push_str(&format!(
                "; {name}'s server B closed {closed} client connections"
            ));
        }
        for (round, run) in runs.iter().enumerate() {
            if let Some(error) = &run.sender_error {
                note.push_str(&format!(
                    "; {name} run {}: the sender's connection to A failed ({error})",
                    round + 1
                ));
            }
        }
    }
    let details = json!({
        "clients": CLIENTS,
        "burst_messages": burst,
        "latency_rate_per_s": RATE,
        "latency_seconds": seconds,
        "switchboard": switchboard.iter().map(Run::to_json).collect::<Vec<_>>(),
        "socketioxide": socketioxide.iter().map(Run::to_json).collect::<Vec<_>>(),
    });
    let row = |figure: &str, unit: Unit, value: &dyn Fn(&Run) -> Option<f64>, target: Target| {
        Row::new(
            ID,
            SCENARIO,
            figure,
            unit,
            med(switchboard, value),
            med(socketioxide, value),
            target,
        )
    };
    let half = Target::RatioAtMost(0.5);
    let same = Target::RatioAtMost(1.0);
    vec![
        row(
            "B CPU per delivery, burst",
            Unit::FineNanos,
            &|r| r.b_burst,
            half,
        )
        .note(note)
        .details(details),
        row(
            "B CPU per delivery, 1k/s",
            Unit::FineNanos,
            &|r| r.b_steady,
            half,
        ),
        row(
            "A CPU per message, burst",
            Unit::FineNanos,
            &|r| r.a_burst,
            half,
        )
        .note(
            "utime+stime of the server process over the phase (10 ms ticks): A's per \
             broadcast, B's per delivery to one of its 50 clients",
        ),
        row(
            "A CPU per message, 1k/s",
            Unit::FineNanos,
            &|r| r.a_steady,
            half,
        ),
        row(
            "Redis CPU per message, burst",
            Unit::FineNanos,
            &|r| r.redis_burst,
            same,
        )
        .note("INFO cpu: used_cpu_user + used_cpu_sys over the phase, per broadcast"),
        row(
            "Redis CPU per message, 1k/s",
            Unit::FineNanos,
            &|r| r.redis_steady,
            same,
        ),
        row(
            "deliveries/s at B's clients, burst",
            Unit::PerSecond,
            &|r| Some(r.deliveries_per_s),
            Target::None,
        ),
        row("latency p50 @1k/s", Unit::Nanos, &|r| r.p50, Target::None),
        row("latency p99 @1k/s", Unit::Nanos, &|r| r.p99, same),
        row(
            "sender's burst duration",
            Unit::Nanos,
            &|r| r.sender_burst_ns,
            Target::None,
        ),
        row(
            "peak RSS of A (VmHWM)",
            Unit::Bytes,
            &|r| r.rss_a,
            Target::None,
        ),
        row(
            "peak RSS of B (VmHWM)",
            Unit::Bytes,
            &|r| r.rss_b,
            Target::None,
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn engine_io_packets_are_classified() {
        assert_eq!(
            packet("0{\"sid\":\"x\",\"pingInterval\":25000}"),
            Packet::Open
        );
        assert_eq!(packet("2"), Packet::Ping(""));
        assert_eq!(packet("2probe"), Packet::Ping("probe"));
        assert_eq!(packet("1"), Packet::Closed);
        assert_eq!(packet("40{\"sid\":\"y\"}"), Packet::Connected);
        assert_eq!(packet("41"), Packet::Closed);
        assert_eq!(packet("44{\"message\":\"no\"}"), Packet::ConnectError);
        assert_eq!(
            packet("42[\"message\",\"a\",\"b\"]"),
            Packet::Event("[\"message\",\"a\",\"b\"]")
        );
        for other in ["", "6", "3", "43[1]", "45-[\"x\"]", "é"] {
            assert_eq!(packet(other), Packet::Other, "{other:?}");
        }
    }

    #[test]
    fn only_message_events_count() {
        let count = |stack: Stack, text: &str| {
            let mut n = 0;
            let incoming = stack.scan(text, |_| n += 1);
            (n, incoming)
        };
        let (n, incoming) = count(Stack::Socketioxide, "42[\"message\",\"sid\",\"ts:1\"]");
        assert_eq!(n, 1);
        assert!(matches!(incoming, Incoming::Nothing));
        assert_eq!(count(Stack::Socketioxide, "42[\"other\",\"x\"]").0, 0);
        let (n, incoming) = count(Stack::Socketioxide, "2");
        assert_eq!(n, 0);
        assert!(matches!(incoming, Incoming::Reply(m) if m.to_text().ok() == Some("3")));
        assert!(matches!(
            count(Stack::Socketioxide, "1").1,
            Incoming::Closed
        ));
        let records = "{\"type\":1,\"target\":\"message\",\"arguments\":[\"a\",\"b\"]}\u{1e}\
                       {\"type\":6}\u{1e}\
                       {\"type\":1,\"target\":\"message\",\"arguments\":[\"a\",\"c\"]}\u{1e}";
        assert_eq!(count(Stack::Switchboard, records).0, 2);
    }

    #[test]
    fn broadcasts_are_framed_per_stack() {
        let frame = Stack::Socketioxide.broadcast("hi");
        assert_eq!(frame.to_text().ok(), Some("42[\"broadcast\",\"hi\"]"));
        let frame = Stack::Switchboard.broadcast("hi");
        assert!(
            frame
                .to_text()
                .is_ok_and(|t| t.contains("\"target\":\"Broadcast\""))
        );
    }
}

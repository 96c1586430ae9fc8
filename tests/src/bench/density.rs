//! B9: connection density. What an idle WebSocket connection costs the chat
//! example (one process, in-memory manager): resident memory, the rate at
//! which connections are accepted, and CPU time while they sit idle.
//!
//! The bench opens N WebSocket connections to `/hubs/chat` (skipping
//! negotiation), completes the JSON hub protocol handshake on each and then
//! keeps them idle: every client reads (so the server's Pings, every 15 s,
//! are consumed) and sends a Ping record every 15 s, as the official clients
//! do, so the server never times it out. Before connecting, a warm-up batch
//! is connected and kept; the server's VmRSS (from `/proc/<pid>/status`) is
//! read after a pause, again 2 s after the N connections are up, and the
//! figure is the growth divided by N, nothing subtracted. The CPU figure is
//! the server's utime + stime (`/proc/<pid>/stat`) over a 15 s idle window.
//!
//! The same is measured for clients of the chat example over Server-Sent
//! Events and long polling (B9.6, B9.7; fewer of them: each takes two held
//! connections and two short ones): the event stream, or a poll always
//! waiting, and a keep-alive connection on which a Ping is POSTed every
//! 15 s, as a browser client holds.
//!
//! The baseline is `bare-ws` (a binary of this package): a bare axum
//! WebSocket endpoint with axum's default buffers and no switchboard code,
//! which answers the handshake with `{}` and then only reads, measured the
//! same way in the same run. Two more runs: `bare-ws` with small tungstenite
//! buffers (a 2 KiB read buffer, write-through), the leanest an axum server
//! gets without framing of its own, and the chat example served by plain
//! `axum::serve` instead of `switchboard_axum::Server`.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_util::sync::CancellationToken;

use super::chat::ChatServer;
use super::http_clients::{self, OnRecord};
use super::report::{Row, Target, Unit};
use super::{BenchResult, Chat, Settings, proc_status_bytes, windowed};

/// Connections made and kept before the first reading.
const WARMUP: usize = 200;
/// Connection attempts in flight.
const WINDOW: usize = 64;
/// The pause before the first reading.
const WARMUP_SETTLE: Duration = Duration::from_secs(1);
/// The pause between the last connection and the second reading.
const SETTLE: Duration = Duration::from_secs(2);
/// The idle window over which CPU time is read.
const IDLE_WINDOW: Duration = Duration::from_secs(15);
/// How often each client sends a Ping record (the official clients' value).
const PING_EVERY: Duration = Duration::from_secs(15);
/// The hub's path.
const HUB_PATH: &str = "/hubs/chat";
/// The target: bytes of RSS per idle connection.
const TARGET_BYTES: f64 = 8.0 * 1024.0;
/// The baseline server's binary, next to the bench binary.
const BARE_BINARY: &str = "bare-ws";

/// What one server run measured.
#[derive(Debug, Clone, Default)]
struct Readings {
    connections: usize,
    rss_before: u64,
    rss_after: u64,
    connect_secs: f64,
    cpu_secs: f64,
    window_secs: f64,
    /// Clients whose socket ended before the run was over.
    lost: u64,
}

impl Readings {
    fn rss_per(&self) -> f64 {
        self.rss_after.saturating_sub(self.rss_before) as f64 / self.connections.max(1) as f64
    }

    fn connect_rate(&self) -> f64 {
        if self.connect_secs > 0.0 {
            self.connections as f64 / self.connect_secs
        } else {
            0.0
        }
    }

    /// The share of one core the server used while idle.
    fn cpu_share(&self) -> f64 {
        if self.window_secs > 0.0 {
            self.cpu_secs / self.window_secs
        } else {
            0.0
        }
    }

    /// CPU nanoseconds per idle connection per second.
    fn cpu_ns_per_conn_s(&self) -> f64 {
        self.cpu_share() * 1e9 / self.connections.max(1) as f64
    }

    fn to_json(&self) -> Value {
        json!({
            "connections": self.connections,
            "rss_before_bytes": self.rss_before,
            "rss_after_bytes": self.rss_after,
            "rss_per_connection_bytes": self.rss_per(),
            "connect_seconds": self.connect_secs,
            "connects_per_second": self.connect_rate(),
            "idle_cpu_seconds": self.cpu_secs,
            "idle_window_seconds": self.window_secs,
            "idle_cpu_ns_per_connection_per_second": self.cpu_ns_per_conn_s(),
            "lost_clients": self.lost,
        })
    }
}

/// Runs B9.
pub async fn run(settings: &Settings) -> BenchResult<Vec<Row>> {
    let count = settings.pick(2_000, 10_000);
    let scenario = format!("{}k idle ws, chat example", count / 1000);
    let chat = match &settings.chat {
        Chat::Binary(binary) => binary.clone(),
        Chat::Missing(why) => return Ok(vec![Row::skipped("B9", &scenario, why.clone())]),
    };
    let bare: PathBuf = settings.self_exe.with_file_name(BARE_BINARY);
    if !bare.is_file() {
        return Ok(vec![Row::skipped(
            "B9",
            &scenario,
            format!("{} not built", bare.display()),
        )]);
    }
    println!("  B9: chat example, switchboard's WebSocket buffers");
    let small = measure(&chat, &["--port", "0"], count).await?;
    println!("  B9: bare-ws, axum's WebSocket buffers (baseline)");
    let bare_axum = measure(&bare, &["--port", "0", "--ws-buffers", "axum"], count).await?;
    println!("  B9: bare-ws, switchboard's WebSocket buffers");
    let bare_small = measure(&bare, &["--port", "0", "--ws-buffers", "small"], count).await?;
    println!("  B9: chat example served by axum::serve");
    let axum_serve = measure(&chat, &["--port", "0", "--axum-serve"], count).await?;
    // Each HTTP-transport client takes two held connections and two short
    // ones (negotiate, the handshake POST): fewer clients, so that the
    // loopback ports last.
    let http_count = settings.pick(1_000, 2_000);
    println!("  B9: chat example, Server-Sent Events clients");
    let sse = measure_kind(&chat, &["--port", "0"], http_count, Kind::EventStream).await?;
    println!("  B9: chat example, long-polling clients");
    let long_polling = measure_kind(&chat, &["--port", "0"], http_count, Kind::LongPolling).await?;

    let lost = small.lost
        + bare_axum.lost
        + bare_small.lost
        + axum_serve.lost
        + sse.lost
        + long_polling.lost;
    let details = json!({
        "warmup_connections": WARMUP,
        "chat": small.to_json(),
        "bare_axum_buffers": bare_axum.to_json(),
        "bare_small_buffers": bare_small.to_json(),
        "chat_axum_serve": axum_serve.to_json(),
        "chat_server_sent_events": sse.to_json(),
        "chat_long_polling": long_polling.to_json(),
    });
    let lost_note = if lost > 0 {
        format!("; {lost} clients lost during the runs")
    } else {
        String::new()
    };
    Ok(vec![
        Row::new(
            "B9",
            &scenario,
            "RSS per idle ws connection",
            Unit::Bytes,
            Some(small.rss_per()),
            Some(bare_axum.rss_per()),
            Target::AtMost(TARGET_BYTES),
        )
        .note(format!(
            "server VmRSS growth / N; switchboard's framing holds no buffer while idle; \
             baseline = bare axum ws server, axum's 128 KiB buffers{lost_note}"
        ))
        .details(details),
        Row::new(
            "B9.2",
            &format!("{}k idle ws, bare with small buffers", count / 1000),
            "RSS per idle ws connection",
            Unit::Bytes,
            Some(small.rss_per()),
            Some(bare_small.rss_per()),
            Target::None,
        )
        .note("baseline = bare-ws --ws-buffers small (tungstenite, 2 KiB read buffer)"),
        Row::new(
            "B9.5",
            &format!("{}k idle ws, Server vs axum::serve", count / 1000),
            "RSS per idle ws connection",
            Unit::Bytes,
            Some(small.rss_per()),
            Some(axum_serve.rss_per()),
            Target::None,
        )
        .note("baseline = the chat example served by plain axum::serve (--axum-serve)"),
        Row::new(
            "B9.6",
            &format!("{}k idle SSE clients, chat example", http_count / 1000),
            "RSS per idle SSE client",
            Unit::Bytes,
            Some(sse.rss_per()),
            Some(small.rss_per()),
            Target::None,
        )
        .note(format!(
            "event stream + keep-alive POST connection (a Ping every {} s); baseline = an idle \
             WebSocket; idle CPU {:.0} ns per client per second",
            PING_EVERY.as_secs(),
            sse.cpu_ns_per_conn_s()
        )),
        Row::new(
            "B9.7",
            &format!(
                "{}k idle long-polling clients, chat example",
                http_count / 1000
            ),
            "RSS per idle long-polling client",
            Unit::Bytes,
            Some(long_polling.rss_per()),
            Some(small.rss_per()),
            Target::None,
        )
        .note(format!(
            "a waiting poll + keep-alive POST connection (a Ping every {} s); baseline = an \
             idle WebSocket; idle CPU {:.0} ns per client per second",
            PING_EVERY.as_secs(),
            long_polling.cpu_ns_per_conn_s()
        )),
        Row::new(
            "B9.3",
            &scenario,
            "connects (handshake done)",
            Unit::PerSecond,
            Some(small.connect_rate()),
            Some(bare_axum.connect_rate()),
            Target::None,
        )
        .note(format!("{WINDOW} connection attempts in flight")),
        Row::new(
            "B9.4",
            &scenario,
            "idle server CPU (1 core = 100 %)",
            Unit::Share,
            Some(small.cpu_share()),
            Some(bare_axum.cpu_share()),
            Target::None,
        )
        .note(format!(
            "utime+stime over {} s idle: {:.0} ns per connection per second (baseline {:.0})",
            IDLE_WINDOW.as_secs(),
            small.cpu_ns_per_conn_s(),
            bare_axum.cpu_ns_per_conn_s()
        )),
    ])
}

/// How the idle clients connect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    WebSocket,
    /// Server-Sent Events: the event stream, and a keep-alive connection
    /// for the POSTed Pings, as a browser holds.
    EventStream,
    /// Long polling: a poll always waiting, and a keep-alive connection for
    /// the POSTed Pings.
    LongPolling,
}

/// Starts `binary`, connects the warm-up batch and `count` idle clients and
/// takes the readings.
async fn measure(binary: &Path, args: &[&str], count: usize) -> BenchResult<Readings> {
    measure_kind(binary, args, count, Kind::WebSocket).await
}

/// [`measure`] with clients of `kind`.
async fn measure_kind(
    binary: &Path,
    args: &[&str],
    count: usize,
    kind: Kind,
) -> BenchResult<Readings> {
    let server = ChatServer::spawn(binary, args).await?;
    let pid = server.pid().ok_or("the server exited")?;
    let address = server.address().to_owned();
    let cancel = CancellationToken::new();
    let lost = Arc::new(AtomicU64::new(0));
    // The HTTP transports' client tasks, stopped at the end.
    let http_tasks = Arc::new(parking_lot::Mutex::new(Vec::new()));

    let connect_all = |from: usize, n: usize| {
        let (address, cancel, lost) = (address.clone(), cancel.clone(), lost.clone());
        let http_tasks = http_tasks.clone();
        windowed(n, WINDOW, move |i| {
            let (address, cancel, lost) = (address.clone(), cancel.clone(), lost.clone());
            let http_tasks = http_tasks.clone();
            async move {
                let ignore: OnRecord = Arc::new(|_, _| {});
                let opened = match kind {
                    Kind::WebSocket => connect(&address).await.map(|socket| {
                        tokio::spawn(idle_client(socket, from + i, cancel, lost));
                    }),
                    Kind::EventStream => {
                        http_clients::event_stream_client(&address, ignore, Some(PING_EVERY))
                            .await
                            .map(|task| http_tasks.lock().push(task))
                    }
                    Kind::LongPolling => {
                        http_clients::long_polling_client(&address, ignore, Some(PING_EVERY))
                            .await
                            .map(|task| http_tasks.lock().push(task))
                    }
                };
                match opened {
                    Ok(()) => true,
                    Err(e) => {
                        tracing::warn!("B9: a connection failed: {e}");
                        false
                    }
                }
            }
        })
    };

    let result = async {
        let (warm, _) = connect_all(0, WARMUP).await;
        if warm < WARMUP {
            return Err(format!("only {warm} of {WARMUP} warm-up connections opened").into());
        }
        tokio::time::sleep(WARMUP_SETTLE).await;
        let rss_before = proc_status_bytes(pid, "VmRSS")?;
        let (connected, elapsed) = connect_all(WARMUP, count).await;
        if connected < count {
            return Err(format!("only {connected} of {count} connections opened").into());
        }
        tokio::time::sleep(SETTLE).await;
        let rss_after = proc_status_bytes(pid, "VmRSS")?;
        let cpu_start = cpu_seconds(pid)?;
        let window_start = Instant::now();
        tokio::time::sleep(IDLE_WINDOW).await;
        let cpu_secs = cpu_seconds(pid)? - cpu_start;
        let window_secs = window_start.elapsed().as_secs_f64();
        // An HTTP-transport client whose task ended was dropped by the
        // server.
        let ended = http_tasks
            .lock()
            .iter()
            .filter(|task| task.is_finished())
            .count();
        lost.fetch_add(ended as u64, Ordering::Relaxed);
        Ok::<_, super::BoxError>(Readings {
            connections: count,
            rss_before,
            rss_after,
            connect_secs: elapsed.as_secs_f64(),
            cpu_secs,
            window_secs,
            lost: lost.load(Ordering::Relaxed),
        })
    }
    .await;
    cancel.cancel();
    for task in http_tasks.lock().drain(..) {
        task.abort();
    }
    // Let the clients close their sockets before the server goes.
    tokio::time::sleep(Duration::from_millis(500)).await;
    drop(server);
    result
}

type Socket = WebSocketStream<TcpStream>;

/// Connects a client with small buffers (the bench holds thousands) and
/// completes the handshake.
async fn connect(address: &str) -> BenchResult<Socket> {
    let stream = TcpStream::connect(address).await?;
    stream.set_nodelay(true)?;
    let config = WebSocketConfig::default()
        .read_buffer_size(4 * 1024)
        .write_buffer_size(0);
    let (mut socket, _) = tokio_tungstenite::client_async_with_config(
        format!("ws://{address}{HUB_PATH}"),
        stream,
        Some(config),
    )
    .await?;
    super::chat::handshake(&mut socket).await?;
    Ok(socket)
}

/// Keeps one client idle: reads whatever comes, sends a Ping record every
/// [`PING_EVERY`] (client `i` first after `i` * 7 ms, modulo the period, so
/// the pings are spread out), until `cancel`.
async fn idle_client(
    mut socket: Socket,
    i: usize,
    cancel: CancellationToken,
    lost: Arc<AtomicU64>,
) {
    let period_ms = PING_EVERY.as_millis() as u64;
    let phase = Duration::from_millis((i as u64 * 7) % period_ms);
    let mut ping = tokio::time::interval_at(tokio::time::Instant::now() + phase, PING_EVERY);
    loop {
        tokio::select! {
            () = cancel.cancelled() => return,
            _ = ping.tick() => {
                if socket.send(Message::text("{\"type\":6}\u{1e}")).await.is_err() {
                    lost.fetch_add(1, Ordering::Relaxed);
                    return;
                }
            }
            message = socket.next() => {
                if !matches!(message, Some(Ok(_))) {
                    lost.fetch_add(1, Ordering::Relaxed);
                    return;
                }
            }
        }
    }
}

/// The CPU time (user + system) process `pid` used so far, in seconds.
pub(crate) fn cpu_seconds(pid: u32) -> BenchResult<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // The fields after the command name, which is in parentheses: state is
    // field 3 of the whole line, utime 14, stime 15.
    let rest = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest)
        .ok_or("malformed /proc/<pid>/stat")?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |index: usize| -> BenchResult<u64> {
        Ok(fields
            .get(index)
            .and_then(|v| v.parse().ok())
            .ok_or("malformed /proc/<pid>/stat")?)
    };
    let total = ticks(11)? + ticks(12)?;
    Ok(total as f64 / clock_ticks_per_second())
}

/// `getconf CLK_TCK`, the unit of `/proc/<pid>/stat` times (100 on Linux).
fn clock_ticks_per_second() -> f64 {
    static TICKS: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    *TICKS.get_or_init(|| {
        std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|out| String::from_utf8(out.stdout).ok())
            .and_then(|text| text.trim().parse::<f64>().ok())
            .filter(|ticks| *ticks > 0.0)
            .unwrap_or(100.0)
    })
}

//! The switchboard chat demo: a SignalR hub at `/hubs/chat` and a small
//! browser client at `/`.
//!
//! ```text
//! cargo run --release --example chat                       # one server, in memory
//! cargo run --release --example chat -- --port 5001 --redis redis://127.0.0.1:6379
//! ```
//!
//! Start two servers on the same Redis, open one page on each, and a message
//! sent on one appears on the other. Any SignalR client can connect to the
//! hub too; its contract (methods, arguments, results) is documented on
//! [`chat_hub`](hub::chat_hub).

use std::error::Error;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::Query;
use axum::http::header;
use axum::http::request::Parts;
use axum::response::{Html, IntoResponse};
use axum::routing::get;
use switchboard_axum::{
    AuthRejection, DrainOptions, ServeOptions, Server, SignalROptions, endpoint,
};
use switchboard_core::{HubLifetimeManager, InMemoryHubLifetimeManager};
use switchboard_redis::{RedisHubLifetimeManager, RedisOptions};

use crate::hub::chat_hub;

mod hub;
#[cfg(test)]
mod tests;
use tokio::net::TcpListener;
use tracing_subscriber::EnvFilter;

const USAGE: &str = "\
switchboard chat demo

Usage: chat [--port N] [--redis URL] [--no-websockets] [--no-sse] [--no-long-polling]
            [--reconnect-window-ms N] [--queue-capacity N] [--no-nodelay]
            [--axum-serve]

Options:
  --port N      listen on 127.0.0.1:N (default 5000; 0 picks a free port)
  --redis URL   scale out through Redis: redis://host:port, rediss://...,
                or a Redis Cluster: redis-cluster://host:port?node=host2:port2
                (default: $SWITCHBOARD_REDIS_URL,
                else a single server with the in-memory manager)
  --no-websockets, --no-sse, --no-long-polling
                switch a transport off (all three are offered by default)
  --reconnect-window-ms N
                how long a stateful-reconnect connection whose socket
                dropped waits for its client (default 15000)
  --queue-capacity N
                frames each connection may have waiting to be sent before it
                counts as a slow consumer and is closed (default 1024); a
                long-polling client needs room for what arrives between polls
  --no-nodelay  leave Nagle's algorithm on for accepted sockets (TCP_NODELAY
                is set by default), for comparison
  --axum-serve  serve with plain axum::serve instead of switchboard's Server
                (no TCP_NODELAY, no header timeout), for comparison
  -h, --help    show this help

Logs go to stderr; set RUST_LOG to change the level (default info).";

/// Longest accepted demo user name.
const MAX_USER_LEN: usize = 64;

/// The command line.
#[derive(Debug)]
struct Args {
    port: u16,
    redis: Option<String>,
    /// Transports switched off with `--no-websockets` and the like.
    websockets: bool,
    server_sent_events: bool,
    long_polling: bool,
    /// `--reconnect-window-ms`: the stateful reconnect window.
    reconnect_window: Option<Duration>,
    /// Each connection's outbound queue, in frames; `None`: the default.
    queue_capacity: Option<usize>,
    /// Off with `--no-nodelay`.
    nodelay: bool,
    /// `--axum-serve`: plain `axum::serve`.
    axum_serve: bool,
}

/// Parses the arguments; `Ok(None)` when help was asked for.
fn parse_args(mut args: impl Iterator<Item = String>) -> Result<Option<Args>, String> {
    let mut port = 5000;
    let mut redis = None;
    let (mut websockets, mut server_sent_events, mut long_polling) = (true, true, true);
    let mut reconnect_window = None;
    let mut queue_capacity = None;
    let mut nodelay = true;
    let mut axum_serve = false;
    while let Some(arg) = args.next() {
        let (name, inline) = match arg.split_once('=') {
            Some((name, value)) if name.starts_with("--") => {
                (name.to_owned(), Some(value.to_owned()))
            }
            _ => (arg, None),
        };
        let mut value = |name: &str| {
            inline
                .clone()
                .or_else(|| args.next())
                .ok_or_else(|| format!("{name} needs a value"))
        };
        match name.as_str() {
            "-h" | "--help" => return Ok(None),
            "--port" => {
                let text = value("--port")?;
                port = text
                    .parse()
                    .map_err(|_| format!("--port: '{text}' is not a port number"))?;
            }
            "--redis" => redis = Some(value("--redis")?),
            "--no-websockets" => websockets = false,
            "--no-sse" => server_sent_events = false,
            "--no-long-polling" => long_polling = false,
            "--no-nodelay" => nodelay = false,
            "--axum-serve" => axum_serve = true,
            "--reconnect-window-ms" => {
                let text = value("--reconnect-window-ms")?;
                let ms: u64 = text.parse().map_err(|_| {
                    format!("--reconnect-window-ms: '{text}' is not a number of milliseconds")
                })?;
                reconnect_window = Some(Duration::from_millis(ms));
            }
            "--queue-capacity" => {
                let text = value("--queue-capacity")?;
                let frames: usize = text.parse().ok().filter(|&n| n > 0).ok_or_else(|| {
                    format!("--queue-capacity: '{text}' is not a number of frames")
                })?;
                queue_capacity = Some(frames);
            }
            other => return Err(format!("unknown argument '{other}'")),
        }
    }
    let redis = redis.or_else(|| {
        std::env::var("SWITCHBOARD_REDIS_URL")
            .ok()
            .filter(|url| !url.trim().is_empty())
    });
    Ok(Some(Args {
        port,
        redis,
        websockets,
        server_sent_events,
        long_polling,
        reconnect_window,
        queue_capacity,
        nodelay,
        axum_serve,
    }))
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = match parse_args(std::env::args().skip(1)) {
        Ok(Some(args)) => args,
        Ok(None) => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("error: {e}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        // Colours only for a terminal, not for a log file or a pipe.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    match run(args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> Result<(), Box<dyn Error>> {
    let (manager, redis): (Arc<dyn HubLifetimeManager>, _) = match &args.redis {
        Some(url) => {
            let redis =
                RedisHubLifetimeManager::connect(RedisOptions::new(url).hub("chat")).await?;
            tracing::info!(server = redis.server_name(), "scaling out through Redis");
            (Arc::new(redis.clone()), Some(redis))
        }
        None => {
            tracing::info!("single server (in-memory manager)");
            (Arc::new(InMemoryHubLifetimeManager::new()), None)
        }
    };

    let mut options = SignalROptions::default()
        .authenticator(demo_user)
        .websockets(args.websockets)
        .server_sent_events(args.server_sent_events)
        .long_polling(args.long_polling);
    if let Some(window) = args.reconnect_window {
        options = options.stateful_reconnect_window(window);
    }
    if let Some(frames) = args.queue_capacity {
        options = options.queue_capacity(frames);
    }
    let hub = chat_hub(manager.clone());
    let (chat_router, chat) = endpoint("/hubs/chat", hub.clone(), options);
    let metrics = metrics_exporter_prometheus::PrometheusBuilder::new().install_recorder()?;
    switchboard_core::metrics::describe();
    let app = Router::new()
        .route("/", get(index))
        // 200 while serving, 503 while Redis is away.
        .route("/healthz", switchboard_axum::health(manager.clone()))
        // Prometheus text format; the counters are read at each scrape.
        .route(
            "/metrics",
            get(move || {
                let (manager, hub, metrics) = (manager.clone(), hub.clone(), metrics.clone());
                async move {
                    switchboard_core::metrics::record(&manager.stats(), &hub.stats());
                    metrics.render()
                }
            }),
        )
        .route("/style.css", get(style))
        .route("/app.js", get(script))
        .merge(chat_router);

    let listener = TcpListener::bind(("127.0.0.1", args.port)).await?;
    let addr = listener.local_addr()?;
    println!("switchboard chat listening on http://{addr}");
    if args.axum_serve {
        axum::serve(listener, app)
            .with_graceful_shutdown(shutdown_signal())
            .await?;
    } else {
        // On SIGTERM or Ctrl-C: every client is told to reconnect
        // (elsewhere), then the process stops.
        let serve = ServeOptions::default().nodelay(args.nodelay);
        Server::new(listener, app, serve)
            .drain(chat, DrainOptions::default())
            .run_until(shutdown_signal())
            .await?;
    }
    tracing::info!("shutting down");
    if let Some(redis) = redis {
        redis.shutdown().await;
    }
    Ok(())
}

/// Completes on Ctrl-C, or SIGTERM on Unix.
async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::warn!("cannot listen for Ctrl-C: {e}");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut sigterm) => {
                sigterm.recv().await;
            }
            Err(e) => {
                tracing::warn!("cannot listen for SIGTERM: {e}");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = terminate => {}
    }
}

/// The demo's identity: the `user` query parameter of the request
/// (`/hubs/chat?user=alice`).
///
/// This is a demonstration, not authentication: anyone can claim any name.
/// A real application checks a cookie or a bearer token here.
fn demo_user(request: &Parts) -> Result<Option<String>, AuthRejection> {
    let Ok(Query(params)) = Query::<Vec<(String, String)>>::try_from_uri(&request.uri) else {
        return Err(AuthRejection::new("invalid query string"));
    };
    let user = params
        .into_iter()
        .find(|(key, _)| key == "user")
        .map(|(_, value)| value.trim().to_owned())
        .filter(|user| !user.is_empty());
    match user {
        Some(user) if user.chars().count() > MAX_USER_LEN => {
            Err(AuthRejection::new("the user name is too long"))
        }
        user => Ok(user),
    }
}

async fn index() -> Html<&'static str> {
    Html(include_str!("static/index.html"))
}

async fn style() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/css; charset=utf-8")],
        include_str!("static/style.css"),
    )
}

async fn script() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
        include_str!("static/app.js"),
    )
}

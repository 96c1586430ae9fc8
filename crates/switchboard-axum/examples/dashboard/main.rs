//! The switchboard live dashboard: every server pushes a sample of its
//! figures to every watching browser once a second, and the page draws
//! them as a live chart, one line per server. Watchers sign in with a
//! signed token (a JWT) that an axum middleware checks before any request
//! reaches the hub.
//!
//! ```text
//! cargo run --release --example dashboard                  # one server, in memory
//! export DASHBOARD_SECRET=$(head -c 32 /dev/urandom | base64)
//! cargo run --release --example dashboard -- --port 5001 --redis redis://127.0.0.1:6379
//! cargo run --release --example dashboard -- --port 5002 --redis redis://127.0.0.1:6379
//! ```
//!
//! With two servers on one Redis and one secret, a page opened on either
//! shows both servers' lines, and a token issued by one is good on the
//! other. The hub's contract is documented on
//! [`dashboard_hub`](hub::dashboard_hub).

use std::error::Error;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::http::header;
use axum::response::{Html, IntoResponse};
use axum::routing::{get, post};
use switchboard_axum::{DrainOptions, ServeOptions, Server, SignalROptions, endpoint};
use switchboard_core::{HubLifetimeManager, InMemoryHubLifetimeManager};
use switchboard_redis::{RedisHubLifetimeManager, RedisOptions};
use tokio::net::TcpListener;
use tracing_subscriber::EnvFilter;

use crate::auth::Keys;

mod auth;
mod hub;

const USAGE: &str = "\
switchboard live dashboard

Usage: dashboard [--port N] [--redis URL] [--interval-ms N]

Options:
  --port N          listen on 127.0.0.1:N (default 5100; 0 picks a free port)
  --redis URL       scale out through Redis (redis://, rediss://, redis-cluster://);
                    default: $SWITCHBOARD_REDIS_URL, else one server in memory
  --interval-ms N   how often each server pushes its sample (default 1000)
  -h, --help        show this help

The token secret (at least 32 bytes) is read from $DASHBOARD_SECRET; every
server of one dashboard needs the same. Without it each process makes up its
own, and its tokens are good on it alone.

Logs go to stderr; set RUST_LOG to change the level (default info).";

/// The command line.
#[derive(Debug)]
struct Args {
    port: u16,
    redis: Option<String>,
    interval: Duration,
}

/// Parses the arguments; `Ok(None)` when help was asked for.
fn parse_args(mut args: impl Iterator<Item = String>) -> Result<Option<Args>, String> {
    let mut parsed = Args {
        port: 5100,
        redis: None,
        interval: Duration::from_secs(1),
    };
    while let Some(arg) = args.next() {
        let mut value = |name: &str| args.next().ok_or_else(|| format!("{name} needs a value"));
        match arg.as_str() {
            "-h" | "--help" => return Ok(None),
            "--port" => {
                let text = value("--port")?;
                parsed.port = text
                    .parse()
                    .map_err(|_| format!("--port: '{text}' is not a port number"))?;
            }
            "--redis" => parsed.redis = Some(value("--redis")?),
            "--interval-ms" => {
                let text = value("--interval-ms")?;
                let ms: u64 =
                    text.parse().ok().filter(|ms| *ms > 0).ok_or_else(|| {
                        format!("--interval-ms: '{text}' is not a positive number")
                    })?;
                parsed.interval = Duration::from_millis(ms);
            }
            other => return Err(format!("unknown argument '{other}'")),
        }
    }
    parsed.redis = parsed.redis.or_else(|| {
        std::env::var("SWITCHBOARD_REDIS_URL")
            .ok()
            .filter(|url| !url.trim().is_empty())
    });
    Ok(Some(parsed))
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

/// The shared secret from `$DASHBOARD_SECRET`, or one made up for this
/// process alone.
fn keys() -> Result<Keys, String> {
    match std::env::var("DASHBOARD_SECRET") {
        Ok(secret) if !secret.is_empty() => Keys::new(secret.as_bytes()),
        _ => {
            tracing::warn!("DASHBOARD_SECRET is not set: tokens are good on this server only");
            let secret = format!(
                "{}{}",
                switchboard_core::random_token(),
                switchboard_core::random_token()
            );
            Keys::new(secret.as_bytes())
        }
    }
}

async fn run(args: Args) -> Result<(), Box<dyn Error>> {
    let keys = keys()?;
    let (manager, redis): (Arc<dyn HubLifetimeManager>, _) = match &args.redis {
        Some(url) => {
            let redis =
                RedisHubLifetimeManager::connect(RedisOptions::new(url).hub("dashboard")).await?;
            tracing::info!(server = redis.server_name(), "scaling out through Redis");
            (Arc::new(redis.clone()), Some(redis))
        }
        None => {
            tracing::info!("single server (in-memory manager)");
            (Arc::new(InMemoryHubLifetimeManager::new()), None)
        }
    };
    let server_name = redis.as_ref().map_or_else(
        || "local".to_owned(),
        |redis| redis.server_name().to_owned(),
    );

    let hub = hub::dashboard_hub(manager.clone());
    let sampler = tokio::spawn(hub::push_samples(
        hub.context().clone(),
        server_name,
        args.interval,
    ));
    let options = SignalROptions::default().authenticator(auth::token_user);
    let (hub_router, dashboard) = endpoint("/hubs/dashboard", hub, options);
    // Every request to the hub (negotiate, WebSocket, SSE, long polling)
    // passes the token check first.
    let hub_router = hub_router.layer(axum::middleware::from_fn_with_state(
        keys.clone(),
        auth::require_token,
    ));
    let app = Router::new()
        .route("/", get(index))
        .route("/dashboard.js", get(script))
        .route("/token", post(auth::issue_token).with_state(keys))
        .route("/healthz", switchboard_axum::health(manager))
        .merge(hub_router);

    let listener = TcpListener::bind(("127.0.0.1", args.port)).await?;
    let addr = listener.local_addr()?;
    println!("switchboard dashboard listening on http://{addr}");
    Server::new(listener, app, ServeOptions::default())
        .drain(dashboard, DrainOptions::default())
        .run_until(shutdown_signal())
        .await?;
    tracing::info!("shutting down");
    sampler.abort();
    if let Some(redis) = redis {
        redis.shutdown().await;
    }
    Ok(())
}

/// Completes on Ctrl-C, or SIGTERM on Unix.
async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
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
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = terminate => {}
    }
}

async fn index() -> Html<&'static str> {
    Html(include_str!("static/index.html"))
}

async fn script() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
        include_str!("static/dashboard.js"),
    )
}

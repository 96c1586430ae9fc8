//! `bare-ws`: the baseline server of bench B9. A bare axum WebSocket
//! endpoint at `/hubs/chat` with no switchboard code: it answers the first
//! text message (the SignalR handshake) with `{}\x1e` and then only reads,
//! so the clients of B9 connect to it exactly as to the chat example.
//!
//! ```text
//! bare-ws [--port N] [--ws-buffers axum|small]
//! ```
//!
//! `--ws-buffers axum` (the default) keeps axum's WebSocket buffers (128 KiB
//! read, 128 KiB write); `small` uses switchboard's defaults (4 KiB read,
//! write-through). Prints `bare-ws listening on http://<addr>` once bound.

use std::process::ExitCode;

use axum::Router;
use axum::extract::WebSocketUpgrade;
use axum::extract::ws::{Message, WebSocket};
use axum::response::Response;
use axum::routing::get;
use tokio::net::TcpListener;

const USAGE: &str = "usage: bare-ws [--port N] [--ws-buffers axum|small]";

fn main() -> ExitCode {
    let mut port: u16 = 0;
    let mut small = false;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match (arg.as_str(), args.next()) {
            ("--port", Some(value)) => match value.parse() {
                Ok(p) => port = p,
                Err(_) => return usage(&format!("--port: '{value}' is not a port number")),
            },
            ("--ws-buffers", Some(value)) if value == "axum" || value == "small" => {
                small = value == "small";
            }
            (other, _) => return usage(&format!("unexpected argument '{other}'")),
        }
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("bare-ws: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(serve(port, small)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bare-ws: {e}");
            ExitCode::FAILURE
        }
    }
}

fn usage(message: &str) -> ExitCode {
    eprintln!("bare-ws: {message}\n{USAGE}");
    ExitCode::from(2)
}

async fn serve(port: u16, small: bool) -> std::io::Result<()> {
    let app = Router::new().route(
        "/hubs/chat",
        get(move |upgrade: WebSocketUpgrade| accept(upgrade, small)),
    );
    let listener = TcpListener::bind(("127.0.0.1", port)).await?;
    println!("bare-ws listening on http://{}", listener.local_addr()?);
    axum::serve(listener, app).await
}

async fn accept(upgrade: WebSocketUpgrade, small: bool) -> Response {
    let upgrade = if small {
        upgrade
            .read_buffer_size(2 * 1024)
            .write_buffer_size(0)
            .max_write_buffer_size(usize::MAX)
    } else {
        upgrade
    };
    upgrade.on_upgrade(idle)
}

/// Answers the handshake, then reads until the client goes away.
async fn idle(mut socket: WebSocket) {
    let mut answered = false;
    while let Some(Ok(message)) = socket.recv().await {
        if !answered && matches!(message, Message::Text(_)) {
            answered = true;
            if socket.send(Message::text("{}\u{1e}")).await.is_err() {
                return;
            }
        }
    }
}

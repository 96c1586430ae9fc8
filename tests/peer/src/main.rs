//! `switchboard-peer`: a socket.io chat server built on socketioxide and scaled out over Redis
//! with socketioxide-redis (fred driver). Bench scenario B8 runs two of them next to two of
//! switchboard's chat example, with the same workload.
//!
//! On the default namespace, every `broadcast` event whose argument is a text is emitted as
//! `message(from, text)` to every socket of every server sharing the Redis prefix, the sender's
//! own socket included; `from` is the sender's socket id.
//!
//! ```text
//! switchboard-peer --redis redis://127.0.0.1:6379 [--listen 127.0.0.1:0] [--prefix NAME]
//!                  [--fred-capacity N] [--stream-buffer N] [--socket-buffer N]
//!                  [--stop-on-stdin-close]
//! ```
//!
//! Once it accepts connections it prints `socketioxide peer listening on http://<address>` on
//! standard output. It stops on SIGTERM or Ctrl-C and, with `--stop-on-stdin-close`, when its
//! standard input reaches end of file (so that it never outlives the process that started it).

#![forbid(unsafe_code)]

use std::error::Error;
use std::io::Read;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::Router;
use axum::routing::get;
use axum::serve::ListenerExt;
use fred::interfaces::ClientLike;
use fred::types::config::Config;
use fred::types::{Builder, RespVersion};
use socketioxide::SocketIo;
use socketioxide::adapter::Adapter;
use socketioxide::extract::{Data, SocketRef};
use socketioxide_redis::{FredAdapter, RedisAdapterConfig, RedisAdapterCtr};
use tokio::net::TcpListener;
use tokio::sync::oneshot;

const USAGE: &str = "\
switchboard-peer: a socketioxide chat server on a Redis adapter (bench scenario B8)

Usage: switchboard-peer --redis URL [--listen ADDR] [--prefix NAME]
                        [--fred-capacity N] [--stream-buffer N] [--socket-buffer N]
                        [--stop-on-stdin-close]

  --redis URL            redis://host:port of the server every peer shares (RESP3, Redis 7+)
  --listen ADDR          the address to accept connections on (default 127.0.0.1:0: any free port)
  --prefix NAME          the Redis adapter's channel prefix (default switchboard-peer); peers
                         talk to each other only when they share it
  --fred-capacity N      fred's pub/sub broadcast capacity, in messages (default 16384; fred's
                         own default of 32 drops most of a burst)
  --stream-buffer N      the adapter's buffer of received requests (default 65536; its own
                         default is 1024)
  --socket-buffer N      packets queued per socket before an emit fails (default 65536;
                         socketioxide's default is 128)
  --stop-on-stdin-close  also stop when standard input reaches end of file

Prints `socketioxide peer listening on http://<address>`, stops on SIGTERM or Ctrl-C.";

/// What the command line asked for.
#[derive(Debug)]
struct Args {
    redis: String,
    listen: SocketAddr,
    prefix: String,
    fred_capacity: usize,
    stream_buffer: usize,
    socket_buffer: usize,
    stop_on_stdin_close: bool,
}

/// Parses the arguments; `Ok(None)` when help was asked for.
fn parse_args(mut args: impl Iterator<Item = String>) -> Result<Option<Args>, String> {
    let mut redis = None;
    let mut listen = SocketAddr::from(([127, 0, 0, 1], 0));
    let mut prefix = "switchboard-peer".to_owned();
    let mut fred_capacity = 16 * 1024;
    let mut stream_buffer = 64 * 1024;
    let mut socket_buffer = 64 * 1024;
    let mut stop_on_stdin_close = false;
    while let Some(arg) = args.next() {
        let mut value = |name: &str| args.next().ok_or(format!("{name} needs a value"));
        let count = |name: &str, text: String| -> Result<usize, String> {
            match text.parse::<usize>() {
                Ok(n) if n > 0 => Ok(n),
                _ => Err(format!("{name} needs a positive number, not `{text}`")),
            }
        };
        match arg.as_str() {
            "--redis" => redis = Some(value("--redis")?),
            "--listen" => {
                let text = value("--listen")?;
                listen = text
                    .parse()
                    .map_err(|_| format!("--listen needs host:port, not `{text}`"))?;
            }
            "--prefix" => prefix = value("--prefix")?,
            "--fred-capacity" => fred_capacity = count(&arg, value(&arg)?)?,
            "--stream-buffer" => stream_buffer = count(&arg, value(&arg)?)?,
            "--socket-buffer" => socket_buffer = count(&arg, value(&arg)?)?,
            "--stop-on-stdin-close" => stop_on_stdin_close = true,
            "-h" | "--help" => return Ok(None),
            other => return Err(format!("unknown argument `{other}`")),
        }
    }
    if prefix.is_empty() || prefix.contains('#') {
        return Err("--prefix must be non-empty and contain no `#`".to_owned());
    }
    Ok(Some(Args {
        redis: redis.ok_or("--redis URL is required")?,
        listen,
        prefix,
        fred_capacity,
        stream_buffer,
        socket_buffer,
        stop_on_stdin_close,
    }))
}

/// Broadcasts that failed on this server (a socket's queue full or closed, or Redis refusing the
/// publish); printed on standard error when the server stops.
static FAILED_BROADCASTS: AtomicU64 = AtomicU64::new(0);

#[tokio::main]
async fn main() -> ExitCode {
    let args = match parse_args(std::env::args().skip(1)) {
        Ok(Some(args)) => args,
        Ok(None) => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("switchboard-peer: {e}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    match run(args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("switchboard-peer: error: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> Result<(), Box<dyn Error>> {
    let mut config = Config::from_url(&args.redis)?;
    // The fred driver publishes on its subscriber connection, which only RESP3 allows; fred does
    // not read the protocol from the URL.
    config.version = RespVersion::RESP3;
    let mut builder = Builder::from_config(config);
    builder.with_performance_config(|perf| perf.broadcast_channel_capacity = args.fred_capacity);
    let client = builder.build_subscriber_client()?;
    let adapter_config = RedisAdapterConfig::new()
        .with_prefix(args.prefix.clone())
        .with_stream_buffer(args.stream_buffer);
    let adapter = RedisAdapterCtr::new_with_fred_config(client.clone(), adapter_config).await?;

    let (layer, io) = SocketIo::builder()
        .max_buffer_size(args.socket_buffer)
        .with_adapter::<FredAdapter<_>>(adapter)
        .build_layer();
    // With a remote adapter the namespace is ready once its channels are subscribed.
    io.ns("/", on_connect)
        .await
        .map_err(|e| format!("the default namespace did not start: {e}"))?;

    let app = Router::new()
        .route("/", get(|| async { "switchboard-peer: socket.io at /socket.io/\n" }))
        .layer(layer);
    let listener = TcpListener::bind(args.listen).await?;
    let address = listener.local_addr()?;
    // Nagle's algorithm off, as switchboard's server has it: each message is written at once.
    let listener = listener.tap_io(|socket| {
        let _ = socket.set_nodelay(true);
    });
    println!("socketioxide peer listening on http://{address}");
    let stdin_closed = args.stop_on_stdin_close.then(stdin_closed);
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown_signal(stdin_closed))
        .await?;

    let failed = FAILED_BROADCASTS.load(Ordering::Relaxed);
    if failed > 0 {
        eprintln!("switchboard-peer: {failed} broadcasts failed");
    }
    let _ = tokio::time::timeout(Duration::from_secs(1), client.quit()).await;
    Ok(())
}

/// A socket joined the default namespace.
async fn on_connect<A: Adapter>(socket: SocketRef<A>) {
    socket.on("broadcast", on_broadcast::<A>);
}

/// `broadcast(text)`: `message(from, text)` to every socket of every server.
async fn on_broadcast<A: Adapter>(socket: SocketRef<A>, io: SocketIo<A>, Data(text): Data<String>) {
    let from = socket.id.to_string();
    if io.emit("message", &(from, text)).await.is_err() {
        FAILED_BROADCASTS.fetch_add(1, Ordering::Relaxed);
    }
}

/// Completes when standard input reaches end of file (or cannot be read). The read runs on a
/// thread of its own: a blocking read cannot be cancelled, and the runtime must not wait for it
/// when the server stops for another reason.
fn stdin_closed() -> oneshot::Receiver<()> {
    let (closed, receiver) = oneshot::channel();
    std::thread::spawn(move || {
        let mut stdin = std::io::stdin().lock();
        let mut discard = [0u8; 512];
        loop {
            match stdin.read(&mut discard) {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => break,
            }
        }
        let _ = closed.send(());
    });
    receiver
}

/// Completes on Ctrl-C, SIGTERM, or when `stdin_closed` does.
async fn shutdown_signal(stdin_closed: Option<oneshot::Receiver<()>>) {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut sigterm) => {
                sigterm.recv().await;
            }
            Err(e) => {
                eprintln!("switchboard-peer: cannot listen for SIGTERM: {e}");
                std::future::pending::<()>().await;
            }
        }
    };
    let stdin = async {
        match stdin_closed {
            // A dropped sender (the thread gone) counts as closed too.
            Some(closed) => {
                let _ = closed.await;
            }
            None => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        () = ctrl_c => {}
        () = terminate => {}
        () = stdin => {}
    }
}

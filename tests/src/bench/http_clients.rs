//! SignalR clients over Server-Sent Events and long polling for B6, on
//! plain TCP: negotiate, the handshake in a POST, then the event stream or
//! one poll after another. Each reports every `message` invocation it
//! reads through `on_record`.

use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;

use super::BenchResult;

/// The hub's path on the chat server.
const HUB_PATH: &str = "/hubs/chat";
/// The JSON hub protocol handshake.
const HANDSHAKE: &[u8] = b"{\"protocol\":\"json\",\"version\":1}\x1e";
/// How long a client waits for the server's answer to the handshake.
const HANDSHAKE_WAIT: Duration = Duration::from_secs(10);

/// Called for each hub record a client reads, with the time it was read.
pub type OnRecord = Arc<dyn Fn(u64, &[u8]) + Send + Sync>;

/// An HTTP response as read off the socket.
struct Response {
    status: u16,
    body: Vec<u8>,
}

/// Reads one response with a `Content-Length` (or none, for 204) from
/// `stream`, leaving the connection open for the next request.
async fn read_response(stream: &mut TcpStream, pending: &mut Vec<u8>) -> BenchResult<Response> {
    let mut chunk = [0u8; 16 * 1024];
    let head_end = loop {
        if let Some(at) = find(pending, b"\r\n\r\n") {
            break at;
        }
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Err("the server closed the connection".into());
        }
        pending.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&pending[..head_end]).into_owned();
    let status = head
        .get(9..12)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("not an HTTP response: {head}"))?;
    let length = head
        .lines()
        .filter_map(|line| line.split_once(':'))
        .find(|(name, _)| name.trim().eq_ignore_ascii_case("content-length"))
        .and_then(|(_, value)| value.trim().parse::<usize>().ok())
        .unwrap_or(0);
    let body_start = head_end + 4;
    while pending.len() < body_start + length {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Err("the server closed the connection mid-body".into());
        }
        pending.extend_from_slice(&chunk[..n]);
    }
    let body = pending[body_start..body_start + length].to_vec();
    pending.drain(..body_start + length);
    Ok(Response { status, body })
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// One request on a connection of its own.
async fn request(address: &str, method: &str, path: &str, body: &[u8]) -> BenchResult<Response> {
    let mut stream = TcpStream::connect(address).await?;
    stream.set_nodelay(true)?;
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {address}\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(body).await?;
    read_response(&mut stream, &mut Vec::new()).await
}

/// Negotiates a connection; returns its token.
async fn negotiate(address: &str) -> BenchResult<String> {
    let response = request(
        address,
        "POST",
        &format!("{HUB_PATH}/negotiate?negotiateVersion=1"),
        b"",
    )
    .await?;
    if response.status != 200 {
        return Err(format!("negotiate answered {}", response.status).into());
    }
    let body: serde_json::Value = serde_json::from_slice(&response.body)?;
    body["connectionToken"]
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| "negotiate gave no token".into())
}

/// POSTs the handshake for `token`.
async fn post_handshake(address: &str, token: &str) -> BenchResult<()> {
    let response = request(
        address,
        "POST",
        &format!("{HUB_PATH}?id={token}"),
        HANDSHAKE,
    )
    .await?;
    if response.status == 200 {
        Ok(())
    } else {
        Err(format!("the handshake POST answered {}", response.status).into())
    }
}

/// Hands every complete record in `bytes` to `on_record`.
fn records(now: u64, bytes: &[u8], on_record: &OnRecord) {
    for record in bytes.split(|b| *b == 0x1e) {
        if !record.is_empty() {
            on_record(now, record);
        }
    }
}

/// Negotiates a connection and opens a socket for its server-to-client
/// half.
async fn open(address: &str) -> BenchResult<(String, TcpStream)> {
    let token = negotiate(address).await?;
    let stream = TcpStream::connect(address).await?;
    stream.set_nodelay(true)?;
    Ok((token, stream))
}

/// A client on the event stream of a new connection at `address`; returns
/// once the server has answered its handshake, with the reading task.
pub async fn event_stream_client(
    address: &str,
    on_record: OnRecord,
    ping_every: Option<Duration>,
) -> BenchResult<JoinHandle<()>> {
    let (token, mut stream) = open(address).await?;
    let head = format!(
        "GET {HUB_PATH}?id={token} HTTP/1.1\r\nHost: {address}\r\nAccept: text/event-stream\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).await?;
    let mut pending = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    while find(&pending, b"\r\n\r\n").is_none() {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Err("the event stream closed before its headers".into());
        }
        pending.extend_from_slice(&chunk[..n]);
    }
    let head_end = find(&pending, b"\r\n\r\n").unwrap_or(0) + 4;
    pending.drain(..head_end);
    post_handshake(address, &token).await?;
    // The handshake's answer is the first data line.
    let answer = tokio::time::timeout(HANDSHAKE_WAIT, next_data(&mut stream, &mut pending))
        .await
        .map_err(|_| "no handshake answer")?
        .ok_or("the event stream closed before the handshake answer")?;
    if !answer.starts_with(b"{}\x1e") {
        return Err(format!("handshake refused: {}", String::from_utf8_lossy(&answer)).into());
    }
    let pings = pinger(address.to_owned(), token, ping_every);
    Ok(tokio::spawn(async move {
        let reading = async {
            while let Some(data) = next_data(&mut stream, &mut pending).await {
                records(super::now_ns(), &data, &on_record);
            }
        };
        tokio::select! {
            () = reading => {}
            () = pings => {}
        }
    }))
}

/// With `every`, POSTs a Ping for connection `token` at that interval, on a
/// keep-alive connection of its own, as a browser client does (the
/// official clients ping every 15 s whatever the transport); without,
/// never completes. Completes when the server stops answering.
async fn pinger(address: String, token: String, every: Option<Duration>) {
    let Some(every) = every else {
        return std::future::pending().await;
    };
    let Ok(mut stream) = TcpStream::connect(&address).await else {
        return;
    };
    let ping = b"{\"type\":6}\x1e";
    let head = format!(
        "POST {HUB_PATH}?id={token} HTTP/1.1\r\nHost: {address}\r\nContent-Length: {}\r\n\r\n",
        ping.len()
    );
    let mut pending = Vec::new();
    let mut interval = tokio::time::interval(every);
    interval.tick().await;
    loop {
        interval.tick().await;
        let sent = async {
            stream.write_all(head.as_bytes()).await?;
            stream.write_all(ping).await?;
            read_response(&mut stream, &mut pending).await
        };
        match sent.await {
            Ok(response) if response.status == 200 => {}
            _ => return,
        }
    }
}

/// The next `data:` field of the event stream; `None` when it ends. Whole
/// lines only; the chunk-size lines of the chunked body are not `data:`
/// lines and are skipped.
async fn next_data(stream: &mut TcpStream, pending: &mut Vec<u8>) -> Option<Vec<u8>> {
    let mut chunk = [0u8; 16 * 1024];
    loop {
        while let Some(end) = find(pending, b"\r\n") {
            let line: Vec<u8> = pending.drain(..end + 2).collect();
            if let Some(data) = line.strip_prefix(b"data: ") {
                return Some(data[..data.len() - 2].to_vec());
            }
        }
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => pending.extend_from_slice(&chunk[..n]),
        }
    }
}

/// A long-polling client on a new connection at `address`; returns once
/// the server has answered its handshake, with the polling task.
pub async fn long_polling_client(
    address: &str,
    on_record: OnRecord,
    ping_every: Option<Duration>,
) -> BenchResult<JoinHandle<()>> {
    let (token, mut stream) = open(address).await?;
    let poll = format!("GET {HUB_PATH}?id={token} HTTP/1.1\r\nHost: {address}\r\n\r\n");
    let mut pending = Vec::new();
    // The first poll returns at once.
    stream.write_all(poll.as_bytes()).await?;
    let first = read_response(&mut stream, &mut pending).await?;
    if first.status != 200 {
        return Err(format!("the first poll answered {}", first.status).into());
    }
    post_handshake(address, &token).await?;
    stream.write_all(poll.as_bytes()).await?;
    let answer = tokio::time::timeout(HANDSHAKE_WAIT, read_response(&mut stream, &mut pending))
        .await
        .map_err(|_| "no handshake answer")??;
    if !answer.body.starts_with(b"{}\x1e") {
        return Err(format!(
            "handshake refused: {}",
            String::from_utf8_lossy(&answer.body)
        )
        .into());
    }
    records(super::now_ns(), &answer.body[3..], &on_record);
    let pings = pinger(address.to_owned(), token, ping_every);
    Ok(tokio::spawn(async move {
        let polling = async {
            loop {
                if stream.write_all(poll.as_bytes()).await.is_err() {
                    return;
                }
                match read_response(&mut stream, &mut pending).await {
                    Ok(response) if response.status == 200 => {
                        records(super::now_ns(), &response.body, &on_record);
                    }
                    _ => return,
                }
            }
        };
        tokio::select! {
            () = polling => {}
            () = pings => {}
        }
    }))
}

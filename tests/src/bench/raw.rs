//! The baseline: plain fred clients with no switchboard code, and a minimal
//! RESP exchange for `INFO`.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use fred::clients::{Client, SubscriberClient};
use fred::interfaces::ClientLike;
use fred::types::Builder;
use fred::types::config::Config;

use super::BenchResult;

/// fred's message broadcast capacity for the baseline subscriber: the same
/// as switchboard's default (`RedisOptions::message_capacity`), so that
/// neither side loses messages the other would keep. fred's own default
/// (32) would drop most of a burst.
pub const MESSAGE_CAPACITY: usize = 16 * 1024;

fn builder(url: &str) -> BenchResult<Builder> {
    let config = Config::from_url(url)?;
    let mut builder = Builder::from_config(config);
    builder.with_performance_config(|perf| perf.broadcast_channel_capacity = MESSAGE_CAPACITY);
    Ok(builder)
}

/// A connected plain client, for PUBLISH.
pub async fn publisher(url: &str) -> BenchResult<Client> {
    let client = builder(url)?.build()?;
    client.init().await?;
    Ok(client)
}

/// A connected subscriber client (subscribe to channels yourself).
pub async fn subscriber(url: &str) -> BenchResult<SubscriberClient> {
    let client = builder(url)?.build_subscriber_client()?;
    client.init().await?;
    Ok(client)
}

/// Waits until Redis has processed everything sent before on `client`'s
/// connection (PING is answered in order, also in subscribed mode).
pub async fn barrier<C: ClientLike>(client: &C) -> BenchResult<()> {
    client.ping::<fred::types::Value>(None).await?;
    Ok(())
}

/// Closes a client, without waiting long.
pub async fn close<C: ClientLike>(client: &C) {
    let _ = tokio::time::timeout(Duration::from_secs(1), client.quit()).await;
}

/// `host:port` of a `redis://host:port[/db]` URL.
fn address(url: &str) -> BenchResult<String> {
    let rest = url
        .strip_prefix("redis://")
        .ok_or_else(|| format!("not a redis:// URL: {url}"))?;
    let rest = rest.rsplit_once('@').map_or(rest, |(_, host)| host);
    Ok(rest.split('/').next().unwrap_or(rest).to_owned())
}

/// The text of `INFO <section>`, over a connection of its own.
pub fn info(url: &str, section: &str) -> BenchResult<String> {
    let mut stream = TcpStream::connect(address(url)?)?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    stream.write_all(format!("INFO {section}\r\n").as_bytes())?;
    let mut reader = BufReader::new(stream);
    let mut header = String::new();
    reader.read_line(&mut header)?;
    let len: usize = header
        .strip_prefix('$')
        .and_then(|l| l.trim_end().parse().ok())
        .ok_or_else(|| format!("unexpected INFO reply: {header:?}"))?;
    let mut body = vec![0; len];
    reader.read_exact(&mut body)?;
    Ok(String::from_utf8_lossy(&body).into_owned())
}

/// The value of `field` in an `INFO` text.
pub fn info_field(info: &str, field: &str) -> Option<String> {
    info.lines().find_map(|line| {
        line.strip_prefix(field)
            .and_then(|rest| rest.strip_prefix(':'))
            .map(|v| v.trim().to_owned())
    })
}

/// The server's `redis_version`.
pub fn redis_version(url: &str) -> String {
    info(url, "server")
        .ok()
        .and_then(|i| info_field(&i, "redis_version"))
        .unwrap_or_else(|| "unknown".to_owned())
}

/// The server's `used_memory` in bytes.
pub fn used_memory(url: &str) -> BenchResult<u64> {
    let info = info(url, "memory")?;
    info_field(&info, "used_memory")
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| "INFO memory has no used_memory".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_come_from_urls() {
        assert_eq!(address("redis://127.0.0.1:7000").unwrap(), "127.0.0.1:7000");
        assert_eq!(address("redis://u:p@host:1/0").unwrap(), "host:1");
        assert!(address("http://x").is_err());
        let info = "# Memory\r\nused_memory:1024\r\nused_memory_human:1K\r\n";
        assert_eq!(info_field(info, "used_memory").as_deref(), Some("1024"));
    }
}

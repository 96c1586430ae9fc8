//! A background job that pushes to the chat example's clients without
//! hosting any: an [`Emitter`] on the chat servers' Redis sends
//! `message("notify", text)` to everyone once a second.
//!
//! ```text
//! cargo run --release --example chat -- --redis redis://127.0.0.1:6379
//! cargo run --example notify -p switchboard-redis -- --redis redis://127.0.0.1:6379 [--count N]
//! ```
//!
//! Every chat page open on any of the servers shows the notifications.

use std::process::ExitCode;
use std::time::Duration;

use switchboard_redis::{Emitter, RedisOptions};

const USAGE: &str = "usage: notify [--redis URL] [--count N] [--group GROUP]
  --redis URL    the chat servers' Redis (default: $SWITCHBOARD_REDIS_URL)
  --count N      stop after N notifications (default: never)
  --group GROUP  send to one group instead of everyone";

#[tokio::main]
async fn main() -> ExitCode {
    let mut redis = std::env::var("SWITCHBOARD_REDIS_URL").ok();
    let mut count: Option<u64> = None;
    let mut group: Option<String> = None;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let value = args.next();
        match (arg.as_str(), value) {
            ("--redis", Some(url)) => redis = Some(url),
            ("--count", Some(n)) => match n.parse() {
                Ok(n) => count = Some(n),
                Err(_) => return usage(&format!("--count: '{n}' is not a number")),
            },
            ("--group", Some(name)) => group = Some(name),
            _ => return usage(&format!("unexpected argument '{arg}'")),
        }
    }
    let Some(redis) = redis else {
        return usage("no Redis URL: pass --redis or set SWITCHBOARD_REDIS_URL");
    };
    // The chat example's hub.
    let emitter = match Emitter::connect(RedisOptions::new(redis).hub("chat")).await {
        Ok(emitter) => emitter,
        Err(e) => {
            eprintln!("notify: cannot connect: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut sent = 0u64;
    while count.is_none_or(|count| sent < count) {
        tick.tick().await;
        sent += 1;
        let text = format!("notification {sent} from a background job");
        let result = match &group {
            Some(group) => {
                emitter
                    .group(group)
                    .send("message", ("notify", &text))
                    .await
            }
            None => emitter.all().send("message", ("notify", &text)).await,
        };
        match result {
            Ok(()) => println!("sent: {text}"),
            // Redis away: the next tick tries again.
            Err(e) => eprintln!("notify: not sent: {e}"),
        }
    }
    emitter.shutdown().await;
    ExitCode::SUCCESS
}

fn usage(problem: &str) -> ExitCode {
    eprintln!("notify: {problem}\n{USAGE}");
    ExitCode::from(2)
}

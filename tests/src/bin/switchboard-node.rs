//! One switchboard server on the Redis backplane, driven line by line on
//! stdin, reporting what its connections receive on stdout. Two of these
//! processes on one Redis show the backplane working across processes.
//!
//! ```text
//! switchboard-node <redis-url> <hub> [--emitter]
//! ```
//!
//! With `--emitter` it connects as an emitter (`switchboard_redis::Emitter`):
//! it sends, and `connect` is refused.
//!
//! Commands (one per line):
//!
//! | command | effect | prints |
//! |---|---|---|
//! | `connect NAME [USER]` | a new local connection | `connected NAME ID` |
//! | `join NAME GROUP` | add a local connection to a group | `ok` |
//! | `add ID GROUP` | add any connection (by id, on any server) to a group | `ok` or `error ...` |
//! | `all TEXT` / `group GROUP TEXT` / `user USER TEXT` / `conn ID TEXT` | send `message(TEXT)` | `ok` or `error ...` |
//! | `quit` | stop | |
//!
//! Every message a local connection receives prints `recv NAME TEXT`.

#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::sync::Arc;

use bytes::BytesMut;
use switchboard_core::protocol::{HubMessage, Protocol};
use switchboard_core::{
    Connection, ConnectionOptions, HubContext, HubLifetimeManager, SerializedMessage,
};
use switchboard_redis::{RedisHubLifetimeManager, RedisOptions};
use tokio::io::{AsyncBufReadExt, BufReader};

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let (Some(url), Some(hub)) = (args.next(), args.next()) else {
        eprintln!("usage: switchboard-node <redis-url> <hub> [--emitter]");
        std::process::exit(2);
    };
    let emitter = args.next().as_deref() == Some("--emitter");
    let options = RedisOptions::new(url).hub(hub).emitter(emitter);
    let manager = match RedisHubLifetimeManager::connect(options).await {
        Ok(manager) => manager,
        Err(e) => {
            eprintln!("cannot start: {e}");
            std::process::exit(1);
        }
    };
    let manager: Arc<dyn HubLifetimeManager> = Arc::new(manager);
    let context = HubContext::new(manager.clone());
    let mut names: HashMap<String, Connection> = HashMap::new();
    println!("ready");

    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        let mut words = line.splitn(3, ' ');
        let command = words.next().unwrap_or_default();
        let first = words.next().unwrap_or_default().to_owned();
        let rest = words.next().unwrap_or_default().to_owned();
        let result = match command {
            "connect" => {
                let mut options = ConnectionOptions::new(Protocol::Json);
                if !rest.is_empty() {
                    options = options.user(rest.clone());
                }
                let (connection, mut outbound) = Connection::new(options);
                if let Err(e) = manager.on_connected(connection.clone()).await {
                    println!("error {e}");
                    continue;
                }
                println!("connected {first} {}", connection.id());
                names.insert(first.clone(), connection);
                let name = first.clone();
                tokio::spawn(async move {
                    while let Some(frame) = outbound.recv().await {
                        let mut buf = BytesMut::from(&frame[..]);
                        if let Ok(Some(HubMessage::Invocation(invocation))) =
                            Protocol::Json.parse_message(&mut buf, usize::MAX)
                        {
                            let text: String = invocation
                                .arguments
                                .first()
                                .and_then(|a| a.deserialize().ok())
                                .unwrap_or_default();
                            println!("recv {name} {text}");
                        }
                    }
                });
                continue;
            }
            "join" => match names.get(&first) {
                Some(connection) => manager.add_to_group(connection.id(), &rest).await,
                None => {
                    println!("error no connection named {first}");
                    continue;
                }
            },
            "add" => context.add_to_group(&first, &rest).await,
            "all" => {
                let text = format!("{first} {rest}").trim().to_owned();
                context.all().send("message", (text,)).await
            }
            "group" => context.group(first).send("message", (rest,)).await,
            "user" => context.user(first).send("message", (rest,)).await,
            "conn" => {
                let message =
                    SerializedMessage::invocation(&Protocol::ALL, "message", &(rest,)).unwrap();
                manager.send_connection(&first, &message).await
            }
            "quit" => break,
            other => {
                println!("error unknown command {other}");
                continue;
            }
        };
        match result {
            Ok(()) => println!("ok"),
            Err(e) => println!("error {e}"),
        }
    }
}

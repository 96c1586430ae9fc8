//! B10: presence queries across three servers on one Redis.
//!
//! A group of 1,000 members spread evenly over three servers, and a user
//! with one connection on each. A fourth process asks, one query at a time:
//! `group_members(room, 1000)` and `user_connections(ada, 10)`. The
//! baseline is what a Redis registry would answer the same question with:
//! SMEMBERS of a set holding the same ids (one round trip, without the
//! lease checks a registry also needs). Presence adds nothing to connect,
//! join or leave; a registry would add a write to each (and lease renewals).

use std::sync::Arc;
use std::time::Instant;

use fred::interfaces::ClientLike;
use fred::types::{CustomCommand, Value};
use serde_json::json;
use switchboard_core::protocol::Protocol;
use switchboard_core::{Connection, ConnectionOptions, ConnectionReceiver, HubLifetimeManager};

use super::report::{Row, Target, Unit};
use super::{BenchResult, Settings, hub_name, manager, quantile, raw};

/// Members of the group.
const MEMBERS: usize = 1_000;
/// Servers holding them.
const SERVERS: usize = 3;

/// Runs B10.
pub async fn run(settings: &Settings) -> BenchResult<Vec<Row>> {
    let queries = settings.pick(50, 300);
    let url = &settings.redis_url;
    let hub = hub_name("b10");
    let mut servers = Vec::new();
    for _ in 0..SERVERS {
        servers.push(Arc::new(manager(url, &hub).await?));
    }
    let asker = manager(url, &hub).await?;
    // Held so the connections stay open.
    let mut receivers: Vec<ConnectionReceiver> = Vec::new();
    let mut member_ids = Vec::new();
    for i in 0..MEMBERS {
        let server = &servers[i % SERVERS];
        let (connection, receiver) = Connection::new(ConnectionOptions::new(Protocol::Json));
        server.on_connected(connection.clone()).await?;
        server.add_to_group(connection.id(), "room").await?;
        member_ids.push(connection.id().to_string());
        receivers.push(receiver);
    }
    let mut user_ids = Vec::new();
    for server in &servers {
        let (connection, receiver) =
            Connection::new(ConnectionOptions::new(Protocol::Json).user("ada"));
        server.on_connected(connection.clone()).await?;
        user_ids.push(connection.id().to_string());
        receivers.push(receiver);
    }

    let mut group = Vec::with_capacity(queries);
    let mut user = Vec::with_capacity(queries);
    for _ in 0..queries {
        let started = Instant::now();
        let presence = asker.group_members("room", MEMBERS).await?;
        group.push(elapsed_ns(started));
        if presence.count != MEMBERS as u64 || !presence.is_complete() {
            return Err(format!("group presence answered {presence:?}").into());
        }
        let started = Instant::now();
        let presence = asker.user_connections("ada", 10).await?;
        user.push(elapsed_ns(started));
        if presence.count != SERVERS as u64 {
            return Err(format!("user presence answered {presence:?}").into());
        }
    }

    // The registry baseline: the same ids in Redis sets.
    let client = raw::publisher(url).await?;
    let group_key = format!("bench:{hub}:registry:group");
    let user_key = format!("bench:{hub}:registry:user");
    let command = |name: &'static str| CustomCommand::new_static(name, None, false);
    let with_key = |key: &str, ids: Vec<String>| {
        let mut args = vec![key.to_owned()];
        args.extend(ids);
        args
    };
    client
        .custom::<Value, _>(command("SADD"), with_key(&group_key, member_ids))
        .await?;
    client
        .custom::<Value, _>(command("SADD"), with_key(&user_key, user_ids))
        .await?;
    let mut group_base = Vec::with_capacity(queries);
    let mut user_base = Vec::with_capacity(queries);
    for _ in 0..queries {
        let started = Instant::now();
        let ids: Vec<String> = client
            .custom(command("SMEMBERS"), vec![group_key.clone()])
            .await?;
        group_base.push(elapsed_ns(started));
        if ids.len() != MEMBERS {
            return Err("SMEMBERS lost members".into());
        }
        let started = Instant::now();
        let _: Vec<String> = client
            .custom(command("SMEMBERS"), vec![user_key.clone()])
            .await?;
        user_base.push(elapsed_ns(started));
    }
    client
        .custom::<Value, _>(command("DEL"), vec![group_key, user_key])
        .await?;
    raw::close(&client).await;
    for server in &servers {
        server.shutdown().await;
    }
    asker.shutdown().await;
    drop(receivers);

    for samples in [&mut group, &mut user, &mut group_base, &mut user_base] {
        samples.sort_unstable();
    }
    let q = |v: &[u64], at: f64| quantile(v, at).map(|n| n as f64);
    let details = json!({
        "queries": queries,
        "members": MEMBERS,
        "servers": SERVERS,
        "group_p50_ns": q(&group, 0.5), "group_p99_ns": q(&group, 0.99),
        "user_p50_ns": q(&user, 0.5), "user_p99_ns": q(&user, 0.99),
        "smembers_1000_p50_ns": q(&group_base, 0.5), "smembers_3_p50_ns": q(&user_base, 0.5),
    });
    let scenario = "presence across 3 servers";
    Ok(vec![
        Row::new(
            "B10",
            scenario,
            "group of 1,000: query p50",
            Unit::Nanos,
            q(&group, 0.5),
            q(&group_base, 0.5),
            Target::None,
        )
        .note(format!(
            "{queries} queries one at a time; baseline = SMEMBERS of a 1,000-id set"
        ))
        .details(details),
        Row::new(
            "B10",
            scenario,
            "group of 1,000: query p99",
            Unit::Nanos,
            q(&group, 0.99),
            q(&group_base, 0.99),
            Target::None,
        ),
        Row::new(
            "B10",
            scenario,
            "user on 3 servers: query p50",
            Unit::Nanos,
            q(&user, 0.5),
            q(&user_base, 0.5),
            Target::None,
        )
        .note("baseline = SMEMBERS of a 3-id set"),
    ])
}

fn elapsed_ns(started: Instant) -> u64 {
    u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX)
}

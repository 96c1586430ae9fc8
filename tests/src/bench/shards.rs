//! B7: the B1 workload over many groups, on one Redis node and on a
//! 3-master Redis Cluster, in the same run.
//!
//! Two managers A and B on the same URL. B holds [`GROUPS`] connections, one
//! in each of [`GROUPS`] groups, each drained by a task of its own and
//! counted per batch, as in B1. A keeps [`WINDOW`] `send_group` calls in
//! flight, round-robin over the groups, for a fixed time. The figures are
//! deliveries per second at B (first send -> last delivery) and the CPU time
//! every Redis process involved spent in that window (`INFO cpu`:
//! `used_cpu_sys + used_cpu_user`, read before and after it), per million
//! messages sent.
//!
//! On the cluster every group channel is a sharded channel (SPUBLISH /
//! SSUBSCRIBE) served by the shard that owns its slot, so the pub/sub work
//! divides over the shards as the channels do. A second window on the
//! cluster does the same with `send_all`: its one `all` channel lives on one
//! slot, so one shard carries every broadcast.
//!
//! The single node is the baseline: the rows put the cluster's value in the
//! switchboard column and the single node's in the baseline column, so that
//! the ratio reads cluster / 1 node. Where each round's channels live is read
//! from every node's `PUBSUB SHARDCHANNELS`.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use fred::interfaces::PubsubInterface;
use serde_json::{Value, json};
use switchboard_core::protocol::Protocol;
use switchboard_core::{Connection, ConnectionOptions, HubLifetimeManager, SerializedMessage};
use switchboard_redis::RedisHubLifetimeManager;
use tokio::task::JoinSet;

use super::report::{Row, Target, Unit};
use super::{
    Arrivals, BenchResult, Cluster, PREFIX, Settings, envelope_len, filler, hub_name, manager,
    median, now_ns, rate, raw, saturate, windowed,
};

/// Groups on server B, one connection in each.
pub const GROUPS: usize = 100;
/// Sends in flight at once, as in B1.
pub const WINDOW: usize = super::throughput::WINDOW;
/// The JSON text argument's length, as in B1.
const TEXT_LEN: usize = super::throughput::TEXT_LEN;
/// The outbound queue capacity of B's connections: as many frames as B's
/// subscriber holds for it ([`raw::MESSAGE_CAPACITY`]). In the `send_all`
/// window every broadcast reaches all [`GROUPS`] connections, and their 100
/// drain tasks can fall behind the dispatch on a busy machine; B7 measures
/// throughput, not the slow-consumer policy, so the default 1,024 would
/// only end a run early.
const QUEUE_CAPACITY: usize = raw::MESSAGE_CAPACITY;
/// Connections joining their groups at once while B is set up.
const JOIN_WINDOW: usize = 16;
/// How long the receiving side may stay silent before the rest counts as lost.
const STALL: Duration = Duration::from_secs(3);
/// The scenario's name in the table.
const SCENARIO: &str = "send_group over 100 groups";

/// What one measured window saw.
#[derive(Debug, Clone)]
struct Phase {
    /// Sends that succeeded.
    sent: u64,
    /// Sends that failed.
    failed_sends: u64,
    /// Deliveries due: `sent` x the connections each message reaches.
    expected: u64,
    /// Frames B's connections received.
    delivered: u64,
    /// Messages B's Redis subscriber dropped before B read them.
    lagged: u64,
    /// Deliveries per second at B, from the first send to the last delivery.
    deliveries_per_s: f64,
    /// The CPU seconds each Redis process spent in the window, in node order.
    cpu_s: Vec<f64>,
}

impl Phase {
    /// Each node's Redis CPU seconds per million messages sent.
    fn cpu_per_million(&self) -> Vec<f64> {
        self.cpu_s
            .iter()
            .map(|cpu| per_million(*cpu, self.sent))
            .collect()
    }

    /// The index of the node that spent the most CPU.
    fn busiest(&self) -> Option<usize> {
        (0..self.cpu_s.len()).max_by(|&x, &y| self.cpu_s[x].total_cmp(&self.cpu_s[y]))
    }

    /// Node `index`'s share of the CPU all nodes spent (NaN if none was).
    fn share(&self, index: usize) -> f64 {
        let total: f64 = self.cpu_s.iter().sum();
        match self.cpu_s.get(index) {
            Some(cpu) if total > 0.0 => cpu / total,
            _ => f64::NAN,
        }
    }

    /// The busiest node's Redis CPU seconds per million messages.
    fn busiest_per_million(&self) -> f64 {
        self.busiest()
            .map_or(f64::NAN, |i| per_million(self.cpu_s[i], self.sent))
    }

    /// All nodes' Redis CPU seconds together per million messages.
    fn total_per_million(&self) -> f64 {
        per_million(self.cpu_s.iter().sum(), self.sent)
    }

    /// Deliveries that never came.
    fn lost(&self) -> u64 {
        self.expected.saturating_sub(self.delivered)
    }

    fn to_json(&self) -> Value {
        json!({
            "sent": self.sent,
            "failed_sends": self.failed_sends,
            "expected_deliveries": self.expected,
            "delivered": self.delivered,
            "lagged": self.lagged,
            "deliveries_per_s": self.deliveries_per_s,
            "redis_cpu_s": self.cpu_s,
            "redis_cpu_s_per_million_messages": self.cpu_per_million(),
            "busiest_node": self.busiest(),
            "busiest_share": self.busiest().map(|i| self.share(i)),
        })
    }
}

/// One round on one deployment (single node or cluster).
#[derive(Debug, Clone)]
struct Round {
    /// The `send_group` window.
    groups: Phase,
    /// The `send_all` window (cluster only).
    broadcast: Option<Phase>,
    /// How many of the round's group channels each node serves (cluster only).
    group_channels: Vec<usize>,
    /// The node that serves the round's `all` channel (cluster only).
    all_node: Option<usize>,
}

impl Round {
    /// The broadcast window and the node that serves `all` in it (the
    /// busiest node if that one is unknown).
    fn all_shard(&self) -> Option<(&Phase, usize)> {
        let phase = self.broadcast.as_ref()?;
        Some((phase, self.all_node.or_else(|| phase.busiest())?))
    }

    /// The share of the broadcast window's Redis CPU spent by the node that
    /// serves `all`.
    fn all_share(&self) -> f64 {
        self.all_shard()
            .map_or(f64::NAN, |(phase, node)| phase.share(node))
    }

    /// The Redis CPU seconds per million broadcasts of the node that serves
    /// `all`.
    fn all_cpu_per_million(&self) -> f64 {
        self.all_shard().map_or(f64::NAN, |(phase, node)| {
            per_million(phase.cpu_s[node], phase.sent)
        })
    }

    /// The Redis CPU seconds per million broadcasts of the other nodes, on
    /// average.
    fn other_cpu_per_million(&self) -> f64 {
        self.all_shard().map_or(f64::NAN, |(phase, node)| {
            let others: Vec<f64> = (0..phase.cpu_s.len())
                .filter(|&i| i != node)
                .map(|i| per_million(phase.cpu_s[i], phase.sent))
                .collect();
            others.iter().sum::<f64>() / others.len() as f64
        })
    }

    fn to_json(&self) -> Value {
        json!({
            "send_group": self.groups.to_json(),
            "send_all": self.broadcast.as_ref().map(Phase::to_json),
            "group_channels_per_node": self.group_channels,
            "all_channel_node": self.all_node,
        })
    }
}

/// Runs B7.
pub async fn run(settings: &Settings) -> BenchResult<Vec<Row>> {
    let cluster_url = match &settings.cluster {
        Cluster::Url(url) => url.clone(),
        Cluster::Missing(why) => return Ok(vec![Row::skipped("B7", SCENARIO, why.clone())]),
    };
    let cluster_nodes = cluster_nodes(&cluster_url)?;
    let single_nodes = vec![settings.redis_url.clone()];
    let duration = Duration::from_secs(settings.pick(2, 4));
    let rounds = settings.pick(1, 3);
    let message =
        SerializedMessage::invocation(&Protocol::ALL, "message", &(filler(TEXT_LEN).as_str(),))?;
    let payload_len = envelope_len(&message);

    let mut single = Vec::new();
    let mut cluster = Vec::new();
    for _ in 0..rounds {
        single.push(
            round(
                &settings.redis_url,
                &single_nodes,
                false,
                &message,
                duration,
            )
            .await?,
        );
        cluster.push(round(&cluster_url, &cluster_nodes, true, &message, duration).await?);
    }

    let med = |rounds: &[Round], f: &dyn Fn(&Round) -> f64| {
        median(&rounds.iter().map(f).collect::<Vec<_>>())
    };
    let per_node = |f: &dyn Fn(&Round) -> Option<Vec<f64>>| -> Vec<Option<f64>> {
        (0..cluster_nodes.len())
            .map(|i| {
                med(&cluster, &|r| {
                    f(r).and_then(|v| v.get(i).copied()).unwrap_or(f64::NAN)
                })
            })
            .collect()
    };
    let single_rate = med(&single, &|r| r.groups.deliveries_per_s);
    let cluster_rate = med(&cluster, &|r| r.groups.deliveries_per_s);
    let broadcast_rate = med(&cluster, &|r| {
        r.broadcast
            .as_ref()
            .map_or(f64::NAN, |p| p.deliveries_per_s)
    });
    let single_cpu = med(&single, &|r| r.groups.total_per_million());
    let shard_cpu = per_node(&|r| Some(r.groups.cpu_per_million()));
    let busiest_cpu = med(&cluster, &|r| r.groups.busiest_per_million());
    let cluster_cpu = med(&cluster, &|r| r.groups.total_per_million());
    let busiest_share = med(&cluster, &|r| {
        r.groups.busiest().map_or(f64::NAN, |i| r.groups.share(i))
    });
    let all_cpu = med(&cluster, &Round::all_cpu_per_million);
    let other_cpu = med(&cluster, &Round::other_cpu_per_million);
    let all_share = med(&cluster, &Round::all_share);
    let all_known = cluster.iter().all(|r| r.all_node.is_some());

    let seconds = |v: Option<f64>| v.map_or_else(|| "?".to_owned(), |v| format!("{v:.2}"));
    let percent =
        |v: Option<f64>| v.map_or_else(|| "?".to_owned(), |v| format!("{:.0} %", v * 100.0));
    let list = |values: &[Option<f64>]| {
        values
            .iter()
            .map(|v| seconds(*v))
            .collect::<Vec<_>>()
            .join(" / ")
    };
    let channels: Vec<String> = cluster
        .iter()
        .map(|r| {
            r.group_channels
                .iter()
                .map(usize::to_string)
                .collect::<Vec<_>>()
                .join("/")
        })
        .collect();
    let lost = |rounds: &[Round], f: fn(&Round) -> Option<&Phase>| -> (u64, u64) {
        rounds
            .iter()
            .filter_map(f)
            .fold((0, 0), |(lost, failed), p| {
                (lost + p.lost(), failed + p.failed_sends)
            })
    };
    let losses = [
        ("1 node", lost(&single, |r| Some(&r.groups))),
        ("cluster", lost(&cluster, |r| Some(&r.groups))),
        ("cluster send_all", lost(&cluster, |r| r.broadcast.as_ref())),
    ];
    let loss_note: String = losses
        .iter()
        .filter(|(_, (lost, failed))| lost + failed > 0)
        .map(|(what, (lost, failed))| {
            format!("; {what}: {lost} deliveries not received, {failed} sends failed")
        })
        .collect();

    let details = json!({
        "rounds": rounds,
        "seconds_per_round": duration.as_secs(),
        "window": WINDOW,
        "groups": GROUPS,
        "connections_on_b": GROUPS,
        "envelope_bytes": payload_len,
        "single_node": { "url": settings.redis_url, "rounds": single.iter().map(Round::to_json).collect::<Vec<_>>() },
        "cluster": {
            "url": cluster_url,
            "nodes": cluster_nodes,
            "rounds": cluster.iter().map(Round::to_json).collect::<Vec<_>>(),
        },
        "medians": {
            "deliveries_per_s": { "single_node": single_rate, "cluster": cluster_rate,
                                  "cluster_send_all": broadcast_rate },
            "redis_cpu_s_per_million_messages": {
                "single_node": single_cpu,
                "cluster_per_node": shard_cpu,
                "cluster_busiest_node": busiest_cpu,
                "cluster_total": cluster_cpu,
                "cluster_send_all_all_node": all_cpu,
                "cluster_send_all_other_nodes_average": other_cpu,
            },
            "cluster_busiest_share": busiest_share,
            "cluster_send_all_share_of_all_node": all_share,
        },
    });

    Ok(vec![
        Row::new(
            "B7",
            SCENARIO,
            "deliveries/s at B, 1 node",
            Unit::PerSecond,
            single_rate,
            None,
            Target::None,
        )
        .note(format!(
            "{WINDOW} sends in flight round-robin over {GROUPS} groups, one connection per group \
             on B, envelope {payload_len} B, median of {rounds} x {} s{loss_note}",
            duration.as_secs()
        ))
        .details(details),
        Row::new(
            "B7",
            SCENARIO,
            "deliveries/s at B, 3-master cluster (base: 1 node)",
            Unit::PerSecond,
            cluster_rate,
            single_rate,
            Target::None,
        )
        .note(
            "ratio = cluster / 1 node; the 3 shards, both managers and the bench share the \
             same cores, so this cannot show scale-out",
        ),
        Row::new(
            "B7",
            SCENARIO,
            "Redis CPU per 1M msgs, busiest shard (base: 1 node)",
            Unit::Seconds,
            busiest_cpu,
            single_cpu,
            Target::None,
        )
        .note(format!(
            "CPU s per 1M messages: 1 node {}; shards {} (cluster total {}); busiest shard's \
             share of the cluster's Redis CPU {}; group channels per shard, per round: {}",
            seconds(single_cpu),
            list(&shard_cpu),
            seconds(cluster_cpu),
            percent(busiest_share),
            channels.join(", "),
        ))
        .details(json!({
            "single_node": single_cpu,
            "cluster_per_node": shard_cpu,
            "cluster_busiest_node": busiest_cpu,
            "cluster_total": cluster_cpu,
            "cluster_busiest_share": busiest_share,
            "group_channels_per_node": cluster.iter().map(|r| r.group_channels.clone()).collect::<Vec<_>>(),
        })),
        Row::new(
            "B7",
            "send_all on the 3-master cluster",
            if all_known {
                "share of Redis CPU on the `all` shard"
            } else {
                "share of Redis CPU on the busiest shard"
            },
            Unit::Share,
            all_share,
            None,
            Target::None,
        )
        .note(format!(
            "CPU s per 1M broadcasts: {} on the shard serving `all`, {} on each other shard; \
             `all` on shard no. (in the order above), per round: {}; deliveries at B: {} \
             ({GROUPS} connections each get every broadcast)",
            seconds(all_cpu),
            seconds(other_cpu),
            cluster
                .iter()
                .map(|r| r.all_node.map_or_else(|| "?".to_owned(), |i| (i + 1).to_string()))
                .collect::<Vec<_>>()
                .join(", "),
            broadcast_rate.map_or_else(|| "?".to_owned(), |v| Unit::PerSecond.format(v)),
        ))
        .details(json!({
            "cpu_s_per_million_broadcasts_all_node": all_cpu,
            "cpu_s_per_million_broadcasts_other_nodes_average": other_cpu,
            "all_channel_node": cluster.iter().map(|r| r.all_node).collect::<Vec<_>>(),
            "share_per_round": cluster.iter().map(Round::all_share).collect::<Vec<_>>(),
        })),
    ])
}

/// `cpu` seconds per million of `messages`.
fn per_million(cpu: f64, messages: u64) -> f64 {
    if messages == 0 {
        return f64::NAN;
    }
    cpu * 1e6 / messages as f64
}

/// One round on `url`: two fresh managers, the groups, the measured
/// windows (`send_all` too when `cluster`), then shutdown whatever happened.
async fn round(
    url: &str,
    nodes: &[String],
    cluster: bool,
    message: &SerializedMessage,
    duration: Duration,
) -> BenchResult<Round> {
    let hub = hub_name("B7");
    let a = manager(url, &hub).await?;
    let b = match manager(url, &hub).await {
        Ok(b) => b,
        Err(e) => {
            a.shutdown().await;
            return Err(e);
        }
    };
    let result = measure(&a, &b, &hub, nodes, cluster, message, duration).await;
    a.shutdown().await;
    b.shutdown().await;
    result
}

/// Sets up B's groups and runs the windows of one round.
async fn measure(
    a: &RedisHubLifetimeManager,
    b: &RedisHubLifetimeManager,
    hub: &str,
    nodes: &[String],
    cluster: bool,
    message: &SerializedMessage,
    duration: Duration,
) -> BenchResult<Round> {
    let groups: Vec<Arc<str>> = (0..GROUPS).map(|g| Arc::from(format!("g{g}"))).collect();
    let deliveries = Arc::new(Arrivals::default());
    // Dropping the set at the end aborts the drains.
    let mut drains = JoinSet::new();
    let mut connections = Vec::with_capacity(GROUPS);
    for _ in 0..GROUPS {
        let (connection, mut outbound) =
            Connection::new(ConnectionOptions::new(Protocol::Json).queue_capacity(QUEUE_CAPACITY));
        connections.push(connection);
        let deliveries = deliveries.clone();
        drains.spawn(async move {
            // Counted per batch of what is queued when the task wakes, as in B1.
            while outbound.recv().await.is_some() {
                let mut n = 1;
                while outbound.try_recv().is_some() {
                    n += 1;
                }
                deliveries.add(n);
            }
        });
    }
    let (joined, _) = windowed(GROUPS, JOIN_WINDOW, |i| {
        let b = b.clone();
        let connection = connections[i].clone();
        let group = groups[i].clone();
        async move {
            let id = connection.id().clone();
            b.on_connected(connection).await.is_ok() && b.add_to_group(&id, &group).await.is_ok()
        }
    })
    .await;
    if joined != GROUPS {
        return Err(format!("only {joined} of {GROUPS} connections joined their groups").into());
    }
    let (group_channels, all_node) = if cluster {
        placement(nodes, hub).await?
    } else {
        (Vec::new(), None)
    };

    let mut next = 0;
    let group_sends = saturate(duration, WINDOW, || {
        let group = groups[next % GROUPS].clone();
        next += 1;
        let a = a.clone();
        let message = message.clone();
        async move { a.send_group(&group, &message).await.is_ok() }
    });
    let groups_phase = phase(b, &deliveries, nodes, 1, group_sends).await?;

    let broadcast = if cluster {
        let broadcasts = saturate(duration, WINDOW, || {
            let a = a.clone();
            let message = message.clone();
            async move { a.send_all(&message).await.is_ok() }
        });
        Some(phase(b, &deliveries, nodes, GROUPS as u64, broadcasts).await?)
    } else {
        None
    };
    drains.abort_all();
    Ok(Round {
        groups: groups_phase,
        broadcast,
        group_channels,
        all_node,
    })
}

/// One measured window: the Redis CPU of every node in `nodes` is read, then
/// `sends` runs (it returns succeeded and failed sends), then the bench waits
/// for `per_message` deliveries per sent message and reads the CPU again.
async fn phase<S>(
    b: &RedisHubLifetimeManager,
    deliveries: &Arrivals,
    nodes: &[String],
    per_message: u64,
    sends: S,
) -> BenchResult<Phase>
where
    S: Future<Output = (u64, u64)>,
{
    let before = b.stats();
    let counted = deliveries.count();
    let cpu_before = redis_cpu(nodes).await?;
    let start = now_ns();
    let (sent, failed_sends) = sends.await;
    let expected = sent * per_message;
    let delivered = deliveries
        .wait_for(counted + expected, STALL)
        .await
        .saturating_sub(counted);
    let elapsed = deliveries.last_ns().saturating_sub(start);
    let cpu_after = redis_cpu(nodes).await?;
    let after = b.stats();
    if after.closed_slow > before.closed_slow {
        return Err(format!(
            "{} connections on B were closed as slow consumers",
            after.closed_slow - before.closed_slow
        )
        .into());
    }
    Ok(Phase {
        sent,
        failed_sends,
        expected,
        delivered,
        lagged: after.backplane_lagged - before.backplane_lagged,
        deliveries_per_s: rate(delivered, elapsed),
        cpu_s: cpu_after
            .iter()
            .zip(&cpu_before)
            .map(|(after, before)| (after - before).max(0.0))
            .collect(),
    })
}

/// The CPU seconds (system + user, `INFO cpu`) each Redis server at `urls`
/// has used since it started, read over a connection of its own.
async fn redis_cpu(urls: &[String]) -> BenchResult<Vec<f64>> {
    let urls = urls.to_vec();
    tokio::task::spawn_blocking(move || urls.iter().map(|url| cpu_seconds(url)).collect()).await?
}

/// `used_cpu_sys + used_cpu_user` of the server at `url`.
pub(crate) fn cpu_seconds(url: &str) -> BenchResult<f64> {
    let info = raw::info(url, "cpu")?;
    let field = |name: &str| -> BenchResult<f64> {
        raw::info_field(&info, name)
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| format!("INFO cpu of {url} has no {name}").into())
    };
    Ok(field("used_cpu_sys")? + field("used_cpu_user")?)
}

/// Where the round's channels live on the cluster: how many of the hub's
/// group channels each node serves, and which node serves its `all` channel.
/// `PUBSUB SHARDCHANNELS` lists the shard channels with subscribers that the
/// node it is sent to serves.
async fn placement(nodes: &[String], hub: &str) -> BenchResult<(Vec<usize>, Option<usize>)> {
    let group_pattern = format!("{PREFIX}{hub}:group:*");
    let all = format!("{PREFIX}{hub}:all");
    let mut group_channels = Vec::with_capacity(nodes.len());
    let mut all_node = None;
    for (index, url) in nodes.iter().enumerate() {
        let client = raw::publisher(url).await?;
        let listed: BenchResult<(Vec<String>, Vec<String>)> = async {
            let groups = client.pubsub_shardchannels(group_pattern.as_str()).await?;
            let all = client.pubsub_shardchannels(all.as_str()).await?;
            Ok((groups, all))
        }
        .await;
        raw::close(&client).await;
        let (groups, all) = listed?;
        group_channels.push(groups.len());
        if !all.is_empty() {
            all_node = Some(index);
        }
    }
    Ok((group_channels, all_node))
}

/// `redis://host:port` of every node named in a
/// `redis-cluster://host:port?node=host:port&node=...` URL, in order (a
/// `user:password@` is kept for each).
fn cluster_nodes(url: &str) -> BenchResult<Vec<String>> {
    let rest = url
        .strip_prefix("redis-cluster://")
        .ok_or_else(|| format!("B7 needs a redis-cluster:// URL, not {url}"))?;
    let (authority, query) = rest.split_once('?').unwrap_or((rest, ""));
    let (user, first) = match authority.rsplit_once('@') {
        Some((user, host)) => (Some(user), host),
        None => (None, authority),
    };
    let first = first.split('/').next().unwrap_or(first);
    let hosts: Vec<&str> = std::iter::once(first)
        .chain(query.split('&').filter_map(|p| p.strip_prefix("node=")))
        .collect();
    if hosts.iter().any(|host| host.is_empty()) {
        return Err(format!("a node of {url} has no address").into());
    }
    Ok(hosts
        .into_iter()
        .map(|host| match user {
            Some(user) => format!("redis://{user}@{host}"),
            None => format!("redis://{host}"),
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_urls_name_every_node() {
        assert_eq!(
            cluster_nodes("redis-cluster://127.0.0.1:7001?node=127.0.0.1:7002&node=127.0.0.1:7003")
                .unwrap(),
            [
                "redis://127.0.0.1:7001",
                "redis://127.0.0.1:7002",
                "redis://127.0.0.1:7003"
            ]
        );
        assert_eq!(
            cluster_nodes("redis-cluster://u:p@h:1/?node=h:2").unwrap(),
            ["redis://u:p@h:1", "redis://u:p@h:2"]
        );
        assert!(cluster_nodes("redis://127.0.0.1:7001").is_err());
        assert!(cluster_nodes("redis-cluster://?node=h:2").is_err());
    }

    #[test]
    fn shares_and_costs_per_node() {
        let phase = Phase {
            sent: 2_000_000,
            failed_sends: 0,
            expected: 2_000_000,
            delivered: 1_999_990,
            lagged: 0,
            deliveries_per_s: 1.0,
            cpu_s: vec![1.0, 3.0, 4.0],
        };
        assert_eq!(phase.busiest(), Some(2));
        assert_eq!(phase.share(2), 0.5);
        assert_eq!(phase.cpu_per_million(), [0.5, 1.5, 2.0]);
        assert_eq!(phase.busiest_per_million(), 2.0);
        assert_eq!(phase.total_per_million(), 4.0);
        assert_eq!(phase.lost(), 10);
        assert!(per_million(1.0, 0).is_nan());

        let round = Round {
            groups: phase.clone(),
            broadcast: Some(phase),
            group_channels: vec![30, 33, 37],
            all_node: Some(1),
        };
        assert_eq!(round.all_share(), 3.0 / 8.0);
        assert_eq!(round.all_cpu_per_million(), 1.5);
        assert_eq!(round.other_cpu_per_million(), 1.25);
        let unknown = Round {
            all_node: None,
            ..round
        };
        assert_eq!(unknown.all_share(), 0.5);
    }
}

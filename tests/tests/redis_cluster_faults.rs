//! Faults on a Redis Cluster while two servers carry traffic over sharded
//! pub/sub: slots moved by a live migration and by `redis-cli --cluster
//! reshard`, and a master killed (SIGKILL) and started again. No panic,
//! sends during the outage fail within a bounded time, and delivery comes
//! back by itself within a bound.

#![allow(clippy::unwrap_used, missing_docs)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use switchboard_core::{Error, HubLifetimeManager};
use switchboard_redis::{RedisHubLifetimeManager, RedisOptions};
use switchboard_tests::redis_cluster::RedisClusterProcess;
use switchboard_tests::{TestClient, init_logging, message};
use tokio_util::sync::CancellationToken;

/// How long delivery may take to come back after the cluster has settled.
const RECOVERY_LIMIT: Duration = Duration::from_secs(20);

/// How long one send may take while a master is down: the publish timeout
/// (750 ms by default) with room for a loaded machine. A send that takes
/// longer hangs.
const SEND_BOUND: Duration = Duration::from_secs(3);

async fn server(url: &str) -> Arc<RedisHubLifetimeManager> {
    let options = RedisOptions::new(url)
        .hub("cluster-faults")
        .reconnect_max_delay(Duration::from_millis(200));
    Arc::new(RedisHubLifetimeManager::connect(options).await.unwrap())
}

/// Sends to `group` from `sender` every 20 ms until `stop`; returns how
/// many sends succeeded and how many failed with `BackplaneUnavailable`.
fn traffic(
    sender: Arc<RedisHubLifetimeManager>,
    group: &'static str,
    stop: CancellationToken,
) -> tokio::task::JoinHandle<(u32, u32)> {
    tokio::spawn(async move {
        let (mut ok, mut failed) = (0u32, 0u32);
        let mut i = 0;
        while !stop.is_cancelled() {
            i += 1;
            let started = Instant::now();
            match sender
                .send_group(group, &message("m", (format!("traffic-{i}"),)))
                .await
            {
                Ok(()) => ok += 1,
                Err(Error::BackplaneUnavailable { .. }) => failed += 1,
                Err(e) => panic!("unexpected error under traffic: {e}"),
            }
            assert!(
                started.elapsed() < SEND_BOUND,
                "a send took {:?}",
                started.elapsed()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        (ok, failed)
    })
}

/// Checks that a group message from `sender` reaches `member`, then starts
/// [`traffic`] to "room"; returns what stops it and its task.
async fn start_traffic(
    sender: &Arc<RedisHubLifetimeManager>,
    member: &mut TestClient,
) -> (CancellationToken, tokio::task::JoinHandle<(u32, u32)>) {
    sender
        .send_group("room", &message("m", ("before",)))
        .await
        .unwrap();
    assert!(
        member
            .recv_marked("before", Duration::from_secs(5))
            .await
            .is_some()
    );
    let stop = CancellationToken::new();
    let sending = traffic(sender.clone(), "room", stop.clone());
    tokio::time::sleep(Duration::from_millis(200)).await;
    (stop, sending)
}

/// The cluster node (index) that owns `channel`'s slot.
fn owner(cluster: &RedisClusterProcess, channel: &str) -> usize {
    cluster.index_of(cluster.slot_owner(cluster.key_slot(channel)))
}

/// How many clients are subscribed to shard channel `channel` on node
/// `index`.
fn shard_subscribers(cluster: &RedisClusterProcess, index: usize, channel: &str) -> i64 {
    let reply = cluster.command(index, &["PUBSUB", "SHARDNUMSUB", channel]);
    reply
        .items()
        .and_then(|items| items.get(1))
        .and_then(|count| count.integer())
        .unwrap_or_else(|| panic!("PUBSUB SHARDNUMSUB {channel}: {reply:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delivery_follows_slots_moved_under_traffic() {
    init_logging();
    let cluster = RedisClusterProcess::start();
    let url = cluster.url();
    let s1 = server(&url).await;
    let s2 = server(&url).await;
    let s1_dyn: Arc<dyn HubLifetimeManager> = s1.clone();
    let s2_dyn: Arc<dyn HubLifetimeManager> = s2.clone();

    // A member of "room" on server 2, and fifty more groups spread over
    // the slots, each with a member on server 2.
    let mut member = TestClient::connect(&s2_dyn).await;
    s2.add_to_group(member.id(), "room").await.unwrap();
    let mut others = Vec::new();
    for i in 0..50 {
        let client = TestClient::connect(&s2_dyn).await;
        s2.add_to_group(client.id(), &format!("g{i}"))
            .await
            .unwrap();
        others.push(client);
    }
    let room = s2.channels().group("room");
    let connection = s2.channels().connection(member.id());
    let (stop, sending) = start_traffic(&s1, &mut member).await;

    // --- a live migration of the group's slot and of the member's
    // connection channel's slot, to the next node.
    let from = owner(&cluster, &room);
    let to = (from + 1) % 3;
    let moved = Instant::now();
    tokio::task::block_in_place(|| {
        cluster.move_slot(cluster.key_slot(&room), to);
        let connection_slot = cluster.key_slot(&connection);
        let to = (owner(&cluster, &connection) + 1) % 3;
        cluster.move_slot(connection_slot, to);
    });
    let s1_ref = &s1;
    let group_back = member
        .until_delivered("after-move", RECOVERY_LIMIT, |marker| async move {
            s1_ref.send_group("room", &message("m", (marker,))).await
        })
        .await;
    assert_eq!(owner(&cluster, &room), to, "the slot moved");
    assert_eq!(
        shard_subscribers(&cluster, to, &room),
        1,
        "server 2 subscribed on the new owner"
    );
    // A remote group change for the member: its connection channel moved
    // too, and the owner's answer (and SPUBLISH's count) follows it.
    let member_id = member.id().clone();
    let started = Instant::now();
    loop {
        match s1.add_to_group(&member_id, "after").await {
            Ok(()) => break,
            Err(Error::ConnectionNotFound { .. } | Error::BackplaneUnavailable { .. })
                if started.elapsed() < RECOVERY_LIMIT =>
            {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("remote add after the move: {e}"),
        }
    }
    s1.send_group("after", &message("m", ("joined",)))
        .await
        .unwrap();
    assert!(
        member
            .recv_marked("joined", Duration::from_secs(5))
            .await
            .is_some()
    );
    println!(
        "after a live slot migration: group delivery back {group_back:?} after the probes began, {:?} after the move",
        moved.elapsed()
    );

    // --- redis-cli --cluster reshard: 2000 slots from one node to another,
    // while traffic flows; then every group delivers again.
    let group_owners = |cluster: &RedisClusterProcess| -> Vec<usize> {
        (0..others.len())
            .map(|i| owner(cluster, &s2.channels().group(&format!("g{i}"))))
            .collect()
    };
    let owners_before = group_owners(&cluster);
    let resharded = Instant::now();
    tokio::task::block_in_place(|| cluster.reshard(0, 1, 2000));
    let owners_after = group_owners(&cluster);
    let moved_groups = owners_before
        .iter()
        .zip(&owners_after)
        .filter(|(before, after)| before != after)
        .count();
    // The probes below must cover channels whose slot actually moved.
    assert!(
        moved_groups > 0,
        "none of the 50 groups' channels was among the resharded slots"
    );
    let mut slowest = Duration::ZERO;
    for (i, client) in others.iter_mut().enumerate() {
        let group = format!("g{i}");
        let group = &group;
        let back = client
            .until_delivered("after-reshard", RECOVERY_LIMIT, |marker| async move {
                s1_ref.send_group(group, &message("m", (marker,))).await
            })
            .await;
        slowest = slowest.max(back);
    }
    println!(
        "after resharding 2000 slots ({moved_groups} of the 50 groups' channels moved): all 50 groups deliver, {:?} after the reshard began (slowest probe {slowest:?})",
        resharded.elapsed()
    );

    stop.cancel();
    let (ok, failed) = sending.await.unwrap();
    println!("traffic through the moves: {ok} sent, {failed} failed");
    assert!(ok > 0);
    let _ = s1_dyn;
    s1.shutdown().await;
    s2.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delivery_resumes_after_a_master_restarts() {
    init_logging();
    let mut cluster = RedisClusterProcess::start();
    let url = cluster.url();
    let s1 = server(&url).await;
    let s2 = server(&url).await;
    let s1_dyn: Arc<dyn HubLifetimeManager> = s1.clone();
    let s2_dyn: Arc<dyn HubLifetimeManager> = s2.clone();

    let mut member = TestClient::connect_user(&s2_dyn, "alice").await;
    s2.add_to_group(member.id(), "room").await.unwrap();
    let mut everyone = TestClient::connect(&s1_dyn).await;
    let (stop, sending) = start_traffic(&s1, &mut member).await;

    // --- the master that owns the group's channel dies.
    let room = s2.channels().group("room");
    let victim = owner(&cluster, &room);
    tokio::task::block_in_place(|| cluster.kill(victim));
    // A group whose channel lives on another, running, master.
    let elsewhere = (0..)
        .map(|i| format!("elsewhere-{i}"))
        .find(|group| owner(&cluster, &s2.channels().group(group)) != victim)
        .unwrap();
    let (mut failures, mut failures_elsewhere) = (0, 0);
    let mut worst = Duration::ZERO;
    for _ in 0..5 {
        for (group, failed) in [
            ("room", &mut failures),
            (elsewhere.as_str(), &mut failures_elsewhere),
        ] {
            let started = Instant::now();
            let result = s1.send_group(group, &message("m", ("during",))).await;
            worst = worst.max(started.elapsed());
            match result {
                Ok(()) => {}
                Err(Error::BackplaneUnavailable { .. }) => *failed += 1,
                Err(e) => panic!("a send to {group} during the outage: {e}"),
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        worst < SEND_BOUND,
        "a send during the outage took {worst:?}"
    );
    assert!(
        failures > 0,
        "sends to a dead master's channel must fail, not vanish"
    );
    println!(
        "while the master was down: the slowest send took {worst:?}; {failures} of 5 sends to its channel failed, {failures_elsewhere} of 5 to another master's"
    );
    // Local state keeps working meanwhile.
    let mut late = TestClient::connect_user(&s2_dyn, "bob").await;
    s2.add_to_group(late.id(), "room").await.unwrap();
    s2.send_connection(late.id(), &message("m", ("local",)))
        .await
        .unwrap();
    assert!(
        late.recv_marked("local", Duration::from_secs(5))
            .await
            .is_some()
    );

    // --- it comes back with its slots.
    let restarted = Instant::now();
    tokio::task::block_in_place(|| cluster.restart(victim));
    let settled = restarted.elapsed();
    let s1_ref = &s1;
    let group_back = member
        .until_delivered("after-restart", RECOVERY_LIMIT, |marker| async move {
            s1_ref.send_group("room", &message("m", (marker,))).await
        })
        .await;
    late.until_delivered("late-member", RECOVERY_LIMIT, |marker| async move {
        s1_ref.send_group("room", &message("m", (marker,))).await
    })
    .await;
    late.until_delivered("user", RECOVERY_LIMIT, |marker| async move {
        s1_ref.send_user("bob", &message("m", (marker,))).await
    })
    .await;
    let s2_ref = &s2;
    everyone
        .until_delivered("all", RECOVERY_LIMIT, |marker| async move {
            s2_ref.send_all(&message("m", (marker,))).await
        })
        .await;
    println!(
        "after the master restarted: cluster ok again in {settled:?}; group delivery back {group_back:?} later"
    );

    stop.cancel();
    let (ok, failed) = sending.await.unwrap();
    println!("traffic through the outage: {ok} sent, {failed} failed");
    assert!(ok > 0 && failed > 0, "{ok} sent, {failed} failed");
    s1.shutdown().await;
    s2.shutdown().await;
}

/// A subscription is confirmed by the master that owns its channel's slot,
/// not by whichever node answers first: while that master is frozen
/// (SIGSTOP, shorter than the publish timeout), adding a member to a group
/// on it does not return; once the master resumes, the add returns with the
/// subscription in place on that master, and messages from the other
/// server reach the member.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscription_is_live_on_the_master_that_owns_its_slot() {
    use std::sync::atomic::{AtomicBool, Ordering};

    init_logging();
    let cluster = RedisClusterProcess::start();
    let url = cluster.url();
    let s1 = server(&url).await;
    // A subscription that is not confirmed within the publish timeout is
    // left pending (the add returns, the engine subscribes again when the
    // backplane answers): the timeout here outlasts the freeze.
    let s2 = Arc::new(
        RedisHubLifetimeManager::connect(
            RedisOptions::new(&url)
                .hub("cluster-faults")
                .publish_timeout(Duration::from_secs(30)),
        )
        .await
        .unwrap(),
    );
    let s2_dyn: Arc<dyn HubLifetimeManager> = s2.clone();

    let group = "frozen-shard";
    let channel = s2.channels().group(group);
    let frozen = owner(&cluster, &channel);
    let mut member = TestClient::connect(&s2_dyn).await;

    cluster.pause(frozen);
    let resumed = Arc::new(AtomicBool::new(false));
    let adding = {
        let (s2, id, resumed) = (s2.clone(), member.id().clone(), resumed.clone());
        tokio::spawn(async move {
            let result = s2.add_to_group(&id, group).await;
            (result, resumed.load(Ordering::SeqCst))
        })
    };
    // Long enough for an add that did not wait for the owner to be done.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        !adding.is_finished(),
        "the add returned while its master was frozen"
    );
    resumed.store(true, Ordering::SeqCst);
    cluster.resume(frozen);

    let (result, after_resume) = tokio::time::timeout(Duration::from_secs(20), adding)
        .await
        .expect("the add returns once the master resumes")
        .unwrap();
    result.unwrap();
    assert!(after_resume, "the add returned before its master resumed");
    let subscribers = tokio::task::block_in_place(|| shard_subscribers(&cluster, frozen, &channel));
    assert_eq!(subscribers, 1, "the subscription is in place on the owner");
    let s1_ref = &s1;
    member
        .until_delivered("live", RECOVERY_LIMIT, |marker| async move {
            s1_ref.send_group(group, &message("m", (marker,))).await
        })
        .await;
    s1.shutdown().await;
    s2.shutdown().await;
}

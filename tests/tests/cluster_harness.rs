//! The Redis Cluster harness itself (`switchboard_tests::redis_cluster`):
//! three masters own every slot, a slot moved live (with its key) changes
//! owner, `redis-cli --cluster reshard` moves slots, and a killed node
//! restarted on its port rejoins with its slots and the cluster is ok again.
//!
//! Needs `redis-server` and `redis-cli` (`SWITCHBOARD_REDIS_SERVER`, set by
//! `cargo xtask test`, or PATH).

#![allow(clippy::unwrap_used, missing_docs)]

use switchboard_tests::redis_cluster::{RedisClusterProcess, Reply, SLOTS};

/// The slots each node owns, from the slot map, by node index.
fn slots_per_node(cluster: &RedisClusterProcess) -> Vec<usize> {
    let mut owned = vec![0; cluster.ports().len()];
    for (first, last, port) in cluster.slot_ranges() {
        owned[cluster.index_of(port)] += usize::from(last - first) + 1;
    }
    owned
}

#[test]
fn three_masters_own_every_slot_and_slots_move() {
    let cluster = RedisClusterProcess::start();
    let ports = cluster.ports();
    assert_eq!(ports.len(), 3);
    assert_eq!(
        cluster.url(),
        format!(
            "redis-cluster://127.0.0.1:{}?node=127.0.0.1:{}&node=127.0.0.1:{}",
            ports[0], ports[1], ports[2]
        )
    );

    // The map covers 0..16384 without a gap, every node a master with slots.
    let ranges = cluster.slot_ranges();
    let mut next = 0;
    for &(first, last, _) in &ranges {
        assert_eq!(first, next, "slot map {ranges:?} has a gap or overlap");
        next = last + 1;
    }
    assert_eq!(next, SLOTS);
    let before = slots_per_node(&cluster);
    assert!(before.iter().all(|&owned| owned > 0), "{before:?}");
    for index in 0..3 {
        let info = cluster.cluster_info(index);
        assert!(info.contains("cluster_state:ok"), "node {index}: {info}");
        assert!(info.contains("cluster_size:3"), "node {index}: {info}");
    }

    // A live move of one slot, carrying the key stored in it.
    let key = "harness-key";
    let slot = cluster.key_slot(key);
    let from = cluster.index_of(cluster.slot_owner(slot));
    let to = (from + 1) % 3;
    assert_eq!(
        cluster.command(from, &["SET", key, "kept"]),
        Reply::Status("OK".to_owned())
    );
    cluster.move_slot(slot, to);
    assert_eq!(cluster.slot_owner(slot), cluster.port(to));
    assert_eq!(
        cluster.command(to, &["GET", key]).text().as_deref(),
        Some("kept"),
        "the key moved with its slot"
    );
    match cluster.command(from, &["GET", key]) {
        Reply::Error(error) => assert!(
            error.starts_with(&format!("MOVED {slot} 127.0.0.1:{}", cluster.port(to))),
            "{error}"
        ),
        other => panic!("the old owner should redirect, got {other:?}"),
    }
    cluster.wait_ok();

    // redis-cli moves a batch.
    let moved = slots_per_node(&cluster);
    let (a, b) = ((to + 1) % 3, (to + 2) % 3);
    cluster.reshard(a, b, 10);
    let after = slots_per_node(&cluster);
    assert_eq!(after[a], moved[a] - 10, "{moved:?} -> {after:?}");
    assert_eq!(after[b], moved[b] + 10, "{moved:?} -> {after:?}");
    assert_eq!(after.iter().sum::<usize>(), usize::from(SLOTS));
}

#[test]
fn a_killed_node_restarted_rejoins_with_its_slots() {
    let mut cluster = RedisClusterProcess::start();
    let ranges = cluster.slot_ranges();
    let id = cluster.node_id(1).to_owned();

    cluster.kill(1);
    assert!(!cluster.is_running(1));
    // The survivors notice, and, being the majority, keep the cluster ok.
    cluster.wait_marked_failed(1);
    cluster.wait_ok();
    for index in [0, 2] {
        let info = cluster.cluster_info(index);
        assert!(info.contains("cluster_state:ok"), "node {index}: {info}");
        assert!(
            !info.contains("cluster_slots_fail:0\r"),
            "node {index}: {info}"
        );
    }

    cluster.restart(1);
    assert!(cluster.is_running(1));
    for index in 0..3 {
        let info = cluster.cluster_info(index);
        assert!(info.contains("cluster_state:ok"), "node {index}: {info}");
        assert!(
            info.contains("cluster_slots_ok:16384"),
            "node {index}: {info}"
        );
    }
    assert_eq!(
        cluster.command(1, &["CLUSTER", "MYID"]).text().as_deref(),
        Some(id.as_str())
    );
    assert_eq!(
        cluster.slot_ranges(),
        ranges,
        "the same slots, the same owners"
    );
    assert_eq!(
        cluster.command(1, &["PING"]),
        Reply::Status("PONG".to_owned())
    );
}

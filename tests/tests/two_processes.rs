//! Two server processes on one Redis: what one sends reaches connections
//! held by the other.

#![allow(clippy::unwrap_used, missing_docs)]

use switchboard_tests::node::Node;

#[tokio::test]
async fn messages_cross_between_two_processes() {
    let hub = format!("two-processes-{}", switchboard_core::random_token());
    let mut a = Node::start_binary(env!("CARGO_BIN_EXE_switchboard-node"), &hub).await;
    let mut b = Node::start_binary(env!("CARGO_BIN_EXE_switchboard-node"), &hub).await;
    let b_conn = b.connect("bob", "bob-user").await;

    // send_all from A reaches B's connection.
    assert_eq!(a.run("all hello everyone").await, "ok");
    assert_eq!(b.line().await, "recv bob hello everyone");

    // A group joined on B, sent to from A.
    assert_eq!(b.run("join bob room").await, "ok");
    assert_eq!(a.run("group room hello room").await, "ok");
    assert_eq!(b.line().await, "recv bob hello room");

    // A user whose connection is on B, sent to from A.
    assert_eq!(a.run("user bob-user hello bob").await, "ok");
    assert_eq!(b.line().await, "recv bob hello bob");

    // A adds B's connection to a new group (acknowledged by B), then sends.
    assert_eq!(a.run(&format!("add {b_conn} other")).await, "ok");
    assert_eq!(a.run("group other hello other").await, "ok");
    assert_eq!(b.line().await, "recv bob hello other");

    // Adding a connection that exists on neither process fails at once.
    let answer = a.run("add no-such-connection other").await;
    assert_eq!(
        answer,
        "error Connection 'no-such-connection' does not exist."
    );

    // And the other way round.
    let a_conn = a.connect("alice", "alice-user").await;
    assert_eq!(b.run(&format!("conn {a_conn} hi alice")).await, "ok");
    assert_eq!(a.line().await, "recv alice hi alice");
}

/// A worker process that hosts no connections sends to the connections of
/// a server process (all, group, user, connection, a group change), and
/// does not listen on the hub's broadcast channel: its traffic never
/// reaches it.
#[tokio::test]
async fn an_emitter_process_reaches_a_servers_connections_and_hears_nothing() {
    use switchboard_tests::redis_process::RedisProcess;

    let redis = RedisProcess::start();
    let hub = format!("emitter-{}", switchboard_core::random_token());
    let binary = env!("CARGO_BIN_EXE_switchboard-node");
    let mut server = Node::start_on(binary, &redis.url(), &hub).await;
    let mut emitter = Node::start_emitter_on(binary, &redis.url(), &hub).await;
    let bob = server.connect("bob", "bob-user").await;
    assert_eq!(server.run("join bob room").await, "ok");

    assert_eq!(emitter.run("all to everyone").await, "ok");
    assert_eq!(server.line().await, "recv bob to everyone");
    assert_eq!(emitter.run("group room to the room").await, "ok");
    assert_eq!(server.line().await, "recv bob to the room");
    assert_eq!(emitter.run("user bob-user to bob").await, "ok");
    assert_eq!(server.line().await, "recv bob to bob");
    assert_eq!(
        emitter.run(&format!("conn {bob} to the connection")).await,
        "ok"
    );
    assert_eq!(server.line().await, "recv bob to the connection");
    // A group change, acknowledged by the server to the emitter.
    assert_eq!(emitter.run(&format!("add {bob} other")).await, "ok");
    assert_eq!(emitter.run("group other to the other group").await, "ok");
    assert_eq!(server.line().await, "recv bob to the other group");

    // Only the server listens on the broadcast channel.
    let all = format!("{hub}:all");
    let reply = redis.command(&format!("PUBSUB NUMSUB {all}"));
    assert!(
        reply.trim_end().ends_with(":1"),
        "PUBSUB NUMSUB {all}: {reply:?}"
    );
    // And an emitter refuses to host a connection.
    let refused = emitter.run("connect carol").await;
    assert!(
        refused.starts_with("error") && refused.contains("emitter"),
        "{refused}"
    );
}

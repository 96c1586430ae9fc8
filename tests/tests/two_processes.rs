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

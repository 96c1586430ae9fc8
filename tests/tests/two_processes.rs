//! Two server processes on one Redis: what one sends reaches connections
//! held by the other.

#![allow(clippy::unwrap_used, missing_docs)]

use std::process::Stdio;
use std::time::Duration;

use switchboard_tests::redis_url;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};

struct Node {
    _child: Child,
    stdin: ChildStdin,
    stdout: Lines<BufReader<ChildStdout>>,
}

impl Node {
    async fn start(hub: &str) -> Node {
        let mut child = Command::new(env!("CARGO_BIN_EXE_switchboard-node"))
            .arg(redis_url())
            .arg(hub)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let stdin = child.stdin.take().unwrap();
        let stdout = BufReader::new(child.stdout.take().unwrap()).lines();
        let mut node = Node {
            _child: child,
            stdin,
            stdout,
        };
        assert_eq!(node.line().await, "ready");
        node
    }

    async fn line(&mut self) -> String {
        tokio::time::timeout(Duration::from_secs(10), self.stdout.next_line())
            .await
            .expect("the node answers in time")
            .unwrap()
            .expect("the node is running")
    }

    /// Sends a command and returns the node's answer.
    async fn run(&mut self, command: &str) -> String {
        self.stdin
            .write_all(format!("{command}\n").as_bytes())
            .await
            .unwrap();
        self.line().await
    }

    /// Opens a connection and returns its id.
    async fn connect(&mut self, name: &str, user: &str) -> String {
        let answer = self.run(&format!("connect {name} {user}")).await;
        let id = answer
            .strip_prefix(&format!("connected {name} "))
            .unwrap_or_else(|| panic!("unexpected answer {answer}"));
        id.to_owned()
    }
}

#[tokio::test]
async fn messages_cross_between_two_processes() {
    let hub = format!("two-processes-{}", switchboard_core::random_token());
    let mut a = Node::start(&hub).await;
    let mut b = Node::start(&hub).await;
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

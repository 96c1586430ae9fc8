//! A `switchboard-node` server process driven from a test (see
//! `src/bin/switchboard-node.rs`).

use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};

use crate::redis_url;

/// One server process on the test Redis; killed when dropped.
#[derive(Debug)]
pub struct Node {
    child: Child,
    stdin: ChildStdin,
    stdout: Lines<BufReader<ChildStdout>>,
}

impl Node {
    /// Starts `binary` (the `switchboard-node` executable) on `hub`, on the
    /// Redis from [`redis_url`].
    pub async fn start_binary(binary: &str, hub: &str) -> Node {
        Node::start_on(binary, &redis_url(), hub).await
    }

    /// Starts `binary` on `hub`, on the Redis (node or cluster) at `url`.
    pub async fn start_on(binary: &str, url: &str, hub: &str) -> Node {
        Node::start_with(binary, url, hub, &[]).await
    }

    /// Starts `binary` on `hub` at `url` as an emitter (`--emitter`): it
    /// sends and hosts no connections.
    pub async fn start_emitter_on(binary: &str, url: &str, hub: &str) -> Node {
        Node::start_with(binary, url, hub, &["--emitter"]).await
    }

    async fn start_with(binary: &str, url: &str, hub: &str, extra: &[&str]) -> Node {
        let mut child = Command::new(binary)
            .arg(url)
            .arg(hub)
            .args(extra)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let stdin = child.stdin.take().unwrap();
        let stdout = BufReader::new(child.stdout.take().unwrap()).lines();
        let mut node = Node {
            child,
            stdin,
            stdout,
        };
        assert_eq!(node.line().await, "ready");
        node
    }

    /// The next line the node printed.
    pub async fn line(&mut self) -> String {
        tokio::time::timeout(Duration::from_secs(10), self.stdout.next_line())
            .await
            .expect("the node answers in time")
            .unwrap()
            .expect("the node is running")
    }

    /// Sends a command and returns the node's answer.
    pub async fn run(&mut self, command: &str) -> String {
        self.stdin
            .write_all(format!("{command}\n").as_bytes())
            .await
            .unwrap();
        self.line().await
    }

    /// Opens a connection and returns its id.
    pub async fn connect(&mut self, name: &str, user: &str) -> String {
        let answer = self.run(&format!("connect {name} {user}")).await;
        let id = answer
            .strip_prefix(&format!("connected {name} "))
            .unwrap_or_else(|| panic!("unexpected answer {answer}"));
        id.to_owned()
    }

    /// Sends a signal (`-STOP`, `-CONT`, `-KILL`) to the process; after
    /// `-STOP`, returns once every thread of it has stopped.
    pub fn signal(&self, signal: &str) {
        let pid = self.child.id().expect("the node is running");
        let status = std::process::Command::new("kill")
            .arg(signal)
            .arg(pid.to_string())
            .status()
            .unwrap();
        assert!(status.success());
        if signal == "-STOP" {
            wait_stopped(pid);
        }
    }

    /// Kills the process (SIGKILL, which also ends a stopped process) and
    /// reaps it.
    pub async fn kill(mut self) {
        let _ = self.child.kill().await;
    }
}

/// Waits until every thread of process `pid` is stopped (state `T` in
/// `/proc/{pid}/task/*/stat`): `kill -STOP` returns once the signal is
/// sent, and a thread on a busy machine may run a little longer.
fn wait_stopped(pid: u32) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let stopped = std::fs::read_dir(format!("/proc/{pid}/task"))
            .map(|tasks| {
                tasks.filter_map(Result::ok).all(|task| {
                    std::fs::read_to_string(task.path().join("stat"))
                        .ok()
                        .and_then(|stat| {
                            // The state follows the command name in parentheses.
                            stat.rsplit_once(") ")
                                .and_then(|(_, rest)| rest.chars().next())
                        })
                        .is_some_and(|state| state == 'T' || state == 't')
                })
            })
            .unwrap_or(false);
        if stopped {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "process {pid} did not stop"
        );
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
}

//! `Server` out of file descriptors: it keeps serving its open connections,
//! counts the failed accepts, and accepts again once descriptors are free.
//!
//! Alone in its test binary: it lowers the process's `RLIMIT_NOFILE`.

#![allow(clippy::unwrap_used, missing_docs)]

mod common;

use std::time::Duration;

use common::{TestServer, WAIT};
use serde_json::json;
use switchboard_axum::{ServeOptions, SignalROptions};
use tokio::net::TcpStream;

use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};

fn nofile() -> Rlimit {
    getrlimit(Resource::Nofile)
}

fn set_nofile(limit: Rlimit) {
    setrlimit(Resource::Nofile, limit).unwrap();
}

fn open_descriptors() -> u64 {
    std::fs::read_dir("/proc/self/fd").unwrap().count() as u64
}

#[tokio::test]
async fn out_of_descriptors_the_server_serves_its_clients_and_recovers() {
    let (server, stats) =
        TestServer::serve(SignalROptions::default(), ServeOptions::default()).await;
    let mut client = server.json_client().await;
    let original = nofile();

    // A few descriptors left: the test's own connects use them up, and the
    // server can no longer accept what is connected.
    set_nofile(Rlimit {
        current: Some(open_descriptors() + 4),
        maximum: original.maximum,
    });
    let mut held = Vec::new();
    while let Ok(Ok(stream)) =
        tokio::time::timeout(Duration::from_secs(1), TcpStream::connect(server.addr)).await
    {
        held.push(stream);
        assert!(held.len() < 64, "the descriptor limit did not take");
    }
    let deadline = tokio::time::Instant::now() + WAIT;
    while stats.get().accept_errors == 0 {
        assert!(tokio::time::Instant::now() < deadline, "no accept failed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The open connection is served all along.
    let id = client.invoke("Add", json!([20, 22])).await;
    assert_eq!(client.completion(&id).await["result"], 42);

    // Descriptors free again: the server accepts again.
    drop(held);
    set_nofile(original);
    let (status, _) = server.http("POST", "/hub/negotiate").await;
    assert_eq!(status, 200);
    let id = client.invoke("Add", json!([1, 2])).await;
    assert_eq!(client.completion(&id).await["result"], 3);
}

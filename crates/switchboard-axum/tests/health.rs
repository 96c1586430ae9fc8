//! The health endpoint a load balancer polls: `switchboard_axum::health`
//! over a Redis manager answers 200 while Redis is reachable, 503 once it is
//! killed, and 200 again when it is back, over real HTTP against a real
//! redis-server.

#![allow(clippy::unwrap_used, missing_docs)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;
use switchboard_core::{HubLifetimeManager, InMemoryHubLifetimeManager};
use switchboard_redis::{RedisHubLifetimeManager, RedisOptions};
use switchboard_tests::redis_process::RedisProcess;
use switchboard_tests::{init_logging, message};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// How long a flip of the answer may take at most here: the target is
/// 2 s; this bound leaves room for a loaded machine, and the test prints
/// what it measured.
const FLIP_LIMIT: Duration = Duration::from_secs(15);

/// Serves `health(manager)` at `/healthz` on a free port.
async fn serve(manager: Arc<dyn HubLifetimeManager>) -> String {
    let app = axum::Router::new().route("/healthz", switchboard_axum::health(manager));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap().to_string();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    address
}

/// `GET /healthz`: the status and the JSON body.
async fn get(address: &str) -> (u16, Value) {
    let mut stream = TcpStream::connect(address).await.unwrap();
    let request = format!("GET /healthz HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await.unwrap();
    let response = String::from_utf8(response).unwrap();
    let status = response[9..12].parse().unwrap();
    let body = response.split_once("\r\n\r\n").unwrap().1;
    (status, serde_json::from_str(body).unwrap())
}

/// Polls until the endpoint answers `status`; how long that took.
async fn until_status(address: &str, status: u16) -> (Duration, Value) {
    let started = Instant::now();
    loop {
        let (now, body) = get(address).await;
        if now == status {
            return (started.elapsed(), body);
        }
        assert!(
            started.elapsed() < FLIP_LIMIT,
            "still {now} after {FLIP_LIMIT:?}: {body}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_server_without_a_backplane_is_always_serving() {
    let address = serve(Arc::new(InMemoryHubLifetimeManager::new())).await;
    let (status, body) = get(&address).await;
    assert_eq!(status, 200);
    assert_eq!(body["status"], "serving");
    assert_eq!(body["backplaneConnected"], true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_follows_redis_going_away_and_coming_back() {
    init_logging();
    let mut redis = RedisProcess::start();
    let options = RedisOptions::new(redis.url())
        .hub("health")
        .reconnect_max_delay(Duration::from_millis(200));
    let manager = Arc::new(RedisHubLifetimeManager::connect(options).await.unwrap());
    let address = serve(manager.clone()).await;

    let (status, body) = get(&address).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "serving");
    // A publish is dated.
    manager.send_all(&message("m", ("probe",))).await.unwrap();
    let (_, body) = get(&address).await;
    assert!(body["sinceLastPublishMs"].as_u64().is_some(), "{body}");

    tokio::task::block_in_place(|| redis.kill());
    let (down, body) = until_status(&address, 503).await;
    assert_eq!(body["status"], "unavailable");
    assert_eq!(body["backplaneConnected"], false);
    println!("/healthz answered 503 {down:?} after Redis was killed");

    tokio::task::block_in_place(|| redis.restart());
    let (up, body) = until_status(&address, 200).await;
    assert_eq!(body["backplaneConnected"], true);
    println!("/healthz answered 200 {up:?} after Redis was started again");
    manager.shutdown().await;
}

//! Faults of the link between a server and Redis, made with a TCP proxy
//! (`switchboard_tests::proxy::FaultyLink`) in front of the real Redis: a
//! connection that goes silent without a reset, and a slow link.
//!
//! Server `a` reaches Redis directly; server `b` through the proxy.

#![allow(clippy::unwrap_used, missing_docs)]

use std::sync::Arc;
use std::time::Duration;

use switchboard_core::HubLifetimeManager;
use switchboard_redis::RedisHubLifetimeManager;
use switchboard_tests::proxy::FaultyLink;
use switchboard_tests::{RedisBackend, TestClient, message};

/// The bound promised for the default settings (README, failure table).
const HALF_OPEN_BOUND: Duration = Duration::from_secs(10);

/// Two servers of one hub, `b` behind a proxy. `b` allows 5 s for each
/// publish and subscription change, so that a slow link is slow, not down.
async fn servers() -> (
    RedisBackend,
    FaultyLink,
    Arc<dyn HubLifetimeManager>,
    Arc<RedisHubLifetimeManager>,
) {
    let backend = RedisBackend::new();
    let link = FaultyLink::in_front_of(backend.url()).await;
    let a: Arc<dyn HubLifetimeManager> = Arc::new(backend.connect().await);
    let options = backend
        .options_at(&link.url())
        .publish_timeout(Duration::from_secs(5));
    let b = Arc::new(RedisHubLifetimeManager::connect(options).await.unwrap());
    (backend, link, a, b)
}

async fn silently_dead_connection_is_replaced(
    options: impl Fn(switchboard_redis::RedisOptions) -> switchboard_redis::RedisOptions,
    bound: Duration,
) -> Duration {
    let backend = RedisBackend::new();
    let link = FaultyLink::in_front_of(backend.url()).await;
    let a: Arc<dyn HubLifetimeManager> = Arc::new(backend.connect().await);
    let b: Arc<dyn HubLifetimeManager> = Arc::new(
        RedisHubLifetimeManager::connect(options(backend.options_at(&link.url())))
            .await
            .unwrap(),
    );
    let mut client = TestClient::connect(&b).await;
    a.add_to_group(client.id(), "room").await.unwrap();
    let mut other = TestClient::connect(&a).await;
    client
        .until_delivered("before", Duration::from_secs(5), |m| {
            let a = a.clone();
            async move { a.send_all(&message("m", (m,))).await }
        })
        .await;
    let connections_before = link.connections();

    // The proxy stops forwarding on b's connections, which stay open.
    link.silence_existing();
    let took = client
        .until_delivered("after", bound + Duration::from_secs(20), |m| {
            let a = a.clone();
            async move { a.send_group("room", &message("m", (m,))).await }
        })
        .await;
    println!("delivery from the other server resumed {took:?} after the link went silent");
    assert!(
        took <= bound,
        "delivery took {took:?} to resume, more than the bound of {bound:?}"
    );
    assert!(
        link.connections() > connections_before,
        "b never opened a new connection"
    );
    // b's own publishing connection was replaced too.
    other
        .until_delivered("from b", Duration::from_secs(10), |m| {
            let b = b.clone();
            async move { b.send_all(&message("m", (m,))).await }
        })
        .await;
    took
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silently_dead_connection_is_replaced_within_ten_seconds_by_default() {
    silently_dead_connection_is_replaced(|options| options, HALF_OPEN_BOUND).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dead_connection_bound_follows_the_heartbeat_settings() {
    silently_dead_connection_is_replaced(
        |options| {
            options
                .heartbeat_interval(Duration::from_millis(200))
                .unresponsive_timeout(Duration::from_millis(800))
        },
        Duration::from_secs(3),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_join_returns_only_once_the_group_subscription_is_live() {
    let (_backend, link, a, b) = servers().await;
    let b_dyn: Arc<dyn HubLifetimeManager> = b.clone();
    let mut first = TestClient::connect(&b_dyn).await;
    let mut second = TestClient::connect(&b_dyn).await;
    let mut third = TestClient::connect(&b_dyn).await;
    let mut fourth = TestClient::connect(&b_dyn).await;
    // From now on every SUBSCRIBE b sends takes a second to reach Redis.
    link.set_delay(Duration::from_secs(1));

    // A local join after a first member whose subscription is on its way.
    let first_join = tokio::spawn({
        let (b, id) = (b.clone(), first.id().clone());
        async move { b.add_to_group(&id, "local").await }
    });
    while b.store().group_len("local") == 0 {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    b.add_to_group(second.id(), "local").await.unwrap();
    a.send_group("local", &message("m", ("to local",)))
        .await
        .unwrap();
    assert_eq!(second.recv().await.arguments[0], "to local");
    first_join.await.unwrap().unwrap();
    assert_eq!(first.recv().await.arguments[0], "to local");

    // The same for a join made from the other server.
    let third_join = tokio::spawn({
        let (b, id) = (b.clone(), third.id().clone());
        async move { b.add_to_group(&id, "remote").await }
    });
    while b.store().group_len("remote") == 0 {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    a.add_to_group(fourth.id(), "remote").await.unwrap();
    a.send_group("remote", &message("m", ("to remote",)))
        .await
        .unwrap();
    assert_eq!(fourth.recv().await.arguments[0], "to remote");
    third_join.await.unwrap().unwrap();
    assert_eq!(third.recv().await.arguments[0], "to remote");
}

/// Sends to a local connection skip Redis; group, user and broadcast
/// sends go through it. So a connection can see a group message after a
/// direct message sent later by the same server (as in SignalR), while the
/// sends that go through Redis keep their order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_local_direct_send_can_overtake_an_earlier_group_send() {
    let (_backend, link, _a, b) = servers().await;
    let b_dyn: Arc<dyn HubLifetimeManager> = b.clone();
    let mut client = TestClient::connect(&b_dyn).await;
    b.add_to_group(client.id(), "room").await.unwrap();
    // What Redis pushes to b's subscriber connection takes 1.5 s more: far
    // longer than the sends below take, however loaded the machine.
    link.set_subscriber_delay(Duration::from_millis(1500));

    for i in 0..3 {
        b.send_group("room", &message("m", (format!("group {i}"),)))
            .await
            .unwrap();
    }
    b.send_connection(client.id(), &message("m", ("direct",)))
        .await
        .unwrap();
    let mut order = Vec::new();
    for _ in 0..4 {
        let received = client.recv().await;
        order.push(received.arguments[0].as_str().unwrap().to_owned());
    }
    assert_eq!(order, ["direct", "group 0", "group 1", "group 2"]);
}

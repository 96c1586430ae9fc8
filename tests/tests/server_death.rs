//! A server process dies (SIGKILL) while another server waits on it: the
//! waiting operations fail with clear errors within their timeouts, and the
//! surviving servers keep serving.

#![allow(clippy::unwrap_used, missing_docs)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use switchboard_core::{Error, HubContext, HubLifetimeManager, InvokeOptions};
use switchboard_redis::{RedisHubLifetimeManager, RedisOptions};
use switchboard_tests::node::Node;
use switchboard_tests::redis_cluster::redis_cluster_url;
use switchboard_tests::{TestClient, init_logging, message, redis_url};

const NODE: &str = env!("CARGO_BIN_EXE_switchboard-node");

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiting_on_a_dead_server_fails_cleanly() {
    waiting_on_a_dead_server_fails_cleanly_on(&redis_url()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiting_on_a_dead_server_fails_cleanly_on_a_cluster() {
    waiting_on_a_dead_server_fails_cleanly_on(&redis_cluster_url()).await;
}

async fn waiting_on_a_dead_server_fails_cleanly_on(url: &str) {
    init_logging();
    let hub = format!("death-{}", switchboard_core::random_token());
    let ack_timeout = Duration::from_secs(2);
    let survivor = |name: &str| {
        RedisOptions::new(url)
            .hub(hub.clone())
            .server_name(format!("{name}-{}", switchboard_core::random_token()))
            .ack_timeout(ack_timeout)
    };
    let s1: Arc<dyn HubLifetimeManager> = Arc::new(
        RedisHubLifetimeManager::connect(survivor("s1"))
            .await
            .unwrap(),
    );
    let s2: Arc<dyn HubLifetimeManager> = Arc::new(
        RedisHubLifetimeManager::connect(survivor("s2"))
            .await
            .unwrap(),
    );
    let mut local = TestClient::connect(&s1).await;
    let mut other = TestClient::connect(&s2).await;

    // --- a remote add_to_group in flight when its owner dies
    let mut doomed = Node::start_on(NODE, url, &hub).await;
    let target = doomed.connect("victim", "victim-user").await;
    // Frozen first, so the command is delivered but never acknowledged.
    doomed.signal("-STOP");
    let pending = tokio::spawn({
        let s1 = s1.clone();
        let target = target.clone();
        async move {
            let started = Instant::now();
            (s1.add_to_group(&target, "room").await, started.elapsed())
        }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    doomed.kill().await;
    let (result, took) = pending.await.unwrap();
    match result {
        Err(Error::AckTimeout { connection_id, .. }) => assert_eq!(connection_id, target),
        other => panic!("expected AckTimeout, got {other:?}"),
    }
    assert!(took < ack_timeout + Duration::from_secs(2), "took {took:?}");
    println!("pending add_to_group failed after {took:?}");

    // Once the dead server's subscriptions are gone, the same call fails at once.
    let started = Instant::now();
    let again = s1.add_to_group(&target, "room").await;
    assert!(
        matches!(again, Err(Error::ConnectionNotFound { .. })),
        "{again:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(1));

    // --- a client result in flight when the client's server dies
    let mut doomed = Node::start_on(NODE, url, &hub).await;
    let target = doomed.connect("asked", "asked-user").await;
    let result_timeout = Duration::from_secs(2);
    let pending = tokio::spawn({
        let context = HubContext::new(s1.clone());
        let target = target.clone();
        async move {
            let started = Instant::now();
            let result: switchboard_core::Result<String> = context
                .client(target.as_str())
                .invoke_with(
                    "ask",
                    ("anyone there?",),
                    InvokeOptions::timeout(result_timeout),
                )
                .await;
            (result, started.elapsed())
        }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    doomed.kill().await;
    let (result, took) = pending.await.unwrap();
    match result {
        Err(e @ Error::ClientResultTimeout { .. }) => {
            assert!(e.to_string().contains(&target), "{e}");
        }
        other => panic!("expected ClientResultTimeout, got {other:?}"),
    }
    assert!(
        took < result_timeout + Duration::from_secs(2),
        "took {took:?}"
    );
    println!("pending client result failed after {took:?}");

    // --- the survivors keep serving, locally and across the backplane
    s1.send_all(&message("m", ("still here",))).await.unwrap();
    assert!(
        local
            .recv_marked("still here", Duration::from_secs(5))
            .await
            .is_some()
    );
    assert!(
        other
            .recv_marked("still here", Duration::from_secs(5))
            .await
            .is_some()
    );
    s2.add_to_group(local.id(), "after").await.unwrap();
    s2.send_group("after", &message("m", ("group after",)))
        .await
        .unwrap();
    assert!(
        local
            .recv_marked("group after", Duration::from_secs(5))
            .await
            .is_some()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_forgets_a_dead_server() {
    presence_forgets_a_dead_server_on(&redis_url()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_forgets_a_dead_server_on_a_cluster() {
    presence_forgets_a_dead_server_on(&redis_cluster_url()).await;
}

/// A frozen server is reported as unanswered within the presence timeout;
/// once killed, its connections leave presence as soon as Redis drops its
/// connections, and answers are complete again.
async fn presence_forgets_a_dead_server_on(url: &str) {
    init_logging();
    let hub = format!("presence-death-{}", switchboard_core::random_token());
    let presence_timeout = Duration::from_secs(2);
    let survivor: Arc<dyn HubLifetimeManager> = Arc::new(
        RedisHubLifetimeManager::connect(
            RedisOptions::new(url)
                .hub(hub.clone())
                .presence_timeout(presence_timeout),
        )
        .await
        .unwrap(),
    );
    let local = TestClient::connect_user(&survivor, "ada").await;
    let mut doomed = Node::start_on(NODE, url, &hub).await;
    let remote = doomed.connect("remote", "ada").await;
    assert_eq!(doomed.run("join remote room").await, "ok");

    let presence = survivor.user_connections("ada", 10).await.unwrap();
    assert!(presence.is_complete());
    assert_eq!(presence.count, 2);
    assert!(presence.connections.iter().any(|id| id.as_str() == remote));
    assert_eq!(survivor.group_members("room", 10).await.unwrap().count, 1);

    // Frozen: alive to Redis, but it answers nothing.
    doomed.signal("-STOP");
    let started = Instant::now();
    let presence = survivor.user_connections("ada", 10).await.unwrap();
    let took = started.elapsed();
    assert_eq!(presence.unanswered, 1, "{presence:?}");
    assert_eq!(presence.connections, vec![local.id().clone()]);
    assert!(
        took < presence_timeout + Duration::from_secs(2),
        "took {took:?}"
    );
    assert!(
        survivor.is_user_online("ada").await.unwrap(),
        "the local connection answers"
    );
    match survivor.group_members("room", 10).await {
        Ok(group) => assert_eq!((group.count, group.unanswered), (0, 1)),
        Err(e) => panic!("expected an incomplete answer, got {e}"),
    }
    println!("a frozen server was reported unanswered after {took:?}");

    // Killed: Redis drops its connections, and with them its subscriptions.
    doomed.kill().await;
    let killed = Instant::now();
    let deadline = killed + Duration::from_secs(10);
    loop {
        let presence = survivor.user_connections("ada", 10).await.unwrap();
        if presence.is_complete() {
            assert_eq!(presence.connections, vec![local.id().clone()]);
            break;
        }
        assert!(Instant::now() < deadline, "still unanswered: {presence:?}");
    }
    let group = survivor.group_members("room", 10).await.unwrap();
    assert_eq!((group.count, group.unanswered), (0, 0));
    assert!(survivor.is_user_online("ada").await.unwrap());
    println!("a killed server left presence after {:?}", killed.elapsed());
}

//! Group changes for connections of another server: applied concurrently by
//! their owner (in order per connection), and refused at once, not after
//! the acknowledgement timeout, when the owner has too many waiting.
//!
//! Server `a` reaches Redis directly; the owner `b` through a slow link
//! (`switchboard_tests::proxy::FaultyLink`), so that each group change it
//! applies waits a while for its subscription.

#![allow(clippy::unwrap_used, missing_docs)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::future::join_all;
use switchboard_core::{Error, HubLifetimeManager};
use switchboard_redis::{RedisHubLifetimeManager, RedisOptions};
use switchboard_tests::proxy::FaultyLink;
use switchboard_tests::{RedisBackend, TestClient, message};

/// `a`, and `b` behind a link with `delay` each way, `b` configured by
/// `options`; `n` connections on `b`.
async fn setup(
    delay: Duration,
    n: usize,
    options: impl Fn(RedisOptions) -> RedisOptions,
) -> (
    FaultyLink,
    Arc<dyn HubLifetimeManager>,
    Arc<RedisHubLifetimeManager>,
    Vec<TestClient>,
) {
    let backend = RedisBackend::new();
    let link = FaultyLink::in_front_of(backend.url()).await;
    let a: Arc<dyn HubLifetimeManager> = Arc::new(backend.connect().await);
    // Slow, not down: publishes and subscription changes get 10 s.
    let b_options = options(
        backend
            .options_at(&link.url())
            .publish_timeout(Duration::from_secs(10)),
    );
    let b = Arc::new(RedisHubLifetimeManager::connect(b_options).await.unwrap());
    let b_dyn: Arc<dyn HubLifetimeManager> = b.clone();
    let mut clients = Vec::new();
    for _ in 0..n {
        clients.push(TestClient::connect(&b_dyn).await);
    }
    link.set_delay(delay);
    (link, a, b, clients)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remote_group_changes_are_applied_concurrently() {
    let (_link, a, b, mut clients) = setup(Duration::from_secs(1), 20, |o| o).await;
    // Twenty adds, each of a connection to a group of its own, each group
    // new to b: every one waits for a subscription over the slow link.
    let adds = clients.iter().enumerate().map(|(i, client)| {
        let (a, id) = (a.clone(), client.id().clone());
        async move { a.add_to_group(&id, &format!("g{i}")).await }
    });
    let adds = tokio::spawn(join_all(adds));
    // All twenty are applied before the first of them is acknowledged:
    // none waits for another's subscription.
    let deadline = Instant::now() + Duration::from_secs(20);
    while (0..20).any(|i| b.store().group_len(&format!("g{i}")) == 0) {
        assert!(
            !adds.is_finished(),
            "an add was acknowledged before every add was applied: they ran one at a time"
        );
        assert!(Instant::now() < deadline, "the adds never all arrived");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(!adds.is_finished());
    for result in adds.await.unwrap() {
        result.unwrap();
    }
    // And each is live.
    for (i, client) in clients.iter_mut().enumerate() {
        a.send_group(&format!("g{i}"), &message("m", (i,)))
            .await
            .unwrap();
        assert_eq!(client.recv().await.arguments[0], i);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_connections_changes_keep_their_order() {
    let (_link, a, b, mut clients) = setup(Duration::from_millis(100), 1, |o| o).await;
    let id = clients[0].id().clone();
    // Issued at once, in this order, by one caller: add, remove, add,
    // remove, ... add. The owner applies them in order, so the connection
    // ends in the group.
    let changes = (0..7).map(|i| {
        let (a, id) = (a.clone(), id.clone());
        async move {
            if i % 2 == 0 {
                a.add_to_group(&id, "room").await
            } else {
                a.remove_from_group(&id, "room").await
            }
        }
    });
    for result in join_all(changes).await {
        result.unwrap();
    }
    assert_eq!(b.store().group_len("room"), 1);
    a.send_group("room", &message("m", ("in order",)))
        .await
        .unwrap();
    assert_eq!(clients[0].recv().await.arguments[0], "in order");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_past_the_owners_bound_are_refused_at_once() {
    let (_link, a, _b, clients) = setup(Duration::from_millis(500), 40, |o| {
        o.max_pending_group_commands(8)
    })
    .await;
    let started = Instant::now();
    let adds = clients.iter().enumerate().map(|(i, client)| {
        let (a, id) = (a.clone(), client.id().clone());
        async move {
            let result = a.add_to_group(&id, &format!("g{i}")).await;
            (result, started.elapsed())
        }
    });
    let (mut applied, mut refused) = (0, 0);
    for (result, took) in join_all(adds).await {
        match result {
            Ok(()) => applied += 1,
            Err(Error::GroupCommandRejected { reason }) => {
                assert!(reason.contains("group changes waiting"), "{reason}");
                // An answer, not the 10 s acknowledgement timeout.
                assert!(took < Duration::from_secs(8), "refused only after {took:?}");
                refused += 1;
            }
            Err(other) => panic!("{other:?}"),
        }
    }
    println!("{applied} applied, {refused} refused");
    assert!(applied >= 8, "{applied} applied");
    assert!(refused > 0, "nothing was refused");
    assert_eq!(applied + refused, 40);
}

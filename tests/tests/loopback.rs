//! The scale-out engine's failure handling on the in-process loopback
//! driver, without Redis: a driver that goes down and comes back, and
//! subscriptions the backplane drops by itself. The engine must fail sends
//! fast, keep local state, and restore every subscription it still needs.

#![allow(clippy::unwrap_used, missing_docs)]

use std::sync::Arc;
use std::time::Duration;

use switchboard_backplane::{BackplaneDriver, LoopbackDriver, ScaleOutManager};
use switchboard_core::{Error, HubLifetimeManager};
use switchboard_tests::{LoopbackBackend, TestClient, message};

type Server = Arc<ScaleOutManager<LoopbackDriver>>;

async fn servers(backend: &LoopbackBackend) -> (Server, Server) {
    (
        Arc::new(backend.connect().await),
        Arc::new(backend.connect().await),
    )
}

fn dynamic(server: &Server) -> Arc<dyn HubLifetimeManager> {
    server.clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_driver_that_goes_down_fails_sends_keeps_state_and_restores_everything() {
    let backend = LoopbackBackend::new();
    let (s1, s2) = servers(&backend).await;
    let mut member = TestClient::connect_user(&dynamic(&s2), "alice").await;
    s2.add_to_group(member.id(), "room").await.unwrap();

    s2.driver().set_connected(false);
    // Sends through the backplane fail at once; local ones still work.
    assert!(matches!(
        s2.send_all(&message("m", ("down",))).await,
        Err(Error::BackplaneUnavailable { .. })
    ));
    s2.send_connection(member.id(), &message("m", ("local",)))
        .await
        .unwrap();
    assert!(
        member
            .recv_marked("local", Duration::from_secs(5))
            .await
            .is_some()
    );
    // Local changes are kept while the backplane is away.
    let mut late = TestClient::connect_user(&dynamic(&s2), "bob").await;
    s2.add_to_group(late.id(), "late-room").await.unwrap();
    // Nothing on the bus reaches server 2 meanwhile.
    let room = s2.channels().group("room");
    assert_eq!(backend.bus().subscribers(&room), 0);

    s2.driver().set_connected(true);
    let s1_ref = &s1;
    let limit = Duration::from_secs(10);
    member
        .until_delivered("group", limit, |marker| async move {
            s1_ref.send_group("room", &message("m", (marker,))).await
        })
        .await;
    late.until_delivered("late-group", limit, |marker| async move {
        s1_ref
            .send_group("late-room", &message("m", (marker,)))
            .await
    })
    .await;
    late.until_delivered("user", limit, |marker| async move {
        s1_ref.send_user("bob", &message("m", (marker,))).await
    })
    .await;
    // The connection channel is back too: a remote group change arrives.
    s1.add_to_group(member.id(), "more").await.unwrap();
    s1.send_group("more", &message("m", ("more",)))
        .await
        .unwrap();
    assert!(
        member
            .recv_marked("more", Duration::from_secs(5))
            .await
            .is_some()
    );
    let stats = s2.stats();
    assert!(stats.backplane_publish_errors >= 1, "{stats:?}");
    assert_eq!(stats.backplane_reconnects, 1, "{stats:?}");
    assert!(stats.backplane_resyncs >= 1, "{stats:?}");
    // all, ack, return; two connections; room, late-room, more; alice, bob.
    assert_eq!(stats.backplane_subscriptions, 3 + 2 + 3 + 2, "{stats:?}");
    assert_eq!(
        (stats.sends_all, stats.sends_connection),
        (1, 1),
        "{stats:?}"
    );
    let sender = s1.stats();
    assert!(
        sender.sends_group >= 3 && sender.sends_user >= 1,
        "{sender:?}"
    );
    assert_eq!(sender.backplane_reconnects, 0, "{sender:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscriptions_dropped_by_the_backplane_are_restored_when_still_needed() {
    let backend = LoopbackBackend::new();
    let (s1, s2) = servers(&backend).await;
    let mut member = TestClient::connect(&dynamic(&s2)).await;
    s2.add_to_group(member.id(), "room").await.unwrap();
    let room = s2.channels().group("room");
    let left = s2.channels().group("left");
    let all = s2.channels().all();
    // A group server 2 no longer has members in.
    let gone = TestClient::connect(&dynamic(&s2)).await;
    s2.add_to_group(gone.id(), "left").await.unwrap();
    s2.remove_from_group(gone.id(), "left").await.unwrap();
    assert_eq!(backend.bus().subscribers(&left), 0);

    let before = backend.bus().subscribers(&all);
    s2.driver()
        .drop_subscriptions(vec![room.clone(), left.clone(), all.clone()]);
    let s1_ref = &s1;
    member
        .until_delivered("room", Duration::from_secs(10), |marker| async move {
            s1_ref.send_group("room", &message("m", (marker,))).await
        })
        .await;
    member
        .until_delivered("all", Duration::from_secs(10), |marker| async move {
            s1_ref.send_all(&message("m", (marker,))).await
        })
        .await;
    assert_eq!(backend.bus().subscribers(&room), 1);
    assert_eq!(backend.bus().subscribers(&all), before);
    // Not subscribed again: nobody on server 2 needs it.
    assert_eq!(backend.bus().subscribers(&left), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_on_the_bus_is_counted_and_dropped() {
    let backend = LoopbackBackend::new();
    let (s1, s2) = servers(&backend).await;
    let mut member = TestClient::connect(&dynamic(&s2)).await;
    s2.add_to_group(member.id(), "room").await.unwrap();
    let intruder = backend.bus().driver();
    let room = s2.channels().group("room");
    for junk in [&b"\xff\x00garbage"[..], b"", b"\x0a\x03abc"] {
        let delivered = intruder
            .publish(room.clone(), bytes::Bytes::copy_from_slice(junk))
            .await
            .unwrap();
        assert_eq!(delivered, Some(1));
    }
    s1.send_group("room", &message("m", ("valid",)))
        .await
        .unwrap();
    assert!(
        member
            .recv_marked("valid", Duration::from_secs(5))
            .await
            .is_some()
    );
    assert_eq!(s2.stats().backplane_malformed, 3);
}

//! Garbage published on the hub's channels by a plain Redis client is
//! dropped and counted, while valid traffic on the same channels keeps
//! arriving.

#![allow(clippy::unwrap_used, missing_docs)]

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use fred::interfaces::{ClientLike, PubsubInterface};
use switchboard_core::{HubLifetimeManager, ManagerStats};
use switchboard_protocol as wire;
use switchboard_redis::RedisHubLifetimeManager;
use switchboard_tests::{RedisBackend, TestClient, init_logging, message, redis_url};

const LIMIT: usize = 64 * 1024;

async fn raw_client() -> fred::clients::Client {
    let config = fred::types::config::Config::from_url(&redis_url()).unwrap();
    let client = fred::types::Builder::from_config(config).build().unwrap();
    client.init().await.unwrap();
    client
}

/// Waits until `f(stats)` holds; panics with the stats after 5 s.
async fn eventually(
    manager: &RedisHubLifetimeManager,
    what: &str,
    f: impl Fn(&ManagerStats) -> bool,
) {
    for _ in 0..100 {
        if f(&manager.stats()) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{what}: {:?}", manager.stats());
}

/// Pseudo-random bytes from a fixed seed (xorshift), so failures reproduce.
fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.max(1);
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_on_every_channel_is_dropped_and_counted() {
    init_logging();
    let backend = RedisBackend::new();
    let sender = backend.connect().await;
    let receiver = RedisHubLifetimeManager::connect(backend.options().max_envelope_size(LIMIT))
        .await
        .unwrap();
    let receiver_dyn: Arc<dyn HubLifetimeManager> = Arc::new(receiver.clone());
    let mut client = TestClient::connect_user(&receiver_dyn, "garbage-user").await;
    receiver.add_to_group(client.id(), "room").await.unwrap();

    let channels = receiver.channels().clone();
    let targets = [
        channels.all(),
        channels.group("room"),
        channels.user("garbage-user"),
        channels.connection(client.id()),
        channels.ack(receiver.server_name()),
        channels.client_return(receiver.server_name()),
    ];

    let valid_invocation = wire::encode_body(wire::Body::Invocation(wire::Invocation {
        messages: vec![wire::SerializedMessage {
            protocol: "json".into(),
            payload: Bytes::from_static(b"{\"type\":1,\"target\":\"m\",\"arguments\":[\"x\"]}\x1e"),
        }],
        ..Default::default()
    }));
    let oversized = wire::encode_body(wire::Body::Invocation(wire::Invocation {
        messages: vec![wire::SerializedMessage {
            protocol: "json".into(),
            payload: Bytes::from(vec![b' '; LIMIT * 2]),
        }],
        ..Default::default()
    }));
    let ten_megabytes = Bytes::from(noise(99, 10 * 1024 * 1024));
    // Bodies of the wrong kind for each channel: an ack where invocations
    // go, an invocation where acks go, a group command on a group channel.
    let client_id = client.id().to_string();
    let wrong_kind = |channel: &str| -> Bytes {
        if channel.contains(":internal:") {
            valid_invocation.clone()
        } else if channel.ends_with(":group:room") {
            wire::encode_body(wire::Body::GroupCommand(wire::GroupCommand {
                id: 1,
                server: "elsewhere".into(),
                action: wire::Action::Add as i32,
                group: "room".into(),
                connection_id: client_id.clone(),
            }))
        } else {
            wire::encode_body(wire::Body::Ack(wire::Ack {
                id: 7,
                ..wire::Ack::default()
            }))
        }
    };
    let truncated = valid_invocation.slice(..valid_invocation.len() - 3);
    // A length-delimited field that declares far more bytes than follow.
    let lying_length = Bytes::from_static(&[0x0a, 0xff, 0xff, 0xff, 0x0f, 0x01, 0x02]);

    let raw = raw_client().await;
    let before = receiver.stats();
    let mut malformed_sent = 0u64;
    let mut oversize_sent = 0u64;
    for (round, channel) in targets.iter().enumerate() {
        let garbage: Vec<(Bytes, bool)> = vec![
            (Bytes::from(noise(round as u64 + 1, 200)), false),
            (Bytes::new(), false),
            (truncated.clone(), false),
            (lying_length.clone(), false),
            (wrong_kind(channel), false),
            (oversized.clone(), true),
            (ten_megabytes.clone(), true),
        ];
        for (payload, too_big) in garbage {
            let _: i64 = raw.publish(channel.as_str(), payload).await.unwrap();
            if too_big {
                oversize_sent += 1;
            } else {
                malformed_sent += 1;
            }
            // Valid traffic on the same channels keeps arriving in between.
            let marker = format!("valid-{round}-{malformed_sent}-{oversize_sent}");
            sender
                .send_group("room", &message("m", (marker.clone(),)))
                .await
                .unwrap();
            let got = client.recv_marked(&marker, Duration::from_secs(5)).await;
            assert!(
                got.is_some(),
                "{marker} did not arrive after garbage on {channel}"
            );
        }
    }

    eventually(&receiver, "every garbage message counted", |s| {
        s.backplane_malformed - before.backplane_malformed == malformed_sent
            && s.backplane_oversize - before.backplane_oversize == oversize_sent
    })
    .await;
    let after = receiver.stats();
    // Garbage on the `all` channel also reached the sender, which counted it too.
    assert!(sender.stats().backplane_malformed >= 5);
    assert!(after.backplane_received > before.backplane_received);
    assert_eq!(after.backplane_lagged, 0);

    // The connection, its group and its user still work afterwards.
    sender
        .send_user("garbage-user", &message("m", ("after-user",)))
        .await
        .unwrap();
    assert!(
        client
            .recv_marked("after-user", Duration::from_secs(5))
            .await
            .is_some()
    );
    sender
        .send_connection(client.id(), &message("m", ("after-conn",)))
        .await
        .unwrap();
    assert!(
        client
            .recv_marked("after-conn", Duration::from_secs(5))
            .await
            .is_some()
    );
    let _ = raw.quit().await;
}

//! The chat hub's contract, method by method, as the table on
//! [`chat_hub`] states it: with in-memory test clients
//! (`switchboard-testing`), on the in-memory manager (one server) and on two
//! Redis managers (two servers sharing `$SWITCHBOARD_REDIS_URL`, which
//! `cargo xtask test` sets).

#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use serde::Deserialize;
use switchboard_core::protocol::Protocol;
use switchboard_core::{Hub, HubLifetimeManager, InMemoryHubLifetimeManager};
use switchboard_redis::{RedisHubLifetimeManager, RedisOptions};
use switchboard_testing::{TestClient, TestError};

use crate::hub::chat_hub;

/// The two servers of a test: on one manager in memory, the same hub twice.
struct Servers {
    a: Hub,
    b: Hub,
}

impl Servers {
    fn in_memory() -> Servers {
        let hub = chat_hub(Arc::new(InMemoryHubLifetimeManager::new()));
        Servers {
            a: hub.clone(),
            b: hub,
        }
    }

    /// Two servers on one Redis; a hub name of their own, so that tests
    /// running at once do not hear each other.
    async fn redis() -> Servers {
        let url = std::env::var("SWITCHBOARD_REDIS_URL").expect(
            "SWITCHBOARD_REDIS_URL names the Redis these tests use (cargo xtask test sets it)",
        );
        let name = format!("chat-test-{}", switchboard_core::random_token());
        let server = || async {
            let manager = RedisHubLifetimeManager::connect(RedisOptions::new(&url).hub(&name))
                .await
                .expect("Redis is reachable");
            let manager: Arc<dyn HubLifetimeManager> = Arc::new(manager);
            chat_hub(manager)
        };
        Servers {
            a: server().await,
            b: server().await,
        }
    }

    async fn on_a(&self) -> TestClient {
        TestClient::connect(&self.a).await.expect("connects")
    }

    async fn on_b(&self) -> TestClient {
        TestClient::connect(&self.b).await.expect("connects")
    }

    async fn user_on(&self, hub: &Hub, user: &str) -> TestClient {
        TestClient::builder(hub)
            .user(user)
            .connect()
            .await
            .expect("connects")
    }
}

/// The next `message(from, text)` the client gets.
async fn message(client: &mut TestClient) -> (String, String) {
    client.on("message").await.expect("a message arrives")
}

/// Sends `marker` to `client` alone, from `via`, and checks that it is the
/// next message `client` gets: whatever `via` sent it before has arrived,
/// so nothing else is on its way.
async fn nothing_else_for(client: &mut TestClient, via: &mut TestClient, marker: &str) {
    let id = client.id().to_string();
    via.invoke::<()>("SendConnection", (id, marker))
        .await
        .unwrap();
    assert_eq!(message(client).await.1, marker);
}

async fn broadcast(servers: Servers) {
    let mut a = servers.on_a().await;
    let mut b = servers.on_b().await;
    a.invoke::<()>("Broadcast", ("hello",)).await.unwrap();
    let from_a = a.id().to_string();
    assert_eq!(message(&mut b).await, (from_a.clone(), "hello".to_owned()));
    assert_eq!(message(&mut a).await, (from_a, "hello".to_owned()));
}

async fn broadcast_others(servers: Servers) {
    let mut a = servers.on_a().await;
    let mut b = servers.on_b().await;
    a.invoke::<()>("BroadcastOthers", ("not for a",))
        .await
        .unwrap();
    assert_eq!(message(&mut b).await.1, "not for a");
    nothing_else_for(&mut a, &mut b, "marker").await;
}

async fn join_and_leave(servers: Servers) {
    let mut member = servers.on_a().await;
    let mut sender = servers.on_b().await;
    member.invoke::<()>("Join", ("room",)).await.unwrap();
    sender
        .invoke::<()>("SendGroup", ("room", "joined"))
        .await
        .unwrap();
    assert_eq!(message(&mut member).await.1, "joined");
    member.invoke::<()>("Leave", ("room",)).await.unwrap();
    sender
        .invoke::<()>("SendGroup", ("room", "left"))
        .await
        .unwrap();
    nothing_else_for(&mut member, &mut sender, "marker").await;
}

async fn add_to_group_and_remove_from_group(servers: Servers) {
    let mut caller = servers.on_a().await;
    let mut member = servers.on_b().await;
    let id = member.id().to_string();
    caller
        .invoke::<()>("AddToGroup", (&id, "room"))
        .await
        .unwrap();
    caller
        .invoke::<()>("SendGroup", ("room", "added"))
        .await
        .unwrap();
    assert_eq!(message(&mut member).await.1, "added");
    caller
        .invoke::<()>("RemoveFromGroup", (&id, "room"))
        .await
        .unwrap();
    caller
        .invoke::<()>("SendGroup", ("room", "removed"))
        .await
        .unwrap();
    nothing_else_for(&mut member, &mut caller, "marker").await;
    // A connection that exists nowhere is an error, not a silent no-op.
    let unknown = caller
        .invoke::<()>("AddToGroup", ("no-such-connection", "room"))
        .await;
    assert!(
        matches!(&unknown, Err(TestError::Hub(error)) if error.contains("does not exist")),
        "{unknown:?}"
    );
}

async fn send_group_and_send_group_others(servers: Servers) {
    let mut a = servers.on_a().await;
    let mut b = servers.on_b().await;
    let mut outsider = servers.on_b().await;
    a.invoke::<()>("Join", ("room",)).await.unwrap();
    b.invoke::<()>("Join", ("room",)).await.unwrap();
    a.invoke::<()>("SendGroup", ("room", "to all"))
        .await
        .unwrap();
    assert_eq!(message(&mut a).await.1, "to all");
    assert_eq!(message(&mut b).await.1, "to all");
    a.invoke::<()>("SendGroupOthers", ("room", "to the others"))
        .await
        .unwrap();
    assert_eq!(message(&mut b).await.1, "to the others");
    nothing_else_for(&mut a, &mut b, "marker for a").await;
    nothing_else_for(&mut outsider, &mut a, "marker for the outsider").await;
}

async fn send_user(servers: Servers) {
    let mut sender = servers.user_on(&servers.a, "alice").await;
    let mut bob_on_a = servers.user_on(&servers.a, "bob").await;
    let mut bob_on_b = servers.user_on(&servers.b, "bob").await;
    sender
        .invoke::<()>("SendUser", ("bob", "hi bob"))
        .await
        .unwrap();
    let expected = ("alice".to_owned(), "hi bob".to_owned());
    assert_eq!(message(&mut bob_on_a).await, expected);
    assert_eq!(message(&mut bob_on_b).await, expected);
    nothing_else_for(&mut sender, &mut bob_on_b, "marker").await;
}

async fn send_connection(servers: Servers) {
    let mut a = servers.on_a().await;
    let mut b = servers.on_b().await;
    let mut other = servers.on_b().await;
    a.invoke::<()>("SendConnection", (b.id().to_string(), "just you"))
        .await
        .unwrap();
    assert_eq!(message(&mut b).await.1, "just you");
    nothing_else_for(&mut other, &mut a, "marker").await;
}

async fn who_am_i(servers: Servers) {
    #[derive(Debug, PartialEq, Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Who {
        connection_id: String,
        user: Option<String>,
    }
    let mut alice = servers.user_on(&servers.b, "alice").await;
    let who: Who = alice.invoke("WhoAmI", ()).await.unwrap();
    assert_eq!(
        who,
        Who {
            connection_id: alice.id().to_string(),
            user: Some("alice".to_owned()),
        }
    );
    let mut anonymous = servers.on_a().await;
    let who: Who = anonymous.invoke("WhoAmI", ()).await.unwrap();
    assert_eq!(who.user, None);
}

async fn ask_client(servers: Servers) {
    let mut asker = servers.on_a().await;
    let asked = servers.on_b().await;
    asked.answer("ask", |(question,): (String,)| {
        format!("answer to {question}")
    });
    let answer: String = asker
        .invoke("AskClient", (asked.id().to_string(), "why"))
        .await
        .unwrap();
    assert_eq!(answer, "answer to why");
}

async fn count(servers: Servers) {
    let mut client = servers.on_b().await;
    let items: Vec<u64> = client.stream("Count", (5,)).await.unwrap();
    assert_eq!(items, vec![1, 2, 3, 4, 5]);
}

async fn sum(servers: Servers) {
    let mut client = servers.on_a().await;
    let total: i64 = client
        .invoke_with_upload("Sum", (), 1..=100i64)
        .await
        .unwrap();
    assert_eq!(total, 5050);
}

/// The binary protocol on one side, JSON on the other.
async fn messagepack(servers: Servers) {
    let mut a = TestClient::builder(&servers.a)
        .protocol(Protocol::MessagePack)
        .connect()
        .await
        .unwrap();
    let mut b = servers.on_b().await;
    b.invoke::<()>("Broadcast", ("across protocols",))
        .await
        .unwrap();
    assert_eq!(message(&mut a).await.1, "across protocols");
    let items: Vec<u64> = a.stream("Count", (3,)).await.unwrap();
    assert_eq!(items, vec![1, 2, 3]);
}

macro_rules! on_every_manager {
    ($($scenario:ident),* $(,)?) => {
        mod in_memory {
            $(
                #[tokio::test]
                async fn $scenario() {
                    super::$scenario(super::Servers::in_memory()).await;
                }
            )*
        }

        mod two_redis_servers {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $scenario() {
                    super::$scenario(super::Servers::redis().await).await;
                }
            )*
        }
    };
}

on_every_manager!(
    broadcast,
    broadcast_others,
    join_and_leave,
    add_to_group_and_remove_from_group,
    send_group_and_send_group_others,
    send_user,
    send_connection,
    who_am_i,
    ask_client,
    count,
    sum,
    messagepack,
);

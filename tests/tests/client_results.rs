//! Client results under races: invocations racing disconnects, callers
//! that give up. Every call resolves, and neither the caller's nor the
//! owner's table of pending calls keeps anything behind.

#![allow(clippy::unwrap_used, missing_docs)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::future::join_all;
use switchboard_core::protocol::Protocol;
use switchboard_core::{
    Error, HubLifetimeManager, InMemoryHubLifetimeManager, InvocationIds, InvokeOptions,
    ManagerStats, SerializedMessage,
};
use switchboard_tests::{Backend, RedisBackend, TestClient, within};

/// Every call must resolve within this, whatever it races with.
const RESOLVE_BOUND: Duration = Duration::from_secs(2);

fn ask(ids: &InvocationIds) -> (String, SerializedMessage) {
    let id = ids.next_id();
    let message =
        SerializedMessage::invocation_with_id(&Protocol::ALL, Some(&id), "ask", &("q",)).unwrap();
    (id, message)
}

/// Waits until `stats` says nothing is pending or forwarded.
async fn until_empty(what: &str, stats: impl Fn() -> ManagerStats) {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let now = stats();
        if now.pending_client_results == 0 && now.forwarded_client_results == 0 {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{what} still holds client-result calls: {now:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// `rounds` batches of `batch` connections on `owner`, each invoked from
/// `caller` while `owner` disconnects it. Each call must end, within
/// [`RESOLVE_BOUND`], with "disconnected" or "does not exist".
async fn invocations_race_disconnects(
    caller: &Arc<dyn HubLifetimeManager>,
    owner: &Arc<dyn HubLifetimeManager>,
    rounds: usize,
    batch: usize,
) {
    let ids = InvocationIds::new();
    for round in 0..rounds {
        let mut clients = Vec::with_capacity(batch);
        for _ in 0..batch {
            clients.push(TestClient::connect(owner).await);
        }
        let calls = clients.iter().enumerate().map(|(i, client)| {
            let (caller, owner) = (caller.clone(), owner.clone());
            let connection_id = client.id().clone();
            let (invocation_id, message) = ask(&ids);
            async move {
                let call = tokio::spawn({
                    let connection_id = connection_id.clone();
                    async move {
                        let options = InvokeOptions::default();
                        tokio::time::timeout(
                            RESOLVE_BOUND,
                            caller.invoke_connection(
                                &connection_id,
                                &invocation_id,
                                &message,
                                options,
                            ),
                        )
                        .await
                    }
                });
                // Spread the disconnects over the call's way there.
                for _ in 0..i % 7 {
                    tokio::task::yield_now().await;
                }
                owner.on_disconnected(&connection_id).await.unwrap();
                call.await.unwrap()
            }
        });
        for (i, outcome) in join_all(calls).await.into_iter().enumerate() {
            match outcome {
                Ok(Err(
                    Error::ConnectionDisconnected { .. } | Error::ConnectionNotFound { .. },
                )) => {}
                Ok(other) => panic!("round {round}, call {i}: {other:?}"),
                Err(_) => {
                    panic!("round {round}, call {i} did not resolve within {RESOLVE_BOUND:?}")
                }
            }
        }
        drop(clients);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_invocations_racing_disconnects_all_resolve() {
    let manager: Arc<dyn HubLifetimeManager> = Arc::new(InMemoryHubLifetimeManager::new());
    invocations_race_disconnects(&manager, &manager, 40, 250).await;
    until_empty("the manager", || manager.stats()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remote_invocations_racing_disconnects_all_resolve_and_leave_nothing() {
    let backend = RedisBackend::new();
    let caller = backend.server().await;
    let owner = backend.server().await;
    invocations_race_disconnects(&caller, &owner, 40, 250).await;
    until_empty("the owner", || owner.stats()).await;
    until_empty("the caller", || caller.stats()).await;
}

/// The same race on one Redis server: the call is local, the disconnect too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invocations_racing_disconnects_on_one_redis_server_all_resolve() {
    let backend = RedisBackend::new();
    let server = backend.server().await;
    invocations_race_disconnects(&server, &server, 20, 250).await;
    until_empty("the server", || server.stats()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_owner_forgets_calls_whose_caller_gave_up() {
    let backend = RedisBackend::new();
    let caller = backend.server().await;
    let owner = backend.server().await;
    // A client that never answers.
    let silent = TestClient::connect(&owner).await;
    let ids = InvocationIds::new();

    // Timed out.
    let calls = (0..1000).map(|_| {
        let (invocation_id, message) = ask(&ids);
        let (caller, id) = (caller.clone(), silent.id().clone());
        async move {
            caller
                .invoke_connection(
                    &id,
                    &invocation_id,
                    &message,
                    InvokeOptions::timeout(Duration::from_millis(10)),
                )
                .await
        }
    });
    for result in join_all(calls).await {
        assert!(
            matches!(result, Err(Error::ClientResultTimeout { .. })),
            "{result:?}"
        );
    }
    until_empty("the owner, after timeouts", || owner.stats()).await;

    // Cancelled, and dropped while waiting.
    let token = tokio_util::sync::CancellationToken::new();
    let mut cancelled = Vec::new();
    for _ in 0..100 {
        for options in [
            InvokeOptions::default().with_cancel(token.clone()),
            InvokeOptions::default(),
        ] {
            let (invocation_id, message) = ask(&ids);
            let (caller, id) = (caller.clone(), silent.id().clone());
            cancelled.push(tokio::spawn(async move {
                caller
                    .invoke_connection(&id, &invocation_id, &message, options)
                    .await
            }));
        }
    }
    // Until the owner holds all 200 calls, then give up on them.
    within(async {
        while owner.stats().forwarded_client_results < 200 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    token.cancel();
    for (i, call) in cancelled.into_iter().enumerate() {
        if i % 2 == 0 {
            assert!(matches!(call.await.unwrap(), Err(Error::Canceled)));
        } else {
            call.abort();
        }
    }
    until_empty("the owner, after cancellations", || owner.stats()).await;
    until_empty("the caller", || caller.stats()).await;
    drop(silent);
}

/// A caller whose cancellation never arrives (its server died, Redis
/// dropped the message): the owner forgets the call once the caller's
/// timeout, and a margin, have passed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_whose_caller_vanished_expires_at_the_owner() {
    use fred::interfaces::{ClientLike, PubsubInterface};
    use switchboard_protocol as wire;

    let backend = RedisBackend::new();
    let owner = Arc::new(backend.connect().await);
    let owner_dyn: Arc<dyn HubLifetimeManager> = owner.clone();
    let mut silent = TestClient::connect(&owner_dyn).await;

    // What a server named `vanished` sends for a call it waits 100 ms for;
    // it never sends anything again.
    let raw = fred::types::Builder::from_config(
        fred::types::config::Config::from_url(backend.url()).unwrap(),
    )
    .build()
    .unwrap();
    raw.init().await.unwrap();
    let (invocation_id, message) = ask(&InvocationIds::new());
    let envelope = wire::encode_body(wire::Body::Invocation(wire::Invocation {
        messages: message
            .iter()
            .map(|(protocol, payload)| wire::SerializedMessage {
                protocol: protocol.name().to_owned(),
                payload: payload.clone(),
            })
            .collect(),
        invocation_id,
        reply_server: "vanished".into(),
        result_timeout_ms: 100,
        ..wire::Invocation::default()
    }));
    let receivers: i64 = raw
        .publish(owner.channels().connection(silent.id()), envelope)
        .await
        .unwrap();
    assert_eq!(receivers, 1);
    assert_eq!(silent.recv().await.target, "ask");
    assert_eq!(owner.stats().forwarded_client_results, 1);
    // 100 ms, the 5 s margin, and the maintenance tick.
    let deadline = Instant::now() + Duration::from_secs(10);
    while owner.stats().forwarded_client_results > 0 {
        assert!(Instant::now() < deadline, "the call was never forgotten");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    raw.quit().await.unwrap();
}

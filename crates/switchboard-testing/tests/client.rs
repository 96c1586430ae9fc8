//! The test client against a hub in memory: every call of its API, the
//! errors it reports, and what the hub sees of it (connect and disconnect
//! hooks, the connection count).

#![allow(clippy::unwrap_used, missing_docs)]

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use parking_lot::Mutex;
use switchboard_core::protocol::Protocol;
use switchboard_core::{
    CallContext, Hub, HubError, HubLifetimeManager, InMemoryHubLifetimeManager, UploadStream,
};
use switchboard_testing::{TestClient, TestError};

/// The error of each disconnect, in order.
type Disconnects = Arc<Mutex<Vec<Option<String>>>>;

/// A hub that records its disconnects.
fn hub() -> (Hub, Disconnects, Arc<InMemoryHubLifetimeManager>) {
    let left = Arc::new(Mutex::new(Vec::new()));
    let manager = Arc::new(InMemoryHubLifetimeManager::new());
    let recorded = left.clone();
    let dyn_manager: Arc<dyn HubLifetimeManager> = manager.clone();
    let hub = Hub::builder()
        .method("Add", |_ctx, (a, b): (i64, i64)| async move {
            Ok::<_, HubError>(a + b)
        })
        .method("Fail", |_ctx, ()| async move {
            Err::<(), _>(HubError::new("nope"))
        })
        .method("Tell", |ctx: CallContext, (text,): (String,)| async move {
            ctx.caller().send("told", (text,)).await?;
            Ok(())
        })
        .method("Twice", |ctx: CallContext, (text,): (String,)| async move {
            ctx.caller().send("first", (text.clone(),)).await?;
            ctx.caller().send("second", (text,)).await?;
            Ok(())
        })
        .method(
            "Ask",
            |ctx: CallContext, (question,): (String,)| async move {
                let answer: String = ctx.caller().invoke("ask", (question,)).await?;
                Ok::<_, HubError>(answer)
            },
        )
        .method("Kick", |ctx: CallContext, ()| async move {
            ctx.caller().send("bye", ("see you",)).await?;
            ctx.connection().close("kicked");
            Ok(())
        })
        .method(
            "Sum",
            |_ctx, (mut numbers,): (UploadStream<i64>,)| async move {
                let mut sum = 0;
                while let Some(n) = numbers.next().await {
                    sum += n?;
                }
                Ok::<_, HubError>(sum)
            },
        )
        .stream("Count", |_ctx, (n,): (u32,)| async move {
            Ok(futures::stream::iter((1..=n).map(Ok::<_, HubError>)))
        })
        .on_disconnected(move |_ctx, error| {
            let recorded = recorded.clone();
            async move { recorded.lock().push(error) }
        })
        .build(dyn_manager);
    (hub, left, manager)
}

#[tokio::test]
async fn invocations_return_results_and_errors() {
    let (hub, _, _) = hub();
    for protocol in [Protocol::Json, Protocol::MessagePack] {
        let mut client = TestClient::builder(&hub)
            .protocol(protocol)
            .connect()
            .await
            .unwrap();
        assert_eq!(client.invoke::<i64>("Add", (2, 3)).await.unwrap(), 5);
        let failed = client.invoke::<()>("Fail", ()).await;
        assert!(
            matches!(&failed, Err(TestError::Hub(e)) if e.contains("nope")),
            "{failed:?}"
        );
        let unknown = client.invoke::<()>("NoSuchMethod", ()).await;
        assert!(matches!(unknown, Err(TestError::Hub(_))), "{unknown:?}");
        // The wrong result type is a clear error too.
        let wrong = client.invoke::<String>("Add", (1, 1)).await;
        assert!(matches!(wrong, Err(TestError::Codec(_))), "{wrong:?}");
    }
}

#[tokio::test]
async fn streams_and_uploads() {
    let (hub, _, _) = hub();
    let mut client = TestClient::connect(&hub).await.unwrap();
    let items: Vec<u32> = client.stream("Count", (4,)).await.unwrap();
    assert_eq!(items, vec![1, 2, 3, 4]);
    let sum: i64 = client
        .invoke_with_upload("Sum", (), [5i64, 6, 7])
        .await
        .unwrap();
    assert_eq!(sum, 18);
}

#[tokio::test]
async fn messages_taken_while_waiting_for_something_else_are_kept_in_order() {
    let (hub, _, _) = hub();
    let mut client = TestClient::connect(&hub).await.unwrap();
    // Both messages arrive before the result `invoke` waits for.
    client.invoke::<()>("Twice", ("x",)).await.unwrap();
    let (second,): (String,) = client.on("second").await.unwrap();
    assert_eq!(second, "x");
    let first = client.next_message().await.unwrap();
    assert_eq!(first.target, "first");
    assert_eq!(first.arguments::<(String,)>().unwrap(), ("x".to_owned(),));
    // `send` expects nothing back; what the method sends still arrives.
    client.send("Tell", ("sent",)).await.unwrap();
    let (told,): (String,) = client.on("told").await.unwrap();
    assert_eq!(told, "sent");
}

#[tokio::test]
async fn client_results_are_answered_whatever_the_test_waits_for() {
    let (hub, _, _) = hub();
    let mut client = TestClient::connect(&hub).await.unwrap();
    // Without a handler the server gets an error, as from the official
    // clients.
    let unanswered = client.invoke::<String>("Ask", ("anyone?",)).await;
    assert!(
        matches!(unanswered, Err(TestError::Hub(_))),
        "{unanswered:?}"
    );
    client.answer("ask", |(question,): (String,)| format!("yes: {question}"));
    let answer: String = client.invoke("Ask", ("ready?",)).await.unwrap();
    assert_eq!(answer, "yes: ready?");
}

#[tokio::test]
async fn a_server_close_is_seen_with_its_error() {
    let (hub, left, _) = hub();
    let mut client = TestClient::connect(&hub).await.unwrap();
    client.send("Kick", ()).await.unwrap();
    let (bye,): (String,) = client.on("bye").await.unwrap();
    assert_eq!(bye, "see you");
    assert_eq!(client.closed().await.unwrap().as_deref(), Some("kicked"));
    let after = client.invoke::<i64>("Add", (1, 1)).await;
    assert!(
        matches!(&after, Err(TestError::Closed { error: Some(e) }) if e == "kicked"),
        "{after:?}"
    );
    wait_for(|| left.lock().len() == 1).await;
}

#[tokio::test]
async fn close_and_drop_end_the_connection_on_the_server() {
    let (hub, left, manager) = hub();
    let closing = TestClient::connect(&hub).await.unwrap();
    let dropped = TestClient::connect(&hub).await.unwrap();
    assert_eq!(manager.stats().connections, 2);
    closing.close().await.unwrap();
    assert_eq!(left.lock().as_slice(), &[None], "the disconnect hook ran");
    drop(dropped);
    wait_for(|| manager.stats().connections == 0).await;
    wait_for(|| left.lock().len() == 2).await;
}

#[tokio::test]
async fn a_wait_that_gets_nothing_times_out() {
    let (hub, _, _) = hub();
    let mut client = TestClient::builder(&hub)
        .timeout(Duration::from_millis(200))
        .connect()
        .await
        .unwrap();
    let nothing = client.on::<(String,)>("never").await;
    assert!(
        matches!(nothing, Err(TestError::Timeout { .. })),
        "{nothing:?}"
    );
    // The client is still usable.
    assert_eq!(client.invoke::<i64>("Add", (1, 2)).await.unwrap(), 3);
}

#[tokio::test]
async fn a_protocol_the_hub_does_not_offer_is_refused_at_the_handshake() {
    let manager: Arc<dyn HubLifetimeManager> = Arc::new(InMemoryHubLifetimeManager::new());
    let hub = Hub::builder()
        .protocols(vec![Protocol::Json])
        .build(manager);
    let refused = TestClient::builder(&hub)
        .protocol(Protocol::MessagePack)
        .connect()
        .await;
    assert!(
        matches!(&refused, Err(TestError::Handshake(e)) if e.contains("not supported")),
        "{refused:?}"
    );
}

/// Waits for `condition`, within a generous bound.
async fn wait_for(condition: impl Fn() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !condition() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the condition never held"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

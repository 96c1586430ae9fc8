//! Hub methods as a client sees them, with the in-memory test client
//! (`switchboard-testing`): typed results, errors answered in a Completion,
//! streams, client results, and the connection's registration. (The
//! dispatcher's finer points, driven message by message, are in
//! `dispatcher.rs`.)

#![allow(clippy::unwrap_used, missing_docs)]

mod common;

use std::sync::Arc;

use common::{Who, hub};
use switchboard_core::protocol::Protocol;
use switchboard_core::{CallContext, Hub, HubError, InMemoryHubLifetimeManager};
use switchboard_testing::{TestClient, TestError};

/// A client speaking `protocol`, as `user` if any.
async fn client(hub: &Hub, protocol: Protocol, user: Option<&str>) -> TestClient {
    let builder = TestClient::builder(hub).protocol(protocol);
    let builder = match user {
        Some(user) => builder.user(user),
        None => builder,
    };
    builder.connect().await.unwrap()
}

/// The error an invocation fails with.
fn error_of<T: std::fmt::Debug>(result: Result<T, TestError>) -> String {
    match result {
        Err(TestError::Hub(error)) => error,
        other => panic!("expected a Completion error, got {other:?}"),
    }
}

#[tokio::test]
async fn typed_methods_return_their_values_in_both_protocols() {
    let hub = hub();
    for protocol in Protocol::ALL {
        let mut client = client(&hub, protocol, Some("bob")).await;
        assert_eq!(client.invoke::<i64>("Add", (2, 40)).await.unwrap(), 42);
        // A struct is an object with its fields, in either protocol.
        let who: Who = client.invoke("WhoAmI", ()).await.unwrap();
        assert_eq!(
            who,
            Who {
                connection_id: client.id().to_string(),
                user: Some("bob".to_owned()),
            }
        );
    }
}

#[tokio::test]
async fn a_void_method_completes_after_what_it_sent() {
    let hub = hub();
    let mut client = client(&hub, Protocol::Json, None).await;
    client.invoke::<()>("Echo", ("hi",)).await.unwrap();
    // The echo was sent before the method returned: it is already here.
    let echo = client.next_message().await.unwrap();
    assert_eq!(echo.target, "echo");
    assert_eq!(echo.arguments::<(String,)>().unwrap(), ("hi".to_owned(),));
}

#[tokio::test]
async fn bad_invocations_are_completion_errors() {
    let hub = hub();
    let mut client = client(&hub, Protocol::Json, None).await;
    assert_eq!(
        error_of(client.invoke::<()>("Nope", ()).await),
        "Unknown hub method 'Nope'"
    );
    let arity = error_of(client.invoke::<i64>("Add", (1,)).await);
    assert!(
        arity.contains("Invocation provides 1 argument(s) but target expects 2"),
        "{arity}"
    );
    assert_eq!(error_of(client.invoke::<()>("Fail", ()).await), "it broke");
    for protocol in Protocol::ALL {
        let mut client = self::client(&hub, protocol, None).await;
        let wrong = error_of(client.invoke::<i64>("Add", ("two", 2)).await);
        assert!(wrong.starts_with("Failed to invoke 'Add'"), "{wrong}");
        assert!(wrong.contains("Argument 0"), "{wrong}");
    }
    // The connection goes on.
    assert_eq!(client.invoke::<i64>("Add", (1, 2)).await.unwrap(), 3);
}

#[tokio::test]
async fn a_streaming_method_sends_its_items_then_completes() {
    let hub = hub();
    for protocol in Protocol::ALL {
        let mut client = client(&hub, protocol, None).await;
        let items: Vec<u32> = client.stream("Count", (3,)).await.unwrap();
        assert_eq!(items, vec![1, 2, 3]);
    }
}

#[tokio::test]
async fn a_hub_method_can_wait_for_a_client_result() {
    let hub = Hub::builder()
        .method("AskCaller", |ctx: CallContext, ()| async move {
            let answer: String = ctx.caller().invoke("ask", ("name?",)).await?;
            Ok::<_, HubError>(format!("got {answer}"))
        })
        .build(Arc::new(InMemoryHubLifetimeManager::new()));
    let mut client = client(&hub, Protocol::Json, None).await;
    client.answer("ask", |(question,): (String,)| {
        assert_eq!(question, "name?");
        "bob".to_owned()
    });
    // The answer goes through while AskCaller holds the connection's slot.
    let answer: String = client.invoke("AskCaller", ()).await.unwrap();
    assert_eq!(answer, "got bob");
}

#[tokio::test]
async fn a_connection_is_registered_until_it_closes() {
    let hub = hub();
    let client = client(&hub, Protocol::Json, None).await;
    let id = client.id().clone();
    assert!(hub.manager().local_connection(&id).is_some());
    client.close().await.unwrap();
    assert!(hub.manager().local_connection(&id).is_none());
}

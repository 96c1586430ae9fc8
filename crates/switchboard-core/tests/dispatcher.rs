//! The hub dispatcher: typed methods, bad invocations answered with a
//! Completion error, streams, cancellation and the per-connection limit.

#![allow(clippy::unwrap_used, missing_docs)]

use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use futures::stream;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use switchboard_core::protocol::{HubMessage, Invocation, Outcome, Protocol, RawValue};
use switchboard_core::{
    CallContext, Connection, ConnectionOptions, ConnectionReceiver, Hub, HubError, HubSession,
    InMemoryHubLifetimeManager,
};

#[derive(Debug, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
struct Who {
    connection_id: String,
    user: Option<String>,
}

fn hub() -> Hub {
    Hub::builder()
        .method("Add", |_ctx, (a, b): (i64, i64)| async move {
            Ok::<_, HubError>(a + b)
        })
        .method("Echo", |ctx: CallContext, (text,): (String,)| async move {
            ctx.caller().send("echo", (text,)).await?;
            Ok(())
        })
        .method("WhoAmI", |ctx: CallContext, ()| async move {
            Ok::<_, HubError>(Who {
                connection_id: ctx.connection_id().to_string(),
                user: ctx.user().map(str::to_owned),
            })
        })
        .method("Fail", |_ctx, ()| async move {
            Err::<(), _>(HubError::new("it broke"))
        })
        .method("Sleep", |_ctx, (ms,): (u64,)| async move {
            tokio::time::sleep(Duration::from_millis(ms)).await;
            Ok::<_, HubError>(ms)
        })
        .stream("Count", |_ctx, (n,): (u32,)| async move {
            Ok(stream::iter((1..=n).map(Ok::<_, HubError>)))
        })
        .stream("Forever", |_ctx, ()| async move {
            Ok(futures::stream::unfold(0u64, |i| async move {
                tokio::time::sleep(Duration::from_millis(5)).await;
                Some((Ok::<_, HubError>(i), i + 1))
            }))
        })
        .build(Arc::new(InMemoryHubLifetimeManager::new()))
}

struct Client {
    session: HubSession,
    outbound: ConnectionReceiver,
    protocol: Protocol,
}

impl Client {
    async fn connect(hub: &Hub, options: ConnectionOptions) -> Client {
        let protocol = options.protocol;
        let (connection, outbound) = Connection::new(options);
        let session = hub.connect(connection).await.unwrap();
        Client {
            session,
            outbound,
            protocol,
        }
    }

    fn arg<T: Serialize>(&self, value: T) -> RawValue {
        self.protocol.encode_value(&value).unwrap()
    }

    async fn invoke(&self, id: Option<&str>, target: &str, arguments: Vec<RawValue>) {
        self.session
            .handle(HubMessage::Invocation(Invocation {
                invocation_id: id.map(str::to_owned),
                target: target.to_owned(),
                arguments,
                stream_ids: vec![],
            }))
            .await;
    }

    async fn stream(&self, id: &str, target: &str, arguments: Vec<RawValue>) {
        self.session
            .handle(HubMessage::StreamInvocation(Invocation {
                invocation_id: Some(id.to_owned()),
                target: target.to_owned(),
                arguments,
                stream_ids: vec![],
            }))
            .await;
    }

    async fn next(&mut self) -> HubMessage {
        let frame = tokio::time::timeout(Duration::from_secs(5), self.outbound.recv())
            .await
            .expect("a reply in time")
            .expect("connection open");
        let mut buf = BytesMut::from(&frame[..]);
        self.protocol
            .parse_message(&mut buf, usize::MAX)
            .unwrap()
            .unwrap()
    }

    async fn completion(&mut self) -> (String, Outcome) {
        match self.next().await {
            HubMessage::Completion(c) => (c.invocation_id, c.outcome),
            other => panic!("expected a completion, got {other:?}"),
        }
    }

    async fn error(&mut self) -> String {
        match self.completion().await {
            (_, Outcome::Error(e)) => e,
            other => panic!("expected an error completion, got {other:?}"),
        }
    }

    async fn assert_nothing(&mut self) {
        let got = tokio::time::timeout(Duration::from_millis(200), self.outbound.recv()).await;
        assert!(got.is_err(), "unexpected frame: {got:?}");
    }
}

async fn json_client(hub: &Hub) -> Client {
    Client::connect(hub, ConnectionOptions::new(Protocol::Json).user("alice")).await
}

#[tokio::test]
async fn typed_method_returns_its_value() {
    for protocol in Protocol::ALL {
        let hub = hub();
        let mut client = Client::connect(&hub, ConnectionOptions::new(protocol)).await;
        client
            .invoke(Some("1"), "Add", vec![client.arg(2), client.arg(40)])
            .await;
        let (id, outcome) = client.completion().await;
        assert_eq!(id, "1");
        match outcome {
            Outcome::Value(v) => assert_eq!(v.deserialize::<i64>().unwrap(), 42),
            other => panic!("{other:?}"),
        }
    }
}

#[tokio::test]
async fn struct_results_are_objects_in_both_protocols() {
    for protocol in Protocol::ALL {
        let hub = hub();
        let mut client = Client::connect(&hub, ConnectionOptions::new(protocol).user("bob")).await;
        client.invoke(Some("1"), "WhoAmI", vec![]).await;
        let Outcome::Value(v) = client.completion().await.1 else {
            panic!("expected a value")
        };
        let who: Value = v.deserialize().unwrap();
        assert_eq!(
            who,
            json!({"connectionId": client.session.connection().id().as_str(), "user": "bob"})
        );
    }
}

#[tokio::test]
async fn void_method_completes_without_result() {
    let hub = hub();
    let mut client = json_client(&hub).await;
    client
        .invoke(Some("7"), "Echo", vec![client.arg("hi")])
        .await;
    // The echo is sent before the method returns, so it arrives first.
    match client.next().await {
        HubMessage::Invocation(inv) => assert_eq!(inv.target, "echo"),
        other => panic!("{other:?}"),
    }
    assert_eq!(client.completion().await, ("7".to_owned(), Outcome::Void));
}

#[tokio::test]
async fn non_blocking_invocation_gets_no_completion() {
    let hub = hub();
    let mut client = json_client(&hub).await;
    client
        .invoke(None, "Add", vec![client.arg(1), client.arg(2)])
        .await;
    client.invoke(None, "Nope", vec![]).await;
    client.invoke(None, "Fail", vec![]).await;
    client.assert_nothing().await;
}

#[tokio::test]
async fn unknown_method_is_a_completion_error() {
    let hub = hub();
    let mut client = json_client(&hub).await;
    client.invoke(Some("1"), "Nope", vec![]).await;
    assert_eq!(client.error().await, "Unknown hub method 'Nope'");
}

#[tokio::test]
async fn wrong_arity_is_a_completion_error() {
    let hub = hub();
    let mut client = json_client(&hub).await;
    client.invoke(Some("1"), "Add", vec![client.arg(1)]).await;
    let error = client.error().await;
    assert!(
        error.contains("Invocation provides 1 argument(s) but target expects 2"),
        "{error}"
    );
}

#[tokio::test]
async fn wrong_argument_type_is_a_completion_error() {
    for protocol in Protocol::ALL {
        let hub = hub();
        let mut client = Client::connect(&hub, ConnectionOptions::new(protocol)).await;
        client
            .invoke(Some("1"), "Add", vec![client.arg("two"), client.arg(2)])
            .await;
        let error = client.error().await;
        assert!(error.starts_with("Failed to invoke 'Add'"), "{error}");
        assert!(error.contains("Argument 0"), "{error}");
    }
}

#[tokio::test]
async fn method_error_reaches_the_caller() {
    let hub = hub();
    let mut client = json_client(&hub).await;
    client.invoke(Some("1"), "Fail", vec![]).await;
    assert_eq!(client.error().await, "it broke");
}

#[tokio::test]
async fn streaming_method_sends_items_then_completion() {
    for protocol in Protocol::ALL {
        let hub = hub();
        let mut client = Client::connect(&hub, ConnectionOptions::new(protocol)).await;
        client.stream("s1", "Count", vec![client.arg(3)]).await;
        for expected in 1..=3u32 {
            match client.next().await {
                HubMessage::StreamItem {
                    invocation_id,
                    item,
                } => {
                    assert_eq!(invocation_id, "s1");
                    assert_eq!(item.deserialize::<u32>().unwrap(), expected);
                }
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(client.completion().await, ("s1".to_owned(), Outcome::Void));
    }
}

#[tokio::test]
async fn stream_and_invocation_kinds_must_match() {
    let hub = hub();
    let mut client = json_client(&hub).await;
    client.invoke(Some("1"), "Count", vec![client.arg(3)]).await;
    assert!(client.error().await.contains("streaming 'Count' method"));
    client
        .stream("2", "Add", vec![client.arg(1), client.arg(2)])
        .await;
    assert!(client.error().await.contains("non-streaming 'Add' method"));
}

#[tokio::test]
async fn cancel_invocation_stops_a_stream() {
    let hub = hub();
    let mut client = json_client(&hub).await;
    client.stream("s", "Forever", vec![]).await;
    assert!(matches!(client.next().await, HubMessage::StreamItem { .. }));
    client
        .session
        .handle(HubMessage::CancelInvocation {
            invocation_id: "s".into(),
        })
        .await;
    // Items already queued may still arrive; then exactly one completion.
    loop {
        match client.next().await {
            HubMessage::StreamItem { .. } => continue,
            HubMessage::Completion(c) => {
                assert_eq!(c.invocation_id, "s");
                assert_eq!(c.outcome, Outcome::Void);
                break;
            }
            other => panic!("{other:?}"),
        }
    }
    client.assert_nothing().await;
}

#[tokio::test]
async fn invocations_of_one_connection_run_one_at_a_time_by_default() {
    let hub = hub();
    let mut client = json_client(&hub).await;
    // The first holds the only slot for 300 ms; the second waits for it.
    client
        .invoke(Some("slow"), "Sleep", vec![client.arg(300)])
        .await;
    let started = tokio::time::Instant::now();
    client
        .invoke(Some("fast"), "Sleep", vec![client.arg(0)])
        .await;
    assert!(started.elapsed() >= Duration::from_millis(200));
    assert_eq!(client.completion().await.0, "slow");
    assert_eq!(client.completion().await.0, "fast");
}

#[tokio::test]
async fn parallel_invocations_when_configured() {
    let hub = Hub::builder()
        .method("Sleep", |_ctx, (ms,): (u64,)| async move {
            tokio::time::sleep(Duration::from_millis(ms)).await;
            Ok::<_, HubError>(ms)
        })
        .max_parallel_invocations(2)
        .build(Arc::new(InMemoryHubLifetimeManager::new()));
    let mut client = json_client(&hub).await;
    client
        .invoke(Some("slow"), "Sleep", vec![client.arg(300)])
        .await;
    client
        .invoke(Some("fast"), "Sleep", vec![client.arg(0)])
        .await;
    assert_eq!(client.completion().await.0, "fast");
    assert_eq!(client.completion().await.0, "slow");
}

#[tokio::test]
async fn hub_method_can_wait_for_a_client_result() {
    let hub = Hub::builder()
        .method("AskCaller", |ctx: CallContext, ()| async move {
            let answer: String = ctx.caller().invoke("ask", ("name?",)).await?;
            Ok::<_, HubError>(format!("got {answer}"))
        })
        .build(Arc::new(InMemoryHubLifetimeManager::new()));
    let mut client = json_client(&hub).await;
    client.invoke(Some("1"), "AskCaller", vec![]).await;
    let HubMessage::Invocation(ask) = client.next().await else {
        panic!("expected the server's invocation")
    };
    assert_eq!(ask.target, "ask");
    let id = ask.invocation_id.expect("an id to answer");
    // The client's completion goes through while AskCaller holds the slot.
    client
        .session
        .handle(HubMessage::Completion(
            switchboard_core::protocol::Completion {
                invocation_id: id,
                outcome: Outcome::Value(client.arg("bob")),
            },
        ))
        .await;
    let Outcome::Value(v) = client.completion().await.1 else {
        panic!("expected a value")
    };
    assert_eq!(v.deserialize::<String>().unwrap(), "got bob");
}

#[tokio::test]
async fn close_unregisters_the_connection() {
    let hub = hub();
    let client = json_client(&hub).await;
    let id = client.session.connection().id().clone();
    assert!(hub.manager().local_connection(&id).is_some());
    client.session.close(None).await;
    assert!(hub.manager().local_connection(&id).is_none());
}

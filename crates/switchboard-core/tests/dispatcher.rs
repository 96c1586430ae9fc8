//! The hub dispatcher: typed methods, bad invocations answered with a
//! Completion error, streams, cancellation and the per-connection limit.

#![allow(clippy::unwrap_used, missing_docs)]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use bytes::BytesMut;
use common::hub;
use futures::{StreamExt, stream};
use serde::Serialize;
use serde_json::{Value, json};
use switchboard_core::protocol::{Completion, HubMessage, Invocation, Outcome, Protocol, RawValue};
use switchboard_core::{
    CallContext, Connection, ConnectionOptions, ConnectionReceiver, Hub, HubError, HubSession,
    InMemoryHubLifetimeManager, UploadStream,
};

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

/// Runs `future`, failing the test if it takes longer than 5 s.
async fn within<F: std::future::Future>(future: F) -> F::Output {
    tokio::time::timeout(Duration::from_secs(5), future)
        .await
        .expect("the operation did not finish in time")
}

async fn json_client(hub: &Hub) -> Client {
    Client::connect(hub, ConnectionOptions::new(Protocol::Json).user("alice")).await
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

/// A hub with the default limits whose `Track` method records how many of
/// its calls run at once, holding each call for `ms` milliseconds.
fn tracking_hub() -> (Hub, Arc<AtomicUsize>) {
    let peak = Arc::new(AtomicUsize::new(0));
    let running = Arc::new(AtomicUsize::new(0));
    let hub = Hub::builder()
        .method("Track", {
            let peak = peak.clone();
            move |_ctx, (ms,): (u64,)| {
                let (peak, running) = (peak.clone(), running.clone());
                async move {
                    let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                    peak.fetch_max(now, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(ms)).await;
                    running.fetch_sub(1, Ordering::SeqCst);
                    Ok::<_, HubError>(ms)
                }
            }
        })
        .build(Arc::new(InMemoryHubLifetimeManager::new()));
    (hub, peak)
}

#[tokio::test]
async fn invocations_of_one_connection_run_one_at_a_time_by_default() {
    let (hub, peak) = tracking_hub();
    let mut client = json_client(&hub).await;
    // The first holds the only slot; the others wait for it, in order.
    client
        .invoke(Some("slow"), "Track", vec![client.arg(200)])
        .await;
    for i in 0..5 {
        client
            .invoke(Some(&format!("fast-{i}")), "Track", vec![client.arg(0)])
            .await;
    }
    assert_eq!(client.completion().await.0, "slow");
    for i in 0..5 {
        assert_eq!(client.completion().await.0, format!("fast-{i}"));
    }
    assert_eq!(peak.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_full_invocation_queue_pauses_the_reader() {
    // `Hold` keeps its slot until the test lets it go.
    let release = Arc::new(tokio::sync::Semaphore::new(0));
    let hub = Hub::builder()
        .method("Hold", {
            let release = release.clone();
            move |_ctx, ()| {
                let release = release.clone();
                async move {
                    let _permit = release.acquire().await;
                    Ok::<_, HubError>(())
                }
            }
        })
        .max_queued_invocations(2)
        .build(Arc::new(InMemoryHubLifetimeManager::new()));
    let mut client = json_client(&hub).await;
    // One runs, two wait: each of these returns at once.
    for i in 0..3 {
        within(client.invoke(Some(&format!("q{i}")), "Hold", vec![])).await;
    }
    // The fourth waits for room in the queue: handing it over does not
    // complete while the first still holds the slot.
    {
        let fourth = client.invoke(Some("q3"), "Hold", vec![]);
        let mut fourth = std::pin::pin!(fourth);
        assert!(
            tokio::time::timeout(Duration::from_millis(100), fourth.as_mut())
                .await
                .is_err(),
            "a fourth invocation was taken while the queue was full"
        );
        release.add_permits(4);
        within(fourth).await;
    }
    for i in 0..4 {
        assert_eq!(client.completion().await, (format!("q{i}"), Outcome::Void));
    }
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
async fn an_answer_to_the_caller_is_not_held_behind_a_waiting_invocation() {
    // AskCaller holds the only slot until its caller answers; the caller
    // has sent another invocation before answering.
    let hub = Hub::builder()
        .method("AskCaller", |ctx: CallContext, ()| async move {
            let answer: String = ctx.caller().invoke("ask", ("name?",)).await?;
            Ok::<_, HubError>(format!("got {answer}"))
        })
        .method("Add", |_ctx, (a, b): (i64, i64)| async move {
            Ok::<_, HubError>(a + b)
        })
        .build(Arc::new(InMemoryHubLifetimeManager::new()));
    let mut client = json_client(&hub).await;
    within(client.invoke(Some("1"), "AskCaller", vec![])).await;
    within(client.invoke(Some("2"), "Add", vec![client.arg(1), client.arg(2)])).await;
    let HubMessage::Invocation(ask) = client.next().await else {
        panic!("expected the server's invocation")
    };
    let id = ask.invocation_id.expect("an id to answer");
    within(client.session.handle(HubMessage::Completion(
        switchboard_core::protocol::Completion {
            invocation_id: id,
            outcome: Outcome::Value(client.arg("bob")),
        },
    )))
    .await;
    let (id, Outcome::Value(v)) = client.completion().await else {
        panic!("expected a value")
    };
    assert_eq!(
        (id.as_str(), v.deserialize::<String>().unwrap().as_str()),
        ("1", "got bob")
    );
    let (id, Outcome::Value(v)) = client.completion().await else {
        panic!("expected a value")
    };
    assert_eq!((id.as_str(), v.deserialize::<i64>().unwrap()), ("2", 3));
}

#[tokio::test]
async fn streams_per_connection_are_bounded() {
    let hub = Hub::builder()
        .stream("Forever", |_ctx, ()| async move {
            Ok(futures::stream::unfold(0u64, |i| async move {
                tokio::time::sleep(Duration::from_millis(50)).await;
                Some((Ok::<_, HubError>(i), i + 1))
            }))
        })
        .max_streams_per_connection(4)
        .build(Arc::new(InMemoryHubLifetimeManager::new()));
    // Room for every refusal: the test reads only after sending them all.
    let mut client = Client::connect(
        &hub,
        ConnectionOptions::new(Protocol::Json).queue_capacity(20_000),
    )
    .await;
    for i in 0..10_000 {
        within(client.stream(&format!("s{i}"), "Forever", vec![])).await;
    }
    // Everything past the first four is refused at once.
    let mut refused = 0;
    while refused < 10_000 - 4 {
        match client.next().await {
            HubMessage::Completion(c) => {
                let Outcome::Error(e) = c.outcome else {
                    panic!("{c:?}")
                };
                assert_eq!(
                    e,
                    "The connection already has 4 streams running, the most allowed."
                );
                refused += 1;
            }
            HubMessage::StreamItem { invocation_id, .. } => {
                assert!(["s0", "s1", "s2", "s3"].contains(&invocation_id.as_str()));
            }
            other => panic!("{other:?}"),
        }
    }
    // A finished stream frees its slot.
    client
        .session
        .handle(HubMessage::CancelInvocation {
            invocation_id: "s0".into(),
        })
        .await;
    loop {
        match client.next().await {
            HubMessage::Completion(c) if c.invocation_id == "s0" => break,
            HubMessage::StreamItem { .. } => {}
            other => panic!("{other:?}"),
        }
    }
    client.stream("again", "Forever", vec![]).await;
    loop {
        match client.next().await {
            HubMessage::StreamItem { invocation_id, .. } if invocation_id == "again" => break,
            HubMessage::StreamItem { .. } => {}
            other => panic!("{other:?}"),
        }
    }
}

#[tokio::test]
async fn a_panicking_method_gets_an_error_completion_and_frees_its_id() {
    let hub = Hub::builder()
        .method("Panic", |_ctx, ()| async move {
            if true {
                panic!("boom");
            }
            Ok::<_, HubError>(())
        })
        .method(
            "PanicEarly",
            |_ctx, ()| -> std::future::Ready<Result<(), HubError>> {
                panic!("boom before the future")
            },
        )
        .stream("PanicStream", |_ctx, ()| async move {
            Ok(futures::StreamExt::map(futures::stream::iter(0..3), |i| {
                if i == 2 {
                    panic!("boom in the stream");
                }
                Ok::<_, HubError>(i)
            }))
        })
        .build(Arc::new(InMemoryHubLifetimeManager::new()));
    let mut client = json_client(&hub).await;
    for _ in 0..2 {
        // The same id twice: the first call freed it.
        client.invoke(Some("1"), "Panic", vec![]).await;
        assert_eq!(
            client.completion().await,
            (
                "1".to_owned(),
                Outcome::Error(
                    "An unexpected error occurred invoking 'Panic' on the server.".into()
                )
            )
        );
    }
    client.invoke(Some("2"), "PanicEarly", vec![]).await;
    assert_eq!(
        client.error().await,
        "An unexpected error occurred invoking 'PanicEarly' on the server."
    );
    client.stream("3", "PanicStream", vec![]).await;
    for _ in 0..2 {
        assert!(matches!(client.next().await, HubMessage::StreamItem { .. }));
    }
    assert_eq!(
        client.error().await,
        "An unexpected error occurred invoking 'PanicStream' on the server."
    );
    assert_eq!(hub.stats().panics, 4);
    // The connection goes on.
    client.invoke(Some("1"), "Panic", vec![]).await;
    assert!(client.error().await.contains("unexpected error"));
}

#[tokio::test]
async fn a_unary_method_runs_to_completion_after_its_client_leaves() {
    let finished = Arc::new(AtomicBool::new(false));
    let saw_cancel = Arc::new(AtomicBool::new(false));
    let (started_tx, started_rx) = tokio::sync::oneshot::channel::<()>();
    let started_tx = Arc::new(parking_lot::Mutex::new(Some(started_tx)));
    let hub = Hub::builder()
        .method("Save", {
            let (finished, saw_cancel) = (finished.clone(), saw_cancel.clone());
            move |ctx: CallContext, ()| {
                let (finished, saw_cancel) = (finished.clone(), saw_cancel.clone());
                let started = started_tx.lock().take();
                async move {
                    if let Some(started) = started {
                        let _ = started.send(());
                    }
                    // Still running when the client goes: it sees the
                    // cancellation, and carries on to its end.
                    ctx.cancelled().await;
                    saw_cancel.store(true, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    finished.store(true, Ordering::SeqCst);
                    Ok::<_, HubError>(())
                }
            }
        })
        .build(Arc::new(InMemoryHubLifetimeManager::new()));
    let client = json_client(&hub).await;
    client.invoke(Some("1"), "Save", vec![]).await;
    within(started_rx).await.unwrap();
    client.session.close(None).await;
    within(async {
        while !finished.load(Ordering::SeqCst) {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
    assert!(saw_cancel.load(Ordering::SeqCst));
}

#[tokio::test]
async fn a_cancelled_unary_invocation_still_answers() {
    let hub = Hub::builder()
        .method("Wait", |ctx: CallContext, ()| async move {
            ctx.cancelled().await;
            Ok::<_, HubError>("noticed")
        })
        .build(Arc::new(InMemoryHubLifetimeManager::new()));
    let mut client = json_client(&hub).await;
    client.invoke(Some("1"), "Wait", vec![]).await;
    client
        .session
        .handle(HubMessage::CancelInvocation {
            invocation_id: "1".into(),
        })
        .await;
    let (id, Outcome::Value(v)) = client.completion().await else {
        panic!("expected a value")
    };
    assert_eq!(
        (id.as_str(), v.deserialize::<String>().unwrap().as_str()),
        ("1", "noticed")
    );
}

#[tokio::test]
async fn a_long_stream_to_a_slow_reader_survives_broadcasts() {
    let hub = Hub::builder()
        .stream("Count", |_ctx, (n,): (u32,)| async move {
            Ok(stream::iter((1..=n).map(Ok::<_, HubError>)))
        })
        .build(Arc::new(InMemoryHubLifetimeManager::new()));
    let (connection, mut outbound) =
        Connection::new(ConnectionOptions::new(Protocol::Json).queue_capacity(8));
    let session = hub.connect(connection.clone()).await.unwrap();
    session
        .handle(HubMessage::StreamInvocation(Invocation {
            invocation_id: Some("s".into()),
            target: "Count".into(),
            arguments: vec![Protocol::Json.encode_value(&1000).unwrap()],
            stream_ids: vec![],
        }))
        .await;
    // Everyone gets a broadcast every 10 ms while the stream runs.
    let broadcasts = tokio::spawn({
        let context = hub.context().clone();
        async move {
            let mut sent = 0u32;
            loop {
                tokio::time::sleep(Duration::from_millis(10)).await;
                if context.all().send("tick", (sent,)).await.is_err() {
                    break;
                }
                sent += 1;
            }
        }
    });
    // The reader takes 1 ms per frame.
    let (mut items, mut ticks) = (0u32, 0u32);
    loop {
        let frame = tokio::time::timeout(Duration::from_secs(20), outbound.recv())
            .await
            .expect("frames keep coming")
            .expect("the connection stays open");
        tokio::time::sleep(Duration::from_millis(1)).await;
        let mut buf = BytesMut::from(&frame[..]);
        match Protocol::Json
            .parse_message(&mut buf, usize::MAX)
            .unwrap()
            .unwrap()
        {
            HubMessage::StreamItem { item, .. } => {
                items += 1;
                assert_eq!(item.deserialize::<u32>().unwrap(), items);
            }
            HubMessage::Invocation(tick) => {
                assert_eq!(tick.target, "tick");
                assert_eq!(tick.arguments[0].deserialize::<u32>().unwrap(), ticks);
                ticks += 1;
            }
            HubMessage::Completion(c) => {
                assert_eq!(c.outcome, Outcome::Void);
                break;
            }
            other => panic!("{other:?}"),
        }
    }
    broadcasts.abort();
    assert_eq!(items, 1000);
    assert!(ticks > 0, "no broadcast was interleaved");
    assert!(!connection.is_closed(), "{:?}", connection.close_reason());
    assert_eq!(hub.manager().stats().closed_slow, 0);
}

// ---------------------------------------------------------------------------
// Client-to-server (upload) streams
// ---------------------------------------------------------------------------

/// Adds the items of an upload stream; fails with the stream's error.
async fn sum(mut numbers: UploadStream<i64>) -> Result<i64, HubError> {
    let mut sum = 0;
    while let Some(n) = numbers.next().await {
        sum += n?;
    }
    Ok(sum)
}

fn upload_hub(gate: Arc<tokio::sync::Semaphore>) -> Hub {
    Hub::builder()
        .method("Sum", |_ctx, (numbers,): (UploadStream<i64>,)| sum(numbers))
        .method(
            "Scale",
            |_ctx, (mut numbers, factor): (UploadStream<i64>, i64)| async move {
                let mut scaled = Vec::new();
                while let Some(n) = numbers.next().await {
                    scaled.push(n? * factor);
                }
                Ok::<_, HubError>(scaled)
            },
        )
        .method(
            "Wrap",
            |_ctx, (prefix, mut words, suffix): (String, UploadStream<String>, String)| async move {
                let mut out = prefix;
                while let Some(word) = words.next().await {
                    out.push_str(&word?);
                }
                out.push_str(&suffix);
                Ok::<_, HubError>(out)
            },
        )
        // Takes an item only when the test lets it.
        .method(
            "GatedSum",
            move |_ctx, (mut numbers,): (UploadStream<i64>,)| {
                let gate = gate.clone();
                async move {
                    let mut sum = 0;
                    loop {
                        gate.acquire().await.unwrap().forget();
                        match numbers.next().await {
                            Some(n) => sum += n?,
                            None => return Ok::<_, HubError>(sum),
                        }
                    }
                }
            },
        )
        .method(
            "Ignore",
            |_ctx, (_numbers,): (UploadStream<i64>,)| async move { Ok::<_, HubError>(()) },
        )
        .stream(
            "Doubled",
            |_ctx, (numbers,): (UploadStream<i64>,)| async move {
                Ok(numbers.map(|n| n.map(|n| n * 2)))
            },
        )
        .max_upload_streams_per_connection(2)
        .build(Arc::new(InMemoryHubLifetimeManager::new()))
}

impl Client {
    async fn invoke_streams(
        &self,
        id: &str,
        target: &str,
        arguments: Vec<RawValue>,
        streams: &[&str],
    ) {
        self.session
            .handle(HubMessage::Invocation(Invocation {
                invocation_id: Some(id.to_owned()),
                target: target.to_owned(),
                arguments,
                stream_ids: streams.iter().map(|s| (*s).to_owned()).collect(),
            }))
            .await;
    }

    async fn item<T: Serialize>(&self, stream: &str, value: T) {
        let item = self.arg(value);
        self.session
            .handle(HubMessage::StreamItem {
                invocation_id: stream.to_owned(),
                item,
            })
            .await;
    }

    async fn end_stream(&self, stream: &str, error: Option<&str>) {
        let outcome = match error {
            Some(e) => Outcome::Error(e.to_owned()),
            None => Outcome::Void,
        };
        self.session
            .handle(HubMessage::Completion(Completion {
                invocation_id: stream.to_owned(),
                outcome,
            }))
            .await;
    }

    async fn value(&mut self) -> Value {
        match self.completion().await {
            (_, Outcome::Value(v)) => v.deserialize().unwrap(),
            other => panic!("expected a value completion, got {other:?}"),
        }
    }
}

fn open_gate() -> Arc<tokio::sync::Semaphore> {
    Arc::new(tokio::sync::Semaphore::new(
        tokio::sync::Semaphore::MAX_PERMITS,
    ))
}

#[tokio::test]
async fn an_upload_stream_delivers_every_item_in_order_until_the_client_completes_it() {
    for protocol in Protocol::ALL {
        let hub = upload_hub(open_gate());
        let mut client = Client::connect(&hub, ConnectionOptions::new(protocol)).await;
        client.invoke_streams("1", "Sum", vec![], &["s"]).await;
        for n in 1..=100i64 {
            within(client.item("s", n)).await;
        }
        client.assert_nothing().await;
        client.end_stream("s", None).await;
        assert_eq!(client.value().await, json!(5050), "{protocol}");

        client
            .invoke_streams("2", "Scale", vec![client.arg(3)], &["t"])
            .await;
        for n in [1, 2, 3] {
            client.item("t", n).await;
        }
        client.end_stream("t", None).await;
        assert_eq!(client.value().await, json!([3, 6, 9]), "{protocol}");
        assert_eq!(hub.stats().dropped_stream_items, 0);
    }
}

#[tokio::test]
async fn an_upload_stream_may_stand_between_normal_arguments() {
    let hub = upload_hub(open_gate());
    let mut client = json_client(&hub).await;
    let arguments = vec![client.arg("<"), client.arg(">")];
    client.invoke_streams("1", "Wrap", arguments, &["w"]).await;
    client.item("w", "a").await;
    client.item("w", "b").await;
    client.end_stream("w", None).await;
    assert_eq!(client.value().await, json!("<ab>"));
}

#[tokio::test]
async fn a_streaming_method_can_take_an_upload_stream() {
    let hub = upload_hub(open_gate());
    let mut client = json_client(&hub).await;
    client
        .session
        .handle(HubMessage::StreamInvocation(Invocation {
            invocation_id: Some("1".into()),
            target: "Doubled".into(),
            arguments: vec![],
            stream_ids: vec!["in".into()],
        }))
        .await;
    for n in [1, 2] {
        client.item("in", n).await;
    }
    client.end_stream("in", None).await;
    let mut items = Vec::new();
    loop {
        match client.next().await {
            HubMessage::StreamItem { item, .. } => items.push(item.deserialize::<i64>().unwrap()),
            HubMessage::Completion(c) => {
                assert_eq!(c.outcome, Outcome::Void);
                break;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(items, [2, 4]);
}

#[tokio::test]
async fn the_clients_error_completion_ends_the_stream_with_that_error() {
    let hub = upload_hub(open_gate());
    let mut client = json_client(&hub).await;
    client.invoke_streams("1", "Sum", vec![], &["s"]).await;
    client.item("s", 1).await;
    client.end_stream("s", Some("sensor unplugged")).await;
    assert_eq!(client.error().await, "sensor unplugged");
}

#[tokio::test]
async fn an_item_that_is_not_of_the_streams_type_ends_it_with_an_error() {
    let hub = upload_hub(open_gate());
    let mut client = json_client(&hub).await;
    client.invoke_streams("1", "Sum", vec![], &["s"]).await;
    client.item("s", "seven").await;
    let error = client.error().await;
    assert!(
        error.starts_with("An item of stream 's' is invalid"),
        "{error}"
    );
}

#[tokio::test]
async fn stream_counts_that_do_not_fit_the_method_are_completion_errors() {
    let hub = upload_hub(open_gate());
    let mut client = json_client(&hub).await;
    client.invoke_streams("1", "Sum", vec![], &[]).await;
    assert_eq!(
        client.error().await,
        "Failed to invoke 'Sum': Client sent 0 stream(s), Hub method expects 1."
    );
    client.invoke_streams("2", "Sum", vec![], &["a", "b"]).await;
    assert_eq!(
        client.error().await,
        "Failed to invoke 'Sum': Client sent 2 stream(s), Hub method expects 1."
    );
    // Values are counted apart from streams.
    client.invoke_streams("3", "Scale", vec![], &["a"]).await;
    assert_eq!(
        client.error().await,
        "Failed to invoke 'Scale': Invocation provides 0 argument(s) but target expects 1."
    );
}

#[tokio::test]
async fn items_for_unknown_or_completed_streams_are_dropped_and_counted() {
    let hub = upload_hub(open_gate());
    let mut client = json_client(&hub).await;
    within(client.item("nobody", 1)).await;
    assert_eq!(hub.stats().dropped_stream_items, 1);

    client.invoke_streams("1", "Sum", vec![], &["s"]).await;
    client.item("s", 2).await;
    client.end_stream("s", None).await;
    assert_eq!(client.value().await, json!(2));
    within(client.item("s", 3)).await;
    assert_eq!(hub.stats().dropped_stream_items, 2);

    // A method that returns without reading its stream closes it.
    client.invoke_streams("2", "Ignore", vec![], &["i"]).await;
    client.completion().await;
    within(client.item("i", 4)).await;
    assert_eq!(hub.stats().dropped_stream_items, 3);
    // A second Completion of a finished stream is refused, as any unknown
    // Completion is, and the connection goes on.
    client.end_stream("s", None).await;
    assert_eq!(hub.stats().refused_completions, 1);
    client.invoke_streams("3", "Sum", vec![], &["t"]).await;
    client.end_stream("t", None).await;
    assert_eq!(client.value().await, json!(0));
}

#[tokio::test]
async fn open_upload_streams_are_bounded_and_their_ids_unique() {
    let hub = Hub::builder()
        .method("GatedSum", |_ctx, (numbers,): (UploadStream<i64>,)| {
            sum(numbers)
        })
        .max_parallel_invocations(8)
        .max_upload_streams_per_connection(2)
        .build(Arc::new(InMemoryHubLifetimeManager::new()));
    let mut client = json_client(&hub).await;
    client.invoke_streams("1", "GatedSum", vec![], &["a"]).await;
    client.invoke_streams("2", "GatedSum", vec![], &["a"]).await;
    assert_eq!(
        client.error().await,
        "Failed to invoke 'GatedSum': Stream ID 'a' is already in use."
    );
    client.invoke_streams("3", "GatedSum", vec![], &["b"]).await;
    client.invoke_streams("4", "GatedSum", vec![], &["c"]).await;
    assert_eq!(
        client.error().await,
        "Failed to invoke 'GatedSum': The connection already has 2 upload streams open, the most allowed."
    );
    client.end_stream("a", None).await;
    client.end_stream("b", None).await;
    let mut done = [client.completion().await.0, client.completion().await.0];
    done.sort();
    assert_eq!(done, ["1", "3"]);
}

#[tokio::test]
async fn a_client_that_overruns_the_buffer_waits_and_loses_nothing() {
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let hub = upload_hub(gate.clone());
    let mut client = json_client(&hub).await;
    client.invoke_streams("1", "GatedSum", vec![], &["s"]).await;
    // The method takes nothing yet: ten items fit in the buffer...
    for n in 1..=10i64 {
        within(client.item("s", n)).await;
    }
    // ...and the eleventh waits (a dropped wait sends nothing).
    let waited = tokio::time::timeout(Duration::from_millis(300), client.item("s", 11)).await;
    assert!(waited.is_err(), "the eleventh item should wait for room");
    // Let the method go: the waiting client goes on.
    gate.add_permits(tokio::sync::Semaphore::MAX_PERMITS / 2);
    for n in 11..=1000i64 {
        within(client.item("s", n)).await;
    }
    client.end_stream("s", None).await;
    assert_eq!(client.value().await, json!(500_500));
    assert_eq!(hub.stats().dropped_stream_items, 0);
}

#[tokio::test]
async fn uploads_run_beside_each_other_and_beside_a_running_invocation() {
    // One invocation slot (the default): an upload must not wait behind
    // another invocation, or its items would stop the reader.
    let hub = upload_hub(open_gate());
    let mut client = json_client(&hub).await;
    client.invoke_streams("1", "Sum", vec![], &["a"]).await;
    client.invoke_streams("2", "Sum", vec![], &["b"]).await;
    for n in 1..=50i64 {
        within(client.item("b", n)).await;
        within(client.item("a", 2 * n)).await;
    }
    client.end_stream("b", None).await;
    assert_eq!(client.value().await, json!(1275));
    client.end_stream("a", None).await;
    assert_eq!(client.value().await, json!(2550));
}

#[tokio::test]
async fn cancelling_the_invocation_or_leaving_ends_its_upload_streams() {
    let hub = upload_hub(open_gate());
    let mut client = json_client(&hub).await;
    client.invoke_streams("1", "Sum", vec![], &["s"]).await;
    client.item("s", 1).await;
    client
        .session
        .handle(HubMessage::CancelInvocation {
            invocation_id: "1".into(),
        })
        .await;
    assert_eq!(
        client.error().await,
        "The upload stream was cancelled before the client completed it."
    );

    // Leaving: the method sees the stream end with the same error, and runs
    // to its end.
    let (tx, rx) = tokio::sync::oneshot::channel();
    let tx = Arc::new(parking_lot::Mutex::new(Some(tx)));
    let hub = Hub::builder()
        .method("Watch", move |_ctx, (numbers,): (UploadStream<i64>,)| {
            let tx = tx.clone();
            async move {
                let outcome = sum(numbers).await;
                if let Some(tx) = tx.lock().take() {
                    let _ = tx.send(outcome.clone());
                }
                outcome
            }
        })
        .build(Arc::new(InMemoryHubLifetimeManager::new()));
    let client = json_client(&hub).await;
    client.invoke_streams("1", "Watch", vec![], &["s"]).await;
    client.item("s", 5).await;
    client.session.close(None).await;
    let outcome = within(rx).await.unwrap();
    assert_eq!(
        outcome,
        Err(HubError::new(
            "The upload stream was cancelled before the client completed it."
        ))
    );
}

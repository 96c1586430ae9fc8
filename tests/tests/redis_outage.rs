//! Redis outages while two servers hold connections, groups and users and
//! carry traffic: Redis killed (SIGKILL) and started again on the same
//! port, and Redis paused (SIGSTOP for 5 s, then SIGCONT) like a network
//! stall. Sends during the outage fail within a bounded time, local state is
//! kept, and delivery of every kind resumes by itself.

#![allow(clippy::unwrap_used, missing_docs)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use switchboard_core::{Error, HubLifetimeManager, Recipients};
use switchboard_redis::{RedisHubLifetimeManager, RedisOptions};
use switchboard_tests::redis_process::RedisProcess;
use switchboard_tests::{TestClient, init_logging, message};

/// How long delivery may take to come back after Redis does.
const RECOVERY_LIMIT: Duration = Duration::from_secs(15);

/// The promised bound on a send while Redis is away, with the default
/// publish timeout (750 ms).
const SEND_BOUND: Duration = Duration::from_secs(1);

async fn server(url: &str) -> Arc<dyn HubLifetimeManager> {
    let options = RedisOptions::new(url)
        .hub("outage")
        .reconnect_max_delay(Duration::from_millis(200));
    Arc::new(RedisHubLifetimeManager::connect(options).await.unwrap())
}

/// Waits, sending probes, until `client` receives one again after Redis
/// came back; returns how long that took.
async fn wait_for_delivery<F, Fut>(client: &mut TestClient, what: &str, send: F) -> Duration
where
    F: Fn(String) -> Fut,
    Fut: std::future::Future<Output = switchboard_core::Result<()>>,
{
    client.until_delivered(what, RECOVERY_LIMIT, send).await
}

/// Asserts that one send of `what` arrives at every client in `clients`.
async fn assert_delivered(clients: &mut [&mut TestClient], marker: &str) {
    for client in clients.iter_mut() {
        assert!(
            client
                .recv_marked(marker, Duration::from_secs(5))
                .await
                .is_some(),
            "{marker} did not reach connection {}",
            client.id()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delivery_resumes_after_redis_restart() {
    init_logging();
    let mut redis = RedisProcess::start();
    let url = redis.url();
    let s1 = server(&url).await;
    let s2 = server(&url).await;

    let mut a = TestClient::connect_user(&s1, "alice").await;
    let mut b = TestClient::connect_user(&s2, "alice").await;
    let mut c = TestClient::connect(&s2).await;
    s1.add_to_group(a.id(), "room").await.unwrap();
    s1.add_to_group(b.id(), "room").await.unwrap(); // remote add
    s2.send_all(&message("m", ("before",))).await.unwrap();
    assert_delivered(&mut [&mut a, &mut b, &mut c], "before").await;

    // Traffic keeps flowing from a background task through the outage,
    // until the test says stop.
    let stop_traffic = tokio_util::sync::CancellationToken::new();
    // How many of the traffic's sends failed so far.
    let traffic_failed = std::sync::Arc::new(std::sync::atomic::AtomicU32::new(0));
    let traffic = tokio::spawn({
        let s1 = s1.clone();
        let stop = stop_traffic.clone();
        let failures = traffic_failed.clone();
        async move {
            let (mut ok, mut failed) = (0u32, 0u32);
            let mut i = 0;
            while !stop.is_cancelled() {
                i += 1;
                match s1.send_all(&message("m", (format!("traffic-{i}"),))).await {
                    Ok(()) => ok += 1,
                    Err(Error::BackplaneUnavailable { .. }) => {
                        failed += 1;
                        failures.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                    Err(e) => panic!("unexpected error during the outage: {e}"),
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            (ok, failed)
        }
    });
    tokio::time::sleep(Duration::from_millis(200)).await;

    // --- outage
    tokio::task::block_in_place(|| redis.kill());
    // Sends fail promptly with BackplaneUnavailable, never hang.
    let mut worst = Duration::ZERO;
    for _ in 0..5 {
        let started = Instant::now();
        let result = s1.send_all(&message("m", ("during",))).await;
        worst = worst.max(started.elapsed());
        assert!(
            matches!(result, Err(Error::BackplaneUnavailable { .. })),
            "send during the outage: {result:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        worst < Duration::from_secs(3),
        "a send during the outage took {worst:?}"
    );
    println!("slowest failing send during the outage: {worst:?}");
    // Local state keeps working: local sends, connects, group changes.
    s2.send_connection(c.id(), &message("m", ("local",)))
        .await
        .unwrap();
    assert_delivered(&mut [&mut c], "local").await;
    let mut d = TestClient::connect_user(&s2, "bob").await;
    s2.add_to_group(d.id(), "room").await.unwrap();
    let gone = TestClient::connect(&s2).await;
    s2.on_disconnected(gone.id()).await.unwrap();

    // The background traffic has met the outage too (a send of it may have
    // been under way when Redis died, and waits out its timeout first).
    let deadline = Instant::now() + Duration::from_secs(30);
    while traffic_failed.load(std::sync::atomic::Ordering::Relaxed) == 0 {
        assert!(
            Instant::now() < deadline,
            "the background traffic never saw the outage"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // --- recovery
    let restarted = Instant::now();
    tokio::task::block_in_place(|| redis.restart());
    // Probe until each server delivers again; the first probe measures the
    // time to recovery.
    let b_id = b.id().clone();
    let s1_ref = &s1;
    let recovered = wait_for_delivery(&mut b, "probe", |marker| {
        let b_id = b_id.clone();
        async move {
            s1_ref
                .send_connection(&b_id, &message("m", (marker,)))
                .await
        }
    })
    .await;
    let a_id = a.id().clone();
    let s2_ref = &s2;
    let recovered_other = wait_for_delivery(&mut a, "probe-other", |marker| {
        let a_id = a_id.clone();
        async move {
            s2_ref
                .send_connection(&a_id, &message("m", (marker,)))
                .await
        }
    })
    .await;
    println!(
        "time to recovery after redis-server restarted: {recovered:?} (server 1 -> 2), {:?} (both ways)",
        restarted.elapsed()
    );
    assert!(recovered_other <= RECOVERY_LIMIT);
    // Subscriptions are restored together with the connection channel, but
    // give every kind its own bounded wait before the strict checks below.
    let d_id = d.id().clone();
    wait_for_delivery(&mut d, "probe-group", |marker| async move {
        s1_ref.send_group("room", &message("m", (marker,))).await
    })
    .await;
    let _ = d_id;
    wait_for_delivery(&mut d, "probe-user", |marker| async move {
        s1_ref.send_user("bob", &message("m", (marker,))).await
    })
    .await;
    wait_for_delivery(&mut c, "probe-all", |marker| async move {
        s1_ref.send_all(&message("m", (marker,))).await
    })
    .await;
    stop_traffic.cancel();
    let (ok, failed) = traffic.await.unwrap();
    assert!(
        ok > 0 && failed > 0,
        "traffic before, during and after: {ok} ok, {failed} failed"
    );
    for client in [&mut a, &mut b, &mut c, &mut d] {
        client.drain();
    }

    // Every kind of delivery works again, from both servers.
    s1.send_connection(c.id(), &message("m", ("conn",)))
        .await
        .unwrap();
    assert_delivered(&mut [&mut c], "conn").await;
    s2.send_connection(a.id(), &message("m", ("conn2",)))
        .await
        .unwrap();
    assert_delivered(&mut [&mut a], "conn2").await;
    s1.send_group("room", &message("m", ("group",)))
        .await
        .unwrap();
    assert_delivered(&mut [&mut a, &mut b, &mut d], "group").await;
    s2.send_user("alice", &message("m", ("user",)))
        .await
        .unwrap();
    assert_delivered(&mut [&mut a, &mut b], "user").await;
    s1.send_user("bob", &message("m", ("user-bob",)))
        .await
        .unwrap();
    assert_delivered(&mut [&mut d], "user-bob").await;
    s1.send_all(&message("m", ("all",))).await.unwrap();
    assert_delivered(&mut [&mut a, &mut b, &mut c, &mut d], "all").await;
    s2.send_all(&message("m", ("all2",))).await.unwrap();
    assert_delivered(&mut [&mut a, &mut b, &mut c, &mut d], "all2").await;
    // Remote group changes (acks) work again.
    s2.remove_from_group(a.id(), "room").await.unwrap();
    s2.send_group("room", &message("m", ("group-after-remove",)))
        .await
        .unwrap();
    assert_delivered(&mut [&mut b, &mut d], "group-after-remove").await;
    a.assert_nothing().await;
    // The reconnect and the resubscription it started are counted.
    for server in [&s1, &s2] {
        let stats = server.stats();
        assert!(stats.backplane_reconnects >= 1, "{stats:?}");
        assert!(stats.backplane_resyncs >= 1, "{stats:?}");
    }
}

#[tokio::test]
async fn connect_to_unreachable_redis_fails_clearly() {
    // Current-thread runtime: the Redis client's tasks log on this thread.
    let (logs, _guard) = switchboard_tests::logs::CapturedLogs::start();
    // A port nobody listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let started = Instant::now();
    let result = RedisHubLifetimeManager::connect(
        RedisOptions::new(format!("redis://127.0.0.1:{port}"))
            .connect_timeout(Duration::from_secs(2)),
    )
    .await;
    assert!(started.elapsed() < Duration::from_secs(5));
    match result {
        Err(e @ Error::BackplaneUnavailable { .. }) => {
            assert!(e.to_string().contains("cannot connect to Redis"), "{e}");
        }
        other => panic!("expected BackplaneUnavailable, got {other:?}"),
    }
    // One clear line, as the README promises.
    let text = logs.text();
    let errors: Vec<_> = text.lines().filter(|line| line.contains("ERROR")).collect();
    assert_eq!(errors.len(), 1, "{text}");
    assert!(errors[0].contains("cannot connect to Redis"), "{text}");
}

#[tokio::test]
async fn bad_settings_are_clear_errors() {
    let bad_hub =
        RedisHubLifetimeManager::connect(RedisOptions::new("redis://127.0.0.1:1").hub("a:b")).await;
    assert!(
        matches!(bad_hub, Err(Error::InvalidName { .. })),
        "{bad_hub:?}"
    );
    let bad_url = RedisHubLifetimeManager::connect(RedisOptions::new("http://127.0.0.1:1")).await;
    assert!(
        matches!(bad_url, Err(Error::InvalidConfig { .. })),
        "{bad_url:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delivery_resumes_after_redis_stall() {
    init_logging();
    let redis = RedisProcess::start();
    let url = redis.url();
    let s1 = server(&url).await;
    let s2 = server(&url).await;
    let mut a = TestClient::connect_user(&s1, "carol").await;
    let mut b = TestClient::connect_user(&s2, "carol").await;
    s2.add_to_group(a.id(), "room").await.unwrap(); // remote add
    s1.add_to_group(b.id(), "room").await.unwrap(); // remote add
    s1.send_group("room", &message("m", ("before",)))
        .await
        .unwrap();
    assert_delivered(&mut [&mut a, &mut b], "before").await;

    // --- stall: the sockets stay open, nothing answers.
    redis.pause();
    let stalled = Instant::now();
    let mut worst = Duration::ZERO;
    let mut failures = 0;
    while stalled.elapsed() < Duration::from_secs(5) {
        let started = Instant::now();
        let result = s1.send_group("room", &message("m", ("during",))).await;
        worst = worst.max(started.elapsed());
        if matches!(result, Err(Error::BackplaneUnavailable { .. })) {
            failures += 1;
        }
        // Local state keeps working meanwhile.
        s2.send_connection(b.id(), &message("m", ("local",)))
            .await
            .unwrap();
        assert_delivered(&mut [&mut b], "local").await;
    }
    println!("slowest send during the stall: {worst:?}; {failures} failed");
    assert!(failures > 0, "sends to a stalled Redis must fail");
    assert!(
        worst <= SEND_BOUND,
        "a send during the stall took {worst:?}"
    );
    let e = TestClient::connect_user(&s2, "dave").await;
    let _ = s2.add_to_group(e.id(), "room").await;

    // --- resume
    redis.resume();
    let resumed = Instant::now();
    let s1_ref = &s1;
    let recovered = wait_for_delivery(&mut b, "probe", |marker| async move {
        s1_ref.send_group("room", &message("m", (marker,))).await
    })
    .await;
    let s2_ref = &s2;
    wait_for_delivery(&mut a, "probe-user", |marker| async move {
        s2_ref.send_user("carol", &message("m", (marker,))).await
    })
    .await;
    println!(
        "time to recovery after SIGCONT: {recovered:?} (first delivery), {:?} (both servers)",
        resumed.elapsed()
    );
    for client in [&mut a, &mut b] {
        client.drain();
    }
    s2.send_group("room", &message("m", ("group",)))
        .await
        .unwrap();
    assert_delivered(&mut [&mut a, &mut b], "group").await;
    s1.send_user("carol", &message("m", ("user",)))
        .await
        .unwrap();
    assert_delivered(&mut [&mut a, &mut b], "user").await;
    s2.send_all(&message("m", ("all",))).await.unwrap();
    assert_delivered(&mut [&mut a, &mut b], "all").await;
}

/// The bound on a queued send while Redis stalls: one that waits for its
/// answer behind queued publishes waits at most 2 s for the queue to move,
/// else the default publish timeout (750 ms), plus scheduling slack.
const QUEUED_SEND_BOUND: Duration = Duration::from_secs(3);

/// What a send made by [`burst`] came to.
struct Sent {
    started: Instant,
    took: Duration,
    result: switchboard_core::Result<()>,
}

/// Queued sends to `recipients` back to back (a burst: each follows the
/// last within microseconds), from a task of their own, until `stop`.
fn burst(
    server: &Arc<dyn HubLifetimeManager>,
    recipients: Recipients,
    stop: &tokio_util::sync::CancellationToken,
) -> tokio::task::JoinHandle<Vec<Sent>> {
    let server = server.clone();
    let stop = stop.clone();
    tokio::spawn(async move {
        let mut sent = Vec::new();
        while !stop.is_cancelled() {
            let started = Instant::now();
            let result = server
                .send_queued(&recipients, &message("m", ("burst",)))
                .await;
            sent.push(Sent {
                started,
                took: started.elapsed(),
                result,
            });
            tokio::task::yield_now().await;
        }
        sent
    })
}

/// Sends that may return once queued (those of non-blocking invocations)
/// meet a stalled Redis in the middle of a burst. Sends made after the
/// stall began return without an answer (nothing could answer them); once
/// the queue stops moving they wait for their answers again and fail
/// within a bound; the queued publishes that failed are counted; afterwards
/// queued sends are delivered again, in order, and queued again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queued_sends_report_a_stalled_redis() {
    init_logging();
    let redis = RedisProcess::start();
    let url = redis.url();
    let s1 = server(&url).await;
    let s2 = server(&url).await;
    let mut b = TestClient::connect(&s2).await;
    s2.add_to_group(b.id(), "room").await.unwrap();
    let room = Recipients::Group("room".to_owned());
    s1.send_queued(&room, &message("m", ("before",)))
        .await
        .unwrap();
    assert_delivered(&mut [&mut b], "before").await;
    let errors_before = s1.stats().backplane_publish_errors;
    // The burst goes to a group nobody is in: Redis carries it, no
    // connection's queue has to hold it.
    let nobody = Recipients::Group("nobody".to_owned());

    // --- stall, in the middle of a burst
    let stop = tokio_util::sync::CancellationToken::new();
    let sending = burst(&s1, nobody.clone(), &stop);
    tokio::time::sleep(Duration::from_millis(20)).await;
    redis.pause();
    let paused = Instant::now();
    tokio::time::sleep(Duration::from_secs(5)).await;
    stop.cancel();
    let sent = sending.await.unwrap();
    let after: Vec<&Sent> = sent.iter().filter(|s| s.started >= paused).collect();
    let queued = after.iter().filter(|s| s.result.is_ok()).count();
    let failures = after
        .iter()
        .filter(|s| matches!(s.result, Err(Error::BackplaneUnavailable { .. })))
        .count();
    if let Some(other) = after.iter().find_map(|s| s.result.as_ref().err()) {
        assert!(
            matches!(other, Error::BackplaneUnavailable { .. }),
            "unexpected error during the stall: {other}"
        );
    }
    let worst = sent.iter().map(|s| s.took).max().unwrap_or_default();
    println!(
        "during the stall: {queued} queued, {failures} failed, slowest {worst:?} ({} sends before it)",
        sent.len() - after.len()
    );
    assert!(
        queued > 0,
        "sends in a burst are queued: they return without an answer, which a stalled Redis cannot give"
    );
    assert!(
        failures > 0,
        "queued sends to a stalled Redis must fail once the queue stops moving"
    );
    assert!(
        worst <= QUEUED_SEND_BOUND,
        "a queued send during the stall took {worst:?}"
    );
    let errors = s1.stats().backplane_publish_errors - errors_before;
    assert!(
        errors > failures as u64,
        "the queued publishes that failed are counted too: {errors} errors, {failures} sends failed"
    );

    // --- resume
    redis.resume();
    let s1_ref = &s1;
    let room_ref = &room;
    wait_for_delivery(&mut b, "probe", |marker| async move {
        s1_ref.send_queued(room_ref, &message("m", (marker,))).await
    })
    .await;
    for i in 0..100 {
        s1.send_queued(&room, &message("m", (format!("order-{i}"),)))
            .await
            .unwrap();
    }
    // A message overtaken by a later one would be skipped looking for it,
    // and the later one never found again.
    for i in 0..100 {
        assert!(
            b.recv_marked(&format!("order-{i}"), Duration::from_secs(5))
                .await
                .is_some(),
            "order-{i} did not arrive in order after the stall"
        );
    }

    // And they are queued again: a burst through a second stall has sends
    // that return without an answer.
    let stop = tokio_util::sync::CancellationToken::new();
    let sending = burst(&s1, nobody, &stop);
    tokio::time::sleep(Duration::from_millis(20)).await;
    redis.pause();
    let paused = Instant::now();
    tokio::time::sleep(Duration::from_millis(100)).await;
    stop.cancel();
    let sent = sending.await.unwrap();
    redis.resume();
    assert!(
        sent.iter().any(|s| s.started >= paused && s.result.is_ok()),
        "sends are queued again once publishes succeed"
    );
}

/// Which sends of a hub method may return once queued: those of a
/// non-blocking invocation (the client waits for no answer), unless the
/// method asks for confirmation. Told apart with Redis stalled in the
/// middle of a run of non-blocking invocations: a send that waits for its
/// answer then fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_non_blocking_invocations_queue_their_sends() {
    use switchboard_core::protocol::{HubMessage, Invocation, Protocol};
    use switchboard_core::{CallContext, Connection, ConnectionOptions, Hub};

    /// A method's send: which method, when it started, whether it succeeded.
    type Outcome = (&'static str, Instant, bool);

    init_logging();
    let redis = RedisProcess::start();
    let manager = server(&redis.url()).await;
    let (outcomes, mut outcome) = tokio::sync::mpsc::unbounded_channel::<Outcome>();
    let shout = {
        let outcomes = outcomes.clone();
        move |ctx: CallContext, (): ()| {
            let outcomes = outcomes.clone();
            async move {
                let started = Instant::now();
                let sent = ctx.group("nobody").send("m", ("shout",)).await;
                let _ = outcomes.send(("shout", started, sent.is_ok()));
                Ok(())
            }
        }
    };
    let confirmed = move |ctx: CallContext, (): ()| {
        let outcomes = outcomes.clone();
        async move {
            let started = Instant::now();
            let sent = ctx
                .confirmed()
                .group("nobody")
                .send("m", ("confirmed",))
                .await;
            let _ = outcomes.send(("confirmed", started, sent.is_ok()));
            Ok(())
        }
    };
    let hub = Hub::builder()
        .method("Shout", shout)
        .method("Confirmed", confirmed)
        .build(manager.clone());
    let (connection, _outbound) = Connection::new(ConnectionOptions::new(Protocol::Json));
    let session = Arc::new(hub.connect(connection).await.unwrap());
    let invoke = |id: Option<&str>, target: &str| {
        HubMessage::Invocation(Invocation {
            invocation_id: id.map(str::to_owned),
            target: target.to_owned(),
            arguments: vec![],
            stream_ids: vec![],
        })
    };
    async fn next(outcome: &mut tokio::sync::mpsc::UnboundedReceiver<Outcome>) -> Outcome {
        tokio::time::timeout(Duration::from_secs(10), outcome.recv())
            .await
            .expect("the method ran")
            .unwrap()
    }

    // Non-blocking invocations back to back, from a task of their own.
    let stop = tokio_util::sync::CancellationToken::new();
    let feeding = tokio::spawn({
        let session = session.clone();
        let stop = stop.clone();
        let shout = invoke(None, "Shout");
        async move {
            while !stop.is_cancelled() {
                session.handle(shout.clone()).await;
            }
        }
    });
    for _ in 0..50 {
        assert!(
            next(&mut outcome).await.2,
            "Redis answers: every send succeeds"
        );
    }
    redis.pause();
    let paused = Instant::now();
    let queued = loop {
        let (_, started, ok) = next(&mut outcome).await;
        if started >= paused {
            break ok;
        }
    };
    redis.resume();
    stop.cancel();
    feeding.await.unwrap();
    assert!(
        queued,
        "a non-blocking invocation's send in a run of them is queued: it returns without an answer"
    );
    // Let the run's last invocations finish.
    tokio::time::sleep(Duration::from_millis(200)).await;
    while outcome.try_recv().is_ok() {}

    redis.pause();
    session.handle(invoke(Some("1"), "Shout")).await;
    assert!(
        !next(&mut outcome).await.2,
        "blocking: waits for the answer, fails"
    );
    session.handle(invoke(None, "Confirmed")).await;
    let (method, _, ok) = next(&mut outcome).await;
    assert_eq!(
        (method, ok),
        ("confirmed", false),
        "confirmed: waits, fails"
    );
    redis.resume();
}

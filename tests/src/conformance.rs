//! The lifetime-manager conformance scenarios, after SignalR's own suites
//! (`HubLifetimeManagerTestsBase`, `ScaleoutHubLifetimeManagerTests`).
//!
//! Each body takes a [`Backend`] and asserts one behaviour. Single-server
//! bodies use one server; a backend with a backplane runs them too.

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use switchboard_core::{Error, HubLifetimeManager, InvocationIds, InvokeOptions, Recipients};
use tokio_util::sync::CancellationToken;

use crate::{Backend, TestClient, message, within};

/// Starts a client-result invocation of `client` on `manager` in a task.
fn invoke(
    manager: &Arc<dyn HubLifetimeManager>,
    ids: &InvocationIds,
    connection_id: &str,
    options: InvokeOptions,
) -> tokio::task::JoinHandle<switchboard_core::Result<switchboard_core::ClientResponse>> {
    let manager = manager.clone();
    let connection_id = connection_id.to_owned();
    let invocation_id = ids.next_id();
    tokio::spawn(async move {
        let message = switchboard_core::SerializedMessage::invocation_with_id(
            &switchboard_core::protocol::Protocol::ALL,
            Some(&invocation_id),
            "ask",
            &("question",),
        )?;
        manager
            .invoke_connection(&connection_id, &invocation_id, &message, options)
            .await
    })
}

/// Reads the client-result invocation a client received; returns its id.
async fn received_invocation_id(client: &mut TestClient) -> String {
    let received = client.recv().await;
    assert_eq!(received.target, "ask");
    assert_eq!(received.arguments, vec![json!("question")]);
    received
        .invocation_id
        .expect("a client-result invocation carries an invocation id")
}

// ---------------------------------------------------------------- one server

/// 1. send_all reaches every connection.
pub async fn send_all_reaches_every_connection(backend: &dyn Backend) {
    let server = backend.server().await;
    let mut a = TestClient::connect(&server).await;
    let mut b = TestClient::connect(&server).await;
    backend.settle().await;

    server
        .send_all(&message("hello", ("world",)))
        .await
        .unwrap();

    for client in [&mut a, &mut b] {
        let received = client.recv().await;
        assert_eq!(received.target, "hello");
        assert_eq!(received.arguments, vec![json!("world")]);
        assert_eq!(received.invocation_id, None);
    }
}

/// 2. send_all does not reach a connection after it disconnected.
pub async fn send_all_skips_disconnected_connection(backend: &dyn Backend) {
    let server = backend.server().await;
    let mut a = TestClient::connect(&server).await;
    let mut b = TestClient::connect(&server).await;
    server.on_disconnected(b.id()).await.unwrap();
    backend.settle().await;

    server
        .send_all(&message("hello", ("world",)))
        .await
        .unwrap();

    assert_eq!(a.recv().await.target, "hello");
    b.assert_nothing().await;
}

/// 3. send_group reaches exactly the members.
pub async fn send_group_reaches_only_members(backend: &dyn Backend) {
    let server = backend.server().await;
    let mut member = TestClient::connect(&server).await;
    let mut outsider = TestClient::connect(&server).await;
    server.add_to_group(member.id(), "gunit").await.unwrap();
    backend.settle().await;

    server
        .send_group("gunit", &message("hello", ("world",)))
        .await
        .unwrap();

    assert_eq!(member.recv().await.arguments, vec![json!("world")]);
    outsider.assert_nothing().await;
}

/// 4. send_group_except skips the excluded members.
pub async fn send_group_except_skips_excluded(backend: &dyn Backend) {
    let server = backend.server().await;
    let mut a = TestClient::connect(&server).await;
    let mut b = TestClient::connect(&server).await;
    server.add_to_group(a.id(), "gunit").await.unwrap();
    server.add_to_group(b.id(), "gunit").await.unwrap();
    backend.settle().await;

    server
        .send_group_except("gunit", &message("hello", ("world",)), &[b.id().clone()])
        .await
        .unwrap();

    assert_eq!(a.recv().await.target, "hello");
    b.assert_nothing().await;
}

/// 5. send_connection reaches that connection.
pub async fn send_connection_reaches_connection(backend: &dyn Backend) {
    let server = backend.server().await;
    let mut a = TestClient::connect(&server).await;
    let mut b = TestClient::connect(&server).await;
    backend.settle().await;

    server
        .send_connection(a.id(), &message("hello", ("world",)))
        .await
        .unwrap();

    assert_eq!(a.recv().await.arguments, vec![json!("world")]);
    b.assert_nothing().await;
}

/// 6. A client result returns the client's value.
pub async fn client_result_returns_value(backend: &dyn Backend) {
    let server = backend.server().await;
    let mut client = TestClient::connect(&server).await;
    backend.settle().await;
    let ids = InvocationIds::new();

    let pending = invoke(&server, &ids, client.id(), InvokeOptions::default());
    let id = received_invocation_id(&mut client).await;
    server
        .set_connection_result(client.id(), client.completion(&id, &10))
        .await
        .unwrap();

    let response = within(pending).await.unwrap().unwrap();
    assert_eq!(response.deserialize::<i32>().unwrap(), 10);
}

/// 7. An error completion surfaces as an error carrying the client's text.
pub async fn client_result_error_surfaces(backend: &dyn Backend) {
    let server = backend.server().await;
    let mut client = TestClient::connect(&server).await;
    backend.settle().await;
    let ids = InvocationIds::new();

    let pending = invoke(&server, &ids, client.id(), InvokeOptions::default());
    let id = received_invocation_id(&mut client).await;
    server
        .set_connection_result(
            client.id(),
            client.error_completion(&id, "Error from client"),
        )
        .await
        .unwrap();

    match within(pending).await.unwrap() {
        Err(Error::ClientError { message }) => assert_eq!(message, "Error from client"),
        other => panic!("expected the client's error, got {other:?}"),
    }
}

/// 8. A completion from the wrong connection is rejected; the right one
///    can still complete the invocation.
pub async fn client_result_from_wrong_connection_rejected(backend: &dyn Backend) {
    let server = backend.server().await;
    let mut target = TestClient::connect(&server).await;
    let other = TestClient::connect(&server).await;
    backend.settle().await;
    let ids = InvocationIds::new();

    let pending = invoke(&server, &ids, target.id(), InvokeOptions::default());
    let id = received_invocation_id(&mut target).await;

    let refused = server
        .set_connection_result(other.id(), other.completion(&id, &5))
        .await;
    match refused {
        Err(Error::WrongConnection {
            invocation_id,
            connection_id,
        }) => {
            assert_eq!(invocation_id, id);
            assert_eq!(connection_id, other.id().as_str());
        }
        other => panic!("expected WrongConnection, got {other:?}"),
    }

    server
        .set_connection_result(target.id(), target.completion(&id, &10))
        .await
        .unwrap();
    let response = within(pending).await.unwrap().unwrap();
    assert_eq!(response.deserialize::<i32>().unwrap(), 10);
}

/// 9. Invoking an unknown connection fails at once with "does not exist".
pub async fn client_result_unknown_connection_fails_at_once(backend: &dyn Backend) {
    let server = backend.server().await;
    let _client = TestClient::connect(&server).await;
    backend.settle().await;
    let ids = InvocationIds::new();

    // No timeout: if the manager waited, `within` would fail the test.
    let result = within(invoke(&server, &ids, "1234", InvokeOptions::default()))
        .await
        .unwrap();
    match result {
        Err(e @ Error::ConnectionNotFound { .. }) => {
            assert_eq!(e.to_string(), "Connection '1234' does not exist.");
        }
        other => panic!("expected ConnectionNotFound, got {other:?}"),
    }
}

/// 10. Two pending client results on different connections complete
///     independently.
pub async fn client_results_complete_independently(backend: &dyn Backend) {
    let server = backend.server().await;
    let mut a = TestClient::connect(&server).await;
    let mut b = TestClient::connect(&server).await;
    backend.settle().await;
    let ids = InvocationIds::new();

    let pending_a = invoke(&server, &ids, a.id(), InvokeOptions::default());
    let pending_b = invoke(&server, &ids, b.id(), InvokeOptions::default());
    let id_a = received_invocation_id(&mut a).await;
    let id_b = received_invocation_id(&mut b).await;
    assert_ne!(id_a, id_b);

    // Answer in the opposite order.
    server
        .set_connection_result(b.id(), b.completion(&id_b, &2))
        .await
        .unwrap();
    let response_b = within(pending_b).await.unwrap().unwrap();
    assert_eq!(response_b.deserialize::<i32>().unwrap(), 2);
    assert!(!pending_a.is_finished());

    server
        .set_connection_result(a.id(), a.completion(&id_a, &1))
        .await
        .unwrap();
    let response_a = within(pending_a).await.unwrap().unwrap();
    assert_eq!(response_a.deserialize::<i32>().unwrap(), 1);
}

/// 11. The client disconnects before answering: the caller gets
///     "disconnected".
pub async fn client_result_fails_when_client_disconnects(backend: &dyn Backend) {
    let server = backend.server().await;
    let mut client = TestClient::connect(&server).await;
    backend.settle().await;
    let ids = InvocationIds::new();

    let pending = invoke(&server, &ids, client.id(), InvokeOptions::default());
    received_invocation_id(&mut client).await;
    server.on_disconnected(client.id()).await.unwrap();

    match within(pending).await.unwrap() {
        Err(e @ Error::ConnectionDisconnected { .. }) => {
            assert!(e.to_string().contains("disconnected"), "{e}");
        }
        other => panic!("expected ConnectionDisconnected, got {other:?}"),
    }
}

/// 12. The caller cancels: the caller gets a cancellation error; a late
///     answer is ignored.
pub async fn client_result_cancelled_by_caller(backend: &dyn Backend) {
    let server = backend.server().await;
    let mut client = TestClient::connect(&server).await;
    backend.settle().await;
    let ids = InvocationIds::new();
    let cancel = CancellationToken::new();

    let pending = invoke(
        &server,
        &ids,
        client.id(),
        InvokeOptions::default().with_cancel(cancel.clone()),
    );
    let id = received_invocation_id(&mut client).await;
    cancel.cancel();
    assert!(matches!(
        within(pending).await.unwrap(),
        Err(Error::Canceled)
    ));

    // The late answer finds nobody waiting: refused, nothing breaks.
    let late = server
        .set_connection_result(client.id(), client.completion(&id, &10))
        .await;
    assert!(
        late.is_err(),
        "a late answer must not be accepted: {late:?}"
    );

    // The connection still works.
    server
        .send_connection(client.id(), &message("hello", ("again",)))
        .await
        .unwrap();
    assert_eq!(client.recv().await.arguments, vec![json!("again")]);
}

/// Group changes for a connection that exists nowhere fail at once with
/// `ConnectionNotFound` (SignalR ignores the remove; an error is clearer).
pub async fn group_change_for_unknown_connection_fails(backend: &dyn Backend) {
    let server = backend.server().await;
    for result in [
        within(server.add_to_group("no-such-connection", "g")).await,
        within(server.remove_from_group("no-such-connection", "g")).await,
    ] {
        match result {
            Err(e @ Error::ConnectionNotFound { .. }) => {
                assert_eq!(
                    e.to_string(),
                    "Connection 'no-such-connection' does not exist."
                );
            }
            other => panic!("expected ConnectionNotFound, got {other:?}"),
        }
    }
}

/// A client-result timeout ends the wait with a timeout error.
pub async fn client_result_times_out(backend: &dyn Backend) {
    let server = backend.server().await;
    let mut client = TestClient::connect(&server).await;
    backend.settle().await;
    let ids = InvocationIds::new();

    let pending = invoke(
        &server,
        &ids,
        client.id(),
        InvokeOptions::timeout(Duration::from_millis(100)),
    );
    received_invocation_id(&mut client).await;
    assert!(matches!(
        within(pending).await.unwrap(),
        Err(Error::ClientResultTimeout { .. })
    ));
}

/// Presence 1. A user's connections are listed and counted; once they are
/// gone the user is offline.
pub async fn presence_lists_user_connections(backend: &dyn Backend) {
    let server = backend.server().await;
    let first = TestClient::connect_user(&server, "ada").await;
    let second = TestClient::connect_user(&server, "ada").await;
    let _other = TestClient::connect_user(&server, "bob").await;
    backend.settle().await;

    let presence = within(server.user_connections("ada", 10)).await.unwrap();
    assert_eq!(presence.count, 2);
    assert!(presence.is_complete());
    assert_eq!(
        sorted(&presence.connections),
        sorted(&[first.id().clone(), second.id().clone()])
    );
    assert!(within(server.is_user_online("ada")).await.unwrap());
    assert!(!within(server.is_user_online("nobody")).await.unwrap());

    server.on_disconnected(first.id()).await.unwrap();
    let presence = within(server.user_connections("ada", 10)).await.unwrap();
    assert_eq!(presence.connections, vec![second.id().clone()]);
    server.on_disconnected(second.id()).await.unwrap();
    assert!(!within(server.is_user_online("ada")).await.unwrap());
    assert_eq!(
        within(server.user_connections("ada", 10))
            .await
            .unwrap()
            .count,
        0
    );
}

/// Presence 2. A group's members are counted exactly while the list stays
/// within the limit; a limit of 0 counts only; leaving a group leaves its
/// presence.
pub async fn presence_counts_group_members_within_a_limit(backend: &dyn Backend) {
    let server = backend.server().await;
    let mut members = Vec::new();
    for _ in 0..5 {
        let client = TestClient::connect(&server).await;
        server.add_to_group(client.id(), "room").await.unwrap();
        members.push(client);
    }
    let outsider = TestClient::connect(&server).await;
    server.add_to_group(outsider.id(), "other").await.unwrap();
    backend.settle().await;

    let presence = within(server.group_members("room", 3)).await.unwrap();
    assert_eq!(presence.count, 5);
    assert_eq!(presence.connections.len(), 3);
    assert!(presence.is_truncated());
    let ids: Vec<_> = members.iter().map(|m| m.id().clone()).collect();
    assert!(presence.connections.iter().all(|id| ids.contains(id)));

    let counted = within(server.group_members("room", 0)).await.unwrap();
    assert_eq!((counted.count, counted.connections.len()), (5, 0));

    server
        .remove_from_group(members[0].id(), "room")
        .await
        .unwrap();
    server.on_disconnected(members[1].id()).await.unwrap();
    let presence = within(server.group_members("room", 100)).await.unwrap();
    assert_eq!(sorted(&presence.connections), sorted(&ids[2..]));
    assert_eq!(presence.count, 3);
    assert!(!presence.is_truncated());
}

/// Presence 3. Groups and users whose names hold pattern characters or
/// separators are their own: `*` is not a wildcard, `a:b` is not `a`.
pub async fn presence_names_are_literal(backend: &dyn Backend) {
    let server = backend.server().await;
    let star = TestClient::connect_user(&server, "*").await;
    let colon = TestClient::connect_user(&server, "a:b").await;
    server.add_to_group(star.id(), "*").await.unwrap();
    server.add_to_group(colon.id(), "a:b").await.unwrap();
    backend.settle().await;

    for (name, member) in [("*", &star), ("a:b", &colon)] {
        let users = within(server.user_connections(name, 10)).await.unwrap();
        assert_eq!(users.connections, vec![member.id().clone()], "user {name}");
        let group = within(server.group_members(name, 10)).await.unwrap();
        assert_eq!(group.connections, vec![member.id().clone()], "group {name}");
    }
    for name in ["a", "a*", "", "?"] {
        assert_eq!(
            within(server.group_members(name, 10)).await.unwrap().count,
            0,
            "group {name}"
        );
        assert!(
            !within(server.is_user_online(name)).await.unwrap(),
            "user {name}"
        );
    }
}

/// Connection ids in a stable order, to compare sets.
fn sorted(ids: &[switchboard_core::ConnectionId]) -> Vec<String> {
    let mut ids: Vec<String> = ids.iter().map(ToString::to_string).collect();
    ids.sort();
    ids
}

// --------------------------------------------------------------- two servers

/// Two servers of one backend.
async fn two(backend: &dyn Backend) -> (Arc<dyn HubLifetimeManager>, Arc<dyn HubLifetimeManager>) {
    (backend.server().await, backend.server().await)
}

/// A registered connection whose client stopped reading: its queue's
/// receiving side is gone, so every write to it fails.
async fn broken_connection(server: &Arc<dyn HubLifetimeManager>) -> switchboard_core::Connection {
    let (connection, outbound) = switchboard_core::Connection::new(
        switchboard_core::ConnectionOptions::new(switchboard_core::protocol::Protocol::Json),
    );
    drop(outbound);
    server.on_connected(connection.clone()).await.unwrap();
    connection
}

/// Scale-out 1. send_all from one server reaches connections on the other.
pub async fn scaleout_send_all_reaches_other_server(backend: &dyn Backend) {
    let (s1, s2) = two(backend).await;
    let mut a = TestClient::connect(&s1).await;
    let mut b = TestClient::connect(&s2).await;

    s1.send_all(&message("hello", ("world",))).await.unwrap();

    assert_eq!(a.recv().await.arguments, vec![json!("world")]);
    assert_eq!(b.recv().await.arguments, vec![json!("world")]);
}

/// Scale-out 2. ...but not a connection on the other server that disconnected.
pub async fn scaleout_send_all_skips_disconnected_remote(backend: &dyn Backend) {
    let (s1, s2) = two(backend).await;
    let mut a = TestClient::connect(&s2).await;
    let mut b = TestClient::connect(&s2).await;
    s2.on_disconnected(b.id()).await.unwrap();

    s1.send_all(&message("hello", ("world",))).await.unwrap();

    assert_eq!(a.recv().await.target, "hello");
    b.assert_nothing().await;
}

/// Scale-out 3. send_connection from the server without the connection reaches it.
pub async fn scaleout_send_connection_reaches_remote(backend: &dyn Backend) {
    let (s1, s2) = two(backend).await;
    let mut remote = TestClient::connect(&s2).await;
    let mut other = TestClient::connect(&s2).await;

    s1.send_connection(remote.id(), &message("hello", ("world",)))
        .await
        .unwrap();

    assert_eq!(remote.recv().await.arguments, vec![json!("world")]);
    other.assert_nothing().await;
}

/// Scale-out 4. send_group from the server without members reaches members on the other.
pub async fn scaleout_send_group_reaches_remote_members(backend: &dyn Backend) {
    let (s1, s2) = two(backend).await;
    let mut member = TestClient::connect(&s2).await;
    let mut outsider = TestClient::connect(&s2).await;
    s2.add_to_group(member.id(), "name").await.unwrap();

    s1.send_group("name", &message("hello", ("world",)))
        .await
        .unwrap();

    assert_eq!(member.recv().await.arguments, vec![json!("world")]);
    outsider.assert_nothing().await;
}

/// Scale-out 5. Disconnect removes the connection from its groups everywhere.
pub async fn scaleout_disconnect_removes_from_groups(backend: &dyn Backend) {
    let (s1, s2) = two(backend).await;
    let mut leaving = TestClient::connect(&s2).await;
    s1.add_to_group(leaving.id(), "name").await.unwrap();
    s2.on_disconnected(leaving.id()).await.unwrap();

    s1.send_group("name", &message("hello", ("world",)))
        .await
        .unwrap();
    leaving.assert_nothing().await;

    // The group still works for a new member on the same server.
    let mut joining = TestClient::connect(&s2).await;
    s1.add_to_group(joining.id(), "name").await.unwrap();
    s1.send_group("name", &message("hello", ("again",)))
        .await
        .unwrap();
    assert_eq!(joining.recv().await.arguments, vec![json!("again")]);
    leaving.assert_nothing().await;
}

/// Scale-out 6. Removing a local connection from a group it is not in succeeds quietly.
pub async fn scaleout_remove_local_non_member_is_quiet(backend: &dyn Backend) {
    let (s1, _s2) = two(backend).await;
    let client = TestClient::connect(&s1).await;
    within(s1.remove_from_group(client.id(), "name"))
        .await
        .unwrap();
}

/// Scale-out 7. Same for a connection on the other server: the owner still answers.
pub async fn scaleout_remove_remote_non_member_is_quiet(backend: &dyn Backend) {
    let (s1, s2) = two(backend).await;
    let client = TestClient::connect(&s2).await;
    within(s1.remove_from_group(client.id(), "name"))
        .await
        .unwrap();
}

/// Scale-out 8. add_to_group for a connection on the other server works.
pub async fn scaleout_add_remote_connection_to_group(backend: &dyn Backend) {
    let (s1, s2) = two(backend).await;
    let mut client = TestClient::connect(&s2).await;
    within(s1.add_to_group(client.id(), "name")).await.unwrap();

    s1.send_group("name", &message("hello", ("from 1",)))
        .await
        .unwrap();
    assert_eq!(client.recv().await.arguments, vec![json!("from 1")]);
    s2.send_group("name", &message("hello", ("from 2",)))
        .await
        .unwrap();
    assert_eq!(client.recv().await.arguments, vec![json!("from 2")]);
}

/// Scale-out 9. Adding a local connection twice delivers each group message once.
pub async fn scaleout_add_local_twice_delivers_once(backend: &dyn Backend) {
    let (s1, s2) = two(backend).await;
    let mut client = TestClient::connect(&s1).await;
    s1.add_to_group(client.id(), "name").await.unwrap();
    s1.add_to_group(client.id(), "name").await.unwrap();

    s2.send_group("name", &message("hello", ("world",)))
        .await
        .unwrap();
    assert_eq!(client.recv().await.target, "hello");
    client.assert_nothing().await;
}

/// Scale-out 10. Adding locally then remotely still delivers once.
pub async fn scaleout_add_local_then_remote_delivers_once(backend: &dyn Backend) {
    let (s1, s2) = two(backend).await;
    let mut client = TestClient::connect(&s1).await;
    s1.add_to_group(client.id(), "name").await.unwrap();
    s2.add_to_group(client.id(), "name").await.unwrap();

    s2.send_group("name", &message("hello", ("world",)))
        .await
        .unwrap();
    assert_eq!(client.recv().await.target, "hello");
    client.assert_nothing().await;
}

/// Scale-out 11. remove_from_group for a connection on the other server stops delivery.
pub async fn scaleout_remove_remote_connection_from_group(backend: &dyn Backend) {
    let (s1, s2) = two(backend).await;
    let mut client = TestClient::connect(&s2).await;
    s2.add_to_group(client.id(), "name").await.unwrap();
    s1.send_group("name", &message("hello", ("before",)))
        .await
        .unwrap();
    assert_eq!(client.recv().await.arguments, vec![json!("before")]);

    within(s1.remove_from_group(client.id(), "name"))
        .await
        .unwrap();
    s1.send_group("name", &message("hello", ("after",)))
        .await
        .unwrap();
    client.assert_nothing().await;
}

/// Scale-out 12. send_connection to a local connection is delivered exactly
/// once, without going through the backplane.
pub async fn scaleout_send_local_connection_skips_backplane(backend: &dyn Backend) {
    let (s1, _s2) = two(backend).await;
    let mut client = TestClient::connect(&s1).await;
    let published_before = s1.stats().backplane_published;

    s1.send_connection(client.id(), &message("hello", ("world",)))
        .await
        .unwrap();

    assert_eq!(client.recv().await.target, "hello");
    client.assert_nothing().await;
    assert_eq!(s1.stats().backplane_published, published_before);
}

/// Scale-out 13. A failing write on a remote connection never fails the sender.
pub async fn scaleout_failing_remote_write_does_not_fail_sender(backend: &dyn Backend) {
    let (s1, s2) = two(backend).await;
    let broken = broken_connection(&s2).await;
    s2.add_to_group(broken.id(), "name").await.unwrap();

    s1.send_connection(broken.id(), &message("hello", ("world",)))
        .await
        .unwrap();
    s1.send_all(&message("hello", ("world",))).await.unwrap();
    s1.send_group("name", &message("hello", ("world",)))
        .await
        .unwrap();
}

/// Scale-out 14. One failing group member never stops delivery to the
/// others, message after message.
pub async fn scaleout_failing_member_does_not_stop_others(backend: &dyn Backend) {
    let (s1, s2) = two(backend).await;
    let broken = broken_connection(&s2).await;
    let mut healthy = TestClient::connect(&s2).await;
    s2.add_to_group(broken.id(), "name").await.unwrap();
    s2.add_to_group(healthy.id(), "name").await.unwrap();

    for i in 0..3 {
        s1.send_group("name", &message("hello", (i,)))
            .await
            .unwrap();
    }
    for i in 0..3 {
        assert_eq!(healthy.recv().await.arguments, vec![json!(i)]);
    }
}

/// Scale-out 15. send_user reaches every connection of that user, on every server.
pub async fn scaleout_send_user_reaches_all_servers(backend: &dyn Backend) {
    let (s1, s2) = two(backend).await;
    let mut on1 = TestClient::connect_user(&s1, "userA").await;
    let mut on2 = TestClient::connect_user(&s2, "userA").await;
    let mut other = TestClient::connect_user(&s2, "userB").await;

    s1.send_user("userA", &message("hello", ("world",)))
        .await
        .unwrap();

    assert_eq!(on1.recv().await.target, "hello");
    assert_eq!(on2.recv().await.target, "hello");
    other.assert_nothing().await;
}

/// Scale-out 16. A user with several connections stays subscribed when one disconnects.
pub async fn scaleout_user_stays_subscribed_after_one_disconnect(backend: &dyn Backend) {
    let (s1, s2) = two(backend).await;
    let first = TestClient::connect_user(&s2, "userA").await;
    let mut second = TestClient::connect_user(&s2, "userA").await;
    s2.on_disconnected(first.id()).await.unwrap();

    s1.send_user("userA", &message("hello", ("world",)))
        .await
        .unwrap();
    assert_eq!(second.recv().await.target, "hello");
}

/// Scale-out 17. A client result across servers returns the value.
pub async fn scaleout_client_result_returns_value(backend: &dyn Backend) {
    let (s1, s2) = two(backend).await;
    let mut client = TestClient::connect(&s2).await;
    let ids = InvocationIds::new();

    let pending = invoke(&s1, &ids, client.id(), InvokeOptions::default());
    let id = received_invocation_id(&mut client).await;
    s2.set_connection_result(client.id(), client.completion(&id, &10))
        .await
        .unwrap();

    let response = within(pending).await.unwrap().unwrap();
    assert_eq!(response.deserialize::<i32>().unwrap(), 10);
}

/// Scale-out 18. A client-result error across servers surfaces the client's error.
pub async fn scaleout_client_result_error_surfaces(backend: &dyn Backend) {
    let (s1, s2) = two(backend).await;
    let mut client = TestClient::connect(&s2).await;
    let ids = InvocationIds::new();

    let pending = invoke(&s1, &ids, client.id(), InvokeOptions::default());
    let id = received_invocation_id(&mut client).await;
    s2.set_connection_result(
        client.id(),
        client.error_completion(&id, "Error from client"),
    )
    .await
    .unwrap();

    match within(pending).await.unwrap() {
        Err(Error::ClientError { message }) => assert_eq!(message, "Error from client"),
        other => panic!("expected the client's error, got {other:?}"),
    }
}

/// Scale-out 19. A client result to a connection that exists nowhere fails at once.
pub async fn scaleout_client_result_to_nowhere_fails_at_once(backend: &dyn Backend) {
    let (s1, _s2) = two(backend).await;
    let ids = InvocationIds::new();
    let missing = switchboard_core::ConnectionId::random();

    let result = within(invoke(&s1, &ids, &missing, InvokeOptions::default()))
        .await
        .unwrap();
    match result {
        Err(e @ Error::ConnectionNotFound { .. }) => {
            assert!(e.to_string().contains("does not exist"), "{e}");
        }
        other => panic!("expected ConnectionNotFound, got {other:?}"),
    }
}

/// Scale-out 20. The target disconnects on the other server before
/// answering: the caller gets "disconnected".
pub async fn scaleout_client_result_target_disconnects(backend: &dyn Backend) {
    let (s1, s2) = two(backend).await;
    let mut client = TestClient::connect(&s2).await;
    let ids = InvocationIds::new();

    let pending = invoke(&s1, &ids, client.id(), InvokeOptions::default());
    received_invocation_id(&mut client).await;
    s2.on_disconnected(client.id()).await.unwrap();

    match within(pending).await.unwrap() {
        Err(e @ Error::ConnectionDisconnected { .. }) => {
            assert!(e.to_string().contains("disconnected"), "{e}");
        }
        other => panic!("expected ConnectionDisconnected, got {other:?}"),
    }
}

/// Scale-out 21. Client results started on different servers get distinct
/// ids and each answer reaches its caller.
pub async fn scaleout_client_results_from_both_servers(backend: &dyn Backend) {
    let (s1, s2) = two(backend).await;
    let mut on1 = TestClient::connect(&s1).await;
    let mut on2 = TestClient::connect(&s2).await;
    let (ids1, ids2) = (InvocationIds::new(), InvocationIds::new());

    // Server 1 asks the connection on server 2, and the other way round.
    let from1 = invoke(&s1, &ids1, on2.id(), InvokeOptions::default());
    let from2 = invoke(&s2, &ids2, on1.id(), InvokeOptions::default());
    let id_on2 = received_invocation_id(&mut on2).await;
    let id_on1 = received_invocation_id(&mut on1).await;
    assert_ne!(id_on1, id_on2);

    s2.set_connection_result(on2.id(), on2.completion(&id_on2, &2))
        .await
        .unwrap();
    s1.set_connection_result(on1.id(), on1.completion(&id_on1, &1))
        .await
        .unwrap();
    assert_eq!(
        within(from1)
            .await
            .unwrap()
            .unwrap()
            .deserialize::<i32>()
            .unwrap(),
        2
    );
    assert_eq!(
        within(from2)
            .await
            .unwrap()
            .unwrap()
            .deserialize::<i32>()
            .unwrap(),
        1
    );
}

/// Scale-out 22. Same as 19 with an arbitrary id: `Connection '1234' does not exist.`
pub async fn scaleout_client_result_unknown_id_message(backend: &dyn Backend) {
    let (s1, _s2) = two(backend).await;
    let ids = InvocationIds::new();
    let result = within(invoke(&s1, &ids, "1234", InvokeOptions::default()))
        .await
        .unwrap();
    match result {
        Err(e) => assert_eq!(e.to_string(), "Connection '1234' does not exist."),
        Ok(r) => panic!("expected an error, got {r:?}"),
    }
}

/// Scale-out 23. A client result of the wrong type gives a clear
/// deserialization error, not a panic.
pub async fn scaleout_client_result_wrong_type(backend: &dyn Backend) {
    let (s1, s2) = two(backend).await;
    let mut client = TestClient::connect(&s2).await;
    let ids = InvocationIds::new();

    let pending = invoke(&s1, &ids, client.id(), InvokeOptions::default());
    let id = received_invocation_id(&mut client).await;
    s2.set_connection_result(client.id(), client.completion(&id, &"not a number"))
        .await
        .unwrap();

    let response = within(pending).await.unwrap().unwrap();
    match response.deserialize::<i32>() {
        Err(e @ Error::InvalidResult { .. }) => {
            assert!(e.to_string().contains("invalid type"), "{e}");
        }
        other => panic!("expected InvalidResult, got {other:?}"),
    }
}

// ------------------------------------------------------------ backplane-only

/// A group and a user named `*` are literal names: no pattern, no cross-talk.
pub async fn star_names_are_literal(backend: &dyn Backend) {
    let (s1, s2) = two(backend).await;
    let mut star = TestClient::connect_user(&s2, "*").await;
    let mut plain = TestClient::connect_user(&s2, "a").await;
    s2.add_to_group(star.id(), "*").await.unwrap();
    s2.add_to_group(plain.id(), "a").await.unwrap();

    s1.send_group("a", &message("group", ("a",))).await.unwrap();
    assert_eq!(plain.recv().await.arguments, vec![json!("a")]);
    star.assert_nothing().await;

    s1.send_group("*", &message("group", ("*",))).await.unwrap();
    assert_eq!(star.recv().await.arguments, vec![json!("*")]);
    plain.assert_nothing().await;

    s1.send_user("a", &message("user", ("a",))).await.unwrap();
    assert_eq!(plain.recv().await.target, "user");
    star.assert_nothing().await;

    s1.send_user("*", &message("user", ("*",))).await.unwrap();
    assert_eq!(star.recv().await.target, "user");
    plain.assert_nothing().await;
}

/// Names with pattern characters, separators, spaces, unicode and the empty
/// string reach exactly their own group.
pub async fn awkward_group_names_stay_apart(backend: &dyn Backend) {
    let (s1, s2) = two(backend).await;
    let names = [
        "a?b",
        "[ab]",
        "x:y",
        "user:x",
        "with space",
        "ünïcødé",
        "",
        "a*",
    ];
    let mut members = Vec::new();
    for name in names {
        let client = TestClient::connect(&s2).await;
        s2.add_to_group(client.id(), name).await.unwrap();
        members.push(client);
    }
    for (i, name) in names.iter().enumerate() {
        s1.send_group(name, &message("group", (name,)))
            .await
            .unwrap();
        assert_eq!(members[i].recv().await.arguments, vec![json!(name)]);
    }
    for member in &mut members {
        member.assert_nothing().await;
    }
}

/// The frames a server publishes reach clients on another server byte for
/// byte: not decoded, not re-encoded.
pub async fn frames_are_forwarded_byte_for_byte(backend: &dyn Backend) {
    use switchboard_core::protocol::Protocol;
    let (s1, s2) = two(backend).await;
    let mut json_client = TestClient::connect(&s2).await;
    let mut msgpack_client = TestClient::connect_with(
        &s2,
        switchboard_core::ConnectionOptions::new(Protocol::MessagePack),
    )
    .await;

    // Frames as some other serializer might write them: odd spacing, a
    // header, a float written as float64.
    let json = bytes::Bytes::from_static(
        b"{ \"type\" : 1, \"headers\": {\"k\":\"v\"}, \"target\":\"t\", \"arguments\":[ 1.50 ] }\x1e",
    );
    let msgpack = bytes::Bytes::from_static(&[
        0x15, 0x96, 0x01, 0x81, 0xa1, b'k', 0xa1, b'v', 0xc0, 0xa1, b't', 0x91, 0xcb, 0x3f, 0xf8,
        0, 0, 0, 0, 0, 0, 0x90,
    ]);
    let mut message = switchboard_core::SerializedMessage::new();
    message.insert(Protocol::Json, json.clone());
    message.insert(Protocol::MessagePack, msgpack.clone());

    s1.send_all(&message).await.unwrap();
    assert_eq!(json_client.recv_frame().await, json);
    assert_eq!(msgpack_client.recv_frame().await, msgpack);
}

/// Presence 4. A user's connections and a group's members are answered
/// across servers, from any server (one holding none of them, too), and
/// leave presence when they disconnect on their server.
pub async fn scaleout_presence_spans_servers(backend: &dyn Backend) {
    let (s1, s2) = two(backend).await;
    let s3 = backend.server().await;
    let on_s1 = TestClient::connect_user(&s1, "ada").await;
    let on_s2 = TestClient::connect_user(&s2, "ada").await;
    let also_s2 = TestClient::connect_user(&s2, "ada").await;
    s1.add_to_group(on_s1.id(), "room").await.unwrap();
    s1.add_to_group(on_s2.id(), "room").await.unwrap();
    backend.settle().await;
    let all = sorted(&[on_s1.id().clone(), on_s2.id().clone(), also_s2.id().clone()]);

    for asker in [&s1, &s2, &s3] {
        let presence = within(asker.user_connections("ada", 10)).await.unwrap();
        assert!(presence.is_complete());
        assert_eq!(presence.count, 3);
        assert_eq!(sorted(&presence.connections), all);
        assert!(within(asker.is_user_online("ada")).await.unwrap());

        let group = within(asker.group_members("room", 10)).await.unwrap();
        assert_eq!(
            sorted(&group.connections),
            sorted(&[on_s1.id().clone(), on_s2.id().clone()])
        );
    }

    s2.on_disconnected(on_s2.id()).await.unwrap();
    let group = within(s3.group_members("room", 10)).await.unwrap();
    assert_eq!(group.connections, vec![on_s1.id().clone()]);
    let user = within(s3.user_connections("ada", 10)).await.unwrap();
    assert_eq!(
        sorted(&user.connections),
        sorted(&[on_s1.id().clone(), also_s2.id().clone()])
    );

    s1.on_disconnected(on_s1.id()).await.unwrap();
    s2.on_disconnected(also_s2.id()).await.unwrap();
    assert!(!within(s3.is_user_online("ada")).await.unwrap());
    let group = within(s3.group_members("room", 10)).await.unwrap();
    assert_eq!((group.count, group.is_complete()), (0, true));
}

/// Presence 5. The limit bounds the list across servers while the count
/// adds up every server's members.
pub async fn scaleout_presence_limit_spans_servers(backend: &dyn Backend) {
    let (s1, s2) = two(backend).await;
    let mut clients = Vec::new();
    for server in [&s1, &s2, &s1, &s2, &s2] {
        let client = TestClient::connect(server).await;
        server.add_to_group(client.id(), "big").await.unwrap();
        clients.push(client);
    }
    backend.settle().await;

    let presence = within(s1.group_members("big", 2)).await.unwrap();
    assert_eq!(presence.count, 5);
    assert_eq!(presence.connections.len(), 2);
    assert!(presence.is_complete());
    let counted = within(s2.group_members("big", 0)).await.unwrap();
    assert_eq!((counted.count, counted.connections.len()), (5, 0));
}

/// Scale-out. Sends made one after another on one server reach a
/// connection on another server in the order they were made: a broadcast,
/// a group, a user and a connection send, in turns.
pub async fn scaleout_sends_from_one_server_keep_their_order(backend: &dyn Backend) {
    const ROUNDS: usize = 200;
    let (s1, s2) = two(backend).await;
    let mut remote = TestClient::connect_user(&s2, "ada").await;
    s2.add_to_group(remote.id(), "room").await.unwrap();
    backend.settle().await;

    for i in 0..ROUNDS {
        let text = i.to_string();
        match i % 4 {
            0 => s1.send_all(&message("m", (text,))).await.unwrap(),
            1 => s1.send_group("room", &message("m", (text,))).await.unwrap(),
            2 => s1.send_user("ada", &message("m", (text,))).await.unwrap(),
            _ => s1
                .send_connection(remote.id(), &message("m", (text,)))
                .await
                .unwrap(),
        }
    }
    for i in 0..ROUNDS {
        assert_eq!(remote.recv().await.arguments, vec![json!(i.to_string())]);
    }
}

/// Scale-out. Sends that may return once queued (those of non-blocking
/// invocations), mixed with sends that wait for the backplane, reach a
/// remote connection in the order they were made, across kinds.
pub async fn scaleout_queued_sends_keep_their_order(backend: &dyn Backend) {
    const ROUNDS: usize = 400;
    let (s1, s2) = two(backend).await;
    let mut remote = TestClient::connect_user(&s2, "ada").await;
    s2.add_to_group(remote.id(), "room").await.unwrap();
    backend.settle().await;

    for i in 0..ROUNDS {
        let text = message("m", (i.to_string(),));
        let recipients = match i % 4 {
            0 => Recipients::All,
            1 => Recipients::Group("room".to_owned()),
            2 => Recipients::User("ada".to_owned()),
            _ => Recipients::Connection(remote.id().clone()),
        };
        // Four queued, then four waited for, and so on.
        if i % 8 < 4 {
            s1.send_queued(&recipients, &text).await.unwrap();
        } else {
            recipients.send_confirmed(&*s1, &text).await.unwrap();
        }
    }
    for i in 0..ROUNDS {
        assert_eq!(remote.recv().await.arguments, vec![json!(i.to_string())]);
    }
}

/// Scale-out. Queued group sends, made back to back, arrive in order and
/// none is lost (per channel, also on a cluster).
pub async fn scaleout_queued_group_sends_keep_their_order(backend: &dyn Backend) {
    // Within a connection's default queue, which nobody reads meanwhile.
    const SENDS: usize = 1_000;
    let (s1, s2) = two(backend).await;
    let mut member = TestClient::connect(&s2).await;
    s2.add_to_group(member.id(), "room").await.unwrap();
    backend.settle().await;

    let room = Recipients::Group("room".to_owned());
    for i in 0..SENDS {
        s1.send_queued(&room, &message("m", (i,))).await.unwrap();
    }
    for i in 0..SENDS {
        assert_eq!(member.recv().await.arguments, vec![json!(i)]);
    }
}

/// Scale-out. One server's sends to one group, made back to back, arrive in
/// order (per channel, also on a cluster).
pub async fn scaleout_group_sends_keep_their_order(backend: &dyn Backend) {
    const SENDS: usize = 500;
    let (s1, s2) = two(backend).await;
    let mut member = TestClient::connect(&s2).await;
    s2.add_to_group(member.id(), "room").await.unwrap();
    backend.settle().await;

    for i in 0..SENDS {
        s1.send_group("room", &message("m", (i,))).await.unwrap();
    }
    for i in 0..SENDS {
        assert_eq!(member.recv().await.arguments, vec![json!(i)]);
    }
}

//! The lifetime-manager conformance scenarios, after SignalR's own suites
//! (`HubLifetimeManagerTestsBase`, `ScaleoutHubLifetimeManagerTests`).
//!
//! Each body takes a [`Backend`] and asserts one behaviour. Single-server
//! bodies use one server; a backend with a backplane runs them too.

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use switchboard_core::{Error, HubLifetimeManager, InvocationIds, InvokeOptions};
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

    server.send_all(&message("hello", ("world",))).await.unwrap();

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

    server.send_all(&message("hello", ("world",))).await.unwrap();

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

    server.send_group("gunit", &message("hello", ("world",))).await.unwrap();

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
        .set_connection_result(client.id(), client.error_completion(&id, "Error from client"))
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
    assert!(matches!(within(pending).await.unwrap(), Err(Error::Canceled)));

    // The late answer finds nobody waiting: refused, nothing breaks.
    let late = server
        .set_connection_result(client.id(), client.completion(&id, &10))
        .await;
    assert!(late.is_err(), "a late answer must not be accepted: {late:?}");

    // The connection still works.
    server
        .send_connection(client.id(), &message("hello", ("again",)))
        .await
        .unwrap();
    assert_eq!(client.recv().await.arguments, vec![json!("again")]);
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

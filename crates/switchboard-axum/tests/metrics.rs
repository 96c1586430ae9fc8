//! The metrics, through a real Prometheus exporter: names, labels and
//! values after a few invocations over a real WebSocket, and the copied
//! counters equal to `ManagerStats`.

#![allow(clippy::unwrap_used, missing_docs)]

mod common;

use common::TestServer;
use metrics_exporter_prometheus::PrometheusBuilder;
use serde_json::json;

/// The value of the sample of `name` whose labels include every one of
/// `labels` (`key="value"` pairs), in Prometheus text output.
fn sample(output: &str, name: &str, labels: &[&str]) -> Option<f64> {
    output.lines().find_map(|line| {
        let (series, value) = line.rsplit_once(' ')?;
        let (metric, rest) = series.split_once('{').unwrap_or((series, ""));
        let matches = metric == name && labels.iter().all(|label| rest.contains(label));
        matches.then(|| value.parse().ok()).flatten()
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invocations_connections_and_counters_reach_the_exporter() {
    let exporter = PrometheusBuilder::new().install_recorder().unwrap();
    switchboard_core::metrics::describe();
    let server = TestServer::default().await;
    let mut client = server.json_client().await;

    let id = client.invoke("Add", json!([1, 2])).await;
    assert_eq!(client.completion(&id).await["result"], 3);
    let id = client.invoke("NoSuchMethod", json!([])).await;
    assert!(client.completion(&id).await["error"].is_string());
    client
        .send_json(json!({ "type": 4, "invocationId": "s", "target": "Count", "arguments": [2] }))
        .await;
    for _ in 0..2 {
        assert_eq!(client.record().await.unwrap()["type"], 2);
    }
    client.completion("s").await;
    // Two messages through the manager.
    for text in ["one", "two"] {
        let id = client.invoke("Notify", json!([text])).await;
        assert_eq!(client.record().await.unwrap()["target"], "notified");
        client.completion(&id).await;
    }

    let stats = server.hub.manager().stats();
    switchboard_core::metrics::record(&stats, &server.hub.stats());
    let output = exporter.render();
    let connections = ["transport=\"websockets\"", "protocol=\"json\""];
    assert_eq!(
        sample(&output, "switchboard_connections", &connections),
        Some(1.0),
        "{output}"
    );
    let add_ok = ["method=\"Add\"", "kind=\"unary\"", "outcome=\"ok\""];
    assert_eq!(
        sample(&output, "switchboard_hub_invocations_total", &add_ok),
        Some(1.0)
    );
    // A method name a client made up is not a label value.
    assert!(!output.contains("NoSuchMethod"), "{output}");
    let unknown = ["method=\"<unknown>\"", "outcome=\"refused\""];
    assert_eq!(
        sample(&output, "switchboard_hub_invocations_total", &unknown),
        Some(1.0)
    );
    let count_ok = ["method=\"Count\"", "kind=\"stream\"", "outcome=\"ok\""];
    assert_eq!(
        sample(&output, "switchboard_hub_invocations_total", &count_ok),
        Some(1.0)
    );
    let add = ["method=\"Add\"", "kind=\"unary\""];
    assert_eq!(
        sample(
            &output,
            "switchboard_hub_invocation_duration_seconds_count",
            &add
        ),
        Some(1.0)
    );
    // The copied counters are the manager's.
    assert_eq!(
        sample(&output, "switchboard_deliveries_total", &[]),
        Some(stats.delivered as f64)
    );
    assert_eq!(stats.delivered, 2, "the two notifications: {stats:?}");
    assert_eq!(
        sample(&output, "switchboard_local_connections", &[]),
        Some(1.0)
    );
    assert!(
        output.contains("# HELP switchboard_deliveries_total"),
        "{output}"
    );
    // Sends by kind: the two notifications went to the caller's connection.
    assert_eq!(stats.sends_connection, 2, "{stats:?}");
    assert_eq!(
        sample(
            &output,
            "switchboard_messages_sent_total",
            &["kind=\"connection\""]
        ),
        Some(2.0)
    );
    assert_eq!(
        sample(
            &output,
            "switchboard_messages_sent_total",
            &["kind=\"all\""]
        ),
        Some(0.0)
    );
    // The writer woke for each write with at least its first frame queued.
    let wakes = sample(&output, "switchboard_outbound_queue_depth_count", &[]).unwrap();
    let depth = sample(&output, "switchboard_outbound_queue_depth_sum", &[]).unwrap();
    assert!(wakes >= 1.0 && depth >= wakes, "{output}");
    for name in [
        "switchboard_client_result_timeouts_total",
        "switchboard_backplane_reconnects_total",
        "switchboard_backplane_resyncs_total",
        "switchboard_backplane_subscriptions",
    ] {
        assert_eq!(sample(&output, name, &[]), Some(0.0), "{name}: {output}");
    }

    client.close().await;
    server.wait_for_disconnects(1).await;
    let output = exporter.render();
    assert_eq!(
        sample(&output, "switchboard_connections", &connections),
        Some(0.0),
        "{output}"
    );
}

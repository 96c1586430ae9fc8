//! Metrics through the [`metrics`] facade: the application installs the
//! exporter it wants (Prometheus, StatsD, ...); without one, recording costs
//! next to nothing.
//!
//! Two kinds of figures:
//!
//! - recorded where they happen: connections, hub invocations and their
//!   duration, backplane publish latency, outbound queue depth;
//! - copied from the managers' counters by [`record`], which an exporter
//!   calls before it renders (on each scrape, say), so that the exported
//!   values are exactly [`ManagerStats`] and [`HubStats`].
//!
//! No label carries a connection id, a user or a group name: a label's
//! values are bounded (method names are those the hub registered; anything
//! else a client invokes counts as `<unknown>`).
//!
//! | name | kind | labels | meaning |
//! |---|---|---|---|
//! | `switchboard_connections` | gauge | `transport`, `protocol` | connections open now (sessions past their handshake) |
//! | `switchboard_hub_invocations_total` | counter | `method`, `kind`, `outcome` | hub invocations: `kind` is `unary` or `stream`; `outcome` is `ok`, `error`, `panic`, `cancelled` (a stream the client cancelled) or `refused` (unknown method, bad arguments, too many streams) |
//! | `switchboard_hub_invocation_duration_seconds` | histogram | `method`, `kind` | from the start of a method (or stream) to its end |
//! | `switchboard_backplane_publish_duration_seconds` | histogram | | one publish on the backplane, until the backplane answers |
//! | `switchboard_outbound_queue_depth` | histogram | | frames waiting in a connection's queue each time its writer wakes to write (1 for a client that keeps up) |
//! | `switchboard_local_connections` | gauge | | connections registered with the manager |
//! | `switchboard_messages_sent_total` | counter | `kind`: `all`, `group`, `user`, `connection` | sends made on this server, one per group, user or connection addressed |
//! | `switchboard_deliveries_total` | counter | | frames put into connection queues |
//! | `switchboard_dropped_total` | counter | `reason`: `queue_full`, `closed`, `no_frame` | frames not delivered |
//! | `switchboard_slow_consumer_closes_total` | counter | | connections closed because their queue was full |
//! | `switchboard_backplane_published_total` | counter | | messages published on the backplane |
//! | `switchboard_backplane_publish_errors_total` | counter | | publishes that failed |
//! | `switchboard_backplane_received_total` | counter | | messages received from the backplane and accepted |
//! | `switchboard_backplane_rejected_total` | counter | `reason`: `malformed`, `oversize`, `lagged` | messages from the backplane dropped |
//! | `switchboard_backplane_reconnects_total` | counter | | times the backplane link came back after it was lost |
//! | `switchboard_backplane_resyncs_total` | counter | | times every subscription was made again (on connecting, after a reconnect, slots moving, failed changes) |
//! | `switchboard_backplane_subscriptions` | gauge | | backplane channels this server needs subscribed |
//! | `switchboard_client_result_timeouts_total` | counter | | client-result calls started here that timed out |
//! | `switchboard_client_results_pending` | gauge | | client-result calls started here, waiting for their answer |
//! | `switchboard_client_results_forwarded` | gauge | | client-result calls of local connections whose answer goes to another server |
//! | `switchboard_hub_panics_total` | counter | | methods, streams and hooks that panicked |
//! | `switchboard_hub_refused_completions_total` | counter | | client Completions refused |
//! | `switchboard_hub_dropped_stream_items_total` | counter | | upload-stream items for no open stream |

use std::time::Duration;

use crate::hub::HubStats;
use crate::stats::ManagerStats;

/// Connections open now, by transport and protocol.
pub const CONNECTIONS: &str = "switchboard_connections";
/// Hub invocations by method, kind and outcome.
pub const HUB_INVOCATIONS: &str = "switchboard_hub_invocations_total";
/// How long hub invocations take, by method and kind.
pub const HUB_INVOCATION_DURATION: &str = "switchboard_hub_invocation_duration_seconds";
/// How long one backplane publish takes.
pub const BACKPLANE_PUBLISH_DURATION: &str = "switchboard_backplane_publish_duration_seconds";

/// Frames waiting in a connection's queue when its writer wakes.
pub const OUTBOUND_QUEUE_DEPTH: &str = "switchboard_outbound_queue_depth";

/// The method label of an invocation of a method the hub does not have.
pub(crate) const UNKNOWN_METHOD: &str = "<unknown>";

/// Describes every metric to the installed recorder (units and help
/// texts); call once, after installing it.
pub fn describe() {
    use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
    describe_gauge!(CONNECTIONS, "Connections open now (past their handshake).");
    describe_counter!(
        HUB_INVOCATIONS,
        "Hub invocations, by method, kind and outcome."
    );
    describe_histogram!(
        HUB_INVOCATION_DURATION,
        Unit::Seconds,
        "How long hub methods and streams run."
    );
    describe_histogram!(
        BACKPLANE_PUBLISH_DURATION,
        Unit::Seconds,
        "How long one backplane publish takes."
    );
    describe_histogram!(
        OUTBOUND_QUEUE_DEPTH,
        Unit::Count,
        "Frames waiting in a connection's queue when its writer wakes."
    );
    describe_counter!(
        "switchboard_messages_sent_total",
        "Sends made on this server, by kind of target."
    );
    describe_counter!(
        "switchboard_backplane_reconnects_total",
        "Times the backplane link came back after it was lost."
    );
    describe_counter!(
        "switchboard_backplane_resyncs_total",
        "Times every backplane subscription was made again."
    );
    describe_gauge!(
        "switchboard_backplane_subscriptions",
        "Backplane channels this server needs subscribed."
    );
    describe_counter!(
        "switchboard_client_result_timeouts_total",
        "Client-result calls started here that timed out."
    );
    describe_gauge!(
        "switchboard_local_connections",
        "Connections registered with the manager."
    );
    describe_counter!(
        "switchboard_deliveries_total",
        "Frames put into connection queues."
    );
    describe_counter!(
        "switchboard_dropped_total",
        "Frames not delivered, by reason."
    );
    describe_counter!(
        "switchboard_slow_consumer_closes_total",
        "Connections closed because their queue was full."
    );
    describe_counter!(
        "switchboard_backplane_published_total",
        "Messages published on the backplane."
    );
    describe_counter!(
        "switchboard_backplane_publish_errors_total",
        "Backplane publishes that failed."
    );
    describe_counter!(
        "switchboard_backplane_received_total",
        "Messages received from the backplane and accepted."
    );
    describe_counter!(
        "switchboard_backplane_rejected_total",
        "Messages from the backplane dropped, by reason."
    );
    describe_gauge!(
        "switchboard_client_results_pending",
        "Client-result calls started here waiting for their answer."
    );
    describe_gauge!(
        "switchboard_client_results_forwarded",
        "Client-result calls of local connections answered to another server."
    );
    describe_counter!(
        "switchboard_hub_panics_total",
        "Hub methods, streams and hooks that panicked."
    );
    describe_counter!(
        "switchboard_hub_refused_completions_total",
        "Client Completions refused."
    );
    describe_counter!(
        "switchboard_hub_dropped_stream_items_total",
        "Upload-stream items for no open stream."
    );
}

/// Copies a manager's and a hub's counters into the metrics (see the
/// table above): call it before rendering, so the exported values are the
/// counters' current ones.
pub fn record(manager: &ManagerStats, hub: &HubStats) {
    use metrics::{counter, gauge};
    gauge!("switchboard_local_connections").set(manager.connections as f64);
    for (kind, sends) in [
        ("all", manager.sends_all),
        ("group", manager.sends_group),
        ("user", manager.sends_user),
        ("connection", manager.sends_connection),
    ] {
        counter!("switchboard_messages_sent_total", "kind" => kind).absolute(sends);
    }
    counter!("switchboard_backplane_reconnects_total").absolute(manager.backplane_reconnects);
    counter!("switchboard_backplane_resyncs_total").absolute(manager.backplane_resyncs);
    gauge!("switchboard_backplane_subscriptions").set(manager.backplane_subscriptions as f64);
    counter!("switchboard_client_result_timeouts_total").absolute(manager.client_result_timeouts);
    counter!("switchboard_deliveries_total").absolute(manager.delivered);
    counter!("switchboard_dropped_total", "reason" => "queue_full").absolute(manager.dropped_full);
    counter!("switchboard_dropped_total", "reason" => "closed").absolute(manager.dropped_closed);
    counter!("switchboard_dropped_total", "reason" => "no_frame")
        .absolute(manager.dropped_no_frame);
    counter!("switchboard_slow_consumer_closes_total").absolute(manager.closed_slow);
    counter!("switchboard_backplane_published_total").absolute(manager.backplane_published);
    counter!("switchboard_backplane_publish_errors_total")
        .absolute(manager.backplane_publish_errors);
    counter!("switchboard_backplane_received_total").absolute(manager.backplane_received);
    counter!("switchboard_backplane_rejected_total", "reason" => "malformed")
        .absolute(manager.backplane_malformed);
    counter!("switchboard_backplane_rejected_total", "reason" => "oversize")
        .absolute(manager.backplane_oversize);
    counter!("switchboard_backplane_rejected_total", "reason" => "lagged")
        .absolute(manager.backplane_lagged);
    gauge!("switchboard_client_results_pending").set(manager.pending_client_results as f64);
    gauge!("switchboard_client_results_forwarded").set(manager.forwarded_client_results as f64);
    counter!("switchboard_hub_panics_total").absolute(hub.panics);
    counter!("switchboard_hub_refused_completions_total").absolute(hub.refused_completions);
    counter!("switchboard_hub_dropped_stream_items_total").absolute(hub.dropped_stream_items);
}

/// Counts one hub invocation and, when it ran, its duration.
pub(crate) fn invocation(
    method: &str,
    kind: &'static str,
    outcome: &'static str,
    ran: Option<Duration>,
) {
    let method = metrics::SharedString::from(method.to_owned());
    if let Some(ran) = ran {
        metrics::histogram!(HUB_INVOCATION_DURATION, "method" => method.clone(), "kind" => kind)
            .record(ran.as_secs_f64());
    }
    metrics::counter!(HUB_INVOCATIONS, "method" => method, "kind" => kind, "outcome" => outcome)
        .increment(1);
}

//! The conformance scenarios (see `switchboard_tests::conformance`), run
//! against every lifetime manager.

#![allow(missing_docs)]

/// One `#[tokio::test]` per named body, against `$backend`.
macro_rules! scenarios {
    ($backend:expr; $($name:ident),+ $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                let backend = $backend;
                switchboard_tests::conformance::$name(&backend).await;
            }
        )+
    };
}

/// The single-server scenarios, against `$backend`: every manager runs them.
macro_rules! single_server_scenarios {
    ($backend:expr) => {
        scenarios!($backend;
            send_all_reaches_every_connection,
            send_all_skips_disconnected_connection,
            send_group_reaches_only_members,
            send_group_except_skips_excluded,
            send_connection_reaches_connection,
            client_result_returns_value,
            client_result_error_surfaces,
            client_result_from_wrong_connection_rejected,
            client_result_unknown_connection_fails_at_once,
            client_results_complete_independently,
            client_result_fails_when_client_disconnects,
            client_result_cancelled_by_caller,
            client_result_times_out,
            group_change_for_unknown_connection_fails,
            presence_lists_user_connections,
            presence_counts_group_members_within_a_limit,
            presence_names_are_literal,
        );
    };
}

mod memory {
    single_server_scenarios!(switchboard_tests::MemoryBackend);
}

/// The multi-server scenarios, against `$backend`: every scale-out
/// driver runs them, beside the single-server ones.
macro_rules! scaleout_scenarios {
    ($backend:expr) => {
        single_server_scenarios!($backend);
        scenarios!($backend;
            scaleout_send_all_reaches_other_server,
            scaleout_send_all_skips_disconnected_remote,
            scaleout_send_connection_reaches_remote,
            scaleout_send_group_reaches_remote_members,
            scaleout_disconnect_removes_from_groups,
            scaleout_remove_local_non_member_is_quiet,
            scaleout_remove_remote_non_member_is_quiet,
            scaleout_add_remote_connection_to_group,
            scaleout_add_local_twice_delivers_once,
            scaleout_add_local_then_remote_delivers_once,
            scaleout_remove_remote_connection_from_group,
            scaleout_send_local_connection_skips_backplane,
            scaleout_failing_remote_write_does_not_fail_sender,
            scaleout_failing_member_does_not_stop_others,
            scaleout_send_user_reaches_all_servers,
            scaleout_user_stays_subscribed_after_one_disconnect,
            scaleout_client_result_returns_value,
            scaleout_client_result_error_surfaces,
            scaleout_client_result_to_nowhere_fails_at_once,
            scaleout_client_result_target_disconnects,
            scaleout_client_results_from_both_servers,
            scaleout_client_result_unknown_id_message,
            scaleout_client_result_wrong_type,
            star_names_are_literal,
            awkward_group_names_stay_apart,
            frames_are_forwarded_byte_for_byte,
            scaleout_presence_spans_servers,
            scaleout_presence_limit_spans_servers,
            scaleout_group_sends_keep_their_order,
            scaleout_queued_group_sends_keep_their_order,
        );
    };
}

mod loopback {
    scaleout_scenarios!(switchboard_tests::LoopbackBackend::new());
    // One bus, one dispatcher: the order holds across channels.
    scenarios!(switchboard_tests::LoopbackBackend::new(); scaleout_sends_from_one_server_keep_their_order, scaleout_queued_sends_keep_their_order);
}

mod redis {
    scaleout_scenarios!(switchboard_tests::RedisBackend::new());
    // One node: one publishing and one subscribing connection per server, so
    // the order holds across channels. (Across the shards of a cluster it
    // does not: per channel only.)
    scenarios!(switchboard_tests::RedisBackend::new(); scaleout_sends_from_one_server_keep_their_order, scaleout_queued_sends_keep_their_order);
}

mod redis_cluster {
    scaleout_scenarios!(switchboard_tests::RedisBackend::cluster());
}

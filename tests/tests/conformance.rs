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

mod memory {
    scenarios!(switchboard_tests::MemoryBackend;
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
    );
}

//! The hub the dispatcher's tests and the hub-method tests share.

#![allow(dead_code, unreachable_pub)]

use std::sync::Arc;
use std::time::Duration;

use futures::stream;
use serde::{Deserialize, Serialize};
use switchboard_core::{CallContext, Hub, HubError, InMemoryHubLifetimeManager};

#[derive(Debug, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Who {
    pub connection_id: String,
    pub user: Option<String>,
}

/// Methods of every kind: typed, void, failing, slow, streaming.
pub fn hub() -> Hub {
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

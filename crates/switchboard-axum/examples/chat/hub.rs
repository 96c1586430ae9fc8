//! The chat hub: its methods and what they do.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use serde::Serialize;
use switchboard_core::{
    CallContext, Hub, HubError, HubLifetimeManager, InvokeOptions, UploadStream,
};

/// How long `AskClient` waits for the other client's answer.
const ASK_TIMEOUT: Duration = Duration::from_secs(10);

/// Who a message is from: the caller's user, or its connection id.
fn sender(ctx: &CallContext) -> String {
    ctx.user()
        .map(str::to_owned)
        .unwrap_or_else(|| ctx.connection_id().to_string())
}

/// What `WhoAmI` returns.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Who {
    connection_id: String,
    user: Option<String>,
}

/// The chat hub. Every send invokes the client method `message(from, text)`.
///
/// | method | arguments | effect | returns |
/// |---|---|---|---|
/// | `Broadcast` | text | everyone, on every server | nothing |
/// | `BroadcastOthers` | text | everyone but the caller | nothing |
/// | `Join` / `Leave` | group | the caller joins / leaves | once applied |
/// | `AddToGroup` / `RemoveFromGroup` | connectionId, group | that connection, wherever it is | once applied; an error if it exists nowhere |
/// | `SendGroup` | group, text | the group's members | nothing |
/// | `SendGroupOthers` | group, text | the members but the caller | nothing |
/// | `SendUser` | user, text | every connection of the user | nothing |
/// | `SendConnection` | connectionId, text | that connection | nothing |
/// | `WhoAmI` | | | `{"connectionId", "user"}` |
/// | `AskClient` | connectionId, question | invokes `ask(question)` there | the client's answer |
/// | `Count` | n | | a stream of 1..=n |
/// | `Sum` | a stream of integers (uploaded by the client) | | their sum |
pub(crate) fn chat_hub(manager: Arc<dyn HubLifetimeManager>) -> Hub {
    Hub::builder()
        .method(
            "Broadcast",
            |ctx: CallContext, (text,): (String,)| async move {
                ctx.all().send("message", (sender(&ctx), text)).await?;
                Ok(())
            },
        )
        .method(
            "BroadcastOthers",
            |ctx: CallContext, (text,): (String,)| async move {
                ctx.others().send("message", (sender(&ctx), text)).await?;
                Ok(())
            },
        )
        .method("Join", |ctx: CallContext, (group,): (String,)| async move {
            ctx.join(&group).await?;
            Ok(())
        })
        .method(
            "Leave",
            |ctx: CallContext, (group,): (String,)| async move {
                ctx.leave(&group).await?;
                Ok(())
            },
        )
        .method(
            "AddToGroup",
            |ctx: CallContext, (connection_id, group): (String, String)| async move {
                ctx.add_to_group(&connection_id, &group).await?;
                Ok(())
            },
        )
        .method(
            "RemoveFromGroup",
            |ctx: CallContext, (connection_id, group): (String, String)| async move {
                ctx.remove_from_group(&connection_id, &group).await?;
                Ok(())
            },
        )
        .method(
            "SendGroup",
            |ctx: CallContext, (group, text): (String, String)| async move {
                ctx.group(group)
                    .send("message", (sender(&ctx), text))
                    .await?;
                Ok(())
            },
        )
        .method(
            "SendGroupOthers",
            |ctx: CallContext, (group, text): (String, String)| async move {
                ctx.others_in_group(group)
                    .send("message", (sender(&ctx), text))
                    .await?;
                Ok(())
            },
        )
        .method(
            "SendUser",
            |ctx: CallContext, (user, text): (String, String)| async move {
                // `ctx.user()` is the caller's user; the hub context addresses users.
                ctx.hub()
                    .user(user)
                    .send("message", (sender(&ctx), text))
                    .await?;
                Ok(())
            },
        )
        .method(
            "SendConnection",
            |ctx: CallContext, (connection_id, text): (String, String)| async move {
                ctx.client(connection_id)
                    .send("message", (sender(&ctx), text))
                    .await?;
                Ok(())
            },
        )
        .method("WhoAmI", |ctx: CallContext, ()| async move {
            Ok::<_, HubError>(Who {
                connection_id: ctx.connection_id().to_string(),
                user: ctx.user().map(str::to_owned),
            })
        })
        .method(
            "AskClient",
            |ctx: CallContext, (connection_id, question): (String, String)| async move {
                let answer = ctx
                    .client(connection_id)
                    .invoke_with::<String, _>(
                        "ask",
                        (question,),
                        InvokeOptions::timeout(ASK_TIMEOUT),
                    )
                    .await?;
                Ok::<_, HubError>(answer)
            },
        )
        .method(
            "Sum",
            |_ctx: CallContext, (mut numbers,): (UploadStream<i64>,)| async move {
                let mut sum: i64 = 0;
                while let Some(n) = numbers.next().await {
                    sum = sum
                        .checked_add(n?)
                        .ok_or_else(|| HubError::new("The sum overflows a 64-bit integer."))?;
                }
                Ok::<_, HubError>(sum)
            },
        )
        .stream("Count", |_ctx: CallContext, (n,): (u64,)| async move {
            Ok(futures::stream::unfold(1u64, move |i| async move {
                if i > n {
                    return None;
                }
                Some((Ok::<_, HubError>(i), i + 1))
            }))
        })
        .build(manager)
}

//! A health endpoint for load balancers: 200 while the server can serve,
//! 503 while its backplane is away.

use std::sync::Arc;

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, get};
use serde::Serialize;
use switchboard_core::{Health, HubLifetimeManager};

/// A `GET` route that answers with the manager's
/// [`health`](HubLifetimeManager::health): `200 OK` while it is serving,
/// `503 Service Unavailable` while its backplane is unreachable (so that a
/// load balancer sends new clients elsewhere), with the details as JSON:
///
/// ```json
/// {"status":"serving","backplaneConnected":true,"sinceLastPublishMs":120,"pendingSubscriptions":0,"backplaneLagged":0}
/// ```
///
/// ```
/// use std::sync::Arc;
/// use switchboard_core::{HubLifetimeManager, InMemoryHubLifetimeManager};
///
/// let manager: Arc<dyn HubLifetimeManager> = Arc::new(InMemoryHubLifetimeManager::new());
/// let app: axum::Router = axum::Router::new().route("/healthz", switchboard_axum::health(manager));
/// ```
pub fn health<S>(manager: Arc<dyn HubLifetimeManager>) -> MethodRouter<S>
where
    S: Clone + Send + Sync + 'static,
{
    get(move || {
        let manager = manager.clone();
        async move { answer(&manager.health()) }
    })
}

/// The body of a health answer.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Body {
    status: &'static str,
    backplane_connected: bool,
    since_last_publish_ms: Option<u64>,
    pending_subscriptions: usize,
    backplane_lagged: u64,
}

fn answer(health: &Health) -> Response {
    let serving = health.is_serving();
    let body = Body {
        status: if serving { "serving" } else { "unavailable" },
        backplane_connected: health.backplane_connected,
        since_last_publish_ms: health
            .since_last_publish
            .map(|since| u64::try_from(since.as_millis()).unwrap_or(u64::MAX)),
        pending_subscriptions: health.pending_subscriptions,
        backplane_lagged: health.backplane_lagged,
    };
    let status = if serving {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(body)).into_response()
}

//! `GET /events`: the engine's events as a server-sent event stream, for the console's
//! progress views and any other client. Each message's `event` is the kind (`fetch_progress`,
//! say) and its `data` the event as JSON; a client too slow to keep up gets a `lagged`
//! message saying how many it missed.

use std::convert::Infallible;

use axum::extract::State;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use futures::Stream;
use tokio::sync::broadcast::error::RecvError;

use super::AppState;
use super::model::ErrorBody;
use crate::events::Event;

/// Follow the engine's events: connection tests, fetch progress, cache changes.
#[utoipa::path(get, path = "/events", tag = "server",
    responses(
        (status = 200, description = "A text/event-stream of the engine's events, one JSON \
            object per message with its kind in `type`; a `lagged` message says how many \
            events a slow client missed", content_type = "text/event-stream", body = String),
        (status = 401, description = "No valid credentials", body = ErrorBody),
    ))]
pub async fn events(
    State(app): State<AppState>,
) -> Sse<impl Stream<Item = Result<SseEvent, Infallible>>> {
    let receiver = app.engine.subscribe();
    let stream = futures::stream::unfold(receiver, |mut receiver| async move {
        let message = match receiver.recv().await {
            Ok(event) => message(&event),
            Err(RecvError::Lagged(missed)) => SseEvent::default()
                .event("lagged")
                .data(format!(r#"{{"type":"lagged","missed":{missed}}}"#)),
            Err(RecvError::Closed) => return None,
        };
        Some((Ok(message), receiver))
    });
    Sse::new(stream).keep_alive(KeepAlive::default())
}

fn message(event: &Event) -> SseEvent {
    let data = serde_json::to_value(event).unwrap_or_default();
    let kind = data
        .get("type")
        .and_then(|t| t.as_str())
        .unwrap_or("event")
        .to_owned();
    SseEvent::default().event(kind).data(data.to_string())
}

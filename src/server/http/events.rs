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
    // The caller sees the events of the connections they see, and no others.
    let actor = crate::audit::Actor::current();
    let engine = app.engine.clone();
    let stream = futures::stream::unfold(receiver, move |mut receiver| {
        let (actor, engine) = (actor.clone(), engine.clone());
        async move {
            let message = loop {
                match receiver.recv().await {
                    Ok(event) => {
                        let data = serde_json::to_value(&event).unwrap_or_default();
                        if hidden(&engine, &actor, &data) {
                            continue;
                        }
                        break message(&data);
                    }
                    Err(RecvError::Lagged(missed)) => {
                        break SseEvent::default()
                            .event("lagged")
                            .data(format!(r#"{{"type":"lagged","missed":{missed}}}"#));
                    }
                    Err(RecvError::Closed) => return None,
                }
            };
            Some((Ok(message), receiver))
        }
    });
    Sse::new(stream).keep_alive(KeepAlive::default())
}

/// Whether an event is about a connection `actor` does not see.
fn hidden(engine: &crate::Engine, actor: &crate::audit::Actor, data: &serde_json::Value) -> bool {
    let Some(id) = data.get("connection_id").and_then(|v| v.as_str()) else {
        return false;
    };
    engine
        .snapshot()
        .connections
        .values()
        .find(|c| c.connection.id.as_str() == id)
        .is_some_and(|c| !actor.sees(&c.connection))
}

fn message(data: &serde_json::Value) -> SseEvent {
    let kind = data
        .get("type")
        .and_then(|t| t.as_str())
        .unwrap_or("event")
        .to_owned();
    SseEvent::default().event(kind).data(data.to_string())
}

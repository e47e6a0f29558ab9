//! Live status of the connections a long-running process has open: each is checked every
//! `keepalive_interval` (default 60 s; `0s` turns it off). A check that fails on a dropped
//! or unreachable server moves it to `reconnecting`, checked again with a doubling backoff;
//! after `RECONNECT_TRIES` failures it is `disconnected`, checked at the interval. A refused
//! login (or a credential, host key or TLS problem) is `error`. While a connection is
//! reconnecting or disconnected, statements that need its server fail at once, saying so;
//! cached tables still answer. Every change of status is sent as an event.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};

/// `at` plus `wait`.
fn after(at: DateTime<Utc>, wait: Duration) -> DateTime<Utc> {
    at + chrono::Duration::from_std(wait).unwrap_or(chrono::Duration::MAX)
}

use super::Connections;
pub use crate::connection::LinkState;
use crate::connection::{Connection, SourceType};
use crate::error::{Error, FailureClass, Result};
use crate::events::Event;
use crate::id::ConnectionId;

/// Failed checks in a row before a reconnecting connection is reported disconnected.
const RECONNECT_TRIES: u32 = 5;
/// The default time between checks of an open connection.
pub const DEFAULT_KEEPALIVE: Duration = Duration::from_secs(60);
/// How often the loop started by `start_keepalive` looks for due checks.
const TICK: Duration = Duration::from_secs(1);

/// A connection's live status.
#[derive(Clone, Debug, PartialEq)]
pub struct LinkStatus {
    /// Where it stands.
    pub state: LinkState,
    /// Since when.
    pub since: DateTime<Utc>,
    /// The class of the failure that put it there, if any.
    pub error_class: Option<FailureClass>,
    /// The failure's message.
    pub error: Option<String>,
}

impl LinkStatus {
    fn idle() -> Self {
        LinkStatus {
            state: LinkState::Idle,
            since: Utc::now(),
            error_class: None,
            error: None,
        }
    }
}

/// One watched connection.
struct Watch {
    status: LinkStatus,
    next_at: DateTime<Utc>,
    failures: u32,
}

/// The watched connections.
#[derive(Default)]
pub(super) struct Health {
    watches: Mutex<HashMap<ConnectionId, Watch>>,
}

impl Health {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<ConnectionId, Watch>> {
        self.watches.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Starts watching a connection whose source was just opened.
    pub(super) fn opened(&self, id: &ConnectionId, now: DateTime<Utc>, interval: Option<Duration>) {
        let Some(interval) = interval else { return };
        self.lock().entry(id.clone()).or_insert_with(|| Watch {
            status: LinkStatus {
                state: LinkState::Connected,
                since: now,
                error_class: None,
                error: None,
            },
            next_at: after(now, interval),
            failures: 0,
        });
    }

    /// Stops watching (the connection was changed or dropped).
    pub(super) fn forget(&self, id: &ConnectionId) {
        self.lock().remove(id);
    }

    pub(super) fn status(&self, id: &ConnectionId) -> LinkStatus {
        self.lock()
            .get(id)
            .map_or_else(LinkStatus::idle, |w| w.status.clone())
    }

    /// Records the outcome of a check (or a test) at `now`; returns the new status when it
    /// changed.
    fn record(
        &self,
        id: &ConnectionId,
        now: DateTime<Utc>,
        interval: Duration,
        outcome: std::result::Result<(), (FailureClass, String)>,
    ) -> Option<LinkStatus> {
        let mut watches = self.lock();
        let watch = watches.get_mut(id)?;
        let (state, error) = match outcome {
            Ok(()) => {
                watch.failures = 0;
                watch.next_at = after(now, interval);
                (LinkState::Connected, None)
            }
            Err((class, message)) if class.is_transient() => {
                watch.failures += 1;
                if watch.failures > RECONNECT_TRIES {
                    watch.next_at = after(now, interval);
                    (LinkState::Disconnected, Some((class, message)))
                } else {
                    watch.next_at = after(now, backoff(interval, watch.failures));
                    (LinkState::Reconnecting, Some((class, message)))
                }
            }
            Err((class, message)) => {
                watch.next_at = after(now, interval);
                (LinkState::Error, Some((class, message)))
            }
        };
        let changed = watch.status.state != state
            || watch.status.error_class != error.as_ref().map(|(c, _)| *c);
        let (error_class, error) = error.unzip();
        watch.status.error_class = error_class;
        watch.status.error = error;
        if changed {
            watch.status.state = state;
            watch.status.since = now;
            return Some(watch.status.clone());
        }
        None
    }

    /// The watched connections due a check at `now`.
    fn due(&self, now: DateTime<Utc>) -> Vec<ConnectionId> {
        self.lock()
            .iter()
            .filter(|(_, w)| w.next_at <= now)
            .map(|(id, _)| id.clone())
            .collect()
    }
}

/// Whether statements that need the server fail at once.
fn fails_fast(state: LinkState) -> bool {
    matches!(state, LinkState::Reconnecting | LinkState::Disconnected)
}

/// The wait before check `failures` (1, 2, ...) of a reconnecting connection: 1 s,
/// doubling, never more than the keepalive interval.
fn backoff(interval: Duration, failures: u32) -> Duration {
    (Duration::from_secs(1) * 2u32.saturating_pow(failures.saturating_sub(1))).min(interval)
}

/// The keepalive interval of a stored config (`None`: off, or a source type without one).
pub(super) fn keepalive_interval(connection: &Connection) -> Option<Duration> {
    if !matches!(
        connection.source_type,
        SourceType::Postgres | SourceType::Mysql
    ) {
        return None;
    }
    match crate::source::CommonOptions::keepalive_of(connection.source_type, &connection.config) {
        Some(interval) if interval.is_zero() => None,
        Some(interval) => Some(interval),
        None => Some(DEFAULT_KEEPALIVE),
    }
}

impl Connections {
    /// The live status of a connection in this process.
    pub fn connection_status(&self, id: &ConnectionId) -> LinkStatus {
        self.health.status(id)
    }

    /// Checks the open connections due a check at `now` (each connects afresh and runs a
    /// trivial query) and returns those whose status changed. The keepalive's clock turned
    /// by hand (tests, tools); `start_keepalive` turns it in long-running processes.
    pub async fn check_connections(&self, now: DateTime<Utc>) -> Vec<(ConnectionId, LinkStatus)> {
        let mut changed = Vec::new();
        for id in self.health.due(now) {
            let connection = self
                .snapshot()
                .connections
                .values()
                .find(|c| c.connection.id == id)
                .map(|c| c.connection.clone());
            let Some(connection) = connection else {
                self.health.forget(&id);
                continue;
            };
            let Some(interval) = keepalive_interval(&connection) else {
                self.health.forget(&id);
                continue;
            };
            let outcome = match self.open_source(&connection).await {
                Ok(source) => source.test().await.map(|_| ()),
                Err(e) => Err(e),
            };
            if let Some(status) =
                self.record_link(&connection, now, interval, outcome.as_ref().map(|_| ()))
            {
                changed.push((id, status));
            }
        }
        changed
    }

    /// Records how using the server went, sending an event when the status changes.
    pub(super) fn record_link(
        &self,
        connection: &Connection,
        now: DateTime<Utc>,
        interval: Duration,
        outcome: std::result::Result<(), &Error>,
    ) -> Option<LinkStatus> {
        let outcome = match outcome {
            Ok(()) => Ok(()),
            Err(e) => Err((
                e.failure_class().unwrap_or(FailureClass::Other),
                e.to_string(),
            )),
        };
        let status = self.health.record(&connection.id, now, interval, outcome)?;
        self.events.send(Event::ConnectionStatus {
            connection_id: connection.id.clone(),
            status: status.state,
            error_class: status.error_class.map(|c| c.as_str().to_owned()),
            error: status.error.clone(),
        });
        Some(status)
    }

    /// Fails at once when the connection's server is known to be down.
    pub(super) fn check_link(&self, connection: &Connection) -> Result<()> {
        let status = self.health.status(&connection.id);
        if !fails_fast(status.state) {
            return Ok(());
        }
        Err(Error::Source {
            connection: connection.name.to_string(),
            class: status.error_class.unwrap_or(FailureClass::Reset),
            message: format!(
                "the server is {} (since {}): {}. Statements that need it fail until it is \
                 back; cached tables still answer, and test_connection('{}') checks it now",
                status.state.as_str(),
                status.since.format("%H:%M:%S UTC"),
                status.error.as_deref().unwrap_or("it stopped answering"),
                connection.name
            ),
        })
    }

    /// Checks the open connections when they are due, in the background, until
    /// `shutdown`. For long-running processes: the server and the interactive shell.
    pub fn start_keepalive(self: &Arc<Self>) {
        self.every(TICK, |this| async move {
            this.check_connections(Utc::now()).await;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused() -> std::result::Result<(), (FailureClass, String)> {
        Err((FailureClass::Refused, "refused".into()))
    }

    #[test]
    fn a_dropped_server_reconnects_with_backoff_then_is_disconnected_and_comes_back() {
        let health = Health::default();
        let id = ConnectionId::generate();
        let minute = Duration::from_secs(60);
        let t0 = Utc::now();
        health.opened(&id, t0, Some(minute));
        assert_eq!(health.status(&id).state, LinkState::Connected);
        assert!(health.due(t0).is_empty());

        let t1 = after(t0, minute);
        assert_eq!(health.due(t1), vec![id.clone()]);
        let changed = health.record(&id, t1, minute, refused()).unwrap();
        assert_eq!(changed.state, LinkState::Reconnecting);
        // Retried after 1 s, then 2 s, 4 s, 8 s: sooner than the interval.
        let mut at = t1;
        for wait in [1u64, 2, 4, 8] {
            let next = after(at, Duration::from_secs(wait));
            assert!(
                health
                    .due(next - chrono::Duration::milliseconds(1))
                    .is_empty()
            );
            at = next;
            assert_eq!(health.due(at), vec![id.clone()]);
            assert_eq!(
                health.record(&id, at, minute, refused()),
                None,
                "no change, no event"
            );
        }
        let down = health
            .record(&id, after(at, Duration::from_secs(16)), minute, refused())
            .unwrap();
        assert_eq!(down.state, LinkState::Disconnected);

        let back = health
            .record(&id, after(at, minute), minute, Ok(()))
            .unwrap();
        assert_eq!(back.state, LinkState::Connected);
        assert_eq!(back.error, None);
    }

    #[test]
    fn a_refused_login_is_an_error_not_a_reconnect() {
        let health = Health::default();
        let id = ConnectionId::generate();
        let minute = Duration::from_secs(60);
        let now = Utc::now();
        health.opened(&id, now, Some(minute));
        let status = health
            .record(
                &id,
                now,
                minute,
                Err((FailureClass::Authentication, "bad".into())),
            )
            .unwrap();
        assert_eq!(status.state, LinkState::Error);
        assert!(!fails_fast(status.state));
    }
}

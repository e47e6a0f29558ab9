//! Scheduled refreshes: a long-running process (`quarry serve`, the shell) refreshes each
//! cached table that has a `refresh_interval`, one refresh per table at a time and at most
//! `max_concurrent_refreshes` per connection, with a per-table jitter so tables set alike do
//! not all hit the source at once. A failed refresh is retried after a growing backoff, at
//! most [`RETRIES`] times, then waits for the next interval; the copy being served stays.
//! The clock is a parameter ([`Connections::run_scheduled`]), so tests drive it.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;

use super::Connections;
use crate::cache::FetchMode;
use crate::error::Result;
use crate::id::ConnectionId;
use crate::refresh::RefreshSettings;
use crate::table::{CacheEntry, TableRecord, TableRef};

/// Retries of a failed scheduled refresh before it waits for the next interval.
pub const RETRIES: u32 = 3;
/// Scheduled refreshes of one connection at once, unless `max_concurrent_refreshes` says.
const DEFAULT_CONCURRENT: u32 = 2;
/// How often the loop started by `start_refresh_schedule` looks for due refreshes.
const TICK: Duration = Duration::from_secs(1);

/// What the schedule knows of the tables it refreshes.
#[derive(Debug, Default)]
pub(super) struct Schedule {
    slots: Mutex<HashMap<TableRef, Slot>>,
    limits: Mutex<HashMap<ConnectionId, (u32, Arc<Semaphore>)>>,
}

#[derive(Debug, Clone)]
struct Slot {
    interval: Duration,
    next_at: DateTime<Utc>,
    failures: u32,
    running: bool,
}

/// A refresh the schedule started: its table, and the task (which ends with the refresh).
pub type ScheduledRefresh = (TableRef, JoinHandle<Result<CacheEntry>>);

/// A table's share of its interval added to every due time (up to a tenth), fixed per
/// table so that tables set alike spread out.
fn jitter(table: &TableRef, interval: Duration) -> chrono::Duration {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    table.hash(&mut hasher);
    let share = (hasher.finish() % 1000) as u32;
    chrono::Duration::from_std(interval / 10 * share / 1000).unwrap_or_default()
}

fn after(at: DateTime<Utc>, wait: Duration) -> DateTime<Utc> {
    at + chrono::Duration::from_std(wait).unwrap_or(chrono::Duration::MAX)
}

/// The wait before retry `failures` (1, 2, ...) of a refresh scheduled every `interval`:
/// a sixteenth of it (1 s to 1 min), doubling, never more than the interval.
fn backoff(interval: Duration, failures: u32) -> Duration {
    let base = (interval / 16).clamp(Duration::from_secs(1), Duration::from_secs(60));
    (base * 2u32.saturating_pow(failures.saturating_sub(1))).min(interval)
}

/// When a table's copy, last refreshed per `record` into `entry`, is next due.
fn first_due(
    table: &TableRef,
    record: &TableRecord,
    entry: &CacheEntry,
    interval: Duration,
) -> DateTime<Utc> {
    let last = record
        .refresh
        .refreshed_at
        .map_or(entry.fetched_at, |at| at.max(entry.fetched_at));
    after(last, interval) + jitter(table, interval)
}

impl Connections {
    /// Refreshes tables with a `refresh_interval` when they are due, in the background,
    /// until `shutdown`. For long-running processes: the server and the interactive shell.
    pub fn start_refresh_schedule(self: &Arc<Self>) {
        self.every(TICK, |this| async move {
            if let Err(e) = this.run_scheduled(Utc::now()).await {
                tracing::warn!(error = %e, "could not read which tables are due a refresh");
            }
        });
    }

    /// Runs `work` every `tick` in the background, until `shutdown`.
    pub(super) fn every<F, Fut>(self: &Arc<Self>, tick: Duration, work: F)
    where
        F: Fn(Arc<Self>) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = ()> + Send,
    {
        let this = Arc::clone(self);
        let cancel = self.background.cancel.clone();
        self.background.tasks.spawn(async move {
            let mut ticks = tokio::time::interval(tick);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
            loop {
                tokio::select! {
                    _ = ticks.tick() => {}
                    () = cancel.cancelled() => return,
                }
                work(Arc::clone(&this)).await;
            }
        });
    }

    /// Starts the scheduled refreshes due at `now` and returns them (each task ends when
    /// its refresh does). A table already refreshing, or not cached, is not started.
    pub async fn run_scheduled(
        self: &Arc<Self>,
        now: DateTime<Utc>,
    ) -> Result<Vec<ScheduledRefresh>> {
        let mut started = Vec::new();
        for connection in self.connections().await? {
            let defaults = RefreshSettings::from_config(&connection.config).unwrap_or_default();
            let entries = self.cache_entries(&connection).await?;
            let records = self.tables(&connection).await?;
            let mut due = Vec::new();
            {
                let mut slots = self
                    .schedule
                    .slots
                    .lock()
                    .unwrap_or_else(|e| e.into_inner());
                for record in records {
                    let table = record.table_ref(&connection.id);
                    let settings = record.options.refresh.or(&defaults);
                    let (Some(interval), Some(entry)) =
                        (settings.interval(), record.current_entry(&entries))
                    else {
                        slots.remove(&table);
                        continue;
                    };
                    let slot = slots.entry(table.clone()).or_insert_with(|| Slot {
                        interval,
                        next_at: first_due(&table, &record, entry, interval),
                        failures: 0,
                        running: false,
                    });
                    if slot.interval != interval {
                        *slot = Slot {
                            interval,
                            next_at: first_due(&table, &record, entry, interval),
                            failures: 0,
                            running: slot.running,
                        };
                    }
                    if !slot.running && now >= slot.next_at {
                        slot.running = true;
                        due.push((table, record));
                    }
                }
            }
            if due.is_empty() {
                continue;
            }
            let limit = defaults
                .max_concurrent_refreshes
                .unwrap_or(DEFAULT_CONCURRENT);
            let permits = {
                let mut limits = self
                    .schedule
                    .limits
                    .lock()
                    .unwrap_or_else(|e| e.into_inner());
                let slot = limits
                    .entry(connection.id.clone())
                    .or_insert_with(|| (limit, Arc::new(Semaphore::new(limit as usize))));
                if slot.0 != limit {
                    *slot = (limit, Arc::new(Semaphore::new(limit as usize)));
                }
                Arc::clone(&slot.1)
            };
            for (table, record) in due {
                let (this, connection, permits) =
                    (Arc::clone(self), connection.clone(), Arc::clone(&permits));
                let cancel = self.background.cancel.clone();
                let key = table.clone();
                let task = self.background.tasks.spawn(async move {
                    let refresh = async {
                        let _permit = permits.acquire_owned().await;
                        this.fetch_table(&connection, &record, FetchMode::Refresh).await
                    };
                    let result = tokio::select! {
                        result = refresh => result,
                        () = cancel.cancelled() => Err(crate::Error::Usage("the refresh schedule stopped".into())),
                    };
                    this.scheduled_done(&key, now, result.is_ok());
                    result
                });
                started.push((table, task));
            }
        }
        Ok(started)
    }

    /// Records how a scheduled refresh started at `now` ended: the next one is an interval
    /// on, or, after a failure, a backoff on until the retries are spent.
    fn scheduled_done(&self, table: &TableRef, now: DateTime<Utc>, ok: bool) {
        let mut slots = self
            .schedule
            .slots
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let Some(slot) = slots.get_mut(table) else {
            return;
        };
        slot.running = false;
        let regular = after(now, slot.interval) + jitter(table, slot.interval);
        if ok {
            slot.failures = 0;
            slot.next_at = regular;
        } else if slot.failures < RETRIES {
            slot.failures += 1;
            slot.next_at = after(now, backoff(slot.interval, slot.failures));
        } else {
            slot.failures = 0;
            slot.next_at = regular;
        }
    }

    /// How fresh `record`'s copy `entry` is (`connection`'s settings as defaults).
    pub fn freshness(
        &self,
        connection: &crate::connection::Connection,
        record: &TableRecord,
        entry: Option<&CacheEntry>,
    ) -> super::TableFreshness {
        let settings = record.refresh_settings(&connection.config);
        let status = &record.refresh;
        super::TableFreshness {
            refresh_mode: settings.mode().to_string(),
            last_refresh_kind: status.kind.map(|k| k.to_string()),
            last_refresh_at: status.refreshed_at,
            last_refresh_rows: status.rows,
            last_refresh_ms: status.duration_ms,
            age_seconds: entry.map(|e| (Utc::now() - e.fetched_at).num_seconds()),
            next_refresh_at: self.next_scheduled(
                &record.table_ref(&connection.id),
                record,
                entry,
                &settings,
            ),
            cache_files: entry.map(|e| e.files().count() as i64),
            last_error: status.error.clone(),
            last_error_at: status.error_at,
        }
    }

    /// When the schedule next refreshes `table` (`None`: it has no interval or no copy).
    fn next_scheduled(
        &self,
        table: &TableRef,
        record: &TableRecord,
        entry: Option<&CacheEntry>,
        settings: &RefreshSettings,
    ) -> Option<DateTime<Utc>> {
        let interval = settings.interval()?;
        let entry = entry?;
        let slots = self
            .schedule
            .slots
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        Some(match slots.get(table) {
            Some(slot) if slot.interval == interval => slot.next_at,
            _ => first_due(table, record, entry, interval),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_from_a_sixteenth_of_the_interval_up_to_it() {
        let five_minutes = Duration::from_secs(300);
        assert_eq!(backoff(five_minutes, 1), Duration::from_millis(18_750));
        assert_eq!(backoff(five_minutes, 2), Duration::from_millis(37_500));
        assert_eq!(backoff(five_minutes, 3), Duration::from_secs(75));
        assert_eq!(backoff(five_minutes, 9), five_minutes);
        assert_eq!(backoff(Duration::from_secs(2), 1), Duration::from_secs(1));
    }

    #[test]
    fn jitter_is_fixed_per_table_and_under_a_tenth() {
        let id = ConnectionId::generate();
        let hour = Duration::from_secs(3600);
        let a = TableRef::new(&id, "s", "a");
        assert_eq!(jitter(&a, hour), jitter(&a, hour));
        for name in ["a", "b", "c", "d"] {
            let j = jitter(&TableRef::new(&id, "s", name), hour);
            assert!(j >= chrono::Duration::zero() && j <= chrono::Duration::minutes(6));
        }
    }
}

//! Progress bars on standard error for the table fetches a statement starts, drawn from
//! the engine's events (rows, rows per second, the total estimated from the row estimate).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use tokio::sync::broadcast::{self, error::RecvError};
use tokio::task::JoinHandle;

use crate::events::{Event, TableName};

/// Draws bars until dropped; dropping it clears them.
pub struct FetchProgress {
    task: JoinHandle<()>,
    bars: Arc<Mutex<Bars>>,
}

impl FetchProgress {
    /// Starts drawing the fetches announced on `events` (call within a tokio runtime).
    pub fn start(events: broadcast::Receiver<Event>) -> Self {
        let bars = Arc::new(Mutex::new(Bars {
            multi: MultiProgress::with_draw_target(ProgressDrawTarget::stderr()),
            bars: HashMap::new(),
        }));
        FetchProgress {
            task: tokio::spawn(draw(events, Arc::clone(&bars))),
            bars,
        }
    }

    /// Removes every bar now, without waiting for the events that end them: before a
    /// result is written to the terminal, and when a statement is cancelled.
    pub fn clear(&self) {
        lock(&self.bars).clear();
    }
}

impl Drop for FetchProgress {
    fn drop(&mut self) {
        self.task.abort();
        self.clear();
    }
}

/// The bars, whatever a panicking holder left behind (they are only drawn).
fn lock(bars: &Mutex<Bars>) -> std::sync::MutexGuard<'_, Bars> {
    bars.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Bars that clear themselves when the task drawing them ends, however it ends.
struct Bars {
    multi: MultiProgress,
    bars: HashMap<TableName, ProgressBar>,
}

impl Bars {
    fn clear(&mut self) {
        if self.bars.is_empty() {
            return;
        }
        for (_, bar) in self.bars.drain() {
            bar.finish_and_clear();
        }
        let _ = self.multi.clear();
    }
}

fn write_rate(state: &indicatif::ProgressState, out: &mut dyn std::fmt::Write) {
    let _ = out.write_str(&rate_text(state.per_sec()));
}

/// A fetch rate as people read it: `523 rows/s`, `156k rows/s`, `1.2M rows/s`.
pub fn rate_text(rows_per_second: f64) -> String {
    let r = rows_per_second.max(0.0);
    if r < 1_000.0 {
        format!("{r:.0} rows/s")
    } else if r < 1_000_000.0 {
        format!("{:.0}k rows/s", r / 1_000.0)
    } else {
        format!("{:.1}M rows/s", r / 1_000_000.0)
    }
}

async fn draw(mut events: broadcast::Receiver<Event>, bars: Arc<Mutex<Bars>>) {
    // Fits 80 columns with a table name of up to about 25 characters.
    let known = ProgressStyle::with_template(
        "{spinner} fetching {msg} {human_pos}/~{human_len} rows, {rate} {bar:16} {eta}",
    )
    .expect("valid template")
    .with_key("rate", write_rate);
    let unknown = ProgressStyle::with_template("{spinner} fetching {msg} {human_pos} rows, {rate}")
        .expect("valid template")
        .with_key("rate", write_rate);
    loop {
        let event = events.recv().await;
        let mut bars = lock(&bars);
        match event {
            Ok(Event::FetchStarted {
                table,
                row_estimate,
            }) => {
                let bar = match row_estimate.filter(|n| *n > 0) {
                    Some(estimate) => ProgressBar::new(estimate as u64).with_style(known.clone()),
                    None => ProgressBar::no_length().with_style(unknown.clone()),
                };
                let bar = bars.multi.add(bar.with_message(table.to_string()));
                bar.enable_steady_tick(std::time::Duration::from_millis(200));
                if let Some(old) = bars.bars.insert(table, bar) {
                    old.finish_and_clear();
                }
            }
            Ok(Event::FetchProgress { table, rows }) => {
                if let Some(bar) = bars.bars.get(&table) {
                    // The estimate can be low; let the total follow the rows seen.
                    if bar.length().is_some_and(|len| rows > len) {
                        bar.set_length(rows);
                    }
                    bar.set_position(rows);
                }
            }
            Ok(Event::FetchFinished { table, .. } | Event::FetchFailed { table, .. }) => {
                if let Some(bar) = bars.bars.remove(&table) {
                    bar.finish_and_clear();
                }
            }
            Ok(_) | Err(RecvError::Lagged(_)) => {}
            Err(RecvError::Closed) => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::rate_text;

    #[test]
    fn rates_are_rounded_to_what_a_person_reads() {
        assert_eq!(rate_text(156_086.105_6), "156k rows/s");
        assert_eq!(rate_text(523.4), "523 rows/s");
        assert_eq!(rate_text(1_234_567.0), "1.2M rows/s");
        assert_eq!(rate_text(0.0), "0 rows/s");
    }
}

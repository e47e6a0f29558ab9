//! Exponential backoff for transient source failures: 100 ms doubling to 10 s, 5 tries.
//! Authentication and SQL errors are never retried.

use std::future::Future;
use std::time::Duration;

use crate::error::{Error, Result};

const FIRST_DELAY: Duration = Duration::from_millis(100);
const MAX_DELAY: Duration = Duration::from_secs(10);
const TRIES: u32 = 5;

/// Whether `e` is worth another try.
pub fn is_transient(e: &Error) -> bool {
    matches!(e, Error::Source { class, .. } if class.is_transient())
}

/// Runs `attempt` until it succeeds, fails permanently, or has been tried five times.
pub async fn with_backoff<T, F, Fut>(what: &str, mut attempt: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T>>,
{
    let mut delay = FIRST_DELAY;
    let mut tries = 1;
    loop {
        match attempt().await {
            Err(e) if tries < TRIES && is_transient(&e) => {
                tracing::debug!(what, tries, ?delay, error = %e, "transient failure, retrying");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(MAX_DELAY);
                tries += 1;
            }
            other => return other,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;
    use crate::source::FailureClass;

    fn failure(class: FailureClass) -> Error {
        Error::Source {
            connection: "c".into(),
            class,
            message: "m".into(),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn transient_failures_are_retried_five_times_with_doubling_delays() {
        let calls = AtomicU32::new(0);
        let start = tokio::time::Instant::now();
        let result: Result<()> = with_backoff("x", || async {
            calls.fetch_add(1, Ordering::SeqCst);
            Err(failure(FailureClass::Refused))
        })
        .await;
        assert!(result.is_err());
        assert_eq!(calls.load(Ordering::SeqCst), 5);
        // 100 + 200 + 400 + 800 ms of backoff, on the paused clock.
        assert_eq!(start.elapsed(), Duration::from_millis(1500));
    }

    #[tokio::test(start_paused = true)]
    async fn permanent_failures_are_not_retried() {
        for class in [
            FailureClass::Authentication,
            FailureClass::Query,
            FailureClass::NoDatabase,
        ] {
            let calls = AtomicU32::new(0);
            let _ = with_backoff("x", || async {
                calls.fetch_add(1, Ordering::SeqCst);
                Err::<(), _>(failure(class))
            })
            .await;
            assert_eq!(calls.load(Ordering::SeqCst), 1, "{class}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_success_after_a_transient_failure_is_returned() {
        let calls = AtomicU32::new(0);
        let result = with_backoff("x", || async {
            if calls.fetch_add(1, Ordering::SeqCst) < 2 {
                Err(failure(FailureClass::Timeout))
            } else {
                Ok(7)
            }
        })
        .await;
        assert_eq!(result.unwrap(), 7);
    }
}

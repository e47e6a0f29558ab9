//! Exponential backoff for transient source failures (refused, reset, timed out): 100 ms
//! doubling to 10 s, within a connection's `retry_budget` of waiting. Test, discovery and
//! fetch share this one policy. Authentication and SQL errors are never retried.

use std::future::Future;
use std::time::Duration;

use crate::error::{Error, Result};

const FIRST_DELAY: Duration = Duration::from_millis(100);
const MAX_DELAY: Duration = Duration::from_secs(10);

/// Whether `e` is worth another try.
pub fn is_transient(e: &Error) -> bool {
    matches!(e, Error::Source { class, .. } if class.is_transient())
}

/// Runs `attempt` until it succeeds, fails permanently, or the next wait would take the
/// time spent waiting past `budget`. The error returned is the last try's own, with the
/// tries counted.
pub async fn with_backoff<T, F, Fut>(what: &str, budget: Duration, mut attempt: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T>>,
{
    let mut delay = FIRST_DELAY;
    let mut waited = Duration::ZERO;
    let mut tries = 1;
    loop {
        match attempt().await {
            Err(e) if is_transient(&e) && waited + delay <= budget => {
                tracing::debug!(what, tries, ?delay, error = %e, "transient failure, retrying");
                tokio::time::sleep(delay).await;
                waited += delay;
                delay = (delay * 2).min(MAX_DELAY);
                tries += 1;
            }
            Err(Error::Source {
                connection,
                class,
                message,
            }) if tries > 1 => {
                return Err(Error::Source {
                    connection,
                    class,
                    message: format!(
                        "{message} (tried {tries} times over {:.1} s; the connection's \
                         retry_budget sets how long to keep trying)",
                        waited.as_secs_f64()
                    ),
                });
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
    async fn transient_failures_are_retried_with_doubling_delays_within_the_budget() {
        let calls = AtomicU32::new(0);
        let start = tokio::time::Instant::now();
        let result: Result<()> = with_backoff("x", Duration::from_secs(2), || async {
            calls.fetch_add(1, Ordering::SeqCst);
            Err(failure(FailureClass::Refused))
        })
        .await;
        assert_eq!(calls.load(Ordering::SeqCst), 5);
        // 100 + 200 + 400 + 800 ms of backoff, on the paused clock; 1600 more would pass 2 s.
        assert_eq!(start.elapsed(), Duration::from_millis(1500));
        let message = result.unwrap_err().to_string();
        assert!(message.contains("tried 5 times over 1.5 s"), "{message}");
        assert_eq!(
            result_class(
                &with_backoff("x", Duration::ZERO, || async {
                    calls.fetch_add(1, Ordering::SeqCst);
                    Err::<(), _>(failure(FailureClass::Refused))
                })
                .await
            ),
            Some(FailureClass::Refused),
            "a zero budget tries once and keeps the cause"
        );
        assert_eq!(calls.load(Ordering::SeqCst), 6);
    }

    fn result_class(result: &Result<()>) -> Option<FailureClass> {
        match result {
            Err(Error::Source { class, .. }) => Some(*class),
            _ => None,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn permanent_failures_are_not_retried() {
        for class in [
            FailureClass::Authentication,
            FailureClass::Query,
            FailureClass::NoDatabase,
        ] {
            let calls = AtomicU32::new(0);
            let _ = with_backoff("x", Duration::from_secs(2), || async {
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
        let result = with_backoff("x", Duration::from_secs(2), || async {
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

//! Retries of transient faults: exponential backoff with full jitter, bounded by a total
//! time budget so a dead endpoint gives a clear error instead of a hang. The one retry loop
//! of adlsfs: storage requests and the native fetcher's ranges both use it. Attempts may
//! share state that outlives each of them (an atomic, say), so an attempt resumes where the
//! last one stopped: a range continues from its first byte not yet written.
//!
//! Retrying a write is safe for unconditional writes (the same bytes again) and block
//! staging; a retried conditional write may meet its own landed first attempt, which
//! `azure::rest` recognises after the fact (see its module docs).

use super::StorageError;
use std::future::Future;
use std::time::{Duration, Instant};

/// An error [`RetryPolicy::run`] can decide about.
pub trait Retryable: std::fmt::Display {
    /// True for faults worth retrying (throttling, server errors, broken connections).
    fn is_transient(&self) -> bool;

    /// The error that ends the loop, told how many attempts were made over how long.
    fn after_attempts(self, _attempts: u32, _elapsed: Duration) -> Self
    where
        Self: Sized,
    {
        self
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Total time after which no new attempt is started.
    pub budget: Duration,
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
    /// Longest wait for the next piece of a response body: a stalled connection is
    /// abandoned (and retried) after this long.
    pub read_timeout: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            budget: Duration::from_secs(30),
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(8),
            read_timeout: Duration::from_secs(30),
        }
    }
}

impl RetryPolicy {
    pub fn with_budget(budget: Duration) -> Self {
        Self {
            budget,
            ..Self::default()
        }
    }

    /// Runs `attempt` until it succeeds, fails permanently, or the budget is spent. The
    /// error that ends the loop knows the real attempt count ([`Retryable::after_attempts`]).
    pub async fn run<T, E, F, Fut>(&self, mut attempt: F) -> Result<T, E>
    where
        E: Retryable,
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        let start = Instant::now();
        let mut backoff = self.initial_backoff;
        let mut attempts = 0u32;
        loop {
            attempts += 1;
            let err = match attempt().await {
                Ok(v) => return Ok(v),
                Err(e) => e,
            };
            let elapsed = start.elapsed();
            let sleep = jittered(backoff);
            if !err.is_transient() || elapsed + sleep >= self.budget {
                return Err(err.after_attempts(attempts, start.elapsed()));
            }
            tracing::info!(attempt = attempts, error = %err, "transient fault; retrying");
            tokio::time::sleep(sleep).await;
            backoff = (backoff * 2).min(self.max_backoff);
        }
    }
}

/// Full jitter: a uniformly random wait in [backoff/2, backoff].
pub fn jittered(backoff: Duration) -> Duration {
    let half = backoff / 2;
    half + half.mul_f64(fastrand::f64())
}

impl Retryable for StorageError {
    fn is_transient(&self) -> bool {
        StorageError::is_transient(self)
    }

    /// An [`StorageError::Unreachable`] reports the real attempt count.
    fn after_attempts(self, attempts: u32, elapsed: Duration) -> Self {
        match self {
            StorageError::Unreachable {
                endpoint, cause, ..
            } => StorageError::Unreachable {
                endpoint,
                attempts,
                elapsed,
                cause,
            },
            other => other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    fn unreachable() -> StorageError {
        StorageError::Unreachable {
            endpoint: "http://x".into(),
            attempts: 1,
            elapsed: Duration::ZERO,
            cause: "refused".into(),
        }
    }

    #[tokio::test]
    async fn transient_errors_retry_until_success() {
        let calls = AtomicU32::new(0);
        let policy = RetryPolicy {
            budget: Duration::from_secs(5),
            initial_backoff: Duration::from_millis(1),
            max_backoff: Duration::from_millis(4),
            ..RetryPolicy::default()
        };
        let v = policy
            .run(|| async {
                if calls.fetch_add(1, Ordering::SeqCst) < 3 {
                    Err(unreachable())
                } else {
                    Ok(7)
                }
            })
            .await
            .unwrap();
        assert_eq!((v, calls.load(Ordering::SeqCst)), (7, 4));
    }

    #[tokio::test]
    async fn permanent_errors_do_not_retry() {
        let calls = AtomicU32::new(0);
        let err = RetryPolicy::default()
            .run(|| async {
                calls.fetch_add(1, Ordering::SeqCst);
                Err::<(), _>(StorageError::NotFound { name: "x".into() })
            })
            .await
            .unwrap_err();
        assert!(matches!(err, StorageError::NotFound { .. }));
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn an_attempt_resumes_from_the_state_the_last_one_left() {
        let policy = RetryPolicy {
            budget: Duration::from_secs(5),
            initial_backoff: Duration::from_millis(1),
            max_backoff: Duration::from_millis(2),
            ..RetryPolicy::default()
        };
        // Each attempt moves 3 of 10 units before a transient fault; progress is kept.
        let done = AtomicU32::new(0);
        let starts = std::sync::Mutex::new(Vec::new());
        policy
            .run(|| async {
                let start = done.load(Ordering::SeqCst);
                starts.lock().unwrap().push(start);
                let now = (start + 3).min(10);
                done.store(now, Ordering::SeqCst);
                if now < 10 {
                    Err(unreachable())
                } else {
                    Ok(())
                }
            })
            .await
            .unwrap();
        assert_eq!(*starts.lock().unwrap(), [0, 3, 6, 9]);
    }

    #[tokio::test]
    async fn budget_bounds_total_time_and_counts_attempts() {
        let policy = RetryPolicy {
            budget: Duration::from_millis(300),
            initial_backoff: Duration::from_millis(20),
            max_backoff: Duration::from_millis(50),
            ..RetryPolicy::default()
        };
        let start = Instant::now();
        let err = policy
            .run(|| async { Err::<(), _>(unreachable()) })
            .await
            .unwrap_err();
        assert!(start.elapsed() < Duration::from_millis(400));
        match err {
            StorageError::Unreachable { attempts, .. } => assert!(attempts > 2, "{attempts}"),
            other => panic!("{other}"),
        }
    }
}

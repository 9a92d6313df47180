//! Retries of transient storage faults: exponential backoff with full jitter, bounded by a
//! total time budget so a dead endpoint gives a clear error instead of a hang.
//!
//! Retrying a write is safe for unconditional writes (the same bytes again) and block
//! staging; a retried conditional write may meet its own landed first attempt, which
//! `azure::rest` recognises after the fact (see its module docs).

use super::{Result, StorageError};
use std::future::Future;
use std::time::{Duration, Instant};

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

    /// Runs `attempt` until it succeeds, fails permanently, or the budget is spent.
    /// An [`StorageError::Unreachable`] that ends the loop reports the real attempt count.
    pub async fn run<T, F, Fut>(&self, mut attempt: F) -> Result<T>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T>>,
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
                return Err(with_attempts(err, attempts, start.elapsed()));
            }
            tracing::debug!(attempt = attempts, error = %err, "transient storage error, retrying");
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

fn with_attempts(err: StorageError, attempts: u32, elapsed: Duration) -> StorageError {
    match err {
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

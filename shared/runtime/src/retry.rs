//! Retrying until something works or shutdown is asked for.
//!
//! Reconnecting to the broker, migrating a database that is not up yet and
//! re-writing a batch the database refused all wait the same way: 100 ms
//! doubling up to a cap, jittered so many replicas do not retry in lock-step,
//! and never giving up on their own (an outage ends; a process that stopped
//! retrying would need a human). `backon` does the waiting; this module fixes
//! the policy in one place.

use std::{future::Future, time::Duration};

use backon::{ExponentialBuilder, Retryable as _};
use tokio_util::sync::CancellationToken;

/// The policy: from 100 ms, doubling, jittered, capped at `max`, unbounded.
pub fn policy(max: Duration) -> ExponentialBuilder {
    ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(100))
        .with_max_delay(max)
        .with_jitter()
        .without_max_times()
}

/// Runs `attempt` until it succeeds, calling `failed` with each error before
/// waiting. `None` once `shutdown` is cancelled, even mid-attempt or mid-wait.
pub async fn until_cancelled<T, E, Fut>(
    shutdown: &CancellationToken,
    max: Duration,
    attempt: impl FnMut() -> Fut,
    mut failed: impl FnMut(&E),
) -> Option<T>
where
    Fut: Future<Output = Result<T, E>>,
{
    let retrying = attempt
        .retry(policy(max))
        .sleep(tokio::time::sleep)
        .notify(|err, _| failed(err));
    tokio::select! {
        biased;
        () = shutdown.cancelled() => None,
        // The policy never gives up, so an `Err` cannot come back.
        result = retrying => result.ok(),
    }
}

/// The policy's delays, one per failure in a row, for a loop that waits
/// between failures itself (and starts over after a success).
pub fn delays(max: Duration) -> impl Iterator<Item = Duration> + Send {
    use backon::BackoffBuilder as _;
    policy(max).build()
}

/// Waits the policy's first delay (100–200 ms), or less if `shutdown` is
/// cancelled: the pause before reconnecting after a link that worked was
/// lost, so a broker that drops every new connection at once is not hammered.
pub async fn pause(shutdown: &CancellationToken, max: Duration) {
    use backon::BackoffBuilder as _;
    let delay = policy(max).build().next().unwrap_or(max);
    tokio::select! {
        () = shutdown.cancelled() => {}
        () = tokio::time::sleep(delay) => {}
    }
}

/// Runs `attempt` until it succeeds or `retryable` calls an error final
/// (then that error is returned), waiting per [`policy`] between attempts.
pub async fn until_final<T, E, Fut>(
    max: Duration,
    attempt: impl FnMut() -> Fut,
    retryable: impl FnMut(&E) -> bool,
) -> Result<T, E>
where
    Fut: Future<Output = Result<T, E>>,
{
    attempt
        .retry(policy(max))
        .sleep(tokio::time::sleep)
        .when(retryable)
        .await
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn failures_are_retried_and_reported_until_one_succeeds() {
        let calls = AtomicU32::new(0);
        let mut reported = Vec::new();
        let value = until_cancelled(
            &CancellationToken::new(),
            Duration::from_secs(1),
            || async {
                match calls.fetch_add(1, Ordering::SeqCst) {
                    n if n < 3 => Err(n),
                    n => Ok(n),
                }
            },
            |err: &u32| reported.push(*err),
        )
        .await;
        assert_eq!(value, Some(3));
        assert_eq!(reported, [0, 1, 2]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_final_error_ends_the_retries() {
        let calls = AtomicU32::new(0);
        let result: Result<(), u32> = until_final(
            Duration::from_secs(1),
            || async { Err(calls.fetch_add(1, Ordering::SeqCst)) },
            |err| *err < 2,
        )
        .await;
        assert_eq!(result, Err(2));
    }

    #[tokio::test(start_paused = true)]
    async fn cancelling_stops_the_retries() {
        let shutdown = CancellationToken::new();
        let cancel = shutdown.clone();
        let value: Option<()> = until_cancelled(
            &shutdown,
            Duration::from_secs(1),
            || async { Err(()) },
            |()| cancel.cancel(),
        )
        .await;
        assert_eq!(value, None);
    }
}

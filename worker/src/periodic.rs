//! The one runner of the worker's periodic work (the spool drain, the
//! summary roll-up, the backlog measurements, the database watchdog): a
//! task is a name, a period, an optional backoff and a round; the runner
//! runs rounds until shutdown, never cutting one short, and logs a failed
//! round with the task's name.
//!
//! A round decides what its outcome means for the rest of the worker
//! (readiness, metrics); bounding it is [`within`]'s job, so a round that
//! hangs is a failed round like any other.

use std::{fmt::Display, future::Future, time::Duration};

use corral_runtime::retry;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// What a round that went through asks of the runner.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// Wait out the period.
    Wait,
    /// Run again at once: the round took all it could, more is probably waiting.
    Again,
}

/// How a periodic task is run.
#[derive(Debug, Clone)]
pub struct Task {
    /// Names the task in the logs.
    pub name: &'static str,
    /// From the start of one round to the start of the next.
    pub period: Duration,
    /// After a failed round, retry sooner than the period: after 100 ms,
    /// doubling (jittered) up to this cap; `None` waits for the next period.
    pub backoff: Option<Duration>,
    /// Logged at warn when a round fails, with the error: what it means for
    /// the work. `None` for a measurement, whose failure a later one mends:
    /// logged at debug only.
    pub failed: Option<&'static str>,
}

impl Task {
    /// A task whose rounds run every `period`, a failure logged at warn.
    pub fn new(name: &'static str, period: Duration, failed: &'static str) -> Self {
        Self {
            name,
            period,
            backoff: None,
            failed: Some(failed),
        }
    }

    /// A measurement every `period`; a failed one is skipped quietly.
    pub fn measure(name: &'static str, period: Duration) -> Self {
        Self {
            name,
            period,
            backoff: None,
            failed: None,
        }
    }

    /// After a failed round, retries with backoff capped at `cap`.
    #[must_use]
    pub fn with_backoff(self, cap: Duration) -> Self {
        Self {
            backoff: Some(cap),
            ..self
        }
    }

    /// Runs `round` until `shutdown`, the first time at once. A round in
    /// progress finishes before the runner returns.
    pub async fn run<F, Fut, E>(&self, shutdown: &CancellationToken, mut round: F)
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<Next, E>>,
        E: Display,
    {
        let mut delays = self.backoff.map(retry::delays);
        loop {
            if shutdown.is_cancelled() {
                return;
            }
            let started = Instant::now();
            let until = match round().await {
                Ok(next) => {
                    delays = self.backoff.map(retry::delays);
                    if next == Next::Again {
                        continue;
                    }
                    started + self.period
                }
                Err(error) => {
                    self.log_failure(&error);
                    match (&mut delays, self.backoff) {
                        (Some(delays), Some(cap)) => Instant::now() + delays.next().unwrap_or(cap),
                        _ => started + self.period,
                    }
                }
            };
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep_until(until) => {}
            }
        }
    }

    fn log_failure(&self, error: &dyn Display) {
        let task = self.name;
        match self.failed {
            Some(failed) => tracing::warn!(task, error = %error, "{failed}"),
            None => tracing::debug!(task, error = %error, "a periodic round failed"),
        }
    }
}

/// `work` bounded by `timeout`: its error, or that it got no answer, as
/// text with the whole cause chain.
pub async fn within<T, E>(
    timeout: Duration,
    work: impl Future<Output = Result<T, E>>,
) -> Result<T, String>
where
    E: Into<anyhow::Error>,
{
    match tokio::time::timeout(timeout, work).await {
        Ok(Ok(done)) => Ok(done),
        Ok(Err(err)) => Err(format!("{:#}", err.into())),
        Err(_elapsed) => Err(format!("no answer within {timeout:?}")),
    }
}

//! Waiting on a condition with a deadline, or watching one hold for a while.

use std::{future::Future, time::Duration};

/// Polls `condition` every 20 ms until it returns `Some`, or panics with
/// `what` once `timeout` has passed. Returns the value.
pub async fn until<T, F, Fut>(what: &str, timeout: Duration, mut condition: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(value) = condition().await {
            return value;
        }
        if tokio::time::Instant::now() >= deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Like [`until`] for a boolean condition.
pub async fn until_true<F, Fut>(what: &str, timeout: Duration, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    until(what, timeout, || {
        let fut = condition();
        async move { fut.await.then_some(()) }
    })
    .await
}

/// Polls `check` every 20 ms for the whole of `window` and panics with `what`
/// and the check's own account the first time it fails. For outcomes that
/// must NOT happen ("nothing is acknowledged"): the window is how long the
/// test looks, chosen longer than the timers that could make it happen, so
/// they have all fired by its end. It bounds nothing the code under test
/// does, so a slow machine cannot fail correct code with it.
pub async fn holds<F, Fut>(what: &str, window: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<(), String>>,
{
    let end = tokio::time::Instant::now() + window;
    loop {
        if let Err(account) = check().await {
            panic!("{what} stopped holding within {window:?}: {account}");
        }
        if tokio::time::Instant::now() >= end {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

//! Waiting on a condition with a deadline.

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

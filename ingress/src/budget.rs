//! The bound on request bodies held in memory at once.
//!
//! A request takes a lease on as many bytes as its body may have (its
//! `Content-Length`, or `CORRAL_MAX_BODY_BYTES` when it does not say) before
//! its body is read, and the lease lives as long as anything may still hold
//! a copy of that body: the handler's buffer and the client library's frames
//! until they are written to the broker's socket. Counting requests alone
//! does not bound memory (2,048 requests of 64 KiB are 128 MiB, a pod's
//! whole limit); counting bytes does.

use std::{sync::Arc, time::Duration};

use corral_runtime::telemetry::metrics;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// `CORRAL_MAX_IN_FLIGHT_BYTES`, shared by every request.
#[derive(Debug, Clone)]
pub struct BodyBudget {
    bytes: Arc<Semaphore>,
    total: u32,
}

/// Bytes of the budget held for one body; given back when the last clone
/// is dropped. A body on its way to both durable paths (the broker and the
/// spool) is one allocation shared by both, so each holds a clone.
#[derive(Debug, Clone)]
pub struct Lease(Arc<Held>);

#[derive(Debug)]
struct Held {
    permit: OwnedSemaphorePermit,
}

/// The budget stayed exhausted for the whole wait.
#[derive(Debug, thiserror::Error)]
#[error(
    "{wanted} bytes of request bodies could not be held within {waited:?}: \
     CORRAL_MAX_IN_FLIGHT_BYTES ({total}) are all in flight"
)]
pub struct Exhausted {
    wanted: u32,
    waited: Duration,
    total: u32,
}

impl BodyBudget {
    /// A budget of `total` bytes.
    pub fn new(total: u32) -> Self {
        Self {
            bytes: Arc::new(Semaphore::new(total as usize)),
            total,
        }
    }

    /// Holds `wanted` bytes (at least one, at most the whole budget), waiting
    /// at most `wait` for them to be free.
    pub async fn lease(&self, wanted: usize, wait: Duration) -> Result<Lease, Exhausted> {
        let wanted = u32::try_from(wanted)
            .unwrap_or(u32::MAX)
            .clamp(1, self.total);
        let acquire = self.bytes.clone().acquire_many_owned(wanted);
        match tokio::time::timeout(wait, acquire).await {
            Ok(Ok(permit)) => {
                metrics::ingress_body_bytes_changed(f64::from(wanted));
                Ok(Lease(Arc::new(Held { permit })))
            }
            // The semaphore is never closed; treat it as exhausted anyway.
            Ok(Err(_)) | Err(_) => Err(Exhausted {
                wanted,
                waited: wait,
                total: self.total,
            }),
        }
    }
}

impl Lease {
    /// Bytes held.
    pub fn bytes(&self) -> u32 {
        self.0.permit.num_permits() as u32
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        metrics::ingress_body_bytes_changed(-f64::from(self.permit.num_permits() as u32));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn leases_are_bounded_by_the_budget_and_given_back_on_drop() {
        let budget = BodyBudget::new(100);
        let first = budget.lease(60, Duration::from_millis(10)).await.unwrap();
        assert_eq!(first.bytes(), 60);
        let refused = budget.lease(60, Duration::from_millis(10)).await;
        assert!(refused.is_err(), "60 + 60 bytes exceed a budget of 100");
        let small = budget.lease(40, Duration::from_millis(10)).await.unwrap();
        drop(first);
        let again = budget.lease(60, Duration::from_millis(10)).await.unwrap();
        assert_eq!(again.bytes() + small.bytes(), 100);
    }

    #[tokio::test]
    async fn a_lease_is_at_least_one_byte_and_at_most_the_whole_budget() {
        let budget = BodyBudget::new(100);
        assert_eq!(budget.lease(0, Duration::ZERO).await.unwrap().bytes(), 1);
        assert_eq!(
            budget
                .lease(usize::MAX, Duration::ZERO)
                .await
                .unwrap()
                .bytes(),
            100
        );
    }

    #[tokio::test]
    async fn a_waiting_lease_gets_the_bytes_a_finished_one_gives_back() {
        let budget = BodyBudget::new(10);
        let held = budget.lease(10, Duration::ZERO).await.unwrap();
        let waiting = tokio::spawn({
            let budget = budget.clone();
            async move {
                budget
                    .lease(5, Duration::from_secs(30))
                    .await
                    .map(|l| l.bytes())
            }
        });
        drop(held);
        assert_eq!(waiting.await.unwrap().unwrap(), 5);
    }
}

//! Drop Cowboy's signed webhooks stored by the worker, through the real
//! signed route and the real worker: each result once by its `event_id`,
//! every other event kept, receipts joined to their delivery, a result that
//! arrives on both channels counted once, and suppressions keyed on
//! `reason_code`.
//!
//! # Layout
//!
//! - `events`: a status stored with its `event_id`, `reason_code` and
//!   `event_at`; a retry stored once; another event type kept; an event
//!   without `event_id` quarantined alone; a receipt joined to its delivery
//!   in either order.
//! - `channels`: one result on both channels (callback and status webhook),
//!   in either order and in one batch: one `deliveries` row with what each
//!   brought, counted once in the metric, the summary and `report`, money
//!   exact; and so with two workers committing the channels at once.
//! - `codes`: suppressions from codes whose text is unfamiliar, the text
//!   only where there is no code; migration V6 re-deriving existing ones.

mod channels;
mod codes;
mod events;

use std::ops::Deref;

use corral_testkit::{apps::RunningWorker, metrics::Metrics, stack::Stack, wait};
use serde_json::Value;
use tokio_postgres::Client;
use uuid::Uuid;

use super::helpers::{WAIT, worker_stack};
use crate::ingress::{
    helpers::{RETRY_AFTER_SECS, accepted, send},
    signed::{Delivery, SECRET},
};

/// Ingress with the test's signing secret and a worker, on the test's own
/// broker prefix and database (the kit's stack, which it derefs to), and a
/// client on that database.
pub(super) struct SignedStack {
    kit: Stack,
    pub(super) client: Client,
}

impl Deref for SignedStack {
    type Target = Stack;

    fn deref(&self) -> &Stack {
        &self.kit
    }
}

impl SignedStack {
    pub(super) async fn start() -> Self {
        let kit = worker_stack()
            .ingress(|ingress| {
                ingress.signing.secrets = vec![SECRET.into()];
                ingress.retry_after_secs = RETRY_AFTER_SECS;
            })
            // The tests read the summary's two tables together; no roll-up needed.
            .worker(|worker| worker.summary.summary_rollup_ms = 3_600_000)
            .start()
            .await;
        let client = kit.client().await;
        Self { kit, client }
    }

    /// Delivers `body` signed, as the provider does; the id answered.
    pub(super) async fn deliver(&self, body: &str) -> Uuid {
        self.deliver_as(Delivery::new(SECRET, body)).await
    }

    /// Sends `delivery` to the signed route; the id answered.
    pub(super) async fn deliver_as(&self, delivery: Delivery) -> Uuid {
        accepted(send(delivery.request(self.ingress())).await).await
    }

    /// Posts a callback to the legacy route of `kind`; the id answered.
    pub(super) async fn callback(&self, kind: &str, body: &str) -> Uuid {
        accepted(self.ingress().post(kind, body.to_owned()).await).await
    }

    pub(super) async fn stop(mut self) {
        self.kit
            .stop_ingress()
            .await
            .expect("ingress stops cleanly");
        self.kit
            .stop_worker()
            .await
            .expect("the worker stops cleanly");
    }
}

/// `fixture` (a JSON object) with each `(path, value)` set; a path is a
/// top-level key or `data.<key>`.
pub(crate) fn edited(fixture: &str, edits: &[(&str, Value)]) -> String {
    let mut body: Value = serde_json::from_str(fixture).expect("a JSON fixture");
    for (path, value) in edits {
        let target = match path.strip_prefix("data.") {
            Some(key) => &mut body["data"][key],
            None => &mut body[*path],
        };
        *target = value.clone();
    }
    body.to_string()
}

/// `corral_worker_deliveries_total` of one series.
pub(super) fn deliveries(
    metrics: &Metrics,
    kind: &str,
    status: &str,
    reason: &str,
    reason_code: &str,
) -> f64 {
    metrics.get(&format!(
        r#"corral_worker_deliveries_total{{kind="{kind}",status="{status}",reason="{reason}",reason_code="{reason_code}"}}"#
    ))
}

/// Waits until `corral_worker_deliveries_total` adds up to `total` over
/// every series (it moves just after `corral_worker_messages_total`), and
/// returns the scrape that showed it.
pub(super) async fn settled_deliveries(worker: &RunningWorker, total: f64) -> Metrics {
    wait::until(
        &format!("corral_worker_deliveries_total to reach {total}"),
        WAIT,
        || async move {
            let metrics = worker.metrics().await;
            (all_deliveries(&metrics) >= total).then_some(metrics)
        },
    )
    .await
}

/// The sum of `corral_worker_deliveries_total` over every series.
pub(super) fn all_deliveries(metrics: &Metrics) -> f64 {
    metrics
        .0
        .iter()
        .filter(|(series, _)| series.starts_with("corral_worker_deliveries_total{"))
        .map(|(_, value)| value)
        .sum()
}

//! What the spool tests share: a spooling ingress, the rows it wrote, a
//! draining worker.

use std::time::Duration;

use chrono::{DateTime, Utc};
use corral_ingress::config::IngressConfig;
use corral_runtime::telemetry::labels::SpoolCause;
use corral_testkit::{
    apps::RunningIngress,
    config::short_waits,
    metrics::Metrics,
    stack::{Stack, StackBuilder, Via},
};
use corral_worker::config::WorkerConfig;
use tokio_postgres::Client;
use uuid::Uuid;

pub(super) use crate::ingress::helpers::readyz;
use crate::ingress::helpers::{accepted, authenticated, quick_broker_recovery, send};

/// Deadline of every wait.
pub(super) const WAIT: Duration = Duration::from_secs(20);

pub(super) const SPOOL_FAILURES: &str = "corral_ingress_spool_failures_total";

pub(super) const DRAINED: &str = "corral_worker_spool_drained_total";

pub(super) const SPOOLED_ROWS: &str = "SELECT count(*) FROM spooled_webhooks";

/// What a spool test starts from: its own migrated database, spool role and
/// AMQP prefix; ingress's broker link through a proxy to cut or black-hole,
/// [`spooling`]; workers [`draining`]. Nothing started yet.
pub(super) fn stage() -> StackBuilder {
    Stack::builder()
        .spool()
        .amqp_proxy(Via::Ingress)
        .ingress_settings(spooling)
        .worker_settings(draining)
}

/// Starts the stack's ingress with its broker path cut, and waits until it
/// is ready on the spool alone.
pub(super) async fn without_broker(stack: &mut Stack) {
    stack.amqp_proxy().cut();
    stack.start_ingress_unready().await.wait_ready(true).await;
}

/// Ingress spooling with short broker deadlines: the broker has the default
/// second to confirm, the request three in all.
pub(super) fn spooling(config: &mut IngressConfig) {
    quick_broker_recovery(config);
    config.publish_timeout_ms = 3_000;
}

/// The worker tests' short waits, looking at an empty spool every 50 ms.
pub(super) fn draining(config: &mut WorkerConfig) {
    short_waits(config);
    config.spool.spool_poll_ms = 50;
}

/// `corral_ingress_spooled_total{cause}`.
pub(super) fn spooled(metrics: &Metrics, cause: SpoolCause) -> f64 {
    metrics.get(&format!(
        "corral_ingress_spooled_total{{cause=\"{}\"}}",
        cause.as_str()
    ))
}

/// One row of `spooled_webhooks`, read as postgres (the spool role cannot).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Spooled {
    pub(super) message_id: Uuid,
    pub(super) kind: String,
    pub(super) body: Vec<u8>,
    pub(super) received_at: DateTime<Utc>,
}

/// Every row of the spool, oldest first.
pub(super) async fn spool_rows(client: &Client) -> Vec<Spooled> {
    client
        .query(
            "SELECT message_id, kind, body, received_at FROM spooled_webhooks ORDER BY spooled_at",
            &[],
        )
        .await
        .expect("reading the spool as postgres")
        .iter()
        .map(|row| Spooled {
            message_id: row.get(0),
            kind: row.get(1),
            body: row.get(2),
            received_at: row.get(3),
        })
        .collect()
}

/// Posts `body` to `kind`'s route and asserts what a user sees of a spooled
/// webhook: 200 with an id, `corral_ingress_spooled_total` up by one under
/// `cause` and no other, and the spool holding exactly that webhook: the
/// answered id, the kind, the bytes sent and when it arrived (besides
/// whatever it held before). Returns the id.
pub(super) async fn post_spooled(
    ingress: &RunningIngress,
    db: &Client,
    kind: &str,
    body: &str,
    cause: SpoolCause,
) -> Uuid {
    let before = ingress.metrics().await;
    let earlier = spool_rows(db).await;
    let sent_at = Utc::now();
    let id = accepted(send(authenticated(ingress, kind).body(body.to_owned())).await).await;
    let answered_at = Utc::now();
    let after = ingress.metrics().await;
    for each in SpoolCause::ALL {
        let expected = if *each == cause { 1.0 } else { 0.0 };
        assert_eq!(
            spooled(&after, *each) - spooled(&before, *each),
            expected,
            "corral_ingress_spooled_total{{cause=\"{}\"}} after a webhook spooled for {cause:?}",
            each.as_str()
        );
    }
    let rows = spool_rows(db).await;
    let added: Vec<&Spooled> = rows.iter().filter(|row| !earlier.contains(row)).collect();
    let [row] = added.as_slice() else {
        panic!("the spool should have gained exactly the one webhook, gained {added:?}");
    };
    assert_eq!(rows.len(), earlier.len() + 1, "nothing else left the spool");
    assert_eq!(
        row.message_id, id,
        "the spooled row carries the answered id"
    );
    assert_eq!(row.kind, kind);
    assert_eq!(row.body, body.as_bytes(), "the exact bytes posted");
    // Microseconds in the table; the clock read around the request may be finer.
    let slack = chrono::Duration::milliseconds(1);
    assert!(
        row.received_at >= sent_at - slack && row.received_at <= answered_at + slack,
        "received_at {} is not between the post ({sent_at}) and its answer ({answered_at})",
        row.received_at
    );
    id
}

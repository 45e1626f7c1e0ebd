//! What the worker tests share: settings, publishing as ingress, counting rows,
//! metrics, slow commits, proxies and typed rows.

use std::time::Duration;

use chrono::{DateTime, Utc};
use corral_contract::envelope::{self, Kind, batch::Packing};
use corral_runtime::telemetry;
use corral_testkit::{
    apps::RunningWorker,
    broker::TestBroker,
    config,
    database::TestDatabase,
    fixtures::{self},
    metrics::Metrics,
    stack::{Stack, StackBuilder},
    wait,
};
use corral_worker::config::WorkerConfig;
use tokio_postgres::Client;
use uuid::Uuid;

/// Deadline of every wait on the worker.
pub(crate) const WAIT: Duration = Duration::from_secs(20);

pub(crate) const STORED: &str = r#"corral_worker_messages_total{outcome="stored"}"#;

pub(crate) const DUPLICATE: &str = r#"corral_worker_messages_total{outcome="duplicate"}"#;

pub(crate) const QUARANTINED: &str = r#"corral_worker_messages_total{outcome="quarantined"}"#;

pub(crate) const DB_TRANSIENT: &str = r#"corral_worker_db_errors_total{kind="transient"}"#;

pub(super) const DB_DATA: &str = r#"corral_worker_db_errors_total{kind="data"}"#;

pub(super) const ACK_FAILURES: &str = "corral_worker_ack_failures_total";

pub(super) const CONNECTED: &str = r#"corral_broker_connect_attempts_total{outcome="success"}"#;

/// Worker settings that keep every wait in these tests short.
pub(crate) fn config(database_url: &str, prefix: &str) -> WorkerConfig {
    let mut config = config::worker(database_url, prefix);
    config::short_waits(&mut config);
    config
}

/// What a worker test starts from: a database and a prefix of its own, and
/// workers with [`config::short_waits`]; the test adds what differs.
pub(crate) fn worker_stack() -> StackBuilder {
    Stack::builder().worker_settings(config::short_waits)
}

/// `config` reaching the test's database directly, not through the stack's
/// proxy (a worker started after the database "came back").
pub(super) fn direct(mut config: WorkerConfig, db: &TestDatabase) -> WorkerConfig {
    config.db.database_url = db.url.clone();
    config
}

/// `config` with batches that close only at exactly `size` messages (the
/// linger is far longer than any test), so a test decides what shares a batch.
pub(super) fn batches_of(size: u32, mut config: WorkerConfig) -> WorkerConfig {
    config.batch_max = size;
    config.batch_linger_ms = 60_000;
    // A prefetch of CORRAL_PREFETCH messages, so that no share of a smaller
    // one closes a batch first.
    config.max_in_hand_bytes = Some(4 * 1024 * 1024 * 1024);
    config
}

/// What a test published.
#[derive(Debug, Clone)]
pub(crate) struct Sent {
    pub(crate) id: Uuid,
    pub(crate) received_at: DateTime<Utc>,
    pub(crate) routing_key: String,
    pub(crate) body: Vec<u8>,
}

/// Now, at the microsecond precision of the `x-received-at` header and of
/// `timestamptz`, so it compares equal after the round trip.
pub(crate) fn now_micros() -> DateTime<Utc> {
    DateTime::from_timestamp_micros(Utc::now().timestamp_micros()).expect("now is in range")
}

/// Publishes `body` as ingress would (message id, `x-received-at`, persistent).
pub(crate) async fn send(broker: &TestBroker, routing_key: &str, body: impl AsRef<[u8]>) -> Sent {
    let id = Uuid::now_v7();
    let received_at = now_micros();
    let body = body.as_ref().to_vec();
    broker
        .publish(
            routing_key,
            &body,
            corral_runtime::amqp::properties(&envelope::Metadata::single(id, received_at)),
        )
        .await;
    Sent {
        id,
        received_at,
        routing_key: routing_key.to_owned(),
        body,
    }
}

/// Publishes webhooks of `kind` and `body` as one envelope-2 message, as
/// ingress packs those that arrive together: each with its own id and a
/// `received_at` a microsecond after the one before.
pub(crate) async fn send_batch(broker: &TestBroker, webhooks: &[(Kind, &[u8])]) -> Vec<Sent> {
    let first = now_micros();
    let sent: Vec<Sent> = webhooks
        .iter()
        .enumerate()
        .map(|(i, (kind, body))| Sent {
            id: Uuid::now_v7(),
            received_at: first + chrono::Duration::microseconds(i as i64),
            routing_key: kind.routing_key().to_owned(),
            body: body.to_vec(),
        })
        .collect();
    publish_batch(broker, &sent).await;
    sent
}

/// Publishes `sent` (again) as one envelope-2 message; returns its `message_id`.
pub(crate) async fn publish_batch(broker: &TestBroker, sent: &[Sent]) -> Uuid {
    let packing: Vec<Packing> = sent
        .iter()
        .map(|s| Packing {
            id: s.id,
            received_at: s.received_at,
            kind: Kind::from_routing_key(&s.routing_key).expect("a webhook kind's routing key"),
            body: &s.body,
        })
        .collect();
    broker.publish_batch(&packing).await
}

/// A valid webhook with a fresh drop id.
pub(crate) fn valid(reason: &str) -> (String, String) {
    let drop_id = Uuid::now_v7().simple().to_string()[8..].to_owned();
    let body = fixtures::delivery_status(&drop_id, "2026-11-27T05:24:31.000Z", reason, "order-1");
    (drop_id, body)
}

pub(crate) async fn count(client: &Client, sql: &str) -> i64 {
    client
        .query_one(sql, &[])
        .await
        .unwrap_or_else(|err| panic!("{sql}: {err}"))
        .get(0)
}

/// Waits until `sql` (a `SELECT count(*)`) answers `expected`.
pub(crate) async fn wait_count(client: &Client, sql: &str, expected: i64) {
    wait::until_true(&format!("`{sql}` = {expected}"), WAIT, || async move {
        count(client, sql).await == expected
    })
    .await;
}

pub(crate) const EVENTS: &str = "SELECT count(*) FROM delivery_events";

pub(crate) const QUARANTINE: &str = "SELECT count(*) FROM quarantined_webhooks";

/// Waits until `series` has grown by at least `delta` since `before`.
pub(super) async fn wait_metric(
    worker: &RunningWorker,
    before: &Metrics,
    series: &str,
    delta: f64,
) {
    let start = before.get(series);
    wait::until_true(
        &format!("{series} to grow by {delta}"),
        WAIT,
        || async move { worker.metrics().await.get(series) - start >= delta },
    )
    .await;
}

/// Waits until `series` reaches `total` (the counters move just after the
/// commit and the ack, so a row can be visible a moment before its count),
/// and returns the scrape that showed it.
pub(crate) async fn settled(worker: &RunningWorker, series: &str, total: f64) -> Metrics {
    wait::until(&format!("{series} to reach {total}"), WAIT, || async move {
        let metrics = worker.metrics().await;
        (metrics.get(series) >= total).then_some(metrics)
    })
    .await
}

/// The metrics of this test process's recorder (for after the worker, and
/// so its admin listener, has stopped).
pub(super) fn local_metrics() -> Metrics {
    Metrics::parse(&telemetry::prometheus().render())
}

/// Asserts each sent message is exactly one `delivery_events` row (by
/// message id) and the table holds nothing else.
pub(crate) async fn assert_each_stored_once(client: &Client, sent: &[Sent]) {
    let ids: Vec<Uuid> = sent.iter().map(|s| s.id).collect();
    let rows = client
        .query(
            "SELECT message_id, count(*) FROM delivery_events
             WHERE message_id = ANY($1) GROUP BY message_id",
            &[&ids],
        )
        .await
        .expect("counting rows by message id");
    for row in &rows {
        let id: Uuid = row.get(0);
        let n: i64 = row.get(1);
        assert_eq!(n, 1, "message {id} is stored {n} times");
    }
    assert_eq!(rows.len(), sent.len(), "some messages are not rows");
    assert_eq!(count(client, EVENTS).await, sent.len() as i64);
}

/// Asserts `sent` is in `quarantined_webhooks` byte for byte, with its envelope
/// and an error matching `error` (exact, or a prefix when it ends with `…`).
pub(super) async fn assert_quarantined(client: &Client, sent: &Sent, error: &str) {
    let row = client
        .query_one(
            "SELECT body, error, routing_key, received_at, quarantined_at IS NOT NULL
             FROM quarantined_webhooks WHERE message_id = $1",
            &[&sent.id],
        )
        .await
        .unwrap_or_else(|err| panic!("quarantined row for {error:?}: {err}"));
    let body: Vec<u8> = row.get(0);
    assert_eq!(body, sent.body, "the raw body, byte for byte ({error})");
    let stored_error: String = row.get(1);
    match error.strip_suffix('…') {
        Some(prefix) => assert!(
            stored_error.starts_with(prefix),
            "error {stored_error:?} should start with {prefix:?}"
        ),
        None => assert_eq!(stored_error, error),
    }
    assert_eq!(
        row.get::<_, Option<String>>(2).as_deref(),
        Some(sent.routing_key.as_str())
    );
    assert_eq!(
        row.get::<_, Option<DateTime<Utc>>>(3),
        Some(sent.received_at)
    );
    assert!(row.get::<_, bool>(4));
}

/// A slow-down switch on the test database: while `test_slow_commit.seconds`
/// is above zero, every insert into `delivery_events` sleeps that long before
/// its transaction can commit, so a test can act while a batch is in flight.
pub(crate) async fn install_slow_commit(client: &Client, seconds: f64) {
    client
        .batch_execute(&format!(
            "CREATE TABLE test_slow_commit (seconds double precision NOT NULL);
             INSERT INTO test_slow_commit VALUES ({seconds});
             CREATE FUNCTION test_slow_commit() RETURNS trigger LANGUAGE plpgsql AS $$
             BEGIN
                 PERFORM pg_sleep((SELECT seconds FROM test_slow_commit));
                 RETURN NULL;
             END $$;
             CREATE TRIGGER test_slow_commit AFTER INSERT ON delivery_events
                 FOR EACH STATEMENT EXECUTE FUNCTION test_slow_commit();"
        ))
        .await
        .expect("installing the slow-commit trigger");
}

/// Waits until a backend of database `name` sleeps in the trigger, that is a
/// batch transaction is in progress and not committed.
pub(crate) async fn wait_batch_in_flight(client: &Client, name: &str) {
    wait::until_true(
        "a batch transaction sleeping in the trigger",
        WAIT,
        || async move {
            client
                .query_one(
                    "SELECT count(*) FROM pg_stat_activity
                     WHERE datname = $1 AND wait_event = 'PgSleep'",
                    &[&name],
                )
                .await
                .expect("reading pg_stat_activity")
                .get::<_, i64>(0)
                > 0
        },
    )
    .await;
}

/// One `delivery_events` / `deliveries` row in comparable form: money as the
/// exact text PostgreSQL holds, dates as instants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Typed {
    pub(super) kind: String,
    pub(super) drop_id: String,
    pub(super) phone_number: Option<String>,
    pub(super) attempt_date: DateTime<Utc>,
    pub(super) status: String,
    pub(super) reason: Option<String>,
    pub(super) dnc: Option<bool>,
    pub(super) spam: Option<bool>,
    pub(super) product_cost: Option<String>,
    pub(super) compliance_fee: Option<String>,
    pub(super) tts_fee: Option<String>,
    pub(super) network_name: Option<String>,
    pub(super) network_type: Option<String>,
    pub(super) foreign_id: Option<String>,
    pub(super) message_id: Uuid,
}

pub(super) const TYPED_COLUMNS: &str = "kind, drop_id, phone_number, attempt_date, status, reason, dnc, \
     spam, product_cost::text, compliance_fee::text, tts_fee::text, network_name, network_type, \
     foreign_id, message_id";

impl Typed {
    pub(super) fn from_row(row: &tokio_postgres::Row) -> Self {
        Self {
            kind: row.get(0),
            drop_id: row.get(1),
            phone_number: row.get(2),
            attempt_date: row.get(3),
            status: row.get(4),
            reason: row.get(5),
            dnc: row.get(6),
            spam: row.get(7),
            product_cost: row.get(8),
            compliance_fee: row.get(9),
            tts_fee: row.get(10),
            network_name: row.get(11),
            network_type: row.get(12),
            foreign_id: row.get(13),
            message_id: row.get(14),
        }
    }

    /// What a body in the provider's shape (both samples,
    /// [`fixtures::delivery_status`]) must become, field by field.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn expected(
        sent: &Sent,
        drop_id: &str,
        attempt_date: &str,
        status: &str,
        reason: &str,
        spam: bool,
        product_cost: &str,
        foreign_id: &str,
    ) -> Self {
        Self {
            kind: sent
                .routing_key
                .trim_start_matches("dropcowboy.")
                .to_owned(),
            drop_id: drop_id.to_owned(),
            phone_number: Some("+15552224444".into()),
            attempt_date: instant(attempt_date),
            status: status.to_owned(),
            reason: Some(reason.to_owned()),
            dnc: Some(false),
            spam: Some(spam),
            product_cost: Some(product_cost.to_owned()),
            compliance_fee: Some("0.0029".into()),
            tts_fee: Some("0".into()),
            network_name: Some("Verizon Wireless:6006 - SVR/2".into()),
            network_type: Some("wireless".into()),
            foreign_id: Some(foreign_id.to_owned()),
            message_id: sent.id,
        }
    }
}

pub(super) fn instant(rfc3339: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(rfc3339)
        .expect("a test date")
        .with_timezone(&Utc)
}

/// The `deliveries` row of `drop_id`, with its `event_id` and `updated_at`.
pub(super) async fn delivery(client: &Client, drop_id: &str) -> (Typed, i64, DateTime<Utc>) {
    let row = client
        .query_one(
            &format!(
                "SELECT {TYPED_COLUMNS}, event_id, updated_at FROM deliveries WHERE drop_id = $1"
            ),
            &[&drop_id],
        )
        .await
        .unwrap_or_else(|err| panic!("the deliveries row of {drop_id}: {err}"));
    (Typed::from_row(&row), row.get(15), row.get(16))
}

/// The `delivery_events` id of a message.
pub(super) async fn event_id(client: &Client, message_id: Uuid) -> i64 {
    client
        .query_one(
            "SELECT id FROM delivery_events WHERE message_id = $1",
            &[&message_id],
        )
        .await
        .expect("the event row")
        .get(0)
}

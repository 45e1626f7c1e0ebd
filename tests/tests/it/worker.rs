//! corral-worker against real RabbitMQ and PostgreSQL: typing, exactness,
//! exactly-once storage, ordering, quarantine, database and broker outages,
//! graceful shutdown.
//!
//! Messages are published straight to the test's exchange with the
//! properties ingress gives them ([`envelope::properties`]), so each test
//! controls exactly what the worker receives and in which batch. Faults are
//! made with per-test means only (a [`TcpProxy`] in front of RabbitMQ or
//! PostgreSQL, a trigger or `ALLOW_CONNECTIONS` on the test's own database,
//! `pg_terminate_backend` of the worker's own backends), never by touching the
//! shared services.

use std::time::Duration;

use chrono::{DateTime, Utc};
use corral_shared::{envelope, telemetry};
use corral_tests::{
    apps::{Metrics, RunningWorker, worker_config},
    broker::TestBroker,
    database::{self, TestDatabase},
    fixtures::{self, FAILURE_REASONS},
    proxy::TcpProxy,
    tls::{TestCa, TlsFront},
    wait,
};
use corral_worker::config::WorkerConfig;
use tokio_postgres::Client;
use uuid::Uuid;

/// Deadline of every wait on the worker.
const WAIT: Duration = Duration::from_secs(20);

const STORED: &str = r#"corral_worker_messages_total{outcome="stored"}"#;
const DUPLICATE: &str = r#"corral_worker_messages_total{outcome="duplicate"}"#;
const QUARANTINED: &str = r#"corral_worker_messages_total{outcome="quarantined"}"#;
const DB_TRANSIENT: &str = r#"corral_worker_db_errors_total{kind="transient"}"#;
const DB_DATA: &str = r#"corral_worker_db_errors_total{kind="data"}"#;
const ACK_FAILURES: &str = "corral_worker_ack_failures_total";
const CONNECTED: &str = r#"corral_broker_connect_attempts_total{outcome="success"}"#;

const SMS: &str = "dropcowboy.sms";
const RVM: &str = "dropcowboy.rvm";

/// Worker settings that keep every wait in these tests short.
fn config(database_url: &str, prefix: &str) -> WorkerConfig {
    let mut config = worker_config(database_url, prefix);
    config.batch_linger_ms = 50;
    config.db_timeout_ms = 2_000;
    config.db_retry_max_ms = 300;
    config.shutdown_timeout_ms = 10_000;
    config.amqp.reconnect_max_ms = 300;
    config.amqp.connect_timeout_ms = 2_000;
    config
}

/// A config whose batches close only at exactly `size` messages (the linger
/// is far longer than any test), so a test decides what shares a batch.
fn batches_of(size: u32, database_url: &str, prefix: &str) -> WorkerConfig {
    let mut config = config(database_url, prefix);
    config.batch_max = size;
    config.batch_linger_ms = 60_000;
    config
}

/// What a test published.
#[derive(Debug, Clone)]
struct Sent {
    id: Uuid,
    received_at: DateTime<Utc>,
    routing_key: String,
    body: Vec<u8>,
}

/// Now, at the microsecond precision of the `x-received-at` header and of
/// `timestamptz`, so it compares equal after the round trip.
fn now_micros() -> DateTime<Utc> {
    DateTime::from_timestamp_micros(Utc::now().timestamp_micros()).expect("now is in range")
}

/// Publishes `body` as ingress would (message id, `x-received-at`, persistent).
async fn send(broker: &TestBroker, routing_key: &str, body: impl AsRef<[u8]>) -> Sent {
    let id = Uuid::now_v7();
    let received_at = now_micros();
    let body = body.as_ref().to_vec();
    broker
        .publish(routing_key, &body, envelope::properties(id, received_at))
        .await;
    Sent {
        id,
        received_at,
        routing_key: routing_key.to_owned(),
        body,
    }
}

/// A valid webhook with a fresh drop id.
fn valid(reason: &str) -> (String, String) {
    let drop_id = Uuid::now_v7().simple().to_string()[8..].to_owned();
    let body = fixtures::delivery_status(&drop_id, "2026-11-27T05:24:31.000Z", reason, "order-1");
    (drop_id, body)
}

async fn count(client: &Client, sql: &str) -> i64 {
    client
        .query_one(sql, &[])
        .await
        .unwrap_or_else(|err| panic!("{sql}: {err}"))
        .get(0)
}

/// Waits until `sql` (a `SELECT count(*)`) answers `expected`.
async fn wait_count(client: &Client, sql: &str, expected: i64) {
    wait::until_true(&format!("`{sql}` = {expected}"), WAIT, || async move {
        count(client, sql).await == expected
    })
    .await;
}

const EVENTS: &str = "SELECT count(*) FROM delivery_events";
const QUARANTINE: &str = "SELECT count(*) FROM quarantined_webhooks";

/// Waits until `series` has grown by at least `delta` since `before`.
async fn wait_metric(worker: &RunningWorker, before: &Metrics, series: &str, delta: f64) {
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
async fn settled(worker: &RunningWorker, series: &str, total: f64) -> Metrics {
    wait::until(&format!("{series} to reach {total}"), WAIT, || async move {
        let metrics = worker.metrics().await;
        (metrics.get(series) >= total).then_some(metrics)
    })
    .await
}

/// The metrics of this test process's recorder (for after the worker, and
/// so its admin listener, has stopped).
fn local_metrics() -> Metrics {
    Metrics::parse(&telemetry::prometheus().render())
}

/// Asserts each sent message is exactly one `delivery_events` row (by
/// message id) and the table holds nothing else.
async fn assert_each_stored_once(client: &Client, sent: &[Sent]) {
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

/// A slow-down switch on the test database: while `test_slow_commit.seconds`
/// is above zero, every insert into `delivery_events` sleeps that long before
/// its transaction can commit, so a test can act while a batch is in flight.
async fn install_slow_commit(client: &Client, seconds: f64) {
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
async fn wait_batch_in_flight(client: &Client, name: &str) {
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

/// A proxy in front of the shared RabbitMQ.
async fn rabbitmq_proxy() -> TcpProxy {
    TcpProxy::start("127.0.0.1:5672".parse().expect("address")).await
}

/// A proxy in front of the shared PostgreSQL, and `db`'s URL through it.
async fn postgres_proxy(db: &TestDatabase) -> (TcpProxy, String) {
    let proxy = TcpProxy::start("127.0.0.1:5432".parse().expect("address")).await;
    let url = format!("postgres://postgres@{}/{}", proxy.addr(), db.name);
    (proxy, url)
}

/// One `delivery_events` / `deliveries` row in comparable form: money as the
/// exact text PostgreSQL holds, dates as instants.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Typed {
    kind: String,
    drop_id: String,
    phone_number: Option<String>,
    attempt_date: DateTime<Utc>,
    status: String,
    reason: Option<String>,
    dnc: Option<bool>,
    spam: Option<bool>,
    product_cost: Option<String>,
    compliance_fee: Option<String>,
    tts_fee: Option<String>,
    network_name: Option<String>,
    network_type: Option<String>,
    foreign_id: Option<String>,
    message_id: Uuid,
}

const TYPED_COLUMNS: &str = "kind, drop_id, phone_number, attempt_date, status, reason, dnc, \
     spam, product_cost::text, compliance_fee::text, tts_fee::text, network_name, network_type, \
     foreign_id, message_id";

impl Typed {
    fn from_row(row: &tokio_postgres::Row) -> Self {
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
    fn expected(
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

fn instant(rfc3339: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(rfc3339)
        .expect("a test date")
        .with_timezone(&Utc)
}

/// The `deliveries` row of `drop_id`, with its `event_id` and `updated_at`.
async fn delivery(client: &Client, drop_id: &str) -> (Typed, i64, DateTime<Utc>) {
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
async fn event_id(client: &Client, message_id: Uuid) -> i64 {
    client
        .query_one(
            "SELECT id FROM delivery_events WHERE message_id = $1",
            &[&message_id],
        )
        .await
        .expect("the event row")
        .get(0)
}

#[tokio::test]
async fn samples_and_every_failure_reason_become_exact_rows() {
    let broker = TestBroker::new().await;
    let db = TestDatabase::new().await;
    let worker = RunningWorker::start(config(&db.url, broker.prefix())).await;
    let before = worker.metrics().await;

    let success = send(&broker, SMS, fixtures::SMS_SUCCESS).await;
    let failure = send(&broker, SMS, fixtures::SMS_FAILURE).await;
    let mut cases = vec![
        Typed::expected(
            &success,
            "5c8eb7940a057a4ab0823e1a",
            "2019-03-17T21:10:26Z",
            "success",
            "",
            false,
            "0.099",
            "order-1842-attempt-1",
        ),
        Typed::expected(
            &failure,
            "5c8ee427a8d9ef4758bfaca5",
            "2019-03-18T00:20:26Z",
            "failure",
            "Invalid message",
            false,
            "0",
            "order-1843-attempt-1",
        ),
    ];
    let mut sent = vec![success, failure];
    // One event per documented reason, alternating kinds, with dates in other
    // offsets and with fractions, which must land as the same instants.
    let dates = [
        ("2026-11-27T07:24:31.250+02:00", "2026-11-27T05:24:31.250Z"),
        ("2026-11-27T05:24:31.000Z", "2026-11-27T05:24:31Z"),
        ("2026-11-26T23:54:31.999-05:30", "2026-11-27T05:24:31.999Z"),
    ];
    for (i, reason) in FAILURE_REASONS.iter().enumerate() {
        let drop_id = format!("5c8eb7940a057a4ab08230{i:02}");
        let foreign_id = format!("order-{i}");
        let (sent_date, instant) = dates[i % dates.len()];
        let body = fixtures::delivery_status(&drop_id, sent_date, reason, &foreign_id);
        let routing_key = if i.is_multiple_of(2) { SMS } else { RVM };
        let message = send(&broker, routing_key, &body).await;
        cases.push(Typed::expected(
            &message,
            &drop_id,
            instant,
            "failure",
            reason,
            *reason == "Spam detected",
            "0",
            &foreign_id,
        ));
        sent.push(message);
    }

    let client = db.client().await;
    wait_count(&client, EVENTS, cases.len() as i64).await;

    for (message, expected) in sent.iter().zip(&cases) {
        let drop_id = &expected.drop_id;
        let body = std::str::from_utf8(&message.body).expect("test bodies are UTF-8");
        let row = client
            .query_one(
                &format!(
                    "SELECT {TYPED_COLUMNS}, received_at, payload = $2::text::jsonb,
                            (payload -> 'compliance_fee')::text, stored_at IS NOT NULL, id
                     FROM delivery_events WHERE drop_id = $1"
                ),
                &[drop_id, &body],
            )
            .await
            .unwrap_or_else(|err| panic!("the event row of {drop_id}: {err}"));
        assert_eq!(
            &Typed::from_row(&row),
            expected,
            "delivery_events {drop_id}"
        );
        let received_at: DateTime<Utc> = row.get(15);
        assert_eq!(received_at, message.received_at, "received_at of {drop_id}");
        assert!(
            row.get::<_, bool>(16),
            "payload of {drop_id} differs from the body"
        );
        assert_eq!(
            row.get::<_, String>(17),
            "0.0029",
            "jsonb keeps money exact"
        );
        assert!(row.get::<_, bool>(18), "stored_at of {drop_id}");
        let id: i64 = row.get(19);

        let (state, event_id, _) = delivery(&client, drop_id).await;
        assert_eq!(&state, expected, "deliveries {drop_id}");
        assert_eq!(event_id, id, "deliveries.event_id of {drop_id}");
    }
    assert_eq!(
        count(&client, "SELECT count(*) FROM deliveries").await,
        cases.len() as i64
    );
    assert_eq!(count(&client, QUARANTINE).await, 0);
    let after = settled(&worker, STORED, before.get(STORED) + cases.len() as f64).await;
    assert_eq!(after.get(STORED) - before.get(STORED), cases.len() as f64);
    assert_eq!(after.get(DUPLICATE) - before.get(DUPLICATE), 0.0);
    worker.stop().await.expect("the worker stops cleanly");
}

#[tokio::test]
async fn the_same_body_twice_is_one_row_and_counted_as_duplicate() {
    let broker = TestBroker::new().await;
    let db = TestDatabase::new().await;
    let client;
    {
        // Twice in one batch: published before the worker starts, batches of 2.
        let (_, twin) = valid("");
        let first = send(&broker, SMS, &twin).await;
        let _second = send(&broker, SMS, &twin).await;
        let worker = RunningWorker::start(batches_of(2, &db.url, broker.prefix())).await;
        client = db.client().await;
        wait::until_true("the twin batch committed", WAIT, || async {
            worker.metrics().await.get(DUPLICATE) >= 1.0
        })
        .await;
        let metrics = worker.metrics().await;
        assert_eq!(metrics.get(STORED), 1.0);
        assert_eq!(metrics.get(DUPLICATE), 1.0);
        assert_each_stored_once(&client, &[first]).await;
        worker.stop().await.expect("the worker stops cleanly");
    }

    // In separate batches: a provider retry after the first was stored, then
    // the same webhook again with other formatting (keys reordered, spaces).
    let worker = RunningWorker::start(config(&db.url, broker.prefix())).await;
    let before = worker.metrics().await;
    let (drop_id, body) = valid("Opted out");
    let first = send(&broker, RVM, &body).await;
    wait_count(&client, EVENTS, 2).await;
    send(&broker, RVM, &body).await;
    wait_metric(&worker, &before, DUPLICATE, 1.0).await;
    let value: serde_json::Value = serde_json::from_str(&body).expect("valid JSON");
    let mut fields: Vec<(String, serde_json::Value)> = value
        .as_object()
        .expect("an object")
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    fields.reverse();
    let reformatted = format!(
        "{{\n  {}\n}}",
        fields
            .iter()
            .map(|(k, v)| format!("{}: {}", serde_json::json!(k), v))
            .collect::<Vec<_>>()
            .join(",\n  ")
    );
    // The money text is written as in the original, not through f64.
    assert!(reformatted.contains("0.0029"), "{reformatted}");
    send(&broker, RVM, &reformatted).await;
    wait_metric(&worker, &before, DUPLICATE, 2.0).await;

    let after = worker.metrics().await;
    assert_eq!(after.get(STORED) - before.get(STORED), 1.0);
    assert_eq!(after.get(DUPLICATE) - before.get(DUPLICATE), 2.0);
    let stored_id: Uuid = client
        .query_one(
            "SELECT message_id FROM delivery_events WHERE drop_id = $1",
            &[&drop_id],
        )
        .await
        .expect("exactly one row for the drop id")
        .get(0);
    assert_eq!(stored_id, first.id, "the first delivery's row is kept");
    assert_eq!(count(&client, EVENTS).await, 2);
    assert_eq!(broker.ready_count(&broker.topology.queue()).await, 0);
    worker.stop().await.expect("the worker stops cleanly");
}

/// A batch commits, then its ack cannot reach RabbitMQ (the link is cut while
/// the transaction is still in progress); RabbitMQ redelivers the batch, and
/// the redelivery adds no row and counts as duplicates.
#[tokio::test]
async fn a_batch_committed_but_never_acked_is_redelivered_as_duplicates() {
    const N: u32 = 6;
    let broker = TestBroker::new().await;
    let db = TestDatabase::migrated().await;
    let client = db.client().await;
    install_slow_commit(&client, 2.0).await;
    let amqp = rabbitmq_proxy().await;

    let mut sent = Vec::new();
    for i in 0..N {
        let (_, body) = valid(FAILURE_REASONS[i as usize]);
        sent.push(send(&broker, SMS, &body).await);
    }
    let mut config = batches_of(N, &db.url, broker.prefix());
    config.amqp.url = amqp.amqp_url();
    // The statement timeout must outlast the trigger's sleep.
    config.db_timeout_ms = 5_000;
    let worker = RunningWorker::start_unready(config).await;

    wait_batch_in_flight(&client, &db.name).await;
    amqp.cut();
    client
        .execute("UPDATE test_slow_commit SET seconds = 0", &[])
        .await
        .expect("disarming the trigger");
    // The commit goes through (PostgreSQL is not behind the proxy); the ack fails.
    wait_count(&client, EVENTS, i64::from(N)).await;
    wait::until_true("the ack failure to be counted", WAIT, || async {
        worker.metrics().await.get(ACK_FAILURES) >= 1.0
    })
    .await;
    worker.wait_ready(false).await;

    amqp.restore();
    wait::until_true(
        "the redelivered batch counted as duplicates",
        WAIT,
        || async { worker.metrics().await.get(DUPLICATE) >= f64::from(N) },
    )
    .await;
    worker.wait_ready(true).await;
    let metrics = worker.metrics().await;
    assert_eq!(metrics.get(STORED), f64::from(N));
    assert_eq!(metrics.get(DUPLICATE), f64::from(N));
    assert_eq!(metrics.get(ACK_FAILURES), 1.0);
    assert_each_stored_once(&client, &sent).await;
    assert_eq!(broker.ready_count(&broker.topology.queue()).await, 0);
    worker.stop().await.expect("the worker stops cleanly");
}

#[tokio::test]
async fn deliveries_keep_the_newest_state_whatever_the_arrival_order() {
    let broker = TestBroker::new().await;
    let db = TestDatabase::new().await;
    let newer = "2026-11-27T10:00:00.500Z";
    let older = "2026-11-27T10:00:00.499Z";
    let body = |drop_id: &str, date: &str, reason: &str| {
        fixtures::delivery_status(drop_id, date, reason, "order-9")
    };

    // Same batch, newest first: published before the worker starts, batches of 2.
    let same = "aaaaaaaaaaaaaaaaaaaaaa01";
    let same_new = send(&broker, SMS, body(same, newer, "")).await;
    send(&broker, SMS, body(same, older, "Too Many")).await;
    let mut config = config(&db.url, broker.prefix());
    config.batch_max = 2;
    config.batch_linger_ms = 300;
    let worker = RunningWorker::start(config).await;
    let client = db.client().await;
    wait_count(&client, EVENTS, 2).await;
    let (state, state_event, _) = delivery(&client, same).await;
    assert_eq!(
        state,
        Typed::expected(
            &same_new, same, newer, "success", "", false, "0.099", "order-9"
        )
    );
    assert_eq!(state_event, event_id(&client, same_new.id).await);

    // Separate batches, newest first: the older must not overwrite it.
    let apart = "aaaaaaaaaaaaaaaaaaaaaa02";
    let apart_new = send(&broker, SMS, body(apart, newer, "")).await;
    wait_count(&client, EVENTS, 3).await;
    let (_, _, updated_at) = delivery(&client, apart).await;
    let apart_old = send(&broker, SMS, body(apart, older, "No Funds")).await;
    wait_count(&client, EVENTS, 4).await;
    let (state, state_event, updated_again) = delivery(&client, apart).await;
    assert_eq!(
        state,
        Typed::expected(
            &apart_new, apart, newer, "success", "", false, "0.099", "order-9"
        )
    );
    assert_eq!(state_event, event_id(&client, apart_new.id).await);
    assert_eq!(
        updated_again, updated_at,
        "the older event touched the state"
    );
    // The older event itself is kept as history.
    event_id(&client, apart_old.id).await;

    // And in order (oldest first, separate batches) the newer one does replace it.
    let forward = "aaaaaaaaaaaaaaaaaaaaaa03";
    send(&broker, SMS, body(forward, older, "Internal DNC")).await;
    wait_count(&client, EVENTS, 5).await;
    let forward_new = send(&broker, SMS, body(forward, newer, "")).await;
    wait_count(&client, EVENTS, 6).await;
    let (state, state_event, _) = delivery(&client, forward).await;
    assert_eq!(
        state,
        Typed::expected(
            &forward_new,
            forward,
            newer,
            "success",
            "",
            false,
            "0.099",
            "order-9"
        )
    );
    assert_eq!(state_event, event_id(&client, forward_new.id).await);
    assert_eq!(count(&client, "SELECT count(*) FROM deliveries").await, 3);
    worker.stop().await.expect("the worker stops cleanly");
}

/// A webhook the worker cannot type, and the exact error it must be kept with.
struct Untypeable {
    routing_key: &'static str,
    body: Vec<u8>,
    /// The error text, or its beginning when it ends with `…`.
    error: &'static str,
}

fn untypeable() -> Vec<Untypeable> {
    let case = |routing_key, body: &[u8], error| Untypeable {
        routing_key,
        body: body.to_vec(),
        error,
    };
    vec![
        case(
            SMS,
            br#"{"phone_number":"+15552224444","attempt_date":"2019-03-17T21:10:26.000Z","status":"success"}"#,
            "`drop_id` is missing",
        ),
        case(
            SMS,
            br#"{"drop_id":"5c8eb7940a057a4ab0823e1b","attempt_date":"2019-03-17T21:10:26.000Z","status":1}"#,
            "`status` must be a string, found a number",
        ),
        case(
            RVM,
            br#"{"drop_id":"5c8eb7940a057a4ab0823e1c","attempt_date":"17/03/2019 21:10","status":"success"}"#,
            r#"`attempt_date` is not an RFC 3339 date-time in years 1-9999: "17/03/2019 21:10""#,
        ),
        case(
            SMS,
            br#"{"drop_id":"5c8eb7940a057a4ab0823e1d","attempt_date":"2019-03-17T21:10:26.000Z","status":"success","product_cost":"ten cents"}"#,
            r#"`product_cost` is not an exact decimal amount: "ten cents""#,
        ),
        case(
            SMS,
            br#"{"drop_id":"5c8eb7940a057a4ab0823e1e","attempt_date":"2019-03-17T21:10:26.000Z","status":"success","compliance_fee":true}"#,
            "`compliance_fee` must be a number, found a boolean",
        ),
        case(
            SMS,
            br#"[{"drop_id":"5c8eb7940a057a4ab0823e1f"}]"#,
            "body is JSON but not an object",
        ),
        case(
            SMS,
            br#"{"drop_id":"5c8eb7940a057a4ab0823e20","status":"#,
            "body is not valid JSON: EOF while parsing a value…",
        ),
        case(
            "dropcowboy.fax",
            fixtures::SMS_SUCCESS.as_bytes(),
            r#"unknown routing key "dropcowboy.fax""#,
        ),
        case(
            SMS,
            br#"{"drop_id":"5c8eb7940a057a4ab0823e21","attempt_date":"2019-03-17T21:10:26.000Z","status":"success","foreign_id":"order\u0000-1"}"#,
            "a string contains U+0000, which PostgreSQL cannot store",
        ),
        case(
            SMS,
            b"{\"drop_id\":\"5c8eb7940a057a4ab0823e22\",\"foreign_id\":\"\xff\xfe\"}",
            "body is not UTF-8: invalid utf-8 sequence…",
        ),
    ]
}

/// Asserts `sent` is in `quarantined_webhooks` byte for byte, with its envelope
/// and an error matching `error` (exact, or a prefix when it ends with `…`).
async fn assert_quarantined(client: &Client, sent: &Sent, error: &str) {
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

#[tokio::test]
async fn untypeable_payloads_are_quarantined_byte_for_byte_and_their_batch_stored() {
    let broker = TestBroker::new().await;
    let db = TestDatabase::new().await;
    let cases = untypeable();
    // Valid webhooks first, between and last; one batch holds them all.
    let mut good = vec![send(&broker, SMS, valid("").1).await];
    let mut bad = Vec::new();
    for (i, case) in cases.iter().enumerate() {
        bad.push(send(&broker, case.routing_key, &case.body).await);
        if i == cases.len() / 2 {
            good.push(send(&broker, RVM, valid("Spam detected").1).await);
        }
    }
    good.push(send(&broker, SMS, valid("Message too long").1).await);
    let batch = (good.len() + bad.len()) as u32;
    let worker = RunningWorker::start(batches_of(batch, &db.url, broker.prefix())).await;
    let client = db.client().await;
    wait_count(&client, QUARANTINE, cases.len() as i64).await;
    wait_count(&client, EVENTS, good.len() as i64).await;

    for (sent, case) in bad.iter().zip(&cases) {
        assert_quarantined(&client, sent, case.error).await;
    }
    assert_each_stored_once(&client, &good).await;
    let metrics = settled(&worker, QUARANTINED, cases.len() as f64).await;
    assert_eq!(metrics.get(QUARANTINED), cases.len() as f64);
    assert_eq!(metrics.get(STORED), good.len() as f64);
    assert_eq!(
        metrics.get("corral_worker_batch_size_count"),
        1.0,
        "everything was one batch"
    );

    // The same untypeable body again is kept once and counted as a duplicate.
    worker.stop().await.expect("the worker stops cleanly");
    let worker = RunningWorker::start(config(&db.url, broker.prefix())).await;
    let before = worker.metrics().await;
    send(&broker, cases[0].routing_key, &cases[0].body).await;
    wait_metric(&worker, &before, DUPLICATE, 1.0).await;
    assert_eq!(count(&client, QUARANTINE).await, cases.len() as i64);
    worker.stop().await.expect("the worker stops cleanly");
}

/// A payload that types fine but that PostgreSQL refuses (an extra field
/// whose JSON number overflows `numeric`, so `payload::jsonb` fails with
/// 22003): the batch is split until that one is alone, it is quarantined with
/// PostgreSQL's own error, and every other message of the batch is stored.
#[tokio::test]
async fn rows_postgres_refuses_are_split_out_and_quarantined() {
    let broker = TestBroker::new().await;
    let db = TestDatabase::new().await;
    let refused = |drop_id: &str| {
        let body = fixtures::delivery_status(drop_id, "2026-11-27T05:24:31.000Z", "", "order-7");
        format!(
            r#"{}, "carrier_score": 1e200000}}"#,
            body.trim_end_matches('}')
        )
    };
    let mut good = Vec::new();
    let mut bad = Vec::new();
    for i in 0..8 {
        if i == 2 || i == 6 {
            bad.push(
                send(
                    &broker,
                    SMS,
                    refused(&format!("bbbbbbbbbbbbbbbbbbbbbb0{i}")),
                )
                .await,
            );
        } else {
            good.push(send(&broker, SMS, valid("Known Litigator").1).await);
        }
    }
    let worker = RunningWorker::start(batches_of(8, &db.url, broker.prefix())).await;
    let client = db.client().await;
    wait_count(&client, QUARANTINE, 2).await;
    wait_count(&client, EVENTS, 6).await;
    for sent in &bad {
        assert_quarantined(
            &client,
            sent,
            "PostgreSQL refused the typed row: value overflows numeric format",
        )
        .await;
    }
    assert_each_stored_once(&client, &good).await;
    assert_eq!(count(&client, "SELECT count(*) FROM deliveries").await, 6);
    let metrics = settled(&worker, QUARANTINED, 2.0).await;
    assert_eq!(metrics.get(STORED), 6.0);
    assert_eq!(metrics.get(QUARANTINED), 2.0);
    assert!(metrics.get(DB_DATA) >= 1.0, "the split is counted");
    assert_eq!(
        metrics.get(DB_TRANSIENT),
        0.0,
        "a data error is not retried"
    );
    worker.stop().await.expect("the worker stops cleanly");
}

/// PostgreSQL unreachable (the worker's path to it cut by a proxy) during a
/// stream: `/readyz` goes 503, the batch in hand stays unacknowledged (the
/// queue keeps everything past the prefetch), and once the path is back
/// every message is a row, none twice.
#[tokio::test]
async fn a_database_outage_loses_nothing_and_acks_nothing_early() {
    const PREFETCH: u16 = 5;
    let broker = TestBroker::new().await;
    let db = TestDatabase::new().await;
    let (pg, url) = postgres_proxy(&db).await;
    let mut config = config(&url, broker.prefix());
    config.prefetch = PREFETCH;
    config.batch_max = u32::from(PREFETCH);
    config.db_timeout_ms = 1_000;
    let worker = RunningWorker::start(config).await;
    let client = db.client().await;
    let queue = broker.topology.queue();
    let mut sent = Vec::new();

    for _ in 0..5 {
        sent.push(send(&broker, SMS, valid("").1).await);
    }
    wait_count(&client, EVENTS, 5).await;

    pg.cut();
    for i in 0..15 {
        sent.push(send(&broker, RVM, valid(FAILURE_REASONS[i % 12]).1).await);
    }
    worker.wait_ready(false).await;
    let before = worker.metrics().await;
    wait_metric(&worker, &before, DB_TRANSIENT, 2.0).await;
    // The worker holds one prefetch of messages unacknowledged and retries;
    // an early ack would have brought it the next ones.
    assert_eq!(broker.ready_count(&queue).await, 15 - u32::from(PREFETCH));
    let retried = worker.metrics().await;
    wait_metric(&worker, &retried, DB_TRANSIENT, 2.0).await;
    assert_eq!(broker.ready_count(&queue).await, 15 - u32::from(PREFETCH));
    assert_eq!(count(&client, EVENTS).await, 5);

    pg.restore();
    for _ in 0..5 {
        sent.push(send(&broker, SMS, valid("Too Many").1).await);
    }
    worker.wait_ready(true).await;
    wait_count(&client, EVENTS, sent.len() as i64).await;
    assert_each_stored_once(&client, &sent).await;
    let metrics = settled(&worker, STORED, sent.len() as f64).await;
    assert_eq!(metrics.get(STORED), sent.len() as f64);
    assert_eq!(metrics.get(DUPLICATE), 0.0);
    assert_eq!(broker.ready_count(&queue).await, 0);
    worker.stop().await.expect("the worker stops cleanly");
}

/// The worker's backends terminated mid-transaction and new connections to
/// its database refused (`ALLOW_CONNECTIONS false` holds even for a
/// superuser): the batch is retried, nothing is lost or doubled.
#[tokio::test]
async fn terminated_backends_and_refused_connections_lose_nothing() {
    const PREFETCH: u16 = 5;
    let broker = TestBroker::new().await;
    let db = TestDatabase::migrated().await;
    let client = db.client().await;
    let admin = database::connect(database::SERVER_URL).await;
    install_slow_commit(&client, 1.0).await;
    let mut config = config(&db.url, broker.prefix());
    config.prefetch = PREFETCH;
    config.batch_max = u32::from(PREFETCH);
    let worker = RunningWorker::start(config).await;
    let queue = broker.topology.queue();
    let mut sent = Vec::new();

    for _ in 0..5 {
        sent.push(send(&broker, SMS, valid("").1).await);
    }
    wait_batch_in_flight(&client, &db.name).await;
    admin
        .batch_execute(&format!(
            "ALTER DATABASE \"{}\" WITH ALLOW_CONNECTIONS false",
            db.name
        ))
        .await
        .expect("refusing connections");
    let terminated: i64 = admin
        .query_one(
            "SELECT count(*) FROM (
                 SELECT pg_terminate_backend(pid) FROM pg_stat_activity
                 WHERE datname = $1 AND application_name = 'corral-worker') AS t",
            &[&db.name],
        )
        .await
        .expect("terminating the worker's backends")
        .get(0);
    assert!(terminated >= 1, "the worker had no backend to terminate");
    client
        .execute("UPDATE test_slow_commit SET seconds = 0", &[])
        .await
        .expect("disarming the trigger");

    worker.wait_ready(false).await;
    for _ in 0..10 {
        sent.push(send(&broker, RVM, valid("Opted out").1).await);
    }
    let before = worker.metrics().await;
    wait_metric(&worker, &before, DB_TRANSIENT, 2.0).await;
    assert_eq!(
        count(&client, EVENTS).await,
        0,
        "the killed batch rolled back"
    );
    assert_eq!(broker.ready_count(&queue).await, 10);

    admin
        .batch_execute(&format!(
            "ALTER DATABASE \"{}\" WITH ALLOW_CONNECTIONS true",
            db.name
        ))
        .await
        .expect("allowing connections again");
    worker.wait_ready(true).await;
    wait_count(&client, EVENTS, sent.len() as i64).await;
    assert_each_stored_once(&client, &sent).await;
    let metrics = settled(&worker, STORED, sent.len() as f64).await;
    assert_eq!(metrics.get(STORED), sent.len() as f64);
    assert_eq!(metrics.get(DUPLICATE), 0.0);
    assert_eq!(broker.ready_count(&queue).await, 0);
    worker.stop().await.expect("the worker stops cleanly");
}

#[tokio::test]
async fn a_cut_broker_link_is_reconnected_and_consuming_resumes() {
    let broker = TestBroker::new().await;
    let db = TestDatabase::new().await;
    let amqp = rabbitmq_proxy().await;
    let mut config = config(&db.url, broker.prefix());
    config.amqp.url = amqp.amqp_url();
    let worker = RunningWorker::start(config).await;
    let before = worker.metrics().await;
    let client = db.client().await;
    let queue = broker.topology.queue();
    let mut sent = Vec::new();

    for _ in 0..5 {
        sent.push(send(&broker, SMS, valid("").1).await);
    }
    wait_count(&client, EVENTS, 5).await;
    settled(&worker, STORED, before.get(STORED) + 5.0).await;

    // Cut: the worker notices, says so, and consumes nothing meanwhile.
    amqp.cut();
    worker.wait_ready(false).await;
    for _ in 0..5 {
        sent.push(send(&broker, SMS, valid("No Funds").1).await);
    }
    // At least the new five wait; an ack the cut caught in flight returns
    // its (committed) batch too, to be counted as duplicates later.
    let ready = broker.ready_count(&queue).await;
    assert!((5..=10).contains(&ready), "{ready} messages ready");
    amqp.restore();
    worker.wait_ready(true).await;
    wait_count(&client, EVENTS, 10).await;

    // Connections dropped but new ones accepted: a second reconnect.
    amqp.drop_connections();
    for _ in 0..5 {
        sent.push(send(&broker, RVM, valid("Spam detected").1).await);
    }
    wait_count(&client, EVENTS, 15).await;
    worker.wait_ready(true).await;

    assert!(!worker.task.is_finished(), "the worker was not restarted");
    assert_each_stored_once(&client, &sent).await;
    let after = settled(&worker, STORED, before.get(STORED) + 15.0).await;
    assert!(after.get(CONNECTED) - before.get(CONNECTED) >= 2.0);
    assert_eq!(after.get(STORED) - before.get(STORED), 15.0);
    assert_eq!(broker.ready_count(&queue).await, 0);
    worker.stop().await.expect("the worker stops cleanly");
}

/// A path to RabbitMQ that silently stops carrying packets (no FIN, no RST):
/// the AMQP heartbeat notices, the worker reconnects by itself.
#[tokio::test]
async fn a_silent_broker_link_is_noticed_by_heartbeat() {
    let broker = TestBroker::new().await;
    let db = TestDatabase::new().await;
    let amqp = rabbitmq_proxy().await;
    let mut config = config(&db.url, broker.prefix());
    config.amqp.url = amqp.amqp_url();
    config.amqp.heartbeat_secs = 1;
    let worker = RunningWorker::start(config).await;
    let client = db.client().await;

    amqp.blackhole();
    worker.wait_ready(false).await;
    // New connections pass again; the silent one stays dead for the worker.
    amqp.drop_connections();
    worker.wait_ready(true).await;
    let sent = vec![send(&broker, SMS, valid("").1).await];
    wait_count(&client, EVENTS, 1).await;
    assert_each_stored_once(&client, &sent).await;
    worker.stop().await.expect("the worker stops cleanly");
}

/// Cancelling the worker with messages in hand (received, not yet written)
/// commits and acknowledges them before it exits Ok.
#[tokio::test]
async fn shutdown_commits_and_acks_the_messages_in_hand() {
    let broker = TestBroker::new().await;
    let db = TestDatabase::new().await;
    let queue = broker.topology.queue();
    // A batch that would close only after a minute: only shutdown closes it.
    let worker = RunningWorker::start(batches_of(100, &db.url, broker.prefix())).await;
    let client = db.client().await;
    let mut sent = Vec::new();
    for _ in 0..20 {
        sent.push(send(&broker, SMS, valid("").1).await);
    }
    wait::until_true("the worker to hold every message", WAIT, || async {
        broker.ready_count(&queue).await == 0
    })
    .await;
    assert_eq!(
        count(&client, EVENTS).await,
        0,
        "nothing written before shutdown"
    );

    tokio::time::timeout(WAIT, worker.stop())
        .await
        .expect("the worker finished its shutdown within the deadline")
        .expect("the worker exits Ok");
    assert_each_stored_once(&client, &sent).await;
    let metrics = local_metrics();
    assert_eq!(metrics.get(STORED), 20.0);
    assert_eq!(broker.ready_count(&queue).await, 0);

    // Nothing was left unacknowledged: a new worker finds only what comes next
    // (anything returned to the queue would come before it, as a duplicate).
    let worker = RunningWorker::start(config(&db.url, broker.prefix())).await;
    sent.push(send(&broker, SMS, valid("").1).await);
    wait_count(&client, EVENTS, 21).await;
    assert_each_stored_once(&client, &sent).await;
    let metrics = settled(&worker, STORED, 21.0).await;
    assert_eq!(metrics.get(DUPLICATE), 0.0);
    assert_eq!(metrics.get(STORED), 21.0);
    worker.stop().await.expect("the worker stops cleanly");
}

/// Shutdown while the database is down: the worker gives up on the batch at
/// its shutdown deadline without acknowledging it, exits Ok, and RabbitMQ
/// hands every message to the next worker.
#[tokio::test]
async fn shutdown_with_the_database_down_leaves_the_messages_to_rabbitmq() {
    let broker = TestBroker::new().await;
    let db = TestDatabase::new().await;
    let queue = broker.topology.queue();
    let (pg, url) = postgres_proxy(&db).await;
    let mut settings = batches_of(100, &url, broker.prefix());
    settings.shutdown_timeout_ms = 1_500;
    settings.db_timeout_ms = 500;
    let worker = RunningWorker::start(settings).await;
    let mut sent = Vec::new();
    for _ in 0..10 {
        sent.push(send(&broker, SMS, valid("").1).await);
    }
    wait::until_true("the worker to hold every message", WAIT, || async {
        broker.ready_count(&queue).await == 0
    })
    .await;
    pg.cut();
    tokio::time::timeout(WAIT, worker.stop())
        .await
        .expect("the worker gave up within its shutdown deadline")
        .expect("the worker exits Ok");
    wait::until_true("RabbitMQ to hold the messages again", WAIT, || async {
        broker.ready_count(&queue).await == 10
    })
    .await;
    assert!(local_metrics().get(DB_TRANSIENT) >= 1.0);
    let client = db.client().await;
    assert_eq!(count(&client, EVENTS).await, 0);

    let worker = RunningWorker::start(config(&db.url, broker.prefix())).await;
    wait_count(&client, EVENTS, 10).await;
    assert_each_stored_once(&client, &sent).await;
    worker.stop().await.expect("the worker stops cleanly");
}

/// A routing key with a NUL byte (AMQP allows it, PostgreSQL text does not)
/// is quarantined with the key escaped; before the fix its batch failed as
/// if the database were down and was retried forever, blocking the queue.
#[tokio::test]
async fn a_routing_key_postgres_cannot_store_does_not_block_the_queue() {
    let broker = TestBroker::new().await;
    let db = TestDatabase::new().await;
    let odd = send(&broker, "dropcowboy.sms\0x", fixtures::SMS_SUCCESS).await;
    let good = send(&broker, SMS, valid("").1).await;
    let worker = RunningWorker::start(batches_of(2, &db.url, broker.prefix())).await;
    let client = db.client().await;
    wait_count(&client, QUARANTINE, 1).await;
    assert_each_stored_once(&client, &[good]).await;
    let row = client
        .query_one(
            "SELECT body, error, routing_key FROM quarantined_webhooks WHERE message_id = $1",
            &[&odd.id],
        )
        .await
        .expect("the quarantined row");
    assert_eq!(row.get::<_, Vec<u8>>(0), odd.body);
    assert_eq!(
        row.get::<_, String>(1),
        r#"unknown routing key "dropcowboy.sms\0x""#
    );
    assert_eq!(
        row.get::<_, Option<String>>(2).as_deref(),
        Some(r"dropcowboy.sms\u0000x")
    );
    let metrics = settled(&worker, QUARANTINED, 1.0).await;
    assert_eq!(metrics.get(STORED), 1.0);
    assert_eq!(metrics.get(DB_TRANSIENT), 0.0);
    worker.stop().await.expect("the worker stops cleanly");
}

/// Shutdown requested while a batch is being retried against a database that
/// is down: the worker stops retrying at its shutdown deadline, exits Ok
/// without acknowledging, and RabbitMQ hands the batch to the next worker.
#[tokio::test]
async fn shutdown_during_database_retries_honours_the_shutdown_deadline() {
    let broker = TestBroker::new().await;
    let db = TestDatabase::new().await;
    let queue = broker.topology.queue();
    let (pg, url) = postgres_proxy(&db).await;
    let mut settings = config(&url, broker.prefix());
    settings.shutdown_timeout_ms = 1_000;
    settings.db_timeout_ms = 500;
    let worker = RunningWorker::start(settings).await;
    pg.cut();
    let before = worker.metrics().await;
    let mut sent = Vec::new();
    for _ in 0..10 {
        sent.push(send(&broker, SMS, valid("").1).await);
    }
    // The batch closed and is being retried.
    wait_metric(&worker, &before, DB_TRANSIENT, 2.0).await;

    tokio::time::timeout(WAIT, worker.stop())
        .await
        .expect("the worker gave up within its shutdown deadline")
        .expect("the worker exits Ok");
    wait::until_true("RabbitMQ to hold the messages again", WAIT, || async {
        broker.ready_count(&queue).await == 10
    })
    .await;

    pg.restore();
    let worker = RunningWorker::start(config(&url, broker.prefix())).await;
    let client = db.client().await;
    wait_count(&client, EVENTS, 10).await;
    assert_each_stored_once(&client, &sent).await;
    worker.stop().await.expect("the worker stops cleanly");
}

/// Two competing workers, every webhook delivered twice, the events of each
/// drop id in shuffled order: one row per webhook, each duplicate counted,
/// `deliveries` holds each drop id's newest state, and no batch failed
/// (the sorted inserts keep concurrent transactions from deadlocking).
#[tokio::test]
async fn competing_workers_store_each_webhook_once_and_the_newest_state() {
    use rand::{SeedableRng, rngs::StdRng, seq::SliceRandom};
    const DROPS: usize = 25;
    const EVENTS_PER_DROP: usize = 4;
    let broker = TestBroker::new().await;
    let db = TestDatabase::migrated().await;
    let mut settings = config(&db.url, broker.prefix());
    settings.batch_max = 16;
    settings.batch_linger_ms = 10;
    let first = RunningWorker::start(settings.clone()).await;
    let second = RunningWorker::start(settings).await;

    let seed = u64::from(Utc::now().timestamp_subsec_nanos());
    let mut bodies = Vec::new();
    for drop in 0..DROPS {
        let drop_id = format!("cccccccccccccccccccccc{drop:02}");
        for (event, reason) in FAILURE_REASONS[..EVENTS_PER_DROP].iter().enumerate() {
            let date = format!("2026-11-27T05:24:3{event}.000Z");
            bodies.push(fixtures::delivery_status(&drop_id, &date, reason, "o"));
        }
    }
    let mut deliveries: Vec<&String> = bodies.iter().chain(bodies.iter()).collect();
    deliveries.shuffle(&mut StdRng::seed_from_u64(seed));
    for body in deliveries {
        send(&broker, SMS, body).await;
    }

    let client = db.client().await;
    let total = (2 * DROPS * EVENTS_PER_DROP) as f64;
    wait::until_true(
        &format!("every delivery handled (seed {seed})"),
        WAIT,
        || async {
            let metrics = first.metrics().await;
            metrics.get(STORED) + metrics.get(DUPLICATE) >= total
        },
    )
    .await;
    // One recorder per test process: the two workers' counts add up.
    let metrics = first.metrics().await;
    assert_eq!(metrics.get(STORED), total / 2.0, "seed {seed}");
    assert_eq!(metrics.get(DUPLICATE), total / 2.0, "seed {seed}");
    assert_eq!(
        metrics.get(DB_TRANSIENT),
        0.0,
        "a batch failed (seed {seed})"
    );
    assert_eq!(
        count(&client, EVENTS).await,
        (DROPS * EVENTS_PER_DROP) as i64
    );
    let newest = format!("2026-11-27T05:24:3{}Z", EVENTS_PER_DROP - 1);
    let wrong: Vec<String> = client
        .query(
            "SELECT d.drop_id FROM deliveries d
             JOIN delivery_events e ON e.id = d.event_id
             WHERE d.attempt_date <> $1 OR d.reason <> $2 OR e.drop_id <> d.drop_id
                OR e.attempt_date <> d.attempt_date",
            &[&instant(&newest), &FAILURE_REASONS[EVENTS_PER_DROP - 1]],
        )
        .await
        .expect("checking deliveries")
        .iter()
        .map(|row| row.get(0))
        .collect();
    assert!(
        wrong.is_empty(),
        "not the newest state (seed {seed}): {wrong:?}"
    );
    assert_eq!(
        count(&client, "SELECT count(*) FROM deliveries").await,
        DROPS as i64
    );
    first.stop().await.expect("the first worker stops cleanly");
    second
        .stop()
        .await
        .expect("the second worker stops cleanly");
}

/// Shutdown is bounded by `CORRAL_SHUTDOWN_TIMEOUT_MS` even when the batch in
/// hand is stuck on a database that stopped answering (a black-holed path:
/// each attempt would otherwise wait its full `3 × CORRAL_DB_TIMEOUT_MS`).
/// The messages go back to RabbitMQ unacknowledged.
#[tokio::test]
async fn shutdown_is_bounded_even_while_a_write_hangs_on_a_silent_database() {
    let broker = TestBroker::new().await;
    let db = TestDatabase::new().await;
    let queue = broker.topology.queue();
    let (pg, url) = postgres_proxy(&db).await;
    let mut settings = batches_of(100, &url, broker.prefix());
    settings.shutdown_timeout_ms = 1_000;
    // Far longer than the test's deadline: only the drain deadline can end it.
    settings.db_timeout_ms = 60_000;
    let worker = RunningWorker::start(settings).await;
    pg.blackhole();
    for _ in 0..10 {
        send(&broker, SMS, valid("").1).await;
    }
    wait::until_true("the worker to hold every message", WAIT, || async {
        broker.ready_count(&queue).await == 0
    })
    .await;
    tokio::time::timeout(WAIT, worker.stop())
        .await
        .expect("the worker gave up at its shutdown deadline, not the database's")
        .expect("the worker exits Ok");
    wait::until_true("RabbitMQ to hold the messages again", WAIT, || async {
        broker.ready_count(&queue).await == 10
    })
    .await;
    pg.restore();
}

/// With `sslmode=require` and a CA file the worker migrates, consumes and
/// stores over TLS, and never falls back to plaintext.
#[tokio::test]
async fn stores_webhooks_over_verified_tls() {
    let broker = TestBroker::new().await;
    let db = TestDatabase::new().await;
    let ca = TestCa::new("trusted");
    let front = TlsFront::postgres(&ca).await;
    let mut settings = config(&front.postgres_url(&db.name), broker.prefix());
    settings.database_ca_file = Some(ca.pem_file().to_owned());
    let worker = RunningWorker::start(settings).await;

    let sent = send(&broker, SMS, valid("").1).await;
    let client = db.client().await;
    wait_count(&client, EVENTS, 1).await;
    assert_each_stored_once(&client, &[sent]).await;
    assert!(front.handshakes() >= 1, "no TLS handshake was made");
    assert_eq!(front.plaintext_refused(), 0, "a connection skipped TLS");
    assert_eq!(front.failed_handshakes(), 0);
    worker.stop().await.expect("the worker stops cleanly");
}

/// A server whose certificate does not verify (signed by another CA, or by
/// none the system trusts) gets no credentials and no data: connecting fails
/// with a certificate error and nothing is migrated.
#[tokio::test]
async fn refuses_a_database_whose_certificate_does_not_verify() {
    let db = TestDatabase::new().await;
    let trusted = TestCa::new("trusted");
    let impostor = TestCa::new("impostor");
    let front = TlsFront::postgres(&impostor).await;
    let timeout = Duration::from_secs(5);

    for ca_file in [Some(trusted.pem_file()), None] {
        let target =
            corral_worker::db::Target::new(&front.postgres_url(&db.name), ca_file, timeout)
                .expect("a valid target");
        let err = corral_worker::db::migrate(&target)
            .await
            .expect_err("an unverifiable server must be refused");
        let message = format!("{err:#}");
        assert!(
            message.contains("certificate"),
            "with CA file {ca_file:?}, the error does not say why: {message}"
        );
    }
    // The client gives up first; the front notices the aborted handshake just after.
    wait::until_true("the front to see both handshakes fail", WAIT, || async {
        front.failed_handshakes() >= 2
    })
    .await;
    assert_eq!(
        front.handshakes(),
        0,
        "a handshake with the impostor completed"
    );
    let client = db.client().await;
    assert_eq!(
        count(
            &client,
            "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'"
        )
        .await,
        0,
        "something was migrated through the impostor"
    );
}

/// A CA file the URL does not use or that cannot be read, and libpq's
/// `verify-*` modes, stop the worker at start with the reason, before it
/// touches anything.
#[tokio::test]
async fn database_tls_settings_are_checked_at_start() {
    let trusted = TestCa::new("trusted");
    let cases = [
        (
            "postgres://postgres@127.0.0.1:5432/corral",
            Some(trusted.pem_file().to_owned()),
            "sslmode=require",
        ),
        (
            "postgres://postgres@127.0.0.1:5432/corral?sslmode=require",
            Some(std::env::temp_dir().join("corral-no-such-ca.pem")),
            "reading CORRAL_DATABASE_CA_FILE",
        ),
        (
            "postgres://postgres@127.0.0.1:5432/corral?sslmode=verify-full",
            None,
            "use sslmode=require",
        ),
    ];
    for (url, ca_file, reason) in cases {
        let mut settings = config(url, "unused");
        settings.database_ca_file = ca_file;
        let err = corral_worker::Application::build(settings, Default::default())
            .expect_err("the worker must refuse this configuration");
        let message = format!("{err:#}");
        assert!(message.contains(reason), "{url}: {message}");
    }
}

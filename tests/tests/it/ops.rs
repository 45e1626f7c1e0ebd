//! The operator commands against real RabbitMQ and PostgreSQL — dead-letter
//! list and replay, quarantine list and re-processing — and the check that
//! the dashboard and the alerts in `deploy/` name only metrics the binaries
//! export.
//!
//! Dead letters are made the way RabbitMQ makes them: a message taken off the
//! test's main queue and rejected without requeue is dead-lettered (at least
//! once) into the test's dead-letter queue, with its `x-death` history.
//! Quarantine rows that a fix has made typeable are inserted as an older
//! version of the worker would have left them.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
    time::Duration,
};

use chrono::{DateTime, Utc};
use corral_shared::amqp::{PublishOutcomeError, Refused};
use corral_shared::{
    amqp,
    envelope::{self, RECEIVED_AT_HEADER},
    telemetry::metrics::{CATALOGUE, Kind},
};
use corral_tests::{
    apps::{RunningIngress, RunningWorker, ingress_config, worker_config},
    broker::TestBroker,
    database::TestDatabase,
    fixtures, wait,
};
use corral_worker::{
    config::{QuarantineCommand, WorkerConfig},
    ops::{self, OpsError, ReplayOptions, ReprocessOptions, Verdict},
};
use lapin::{
    BasicProperties,
    options::{BasicGetOptions, BasicRejectOptions},
    types::{AMQPValue, FieldTable},
};
use uuid::Uuid;

/// Deadline of every wait.
const WAIT: Duration = Duration::from_secs(20);
const SMS: &str = "dropcowboy.sms";
const RVM: &str = "dropcowboy.rvm";

/// A webhook as ingress would have published it.
struct Sent {
    id: Uuid,
    routing_key: &'static str,
    body: String,
    received_at: DateTime<Utc>,
}

/// Publishes `count` webhooks to the test's exchange, alternating sms and rvm,
/// and dead-letters all of them: each is taken off the main queue and rejected
/// without requeue, and the test waits until RabbitMQ has them in the
/// dead-letter queue.
async fn dead_letter(broker: &TestBroker, count: usize) -> Vec<Sent> {
    let mut sent = Vec::new();
    for n in 0..count {
        let routing_key = if n % 2 == 0 { SMS } else { RVM };
        let id = Uuid::now_v7();
        let received_at = Utc::now();
        let body = fixtures::delivery_status(
            &format!("drop-{}-{n}", id.simple()),
            "2026-11-27T05:24:31.000Z",
            if n % 3 == 0 { "" } else { "No Funds" },
            &format!("order-{n}"),
        );
        broker
            .publish(
                routing_key,
                body.as_bytes(),
                envelope::properties(id, received_at),
            )
            .await;
        sent.push(Sent {
            id,
            routing_key,
            body,
            received_at,
        });
    }
    let connection = amqp::connect(&broker.settings, "corral-tests ops")
        .await
        .expect("connecting");
    let channel = connection.create_channel().await.expect("channel");
    let queue = broker.topology.queue();
    for _ in 0..count {
        let message = channel
            .basic_get(queue.as_str().into(), BasicGetOptions { no_ack: false })
            .await
            .expect("basic.get")
            .expect("a message in the main queue");
        message
            .delivery
            .acker
            .reject(BasicRejectOptions { requeue: false })
            .await
            .expect("reject");
    }
    let dead_letters = broker.topology.dead_letter_queue();
    wait::until_true(
        &format!("{count} messages in {dead_letters}"),
        WAIT,
        || async { broker.ready_count(&dead_letters).await == count as u32 },
    )
    .await;
    let _ = connection.close(200, "done".into()).await;
    sent
}

fn header<'a>(properties: &'a BasicProperties, name: &str) -> Option<&'a AMQPValue> {
    properties
        .headers()
        .as_ref()
        .and_then(|headers: &FieldTable| headers.inner().get(name))
}

#[tokio::test]
async fn listing_and_dry_run_show_dead_letters_and_remove_none() {
    let broker = TestBroker::new().await;
    let sent = dead_letter(&broker, 3).await;
    let dlq = broker.topology.dead_letter_queue();

    let listed = ops::list_dead_letters(&broker.settings, 100).await.unwrap();
    assert_eq!(listed.queued_at_start, 3);
    assert!(!listed.replayed);
    let ids: BTreeSet<String> = listed
        .letters
        .iter()
        .map(|letter| letter.id().to_owned())
        .collect();
    let want: BTreeSet<String> = sent.iter().map(|s| s.id.to_string()).collect();
    assert_eq!(ids, want);
    for letter in &listed.letters {
        let original = sent
            .iter()
            .find(|s| s.id.to_string() == letter.id())
            .unwrap();
        assert_eq!(letter.routing_key, original.routing_key);
        assert_eq!(letter.body, original.body.as_bytes());
        assert_eq!(letter.reason.as_deref(), Some("rejected"));
        assert_eq!(
            letter.queue.as_deref(),
            Some(broker.topology.queue().as_str())
        );
        assert_eq!(letter.deaths, 1);
        assert_eq!(
            letter.received_at.map(|at| at.timestamp_micros()),
            Some(original.received_at.timestamp_micros())
        );
    }
    assert_eq!(broker.ready_count(&dlq).await, 3, "listing removed nothing");

    // Listing twice reads the same messages again: moving them to the tail
    // kept their routing key and history.
    let again = ops::list_dead_letters(&broker.settings, 2).await.unwrap();
    assert_eq!(again.letters.len(), 2, "the limit is honoured");
    for letter in &again.letters {
        assert_eq!(letter.deaths, 1);
        assert!(letter.routing_key == SMS || letter.routing_key == RVM);
    }

    let dry = ops::replay_dead_letters(
        &broker.settings,
        &ReplayOptions {
            dry_run: true,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(dry.letters.len(), 3);
    assert!(!dry.replayed);
    assert_eq!(
        broker.ready_count(&dlq).await,
        3,
        "a dry run removed nothing"
    );
    assert_eq!(broker.ready_count(&broker.topology.queue()).await, 0);

    // The command's own output.
    let mut out = Vec::new();
    let config =
        WorkerConfig::for_tests("postgres://postgres@127.0.0.1:5432/unused", broker.prefix());
    ops::dead_letters_command(
        corral_worker::config::DeadLetterCommand::List { limit: 10 },
        &config,
        &mut out,
    )
    .await
    .unwrap();
    let out = String::from_utf8(out).unwrap();
    for s in &sent {
        assert!(out.contains(&s.id.to_string()), "{out}");
    }
    assert!(out.contains("listed 3 message(s); none removed"), "{out}");
}

#[tokio::test]
async fn replay_republishes_with_the_original_properties_and_removes_the_dead_letter() {
    let broker = TestBroker::new().await;
    let sent = dead_letter(&broker, 4).await;
    let dlq = broker.topology.dead_letter_queue();
    let main = broker.topology.queue();

    let first = ops::replay_dead_letters(
        &broker.settings,
        &ReplayOptions {
            limit: Some(1),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(first.letters.len(), 1);
    assert!(first.replayed);
    assert_eq!(broker.ready_count(&dlq).await, 3);

    let rest = ops::replay_dead_letters(&broker.settings, &ReplayOptions::default())
        .await
        .unwrap();
    assert_eq!(rest.letters.len(), 3);
    assert_eq!(broker.ready_count(&dlq).await, 0);

    let replayed = broker.drain(&main).await;
    assert_eq!(
        replayed.len(),
        4,
        "every dead letter is back in the main queue"
    );
    for message in &replayed {
        let delivery = &message.delivery;
        let id = delivery
            .properties
            .message_id()
            .as_ref()
            .expect("message_id kept")
            .to_string();
        let original = sent.iter().find(|s| s.id.to_string() == id).unwrap();
        assert_eq!(delivery.routing_key.as_str(), original.routing_key);
        assert_eq!(delivery.exchange.as_str(), broker.topology.exchange());
        assert_eq!(delivery.data, original.body.as_bytes());
        assert_eq!(delivery.properties.delivery_mode(), &Some(2));
        assert_eq!(
            delivery
                .properties
                .content_type()
                .as_ref()
                .map(|s| s.as_str()),
            Some("application/json")
        );
        assert_eq!(
            header(&delivery.properties, RECEIVED_AT_HEADER),
            Some(&AMQPValue::LongString(
                envelope::format_received_at(original.received_at).into()
            ))
        );
        assert!(
            header(&delivery.properties, "x-death").is_some(),
            "the dead-letter history travels with the replayed message"
        );
    }
}

#[tokio::test]
async fn replay_takes_only_the_selected_message_ids() {
    let broker = TestBroker::new().await;
    let sent = dead_letter(&broker, 3).await;
    let chosen = sent[1].id.to_string();

    let report = ops::replay_dead_letters(
        &broker.settings,
        &ReplayOptions {
            message_ids: vec![chosen.clone()],
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(report.letters.len(), 1);
    assert_eq!(report.letters[0].id(), chosen);
    assert_eq!(report.passed_over, 2);

    let replayed = broker.drain(&broker.topology.queue()).await;
    assert_eq!(replayed.len(), 1);
    assert_eq!(
        replayed[0]
            .delivery
            .properties
            .message_id()
            .as_ref()
            .map(|id| id.to_string()),
        Some(chosen)
    );
    let left: BTreeSet<String> = ops::list_dead_letters(&broker.settings, 10)
        .await
        .unwrap()
        .letters
        .iter()
        .map(|letter| letter.id().to_owned())
        .collect();
    let want: BTreeSet<String> = [sent[0].id.to_string(), sent[2].id.to_string()].into();
    assert_eq!(left, want, "the others stay dead-lettered");
}

#[tokio::test]
async fn a_replay_the_broker_cannot_route_keeps_every_dead_letter() {
    let broker = TestBroker::new().await;
    dead_letter(&broker, 3).await;
    let dlq = broker.topology.dead_letter_queue();
    // Nothing is bound to the webhooks exchange any more: a replayed copy
    // would be unroutable, and must not cost the dead-letter copy.
    let connection = amqp::connect(&broker.settings, "corral-tests ops")
        .await
        .unwrap();
    let channel = connection.create_channel().await.unwrap();
    channel
        .queue_unbind(
            broker.topology.queue().into(),
            broker.topology.exchange().into(),
            "dropcowboy.#".into(),
            FieldTable::default(),
        )
        .await
        .unwrap();

    let err = ops::replay_dead_letters(&broker.settings, &ReplayOptions::default())
        .await
        .unwrap_err();
    match &err {
        OpsError::NotReplayed {
            replayed, cause, ..
        } => {
            assert_eq!(*replayed, 0);
            assert!(
                matches!(
                    **cause,
                    ops::MoveError::Publish {
                        error: PublishOutcomeError::Refused(Refused::Unroutable { .. }),
                        ..
                    }
                ),
                "{cause}"
            );
            assert!(cause.to_string().contains("unroutable"), "{cause}");
        }
        other => panic!("expected NotReplayed, got {other:?}"),
    }
    assert_eq!(broker.ready_count(&dlq).await, 3, "no dead letter was lost");
    assert_eq!(broker.ready_count(&broker.topology.queue()).await, 0);
    let listed = ops::list_dead_letters(&broker.settings, 10).await.unwrap();
    assert_eq!(listed.letters.len(), 3);
    assert!(listed.letters.iter().all(|letter| letter.deaths == 1));
    let _ = connection.close(200, "done".into()).await;
}

#[tokio::test]
async fn a_wrong_prefix_is_reported_not_created() {
    let broker = TestBroker::new().await;
    let mut settings = broker.settings.clone();
    settings.prefix = format!("{}-typo", broker.prefix());
    let err = ops::list_dead_letters(&settings, 10).await.unwrap_err();
    assert!(
        matches!(&err, OpsError::Missing { name, .. } if name.ends_with("-typo.dead-letter")),
        "{err:?}"
    );
}

#[tokio::test]
async fn replayed_dead_letters_are_stored_by_the_worker() {
    let broker = TestBroker::new().await;
    let db = TestDatabase::new().await;
    let sent = dead_letter(&broker, 2).await;
    ops::replay_dead_letters(&broker.settings, &ReplayOptions::default())
        .await
        .unwrap();
    let worker = RunningWorker::start(worker_config(&db.url, broker.prefix())).await;
    let client = db.client().await;
    let ids: Vec<Uuid> = sent.iter().map(|s| s.id).collect();
    wait::until_true("both replayed webhooks stored", WAIT, || {
        let client = &client;
        let ids = &ids;
        async move {
            client
                .query_one(
                    "SELECT count(*) FROM delivery_events WHERE message_id = ANY($1)",
                    &[ids],
                )
                .await
                .unwrap()
                .get::<_, i64>(0)
                == 2
        }
    })
    .await;
    worker.stop().await.unwrap();
}

/// Inserts a quarantine row as an older worker would have left it.
async fn quarantine(
    client: &tokio_postgres::Client,
    body: &str,
    routing_key: &str,
    message_id: Option<Uuid>,
    error: &str,
) -> i64 {
    client
        .query_one(
            "INSERT INTO quarantined_webhooks (body_sha256, message_id, routing_key, body, error, received_at)
             VALUES (sha256($1), $2, $3, $1, $4, now() - interval '1 day') RETURNING id",
            &[&body.as_bytes(), &message_id, &routing_key, &error],
        )
        .await
        .unwrap()
        .get(0)
}

async fn count(client: &tokio_postgres::Client, table: &str) -> i64 {
    client
        .query_one(&format!("SELECT count(*) FROM {table}"), &[])
        .await
        .unwrap()
        .get(0)
}

#[tokio::test]
async fn reprocessing_stores_what_types_now_and_keeps_what_does_not() {
    let db = TestDatabase::migrated().await;
    let client = db.client().await;
    let config = WorkerConfig::for_tests(&db.url, "unused");

    // Typeable now (a fix since): the same webhook twice, formatted differently.
    let typeable = fixtures::SMS_FAILURE.trim().to_owned();
    let reformatted = serde_json::to_string_pretty(
        &serde_json::from_str::<serde_json::Value>(&typeable).unwrap(),
    )
    .unwrap();
    let message_id = Uuid::now_v7();
    let fixed = quarantine(&client, &typeable, SMS, Some(message_id), "an old bug").await;
    let fixed_twin = quarantine(&client, &reformatted, SMS, None, "an old bug").await;
    // Still not typeable.
    let broken = quarantine(&client, r#"{"status":"success"}"#, RVM, None, "an old bug").await;

    let targeted = ops::reprocess_quarantined(
        &config,
        &ReprocessOptions {
            dry_run: true,
            ids: vec![broken],
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(targeted.rows.len(), 1, "--id takes only that row");

    let dry = ops::reprocess_quarantined(
        &config,
        &ReprocessOptions {
            dry_run: true,
            batch: 2,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert_eq!((dry.stored, dry.duplicate, dry.still_failing()), (1, 1, 1));
    assert_eq!(
        count(&client, "quarantined_webhooks").await,
        3,
        "dry run changed nothing"
    );
    assert_eq!(count(&client, "delivery_events").await, 0);
    assert_eq!(count(&client, "deliveries").await, 0);

    let report = ops::reprocess_quarantined(&config, &ReprocessOptions::default())
        .await
        .unwrap();
    assert_eq!((report.stored, report.duplicate), (1, 1));
    let verdicts: BTreeMap<i64, Verdict> = report.rows.into_iter().collect();
    assert_eq!(verdicts[&fixed], Verdict::Resolved);
    assert_eq!(verdicts[&fixed_twin], Verdict::Resolved);
    assert!(
        matches!(&verdicts[&broken], Verdict::StillFailing(error) if error.contains("drop_id")),
        "{verdicts:?}"
    );

    // Stored exactly as the worker stores it.
    let row = client
        .query_one(
            "SELECT e.kind, e.drop_id, e.status, e.reason, e.product_cost::text, e.message_id, d.drop_id AS latest
             FROM delivery_events e JOIN deliveries d ON d.event_id = e.id",
            &[],
        )
        .await
        .unwrap();
    let typed = corral_shared::payload::parse(typeable.as_bytes()).unwrap();
    assert_eq!(row.get::<_, String>("kind"), "sms");
    assert_eq!(row.get::<_, String>("drop_id"), typed.status.drop_id);
    assert_eq!(row.get::<_, String>("latest"), typed.status.drop_id);
    assert_eq!(row.get::<_, String>("status"), typed.status.status);
    assert_eq!(
        row.get::<_, Option<String>>("product_cost"),
        typed.status.product_cost.map(|cost| cost.to_string())
    );
    assert_eq!(count(&client, "delivery_events").await, 1);
    // The row that still fails stays, with today's error.
    let left = client
        .query_one("SELECT id, error FROM quarantined_webhooks", &[])
        .await
        .unwrap();
    assert_eq!(left.get::<_, i64>("id"), broken);
    let error: String = left.get("error");
    assert!(error.contains("drop_id"), "{error}");

    // Running again changes nothing.
    let again = ops::reprocess_quarantined(&config, &ReprocessOptions::default())
        .await
        .unwrap();
    assert_eq!((again.resolved(), again.still_failing()), (0, 1));
    assert_eq!(count(&client, "delivery_events").await, 1);

    // The command's own output.
    let mut out = Vec::new();
    ops::quarantine_command(QuarantineCommand::List { limit: 10 }, &config, &mut out)
        .await
        .unwrap();
    let out = String::from_utf8(out).unwrap();
    assert!(out.contains(&format!("{broken}\t-\t{RVM}")), "{out}");
    assert!(out.contains("# listed 1 row(s)"), "{out}");
}

#[tokio::test]
async fn a_row_postgresql_refuses_stays_quarantined_and_none_of_it_is_stored() {
    // A row that types now but that PostgreSQL refuses stays quarantined and
    // nothing of it is stored: the same split as the worker's.
    let db = TestDatabase::migrated().await;
    let client = db.client().await;
    client
        .batch_execute(
            "ALTER TABLE delivery_events ADD CONSTRAINT test_no_spam CHECK (reason IS DISTINCT FROM 'Spam detected')",
        )
        .await
        .unwrap();
    let config = WorkerConfig::for_tests(&db.url, "unused");
    let refused =
        fixtures::delivery_status("d-refused", "2026-11-27T05:24:31Z", "Spam detected", "f-1");
    let accepted = fixtures::delivery_status("d-accepted", "2026-11-27T05:24:31Z", "", "f-2");
    let refused_id = quarantine(&client, &refused, SMS, None, "old").await;
    let accepted_id = quarantine(&client, &accepted, SMS, None, "old").await;

    let report = ops::reprocess_quarantined(&config, &ReprocessOptions::default())
        .await
        .unwrap();
    let verdicts: BTreeMap<i64, Verdict> = report.rows.into_iter().collect();
    assert_eq!(verdicts[&accepted_id], Verdict::Resolved);
    assert!(
        matches!(&verdicts[&refused_id], Verdict::StillFailing(error) if error.contains("test_no_spam")),
        "{verdicts:?}"
    );
    let stored: Vec<String> = client
        .query("SELECT drop_id FROM delivery_events", &[])
        .await
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect();
    assert_eq!(stored, ["d-accepted"]);
    let left: Vec<i64> = client
        .query("SELECT id FROM quarantined_webhooks", &[])
        .await
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect();
    assert_eq!(left, [refused_id]);
}

// ---------------------------------------------------------------------------
// deploy/: every corral_* metric the dashboard and the alerts name exists.
// ---------------------------------------------------------------------------

/// A `corral_*` metric named in a deploy file, with the label names its
/// selectors use.
#[derive(Debug, Default)]
struct Named {
    /// Label names in `{…}` right after the name.
    labels: BTreeSet<String>,
    /// Files it appears in.
    files: BTreeSet<String>,
}

fn deploy_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy")
}

/// Every string value of a JSON document (the queries of a dashboard are strings).
fn json_strings(value: &serde_json::Value, out: &mut Vec<String>) {
    match value {
        serde_json::Value::String(s) => out.push(s.clone()),
        serde_json::Value::Array(items) => items.iter().for_each(|v| json_strings(v, out)),
        serde_json::Value::Object(map) => map.values().for_each(|v| json_strings(v, out)),
        _ => {}
    }
}

/// Finds `corral_…` metric names and the label names of a `{…}` selector
/// that follows one.
fn scan(text: &str, file: &str, found: &mut BTreeMap<String, Named>) {
    let bytes = text.as_bytes();
    let is_name = |b: u8| b.is_ascii_alphanumeric() || b == b'_' || b == b':';
    let mut i = 0;
    while let Some(offset) = text[i..].find("corral_") {
        let start = i + offset;
        i = start + "corral_".len();
        if start > 0 && is_name(bytes[start - 1]) {
            continue;
        }
        let mut end = i;
        while end < bytes.len()
            && (bytes[end].is_ascii_lowercase()
                || bytes[end].is_ascii_digit()
                || bytes[end] == b'_')
        {
            end += 1;
        }
        if end == i {
            // `corral_*` in prose, not a metric.
            continue;
        }
        let name = text[start..end].to_owned();
        let entry = found.entry(name).or_default();
        entry.files.insert(file.to_owned());
        if bytes.get(end) == Some(&b'{') {
            let close = text[end..].find('}').map_or(text.len(), |c| end + c);
            for matcher in text[end + 1..close].split(',') {
                let label: String = matcher
                    .trim()
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                if !label.is_empty() {
                    entry.labels.insert(label);
                }
            }
        }
        i = end;
    }
}

/// The metric names (with their selectors' labels) that the dashboards in
/// `deploy/grafana/` and the rules in `deploy/prometheus/alerts.yaml` use.
fn named_in_deploy() -> BTreeMap<String, Named> {
    let mut found = BTreeMap::new();
    let grafana = deploy_dir().join("grafana");
    let mut dashboards = 0;
    for entry in std::fs::read_dir(&grafana).expect("deploy/grafana exists") {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|ext| ext == "json") {
            dashboards += 1;
            let text = std::fs::read_to_string(&path).unwrap();
            let json: serde_json::Value = serde_json::from_str(&text)
                .unwrap_or_else(|err| panic!("{} is not JSON: {err}", path.display()));
            let mut strings = Vec::new();
            json_strings(&json, &mut strings);
            let file = path.file_name().unwrap().to_string_lossy().into_owned();
            for s in strings {
                scan(&s, &file, &mut found);
            }
        }
    }
    assert!(dashboards > 0, "no dashboard in {}", grafana.display());
    let alerts = deploy_dir().join("prometheus/alerts.yaml");
    let text = std::fs::read_to_string(&alerts).expect("deploy/prometheus/alerts.yaml exists");
    // Comments are prose; the rules are the rest.
    let rules: String = text
        .lines()
        .filter(|line| !line.trim_start().starts_with('#'))
        .map(|line| format!("{line}\n"))
        .collect();
    scan(&rules, "alerts.yaml", &mut found);
    found
}

/// The catalogue name a series name belongs to: itself, or a histogram's
/// name without `_bucket` / `_sum` / `_count`.
fn base_name(name: &str) -> (&str, bool) {
    if CATALOGUE.iter().any(|def| def.name == name) {
        return (name, false);
    }
    for suffix in ["_bucket", "_sum", "_count"] {
        if let Some(base) = name.strip_suffix(suffix)
            && CATALOGUE
                .iter()
                .any(|def| def.name == base && def.kind == Kind::Histogram)
        {
            return (base, suffix == "_bucket");
        }
    }
    (name, false)
}

#[tokio::test]
async fn the_dashboard_and_the_alerts_name_only_metrics_the_binaries_export() {
    let named = named_in_deploy();
    for expected in [
        "corral_ingress_requests_total",
        "corral_ingress_publish_failures_total",
        "corral_worker_messages_total",
        "corral_worker_end_to_end_seconds_bucket",
        "corral_ready",
    ] {
        assert!(
            named.contains_key(expected),
            "{expected} should be on the dashboard or in the alerts; found {:?}",
            named.keys()
        );
    }

    // Both binaries, one webhook all the way through, so that every histogram
    // has a sample and is exported.
    let broker = TestBroker::new().await;
    let db = TestDatabase::new().await;
    let ingress = RunningIngress::start(ingress_config(broker.prefix())).await;
    let worker = RunningWorker::start(worker_config(&db.url, broker.prefix())).await;
    assert_eq!(
        ingress.post("sms", fixtures::SMS_SUCCESS).await.status(),
        200
    );
    wait::until_true("the webhook to be stored", WAIT, || async {
        worker
            .metrics()
            .await
            .get(r#"corral_worker_messages_total{outcome="stored"}"#)
            >= 1.0
    })
    .await;
    let mut exported = ingress.metrics().await.names();
    exported.extend(worker.metrics().await.names());
    worker.stop().await.unwrap();
    ingress.stop().await.unwrap();

    let target_labels = [
        "job",
        "instance",
        "namespace",
        "pod",
        "service",
        "container",
        "endpoint",
    ];
    let mut problems = Vec::new();
    for (name, use_) in &named {
        let (base, bucket) = base_name(name);
        let Some(def) = CATALOGUE.iter().find(|def| def.name == base) else {
            problems.push(format!(
                "{name} (in {:?}) is not in the catalogue",
                use_.files
            ));
            continue;
        };
        if !exported.contains(base) {
            problems.push(format!(
                "{name} (in {:?}) is not exported by either binary",
                use_.files
            ));
        }
        for label in &use_.labels {
            let known = def.labels.contains(&label.as_str())
                || (bucket && label == "le")
                || target_labels.contains(&label.as_str());
            if !known {
                problems.push(format!(
                    "{name} (in {:?}) has no label {label:?}; it has {:?}",
                    use_.files, def.labels
                ));
            }
        }
    }
    assert!(
        problems.is_empty(),
        "deploy/ names metrics that do not exist:\n{}",
        problems.join("\n")
    );
}

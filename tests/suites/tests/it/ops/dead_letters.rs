//! `corral-worker dead-letters`: listing, dry runs and replays.

use std::{collections::BTreeSet, time::Duration};

use chrono::{DateTime, Utc};
use corral_contract::envelope::{
    self, Kind, RECEIVED_AT_HEADER,
    batch::{self, Packing},
};
use corral_runtime::amqp::{PublishOutcomeError, Refused};
use corral_runtime::{amqp, config::AmqpSettings};
use corral_testkit::{
    apps::RunningWorker, broker::TestBroker, config, fixtures, stack::Stack, wait,
};
use corral_worker::{
    commands,
    ops::{self, DeadLetters as _, LetterWebhook, OpsError, RabbitmqDeadLetters, ReplayOptions},
};
use lapin::{
    BasicProperties,
    options::{BasicGetOptions, BasicRejectOptions},
    types::{AMQPValue, FieldTable},
};
use uuid::Uuid;

use super::helpers::*;

/// A webhook as ingress would have published it.
struct Sent {
    id: Uuid,
    routing_key: &'static str,
    body: String,
    received_at: DateTime<Utc>,
}

/// Publishes `count` webhooks to the test's exchange, alternating sms and rvm,
/// and dead-letters all of them ([`reject_all`]).
async fn dead_letter(broker: &TestBroker, count: usize) -> Vec<Sent> {
    let mut sent = Vec::new();
    for n in 0..count {
        let routing_key = if n % 2 == 0 {
            envelope::Kind::Sms.routing_key()
        } else {
            envelope::Kind::Rvm.routing_key()
        };
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
                corral_runtime::amqp::properties(&envelope::Metadata::single(id, received_at)),
            )
            .await;
        sent.push(Sent {
            id,
            routing_key,
            body,
            received_at,
        });
    }
    reject_all(broker, count).await;
    sent
}

/// Dead-letters the `count` messages in the main queue: each is taken off it
/// and rejected without requeue, and the test waits until RabbitMQ has them
/// in the dead-letter queue, behind those already there.
async fn reject_all(broker: &TestBroker, count: usize) {
    let dead_letters = broker.topology.dead_letter_queue();
    let expected = broker.ready_count(&dead_letters).await + count as u32;
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
    wait::until_true(
        &format!("{expected} messages in {dead_letters}"),
        WAIT,
        || async { broker.ready_count(&dead_letters).await == expected },
    )
    .await;
    amqp::close(&connection, Duration::from_secs(10), "done").await;
}

/// What `corral-worker dead-letters list --limit 10` writes.
async fn list_command(broker: &TestBroker) -> String {
    let mut out = Vec::new();
    let config = config::worker("postgres://postgres@127.0.0.1:5432/unused", broker.prefix());
    commands::dead_letters::run(
        commands::dead_letters::DeadLetterCommand::List {
            list: commands::output::ListArgs::first(10),
        },
        &config,
        &mut out,
    )
    .await
    .unwrap();
    String::from_utf8(out).unwrap()
}

fn header<'a>(properties: &'a BasicProperties, name: &str) -> Option<&'a AMQPValue> {
    properties
        .headers()
        .as_ref()
        .and_then(|headers: &FieldTable| headers.inner().get(name))
}

/// Replays only the letter with `id` (its own, or a webhook's inside it).
async fn replay_only(settings: &AmqpSettings, id: String) -> ops::DeadLetterReport {
    RabbitmqDeadLetters::new(settings)
        .replay(&ReplayOptions {
            message_ids: vec![id],
            ..Default::default()
        })
        .await
        .unwrap()
}

#[tokio::test]
async fn listing_and_dry_run_show_dead_letters_and_remove_none() {
    let broker = TestBroker::new().await;
    let sent = dead_letter(&broker, 3).await;
    let dlq = broker.topology.dead_letter_queue();

    let listed = RabbitmqDeadLetters::new(&broker.settings)
        .list(100)
        .await
        .unwrap();
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
    let again = RabbitmqDeadLetters::new(&broker.settings)
        .list(2)
        .await
        .unwrap();
    assert_eq!(again.letters.len(), 2, "the limit is honoured");
    for letter in &again.letters {
        assert_eq!(letter.deaths, 1);
        assert!(
            letter.routing_key == envelope::Kind::Sms.routing_key()
                || letter.routing_key == envelope::Kind::Rvm.routing_key()
        );
    }

    let dry = RabbitmqDeadLetters::new(&broker.settings)
        .replay(&ReplayOptions {
            dry_run: true,
            ..Default::default()
        })
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
    let out = list_command(&broker).await;
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

    let first = RabbitmqDeadLetters::new(&broker.settings)
        .replay(&ReplayOptions {
            limit: Some(1),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(first.letters.len(), 1);
    assert!(first.replayed);
    assert_eq!(broker.ready_count(&dlq).await, 3);

    let rest = RabbitmqDeadLetters::new(&broker.settings)
        .replay(&ReplayOptions::default())
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

    let report = replay_only(&broker.settings, chosen.clone()).await;
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
    let left: BTreeSet<String> = RabbitmqDeadLetters::new(&broker.settings)
        .list(10)
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
    // Nothing is bound to the webhooks exchange, nor to its alternate, any
    // more: a replayed copy would be unroutable, and must not cost the
    // dead-letter copy.
    broker.unbind_main_queue().await;
    broker
        .unbind(
            &broker.topology.unroutable_queue(),
            &broker.topology.unroutable_exchange(),
            "",
        )
        .await;

    let err = RabbitmqDeadLetters::new(&broker.settings)
        .replay(&ReplayOptions::default())
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
    let listed = RabbitmqDeadLetters::new(&broker.settings)
        .list(10)
        .await
        .unwrap();
    assert_eq!(listed.letters.len(), 3);
    assert!(listed.letters.iter().all(|letter| letter.deaths == 1));
}

#[tokio::test]
async fn a_wrong_prefix_is_reported_not_created() {
    let broker = TestBroker::new().await;
    let mut settings = broker.settings.clone();
    settings.prefix = format!("{}-typo", broker.prefix());
    let err = RabbitmqDeadLetters::new(&settings)
        .list(10)
        .await
        .unwrap_err();
    assert!(
        matches!(&err, OpsError::Missing { name, .. } if name.ends_with("-typo.dead-letter")),
        "{err:?}"
    );
}

#[tokio::test]
async fn replayed_dead_letters_are_stored_by_the_worker() {
    let stack = Stack::builder().database().start().await;
    let (broker, db) = (stack.broker(), stack.db());
    let sent = dead_letter(broker, 2).await;
    RabbitmqDeadLetters::new(&broker.settings)
        .replay(&ReplayOptions::default())
        .await
        .unwrap();
    let worker = RunningWorker::start(stack.worker_config()).await;
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

#[tokio::test]
async fn list_and_replay_work_under_the_documented_broker_permissions() {
    // The documented permissions cover `^corral\.`: the prefix must be under
    // `corral.`, as the default `corral` is.
    let broker = TestBroker::with_prefix(format!("corral.{}", Uuid::now_v7().simple())).await;
    let user = DocumentedBrokerUser::new();
    let mut settings = broker.settings.clone();
    settings.url = user.url.clone();
    let sent = dead_letter(&broker, 3).await;
    let dlq = broker.topology.dead_letter_queue();
    let main = broker.topology.queue();
    let all: BTreeSet<String> = sent.iter().map(|s| s.id.to_string()).collect();

    let listed = RabbitmqDeadLetters::new(&settings).list(10).await.unwrap();
    let ids: BTreeSet<String> = listed
        .letters
        .iter()
        .map(|letter| letter.id().to_owned())
        .collect();
    assert_eq!(ids, all);
    assert_eq!(broker.ready_count(&dlq).await, 3, "listing removed nothing");

    let chosen = sent[1].id.to_string();
    let report = replay_only(&settings, chosen.clone()).await;
    assert_eq!(report.letters.len(), 1);
    assert_eq!(report.passed_over, 2);
    let replayed = broker.drain(&main).await;
    let replayed_ids: Vec<String> = replayed
        .iter()
        .filter_map(|m| m.delivery.properties.message_id().as_ref())
        .map(|id| id.to_string())
        .collect();
    assert_eq!(replayed_ids, vec![chosen.clone()]);
    let left: BTreeSet<String> = RabbitmqDeadLetters::new(&settings)
        .list(10)
        .await
        .unwrap()
        .letters
        .iter()
        .map(|letter| letter.id().to_owned())
        .collect();
    let want: BTreeSet<String> = [sent[0].id.to_string(), sent[2].id.to_string()].into();
    assert_eq!(left, want, "the others stay dead-lettered");
    for letter in RabbitmqDeadLetters::new(&settings)
        .list(10)
        .await
        .unwrap()
        .letters
    {
        let original = sent
            .iter()
            .find(|s| s.id.to_string() == letter.id())
            .unwrap();
        assert_eq!(
            letter.routing_key, original.routing_key,
            "kept its routing key"
        );
        assert_eq!(letter.deaths, 1, "kept its history");
    }

    let rest = RabbitmqDeadLetters::new(&settings)
        .replay(&ReplayOptions::default())
        .await
        .unwrap();
    assert_eq!(rest.letters.len(), 2);
    assert_eq!(broker.ready_count(&dlq).await, 0);
    let replayed_ids: BTreeSet<String> = broker
        .drain(&main)
        .await
        .iter()
        .filter_map(|m| m.delivery.properties.message_id().as_ref())
        .map(|id| id.to_string())
        .collect();
    assert_eq!(replayed_ids, want);
}

#[tokio::test]
async fn a_dead_lettered_batch_is_listed_per_webhook_replayed_whole_and_stored_once() {
    let stack = Stack::builder().database().start().await;
    let (broker, db) = (stack.broker(), stack.db());
    let bodies: Vec<String> = (0..3)
        .map(|n| {
            fixtures::delivery_status(
                &format!("drop-{}-{n}", Uuid::now_v7().simple()),
                "2026-11-27T05:24:31.000Z",
                "",
                &format!("order-{n}"),
            )
        })
        .collect();
    let first = DateTime::from_timestamp_micros(Utc::now().timestamp_micros()).unwrap();
    let packing: Vec<Packing> = bodies
        .iter()
        .zip([Kind::Sms, Kind::Rvm, Kind::Sms])
        .enumerate()
        .map(|(n, (body, kind))| Packing {
            id: Uuid::now_v7(),
            received_at: first + chrono::Duration::microseconds(n as i64),
            kind,
            body: body.as_bytes(),
        })
        .collect();
    let letter_id = broker.publish_batch(&packing).await.to_string();
    reject_all(broker, 1).await;

    let listed = RabbitmqDeadLetters::new(&broker.settings)
        .list(10)
        .await
        .unwrap();
    assert_eq!(listed.letters.len(), 1);
    let letter = &listed.letters[0];
    assert_eq!(letter.id(), letter_id);
    assert_eq!(letter.routing_key, envelope::MIXED_ROUTING_KEY);
    let want: Vec<LetterWebhook> = packing
        .iter()
        .map(|p| LetterWebhook {
            message_id: Some(p.id.to_string()),
            routing_key: p.kind.routing_key().to_owned(),
            received_at: Some(p.received_at),
            body: p.body.to_vec(),
        })
        .collect();
    assert_eq!(
        letter.webhooks, want,
        "each webhook with its own id, kind, time and body"
    );

    let out = list_command(broker).await;
    for p in &packing {
        let line = out
            .lines()
            .find(|line| line.starts_with(&p.id.to_string()))
            .unwrap_or_else(|| panic!("a line for webhook {}: {out}", p.id));
        let columns: Vec<&str> = line.split('\t').collect();
        assert_eq!(columns[1], p.kind.routing_key(), "{line}");
        assert_eq!(columns[2], "rejected", "{line}");
        assert_eq!(columns[3], "1", "{line}");
        assert_eq!(columns[4], p.received_at.to_rfc3339(), "{line}");
        assert!(columns[5].starts_with(r#"{"drop_id":"drop-"#), "{line}");
        assert_eq!(columns[6], letter_id, "{line}");
    }
    assert!(
        out.contains("listed 1 message(s); none removed; 3 webhook(s) in them"),
        "{out}"
    );

    // A webhook's own id selects the letter it travels in; the letter goes
    // back whole, as it was published.
    let report = replay_only(&broker.settings, packing[1].id.to_string()).await;
    assert_eq!(report.letters.len(), 1);
    let replayed = broker.drain(&broker.topology.queue()).await;
    assert_eq!(replayed.len(), 1, "the webhooks stay together");
    let delivery = &replayed[0].delivery;
    let mut body = Vec::new();
    batch::encode(packing.iter().copied(), &mut body);
    assert_eq!(delivery.data, body);
    assert_eq!(delivery.routing_key.as_str(), envelope::MIXED_ROUTING_KEY);
    assert_eq!(
        delivery
            .properties
            .message_id()
            .as_ref()
            .map(|id| id.to_string()),
        Some(letter_id.clone())
    );
    assert_eq!(
        envelope::Format::of(&amqp::metadata(&delivery.properties)),
        envelope::Format::Batch
    );

    // Stored by the worker, each webhook once, however often it is replayed.
    broker.publish_batch(&packing).await;
    reject_all(broker, 1).await;
    broker.publish_batch(&packing).await;
    reject_all(broker, 1).await;
    RabbitmqDeadLetters::new(&broker.settings)
        .replay(&ReplayOptions::default())
        .await
        .unwrap();
    let worker = RunningWorker::start(stack.worker_config()).await;
    let client = db.client().await;
    wait::until_true("both replayed letters committed", WAIT, || async {
        let metrics = worker.metrics().await;
        metrics.get(r#"corral_worker_messages_total{outcome="stored"}"#)
            + metrics.get(r#"corral_worker_messages_total{outcome="duplicate"}"#)
            >= 6.0
    })
    .await;
    let rows = client
        .query(
            "SELECT message_id, received_at FROM delivery_events ORDER BY received_at",
            &[],
        )
        .await
        .unwrap();
    let stored: Vec<(Uuid, DateTime<Utc>)> =
        rows.iter().map(|row| (row.get(0), row.get(1))).collect();
    let want: Vec<(Uuid, DateTime<Utc>)> = packing.iter().map(|p| (p.id, p.received_at)).collect();
    assert_eq!(stored, want, "each webhook once, with its own id and time");
    worker.stop().await.unwrap();
}

//! The signed mode against the real services: ingress verifies and answers
//! every signed delivery the generator makes (retries, re-serialised
//! bodies, both channels), the worker stores each event once by its
//! `event_id`, and the verifier counts what is wrong with signed rows.

use std::time::Duration;

use corral_loadgen::{
    self as loadgen, Config, Destination, ItemRecord, Load, Mix, Sent, Shape, Traffic,
    VerifyOptions,
};
use corral_testkit::{
    apps::{RunningIngress, TOKEN},
    broker::TestBroker,
    config,
    database::TestDatabase,
    metrics::Metrics,
    stack::Stack,
};

use super::{pipeline, stop};

/// The webhook secret the generator signs with and ingress verifies with.
const SECRET: &str = "corral-loadgen-signing-5d0e7c1a";

/// Signed traffic with every shape in it: retries (some re-serialised),
/// receipts, events corral does not type, drops on both channels, and
/// callbacks with resends and reorders beside them.
fn signed_mix() -> Mix {
    Mix {
        rvm: 0.5,
        success: 0.6,
        duplicates: 0.1,
        out_of_order: 0.1,
        signed: 0.7,
        both_channels: 0.3,
        other_events: 0.2,
        retries: 0.3,
        receipts: 1.0,
        ..Mix::default()
    }
}

fn signed_config(target: String, requests: u64) -> Config {
    let mut config = Config::new(target, TOKEN);
    config.signing_secret = Some(SECRET.into());
    config.load = Load::Closed { connections: 8 };
    config.duration = None;
    config.requests = Some(requests);
    config.mix = signed_mix();
    config
}

/// Requests the ledger says went to the signed route, and to the callback
/// routes.
fn requests_by_route(sent: &Sent) -> (u64, u64) {
    let (mut signed, mut callbacks) = (0, 0);
    for record in sent.records() {
        for (index, &sends) in record.sends.iter().enumerate() {
            if record.shape.is_signed(index) {
                signed += u64::from(sends);
            } else {
                callbacks += u64::from(sends);
            }
        }
    }
    (signed, callbacks)
}

fn counter(metrics: &Metrics, name: &str, labels: &str) -> u64 {
    metrics.get(&format!("{name}{{{labels}}}")) as u64
}

/// Ingress alone (the broker behind it): every request the generator makes
/// in its signed mode is verified and answered 200 — first deliveries,
/// retries signed at other seconds, re-serialised retries, receipts, other
/// events, and the callbacks of drops on both channels — and each is
/// published under its route.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingress_answers_every_signed_delivery_of_the_generator_200() {
    let broker = TestBroker::new().await;
    let mut settings = config::ingress(broker.prefix(), TOKEN);
    settings.signing.secrets = vec![SECRET.into()];
    let ingress = RunningIngress::start(settings).await;
    let run = loadgen::run(signed_config(ingress.base_url(), 1_500))
        .await
        .expect("the run");
    let report = &run.report;
    assert_eq!(report.requests, 1_500, "{report}");
    assert_eq!(
        report.statuses.get(&200).copied(),
        Some(1_500),
        "every request answered 200: {report}"
    );
    let sent = &report.sent;
    assert!(sent.signed_events > 500, "{report}");
    assert!(sent.signed_retried > 50, "{report}");
    assert!(sent.both_channels > 50, "{report}");

    let (signed, callbacks) = requests_by_route(&run.sent);
    assert_eq!(signed + callbacks, 1_500);
    let metrics = ingress.metrics().await;
    let requests = "corral_ingress_requests_total";
    assert_eq!(
        counter(&metrics, requests, r#"route="event",status="200""#),
        signed
    );
    let published = "corral_ingress_published_total";
    assert_eq!(counter(&metrics, published, r#"kind="event""#), signed);
    assert_eq!(
        counter(&metrics, published, r#"kind="sms""#)
            + counter(&metrics, published, r#"kind="rvm""#),
        callbacks
    );
    let refused: f64 = metrics
        .0
        .iter()
        .filter(|(series, _)| series.starts_with("corral_ingress_rejected_total{"))
        .map(|(_, value)| value)
        .sum();
    assert_eq!(refused, 0.0);
    ingress.stop().await.expect("ingress stops cleanly");
}

/// Through ingress and the worker: every signed event answered 200 is one
/// row by its `event_id` (results in `delivery_events`, the rest in
/// `provider_events`) however often the provider delivered it, every
/// callback is one row, and a drop reported on both channels is one
/// `deliveries` row holding the callback's `foreign_id`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_verified_signed_run_stores_every_event_once_by_its_event_id() {
    let mut stack = pipeline(Stack::builder(), &[SECRET]).start().await;
    let run = loadgen::run(signed_config(stack.ingress().base_url(), 2_000))
        .await
        .expect("the run");
    let report = &run.report;
    assert_eq!(report.accepted, 2_000, "every webhook accepted: {report}");
    let options = VerifyOptions {
        timeout: Duration::from_secs(20),
        ..VerifyOptions::default()
    };
    let verification = loadgen::verify(&stack.db().url, &run.sent, &options)
        .await
        .expect("verifying");
    assert!(verification.is_ok(), "{verification}");
    assert!(verification.drained, "{verification}");
    assert_eq!(
        verification.stored_once, verification.webhooks,
        "{verification}"
    );
    assert_eq!(verification.signed_events, report.sent.signed_events);
    assert!(verification.both_channels > 50, "{verification}");

    // The same, counted by the database alone.
    stop(&mut stack).await;
    let db = stack.db();
    let client = db.client().await;
    let count = |sql: &'static str| {
        let client = &client;
        async move { client.query_one(sql, &[]).await.unwrap().get::<_, i64>(0) as u64 }
    };
    let (results, others) = sent_events(&run.sent);
    assert_eq!(
        count("SELECT count(*) FROM delivery_events WHERE event_id IS NOT NULL").await,
        results
    );
    assert_eq!(
        count("SELECT count(DISTINCT event_id) FROM delivery_events").await,
        results
    );
    assert_eq!(count("SELECT count(*) FROM provider_events").await, others);
    assert_eq!(count("SELECT count(*) FROM quarantined_webhooks").await, 0);
}

/// Distinct signed events sent: results, and events corral does not type.
fn sent_events(sent: &Sent) -> (u64, u64) {
    let mut counts = (0, 0);
    for webhook in sent.webhooks() {
        match webhook.webhook.event.map(|event| event.destination) {
            Some(Destination::DeliveryEvents) => counts.0 += 1,
            Some(Destination::ProviderEvents) => counts.1 += 1,
            None => {}
        }
    }
    counts
}

/// The verifier is exact on signed rows too: an event gone, one stored
/// twice, one never sent, and a drop on both channels whose `deliveries`
/// row lost the callback's `foreign_id` are each counted once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_verifier_counts_every_kind_of_wrong_signed_row() {
    let mut stack = pipeline(Stack::builder(), &[SECRET]).start().await;
    let run = loadgen::run(signed_config(stack.ingress().base_url(), 600))
        .await
        .expect("the run");
    let quick = VerifyOptions {
        timeout: Duration::from_secs(15),
        ..VerifyOptions::default()
    };
    let clean = loadgen::verify(&stack.db().url, &run.sent, &quick)
        .await
        .unwrap();
    assert!(clean.is_ok(), "{clean}");
    stop(&mut stack).await;
    let db = stack.db();
    let client = db.client().await;

    let mut webhooks = run.sent.webhooks().filter(|w| w.webhook.event.is_some());
    let other = webhooks
        .find(|w| w.shape == Shape::OtherEvent)
        .expect("an event corral does not type");
    let result = webhooks
        .find(|w| w.shape == Shape::Signed)
        .expect("a signed result");
    let both = run
        .sent
        .webhooks()
        .find(|w| {
            w.shape == Shape::BothChannels && w.body_index == 0 && w.webhook.foreign_id.is_some()
        })
        .expect("a drop on both channels");
    let (other_id, result_id) = (
        other.webhook.event.unwrap().id,
        result.webhook.event.unwrap().id,
    );
    let never_sent = run.sent.run_id().event_id(u64::from(u32::MAX), 0);
    // Lost: an event gone. Unexpected: another made of it, never sent.
    // Duplicated: a result stored twice (possible only without the unique
    // fingerprint, which this private database can spare). Unmerged: the
    // callback's foreign_id gone from its drop's state.
    client
        .batch_execute(&format!(
            "CREATE TEMP TABLE other AS SELECT * FROM provider_events WHERE event_id = '{other_id}';
             DELETE FROM provider_events WHERE event_id = '{other_id}';
             UPDATE other SET event_id = '{never_sent}';
             INSERT INTO provider_events OVERRIDING SYSTEM VALUE SELECT * FROM other;
             ALTER TABLE delivery_events DROP CONSTRAINT delivery_events_fingerprint_key;
             ALTER TABLE delivery_events_legacy
                 DROP CONSTRAINT delivery_events_legacy_fingerprint_key;
             CREATE TEMP TABLE copy AS SELECT * FROM delivery_events WHERE event_id = '{result_id}';
             UPDATE copy SET id = id + 1000000000;
             INSERT INTO delivery_events OVERRIDING SYSTEM VALUE SELECT * FROM copy;
             UPDATE deliveries SET foreign_id = NULL WHERE drop_id = '{}';",
            both.webhook.drop_id
        ))
        .await
        .unwrap();

    let impatient = VerifyOptions {
        timeout: Duration::from_millis(1_500),
        quiet: Duration::from_millis(300),
        poll: Duration::from_millis(50),
    };
    let found = loadgen::verify(&db.url, &run.sent, &impatient)
        .await
        .unwrap();
    assert!(!found.is_ok(), "{found}");
    assert_eq!(found.lost, 1, "{found}");
    assert_eq!(found.unexpected, 1, "{found}");
    assert_eq!(found.duplicated, 1, "{found}");
    assert_eq!(found.extra_rows, 1, "{found}");
    assert_eq!(found.unmerged, 1, "{found}");
    assert_eq!(found.mismatched, 0, "{found}");
    assert_eq!(found.stale_latest, 0, "{found}");
    assert_eq!(found.quarantined, 0, "{found}");
}

/// A database whose worker keeps no signed events cannot hold them: the
/// verifier says so and counts each answered 2xx lost at once, rather than
/// waiting out its deadline for rows that cannot come.
#[tokio::test]
async fn signed_events_are_lost_at_once_where_the_database_cannot_keep_them() {
    let db = TestDatabase::migrated().await;
    db.client()
        .await
        .batch_execute(
            "ALTER TABLE delivery_events DROP COLUMN IF EXISTS event_id;
             DROP TABLE IF EXISTS provider_events;",
        )
        .await
        .unwrap();
    let traffic = Traffic::new(
        corral_loadgen::RunId::random(),
        11,
        Mix {
            signed: 1.0,
            other_events: 0.5,
            ..Mix::default()
        },
    );
    let records: Vec<ItemRecord> = (0..20)
        .map(|index| {
            let mut record = ItemRecord::new(&traffic.item(index));
            record.sends[0] = 1;
            record.confirms[0] = 1;
            record
        })
        .collect();
    let sent = Sent::new(traffic, records);
    let patient = VerifyOptions {
        timeout: Duration::from_secs(60),
        quiet: Duration::from_millis(300),
        poll: Duration::from_millis(50),
    };
    let found = loadgen::verify(&db.url, &sent, &patient).await.unwrap();
    assert_eq!(found.signed_events, 20, "{found}");
    assert_eq!(found.lost, 20, "{found}");
    assert!(found.drained, "{found}");
    assert!(
        found.waited_secs < patient.timeout.as_secs_f64(),
        "it waited out its deadline: {found}"
    );
    assert!(
        found.examples[0].contains("keeps no signed events"),
        "{found}"
    );
}

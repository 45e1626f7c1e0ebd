//! `corral-loadgen` end to end: a short verified run through the real
//! pipeline, and the verifier catching every kind of wrong row (the fault
//! suite stands on it, so it must be exact both ways).
//!
//! - `signed`: the signed mode — signed webhooks with the provider's
//!   retries, both channels for some drops — against the real ingress and
//!   worker, and the verifier on signed rows.

mod signed;

use std::{
    collections::{BTreeSet, HashMap},
    time::Duration,
};

use chrono::{DateTime, Utc};
use corral_loadgen::{self as loadgen, Config, ItemRecord, Load, Mix, Sent, Shape, VerifyOptions};
use corral_testkit::{
    apps::TOKEN,
    fixtures::FAILURE_REASONS,
    stack::{Stack, StackBuilder},
};

use crate::summary::{event_totals, summary_totals};

/// Ingress and worker on `stack`'s private buffer and database, ingress
/// verifying signed webhooks with `secrets` too, and everything the worker
/// keeps beside the events on, the summary rolled up while the run goes on.
fn pipeline(stack: StackBuilder, secrets: &[&str]) -> StackBuilder {
    let secrets: Vec<String> = secrets.iter().map(|secret| (*secret).to_owned()).collect();
    stack
        .ingress(move |ingress| ingress.signing.secrets = secrets.clone())
        .worker(|worker| {
            worker.results.result_events = true;
            worker.summary.summary_rollup_ms = 200;
        })
}

/// Stops the worker, then the ingress, each cleanly.
async fn stop(stack: &mut Stack) {
    stack.stop_worker().await.expect("worker stops cleanly");
    stack.stop_ingress().await.expect("ingress stops cleanly");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_verified_run_loses_and_duplicates_nothing() {
    verified_run(pipeline(Stack::builder(), &[]).start().await).await;
}

/// The same run with SQS as the buffer (the local moto server).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_verified_run_over_sqs_loses_and_duplicates_nothing() {
    // Result events need RabbitMQ whatever the buffer.
    verified_run(pipeline(Stack::builder().sqs().broker(), &[]).start().await).await;
}

/// 3,000 webhooks with resends and reorders through `pipeline`: each
/// answered 200 is one row, `deliveries` shows the newer of each pair, the
/// hourly summary's counts and sums are exactly those of the stored events,
/// and the traffic covered both routes and every reason.
async fn verified_run(mut stack: Stack) {
    let mut config = Config::new(stack.ingress().base_url(), TOKEN);
    config.load = Load::Closed { connections: 16 };
    config.duration = None;
    config.requests = Some(3_000);
    config.mix = Mix {
        rvm: 0.3,
        success: 0.6,
        duplicates: 0.1,
        out_of_order: 0.1,
        without_foreign_id: 0.05,
        ..Mix::default()
    };
    let run = loadgen::run(config).await.expect("the run");
    let report = &run.report;
    assert_eq!(report.requests, 3_000, "{report}");
    assert_eq!(report.accepted, 3_000, "every webhook accepted: {report}");
    assert_eq!(
        report.generator.connections_opened, 16,
        "one keep-alive connection per virtual user: {report}"
    );
    assert!(report.sent.resent_confirmed_twice > 0, "{report}");
    assert!(report.sent.out_of_order_pairs > 0, "{report}");

    let options = VerifyOptions {
        timeout: Duration::from_secs(15),
        ..VerifyOptions::default()
    };
    let verification = loadgen::verify(&stack.db().url, &run.sent, &options)
        .await
        .expect("verifying");
    assert!(verification.is_ok(), "{verification}");
    assert!(verification.drained, "{verification}");
    assert_eq!(verification.lost, 0, "{verification}");
    assert_eq!(verification.duplicated, 0, "{verification}");
    assert_eq!(verification.unexpected, 0, "{verification}");
    assert_eq!(verification.webhooks, report.sent.webhooks);
    assert_eq!(verification.confirmed, verification.webhooks);
    assert_eq!(verification.stored_once, verification.confirmed);

    stop(&mut stack).await;
    let db = stack.db();
    let client = db.client().await;
    // The resends were answered 2xx twice and stored once.
    let events: i64 = client
        .query_one("SELECT count(*) FROM delivery_events", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(u64::try_from(events).unwrap(), report.sent.webhooks);

    // Each out-of-order pair: the newer event was sent first, and it is what
    // `deliveries` shows.
    let pairs: Vec<_> = run.sent.out_of_order_pairs().collect();
    let drop_ids: Vec<&str> = pairs
        .iter()
        .map(|(newer, _)| newer.webhook.drop_id.as_str())
        .collect();
    let latest: HashMap<String, (DateTime<Utc>, String, String)> = client
        .query(
            "SELECT drop_id, attempt_date, status, reason FROM deliveries WHERE drop_id = ANY($1)",
            &[&drop_ids],
        )
        .await
        .unwrap()
        .into_iter()
        .map(|row| (row.get(0), (row.get(1), row.get(2), row.get(3))))
        .collect();
    assert_eq!(latest.len(), pairs.len());
    for (newer, older) in &pairs {
        let newer = &newer.webhook;
        assert!(older.webhook.attempt_date < newer.attempt_date);
        assert_eq!(
            latest[&newer.drop_id],
            (
                newer.attempt_date,
                newer.status.to_owned(),
                newer.reason.to_owned()
            ),
            "deliveries must show the newer event of {}",
            newer.drop_id
        );
    }

    // The summary (rolled up or not) holds exactly the stored events' counts
    // and sums per hour, kind, status and reason; and still does once all
    // of it is rolled up.
    let summary = summary_totals(&client).await;
    assert_eq!(summary, event_totals(&client).await);
    // Spend varied from event to event, so the sums are not a count times
    // a constant.
    let costs: i64 = client
        .query_one(
            "SELECT count(DISTINCT product_cost) FROM delivery_events \
             WHERE kind = 'sms' AND status = 'success'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(costs, 3, "SMS of 1, 2 and 3 parts");
    let mut rolling = db.client().await;
    corral_worker::summary::roll_up(&mut rolling, corral_worker::summary::ROLL_UP_CHUNK)
        .await
        .expect("rolling up")
        .expect("no worker is left to hold the lock");
    assert_eq!(summary_totals(&client).await, summary);
    let left: i64 = client
        .query_one("SELECT count(*) FROM delivery_summary_changes", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(left, 0);

    // The traffic was realistic: both routes, success, every failure reason.
    let kinds: BTreeSet<String> = client
        .query("SELECT DISTINCT kind FROM delivery_events", &[])
        .await
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect();
    assert_eq!(kinds, BTreeSet::from(["rvm".to_owned(), "sms".to_owned()]));
    let reasons: BTreeSet<String> = client
        .query("SELECT DISTINCT reason FROM delivery_events", &[])
        .await
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect();
    for reason in FAILURE_REASONS.iter().chain(&[""]) {
        assert!(reasons.contains(*reason), "no {reason:?} among {reasons:?}");
    }
}

/// The verifier is exact the other way too: each kind of wrong row is
/// counted, once, and fails the verification.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_verifier_counts_every_kind_of_wrong_row() {
    let mut stack = pipeline(Stack::builder(), &[]).start().await;
    let mut config = Config::new(stack.ingress().base_url(), TOKEN);
    // The open loop this time, so both loads go through the pipeline.
    config.load = Load::Open {
        rate: 1_000.0,
        max_connections: 32,
    };
    config.duration = None;
    config.requests = Some(400);
    config.mix = Mix {
        duplicates: 0.2,
        out_of_order: 0.2,
        ..Mix::default()
    };
    let run = loadgen::run(config).await.expect("the run");
    assert_eq!(run.report.accepted, 400, "{}", run.report);
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

    let run_id = run.sent.run_id();
    let of_shape = |shape: Shape| {
        run.sent
            .records()
            .iter()
            .find(|record| run.sent.traffic.item(record.item).shape == shape)
            .map(|record| run_id.drop_id(record.item))
            .expect("the mix makes every shape")
    };
    let singles: Vec<String> = run
        .sent
        .records()
        .iter()
        .filter(|record| run.sent.traffic.item(record.item).shape == Shape::Single)
        .map(|record| run_id.drop_id(record.item))
        .take(3)
        .collect();
    let (lost, copied, unconfirmed) = (&singles[0], &singles[1], &singles[2]);
    let pair = of_shape(Shape::OutOfOrder);
    // Lost: a stored webhook (and its state) gone.
    client
        .batch_execute(&format!(
            "DELETE FROM deliveries WHERE drop_id = '{lost}';
             DELETE FROM delivery_events WHERE drop_id = '{lost}';"
        ))
        .await
        .unwrap();
    // Duplicated: the same webhook stored twice (possible only without the
    // unique fingerprint, which this private database can spare; on a new
    // database the events land in the partition V7 made of the old table,
    // which keeps its own unique fingerprint too).
    let columns = "fingerprint, message_id, kind, drop_id, phone_number, attempt_date, status, \
                   reason, dnc, spam, product_cost, compliance_fee, tts_fee, network_name, \
                   network_type, foreign_id, payload, received_at";
    client
        .batch_execute(&format!(
            "ALTER TABLE delivery_events DROP CONSTRAINT delivery_events_fingerprint_key;
             ALTER TABLE delivery_events_legacy
                 DROP CONSTRAINT delivery_events_legacy_fingerprint_key;
             INSERT INTO delivery_events ({columns})
                 SELECT {columns} FROM delivery_events WHERE drop_id = '{copied}';"
        ))
        .await
        .unwrap();
    // Unexpected: a row of this run that was never sent (an attempt older
    // than any of its drop_id's, so its latest state stays right).
    client
        .batch_execute(&format!(
            "INSERT INTO delivery_events ({columns})
                 SELECT {} FROM delivery_events WHERE drop_id = '{copied}' LIMIT 1;",
            columns.replace("attempt_date", "attempt_date - interval '1 day'")
        ))
        .await
        .unwrap();
    // Stale: `deliveries` went back to the older event of a pair.
    client
        .batch_execute(&format!(
            "UPDATE deliveries d SET attempt_date = e.attempt_date, fingerprint = e.fingerprint
               FROM delivery_events e
              WHERE d.drop_id = '{pair}' AND e.drop_id = d.drop_id
                AND e.attempt_date < d.attempt_date;"
        ))
        .await
        .unwrap();
    // And the ledger: one body claimed never answered 2xx (it is stored:
    // allowed), and one item claimed sent but never answered (not stored:
    // allowed too).
    let mut records: Vec<ItemRecord> = run.sent.records().to_vec();
    let unconfirmed = run_id.item_of(unconfirmed).unwrap();
    let record = records.iter_mut().find(|r| r.item == unconfirmed).unwrap();
    record.confirms = [0; 3];
    let never_arrived = records.iter().map(|r| r.item).max().unwrap() + 1;
    records.push(ItemRecord {
        item: never_arrived,
        shape: run.sent.traffic.item(never_arrived).shape,
        sends: [1, 0, 0],
        confirms: [0, 0, 0],
    });
    let ledger = Sent::new(run.sent.traffic.clone(), records);

    let impatient = VerifyOptions {
        timeout: Duration::from_millis(1_500),
        quiet: Duration::from_millis(300),
        poll: Duration::from_millis(50),
    };
    let found = loadgen::verify(&db.url, &ledger, &impatient).await.unwrap();
    assert!(!found.is_ok(), "{found}");
    assert_eq!(found.lost, 1, "{found}");
    assert_eq!(found.duplicated, 1, "{found}");
    assert_eq!(found.extra_rows, 1, "{found}");
    assert_eq!(found.unexpected, 1, "{found}");
    assert_eq!(found.mismatched, 0, "{found}");
    assert_eq!(found.stale_latest, 1, "{found}");
    assert_eq!(found.quarantined, 0, "{found}");
    assert_eq!(found.unconfirmed_stored, 1, "{found}");
    assert_eq!(found.unconfirmed_missing, 1, "{found}");
    assert_eq!(found.confirmed + 2, found.webhooks, "{found}");
    assert_eq!(found.stored_once + 1 + 1, found.confirmed, "{found}");
}

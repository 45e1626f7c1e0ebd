//! Suppressions: the numbers a sender must not message again, kept by the
//! worker from the webhooks in the batch's own transaction, exactly once and
//! whatever the order events arrive in.

use corral_contract::envelope::Kind;
use corral_testkit::{apps::RunningWorker, fixtures};
use corral_worker::commands::{
    self, Outcome,
    suppressions::{SuppressionClass, SuppressionCommand},
};
use tokio_postgres::Client;

use super::helpers::*;

/// The provider's failure sample with this number, date, reason and flag.
fn payload(drop_id: &str, phone: &str, attempt_date: &str, reason: &str, dnc: bool) -> String {
    fixtures::DeliveryStatus {
        drop_id,
        phone_number: phone,
        attempt_date,
        reason: Some(reason),
        dnc,
        ..fixtures::DeliveryStatus::default()
    }
    .body()
}

/// A suppression as a sender reads it: number, kind, class, reason, first
/// and last seen (RFC 3339), in force, and the drop_ids of the events that
/// put it there and were seen last.
type Row = (
    String,
    String,
    String,
    Option<String>,
    String,
    String,
    bool,
    String,
    String,
);

async fn suppressions(client: &Client) -> Vec<Row> {
    client
        .query(
            "SELECT s.phone_number, s.kind, s.class, s.reason,
                    to_char(s.first_seen AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'),
                    to_char(s.last_seen AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'),
                    s.active, first.drop_id, last.drop_id
             FROM suppressions s
             JOIN delivery_events first ON first.id = s.event_id
             JOIN delivery_events last ON last.id = s.last_event_id
             ORDER BY 1, 2, 3",
            &[],
        )
        .await
        .expect("suppressions are readable")
        .iter()
        .map(|row| {
            (
                row.get(0),
                row.get(1),
                row.get(2),
                row.get(3),
                row.get(4),
                row.get(5),
                row.get(6),
                row.get(7),
                row.get(8),
            )
        })
        .collect()
}

fn row(
    phone: &str,
    kind: &str,
    class: &str,
    reason: Option<&str>,
    seen: (&str, &str),
    active: bool,
    events: (&str, &str),
) -> Row {
    (
        phone.to_owned(),
        kind.to_owned(),
        class.to_owned(),
        reason.map(str::to_owned),
        seen.0.to_owned(),
        seen.1.to_owned(),
        active,
        events.0.to_owned(),
        events.1.to_owned(),
    )
}

#[tokio::test]
async fn every_suppressing_class_comes_from_a_real_payload_and_other_reasons_suppress_nothing() {
    let stack = worker_stack().start().await;
    let (broker, db) = (stack.broker(), stack.db());
    let worker = RunningWorker::start(stack.worker_config()).await;
    let at = "2026-11-27T05:24:31.000Z";
    let sms = Kind::Sms.routing_key();
    let rvm = Kind::Rvm.routing_key();
    let cases = [
        (sms, "d-opted", "+15550000001", "Opted out", false),
        (sms, "d-litigator", "+15550000002", "Known Litigator", false),
        (rvm, "d-internal", "+15550000003", "Internal DNC", false),
        (
            sms,
            "d-carrier",
            "+15550000004",
            "Prohibited by carrier or not SMS enabled",
            false,
        ),
        // On a do-not-call list, whatever the outcome: here a success.
        (rvm, "d-dnc", "+15550000005", "", true),
        // Both a reason and the flag: two classes for one number.
        (sms, "d-both", "+15550000006", "Opted out", true),
        // Reasons that say nothing about the number's consent or reach.
        (sms, "d-spam", "+15550000007", "Spam detected", false),
        (
            sms,
            "d-unreachable",
            "+15550000008",
            "Temporarily unreachable",
            false,
        ),
        (sms, "d-too-many", "+15550000009", "Too Many", false),
        (sms, "d-funds", "+15550000010", "No Funds", false),
        (sms, "d-success", "+15550000011", "", false),
        (
            sms,
            "d-unknown",
            "+15550000012",
            "Recipient said hello",
            false,
        ),
    ];
    for (key, drop_id, phone, reason, dnc) in cases {
        send(broker, key, payload(drop_id, phone, at, reason, dnc)).await;
    }
    // A provider resend of the opt-out changes nothing.
    send(
        broker,
        sms,
        payload("d-opted", "+15550000001", at, "Opted out", false),
    )
    .await;
    let client = db.client().await;
    wait_count(&client, EVENTS, cases.len() as i64).await;
    // Counted once each (the resend is a duplicate), an undocumented reason as `other`.
    let metrics = settled(&worker, DUPLICATE, 1.0).await;
    let deliveries = |kind: &str, status: &str, reason: &str| {
        metrics.get(&format!(
            r#"corral_worker_deliveries_total{{kind="{kind}",status="{status}",reason="{reason}",reason_code="none"}}"#
        ))
    };
    assert_eq!(deliveries("sms", "failure", "Opted out"), 2.0);
    assert_eq!(deliveries("sms", "failure", "No Funds"), 1.0);
    assert_eq!(deliveries("sms", "failure", "other"), 1.0);
    assert_eq!(deliveries("sms", "success", "none"), 1.0);
    assert_eq!(deliveries("rvm", "success", "none"), 1.0);
    assert_eq!(deliveries("rvm", "failure", "Internal DNC"), 1.0);
    assert_eq!(deliveries("rvm", "failure", "Opted out"), 0.0);

    let seen = ("2026-11-27T05:24:31Z", "2026-11-27T05:24:31Z");
    assert_eq!(
        suppressions(&client).await,
        vec![
            row(
                "+15550000001",
                "sms",
                "opted_out",
                Some("Opted out"),
                seen,
                true,
                ("d-opted", "d-opted")
            ),
            row(
                "+15550000002",
                "sms",
                "litigator",
                Some("Known Litigator"),
                seen,
                true,
                ("d-litigator", "d-litigator")
            ),
            row(
                "+15550000003",
                "rvm",
                "internal_dnc",
                Some("Internal DNC"),
                seen,
                true,
                ("d-internal", "d-internal")
            ),
            row(
                "+15550000004",
                "sms",
                "carrier",
                Some("Prohibited by carrier or not SMS enabled"),
                seen,
                true,
                ("d-carrier", "d-carrier"),
            ),
            row(
                "+15550000005",
                "rvm",
                "dnc",
                None,
                seen,
                true,
                ("d-dnc", "d-dnc")
            ),
            row(
                "+15550000006",
                "sms",
                "dnc",
                None,
                seen,
                true,
                ("d-both", "d-both")
            ),
            row(
                "+15550000006",
                "sms",
                "opted_out",
                Some("Opted out"),
                seen,
                true,
                ("d-both", "d-both")
            ),
        ]
    );
    // The lookup a sender makes before a send is served by the primary key
    // (seq scans off: on a table this small the planner would rightly scan).
    client
        .batch_execute("SET enable_seqscan = off")
        .await
        .expect("a session setting");
    let plan: Vec<String> = client
        .query(
            "EXPLAIN (COSTS OFF) SELECT class FROM suppressions \
             WHERE phone_number = '+15550000001' AND active",
            &[],
        )
        .await
        .expect("explain")
        .iter()
        .map(|row| row.get(0))
        .collect();
    assert!(
        plan.iter().any(|line| line.contains("suppressions_pkey")),
        "the lookup scans instead of using the key: {plan:#?}"
    );
    worker.stop().await.expect("the worker stops cleanly");
}

#[tokio::test]
async fn an_older_event_arriving_late_never_lifts_or_moves_a_newer_suppression() {
    let stack = worker_stack().start().await;
    let (broker, db) = (stack.broker(), stack.db());
    // One message per batch, so arrival order is commit order.
    let config = batches_of(1, stack.worker_config());
    let worker = RunningWorker::start(config.clone()).await;
    let client = db.client().await;
    let phone = "+15552224444";
    let sms = Kind::Sms.routing_key();
    let mut stored = 0;
    let mut deliver = async |drop_id: &str, at: &str, reason: &str| {
        send(broker, sms, payload(drop_id, phone, at, reason, false)).await;
        stored += 1;
        wait_count(&client, EVENTS, stored).await;
    };

    deliver("d-newer", "2026-11-20T10:00:00.000Z", "Opted out").await;
    // Older events arriving after it: a success (the number took a message
    // before it opted out) and an earlier opt-out.
    deliver("d-old-success", "2026-11-10T10:00:00.000Z", "").await;
    deliver("d-older", "2026-11-01T10:00:00.000Z", "Opted out").await;
    let expected = |active, last: (&str, &str)| {
        vec![row(
            phone,
            "sms",
            "opted_out",
            Some("Opted out"),
            ("2026-11-01T10:00:00Z", last.0),
            active,
            ("d-older", last.1),
        )]
    };
    assert_eq!(
        suppressions(&client).await,
        expected(true, ("2026-11-20T10:00:00Z", "d-newer"))
    );

    // The recipient opted in again in writing: an operator lifts it.
    let mut out = Vec::new();
    commands::suppressions::run(
        SuppressionCommand::Lift {
            phone: phone.to_owned(),
            kind: None,
            class: Some(SuppressionClass::OptedOut),
            all_classes: false,
            by: "ops: written opt-in, ticket 42".to_owned(),
            dry_run: false,
            yes: true,
        },
        &config,
        &mut out,
    )
    .await
    .expect("the suppression is lifted");
    let report = String::from_utf8(out).expect("UTF-8");
    assert!(report.contains("# lifted 1 suppression(s)"), "{report}");
    assert!(
        report.contains("ops: written opt-in, ticket 42"),
        "{report}"
    );
    assert_eq!(
        suppressions(&client).await,
        expected(false, ("2026-11-20T10:00:00Z", "d-newer"))
    );
    // Lifting again finds nothing in force, and says so (exit code 3).
    let again = commands::suppressions::run(
        SuppressionCommand::Lift {
            phone: phone.to_owned(),
            kind: None,
            class: None,
            all_classes: true,
            by: "ops".to_owned(),
            dry_run: false,
            yes: true,
        },
        &config,
        &mut Vec::new(),
    )
    .await
    .expect("a lift that matches nothing is not an error");
    let Outcome::NothingMatched(said) = &again else {
        panic!("nothing is in force, yet {again:?}");
    };
    assert_eq!(again.exit_code(), 3);
    assert!(
        said.contains("no suppression in force matches +15552224444"),
        "{said}"
    );

    // An opt-out attempted before the lift's last event, arriving late, does
    // not put it back...
    deliver("d-late", "2026-11-15T10:00:00.000Z", "Opted out").await;
    assert_eq!(
        suppressions(&client).await,
        expected(false, ("2026-11-20T10:00:00Z", "d-newer"))
    );
    // ...a newer one does.
    deliver("d-again", "2026-11-25T10:00:00.000Z", "Opted out").await;
    assert_eq!(
        suppressions(&client).await,
        expected(true, ("2026-11-25T10:00:00Z", "d-again"))
    );
    let mut listed = Vec::new();
    commands::suppressions::run(
        SuppressionCommand::List {
            phone: Some(phone.to_owned()),
            kind: None,
            class: None,
            all: false,
            list: commands::output::ListArgs::first(10),
        },
        &config,
        &mut listed,
    )
    .await
    .expect("listing works");
    let listed = String::from_utf8(listed).expect("UTF-8");
    assert!(
        listed.contains(
            "+15552224444\tsms\topted_out\tyes\t2026-11-01T10:00:00+00:00\t2026-11-25T10:00:00+00:00\tOpted out\t"
        ),
        "{listed}"
    );
    worker.stop().await.expect("the worker stops cleanly");
}

#[tokio::test]
async fn suppressions_are_the_same_whatever_order_the_events_arrive_in() {
    let events = [
        ("d-1", "2026-11-03T10:00:00.000Z", "Opted out", false),
        ("d-2", "2026-11-01T10:00:00.000Z", "Opted out", true),
        ("d-3", "2026-11-02T10:00:00.000Z", "Known Litigator", false),
        ("d-4", "2026-11-04T10:00:00.000Z", "", true),
    ];
    let mut results = Vec::new();
    for order in [[0, 1, 2, 3], [3, 2, 1, 0], [1, 3, 0, 2]] {
        let stack = worker_stack().start().await;
        let (broker, db) = (stack.broker(), stack.db());
        let worker = RunningWorker::start(batches_of(1, stack.worker_config())).await;
        let client = db.client().await;
        for (n, index) in order.iter().enumerate() {
            let (drop_id, at, reason, dnc) = events[*index];
            let body = payload(drop_id, "+15557770000", at, reason, dnc);
            send(broker, Kind::Sms.routing_key(), body).await;
            wait_count(&client, EVENTS, n as i64 + 1).await;
        }
        results.push(suppressions(&client).await);
        worker.stop().await.expect("the worker stops cleanly");
    }
    let phone = "+15557770000";
    assert_eq!(
        results[0],
        vec![
            row(
                phone,
                "sms",
                "dnc",
                None,
                ("2026-11-01T10:00:00Z", "2026-11-04T10:00:00Z"),
                true,
                ("d-2", "d-4")
            ),
            row(
                phone,
                "sms",
                "litigator",
                Some("Known Litigator"),
                ("2026-11-02T10:00:00Z", "2026-11-02T10:00:00Z"),
                true,
                ("d-3", "d-3")
            ),
            row(
                phone,
                "sms",
                "opted_out",
                Some("Opted out"),
                ("2026-11-01T10:00:00Z", "2026-11-03T10:00:00Z"),
                true,
                ("d-2", "d-1")
            ),
        ]
    );
    assert_eq!(results[1], results[0], "reversed order");
    assert_eq!(results[2], results[0], "shuffled order");
}

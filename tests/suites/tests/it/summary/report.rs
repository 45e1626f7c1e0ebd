//! `corral-worker report` on a known set of events: exact sums in text and
//! JSON, the window widened to whole hours, the same answer before and after
//! a roll-up, and its errors.

use clap::Parser;
use corral_contract::envelope::Kind;
use corral_testkit::{
    apps::RunningWorker, config::short_waits, database::TestDatabase, fixtures, stack::Stack,
};
use corral_worker::{
    commands::{
        Cli, Command,
        report::{self, ReportArgs},
    },
    config::WorkerConfig,
    summary,
};

use super::{event_totals, rows, summary_totals};
use crate::worker::helpers::{DUPLICATE, EVENTS, STORED, config, send, settled, wait_count};

/// A webhook in the provider's shape with the given money (JSON number
/// text, so the expected sums are exact). `reason: None` leaves the field
/// out, as a success may.
fn webhook(
    drop_id: &str,
    attempt_date: &str,
    reason: Option<&str>,
    product_cost: &str,
    tts_fee: &str,
) -> String {
    fixtures::DeliveryStatus {
        drop_id,
        attempt_date,
        reason,
        product_cost,
        tts_fee,
        foreign_id: &format!("order-{drop_id}"),
        ..fixtures::DeliveryStatus::default()
    }
    .body()
}

/// Runs the command as `corral-worker report <args>` would: its output, or
/// its error as `corral-worker` prints it.
async fn report(config: &WorkerConfig, args: &[&str]) -> Result<String, String> {
    let cli = Cli::try_parse_from(["corral-worker", "report"].iter().chain(args))
        .map_err(|err| err.to_string())?;
    let Some(Command::Report(args)) = cli.command else {
        panic!("parsed as another command");
    };
    let mut out = Vec::new();
    report::run(args, config, &mut out)
        .await
        .map_err(|err| format!("{err:#}"))?;
    Ok(String::from_utf8(out).expect("UTF-8"))
}

#[tokio::test]
async fn the_report_shows_exact_sums_over_whole_hours() {
    let stack = Stack::builder()
        .database()
        .worker_settings(short_waits)
        .start()
        .await;
    let (broker, db) = (stack.broker(), stack.db());
    let mut settings = stack.worker_config();
    // The round at start finds nothing; the test rolls up itself.
    settings.summary.summary_rollup_ms = 3_600_000;
    let worker = RunningWorker::start(settings.clone()).await;

    let (sms, rvm) = (Kind::Sms.routing_key(), Kind::Rvm.routing_key());
    let sent = [
        (
            sms,
            webhook("a1", "2026-11-27T05:10:00Z", Some(""), "0.099", "0"),
        ),
        (
            sms,
            webhook("a2", "2026-11-27T05:20:00Z", Some(""), "0.099", "0"),
        ),
        // A success without a reason at all: the same line as reason "".
        (
            sms,
            webhook("a3", "2026-11-27T05:59:59.999Z", None, "0.198", "0"),
        ),
        // 06:10 in UTC.
        (
            sms,
            webhook("a4", "2026-11-27T08:10:00+02:00", Some(""), "0.099", "0"),
        ),
        (
            sms,
            webhook(
                "a5",
                "2026-11-27T05:30:00Z",
                Some("Invalid message"),
                "0",
                "0",
            ),
        ),
        (
            rvm,
            webhook("b1", "2026-11-27T06:15:00Z", Some(""), "0.045", "0.0125"),
        ),
        // Not one of the documented twelve.
        (
            rvm,
            webhook(
                "b2",
                "2026-11-27T06:45:00Z",
                Some("Carrier said no"),
                "0",
                "0",
            ),
        ),
        // Outside every window below.
        (
            sms,
            webhook("c1", "2026-11-20T12:00:00Z", Some(""), "0.099", "0"),
        ),
    ];
    for (routing_key, body) in &sent {
        send(broker, routing_key, body).await;
    }
    // A resend of a1: stored once, counted once.
    send(broker, sms, &sent[0].1).await;
    let client = db.client().await;
    settled(&worker, STORED, 8.0).await;
    settled(&worker, DUPLICATE, 1.0).await;
    wait_count(&client, EVENTS, 8).await;
    worker.stop().await.expect("worker stops cleanly");
    assert_eq!(rows(&client, "delivery_summary").await, 0);

    let day = [
        "--since",
        "2026-11-27T00:00:00Z",
        "--until",
        "2026-11-28T00:00:00Z",
    ];
    let day_text = report(&settings, &day).await.unwrap();
    assert_eq!(
        day_text,
        "# attempt_date in whole UTC hours [2026-11-27T00:00:00Z, 2026-11-28T00:00:00Z), the hours overlapping --since 2026-11-27T00:00:00Z --until 2026-11-28T00:00:00Z\n\
         # kind\tstatus\treason\tevents\tproduct_cost\tcompliance_fee\ttts_fee\treason_code\n\
         rvm\tfailure\tCarrier said no\t1\t0\t0.0029\t0\t-\n\
         rvm\tsuccess\t-\t1\t0.045\t0.0029\t0.0125\t-\n\
         sms\tfailure\tInvalid message\t1\t0\t0.0029\t0\t-\n\
         sms\tsuccess\t-\t4\t0.495\t0.0116\t0\t-\n\
         total\t-\t-\t7\t0.540\t0.0203\t0.0125\t-\n"
    );

    // From 05:30 to 06:00: the hour 05 whole, not 06.
    let by_hour = [
        "--since",
        "2026-11-27T05:30:00Z",
        "--until",
        "2026-11-27T06:00:00Z",
        "--by-hour",
    ];
    let text = report(&settings, &by_hour).await.unwrap();
    assert_eq!(
        text,
        "# attempt_date in whole UTC hours [2026-11-27T05:00:00Z, 2026-11-27T06:00:00Z), the hours overlapping --since 2026-11-27T05:30:00Z --until 2026-11-27T06:00:00Z\n\
         # hour\tkind\tstatus\treason\tevents\tproduct_cost\tcompliance_fee\ttts_fee\treason_code\n\
         2026-11-27T05:00:00Z\tsms\tfailure\tInvalid message\t1\t0\t0.0029\t0\t-\n\
         2026-11-27T05:00:00Z\tsms\tsuccess\t-\t3\t0.396\t0.0087\t0\t-\n\
         total\t-\t-\t-\t4\t0.396\t0.0116\t0\t-\n"
    );

    let json_args = [
        "--since",
        "2026-11-27T06:00:01Z",
        "--until",
        "2026-11-27T06:30:00Z",
        "--by-hour",
        "--json",
    ];
    let json: serde_json::Value =
        serde_json::from_str(&report(&settings, &json_args).await.unwrap()).unwrap();
    assert_eq!(
        json,
        serde_json::json!({
            "window": {
                "from": "2026-11-27T06:00:00Z",
                "to": "2026-11-27T07:00:00Z",
                "since": "2026-11-27T06:00:01Z",
                "until": "2026-11-27T06:30:00Z",
            },
            "by_hour": true,
            "rows": [
                {"hour": "2026-11-27T06:00:00Z", "kind": "rvm", "status": "failure",
                 "reason": "Carrier said no", "reason_code": null, "events": 1, "product_cost": "0",
                 "compliance_fee": "0.0029", "tts_fee": "0"},
                {"hour": "2026-11-27T06:00:00Z", "kind": "rvm", "status": "success",
                 "reason": "", "reason_code": null, "events": 1, "product_cost": "0.045",
                 "compliance_fee": "0.0029", "tts_fee": "0.0125"},
                {"hour": "2026-11-27T06:00:00Z", "kind": "sms", "status": "success",
                 "reason": "", "reason_code": null, "events": 1, "product_cost": "0.099",
                 "compliance_fee": "0.0029", "tts_fee": "0"},
            ],
            "total": {"events": 3, "product_cost": "0.144", "compliance_fee": "0.0087",
                      "tts_fee": "0.0125"},
        })
    );

    // A window with nothing in it: no lines, a zero total.
    let empty = report(
        &settings,
        &[
            "--since",
            "2026-11-28T00:00:00Z",
            "--until",
            "2026-11-28T01:00:00Z",
        ],
    )
    .await
    .unwrap();
    assert!(
        empty.ends_with("reason_code\ntotal\t-\t-\t0\t0\t0\t0\t-\n"),
        "{empty}"
    );

    // After a roll-up everything is in delivery_summary, and the report is
    // the same.
    let before = summary_totals(&client).await;
    assert_eq!(before, event_totals(&client).await);
    let rolled = summary::roll_up(&mut db.client().await, summary::ROLL_UP_CHUNK)
        .await
        .unwrap();
    let rolled = rolled.expect("no other roll-up holds the lock");
    assert!(rolled.changes > 0, "{rolled:?}");
    assert_eq!(
        rolled.rows, 6,
        "one summary row per hour, kind, status, reason"
    );
    assert_eq!(rows(&client, "delivery_summary_changes").await, 0);
    assert_eq!(rows(&client, "delivery_summary").await, 6);
    assert_eq!(summary_totals(&client).await, before);
    assert_eq!(report(&settings, &day).await.unwrap(), day_text);
}

#[tokio::test]
async fn the_report_refuses_a_bad_window_and_names_an_unreachable_database() {
    let db = TestDatabase::migrated().await;
    let settings = config(&db.url, "unused");

    let bad = Cli::try_parse_from(["corral-worker", "report", "--since", "yesterday"])
        .unwrap_err()
        .to_string();
    assert!(
        bad.contains("\"yesterday\" is neither a duration before now"),
        "{bad}"
    );

    let backwards = report(
        &settings,
        &[
            "--since",
            "2026-11-27T06:00:00Z",
            "--until",
            "2026-11-27T05:00:00Z",
        ],
    )
    .await
    .unwrap_err();
    assert_eq!(
        backwards,
        "--since (2026-11-27T06:00:00Z) must be before --until (2026-11-27T05:00:00Z)"
    );
    // A duration is before now, so --until 1h with the default --since 24h
    // is a window, and --since 1h --until 2h is not.
    report(&settings, &["--until", "1h"]).await.unwrap();
    let reversed = report(&settings, &["--since", "1h", "--until", "2h"])
        .await
        .unwrap_err();
    assert!(reversed.contains("must be before --until"), "{reversed}");

    let mut nowhere = settings.clone();
    let port = corral_testkit::process::free_port();
    nowhere.db.database_url = format!("postgres://postgres@127.0.0.1:{port}/corral");
    let unreachable = report(&nowhere, &["--since", "24h"]).await.unwrap_err();
    assert!(
        unreachable.starts_with("connecting to PostgreSQL (CORRAL_DATABASE_URL)"),
        "{unreachable}"
    );
}

#[test]
fn the_report_defaults_to_the_last_24_hours() {
    let cli = Cli::try_parse_from(["corral-worker", "report"]).unwrap();
    let Some(Command::Report(ReportArgs {
        since,
        until,
        json,
        by_hour,
    })) = cli.command
    else {
        panic!("parsed as another command");
    };
    assert_eq!(
        since,
        report::Moment::Ago(std::time::Duration::from_secs(86_400))
    );
    assert_eq!((until, json, by_hour), (None, false, false));
}

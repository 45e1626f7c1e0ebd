//! The operator commands as a script sees them, through the real binary: the
//! report alone on stdout, `--json` one document, a listing cut short said on
//! stderr, and exit codes 0 (done), 2 (usage or a refused lift) and 3 (nothing
//! matched), the error printed once.

use std::process::Output;

use corral_testkit::{
    database::TestDatabase,
    process::{Binary, binary_path, prepare_binaries},
};

/// Runs `corral-worker args…` against `db` and returns what it did.
async fn worker(db: &TestDatabase, args: &[&str]) -> Output {
    prepare_binaries().await;
    tokio::process::Command::new(binary_path(Binary::Worker))
        .args(args)
        .env("CORRAL_DATABASE_URL", &db.url)
        .env("CORRAL_LOG", "info")
        .output()
        .await
        .expect("corral-worker runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

async fn with_suppressions() -> TestDatabase {
    let db = TestDatabase::migrated().await;
    db.client()
        .await
        .batch_execute(
            "INSERT INTO suppressions (phone_number, kind, class, reason, first_seen, last_seen,
                                       event_id, last_event_id)
             VALUES ('+15550000001', 'sms', 'opted_out', 'Opted out',
                     '2026-11-02T10:00:00Z', '2026-11-02T10:00:00Z', 1, 1),
                    ('+15550000001', 'sms', 'carrier', 'Prohibited by carrier or not SMS enabled',
                     '2026-11-01T10:00:00Z', '2026-11-03T10:00:00Z', 2, 3),
                    ('+15550000002', 'rvm', 'litigator', 'Known Litigator',
                     '2026-11-03T10:00:00Z', '2026-11-03T10:00:00Z', 4, 4);",
        )
        .await
        .expect("suppressions");
    db
}

#[tokio::test]
async fn a_listing_is_oldest_first_in_json_and_says_on_stderr_when_cut_short() {
    let db = with_suppressions().await;

    let all = worker(&db, &["suppressions", "list", "--json"]).await;
    assert_eq!(all.status.code(), Some(0), "{}", text(&all.stderr));
    let document: serde_json::Value = serde_json::from_slice(&all.stdout)
        .unwrap_or_else(|err| panic!("stdout is one JSON document ({err}): {}", text(&all.stdout)));
    let classes: Vec<&str> = document["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|item| item["class"].as_str().expect("class"))
        .collect();
    assert_eq!(
        classes,
        ["carrier", "opted_out", "litigator"],
        "by first_seen"
    );
    assert_eq!(document["truncated"], false);
    assert_eq!(
        document["items"][1]["first_seen"],
        "2026-11-02T10:00:00+00:00"
    );
    assert!(!text(&all.stderr).contains("there are more"));

    let cut = worker(&db, &["suppressions", "list", "--json", "--limit", "2"]).await;
    assert_eq!(cut.status.code(), Some(0));
    let document: serde_json::Value = serde_json::from_slice(&cut.stdout).expect("JSON");
    assert_eq!(document["items"].as_array().map(Vec::len), Some(2));
    assert_eq!(document["truncated"], true);
    assert!(
        text(&cut.stderr).contains("showing the first 2 suppressions; there are more"),
        "{}",
        text(&cut.stderr)
    );

    // The tab-separated form: header, rows, summary, and no log line.
    let lines = worker(&db, &["suppressions", "list"]).await;
    let stdout = text(&lines.stdout);
    assert!(stdout.starts_with("# phone_number\t"), "{stdout}");
    assert!(stdout.ends_with("# listed 3 suppression(s)\n"), "{stdout}");
    assert!(!stdout.contains("INFO"), "logs stay on stderr: {stdout}");
}

#[tokio::test]
async fn lifting_needs_a_class_a_valid_number_and_yes_for_an_opt_out() {
    let db = with_suppressions().await;
    let lift = |extra: &[&str]| {
        let mut args = vec!["suppressions", "lift", "--by", "ops: ticket 1"];
        args.extend_from_slice(extra);
        args.into_iter().map(str::to_owned).collect::<Vec<_>>()
    };
    let run = |args: Vec<String>| {
        let db = &db;
        async move {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            worker(db, &args).await
        }
    };

    for (args, said) in [
        (lift(&["--phone", "+15550000001"]), "--class"),
        (
            lift(&["--phone", "5550000001", "--class", "carrier"]),
            "E.164",
        ),
        (
            lift(&["--phone", "+15550000001", "--class", "opted_out"]),
            "--yes",
        ),
        (lift(&["--phone", "+15550000001", "--all-classes"]), "--yes"),
    ] {
        let refused = run(args.clone()).await;
        assert_eq!(refused.status.code(), Some(2), "{args:?}");
        let stderr = text(&refused.stderr);
        assert!(stderr.contains(said), "{args:?}: {stderr}");
        assert!(refused.stdout.is_empty(), "{args:?}");
    }

    // A dry run shows the opt-out and lifts nothing.
    let dry = run(lift(&[
        "--phone",
        "+15550000001",
        "--class",
        "opted_out",
        "--dry-run",
    ]))
    .await;
    assert_eq!(dry.status.code(), Some(0), "{}", text(&dry.stderr));
    assert!(text(&dry.stdout).contains("# would lift 1 suppression(s)"));
    let active = "SELECT count(*) FROM suppressions WHERE active";
    let count = |client: tokio_postgres::Client| async move {
        client
            .query_one(active, &[])
            .await
            .expect("count")
            .get::<_, i64>(0)
    };
    assert_eq!(count(db.client().await).await, 3);

    let lifted = run(lift(&[
        "--phone",
        "+15550000001",
        "--class",
        "opted_out",
        "--yes",
    ]))
    .await;
    assert_eq!(lifted.status.code(), Some(0), "{}", text(&lifted.stderr));
    assert_eq!(count(db.client().await).await, 2);

    // Again: nothing in force, exit 3, said once on stderr.
    let again = run(lift(&[
        "--phone",
        "+15550000001",
        "--class",
        "opted_out",
        "--yes",
    ]))
    .await;
    assert_eq!(again.status.code(), Some(3));
    let stderr = text(&again.stderr);
    assert_eq!(
        stderr.matches("no suppression in force matches").count(),
        1,
        "{stderr}"
    );
    assert!(again.stdout.is_empty());
}

#[tokio::test]
async fn a_failed_command_prints_its_error_once_and_exits_1() {
    let db = TestDatabase::new().await;
    // Not migrated: the table is missing.
    let failed = worker(&db, &["quarantine", "list"]).await;
    assert_eq!(failed.status.code(), Some(1));
    let stderr = text(&failed.stderr);
    assert_eq!(
        stderr.matches("corral-worker: error:").count(),
        1,
        "{stderr}"
    );
    assert!(stderr.contains("quarantined_webhooks"), "{stderr}");
    assert!(failed.stdout.is_empty());
}

#[tokio::test]
async fn a_command_s_help_lists_its_own_options_before_the_settings() {
    let db = TestDatabase::new().await;
    let help = worker(&db, &["quarantine", "list", "--help"]).await;
    assert_eq!(help.status.code(), Some(0));
    let help = text(&help.stdout);
    let own = help.find("--limit").expect("its own option");
    let settings = help
        .find("Settings (each also a CORRAL_* variable)")
        .expect("the settings heading");
    assert!(own < settings, "{help}");
}

//! Verified TLS to PostgreSQL.

use std::time::Duration;

use corral_contract::envelope::Kind;
use corral_testkit::{
    apps::RunningWorker,
    database::TestDatabase,
    tls::{TestCa, TlsFront},
    wait,
};

use super::helpers::*;

/// With `sslmode=require` and a CA file the worker migrates, consumes and
/// stores over TLS, and never falls back to plaintext.
#[tokio::test]
async fn stores_webhooks_over_verified_tls() {
    let stack = worker_stack().start().await;
    let (broker, db) = (stack.broker(), stack.db());
    let ca = TestCa::new("trusted");
    let front = TlsFront::postgres(&ca).await;
    let mut settings = config(&front.postgres_url(&db.name), broker.prefix());
    settings.db.database_ca_file = Some(ca.pem_file().to_owned());
    let worker = RunningWorker::start(settings).await;

    let sent = send(broker, Kind::Sms.routing_key(), valid("").1).await;
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
        settings.db.database_ca_file = ca_file;
        let err = corral_worker::Application::build(settings, Default::default())
            .expect_err("the worker must refuse this configuration");
        let message = format!("{err:#}");
        assert!(message.contains(reason), "{url}: {message}");
    }
}

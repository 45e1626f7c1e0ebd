//! Both paths down: 503, nothing stored; readiness follows either path.

use std::time::{Duration, Instant};

use corral_testkit::{apps::RunningIngress, fixtures, proxy::TcpProxy, stack::Stack, wait};

use super::helpers::*;
use crate::{
    ingress::helpers::{
        accepted, authenticated, broker_via_proxy, publish_failures, send, unavailable,
    },
    worker::helpers::count,
};

/// A proxy in front of the shared PostgreSQL, and the settings of an
/// ingress of `stack` spooling through it.
async fn spool_proxy(stack: &Stack) -> (TcpProxy, corral_ingress::config::IngressConfig) {
    let proxy = TcpProxy::postgres().await;
    let mut config = stack.ingress_config();
    config.spool_database_url = Some(format!(
        "postgres://{}@{}/{}",
        stack.writer().role,
        proxy.addr(),
        stack.db().name
    ));
    (proxy, config)
}

/// Neither the broker nor the spool can be reached: 503 with Retry-After,
/// counted as a spool failure, and nothing stored anywhere (the spool's
/// table and the queue are empty once both are back).
#[tokio::test]
async fn with_both_paths_down_a_webhook_gets_503_and_is_stored_nowhere() {
    let stack = stage().start().await;
    let (postgres, config) = spool_proxy(&stack).await;
    let proxy = stack.amqp_proxy();
    proxy.cut();
    postgres.cut();
    let ingress = RunningIngress::start_unready(config).await;
    ingress.wait_ready(false).await;

    let before = ingress.metrics().await;
    for kind in ["sms", "rvm"] {
        unavailable(send(authenticated(&ingress, kind).body(fixtures::SMS_SUCCESS)).await).await;
    }
    let after = ingress.metrics().await;
    assert_eq!(
        after.get(SPOOL_FAILURES) - before.get(SPOOL_FAILURES),
        2.0,
        "each webhook the spool could not commit is counted"
    );
    assert_eq!(
        publish_failures(&after, "unavailable") - publish_failures(&before, "unavailable"),
        2.0,
        "the broker's cause is still counted"
    );
    assert_eq!(after.get("corral_ingress_spool_connected"), 0.0);

    postgres.restore();
    proxy.restore();
    ingress.wait_ready(true).await;
    let (client, broker) = (stack.client().await, stack.broker());
    assert_eq!(count(&client, SPOOLED_ROWS).await, 0);
    assert_eq!(broker.ready_count(&broker.queue()).await, 0);
    assert_eq!(
        broker
            .ready_count(&broker.topology.unroutable_queue())
            .await,
        0
    );
}

/// The broker stops answering and the spool cannot be reached: the request
/// waits for its confirm until `CORRAL_PUBLISH_TIMEOUT_MS`, then gets 503
/// with Retry-After, never 200, and the spool's failure is counted.
#[tokio::test]
async fn with_a_silent_broker_and_no_spool_a_webhook_gets_503_at_the_deadline() {
    let stack = stage()
        .ingress_settings(|ingress| {
            ingress.spool_after_ms = 200;
            ingress.amqp.heartbeat_secs = 30;
        })
        .start()
        .await;
    let (postgres, config) = spool_proxy(&stack).await;
    let proxy = stack.amqp_proxy();
    let ingress = RunningIngress::start(config).await;

    proxy.blackhole();
    postgres.cut();
    let before = ingress.metrics().await;
    let started = Instant::now();
    unavailable(send(authenticated(&ingress, "sms").body(fixtures::SMS_SUCCESS)).await).await;
    let took = started.elapsed();
    let after = ingress.metrics().await;
    assert!(
        took >= Duration::from_millis(2_900),
        "503 after {took:?}: the broker had until the 3 s deadline to confirm"
    );
    assert_eq!(after.get(SPOOL_FAILURES) - before.get(SPOOL_FAILURES), 1.0);
    assert_eq!(
        publish_failures(&after, "timeout") - publish_failures(&before, "timeout"),
        1.0,
        "the broker's cause: no confirm by the deadline"
    );
    assert_eq!(count(&stack.client().await, SPOOLED_ROWS).await, 0);
}

/// `/readyz` is 200 while either path works and says which: broker down and
/// spool up is ready (`"broker":false,"spool":true`); both down is 503; the
/// spool back makes it ready again.
#[tokio::test]
async fn readiness_follows_the_broker_or_the_spool() {
    let stack = stage().start().await;
    let (postgres, config) = spool_proxy(&stack).await;
    let proxy = stack.amqp_proxy();
    let ingress = RunningIngress::start(config).await;
    let state = |broker: bool, spool: bool| {
        let admin_port = ingress.admin_port;
        async move {
            let readiness = readyz(admin_port).await;
            readiness["broker"] == broker && readiness["spool"] == spool
        }
    };
    wait::until_true("broker and spool both up", WAIT, || state(true, true)).await;

    proxy.cut();
    wait::until_true("broker down, spool up", WAIT, || state(false, true)).await;
    ingress.wait_ready(true).await;
    let readiness = readyz(ingress.admin_port).await;
    assert_eq!(readiness["ready"], true, "{readiness}");
    assert_eq!(
        ingress
            .metrics()
            .await
            .get("corral_ingress_spool_connected"),
        1.0
    );

    postgres.cut();
    ingress.wait_ready(false).await;
    let readiness = readyz(ingress.admin_port).await;
    assert_eq!(readiness["broker"], false, "{readiness}");
    assert_eq!(readiness["spool"], false, "{readiness}");
    assert_eq!(
        ingress
            .metrics()
            .await
            .get("corral_ingress_spool_connected"),
        0.0
    );

    postgres.restore();
    wait::until_true("spool back", WAIT, || state(false, true)).await;
    ingress.wait_ready(true).await;
}

/// A spool the ingress can log in to but not INSERT into (its role was
/// never made a member of `corral_spool_writer`) does not work: with the
/// broker gone, webhooks get 503, and `/readyz` must say so too, steadily,
/// not turn ready again at the spool's next reachability check.
#[tokio::test]
async fn a_spool_that_refuses_the_insert_does_not_make_the_ingress_ready() {
    // A login role of the test's own, outside `corral_spool_writer`; the
    // stack drops it afterwards.
    let stack = stage().start().await;
    stack
        .client()
        .await
        .batch_execute(&format!(
            "REVOKE corral_spool_writer FROM \"{}\"",
            stack.writer().role
        ))
        .await
        .expect("taking the role out of corral_spool_writer");
    stack.amqp_proxy().cut();
    let ingress = RunningIngress::start_unready(stack.ingress_config()).await;

    let before = ingress.metrics().await;
    unavailable(send(authenticated(&ingress, "sms").body(fixtures::SMS_SUCCESS)).await).await;
    assert_eq!(
        ingress.metrics().await.get(SPOOL_FAILURES) - before.get(SPOOL_FAILURES),
        1.0
    );
    // Longer than the spool's reachability check (every 3 s).
    wait::holds(
        "/readyz 503 while neither path can keep a webhook",
        Duration::from_secs(7),
        || async {
            let readiness = readyz(ingress.admin_port).await;
            if readiness["ready"] == false {
                Ok(())
            } else {
                Err(format!("/readyz says {readiness}"))
            }
        },
    )
    .await;
}

/// A request still waiting for its confirm when shutdown begins is answered
/// from the spool (200, its row committed) before the ingress stops.
#[tokio::test]
async fn a_request_in_flight_at_shutdown_is_spooled_and_answered_200() {
    let stack = stage()
        .ingress_settings(|ingress| {
            ingress.drain_delay_ms = 0;
            ingress.amqp.heartbeat_secs = 30;
        })
        .start()
        .await;
    // The test stops it itself, half-way.
    let ingress = RunningIngress::start(stack.ingress_config()).await;

    stack.amqp_proxy().blackhole();
    let request = tokio::spawn(
        authenticated(&ingress, "sms")
            .body(fixtures::SMS_SUCCESS)
            .send(),
    );
    wait::until_true("the publish awaiting its confirm", WAIT, || async {
        ingress
            .metrics()
            .await
            .get("corral_ingress_publishes_in_flight")
            == 1.0
    })
    .await;
    ingress.shutdown.cancel();
    let response = request
        .await
        .expect("the request task")
        .expect("an answer before the ingress stops");
    let id = accepted(response).await;
    let rows = spool_rows(&stack.client().await).await;
    assert_eq!(
        rows.iter().map(|row| row.message_id).collect::<Vec<_>>(),
        vec![id]
    );
    ingress
        .task
        .await
        .expect("the ingress task")
        .expect("the ingress stops cleanly");
}

/// Without `CORRAL_SPOOL_DATABASE_URL` nothing of the spool shows: a webhook
/// the broker cannot take gets 503, `/readyz` has no `spool` and is 503, and
/// no spool series is exported.
#[tokio::test]
async fn without_a_spool_a_broker_outage_is_503_and_no_spool_shows() {
    let mut stack = broker_via_proxy().start().await;
    stack.amqp_proxy().cut();
    let ingress = stack.start_ingress_unready().await;
    ingress.wait_ready(false).await;

    unavailable(send(authenticated(ingress, "sms").body(fixtures::SMS_SUCCESS)).await).await;
    let readiness = readyz(ingress.admin_port).await;
    assert!(
        readiness.get("spool").is_none(),
        "/readyz without a spool: {readiness}"
    );
    let names = ingress.metrics().await.names();
    for name in [
        "corral_ingress_spooled_total",
        "corral_ingress_spool_failures_total",
        "corral_ingress_spool_connected",
    ] {
        assert!(!names.contains(name), "{name} is exported without a spool");
    }
}

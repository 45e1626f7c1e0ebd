//! Each cause of a broker refusal spools the webhook, byte for byte, counted
//! under its cause. `blocked` is not tested: only a memory or disk alarm of
//! the whole shared broker raises it, which would block every test running
//! beside this one.

use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

use corral_runtime::telemetry::labels::SpoolCause;
use corral_testkit::fixtures;

use uuid::Uuid;

use super::helpers::*;
use crate::ingress::helpers::{MAX_BODY_BYTES, accepted, authenticated, object_of_len, send};

/// No broker link (the path to it refuses connections): spooled at once,
/// 200, cause `unavailable`.
#[tokio::test]
async fn without_a_broker_link_a_webhook_is_spooled_and_answered_200() {
    let mut stack = stage().start().await;
    without_broker(&mut stack).await;
    let (ingress, client) = (stack.ingress(), stack.client().await);

    // Cause `unavailable`, not `slow`: spooled at once, without waiting
    // CORRAL_SPOOL_AFTER_MS for a broker known to be gone.
    post_spooled(
        ingress,
        &client,
        "rvm",
        fixtures::SMS_FAILURE,
        SpoolCause::Unavailable,
    )
    .await;
    assert_eq!(
        ingress
            .metrics()
            .await
            .get("corral_ingress_spool_connected"),
        1.0
    );
}

/// The broker nacks the publish (a queue bound to its routing key refuses
/// it): spooled, 200, cause `nack`.
#[tokio::test]
async fn a_nacked_webhook_is_spooled_and_answered_200() {
    let stack = stage().with_ingress().start().await;
    stack.broker().refuse("dropcowboy.sms").await;

    post_spooled(
        stack.ingress(),
        &stack.client().await,
        "sms",
        fixtures::SMS_SUCCESS,
        SpoolCause::Nack,
    )
    .await;
}

/// The broker stops answering (sockets open, no confirm): after
/// `CORRAL_SPOOL_AFTER_MS` the webhook is spooled and answered 200, long
/// before the request's deadline; cause `slow`.
#[tokio::test]
async fn a_webhook_not_confirmed_in_time_is_spooled_and_answered_before_the_deadline() {
    let stack = stage()
        .ingress(|ingress| {
            ingress.spool_after_ms = 200;
            // The publish timeout, not the heartbeat, is what could end the wait.
            ingress.amqp.heartbeat_secs = 30;
        })
        .start()
        .await;

    stack.amqp_proxy().blackhole();
    let started = Instant::now();
    post_spooled(
        stack.ingress(),
        &stack.client().await,
        "sms",
        fixtures::SMS_SUCCESS,
        SpoolCause::Slow,
    )
    .await;
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(200) && took < Duration::from_millis(3_000),
        "answered after {took:?}: not before CORRAL_SPOOL_AFTER_MS, and before the deadline"
    );
}

/// The webhooks exchange is deleted under a running ingress: the broker
/// closes the channel of the publish; spooled, 200, cause `channel_closed`.
#[tokio::test]
async fn a_webhook_whose_channel_the_broker_closes_is_spooled_and_answered_200() {
    let stack = stage().with_ingress().start().await;
    let broker = stack.broker();
    broker.delete_exchange(&broker.topology.exchange()).await;

    post_spooled(
        stack.ingress(),
        &stack.client().await,
        "sms",
        fixtures::SMS_SUCCESS,
        SpoolCause::ChannelClosed,
    )
    .await;
}

/// Both the main queue and the unroutable queue (where the alternate
/// exchange keeps what the main one cannot route) are deleted: the broker
/// returns the mandatory publish; spooled, 200, cause `unroutable`.
#[tokio::test]
async fn a_returned_webhook_is_spooled_and_answered_200() {
    let stack = stage().with_ingress().start().await;
    let broker = stack.broker();
    broker.delete_queue(&broker.queue()).await;
    broker
        .delete_queue(&broker.topology.unroutable_queue())
        .await;

    post_spooled(
        stack.ingress(),
        &stack.client().await,
        "rvm",
        fixtures::SMS_FAILURE,
        SpoolCause::Unroutable,
    )
    .await;
}

/// A burst of concurrent webhooks while the broker is gone: every one is
/// answered 200 and is a row of the spool under its id, with its own bytes
/// (webhooks waiting for a spool connection go together in one INSERT).
#[tokio::test]
async fn a_burst_without_a_broker_is_spooled_whole() {
    const WEBHOOKS: usize = 60;
    let mut stack = stage()
        .ingress_settings(|ingress| ingress.spool_connections = 2)
        .start()
        .await;
    without_broker(&mut stack).await;
    let ingress = stack.ingress();
    let bodies: Vec<String> = (0..WEBHOOKS)
        .map(|i| {
            fixtures::delivery_status(
                &format!("burst{i:019}"),
                "2026-11-27T05:24:31.000Z",
                "",
                &format!("o-{i}"),
            )
        })
        .collect();

    let answers = futures_util::future::join_all(
        bodies
            .iter()
            .map(|body| send(authenticated(ingress, "sms").body(body.clone()))),
    )
    .await;
    let mut sent = HashMap::new();
    for (body, response) in bodies.iter().zip(answers) {
        sent.insert(accepted(response).await, body.as_bytes().to_vec());
    }
    assert_eq!(sent.len(), WEBHOOKS, "every answer has an id of its own");
    let rows = spool_rows(&stack.client().await).await;
    let in_spool: HashMap<Uuid, Vec<u8>> = rows
        .into_iter()
        .map(|row| (row.message_id, row.body))
        .collect();
    assert_eq!(
        in_spool, sent,
        "the spool holds each webhook answered, byte for byte"
    );
    assert_eq!(
        spooled(&ingress.metrics().await, SpoolCause::Unavailable),
        WEBHOOKS as f64
    );
}

/// Bodies of the largest accepted size, more of them at once than one spool
/// INSERT carries (4 MiB): every one is answered 200 and spooled byte for
/// byte, whichever INSERT took it.
#[tokio::test]
async fn a_burst_of_the_largest_bodies_is_spooled_byte_for_byte() {
    const WEBHOOKS: usize = 90;
    let mut stack = stage()
        // One writer: what waits for it goes together, up to the byte bound.
        .ingress_settings(|ingress| ingress.spool_connections = 1)
        .start()
        .await;
    without_broker(&mut stack).await;
    let ingress = stack.ingress();
    let bodies: Vec<String> = (0..WEBHOOKS)
        .map(|i| {
            let mut body = object_of_len(MAX_BODY_BYTES);
            // Distinct bodies, so a mix-up between them shows.
            body.replace_range(9..14, &format!("{i:05}"));
            body
        })
        .collect();

    let answers = futures_util::future::join_all(
        bodies
            .iter()
            .map(|body| send(authenticated(ingress, "rvm").body(body.clone()))),
    )
    .await;
    let mut sent = HashMap::new();
    for (body, response) in bodies.iter().zip(answers) {
        sent.insert(accepted(response).await, body.as_bytes().to_vec());
    }
    let in_spool: HashMap<Uuid, Vec<u8>> = spool_rows(&stack.client().await)
        .await
        .into_iter()
        .map(|row| (row.message_id, row.body))
        .collect();
    assert_eq!(in_spool.len(), WEBHOOKS);
    assert!(
        in_spool == sent,
        "the spool holds each webhook answered, byte for byte"
    );
}

/// A 200 from the spool means committed: the INSERT runs with
/// `synchronous_commit` on even when the role's default says `off`.
#[tokio::test]
async fn the_spool_commits_synchronously_whatever_the_roles_default() {
    let mut stack = stage().start().await;
    let (writer, client) = (stack.writer(), stack.client().await);
    client
        .batch_execute(&format!(
            "ALTER ROLE \"{role}\" SET synchronous_commit = off;
             CREATE TABLE test_spool_commits (setting text NOT NULL);
             CREATE FUNCTION test_spool_commit() RETURNS trigger
                 LANGUAGE plpgsql SECURITY DEFINER AS $$
             BEGIN
                 INSERT INTO test_spool_commits VALUES (current_setting('synchronous_commit'));
                 RETURN NULL;
             END $$;
             CREATE TRIGGER test_spool_commit AFTER INSERT ON spooled_webhooks
                 FOR EACH STATEMENT EXECUTE FUNCTION test_spool_commit();",
            role = writer.role
        ))
        .await
        .expect("recording each spool INSERT's synchronous_commit");
    let direct: String = corral_testkit::database::connect(&writer.url)
        .await
        .query_one("SHOW synchronous_commit", &[])
        .await
        .expect("the role's default")
        .get(0);
    assert_eq!(direct, "off", "the role's default is in effect");

    without_broker(&mut stack).await;
    post_spooled(
        stack.ingress(),
        &client,
        "sms",
        fixtures::SMS_SUCCESS,
        SpoolCause::Unavailable,
    )
    .await;
    let settings: Vec<String> = client
        .query("SELECT setting FROM test_spool_commits", &[])
        .await
        .expect("the recorded settings")
        .iter()
        .map(|row| row.get(0))
        .collect();
    assert_eq!(settings, vec!["on".to_owned()]);
}

//! The spool across a PostgreSQL failover: ingress spools while its broker
//! is unreachable, the primary crashes and its synchronous standby is
//! promoted; ingress and the worker's drain reach the new primary by one
//! multi-host URL, and every webhook answered 200 is stored there once.

use corral_testkit::replicated::{ReplicatedPostgres, longest_gap};

use super::helpers::*;
use crate::worker::{
    failover::{Posting, assert_all_stored_once, fail_over, server_clock},
    helpers::{EVENTS, count},
};

#[tokio::test]
async fn webhooks_spooled_around_a_promotion_reach_the_new_primary_and_are_drained() {
    let cluster = ReplicatedPostgres::start().await;
    let mut stack = stage().on(cluster.server()).start().await;
    stack.start_worker().await;
    without_broker(&mut stack).await;
    let posting = Posting::start(stack.ingress());
    posting.wait_more(30).await;
    let client = stack.client().await;
    wait_drained_some(&client).await;
    let killed_at = server_clock(&client).await;

    // While no server accepts writes, the spool cannot commit: those
    // webhooks are answered 503 (the broker is away too), never 200.
    fail_over(&cluster, stack.worker()).await;
    posting.wait_more(30).await;
    let (ids, refused) = posting.stop().await;

    let client = stack.client().await;
    assert_all_stored_once(&client, &ids, refused).await;
    assert_eq!(
        count(&client, SPOOLED_ROWS).await,
        0,
        "the spool is drained"
    );
    let metrics = stack.ingress().metrics().await;
    assert!(
        metrics.get(DRAINED) >= ids.len() as f64,
        "every webhook answered 200 went through the spool"
    );
    eprintln!(
        "spool failover: {} stored once each, {refused} refused during it, longest gap {:.2} s",
        ids.len(),
        longest_gap(&client, killed_at - 1.0).await
    );
}

/// Waits until the worker has drained some of the spool into rows.
async fn wait_drained_some(client: &tokio_postgres::Client) {
    corral_testkit::wait::until_true("spooled webhooks drained", WAIT, || async {
        count(client, EVENTS).await > 0
    })
    .await;
}

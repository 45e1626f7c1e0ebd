//! Group commit: webhooks that arrive while a publish awaits its confirm
//! travel together in the next message, and every one of them gets that
//! message's verdict.

use std::{sync::Arc, time::Duration};

use corral_contract::envelope::Kind;
use corral_testkit::{apps::RunningIngress, fixtures, metrics::Metrics, stack::Stack, wait};
use reqwest::{Response, StatusCode};
use tokio::task::JoinHandle;

use super::helpers::*;

type Post = JoinHandle<reqwest::Result<Response>>;

/// An ingress through `proxy` with one publish slot: while its one message
/// awaits a confirm, everything else waits for the next.
async fn one_slot(stack: &Stack, publish_timeout_ms: u64) -> RunningIngress {
    let mut config = stack.ingress_config();
    config.publish_concurrency = 1;
    config.publish_timeout_ms = publish_timeout_ms;
    config.amqp.heartbeat_secs = 30;
    RunningIngress::start(config).await
}

/// [`one_slot`] with the path to the broker black-holed and a first SMS
/// posted: its message holds the slot, unconfirmed, until the path is restored.
async fn first_stalled(stack: &Stack, publish_timeout_ms: u64) -> (RunningIngress, Post) {
    let ingress = one_slot(stack, publish_timeout_ms).await;
    stack.amqp_proxy().blackhole();
    let first = post(&ingress, Kind::Sms, 0);
    wait_in_flight(&ingress, 1).await;
    (ingress, first)
}

fn post(ingress: &RunningIngress, kind: Kind, i: usize) -> Post {
    let body = fixtures::delivery_status(
        &format!("{i:024x}"),
        "2019-03-17T21:10:26.000Z",
        "",
        &format!("coalesced-{i}"),
    );
    tokio::spawn(authenticated(ingress, kind.as_str()).body(body).send())
}

async fn wait_in_flight(ingress: &RunningIngress, count: usize) {
    wait::until_true(
        &format!("{count} webhooks awaiting their verdict"),
        Duration::from_secs(10),
        || async { in_flight(&ingress.metrics().await) == count as f64 },
    )
    .await;
}

fn in_flight(metrics: &Metrics) -> f64 {
    metrics.get("corral_ingress_publishes_in_flight")
}

/// (messages published, webhooks in them) from the batch-size histogram.
fn batches(metrics: &Metrics) -> (f64, f64) {
    (
        metrics.get("corral_ingress_publish_batch_size_count"),
        metrics.get("corral_ingress_publish_batch_size_sum"),
    )
}

async fn statuses(posts: Vec<Post>) -> Vec<StatusCode> {
    let mut statuses = Vec::with_capacity(posts.len());
    for post in posts {
        let response = post
            .await
            .expect("a post task")
            .expect("every post is answered");
        statuses.push(response.status());
    }
    statuses
}

/// At low load nothing lingers: a lone webhook leaves at once, alone.
#[tokio::test]
async fn a_lone_webhook_is_published_at_once_in_a_message_of_its_own() {
    let stack = Stack::builder().with_ingress().start().await;
    let (broker, ingress) = (stack.broker(), stack.ingress());
    let id = post_sample(ingress).await;
    let webhooks = broker.take_webhooks(&broker.queue(), 1, QUEUE_WAIT).await;
    assert_eq!(webhooks.len(), 1);
    assert_eq!(webhooks[0].id, id);
    assert_eq!(batches(&ingress.metrics().await), (1.0, 1.0));
}

/// While the one message on the wire waits for its confirm, the webhooks
/// posted meanwhile are not answered; once the confirm comes they leave
/// together as the next message and are all answered 200.
#[tokio::test]
async fn webhooks_posted_during_a_stalled_confirm_wait_for_it_then_travel_together() {
    const LATER: usize = 20;
    let stack = broker_via_proxy().start().await;
    let (broker, proxy) = (stack.broker(), stack.amqp_proxy());
    let (ingress, first) = first_stalled(&stack, 15_000).await;
    let later: Vec<Post> = (1..=LATER).map(|i| post(&ingress, Kind::Sms, i)).collect();
    wait_in_flight(&ingress, LATER + 1).await;
    let first = Arc::new(first);
    wait::holds(
        "no request answered before the confirm",
        Duration::from_millis(500),
        || {
            let answered = first.is_finished() || later.iter().any(JoinHandle::is_finished);
            async move {
                if answered {
                    Err("a request was answered while its message awaited the broker".into())
                } else {
                    Ok(())
                }
            }
        },
    )
    .await;

    proxy.restore();
    let first = Arc::into_inner(first).expect("only the test holds the first post");
    let mut posts = vec![first];
    posts.extend(later);
    let answers = statuses(posts).await;
    assert!(
        answers.iter().all(|status| *status == StatusCode::OK),
        "{answers:?}"
    );
    assert_eq!(
        batches(&ingress.metrics().await),
        (2.0, (LATER + 1) as f64),
        "the first alone, then the twenty that waited, together"
    );
    let webhooks = broker
        .take_webhooks(&broker.queue(), LATER + 1, QUEUE_WAIT)
        .await;
    assert_eq!(webhooks.len(), LATER + 1);
    let messages: std::collections::HashSet<_> = webhooks
        .iter()
        .map(|webhook| Arc::as_ptr(&webhook.message))
        .collect();
    assert_eq!(messages.len(), 2);
}

/// A message whose confirm never comes: each of its webhooks, and each
/// webhook still waiting behind it, is answered 503 at its deadline, and none
/// of them is published afterwards.
#[tokio::test]
async fn a_message_never_confirmed_answers_every_webhook_in_it_503_and_publishes_nothing_later() {
    const LATER: usize = 10;
    let stack = broker_via_proxy().start().await;
    let (broker, proxy) = (stack.broker(), stack.amqp_proxy());
    let (ingress, first) = first_stalled(&stack, 2_000).await;
    let mut posts = vec![first];
    posts.extend((1..=LATER).map(|i| post(&ingress, Kind::Rvm, i)));
    let answers = statuses(posts).await;
    assert!(
        answers
            .iter()
            .all(|status| *status == StatusCode::SERVICE_UNAVAILABLE),
        "{answers:?}"
    );
    assert_eq!(
        publish_failures(&ingress.metrics().await, "timeout"),
        (LATER + 1) as f64
    );

    // What was written to the dead connection dies with it.
    proxy.drop_connections();
    proxy.restore();
    wait::until_true(
        "a new link to the broker",
        Duration::from_secs(15),
        || async {
            ingress
                .metrics()
                .await
                .get(r#"corral_broker_connect_attempts_total{outcome="success"}"#)
                >= 2.0
        },
    )
    .await;
    assert_nothing_else_published(broker, &ingress).await;
}

/// The broker nacks every RVM message and takes every SMS one: every RVM
/// webhook of the message is answered 503 `nack`, and no SMS webhook is.
#[tokio::test]
async fn a_nacked_message_is_503_for_every_webhook_in_it_and_no_other() {
    const EACH: usize = 10;
    let stack = broker_via_proxy().start().await;
    let (broker, proxy) = (stack.broker(), stack.amqp_proxy());
    broker.refuse(Kind::Rvm.routing_key()).await;
    let (ingress, first) = first_stalled(&stack, 15_000).await;
    let sms: Vec<Post> = (1..=EACH).map(|i| post(&ingress, Kind::Sms, i)).collect();
    let rvm: Vec<Post> = (1..=EACH)
        .map(|i| post(&ingress, Kind::Rvm, 100 + i))
        .collect();
    wait_in_flight(&ingress, 2 * EACH + 1).await;
    proxy.restore();

    let mut sms_posts = vec![first];
    sms_posts.extend(sms);
    let sms = statuses(sms_posts).await;
    let rvm = statuses(rvm).await;
    assert!(
        sms.iter().all(|status| *status == StatusCode::OK),
        "{sms:?}"
    );
    assert!(
        rvm.iter()
            .all(|status| *status == StatusCode::SERVICE_UNAVAILABLE),
        "{rvm:?}"
    );
    let metrics = ingress.metrics().await;
    assert_eq!(publish_failures(&metrics, "nack"), EACH as f64);
    assert_eq!(published(&metrics, "sms"), (EACH + 1) as f64);
    assert_eq!(published(&metrics, "rvm"), 0.0);
    // One kind per message: the first SMS, then one message per kind.
    assert_eq!(batches(&metrics), (3.0, (2 * EACH + 1) as f64));
}

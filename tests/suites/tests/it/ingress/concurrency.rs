//! A burst of concurrent posts.

use std::{
    collections::{HashMap, HashSet},
    time::Duration,
};

use corral_contract::envelope::Kind;
use corral_testkit::{apps::TOKEN, fixtures, stack::Stack};
use reqwest::header;
use tokio::task::JoinSet;

use super::helpers::*;

/// 2,000 posts at once: 2,000 200s with distinct ids, and exactly those
/// 2,000 messages in the queue, each with the body that got its id.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_thousand_concurrent_posts_each_land_exactly_once() {
    const POSTS: usize = 2_000;
    // What is asserted is one row per 200, not how fast: 2,000 confirms on a
    // machine shared with 7 other tests and the lints once took more than
    // the default 3 s, and a webhook got 503 (clean-clone CI).
    let stack = Stack::builder()
        .ingress(|config| {
            config.publish_timeout_ms = 15_000;
            config.shutdown_timeout_ms = 16_000;
        })
        .start()
        .await;
    let (broker, ingress) = (stack.broker(), stack.ingress());
    let client = bounded_client();

    let mut posts = JoinSet::new();
    for i in 0..POSTS {
        let kind = if i % 2 == 0 { "sms" } else { "rvm" };
        let body = fixtures::delivery_status(
            &format!("{i:024x}"),
            "2019-03-17T21:10:26.000Z",
            "",
            &format!("burst-{i}"),
        );
        let request = client
            .post(ingress.url(kind))
            .bearer_auth(TOKEN)
            .header(header::CONTENT_TYPE, "application/json")
            .body(body.clone());
        posts.spawn(async move { (kind, body, request.send().await) });
    }
    let mut sent = HashMap::new();
    while let Some(joined) = posts.join_next().await {
        let (kind, body, response) = joined.expect("a post task panicked");
        let id = accepted(response.expect("every post is answered")).await;
        assert!(
            sent.insert(id, (kind, body)).is_none(),
            "id {id} answered twice"
        );
    }
    assert_eq!(sent.len(), POSTS);

    let webhooks = broker
        .take_webhooks(&broker.queue(), POSTS, Duration::from_secs(25))
        .await;
    assert_eq!(webhooks.len(), POSTS, "exactly one webhook per 200");
    let mut seen = HashSet::new();
    for webhook in &webhooks {
        let id = webhook.id;
        assert!(seen.insert(id), "{id} is in the queue twice");
        let (kind, body) = sent
            .get(&id)
            .unwrap_or_else(|| panic!("{id} is in the queue but was not answered 200"));
        assert_eq!(webhook.body, body.as_bytes(), "{id}");
        assert_eq!(webhook.kind.as_str(), *kind);
        assert_eq!(
            webhook.message.delivery.routing_key.as_str(),
            format!("dropcowboy.{kind}")
        );
    }
    let metrics = ingress.metrics().await;
    assert_eq!(
        published(&metrics, "sms") + published(&metrics, "rvm"),
        POSTS as f64
    );
}

/// Two HTTP worker threads publishing on one confirm channel, the broker
/// nacking every RVM webhook and taking every SMS one: each answer must be
/// the verdict on its own webhook. A confirm attributed to another request
/// shows up as an RVM answered 200 (a refused webhook acknowledged: lost) or
/// an SMS answered 503.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_answer_is_the_brokers_verdict_on_that_webhook() {
    const CLIENTS: usize = 64;
    const POSTS_PER_CLIENT: usize = 160;
    let stack = Stack::builder().start().await;
    let broker = stack.broker();
    broker.refuse("dropcowboy.rvm").await;
    let mut config = stack.ingress_config();
    config.amqp_channels = 1;
    config.http_workers = 2;
    let ingress = corral_testkit::apps::RunningIngress::start(config).await;
    let client = bounded_client();

    let mut clients = JoinSet::new();
    for c in 0..CLIENTS {
        let client = client.clone();
        let sms = ingress.url("sms");
        let rvm = ingress.url("rvm");
        clients.spawn(async move {
            let mut wrong = Vec::new();
            for i in 0..POSTS_PER_CLIENT {
                let (url, expected) = if (c + i) % 2 == 0 {
                    (&sms, 200)
                } else {
                    (&rvm, 503)
                };
                let body = fixtures::delivery_status(
                    &format!("{c:08x}{i:016x}"),
                    "2019-03-17T21:10:26.000Z",
                    "",
                    &format!("verdict-{c}-{i}"),
                );
                let status = client
                    .post(url.as_str())
                    .bearer_auth(TOKEN)
                    .header(header::CONTENT_TYPE, "application/json")
                    .body(body)
                    .send()
                    .await
                    .expect("every post is answered")
                    .status()
                    .as_u16();
                if status != expected {
                    wrong.push(format!("{url}: {status}, not {expected}"));
                }
            }
            wrong
        });
    }
    let mut wrong = Vec::new();
    while let Some(joined) = clients.join_next().await {
        wrong.extend(joined.expect("a client task panicked"));
    }
    assert!(
        wrong.is_empty(),
        "{} of {} answers were another webhook's verdict, e.g. {:?}",
        wrong.len(),
        CLIENTS * POSTS_PER_CLIENT,
        &wrong[..wrong.len().min(5)]
    );
    let sms = broker
        .take_webhooks(
            &broker.queue(),
            CLIENTS * POSTS_PER_CLIENT / 2,
            Duration::from_secs(25),
        )
        .await;
    assert!(
        sms.iter()
            .filter(|webhook| webhook.kind == Kind::Sms)
            .count()
            == CLIENTS * POSTS_PER_CLIENT / 2,
        "every SMS webhook answered 200 is in the queue"
    );
}

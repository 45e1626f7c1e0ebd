//! A burst of concurrent posts.

use std::{
    collections::{HashMap, HashSet},
    time::Duration,
};

use corral_testkit::{apps::TOKEN, broker::TestBroker, fixtures};
use reqwest::header;
use tokio::task::JoinSet;

use super::helpers::*;

/// 2,000 posts at once: 2,000 200s with distinct ids, and exactly those
/// 2,000 messages in the queue, each with the body that got its id.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_thousand_concurrent_posts_each_land_exactly_once() {
    const POSTS: usize = 2_000;
    let broker = TestBroker::new().await;
    let ingress = start(&broker).await;
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

    let messages = broker
        .take(&broker.queue(), POSTS, Duration::from_secs(25))
        .await;
    assert_eq!(messages.len(), POSTS, "exactly one message per 200");
    let mut seen = HashSet::new();
    for message in &messages {
        let id = message_id(message);
        assert!(seen.insert(id), "{id} is in the queue twice");
        let (kind, body) = sent
            .get(&id)
            .unwrap_or_else(|| panic!("{id} is in the queue but was not answered 200"));
        assert_eq!(message.delivery.data, body.as_bytes(), "{id}");
        assert_eq!(
            message.delivery.routing_key.as_str(),
            format!("dropcowboy.{kind}")
        );
    }
    let metrics = ingress.metrics().await;
    assert_eq!(
        published(&metrics, "sms") + published(&metrics, "rvm"),
        POSTS as f64
    );
}

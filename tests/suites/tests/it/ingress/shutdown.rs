//! Graceful shutdown.

use std::{
    collections::{HashMap, HashSet},
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use corral_testkit::{
    apps::{RunningIngress, TOKEN},
    fixtures,
    stack::Stack,
    wait,
};
use reqwest::{StatusCode, header};
use tokio::task::JoinSet;
use uuid::Uuid;

use super::helpers::*;

/// What one request in the shutdown burst got.
#[derive(Debug)]
enum Outcome {
    /// An HTTP answer: status, body text, and the body posted.
    Answered(StatusCode, String, String),
    /// No (complete) answer: refused connection, connection closed, …
    NoAnswer(String),
}

/// The shutdown token (what SIGTERM cancels) is cancelled while senders keep
/// posting: every request answered 200 is in the queue, every other request
/// got 503 or no answer at all, and the application returns Ok.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_during_a_burst_keeps_every_webhook_answered_200() {
    const SENDERS: usize = 48;
    const MAX_PER_SENDER: usize = 400;
    const ANSWERS_BEFORE_SHUTDOWN: usize = 300;
    let stack = Stack::builder().start().await;
    let broker = stack.broker();
    let ingress = start(&stack).await;
    let client = bounded_client();
    let answered = Arc::new(AtomicUsize::new(0));

    let mut senders = JoinSet::new();
    for sender in 0..SENDERS {
        let (client, answered, url) = (client.clone(), answered.clone(), ingress.url("sms"));
        senders.spawn(async move {
            let mut outcomes = Vec::new();
            for i in 0..MAX_PER_SENDER {
                let body = fixtures::delivery_status(
                    &format!("{sender:012x}{i:012x}"),
                    "2019-03-17T21:10:26.000Z",
                    "",
                    &format!("shutdown-{sender}-{i}"),
                );
                let response = client
                    .post(&url)
                    .bearer_auth(TOKEN)
                    .header(header::CONTENT_TYPE, "application/json")
                    .body(body.clone())
                    .send()
                    .await;
                let outcome = match response {
                    Ok(response) => {
                        let status = response.status();
                        match response.text().await {
                            Ok(text) => Outcome::Answered(status, text, body),
                            Err(err) => Outcome::NoAnswer(format!("{status}, then {err}")),
                        }
                    }
                    Err(err) => Outcome::NoAnswer(err.to_string()),
                };
                let stop = matches!(outcome, Outcome::NoAnswer(_));
                outcomes.push(outcome);
                answered.fetch_add(1, Ordering::SeqCst);
                if stop {
                    break;
                }
            }
            outcomes
        });
    }
    wait::until_true(
        "the burst to be under way",
        Duration::from_secs(20),
        || async { answered.load(Ordering::SeqCst) >= ANSWERS_BEFORE_SHUTDOWN },
    )
    .await;
    ingress.shutdown.cancel();

    let mut accepted_bodies = HashMap::new();
    let (mut unavailable_count, mut no_answer) = (0, 0);
    let mut no_answer_reasons = HashSet::new();
    while let Some(joined) = senders.join_next().await {
        for outcome in joined.expect("a sender panicked") {
            match outcome {
                Outcome::Answered(StatusCode::OK, text, body) => {
                    let value: serde_json::Value = serde_json::from_str(&text).expect("a JSON 200");
                    let id: Uuid = value["id"]
                        .as_str()
                        .expect("an id")
                        .parse()
                        .expect("a UUID");
                    assert!(accepted_bodies.insert(id, body).is_none(), "{id} twice");
                }
                Outcome::Answered(StatusCode::SERVICE_UNAVAILABLE, _, _) => unavailable_count += 1,
                Outcome::Answered(status, text, _) => panic!("unexpected {status}: {text}"),
                Outcome::NoAnswer(reason) => {
                    no_answer += 1;
                    no_answer_reasons.insert(reason);
                }
            }
        }
    }
    eprintln!(
        "{} answered 200, {unavailable_count} answered 503, {no_answer} without an answer: \
         {no_answer_reasons:?}",
        accepted_bodies.len()
    );
    let stopped = tokio::time::timeout(Duration::from_secs(25), ingress.task)
        .await
        .expect("the ingress did not stop within its shutdown timeout")
        .expect("the ingress task panicked");
    stopped.expect("the ingress returns Ok after a graceful shutdown");
    assert!(accepted_bodies.len() >= ANSWERS_BEFORE_SHUTDOWN - SENDERS);
    assert!(
        no_answer > 0,
        "the shutdown should have happened during the burst"
    );

    let webhooks = broker
        .take_webhooks(&broker.queue(), accepted_bodies.len(), QUEUE_WAIT)
        .await;
    let mut queued = HashSet::new();
    for webhook in &webhooks {
        let id = webhook.id;
        assert!(queued.insert(id), "{id} is in the queue twice");
        if let Some(body) = accepted_bodies.get(&id) {
            assert_eq!(webhook.body, body.as_bytes(), "{id}");
        }
    }
    let missing: Vec<_> = accepted_bodies
        .keys()
        .filter(|id| !queued.contains(id))
        .collect();
    assert!(
        missing.is_empty(),
        "answered 200 but not in the queue: {missing:?}"
    );
    // A message in the queue that was not answered 200 can only belong to a
    // request whose answer was lost (at most one per sender).
    assert!(
        webhooks.len() <= accepted_bodies.len() + no_answer,
        "{} queued, {} accepted, {unavailable_count} answered 503, {no_answer} without an answer",
        webhooks.len(),
        accepted_bodies.len()
    );
}

/// During `drain_delay_ms` after the shutdown signal, /readyz says 503 (so a
/// load balancer stops sending) while the listener still serves webhooks.
#[tokio::test]
async fn during_the_drain_delay_readyz_is_503_and_webhooks_are_still_served() {
    let stack = Stack::builder().start().await;
    let broker = stack.broker();
    let mut config = stack.ingress_config();
    config.drain_delay_ms = 4_000;
    let ingress = RunningIngress::start(config).await;

    ingress.shutdown.cancel();
    ingress.wait_ready(false).await;
    let readiness: serde_json::Value = ingress
        .http
        .get(format!("http://127.0.0.1:{}/readyz", ingress.admin_port))
        .send()
        .await
        .expect("/readyz during the drain")
        .json()
        .await
        .expect("a JSON readiness");
    assert_eq!(readiness["draining"], true, "{readiness}");
    assert_eq!(readiness["broker"], true, "{readiness}");

    let id = post_sample(&ingress).await;
    assert!(
        !ingress.task.is_finished(),
        "the ingress should still be draining"
    );
    assert_eq!(queued_ids(broker, 1).await, HashSet::from([id]));

    let RunningIngress {
        task, http, port, ..
    } = ingress;
    tokio::time::timeout(Duration::from_secs(25), task)
        .await
        .expect("the ingress did not stop after its drain delay")
        .expect("the ingress task panicked")
        .expect("the ingress returns Ok");
    let after = http
        .post(format!("http://127.0.0.1:{port}/webhooks/dropcowboy/sms"))
        .bearer_auth(TOKEN)
        .body(fixtures::SMS_SUCCESS)
        .timeout(REQUEST_BOUND)
        .send()
        .await;
    assert!(after.is_err(), "the listener should be closed: {after:?}");
}

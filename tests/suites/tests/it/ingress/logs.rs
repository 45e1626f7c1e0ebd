//! Tokens, passwords and webhook bodies stay out of logs, and a storm of
//! refusals does not flood them.

use std::time::{Duration, Instant};

use corral_testkit::{
    apps::{RunningIngress, TOKEN},
    broker::TestBroker,
    config, fixtures,
    process::{Process, ProcessConfig, free_port},
    wait,
};
use reqwest::{StatusCode, header};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::helpers::*;

/// Wrong and right tokens, in the query and in headers, never reach a log
/// line (at any level), while the first rejection is logged in full and the
/// others in a summary.
#[tokio::test]
async fn a_token_never_appears_in_a_log_line() {
    let logs = CapturedLogs::install();
    let broker = TestBroker::new().await;
    let right = format!("supersecret-right-{}", Uuid::now_v7().simple());
    let wrong = format!("supersecret-wrong-{}", Uuid::now_v7().simple());
    let mut config = config::ingress(broker.prefix(), TOKEN);
    config.webhook_tokens = vec![right.clone()];
    let ingress = RunningIngress::start(config).await;

    let with_query = |token: &str| {
        ingress
            .http
            .post(format!("{}?token={token}", ingress.url("sms")))
            .header(header::CONTENT_TYPE, "application/json")
            .timeout(REQUEST_BOUND)
    };
    let basic =
        |password: &str| unauthenticated(&ingress, "sms").basic_auth("corral", Some(password));
    for request in [
        with_query(&wrong),
        unauthenticated(&ingress, "sms").bearer_auth(&wrong),
        basic(&wrong),
    ] {
        let response = send(request.body(fixtures::SMS_SUCCESS)).await;
        refused(response, StatusCode::UNAUTHORIZED).await;
    }
    for request in [
        with_query(&right),
        unauthenticated(&ingress, "sms").bearer_auth(&right),
        basic(&right),
    ] {
        accepted(send(request.body(fixtures::SMS_SUCCESS)).await).await;
    }
    // Each token, and the Basic credentials each was sent in.
    let mut secrets = Vec::new();
    for token in [&right, &wrong] {
        let request = basic(token).build().expect("a request");
        let credentials = request
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Basic "))
            .expect("Basic credentials");
        secrets.extend([token.clone(), credentials.to_owned()]);
    }
    let metrics = ingress.metrics().await;
    ingress.stop().await.expect("the ingress stops cleanly");

    let lines = logs.lines();
    let rejections: Vec<&String> = lines
        .iter()
        .filter(|line| line.contains("webhook rejected"))
        .collect();
    let full: Vec<&&String> = rejections.iter().filter(|line| more(line) == 0).collect();
    assert!(!full.is_empty(), "{rejections:#?}");
    for line in &full {
        assert!(line.contains("unauthorized"), "{line}");
        assert!(line.contains("/webhooks/dropcowboy/sms"), "{line}");
    }
    let summarised: u64 = rejections.iter().map(|line| more(line)).sum();
    assert_eq!(
        full.len() as u64 + summarised,
        3,
        "every rejection is in a line or a summary's count: {rejections:#?}"
    );
    for form in &secrets {
        let leaks: Vec<&String> = lines.iter().filter(|line| line.contains(form)).collect();
        assert!(leaks.is_empty(), "a token reached the logs: {leaks:#?}");
        assert!(
            metrics.0.keys().all(|series| !series.contains(form)),
            "a token reached a metric label"
        );
    }
}

/// The `more=<n>` of a summary line, 0 for a full line.
fn more(line: &str) -> u64 {
    line.split_whitespace()
        .find_map(|field| field.strip_prefix("more="))
        .map_or(0, |n| n.parse().expect("a count"))
}

/// Hundreds of 401s and 503s (the broker unreachable) give a handful of log
/// lines, at most one per cause per second, yet the lines' counts and the
/// counters account for every refusal exactly.
#[tokio::test]
async fn a_storm_of_refusals_gives_a_few_lines_that_count_every_one() {
    const EACH: u64 = 300;
    let logs = CapturedLogs::install();
    let broker = TestBroker::new().await;
    let mut config = config::ingress(broker.prefix(), TOKEN);
    config.amqp.url = format!("amqp://guest:guest@127.0.0.1:{}/%2f", free_port());
    config.retry_after_secs = RETRY_AFTER_SECS;
    let ingress = RunningIngress::start_unready(config).await;
    let started = Instant::now();
    for _ in 0..EACH {
        let wrong = unauthenticated(&ingress, "sms").bearer_auth("wrong");
        refused(
            send(wrong.body(fixtures::SMS_SUCCESS)).await,
            StatusCode::UNAUTHORIZED,
        )
        .await;
        unavailable(send(authenticated(&ingress, "sms").body(fixtures::SMS_SUCCESS)).await).await;
    }
    let metrics = ingress.metrics().await;
    ingress.stop().await.expect("the ingress stops cleanly");
    let seconds = started.elapsed().as_secs();

    assert_eq!(rejected(&metrics, "unauthorized"), EACH as f64);
    assert_eq!(publish_failures(&metrics, "unavailable"), EACH as f64);
    let lines = logs.lines();
    for marker in ["webhook rejected", "webhook not accepted: 503"] {
        let of_cause: Vec<&String> = lines.iter().filter(|l| l.contains(marker)).collect();
        // One full line, then at most one summary per second, and the last.
        assert!(
            of_cause.len() as u64 <= seconds + 3,
            "{} lines of {marker:?} in {seconds} s: {of_cause:#?}",
            of_cause.len()
        );
        let full = of_cause.iter().filter(|l| more(l) == 0).count() as u64;
        let summarised: u64 = of_cause.iter().map(|l| more(l)).sum();
        assert_eq!(full, 1, "{of_cause:#?}");
        assert_eq!(full + summarised, EACH, "{of_cause:#?}");
    }
}

/// A message the broker returns (its queue and the alternate exchange's
/// queue deleted under the running binary) leaves no trace of its body in the binary's log, even when `CORRAL_LOG`
/// asks for the client library's returned-message lines.
#[tokio::test]
async fn a_returned_message_leaves_no_body_in_the_log() {
    let broker = TestBroker::new().await;
    let ingress = Process::start_ready(
        ProcessConfig::ingress(broker.prefix(), TOKEN)
            .env("CORRAL_LOG", "info,lapin::returned_messages=trace"),
    )
    .await;
    broker.delete_queue(&broker.queue()).await;
    broker
        .delete_queue(&broker.topology.unroutable_queue())
        .await;
    let phone = format!("1555{}", &Uuid::now_v7().as_u128().to_string()[..7]);
    let body = format!(r#"{{"drop_id":"d-1","phone_number":"{phone}","status":"SUCCESS"}}"#);
    let response = reqwest::Client::new()
        .post(ingress.webhook_url("sms"))
        .bearer_auth(TOKEN)
        .header(header::CONTENT_TYPE, "application/json")
        .body(body)
        .timeout(REQUEST_BOUND)
        .send()
        .await
        .expect("the ingress should answer");
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    wait::until_true(
        "the ingress to log the unroutable publish",
        Duration::from_secs(10),
        || async { ingress.log_tail().contains("unroutable") },
    )
    .await;

    let log = ingress.log_tail();
    // As text, and as the list of bytes a `Debug` of the message prints.
    let as_bytes = format!("{:?}", phone.as_bytes());
    let as_bytes = as_bytes.trim_matches(['[', ']']);
    assert!(!log.contains(&phone), "the body reached the log:\n{log}");
    assert!(
        !log.contains(as_bytes),
        "the body's bytes reached the log:\n{log}"
    );
}

/// A malformed `CORRAL_AMQP_URL` is named in both binaries' start-up error
/// with its password replaced by `***`.
#[tokio::test]
async fn a_malformed_amqp_url_is_reported_without_its_password() {
    // No scheme: the URL parser quotes what it was given.
    let url = "corral:hunter2-pw@rabbit:5672";
    let mut ingress = config::ingress("unused", TOKEN);
    ingress.amqp.url = url.into();
    let mut worker = config::worker("postgres://postgres@127.0.0.1:5432/unused", "unused");
    worker.amqp.url = url.into();
    let errors = [
        corral_ingress::Application::build(ingress, CancellationToken::new())
            .expect_err("the ingress must refuse the URL"),
        corral_worker::Application::build(worker, CancellationToken::new())
            .expect_err("the worker must refuse the URL"),
    ];
    for err in errors {
        let shown = format!("{err:#} / {err:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("corral:***@rabbit:5672"), "{shown}");
    }
}

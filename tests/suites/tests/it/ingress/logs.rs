//! Tokens, passwords and webhook bodies stay out of logs, and a storm of
//! refusals does not flood them.

use std::time::{Duration, Instant};

use corral_testkit::{
    apps::{RunningIngress, TOKEN},
    config, fixtures,
    process::{Process, ProcessConfig, free_port},
    stack::Stack,
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
    let stack = Stack::builder().start().await;
    let right = format!("supersecret-right-{}", Uuid::now_v7().simple());
    let wrong = format!("supersecret-wrong-{}", Uuid::now_v7().simple());
    let mut config = stack.ingress_config();
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
    let stack = Stack::builder().start().await;
    let mut config = stack.ingress_config();
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
    let stack = Stack::builder().start().await;
    let broker = stack.broker();
    let ingress = Process::start_ready(
        ProcessConfig::ingress(broker.prefix(), TOKEN)
            .env("CORRAL_LOG", "info,lapin::returned_messages=trace")
            .env("CORRAL_RETRY_AFTER_SECS", RETRY_AFTER_SECS.to_string()),
    )
    .await;
    broker.delete_queue(&broker.queue()).await;
    broker
        .delete_queue(&broker.topology.unroutable_queue())
        .await;
    let phone = unique_phone();
    let body = format!(r#"{{"drop_id":"d-1","phone_number":"{phone}","status":"SUCCESS"}}"#);
    post_503(&ingress, "sms", body).await;
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

/// An ingress binary whose broker is unreachable and which has no spool, so
/// every webhook whose body it reads is answered 503 `unavailable`; ready to
/// take requests (its listeners bound) though never ready.
async fn ingress_refusing_all(config: ProcessConfig) -> Process {
    let unreachable = format!("amqp://guest:guest@127.0.0.1:{}/%2f", free_port());
    let ingress = Process::start(
        config
            .env("CORRAL_AMQP_URL", unreachable)
            .env("CORRAL_RETRY_AFTER_SECS", RETRY_AFTER_SECS.to_string()),
    )
    .await;
    ingress.wait_ready(false).await;
    ingress
}

/// A Drop Cowboy-shaped body with `drop_id` (as JSON text) and `phone`.
fn body_with(drop_id_json: &str, phone: &str) -> String {
    format!(
        r#"{{"drop_id":{drop_id_json},"phone_number":"+{phone}","foreign_id":"fid-{phone}","status":"SUCCESS"}}"#
    )
}

/// A phone number no other line of the log could contain by chance.
fn unique_phone() -> String {
    format!("1555{}", &Uuid::now_v7().as_u128().to_string()[..7])
}

async fn post_503(ingress: &Process, kind: &str, body: String) {
    let response = reqwest::Client::new()
        .post(ingress.webhook_url(kind))
        .bearer_auth(TOKEN)
        .header(header::CONTENT_TYPE, "application/json")
        .body(body)
        .timeout(REQUEST_BOUND)
        .send()
        .await
        .expect("the ingress should answer");
    unavailable(response).await;
}

/// Posts a webhook with a fresh `drop_id` and a fresh phone number, expects
/// a 503, and returns the `drop_id`.
async fn post_503_with_new_drop_id(ingress: &Process, kind: &str) -> String {
    let drop_id = Uuid::now_v7().simple().to_string();
    post_503(
        ingress,
        kind,
        body_with(&format!(r#""{drop_id}""#), &unique_phone()),
    )
    .await;
    drop_id
}

fn refused_lines(log: &str) -> Vec<&str> {
    log.lines()
        .filter(|line| line.contains("webhook refused: 503"))
        .collect()
}

/// Each webhook answered 503 gets exactly one line on `corral_ingress::refused`
/// naming its route, its cause and its `drop_id`, and none of its other
/// fields; a `drop_id` that could forge a log line is not echoed.
#[tokio::test]
async fn every_webhook_answered_503_is_logged_once_with_its_drop_id() {
    let ingress = ingress_refusing_all(ProcessConfig::ingress("unused", TOKEN)).await;
    let drop_id = format!("d-{}", Uuid::now_v7().simple());
    let phone = unique_phone();
    let forged = format!("{}\\nWARN forged", Uuid::now_v7().simple());
    let other_phone = unique_phone();

    post_503(
        &ingress,
        "sms",
        body_with(&format!(r#""{drop_id}""#), &phone),
    )
    .await;
    post_503(
        &ingress,
        "rvm",
        body_with(&format!(r#""{forged}""#), &other_phone),
    )
    .await;
    wait::until_true(
        "both refusals to reach the log",
        Duration::from_secs(10),
        || async { refused_lines(&ingress.log_tail()).len() == 2 },
    )
    .await;

    let log = ingress.log_tail();
    let lines = refused_lines(&log);
    let with_id: Vec<&&str> = lines.iter().filter(|l| l.contains(&drop_id)).collect();
    assert_eq!(with_id.len(), 1, "{lines:#?}");
    let line = with_id[0];
    for field in [
        " WARN ",
        "corral_ingress::refused:",
        "kind=sms",
        "cause=unavailable",
        &format!("drop_id={drop_id}"),
    ] {
        assert!(line.contains(field), "{field:?} missing from {line}");
    }
    let other = lines
        .iter()
        .find(|l| l.contains("kind=rvm"))
        .expect("the rvm refusal's line");
    assert!(
        other.contains("cause=unavailable") && other.ends_with("drop_id_unreadable=unsafe"),
        "{other}"
    );
    let forged_id = forged.split('\\').next().expect("the id's first part");
    for secret in [&phone, &other_phone, forged_id, "forged", TOKEN] {
        assert!(!log.contains(secret), "{secret:?} reached the log:\n{log}");
    }
}

/// `CORRAL_LOG=info,corral_ingress::refused=off` silences the per-webhook
/// lines and nothing else: the rate-limited 503 line still comes.
#[tokio::test]
async fn the_refused_lines_can_be_turned_off_alone() {
    let ingress = ingress_refusing_all(
        ProcessConfig::ingress("unused", TOKEN)
            .env("CORRAL_LOG", "info,corral_ingress::refused=off"),
    )
    .await;
    let drop_id = post_503_with_new_drop_id(&ingress, "sms").await;
    // Written after the refused line would have been, by the same thread.
    wait::until_true(
        "the rate-limited 503 line to reach the log",
        Duration::from_secs(10),
        || async { ingress.log_tail().contains("webhook not accepted: 503") },
    )
    .await;
    let log = ingress.log_tail();
    assert!(refused_lines(&log).is_empty(), "{log}");
    assert!(!log.contains(&drop_id), "{log}");
}

/// A 503 for want of room in `CORRAL_MAX_IN_FLIGHT_BYTES` comes before the
/// body is read, and the body is not read to log it: its line says so.
#[tokio::test]
async fn a_503_before_the_body_is_read_is_logged_without_reading_it() {
    let ingress = ingress_refusing_all(
        ProcessConfig::ingress("unused", TOKEN)
            .env("CORRAL_MAX_BODY_BYTES", MAX_BODY_BYTES.to_string())
            .env("CORRAL_MAX_IN_FLIGHT_BYTES", MAX_BODY_BYTES.to_string()),
    )
    .await;
    // Announces a body as large as the whole budget and sends none of it.
    let mut holder = tokio::net::TcpStream::connect(("127.0.0.1", ingress.listen_port()))
        .await
        .expect("connecting to the ingress");
    let head = format!(
        "POST /webhooks/dropcowboy/sms HTTP/1.1\r\nHost: 127.0.0.1\r\n\
         Authorization: Bearer {TOKEN}\r\nContent-Type: application/json\r\n\
         Content-Length: {MAX_BODY_BYTES}\r\n\r\n{{"
    );
    tokio::io::AsyncWriteExt::write_all(&mut holder, head.as_bytes())
        .await
        .expect("writing the head");
    wait::until_true(
        "the held request to take the whole budget",
        Duration::from_secs(10),
        || async {
            ingress
                .metrics()
                .await
                .get("corral_ingress_body_bytes_in_flight")
                == MAX_BODY_BYTES as f64
        },
    )
    .await;

    let drop_id = post_503_with_new_drop_id(&ingress, "rvm").await;
    wait::until_true(
        "the refusal to reach the log",
        Duration::from_secs(10),
        || async { !refused_lines(&ingress.log_tail()).is_empty() },
    )
    .await;
    drop(holder);

    let log = ingress.log_tail();
    let lines = refused_lines(&log);
    assert_eq!(lines.len(), 1, "{lines:#?}");
    assert!(
        lines[0].contains("kind=rvm")
            && lines[0].contains("cause=overloaded")
            && lines[0].ends_with("drop_id_unreadable=body_not_read"),
        "{}",
        lines[0]
    );
    assert!(!log.contains(&drop_id), "{log}");
}

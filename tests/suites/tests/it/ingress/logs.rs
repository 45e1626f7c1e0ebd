//! Tokens stay out of logs.

use corral_testkit::{
    apps::{RunningIngress, TOKEN},
    broker::TestBroker,
    config, fixtures,
};
use reqwest::{StatusCode, header};
use uuid::Uuid;

use super::helpers::*;

/// Wrong and right tokens, in the query and in headers, never reach a log
/// line (at any level), while the rejection is logged once per request.
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
    assert_eq!(
        rejections.len(),
        3,
        "one line per rejected request: {rejections:#?}"
    );
    for line in &rejections {
        assert!(line.contains("unauthorized"), "{line}");
        assert!(line.contains("/webhooks/dropcowboy/sms"), "{line}");
    }
    for form in &secrets {
        let leaks: Vec<&String> = lines.iter().filter(|line| line.contains(form)).collect();
        assert!(leaks.is_empty(), "a token reached the logs: {leaks:#?}");
        assert!(
            metrics.0.keys().all(|series| !series.contains(form)),
            "a token reached a metric label"
        );
    }
}

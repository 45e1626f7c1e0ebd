//! Rejections: status, error body, counter, and nothing published.

use std::collections::HashSet;

use corral_runtime::telemetry::labels::RejectReason;
use corral_testkit::{
    apps::{RunningIngress, TOKEN},
    fixtures,
    stack::Stack,
};
use reqwest::header;

use super::helpers::*;

#[tokio::test]
async fn a_request_without_a_token_is_401_with_a_basic_challenge() {
    let stack = Stack::builder().with_ingress().start().await;
    let (broker, ingress) = (stack.broker(), stack.ingress());
    let request = unauthenticated(ingress, "sms").body(fixtures::SMS_SUCCESS);
    assert_rejected(broker, ingress, request, 401, RejectReason::Unauthorized).await;
}

#[tokio::test]
async fn a_wrong_token_is_401_wherever_it_is_sent() {
    let stack = Stack::builder().with_ingress().start().await;
    let (broker, ingress) = (stack.broker(), stack.ingress());
    let wrong = "wrong-token-0123456789";
    let url = format!("{}?token={wrong}", ingress.url("rvm"));
    let requests = [
        ingress
            .http
            .post(url)
            .header(header::CONTENT_TYPE, "application/json"),
        unauthenticated(ingress, "rvm").bearer_auth(wrong),
        unauthenticated(ingress, "rvm").basic_auth("corral", Some(wrong)),
        // The right token as the user name is not a password.
        unauthenticated(ingress, "rvm").basic_auth(TOKEN, Some("x")),
        // A prefix of the right token.
        unauthenticated(ingress, "rvm").bearer_auth(&TOKEN[..TOKEN.len() - 1]),
    ];
    for request in requests {
        let request = request.body(fixtures::SMS_SUCCESS).timeout(REQUEST_BOUND);
        assert_rejected(broker, ingress, request, 401, RejectReason::Unauthorized).await;
    }
}

#[tokio::test]
async fn invalid_json_is_400() {
    let stack = Stack::builder().with_ingress().start().await;
    let (broker, ingress) = (stack.broker(), stack.ingress());
    let truncated = &fixtures::SMS_SUCCESS[..fixtures::SMS_SUCCESS.len() / 2];
    let request = authenticated(ingress, "sms").body(truncated.to_owned());
    let error = assert_rejected(broker, ingress, request, 400, RejectReason::InvalidJson).await;
    assert!(
        error.contains("JSON"),
        "error {error:?} should say what is wrong"
    );
}

#[tokio::test]
async fn a_json_array_is_400() {
    let stack = Stack::builder().with_ingress().start().await;
    let (broker, ingress) = (stack.broker(), stack.ingress());
    let array = format!("[{}]", fixtures::SMS_SUCCESS);
    let request = authenticated(ingress, "sms").body(array);
    let error = assert_rejected(broker, ingress, request, 400, RejectReason::NotObject).await;
    assert!(
        error.contains("object"),
        "error {error:?} should say what is wrong"
    );
}

#[tokio::test]
async fn a_json_string_is_400() {
    let stack = Stack::builder().with_ingress().start().await;
    let (broker, ingress) = (stack.broker(), stack.ingress());
    let request = authenticated(ingress, "rvm").body(r#""delivered""#);
    let error = assert_rejected(broker, ingress, request, 400, RejectReason::NotObject).await;
    assert!(
        error.contains("object"),
        "error {error:?} should say what is wrong"
    );
}

/// The limit is inclusive: exactly `max_body_bytes` is published whole, one
/// byte more is 413 and nothing is published.
#[tokio::test]
async fn a_body_one_byte_over_the_limit_is_413_and_one_exactly_at_it_is_accepted() {
    let stack = Stack::builder().with_ingress().start().await;
    let (broker, ingress) = (stack.broker(), stack.ingress());

    let at_limit = object_of_len(MAX_BODY_BYTES);
    let id = accepted(send(authenticated(ingress, "sms").body(at_limit.clone())).await).await;
    let webhooks = broker.take_webhooks(&broker.queue(), 1, QUEUE_WAIT).await;
    assert_eq!(webhooks.len(), 1);
    assert_eq!(webhooks[0].id, id);
    assert_eq!(webhooks[0].body, at_limit.as_bytes());

    let request = authenticated(ingress, "sms").body(object_of_len(MAX_BODY_BYTES + 1));
    assert_rejected(broker, ingress, request, 413, RejectReason::TooLarge).await;
}

/// Without a Content-Length the limit is enforced while reading the body.
#[tokio::test]
async fn a_chunked_body_over_the_limit_is_413_and_one_at_it_is_accepted() {
    let stack = Stack::builder().with_ingress().start().await;
    let (broker, ingress) = (stack.broker(), stack.ingress());

    let at_limit = object_of_len(MAX_BODY_BYTES);
    let (status, response) = raw_http(ingress.port, &chunked_post(&at_limit)).await;
    assert_eq!(status, 200, "{response}");
    let webhooks = broker.take_webhooks(&broker.queue(), 1, QUEUE_WAIT).await;
    assert_eq!(webhooks.len(), 1);
    assert_eq!(webhooks[0].body, at_limit.as_bytes());

    let before = ingress.metrics().await;
    let (status, response) = raw_http(
        ingress.port,
        &chunked_post(&object_of_len(MAX_BODY_BYTES + 1)),
    )
    .await;
    assert_eq!(status, 413, "{response}");
    assert!(response.contains(r#"{"error":"#), "{response}");
    let after = ingress.metrics().await;
    assert_eq!(
        rejected(&after, "too_large") - rejected(&before, "too_large"),
        1.0
    );
    assert_nothing_else_published(broker, ingress).await;
}

#[tokio::test]
async fn a_text_plain_body_is_415() {
    let stack = Stack::builder().with_ingress().start().await;
    let (broker, ingress) = (stack.broker(), stack.ingress());
    let request = ingress
        .http
        .post(ingress.url("sms"))
        .bearer_auth(TOKEN)
        .header(header::CONTENT_TYPE, "text/plain")
        .body(fixtures::SMS_SUCCESS)
        .timeout(REQUEST_BOUND);
    assert_rejected(
        broker,
        ingress,
        request,
        415,
        RejectReason::UnsupportedMediaType,
    )
    .await;
}

/// A missing Content-Type is accepted (some senders omit it), and so are the
/// JSON media types with parameters or a `+json` suffix.
#[tokio::test]
async fn json_media_types_and_a_missing_content_type_are_accepted() {
    let stack = Stack::builder().with_ingress().start().await;
    let (broker, ingress) = (stack.broker(), stack.ingress());
    let mut ids = HashSet::new();
    let plain = ingress.http.post(ingress.url("sms")).bearer_auth(TOKEN);
    ids.insert(accepted(send(plain.body(fixtures::SMS_SUCCESS)).await).await);
    for content_type in [
        "application/json; charset=utf-8",
        "application/vnd.dropcowboy+json",
    ] {
        let request = ingress
            .http
            .post(ingress.url("sms"))
            .bearer_auth(TOKEN)
            .header(header::CONTENT_TYPE, content_type)
            .body(fixtures::SMS_SUCCESS);
        ids.insert(accepted(send(request).await).await);
    }
    assert_eq!(queued_ids(broker, ids.len()).await, ids);
}

/// A client that sends the headers and then trickles (here: stops sending)
/// the body is answered 408 once `CORRAL_BODY_TIMEOUT_MS` has passed, instead
/// of holding a connection and a buffer for ever; nothing is published.
#[tokio::test]
async fn a_body_that_never_finishes_arriving_is_408() {
    let stack = Stack::builder().start().await;
    let broker = stack.broker();
    let mut config = stack.ingress_config();
    config.body_timeout_ms = 300;
    let ingress = RunningIngress::start(config).await;
    let before = ingress.metrics().await;
    let partial = format!(
        "POST /webhooks/dropcowboy/sms HTTP/1.1\r\nHost: 127.0.0.1\r\n\
         Authorization: Bearer {TOKEN}\r\nContent-Type: application/json\r\n\
         Content-Length: 100\r\nConnection: close\r\n\r\n{{\"drop_id\":"
    );
    let (status, response) = raw_http(ingress.port, partial.as_bytes()).await;
    assert_eq!(status, 408, "{response}");
    assert!(response.contains(r#"{"error":"#), "{response}");
    let after = ingress.metrics().await;
    assert_eq!(
        rejected(&after, "body_timeout") - rejected(&before, "body_timeout"),
        1.0
    );
    assert_nothing_else_published(broker, &ingress).await;
}

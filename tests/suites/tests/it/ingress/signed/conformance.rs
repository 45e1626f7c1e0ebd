//! The provider's receiver conformance suite (`05-webhooks.test.js`), case
//! by case, named as there, with our own secrets. Where its reference
//! receiver answers a duplicate `{"received": true, "duplicate": true}`,
//! corral keeps every verified delivery and answers each `200 {"id"}`: the
//! worker, not ingress, recognises an `event_id` it already stored.

use corral_runtime::telemetry::labels::RejectReason;
use corral_testkit::{fixtures, stack::Stack};
use uuid::Uuid;

use super::*;

/// Case 1.
#[tokio::test]
async fn accepts_a_correctly_signed_delivery() {
    let stack = Stack::builder().start().await;
    let broker = stack.broker();
    let ingress = start_signed(&stack, &[SECRET, SECOND_SECRET]).await;
    let delivery = Delivery::new(SECRET, fresh_event()).without("x-event-id");
    assert_published(broker, &ingress, &delivery).await;
}

/// Case 2.
#[tokio::test]
async fn accepts_a_delivery_signed_with_any_configured_secret() {
    let stack = Stack::builder().start().await;
    let broker = stack.broker();
    let ingress = start_signed(&stack, &[SECRET, SECOND_SECRET]).await;
    assert_published(
        broker,
        &ingress,
        &Delivery::new(SECOND_SECRET, fresh_event()),
    )
    .await;
}

/// Case 3: one secret alone.
#[tokio::test]
async fn is_registered_with_one_secret_too() {
    let stack = Stack::builder().start().await;
    let broker = stack.broker();
    let ingress = start_signed(&stack, &[SECRET]).await;
    assert_published(broker, &ingress, &Delivery::new(SECRET, fresh_event())).await;
}

/// Case 4.
#[tokio::test]
async fn verifies_the_raw_bytes_so_unusual_spacing_and_key_order_still_verify() {
    let stack = Stack::builder().start().await;
    let broker = stack.broker();
    let ingress = start_signed(&stack, &[SECRET, SECOND_SECRET]).await;
    let id = Uuid::now_v7();
    let raw = format!(
        "{{\n  \"data\" : {{ \"b\": 2, \"a\": 1 }},\n  \"event\":\"contact.msg.received\" ,\"event_id\": \"{id}\"\n}}"
    );
    assert_published(broker, &ingress, &Delivery::new(SECRET, raw)).await;
    // Blanks around the object too: kept exactly as well.
    let padded = format!(" \n{}\n", fresh_event());
    assert_published(broker, &ingress, &Delivery::new(SECRET, padded)).await;
}

/// Case 5, and no `Content-Type` at all.
#[tokio::test]
async fn accepts_any_content_type() {
    let stack = Stack::builder().start().await;
    let broker = stack.broker();
    let ingress = start_signed(&stack, &[SECRET, SECOND_SECRET]).await;
    for content_type in ["text/plain", "application/x-www-form-urlencoded", "garbage"] {
        let delivery = Delivery::new(SECRET, fresh_event()).with("content-type", content_type);
        assert_published(broker, &ingress, &delivery).await;
    }
    let bare = Delivery::new(SECRET, fresh_event()).without("content-type");
    assert_published(broker, &ingress, &bare).await;
}

/// Cases 6 and 7: a retry of the same event, with a new timestamp and
/// signature (and `X-Event-Id`, `X-Attempt: 2`, or neither), is accepted and
/// published again.
#[tokio::test]
async fn accepts_and_publishes_a_retried_event_again_for_the_worker_to_deduplicate() {
    let stack = Stack::builder().start().await;
    let broker = stack.broker();
    let ingress = start_signed(&stack, &[SECRET, SECOND_SECRET]).await;
    let event_id = Uuid::now_v7().to_string();
    let body = fixtures::event_body(&event_id);
    let first = Delivery::at(SECRET, &(now() - 60).to_string(), body.clone())
        .with("x-event-id", event_id.clone());
    let retry = Delivery::new(SECRET, body.clone())
        .with("x-event-id", event_id)
        .with("x-attempt", "2");
    assert_ne!(first.header("x-signature"), retry.header("x-signature"));
    let ids = [
        assert_published(broker, &ingress, &first).await,
        assert_published(broker, &ingress, &retry).await,
        assert_published(broker, &ingress, &Delivery::new(SECRET, body)).await,
    ];
    assert!(ids[0] != ids[1] && ids[1] != ids[2], "{ids:?}");
}

/// Case 8.
#[tokio::test]
async fn refuses_401_invalid_signature_for_the_wrong_secret() {
    let stack = Stack::builder().start().await;
    let broker = stack.broker();
    let ingress = start_signed(&stack, &[SECRET, SECOND_SECRET]).await;
    let delivery = Delivery::new("not-the-signing-secret", fresh_event());
    let reason = Some(RejectReason::InvalidSignature);
    assert_refused(
        broker,
        &ingress,
        &delivery,
        401,
        Some("invalid_signature"),
        reason,
    )
    .await;
}

/// Case 9.
#[tokio::test]
async fn refuses_401_invalid_signature_when_the_body_was_changed_after_signing() {
    let stack = Stack::builder().start().await;
    let broker = stack.broker();
    let ingress = start_signed(&stack, &[SECRET, SECOND_SECRET]).await;
    let mut delivery = Delivery::new(SECRET, fresh_event());
    let changed = String::from_utf8(delivery.body.clone()).expect("UTF-8");
    delivery.body = changed.replace("Yes", "No!").into_bytes();
    let reason = Some(RejectReason::InvalidSignature);
    assert_refused(
        broker,
        &ingress,
        &delivery,
        401,
        Some("invalid_signature"),
        reason,
    )
    .await;
}

/// Case 10.
#[tokio::test]
async fn refuses_401_invalid_signature_for_an_unknown_signature_version() {
    let stack = Stack::builder().start().await;
    let broker = stack.broker();
    let ingress = start_signed(&stack, &[SECRET, SECOND_SECRET]).await;
    let delivery = Delivery::new(SECRET, fresh_event()).with("x-signature-version", "v2");
    let reason = Some(RejectReason::InvalidSignature);
    assert_refused(
        broker,
        &ingress,
        &delivery,
        401,
        Some("invalid_signature"),
        reason,
    )
    .await;
    // Absent, it is v1.
    let absent = Delivery::new(SECRET, fresh_event()).without("x-signature-version");
    assert_published(broker, &ingress, &absent).await;
}

/// Case 11.
#[tokio::test]
async fn refuses_401_invalid_signature_for_a_signature_without_the_sha256_prefix() {
    let stack = Stack::builder().start().await;
    let broker = stack.broker();
    let ingress = start_signed(&stack, &[SECRET, SECOND_SECRET]).await;
    let delivery = Delivery::new(SECRET, fresh_event());
    let bare = delivery.header("x-signature")["sha256=".len()..].to_owned();
    let delivery = delivery.with("x-signature", bare);
    let reason = Some(RejectReason::InvalidSignature);
    assert_refused(
        broker,
        &ingress,
        &delivery,
        401,
        Some("invalid_signature"),
        reason,
    )
    .await;
}

/// Cases 12 and 13, and the same headers sent empty.
#[tokio::test]
async fn refuses_401_missing_signature_without_x_signature_or_x_timestamp() {
    let stack = Stack::builder().start().await;
    let broker = stack.broker();
    let ingress = start_signed(&stack, &[SECRET, SECOND_SECRET]).await;
    let reason = Some(RejectReason::MissingSignature);
    for header in ["x-signature", "x-timestamp"] {
        for delivery in [
            Delivery::new(SECRET, fresh_event()).without(header),
            Delivery::new(SECRET, fresh_event()).with(header, ""),
        ] {
            let code = Some("missing_signature");
            assert_refused(broker, &ingress, &delivery, 401, code, reason).await;
        }
    }
}

/// Cases 14 to 18: each timestamp signed over, so only its freshness
/// refuses it.
#[tokio::test]
async fn refuses_401_stale_timestamp_old_future_milliseconds_not_a_number_fractional() {
    let stack = Stack::builder().start().await;
    let broker = stack.broker();
    let ingress = start_signed(&stack, &[SECRET, SECOND_SECRET]).await;
    let at = now();
    for timestamp in [
        // 301 s old.
        (at - 301).to_string(),
        // 301 s in the future, and one more: the second may turn between
        // here and ingress's clock.
        (at + 302).to_string(),
        // In milliseconds.
        chrono::Utc::now().timestamp_millis().to_string(),
        "yesterday".to_owned(),
        format!("{at}.5"),
    ] {
        let delivery = Delivery::at(SECRET, &timestamp, fresh_event());
        let reason = Some(RejectReason::StaleTimestamp);
        assert_refused(
            broker,
            &ingress,
            &delivery,
            401,
            Some("stale_timestamp"),
            reason,
        )
        .await;
    }
}

/// Case 19, and a JSON body that is not an object.
#[tokio::test]
async fn refuses_400_a_correctly_signed_body_that_is_not_a_json_object() {
    let stack = Stack::builder().start().await;
    let broker = stack.broker();
    let ingress = start_signed(&stack, &[SECRET, SECOND_SECRET]).await;
    for (body, reason) in [
        ("event=contact.msg.received", RejectReason::InvalidJson),
        ("[]", RejectReason::NotObject),
        (r#"{"a": NaN}"#, RejectReason::InvalidJson),
    ] {
        let delivery = Delivery::new(SECRET, body);
        assert_refused(broker, &ingress, &delivery, 400, None, Some(reason)).await;
    }
}

/// Case 20: no secret configured (a token is, so ingress starts).
#[tokio::test]
async fn answers_503_not_configured_with_retry_after_when_no_secret_is_set() {
    let stack = Stack::builder().start().await;
    let broker = stack.broker();
    let ingress = start_signed(&stack, &[]).await;
    let delivery = Delivery::new(SECRET, fresh_event());
    let before = ingress.metrics().await;
    let response = send(delivery.request(&ingress)).await;
    let headers = refused_with_code(response, 503, "not_configured").await;
    assert_eq!(
        headers.get(header::RETRY_AFTER).map(|v| v.as_bytes()),
        Some(RETRY_AFTER_SECS.to_string().as_bytes())
    );
    let after = ingress.metrics().await;
    for reason in RejectReason::ALL {
        let label = reason.as_str();
        assert_eq!(rejected(&after, label), rejected(&before, label), "{label}");
    }
    assert_nothing_else_published(broker, &ingress).await;
}

/// Beyond the suite: any event type, typed by corral or not, and the
/// provider's own shapes, are kept as they came.
#[tokio::test]
async fn accepts_every_event_type_and_the_provider_s_samples_byte_for_byte() {
    let stack = Stack::builder().start().await;
    let broker = stack.broker();
    let ingress = start_signed(&stack, &[SECRET, SECOND_SECRET]).await;
    let unknown = fresh_event().replace("contact.msg.received", "contact.tag.added");
    for body in [
        unknown.as_str(),
        fixtures::V2_WEBHOOK_SMS_STATUS,
        fixtures::V2_WEBHOOK_RVM_STATUS,
        fixtures::V2_WEBHOOK_RVM_RECEIPT,
    ] {
        assert_published(broker, &ingress, &Delivery::new(SECRET, body)).await;
    }
}

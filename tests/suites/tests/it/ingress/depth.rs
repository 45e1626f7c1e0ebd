//! Nesting depth: a body nested deeper than `CORRAL_MAX_JSON_DEPTH` is
//! refused before anything is published, in time linear in its length.

use corral_runtime::telemetry::labels::RejectReason;
use corral_testkit::stack::Stack;

use super::helpers::*;

/// An object nesting `depth` objects (the top level counts as one), with a
/// number at the bottom.
fn nested(depth: usize) -> String {
    format!("{}1{}", r#"{"a":"#.repeat(depth), "}".repeat(depth))
}

#[tokio::test]
async fn a_body_nested_ten_thousand_deep_is_400_too_deep_and_not_published() {
    let stack = Stack::builder().with_ingress().start().await;
    let (broker, ingress) = (stack.broker(), stack.ingress());
    let body = nested(10_000);
    assert!(body.len() <= MAX_BODY_BYTES, "under the size limit");
    let request = authenticated(ingress, "sms").body(body);
    let error = assert_rejected(broker, ingress, request, 400, RejectReason::TooDeep).await;
    assert_eq!(error, "body nests objects and arrays deeper than 32 levels");
}

/// The default limit is inclusive, arrays count as objects do, and a deep
/// array is refused as too deep rather than as "not an object".
#[tokio::test]
async fn the_depth_limit_is_inclusive_and_counts_arrays_too() {
    let stack = Stack::builder().with_ingress().start().await;
    let (broker, ingress) = (stack.broker(), stack.ingress());

    let at_limit = nested(32);
    let id = accepted(send(authenticated(ingress, "sms").body(at_limit.clone())).await).await;
    let webhooks = broker.take_webhooks(&broker.queue(), 1, QUEUE_WAIT).await;
    assert_eq!(webhooks.len(), 1);
    assert_eq!(webhooks[0].id, id);
    assert_eq!(webhooks[0].body, at_limit.as_bytes());

    let request = authenticated(ingress, "rvm").body(nested(33));
    assert_rejected(broker, ingress, request, 400, RejectReason::TooDeep).await;
    let arrays = format!(r#"{{"a":{}{}}}"#, "[".repeat(32), "]".repeat(32));
    let request = authenticated(ingress, "rvm").body(arrays);
    assert_rejected(broker, ingress, request, 400, RejectReason::TooDeep).await;
    let bare_array = format!("{}{}", "[".repeat(5_000), "]".repeat(5_000));
    let request = authenticated(ingress, "rvm").body(bare_array);
    assert_rejected(broker, ingress, request, 400, RejectReason::TooDeep).await;
}

#[tokio::test]
async fn the_depth_limit_follows_its_setting() {
    let stack = Stack::builder().start().await;
    let broker = stack.broker();
    let mut config = corral_testkit::config::ingress(broker.prefix(), corral_testkit::apps::TOKEN);
    config.max_json_depth = 2;
    let ingress = corral_testkit::apps::RunningIngress::start(config).await;
    // The provider's own payload nests 2 deep.
    post_sample(&ingress).await;
    assert_eq!(
        broker
            .take_webhooks(&broker.queue(), 1, QUEUE_WAIT)
            .await
            .len(),
        1
    );
    let request = authenticated(&ingress, "sms").body(nested(3));
    let error = assert_rejected(broker, &ingress, request, 400, RejectReason::TooDeep).await;
    assert_eq!(error, "body nests objects and arrays deeper than 2 levels");
}

//! The sample reaches the queue untouched, with its envelope.

use std::collections::HashMap;

use chrono::{TimeDelta, Utc};
use corral_contract::envelope::batch;
use corral_testkit::{fixtures, stack::Stack};
use lapin::types::AMQPValue;

use super::helpers::*;

/// Each sample reaches the queue byte for byte, with the route's routing key
/// in the envelope design.md fixes; the answered id is the webhook's `id` there.
#[tokio::test]
async fn a_posted_sample_arrives_in_the_queue_byte_identical_with_its_envelope() {
    let stack = Stack::builder().start().await;
    let broker = stack.broker();
    let ingress = start(&stack).await;
    // Not what a serializer would write: proves the bytes are passed on, not re-encoded.
    let odd = "{ \"a\" : 1.50e0,\n\t\"b\":\"\\u00e9\\ud83d\\ude00\", \"n\": null }\r\n";
    let posts = [
        ("sms", fixtures::SMS_SUCCESS),
        ("sms", fixtures::SMS_FAILURE),
        ("rvm", fixtures::SMS_FAILURE),
        ("rvm", odd),
    ];

    let before = Utc::now();
    let mut expected = HashMap::new();
    for (kind, body) in posts {
        let id = accepted(send(authenticated(&ingress, kind).body(body)).await).await;
        assert_eq!(id.get_version_num(), 7, "message ids are UUIDv7");
        expected.insert(id, (kind, body));
    }
    let after = Utc::now();

    let webhooks = broker
        .take_webhooks(&broker.queue(), posts.len(), QUEUE_WAIT)
        .await;
    assert_eq!(webhooks.len(), posts.len());
    for webhook in &webhooks {
        let id = webhook.id;
        let (kind, body) = expected
            .remove(&id)
            .unwrap_or_else(|| panic!("{id} in the queue was not answered 200 (or came twice)"));
        assert_eq!(
            webhook.body,
            body.as_bytes(),
            "{kind} body is not byte-identical"
        );
        assert_eq!(webhook.kind.as_str(), kind);
        let delivery = &webhook.message.delivery;
        let properties = &delivery.properties;
        // One kind per message, routed by it as a single webhook was.
        assert_eq!(delivery.routing_key.as_str(), format!("dropcowboy.{kind}"));
        assert_eq!(delivery.exchange.as_str(), broker.topology.exchange());
        assert_eq!(properties.delivery_mode(), &Some(2), "persistent");
        assert_eq!(
            properties.content_type().as_ref().map(|t| t.as_str()),
            Some(batch::CONTENT_TYPE)
        );
        assert_eq!(
            properties.app_id().as_ref().map(|a| a.as_str()),
            Some("corral-ingress")
        );
        assert_eq!(
            header(&webhook.message, "x-corral-envelope"),
            Some(&AMQPValue::LongInt(2))
        );
        let in_message = webhooks
            .iter()
            .filter(|other| std::sync::Arc::ptr_eq(&other.message, &webhook.message))
            .count();
        assert_eq!(
            header(&webhook.message, "x-corral-webhooks"),
            Some(&AMQPValue::LongInt(in_message as i32))
        );

        // Same clock as the ingress (same process); the envelope keeps µs.
        let at = webhook.received_at;
        assert!(
            at >= before - TimeDelta::microseconds(1) && at <= after,
            "received_at {at} is not between {before} and {after}"
        );
        assert_eq!(
            at.timestamp_subsec_nanos() % 1_000,
            0,
            "received_at {at} is truncated to microseconds"
        );
        let timestamp = properties.timestamp().expect("timestamp property set");
        assert!(
            (before.timestamp() as u64..=after.timestamp() as u64).contains(&timestamp),
            "timestamp {timestamp} is not between {before} and {after}"
        );
    }

    let metrics = ingress.metrics().await;
    assert_eq!(published(&metrics, "sms"), 2.0);
    assert_eq!(published(&metrics, "rvm"), 2.0);
    assert_eq!(
        metrics.get(r#"corral_ingress_requests_total{route="sms",status="200"}"#),
        2.0
    );
    ingress.stop().await.expect("the ingress stops cleanly");
}

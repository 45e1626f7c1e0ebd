//! The sample reaches the queue untouched, with its envelope.

use std::collections::HashMap;

use chrono::{DateTime, TimeDelta, Utc};
use corral_testkit::{broker::TestBroker, fixtures};
use lapin::types::AMQPValue;

use super::helpers::*;

/// Each sample reaches the queue byte for byte, with the route's routing key
/// and the envelope design.md fixes; the answered id is the `message_id`.
#[tokio::test]
async fn a_posted_sample_arrives_in_the_queue_byte_identical_with_its_envelope() {
    let broker = TestBroker::new().await;
    let ingress = start(&broker).await;
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

    let messages = broker.take(&broker.queue(), posts.len(), QUEUE_WAIT).await;
    assert_eq!(messages.len(), posts.len());
    for message in &messages {
        let id = message_id(message);
        let (kind, body) = expected
            .remove(&id)
            .unwrap_or_else(|| panic!("{id} in the queue was not answered 200 (or came twice)"));
        let delivery = &message.delivery;
        let properties = &delivery.properties;
        assert_eq!(
            delivery.data,
            body.as_bytes(),
            "{kind} body is not byte-identical"
        );
        assert_eq!(delivery.routing_key.as_str(), format!("dropcowboy.{kind}"));
        assert_eq!(delivery.exchange.as_str(), broker.topology.exchange());
        assert_eq!(properties.delivery_mode(), &Some(2), "persistent");
        assert_eq!(
            properties.content_type().as_ref().map(|t| t.as_str()),
            Some("application/json")
        );
        assert_eq!(
            properties.app_id().as_ref().map(|a| a.as_str()),
            Some("corral-ingress")
        );
        assert_eq!(
            header(message, "x-corral-envelope"),
            Some(&AMQPValue::LongInt(1))
        );

        let received_at = header_text(message, "x-received-at")
            .unwrap_or_else(|| panic!("{id} has no text x-received-at header"));
        let fraction = received_at
            .strip_suffix('Z')
            .and_then(|rest| rest.rsplit_once('.'))
            .map(|(_, fraction)| fraction)
            .unwrap_or_else(|| panic!("x-received-at {received_at:?} is not UTC with a fraction"));
        assert!(
            fraction.len() == 6 && fraction.bytes().all(|b| b.is_ascii_digit()),
            "x-received-at {received_at:?} does not have microseconds"
        );
        let at = DateTime::parse_from_rfc3339(&received_at)
            .unwrap_or_else(|err| panic!("x-received-at {received_at:?} is not RFC 3339: {err}"))
            .with_timezone(&Utc);
        // Same clock as the ingress (same process); the header is truncated to µs.
        assert!(
            at >= before - TimeDelta::microseconds(1) && at <= after,
            "x-received-at {at} is not between {before} and {after}"
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

//! The envelope's [`Metadata`] as AMQP properties and headers, and back.
//!
//! The wire format is fixed (messages already in queues must still be
//! read): `content_type`, `message_id` and `timestamp` are properties; the
//! received instant, the envelope version and the webhook count are the
//! headers `x-received-at` (a long string), `x-corral-envelope` and
//! `x-corral-webhooks` (long ints); every message corral makes is persistent
//! (`delivery_mode` 2) and says `app_id` `corral-ingress`.

use chrono::{DateTime, Utc};
use lapin::{
    BasicProperties,
    types::{AMQPValue, FieldTable, LongString, ShortString},
};

use corral_contract::{
    envelope::{
        ENVELOPE_HEADER, Metadata, RECEIVED_AT_HEADER, WEBHOOKS_HEADER, format_received_at,
    },
    results::{DeliveryResult, MESSAGE_TYPE},
};

/// The properties of a message with `metadata`, as ingress publishes it.
pub fn properties(metadata: &Metadata) -> BasicProperties {
    let mut headers = FieldTable::default();
    if let Some(at) = metadata.received_at {
        headers.insert(
            RECEIVED_AT_HEADER.into(),
            AMQPValue::LongString(LongString::from(format_received_at(at))),
        );
    }
    if let Some(version) = metadata.version {
        headers.insert(ENVELOPE_HEADER.into(), AMQPValue::LongInt(version));
    }
    if let Some(webhooks) = metadata.webhooks {
        headers.insert(WEBHOOKS_HEADER.into(), AMQPValue::LongInt(webhooks));
    }
    let mut properties = BasicProperties::default()
        .with_delivery_mode(2)
        .with_app_id(ShortString::from("corral-ingress"))
        .with_headers(headers);
    if let Some(content_type) = &metadata.content_type {
        properties = properties.with_content_type(ShortString::from(content_type.as_str()));
    }
    if let Some(id) = &metadata.message_id {
        properties = properties.with_message_id(ShortString::from(id.as_str()));
    }
    if let Some(timestamp) = metadata.timestamp {
        properties = properties.with_timestamp(timestamp);
    }
    properties
}

/// What a message's properties say, of what corral reads. A header of
/// another type than corral writes, or an `x-received-at` that is not
/// RFC 3339, is left out: the message is still a webhook to keep.
pub fn metadata(properties: &BasicProperties) -> Metadata {
    let header = |name: &str| {
        properties
            .headers()
            .as_ref()
            .and_then(|headers| headers.inner().get(name))
    };
    let integer = |name: &str| match header(name) {
        Some(AMQPValue::LongInt(value)) => Some(*value),
        _ => None,
    };
    let received_at = header(RECEIVED_AT_HEADER)
        .and_then(|value| match value {
            AMQPValue::LongString(s) => std::str::from_utf8(s.as_bytes()).ok().map(str::to_owned),
            AMQPValue::ShortString(s) => Some(s.as_str().to_owned()),
            _ => None,
        })
        .and_then(|text| DateTime::parse_from_rfc3339(&text).ok())
        .map(|at| at.with_timezone(&Utc));
    Metadata {
        content_type: properties
            .content_type()
            .as_ref()
            .map(|s| s.as_str().to_owned()),
        message_id: properties
            .message_id()
            .as_ref()
            .map(|s| s.as_str().to_owned()),
        timestamp: *properties.timestamp(),
        received_at,
        version: integer(ENVELOPE_HEADER),
        webhooks: integer(WEBHOOKS_HEADER),
    }
}

/// A result event's properties: persistent, JSON, `message_id` = its id,
/// `type` = [`MESSAGE_TYPE`], `timestamp` = when it was stored.
pub fn result_properties(event: &DeliveryResult) -> BasicProperties {
    BasicProperties::default()
        .with_delivery_mode(2)
        .with_content_type(ShortString::from("application/json"))
        .with_message_id(ShortString::from(event.id.to_string()))
        .with_type(ShortString::from(MESSAGE_TYPE))
        .with_timestamp(event.stored_at.timestamp().max(0) as u64)
        .with_app_id(ShortString::from("corral-worker"))
}

#[cfg(test)]
mod tests {
    use uuid::Uuid;

    use super::*;
    use corral_contract::envelope::{Envelope, Format, batch};

    fn at(text: &str) -> DateTime<Utc> {
        text.parse().expect("an RFC 3339 instant")
    }

    #[test]
    fn properties_round_trip_through_the_envelope() {
        let id = Uuid::now_v7();
        let at = at("2026-11-27T05:24:31.123456Z");
        let props = properties(&Metadata::single(id, at));
        assert_eq!(props.delivery_mode(), &Some(2));
        assert_eq!(
            props.content_type().as_ref().map(|s| s.as_str()),
            Some("application/json")
        );
        assert_eq!(
            Envelope::read(&metadata(&props)),
            Envelope {
                message_id: Some(id),
                received_at: Some(at)
            }
        );
        assert_eq!(metadata(&props), Metadata::single(id, at));
    }

    /// The bytes on the wire are those corral 0.1 and every later ingress
    /// wrote, so messages already in queues read back the same.
    #[test]
    fn the_wire_format_is_unchanged() {
        let id = Uuid::now_v7();
        let at = at("2026-11-27T05:24:31.000001Z");
        let single = properties(&Metadata::single(id, at));
        let headers = single.headers().clone().expect("headers");
        assert_eq!(
            headers.inner().get(RECEIVED_AT_HEADER),
            Some(&AMQPValue::LongString("2026-11-27T05:24:31.000001Z".into()))
        );
        assert_eq!(
            headers.inner().get(ENVELOPE_HEADER),
            Some(&AMQPValue::LongInt(1))
        );
        assert_eq!(headers.inner().len(), 2);
        assert_eq!(single.timestamp(), &Some(at.timestamp() as u64));
        assert_eq!(
            single.app_id().as_ref().map(|s| s.as_str()),
            Some("corral-ingress")
        );
        assert_eq!(
            single.message_id().as_ref().map(|s| s.as_str()),
            Some(id.to_string().as_str())
        );

        let packed = properties(&Metadata::batch(id, at, 3));
        let headers = packed.headers().clone().expect("headers");
        assert_eq!(
            headers.inner().get(ENVELOPE_HEADER),
            Some(&AMQPValue::LongInt(2))
        );
        assert_eq!(
            headers.inner().get(WEBHOOKS_HEADER),
            Some(&AMQPValue::LongInt(3))
        );
        assert_eq!(headers.inner().len(), 2);
        assert_eq!(packed.delivery_mode(), &Some(2));
        assert_eq!(
            packed.content_type().as_ref().map(|s| s.as_str()),
            Some(batch::CONTENT_TYPE)
        );
        assert_eq!(Format::of(&metadata(&packed)), Format::Batch);
    }

    #[test]
    fn foreign_messages_fall_back_to_the_timestamp_property() {
        let props = BasicProperties::default()
            .with_message_id(ShortString::from("not-a-uuid"))
            .with_timestamp(1_552_857_026);
        let envelope = Envelope::read(&metadata(&props));
        assert_eq!(envelope.message_id, None);
        assert_eq!(
            envelope.received_at,
            DateTime::from_timestamp(1_552_857_026, 0)
        );
        let mut headers = FieldTable::default();
        headers.insert(
            RECEIVED_AT_HEADER.into(),
            AMQPValue::ShortString("2019-03-17T21:10:26.5+02:00".into()),
        );
        let short = properties(&Metadata::default()).with_headers(headers);
        assert_eq!(
            metadata(&short).received_at,
            Some(at("2019-03-17T19:10:26.5Z"))
        );
    }

    #[test]
    fn a_result_event_is_published_persistent_typed_and_with_its_id() {
        // A voicemail that failed: nothing in the properties depends on it.
        let event: DeliveryResult = serde_json::from_value(serde_json::json!({
            "version": 1, "id": "0193f0c2-7a1e-7d3c-9a55-0123456789ab", "event_id": 7,
            "drop_id": "rvm-1", "foreign_id": "order-9", "kind": "rvm", "phone_number": null,
            "status": "failure", "reason": "Invalid Number", "dnc": null, "spam": null,
            "product_cost": "0", "compliance_fee": null, "tts_fee": null,
            "attempt_date": "2026-12-01T10:00:00Z", "received_at": "2026-12-01T10:00:01Z",
            "stored_at": "2026-12-01T10:00:02Z", "latest": false,
            "suppressions": [], "new_suppressions": [],
        }))
        .expect("a result event");
        let properties = result_properties(&event);
        assert_eq!(properties.kind().as_ref().unwrap().as_str(), MESSAGE_TYPE);
        assert_eq!(
            properties.message_id().as_ref().unwrap().as_str(),
            "0193f0c2-7a1e-7d3c-9a55-0123456789ab"
        );
        assert_eq!(properties.delivery_mode(), &Some(2));
    }
}

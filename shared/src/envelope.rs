//! The AMQP message between ingress and worker.
//!
//! Body: the webhook's request body, byte for byte. Properties:
//! `delivery_mode` 2 (persistent), `content_type` `application/json`,
//! `message_id` a UUIDv7 made at ingress (the `id` answered to the caller),
//! `timestamp` (seconds), `app_id` `corral-ingress`, and the headers
//! `x-received-at` (RFC 3339 with microseconds) and `x-corral-envelope`
//! (the version of this contract, so a future change can be told apart).

use chrono::{DateTime, SecondsFormat, Utc};
use lapin::{
    BasicProperties,
    types::{AMQPValue, FieldTable, LongString, ShortString},
};
use uuid::Uuid;

/// Header carrying the instant ingress received the webhook.
pub const RECEIVED_AT_HEADER: &str = "x-received-at";
/// Header carrying the envelope version.
pub const ENVELOPE_HEADER: &str = "x-corral-envelope";
/// Current envelope version.
pub const ENVELOPE_VERSION: i32 = 1;

/// Which Drop Cowboy product a webhook reports on; chosen by the route.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// Text message.
    Sms,
    /// Ringless voicemail.
    Rvm,
}

impl Kind {
    /// Both kinds, for iterating.
    pub const ALL: [Kind; 2] = [Kind::Sms, Kind::Rvm];

    /// `sms` or `rvm`: the route segment, the metric label and the column value.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Sms => "sms",
            Kind::Rvm => "rvm",
        }
    }

    /// The routing key a webhook of this kind is published with.
    pub fn routing_key(self) -> &'static str {
        match self {
            Kind::Sms => "dropcowboy.sms",
            Kind::Rvm => "dropcowboy.rvm",
        }
    }

    /// The kind a routing key (`dropcowboy.sms`) names.
    pub fn from_routing_key(key: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|kind| kind.routing_key() == key)
    }
}

/// Properties of a webhook message made at ingress.
pub fn properties(message_id: Uuid, received_at: DateTime<Utc>) -> BasicProperties {
    let mut headers = FieldTable::default();
    headers.insert(
        RECEIVED_AT_HEADER.into(),
        AMQPValue::LongString(LongString::from(format_received_at(received_at))),
    );
    headers.insert(ENVELOPE_HEADER.into(), AMQPValue::LongInt(ENVELOPE_VERSION));
    BasicProperties::default()
        .with_delivery_mode(2)
        .with_content_type(ShortString::from("application/json"))
        .with_message_id(ShortString::from(message_id.to_string()))
        .with_timestamp(received_at.timestamp().max(0) as u64)
        .with_app_id(ShortString::from("corral-ingress"))
        .with_headers(headers)
}

/// RFC 3339 with microseconds, as in the `x-received-at` header.
pub fn format_received_at(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Micros, true)
}

/// What the worker reads back from a message's properties.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope {
    /// `message_id` when it is a UUID; `None` for a message not made by ingress.
    pub message_id: Option<Uuid>,
    /// `x-received-at`, else the `timestamp` property; `None` when neither is there.
    pub received_at: Option<DateTime<Utc>>,
}

impl Envelope {
    /// Reads the envelope; never fails, because a message with odd properties
    /// is still a webhook to keep (the worker fills the gaps and says so).
    pub fn read(properties: &BasicProperties) -> Self {
        let message_id = properties
            .message_id()
            .as_ref()
            .and_then(|id| Uuid::parse_str(id.as_str()).ok());
        let header_time = properties
            .headers()
            .as_ref()
            .and_then(|headers| headers.inner().get(RECEIVED_AT_HEADER))
            .and_then(|value| match value {
                AMQPValue::LongString(s) => {
                    std::str::from_utf8(s.as_bytes()).ok().map(str::to_owned)
                }
                AMQPValue::ShortString(s) => Some(s.as_str().to_owned()),
                _ => None,
            })
            .and_then(|text| DateTime::parse_from_rfc3339(&text).ok())
            .map(|at| at.with_timezone(&Utc));
        let received_at = header_time.or_else(|| {
            properties
                .timestamp()
                .and_then(|secs| i64::try_from(secs).ok())
                .and_then(|secs| DateTime::from_timestamp(secs, 0))
        });
        Self {
            message_id,
            received_at,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn properties_round_trip_through_the_envelope() {
        let id = Uuid::now_v7();
        let at = DateTime::parse_from_rfc3339("2026-11-27T05:24:31.123456Z")
            .unwrap()
            .with_timezone(&Utc);
        let props = properties(id, at);
        assert_eq!(props.delivery_mode(), &Some(2));
        assert_eq!(
            props.content_type().as_ref().map(|s| s.as_str()),
            Some("application/json")
        );
        assert_eq!(
            Envelope::read(&props),
            Envelope {
                message_id: Some(id),
                received_at: Some(at)
            }
        );
    }

    #[test]
    fn received_at_keeps_microseconds_in_utc() {
        let at = DateTime::parse_from_rfc3339("2019-03-17T21:10:26.000001+02:00")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(format_received_at(at), "2019-03-17T19:10:26.000001Z");
    }

    #[test]
    fn foreign_messages_fall_back_to_the_timestamp_property() {
        let props = BasicProperties::default()
            .with_message_id(ShortString::from("not-a-uuid"))
            .with_timestamp(1_552_857_026);
        let envelope = Envelope::read(&props);
        assert_eq!(envelope.message_id, None);
        assert_eq!(
            envelope.received_at,
            DateTime::from_timestamp(1_552_857_026, 0)
        );
    }

    #[test]
    fn routing_keys_name_their_kind() {
        for kind in Kind::ALL {
            assert_eq!(Kind::from_routing_key(kind.routing_key()), Some(kind));
        }
        assert_eq!(Kind::from_routing_key("dropcowboy.fax"), None);
    }
}

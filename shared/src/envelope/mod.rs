//! The AMQP message between ingress and worker.
//!
//! Two versions, told apart by the properties ([`Format`]):
//!
//! - envelope 2 ([`batch`]), what ingress publishes: one or more webhooks in
//!   a JSON body, each with its own id, `received_at` and kind;
//! - envelope 1, what corral 0.1 published and the worker still reads: one
//!   webhook per message.
//!
//! Envelope 1 body: the webhook's request body, byte for byte. Properties:
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
/// Envelope version of a single-webhook message.
pub const ENVELOPE_VERSION: i32 = 1;
/// Header carrying how many webhooks an envelope-2 message holds (for
/// people reading the management UI; the body is what counts).
pub const WEBHOOKS_HEADER: &str = "x-corral-webhooks";
/// Routing key of an envelope-2 message holding both kinds. Every routing
/// key corral uses starts `dropcowboy.`, which the queue is bound with.
pub const MIXED_ROUTING_KEY: &str = "dropcowboy.mixed";

pub mod batch;
mod charset;

pub use charset::Charset;

/// What a webhook is, chosen by the route it came in on: a delivery status
/// of one Drop Cowboy product from its (unsigned) callback route, or a
/// signed event of any type from the signed route.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// Text message (`/webhooks/dropcowboy/sms`).
    Sms,
    /// Ringless voicemail (`/webhooks/dropcowboy/rvm`).
    Rvm,
    /// A signed event, whatever its `event` type (`/webhooks/dropcowboy`).
    Event,
}

impl Kind {
    /// Every kind, for iterating.
    pub const ALL: [Kind; 3] = [Kind::Sms, Kind::Rvm, Kind::Event];

    /// The kinds of the callback routes, whose bodies are each one delivery
    /// status (what `delivery_events` and its metrics are made of).
    pub const CALLBACKS: [Kind; 2] = [Kind::Sms, Kind::Rvm];

    /// `sms`, `rvm` or `event`: the route's metric label and the column value.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Sms => "sms",
            Kind::Rvm => "rvm",
            Kind::Event => "event",
        }
    }

    /// The kind [`Kind::as_str`] names.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|kind| kind.as_str() == name)
    }

    /// The routing key a webhook of this kind is published with. Each
    /// starts `dropcowboy.`, which the main queue is bound with; a queue of
    /// one's own bound to `dropcowboy.sms` gets no signed event.
    pub fn routing_key(self) -> &'static str {
        match self {
            Kind::Sms => "dropcowboy.sms",
            Kind::Rvm => "dropcowboy.rvm",
            Kind::Event => "dropcowboy.event",
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

/// Properties of an envelope-2 message: `message_id` names the message
/// (each webhook's own id is in the body), `timestamp` is when its first
/// webhook was received.
pub fn batch_properties(
    message_id: Uuid,
    first_received_at: DateTime<Utc>,
    webhooks: usize,
) -> BasicProperties {
    let mut headers = FieldTable::default();
    headers.insert(ENVELOPE_HEADER.into(), AMQPValue::LongInt(batch::VERSION));
    headers.insert(
        WEBHOOKS_HEADER.into(),
        AMQPValue::LongInt(i32::try_from(webhooks).unwrap_or(i32::MAX)),
    );
    BasicProperties::default()
        .with_delivery_mode(2)
        .with_content_type(ShortString::from(batch::CONTENT_TYPE))
        .with_message_id(ShortString::from(message_id.to_string()))
        .with_timestamp(first_received_at.timestamp().max(0) as u64)
        .with_app_id(ShortString::from("corral-ingress"))
        .with_headers(headers)
}

/// An envelope-2 message, ready to publish to the webhooks exchange.
#[derive(Debug)]
pub struct BatchMessage {
    /// The kind's routing key, or [`MIXED_ROUTING_KEY`] for both kinds.
    pub routing_key: &'static str,
    /// The webhooks, packed by [`batch::encode`].
    pub body: Vec<u8>,
    /// [`batch_properties`].
    pub properties: BasicProperties,
}

/// `webhooks` as one envelope-2 message named `message_id`, for a buffer
/// whose bodies hold `charset`: the one way ingress, and whatever stands in
/// for it in tests and benchmarks, builds one.
pub fn batch_message(
    message_id: Uuid,
    webhooks: &[batch::Packing<'_>],
    charset: Charset,
) -> BatchMessage {
    let first = webhooks.first().expect("a message holds a webhook");
    let bytes = batch::FRAME_OVERHEAD
        + webhooks
            .iter()
            .map(|webhook| batch::entry_len_for(charset, webhook.body))
            .sum::<usize>();
    let mut body = Vec::with_capacity(bytes);
    batch::encode_for(charset, webhooks.iter().copied(), &mut body);
    BatchMessage {
        routing_key: routing_key(webhooks.iter().map(|webhook| webhook.kind)),
        body,
        properties: batch_properties(message_id, first.received_at, webhooks.len()),
    }
}

/// The routing key of a message holding webhooks of `kinds`: the kind's own
/// when they are all of one, so a consumer bound to `dropcowboy.sms` still
/// gets only SMS.
pub fn routing_key(mut kinds: impl Iterator<Item = Kind>) -> &'static str {
    let Some(first) = kinds.next() else {
        return MIXED_ROUTING_KEY;
    };
    if kinds.all(|kind| kind == first) {
        first.routing_key()
    } else {
        MIXED_ROUTING_KEY
    }
}

/// What a message's properties say its body is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Format {
    /// Envelope 1 (or a message corral did not make): the body is one webhook.
    Single,
    /// Envelope 2: [`batch::decode`] reads the body.
    Batch,
    /// A corral message of a version this build cannot read (a newer
    /// ingress than worker; upgrade workers first), with what it says.
    Unsupported(String),
}

impl Format {
    /// Reads the format from `content_type`: [`batch::MEDIA_TYPE`] with
    /// `version=2` is a batch; any other version of it is unsupported;
    /// anything else is a single webhook.
    pub fn of(properties: &BasicProperties) -> Self {
        let Some(content_type) = properties.content_type().as_ref() else {
            return Self::Single;
        };
        let mut parts = content_type.as_str().split(';');
        let essence = parts.next().unwrap_or_default().trim();
        if !essence.eq_ignore_ascii_case(batch::MEDIA_TYPE) {
            return Self::Single;
        }
        let version = parts
            .filter_map(|param| param.split_once('='))
            .find(|(name, _)| name.trim().eq_ignore_ascii_case("version"))
            .map(|(_, value)| value.trim().trim_matches('"'));
        if version == Some("2") {
            Self::Batch
        } else {
            Self::Unsupported(format!(
                "content type {:?}: this corral-worker reads version=2 only; upgrade it",
                content_type.as_str()
            ))
        }
    }
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
    fn formats_are_told_apart_by_content_type() {
        let with = |ct: &str| BasicProperties::default().with_content_type(ct.into());
        assert_eq!(Format::of(&BasicProperties::default()), Format::Single);
        assert_eq!(Format::of(&with("application/json")), Format::Single);
        let props = batch_properties(Uuid::now_v7(), Utc::now(), 3);
        assert_eq!(Format::of(&props), Format::Batch);
        assert_eq!(
            Format::of(&with("Application/VND.corral.webhooks+json;version=\"2\"")),
            Format::Batch
        );
        for ct in [
            "application/vnd.corral.webhooks+json",
            "application/vnd.corral.webhooks+json; version=3",
        ] {
            assert!(matches!(Format::of(&with(ct)), Format::Unsupported(why) if why.contains(ct)));
        }
    }

    #[test]
    fn a_batch_of_one_kind_keeps_that_kind_s_routing_key() {
        use Kind::{Rvm, Sms};
        assert_eq!(routing_key([Sms, Sms].into_iter()), "dropcowboy.sms");
        assert_eq!(routing_key([Rvm].into_iter()), "dropcowboy.rvm");
        assert_eq!(routing_key([Sms, Rvm].into_iter()), MIXED_ROUTING_KEY);
        assert_eq!(
            routing_key([Kind::Event, Kind::Event].into_iter()),
            "dropcowboy.event"
        );
        assert_eq!(
            routing_key([Kind::Event, Sms].into_iter()),
            MIXED_ROUTING_KEY
        );
    }

    #[test]
    fn a_signed_event_travels_in_envelope_2_as_kind_event() {
        let body = br#"{"event_id":"e-1","event":"contact.tag.added","data":{}}"#;
        let message = batch_message(
            Uuid::now_v7(),
            &[batch::Packing {
                id: Uuid::now_v7(),
                received_at: Utc::now(),
                kind: Kind::Event,
                body,
            }],
            Charset::Any,
        );
        assert_eq!(message.routing_key, "dropcowboy.event");
        let text = String::from_utf8(message.body.clone()).expect("UTF-8");
        assert!(text.contains(r#""kind":"event""#), "{text}");
        let unpacked = batch::decode(&message.body).expect("decodes");
        assert_eq!(unpacked[0].kind, Kind::Event);
        assert_eq!(&*unpacked[0].body, &body[..]);
    }

    #[test]
    fn routing_keys_and_names_name_their_kind() {
        for kind in Kind::ALL {
            assert_eq!(Kind::from_routing_key(kind.routing_key()), Some(kind));
            assert_eq!(Kind::from_name(kind.as_str()), Some(kind));
            assert!(kind.routing_key().starts_with("dropcowboy."));
        }
        assert_eq!(Kind::from_routing_key("dropcowboy.fax"), None);
        assert_eq!(Kind::from_name("fax"), None);
        assert_eq!(Kind::Event.routing_key(), "dropcowboy.event");
        assert_eq!(
            serde_json::to_string(&Kind::Event).expect("serializes"),
            r#""event""#
        );
    }
}

//! The message between ingress and worker, whatever buffer carries it.
//!
//! Two versions, told apart by the content type ([`Format`]):
//!
//! - envelope 2 ([`batch`]), what ingress publishes: one or more webhooks in
//!   a JSON body, each with its own id, `received_at` and kind;
//! - envelope 1, what corral 0.1 published and the worker still reads: one
//!   webhook per message.
//!
//! Envelope 1 body: the webhook's request body, byte for byte. Metadata
//! ([`Metadata::single`]): `content_type` `application/json`, `message_id` a
//! UUIDv7 made at ingress (the `id` answered to the caller), `timestamp`
//! (seconds), `x-received-at` (RFC 3339 with microseconds) and
//! `x-corral-envelope` (the version of this contract, so a future change can
//! be told apart). On AMQP these are properties and headers, with
//! `delivery_mode` 2 (persistent) and `app_id` `corral-ingress`
//! (`amqp::properties`).

use chrono::{DateTime, SecondsFormat, Utc};
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
mod metadata;

pub use charset::Charset;
pub use metadata::{Envelope, Format, Incoming, Metadata};

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

/// An envelope-2 message, ready to publish to the webhooks exchange.
#[derive(Debug)]
pub struct BatchMessage {
    /// The kind's routing key, or [`MIXED_ROUTING_KEY`] for both kinds.
    pub routing_key: &'static str,
    /// The webhooks, packed by [`batch::encode`].
    pub body: Vec<u8>,
    /// [`Metadata::batch`].
    pub metadata: Metadata,
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
        metadata: Metadata::batch(message_id, first.received_at, webhooks.len()),
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

/// RFC 3339 with microseconds, as in the `x-received-at` header.
pub fn format_received_at(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Micros, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn received_at_keeps_microseconds_in_utc() {
        let at = DateTime::parse_from_rfc3339("2019-03-17T21:10:26.000001+02:00")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(format_received_at(at), "2019-03-17T19:10:26.000001Z");
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

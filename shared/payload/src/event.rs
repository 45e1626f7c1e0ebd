//! The signed webhooks (`POST /webhooks/dropcowboy`): `{"event_id",
//! "event", "event_at", "data": {…}}`. The three result events are typed as
//! a [`DeliveryStatus`]; every other event type is kept as it is, with its
//! identity and time.
//!
//! The identity of a signed event is its `event_id`, the provider's
//! idempotency key: a retry carries the same one with a new timestamp, a
//! new signature and possibly other bytes, and must be recognised whatever
//! else changed, so the [`Fingerprint`] is derived from the `event_id`
//! alone. The body still goes through the canonical pass, which refuses what
//! PostgreSQL could not store (a U+0000, nesting past [`super::MAX_DEPTH`]).

use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};

use super::{
    DeliveryStatus, Fingerprint, PayloadError, Typed,
    fields::{Fields, Place, in_range, json_type, parse_date, string_value},
    fingerprint::canonical,
    read_result,
};
use corral_contract::envelope::Kind;

/// The event types that carry a delivery's result, and the kind of delivery.
pub const RESULT_EVENTS: [(&str, Kind); 3] = [
    ("contact.sms.status", Kind::Sms),
    ("contact.rvm.status", Kind::Rvm),
    ("contact.rvm.receipt", Kind::Rvm),
];

/// A signed event, typed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Signed {
    /// `contact.sms.status`, `contact.rvm.status`, `contact.rvm.receipt`: a
    /// delivery's result (a receipt repeats it, with the proof of delivery).
    Result {
        /// `sms` or `rvm`, from the event type.
        kind: Kind,
        /// The result; its `attempt_date` is the event's `event_at`. Boxed:
        /// it is most of the enum's size.
        typed: Box<Typed>,
    },
    /// Any other event type: kept whole, not typed further.
    Other(ProviderEvent),
}

/// An event corral keeps but does not type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProviderEvent {
    /// The provider's idempotency key.
    pub event_id: String,
    /// The event type, as sent.
    pub event: String,
    /// When the provider says it happened, if it said.
    pub event_at: Option<DateTime<Utc>>,
    /// Derived from `event_id`.
    pub fingerprint: Fingerprint,
}

impl Fingerprint {
    /// The identity of the signed event `event_id`: a SHA-256 over a prefix
    /// no canonical JSON text starts with, so it never equals a callback's.
    fn of_event(event_id: &str) -> Self {
        let mut hash = Sha256::new();
        hash.update(b"corral signed event\0");
        hash.update(event_id.as_bytes());
        Self(hash.finalize().into())
    }
}

/// Types a signed event's body.
pub fn parse_event(body: &[u8]) -> Result<Signed, PayloadError> {
    let text = std::str::from_utf8(body).map_err(|err| PayloadError::NotUtf8(err.to_string()))?;
    let fields = Fields::of(text, Place::Top)?;
    canonical(text)?;
    let event_id = fields.id("event_id")?;
    let event = fields.required_string("event")?;
    let fingerprint = Fingerprint::of_event(&event_id);
    let Some(kind) = RESULT_EVENTS
        .iter()
        .find_map(|(name, kind)| (*name == event).then_some(*kind))
    else {
        return Ok(Signed::Other(ProviderEvent {
            event_at: event_at(&fields)?,
            event_id,
            event,
            fingerprint,
        }));
    };
    let data_text = match fields.get("data") {
        None => return Err(PayloadError::Missing("data")),
        Some(raw) if json_type(raw) == "an object" => raw.get(),
        Some(raw) => {
            return Err(PayloadError::WrongType {
                field: "data",
                expected: "an object",
                found: json_type(raw),
            });
        }
    };
    let data = Fields::of(data_text, Place::Data)?;
    let result = read_result(
        &data,
        || event_at(&fields)?.ok_or(PayloadError::Missing("event_at")),
        "to",
        "from",
    )?;
    let status = DeliveryStatus {
        campaign_id: data.string("campaign_id")?,
        receipt_ready_at: data.date("receipt_ready_at")?,
        event_id: Some(event_id),
        event: Some(event),
        ..result
    };
    Ok(Signed::Result {
        kind,
        typed: Box::new(Typed {
            status,
            fingerprint,
        }),
    })
}

/// `event_at`: Unix milliseconds, as the provider sends it, or an RFC 3339
/// date-time; in years 1-9999.
fn event_at(fields: &Fields<'_>) -> Result<Option<DateTime<Utc>>, PayloadError> {
    let Some(raw) = fields.get("event_at") else {
        return Ok(None);
    };
    let bad = || PayloadError::BadInstant {
        field: "event_at",
        value: raw.get().to_owned(),
    };
    let at = match json_type(raw) {
        "a number" => raw
            .get()
            .parse::<i64>()
            .ok()
            .and_then(DateTime::from_timestamp_millis),
        "a string" => parse_date(&string_value(raw, "event_at")?),
        found => {
            return Err(PayloadError::WrongType {
                field: "event_at",
                expected: "a number",
                found,
            });
        }
    };
    at.and_then(in_range).map(Some).ok_or_else(bad)
}

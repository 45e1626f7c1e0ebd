//! The Drop Cowboy payloads, typed: the legacy callback's delivery status
//! ([`parse`]) and the signed webhooks' events ([`parse_event`]).
//!
//! Strict where the data must be right: `drop_id`, `status` and
//! `attempt_date` (a signed event's `event_id`, `event` and `event_at`) must
//! be there and well-formed, money is kept exact from the JSON text to the
//! `numeric` column (never through `f64`), and anything PostgreSQL could not
//! store (a `\u0000`, a year past 9999) is refused here, before it can fail a
//! whole batch. Tolerant where the provider may vary: unknown fields are kept
//! (the whole body is stored as `jsonb`), optional fields may be missing or
//! `null`, `reason` may be empty or a reason no one has seen before, and an
//! event type corral does not type is kept as it is. A payload that cannot be
//! typed is not lost: the worker quarantines it with the [`PayloadError`] as
//! its explanation.
//!
//! Each typed payload has a [`Fingerprint`], its identity for
//! de-duplication: for a callback the SHA-256 of its canonical form (keys
//! sorted, whitespace and string escapes normalised), so the same webhook
//! sent twice is recognised even if the bytes differ in formatting; for a
//! signed event, derived from its `event_id` alone, the provider's
//! idempotency key, so a retry is recognised whatever else changed.

mod callback;
mod event;
mod fields;
mod fingerprint;
#[cfg(test)]
mod fingerprint_tests;
#[cfg(test)]
mod proptests;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod v2_tests;

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;

pub use callback::parse;
pub use event::{ProviderEvent, Signed, parse_event};
pub use fields::exact_decimal;
#[cfg(test)]
use fields::parse_date;
pub use fingerprint::{Fingerprint, MAX_DEPTH};

pub use corral_contract::provider::FAILURE_REASONS;

/// A delivery result with every documented field typed: a legacy callback
/// (v1 or v2), or a signed `contact.sms.status`, `contact.rvm.status` or
/// `contact.rvm.receipt` event. A field the channel does not carry is `None`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeliveryStatus {
    /// The provider's id for the delivery attempt; never empty. A UUID in
    /// the current API, 24 hex digits in the legacy one: any text is kept.
    pub drop_id: String,
    /// Recipient in E.164, as sent (a signed event's `data.to`).
    pub phone_number: Option<String>,
    /// When the provider attempted the delivery; for a signed event, which
    /// has no attempt date, its `event_at` (when the provider had the result).
    pub attempt_date: DateTime<Utc>,
    /// `success`, `failure`, or whatever else the provider sends.
    pub status: String,
    /// Failure reason; empty on success, possibly one nobody has seen before.
    pub reason: Option<String>,
    /// The provider's numeric reason (`0` success, `4016` Internal DNC…):
    /// what the current API says to branch on; absent from v1 bodies.
    pub reason_code: Option<i32>,
    /// On a do-not-call list.
    pub dnc: Option<bool>,
    /// Flagged as spam.
    pub spam: Option<bool>,
    /// Charge in USD, exact.
    pub product_cost: Option<Decimal>,
    /// Compliance fee in USD, exact.
    pub compliance_fee: Option<Decimal>,
    /// Text-to-speech fee in USD, exact.
    pub tts_fee: Option<Decimal>,
    /// `network.name`.
    pub network_name: Option<String>,
    /// `network.type`.
    pub network_type: Option<String>,
    /// The customer's own id, echoed back; a JSON number is kept as its text.
    pub foreign_id: Option<String>,
    /// The number sent from (a signed event's `data.from`).
    pub caller_id: Option<String>,
    /// The provider's contact.
    pub contact_id: Option<String>,
    /// The provider's team (account).
    pub team_id: Option<String>,
    /// The campaign, for a send made by one (signed events only).
    pub campaign_id: Option<String>,
    /// The v2 callback's session of the send.
    pub session_id: Option<String>,
    /// The v2 callback's log entry of the send.
    pub log_id: Option<String>,
    /// The v2 callback's product (`rvm`, …).
    pub product_code: Option<String>,
    /// The v2 callback's units billed.
    pub quantity: Option<i32>,
    /// The voicemail's proof of delivery (a link the provider keeps 7 days).
    pub proof_of_delivery_url: Option<String>,
    /// When the proof of delivery became available (`contact.rvm.receipt`).
    pub receipt_ready_at: Option<DateTime<Utc>>,
    /// A signed event's `event_id`, the provider's idempotency key.
    pub event_id: Option<String>,
    /// A signed event's type (`contact.rvm.status`…); `None` for a callback.
    pub event: Option<String>,
}

/// Why a payload cannot be typed. The text is what an operator reads in
/// `quarantined_webhooks.error`, so it names the field and what was found.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PayloadError {
    /// The body is not UTF-8, so it is not JSON.
    #[error("body is not UTF-8: {0}")]
    NotUtf8(String),
    /// The body does not parse as JSON.
    #[error("body is not valid JSON: {0}")]
    InvalidJson(String),
    /// Valid JSON, but not an object.
    #[error("body is JSON but not an object")]
    NotObject,
    /// A required field is absent or null.
    #[error("`{0}` is missing")]
    Missing(&'static str),
    /// A field has the wrong JSON type.
    #[error("`{field}` must be {expected}, found {found}")]
    WrongType {
        /// Field path, e.g. `network.name`.
        field: &'static str,
        /// What was expected.
        expected: &'static str,
        /// The JSON type found.
        found: &'static str,
    },
    /// A required string is empty.
    #[error("`{0}` is empty")]
    Empty(&'static str),
    /// A date that does not parse or that PostgreSQL cannot hold.
    #[error("`{field}` is not an RFC 3339 date-time in years 1-9999: {value:?}")]
    BadDate {
        /// Field name.
        field: &'static str,
        /// The text found.
        value: String,
    },
    /// A money value that is not an exact decimal.
    #[error("`{field}` is not an exact decimal amount: {value}")]
    BadMoney {
        /// Field name.
        field: &'static str,
        /// The JSON text found.
        value: String,
    },
    /// An integer field (`reason_code`, `quantity`) that is not one, or does
    /// not fit 32 bits.
    #[error("`{field}` is not an integer: {value}")]
    BadInteger {
        /// Field name.
        field: &'static str,
        /// The JSON text found.
        value: String,
    },
    /// A signed event's `event_at` that is not Unix milliseconds (or an RFC
    /// 3339 date-time) in years 1-9999.
    #[error(
        "`{field}` is not Unix milliseconds (or an RFC 3339 date-time) in years 1-9999: {value}"
    )]
    BadInstant {
        /// Field name.
        field: &'static str,
        /// The JSON text found.
        value: String,
    },
    /// PostgreSQL text and jsonb cannot hold U+0000.
    #[error("a string contains U+0000, which PostgreSQL cannot store")]
    NulCharacter,
    /// Objects and arrays nested deeper than [`MAX_DEPTH`]: no webhook
    /// needs it, and ingress refuses far less (`CORRAL_MAX_JSON_DEPTH`), so
    /// such a body reached the queue some other way.
    #[error("objects and arrays are nested deeper than {limit} levels")]
    TooDeep {
        /// [`MAX_DEPTH`].
        limit: usize,
    },
}

impl PayloadError {
    /// The error without any value taken from the body, for log lines: the
    /// whole text (values included) belongs in `quarantined_webhooks.error`,
    /// next to the body, not in a log pipeline.
    pub fn without_values(&self) -> String {
        match self {
            PayloadError::BadDate { field, .. } => {
                format!("`{field}` is not an RFC 3339 date-time in years 1-9999")
            }
            PayloadError::BadMoney { field, .. } => {
                format!("`{field}` is not an exact decimal amount")
            }
            PayloadError::BadInteger { field, .. } => format!("`{field}` is not an integer"),
            PayloadError::BadInstant { field, .. } => {
                format!("`{field}` is not Unix milliseconds in years 1-9999")
            }
            other => other.to_string(),
        }
    }
}

/// A payload typed, with its identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Typed {
    /// The typed fields.
    pub status: DeliveryStatus,
    /// Identity for de-duplication.
    pub fingerprint: Fingerprint,
}

/// The fields of a result both channels carry, in the order errors are
/// reported (`drop_id`, `status`, the date, the rest); `phone` and `caller`
/// are the channel's names for the recipient's and the sender's numbers.
fn read_result(
    fields: &fields::Fields<'_>,
    attempt_date: impl FnOnce() -> Result<DateTime<Utc>, PayloadError>,
    phone: &'static str,
    caller: &'static str,
) -> Result<DeliveryStatus, PayloadError> {
    let drop_id = fields.id("drop_id")?;
    let status = fields.required_string("status")?;
    Ok(DeliveryStatus {
        drop_id,
        status,
        attempt_date: attempt_date()?,
        phone_number: fields.string(phone)?,
        caller_id: fields.string(caller)?,
        reason: fields.string("reason")?,
        reason_code: fields.integer("reason_code")?,
        contact_id: fields.string("contact_id")?,
        team_id: fields.string("team_id")?,
        proof_of_delivery_url: fields.string("proof_of_delivery_url")?,
        ..DeliveryStatus::default()
    })
}

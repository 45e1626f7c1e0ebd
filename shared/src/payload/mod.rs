//! The Drop Cowboy delivery-status payload, typed.
//!
//! Strict where the data must be right: `drop_id`, `status` and
//! `attempt_date` must be there and well-formed, money is kept exact from the
//! JSON text to the `numeric` column (never through `f64`), and anything
//! PostgreSQL could not store (a `\u0000`, a year past 9999) is refused here,
//! before it can fail a whole batch. Tolerant where the provider may vary:
//! unknown fields are kept (the whole body is stored as `jsonb`), optional
//! fields may be missing or `null`, and `reason` may be empty or a reason no
//! one has seen before. A payload that cannot be typed is not lost: the worker
//! quarantines it with the [`PayloadError`] as its explanation.
//!
//! [`parse`] also computes the payload's [`Fingerprint`]: the SHA-256 of its
//! canonical form (keys sorted, whitespace and string escapes normalised), so
//! the same webhook sent twice is recognised even if the bytes differ in
//! formatting.

mod fingerprint;
#[cfg(test)]
mod proptests;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;

use chrono::{DateTime, Datelike, NaiveDateTime, Utc};
use rust_decimal::Decimal;
use serde_json::value::RawValue;

pub use fingerprint::{Fingerprint, MAX_DEPTH};

pub use crate::provider::FAILURE_REASONS;

/// A delivery-status webhook with every documented field typed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryStatus {
    /// The provider's id for the delivery attempt; never empty.
    pub drop_id: String,
    /// Recipient in E.164, as sent.
    pub phone_number: Option<String>,
    /// When the provider attempted the delivery.
    pub attempt_date: DateTime<Utc>,
    /// `success`, `failure`, or whatever else the provider sends.
    pub status: String,
    /// Failure reason; empty on success, possibly one nobody has seen before.
    pub reason: Option<String>,
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

/// Types a webhook body.
pub fn parse(body: &[u8]) -> Result<Typed, PayloadError> {
    let text = std::str::from_utf8(body).map_err(|err| PayloadError::NotUtf8(err.to_string()))?;
    // The top level, each member kept as its text: serde_json skips over
    // those without recursing, however deep they nest.
    let fields: BTreeMap<String, &RawValue> = match serde_json::from_str(text) {
        Ok(fields) => fields,
        Err(err) => {
            return Err(match serde_json::from_str::<&RawValue>(text) {
                Ok(raw) if json_type(raw) != "an object" => PayloadError::NotObject,
                // An object whose keys do not decode (a lone surrogate escape).
                _ => PayloadError::InvalidJson(err.to_string()),
            });
        }
    };
    // The top-level parse above has checked the whole document's syntax,
    // which the canonical pass relies on.
    let fingerprint = Fingerprint::of(text)?;

    let field = |name: &str| fields.get(name).copied().filter(|raw| raw.get() != "null");

    let drop_id = required_string(field("drop_id"), "drop_id")?;
    if drop_id.trim().is_empty() {
        return Err(PayloadError::Empty("drop_id"));
    }
    let status = required_string(field("status"), "status")?;
    let attempt_date_text = required_string(field("attempt_date"), "attempt_date")?;
    let attempt_date = parse_date(&attempt_date_text).ok_or(PayloadError::BadDate {
        field: "attempt_date",
        value: attempt_date_text,
    })?;

    let (network_name, network_type) = match field("network") {
        None => (None, None),
        Some(raw) if json_type(raw) == "an object" => {
            let network: BTreeMap<String, &RawValue> = serde_json::from_str(raw.get())
                .map_err(|err| PayloadError::InvalidJson(err.to_string()))?;
            let sub = |name: &str| network.get(name).copied().filter(|raw| raw.get() != "null");
            (
                optional_string(sub("name"), "network.name")?,
                optional_string(sub("type"), "network.type")?,
            )
        }
        Some(raw) => {
            return Err(PayloadError::WrongType {
                field: "network",
                expected: "an object",
                found: json_type(raw),
            });
        }
    };

    let foreign_id = match field("foreign_id") {
        Some(raw) if json_type(raw) == "a number" => Some(raw.get().to_owned()),
        other => optional_string(other, "foreign_id")?,
    };

    let status = DeliveryStatus {
        drop_id,
        phone_number: optional_string(field("phone_number"), "phone_number")?,
        attempt_date,
        status,
        reason: optional_string(field("reason"), "reason")?,
        dnc: optional_bool(field("dnc"), "dnc")?,
        spam: optional_bool(field("spam"), "spam")?,
        product_cost: money(field("product_cost"), "product_cost")?,
        compliance_fee: money(field("compliance_fee"), "compliance_fee")?,
        tts_fee: money(field("tts_fee"), "tts_fee")?,
        network_name,
        network_type,
        foreign_id,
    };
    Ok(Typed {
        status,
        fingerprint,
    })
}

/// The JSON type of a raw value, worded for error messages.
fn json_type(raw: &RawValue) -> &'static str {
    match raw.get().as_bytes().first() {
        Some(b'{') => "an object",
        Some(b'[') => "an array",
        Some(b'"') => "a string",
        Some(b't' | b'f') => "a boolean",
        Some(b'n') => "null",
        _ => "a number",
    }
}

fn string_value(raw: &RawValue, field: &'static str) -> Result<String, PayloadError> {
    if json_type(raw) != "a string" {
        return Err(PayloadError::WrongType {
            field,
            expected: "a string",
            found: json_type(raw),
        });
    }
    serde_json::from_str(raw.get()).map_err(|err| PayloadError::InvalidJson(err.to_string()))
}

fn required_string(raw: Option<&RawValue>, field: &'static str) -> Result<String, PayloadError> {
    string_value(raw.ok_or(PayloadError::Missing(field))?, field)
}

fn optional_string(
    raw: Option<&RawValue>,
    field: &'static str,
) -> Result<Option<String>, PayloadError> {
    raw.map(|raw| string_value(raw, field)).transpose()
}

fn optional_bool(
    raw: Option<&RawValue>,
    field: &'static str,
) -> Result<Option<bool>, PayloadError> {
    match raw.map(RawValue::get) {
        None => Ok(None),
        Some("true") => Ok(Some(true)),
        Some("false") => Ok(Some(false)),
        Some(_) => Err(PayloadError::WrongType {
            field,
            expected: "a boolean",
            found: json_type(raw.expect("matched Some")),
        }),
    }
}

/// Money from a JSON number, or a string holding one, without ever passing
/// through binary floating point.
fn money(raw: Option<&RawValue>, field: &'static str) -> Result<Option<Decimal>, PayloadError> {
    let Some(raw) = raw else { return Ok(None) };
    let text = match json_type(raw) {
        "a number" => raw.get().to_owned(),
        "a string" => string_value(raw, field)?.trim().to_owned(),
        found => {
            return Err(PayloadError::WrongType {
                field,
                expected: "a number",
                found,
            });
        }
    };
    exact_decimal(&text)
        .map(Some)
        .ok_or(PayloadError::BadMoney {
            field,
            value: raw.get().to_owned(),
        })
}

/// Parses decimal text (`0.0029`, `-1.50`, `25e-4`) exactly, keeping its
/// scale; `None` if it is not a number or would not fit 28 digits unrounded.
pub fn exact_decimal(text: &str) -> Option<Decimal> {
    // rust_decimal also accepts `_` separators; a JSON number never has them.
    let well_formed = text
        .bytes()
        .all(|b| b.is_ascii_digit() || matches!(b, b'-' | b'+' | b'.' | b'e' | b'E'));
    if !well_formed {
        return None;
    }
    let (mantissa, exponent) = match text.split_once(['e', 'E']) {
        Some((mantissa, exponent)) => (mantissa, exponent.parse::<i64>().ok()?),
        None => (text, 0),
    };
    let mantissa = Decimal::from_str_exact(mantissa).ok()?;
    // Checked: an exponent near i64::MIN/MAX is valid JSON and must be
    // refused, not overflow.
    let scale = i64::from(mantissa.scale()).checked_sub(exponent)?;
    let mut units = mantissa.mantissa();
    if scale < 0 {
        units =
            units.checked_mul(10i128.checked_pow(u32::try_from(scale.checked_neg()?).ok()?)?)?;
    }
    Decimal::try_from_i128_with_scale(units, u32::try_from(scale.max(0)).ok()?).ok()
}

/// RFC 3339 (`2019-03-17T21:10:26.000Z`); a date-time with no offset is read
/// as UTC, which is what the provider documents its dates to be.
fn parse_date(text: &str) -> Option<DateTime<Utc>> {
    let parsed = DateTime::parse_from_rfc3339(text)
        .map(|at| at.with_timezone(&Utc))
        .ok()
        .or_else(|| {
            ["%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%d %H:%M:%S%.f"]
                .iter()
                .find_map(|format| NaiveDateTime::parse_from_str(text, format).ok())
                .map(|naive| naive.and_utc())
        })?;
    (1..=9999).contains(&parsed.year()).then_some(parsed)
}

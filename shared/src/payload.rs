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

use std::{collections::BTreeMap, fmt, str::FromStr};

use chrono::{DateTime, Datelike, NaiveDateTime, Utc};
use rust_decimal::Decimal;
use serde_json::value::RawValue;
use sha2::{Digest, Sha256};

/// Every failure reason the provider documents, exactly as it spells them.
/// Typing accepts any reason; this list is what the documentation promises.
pub const FAILURE_REASONS: &[&str] = &[
    "Invalid message",
    "Spam detected",
    "Invalid caller ID or not SMS enabled",
    "No Funds",
    "Known Litigator",
    "Prohibited by carrier or not SMS enabled",
    "Message too long",
    "Opted out",
    "Internal DNC",
    "Temporarily unreachable",
    "Too Many",
    "Unregistered Brand",
];

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

/// SHA-256 of a payload's canonical form: the identity of a webhook.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Fingerprint(pub [u8; 32]);

impl fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for byte in &self.0[..8] {
            write!(f, "{byte:02x}")?;
        }
        f.write_str("…")
    }
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
    // One parse of the top level serves both the fingerprint and the fields.
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
    let mut canonical = Vec::with_capacity(body.len());
    canonical_object(&fields, &mut canonical)?;
    let fingerprint = Fingerprint(Sha256::digest(&canonical).into());

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

/// Writes the canonical form of a JSON value: object keys sorted, no
/// insignificant whitespace, strings re-escaped the one way serde_json does,
/// numbers as their exact text. Refuses U+0000 anywhere.
fn canonicalize(raw: &RawValue, out: &mut Vec<u8>) -> Result<(), PayloadError> {
    let invalid = |err: serde_json::Error| PayloadError::InvalidJson(err.to_string());
    match json_type(raw) {
        "an object" => {
            let map: BTreeMap<String, &RawValue> =
                serde_json::from_str(raw.get()).map_err(invalid)?;
            canonical_object(&map, out)?;
        }
        "an array" => {
            let items: Vec<&RawValue> = serde_json::from_str(raw.get()).map_err(invalid)?;
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                canonicalize(item, out)?;
            }
            out.push(b']');
        }
        // Without a backslash a JSON string has no escapes, and (being valid
        // JSON) no quote or control character: it already is its canonical
        // form, and it cannot hold U+0000.
        "a string" if !raw.get().contains('\\') => out.extend_from_slice(raw.get().as_bytes()),
        "a string" => {
            let value: String = serde_json::from_str(raw.get()).map_err(invalid)?;
            if value.contains('\0') {
                return Err(PayloadError::NulCharacter);
            }
            serde_json::to_writer(&mut *out, &value).map_err(invalid)?;
        }
        _ => out.extend_from_slice(raw.get().trim().as_bytes()),
    }
    Ok(())
}

/// The canonical form of an object already parsed into its (sorted) members.
fn canonical_object(
    map: &BTreeMap<String, &RawValue>,
    out: &mut Vec<u8>,
) -> Result<(), PayloadError> {
    out.push(b'{');
    for (i, (key, value)) in map.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        if key.contains('\0') {
            return Err(PayloadError::NulCharacter);
        }
        serde_json::to_writer(&mut *out, key)
            .map_err(|err| PayloadError::InvalidJson(err.to_string()))?;
        out.push(b':');
        canonicalize(value, out)?;
    }
    out.push(b'}');
    Ok(())
}

impl FromStr for Fingerprint {
    type Err = String;

    /// Parses 64 hex digits (tools and tests).
    fn from_str(hex: &str) -> Result<Self, Self::Err> {
        if hex.len() != 64 {
            return Err(format!("expected 64 hex digits, got {}", hex.len()));
        }
        let mut bytes = [0u8; 32];
        for (i, byte) in bytes.iter_mut().enumerate() {
            *byte =
                u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).map_err(|err| err.to_string())?;
        }
        Ok(Self(bytes))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SUCCESS: &str = include_str!("../../tests/fixtures/sms-success.json");
    const FAILURE: &str = include_str!("../../tests/fixtures/sms-failure.json");

    fn dec(text: &str) -> Decimal {
        Decimal::from_str_exact(text).unwrap()
    }

    #[test]
    fn the_success_sample_is_typed_field_by_field() {
        let typed = parse(SUCCESS.as_bytes()).unwrap().status;
        assert_eq!(
            typed,
            DeliveryStatus {
                drop_id: "5c8eb7940a057a4ab0823e1a".into(),
                phone_number: Some("+15552224444".into()),
                attempt_date: DateTime::parse_from_rfc3339("2019-03-17T21:10:26Z")
                    .unwrap()
                    .into(),
                status: "success".into(),
                reason: Some(String::new()),
                dnc: Some(false),
                spam: Some(false),
                product_cost: Some(dec("0.099")),
                compliance_fee: Some(dec("0.0029")),
                tts_fee: Some(dec("0")),
                network_name: Some("Verizon Wireless:6006 - SVR/2".into()),
                network_type: Some("wireless".into()),
                foreign_id: Some("order-1842-attempt-1".into()),
            }
        );
    }

    #[test]
    fn the_failure_sample_keeps_its_reason_and_zero_cost() {
        let typed = parse(FAILURE.as_bytes()).unwrap().status;
        assert_eq!(typed.status, "failure");
        assert_eq!(typed.reason.as_deref(), Some("Invalid message"));
        assert_eq!(typed.product_cost, Some(dec("0")));
        assert_eq!(typed.foreign_id.as_deref(), Some("order-1843-attempt-1"));
    }

    #[test]
    fn money_keeps_its_exact_digits_and_scale() {
        let body = r#"{"drop_id":"a","status":"success","attempt_date":"2019-03-17T21:10:26.000Z",
            "product_cost":0.1,"compliance_fee":"0.00290","tts_fee":1.5e-3}"#;
        let typed = parse(body.as_bytes()).unwrap().status;
        assert_eq!(typed.product_cost.unwrap().to_string(), "0.1");
        assert_eq!(typed.compliance_fee.unwrap().to_string(), "0.00290");
        assert_eq!(typed.tts_fee.unwrap(), dec("0.0015"));
    }

    #[test]
    fn money_that_would_lose_digits_is_refused() {
        for value in [
            "0.12345678901234567890123456789",
            "1e40",
            "1e-40",
            "\"ten\"",
            "true",
            "[1]",
        ] {
            let body = format!(
                r#"{{"drop_id":"a","status":"success","attempt_date":"2019-03-17T21:10:26Z","product_cost":{value}}}"#
            );
            let err = parse(body.as_bytes()).unwrap_err();
            assert!(
                matches!(
                    err,
                    PayloadError::BadMoney {
                        field: "product_cost",
                        ..
                    } | PayloadError::WrongType {
                        field: "product_cost",
                        ..
                    }
                ),
                "{value}: {err}"
            );
        }
    }

    #[test]
    fn missing_and_null_optional_fields_are_tolerated() {
        let body = r#"{"drop_id":"a","status":"failure","attempt_date":"2019-03-17T21:10:26Z",
            "network":null,"foreign_id":null,"reason":"Some reason nobody documented","extra":{"x":[1,2]}}"#;
        let typed = parse(body.as_bytes()).unwrap().status;
        assert_eq!(typed.network_name, None);
        assert_eq!(typed.foreign_id, None);
        assert_eq!(
            typed.reason.as_deref(),
            Some("Some reason nobody documented")
        );
        assert_eq!(typed.product_cost, None);
    }

    #[test]
    fn untypeable_payloads_say_precisely_why() {
        let date = r#""attempt_date":"2019-03-17T21:10:26Z""#;
        let cases = [
            (
                format!(r#"{{"status":"success",{date}}}"#),
                "`drop_id` is missing",
            ),
            (
                format!(r#"{{"drop_id":"","status":"success",{date}}}"#),
                "`drop_id` is empty",
            ),
            (
                format!(r#"{{"drop_id":7,"status":"success",{date}}}"#),
                "`drop_id` must be a string, found a number",
            ),
            (
                format!(r#"{{"drop_id":"a","status":true,{date}}}"#),
                "`status` must be a string, found a boolean",
            ),
            (
                r#"{"drop_id":"a","status":"success","attempt_date":"yesterday"}"#.into(),
                "`attempt_date` is not an RFC 3339 date-time in years 1-9999: \"yesterday\"",
            ),
            (
                r#"{"drop_id":"a","status":"success","attempt_date":"10000-01-01T00:00:00Z"}"#
                    .into(),
                "`attempt_date` is not an RFC 3339 date-time in years 1-9999: \"10000-01-01T00:00:00Z\"",
            ),
            (
                format!(r#"{{"drop_id":"a","status":"success",{date},"dnc":"no"}}"#),
                "`dnc` must be a boolean, found a string",
            ),
            (
                format!(r#"{{"drop_id":"a","status":"success",{date},"network":"att"}}"#),
                "`network` must be an object, found a string",
            ),
            (
                format!(r#"{{"drop_id":"a","status":"success",{date},"network":{{"name":1}}}}"#),
                "`network.name` must be a string, found a number",
            ),
            (
                format!(r#"{{"drop_id":"a","status":"success",{date},"note":"a\u0000b"}}"#),
                "a string contains U+0000, which PostgreSQL cannot store",
            ),
            ("[1,2]".into(), "body is JSON but not an object"),
        ];
        for (body, expected) in cases {
            assert_eq!(
                parse(body.as_bytes()).unwrap_err().to_string(),
                expected,
                "{body}"
            );
        }
        assert!(matches!(
            parse(b"{\"a\":\xff}"),
            Err(PayloadError::NotUtf8(_))
        ));
        assert!(matches!(
            parse(b"{\"a\":"),
            Err(PayloadError::InvalidJson(_))
        ));
    }

    #[test]
    fn dates_without_an_offset_are_utc_and_offsets_are_honoured() {
        let at = |text: &str| parse_date(text).unwrap();
        assert_eq!(at("2019-03-17T21:10:26.000"), at("2019-03-17T21:10:26Z"));
        assert_eq!(at("2019-03-17T23:10:26+02:00"), at("2019-03-17T21:10:26Z"));
        assert_eq!(at("2019-03-17 21:10:26.5"), at("2019-03-17T21:10:26.500Z"));
    }

    #[test]
    fn the_fingerprint_ignores_formatting_but_not_content() {
        let a = parse(br#"{"drop_id":"a","status":"success","attempt_date":"2019-03-17T21:10:26Z","x":"\u00e9"}"#).unwrap();
        let b = parse(
            "{ \"x\" : \"\u{e9}\",\n \"attempt_date\":\"2019-03-17T21:10:26Z\", \"status\":\"success\", \"drop_id\":\"a\" }"
                .as_bytes(),
        )
        .unwrap();
        assert_eq!(a.fingerprint, b.fingerprint);
        let c = parse(br#"{"drop_id":"a","status":"failure","attempt_date":"2019-03-17T21:10:26Z","x":"\u00e9"}"#).unwrap();
        assert_ne!(a.fingerprint, c.fingerprint);
        let d = parse(br#"{"drop_id":"a","status":"success","attempt_date":"2019-03-17T21:10:26Z","x":"\u00e9","n":1.0}"#).unwrap();
        let e = parse(br#"{"drop_id":"a","status":"success","attempt_date":"2019-03-17T21:10:26Z","x":"\u00e9","n":1}"#).unwrap();
        assert_ne!(
            d.fingerprint, e.fingerprint,
            "numbers are compared as exact text"
        );
    }

    #[test]
    fn unescaped_strings_are_already_canonical() {
        for raw in [
            r#""plain""#,
            r#""Verizon Wireless:6006 - SVR/2""#,
            "\"é ü 中 🐄\"",
            r#""a/b<c>&'d""#,
            r#""""#,
        ] {
            let value: String = serde_json::from_str(raw).unwrap();
            assert_eq!(serde_json::to_string(&value).unwrap(), raw);
            let mut out = Vec::new();
            canonicalize(serde_json::from_str::<&RawValue>(raw).unwrap(), &mut out).unwrap();
            assert_eq!(out, raw.as_bytes());
        }
    }

    #[test]
    fn numeric_foreign_ids_are_kept_as_text() {
        let typed = parse(br#"{"drop_id":"a","status":"success","attempt_date":"2019-03-17T21:10:26Z","foreign_id":12345678901234567890}"#)
            .unwrap()
            .status;
        assert_eq!(typed.foreign_id.as_deref(), Some("12345678901234567890"));
    }

    #[test]
    fn exact_decimal_accepts_json_numbers_only() {
        assert_eq!(exact_decimal("0.0029"), Some(dec("0.0029")));
        assert_eq!(exact_decimal("-1.50"), Some(dec("-1.50")));
        assert_eq!(exact_decimal("25e-4"), Some(dec("0.0025")));
        assert_eq!(exact_decimal("1E2"), Some(dec("100")));
        for bad in [
            "",
            "abc",
            "1.2.3",
            "--1",
            "e5",
            "NaN",
            "Infinity",
            "1.5e-9223372036854775808",
            "1e9223372036854775807",
        ] {
            assert_eq!(exact_decimal(bad), None, "{bad}");
        }
    }
}

//! Reading one JSON object's members as typed values, each with the error
//! an operator reads in `quarantined_webhooks.error` when it is wrong: the
//! legacy callback's top level and a signed event's `data` alike.

use std::collections::BTreeMap;

use chrono::{DateTime, Datelike, NaiveDateTime, Utc};
use rust_decimal::Decimal;
use serde_json::value::RawValue;

use super::PayloadError;

/// Where the members are: a callback's top level, or a signed event's
/// `data`, whose fields errors name `data.<field>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Place {
    Top,
    Data,
}

macro_rules! data_paths {
    ($($key:literal),* $(,)?) => {
        /// `data.<key>` for every field read inside `data`, as a `'static`
        /// text for [`PayloadError`].
        fn data_path(key: &'static str) -> &'static str {
            match key {
                $($key => concat!("data.", $key),)*
                other => other,
            }
        }
    };
}

data_paths!(
    "drop_id",
    "status",
    "reason",
    "reason_code",
    "to",
    "from",
    "contact_id",
    "team_id",
    "campaign_id",
    "proof_of_delivery_url",
    "receipt_ready_at",
);

/// One JSON object's members, each kept as its text (serde_json skips over
/// them without recursing, however deep they nest); `null` reads as absent.
pub(super) struct Fields<'a> {
    members: BTreeMap<String, &'a RawValue>,
    place: Place,
}

impl<'a> Fields<'a> {
    /// The members of `text`, which must be a JSON object.
    pub(super) fn of(text: &'a str, place: Place) -> Result<Self, PayloadError> {
        match serde_json::from_str(text) {
            Ok(members) => Ok(Self { members, place }),
            Err(err) => Err(match serde_json::from_str::<&RawValue>(text) {
                Ok(raw) if json_type(raw) != "an object" => PayloadError::NotObject,
                // An object whose keys do not decode (a lone surrogate escape).
                _ => PayloadError::InvalidJson(err.to_string()),
            }),
        }
    }

    /// The member `key`, unless absent or `null`.
    pub(super) fn get(&self, key: &str) -> Option<&'a RawValue> {
        self.members
            .get(key)
            .copied()
            .filter(|raw| raw.get() != "null")
    }

    /// How errors name `key`.
    pub(super) fn path(&self, key: &'static str) -> &'static str {
        match self.place {
            Place::Top => key,
            Place::Data => data_path(key),
        }
    }

    pub(super) fn required_string(&self, key: &'static str) -> Result<String, PayloadError> {
        let raw = self.get(key).ok_or(PayloadError::Missing(self.path(key)))?;
        string_value(raw, self.path(key))
    }

    /// A required string that must not be blank.
    pub(super) fn id(&self, key: &'static str) -> Result<String, PayloadError> {
        let value = self.required_string(key)?;
        if value.trim().is_empty() {
            return Err(PayloadError::Empty(self.path(key)));
        }
        Ok(value)
    }

    pub(super) fn string(&self, key: &'static str) -> Result<Option<String>, PayloadError> {
        self.get(key)
            .map(|raw| string_value(raw, self.path(key)))
            .transpose()
    }

    pub(super) fn boolean(&self, key: &'static str) -> Result<Option<bool>, PayloadError> {
        let Some(raw) = self.get(key) else {
            return Ok(None);
        };
        match raw.get() {
            "true" => Ok(Some(true)),
            "false" => Ok(Some(false)),
            _ => Err(PayloadError::WrongType {
                field: self.path(key),
                expected: "a boolean",
                found: json_type(raw),
            }),
        }
    }

    /// An integer: a JSON number without fraction or exponent, or a string
    /// of ASCII digits (with an optional `-`), within `i32`. The provider
    /// documents numbers; a number sent as text is read, not refused.
    pub(super) fn integer(&self, key: &'static str) -> Result<Option<i32>, PayloadError> {
        let Some(raw) = self.get(key) else {
            return Ok(None);
        };
        let text = match json_type(raw) {
            "a number" => raw.get().to_owned(),
            "a string" => string_value(raw, self.path(key))?,
            found => {
                return Err(PayloadError::WrongType {
                    field: self.path(key),
                    expected: "an integer",
                    found,
                });
            }
        };
        let digits = text.strip_prefix('-').unwrap_or(&text);
        let parsed = (!digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()))
            .then(|| text.parse::<i32>().ok())
            .flatten();
        parsed.map(Some).ok_or(PayloadError::BadInteger {
            field: self.path(key),
            value: raw.get().to_owned(),
        })
    }

    /// An RFC 3339 date-time (see [`parse_date`]).
    pub(super) fn date(&self, key: &'static str) -> Result<Option<DateTime<Utc>>, PayloadError> {
        let Some(text) = self.string(key)? else {
            return Ok(None);
        };
        parse_date(&text).map(Some).ok_or(PayloadError::BadDate {
            field: self.path(key),
            value: text,
        })
    }

    /// Money from a JSON number, or a string holding one, without ever
    /// passing through binary floating point.
    pub(super) fn money(&self, key: &'static str) -> Result<Option<Decimal>, PayloadError> {
        let Some(raw) = self.get(key) else {
            return Ok(None);
        };
        let field = self.path(key);
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
}

/// The JSON type of a raw value, worded for error messages.
pub(super) fn json_type(raw: &RawValue) -> &'static str {
    match raw.get().as_bytes().first() {
        Some(b'{') => "an object",
        Some(b'[') => "an array",
        Some(b'"') => "a string",
        Some(b't' | b'f') => "a boolean",
        Some(b'n') => "null",
        _ => "a number",
    }
}

pub(super) fn string_value(raw: &RawValue, field: &'static str) -> Result<String, PayloadError> {
    if json_type(raw) != "a string" {
        return Err(PayloadError::WrongType {
            field,
            expected: "a string",
            found: json_type(raw),
        });
    }
    serde_json::from_str(raw.get()).map_err(|err| PayloadError::InvalidJson(err.to_string()))
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
pub(super) fn parse_date(text: &str) -> Option<DateTime<Utc>> {
    let parsed = DateTime::parse_from_rfc3339(text)
        .map(|at| at.with_timezone(&Utc))
        .ok()
        .or_else(|| {
            ["%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%d %H:%M:%S%.f"]
                .iter()
                .find_map(|format| NaiveDateTime::parse_from_str(text, format).ok())
                .map(|naive| naive.and_utc())
        })?;
    in_range(parsed)
}

/// `at`, if PostgreSQL's `timestamptz` can hold it as corral stores it
/// (years 1–9999).
pub(super) fn in_range(at: DateTime<Utc>) -> Option<DateTime<Utc>> {
    (1..=9999).contains(&at.year()).then_some(at)
}

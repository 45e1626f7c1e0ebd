//! The signature rule itself, over bytes: what the headers say, whether the
//! timestamp is fresh, whether a configured secret signed these bytes.
//!
//! `X-Signature` is `sha256=` and the hex HMAC-SHA256, keyed with the
//! webhook's secret as UTF-8, of the `X-Timestamp` header exactly as sent,
//! `.`, and the raw body. The tag is computed by `ring` (timestamp, `.` and
//! body fed in turn, the body never copied) and compared with `subtle`'s
//! constant-time equality: ring 0.17's own one-step `hmac::verify` takes the
//! message as one slice, which would mean copying the body behind the
//! timestamp, and its loose constant-time helper is deprecated. Every
//! configured secret is tried, without stopping at a match, so the time
//! taken does not say which one matched.
//!
//! The hex is decoded and the bytes compared, so upper-case hex verifies as
//! well as the lower case the provider sends; the `sha256=` prefix must be
//! exactly that.

use ring::hmac;
use subtle::ConstantTimeEq as _;

/// The prefix of `X-Signature`.
const PREFIX: &[u8] = b"sha256=";

/// Bytes of an HMAC-SHA256 tag.
const TAG_LEN: usize = 32;

/// The one signature version there is.
const VERSION: &[u8] = b"v1";

/// Why a signed delivery is refused. The `Display` text is the answer's
/// `error`; [`Refusal::code`] its `code`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// No signing secret configured: nothing can be verified.
    #[error(
        "no signing secret is configured for signed webhooks (CORRAL_DROPCOWBOY_SIGNING_SECRETS); retry later"
    )]
    NotConfigured,
    /// `X-Signature` or `X-Timestamp` absent or empty.
    #[error("X-Signature and X-Timestamp are required")]
    Missing,
    /// `X-Timestamp` not all digits, or too far from now.
    #[error("X-Timestamp is not a Unix time in seconds within the accepted tolerance of now")]
    Stale,
    /// No configured secret signed these bytes, the signature is malformed,
    /// or `X-Signature-Version` is not `v1`.
    #[error("the signature does not match the body for any configured secret")]
    Invalid,
}

impl Refusal {
    /// The answer's `code`.
    pub fn code(self) -> &'static str {
        match self {
            Refusal::NotConfigured => "not_configured",
            Refusal::Missing => "missing_signature",
            Refusal::Stale => "stale_timestamp",
            Refusal::Invalid => "invalid_signature",
        }
    }
}

/// The signature headers of a request, as sent (`None` when absent).
#[derive(Debug, Clone, Copy, Default)]
pub struct Headers<'a> {
    /// `X-Signature`.
    pub signature: Option<&'a [u8]>,
    /// `X-Timestamp`.
    pub timestamp: Option<&'a [u8]>,
    /// `X-Signature-Version`.
    pub version: Option<&'a [u8]>,
}

/// What the headers said, once they passed the checks that need no body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signed {
    /// `X-Timestamp` exactly as sent: the start of the signed message.
    timestamp: Vec<u8>,
    /// The tag `X-Signature` carries; `None` when it is malformed (refused
    /// as invalid once the body is read, in the provider's order).
    tag: Option<[u8; TAG_LEN]>,
}

/// The checks on the headers alone, in the provider's order: both present
/// and non-empty, a version of `v1` if any, a timestamp of digits within
/// `tolerance` seconds of `now` either way (exactly `tolerance` passes).
pub fn check_headers(headers: Headers<'_>, now: u64, tolerance: u64) -> Result<Signed, Refusal> {
    let (Some(signature), Some(timestamp)) =
        (present(headers.signature), present(headers.timestamp))
    else {
        return Err(Refusal::Missing);
    };
    if present(headers.version).is_some_and(|version| version != VERSION) {
        return Err(Refusal::Invalid);
    }
    if !fresh(timestamp, now, tolerance) {
        return Err(Refusal::Stale);
    }
    Ok(Signed {
        timestamp: timestamp.to_vec(),
        tag: parse_signature(signature),
    })
}

/// A header that is there and not empty.
fn present(value: Option<&[u8]>) -> Option<&[u8]> {
    value.filter(|value| !value.is_empty())
}

/// Whether `timestamp` is ASCII digits only, naming a second within
/// `tolerance` of `now`. Too many digits for a `u64` is far from now.
fn fresh(timestamp: &[u8], now: u64, tolerance: u64) -> bool {
    if !timestamp.iter().all(u8::is_ascii_digit) {
        return false;
    }
    std::str::from_utf8(timestamp)
        .ok()
        .and_then(|digits| digits.parse::<u64>().ok())
        .is_some_and(|seconds| seconds.abs_diff(now) <= tolerance)
}

/// The tag of `sha256=<64 hex digits>`; `None` for anything else.
fn parse_signature(header: &[u8]) -> Option<[u8; TAG_LEN]> {
    let hex = header.strip_prefix(PREFIX)?;
    let mut tag = [0; TAG_LEN];
    hex::decode_to_slice(hex, &mut tag).ok()?;
    Some(tag)
}

/// Whether any of `keys` signed `body` as `signed` says; every key is tried.
pub fn verify(keys: &[hmac::Key], signed: &Signed, body: &[u8]) -> Result<(), Refusal> {
    let Some(tag) = &signed.tag else {
        return Err(Refusal::Invalid);
    };
    let matched = keys.iter().fold(subtle::Choice::from(0), |matched, key| {
        let mut context = hmac::Context::with_key(key);
        context.update(&signed.timestamp);
        context.update(b".");
        context.update(body);
        matched | context.sign().as_ref().ct_eq(tag)
    });
    if bool::from(matched) {
        Ok(())
    } else {
        Err(Refusal::Invalid)
    }
}

/// An HMAC-SHA256 key of `secret`'s UTF-8 bytes.
pub fn key(secret: &str) -> hmac::Key {
    hmac::Key::new(hmac::HMAC_SHA256, secret.as_bytes())
}

#[cfg(test)]
mod tests;

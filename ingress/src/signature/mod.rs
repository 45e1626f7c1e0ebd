//! Authentication of the signed route, `POST /webhooks/dropcowboy`.
//!
//! Drop Cowboy signs each delivery of its account webhooks with the
//! webhook's secret, and retries failed ones, so the signature replaces the
//! token of the callback routes. The checks run in the order of the
//! provider's sample receiver, cheapest first, and each refusal has its
//! `code`: no secret configured (503 `not_configured`); `X-Signature` or
//! `X-Timestamp` missing (401 `missing_signature`); an `X-Signature-Version`
//! other than `v1` (401 `invalid_signature`); a timestamp that is not a
//! Unix time in seconds within `CORRAL_SIGNATURE_TOLERANCE_SECS` of now
//! (401 `stale_timestamp`) — these on the headers, before a byte of the body
//! is read ([`Signing::admit`]); then, over the raw body, no configured
//! secret's HMAC matching (401 `invalid_signature`, [`Signing::verify`]).
//!
//! - [`secrets`]: the settings, and the secrets as HMAC keys only.
//! - [`verify`]: the rule over bytes.

pub mod secrets;
pub mod verify;

use actix_web::HttpRequest;

pub use self::{
    secrets::{Keys, SecretsError, SigningSettings},
    verify::{Refusal, Signed},
};

/// `X-Signature`.
pub const SIGNATURE_HEADER: &str = "x-signature";
/// `X-Timestamp`.
pub const TIMESTAMP_HEADER: &str = "x-timestamp";
/// `X-Signature-Version`.
pub const VERSION_HEADER: &str = "x-signature-version";

/// What the signed route verifies deliveries with.
#[derive(Debug, Clone)]
pub struct Signing {
    keys: Keys,
    tolerance_secs: u64,
}

impl Signing {
    /// `keys` (none: the route answers 503), with `X-Timestamp` accepted
    /// within `tolerance_secs` of now.
    pub fn new(keys: Keys, tolerance_secs: u64) -> Self {
        Self {
            keys,
            tolerance_secs,
        }
    }

    /// How many secrets are loaded.
    pub fn secrets(&self) -> usize {
        self.keys.len()
    }

    /// The checks that need no body, on `request`'s headers, at this second.
    pub fn admit(&self, request: &HttpRequest) -> Result<Signed, Refusal> {
        if self.keys.is_empty() {
            return Err(Refusal::NotConfigured);
        }
        let header = |name| request.headers().get(name).map(|v| v.as_bytes());
        let headers = verify::Headers {
            signature: header(SIGNATURE_HEADER),
            timestamp: header(TIMESTAMP_HEADER),
            version: header(VERSION_HEADER),
        };
        verify::check_headers(headers, unix_now(), self.tolerance_secs)
    }

    /// Says at start how many secrets are loaded (never which), and loudly
    /// when none is: the signed route then refuses every delivery.
    pub fn announce(&self) {
        match self.secrets() {
            0 => tracing::error!(
                "NO SIGNING SECRET (CORRAL_DROPCOWBOY_SIGNING_SECRETS and \
                 CORRAL_DROPCOWBOY_SIGNING_SECRETS_FILE are unset or empty): POST \
                 /webhooks/dropcowboy answers 503 to every signed webhook Drop Cowboy sends. Set \
                 the secret of each of your webhooks there to accept them."
            ),
            secrets => tracing::info!(
                signing_secrets = secrets,
                "signed webhooks: POST /webhooks/dropcowboy verifies each with any of the \
                 secrets loaded"
            ),
        }
    }

    /// Whether a configured secret signed `body` as `signed` says.
    pub fn verify(&self, signed: &Signed, body: &[u8]) -> Result<(), Refusal> {
        verify::verify(self.keys.as_slice(), signed, body)
    }
}

/// Seconds since the Unix epoch (0 for a clock set before it, which then
/// finds every delivery stale, as it should).
fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |since| since.as_secs())
}

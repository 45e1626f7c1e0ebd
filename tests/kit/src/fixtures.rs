//! Payloads: the provider's samples (the legacy callback's two; the current
//! API's signed webhooks, callback and signature vectors) and generated
//! variants covering every documented failure reason.

/// `../shared/samples/sms-success.json`, byte for byte.
pub const SMS_SUCCESS: &str = include_str!("../../fixtures/sms-success.json");
/// `../shared/samples/sms-failure.json`, byte for byte.
pub const SMS_FAILURE: &str = include_str!("../../fixtures/sms-failure.json");

/// `../shared/samples/v2-signature-vectors.json`, byte for byte: a signed
/// body with its secret, timestamp and signature, another secret's
/// signature, a tampered copy, and a fresh and a stale "now".
pub const SIGNATURE_VECTORS: &str = include_str!("../../fixtures/v2-signature-vectors.json");
/// `../shared/samples/v2-webhook-sms-status.json`, byte for byte.
pub const V2_WEBHOOK_SMS_STATUS: &str = include_str!("../../fixtures/v2-webhook-sms-status.json");
/// `../shared/samples/v2-webhook-rvm-status.json`, byte for byte.
pub const V2_WEBHOOK_RVM_STATUS: &str = include_str!("../../fixtures/v2-webhook-rvm-status.json");
/// `../shared/samples/v2-webhook-rvm-receipt.json`, byte for byte.
pub const V2_WEBHOOK_RVM_RECEIPT: &str = include_str!("../../fixtures/v2-webhook-rvm-receipt.json");
/// `../shared/samples/v2-callback-rvm-failure.json`, byte for byte.
pub const V2_CALLBACK_RVM_FAILURE: &str =
    include_str!("../../fixtures/v2-callback-rvm-failure.json");

pub use corral_contract::provider::FAILURE_REASONS;

/// `X-Signature` as Drop Cowboy computes it: `sha256=` and the lower-case
/// hex HMAC-SHA256, keyed with `secret`'s UTF-8 bytes, of `timestamp`, `.`
/// and `body` (the vectors in [`SIGNATURE_VECTORS`] check the rule).
pub fn signature(secret: &str, timestamp: &str, body: &[u8]) -> String {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret.as_bytes());
    let mut context = ring::hmac::Context::with_key(&key);
    context.update(timestamp.as_bytes());
    context.update(b".");
    context.update(body);
    format!("sha256={}", hex::encode(context.sign()))
}

/// A signed event body as the provider's receiver conformance suite makes
/// one (`event_at` in milliseconds), with `event_id`.
pub fn event_body(event_id: &str) -> String {
    format!(
        r#"{{"event_id":"{event_id}","event":"contact.msg.received","event_at":1796601722000,"data":{{"contact_id":"5a4b3c2d-1e0f-4a9b-8c7d-6e5f4a3b2c1d","body":"Yes, call me back","from":"+13125550142"}}}}"#
    )
}

/// A delivery-status body in the provider's shape. `reason` empty means success.
/// Money is written as literal JSON text, so tests can compare it exactly.
pub fn delivery_status(
    drop_id: &str,
    attempt_date: &str,
    reason: &str,
    foreign_id: &str,
) -> String {
    DeliveryStatus {
        drop_id,
        attempt_date,
        reason: Some(reason),
        foreign_id,
        product_cost: if reason.is_empty() { "0.099" } else { "0" },
        ..DeliveryStatus::default()
    }
    .body()
}

/// The fields of a delivery-status body a test chooses; the rest are the
/// provider's failure sample's, except that the default reason is empty (a
/// success). Money is literal JSON number text, so sums can be compared
/// exactly.
#[derive(Debug, Clone, Copy)]
pub struct DeliveryStatus<'a> {
    pub drop_id: &'a str,
    pub phone_number: &'a str,
    pub attempt_date: &'a str,
    /// Empty or absent (`None`, the field left out, as a success may) means
    /// success; `spam` is true for `Spam detected`.
    pub reason: Option<&'a str>,
    pub dnc: bool,
    pub product_cost: &'a str,
    pub tts_fee: &'a str,
    pub foreign_id: &'a str,
}

impl Default for DeliveryStatus<'_> {
    fn default() -> Self {
        Self {
            drop_id: "5c8ee427a8d9ef4758bfaca5",
            phone_number: "+15552224444",
            attempt_date: "2019-03-18T00:20:26.000Z",
            reason: Some(""),
            dnc: false,
            product_cost: "0",
            tts_fee: "0",
            foreign_id: "order-1843-attempt-1",
        }
    }
}

impl DeliveryStatus<'_> {
    /// The body as JSON text.
    pub fn body(&self) -> String {
        let text = |value: &str| serde_json::to_string(value).expect("strings serialize");
        let reason = self.reason.unwrap_or_default();
        let status = if reason.is_empty() {
            "success"
        } else {
            "failure"
        };
        let reason_field = self.reason.map_or_else(String::new, |reason| {
            format!(r#""reason":{},"#, text(reason))
        });
        format!(
            r#"{{"drop_id":{},"phone_number":{},"attempt_date":{},"status":{},{reason_field}"dnc":{},"spam":{},"product_cost":{},"compliance_fee":0.0029,"tts_fee":{},"network":{{"name":"Verizon Wireless:6006 - SVR/2","type":"wireless"}},"foreign_id":{}}}"#,
            text(self.drop_id),
            text(self.phone_number),
            text(self.attempt_date),
            text(status),
            self.dnc,
            reason == "Spam detected",
            self.product_cost,
            self.tts_fee,
            text(self.foreign_id),
        )
    }
}

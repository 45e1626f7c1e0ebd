//! Payloads: the provider's two samples and generated variants covering every
//! documented failure reason.

/// `../shared/samples/sms-success.json`, byte for byte.
pub const SMS_SUCCESS: &str = include_str!("../../fixtures/sms-success.json");
/// `../shared/samples/sms-failure.json`, byte for byte.
pub const SMS_FAILURE: &str = include_str!("../../fixtures/sms-failure.json");

pub use corral_shared::payload::FAILURE_REASONS;

/// A delivery-status body in the provider's shape. `reason` empty means success.
/// Money is written as literal JSON text, so tests can compare it exactly.
pub fn delivery_status(
    drop_id: &str,
    attempt_date: &str,
    reason: &str,
    foreign_id: &str,
) -> String {
    let (status, product_cost) = if reason.is_empty() {
        ("success", "0.099")
    } else {
        ("failure", "0")
    };
    let text = |value: &str| serde_json::to_string(value).expect("strings serialize");
    format!(
        r#"{{"drop_id":{},"phone_number":"+15552224444","attempt_date":{},"status":{},"reason":{},"dnc":false,"spam":{},"product_cost":{product_cost},"compliance_fee":0.0029,"tts_fee":0,"network":{{"name":"Verizon Wireless:6006 - SVR/2","type":"wireless"}},"foreign_id":{}}}"#,
        text(drop_id),
        text(attempt_date),
        text(status),
        text(reason),
        reason == "Spam detected",
        text(foreign_id),
    )
}

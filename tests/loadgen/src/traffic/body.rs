//! Writing one callback body in the provider's legacy shape.

use std::fmt::Write as _;

use bytes::Bytes;
use chrono::{DateTime, SecondsFormat, Utc};
use corral_contract::envelope::Kind;

/// Carriers as the provider names them, with the network type.
pub(super) const NETWORKS: &[(&str, &str)] = &[
    ("Verizon Wireless:6006 - SVR/2", "wireless"),
    ("T-Mobile USA, Inc.:6529 - SVR/2", "wireless"),
    ("AT&T Wireless:6010 - SVR/2", "wireless"),
    ("Comcast IP Phone, LLC", "voip"),
    ("Frontier Communications", "landline"),
];

pub(super) struct BodyFields<'a> {
    pub(super) kind: Kind,
    pub(super) drop_id: &'a str,
    pub(super) phone: &'a str,
    pub(super) attempt_date: DateTime<Utc>,
    pub(super) reason: &'static str,
    pub(super) network: (&'static str, &'static str),
    pub(super) tts: bool,
    /// SMS parts the message took (1 to 3): a delivered SMS costs
    /// 0.099 a part, so spend varies from event to event.
    pub(super) segments: u8,
    pub(super) foreign_id: Option<&'a str>,
}

/// What a result costs, as the provider writes it: a delivered SMS 0.099 a
/// part, a delivered voicemail 0.045, a failure nothing.
pub(super) fn product_cost(success: bool, kind: Kind, segments: u8) -> &'static str {
    match (success, kind, segments) {
        (false, _, _) => "0",
        (true, Kind::Sms, 1) => "0.099",
        (true, Kind::Sms, 2) => "0.198",
        (true, Kind::Sms, _) => "0.297",
        // A callback is for SMS or voicemail; `Event` is the signed route's.
        (true, Kind::Rvm | Kind::Event, _) => "0.045",
    }
}

/// The legacy callback's JSON body, in the provider's field order. Every string in it is plain
/// ASCII without quotes or backslashes (generated ids, fixed carrier names,
/// the documented reasons), so it is written without an escaping pass.
pub(super) fn body(fields: &BodyFields<'_>) -> Bytes {
    let success = fields.reason.is_empty();
    let product_cost = product_cost(success, fields.kind, fields.segments);
    let tts_fee = if fields.tts && success { "0.0125" } else { "0" };
    let mut out = String::with_capacity(420);
    let _ = write!(
        out,
        r#"{{"drop_id":"{}","phone_number":"{}","attempt_date":"{}","status":"{}","reason":"{}","dnc":{},"spam":{},"product_cost":{product_cost},"compliance_fee":0.0029,"tts_fee":{tts_fee},"network":{{"name":"{}","type":"{}"}}"#,
        fields.drop_id,
        fields.phone,
        fields
            .attempt_date
            .to_rfc3339_opts(SecondsFormat::Millis, true),
        if success { "success" } else { "failure" },
        fields.reason,
        fields.reason == "Internal DNC",
        fields.reason == "Spam detected",
        fields.network.0,
        fields.network.1,
    );
    if let Some(foreign_id) = fields.foreign_id {
        let _ = write!(out, r#","foreign_id":"{foreign_id}""#);
    }
    out.push('}');
    Bytes::from(out)
}

//! The callback a send's `callback_url` receives (the legacy routes
//! `/webhooks/dropcowboy/{sms,rvm}`): the v1 body, and the v2 body, which
//! adds `reason_code`, the account's ids, `caller_id`, `product_code`,
//! `quantity` and, for a voicemail, `proof_of_delivery_url`.

use std::collections::BTreeMap;

use serde_json::value::RawValue;

use super::{
    DeliveryStatus, Fingerprint, PayloadError, Typed,
    fields::{Fields, Place, json_type},
    read_result,
};

/// Types a callback body.
pub fn parse(body: &[u8]) -> Result<Typed, PayloadError> {
    let text = std::str::from_utf8(body).map_err(|err| PayloadError::NotUtf8(err.to_string()))?;
    let fields = Fields::of(text, Place::Top)?;
    // The top-level parse above has checked the whole document's syntax,
    // which the canonical pass relies on.
    let fingerprint = Fingerprint::of(text)?;
    let result = read_result(
        &fields,
        || {
            fields
                .date("attempt_date")?
                .ok_or(PayloadError::Missing("attempt_date"))
        },
        "phone_number",
        "caller_id",
    )?;
    let (network_name, network_type) = network(&fields)?;
    let foreign_id = match fields.get("foreign_id") {
        Some(raw) if json_type(raw) == "a number" => Some(raw.get().to_owned()),
        _ => fields.string("foreign_id")?,
    };
    let status = DeliveryStatus {
        dnc: fields.boolean("dnc")?,
        spam: fields.boolean("spam")?,
        product_cost: fields.money("product_cost")?,
        compliance_fee: fields.money("compliance_fee")?,
        tts_fee: fields.money("tts_fee")?,
        network_name,
        network_type,
        foreign_id,
        session_id: fields.string("session_id")?,
        log_id: fields.string("log_id")?,
        product_code: fields.string("product_code")?,
        quantity: fields.integer("quantity")?,
        ..result
    };
    Ok(Typed {
        status,
        fingerprint,
    })
}

/// `network.name` and `network.type`.
fn network(fields: &Fields<'_>) -> Result<(Option<String>, Option<String>), PayloadError> {
    match fields.get("network") {
        None => Ok((None, None)),
        Some(raw) if json_type(raw) == "an object" => {
            let network: BTreeMap<String, &RawValue> = serde_json::from_str(raw.get())
                .map_err(|err| PayloadError::InvalidJson(err.to_string()))?;
            let sub = |name: &str| network.get(name).copied().filter(|raw| raw.get() != "null");
            let string = |name: &str, field: &'static str| {
                sub(name)
                    .map(|raw| super::fields::string_value(raw, field))
                    .transpose()
            };
            Ok((
                string("name", "network.name")?,
                string("type", "network.type")?,
            ))
        }
        Some(raw) => Err(PayloadError::WrongType {
            field: "network",
            expected: "an object",
            found: json_type(raw),
        }),
    }
}

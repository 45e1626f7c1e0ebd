//! Writing the current API's bodies: the signed events (`{"event_id",
//! "event", "event_at", "data"}`, `event_at` in Unix milliseconds) and the
//! callback with its `reason_code`, in the provider's field order and shapes
//! (its fixtures `webhook.rvm-status.json`, `webhook.rvm-receipt.json` and
//! `callback.rvm-success.json`). Every string written is plain text without
//! quotes or backslashes (generated ids, the documented reasons, fixed
//! words), so the bodies are written without an escaping pass.

use std::fmt::Write as _;

use bytes::Bytes;
use chrono::{DateTime, SecondsFormat, Utc};
use corral_contract::envelope::Kind;

/// Every reason code the provider documents for a send's result (its test
/// numbers' tables and its send-results page), with the provider's text.
pub const REASON_CODES: &[(u16, &str)] = &[
    (0, ""),
    (3000, "No Funds"),
    (4000, "VoiceMail Not Detected"),
    (4001, "VoiceMail Not Setup"),
    (4002, "VoiceMail Full"),
    (4004, "Number not reachable"),
    (4005, "No Answer"),
    (4006, "User Busy"),
    (4008, "Spam detected"),
    (4013, "Too Many Attempts"),
    (4016, "Internal DNC"),
    (4017, "Known Litigator"),
    (4019, "RND Reassigned"),
    (4021, "RND Error"),
    (6000, "Carrier Denied Use Case"),
    (6001, "Carrier Suspension"),
    (6002, "Pool Suspended"),
    (6003, "Pool Not Ready"),
    (6004, "Opt-in Flagged"),
    (6005, "Opt-in Revoked"),
    (6006, "Opt-in Pending"),
    (6011, "Opt-in Missing"),
];

/// The failures a voicemail can report: the simulated numbers' and the two
/// after which a receipt is sent (4001, 4002), and no funds.
pub(super) const RVM_FAILURES: &[u16] = &[
    3000, 4000, 4001, 4002, 4004, 4005, 4006, 4013, 4016, 4017, 4019, 4021, 6000, 6002, 6005, 6011,
];

/// The failures a text can report: the simulated numbers', and no funds.
pub(super) const SMS_FAILURES: &[u16] = &[
    3000, 4004, 4008, 4013, 4016, 4017, 6000, 6001, 6003, 6004, 6006, 6011,
];

/// The voicemail results a receipt follows: the carrier's voicemail answered.
pub(super) const RECEIPTED: &[u16] = &[0, 4001, 4002];

/// Event types the provider names that corral does not type: each is kept
/// as it came.
pub const OTHER_EVENTS: &[&str] = &[
    "contact.msg.received",
    "contact.msg.sent",
    "contact.created",
    "contact.call.missed",
    "contact.msg.opt_out",
    "contact.consent.revoked",
    "campaign.completed",
    "contact.tag.added",
];

/// The receipt's event type.
pub(super) const RECEIPT: &str = "contact.rvm.receipt";

/// The status event's type for a result of `kind`.
pub(super) fn status_name(kind: Kind) -> &'static str {
    match kind {
        Kind::Rvm => "contact.rvm.status",
        Kind::Sms | Kind::Event => "contact.sms.status",
    }
}

/// The provider's text for `code`.
pub(super) fn reason_of(code: u16) -> &'static str {
    REASON_CODES
        .iter()
        .find(|(known, _)| *known == code)
        .map_or("", |(_, text)| text)
}

/// The fields a drop's result carries on either channel.
pub(super) struct Outcome<'a> {
    pub(super) kind: Kind,
    pub(super) drop_id: &'a str,
    pub(super) team_id: &'a str,
    pub(super) contact_id: &'a str,
    pub(super) campaign_id: Option<&'a str>,
    /// The recipient.
    pub(super) to: &'a str,
    /// The number it was sent from (`caller_id` on the callback).
    pub(super) from: &'a str,
    pub(super) reason_code: u16,
}

impl Outcome<'_> {
    fn campaign_type(&self) -> &'static str {
        match self.kind {
            Kind::Rvm => "rvm",
            Kind::Sms | Kind::Event => "sms",
        }
    }

    fn status(&self) -> &'static str {
        if self.reason_code == 0 {
            "success"
        } else {
            "failure"
        }
    }

    fn campaign_id(&self) -> String {
        self.campaign_id
            .map_or_else(|| "null".to_owned(), |id| format!(r#""{id}""#))
    }

    /// `"status":…,"reason":…,"reason_code":…,"to":…,"from":…`.
    fn result_fields(&self) -> String {
        format!(
            r#""status":"{}","reason":"{}","reason_code":{},"to":"{}","from":"{}""#,
            self.status(),
            reason_of(self.reason_code),
            self.reason_code,
            self.to,
            self.from
        )
    }
}

/// `{"event_id":…,"event":…,"event_at":…,"data":` — the envelope's start.
fn envelope(out: &mut String, event_id: &str, event: &str, event_at: DateTime<Utc>) {
    let _ = write!(
        out,
        r#"{{"event_id":"{event_id}","event":"{event}","event_at":{},"data":"#,
        event_at.timestamp_millis()
    );
}

/// `contact.sms.status` or `contact.rvm.status`.
pub(super) fn status_event(
    event_id: &str,
    event_at: DateTime<Utc>,
    outcome: &Outcome<'_>,
) -> Bytes {
    let mut out = String::with_capacity(420);
    envelope(&mut out, event_id, status_name(outcome.kind), event_at);
    let _ = write!(
        out,
        r#"{{"team_id":"{}","contact_id":"{}","drop_id":"{}","campaign_id":{},"campaign_type":"{}",{}}}}}"#,
        outcome.team_id,
        outcome.contact_id,
        outcome.drop_id,
        outcome.campaign_id(),
        outcome.campaign_type(),
        outcome.result_fields()
    );
    Bytes::from(out)
}

/// `contact.rvm.receipt`: the result again, with the people and session it
/// concerns, the proof-of-delivery link and when it was ready.
pub(super) fn receipt_event(
    event_id: &str,
    event_at: DateTime<Utc>,
    outcome: &Outcome<'_>,
    receipt: &str,
) -> Bytes {
    let mut out = String::with_capacity(1600);
    envelope(&mut out, event_id, RECEIPT, event_at);
    let (team, contact, to) = (outcome.team_id, outcome.contact_id, outcome.to);
    let _ = write!(
        out,
        r#"{{"team_id":"{team}","team":{{"team_id":"{team}","name":"Example Realty"}},"contact_id":"{contact}","contact":{{"contact_id":"{contact}","uid":null,"main_phone":"{to}","first_name":"Jordan","last_name":"Rivera","mobile_phone":"{to}","tags":[],"list_ids":[]}},"drop_id":"{}","campaign_session":{{"team_id":"{team}","campaign_id":{},"contact_id":"{contact}","list_id":null,"phone_number":"{to}","caller_id":"{}","product_code":"rvm","dispo":{{"status":"{}","reason":"{}","delivered_at":null,"dnc":false}}}},"campaign_id":{},"list_id":null,"list":null,"campaign_type":"rvm",{},"proof_of_delivery_url":"https://api-v2.dropcowboy.com/campaign/public/receipts/{receipt}","receipt_ready_at":"{}"}}}}"#,
        outcome.drop_id,
        outcome.campaign_id(),
        outcome.from,
        outcome.status(),
        reason_of(outcome.reason_code),
        outcome.campaign_id(),
        outcome.result_fields(),
        event_at.to_rfc3339_opts(SecondsFormat::Millis, true)
    );
    Bytes::from(out)
}

/// An event corral does not type, with what such an event plausibly says
/// about `subject` (the contact, or the campaign, it concerns) and the
/// number `phone` (the provider publishes no bodies for these).
pub(super) fn other_event(
    event_id: &str,
    event_at: DateTime<Utc>,
    name: &str,
    subject: &str,
    phone: &str,
) -> Bytes {
    let mut out = String::with_capacity(300);
    envelope(&mut out, event_id, name, event_at);
    let _ = match name {
        "contact.msg.received" => write!(
            out,
            r#"{{"contact_id":"{subject}","body":"Oui, à demain 👍","from":"{phone}"}}}}"#
        ),
        "contact.msg.sent" => write!(
            out,
            r#"{{"contact_id":"{subject}","body":"Your appointment is confirmed","to":"{phone}","status":"sent"}}}}"#
        ),
        "campaign.completed" => write!(
            out,
            r#"{{"campaign_id":"{subject}","name":"Spring open house","sent":1200}}}}"#
        ),
        "contact.tag.added" => write!(out, r#"{{"contact_id":"{subject}","tag":"hot lead"}}}}"#),
        _ => write!(out, r#"{{"contact_id":"{subject}","number":"{phone}"}}}}"#),
    };
    Bytes::from(out)
}

/// The ids only the current API's callback carries.
pub(super) struct CallbackIds<'a> {
    pub(super) session_id: &'a str,
    pub(super) log_id: &'a str,
    pub(super) foreign_id: Option<&'a str>,
}

/// The current API's callback for `outcome`, with its money.
pub(super) fn callback(
    outcome: &Outcome<'_>,
    attempt_date: DateTime<Utc>,
    ids: &CallbackIds<'_>,
    product_cost: &str,
) -> Bytes {
    let mut out = String::with_capacity(600);
    let _ = write!(
        out,
        r#"{{"drop_id":"{}","team_id":"{}","session_id":"{}","log_id":"{}","contact_id":"{}","phone_number":"{}","caller_id":"{}","product_code":"{}","status":"{}","reason":"{}","reason_code":{},"quantity":1,"product_cost":{product_cost},"compliance_fee":0.0029,"tts_fee":0,"dnc":{},"attempt_date":"{}""#,
        outcome.drop_id,
        outcome.team_id,
        ids.session_id,
        ids.log_id,
        outcome.contact_id,
        outcome.to,
        outcome.from,
        outcome.campaign_type(),
        outcome.status(),
        reason_of(outcome.reason_code),
        outcome.reason_code,
        outcome.reason_code == 4016,
        attempt_date.to_rfc3339_opts(SecondsFormat::Millis, true)
    );
    if let Some(foreign_id) = ids.foreign_id {
        let _ = write!(out, r#","foreign_id":"{foreign_id}""#);
    }
    out.push('}');
    Bytes::from(out)
}

/// `body` written again by a JSON library: indented, keys in another order,
/// the same content (the signature covers the new bytes).
pub(crate) fn reserialised(body: &[u8]) -> Bytes {
    let value: serde_json::Value =
        serde_json::from_slice(body).expect("the generator writes valid JSON");
    Bytes::from(serde_json::to_vec_pretty(&value).expect("a JSON value serialises"))
}

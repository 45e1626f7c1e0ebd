//! The result event the worker publishes for every newly stored webhook
//! (`CORRAL_RESULT_EVENTS=true`), to the fan-out exchange
//! `<CORRAL_AMQP_PREFIX>.delivery-results`: the contract with the customer's
//! own services. docs/design.md ("Result events") documents every field.
//!
//! Delivery is at least once: an event may arrive twice (the relay crashed
//! between RabbitMQ's confirm and deleting its outbox row), always with the
//! same [`DeliveryResult::id`], which is what a consumer deduplicates on.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::envelope::Kind;

/// Version of the body, in its `version` field and the message's `type`.
pub const VERSION: u32 = 1;

/// The `type` of a result event's message (AMQP: `amqp::result_properties`).
pub const MESSAGE_TYPE: &str = "corral.delivery_result.v1";

/// One delivery-status event, as stored, for the customer's services.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct DeliveryResult {
    /// [`VERSION`]; a change a consumer must know about gets a new one.
    pub version: u32,
    /// The webhook's id (`delivery_events.message_id`, the id ingress
    /// answered): the same however often the event is published, so the
    /// consumer's deduplication key.
    pub id: Uuid,
    /// `delivery_events.id` of the stored event.
    pub event_id: i64,
    /// The provider's `drop_id`: one send, across its events.
    pub drop_id: String,
    /// The sender's own reference (`foreign_id`), `None` when absent.
    pub foreign_id: Option<String>,
    /// `sms` or `rvm`.
    pub kind: Kind,
    /// The number the attempt was made to, `None` when the provider sent none.
    pub phone_number: Option<String>,
    /// The provider's status (`success`, `failure`, or whatever it sent).
    pub status: String,
    /// The provider's failure reason, `None` when it gave none (absent or empty).
    pub reason: Option<String>,
    /// The provider's `dnc` flag, `None` when absent.
    pub dnc: Option<bool>,
    /// The provider's `spam` flag, `None` when absent.
    pub spam: Option<bool>,
    /// Exact decimal text (`"0.099"`), never a float; `None` when absent.
    pub product_cost: Option<String>,
    /// Exact decimal text; `None` when absent.
    pub compliance_fee: Option<String>,
    /// Exact decimal text; `None` when absent.
    pub tts_fee: Option<String>,
    /// When the provider attempted the delivery.
    pub attempt_date: DateTime<Utc>,
    /// When ingress received the webhook.
    pub received_at: DateTime<Utc>,
    /// When the worker stored it.
    pub stored_at: DateTime<Utc>,
    /// Whether the event became its `drop_id`'s state in `deliveries` when
    /// stored (`false`: a newer event for the same send was already there).
    pub latest: bool,
    /// Suppression classes the event is evidence for (`opted_out`,
    /// `litigator`, `internal_dnc`, `dnc`, `carrier`, `reassigned`), sorted.
    pub suppressions: Vec<String>,
    /// Those of [`DeliveryResult::suppressions`] the number was not actively
    /// suppressed in before this event.
    pub new_suppressions: Vec<String>,
    /// The provider's numeric reason, `None` when the body had none (v1).
    /// This and the fields below were added to version 1 (absent from
    /// events published before them, read as `None`).
    #[serde(default)]
    pub reason_code: Option<i32>,
    /// The signed event's type (`contact.sms.status`, `contact.rvm.status`,
    /// `contact.rvm.receipt`); `None` for a callback.
    #[serde(default)]
    pub event: Option<String>,
    /// The signed event's `event_id`, the provider's idempotency key;
    /// `None` for a callback.
    #[serde(default)]
    pub provider_event_id: Option<String>,
    /// The provider's contact, where the body names it.
    #[serde(default)]
    pub contact_id: Option<String>,
    /// The voicemail's proof of delivery, where the body carries it.
    #[serde(default)]
    pub proof_of_delivery_url: Option<String>,
}

impl DeliveryResult {
    /// The message body: this, as JSON.
    pub fn body(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("strings, numbers and dates always serialize")
    }

    /// The routing key it is published with (`sms` or `rvm`): the fan-out
    /// exchange ignores it, but an exchange bound behind it can route on it.
    pub fn routing_key(&self) -> &'static str {
        self.kind.as_str()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_body_is_the_documented_json() {
        let at = |text: &str| DateTime::parse_from_rfc3339(text).unwrap().to_utc();
        let event = DeliveryResult {
            version: VERSION,
            id: "0193f0c2-7a1e-7d3c-9a55-0123456789ab".parse().unwrap(),
            event_id: 42,
            drop_id: "d1".into(),
            foreign_id: None,
            kind: Kind::Sms,
            phone_number: Some("+15552224444".into()),
            status: "success".into(),
            reason: None,
            dnc: Some(false),
            spam: Some(false),
            product_cost: Some("0.099".into()),
            compliance_fee: Some("0.0029".into()),
            tts_fee: None,
            attempt_date: at("2026-11-27T05:24:31Z"),
            received_at: at("2026-11-27T05:24:32.123456Z"),
            stored_at: at("2026-11-27T05:24:32.5Z"),
            latest: true,
            suppressions: vec![],
            new_suppressions: vec![],
            reason_code: None,
            event: None,
            provider_event_id: None,
            contact_id: None,
            proof_of_delivery_url: None,
        };
        let json: serde_json::Value = serde_json::to_value(&event).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "version": 1,
                "id": "0193f0c2-7a1e-7d3c-9a55-0123456789ab",
                "event_id": 42,
                "drop_id": "d1",
                "foreign_id": null,
                "kind": "sms",
                "phone_number": "+15552224444",
                "status": "success",
                "reason": null,
                "dnc": false,
                "spam": false,
                "product_cost": "0.099",
                "compliance_fee": "0.0029",
                "tts_fee": null,
                "attempt_date": "2026-11-27T05:24:31Z",
                "received_at": "2026-11-27T05:24:32.123456Z",
                "stored_at": "2026-11-27T05:24:32.500Z",
                "latest": true,
                "suppressions": [],
                "new_suppressions": [],
                "reason_code": null,
                "event": null,
                "provider_event_id": null,
                "contact_id": null,
                "proof_of_delivery_url": null,
            })
        );
        let back: DeliveryResult = serde_json::from_value(json.clone()).unwrap();
        assert_eq!(back, event);
        // An event published before the current API's fields still reads.
        let mut older = json;
        for field in [
            "reason_code",
            "event",
            "provider_event_id",
            "contact_id",
            "proof_of_delivery_url",
        ] {
            older.as_object_mut().unwrap().remove(field);
        }
        assert_eq!(
            serde_json::from_value::<DeliveryResult>(older).unwrap(),
            event
        );
    }
}

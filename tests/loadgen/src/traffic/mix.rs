//! The traffic mix: what share of the items is of each kind.

use serde::Serialize;

/// The traffic mix. Every fraction is a probability in `0..=1`, drawn per
/// item from the run's seed.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Mix {
    /// Share of results for ringless voicemail (`/rvm`); the rest are SMS.
    pub rvm: f64,
    /// Share of results reporting success; the rest are failures, their
    /// reason drawn evenly from every reason the provider documents.
    pub success: f64,
    /// Share of callback items sent twice, byte for byte (a provider resend).
    pub duplicates: f64,
    /// Share of callback items that are two events for one `drop_id`, the
    /// newer sent first. `duplicates + out_of_order` must not exceed 1.
    pub out_of_order: f64,
    /// Share of callbacks without a `foreign_id` (the send request set none).
    pub without_foreign_id: f64,
    /// Share of items sent as signed webhooks to `POST /webhooks/dropcowboy`
    /// (they need a signing secret); the rest are callbacks to the token
    /// routes. 0 sends exactly the callback traffic of before.
    pub signed: f64,
    /// Of the signed items, the share whose drop is also reported by its
    /// callback to the token route (one result, two channels).
    pub both_channels: f64,
    /// Of the signed items, the share that are an event corral does not type
    /// (`contact.msg.received`, …). `both_channels + other_events` must not
    /// exceed 1.
    pub other_events: f64,
    /// Share of signed events the provider delivers again: the same
    /// `event_id` with a new `X-Timestamp`, signature and `X-Attempt`, half
    /// the time re-serialised (other whitespace and key order).
    pub retries: f64,
    /// Share of voicemail results a receipt can follow (`reason_code` 0,
    /// 4001, 4002) that are followed by one (`contact.rvm.receipt`).
    pub receipts: f64,
}

impl Default for Mix {
    fn default() -> Self {
        Self {
            rvm: 0.25,
            success: 0.8,
            duplicates: 0.0,
            out_of_order: 0.0,
            without_foreign_id: 0.05,
            signed: 0.0,
            both_channels: 0.0,
            other_events: 0.1,
            retries: 0.0,
            receipts: 0.5,
        }
    }
}

impl Mix {
    /// Says what is wrong with the fractions, if anything.
    pub fn validate(&self) -> Result<(), String> {
        for (name, value) in [
            ("rvm", self.rvm),
            ("success", self.success),
            ("duplicates", self.duplicates),
            ("out-of-order", self.out_of_order),
            ("without-foreign-id", self.without_foreign_id),
            ("signed", self.signed),
            ("both-channels", self.both_channels),
            ("other-event", self.other_events),
            ("retry", self.retries),
            ("receipt", self.receipts),
        ] {
            if !(0.0..=1.0).contains(&value) {
                return Err(format!(
                    "the {name} fraction must be within 0..=1, not {value}"
                ));
            }
        }
        if self.duplicates + self.out_of_order > 1.0 {
            return Err("the duplicate and out-of-order fractions add up to more than 1".into());
        }
        if self.both_channels + self.other_events > 1.0 {
            return Err("the both-channels and other-event fractions add up to more than 1".into());
        }
        Ok(())
    }

    /// Whether the traffic has callbacks for the token routes.
    pub fn sends_callbacks(&self) -> bool {
        self.signed < 1.0 || self.both_channels > 0.0
    }

    /// Whether the traffic has signed webhooks.
    pub fn sends_signed(&self) -> bool {
        self.signed > 0.0
    }
}

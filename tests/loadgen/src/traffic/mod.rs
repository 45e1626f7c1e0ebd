//! What the simulator sends: run ids, the traffic mix, and every webhook made
//! deterministically from `(seed, item)`, so the verifier can make the same
//! bodies again instead of keeping a copy of each one.
//!
//! The unit of work is an *item*. On the callback routes: one webhook sent
//! once ([`Shape::Single`]), one webhook sent twice in a row, byte for byte
//! ([`Shape::Duplicate`], a provider resend), or two events for one
//! `drop_id` with the newer one sent first ([`Shape::OutOfOrder`]). On the
//! signed route: a drop's status event, perhaps followed by its voicemail
//! receipt ([`Shape::Signed`]); the same with the drop's callback sent to
//! the token route too ([`Shape::BothChannels`]); or an event corral does not
//! type ([`Shape::OtherEvent`]) — each signed event perhaps delivered again
//! as the provider retries. The requests of an item are sent one after the
//! other (the next only once the previous has been answered), so the order
//! in which they reach ingress is the order planned.
//!
//! # Layout
//!
//! - [`ids`]: The run id, in every id a run sends; UUIDs.
//! - [`mix`]: The traffic mix.
//! - [`body`](mod@body): Writing one callback body in the provider's legacy shape.
//! - [`events`]: Writing the signed events and the current API's callback.
//! - [`signed`]: Planning a signed item: which events, retries, both channels.
//! - [`ledger`]: The ledger of what was sent and how ingress answered each body.

mod body;
mod events;
mod ids;
mod ledger;
mod mix;
mod signed;

use self::{body::*, ids::*};
pub use self::{
    events::{OTHER_EVENTS, REASON_CODES},
    ids::RunId,
    ledger::{ItemRecord, Sent, SentSummary, SentWebhook},
    mix::Mix,
};

use bytes::Bytes;
use chrono::{DateTime, TimeDelta, Utc};
use corral_contract::envelope::Kind;
use rand::{Rng, SeedableRng, rngs::SmallRng};
use serde::Serialize;

use corral_contract::provider::FAILURE_REASONS;

/// The reason given to the older event of an out-of-order pair: a transient
/// failure that made the provider try again.
pub const RETRIED_REASON: &str = "Temporarily unreachable";

/// The most bodies an item has (a callback, a status event and its receipt).
pub const MAX_BODIES: usize = 3;

/// How an item is sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Shape {
    /// One callback, sent once.
    Single,
    /// One callback, sent twice in a row, byte for byte.
    Duplicate,
    /// Two callbacks for one `drop_id`; the newer is sent first.
    OutOfOrder,
    /// A signed status event, perhaps followed by its receipt: `[status,
    /// receipt]`.
    Signed,
    /// One drop's result on both channels, in either order: `[callback,
    /// status, receipt]` (the receipt perhaps).
    BothChannels,
    /// A signed event corral does not type: `[event]`.
    OtherEvent,
}

impl Shape {
    /// Whether body `index` of an item of this shape is a signed event.
    pub fn is_signed(self, index: usize) -> bool {
        match self {
            Shape::Single | Shape::Duplicate | Shape::OutOfOrder => false,
            Shape::Signed | Shape::OtherEvent => true,
            Shape::BothChannels => index > 0,
        }
    }
}

/// One request of an item.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Step {
    /// The body sent, an index into [`Item::bodies`].
    pub body: usize,
    /// `X-Attempt` of a signed delivery: 1, then 2 and 3 for the provider's
    /// retries (1 for a callback).
    pub attempt: u8,
    /// Seconds before the send that a signed delivery is signed at: an
    /// attempt with others still to come is backdated a minute for each, so
    /// every attempt has its own `X-Timestamp` and signature, all within
    /// the provider's 300 s.
    pub signed_secs_ago: u64,
    /// The body re-serialised: other whitespace and key order, the same
    /// content (a provider retry may come so).
    pub reserialised: bool,
}

impl Step {
    /// Body `body`, attempt 1, sent as it is.
    pub fn once(body: usize) -> Self {
        Self {
            body,
            attempt: 1,
            signed_secs_ago: 0,
            reserialised: false,
        }
    }
}

/// Where a signed event is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Destination {
    /// A result (`contact.sms.status`, `contact.rvm.status`,
    /// `contact.rvm.receipt`): a `delivery_events` row.
    DeliveryEvents,
    /// Any other event: a `provider_events` row.
    ProviderEvents,
}

impl Destination {
    /// The table.
    pub fn table(self) -> &'static str {
        match self {
            Destination::DeliveryEvents => "delivery_events",
            Destination::ProviderEvents => "provider_events",
        }
    }
}

/// What a signed event is, beside its body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// The provider's idempotency key (also `X-Event-Id`).
    pub id: String,
    /// Its type, e.g. `contact.rvm.status`.
    pub name: &'static str,
    /// Where corral keeps it.
    pub destination: Destination,
}

/// One webhook body and the facts about it a test checks.
#[derive(Debug, Clone)]
pub struct Webhook {
    /// Route: `/webhooks/dropcowboy/sms` or `/rvm` for a callback,
    /// [`Kind::Event`] for a signed delivery to `/webhooks/dropcowboy`.
    pub kind: Kind,
    /// The provider's id for the delivery (for an event corral does not
    /// type, which carries none, its item's all the same).
    pub drop_id: String,
    /// When the provider attempted it (millisecond precision, as it sends);
    /// a signed event's `event_at`.
    pub attempt_date: DateTime<Utc>,
    /// `success` or `failure` (empty for an event that is no result).
    pub status: &'static str,
    /// Empty on success.
    pub reason: &'static str,
    /// The provider's code for the result, in the current API's bodies.
    pub reason_code: Option<u16>,
    /// The customer's id, absent for some (callbacks only).
    pub foreign_id: Option<String>,
    /// For a signed delivery: its event.
    pub event: Option<Event>,
    /// The exact JSON sent (a re-serialised retry sends other bytes).
    pub body: Bytes,
}

/// One unit of work.
#[derive(Debug, Clone)]
pub struct Item {
    /// Its number within the run (also the low digits of its `drop_id`).
    pub index: u64,
    /// How it is sent.
    pub shape: Shape,
    /// Its distinct bodies, at most [`MAX_BODIES`]; for
    /// [`Shape::OutOfOrder`]: `[newer, older]`.
    pub bodies: Vec<Webhook>,
    /// The requests, in order.
    pub steps: Vec<Step>,
}

impl Item {
    /// The bytes `step` sends.
    pub fn payload(&self, step: &Step) -> Bytes {
        let body = &self.bodies[step.body].body;
        if step.reserialised {
            events::reserialised(body)
        } else {
            body.clone()
        }
    }
}

/// Everything that decides what a run sends: the same `Traffic` makes the
/// same items.
#[derive(Debug, Clone)]
pub struct Traffic {
    /// The run.
    pub run_id: RunId,
    /// Seed of the per-item random choices.
    pub seed: u64,
    /// The mix.
    pub mix: Mix,
    /// Attempt dates count from here (the run's start, to the millisecond).
    pub epoch: DateTime<Utc>,
}

impl Traffic {
    /// Traffic for `run_id` starting now.
    pub fn new(run_id: RunId, seed: u64, mix: Mix) -> Self {
        let now = Utc::now();
        let epoch = DateTime::from_timestamp_millis(now.timestamp_millis()).unwrap_or(now);
        Self {
            run_id,
            seed,
            mix,
            epoch,
        }
    }

    /// Item `index`, always the same for the same traffic.
    pub fn item(&self, index: u64) -> Item {
        // A generator of its own decides what is signed, so the callback
        // items of a mix with signed traffic are those it would send without.
        let mut signed =
            SmallRng::seed_from_u64(!self.seed ^ index.wrapping_mul(0xd1b5_4a32_d192_ed03));
        if self.mix.signed > 0.0 && signed.random::<f64>() < self.mix.signed {
            return self.signed_item(index, &mut signed);
        }
        self.callback_item(index)
    }

    /// A callback item: the traffic of the token routes.
    fn callback_item(&self, index: u64) -> Item {
        let mut rng =
            SmallRng::seed_from_u64(self.seed ^ index.wrapping_mul(0x9e37_79b9_7f4a_7c15));
        let draw: f64 = rng.random();
        let shape = if draw < self.mix.duplicates {
            Shape::Duplicate
        } else if draw < self.mix.duplicates + self.mix.out_of_order {
            Shape::OutOfOrder
        } else {
            Shape::Single
        };
        let kind = if rng.random::<f64>() < self.mix.rvm {
            Kind::Rvm
        } else {
            Kind::Sms
        };
        let drop_id = self.run_id.drop_id(index);
        let phone = phone(&mut rng);
        let network = NETWORKS[rng.random_range(0..NETWORKS.len())];
        let foreign_id = self.foreign_id(index, &mut rng);
        let tts = kind == Kind::Rvm && rng.random::<f64>() < 0.3;
        let segments = segments(index);
        let attempt = self.attempt_date(index);
        let reason = |rng: &mut SmallRng| {
            if rng.random::<f64>() < self.mix.success {
                ""
            } else {
                FAILURE_REASONS[rng.random_range(0..FAILURE_REASONS.len())]
            }
        };
        let make = |attempt_date, reason| Webhook {
            kind,
            drop_id: drop_id.clone(),
            attempt_date,
            status: status_of(reason),
            reason,
            reason_code: None,
            foreign_id: foreign_id.clone(),
            event: None,
            body: body(&BodyFields {
                kind,
                drop_id: &drop_id,
                phone: &phone,
                attempt_date,
                reason,
                network,
                tts,
                segments,
                foreign_id: foreign_id.as_deref(),
            }),
        };
        let (bodies, steps) = match shape {
            Shape::OutOfOrder => {
                let retry_after = TimeDelta::seconds(rng.random_range(1..=600));
                let newer = make(attempt + retry_after, reason(&mut rng));
                let older = make(attempt, RETRIED_REASON);
                (vec![newer, older], vec![Step::once(0), Step::once(1)])
            }
            Shape::Duplicate => (
                vec![make(attempt, reason(&mut rng))],
                vec![Step::once(0), Step::once(0)],
            ),
            _ => (vec![make(attempt, reason(&mut rng))], vec![Step::once(0)]),
        };
        Item {
            index,
            shape,
            bodies,
            steps,
        }
    }

    /// `foreign_id` of item `index`: absent for `without_foreign_id` of them.
    fn foreign_id(&self, index: u64, rng: &mut SmallRng) -> Option<String> {
        (rng.random::<f64>() >= self.mix.without_foreign_id)
            .then(|| format!("lg-{}-order-{index}", self.run_id))
    }

    /// When item `index` was attempted: a millisecond apart from the next.
    fn attempt_date(&self, index: u64) -> DateTime<Utc> {
        self.epoch + TimeDelta::milliseconds(i64::try_from(index).unwrap_or(i64::MAX / 2))
    }
}

/// A US number in E.164.
fn phone(rng: &mut SmallRng) -> String {
    format!(
        "+1{}{:07}",
        rng.random_range(201..=989),
        rng.random_range(0..10_000_000)
    )
}

/// SMS parts of item `index`'s message (1 to 3): from the index, not the
/// generator, so every other choice stays what it was for the same seed.
fn segments(index: u64) -> u8 {
    u8::try_from(index % 3).unwrap_or(0) + 1
}

/// `success` for an empty reason, else `failure`.
fn status_of(reason: &str) -> &'static str {
    if reason.is_empty() {
        "success"
    } else {
        "failure"
    }
}

#[cfg(test)]
mod tests;

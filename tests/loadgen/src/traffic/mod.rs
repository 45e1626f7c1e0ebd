//! What the simulator sends: run ids, the traffic mix, and every webhook made
//! deterministically from `(seed, item)`, so the verifier can make the same
//! bodies again instead of keeping a copy of each one.
//!
//! The unit of work is an *item*: one webhook sent once ([`Shape::Single`]),
//! one webhook sent twice in a row, byte for byte ([`Shape::Duplicate`], a
//! provider resend), or two events for one `drop_id` with the newer one sent
//! first ([`Shape::OutOfOrder`]). The requests of an item are sent one after
//! the other (the next only once the previous has been answered), so the
//! order in which an out-of-order pair reaches ingress is the order planned.
//!
//! # Layout
//!
//! - [`body`]: Writing one webhook body in the provider's shape.
//! - [`ledger`]: The ledger of what was sent and how ingress answered each body.

mod body;
mod ledger;

use self::body::*;
pub use self::ledger::{ItemRecord, Sent, SentSummary, SentWebhook};

use bytes::Bytes;
use chrono::{DateTime, TimeDelta, Utc};
use corral_shared::envelope::Kind;
use rand::{Rng, SeedableRng, rngs::SmallRng};
use serde::Serialize;

use corral_shared::payload::FAILURE_REASONS;

/// The reason given to the older event of an out-of-order pair: a transient
/// failure that made the provider try again.
pub const RETRIED_REASON: &str = "Temporarily unreachable";

/// Identifies one run. Its ten hex digits begin every `drop_id` and are in
/// every `foreign_id` the run sends, so runs never collide and the verifier
/// finds a run's rows with one index range scan.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RunId(u64);

impl RunId {
    /// Hex digits of a run id at the start of a `drop_id`.
    pub const HEX_LEN: usize = 10;
    const BITS: u32 = 4 * Self::HEX_LEN as u32;

    /// A random run id (40 bits: two runs against one database collide with
    /// odds of about one in a trillion).
    pub fn random() -> Self {
        Self(rand::random::<u64>() & ((1 << Self::BITS) - 1))
    }

    /// A run id from its ten hex digits.
    pub fn from_hex(hex: &str) -> Option<Self> {
        (hex.len() == Self::HEX_LEN && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')))
            .then(|| u64::from_str_radix(hex, 16).ok().map(Self))
            .flatten()
    }

    /// The ten lowercase hex digits.
    pub fn hex(self) -> String {
        format!("{:010x}", self.0)
    }

    /// `drop_id` of item `item`: 24 lowercase hex digits, like the provider's
    /// (the run id, then the item number).
    pub fn drop_id(self, item: u64) -> String {
        format!("{:010x}{item:014x}", self.0)
    }

    /// The item a `drop_id` of this run names, or `None` if it is not one.
    pub fn item_of(self, drop_id: &str) -> Option<u64> {
        let rest = drop_id.strip_prefix(&self.hex())?;
        (rest.len() == 14 && rest.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')))
            .then(|| u64::from_str_radix(rest, 16).ok())
            .flatten()
    }
}

impl std::fmt::Display for RunId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:010x}", self.0)
    }
}

/// The traffic mix. Every fraction is a probability in `0..=1`, drawn per
/// item from the run's seed.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Mix {
    /// Share of webhooks for ringless voicemail (`/rvm`); the rest are SMS.
    pub rvm: f64,
    /// Share of webhooks reporting success; the rest are failures, their
    /// reason drawn evenly from every reason the provider documents.
    pub success: f64,
    /// Share of items sent twice, byte for byte (a provider resend).
    pub duplicates: f64,
    /// Share of items that are two events for one `drop_id`, the newer sent
    /// first. `duplicates + out_of_order` must not exceed 1.
    pub out_of_order: f64,
    /// Share of webhooks without a `foreign_id` (the send request set none).
    pub without_foreign_id: f64,
}

impl Default for Mix {
    fn default() -> Self {
        Self {
            rvm: 0.25,
            success: 0.8,
            duplicates: 0.0,
            out_of_order: 0.0,
            without_foreign_id: 0.05,
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
        Ok(())
    }
}

/// How an item is sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Shape {
    /// One webhook, sent once.
    Single,
    /// One webhook, sent twice in a row, byte for byte.
    Duplicate,
    /// Two events for one `drop_id`; the newer is sent first.
    OutOfOrder,
}

impl Shape {
    /// The requests of an item, in order, as indexes into [`Item::bodies`].
    pub fn steps(self) -> &'static [usize] {
        match self {
            Shape::Single => &[0],
            Shape::Duplicate => &[0, 0],
            Shape::OutOfOrder => &[0, 1],
        }
    }
}

/// One webhook body and the facts about it a test checks.
#[derive(Debug, Clone)]
pub struct Webhook {
    /// Route: `/webhooks/dropcowboy/sms` or `/rvm`.
    pub kind: Kind,
    /// The provider's id for the delivery.
    pub drop_id: String,
    /// When the provider attempted it (millisecond precision, as it sends).
    pub attempt_date: DateTime<Utc>,
    /// `success` or `failure`.
    pub status: &'static str,
    /// Empty on success.
    pub reason: &'static str,
    /// The customer's id, absent for some.
    pub foreign_id: Option<String>,
    /// The exact JSON sent.
    pub body: Bytes,
}

/// One unit of work.
#[derive(Debug, Clone)]
pub struct Item {
    /// Its number within the run (also the low digits of its `drop_id`).
    pub index: u64,
    /// How it is sent.
    pub shape: Shape,
    /// One body, or two for [`Shape::OutOfOrder`]: `[newer, older]`.
    pub bodies: Vec<Webhook>,
}

impl Item {
    /// The requests, in order, as indexes into `bodies`.
    pub fn steps(&self) -> &'static [usize] {
        self.shape.steps()
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
        let phone = format!(
            "+1{}{:07}",
            rng.random_range(201..=989),
            rng.random_range(0..10_000_000)
        );
        let network = NETWORKS[rng.random_range(0..NETWORKS.len())];
        let foreign_id = (rng.random::<f64>() >= self.mix.without_foreign_id)
            .then(|| format!("lg-{}-order-{index}", self.run_id));
        let tts = kind == Kind::Rvm && rng.random::<f64>() < 0.3;
        // From the index, not the generator, so every other choice stays
        // what it was for the same seed.
        let segments = u8::try_from(index % 3).unwrap_or(0) + 1;
        let attempt =
            self.epoch + TimeDelta::milliseconds(i64::try_from(index).unwrap_or(i64::MAX / 2));
        let reason = |rng: &mut SmallRng| {
            if rng.random::<f64>() < self.mix.success {
                ""
            } else {
                FAILURE_REASONS[rng.random_range(0..FAILURE_REASONS.len())]
            }
        };
        let make = |attempt_date, reason| {
            let body = body(&BodyFields {
                kind,
                drop_id: &drop_id,
                phone: &phone,
                attempt_date,
                reason,
                network,
                tts,
                segments,
                foreign_id: foreign_id.as_deref(),
            });
            Webhook {
                kind,
                drop_id: drop_id.clone(),
                attempt_date,
                status: if reason.is_empty() {
                    "success"
                } else {
                    "failure"
                },
                reason,
                foreign_id: foreign_id.clone(),
                body,
            }
        };
        let bodies = match shape {
            Shape::Single | Shape::Duplicate => vec![make(attempt, reason(&mut rng))],
            Shape::OutOfOrder => {
                let retry_after = TimeDelta::seconds(rng.random_range(1..=600));
                let newer = make(attempt + retry_after, reason(&mut rng));
                let older = make(attempt, RETRIED_REASON);
                vec![newer, older]
            }
        };
        Item {
            index,
            shape,
            bodies,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use corral_shared::payload;

    fn traffic(mix: Mix) -> Traffic {
        Traffic::new(RunId::random(), 7, mix)
    }

    #[test]
    fn drop_ids_carry_the_run_and_the_item() {
        let run = RunId::from_hex("00c0ffee42").unwrap();
        let drop_id = run.drop_id(0x1234);
        assert_eq!(drop_id, "00c0ffee4200000000001234");
        assert_eq!(drop_id.len(), 24);
        assert_eq!(run.item_of(&drop_id), Some(0x1234));
        assert_eq!(run.item_of("00c0ffee4300000000001234"), None);
        assert_eq!(run.item_of("00c0ffee42000000000012"), None);
        assert_eq!(RunId::from_hex(&run.hex()), Some(run));
        assert_eq!(RunId::from_hex("00C0FFEE42"), None);
    }

    #[test]
    fn every_body_is_a_valid_webhook_the_worker_can_type() {
        let traffic = traffic(Mix {
            duplicates: 0.2,
            out_of_order: 0.2,
            ..Mix::default()
        });
        for index in 0..2_000 {
            let item = traffic.item(index);
            for webhook in &item.bodies {
                let typed = payload::parse(&webhook.body)
                    .unwrap_or_else(|err| panic!("{err}: {:?}", webhook.body));
                assert_eq!(typed.status.drop_id, webhook.drop_id);
                assert_eq!(typed.status.attempt_date, webhook.attempt_date);
                assert_eq!(typed.status.status, webhook.status);
                assert_eq!(typed.status.reason.as_deref(), Some(webhook.reason));
                assert_eq!(typed.status.foreign_id, webhook.foreign_id);
                let value: serde_json::Value = serde_json::from_slice(&webhook.body).unwrap();
                assert!(value.is_object());
            }
        }
    }

    #[test]
    fn the_same_traffic_makes_the_same_items() {
        let traffic = traffic(Mix {
            out_of_order: 0.5,
            ..Mix::default()
        });
        for index in [0, 1, 99, 123_456] {
            let (a, b) = (traffic.item(index), traffic.item(index));
            assert_eq!(a.shape, b.shape);
            let bodies = |item: &Item| {
                item.bodies
                    .iter()
                    .map(|w| w.body.clone())
                    .collect::<Vec<_>>()
            };
            assert_eq!(bodies(&a), bodies(&b));
        }
    }

    #[test]
    fn the_mix_is_honoured_and_covers_every_reason() {
        let traffic = traffic(Mix {
            rvm: 0.3,
            success: 0.5,
            duplicates: 0.1,
            out_of_order: 0.2,
            without_foreign_id: 0.1,
        });
        let n = 20_000;
        let items: Vec<Item> = (0..n).map(|index| traffic.item(index)).collect();
        let share = |count: usize| count as f64 / n as f64;
        let count = |shape| items.iter().filter(|item| item.shape == shape).count();
        assert!((share(count(Shape::Duplicate)) - 0.1).abs() < 0.02);
        assert!((share(count(Shape::OutOfOrder)) - 0.2).abs() < 0.02);
        let firsts: Vec<&Webhook> = items.iter().map(|item| &item.bodies[0]).collect();
        let rvm = firsts.iter().filter(|w| w.kind == Kind::Rvm).count();
        assert!((share(rvm) - 0.3).abs() < 0.02);
        let success = firsts.iter().filter(|w| w.status == "success").count();
        assert!((share(success) - 0.5).abs() < 0.02);
        let without = firsts.iter().filter(|w| w.foreign_id.is_none()).count();
        assert!((share(without) - 0.1).abs() < 0.02);
        for reason in FAILURE_REASONS {
            assert!(
                firsts.iter().any(|w| w.reason == *reason),
                "{reason} never drawn"
            );
        }
    }

    #[test]
    fn an_out_of_order_pair_sends_the_newer_event_first() {
        let traffic = traffic(Mix {
            out_of_order: 1.0,
            ..Mix::default()
        });
        let item = traffic.item(5);
        assert_eq!(item.steps(), &[0, 1]);
        let (newer, older) = (&item.bodies[0], &item.bodies[1]);
        assert_eq!(newer.drop_id, older.drop_id);
        assert!(newer.attempt_date > older.attempt_date);
        assert_eq!(older.reason, RETRIED_REASON);
    }

    #[test]
    fn the_ledger_counts_distinct_webhooks() {
        let traffic = traffic(Mix {
            duplicates: 0.34,
            out_of_order: 0.33,
            ..Mix::default()
        });
        let first = |shape| (0..).find(|&i| traffic.item(i).shape == shape).unwrap();
        let records = vec![
            ItemRecord {
                item: first(Shape::Duplicate),
                sends: [2, 0],
                confirms: [2, 0],
            },
            ItemRecord {
                item: first(Shape::OutOfOrder),
                sends: [1, 1],
                confirms: [1, 0],
            },
            ItemRecord {
                item: first(Shape::Single),
                sends: [1, 0],
                confirms: [0, 0],
            },
        ];
        let sent = Sent::new(traffic, records);
        assert!(sent.records().windows(2).all(|w| w[0].item < w[1].item));
        let summary = sent.summary();
        assert_eq!(summary.items, 3);
        assert_eq!(summary.webhooks, 4);
        assert_eq!(summary.confirmed, 2);
        assert_eq!(summary.resent, 1);
        assert_eq!(summary.resent_confirmed_twice, 1);
        assert_eq!(summary.out_of_order_pairs, 1);
        assert_eq!(sent.webhooks().count(), 4);
        assert_eq!(sent.out_of_order_pairs().count(), 1);
    }
}

//! Planning a signed item: which events it sends (a drop's status event and
//! perhaps its receipt, the drop's callback too, or an event corral does not
//! type), how the provider retries each, and in what order.

use rand::{Rng, rngs::SmallRng};

use super::{events::*, *};

/// The team every result of a run belongs to (one account sends them).
const TEAM_ID: &str = "7a1e3c5d-2b4f-4a6c-9e8d-1f3b5c7d9e0a";

/// The latest a status event comes after its drop was attempted, ms.
const STATUS_LAG_MS: i64 = 3_000;

/// When a receipt comes after its status: the proof of delivery takes
/// time to be ready.
const RECEIPT_LAG_SECS: std::ops::RangeInclusive<i64> = 30..=300;

/// Of the retried events, the share that need a third attempt.
const THIRD_ATTEMPT: f64 = 0.25;

/// Of the retries, the share the provider re-serialised.
const RESERIALISED: f64 = 0.5;

impl Traffic {
    /// A signed item, its choices drawn from `rng` (the generator that
    /// decided it is signed).
    pub(super) fn signed_item(&self, index: u64, rng: &mut SmallRng) -> Item {
        let draw: f64 = rng.random();
        let shape = if draw < self.mix.other_events {
            Shape::OtherEvent
        } else if draw < self.mix.other_events + self.mix.both_channels {
            Shape::BothChannels
        } else {
            Shape::Signed
        };
        let contact_id = uuid(rng);
        let to = phone(rng);
        let event_at =
            self.attempt_date(index) + TimeDelta::milliseconds(rng.random_range(0..=STATUS_LAG_MS));
        if shape == Shape::OtherEvent {
            return self.other_event_item(index, rng, event_at, &contact_id, &to);
        }
        let kind = if rng.random::<f64>() < self.mix.rvm {
            Kind::Rvm
        } else {
            Kind::Sms
        };
        let failures = if kind == Kind::Rvm {
            RVM_FAILURES
        } else {
            SMS_FAILURES
        };
        let reason_code = if rng.random::<f64>() < self.mix.success {
            0
        } else {
            failures[rng.random_range(0..failures.len())]
        };
        let (from, campaign_id) = (phone(rng), uuid(rng));
        let drop_id = self.run_id.drop_id(index);
        let outcome = Outcome {
            kind,
            drop_id: &drop_id,
            team_id: TEAM_ID,
            contact_id: &contact_id,
            campaign_id: (rng.random::<f64>() < 0.5).then_some(campaign_id.as_str()),
            to: &to,
            from: &from,
            reason_code,
        };
        let bodies = self.result_bodies(index, rng, shape, event_at, &outcome);
        let steps = self.result_steps(shape, &bodies, rng);
        Item {
            index,
            shape,
            bodies,
            steps,
        }
    }

    /// A drop's result: its callback (on both channels), its status event
    /// at `event_at`, and perhaps its receipt.
    fn result_bodies(
        &self,
        index: u64,
        rng: &mut SmallRng,
        shape: Shape,
        event_at: DateTime<Utc>,
        outcome: &Outcome<'_>,
    ) -> Vec<Webhook> {
        let mut bodies = Vec::with_capacity(MAX_BODIES);
        if shape == Shape::BothChannels {
            bodies.push(self.callback_of(index, rng, outcome));
        }
        let id = self.run_id.event_id(index, bodies.len());
        let body = status_event(&id, event_at, outcome);
        bodies.push(signed(
            outcome,
            event_at,
            (id, status_name(outcome.kind)),
            body,
        ));
        let receipted = outcome.kind == Kind::Rvm
            && RECEIPTED.contains(&outcome.reason_code)
            && rng.random::<f64>() < self.mix.receipts;
        if receipted {
            let ready = event_at + TimeDelta::seconds(rng.random_range(RECEIPT_LAG_SECS));
            let token = format!("{:032x}", rng.random::<u128>());
            let id = self.run_id.event_id(index, bodies.len());
            let body = receipt_event(&id, ready, outcome, &token);
            bodies.push(signed(outcome, ready, (id, RECEIPT), body));
        }
        bodies
    }

    /// The requests of a drop's result: the callback first or after the
    /// status event's deliveries, the receipt's deliveries last.
    fn result_steps(&self, shape: Shape, bodies: &[Webhook], rng: &mut SmallRng) -> Vec<Step> {
        let status = usize::from(shape == Shape::BothChannels);
        let mut steps = Vec::with_capacity(4);
        let callback_first = status == 1 && rng.random::<f64>() < 0.5;
        if callback_first {
            steps.push(Step::once(0));
        }
        self.deliveries(status, rng, &mut steps);
        if status == 1 && !callback_first {
            steps.push(Step::once(0));
        }
        if bodies.len() > status + 1 {
            self.deliveries(status + 1, rng, &mut steps);
        }
        steps
    }

    /// An event corral does not type, at `event_at`.
    fn other_event_item(
        &self,
        index: u64,
        rng: &mut SmallRng,
        event_at: DateTime<Utc>,
        contact_id: &str,
        phone: &str,
    ) -> Item {
        let name = OTHER_EVENTS[rng.random_range(0..OTHER_EVENTS.len())];
        let id = self.run_id.event_id(index, 0);
        let body = other_event(&id, event_at, name, contact_id, phone);
        let webhook = Webhook {
            kind: Kind::Event,
            drop_id: self.run_id.drop_id(index),
            attempt_date: event_at,
            status: "",
            reason: "",
            reason_code: None,
            foreign_id: None,
            event: Some(Event {
                id,
                name,
                destination: Destination::ProviderEvents,
            }),
            body,
        };
        let mut steps = Vec::with_capacity(3);
        self.deliveries(0, rng, &mut steps);
        Item {
            index,
            shape: Shape::OtherEvent,
            bodies: vec![webhook],
            steps,
        }
    }

    /// The drop's callback to the token route, attempted when the item's
    /// drop was: the status event comes a little later.
    fn callback_of(&self, index: u64, rng: &mut SmallRng, outcome: &Outcome<'_>) -> Webhook {
        let foreign_id = self.foreign_id(index, rng);
        let (session_id, log_id) = (uuid(rng), uuid(rng));
        let attempt_date = self.attempt_date(index);
        let ids = CallbackIds {
            session_id: &session_id,
            log_id: &log_id,
            foreign_id: foreign_id.as_deref(),
        };
        let cost = product_cost(outcome.reason_code == 0, outcome.kind, segments(index));
        let reason = reason_of(outcome.reason_code);
        let body = callback(outcome, attempt_date, &ids, cost);
        Webhook {
            kind: outcome.kind,
            drop_id: outcome.drop_id.to_owned(),
            attempt_date,
            status: status_of(reason),
            reason,
            reason_code: Some(outcome.reason_code),
            foreign_id,
            event: None,
            body,
        }
    }

    /// The deliveries of signed body `body`: the first attempt, and with
    /// [`Mix::retries`] the provider's retries of it.
    fn deliveries(&self, body: usize, rng: &mut SmallRng, steps: &mut Vec<Step>) {
        let attempts: u8 = if rng.random::<f64>() >= self.mix.retries {
            1
        } else if rng.random::<f64>() < THIRD_ATTEMPT {
            3
        } else {
            2
        };
        for attempt in 1..=attempts {
            steps.push(Step {
                body,
                attempt,
                signed_secs_ago: 60 * u64::from(attempts - attempt),
                reserialised: attempt > 1 && rng.random::<f64>() < RESERIALISED,
            });
        }
    }
}

/// A signed result of `outcome` at `event_at`: event `name` (its status or
/// receipt), `id`.
fn signed(
    outcome: &Outcome<'_>,
    event_at: DateTime<Utc>,
    (id, name): (String, &'static str),
    body: Bytes,
) -> Webhook {
    let reason = reason_of(outcome.reason_code);
    Webhook {
        kind: Kind::Event,
        drop_id: outcome.drop_id.to_owned(),
        attempt_date: event_at,
        status: status_of(reason),
        reason,
        reason_code: Some(outcome.reason_code),
        foreign_id: None,
        event: Some(Event {
            id,
            name,
            destination: Destination::DeliveryEvents,
        }),
        body,
    }
}

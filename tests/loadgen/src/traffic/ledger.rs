//! The ledger of what was sent and how ingress answered each body.

use serde::Serialize;

use super::*;

/// What happened to one item: how often each body was sent, and how often
/// ingress answered it 2xx (a signed event's retries count on its body,
/// re-serialised or not).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ItemRecord {
    /// The item.
    pub item: u64,
    /// How it was sent.
    pub shape: Shape,
    /// Requests written per body (indexes as in [`Item::bodies`]).
    pub sends: [u8; MAX_BODIES],
    /// 2xx answers per body.
    pub confirms: [u8; MAX_BODIES],
}

impl ItemRecord {
    /// Nothing of `item` sent yet.
    pub fn new(item: &Item) -> Self {
        Self {
            item: item.index,
            shape: item.shape,
            sends: [0; MAX_BODIES],
            confirms: [0; MAX_BODIES],
        }
    }

    /// Whether any request was written.
    pub fn sent(&self) -> bool {
        self.sends.iter().any(|&sends| sends > 0)
    }
}

/// A distinct webhook a run sent at least once, with its fate at ingress.
#[derive(Debug, Clone)]
pub struct SentWebhook {
    /// The item it belongs to.
    pub item: u64,
    /// How its item was sent.
    pub shape: Shape,
    /// Its index in the item's bodies (for an out-of-order pair, 0 is the newer).
    pub body_index: usize,
    /// The webhook.
    pub webhook: Webhook,
    /// Requests written with this body.
    pub sends: u8,
    /// 2xx answers to them: ingress vouched for it at least once if > 0.
    pub confirms: u8,
}

/// The ledger of a run: what was sent and what ingress answered, enough for
/// [`verify()`](crate::verify::verify()) to know what must be in the database.
#[derive(Debug, Clone)]
pub struct Sent {
    /// What decides the bodies.
    pub traffic: Traffic,
    /// One record per item sent, sorted by item.
    records: Vec<ItemRecord>,
}

impl Sent {
    /// A ledger from records in any order.
    pub fn new(traffic: Traffic, mut records: Vec<ItemRecord>) -> Self {
        records.sort_unstable_by_key(|record| record.item);
        Self { traffic, records }
    }

    /// The run id.
    pub fn run_id(&self) -> RunId {
        self.traffic.run_id
    }

    /// The records, sorted by item.
    pub fn records(&self) -> &[ItemRecord] {
        &self.records
    }

    /// Every distinct webhook sent at least once (the bodies are made again).
    pub fn webhooks(&self) -> impl Iterator<Item = SentWebhook> + '_ {
        self.records.iter().flat_map(move |record| {
            let item = self.traffic.item(record.item);
            let shape = item.shape;
            item.bodies
                .into_iter()
                .enumerate()
                .filter(move |(index, _)| record.sends[*index] > 0)
                .map(move |(body_index, webhook)| SentWebhook {
                    item: record.item,
                    shape,
                    body_index,
                    webhook,
                    sends: record.sends[body_index],
                    confirms: record.confirms[body_index],
                })
        })
    }

    /// Out-of-order pairs whose two events were both sent: `(newer, older)`.
    pub fn out_of_order_pairs(&self) -> impl Iterator<Item = (SentWebhook, SentWebhook)> + '_ {
        self.records
            .iter()
            .filter(|record| {
                record.shape == Shape::OutOfOrder && record.sends[0] > 0 && record.sends[1] > 0
            })
            .map(move |record| {
                let mut item = self.traffic.item(record.item);
                let older = item.bodies.pop().expect("a pair has two bodies");
                let newer = item.bodies.pop().expect("a pair has two bodies");
                let sent = |body_index: usize, webhook| SentWebhook {
                    item: record.item,
                    shape: item.shape,
                    body_index,
                    webhook,
                    sends: record.sends[body_index],
                    confirms: record.confirms[body_index],
                };
                (sent(0, newer), sent(1, older))
            })
    }

    /// Counts of what was sent, without making the bodies again.
    pub fn summary(&self) -> SentSummary {
        let mut summary = SentSummary::default();
        for record in &self.records {
            summary.items += 1;
            for (index, (&sends, &confirms)) in
                record.sends.iter().zip(&record.confirms).enumerate()
            {
                if sends == 0 {
                    continue;
                }
                summary.webhooks += 1;
                summary.confirmed += u64::from(confirms > 0);
                if record.shape.is_signed(index) {
                    summary.signed_events += 1;
                    summary.signed_retried += u64::from(sends > 1);
                }
            }
            let both = |a: usize, b: usize| record.sends[a] > 0 && record.sends[b] > 0;
            match record.shape {
                Shape::Duplicate => {
                    summary.resent += u64::from(record.sends[0] > 1);
                    summary.resent_confirmed_twice += u64::from(record.confirms[0] > 1);
                }
                Shape::OutOfOrder => summary.out_of_order_pairs += u64::from(both(0, 1)),
                Shape::BothChannels => summary.both_channels += u64::from(both(0, 1)),
                Shape::Single | Shape::Signed | Shape::OtherEvent => {}
            }
        }
        summary
    }
}

/// What a run sent, counted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct SentSummary {
    /// Items begun.
    pub items: u64,
    /// Distinct webhooks sent at least once: callback bodies, and signed
    /// events however often they were delivered.
    pub webhooks: u64,
    /// Of those, answered 2xx at least once.
    pub confirmed: u64,
    /// Callbacks sent twice (duplicate resends).
    pub resent: u64,
    /// Resends where both copies were answered 2xx (stored once all the same).
    pub resent_confirmed_twice: u64,
    /// Out-of-order pairs with both events sent.
    pub out_of_order_pairs: u64,
    /// Signed events (distinct `event_id`s) sent.
    pub signed_events: u64,
    /// Of those, delivered more than once (the provider's retries).
    pub signed_retried: u64,
    /// Drops whose result was sent on both channels (callback and status event).
    pub both_channels: u64,
}

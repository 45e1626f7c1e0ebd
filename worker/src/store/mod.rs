//! Writing batches: every webhook of a batch becomes a `delivery_events` row
//! (or is recognised as a duplicate of one) or a `quarantined_webhooks` row,
//! all in one transaction, with set-based statements (`UNNEST` arrays), never
//! a statement per row.
//!
//! A batch the database refuses because of one webhook's data does not fail
//! as a whole (`isolate`): it is split in halves under savepoints until the
//! culprit is alone, and that one is quarantined with PostgreSQL's own error.
//! The quarantine insert is isolated the same way (`quarantine`), so no
//! message, whatever it holds, can fail or hold its batch.

mod events;
mod isolate;
mod quarantine;

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use corral_shared::{
    envelope::{Envelope, Kind},
    payload,
    telemetry::{labels::DeliveryLabels, metrics},
};
use deadpool_postgres::Transaction;
use uuid::Uuid;

use crate::db::is_data_error;
use events::insert_events;

/// One webhook as it came off the queue: an envelope-1 message, or one
/// entry of an envelope-2 message (with its kind's routing key and its own
/// id and `received_at`).
#[derive(Debug, Clone)]
pub struct Incoming {
    /// The webhook body, byte for byte.
    pub body: Vec<u8>,
    /// `dropcowboy.sms` / `dropcowboy.rvm` (anything else is quarantined).
    pub routing_key: String,
    /// The webhook's id and `received_at`.
    pub envelope: Envelope,
}

/// A typed webhook.
#[derive(Debug)]
struct EventRow<'a> {
    incoming: &'a Incoming,
    kind: Kind,
    typed: payload::Typed,
    /// The ingress id, or one derived from the fingerprint for a message
    /// ingress did not make (deterministic, so a redelivery gets the same).
    message_id: Uuid,
    received_at: DateTime<Utc>,
}

/// An untypeable webhook and why.
#[derive(Debug, Clone)]
struct QuarantineRow<'a> {
    incoming: &'a Incoming,
    /// Why, in full (values included): stored beside the body.
    error: String,
    /// Why, without any value from the body: for the log line.
    logged: String,
}

/// How the messages of a committed batch ended.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct BatchOutcome {
    /// New `delivery_events` rows.
    pub stored: usize,
    /// Already stored (or quarantined) before, or twice in this batch.
    pub duplicate: usize,
    /// New `quarantined_webhooks` rows.
    pub quarantined: usize,
    /// The new rows by kind, status and reason, as the metric labels them.
    pub deliveries: Deliveries,
}

/// New events counted by their `corral_worker_deliveries_total` labels.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Deliveries(BTreeMap<DeliveryLabels, u64>);

impl Deliveries {
    fn add(&mut self, labels: DeliveryLabels) {
        *self.0.entry(labels).or_default() += 1;
    }

    fn merge(&mut self, other: Deliveries) {
        for (labels, count) in other.0 {
            *self.0.entry(labels).or_default() += count;
        }
    }

    /// Adds them to `corral_worker_deliveries_total`; call after the commit.
    pub fn record(&self) {
        for (labels, count) in &self.0 {
            metrics::worker_deliveries(*labels, *count);
        }
    }

    /// How many events, by labels.
    pub fn counts(&self) -> impl Iterator<Item = (DeliveryLabels, u64)> + '_ {
        self.0.iter().map(|(labels, count)| (*labels, *count))
    }
}

/// Types a message, or says why it must be quarantined.
fn prepare(incoming: &Incoming, now: DateTime<Utc>) -> Result<EventRow<'_>, QuarantineRow<'_>> {
    let kind = Kind::from_routing_key(&incoming.routing_key);
    let Some(kind) = kind.filter(|kind| Kind::CALLBACKS.contains(kind)) else {
        let error = match kind {
            Some(_) => "a signed event (kind event): this corral-worker does not store them yet; \
                        `corral-worker quarantine reprocess` once one does"
                .to_owned(),
            None => format!("unknown routing key {:?}", incoming.routing_key),
        };
        return Err(QuarantineRow {
            incoming,
            logged: error.clone(),
            error,
        });
    };
    match payload::parse(&incoming.body) {
        Ok(typed) => {
            let message_id = incoming.envelope.message_id.unwrap_or_else(|| {
                let bytes: [u8; 16] = typed.fingerprint.0[..16]
                    .try_into()
                    .expect("16 of 32 bytes");
                Uuid::new_v8(bytes)
            });
            Ok(EventRow {
                incoming,
                kind,
                typed,
                message_id,
                received_at: incoming.envelope.received_at.unwrap_or(now),
            })
        }
        Err(err) => Err(QuarantineRow {
            incoming,
            error: err.to_string(),
            logged: err.without_values(),
        }),
    }
}

/// A batch typed once, before its first write attempt: typing is work on
/// the messages alone, so it is neither repeated by every retry nor counted
/// against the database's deadline.
#[derive(Debug)]
pub struct Prepared<'a> {
    /// How many messages the batch holds.
    len: usize,
    /// The typed ones.
    events: Vec<EventRow<'a>>,
    /// The ones that cannot be typed, and why.
    refused: Vec<QuarantineRow<'a>>,
    /// Whether each new event also gets a result-event outbox row.
    result_events: bool,
}

impl<'a> Prepared<'a> {
    /// How many messages the batch holds.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the batch holds no message.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn outcome(&self, stored: Stored, quarantined: usize) -> BatchOutcome {
        BatchOutcome {
            stored: stored.count,
            duplicate: self.len - stored.count - quarantined,
            quarantined,
            deliveries: stored.deliveries,
        }
    }

    /// Writes a result-event outbox row for every new event
    /// (`CORRAL_RESULT_EVENTS`), in the same statement that stores it.
    #[must_use]
    pub fn with_result_events(mut self, on: bool) -> Self {
        self.result_events = on;
        self
    }

    /// Adds a message to quarantine as it is, without typing it: one whose
    /// webhooks could not be unpacked. `error` is stored, `logged` (free of
    /// values from the body) is logged.
    pub fn quarantine(&mut self, incoming: &'a Incoming, error: &str, logged: &str) {
        self.len += 1;
        self.refused.push(QuarantineRow {
            incoming,
            error: error.to_owned(),
            logged: logged.to_owned(),
        });
    }
}

/// Types every message: the rows to store, and the ones to quarantine with why.
pub fn prepare_all(messages: &[Incoming]) -> Prepared<'_> {
    let now = Utc::now();
    let mut events = Vec::with_capacity(messages.len());
    let mut refused = Vec::new();
    for message in messages {
        match prepare(message, now) {
            Ok(row) => events.push(row),
            Err(row) => refused.push(row),
        }
    }
    Prepared {
        len: messages.len(),
        events,
        refused,
        result_events: false,
    }
}

/// New events written by one or more inserts.
#[derive(Debug, Default)]
struct Stored {
    count: usize,
    deliveries: Deliveries,
}

impl Stored {
    fn merge(&mut self, other: Stored) {
        self.count += other.count;
        self.deliveries.merge(other.deliveries);
    }
}

/// Writes one batch, typed by [`prepare_all`], in one transaction and commits
/// it. On `Err` nothing was committed and nothing may be acknowledged; a
/// retry passes the same `batch` again.
pub async fn write_batch(
    client: &mut deadpool_postgres::Client,
    batch: &Prepared<'_>,
) -> Result<BatchOutcome, tokio_postgres::Error> {
    let events = &batch.events;
    // What PostgreSQL refuses is added to these for this attempt only.
    let mut quarantined = batch.refused.clone();
    // The common case needs no savepoint: insert the whole batch. Only when
    // PostgreSQL refuses its data is the transaction rolled back and the
    // batch written again, split under savepoints to isolate the culprit.
    let mut tx = client.transaction().await?;
    let results = batch.result_events;
    let stored = match insert_events(&tx, events, results).await {
        Ok(stored) => stored,
        Err(err) if is_data_error(&err) => {
            tx.rollback().await?;
            tx = client.transaction().await?;
            events::store(&mut tx, events, results, &mut quarantined).await?
        }
        Err(err) => return Err(err),
    };
    let new_quarantined = quarantine::store(&mut tx, &quarantined).await?;
    crate::db::commit(tx, stored.count + new_quarantined > 0).await?;
    Ok(batch.outcome(stored, new_quarantined))
}

/// Writes one batch, typed by [`prepare_all`], into a transaction the caller
/// holds and commits: for webhooks it claimed in that same transaction (the
/// spool's rows), which a rollback would hand back. The webhook the database
/// refuses is isolated under savepoints, as in [`write_batch`], without
/// ever rolling the caller's transaction back.
pub async fn write_within(
    tx: &mut Transaction<'_>,
    batch: &Prepared<'_>,
) -> Result<BatchOutcome, tokio_postgres::Error> {
    let mut quarantined = batch.refused.clone();
    let stored = events::store(tx, &batch.events, batch.result_events, &mut quarantined).await?;
    let new_quarantined = quarantine::store(tx, &quarantined).await?;
    Ok(batch.outcome(stored, new_quarantined))
}

/// What [`store_in`] did with a set of messages.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct StoredIn {
    /// New rows and duplicates; `quarantined` is always 0 here, the messages
    /// that could not be stored are in `refused` instead.
    pub outcome: BatchOutcome,
    /// The messages that still cannot be stored: index in the input, and why
    /// (the typing error, or PostgreSQL's refusal).
    pub refused: Vec<(usize, String)>,
}

/// Types and stores `messages` in the caller's transaction exactly as
/// [`write_batch`] does (same SQL, same split on a data error), but hands the
/// messages it cannot store back to the caller instead of quarantining them:
/// `corral-worker quarantine reprocess` re-types rows that already are in
/// `quarantined_webhooks` and decides itself what happens to them.
pub async fn store_in(
    tx: &mut Transaction<'_>,
    messages: &[Incoming],
    result_events: bool,
) -> Result<StoredIn, tokio_postgres::Error> {
    let Prepared {
        events,
        mut refused,
        ..
    } = prepare_all(messages);
    let stored = events::store(tx, &events, result_events, &mut refused).await?;
    let refused: Vec<(usize, String)> = refused
        .into_iter()
        .map(|row| {
            let index = messages
                .iter()
                .position(|message| std::ptr::eq(message, row.incoming))
                .expect("a refused row is one of the messages");
            (index, row.error)
        })
        .collect();
    Ok(StoredIn {
        outcome: BatchOutcome {
            stored: stored.count,
            duplicate: messages.len() - stored.count - refused.len(),
            quarantined: 0,
            deliveries: stored.deliveries,
        },
        refused,
    })
}

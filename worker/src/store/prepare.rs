//! Typing a batch before its first write attempt: each message becomes a
//! result to store (a callback, or a signed status event), a provider event
//! to keep, or a quarantine row with why.

use chrono::{DateTime, Utc};
use corral_contract::envelope::Kind;
use corral_payload::{self as payload, Fingerprint, ProviderEvent, Signed};
use uuid::Uuid;

use super::Incoming;

/// A typed result: a callback (`sms`, `rvm`) or a signed status event.
#[derive(Debug)]
pub(super) struct EventRow<'a> {
    pub(super) incoming: &'a Incoming,
    pub(super) kind: Kind,
    pub(super) typed: payload::Typed,
    /// The ingress id, or one derived from the fingerprint for a message
    /// ingress did not make (deterministic, so a redelivery gets the same).
    pub(super) message_id: Uuid,
    pub(super) received_at: DateTime<Utc>,
}

/// A signed event of a type corral keeps whole (`provider_events`).
#[derive(Debug)]
pub(super) struct ProviderRow<'a> {
    pub(super) incoming: &'a Incoming,
    pub(super) event: ProviderEvent,
    /// As [`EventRow::message_id`].
    pub(super) message_id: Uuid,
    pub(super) received_at: DateTime<Utc>,
}

/// An untypeable webhook and why.
#[derive(Debug, Clone)]
pub(super) struct QuarantineRow<'a> {
    pub(super) incoming: &'a Incoming,
    /// Why, in full (values included): stored beside the body.
    pub(super) error: String,
    /// Why, without any value from the body: for the log line.
    pub(super) logged: String,
}

impl<'a> QuarantineRow<'a> {
    /// `incoming`'s typed row, which PostgreSQL refused alone with `err`.
    pub(super) fn refused_by_postgres(incoming: &'a Incoming, err: &tokio_postgres::Error) -> Self {
        let reason = err
            .as_db_error()
            .map_or_else(|| err.to_string(), |db| db.message().to_owned());
        // PostgreSQL's text may quote the refused value; the log gets its
        // SQLSTATE only.
        let code = err.code().map_or("unknown", |code| code.code());
        Self {
            incoming,
            error: format!("PostgreSQL refused the typed row: {reason}"),
            logged: format!("PostgreSQL refused the typed row (SQLSTATE {code})"),
        }
    }
}

/// A batch typed once, before its first write attempt: typing is work on
/// the messages alone, so it is neither repeated by every retry nor counted
/// against the database's deadline.
#[derive(Debug)]
pub struct Prepared<'a> {
    /// How many messages the batch holds.
    pub(super) len: usize,
    /// The typed results.
    pub(super) events: Vec<EventRow<'a>>,
    /// The signed events kept whole.
    pub(super) provider: Vec<ProviderRow<'a>>,
    /// The ones that cannot be typed, and why.
    pub(super) refused: Vec<QuarantineRow<'a>>,
    /// Whether each new event also gets a result-event outbox row.
    pub(super) result_events: bool,
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
    let mut prepared = Prepared {
        len: messages.len(),
        events: Vec::with_capacity(messages.len()),
        provider: Vec::new(),
        refused: Vec::new(),
        result_events: false,
    };
    for message in messages {
        prepared.prepare(message, now);
    }
    prepared
}

impl<'a> Prepared<'a> {
    /// Types a message by its routing key's kind (a callback, or a signed
    /// event) and adds it where it belongs.
    fn prepare(&mut self, incoming: &'a Incoming, now: DateTime<Utc>) {
        let refused = |error: String, logged: String| QuarantineRow {
            incoming,
            error,
            logged,
        };
        let received_at = incoming.envelope.received_at.unwrap_or(now);
        let message_id = |fingerprint: &Fingerprint| {
            incoming.envelope.message_id.unwrap_or_else(|| {
                let bytes: [u8; 16] = fingerprint.0[..16].try_into().expect("16 of 32 bytes");
                Uuid::new_v8(bytes)
            })
        };
        let event = |kind, typed: payload::Typed| EventRow {
            incoming,
            kind,
            message_id: message_id(&typed.fingerprint),
            typed,
            received_at,
        };
        match Kind::from_routing_key(&incoming.routing_key) {
            None => {
                let error = format!("unknown routing key {:?}", incoming.routing_key);
                self.refused.push(refused(error.clone(), error));
            }
            Some(Kind::Event) => match payload::parse_event(&incoming.body) {
                Ok(Signed::Result { kind, typed }) => self.events.push(event(kind, *typed)),
                Ok(Signed::Other(provider)) => self.provider.push(ProviderRow {
                    incoming,
                    message_id: message_id(&provider.fingerprint),
                    event: provider,
                    received_at,
                }),
                Err(err) => self
                    .refused
                    .push(refused(err.to_string(), err.without_values())),
            },
            Some(kind) => match payload::parse(&incoming.body) {
                Ok(typed) => self.events.push(event(kind, typed)),
                Err(err) => self
                    .refused
                    .push(refused(err.to_string(), err.without_values())),
            },
        }
    }
}
